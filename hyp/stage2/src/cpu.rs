//! The CPU features hyp acts on, built once from the ID registers (and the
//! `hyp.hide-granules=` mask), or from a named QEMU CPU profile on the host.
//!
//! Field encodings (Arm ARM D19.2, ID_AA64MMFR0_EL1):
//! - `TGran4` \[31:28\] and `TGran64` \[27:24\] are *signed*: 0b0000 supported, 0b0001 supported
//!   with 52-bit addresses (4K only), 0b1111 not supported.
//! - `TGran16` \[23:20\] is *unsigned*: 0b0000 NOT supported, 0b0001 supported, 0b0010 supported
//!   with 52-bit addresses.
//! - `TGran4_2` \[43:40\], `TGran16_2` \[35:32\], `TGran64_2` \[39:36\]: 0b0000 "as the stage-1 field
//!   says", 0b0001 not supported at stage 2, 0b0010 supported, 0b0011 supported with 52 bits.
//! - `PARange` \[3:0\]: 32, 36, 40, 42, 44, 48, 52 bits.

use crate::Granule;
use aarch64_cpu::registers::{ID_AA64MMFR0_EL1 as MMFR0, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1};
use core::fmt;
use tock_registers::fields::Field;
use tock_registers::RegisterLongName;

/// Which translation stage a granule is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A stage-1 regime (hyp's own EL2 tables, or a guest's EL1 tables).
    One,
    /// The stage-2 (IPA → PA) tables of a VM.
    Two,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::One => "stage 1",
            Stage::Two => "stage 2",
        })
    }
}

/// Why a granule cannot be used: names the register field and the value that refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GranuleRefusal {
    /// The ID register field says the granule is absent.
    Absent {
        /// The granule asked for.
        granule: Granule,
        /// The stage it was asked for.
        stage: Stage,
        /// The register field, e.g. `ID_AA64MMFR0_EL1.TGran16`.
        field: &'static str,
        /// The field's value.
        value: u8,
    },
    /// The granule was hidden with `hyp.hide-granules=`.
    Hidden {
        /// The granule asked for.
        granule: Granule,
        /// The stage it was asked for.
        stage: Stage,
    },
}

impl fmt::Display for GranuleRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GranuleRefusal::Absent {
                granule,
                stage,
                field,
                value,
            } => write!(
                f,
                "{granule} granule not supported at {stage}: {field} = {value:#06b}"
            ),
            GranuleRefusal::Hidden { granule, stage } => {
                write!(
                    f,
                    "{granule} granule not supported at {stage}: hidden by hyp.hide-granules"
                )
            }
        }
    }
}

/// The raw ID registers [`CpuFeatures`] is built from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdRegs {
    /// `ID_AA64MMFR0_EL1`.
    pub mmfr0: u64,
    /// `ID_AA64MMFR1_EL1`.
    pub mmfr1: u64,
    /// `ID_AA64MMFR2_EL1`.
    pub mmfr2: u64,
    /// `CTR_EL0`.
    pub ctr: u64,
    /// `ID_AA64DFR0_EL1` (its `PMUVer` decides whether guests get the PMU:
    /// `platform::pmu::guest_pmu_version`).
    pub dfr0: u64,
}

/// The CPU features hyp acts on. Built once at boot; every granule decision asks this value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    regs: IdRegs,
    hidden: u8,
}

/// `ID_AA64MMFR0_EL1.TGran4_2` (aarch64-cpu does not name the stage-2 granule fields).
const TGRAN4_2: Field<u64, MMFR0::Register> = Field::new(0xf, 40);
/// `ID_AA64MMFR0_EL1.TGran64_2`.
const TGRAN64_2: Field<u64, MMFR0::Register> = Field::new(0xf, 36);
/// `ID_AA64MMFR0_EL1.TGran16_2`.
const TGRAN16_2: Field<u64, MMFR0::Register> = Field::new(0xf, 32);

/// `CTR_EL0` (Arm ARM D19.2.34; aarch64-cpu has no definition of it).
mod ctr_el0 {
    use tock_registers::register_bitfields;

    register_bitfields! {u64,
        /// `CTR_EL0`, the fields hyp reads.
        pub CTR_EL0 [
            /// Instruction cache invalidation to the PoU is not required for instruction to
            /// data coherence.
            DIC OFFSET(29) NUMBITS(1) [],
            /// Data cache clean to the PoU is not required for instruction to data coherence.
            IDC OFFSET(28) NUMBITS(1) []
        ]
    }
}
use ctr_el0::CTR_EL0;

