//! Failure atomicity (Hafnium's prepare/commit) and leak freedom.

use stage2::*;

mod common;
use common::*;

const GB: u64 = 1 << 30;

/// Every descriptor of every reachable table, with its address.
fn dump<M: Maintenance>(pt: &mut PageTable<VecAlloc, M>) -> Vec<(u64, u64)> {
    let limit = pt.geometry().input_limit();
    let mut out = Vec::new();
    pt.walk::<MapError, _>(
        rng(0..limit),
        WalkFlags::LEAF | WalkFlags::TABLE_PRE,
        &mut |_c: &mut Ctx<VecAlloc, M>, v: &mut Visit| {
            if v.old != 0 {
                out.push((v.entry_pa, v.old));
            }
            Ok(())
        },
    )
    .unwrap();
    out
}

fn s2(g: Granule, bits: u32) -> Geometry {
    Geometry::stage2(g, bits, &CpuFeatures::profile("max").unwrap()).unwrap()
}

#[test]
fn every_allocation_point_of_a_1gib_4k_map_leaves_tables_bit_identical() {
    let geo = s2(Granule::K4, 40);
    let mut pt = PageTable::with_vmid(geo, 1, VecAlloc::new(), Recorder::default()).unwrap();
    // Existing mappings the failed map would touch: a block to split and some pages.
    pt.map(
        rng(GB + 0x20_0000..GB + 0x40_0000),
        Pa::new(0x8000_0000),
        Attrs::ram(),
        MapOpts::default(),
    )
    .unwrap();
    pt.map(
        rng(2 * GB - 0x3000..2 * GB + 0x1000),
        Pa::new(0x9000_0000),
        Attrs::data(),
        MapOpts::default(),
    )
    .unwrap();
    pt.release_reserve();
    let before = dump(&mut pt);
    let tables_before = pt.tables();
    let live_before = pt.allocator().live_allocs();
    let range = GB + 0x1000..2 * GB + 0x1000;

    // Count the allocation points with a successful run on a copy of the same history.
    let mut probe = PageTable::<_, _>::new(geo, VecAlloc::new(), NoMaintenance).unwrap();
    probe
        .map(
            rng(GB + 0x20_0000..GB + 0x40_0000),
            Pa::new(0x8000_0000),
            Attrs::ram(),
            MapOpts::default(),
        )
        .unwrap();
    probe
        .map(
            rng(2 * GB - 0x3000..2 * GB + 0x1000),
            Pa::new(0x9000_0000),
            Attrs::data(),
            MapOpts::default(),
        )
        .unwrap();
    probe.release_reserve();
    let allocs0 = probe.allocator().total_allocs();
    probe
        .map(
            rng(range.clone()),
            Pa::new(0x1_0000_1000),
            Attrs::ram(),
            MapOpts::PAGES,
        )
        .unwrap();
    let points = probe.allocator().total_allocs() - allocs0;
    // 1 GiB of pages from GB + 4K: the L3 tables of the 512 2M slots of L1 entry 1 and one of
    // entry 2. Existing: both L2 tables, the L3 tables at 2 GiB - 2M and 2 GiB. The 2M block
    // must be split (1 table). So 510 new L3 tables + 1 split = 511 allocation points.
    assert_eq!(points, 511, "{points} allocation points");

    for k in 0..points {
        pt.maintenance_mut().events.clear();
        // Inject a failure at allocation k.
        set_fail(&mut pt, Some(k));
        let e = pt
            .map(
                rng(range.clone()),
                Pa::new(0x1_0000_1000),
                Attrs::ram(),
                MapOpts::PAGES,
            )
            .unwrap_err();
        assert!(matches!(e, MapError::NoMemory { .. }), "{e}");
        set_fail(&mut pt, None);
        assert_eq!(
            dump(&mut pt),
            before,
            "allocation failure {k} changed the tables"
        );
        assert_eq!(pt.tables(), tables_before);
        assert_eq!(
            pt.allocator().live_allocs(),
            live_before + pt.reserved_tables()
        );
        // Nothing was written: no descriptor store at all.
        assert!(pt
            .maintenance()
            .events
            .iter()
            .all(|e| !matches!(e, Event::Store { .. })));
    }
    // And with memory available it completes.
    pt.map(
        rng(range.clone()),
        Pa::new(0x1_0000_1000),
        Attrs::ram(),
        MapOpts::PAGES,
    )
    .unwrap();
    assert_eq!(
        pt.translate(at(GB + 0x1000)).map(raw_t).unwrap().0,
        0x1_0000_1000
    );
    assert_eq!(
        pt.translate(at(2 * GB)).map(raw_t).unwrap().0,
        0x1_4000_0000
    );
    let (a, _) = pt.destroy();
    assert_eq!((a.live_allocs(), a.bad_frees), (0, 0));
}

