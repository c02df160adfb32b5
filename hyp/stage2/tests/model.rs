//! Property tests: random map/unmap/protect sequences against a page-level model, for every
//! granule and three IPA sizes. After every step `translate` agrees with the model at sampled
//! and boundary addresses, the recorded maintenance never breaks break-before-make, and every
//! store to a live table was one atomic store through the allocator ([`StoreAudit`]); at the
//! end the whole table is compared and unmapping everything leaves only the root.

use proptest::prelude::*;
use stage2::*;

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
enum Op {
    Map {
        start: u64,
        pages: u64,
        out: u64,
        attrs: u8,
        pages_only: bool,
    },
    Unmap {
        start: u64,
        pages: u64,
    },
    Protect {
        start: u64,
        pages: u64,
        attrs: u8,
    },
}

const ATTRS: [Attrs; 4] = [
    Attrs::ram(),
    Attrs::data(),
    Attrs::rodata(),
    Attrs::device(),
];

/// The window the ops work in: two L2 blocks plus a few pages, in page units.
fn window_pages(g: Granule) -> u64 {
    let l2_pages = 1u64 << (g.shift() - 3);
    2 * l2_pages + 8
}

fn op_strategy(g: Granule) -> impl Strategy<Value = Op> {
    let w = window_pages(g);
    let l2 = 1u64 << (g.shift() - 3);
    // Output: either block-congruent with the input (so blocks appear) or arbitrary.
    let out = prop_oneof![Just(None), (0u64..4096).prop_map(Some)];
    let len = prop_oneof![1u64..4, 1u64..=l2 + 2, Just(l2), Just(2 * l2)];
    prop_oneof![
        4 => (0..w, len.clone(), out, 0u8..4, any::<bool>()).prop_map(move |(s, n, o, a, po)| {
            let n = n.min(w - s).max(1);
            let out = match o {
                None => 8 * l2 + s, // congruent modulo any block size
                Some(p) => 0x10_0000 + p,
            };
            Op::Map { start: s, pages: n, out, attrs: a, pages_only: po }
        }),
        2 => (0..w, len.clone()).prop_map(move |(s, n)| Op::Unmap { start: s, pages: n.min(w - s).max(1) }),
        1 => (0..w, len, 0u8..3).prop_map(move |(s, n, a)| Op::Protect { start: s, pages: n.min(w - s).max(1), attrs: a }),
    ]
}

/// The tables' memory: a `VecAlloc` whose live tables are audited.
type Alloc = StoreAudit<VecAlloc>;

struct Harness {
    pt: PageTable<Alloc, Recorder>,
    model: BTreeMap<u64, (u64, Attrs)>,
    base: u64,
    page: u64,
    probes: BTreeSet<u64>,
    bbm: BbmChecker,
    /// A mock TLB: leaf entries (input start, size, output start, attrs) seen by probes,
    /// evicted only by the recorded TLBIs. None may go stale.
    tlb: BTreeMap<(u64, u64), (u64, Attrs)>,
}

impl Harness {
    fn new(g: Granule, bits: u32, where_: u8) -> Harness {
        let cpu = CpuFeatures::profile("max").unwrap();
        let geo = Geometry::stage2(g, bits, &cpu).unwrap();
        let alloc = StoreAudit::new(VecAlloc::new(), geo);
        let pt = PageTable::with_vmid(geo, 3, alloc, Recorder::default()).unwrap();
        let page = g.size();
        let span = window_pages(g) * page;
        let limit = 1u64 << bits;
        let root_entry = geo.entry_size(geo.start_level());
        let base = match where_ {
            0 => 0,
            // The very top: last byte of the input space.
            1 => limit - span,
            // Straddling a root entry boundary (and a concatenated table boundary where
            // there are several).
            _ => (limit / 2) - span / 2 + page * 3,
        };
        let base = base.min(limit - span) & !(page - 1);
        let _ = root_entry;
        let bbm = BbmChecker::new(0x0000_ffff_ffff_f000 & !(page - 1));
        Harness {
            pt,
            model: BTreeMap::new(),
            base,
            page,
            probes: BTreeSet::new(),
            bbm,
            tlb: BTreeMap::new(),
        }
    }

