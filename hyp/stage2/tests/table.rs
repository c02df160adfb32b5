//! Walker edge cases and the behaviour of map/unmap/protect/translate for every regime.

use stage2::*;

mod common;
use common::*;

fn cpu() -> CpuFeatures {
    CpuFeatures::profile("max").unwrap()
}

fn s2(g: Granule, bits: u32) -> PageTable<VecAlloc, Recorder> {
    let geo = Geometry::stage2(g, bits, &cpu()).unwrap();
    PageTable::with_vmid(geo, 7, VecAlloc::new(), Recorder::default()).unwrap()
}

fn oa_mask(pt: &PageTable<VecAlloc, Recorder>) -> u64 {
    0x0000_ffff_ffff_f000 & !(pt.geometry().page_size() - 1)
}

#[test]
fn el2_identity_map_with_wx() {
    for g in Granule::ALL {
        let geo = Geometry::new(Regime::El2, g, 48, &cpu()).unwrap();
        let mut pt = PageTable::<_, _, Va>::new(geo, VecAlloc::new(), NoMaintenance).unwrap();
        let p = g.size();
        let text = 0x4008_0000 & !(p - 1);
        pt.map(
            rng(text..text + 4 * p),
            Pa::new(text),
            Attrs::code(),
            MapOpts::default(),
        )
        .unwrap();
        pt.map(
            rng(text + 4 * p..text + 6 * p),
            Pa::new(text + 4 * p),
            Attrs::rodata(),
            MapOpts::default(),
        )
        .unwrap();
        pt.map(
            rng(0..p),
            Pa::new(0),
            Attrs::new(true, false, true, MemType::Device),
            MapOpts::default(),
        )
        .unwrap_err();
        pt.map(
            rng(0x0900_0000 & !(p - 1)..(0x0900_0000 & !(p - 1)) + p),
            Pa::new(0x0900_0000 & !(p - 1)),
            Attrs::device(),
            MapOpts::default(),
        )
        .unwrap();
        assert_eq!(
            pt.map(
                rng(text..text + p),
                Pa::new(text),
                Attrs::new(true, true, true, MemType::Normal),
                MapOpts::default()
            ),
            Err(MapError::Attrs(AttrError::WriteExecEl2(Attrs::new(
                true,
                true,
                true,
                MemType::Normal
            ))))
        );
        let (oa, a, level) = pt.translate(at(text + 123)).map(raw_t).unwrap();
        assert_eq!((oa, a, level), (text + 123, Attrs::code(), 3));
        assert_eq!(
            pt.translate(at(text + 5 * p)).map(raw_t).unwrap().1,
            Attrs::rodata()
        );
        assert_eq!(
            pt.translate(at(0x0900_0000)).map(raw_t).unwrap().1,
            Attrs::device()
        );
        assert_eq!(pt.translate(at(text + 6 * p)).map(raw_t), None);
        let (alloc, _) = pt.destroy();
        assert_eq!(alloc.live_allocs(), 0);
        assert_eq!(alloc.bad_frees, 0);
    }
}

trait MapExt {
    fn map_ok(&mut self, r: core::ops::Range<u64>, out: u64, a: Attrs);
}
impl<A: TableAlloc, M: Maintenance> MapExt for PageTable<A, M> {
    fn map_ok(&mut self, r: core::ops::Range<u64>, out: u64, a: Attrs) {
        self.map(rng(r), Pa::new(out), a, MapOpts::default())
            .unwrap()
    }
}

#[test]
fn blocks_where_alignment_allows() {
    let mut pt = s2(Granule::K4, 40);
    // 1 GiB aligned: one L1 block.
    pt.map_ok(0x4000_0000..0x8000_0000, 0x4000_0000, Attrs::ram());
    assert_eq!(
        pt.translate(at(0x4000_1234)).map(raw_t).unwrap(),
        (0x4000_1234, Attrs::ram(), 1)
    );
    assert_eq!(pt.tables(), 2, "root only (2 concatenated tables)");
    // 2M-aligned output but not 1G: 2M blocks.
    pt.map_ok(0x8000_0000..0xc000_0000, 0x1_0020_0000, Attrs::ram());
    assert_eq!(pt.translate(at(0x8000_0000)).map(raw_t).unwrap().2, 2);
    assert_eq!(pt.tables(), 3);
    // Straddling: pages at the edges, blocks in the middle.
    pt.map_ok(0xc000_1000..0xc060_0000, 0x2_c000_1000, Attrs::ram());
    assert_eq!(pt.translate(at(0xc000_1000)).map(raw_t).unwrap().2, 3);
    assert_eq!(pt.translate(at(0xc040_0000)).map(raw_t).unwrap().2, 2);
    assert_eq!(
        pt.translate(at(0xc05f_f000)).map(raw_t).unwrap(),
        (0x2_c05f_f000, Attrs::ram(), 2)
    );
    // Pages forced.
    pt.map(
        rng(0x1_0000_0000..0x1_0040_0000),
        Pa::new(0x1_0000_0000),
        Attrs::ram(),
        MapOpts::PAGES,
    )
    .unwrap();
    assert_eq!(pt.translate(at(0x1_0020_0000)).map(raw_t).unwrap().2, 3);
    let mask = oa_mask(&pt);
    check_bbm(&pt.maintenance().events, mask).unwrap();
}

