//! Scratch: translate cost.
use stage2::*;
use std::time::Instant;
fn main() {
    let cpu = CpuFeatures::profile("max").unwrap();
    let geo = Geometry::stage2(Granule::K4, 40, &cpu).unwrap();
    let mut pt = PageTable::new(geo, VecAlloc::with_pool(16 << 20), NoMaintenance).unwrap();
    let base = 4u64 << 30;
    pt.map(
        base..base + (1 << 30),
        8 << 30,
        Attrs::ram(),
        MapOpts::PAGES,
    )
    .unwrap();
    let n = 262144u64;
    let mut s = 0;
    let t = Instant::now();
    for _ in 0..40 {
        for i in 0..n {
            s += pt.translate(base + i * 4096).map_or(0, |x| x.0);
        }
    }
    println!(
        "translate {:.1} ns ({s})",
        t.elapsed().as_nanos() as f64 / n as f64 / 40.0
    );
}