    fn apply(&mut self, op: &Op) -> (u64, u64) {
        let p = self.page;
        let (start, pages) = match *op {
            Op::Map { start, pages, .. }
            | Op::Unmap { start, pages }
            | Op::Protect { start, pages, .. } => (start, pages),
        };
        let lo = self.base + start * p;
        let hi = lo + pages * p;
        match *op {
            Op::Map {
                out,
                attrs,
                pages_only,
                ..
            } => {
                let a = ATTRS[attrs as usize];
                let opts = MapOpts {
                    pages_only,
                    skip_cmo: false,
                };
                self.pt.map(rng(lo..hi), Pa::new(out * p), a, opts).unwrap();
                for i in 0..pages {
                    self.model.insert(lo + i * p, ((out + i) * p, a));
                }
            }
            Op::Unmap { .. } => {
                self.pt.unmap(rng(lo..hi)).unwrap();
                for i in 0..pages {
                    self.model.remove(&(lo + i * p));
                }
            }
            Op::Protect { attrs, .. } => {
                let a = ATTRS[attrs as usize];
                self.pt.protect(rng(lo..hi), a).unwrap();
                for i in 0..pages {
                    if let Some(e) = self.model.get_mut(&(lo + i * p)) {
                        e.1 = a;
                    }
                }
            }
        }
        for a in [lo, hi.wrapping_sub(1), hi, lo.wrapping_sub(1)] {
            self.probes.insert(a);
        }
        (lo, hi)
    }

    fn check_addr(&mut self, addr: u64) {
        if addr >= self.pt.geometry().input_limit() {
            return;
        }
        let page = addr & !(self.page - 1);
        let want = self
            .model
            .get(&page)
            .map(|&(pa, a)| (pa + (addr - page), a));
        let got = self.pt.translate(at(addr)).map(raw_t);
        assert_eq!(got.map(|(pa, a, _)| (pa, a)), want, "translate({addr:#x})");
    }

    /// "Fills the TLB" with every valid leaf of the window, as a walker might have.
    fn fill_tlb(&mut self) {
        let span = window_pages(self.pt.geometry().granule()) * self.page;
        let mut tlb = std::mem::take(&mut self.tlb);
        self.pt
            .walk::<MapError, _>(
                rng(self.base..self.base + span),
                WalkFlags::LEAF,
                &mut |c: &mut Ctx<Alloc, Recorder>, v: &mut Visit| {
                    if v.old & 1 != 0 {
                        let size = c.geometry().entry_size(v.level);
                        let start = v.addr & !(size - 1);
                        let oa = v.old & 0x0000_ffff_ffff_f000 & !(size - 1);
                        let a = stage2::attrs::decode(Regime::Stage2, v.old);
                        tlb.insert((start, size), (oa, a));
                    }
                    Ok(())
                },
            )
            .unwrap();
        self.tlb = tlb;
    }

    /// Applies the step's recorded TLBIs to the mock TLB, then checks that no entry left in
    /// it disagrees with the tables (a stale translation).
    fn check_tlb(&mut self, lo: u64, hi: u64) {
        let geo = *self.pt.geometry();
        for ev in &self.pt.maintenance().events {
            match ev {
                Event::Op(MaintOp::TlbiIpas2e1is { operand, .. }) => {
                    let ipa = operand << 12;
                    // An entry of size S containing `ipa` starts at `ipa` aligned down to S.
                    for level in 0..=3 {
                        let size = geo.entry_size(level);
                        self.tlb.remove(&(ipa & !(size - 1), size));
                    }
                }
                Event::Op(MaintOp::TlbiVmalls12e1is { .. } | MaintOp::TlbiAlle1is) => {
                    self.tlb.clear()
                }
                _ => {}
            }
        }
        let p = self.page;
        // Only the operation's range can have changed (translate probes check the rest).
        for (&(start, size), &(oa, a)) in &self.tlb {
            if start >= hi || start + size <= lo {
                continue;
            }
            let offs = if size == p {
                vec![0]
            } else {
                vec![0, (size / 2) & !(p - 1), size - p]
            };
            for off in offs {
                let want = Some((oa + off, a));
                let got = self.model.get(&(start + off)).copied();
                assert_eq!(
                    got,
                    want,
                    "stale TLB entry for {:#x} (entry {start:#x}+{size:#x})",
                    start + off
                );
            }
        }
    }