#[test]
fn last_byte_and_concatenated_roots() {
    for (g, bits) in [
        (Granule::K4, 40),
        (Granule::K16, 40),
        (Granule::K64, 46),
        (Granule::K4, 32),
    ] {
        let mut pt = s2(g, bits);
        let top = 1u64 << bits;
        let p = g.size();
        pt.map_ok(top - p..top, 0x1234 * p, Attrs::ram());
        assert_eq!(
            pt.translate(at(top - 1)).map(raw_t).unwrap().0,
            0x1234 * p + p - 1
        );
        pt.map_ok(0..p, 0x77 * p, Attrs::device());
        assert_eq!(
            pt.translate(at(0)).map(raw_t).unwrap(),
            (0x77 * p, Attrs::device(), 3)
        );
        assert_eq!(
            pt.map(
                rng(top - p..top + p),
                Pa::new(0),
                Attrs::ram(),
                MapOpts::default()
            ),
            Err(MapError::OutOfRange {
                end: top + p,
                limit: top
            })
        );
        assert_eq!(pt.translate(at(top)).map(raw_t), None);
        pt.unmap(rng(0..top)).unwrap();
        assert_eq!(
            pt.tables(),
            pt.geometry().root_tables() as usize,
            "{g} {bits}"
        );
        let (a, _) = pt.destroy();
        assert_eq!(a.live_allocs(), 0);
    }
}

#[test]
fn straddling_subtables_and_block_split() {
    let mut pt = s2(Granule::K4, 40);
    // Two pages straddling an L3 table boundary.
    pt.map_ok(0x1ff000..0x201000, 0x5000_0000, Attrs::ram());
    assert_eq!(
        pt.translate(at(0x1ff000)).map(raw_t).unwrap().0,
        0x5000_0000
    );
    assert_eq!(
        pt.translate(at(0x200000)).map(raw_t).unwrap().0,
        0x5000_1000
    );
    // Split a 2M block by unmapping one page in its middle.
    pt.map_ok(0x4000_0000..0x4020_0000, 0x8000_0000, Attrs::ram());
    assert_eq!(pt.translate(at(0x4000_0000)).map(raw_t).unwrap().2, 2);
    pt.maintenance_mut().events.clear();
    pt.unmap(rng(0x4010_0000..0x4010_1000)).unwrap();
    assert_eq!(pt.translate(at(0x4010_0000)).map(raw_t), None);
    assert_eq!(
        pt.translate(at(0x4010_1000)).map(raw_t).unwrap(),
        (0x8010_1000, Attrs::ram(), 3)
    );
    assert_eq!(
        pt.translate(at(0x400f_f000)).map(raw_t).unwrap().0,
        0x800f_f000
    );
    let mask = oa_mask(&pt);
    check_bbm(&pt.maintenance().events, mask).unwrap();
    // Protect a page inside a 1G block: split twice.
    pt.map_ok(
        0x80_0000_0000 - 0x4000_0000..0x80_0000_0000,
        0x4000_0000,
        Attrs::ram(),
    );
    pt.protect(
        rng(0x7f_c000_3000..0x7f_c000_4000),
        Attrs::ram().read_only(),
    )
    .unwrap();
    assert_eq!(
        pt.translate(at(0x7f_c000_3000)).map(raw_t).unwrap(),
        (0x4000_3000, Attrs::ram().read_only(), 3)
    );
    assert_eq!(
        pt.translate(at(0x7f_c000_4000)).map(raw_t).unwrap(),
        (0x4000_4000, Attrs::ram(), 3)
    );
    assert_eq!(pt.translate(at(0x7f_c020_0000)).map(raw_t).unwrap().2, 2);
    check_bbm(&pt.maintenance().events, mask).unwrap();
    // Remap a split range as a block again: table replaced by block, VMID flushed.
    let before = pt.tables();
    pt.maintenance_mut().events.clear();
    pt.map_ok(0x7f_c000_0000..0x7f_c020_0000, 0x4000_0000, Attrs::ram());
    assert_eq!(pt.translate(at(0x7f_c000_3000)).map(raw_t).unwrap().2, 2);
    assert_eq!(pt.tables(), before - 1);
    assert!(pt
        .maintenance()
        .ops()
        .contains(&MaintOp::TlbiVmalls12e1is { vmid: 7 }));
    check_bbm(&pt.maintenance().events, mask).unwrap();
}