/// The value of field `f` of the register value `reg` (a `const` read of a 4-bit ID field
/// or a single bit).
const fn field<R: RegisterLongName>(reg: u64, f: Field<u64, R>) -> u8 {
    ((reg >> f.shift) & f.mask) as u8
}

/// The QEMU CPU models hyp knows on the host (values measured with QEMU 10.0.2).
pub const PROFILES: [&str; 5] = ["max", "cortex-a57", "cortex-a72", "neoverse-n1", "a64fx"];

impl CpuFeatures {
    /// Builds the features from the ID registers.
    pub const fn from_id_regs(regs: IdRegs) -> Self {
        CpuFeatures { regs, hidden: 0 }
    }

    /// Builds the features from `ID_AA64MMFR0_EL1` alone (8-bit VMIDs, no FWB/DIC/IDC).
    pub const fn from_mmfr0(mmfr0: u64) -> Self {
        Self::from_id_regs(IdRegs {
            mmfr0,
            mmfr1: 0,
            mmfr2: 0,
            ctr: 0,
            dfr0: 0,
        })
    }

    /// A named QEMU CPU model (`max`, `cortex-a57`, `cortex-a72`, `neoverse-n1`, `a64fx`).
    pub fn profile(name: &str) -> Option<Self> {
        // ID_AA64DFR0_EL1: PMUVer (bits 11:8) is 6 (PMUv3p5) on max, 1 (PMUv3) on the Cortex
        // models, 4 (PMUv3p1) on neoverse-n1 and a64fx.
        let (mmfr0, mmfr1, dfr0) = match name {
            "max" => (0x2100_0323_1020_1126, 0x20, 0x1030_5609),
            "cortex-a57" | "cortex-a72" => (0x1124, 0, 0x1030_5106),
            "neoverse-n1" => (0x10_1125, 0x20, 0x1_1030_5408),
            "a64fx" => (0x1122, 0x20, 0x1030_5408),
            _ => return None,
        };
        Some(Self::from_id_regs(IdRegs {
            mmfr0,
            mmfr1,
            mmfr2: 0,
            ctr: 0,
            dfr0,
        }))
    }

    /// The same features with `granules` (a mask of [`Granule::bit`]) treated as absent at
    /// every stage (`hyp.hide-granules=`).
    pub const fn hide(self, granules: u8) -> Self {
        CpuFeatures {
            regs: self.regs,
            hidden: self.hidden | granules,
        }
    }

    /// The mask of hidden granules.
    pub const fn hidden(&self) -> u8 {
        self.hidden
    }

    /// The raw registers.
    pub const fn id_regs(&self) -> IdRegs {
        self.regs
    }

    /// `ID_AA64DFR0_EL1` as read.
    pub const fn dfr0(&self) -> u64 {
        self.regs.dfr0
    }

    /// `ID_AA64MMFR0_EL1` as read (not masked).
    pub const fn mmfr0(&self) -> u64 {
        self.regs.mmfr0
    }

    /// The stage-1 field name, shift and value for `g`.
    fn s1_field(&self, g: Granule) -> (&'static str, u8) {
        match g {
            Granule::K4 => (
                "ID_AA64MMFR0_EL1.TGran4",
                field(self.regs.mmfr0, MMFR0::TGran4),
            ),
            Granule::K16 => (
                "ID_AA64MMFR0_EL1.TGran16",
                field(self.regs.mmfr0, MMFR0::TGran16),
            ),
            Granule::K64 => (
                "ID_AA64MMFR0_EL1.TGran64",
                field(self.regs.mmfr0, MMFR0::TGran64),
            ),
        }
    }

    fn s2_field(&self, g: Granule) -> (&'static str, u8) {
        match g {
            Granule::K4 => (
                "ID_AA64MMFR0_EL1.TGran4_2",
                field(self.regs.mmfr0, TGRAN4_2),
            ),
            Granule::K16 => (
                "ID_AA64MMFR0_EL1.TGran16_2",
                field(self.regs.mmfr0, TGRAN16_2),
            ),
            Granule::K64 => (
                "ID_AA64MMFR0_EL1.TGran64_2",
                field(self.regs.mmfr0, TGRAN64_2),
            ),
        }
    }

