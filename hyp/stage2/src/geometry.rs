//! Run-time translation-table geometry and the register fields derived from it.
//!
//! A [`Geometry`] is computed once per table from (regime, granule, input address bits, CPU
//! features) and used everywhere: index extraction, block sizes per level, table size, the
//! number of concatenated root tables (stage 2 only), and the TCR_EL2/VTCR_EL2 fields.
//!
//! Level numbering follows the Arm ARM: the leaf level is always 3; a level-`L` entry maps
//! `1 << level_shift(L)` bytes where `level_shift(L) = page_shift + (3 - L) * bits_per_level`
//! (Arm ARM D8.2, "Translation table walk").

use crate::cpu::{CpuFeatures, GranuleRefusal};
use crate::Granule;
use core::fmt;

/// The translation regime a table belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Regime {
    /// A VM's stage-2 (IPA → PA) tables, tagged with a VMID.
    Stage2,
    /// hyp's own EL2 stage-1 tables (non-VHE, `TTBR0_EL2`, one privilege level).
    El2,
    /// An EL1&0 stage-1 table (`TTBR0_EL1`), e.g. the probe guest's own tables.
    El1,
}

impl Regime {
    /// `true` for the stage-2 regime.
    pub const fn is_stage2(self) -> bool {
        matches!(self, Regime::Stage2)
    }
}

impl fmt::Display for Regime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Regime::Stage2 => "stage 2",
            Regime::El2 => "EL2 stage 1",
            Regime::El1 => "EL1 stage 1",
        })
    }
}

/// The smallest input address size accepted (KVM's minimum IPA size is 32 bits too).
pub const MIN_INPUT_BITS: u32 = 32;
/// The largest input address size accepted: 52-bit inputs need FEAT_LPA/FEAT_LPA2 descriptor
/// formats, which this crate does not implement.
pub const MAX_INPUT_BITS: u32 = 48;
/// At most 16 tables may be concatenated at the initial lookup level of stage 2
/// (Arm ARM D8.2.6 "Concatenated translation tables for the initial stage 2 lookup").
pub const MAX_ROOT_TABLES: u32 = 16;

/// Why a geometry cannot be built. Every variant names the reason and the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// The CPU does not offer the granule at this stage.
    Granule(GranuleRefusal),
    /// The input address size is outside what this crate supports.
    InputBits {
        /// The regime asked for.
        regime: Regime,
        /// The size asked for.
        bits: u32,
    },
    /// A 52-bit input address size: needs FEAT_LPA/LPA2 descriptors (not implemented).
    Needs52BitSupport {
        /// The regime asked for.
        regime: Regime,
        /// The granule asked for.
        granule: Granule,
    },
    /// The IPA size exceeds the CPU's physical address range (`ID_AA64MMFR0_EL1.PARange`).
    IpaBeyondPaRange {
        /// The IPA size asked for.
        ipa_bits: u32,
        /// The CPU's physical address size.
        pa_bits: u32,
    },
    /// The combination would need more than 16 concatenated root tables.
    TooManyRootTables {
        /// The granule asked for.
        granule: Granule,
        /// The IPA size asked for.
        ipa_bits: u32,
        /// Tables that would be needed.
        tables: u32,
    },
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GeometryError::Granule(r) => write!(f, "{r}; choose another granule"),
            GeometryError::InputBits { regime, bits } => write!(
                f,
                "{regime} input address size of {bits} bits is not supported; \
                 use {MIN_INPUT_BITS}..={MAX_INPUT_BITS} bits"
            ),
            GeometryError::Needs52BitSupport { regime, granule } => write!(
                f,
                "{regime} {granule} with 52-bit addresses needs FEAT_LPA/FEAT_LPA2 descriptors, \
                 which hyp does not implement; use at most {MAX_INPUT_BITS} bits"
            ),
            GeometryError::IpaBeyondPaRange { ipa_bits, pa_bits } => write!(
                f,
                "IPA size {ipa_bits} bits exceeds the CPU's physical address range of {pa_bits} \
                 bits (ID_AA64MMFR0_EL1.PARange); use ipa_bits <= {pa_bits}"
            ),
            GeometryError::TooManyRootTables {
                granule,
                ipa_bits,
                tables,
            } => write!(
                f,
                "stage 2 {granule} with a {ipa_bits}-bit IPA would need {tables} concatenated \
                 root tables (at most {MAX_ROOT_TABLES})"
            ),
        }
    }
}