#[test]
fn tlbi_sequences() {
    let mut pt = s2(Granule::K16, 40);
    let p = 0x4000;
    pt.map(
        rng(0..16 * p),
        Pa::new(0x1_0000_0000),
        Attrs::ram(),
        MapOpts::PAGES,
    )
    .unwrap();
    pt.maintenance_mut().events.clear();
    pt.unmap(rng(0..2 * p)).unwrap();
    assert_eq!(
        pt.maintenance().ops(),
        vec![
            MaintOp::DsbIshSt,
            MaintOp::TlbiIpas2e1is {
                vmid: 7,
                operand: 0
            },
            MaintOp::TlbiIpas2e1is {
                vmid: 7,
                operand: 4
            },
            MaintOp::DsbIsh,
            MaintOp::TlbiVmalle1is { vmid: 7 },
            MaintOp::DsbIsh,
            MaintOp::Isb,
        ]
    );
    // More than 512 entries: one VMALLS12E1IS.
    pt.map(
        rng(0..1024 * p),
        Pa::new(0x1_0000_0000),
        Attrs::ram(),
        MapOpts::PAGES,
    )
    .unwrap();
    pt.maintenance_mut().events.clear();
    pt.protect(rng(0..1024 * p), Attrs::ram().read_only())
        .unwrap();
    let ops = pt.maintenance().ops();
    assert_eq!(
        ops,
        vec![
            MaintOp::DsbIshSt,
            MaintOp::TlbiVmalls12e1is { vmid: 7 },
            MaintOp::DsbIsh,
            MaintOp::Isb,
        ]
    );
}

#[test]
fn cache_maintenance_decisions() {
    let regs = |mmfr2: u64, ctr: u64| {
        let max = CpuFeatures::profile("max").unwrap().id_regs();
        CpuFeatures::from_id_regs(IdRegs { mmfr2, ctr, ..max })
    };
    let cases = [
        (regs(0, 0), true, true),
        (regs(1 << 40, 0), false, true),
        (regs(0, 1 << 29), true, false),
        (regs(1 << 40, 1 << 29), false, false),
    ];
    for (cpu, clean, inval) in cases {
        let geo = Geometry::stage2(Granule::K4, 40, &cpu).unwrap();
        let mut pt = PageTable::<_, _>::new(geo, VecAlloc::new(), Recorder::default()).unwrap();
        pt.map_ok(0..0x20_0000, 0x4000_0000, Attrs::ram());
        // Normal memory reads back as normal under either stage-2 encoding.
        assert_eq!(pt.translate(at(0x1000)).map(raw_t).unwrap().1, Attrs::ram());
        let ops = pt.maintenance().ops();
        assert_eq!(
            ops.contains(&MaintOp::CleanDcachePoc {
                pa: Pa::new(0x4000_0000),
                len: 0x20_0000
            }),
            clean
        );
        assert_eq!(
            ops.contains(&MaintOp::InvalidateIcachePou {
                pa: Pa::new(0x4000_0000),
                len: 0x20_0000
            }),
            inval
        );
        // Device memory and non-executable memory never get an I-cache invalidate.
        pt.maintenance_mut().events.clear();
        pt.map_ok(0x100_0000..0x100_1000, 0x900_0000, Attrs::device());
        pt.map_ok(0x200_0000..0x200_1000, 0x4100_0000, Attrs::data());
        let ops = pt.maintenance().ops();
        assert!(!ops
            .iter()
            .any(|o| matches!(o, MaintOp::InvalidateIcachePou { .. })));
        assert!(!ops.contains(&MaintOp::CleanDcachePoc {
            pa: Pa::new(0x900_0000),
            len: 0x1000
        }));
        pt.destroy();
    }
}

