//! Golden geometry tables for every granule x input size 32..48, stage 2 and stage 1,
//! cross-checked against formulas written here independently of the code under test.

use aarch64_cpu::registers::{TCR_EL1, TCR_EL2, VTCR_EL2};
use stage2::{CpuFeatures, Geometry, Granule, Regime};
use tock_registers::LocalRegisterCopy;

/// (levels, start level, root tables, SL0).
type Row = (u32, u32, u32, u64);

/// Stage 2 from reliability-perf.md §B2 (Linux `stage2_pgtable.h` / `kvm_get_vtcr`):
/// (levels, start level, root tables, SL0) per IPA size 32..=48, for 4K, 16K, 64K.
#[rustfmt::skip]
const STAGE2_B2: [(u32, [Row; 3]); 17] = [
    (32, [(2, 2, 4, 0),  (2, 2, 1, 1),  (2, 2, 1, 1)]),
    (33, [(2, 2, 8, 0),  (2, 2, 1, 1),  (2, 2, 1, 1)]),
    (34, [(2, 2, 16, 0), (2, 2, 1, 1),  (2, 2, 1, 1)]),
    (35, [(3, 1, 1, 1),  (2, 2, 1, 1),  (2, 2, 1, 1)]),
    (36, [(3, 1, 1, 1),  (2, 2, 1, 1),  (2, 2, 1, 1)]),
    (37, [(3, 1, 1, 1),  (2, 2, 2, 1),  (2, 2, 1, 1)]),
    (38, [(3, 1, 1, 1),  (2, 2, 4, 1),  (2, 2, 1, 1)]),
    (39, [(3, 1, 1, 1),  (2, 2, 8, 1),  (2, 2, 1, 1)]),
    (40, [(3, 1, 2, 1),  (2, 2, 16, 1), (2, 2, 1, 1)]),
    (41, [(3, 1, 4, 1),  (3, 1, 1, 2),  (2, 2, 1, 1)]),
    (42, [(3, 1, 8, 1),  (3, 1, 1, 2),  (2, 2, 1, 1)]),
    (43, [(3, 1, 16, 1), (3, 1, 1, 2),  (2, 2, 2, 1)]),
    (44, [(4, 0, 1, 2),  (3, 1, 1, 2),  (2, 2, 4, 1)]),
    (45, [(4, 0, 1, 2),  (3, 1, 1, 2),  (2, 2, 8, 1)]),
    (46, [(4, 0, 1, 2),  (3, 1, 1, 2),  (2, 2, 16, 1)]),
    (47, [(4, 0, 1, 2),  (3, 1, 1, 2),  (3, 1, 1, 2)]),
    (48, [(4, 0, 1, 2),  (3, 1, 2, 2),  (3, 1, 1, 2)]),
];

/// Linux's `ARM64_HW_PGTABLE_LEVELS(va_bits) = (va_bits - 4) / (PAGE_SHIFT - 3)`.
fn hw_levels(va_bits: u32, page_shift: u32) -> u32 {
    (va_bits - 4) / (page_shift - 3)
}

/// KVM: stage-2 levels = max(2, ARM64_HW_PGTABLE_LEVELS(ipa - 4)), root pages =
/// DIV_ROUND_UP((1 << (ipa - pgdir_shift)) * 8, PAGE_SIZE).
fn kvm_stage2(ipa: u32, page_shift: u32) -> (u32, u32, u32) {
    let levels = hw_levels(ipa - 4, page_shift).max(2);
    let pgdir_shift = (page_shift - 3) * levels + 3;
    let ptrs = 1u64 << (ipa - pgdir_shift);
    let pages = (ptrs * 8).div_ceil(1 << page_shift) as u32;
    (levels, 4 - levels, pages)
}

fn max() -> CpuFeatures {
    CpuFeatures::profile("max").unwrap()
}

#[test]
fn stage2_golden_and_formula() {
    let cpu = max();
    for (ipa, rows) in STAGE2_B2 {
        for (gi, g) in Granule::ALL.into_iter().enumerate() {
            let geo = Geometry::stage2(g, ipa, &cpu).unwrap();
            let (levels, start, roots, sl0) = rows[gi];
            let got = (
                geo.levels(),
                geo.start_level(),
                geo.root_tables(),
                geo.sl0(),
            );
            assert_eq!(got, (levels, start, roots, sl0), "{g} ipa {ipa}");
            assert_eq!(
                kvm_stage2(ipa, g.shift()),
                (levels, start, roots),
                "{g} ipa {ipa}"
            );
            assert!(roots <= 16);
            // The root covers exactly the IPA space.
            let root_span = geo.entry_size(start) * geo.root_entries() as u64;
            assert_eq!(root_span, 1u64 << ipa);
            assert_eq!(geo.root_bytes(), roots as u64 * g.size());
            // VTCR_EL2 as the hardware reads it (aarch64-cpu's field definitions): T0SZ,
            // SL0 and TG0 of this row.
            let vtcr = vtcr_of(&geo);
            assert_eq!(vtcr.read(VTCR_EL2::T0SZ), 64 - ipa as u64, "{g} ipa {ipa}");
            assert_eq!(vtcr.read(VTCR_EL2::SL0), sl0, "{g} ipa {ipa}");
            assert_eq!(vtcr.read_as_enum(VTCR_EL2::TG0), Some(tg0_of(g)), "{g}");
        }
    }
}