/// The translation geometry of one table: a small `Copy` value computed at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    regime: Regime,
    granule: Granule,
    input_bits: u8,
    start_level: u8,
    root_tables: u8,
    fwb: bool,
    dic: bool,
}

impl Geometry {
    /// Computes the geometry of a `regime` table with `granule` pages and `input_bits`-bit input
    /// addresses on a CPU with `cpu`'s features.
    ///
    /// Stage 1 (El2/El1): no concatenation; the start level is the one the fewest levels need.
    /// Stage 2: KVM's policy, the fewest levels that at most 16 concatenated root tables allow,
    /// and never fewer than 2 levels (`kvm_get_vtcr`, `stage2_pgtable.h`).
    pub fn new(
        regime: Regime,
        granule: Granule,
        input_bits: u32,
        cpu: &CpuFeatures,
    ) -> Result<Geometry, GeometryError> {
        if input_bits > MAX_INPUT_BITS && input_bits <= 52 {
            return Err(GeometryError::Needs52BitSupport { regime, granule });
        }
        if !(MIN_INPUT_BITS..=MAX_INPUT_BITS).contains(&input_bits) {
            return Err(GeometryError::InputBits {
                regime,
                bits: input_bits,
            });
        }
        let check = match regime {
            Regime::Stage2 => cpu.stage2(granule),
            Regime::El2 | Regime::El1 => cpu.stage1(granule),
        };
        check.map_err(GeometryError::Granule)?;
        if regime.is_stage2() && input_bits > cpu.pa_bits() {
            return Err(GeometryError::IpaBeyondPaRange {
                ipa_bits: input_bits,
                pa_bits: cpu.pa_bits(),
            });
        }
        let shift = granule.shift();
        let bpl = granule.bits_per_level();
        let levels = if regime.is_stage2() {
            // Up to 16 concatenated tables resolve 4 extra bits at the initial level.
            let bits = input_bits.saturating_sub(shift + 4);
            bits.div_ceil(bpl).max(2)
        } else {
            (input_bits - shift).div_ceil(bpl)
        };
        let start_level = 4 - levels;
        let root_shift = shift + (3 - start_level) * bpl;
        let root_entries_log2 = input_bits - root_shift;
        let root_tables = if root_entries_log2 > bpl {
            1u32 << (root_entries_log2 - bpl)
        } else {
            1
        };
        if root_tables > MAX_ROOT_TABLES {
            return Err(GeometryError::TooManyRootTables {
                granule,
                ipa_bits: input_bits,
                tables: root_tables,
            });
        }
        Ok(Geometry {
            regime,
            granule,
            input_bits: input_bits as u8,
            start_level: start_level as u8,
            root_tables: root_tables as u8,
            fwb: cpu.fwb(),
            dic: cpu.dic(),
        })
    }

    /// Shorthand for `Geometry::new(Regime::Stage2, ..)`.
    pub fn stage2(
        granule: Granule,
        ipa_bits: u32,
        cpu: &CpuFeatures,
    ) -> Result<Geometry, GeometryError> {
        Geometry::new(Regime::Stage2, granule, ipa_bits, cpu)
    }

    /// The regime.
    pub const fn regime(&self) -> Regime {
        self.regime
    }

    /// The granule.
    pub const fn granule(&self) -> Granule {
        self.granule
    }

    /// Input address bits (VA bits for stage 1, IPA bits for stage 2).
    pub const fn input_bits(&self) -> u32 {
        self.input_bits as u32
    }

