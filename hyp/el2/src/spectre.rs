//! Spectre-class hygiene: whether this CPU is affected by Spectre v2 (branch target
//! injection, CVE-2017-5715), Spectre v4 (speculative store bypass, CVE-2018-3639) and
//! Spectre-BHB (branch history injection, CVE-2022-23960), what mitigates each, what hyp runs
//! on every exit from a guest, and what a guest is told by `SMCCC_ARCH_FEATURES`.
//!
//! Pure and host-tested; `arch::spectre` asks the firmware and installs the result.
//!
//! - The decisions are Linux's, `arch/arm64/kernel/proton-pack.c` (v6.15 and later, with the
//!   2025 Spectre-BHB rework: a CPU not known to be safe is assumed affected):
//!   `spectre_v2_enable_mitigation`, `spectre_v4_enable_mitigation`,
//!   `is_spectre_bhb_affected` and `spectre_bhb_enable_mitigation`.
//! - The MIDR lists are proton-pack.c's `spectre_v2_safe_list`, `spectre_v4_safe_list`,
//!   `spectre_bhb_safe_list` and `spectre_bhb_k{132,38,32,24,11,8}_list`, with part numbers
//!   from `arch/arm64/include/asm/cputype.h` (plus Cortex-A720AE in the k = 38 list, the 2025
//!   patch "arm64: cputype: Add Cortex-A720AE definitions", where Arm confirmed k = 38 for all
//!   versions). Every entry is `MIDR_ALL_VERSIONS`: variant and revision are ignored.
//! - The answers to the guest are KVM's, `arch/arm64/kvm/hypercalls.c`
//!   (`kvm_hvc_call_handler`, `ARM_SMCCC_ARCH_FEATURES_FUNC_ID`).
//! - The exit-path choice is KVM's hyp vector slots (`arch/arm64/kvm/hyp/hyp-entry.S`
//!   `__bp_harden_hyp_vecs`, selected by proton-pack.c): when Spectre v2 needs the firmware
//!   call, that call is the whole exit mitigation (`SMCCC_ARCH_WORKAROUND_3` instead of `_1`
//!   when Spectre-BHB is mitigated by firmware); otherwise the BHB loop or `CLRBHB`.
//!   proton-pack.c: "A57/A72-r0 will already have selected the spectre-indirect vector,
//!   which is sufficient for BHB too" (the only CPUs that need both).
//!
//! Spectre v3a (the indirect hyp vectors on A57/A72 that keep `VBAR_EL2` from revealing a
//! randomized hyp layout) does not apply: hyp's EL2 map is an identity map, not randomized.

use aarch64_cpu::registers::{ID_AA64MMFR1_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, MIDR_EL1};
use core::fmt;
use tock_registers::fields::Field;
use tock_registers::RegisterLongName;

/// SMCCC function identifiers (DEN 0028).
pub mod fid {
    /// `PSCI_VERSION`.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// `PSCI_FEATURES`.
    pub const PSCI_FEATURES: u32 = 0x8400_000a;
    /// `SMCCC_VERSION`.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// `SMCCC_ARCH_FEATURES`.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// `SMCCC_ARCH_WORKAROUND_1` (Spectre v2).
    pub const WORKAROUND_1: u32 = 0x8000_8000;
    /// `SMCCC_ARCH_WORKAROUND_2` (Spectre v4).
    pub const WORKAROUND_2: u32 = 0x8000_7fff;
    /// `SMCCC_ARCH_WORKAROUND_3` (Spectre v2 and Spectre-BHB).
    pub const WORKAROUND_3: u32 = 0x8000_3fff;
}

/// SMCCC return values (DEN 0028; Linux `include/linux/arm-smccc.h`).
pub mod ret {
    /// `SMCCC_RET_SUCCESS`: the workaround is needed and implemented.
    pub const SUCCESS: i64 = 0;
    /// `SMCCC_RET_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: i64 = -1;
    /// `SMCCC_RET_NOT_REQUIRED`.
    pub const NOT_REQUIRED: i64 = -2;
    /// `SMCCC_ARCH_WORKAROUND_RET_UNAFFECTED`: this PE is not affected.
    pub const UNAFFECTED: i64 = 1;
}

/// SMCCC version 1.1, the first with `SMCCC_ARCH_FEATURES` and the workaround calls.
pub const SMCCC_1_1: u32 = 0x0001_0001;

/// `ID_AA64PFR0_EL1.CSV2` \[59:56\] (aarch64-cpu names neither this field nor the next two).
const CSV2: Field<u64, ID_AA64PFR0_EL1::Register> = Field::new(0xf, 56);
/// `ID_AA64PFR1_EL1.SSBS` \[7:4\].
const SSBS: Field<u64, ID_AA64PFR1_EL1::Register> = Field::new(0xf, 4);
/// `ID_AA64MMFR1_EL1.ECBHB` \[63:60\].
const ECBHB: Field<u64, ID_AA64MMFR1_EL1::Register> = Field::new(0xf, 60);
/// `ID_AA64ISAR2_EL1`, which aarch64-cpu does not define.
mod isar2 {
    tock_registers::register_bitfields! {u64,
        pub ID_AA64ISAR2_EL1 [
            /// `CLRBHB` \[31:28\]: the `CLRBHB` instruction exists.
            CLRBHB OFFSET(28) NUMBITS(4) []
        ]
    }
}
use isar2::ID_AA64ISAR2_EL1;

/// Field `f` of the register value `reg`.
const fn field<R: RegisterLongName>(reg: u64, f: Field<u64, R>) -> u8 {
    ((reg >> f.shift) & f.mask) as u8
}

/// The ID registers the decision reads (all from the boot CPU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuIds {
    /// `MIDR_EL1`.
    pub midr: u64,
    /// `ID_AA64PFR0_EL1` (`CSV2` \[59:56\]).
    pub pfr0: u64,
    /// `ID_AA64PFR1_EL1` (`SSBS` \[7:4\]).
    pub pfr1: u64,
    /// `ID_AA64MMFR1_EL1` (`ECBHB` \[63:60\]).
    pub mmfr1: u64,
    /// `ID_AA64ISAR2_EL1` (`CLRBHB` \[31:28\]).
    pub isar2: u64,
}

impl CpuIds {
    /// `ID_AA64PFR0_EL1.CSV2`: 1 = branch targets are not shared across contexts, 3 =
    /// neither is branch history (FEAT_CSV2_3).
    pub const fn csv2(&self) -> u8 {
        field(self.pfr0, CSV2)
    }
    /// `ID_AA64PFR1_EL1.SSBS`: `PSTATE.SSBS` exists (FEAT_SSBS).
    pub const fn ssbs(&self) -> u8 {
        field(self.pfr1, SSBS)
    }
    /// `ID_AA64MMFR1_EL1.ECBHB`: taking an exception clears the branch history.
    pub const fn ecbhb(&self) -> u8 {
        field(self.mmfr1, ECBHB)
    }
    /// `ID_AA64ISAR2_EL1.CLRBHB`: the `CLRBHB` instruction exists.
    pub const fn clrbhb(&self) -> u8 {
        field(self.isar2, ID_AA64ISAR2_EL1::CLRBHB)
    }

    /// The CPU model: implementer, architecture and part number (Linux
    /// `MIDR_CPU_MODEL_MASK`); variant and revision do not matter to any list here.
    pub const fn model(&self) -> u32 {
        (self.midr as u32) & MODEL_MASK
    }

    /// Whether `other` would get the same decision (same model, same CSV2, SSBS, ECBHB and
    /// CLRBHB; revisions do not matter to any list).
    pub fn decides_as(&self, other: &CpuIds) -> bool {
        self.model() == other.model()
            && self.csv2() == other.csv2()
            && self.ssbs() == other.ssbs()
            && self.ecbhb() == other.ecbhb()
            && self.clrbhb() == other.clrbhb()
    }