fn vtcr_of(geo: &Geometry) -> LocalRegisterCopy<u64, VTCR_EL2::Register> {
    LocalRegisterCopy::new(geo.vtcr_el2(48, false))
}

/// Arm ARM D19.2.175 VTCR_EL2.TG0, in aarch64-cpu's names.
fn tg0_of(g: Granule) -> VTCR_EL2::TG0::Value {
    match g {
        Granule::K4 => VTCR_EL2::TG0::Value::Granule4KB,
        Granule::K16 => VTCR_EL2::TG0::Value::Granule16KB,
        Granule::K64 => VTCR_EL2::TG0::Value::Granule64KB,
    }
}

#[test]
fn stage1_formula_every_size() {
    let cpu = max();
    for regime in [Regime::El2, Regime::El1] {
        for bits in 32..=48 {
            for g in Granule::ALL {
                let geo = Geometry::new(regime, g, bits, &cpu).unwrap();
                let levels = hw_levels(bits, g.shift());
                assert_eq!(geo.levels(), levels, "{regime} {g} {bits}");
                assert_eq!(geo.start_level(), 4 - levels);
                assert_eq!(geo.root_tables(), 1);
                // Root entries: what is left of the VA after the lower levels.
                let low = g.shift() + (levels - 1) * (g.shift() - 3);
                assert_eq!(geo.root_entries(), 1usize << (bits - low));
                assert!(geo.root_entries() <= g.entries());
                let tcr2 = LocalRegisterCopy::<u64, TCR_EL2::Register>::new(geo.tcr_el2(48));
                assert_eq!(tcr2.read(TCR_EL2::T0SZ), 64 - bits as u64);
                assert_eq!(tcr2.read(TCR_EL2::TG0), tg0_of(g) as u64);
                let tcr1 = LocalRegisterCopy::<u64, TCR_EL1::Register>::new(geo.tcr_el1(48));
                assert_eq!(tcr1.read(TCR_EL1::T0SZ), 64 - bits as u64);
                assert_eq!(tcr1.read(TCR_EL1::TG0), tg0_of(g) as u64);
            }
        }
    }
}

/// Every (granule, start level) pair a stage-2 geometry can have, with the SL0 the Arm ARM
/// gives it (D19.2.175 VTCR_EL2.SL0: 4K {L2: 0b00, L1: 0b01, L0: 0b10}; 16K and 64K
/// {L3: 0b00, L2: 0b01, L1: 0b10}; 4K L3 and 16K L0 need FEAT_TTST/LPA2 and are never used).
const SL0_TABLE: [(Granule, u32, u64); 7] = [
    (Granule::K4, 2, 0b00),
    (Granule::K4, 1, 0b01),
    (Granule::K4, 0, 0b10),
    (Granule::K16, 2, 0b01),
    (Granule::K16, 1, 0b10),
    (Granule::K64, 2, 0b01),
    (Granule::K64, 1, 0b10),
];

#[test]
fn every_granule_start_level_pair_has_its_sl0() {
    let cpu = max();
    let mut seen = std::collections::BTreeSet::new();
    for bits in 32..=48 {
        for g in Granule::ALL {
            let geo = Geometry::stage2(g, bits, &cpu).unwrap();
            let start = geo.start_level();
            let Some(&(_, _, want)) = SL0_TABLE.iter().find(|r| (r.0, r.1) == (g, start)) else {
                panic!("{g} {bits}: start level {start} is not in the Arm ARM's SL0 table");
            };
            let vtcr = vtcr_of(&geo);
            assert_eq!(vtcr.read(VTCR_EL2::SL0), want, "{g} {bits}");
            assert_eq!(geo.sl0(), want, "{g} {bits}");
            if g == Granule::K4 {
                // aarch64-cpu names the 4K encodings: decode them back to the level.
                let level = match vtcr.read_as_enum(VTCR_EL2::SL0) {
                    Some(VTCR_EL2::SL0::Value::Granule4KBLevel0) => 0,
                    Some(VTCR_EL2::SL0::Value::Granule4KBLevel1) => 1,
                    Some(VTCR_EL2::SL0::Value::Granule4KBLevel2) => 2,
                    other => panic!("{bits}: SL0 {other:?}"),
                };
                assert_eq!(level, start, "{bits}");
            }
            seen.insert((g, start));
        }
    }
    // Every pair of the table occurs for some IPA size.
    assert_eq!(seen.len(), SL0_TABLE.len());
}

#[test]
fn out_of_range_sizes_refused() {
    let cpu = max();
    for g in Granule::ALL {
        for bits in [0, 16, 31, 49, 52, 53, 64] {
            assert!(Geometry::stage2(g, bits, &cpu).is_err(), "{g} {bits}");
            assert!(
                Geometry::new(Regime::El2, g, bits, &cpu).is_err(),
                "{g} {bits}"
            );
        }
    }
}
