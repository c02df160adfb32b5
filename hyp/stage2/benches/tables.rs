//! `cargo bench -p stage2`: table construction and maintenance workloads for every granule at
//! 1 GiB and 4 GiB, with `aarch64-paging` 0.12's `Stage2` regime as the 4K twin. Both sides
//! draw tables from a pre-filled, pre-touched frame pool (no host page faults while timing)
//! and zero every table they take. The last lines printed are one summary line per workload:
//! `map 1GiB 4K pages: <ns> ns/page (best <ns>), <bytes> table bytes, <r>x vs aarch64-paging
//! (best <r>x)`: the median sample, then the fastest, whose ratio suffers least from other load
//! on the machine (`r` > 1 means stage2 is faster; the ratio only where a twin exists).

use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes as S2};
use aarch64_paging::paging::{
    Constraints, MemoryRegion, PageTable as PeerTable, Stage2, Translation,
};
use aarch64_paging::Mapping;
use criterion::{Criterion, SamplingMode};
use stage2::{
    AddrRange, Attrs, CpuFeatures, Geometry, Granule, Ipa, MapOpts, NoMaintenance, Pa, PageTable,
    VecAlloc,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
/// Block maps are timed in batches of this many ranges (one call is too short to time alone).
const BLOCK_BATCH: u64 = 64;
/// Input base: 4 GiB (aligned to every block size); output base 8 GiB.
const BASE: u64 = 4 * GIB;
const OUT: u64 = 8 * GIB;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Work {
    Pages,
    Blocks,
    PerPage,
    Random,
    UnmapPerPage,
    Protect,
}

const WORKS: [Work; 6] = [
    Work::Pages,
    Work::Blocks,
    Work::PerPage,
    Work::Random,
    Work::UnmapPerPage,
    Work::Protect,
];

/// The IPA range `r`, built as a caller builds one per call (the check that it runs forwards
/// is part of what is timed).
#[inline(always)]
fn rng(r: std::ops::Range<u64>) -> AddrRange<Ipa> {
    AddrRange::new(Ipa::new(r.start), Ipa::new(r.end)).expect("a forwards range")
}

fn label(w: Work, size: u64, g: Granule) -> String {
    let s = format!("{}GiB {}", size / GIB, g.label());
    match w {
        Work::Pages => format!("map {s} pages"),
        Work::Blocks => format!("map {s} blocks"),
        Work::PerPage => format!("map {s} per-page"),
        Work::Random => format!("map {s} random"),
        Work::UnmapPerPage => format!("unmap {s} per-page"),
        Work::Protect => format!("protect {s}"),
    }
}

#[derive(Default)]
struct Sample {
    ns: Vec<f64>,
    table_bytes: u64,
}

#[derive(Default)]
struct Results {
    ours: BTreeMap<(u64, Granule, Work), Sample>,
    peer: BTreeMap<(u64, Work), Sample>,
}

thread_local! {
    static RESULTS: RefCell<Results> = RefCell::new(Results::default());
}

/// A deterministic permutation of `0..n` (xorshift Fisher-Yates).
fn permutation(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn ours(c: &mut Criterion, g: Granule, size: u64, pool: &mut VecAlloc, w: Work) {
    let cpu = CpuFeatures::profile("max").expect("known profile");
    let geo = Geometry::stage2(g, 40, &cpu).expect("valid geometry");
    let p = g.size();
    let n = size / p;
    let perm = permutation(n);
    let mut group = c.benchmark_group(format!("stage2 {}", g.label()));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(300));
    {
        let mut pt = PageTable::<_, _>::new(geo, &mut *pool, NoMaintenance).expect("root");
        let ram = Attrs::ram();
        let range = BASE..BASE + size;
        let mut bytes = 0;
        let mut flip = false;
        let mut times = Vec::new();
        group.bench_function(label(w, size, g), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if matches!(w, Work::UnmapPerPage | Work::Protect)
                        && pt.tables() == geo.root_tables() as usize
                    {
                        pt.map(rng(range.clone()), Pa::new(OUT), ram, MapOpts::PAGES)
                            .expect("map");
                    }
                    let t0 = Instant::now();
                    match w {
                        Work::Pages => pt
                            .map(rng(range.clone()), Pa::new(OUT), ram, MapOpts::PAGES)
                            .expect("map"),
                        Work::Blocks => {
                            for k in 0..BLOCK_BATCH {
                                let a = BASE + k * size;
                                pt.map(
                                    rng(a..a + size),
                                    Pa::new(OUT + k * size),
                                    ram,
                                    MapOpts::default(),
                                )
                                .expect("map");
                            }
                        }
                        Work::PerPage => {
                            for i in 0..n {
                                let a = BASE + i * p;
                                pt.map(
                                    rng(a..a + p),
                                    Pa::new(OUT + i * p),
                                    ram,
                                    MapOpts::default(),
                                )
                                .expect("map");
                            }
                        }
                        Work::Random => {
                            for &i in &perm {
                                let a = BASE + i * p;
                                pt.map(
                                    rng(a..a + p),
                                    Pa::new(OUT + i * p),
                                    ram,
                                    MapOpts::default(),
                                )
                                .expect("map");
                            }
                        }
                        Work::UnmapPerPage => {
                            bytes = pt.table_bytes();
                            let t0 = Instant::now();
                            for i in 0..n {
                                let a = BASE + i * p;
                                pt.unmap(rng(a..a + p)).expect("unmap");
                            }
                            let d = t0.elapsed();
                            total += d;
                            times.push(d.as_nanos() as f64 / n as f64);
                            continue;
                        }
                        Work::Protect => {
                            flip = !flip;
                            let a = if flip { ram.read_only() } else { ram };
                            pt.protect(rng(range.clone()), a).expect("protect");
                        }
                    }
                    let d = t0.elapsed();
                    total += d;
                    let batch = if w == Work::Blocks { BLOCK_BATCH } else { 1 };
                    times.push(d.as_nanos() as f64 / (n * batch) as f64);
                    bytes = pt.table_bytes();
                    if w != Work::Protect {
                        black_box(pt.root_pa().get());
                        pt.unmap(rng(BASE..BASE + BLOCK_BATCH * size))
                            .expect("unmap");
                    }
                }
                total
            })
        });
        pt.unmap(rng(BASE..BASE + BLOCK_BATCH * size))
            .expect("unmap");
        pt.destroy();
        RESULTS.with(|r| {
            r.borrow_mut().ours.insert(
                (size, g, w),
                Sample {
                    ns: times,
                    table_bytes: bytes,
                },
            );
        });
    }
    group.finish();
}