fn set_fail(pt: &mut PageTable<VecAlloc, Recorder>, n: Option<u64>) {
    pt.allocator_mut().fail_after(n);
}

#[test]
fn unmap_and_protect_that_must_split_fail_atomically() {
    let geo = s2(Granule::K16, 40);
    let mut pt = PageTable::<_, _>::new(geo, VecAlloc::new(), NoMaintenance).unwrap();
    pt.map(
        rng(0..64 << 20),
        Pa::new(0x4000_0000),
        Attrs::ram(),
        MapOpts::default(),
    )
    .unwrap();
    pt.release_reserve();
    let before = dump(&mut pt);
    pt.allocator_mut().fail_after(Some(0));
    assert!(matches!(
        pt.unmap(rng(0x4000..0x8000)),
        Err(MapError::NoMemory { .. })
    ));
    assert!(matches!(
        pt.protect(rng(0x4000..0x8000), Attrs::rodata()),
        Err(MapError::NoMemory { .. })
    ));
    assert_eq!(dump(&mut pt), before);
    pt.allocator_mut().fail_after(None);
    pt.unmap(rng(0x4000..0x8000)).unwrap();
    assert_eq!(pt.translate(at(0x4000)).map(raw_t), None);
    pt.destroy();
}

#[test]
fn create_map_destroy_loops_leak_nothing() {
    let mut alloc = VecAlloc::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut high_water = 0;
    for i in 0..600 {
        let g = Granule::ALL[i % 3];
        let bits = [36, 40, 44][(i / 3) % 3];
        let geo = s2(g, bits);
        let mut pt = PageTable::<_, _>::new(geo, &mut alloc, Counter::default()).unwrap();
        let p = g.size();
        // 1 GiB at an offset that forces edge pages, plus a few holes.
        pt.map(
            rng(p..GB + p),
            Pa::new(0x1_0000_0000 + p),
            Attrs::ram(),
            MapOpts::default(),
        )
        .unwrap();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % (GB / p)) * p;
            pt.unmap(rng(at..at + p)).unwrap();
        }
        if i % 2 == 0 {
            pt.unmap(rng(0..GB + p)).unwrap();
            assert_eq!(pt.tables(), geo.root_tables() as usize);
        }
        let (a, _) = pt.destroy();
        assert_eq!(a.live_allocs(), 0, "cycle {i}");
        if i == 3 {
            high_water = a.live_bytes();
        }
    }
    assert_eq!(alloc.bad_frees, 0);
    assert_eq!(alloc.live_bytes(), high_water);
    assert_eq!(alloc.total_allocs(), alloc.total_frees());
}

#[test]
fn pages_only_1gib_uses_the_minimum_table_memory() {
    // §B1: 4K 1 GiB pages = 512 L3 + 1 L2 (+ root); 16K = 32 L3 (+1 L2 under an L1 root);
    // 64K = 2 L3 under an L2 root.
    for (g, bits, want_below_root) in [
        (Granule::K4, 40, 513),
        (Granule::K16, 48, 33),
        (Granule::K16, 40, 32),
        (Granule::K64, 42, 2),
    ] {
        let geo = s2(g, bits);
        let mut pt = PageTable::<_, _>::new(geo, VecAlloc::new(), NoMaintenance).unwrap();
        pt.map(
            rng(4 * GB..5 * GB),
            Pa::new(8 * GB),
            Attrs::ram(),
            MapOpts::PAGES,
        )
        .unwrap();
        assert_eq!(
            pt.tables() - geo.root_tables() as usize,
            want_below_root,
            "{g} {bits}"
        );
        assert_eq!(pt.reserved_tables(), 0);
        pt.destroy();
    }
}