#[test]
fn errors_leave_tables_unchanged_and_name_the_problem() {
    let mut pt = s2(Granule::K64, 42);
    let e = pt
        .map(
            rng(0x100..0x1_0000),
            Pa::new(0),
            Attrs::ram(),
            MapOpts::default(),
        )
        .unwrap_err();
    assert_eq!(
        e,
        MapError::Misaligned {
            addr: 0x100,
            granule: Granule::K64
        }
    );
    assert!(e.to_string().contains("64K"), "{e}");
    let e = pt
        .map(
            rng(0..0x1_0000),
            Pa::new(0x8000),
            Attrs::ram(),
            MapOpts::default(),
        )
        .unwrap_err();
    assert!(matches!(e, MapError::Misaligned { addr: 0x8000, .. }));
    let e = pt
        .map(
            rng(0..0x1_0000),
            Pa::new((1 << 48) - 0x8000 + 0x8000),
            Attrs::ram(),
            MapOpts::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("48-bit"), "{e}");
    // A backwards range cannot even be made, so no operation needs to check for one.
    let (hi, lo) = (Ipa::new(0x2_0000), Ipa::new(0x1_0000));
    let e = AddrRange::new(hi, lo).unwrap_err();
    assert!(matches!(e, RangeError::Backwards { .. }));
    assert!(e.to_string().contains("ends before it starts"), "{e}");
    assert_eq!(pt.tables(), 1);
}

#[test]
fn walk_visits_concatenated_roots_and_tables() {
    let mut pt = s2(Granule::K16, 40);
    assert_eq!(pt.geometry().root_tables(), 16);
    let p = 0x4000u64;
    let addrs = [0u64, 0x80_0000_0000 - p, 0x40_0000_0000];
    for (i, a) in addrs.iter().enumerate() {
        pt.map_ok(*a..*a + p, 0x1000_0000 + i as u64 * p, Attrs::ram());
    }
    let mut leaves = Vec::new();
    let mut pre = 0;
    let mut post = 0;
    pt.walk::<MapError, _>(
        rng(0..1 << 40),
        WalkFlags::LEAF | WalkFlags::TABLE_PRE | WalkFlags::TABLE_POST,
        &mut |_c: &mut Ctx<VecAlloc, Recorder>, v: &mut Visit| {
            match v.kind {
                VisitKind::Leaf if v.old & 1 != 0 => leaves.push(v.addr),
                VisitKind::TablePre => pre += 1,
                VisitKind::TablePost => post += 1,
                _ => {}
            }
            Ok(())
        },
    )
    .unwrap();
    let mut want = addrs.to_vec();
    want.sort();
    assert_eq!(leaves, want);
    assert_eq!((pre, post), (3, 3));
    assert_eq!(pt.tables(), 16 + 3);
}

#[test]
fn el1_regime_and_live_switch() {
    // The probe guest's own stage 1: EL1-only access, UXN always, PXN unless executable.
    let geo = Geometry::new(Regime::El1, Granule::K16, 39, &cpu()).unwrap();
    assert_eq!((geo.start_level(), geo.levels()), (1, 3));
    let mut pt = PageTable::<_, _, Va>::new(geo, VecAlloc::new(), NoMaintenance).unwrap();
    let p = Granule::K16.size();
    pt.map(
        rng(0..4 * p),
        Pa::new(0x4000_0000),
        Attrs::code(),
        MapOpts::default(),
    )
    .unwrap();
    pt.map(
        rng(4 * p..8 * p),
        Pa::new(0x4001_0000),
        Attrs::data(),
        MapOpts::default(),
    )
    .unwrap();
    let leaf = |pt: &mut PageTable<VecAlloc, _, Va>, a: u64| {
        let mut d = 0;
        pt.walk::<MapError, _>(
            rng(a..a + p),
            WalkFlags::LEAF,
            &mut |_c: &mut Ctx<VecAlloc, _>, v: &mut Visit| {
                d = v.old;
                Ok(())
            },
        )
        .unwrap();
        d
    };
    let code = leaf(&mut pt, 0);
    assert_eq!(code & (1 << 54), 1 << 54, "UXN");
    assert_eq!(code & (1 << 53), 0, "PXN clear for code");
    assert_eq!(code & (1 << 7), 1 << 7, "read-only");
    assert_eq!(code & (1 << 6), 0, "no EL0 access");
    let data = leaf(&mut pt, 4 * p);
    assert_eq!(data & (3 << 53), 3 << 53);
    assert_eq!(data & (1 << 7), 0);
    // Once live, switch to a recording sink: the unmap is invalidated by VA (all ASIDs).
    let (mut pt, _) = pt.with_maintenance(Recorder::default());
    pt.unmap(rng(0..p)).unwrap();
    let ops = pt.maintenance().ops();
    assert!(
        ops.contains(&MaintOp::TlbiVaae1is { operand: 0 }),
        "{ops:?}"
    );
    assert_eq!(pt.translate(at(4 * p)).map(raw_t).unwrap().1, Attrs::data());
    let (a, _) = pt.destroy();
    assert_eq!(a.live_allocs(), 0);
}