    /// One past the highest input address.
    pub const fn input_limit(&self) -> u64 {
        1u64 << self.input_bits
    }

    /// The initial lookup level (0..=2).
    pub const fn start_level(&self) -> u32 {
        self.start_level as u32
    }

    /// The number of levels walked (`4 - start_level`).
    pub const fn levels(&self) -> u32 {
        4 - self.start_level as u32
    }

    /// The number of concatenated tables at the start level (1 for stage 1).
    pub const fn root_tables(&self) -> u32 {
        self.root_tables as u32
    }

    /// Entries at the start level (over all concatenated root tables). May be fewer than one
    /// table holds, e.g. 2 for a 16K 48-bit stage-1 table at level 0.
    pub const fn root_entries(&self) -> usize {
        1 << (self.input_bits as u32 - self.level_shift(self.start_level as u32))
    }

    /// Bytes of one table (one granule).
    pub const fn table_bytes(&self) -> u64 {
        self.granule.size()
    }

    /// Bytes of the root (all concatenated tables).
    pub const fn root_bytes(&self) -> u64 {
        self.granule.size() * self.root_tables as u64
    }

    /// Descriptors in one table.
    pub const fn entries(&self) -> usize {
        self.granule.entries()
    }

    /// log2 of the bytes a level-`level` entry maps (`level` in 0..=3).
    pub const fn level_shift(&self, level: u32) -> u32 {
        self.granule.shift() + (3 - level) * self.granule.bits_per_level()
    }

    /// Bytes a level-`level` entry maps, whether or not a block is allowed there.
    pub const fn entry_size(&self, level: u32) -> u64 {
        1u64 << self.level_shift(level)
    }

    /// The size of a block (or page, at level 3) descriptor at `level`, or `None` where the
    /// architecture has no block descriptor (Arm ARM D8.3.1: 4K blocks at L1/L2, 16K and 64K
    /// at L2 without FEAT_LPA/LPA2) or the level is above this table's start level.
    pub const fn block_size(&self, level: u32) -> Option<u64> {
        if level > 3 || level < self.start_level as u32 || level < self.granule.min_block_level() {
            None
        } else {
            Some(self.entry_size(level))
        }
    }

    /// The most bytes of tables a [`crate::PageTable`] of this geometry ever holds while
    /// it maps addresses of `range` only (input addresses, within
    /// [`input_limit`](Self::input_limit)): the root tables; at each level L below the root,
    /// one table per level-(L-1) entry that `range` touches (all of them exist when every
    /// page of `range` is mapped with pages: blocks only ever replace tables, and emptied
    /// tables are freed). No sequence of maps, unmaps and protections inside `range` needs
    /// more (the frames the walker keeps in reserve between operations are an optimisation
    /// it does without when its allocator refuses them), so a VM whose table memory is this
    /// budget never runs out, and one with less can only exhaust its own.
    pub fn table_budget(&self, range: core::ops::Range<u64>) -> u64 {
        if range.end <= range.start {
            return self.root_bytes();
        }
        let last = range.end - 1;
        let mut tables = 0;
        for level in self.start_level as u32 + 1..=3 {
            let s = self.level_shift(level - 1);
            tables += (last >> s) - (range.start >> s) + 1;
        }
        self.root_bytes() + tables * self.table_bytes()
    }

    /// The page (leaf) size.
    pub const fn page_size(&self) -> u64 {
        self.granule.size()
    }

    /// Whether the CPU has FEAT_S2FWB. Then stage-2 tables of this geometry use the FWB
    /// encoding (Normal = MemAttr 0b0110, forced write-back) and skip the clean to PoC before
    /// cacheable mappings, so **hyp must set `HCR_EL2.FWB`** whenever this is true.
    pub const fn fwb(&self) -> bool {
        self.fwb
    }