/// aarch64-paging's table memory: a pre-filled pool of pre-touched pages, shared by every
/// table built from it (a `RootTable` owns its `Translation` and returns pages on drop).
struct Pool {
    free: Rc<RefCell<Vec<NonNull<PeerTable<S2>>>>>,
    live: usize,
}

impl Pool {
    fn new(pages: usize) -> Pool {
        let free = (0..pages)
            .map(|_| {
                let t = PeerTable::<S2>::new();
                // SAFETY: `t` was just allocated by `PeerTable::new` for one `PeerTable` and is
                // not shared; all-zero bytes are a valid `PeerTable` (empty descriptors). This
                // touches every page so no page fault happens while timing.
                unsafe { t.as_ptr().write_bytes(0, 1) };
                t
            })
            .collect();
        Pool {
            free: Rc::new(RefCell::new(free)),
            live: 0,
        }
    }

    /// Another handle on the same pages, for one table.
    fn handle(&self) -> Pool {
        Pool {
            free: self.free.clone(),
            live: 0,
        }
    }
}

impl Translation<S2> for Pool {
    fn allocate_table(&mut self) -> (NonNull<PeerTable<S2>>, PhysicalAddress) {
        let t = self.free.borrow_mut().pop().unwrap_or_else(PeerTable::new);
        // SAFETY: `t` comes from the free list (or was just allocated): a `PeerTable` allocated
        // by `PeerTable::new` that no table references any more; zero bytes are valid for it.
        unsafe { t.as_ptr().write_bytes(0, 1) };
        self.live += 1;
        (t, PhysicalAddress(t.as_ptr() as usize))
    }