    fn in_list(&self, list: &[u32]) -> bool {
        list.contains(&self.model())
    }

    /// The Spectre-BHB loop count `k` for this CPU, 0 if it is in none of the lists
    /// (proton-pack.c `spectre_bhb_loop_affected`).
    pub fn bhb_loop_k(&self) -> u8 {
        BHB_LOOP
            .iter()
            .find(|(_, list)| self.in_list(list))
            .map_or(0, |&(k, _)| k)
    }
}

/// `MIDR_EL1` implementer, architecture and part number.
const MODEL_MASK: u32 = (MIDR_EL1::Implementer.mask << MIDR_EL1::Implementer.shift
    | MIDR_EL1::Architecture.mask << MIDR_EL1::Architecture.shift
    | MIDR_EL1::PartNum.mask << MIDR_EL1::PartNum.shift) as u32;

/// Linux `MIDR_CPU_MODEL(imp, partnum)`: architecture 0xf ("defined by ID registers").
const fn model(implementer: u32, part: u32) -> u32 {
    (MIDR_EL1::Implementer.val(implementer as u64).value
        | MIDR_EL1::Architecture::Individual.value
        | MIDR_EL1::PartNum.val(part as u64).value) as u32
}

const ARM: u32 = 0x41;
const BRCM: u32 = 0x42;
const HISI: u32 = 0x48;
const QCOM: u32 = 0x51;
const AMPERE: u32 = 0xc0;

/// CPU models by name, from cputype.h (`ARM_CPU_PART_*` and friends).
pub mod cpu {
    use super::*;

    /// Cortex-A35.
    pub const CORTEX_A35: u32 = model(ARM, 0xd04);
    /// Cortex-A53.
    pub const CORTEX_A53: u32 = model(ARM, 0xd03);
    /// Cortex-A55.
    pub const CORTEX_A55: u32 = model(ARM, 0xd05);
    /// Cortex-A57.
    pub const CORTEX_A57: u32 = model(ARM, 0xd07);
    /// Cortex-A72.
    pub const CORTEX_A72: u32 = model(ARM, 0xd08);
    /// Cortex-A73.
    pub const CORTEX_A73: u32 = model(ARM, 0xd09);
    /// Cortex-A75.
    pub const CORTEX_A75: u32 = model(ARM, 0xd0a);
    /// Cortex-A76.
    pub const CORTEX_A76: u32 = model(ARM, 0xd0b);
    /// Neoverse N1.
    pub const NEOVERSE_N1: u32 = model(ARM, 0xd0c);
    /// Cortex-A77.
    pub const CORTEX_A77: u32 = model(ARM, 0xd0d);
    /// Cortex-A76AE.
    pub const CORTEX_A76AE: u32 = model(ARM, 0xd0e);
    /// Neoverse V1.
    pub const NEOVERSE_V1: u32 = model(ARM, 0xd40);
    /// Cortex-A78.
    pub const CORTEX_A78: u32 = model(ARM, 0xd41);
    /// Cortex-A78AE.
    pub const CORTEX_A78AE: u32 = model(ARM, 0xd42);
    /// Cortex-X1.
    pub const CORTEX_X1: u32 = model(ARM, 0xd44);
    /// Cortex-A510.
    pub const CORTEX_A510: u32 = model(ARM, 0xd46);
    /// Cortex-A710.
    pub const CORTEX_A710: u32 = model(ARM, 0xd47);
    /// Cortex-X2.
    pub const CORTEX_X2: u32 = model(ARM, 0xd48);
    /// Neoverse N2.
    pub const NEOVERSE_N2: u32 = model(ARM, 0xd49);
    /// Cortex-A78C.
    pub const CORTEX_A78C: u32 = model(ARM, 0xd4b);
    /// Cortex-A715.
    pub const CORTEX_A715: u32 = model(ARM, 0xd4d);
    /// Cortex-X3.
    pub const CORTEX_X3: u32 = model(ARM, 0xd4e);
    /// Neoverse V2.
    pub const NEOVERSE_V2: u32 = model(ARM, 0xd4f);
    /// Cortex-A520.
    pub const CORTEX_A520: u32 = model(ARM, 0xd80);
    /// Cortex-A720.
    pub const CORTEX_A720: u32 = model(ARM, 0xd81);
    /// Cortex-A720AE.
    pub const CORTEX_A720AE: u32 = model(ARM, 0xd89);
    /// Broadcom Brahma-B53.
    pub const BRAHMA_B53: u32 = model(BRCM, 0x100);
    /// HiSilicon TSV110.
    pub const HISI_TSV110: u32 = model(HISI, 0xd01);
    /// Qualcomm Kryo 2xx Silver.
    pub const KRYO_2XX_SILVER: u32 = model(QCOM, 0x801);
    /// Qualcomm Kryo 3xx Silver.
    pub const KRYO_3XX_SILVER: u32 = model(QCOM, 0x803);
    /// Qualcomm Kryo 4xx Gold.
    pub const KRYO_4XX_GOLD: u32 = model(QCOM, 0x804);
    /// Qualcomm Kryo 4xx Silver.
    pub const KRYO_4XX_SILVER: u32 = model(QCOM, 0x805);
    /// Ampere-1.
    pub const AMPERE1: u32 = model(AMPERE, 0xac3);
}

use cpu::*;

/// proton-pack.c `spectre_v2_safe_list`.
const V2_SAFE: &[u32] = &[
    CORTEX_A35,
    CORTEX_A53,
    CORTEX_A55,
    BRAHMA_B53,
    HISI_TSV110,
    KRYO_2XX_SILVER,
    KRYO_3XX_SILVER,
    KRYO_4XX_SILVER,
];

/// proton-pack.c `spectre_v4_safe_list`.
const V4_SAFE: &[u32] = &[
    CORTEX_A35,
    CORTEX_A53,
    CORTEX_A55,
    BRAHMA_B53,
    KRYO_3XX_SILVER,
    KRYO_4XX_SILVER,
];

/// proton-pack.c `spectre_bhb_safe_list`.
const BHB_SAFE: &[u32] = &[
    CORTEX_A35,
    CORTEX_A53,
    CORTEX_A55,
    CORTEX_A510,
    CORTEX_A520,
    BRAHMA_B53,
    KRYO_2XX_SILVER,
    KRYO_3XX_SILVER,
    KRYO_4XX_SILVER,
];

/// proton-pack.c `spectre_bhb_loop_affected`: the loop count and its list, searched in this
/// order.
const BHB_LOOP: &[(u8, &[u32])] = &[
    (132, &[CORTEX_X3, NEOVERSE_V2]),
    (38, &[CORTEX_A715, CORTEX_A720, CORTEX_A720AE]),
    (
        32,
        &[
            CORTEX_A78,
            CORTEX_A78AE,
            CORTEX_A78C,
            CORTEX_X1,
            CORTEX_A710,
            CORTEX_X2,
            NEOVERSE_N2,
            NEOVERSE_V1,
        ],
    ),
    (
        24,
        &[
            CORTEX_A76,
            CORTEX_A76AE,
            CORTEX_A77,
            NEOVERSE_N1,
            KRYO_4XX_GOLD,
        ],
    ),
    (11, &[AMPERE1]),
    (8, &[CORTEX_A72, CORTEX_A57]),
];

/// The loop count when a test forces the loop on a CPU without one: the immediate Linux's
/// `__mitigate_spectre_bhb_loop` carries before it is patched (`mov \tmp, #32`).
pub const DEFAULT_LOOP_K: u8 = 32;

