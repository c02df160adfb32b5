//! Event-level tests of the fast paths and of the prepare pass's count.

use super::reserve::Op;
use super::*;
use crate::addr::{AddrRange, Address};
use crate::attrs::DESC_OA_MASK;
use crate::geometry::tlbi_ipa_operand;
use crate::maint::MaintOp;
use crate::maint::{check_bbm, Event, Recorder};
use crate::{CpuFeatures, VecAlloc};
use alloc::vec;

/// The input range `r` of the table's kind.
fn rng<A: Address>(r: core::ops::Range<u64>) -> AddrRange<A> {
    AddrRange::new(A::from_raw(r.start), A::from_raw(r.end)).expect("a forwards range")
}

/// The input address `a` of the table's kind.
fn at<A: Address>(a: u64) -> A {
    A::from_raw(a)
}

/// A translation with its output address as a number.
fn raw_t((pa, attrs, level): (Pa, Attrs, u32)) -> (u64, Attrs, u32) {
    (pa.get(), attrs, level)
}

fn table(g: Granule) -> PageTable<VecAlloc, Recorder> {
    let cpu = CpuFeatures::profile("max").unwrap();
    let geo = Geometry::stage2(g, 40, &cpu).unwrap();
    PageTable::with_vmid(geo, 3, VecAlloc::new(), Recorder::default()).unwrap()
}

fn oa_mask(g: Granule) -> u64 {
    DESC_OA_MASK & !(g.size() - 1)
}

/// The cache maintenance `map` issues for `[out, out + len)` of `Attrs::ram()`.
fn cmo(pt: &PageTable<VecAlloc, Recorder>, out: u64, len: u64) -> Vec<Event> {
    let geo = pt.geometry();
    let mut v = vec![];
    if !geo.fwb() {
        v.push(Event::Op(MaintOp::CleanDcachePoc {
            pa: Pa::new(out),
            len,
        }));
    }
    if Attrs::ram().exec && !geo.dic() {
        v.push(Event::Op(MaintOp::InvalidateIcachePou {
            pa: Pa::new(out),
            len,
        }));
    }
    v
}

/// The single-entry invalidation of stage 2 (one flushed pending entry).
fn tlbi(vmid: u16, input: u64) -> Vec<Event> {
    vec![
        Event::Op(MaintOp::DsbIshSt),
        Event::Op(MaintOp::TlbiIpas2e1is {
            vmid,
            operand: tlbi_ipa_operand(Ipa::new(input)),
        }),
        Event::Op(MaintOp::DsbIsh),
        Event::Op(MaintOp::TlbiVmalle1is { vmid }),
        Event::Op(MaintOp::DsbIsh),
        Event::Op(MaintOp::Isb),
    ]
}

#[test]
#[cfg_attr(miri, ignore = "takes minutes under miri")]
fn one_page_map_into_existing_tables_needs_no_allocation_and_stores_once() {
    for g in Granule::ALL {
        let mut pt = table(g);
        let p = g.size();
        let base = 1u64 << 32;
        let ram = Attrs::ram();
        pt.map(
            rng(base..base + p),
            Pa::new(1 << 33),
            ram,
            MapOpts::default(),
        )
        .unwrap();
        let tables = pt.tables();
        // No allocation may succeed: the page must still map (its tables exist).
        pt.release_reserve();
        pt.allocator_mut().fail_after(Some(0));
        pt.maintenance_mut().events.clear();
        let (a, o) = (base + 5 * p, (1 << 33) + 9 * p);
        pt.map(rng(a..a + p), Pa::new(o), ram, MapOpts::default())
            .unwrap();
        assert_eq!(pt.tables(), tables, "{g}");
        assert_eq!(
            pt.translate(at(a)).map(raw_t).map(|t| (t.0, t.1, t.2)),
            Some((o, ram, 3))
        );
        let ev = pt.maintenance().events.clone();
        let mut want = cmo(&pt, o, p);
        let Some(Event::Store {
            input, level, old, ..
        }) = ev.last().copied()
        else {
            panic!("{g}: no store in {ev:?}");
        };
        assert_eq!((input, level, old & DESC_VALID), (a, 3, 0), "{g}");
        want.push(ev[ev.len() - 1]);
        assert_eq!(ev, want, "{g}");
        // A page needing a new leaf table still fails, and changes nothing.
        let far = base + (1 << 30);
        assert!(matches!(
            pt.map(rng(far..far + p), Pa::new(o), ram, MapOpts::default()),
            Err(MapError::NoMemory { got: 0, .. })
        ));
        assert_eq!(pt.tables(), tables, "{g}");
        assert_eq!(pt.translate(at(far)).map(raw_t), None);
        pt.allocator_mut().fail_after(None);
        check_bbm(&pt.maintenance().events, oa_mask(g)).unwrap();
        let (alloc, _) = pt.destroy();
        assert_eq!((alloc.live_allocs(), alloc.bad_frees), (0, 0), "{g}");
    }
}