    unsafe fn deallocate_table(&mut self, t: NonNull<PeerTable<S2>>) {
        self.live -= 1;
        self.free.borrow_mut().push(t);
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PeerTable<S2>> {
        NonNull::new(pa.0 as *mut PeerTable<S2>).expect("tables are never at address 0")
    }
}

fn peer_flags() -> S2 {
    S2::VALID
        | S2::MEMATTR_NORMAL_INNER_WB
        | S2::MEMATTR_NORMAL_OUTER_WB
        | S2::S2AP_ACCESS_RW
        | S2::SH_INNER
        | S2::ACCESS_FLAG
}

fn region(a: u64, b: u64) -> MemoryRegion {
    MemoryRegion::new(a as usize, b as usize)
}

fn peer(c: &mut Criterion, size: u64, pool: &Pool, w: Work) {
    let p = 4096u64;
    let n = size / p;
    let perm = permutation(n);
    let flags = peer_flags();
    let mut group = c.benchmark_group("aarch64-paging 4K");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(300));
    {
        let mut times = Vec::new();
        let mut bytes = 0;
        let mut flip = false;
        group.bench_function(label(w, size, Granule::K4), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut reused: Option<Mapping<Pool, Stage2>> = None;
                for _ in 0..iters {
                    // A fresh table per run (aarch64-paging keeps emptied tables), except for
                    // the block and protect workloads, where reuse changes nothing.
                    let mut t = match reused.take() {
                        Some(t) => t,
                        None => Mapping::new(pool.handle(), 1, Stage2),
                    };
                    let full = region(BASE, BASE + size);
                    if matches!(w, Work::UnmapPerPage)
                        || (w == Work::Protect && t.translation().live == 1)
                    {
                        t.map_range(
                            &full,
                            PhysicalAddress(OUT as usize),
                            flags,
                            Constraints::NO_BLOCK_MAPPINGS,
                        )
                        .expect("map");
                    }
                    let t0 = Instant::now();
                    match w {
                        Work::Pages => t
                            .map_range(
                                &full,
                                PhysicalAddress(OUT as usize),
                                flags,
                                Constraints::NO_BLOCK_MAPPINGS,
                            )
                            .expect("map"),
                        Work::Blocks => {
                            for k in 0..BLOCK_BATCH {
                                let a = BASE + k * size;
                                t.map_range(
                                    &region(a, a + size),
                                    PhysicalAddress((OUT + k * size) as usize),
                                    flags,
                                    Constraints::empty(),
                                )
                                .expect("map");
                            }
                        }
                        Work::PerPage => {
                            for i in 0..n {
                                let a = BASE + i * p;
                                t.map_range(
                                    &region(a, a + p),
                                    PhysicalAddress((OUT + i * p) as usize),
                                    flags,
                                    Constraints::empty(),
                                )
                                .expect("map");
                            }
                        }
                        Work::Random => {
                            for &i in &perm {
                                let a = BASE + i * p;
                                t.map_range(
                                    &region(a, a + p),
                                    PhysicalAddress((OUT + i * p) as usize),
                                    flags,
                                    Constraints::empty(),
                                )
                                .expect("map");
                            }
                        }
                        Work::UnmapPerPage => {
                            for i in 0..n {
                                let a = BASE + i * p;
                                // PA ignored for invalid entries; not 0 (0.12.3 underflows).
                                t.map_range(
                                    &region(a, a + p),
                                    PhysicalAddress(1 << 40),
                                    S2::empty(),
                                    Constraints::empty(),
                                )
                                .expect("unmap");
                            }
                        }
                        Work::Protect => {
                            flip = !flip;
                            let (set, clear) = if flip {
                                (S2::empty(), S2::S2AP_ACCESS_WO)
                            } else {
                                (S2::S2AP_ACCESS_WO, S2::empty())
                            };
                            t.modify_range(&full, &|_mr, d| {
                                if d.level() == 3 && d.flags().contains(S2::VALID) {
                                    d.modify_flags(set, clear)
                                } else {
                                    Ok(())
                                }
                            })
                            .expect("protect");
                        }
                    }
                    let d = t0.elapsed();
                    total += d;
                    let batch = if w == Work::Blocks { BLOCK_BATCH } else { 1 };
                    times.push(d.as_nanos() as f64 / (n * batch) as f64);
                    bytes = t.translation().live as u64 * p;
                    match w {
                        Work::Blocks => {
                            t.map_range(
                                &region(BASE, BASE + BLOCK_BATCH * size),
                                PhysicalAddress(1 << 40),
                                S2::empty(),
                                Constraints::empty(),
                            )
                            .expect("unmap");
                            reused = Some(t);
                        }
                        Work::Protect => reused = Some(t),
                        // Dropping returns every table to the pool (untimed).
                        _ => drop(t),
                    }
                }
                drop(reused);
                total
            })
        });
        RESULTS.with(|r| {
            r.borrow_mut().peer.insert(
                (size, w),
                Sample {
                    ns: times,
                    table_bytes: bytes,
                },
            );
        });
    }
    group.finish();
}

/// Three significant digits, however small.
fn fmt_ns(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else if ns >= 1.0 {
        format!("{ns:.2}")
    } else {
        format!("{ns:.3e}")
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn fastest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let pool = Pool::new(2 * 2053 + 64);
    let mut allocs: Vec<VecAlloc> = Granule::ALL
        .iter()
        .map(|_| VecAlloc::with_pool(20 << 20))
        .collect();
    for size in [GIB, 4 * GIB] {
        for w in WORKS {
            // Twins back to back, so that machine load affects both alike.
            peer(&mut c, size, &pool, w);
            for (g, alloc) in Granule::ALL.into_iter().zip(allocs.iter_mut()) {
                ours(&mut c, g, size, alloc, w);
            }
        }
    }
    c.final_summary();
    RESULTS.with(|r| {
        let r = r.borrow();
        println!();
        for size in [GIB, 4 * GIB] {
            for g in Granule::ALL {
                for w in WORKS {
                    let Some(s) = r.ours.get(&(size, g, w)) else {
                        continue;
                    };
                    if s.ns.is_empty() {
                        continue;
                    }
                    let (ns, best) = (median(&s.ns), fastest(&s.ns));
                    let mut line = format!(
                        "{}: {} ns/page (best {}), {} table bytes",
                        label(w, size, g),
                        fmt_ns(ns),
                        fmt_ns(best),
                        s.table_bytes
                    );
                    if g == Granule::K4 {
                        if let Some(ps) = r.peer.get(&(size, w)).filter(|ps| !ps.ns.is_empty()) {
                            line += &format!(
                                ", {:.2}x vs aarch64-paging (best {:.2}x)",
                                median(&ps.ns) / ns,
                                fastest(&ps.ns) / best
                            );
                        }
                    }
                    println!("{line}");
                }
            }
        }
    });
}