    /// Whether the CPU has `CTR_EL0.DIC` (no I-cache invalidation for instruction coherence).
    pub const fn dic(&self) -> bool {
        self.dic
    }

    /// `T0SZ = 64 - input_bits` (TCR_EL2, TCR_EL1 and VTCR_EL2 all use it).
    pub const fn t0sz(&self) -> u64 {
        64 - self.input_bits as u64
    }

    /// The TG0 encoding: 0b00 4K, 0b01 64K, 0b10 16K (TCR_EL2/TCR_EL1/VTCR_EL2).
    pub const fn tg0(&self) -> u64 {
        match self.granule {
            Granule::K4 => 0b00,
            Granule::K64 => 0b01,
            Granule::K16 => 0b10,
        }
    }

    /// VTCR_EL2.SL0 for this start level. Its meaning depends on TG0 (Arm ARM D19.2.175):
    /// 4K: 0b00 L2, 0b01 L1, 0b10 L0; 16K and 64K: 0b00 L3, 0b01 L2, 0b10 L1 (0b11 L0 only
    /// with 16K + LPA2, unused here). So SL0 = base - start_level, base 2 (4K) or 3.
    pub const fn sl0(&self) -> u64 {
        let base = match self.granule {
            Granule::K4 => 2,
            Granule::K16 | Granule::K64 => 3,
        };
        (base - self.start_level as u64) & 0b11
    }

    /// TCR_EL2 for the EL2 regime (non-VHE format): T0SZ, IRGN0/ORGN0 = write-back
    /// read-allocate write-allocate, SH0 = inner shareable, TG0, PS, and the RES1 bits 31 and 23
    /// (Arm ARM D19.2.131 TCR_EL2, E2H = 0).
    pub const fn tcr_el2(&self, pa_bits: u32) -> u64 {
        self.t0sz()
            | (WBWA << 8) // IRGN0
            | (WBWA << 10) // ORGN0
            | (SH_INNER << 12) // SH0
            | (self.tg0() << 14)
            | (ps_encoding(pa_bits) << 16) // PS
            | (1 << 23)
            | (1 << 31)
    }

    /// TCR_EL1 for the EL1 regime: TTBR0 walks with the same attributes as `tcr_el2`, TTBR1
    /// walks disabled (EPD1 = 1, TG1 = 4K as a valid encoding), IPS from `pa_bits`.
    pub const fn tcr_el1(&self, pa_bits: u32) -> u64 {
        self.t0sz()
            | (WBWA << 8)
            | (WBWA << 10)
            | (SH_INNER << 12)
            | (self.tg0() << 14)
            | (1 << 23) // EPD1
            | (0b10 << 30) // TG1 = 4K
            | (ps_encoding(pa_bits) << 32) // IPS
    }

    /// VTCR_EL2 for this stage-2 geometry: T0SZ, SL0, IRGN0/ORGN0 = WBWA, SH0 = inner, TG0,
    /// PS from `pa_bits`, VS = 16-bit VMIDs when `vmid16`, RES1 bit 31 (Arm ARM D19.2.175).
    pub const fn vtcr_el2(&self, pa_bits: u32, vmid16: bool) -> u64 {
        self.t0sz()
            | (self.sl0() << 6)
            | (WBWA << 8)
            | (WBWA << 10)
            | (SH_INNER << 12)
            | (self.tg0() << 14)
            | (ps_encoding(pa_bits) << 16)
            | ((vmid16 as u64) << 19)
            | (1 << 31)
    }
}

const WBWA: u64 = 0b01;
const SH_INNER: u64 = 0b11;

/// The PS/IPS encoding for the largest supported size not above `pa_bits` (32, 36, 40, 42,
/// 44, 48 bits → 0..=5). 52 bits is capped to 48: the LPA formats are not implemented.
pub const fn ps_encoding(pa_bits: u32) -> u64 {
    match pa_bits {
        0..=35 => 0,
        36..=39 => 1,
        40..=41 => 2,
        42..=43 => 3,
        44..=47 => 4,
        _ => 5,
    }
}