#[test]
fn one_block_map_over_invalid_entry_is_one_store_and_over_a_valid_one_is_bbm() {
    let g = Granule::K4;
    let mut pt = table(g);
    let gib = 1u64 << 30;
    let ram = Attrs::ram();
    pt.map(rng(0..gib), Pa::new(4 * gib), ram, MapOpts::default())
        .unwrap();
    pt.maintenance_mut().events.clear();
    pt.map(rng(gib..2 * gib), Pa::new(5 * gib), ram, MapOpts::default())
        .unwrap();
    let ev = pt.maintenance().events.clone();
    assert_eq!(ev.len(), cmo(&pt, 5 * gib, gib).len() + 1, "{ev:?}");
    assert!(matches!(
        ev.last(),
        Some(Event::Store { input, level: 1, old: 0, new, .. })
            if *input == gib && *new & DESC_OA_MASK == 5 * gib && *new & 3 == 1
    ));
    // Another output for a valid block: break, invalidate, make (the general path).
    pt.maintenance_mut().events.clear();
    pt.map(rng(gib..2 * gib), Pa::new(6 * gib), ram, MapOpts::default())
        .unwrap();
    let ev = pt.maintenance().events.clone();
    let stores: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Store { old, new, .. } => Some((*old & DESC_VALID, *new & DESC_VALID)),
            _ => None,
        })
        .collect();
    assert_eq!(stores, vec![(1, 0), (0, 1)], "{ev:?}");
    check_bbm(&ev, oa_mask(g)).unwrap();
    assert_eq!(
        pt.translate(at(gib + 4096)).map(raw_t).map(|t| t.0),
        Some(6 * gib + 4096)
    );
    // A run of blocks in one table over invalid entries: the maintenance, then one store
    // per block in order, and no table.
    pt.release_reserve();
    let tables = pt.tables();
    let allocs = pt.allocator().total_allocs();
    pt.maintenance_mut().events.clear();
    pt.map(
        rng(4 * gib..8 * gib),
        Pa::new(16 * gib),
        ram,
        MapOpts::default(),
    )
    .unwrap();
    let ev = pt.maintenance().events.clone();
    let want = cmo(&pt, 16 * gib, 4 * gib);
    let n = want.len();
    assert_eq!(ev[..n], want[..], "{ev:?}");
    for (k, e) in ev[n..].iter().enumerate() {
        let k = k as u64;
        assert!(matches!(
            e,
            Event::Store { input, level: 1, old: 0, new, .. }
                if *input == (4 + k) * gib && *new & DESC_OA_MASK == (16 + k) * gib
        ));
    }
    assert_eq!(ev.len(), n + 4);
    assert_eq!(
        (pt.tables(), pt.allocator().total_allocs()),
        (tables, allocs)
    );
    assert_eq!(
        pt.translate(at(7 * gib + 4096)).map(raw_t).map(|t| t.0),
        Some(19 * gib + 4096)
    );
    pt.destroy();
}