/// Why there is no SMCCC 1.1 firmware to ask (then every firmware workaround counts as
/// `NOT_SUPPORTED`, as Linux's `arm_smccc_1_1_invoke` returns without a conduit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoFirmware {
    /// The device tree's PSCI conduit is HVC: at EL2 that would call hyp itself.
    HvcConduit,
    /// PSCI before 1.0 has no `PSCI_FEATURES`, so no way to find SMCCC 1.1.
    Psci(u32),
    /// `PSCI_FEATURES(SMCCC_VERSION)` returned this (`NOT_SUPPORTED`): SMCCC 1.0.
    NoSmcccVersion(i32),
    /// `SMCCC_VERSION` returned this, below 1.1.
    Smccc(i32),
}

/// What EL3 firmware answered at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Nothing to ask.
    None(NoFirmware),
    /// SMCCC 1.1 or later, and its `SMCCC_ARCH_FEATURES` answers.
    Smccc {
        /// `SMCCC_VERSION`.
        version: u32,
        /// `SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_1)`.
        wa1: i32,
        /// `SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_2)`.
        wa2: i32,
        /// `SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_3)`.
        wa3: i32,
    },
}

impl Firmware {
    /// Asks the firmware with `call(function_id, x1) -> x0` in the order Linux does at boot
    /// (`drivers/firmware/psci/psci.c` `psci_probe` and `psci_init_smccc`): `PSCI_VERSION`;
    /// from PSCI 1.0, `PSCI_FEATURES(SMCCC_VERSION)`; if that is not `NOT_SUPPORTED`,
    /// `SMCCC_VERSION`; from SMCCC 1.1, `SMCCC_ARCH_FEATURES` for the three workarounds.
    /// `smc` is false when the conduit is HVC: then nothing is called.
    pub fn probe(smc: bool, mut call: impl FnMut(u32, u32) -> i32) -> Firmware {
        if !smc {
            return Firmware::None(NoFirmware::HvcConduit);
        }
        let psci = call(fid::PSCI_VERSION, 0) as u32;
        if psci >> 16 < 1 || psci & (1 << 31) != 0 {
            return Firmware::None(NoFirmware::Psci(psci));
        }
        let f = call(fid::PSCI_FEATURES, fid::SMCCC_VERSION);
        if i64::from(f) == ret::NOT_SUPPORTED {
            return Firmware::None(NoFirmware::NoSmcccVersion(f));
        }
        let v = call(fid::SMCCC_VERSION, 0);
        if v < 0 || (v as u32) < SMCCC_1_1 {
            return Firmware::None(NoFirmware::Smccc(v));
        }
        Firmware::Smccc {
            version: v as u32,
            wa1: call(fid::SMCCC_ARCH_FEATURES, fid::WORKAROUND_1),
            wa2: call(fid::SMCCC_ARCH_FEATURES, fid::WORKAROUND_2),
            wa3: call(fid::SMCCC_ARCH_FEATURES, fid::WORKAROUND_3),
        }
    }

    fn answers(&self) -> [i64; 3] {
        match *self {
            Firmware::None(_) => [ret::NOT_SUPPORTED; 3],
            Firmware::Smccc { wa1, wa2, wa3, .. } => [wa1.into(), wa2.into(), wa3.into()],
        }
    }

    /// Whether the workaround calls can be made (SMCCC 1.1 through SMC).
    pub fn callable(&self) -> bool {
        matches!(self, Firmware::Smccc { .. })
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Firmware::None(NoFirmware::HvcConduit) => f.write_str("none (the PSCI conduit is HVC)"),
            Firmware::None(NoFirmware::Psci(v)) => {
                write!(f, "none (PSCI_VERSION {v:#x}: no PSCI_FEATURES)")
            }
            Firmware::None(NoFirmware::NoSmcccVersion(r)) => {
                write!(f, "SMCCC 1.0 (PSCI_FEATURES(SMCCC_VERSION) = {r})")
            }
            Firmware::None(NoFirmware::Smccc(v)) => write!(f, "SMCCC_VERSION {v:#x}, below 1.1"),
            Firmware::Smccc {
                version,
                wa1,
                wa2,
                wa3,
            } => write!(
                f,
                "SMCCC {}.{}, SMCCC_ARCH_FEATURES WORKAROUND_1 = {wa1}, WORKAROUND_2 = {wa2}, \
                 WORKAROUND_3 = {wa3}",
                version >> 16,
                version & 0xffff
            ),
        }
    }
}

/// The three states Linux reports (`enum mitigation_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not affected.
    Unaffected,
    /// Affected and mitigated.
    Mitigated,
    /// Affected and not mitigated.
    Vulnerable,
}

/// Why a CPU is unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unaffected {
    /// `ID_AA64PFR0_EL1.CSV2` is this (non-zero; 3 for Spectre-BHB).
    Csv2(u8),
    /// The MIDR is on Linux's safe list for this issue.
    SafeCpu,
    /// The firmware said so (`SMCCC_ARCH_WORKAROUND_RET_UNAFFECTED`, or `NOT_REQUIRED` for
    /// `SMCCC_ARCH_WORKAROUND_2`).
    Firmware,
}

/// Spectre v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V2 {
    /// Not affected.
    Unaffected(Unaffected),
    /// Firmware's `SMCCC_ARCH_WORKAROUND_1` on every exit from a guest.
    FirmwareWa1,
    /// Affected, and the firmware has no workaround.
    Vulnerable,
}

/// Spectre v4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V4 {
    /// Not affected.
    Unaffected(Unaffected),
    /// `PSTATE.SSBS` = 0 at EL2 (`SCTLR_EL2.DSSBS` = 0 on every exception entry, and cleared
    /// at boot); the guest has SSBS itself.
    Ssbs,
    /// Firmware's `SMCCC_ARCH_WORKAROUND_2` switched on at boot on every CPU, for good.
    FirmwareWa2,
    /// Affected, no SSBS and no firmware workaround.
    Vulnerable,
}

/// Why Spectre-BHB is left unmitigated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BhbGap {
    /// Spectre v2 is: "No point mitigating Spectre-BHB alone" (proton-pack.c).
    V2Vulnerable,
    /// No ECBHB, no CLRBHB, no loop count for this CPU, no firmware `WORKAROUND_3`.
    NoMitigation,
}

/// Spectre-BHB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bhb {
    /// Not affected.
    Unaffected(Unaffected),
    /// `ID_AA64MMFR1_EL1.ECBHB`: the exception to EL2 clears the history itself.
    Ecbhb,
    /// `CLRBHB` on every exit.
    ClearBhb,
    /// `k` taken branches on every exit.
    Loop(u8),
    /// Firmware's `SMCCC_ARCH_WORKAROUND_3` on every exit.
    FirmwareWa3,
    /// Covered by Spectre v2's firmware `WORKAROUND_1` on every exit (A57/A72, as KVM).
    FirmwareWa1,
    /// Affected and not mitigated.
    Vulnerable(BhbGap),
}

/// What hyp runs on every exit from a guest, before its first indirect branch
/// (`arch/vectors.S`: one vector table per choice, selected with `VBAR_EL2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMitigation {
    /// Nothing.
    None,
    /// The Spectre-BHB branch loop, `k` iterations.
    BhbLoop(u8),
    /// `CLRBHB; ISB`.
    ClearBhb,
    /// `SMC` `SMCCC_ARCH_WORKAROUND_1`.
    FirmwareWa1,
    /// `SMC` `SMCCC_ARCH_WORKAROUND_3`.
    FirmwareWa3,
}

impl fmt::Display for ExitMitigation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitMitigation::None => f.write_str("nothing"),
            ExitMitigation::BhbLoop(k) => write!(f, "branch loop k={k}"),
            ExitMitigation::ClearBhb => f.write_str("CLRBHB"),
            ExitMitigation::FirmwareWa1 => f.write_str("firmware WORKAROUND_1"),
            ExitMitigation::FirmwareWa3 => f.write_str("firmware WORKAROUND_3"),
        }
    }
}

