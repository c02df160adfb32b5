//! Scratch: cost of the walker vs a direct descent.
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
    for _ in 0..3 {
        let t = Instant::now();
        let mut s = 0;
        for i in 0..n {
            s += pt.translate(base + i * 4096).unwrap().0;
        }
        let d = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        let geo = *pt.geometry();
        for i in 0..n {
            let a = base + i * 4096;
            let mut table = pt.root_pa();
            let mut level = geo.start_level();
            loop {
                let shift = geo.level_shift(level);
                let mask = if level == geo.start_level() {
                    geo.root_entries() - 1
                } else {
                    geo.entries() - 1
                } as u64;
                let e = pt.read_entry(table + ((a >> shift) & mask) * 8);
                if level < 3 && e & 3 == 3 {
                    table = e & 0x0000_ffff_ffff_f000;
                    level += 1;
                } else {
                    s += e;
                    break;
                }
            }
        }
        let direct = t.elapsed().as_nanos() as f64 / n as f64;
        println!("direct {direct:.1} ns");
        let t = Instant::now();
        for i in 0..n {
            let a = base + i * 4096;
            pt.map(
                a..a + 4096,
                (8 << 30) + i * 4096,
                Attrs::data(),
                MapOpts::default(),
            )
            .unwrap();
        }
        let m = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            let a = base + i * 4096;
            pt.unmap(a..a + 4096).unwrap();
        }
        let u = t.elapsed().as_nanos() as f64 / n as f64;
        pt.map(
            base..base + (1 << 30),
            8 << 30,
            Attrs::ram(),
            MapOpts::PAGES,
        )
        .unwrap();
        println!("translate {d:.1} ns, remap {m:.1} ns, unmap {u:.1} ns ({s})");
    }
}
