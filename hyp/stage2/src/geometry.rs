//! Run-time translation-table geometry and the register fields derived from it.
//!
//! A [`Geometry`] is computed once per table from (regime, granule, input address bits, CPU
//! features) and used everywhere: index extraction, block sizes per level, table size, the
//! number of concatenated root tables (stage 2 only), and the TCR_EL2/VTCR_EL2 fields.
//!
//! Level numbering follows the Arm ARM: the leaf level is always 3; a level-`L` entry maps
//! `1 << level_shift(L)` bytes where `level_shift(L) = page_shift + (3 - L) * bits_per_level`
//! (Arm ARM D8.2, "Translation table walk").

use crate::addr::{AddrRange, InputAddress, Ipa, Va};
use crate::cpu::{CpuFeatures, GranuleRefusal};
use crate::Granule;
use aarch64_cpu::registers::{MAIR_EL2 as MAIR, TCR_EL1, TCR_EL2, VTCR_EL2};
use core::fmt;
use tock_registers::fields::{Field, FieldValue};

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
    pub fn table_budget<A: InputAddress>(&self, range: AddrRange<A>) -> u64 {
        let range = range.raw();
        if range.is_empty() {
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

    /// The same geometry with the classic stage-2 attribute encoding (`MemAttr` = Normal
    /// write-back, cleaned to PoC before mapping) even on a CPU with FEAT_S2FWB: for tables a
    /// second walker shares that cannot read the FWB encoding, such as an SMMU without
    /// `SMMU_IDR3.FWB`. hyp then leaves `HCR_EL2.FWB` clear for that VM.
    #[must_use]
    pub const fn without_fwb(self) -> Geometry {
        Geometry { fwb: false, ..self }
    }

    /// Whether the CPU has `CTR_EL0.DIC` (no I-cache invalidation for instruction coherence).
    pub const fn dic(&self) -> bool {
        self.dic
    }

    /// `T0SZ = 64 - input_bits` (TCR_EL2, TCR_EL1 and VTCR_EL2 all use it; aarch64-cpu leaves
    /// the field raw, so this is its only producer).
    pub const fn t0sz(&self) -> u64 {
        64 - self.input_bits as u64
    }

    /// The TG0 encoding of this granule, the same in TCR_EL2, TCR_EL1 and VTCR_EL2: 0b00 4K,
    /// 0b01 64K, 0b10 16K (read from aarch64-cpu's `VTCR_EL2::TG0` values).
    pub fn tg0(&self) -> u64 {
        self.vtcr_tg0().value >> VTCR_EL2::TG0.shift
    }

    /// VTCR_EL2.SL0 for this start level: its meaning depends on TG0 (Arm ARM D19.2.175):
    /// 4K: 0b00 L2, 0b01 L1, 0b10 L0; 16K and 64K: 0b00 L3, 0b01 L2, 0b10 L1 (0b11 L0 only
    /// with 16K + LPA2, unused here). So SL0 = base - start_level, base 2 (4K) or 3.
    /// aarch64-cpu names only the 4K values, so this is the field's only producer.
    pub const fn sl0(&self) -> u64 {
        let base = match self.granule {
            Granule::K4 => 2,
            Granule::K16 | Granule::K64 => 3,
        };
        (base - self.start_level as u64) & 0b11
    }

    fn vtcr_tg0(&self) -> FieldValue<u64, VTCR_EL2::Register> {
        match self.granule {
            Granule::K4 => VTCR_EL2::TG0::Granule4KB,
            Granule::K16 => VTCR_EL2::TG0::Granule16KB,
            Granule::K64 => VTCR_EL2::TG0::Granule64KB,
        }
    }

    /// TCR_EL2 for the EL2 regime (non-VHE format): T0SZ, IRGN0/ORGN0 = write-back
    /// read-allocate write-allocate, SH0 = inner shareable, TG0, PS, and the RES1 bits 31 and 23
    /// (Arm ARM D19.2.131 TCR_EL2, E2H = 0).
    pub fn tcr_el2(&self, pa_bits: u32) -> u64 {
        let tg0 = match self.granule {
            Granule::K4 => TCR_EL2::TG0::KiB_4,
            Granule::K16 => TCR_EL2::TG0::KiB_16,
            Granule::K64 => TCR_EL2::TG0::KiB_64,
        };
        (TCR_EL2::T0SZ.val(self.t0sz())
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::SH0::Inner
            + tg0
            + TCR_EL2::PS.val(PaSize::for_bits(pa_bits) as u64)
            + TCR_EL2_RES1_23.val(1)
            + TCR_EL2_RES1_31.val(1))
        .value
    }

    /// TCR_EL1 for the EL1 regime: TTBR0 walks with the same attributes as `tcr_el2`, TTBR1
    /// walks disabled (EPD1 = 1, TG1 = 4K as a valid encoding), IPS from `pa_bits`.
    pub fn tcr_el1(&self, pa_bits: u32) -> u64 {
        let tg0 = match self.granule {
            Granule::K4 => TCR_EL1::TG0::KiB_4,
            Granule::K16 => TCR_EL1::TG0::KiB_16,
            Granule::K64 => TCR_EL1::TG0::KiB_64,
        };
        (TCR_EL1::T0SZ.val(self.t0sz())
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::SH0::Inner
            + tg0
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::TG1::KiB_4
            + TCR_EL1::IPS.val(PaSize::for_bits(pa_bits) as u64))
        .value
    }

    /// VTCR_EL2 for this stage-2 geometry: T0SZ, SL0, IRGN0/ORGN0 = WBWA, SH0 = inner, TG0,
    /// PS from `pa_bits`, VS = 16-bit VMIDs when `vmid16`, RES1 bit 31 (Arm ARM D19.2.175).
    pub fn vtcr_el2(&self, pa_bits: u32, vmid16: bool) -> u64 {
        let vs = if vmid16 {
            VTCR_EL2::VS::Bits16
        } else {
            VTCR_EL2::VS::Bits8
        };
        (VTCR_EL2::T0SZ.val(self.t0sz())
            + VTCR_EL2::SL0.val(self.sl0())
            + VTCR_EL2::IRGN0::NormalWBRAWA
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::SH0::Inner
            + self.vtcr_tg0()
            + VTCR_EL2::PS.val(PaSize::for_bits(pa_bits) as u64)
            + vs
            + VTCR_EL2::RES1.val(1))
        .value
    }
}

/// TCR_EL2 bit 23, RES1 when `HCR_EL2.E2H` = 0 (aarch64-cpu does not name it).
const TCR_EL2_RES1_23: Field<u64, TCR_EL2::Register> = Field::new(1, 23);
/// TCR_EL2 bit 31, RES1 when `HCR_EL2.E2H` = 0 (aarch64-cpu does not name it).
const TCR_EL2_RES1_31: Field<u64, TCR_EL2::Register> = Field::new(1, 31);

/// The physical address size field (`TCR_EL2.PS`, `TCR_EL1.IPS`, `VTCR_EL2.PS`: one
/// encoding), for the largest supported size not above a CPU's `pa_bits`. 52 bits is capped to
/// 48: the LPA formats are not implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum PaSize {
    /// 32 bits, 4 GiB.
    Bits32 = TCR_EL2::PS::Value::Bits_32 as u64,
    /// 36 bits, 64 GiB.
    Bits36 = TCR_EL2::PS::Value::Bits_36 as u64,
    /// 40 bits, 1 TiB.
    Bits40 = TCR_EL2::PS::Value::Bits_40 as u64,
    /// 42 bits, 4 TiB.
    Bits42 = TCR_EL2::PS::Value::Bits_42 as u64,
    /// 44 bits, 16 TiB.
    Bits44 = TCR_EL2::PS::Value::Bits_44 as u64,
    /// 48 bits, 256 TiB.
    Bits48 = TCR_EL2::PS::Value::Bits_48 as u64,
}