/// `hyp.spectre-exit=`: test-only replacement of the exit-path mitigation (the guests'
/// answers stay the CPU's), so that every sequence of `vectors.S` can run under QEMU. `auto`,
/// the default, keeps the decision. `wa1`/`wa3` need an EL3 that answers `SMC` (QEMU's PSCI
/// emulation returns `NOT_SUPPORTED`); `none` and `loop`/`clrbhb` can weaken a CPU that needs
/// the firmware call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitOverride {
    /// Keep the decision.
    #[default]
    Auto,
    /// Run nothing on exit.
    None,
    /// The branch loop with the CPU's `k`, or [`DEFAULT_LOOP_K`].
    Loop,
    /// `CLRBHB` (a NOP hint where FEAT_CLRBHB is absent).
    ClearBhb,
    /// The firmware `WORKAROUND_1` call.
    Wa1,
    /// The firmware `WORKAROUND_3` call.
    Wa3,
}

impl ExitOverride {
    /// Accepted values, for the error message.
    pub const EXPECTED: &'static str = "one of auto, none, loop, clrbhb, wa1, wa3";

    /// Parses a `hyp.spectre-exit=` value.
    pub fn parse(s: &str) -> Option<ExitOverride> {
        Some(match s {
            "auto" => ExitOverride::Auto,
            "none" => ExitOverride::None,
            "loop" => ExitOverride::Loop,
            "clrbhb" => ExitOverride::ClearBhb,
            "wa1" => ExitOverride::Wa1,
            "wa3" => ExitOverride::Wa3,
            _ => return None,
        })
    }
}

/// What a guest is told by `SMCCC_ARCH_FEATURES` for each workaround (KVM's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAnswers {
    /// `SMCCC_ARCH_WORKAROUND_1`.
    pub wa1: i64,
    /// `SMCCC_ARCH_WORKAROUND_2`.
    pub wa2: i64,
    /// `SMCCC_ARCH_WORKAROUND_3`.
    pub wa3: i64,
}

/// Everything decided at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The registers it was made from.
    pub cpu: CpuIds,
    /// What the firmware said.
    pub firmware: Firmware,
    /// Spectre v2.
    pub v2: V2,
    /// Spectre v4.
    pub v4: V4,
    /// Spectre-BHB.
    pub bhb: Bhb,
    /// The exit-path mitigation.
    pub exit: ExitMitigation,
}

impl V2 {
    /// Linux's state.
    pub fn state(&self) -> State {
        match self {
            V2::Unaffected(_) => State::Unaffected,
            V2::FirmwareWa1 => State::Mitigated,
            V2::Vulnerable => State::Vulnerable,
        }
    }
}

impl V4 {
    /// Linux's state.
    pub fn state(&self) -> State {
        match self {
            V4::Unaffected(_) => State::Unaffected,
            V4::Ssbs | V4::FirmwareWa2 => State::Mitigated,
            V4::Vulnerable => State::Vulnerable,
        }
    }
}

impl Bhb {
    /// Linux's state.
    pub fn state(&self) -> State {
        match self {
            Bhb::Unaffected(_) => State::Unaffected,
            Bhb::Vulnerable(_) => State::Vulnerable,
            _ => State::Mitigated,
        }
    }
}

/// Linux `spectre_v2_get_cpu_hw_mitigation_state`, then `spectre_v2_enable_fw_mitigation`.
fn v2(cpu: &CpuIds, fw: &Firmware) -> V2 {
    if cpu.csv2() != 0 {
        return V2::Unaffected(Unaffected::Csv2(cpu.csv2()));
    }
    if cpu.in_list(V2_SAFE) {
        return V2::Unaffected(Unaffected::SafeCpu);
    }
    // spectre_v2_get_cpu_fw_mitigation_state: SUCCESS mitigated, UNAFFECTED unaffected,
    // anything else (NOT_SUPPORTED, no conduit) vulnerable.
    match fw.answers()[0] {
        ret::SUCCESS if fw.callable() => V2::FirmwareWa1,
        ret::UNAFFECTED => V2::Unaffected(Unaffected::Firmware),
        _ => V2::Vulnerable,
    }
}

/// Linux `spectre_v4_get_cpu_hw_mitigation_state`, then `spectre_v4_enable_fw_mitigation`.
fn v4(cpu: &CpuIds, fw: &Firmware) -> V4 {
    if cpu.in_list(V4_SAFE) {
        return V4::Unaffected(Unaffected::SafeCpu);
    }
    if cpu.ssbs() != 0 {
        return V4::Ssbs;
    }
    // spectre_v4_get_cpu_fw_mitigation_state: UNAFFECTED and NOT_REQUIRED both unaffected.
    match fw.answers()[1] {
        ret::SUCCESS if fw.callable() => V4::FirmwareWa2,
        ret::UNAFFECTED | ret::NOT_REQUIRED => V4::Unaffected(Unaffected::Firmware),
        _ => V4::Vulnerable,
    }
}

/// Linux `is_spectre_bhb_affected`, then `spectre_bhb_enable_mitigation` (in its order:
/// ECBHB, CLRBHB, the loop, firmware `WORKAROUND_3`).
fn bhb(cpu: &CpuIds, fw: &Firmware, v2: V2) -> Bhb {
    if cpu.csv2() == 3 {
        return Bhb::Unaffected(Unaffected::Csv2(3));
    }
    if cpu.in_list(BHB_SAFE) {
        return Bhb::Unaffected(Unaffected::SafeCpu);
    }
    if v2.state() == State::Vulnerable {
        return Bhb::Vulnerable(BhbGap::V2Vulnerable);
    }
    if cpu.ecbhb() != 0 {
        Bhb::Ecbhb
    } else if cpu.clrbhb() != 0 {
        Bhb::ClearBhb
    } else if cpu.bhb_loop_k() != 0 {
        Bhb::Loop(cpu.bhb_loop_k())
    } else if fw.callable() && fw.answers()[2] == ret::SUCCESS {
        Bhb::FirmwareWa3
    } else {
        Bhb::Vulnerable(BhbGap::NoMitigation)
    }
}

impl Decision {
    /// Decides from the boot CPU's registers and the firmware's answers.
    pub fn new(cpu: CpuIds, firmware: Firmware) -> Decision {
        let v2 = v2(&cpu, &firmware);
        let v4 = v4(&cpu, &firmware);
        let mut bhb = bhb(&cpu, &firmware, v2);
        // KVM's hyp vector slots: the firmware call of Spectre v2 (HYP_VECTOR_SPECTRE_*)
        // replaces the loop and CLRBHB (HYP_VECTOR_INDIRECT); with BHB_FW it becomes
        // WORKAROUND_3 (spectre_bhb_patch_wa3).
        let exit = match (v2, bhb) {
            (V2::FirmwareWa1, Bhb::FirmwareWa3) => ExitMitigation::FirmwareWa3,
            (V2::FirmwareWa1, b) => {
                if matches!(b, Bhb::Loop(_) | Bhb::ClearBhb) {
                    bhb = Bhb::FirmwareWa1;
                }
                ExitMitigation::FirmwareWa1
            }
            (_, Bhb::Loop(k)) => ExitMitigation::BhbLoop(k),
            (_, Bhb::ClearBhb) => ExitMitigation::ClearBhb,
            (_, Bhb::FirmwareWa3) => ExitMitigation::FirmwareWa3,
            _ => ExitMitigation::None,
        };
        Decision {
            cpu,
            firmware,
            v2,
            v4,
            bhb,
            exit,
        }
    }