#[test]
#[cfg_attr(miri, ignore = "takes minutes under miri")]
fn one_page_unmap_invalidates_at_once_and_frees_the_tables_it_empties() {
    for g in Granule::ALL {
        let mut pt = table(g);
        let p = g.size();
        let base = 1u64 << 32;
        let roots = pt.geometry().root_tables() as usize;
        pt.map(
            rng(base..base + 2 * p),
            Pa::new(1 << 33),
            Attrs::ram(),
            MapOpts::PAGES,
        )
        .unwrap();
        let tables = pt.tables();
        assert!(tables > roots);
        pt.maintenance_mut().events.clear();
        pt.unmap(rng(base..base + p)).unwrap();
        let ev = pt.maintenance().events.clone();
        assert!(matches!(
            ev[0],
            Event::Store { input, level: 3, new: 0, old, .. } if input == base && old & 1 == 1
        ));
        assert_eq!(ev[1..], tlbi(3, base)[..], "{g}");
        assert_eq!(pt.tables(), tables, "{g}");
        assert_eq!(pt.translate(at(base)).map(raw_t), None);
        assert!(pt.translate(at(base + p)).map(raw_t).is_some());
        // The last page: its leaf table (and every table above it) is freed.
        pt.maintenance_mut().events.clear();
        pt.unmap(rng(base + p..base + 2 * p)).unwrap();
        assert_eq!(pt.tables(), roots, "{g}");
        let ev = pt.maintenance().events.clone();
        assert!(ev.contains(&Event::Op(MaintOp::TlbiIpas2e1is {
            vmid: 3,
            operand: tlbi_ipa_operand(Ipa::new(base + p))
        })));
        check_bbm(&ev, oa_mask(g)).unwrap();
        // Unmapping what is not mapped changes nothing.
        pt.maintenance_mut().events.clear();
        pt.unmap(rng(base..base + p)).unwrap();
        assert!(pt.maintenance().events.is_empty(), "{g}");
        let (alloc, _) = pt.destroy();
        assert_eq!((alloc.live_allocs(), alloc.bad_frees), (0, 0), "{g}");
    }
}

/// The count the prepare pass made by recursion before it became a sum per level: the
/// reference for [`Ctx::tables_below`].
fn count_below_by_recursion(
    c: &Ctx<VecAlloc, Recorder>,
    op: Op,
    level: u32,
    addr: u64,
    end: u64,
) -> usize {
    if level + 1 == LAST_LEVEL {
        return 1;
    }
    let cl = level + 1;
    let cs = c.size(cl);
    let mut n = 1;
    let mut a = addr;
    while a < end {
        let span = a & !(cs - 1);
        let e = (span + cs).min(end);
        let full = a == span && e == span + cs;
        let done = match op {
            Op::Map {
                out,
                lo,
                pages_only,
            } => full && c.blockable(cl, out + (a - lo), pages_only),
            Op::Split => full,
        };
        if !done {
            n += count_below_by_recursion(c, op, cl, a, e);
        }
        a = e;
    }
    n
}

#[test]
#[cfg_attr(miri, ignore = "takes minutes under miri")]
fn prepare_count_per_level_equals_the_recursive_count() {
    for g in Granule::ALL {
        let cpu = CpuFeatures::profile("max").unwrap();
        let geo = Geometry::stage2(g, 48, &cpu).unwrap();
        let pt = PageTable::<_, _>::new(geo, VecAlloc::new(), Recorder::default()).unwrap();
        let c = &pt.ctx;
        let p = g.size();
        let start = geo.start_level();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut nontrivial = 0;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let level = start + (x % u64::from(LAST_LEVEL - start)) as u32;
            let span = c.size(level);
            let base = (x >> 8) % 4 * span;
            let a = base + ((x >> 16) % (span / p)) * p;
            let e = a + p * (1 + (x >> 24) % ((base + span - a) / p));
            let shift = [0, p, c.size(2), c.size(1)][(x >> 60) as usize % 4];
            let out = (1 << 46) + a + shift;
            for op in [
                Op::Split,
                Op::Map {
                    out,
                    lo: a,
                    pages_only: x & 1 != 0,
                },
            ] {
                let want = count_below_by_recursion(c, op, level, a, e);
                assert_eq!(
                    c.tables_below(op, level, a, e),
                    want,
                    "{g} level {level} {a:#x}..{e:#x} out {out:#x}"
                );
                nontrivial += usize::from(want > 1);
            }
        }
        assert!(nontrivial > 100, "{g}: {nontrivial} counts above one table");
    }
}