#[test]
fn el2_unmap_invalidates_by_va() {
    let geo = Geometry::new(Regime::El2, Granule::K64, 48, &cpu()).unwrap();
    let mut pt = PageTable::<_, _, Va>::new(geo, VecAlloc::new(), Recorder::default()).unwrap();
    let p = Granule::K64.size();
    pt.map(
        rng(0x4000_0000..0x4000_0000 + 2 * p),
        Pa::new(0x4000_0000),
        Attrs::data(),
        MapOpts::default(),
    )
    .unwrap();
    pt.maintenance_mut().events.clear();
    pt.unmap(rng(0x4000_0000..0x4000_0000 + p)).unwrap();
    assert_eq!(
        pt.maintenance().ops(),
        vec![
            MaintOp::DsbIshSt,
            MaintOp::TlbiVae2is { operand: 0x4_0000 },
            MaintOp::DsbIsh,
            MaintOp::Isb
        ]
    );
    pt.destroy();
}

#[test]
fn for_each_leaf_reports_pages_and_blocks_in_order() {
    let mut pt = s2(Granule::K4, 40);
    // A 2M block, three pages, and a page at the top of the input space.
    let opts = MapOpts {
        skip_cmo: true,
        pages_only: false,
    };
    pt.map(
        rng(0x4000_0000..0x4020_0000),
        Pa::new(0x8000_0000),
        Attrs::ram(),
        opts,
    )
    .unwrap();
    pt.map(
        rng(0x4020_0000..0x4020_3000),
        Pa::new(0x9000_0000),
        Attrs::ram(),
        opts,
    )
    .unwrap();
    let top = (1 << 40) - 0x1000;
    pt.map(
        rng(top..top + 0x1000),
        Pa::new(0xa000_0000),
        Attrs::device(),
        opts,
    )
    .unwrap();
    let mut leaves = Vec::new();
    pt.for_each_leaf(|ipa, pa, size| leaves.push((ipa.get(), pa.get(), size)));
    assert_eq!(
        leaves,
        [
            (0x4000_0000, 0x8000_0000, 0x20_0000),
            (0x4020_0000, 0x9000_0000, 0x1000),
            (0x4020_1000, 0x9000_1000, 0x1000),
            (0x4020_2000, 0x9000_2000, 0x1000),
            (top, 0xa000_0000, 0x1000),
        ]
    );
    pt.unmap(rng(0x4020_1000..0x4020_2000)).unwrap();
    let mut n = 0;
    pt.for_each_leaf(|ipa, _, _| {
        assert_ne!(ipa, Ipa::new(0x4020_1000), "an unmapped page is not a leaf");
        n += 1;
    });
    assert_eq!(n, 4);
}

#[test]
fn a_table_refuses_a_geometry_of_another_input_kind() {
    let el2 = Geometry::new(Regime::El2, Granule::K4, 48, &cpu()).unwrap();
    let s2 = Geometry::stage2(Granule::K4, 40, &cpu()).unwrap();
    let e = PageTable::<_, _, Ipa>::new(el2, VecAlloc::new(), NoMaintenance).unwrap_err();
    assert_eq!(
        e,
        MapError::WrongInputKind {
            regime: Regime::El2,
            kind: "Ipa"
        }
    );
    assert_eq!(
        e.to_string(),
        "EL2 stage 1 tables do not translate Ipa addresses"
    );
    let e = PageTable::<_, _, Va>::new(s2, VecAlloc::new(), NoMaintenance).unwrap_err();
    assert!(
        matches!(e, MapError::WrongInputKind { kind: "Va", .. }),
        "{e}"
    );
}