    /// What the guests are told (KVM `kvm_hvc_call_handler`): `WORKAROUND_1` and `_3`:
    /// vulnerable `NOT_SUPPORTED`, mitigated `SUCCESS`, unaffected
    /// `SMCCC_ARCH_WORKAROUND_RET_UNAFFECTED`. `WORKAROUND_2`: vulnerable `NOT_SUPPORTED`;
    /// mitigated by SSBS also `NOT_SUPPORTED` ("SSBS everywhere: Indicate no firmware
    /// support, as the SSBS support will be indicated to the guest and the default is safe");
    /// mitigated for good by firmware, or unaffected, `NOT_REQUIRED`.
    pub fn guest_answers(&self) -> GuestAnswers {
        let wa13 = |s: State| match s {
            State::Vulnerable => ret::NOT_SUPPORTED,
            State::Mitigated => ret::SUCCESS,
            State::Unaffected => ret::UNAFFECTED,
        };
        GuestAnswers {
            wa1: wa13(self.v2.state()),
            wa2: match self.v4 {
                V4::Vulnerable | V4::Ssbs => ret::NOT_SUPPORTED,
                V4::FirmwareWa2 | V4::Unaffected(_) => ret::NOT_REQUIRED,
            },
            wa3: wa13(self.bhb.state()),
        }
    }

    /// Whether every CPU must switch the firmware's Spectre v4 mitigation on at boot
    /// (`SMCCC_ARCH_WORKAROUND_2` with 1).
    pub fn firmware_wa2(&self) -> bool {
        self.v4 == V4::FirmwareWa2
    }

    /// The exit-path mitigation with `hyp.spectre-exit=` applied.
    pub fn exit_with(&self, o: ExitOverride) -> ExitMitigation {
        match o {
            ExitOverride::Auto => self.exit,
            ExitOverride::None => ExitMitigation::None,
            ExitOverride::Loop => ExitMitigation::BhbLoop(match self.cpu.bhb_loop_k() {
                0 => DEFAULT_LOOP_K,
                k => k,
            }),
            ExitOverride::ClearBhb => ExitMitigation::ClearBhb,
            ExitOverride::Wa1 => ExitMitigation::FirmwareWa1,
            ExitOverride::Wa3 => ExitMitigation::FirmwareWa3,
        }
    }

    /// The boot line: `hyp: spectre: v2 …, v4 …, bhb …; exit …`.
    pub fn line(&self) -> Line<'_> {
        Line(self)
    }
}

/// Display helper for [`Decision::line`].
pub struct Line<'a>(&'a Decision);