/// The operand of `TLBI IPAS2E1IS`/`IPAS2LE1IS`: IPA\[47:12\] in bits \[35:0\], whatever the
/// granule (Arm ARM C5.5 "TLBI IPAS2E1IS": the field is always in 4K units; no TTL hint).
pub const fn tlbi_ipa_operand(ipa: u64) -> u64 {
    (ipa >> 12) & ((1 << 36) - 1)
}

/// The operand of `TLBI VAE2IS`/`VAAE1IS`: VA\[55:12\] in bits \[43:0\] (4K units for every
/// granule), ASID field 0.
pub const fn tlbi_va_operand(va: u64) -> u64 {
    (va >> 12) & ((1 << 44) - 1)
}

/// MAIR attribute index of Device-nGnRE memory.
pub const ATTR_IDX_DEVICE: u64 = 0;
/// MAIR attribute index of Normal memory, inner and outer write-back read/write-allocate.
pub const ATTR_IDX_NORMAL: u64 = 1;
/// MAIR_EL2 (and MAIR_EL1, same layout): Attr0 = 0x04 Device-nGnRE, Attr1 = 0xff Normal
/// inner/outer write-back non-transient read/write-allocate (Arm ARM D19.2.97 MAIR_ELx).
pub const MAIR_EL2: u64 = (0x04 << (8 * ATTR_IDX_DEVICE)) | (0xff << (8 * ATTR_IDX_NORMAL));
/// MAIR_EL1 for the EL1 regime (same layout as [`MAIR_EL2`]).
pub const MAIR_EL1: u64 = MAIR_EL2;

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn max() -> CpuFeatures {
        CpuFeatures::profile("max").unwrap()
    }

    #[test]
    fn issue_examples_stage2() {
        let cpu = max();
        let cases = [
            (Granule::K4, 40, 1, 2),
            (Granule::K4, 32, 2, 4),
            (Granule::K16, 40, 2, 16),
            (Granule::K16, 48, 1, 2),
            (Granule::K64, 40, 2, 1),
            (Granule::K4, 48, 0, 1),
        ];
        for (g, bits, start, roots) in cases {
            let geo = Geometry::stage2(g, bits, &cpu).unwrap();
            assert_eq!(geo.start_level(), start, "{g} {bits}");
            assert_eq!(geo.root_tables(), roots, "{g} {bits}");
        }
    }

    #[test]
    fn brief_examples_stage1() {
        let cpu = max();
        let cases = [
            (Granule::K4, 48, 0, 4),
            (Granule::K16, 48, 0, 4),
            (Granule::K64, 48, 1, 3),
            (Granule::K4, 39, 1, 3),
        ];
        for (g, bits, start, levels) in cases {
            let geo = Geometry::new(Regime::El2, g, bits, &cpu).unwrap();
            assert_eq!((geo.start_level(), geo.levels()), (start, levels));
            assert_eq!(geo.root_tables(), 1);
        }
        let geo = Geometry::new(Regime::El2, Granule::K16, 48, &cpu).unwrap();
        assert_eq!(geo.root_entries(), 2);
    }

    #[test]
    fn block_sizes() {
        let cpu = max();
        let g4 = Geometry::stage2(Granule::K4, 40, &cpu).unwrap();
        assert_eq!(g4.block_size(1), Some(1 << 30));
        assert_eq!(g4.block_size(2), Some(2 << 20));
        assert_eq!(g4.block_size(3), Some(4096));
        assert_eq!(g4.block_size(0), None);
        let g16 = Geometry::stage2(Granule::K16, 48, &cpu).unwrap();
        assert_eq!(g16.block_size(1), None);
        assert_eq!(g16.block_size(2), Some(32 << 20));
        let g64 = Geometry::stage2(Granule::K64, 48, &cpu).unwrap();
        assert_eq!(g64.block_size(2), Some(512 << 20));
        assert_eq!(g64.block_size(1), None);
        assert_eq!(g64.block_size(3), Some(65536));
    }

    #[test]
    fn refusals_name_their_reason() {
        let cpu = max();
        let e = Geometry::stage2(Granule::K4, 52, &cpu).unwrap_err();
        assert!(e.to_string().contains("FEAT_LPA"), "{e}");
        let e = Geometry::stage2(Granule::K4, 31, &cpu).unwrap_err();
        assert!(e.to_string().contains("32..=48"), "{e}");
        let a64fx = CpuFeatures::profile("a64fx").unwrap();
        let e = Geometry::stage2(Granule::K4, 44, &a64fx).unwrap_err();
        assert_eq!(
            e,
            GeometryError::IpaBeyondPaRange {
                ipa_bits: 44,
                pa_bits: 40
            }
        );
        assert!(e.to_string().contains("PARange"), "{e}");
        let a72 = CpuFeatures::profile("cortex-a72").unwrap();
        let e = Geometry::stage2(Granule::K16, 40, &a72).unwrap_err();
        assert!(e.to_string().contains("TGran16 = 0b0000"), "{e}");
        let e = Geometry::new(Regime::El2, Granule::K16, 40, &a72).unwrap_err();
        assert!(e.to_string().contains("stage 1"), "{e}");
        // Stage 1 does not check the PA range (it translates virtual addresses).
        assert!(Geometry::new(Regime::El2, Granule::K4, 48, &a64fx).is_ok());
    }

    #[test]
    fn register_fields() {
        let cpu = max();
        let geo = Geometry::stage2(Granule::K4, 40, &cpu).unwrap();
        let v = geo.vtcr_el2(48, true);
        assert_eq!(v & 0x3f, 24); // T0SZ
        assert_eq!((v >> 6) & 3, 1); // SL0: L1 at 4K
        assert_eq!((v >> 14) & 3, 0); // TG0 4K
        assert_eq!((v >> 16) & 7, 5); // PS 48
        assert_eq!((v >> 19) & 1, 1); // VS
        assert_eq!(v >> 31, 1);
        let geo = Geometry::stage2(Granule::K16, 40, &cpu).unwrap();
        assert_eq!((geo.vtcr_el2(40, false) >> 6) & 3, 1); // L2 at 16K
        assert_eq!((geo.vtcr_el2(40, false) >> 14) & 3, 0b10);
        let geo = Geometry::stage2(Granule::K64, 48, &cpu).unwrap();
        assert_eq!((geo.vtcr_el2(40, false) >> 6) & 3, 2); // L1 at 64K
        assert_eq!((geo.vtcr_el2(40, false) >> 14) & 3, 0b01);
        assert_eq!((geo.vtcr_el2(40, false) >> 16) & 7, 2);

        let el2 = Geometry::new(Regime::El2, Granule::K4, 48, &cpu).unwrap();
        // T0SZ 16, IRGN0/ORGN0 WBWA, SH0 inner, TG0 4K, PS 48 bits, RES1 23 and 31.
        assert_eq!(el2.tcr_el2(52), 0x8085_3510);
        let el2 = Geometry::new(Regime::El2, Granule::K64, 42, &cpu).unwrap();
        assert_eq!(el2.tcr_el2(40), 0x8082_7516);
        assert_eq!(MAIR_EL2, 0xff04);
    }

    #[test]
    fn tlbi_operand_is_4k_units_for_every_granule() {
        assert_eq!(tlbi_ipa_operand(0x4000_0000), 0x4_0000);
        assert_eq!(tlbi_ipa_operand(0x1_0000), 0x10); // a 64K page
        assert_eq!(tlbi_ipa_operand(0x4000), 0x4); // a 16K page
        assert_eq!(tlbi_ipa_operand((1 << 48) - 4096), (1 << 36) - 1);
        assert_eq!(tlbi_va_operand(0xffff_f000), 0xf_ffff);
    }
}