    /// Whether the hardware (ignoring the hide mask) supports `g` at stage 1.
    fn s1_hw(g: Granule, value: u8) -> bool {
        match g {
            // Signed fields: 0b0000 and 0b0001 (52-bit, LPA2) are supported, 0b1111 is not;
            // treat every negative value as "not supported".
            Granule::K4 | Granule::K64 => value < 0x8,
            // Unsigned: 0b0000 means NOT supported.
            Granule::K16 => value != 0,
        }
    }

    /// Checks `g` at stage 1 (hyp's own EL2 tables and the guest's EL1 tables).
    pub fn stage1(&self, g: Granule) -> Result<(), GranuleRefusal> {
        if self.hidden & g.bit() != 0 {
            return Err(GranuleRefusal::Hidden {
                granule: g,
                stage: Stage::One,
            });
        }
        let (name, value) = self.s1_field(g);
        if Self::s1_hw(g, value) {
            Ok(())
        } else {
            Err(GranuleRefusal::Absent {
                granule: g,
                stage: Stage::One,
                field: name,
                value,
            })
        }
    }

    /// Checks `g` at stage 2 (`TGranN_2`, where 0b0000 defers to the stage-1 field).
    pub fn stage2(&self, g: Granule) -> Result<(), GranuleRefusal> {
        if self.hidden & g.bit() != 0 {
            return Err(GranuleRefusal::Hidden {
                granule: g,
                stage: Stage::Two,
            });
        }
        let (name, value) = self.s2_field(g);
        match value {
            0 => {
                let (s1name, s1value) = self.s1_field(g);
                if Self::s1_hw(g, s1value) {
                    Ok(())
                } else {
                    Err(GranuleRefusal::Absent {
                        granule: g,
                        stage: Stage::Two,
                        field: s1name,
                        value: s1value,
                    })
                }
            }
            2 | 3 => Ok(()),
            _ => Err(GranuleRefusal::Absent {
                granule: g,
                stage: Stage::Two,
                field: name,
                value,
            }),
        }
    }

    /// Checks `g` at `stage`.
    pub fn check(&self, stage: Stage, g: Granule) -> Result<(), GranuleRefusal> {
        match stage {
            Stage::One => self.stage1(g),
            Stage::Two => self.stage2(g),
        }
    }

    /// The first supported granule at `stage` in the `auto` order (4K, 16K, 64K).
    pub fn auto(&self, stage: Stage) -> Option<Granule> {
        Granule::ALL
            .into_iter()
            .find(|&g| self.check(stage, g).is_ok())
    }

    /// The `PARange` field value.
    pub const fn pa_range(&self) -> u8 {
        field(self.regs.mmfr0, MMFR0::PARange)
    }

    /// The physical address size in bits from `PARange` (32..52; reserved values read as 48).
    pub const fn pa_bits(&self) -> u32 {
        match self.pa_range() {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            5 => 48,
            6 => 52,
            _ => 48,
        }
    }

    /// VMID width from `ID_AA64MMFR1_EL1.VMIDBits`: 16 when the field is 0b0010, else 8.
    pub const fn vmid_bits(&self) -> u32 {
        if field(self.regs.mmfr1, ID_AA64MMFR1_EL1::VMIDBits) == 2 {
            16
        } else {
            8
        }
    }

    /// FEAT_FWB (`ID_AA64MMFR2_EL1.FWB`): stage 2 can force write-back, so no clean to PoC
    /// is needed before mapping guest memory.
    pub const fn fwb(&self) -> bool {
        field(self.regs.mmfr2, ID_AA64MMFR2_EL1::FWB) != 0
    }

    /// `CTR_EL0.DIC`: no I-cache invalidation to PoU needed for instruction coherence.
    pub const fn dic(&self) -> bool {
        field(self.regs.ctr, CTR_EL0::DIC) != 0
    }

    /// `CTR_EL0.IDC`: no D-cache clean to PoU needed for instruction coherence.
    pub const fn idc(&self) -> bool {
        field(self.regs.ctr, CTR_EL0::IDC) != 0
    }
}