fn unaffected(f: &mut fmt::Formatter<'_>, why: Unaffected) -> fmt::Result {
    match why {
        Unaffected::Csv2(v) => write!(f, "unaffected (CSV2={v})"),
        Unaffected::SafeCpu => f.write_str("unaffected (safe CPU)"),
        Unaffected::Firmware => f.write_str("unaffected (firmware)"),
    }
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        f.write_str("hyp: spectre: v2 ")?;
        match d.v2 {
            V2::Unaffected(w) => unaffected(f, w)?,
            V2::FirmwareWa1 => f.write_str("mitigated (firmware WORKAROUND_1)")?,
            V2::Vulnerable => f.write_str("vulnerable (no CSV2, no firmware WORKAROUND_1)")?,
        }
        f.write_str(", v4 ")?;
        match d.v4 {
            V4::Unaffected(w) => unaffected(f, w)?,
            V4::Ssbs => f.write_str("mitigated (SSBS)")?,
            V4::FirmwareWa2 => f.write_str("mitigated (firmware WORKAROUND_2)")?,
            V4::Vulnerable => f.write_str("vulnerable (no SSBS, no firmware WORKAROUND_2)")?,
        }
        f.write_str(", bhb ")?;
        match d.bhb {
            Bhb::Unaffected(w) => unaffected(f, w)?,
            Bhb::Ecbhb => f.write_str("mitigated (ECBHB)")?,
            Bhb::ClearBhb => f.write_str("mitigated (CLRBHB)")?,
            Bhb::Loop(k) => write!(f, "mitigated (branch loop, k={k})")?,
            Bhb::FirmwareWa3 => f.write_str("mitigated (firmware WORKAROUND_3)")?,
            Bhb::FirmwareWa1 => f.write_str("mitigated (firmware WORKAROUND_1)")?,
            Bhb::Vulnerable(BhbGap::V2Vulnerable) => f.write_str("vulnerable (as v2)")?,
            Bhb::Vulnerable(BhbGap::NoMitigation) => {
                f.write_str("vulnerable (no ECBHB, CLRBHB, loop or firmware WORKAROUND_3)")?
            }
        }
        write!(f, "; exit: {}", d.exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    // The registers below were read by hyp at EL2 under QEMU 10.0.2 (`-M
    // virt,virtualization=on,gic-version=3`, `hyp.log=debug`).

    /// `-cpu max`: CSV2 = 3, CSV3 = 1, SSBS = 2; no ECBHB, no CLRBHB.
    const MAX: CpuIds = CpuIds {
        midr: 0x000f_0510,
        pfr0: 0x1301_0011_2111_0222,
        pfr1: 0x10_0100_0121,
        mmfr1: 0x0110_1120_1031_2122,
        isar2: 0x11_0012,
    };
    /// `-cpu cortex-a72` (r0p3): nothing.
    const A72: CpuIds = CpuIds {
        midr: 0x410f_d083,
        pfr0: 0x100_0222,
        pfr1: 0,
        mmfr1: 0,
        isar2: 0,
    };
    /// `-cpu cortex-a57` (r1p0): nothing.
    const A57: CpuIds = CpuIds {
        midr: 0x411f_d070,
        pfr0: 0x100_0222,
        pfr1: 0,
        mmfr1: 0,
        isar2: 0,
    };
    /// `-cpu neoverse-n1` (r4p1): CSV2 = 1, SSBS = 2.
    const N1: CpuIds = CpuIds {
        midr: 0x414f_d0c1,
        pfr0: 0x1100_0000_1111_0112,
        pfr1: 0x20,
        mmfr1: 0x1021_2122,
        isar2: 0,
    };
    /// `-cpu a64fx`: CSV2 = 0, not on any list.
    const A64FX: CpuIds = CpuIds {
        midr: 0x461f_0010,
        pfr0: 0x1_0111_0111,
        pfr1: 0,
        mmfr1: 0x1121_2100,
        isar2: 0,
    };

    /// QEMU's PSCI: PSCI 1.1, and NOT_SUPPORTED for everything it does not implement
    /// (`target/arm/psci.c`), so no SMCCC_VERSION.
    fn qemu_firmware(fid_: u32, _x1: u32) -> i32 {
        match fid_ {
            fid::PSCI_VERSION => 0x1_0001,
            _ => -1,
        }
    }

    /// Trusted Firmware-A style firmware: SMCCC 1.2 with these workaround answers.
    fn tfa(wa1: i32, wa2: i32, wa3: i32) -> Firmware {
        Firmware::probe(true, |f, x1| match (f, x1) {
            (fid::PSCI_VERSION, _) => 0x1_0001,
            (fid::PSCI_FEATURES, fid::SMCCC_VERSION) => 0,
            (fid::SMCCC_VERSION, _) => 0x1_0002,
            (fid::SMCCC_ARCH_FEATURES, fid::WORKAROUND_1) => wa1,
            (fid::SMCCC_ARCH_FEATURES, fid::WORKAROUND_2) => wa2,
            (fid::SMCCC_ARCH_FEATURES, fid::WORKAROUND_3) => wa3,
            _ => -1,
        })
    }

    fn qemu() -> Firmware {
        Firmware::probe(true, qemu_firmware)
    }

    fn answers(d: &Decision) -> (i64, i64, i64) {
        let a = d.guest_answers();
        (a.wa1, a.wa2, a.wa3)
    }

    fn with_midr(base: CpuIds, m: u32) -> CpuIds {
        CpuIds {
            midr: u64::from(m),
            ..base
        }
    }

    /// A CPU with no CSV2, SSBS, ECBHB or CLRBHB: only the MIDR and firmware decide.
    const BARE: CpuIds = CpuIds {
        midr: 0,
        pfr0: 0x2222,
        pfr1: 0,
        mmfr1: 0,
        isar2: 0,
    };

    #[test]
    fn probe_follows_linux_discovery() {
        // QEMU: PSCI 1.1 but PSCI_FEATURES(SMCCC_VERSION) is NOT_SUPPORTED: SMCCC 1.0, and
        // SMCCC_VERSION itself is never called.
        let mut calls = Vec::new();
        let fw = Firmware::probe(true, |f, x| {
            calls.push((f, x));
            qemu_firmware(f, x)
        });
        assert_eq!(fw, Firmware::None(NoFirmware::NoSmcccVersion(-1)));
        assert_eq!(
            calls,
            [
                (fid::PSCI_VERSION, 0),
                (fid::PSCI_FEATURES, fid::SMCCC_VERSION)
            ]
        );
        assert_eq!(
            fw.to_string(),
            "SMCCC 1.0 (PSCI_FEATURES(SMCCC_VERSION) = -1)"
        );
        // HVC conduit: hyp would call itself, so nothing is called.
        let fw = Firmware::probe(false, |_, _| panic!("must not be called"));
        assert_eq!(fw, Firmware::None(NoFirmware::HvcConduit));
        // PSCI 0.2: no PSCI_FEATURES.
        let fw = Firmware::probe(true, |f, _| if f == fid::PSCI_VERSION { 2 } else { 0 });
        assert_eq!(fw, Firmware::None(NoFirmware::Psci(2)));
        // PSCI_VERSION itself NOT_SUPPORTED (negative) is not "major 0xffff".
        let fw = Firmware::probe(true, |_, _| -1);
        assert_eq!(fw, Firmware::None(NoFirmware::Psci(u32::MAX)));
        // SMCCC 1.0 reported by SMCCC_VERSION, and a negative version.
        for v in [0x1_0000, -1] {
            let fw = Firmware::probe(true, |f, _| match f {
                fid::PSCI_VERSION => 0x1_0000,
                fid::SMCCC_VERSION => v,
                _ => 0,
            });
            assert_eq!(fw, Firmware::None(NoFirmware::Smccc(v)));
            assert!(!fw.callable());
        }
        let fw = tfa(0, -1, 1);
        assert_eq!(
            fw,
            Firmware::Smccc {
                version: 0x1_0002,
                wa1: 0,
                wa2: -1,
                wa3: 1
            }
        );
        assert_eq!(
            fw.to_string(),
            "SMCCC 1.2, SMCCC_ARCH_FEATURES WORKAROUND_1 = 0, WORKAROUND_2 = -1, WORKAROUND_3 = 1"
        );
    }

    #[test]
    fn qemu_max() {
        let d = Decision::new(MAX, qemu());
        assert_eq!(d.v2, V2::Unaffected(Unaffected::Csv2(3)));
        assert_eq!(d.v4, V4::Ssbs);
        assert_eq!(d.bhb, Bhb::Unaffected(Unaffected::Csv2(3)));
        assert_eq!(d.exit, ExitMitigation::None);
        assert_ne!(d.cpu.ssbs(), 0);
        assert!(!d.firmware_wa2());
        assert_eq!(
            d.line().to_string(),
            "hyp: spectre: v2 unaffected (CSV2=3), v4 mitigated (SSBS), bhb unaffected \
             (CSV2=3); exit: nothing"
        );
        // WORKAROUND_1/3 UNAFFECTED; WORKAROUND_2 NOT_SUPPORTED: the guest has SSBS.
        assert_eq!(answers(&d), (1, -1, 1));
        // Firmware changes nothing for a CPU that needs none of it.
        assert_eq!(Decision::new(MAX, tfa(0, 0, 0)).exit, ExitMitigation::None);
    }

    #[test]
    fn qemu_cortex_a72_a57_and_a64fx_without_firmware() {
        for cpu in [A72, A57, A64FX] {
            let d = Decision::new(cpu, qemu());
            assert_eq!(d.v2, V2::Vulnerable);
            assert_eq!(d.v4, V4::Vulnerable);
            assert_eq!(d.bhb, Bhb::Vulnerable(BhbGap::V2Vulnerable));
            assert_eq!(d.exit, ExitMitigation::None);
            assert_eq!(answers(&d), (-1, -1, -1));
            assert_eq!(cpu.bhb_loop_k(), if cpu == A64FX { 0 } else { 8 });
            assert_eq!(
                d.line().to_string(),
                "hyp: spectre: v2 vulnerable (no CSV2, no firmware WORKAROUND_1), v4 \
                 vulnerable (no SSBS, no firmware WORKAROUND_2), bhb vulnerable (as v2); \
                 exit: nothing"
            );
        }
    }

    #[test]
    fn cortex_a72_with_trusted_firmware() {
        // TF-A on A72: WORKAROUND_1 and _3 implemented, _2 for SSBD.
        let d = Decision::new(A72, tfa(0, 0, 0));
        assert_eq!(d.v2, V2::FirmwareWa1);
        assert_eq!(d.v4, V4::FirmwareWa2);
        // The loop (k = 8) has precedence over firmware WORKAROUND_3 in Linux, and on
        // A57/A72 KVM's spectre vector (the WORKAROUND_1 call) covers it.
        assert_eq!(d.bhb, Bhb::FirmwareWa1);
        assert_eq!(d.exit, ExitMitigation::FirmwareWa1);
        assert!(d.firmware_wa2());
        assert_eq!(d.cpu.ssbs(), 0);
        assert_eq!(answers(&d), (0, -2, 0));
        assert_eq!(
            d.line().to_string(),
            "hyp: spectre: v2 mitigated (firmware WORKAROUND_1), v4 mitigated (firmware \
             WORKAROUND_2), bhb mitigated (firmware WORKAROUND_1); exit: firmware WORKAROUND_1"
        );
        // Firmware with WORKAROUND_1 only: the same exit path; v4 vulnerable.
        let d = Decision::new(A57, tfa(0, -1, -1));
        assert_eq!(d.exit, ExitMitigation::FirmwareWa1);
        assert_eq!(answers(&d), (0, -1, 0));
        // Firmware that knows this A72 is not affected (UNAFFECTED for WA1, NOT_REQUIRED
        // for WA2): BHB is still affected (Linux ignores the firmware there) and the loop
        // runs on exit.
        let d = Decision::new(A72, tfa(1, -2, 1));
        assert_eq!(d.v2, V2::Unaffected(Unaffected::Firmware));
        assert_eq!(d.v4, V4::Unaffected(Unaffected::Firmware));
        assert_eq!(d.bhb, Bhb::Loop(8));
        assert_eq!(d.exit, ExitMitigation::BhbLoop(8));
        assert_eq!(answers(&d), (1, -2, 0));
        // WA2 UNAFFECTED (1) counts as unaffected too.
        assert_eq!(
            Decision::new(A72, tfa(1, 1, 1)).v4,
            V4::Unaffected(Unaffected::Firmware)
        );
    }

    #[test]
    fn qemu_neoverse_n1_runs_the_loop() {
        let d = Decision::new(N1, qemu());
        assert_eq!(d.v2, V2::Unaffected(Unaffected::Csv2(1)));
        assert_eq!(d.v4, V4::Ssbs);
        assert_eq!(d.bhb, Bhb::Loop(24));
        assert_eq!(d.exit, ExitMitigation::BhbLoop(24));
        assert_ne!(d.cpu.ssbs(), 0);
        assert_eq!(answers(&d), (1, -1, 0));
        assert_eq!(
            d.line().to_string(),
            "hyp: spectre: v2 unaffected (CSV2=1), v4 mitigated (SSBS), bhb mitigated \
             (branch loop, k=24); exit: branch loop k=24"
        );
    }

    #[test]
    fn bhb_order_ecbhb_clrbhb_loop_firmware() {
        // CSV2 = 1 (v2 unaffected) on a CPU with a loop count: each feature in Linux's order.
        let base = CpuIds {
            pfr0: 1 << 56,
            ..with_midr(BARE, CORTEX_A78)
        };
        let ecbhb = CpuIds {
            mmfr1: 1 << 60,
            isar2: 1 << 28,
            ..base
        };
        let d = Decision::new(ecbhb, tfa(1, -2, 0));
        assert_eq!((d.bhb, d.exit), (Bhb::Ecbhb, ExitMitigation::None));
        assert_eq!(answers(&d).2, 0);
        let clr = CpuIds {
            isar2: 1 << 28,
            ..base
        };
        let d = Decision::new(clr, tfa(1, -2, 0));
        assert_eq!((d.bhb, d.exit), (Bhb::ClearBhb, ExitMitigation::ClearBhb));
        let d = Decision::new(base, tfa(1, -2, 0));
        assert_eq!(
            (d.bhb, d.exit),
            (Bhb::Loop(32), ExitMitigation::BhbLoop(32))
        );
        // A CPU not on any list (unknown: assumed affected) with firmware WORKAROUND_3.
        let unknown = CpuIds {
            pfr0: 1 << 56,
            ..with_midr(BARE, 0x4e0f_0100)
        };
        let d = Decision::new(unknown, tfa(1, -2, 0));
        assert_eq!(
            (d.bhb, d.exit),
            (Bhb::FirmwareWa3, ExitMitigation::FirmwareWa3)
        );
        assert_eq!(answers(&d), (1, -2, 0));
        // ... and without it: vulnerable, nothing to run.
        let d = Decision::new(unknown, tfa(1, -2, -1));
        assert_eq!(d.bhb, Bhb::Vulnerable(BhbGap::NoMitigation));
        assert_eq!(d.exit, ExitMitigation::None);
        assert_eq!(answers(&d).2, -1);
        assert!(d.line().to_string().contains(
            "bhb vulnerable (no ECBHB, CLRBHB, loop or firmware WORKAROUND_3); exit: nothing"
        ));
        // WORKAROUND_3 needs the SMCCC 1.1 conduit: without firmware it is never chosen.
        let d = Decision::new(unknown, qemu());
        assert_eq!(d.bhb, Bhb::Vulnerable(BhbGap::NoMitigation));
    }

    #[test]
    fn firmware_wa3_replaces_wa1_on_exit() {
        // Cortex-A73/A75: no CSV2, no loop count; firmware with both calls.
        for m in [CORTEX_A73, CORTEX_A75] {
            let d = Decision::new(with_midr(BARE, m), tfa(0, 0, 0));
            assert_eq!(d.v2, V2::FirmwareWa1);
            assert_eq!(d.bhb, Bhb::FirmwareWa3);
            assert_eq!(d.exit, ExitMitigation::FirmwareWa3);
            assert_eq!(answers(&d), (0, -2, 0));
            // Firmware without WORKAROUND_3: WORKAROUND_1 alone, BHB vulnerable.
            let d = Decision::new(with_midr(BARE, m), tfa(0, 0, -1));
            assert_eq!(d.exit, ExitMitigation::FirmwareWa1);
            assert_eq!(d.bhb, Bhb::Vulnerable(BhbGap::NoMitigation));
            assert_eq!(answers(&d), (0, -2, -1));
        }
        // WORKAROUND_1 answered SUCCESS by firmware hyp cannot call (never happens through
        // probe, which only returns answers with a conduit) is not a mitigation.
        assert!(!Firmware::None(NoFirmware::HvcConduit).callable());
    }

    #[test]
    fn clrbhb_without_csv2_uses_the_firmware_call_as_kvm() {
        // A CPU with CLRBHB but no CSV2 whose firmware has WORKAROUND_1: KVM's spectre
        // vector (the firmware call) is the exit path.
        let cpu = CpuIds {
            isar2: 1 << 28,
            ..with_midr(BARE, 0x4e0f_0100)
        };
        let d = Decision::new(cpu, tfa(0, -1, -1));
        assert_eq!(d.exit, ExitMitigation::FirmwareWa1);
        assert_eq!(d.bhb, Bhb::FirmwareWa1);
        assert_eq!(answers(&d).2, 0);
    }

    #[test]
    fn safe_lists() {
        for m in [
            CORTEX_A35,
            CORTEX_A53,
            CORTEX_A55,
            BRAHMA_B53,
            KRYO_3XX_SILVER,
            KRYO_4XX_SILVER,
        ] {
            // Every variant and revision.
            for vr in [0, 0x0010_0004, 0x00f0_000f] {
                let d = Decision::new(with_midr(BARE, m | vr), qemu());
                assert_eq!(d.v2, V2::Unaffected(Unaffected::SafeCpu), "{m:#x}");
                assert_eq!(d.v4, V4::Unaffected(Unaffected::SafeCpu), "{m:#x}");
                assert_eq!(d.bhb, Bhb::Unaffected(Unaffected::SafeCpu), "{m:#x}");
                assert_eq!(d.exit, ExitMitigation::None);
                assert_eq!(answers(&d), (1, -2, 1));
            }
        }
        // On some lists only.
        let d = Decision::new(with_midr(BARE, HISI_TSV110), qemu());
        assert_eq!(d.v2, V2::Unaffected(Unaffected::SafeCpu));
        assert_eq!(d.v4, V4::Vulnerable);
        assert_eq!(d.bhb, Bhb::Vulnerable(BhbGap::NoMitigation));
        let d = Decision::new(with_midr(BARE, KRYO_2XX_SILVER), qemu());
        assert_eq!(d.v2, V2::Unaffected(Unaffected::SafeCpu));
        assert_eq!(d.v4, V4::Vulnerable);
        assert_eq!(d.bhb, Bhb::Unaffected(Unaffected::SafeCpu));
        for m in [CORTEX_A510, CORTEX_A520] {
            let d = Decision::new(with_midr(BARE, m), qemu());
            assert_eq!(d.v2, V2::Vulnerable);
            assert_eq!(d.bhb, Bhb::Unaffected(Unaffected::SafeCpu));
        }
        // A different architecture field is a different model (Linux compares it too).
        let odd = with_midr(BARE, CORTEX_A53 & !0x000f_0000);
        assert_eq!(Decision::new(odd, qemu()).v2, V2::Vulnerable);
    }

    #[test]
    fn loop_counts() {
        let k = |m: u32| with_midr(BARE, m | 0x0030_0002).bhb_loop_k();
        for m in [CORTEX_X3, NEOVERSE_V2] {
            assert_eq!(k(m), 132);
        }
        for m in [CORTEX_A715, CORTEX_A720, CORTEX_A720AE] {
            assert_eq!(k(m), 38);
        }
        for m in [
            CORTEX_A78,
            CORTEX_A78AE,
            CORTEX_A78C,
            CORTEX_X1,
            CORTEX_A710,
            CORTEX_X2,
            NEOVERSE_N2,
            NEOVERSE_V1,
        ] {
            assert_eq!(k(m), 32);
        }
        for m in [
            CORTEX_A76,
            CORTEX_A76AE,
            CORTEX_A77,
            NEOVERSE_N1,
            KRYO_4XX_GOLD,
        ] {
            assert_eq!(k(m), 24);
        }
        assert_eq!(k(AMPERE1), 11);
        assert_eq!(k(CORTEX_A72), 8);
        assert_eq!(k(CORTEX_A57), 8);
        for m in [CORTEX_A53, CORTEX_A73, CORTEX_A75, 0x000f_0510] {
            assert_eq!(k(m), 0);
        }
        // cputype.h values for a few, spelled out.
        assert_eq!(CORTEX_A72, 0x410f_d080);
        // Another revision of the same CPU decides the same; another model or field does not.
        assert!(A72.decides_as(&CpuIds {
            midr: 0x412f_d080,
            pfr0: 0x222,
            ..A72
        }));
        assert!(!A72.decides_as(&A57));
        assert!(!N1.decides_as(&CpuIds { pfr1: 0, ..N1 }));
        assert!(!MAX.decides_as(&CpuIds {
            mmfr1: 1 << 60,
            ..MAX
        }));
        assert_eq!(NEOVERSE_N1, 0x410f_d0c0);
        assert_eq!(AMPERE1, 0xc00f_ac30);
        assert_eq!(KRYO_4XX_GOLD, 0x510f_8040);
    }

    #[test]
    fn v4_paths() {
        // SSBS wins over firmware (hardware first in Linux).
        let ssbs = CpuIds {
            pfr1: 2 << 4,
            ..with_midr(BARE, CORTEX_A76)
        };
        let d = Decision::new(ssbs, tfa(1, 0, 1));
        assert_eq!(d.v4, V4::Ssbs);
        assert!(!d.firmware_wa2());
        assert_ne!(d.cpu.ssbs(), 0);
        assert_eq!(answers(&d).1, -1);
        // A safe-listed CPU with SSBS: unaffected, NOT_REQUIRED.
        let d = Decision::new(
            CpuIds {
                pfr1: 1 << 4,
                ..with_midr(BARE, CORTEX_A55)
            },
            qemu(),
        );
        assert_eq!(d.v4, V4::Unaffected(Unaffected::SafeCpu));
        assert_eq!(answers(&d).1, -2);
        // Firmware SSBD: switched on at boot, NOT_REQUIRED for the guest.
        let d = Decision::new(with_midr(BARE, CORTEX_A76), tfa(1, 0, 1));
        assert_eq!(d.v4, V4::FirmwareWa2);
        assert!(d.firmware_wa2());
        assert_eq!(answers(&d).1, -2);
        // Firmware with another error for WA2: vulnerable.
        let d = Decision::new(with_midr(BARE, CORTEX_A76), tfa(1, -3, 1));
        assert_eq!(d.v4, V4::Vulnerable);
    }

    #[test]
    fn overrides() {
        let d = Decision::new(A72, qemu());
        assert_eq!(d.exit_with(ExitOverride::Auto), ExitMitigation::None);
        assert_eq!(d.exit_with(ExitOverride::Loop), ExitMitigation::BhbLoop(8));
        let d = Decision::new(MAX, qemu());
        assert_eq!(
            d.exit_with(ExitOverride::Loop),
            ExitMitigation::BhbLoop(DEFAULT_LOOP_K)
        );
        assert_eq!(
            d.exit_with(ExitOverride::ClearBhb),
            ExitMitigation::ClearBhb
        );
        assert_eq!(d.exit_with(ExitOverride::Wa1), ExitMitigation::FirmwareWa1);
        assert_eq!(d.exit_with(ExitOverride::Wa3), ExitMitigation::FirmwareWa3);
        let n1 = Decision::new(N1, qemu());
        assert_eq!(n1.exit_with(ExitOverride::None), ExitMitigation::None);
        for (s, o) in [
            ("auto", ExitOverride::Auto),
            ("none", ExitOverride::None),
            ("loop", ExitOverride::Loop),
            ("clrbhb", ExitOverride::ClearBhb),
            ("wa1", ExitOverride::Wa1),
            ("wa3", ExitOverride::Wa3),
        ] {
            assert_eq!(ExitOverride::parse(s), Some(o));
            assert!(ExitOverride::EXPECTED.contains(s));
        }
        assert_eq!(ExitOverride::parse("WA1"), None);
        assert_eq!(ExitOverride::parse(""), None);
    }

    #[test]
    fn every_decision_is_consistent() {
        // Sweep CSV2, SSBS, ECBHB, CLRBHB, a set of MIDRs and firmware answers: the exit path
        // runs firmware only with a conduit, the loop only with k > 0, and each answer
        // matches its state.
        let midrs = [
            0,
            CORTEX_A53,
            CORTEX_A57,
            CORTEX_A72,
            CORTEX_A73,
            CORTEX_A76,
            CORTEX_X3,
            AMPERE1,
            HISI_TSV110,
            0x000f_0510,
        ];
        let fws = [
            qemu(),
            Firmware::None(NoFirmware::HvcConduit),
            tfa(0, 0, 0),
            tfa(-1, -1, -1),
            tfa(1, -2, 1),
            tfa(0, 1, -1),
        ];
        for m in midrs {
            for csv2 in [0u64, 1, 2, 3] {
                for ssbs in [0u64, 1, 2] {
                    for ec in [0u64, 1] {
                        for clr in [0u64, 1] {
                            for fw in fws {
                                let cpu = CpuIds {
                                    midr: u64::from(m),
                                    pfr0: csv2 << 56,
                                    pfr1: ssbs << 4,
                                    mmfr1: ec << 60,
                                    isar2: clr << 28,
                                };
                                check(&Decision::new(cpu, fw));
                            }
                        }
                    }
                }
            }
        }
    }

    fn check(d: &Decision) {
        let a = d.guest_answers();
        for (v, s) in [(a.wa1, d.v2.state()), (a.wa3, d.bhb.state())] {
            assert_eq!(
                v,
                match s {
                    State::Vulnerable => -1,
                    State::Mitigated => 0,
                    State::Unaffected => 1,
                },
                "{d:?}"
            );
        }
        assert!([-1, -2].contains(&a.wa2), "{d:?}");
        match d.exit {
            ExitMitigation::FirmwareWa1 | ExitMitigation::FirmwareWa3 => {
                assert!(d.firmware.callable(), "{d:?}")
            }
            ExitMitigation::BhbLoop(k) => assert!(k > 0 && k == d.cpu.bhb_loop_k(), "{d:?}"),
            ExitMitigation::ClearBhb => assert!(d.cpu.clrbhb() != 0, "{d:?}"),
            ExitMitigation::None => {}
        }
        // v2 mitigated means its firmware call runs on every exit.
        if d.v2 == V2::FirmwareWa1 {
            assert!(matches!(
                d.exit,
                ExitMitigation::FirmwareWa1 | ExitMitigation::FirmwareWa3
            ));
        }
        // A mitigated BHB that needs software runs it on every exit.
        match d.bhb {
            Bhb::Loop(k) => assert_eq!(d.exit, ExitMitigation::BhbLoop(k)),
            Bhb::ClearBhb => assert_eq!(d.exit, ExitMitigation::ClearBhb),
            Bhb::FirmwareWa3 => assert_eq!(d.exit, ExitMitigation::FirmwareWa3),
            Bhb::FirmwareWa1 => assert_eq!(d.exit, ExitMitigation::FirmwareWa1),
            Bhb::Ecbhb | Bhb::Unaffected(_) | Bhb::Vulnerable(_) => {}
        }
        // Nothing runs on exit for a CPU that needs nothing.
        if d.v2.state() != State::Mitigated && !matches!(d.bhb.state(), State::Mitigated) {
            assert_eq!(d.exit, ExitMitigation::None, "{d:?}");
        }
        assert_eq!(d.firmware_wa2(), d.v4 == V4::FirmwareWa2);
        assert!(d.line().to_string().starts_with("hyp: spectre: v2 "));
    }
}