impl PaSize {
    /// The largest size not above `pa_bits` (32 for anything smaller).
    pub const fn for_bits(pa_bits: u32) -> PaSize {
        match pa_bits {
            0..=35 => PaSize::Bits32,
            36..=39 => PaSize::Bits36,
            40..=41 => PaSize::Bits40,
            42..=43 => PaSize::Bits42,
            44..=47 => PaSize::Bits44,
            _ => PaSize::Bits48,
        }
    }

    /// The size in bits.
    pub const fn bits(self) -> u32 {
        match self {
            PaSize::Bits32 => 32,
            PaSize::Bits36 => 36,
            PaSize::Bits40 => 40,
            PaSize::Bits42 => 42,
            PaSize::Bits44 => 44,
            PaSize::Bits48 => 48,
        }
    }
}

/// The operand of `TLBI IPAS2E1IS`/`IPAS2LE1IS`: IPA\[47:12\] in bits \[35:0\], whatever the
/// granule (Arm ARM C5.5 "TLBI IPAS2E1IS": the field is always in 4K units; no TTL hint).
pub const fn tlbi_ipa_operand(ipa: Ipa) -> u64 {
    (ipa.get() >> 12) & ((1 << 36) - 1)
}

/// The operand of `TLBI VAE2IS`/`VAAE1IS`: VA\[55:12\] in bits \[43:0\] (4K units for every
/// granule), ASID field 0.
pub const fn tlbi_va_operand(va: Va) -> u64 {
    (va.get() >> 12) & ((1 << 44) - 1)
}