/// Parses a `hyp.hide-granules=` value (`4k,64k`, any subset, may be empty) into a mask.
pub fn parse_granule_list(s: &str) -> Result<u8, crate::granule::ParseGranuleError> {
    let mut mask = 0;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        mask |= part.parse::<Granule>()?.bit();
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn qemu_max_supports_everything() {
        let f = CpuFeatures::profile("max").unwrap();
        for g in Granule::ALL {
            assert_eq!(f.stage1(g), Ok(()), "{g}");
            assert_eq!(f.stage2(g), Ok(()), "{g}");
        }
        assert_eq!(f.pa_bits(), 52);
        assert_eq!(f.vmid_bits(), 16);
        assert_eq!(f.auto(Stage::One), Some(Granule::K4));
    }

    #[test]
    fn cortex_a72_lacks_16k_everywhere() {
        let f = CpuFeatures::profile("cortex-a72").unwrap();
        let e = f.stage1(Granule::K16).unwrap_err();
        assert_eq!(
            e.to_string(),
            "16K granule not supported at stage 1: ID_AA64MMFR0_EL1.TGran16 = 0b0000"
        );
        // TGran16_2 = 0 defers to TGran16.
        let e = f.stage2(Granule::K16).unwrap_err();
        assert!(e.to_string().contains("TGran16 = 0b0000"), "{e}");
        assert_eq!(f.stage1(Granule::K4), Ok(()));
        assert_eq!(f.stage1(Granule::K64), Ok(()));
        assert_eq!(f.pa_bits(), 44);
        assert_eq!(f.vmid_bits(), 8);
    }

    #[test]
    fn lpa2_tgran4_is_supported_only_0xf_is_absent() {
        // TGran4 = 0b0001 (LPA2): supported. A common bug treats anything but 0 as absent.
        let f = CpuFeatures::from_mmfr0(0x1 << 28);
        assert_eq!(f.stage1(Granule::K4), Ok(()));
        let f = CpuFeatures::from_mmfr0(0xf << 28);
        assert!(f.stage1(Granule::K4).is_err());
        // TGran4_2 = 0 defers to TGran4 = 0xf.
        assert!(f
            .stage2(Granule::K4)
            .unwrap_err()
            .to_string()
            .contains("TGran4 = 0b1111"));
        // TGran64 = 0xf absent, 0 present.
        assert!(CpuFeatures::from_mmfr0(0xf << 24)
            .stage1(Granule::K64)
            .is_err());
        assert!(CpuFeatures::from_mmfr0(0).stage1(Granule::K64).is_ok());
        // TGran16: 0 absent, 1 and 2 present.
        assert!(CpuFeatures::from_mmfr0(0).stage1(Granule::K16).is_err());
        assert!(CpuFeatures::from_mmfr0(1 << 20)
            .stage1(Granule::K16)
            .is_ok());
        assert!(CpuFeatures::from_mmfr0(2 << 20)
            .stage1(Granule::K16)
            .is_ok());
    }

    #[test]
    fn stage2_fields() {
        // TGran4_2 = 1: not at stage 2 even though stage 1 has it.
        let f = CpuFeatures::from_mmfr0(1 << 40);
        assert_eq!(f.stage1(Granule::K4), Ok(()));
        let e = f.stage2(Granule::K4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "4K granule not supported at stage 2: ID_AA64MMFR0_EL1.TGran4_2 = 0b0001"
        );
        // TGran16_2 = 2 supports 16K at stage 2 even where TGran16 = 0.
        let f = CpuFeatures::from_mmfr0(2 << 32);
        assert!(f.stage1(Granule::K16).is_err());
        assert_eq!(f.stage2(Granule::K16), Ok(()));
        // TGran64_2 = 3 supported.
        assert_eq!(
            CpuFeatures::from_mmfr0(3 << 36).stage2(Granule::K64),
            Ok(())
        );
    }

    #[test]
    fn hidden_granules() {
        let mask = parse_granule_list("4k,64k").unwrap();
        let f = CpuFeatures::profile("max").unwrap().hide(mask);
        assert_eq!(f.auto(Stage::One), Some(Granule::K16));
        assert_eq!(f.auto(Stage::Two), Some(Granule::K16));
        assert!(f
            .stage2(Granule::K4)
            .unwrap_err()
            .to_string()
            .contains("hyp.hide-granules"));
        assert!(parse_granule_list("4k,8k").is_err());
        assert_eq!(parse_granule_list("").unwrap(), 0);
    }
}