    fn check_step(&mut self, seed: u64, lo: u64, hi: u64) {
        self.check_tlb(lo, hi);
        let probes: Vec<u64> = self.probes.iter().copied().collect();
        for a in probes {
            self.check_addr(a);
        }
        let span = window_pages(self.pt.geometry().granule()) * self.page;
        let mut x = seed | 1;
        for _ in 0..32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.check_addr(self.base + x % span);
        }
        self.check_stores();
        self.bbm.feed(&self.pt.maintenance().events).unwrap();
        self.pt.maintenance_mut().events.clear();
        self.fill_tlb();
        // Memory accounting: every allocated frame is a live table or in reserve.
        let a = self.pt.allocator().inner();
        let root_tables = self.pt.geometry().root_tables() as usize;
        assert_eq!(
            a.live_allocs(),
            self.pt.tables() - root_tables + 1 + self.pt.reserved_tables()
        );
        assert_eq!(a.bad_frees, 0);
    }

    /// Single-copy atomicity: no live table was written in bulk or behind the allocator's
    /// back, table descriptors were published with `Release`, and the stores the allocator
    /// saw are exactly the ones the walker reported to `Maintenance::store`, in order (a torn
    /// or split store would show up twice).
    fn check_stores(&mut self) {
        let reported: Vec<(u64, u64)> = self
            .pt
            .maintenance()
            .events
            .iter()
            .filter_map(|e| match *e {
                Event::Store { entry_pa, new, .. } => Some((entry_pa, new)),
                Event::Op(_) => None,
            })
            .collect();
        let audit = self.pt.allocator_mut();
        if let Err(e) = audit.check() {
            panic!("{e}");
        }
        let stored: Vec<(u64, u64)> = audit
            .take_stores()
            .iter()
            .map(|s| (s.entry_pa, s.value))
            .collect();
        if stored != reported {
            let i = stored
                .iter()
                .zip(&reported)
                .position(|(a, b)| a != b)
                .unwrap_or(stored.len().min(reported.len()));
            panic!(
                "store #{i} to a live table: the allocator saw {:x?}, the walker reported \
                 {:x?} ({} stores against {}; (entry, value))",
                stored.get(i),
                reported.get(i),
                stored.len(),
                reported.len()
            );
        }
        assert_eq!(
            audit.live_tables(),
            self.pt.tables(),
            "live tables = tables in use"
        );
    }

    /// Every leaf, expanded to pages, equals the model.
    fn check_full(&mut self) {
        let p = self.page;
        let mut seen = BTreeMap::new();
        let limit = self.pt.geometry().input_limit();
        self.pt
            .walk::<MapError, _>(
                rng(0..limit),
                WalkFlags::LEAF,
                &mut |c: &mut Ctx<Alloc, Recorder>, v: &mut Visit| {
                    if v.old & 1 != 0 {
                        let size = c.geometry().entry_size(v.level);
                        let start = v.addr & !(size - 1);
                        let oa = v.old & 0x0000_ffff_ffff_f000 & !(size - 1);
                        let a = stage2::attrs::decode(Regime::Stage2, v.old);
                        for i in 0..size / p {
                            seen.insert(start + i * p, (oa + i * p, a));
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(seen, self.model);
    }

    fn finish(mut self) {
        self.check_full();
        let limit = self.pt.geometry().input_limit();
        self.pt.unmap(rng(0..limit)).unwrap();
        let roots = self.pt.geometry().root_tables() as usize;
        assert_eq!(self.pt.tables(), roots, "only the root remains");
        assert_eq!(self.pt.table_bytes(), self.pt.geometry().root_bytes());
        self.check_stores();
        self.bbm.feed(&self.pt.maintenance().events).unwrap();
        let (a, _) = self.pt.destroy();
        let a = a.into_inner();
        assert_eq!(a.live_allocs(), 0, "no frame leaked");
        assert_eq!(a.bad_frees, 0);
    }
}

fn run(g: Granule, bits: u32, where_: u8, ops: Vec<Op>, seed: u64) {
    let mut h = Harness::new(g, bits, where_);
    for (i, op) in ops.iter().enumerate() {
        let (lo, hi) = h.apply(op);
        h.check_step(seed.wrapping_add(i as u64), lo, hi);
    }
    h.finish();
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

macro_rules! model_test {
    ($name:ident, $g:expr, $sizes:expr) => {
        proptest! {
            #![proptest_config(config())]
            #[test]
            fn $name(
                size in 0usize..3,
                where_ in 0u8..3,
                ops in prop::collection::vec(op_strategy($g), 1..20),
                seed in any::<u64>(),
            ) {
                let sizes: [u32; 3] = $sizes;
                run($g, sizes[size], where_, ops, seed);
            }
        }
    };
}

model_test!(model_4k, Granule::K4, [32, 40, 48]);
model_test!(model_16k, Granule::K16, [36, 40, 47]);
model_test!(model_64k, Granule::K64, [34, 42, 46]);

/// Every (granule, size) pair is exercised at least once whatever proptest picks.
#[test]
fn model_every_size_fixed_sequence() {
    for (g, sizes) in [
        (Granule::K4, [32, 40, 48]),
        (Granule::K16, [36, 40, 47]),
        (Granule::K64, [34, 42, 46]),
    ] {
        let l2 = 1u64 << (g.shift() - 3);
        for bits in sizes {
            for where_ in 0..3 {
                let ops = vec![
                    Op::Map {
                        start: 0,
                        pages: 2 * l2 + 8,
                        out: 8 * l2,
                        attrs: 0,
                        pages_only: false,
                    },
                    Op::Protect {
                        start: l2 - 1,
                        pages: 3,
                        attrs: 2,
                    },
                    Op::Unmap {
                        start: 3,
                        pages: l2,
                    },
                    Op::Map {
                        start: 1,
                        pages: 5,
                        out: 0x10_0007,
                        attrs: 3,
                        pages_only: true,
                    },
                    Op::Map {
                        start: l2,
                        pages: l2,
                        out: 8 * l2 + l2,
                        attrs: 1,
                        pages_only: false,
                    },
                    Op::Unmap {
                        start: 0,
                        pages: 2 * l2 + 8,
                    },
                    Op::Map {
                        start: 5,
                        pages: l2,
                        out: 0x10_0000,
                        attrs: 0,
                        pages_only: false,
                    },
                ];
                run(g, bits, where_, ops, 42);
            }
        }
    }
}

/// The single-entry and same-size-run fast paths of map and unmap, whatever proptest picks
/// (they write live tables after the walker's descent alone, so the store audit must see them
/// too).
#[test]
fn model_fast_paths_fixed_sequence() {
    let map = |start, pages, out, pages_only| Op::Map {
        start,
        pages,
        out,
        attrs: 0,
        pages_only,
    };
    for (g, sizes) in [
        (Granule::K4, [32, 40, 48]),
        (Granule::K16, [36, 40, 47]),
        (Granule::K64, [34, 42, 46]),
    ] {
        let l2 = 1u64 << (g.shift() - 3);
        for bits in sizes {
            let ops = vec![
                // A leaf table, then a run of pages into it, then one page, then one page
                // unmapped (its table stays).
                map(0, 2, 8 * l2, true),
                map(4, 3, 8 * l2 + 4, true),
                map(8, 1, 8 * l2 + 8, true),
                Op::Unmap { start: 8, pages: 1 },
                Op::Unmap {
                    start: 0,
                    pages: 2 * l2 + 8,
                },
                // Two blocks; one unmapped and mapped again as one block entry.
                map(0, 2 * l2, 8 * l2, false),
                Op::Unmap {
                    start: 0,
                    pages: l2,
                },
                map(0, l2, 8 * l2, false),
            ];
            // At input 0 (blocks aligned) only: the other windows do not start on a block.
            run(g, bits, 0, ops, 7);
        }
    }
}