/// MAIR attribute index of Device-nGnRE memory.
pub const ATTR_IDX_DEVICE: u64 = 0;
/// MAIR attribute index of Normal memory, inner and outer write-back read/write-allocate.
pub const ATTR_IDX_NORMAL: u64 = 1;
/// MAIR_EL2 (and MAIR_EL1, same layout): Attr0 ([`ATTR_IDX_DEVICE`]) Device-nGnRE, Attr1
/// ([`ATTR_IDX_NORMAL`]) Normal inner/outer write-back non-transient read/write-allocate
/// (Arm ARM D19.2.97 MAIR_ELx).
pub const MAIR_EL2: u64 = MAIR::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck.value
    | MAIR::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc.value
    | MAIR::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc.value;
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

    /// Whole register values spelled out from the Arm ARM field tables (DDI 0487, D19.2.131
    /// TCR_EL2 with E2H = 0, D19.2.139 TCR_EL1, D19.2.175 VTCR_EL2, D19.2.97 MAIR_ELx), bit by
    /// bit, independently of the field definitions `Geometry` builds them with.
    #[test]
    fn register_values_match_the_arm_arm() {
        let cpu = max();
        // bit:            31 RES1 | 19 VS | 18:16 PS | 15:14 TG0 | 13:12 SH0 | 11:10 ORGN0
        //                 | 9:8 IRGN0 | 7:6 SL0 | 5:0 T0SZ
        let vtcr = |vs: u64, ps: u64, tg0: u64, sl0: u64, t0sz: u64| {
            0x8000_0000
                | vs << 19
                | ps << 16
                | tg0 << 14
                | 0b11 << 12
                | 0b01 << 10
                | 0b01 << 8
                | sl0 << 6
                | t0sz
        };
        let geo = Geometry::stage2(Granule::K4, 40, &cpu).unwrap();
        assert_eq!(geo.vtcr_el2(48, true), vtcr(1, 0b101, 0b00, 0b01, 24));
        assert_eq!(geo.vtcr_el2(48, true), 0x800d_3558);
        let geo = Geometry::stage2(Granule::K16, 40, &cpu).unwrap();
        assert_eq!(geo.vtcr_el2(40, false), vtcr(0, 0b010, 0b10, 0b01, 24));
        let geo = Geometry::stage2(Granule::K64, 48, &cpu).unwrap();
        assert_eq!(geo.vtcr_el2(40, false), vtcr(0, 0b010, 0b01, 0b10, 16));
        let geo = Geometry::stage2(Granule::K4, 44, &cpu).unwrap();
        assert_eq!(geo.vtcr_el2(44, false), vtcr(0, 0b100, 0b00, 0b10, 20));

        // TCR_EL2: RES1 31 and 23, PS 18:16, TG0 15:14, SH0 13:12, ORGN0 11:10, IRGN0 9:8,
        // T0SZ 5:0.
        let el2 = Geometry::new(Regime::El2, Granule::K4, 48, &cpu).unwrap();
        assert_eq!(el2.tcr_el2(52), 0x8085_3510);
        let el2 = Geometry::new(Regime::El2, Granule::K64, 42, &cpu).unwrap();
        assert_eq!(el2.tcr_el2(40), 0x8082_7516);
        let el2 = Geometry::new(Regime::El2, Granule::K16, 39, &cpu).unwrap();
        assert_eq!(el2.tcr_el2(36), 0x8081_b519);
        // TCR_EL1: IPS 34:32, TG1 31:30 (0b10 = 4K), EPD1 23, then the TTBR0 fields as above.
        let el1 = Geometry::new(Regime::El1, Granule::K16, 48, &cpu).unwrap();
        assert_eq!(el1.tcr_el1(40), 0x2_8080_b510);
        let el1 = Geometry::new(Regime::El1, Granule::K4, 39, &cpu).unwrap();
        assert_eq!(el1.tcr_el1(48), 0x5_8080_3519);
        // MAIR: Attr0 0x04 (Device-nGnRE), Attr1 0xff (Normal WB RW-allocate, inner and outer).
        assert_eq!(MAIR_EL2, 0xff04);
        assert_eq!((MAIR_EL2 >> (8 * ATTR_IDX_DEVICE)) & 0xff, 0x04);
        assert_eq!((MAIR_EL2 >> (8 * ATTR_IDX_NORMAL)) & 0xff, 0xff);
    }

    /// The values decoded with aarch64-cpu's field definitions name what the Arm ARM says
    /// each field must hold.
    #[test]
    fn register_fields_decode_with_aarch64_cpu() {
        use tock_registers::LocalRegisterCopy;
        let cpu = max();
        for g in Granule::ALL {
            let geo = Geometry::stage2(g, 40, &cpu).unwrap();
            let v = LocalRegisterCopy::<u64, VTCR_EL2::Register>::new(geo.vtcr_el2(44, true));
            let want_tg0 = match g {
                Granule::K4 => VTCR_EL2::TG0::Value::Granule4KB,
                Granule::K16 => VTCR_EL2::TG0::Value::Granule16KB,
                Granule::K64 => VTCR_EL2::TG0::Value::Granule64KB,
            };
            assert_eq!(v.read_as_enum(VTCR_EL2::TG0), Some(want_tg0), "{g}");
            assert_eq!(v.read(VTCR_EL2::TG0), geo.tg0(), "{g}");
            assert_eq!(
                v.read_as_enum(VTCR_EL2::PS),
                Some(VTCR_EL2::PS::Value::PA_44B_16TB)
            );
            assert_eq!(
                v.read_as_enum(VTCR_EL2::VS),
                Some(VTCR_EL2::VS::Value::Bits16)
            );
            assert_eq!(
                v.read_as_enum(VTCR_EL2::SH0),
                Some(VTCR_EL2::SH0::Value::Inner)
            );
            for f in [VTCR_EL2::IRGN0, VTCR_EL2::ORGN0] {
                assert_eq!(
                    v.read_as_enum(f),
                    Some(VTCR_EL2::IRGN0::Value::NormalWBRAWA)
                );
            }
            assert_eq!(v.read(VTCR_EL2::T0SZ), 24);
            assert!(v.is_set(VTCR_EL2::RES1));

            let el2 = Geometry::new(Regime::El2, g, 48, &cpu).unwrap();
            let t = LocalRegisterCopy::<u64, TCR_EL2::Register>::new(el2.tcr_el2(40));
            let want_tg0 = match g {
                Granule::K4 => TCR_EL2::TG0::Value::KiB_4,
                Granule::K16 => TCR_EL2::TG0::Value::KiB_16,
                Granule::K64 => TCR_EL2::TG0::Value::KiB_64,
            };
            assert_eq!(t.read_as_enum(TCR_EL2::TG0), Some(want_tg0), "{g}");
            assert_eq!(t.read(TCR_EL2::TG0), el2.tg0(), "{g}");
            assert_eq!(
                t.read_as_enum(TCR_EL2::PS),
                Some(TCR_EL2::PS::Value::Bits_40)
            );
            assert_eq!(t.read(TCR_EL2::T0SZ), 16);
            assert_eq!(t.get() & (1 << 31 | 1 << 23), 1 << 31 | 1 << 23, "RES1");

            let el1 = Geometry::new(Regime::El1, g, 48, &cpu).unwrap();
            let t = LocalRegisterCopy::<u64, TCR_EL1::Register>::new(el1.tcr_el1(48));
            assert_eq!(t.read(TCR_EL1::TG0), el1.tg0(), "{g}");
            assert_eq!(
                t.read_as_enum(TCR_EL1::EPD1),
                Some(TCR_EL1::EPD1::Value::DisableTTBR1Walks)
            );
            assert_eq!(
                t.read_as_enum(TCR_EL1::IPS),
                Some(TCR_EL1::IPS::Value::Bits_48)
            );
        }
    }

    #[test]
    fn pa_size_is_the_largest_encoding_not_above_the_cpu() {
        let cases = [
            (0, 32),
            (32, 32),
            (35, 32),
            (36, 36),
            (39, 36),
            (40, 40),
            (42, 42),
            (44, 44),
            (47, 44),
            (48, 48),
            (52, 48),
        ];
        for (bits, want) in cases {
            assert_eq!(PaSize::for_bits(bits).bits(), want, "{bits}");
        }
        // One encoding for the three registers (Arm ARM: PS/IPS 0b000 32 bits .. 0b101 48).
        assert_eq!(PaSize::Bits32 as u64, 0b000);
        assert_eq!(PaSize::Bits48 as u64, 0b101);
        assert_eq!(
            PaSize::Bits44 as u64,
            VTCR_EL2::PS::Value::PA_44B_16TB as u64
        );
        assert_eq!(PaSize::Bits36 as u64, TCR_EL1::IPS::Value::Bits_36 as u64);
    }

    #[test]
    fn tlbi_operand_is_4k_units_for_every_granule() {
        assert_eq!(tlbi_ipa_operand(Ipa::new(0x4000_0000)), 0x4_0000);
        assert_eq!(tlbi_ipa_operand(Ipa::new(0x1_0000)), 0x10); // a 64K page
        assert_eq!(tlbi_ipa_operand(Ipa::new(0x4000)), 0x4); // a 16K page
        assert_eq!(tlbi_ipa_operand(Ipa::new((1 << 48) - 4096)), (1 << 36) - 1);
        assert_eq!(tlbi_va_operand(Va::new(0xffff_f000)), 0xf_ffff);
    }
}
