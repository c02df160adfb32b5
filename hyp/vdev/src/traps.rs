//! The EL2 trap controls a vCPU runs under: `HCR_EL2`, `CPTR_EL2`, `MDCR_EL2`, and where the
//! CPU has them `HCRX_EL2` and the fine-grained trap registers, each bit with its reason.
//!
//! The rule: what the guest's ID registers show ([`crate::idregs`]) it owns (its vCPU is
//! pinned to one physical CPU, so that state is its own), or hyp emulates it; what they hide
//! is trapped, so that a guest that uses it anyway gets an Undefined Instruction exception
//! instead of the hardware. A bit that only exists with a feature is set only when the CPU has
//! the feature (otherwise it is RES0). The register-class table in the README is this module
//! in prose. Field positions: Arm ARM (DDI 0487) D23.2 (`HCR_EL2` D23.2.53, `CPTR_EL2` with
//! `HCR_EL2.E2H` = 0 D23.2.36, `MDCR_EL2` D23.2.76, `HCRX_EL2` D23.2.54).

use crate::idregs::fields::{DFR0, MMFR0, MMFR1, PFR0, PFR1};
use aarch64_cpu::registers::{HCR_EL2, MDCR_EL2};
use tock_registers::fields::{Field, FieldValue};
use tock_registers::register_bitfields;
use tock_registers::RegisterLongName;

register_bitfields! {u64,
    /// `CPTR_EL2` when `HCR_EL2.E2H` is 0 (aarch64-cpu names only `TAM`).
    CPTR_EL2_NVHE [
        /// Traps writes of `CPACR_EL1` (no: the guest owns it).
        TCPAC OFFSET(31) NUMBITS(1) [],
        /// Traps the Activity Monitors (FEAT_AMUv1).
        TAM OFFSET(30) NUMBITS(1) [],
        /// Traps the trace registers.
        TTA OFFSET(20) NUMBITS(1) [],
        /// Traps SME (FEAT_SME); RES1 without it.
        TSM OFFSET(12) NUMBITS(1) [],
        /// Traps FP/SIMD.
        TFP OFFSET(10) NUMBITS(1) [],
        /// Traps SVE (FEAT_SVE); RES1 without it.
        TZ OFFSET(8) NUMBITS(1) [],
        /// RES1 bit 13.
        RES1_13 OFFSET(13) NUMBITS(1) [],
        /// RES1 bit 9.
        RES1_9 OFFSET(9) NUMBITS(1) [],
        /// RES1 bits 7:0.
        RES1_7_0 OFFSET(0) NUMBITS(8) []
    ]
}

/// The ID register fields hyp's trap choices depend on: the host's own values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFeatures {
    /// `ID_AA64PFR0_EL1`.
    pub pfr0: u64,
    /// `ID_AA64PFR1_EL1`.
    pub pfr1: u64,
    /// `ID_AA64DFR0_EL1`.
    pub dfr0: u64,
    /// `ID_AA64MMFR0_EL1`.
    pub mmfr0: u64,
    /// `ID_AA64MMFR1_EL1`.
    pub mmfr1: u64,
}

/// Whether the ID register field `f` of `v` is non-zero (the feature is implemented).
fn has<R: RegisterLongName>(v: u64, f: Field<u64, R>) -> bool {
    f.read(v) != 0
}

impl HostFeatures {
    /// FEAT_RAS (`ID_AA64PFR0_EL1.RAS`, bits 31:28).
    pub fn ras(&self) -> bool {
        has(self.pfr0, PFR0::RAS)
    }
    /// FEAT_AMUv1 (`ID_AA64PFR0_EL1.AMU`, bits 47:44).
    pub fn amu(&self) -> bool {
        has(self.pfr0, PFR0::AMU)
    }
    /// FEAT_SVE (`ID_AA64PFR0_EL1.SVE`, bits 35:32).
    pub fn sve(&self) -> bool {
        has(self.pfr0, PFR0::SVE)
    }
    /// FEAT_SME (`ID_AA64PFR1_EL1.SME`, bits 27:24).
    pub fn sme(&self) -> bool {
        has(self.pfr1, PFR1::SME)
    }
    /// FEAT_SPE (`ID_AA64DFR0_EL1.PMSVer`, bits 35:32).
    pub fn spe(&self) -> bool {
        has(self.dfr0, DFR0::PMSVer)
    }
    /// FEAT_TRF (`ID_AA64DFR0_EL1.TraceFilt`, bits 43:40).
    pub fn trf(&self) -> bool {
        has(self.dfr0, DFR0::TraceFilt)
    }
    /// FEAT_LOR (`ID_AA64MMFR1_EL1.LO`, bits 19:16).
    pub fn lor(&self) -> bool {
        has(self.mmfr1, MMFR1::LO)
    }
    /// FEAT_HCX (`ID_AA64MMFR1_EL1.HCX`, bits 43:40): `HCRX_EL2` exists.
    pub fn hcx(&self) -> bool {
        has(self.mmfr1, MMFR1::HCX)
    }
    /// FEAT_FGT (`ID_AA64MMFR0_EL1.FGT`, bits 59:56): the fine-grained trap registers exist.
    pub fn fgt(&self) -> bool {
        has(self.mmfr0, MMFR0::FGT)
    }
    /// The `PMUVer` the guest is shown, when it gets the CPU's PMU (FEAT_PMUv3p5 or later:
    /// [`platform::pmu::guest_pmu_version`], where the choice is explained).
    pub fn guest_pmu(&self) -> Option<u8> {
        platform::pmu::guest_pmu_version(self.dfr0)
    }
}

/// The trap controls of a vCPU (written once per physical CPU: vCPUs are pinned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    /// `HCR_EL2` while the guest runs.
    pub hcr: u64,
    /// `CPTR_EL2`.
    pub cptr: u64,
    /// `MDCR_EL2`.
    pub mdcr: u64,
    /// `HCRX_EL2`, when the CPU has it (FEAT_HCX).
    pub hcrx: Option<u64>,
    /// The fine-grained trap registers exist (FEAT_FGT): write `HFGRTR_EL2`, `HFGWTR_EL2`,
    /// `HFGITR_EL2`, `HDFGRTR_EL2` and `HDFGWTR_EL2` with 0.
    pub zero_fgt: bool,
}

fn set_if<R: tock_registers::RegisterLongName>(
    cond: bool,
    v: FieldValue<u64, R>,
) -> FieldValue<u64, R> {
    if cond {
        v
    } else {
        FieldValue::<u64, R>::new(0, 0, 0)
    }
}

/// `HCR_EL2` while a guest runs, bit by bit:
/// - VM: stage-2 translation on for EL1&0.
/// - SWIO: data cache invalidate by set/way is upgraded to clean+invalidate (set/way
///   operations trap anyway: TSW).
/// - PTW: a stage-1 table walk that lands on Device memory at stage 2 faults.
/// - FMO, IMO: physical FIQ/IRQ go to EL2 while a guest runs, and the guest's ICC_* accesses
///   use the virtual CPU interface (the ICH_* list registers).
/// - AMO: physical SError goes to EL2 (a guest-caused SError stops that VM, not hyp).
/// - BSU = inner shareable: barriers the guest executes are at least Inner Shareable.
/// - TWI: WFI traps, so an idle vCPU idles its CPU in hyp until an interrupt is due for it.
///   (TWE stays 0: a WFE in a guest spin loop is cheaper left to the CPU.)
/// - TID3: reads of the ID registers trap; the guest sees the sanitized view (idregs).
/// - TSC: SMC traps (PSCI and SMCCC are served by hyp; EL3 firmware is not the guest's).
/// - TIDCP: IMPLEMENTATION DEFINED system registers trap (UNDEFINED to the guest).
/// - TACR: `ACTLR_EL1`/`ACTLR2_EL1` trap (IMPLEMENTATION DEFINED controls of the physical CPU;
///   emulated as RAZ/WI, `crate::sysregs`).
/// - TSW: data cache maintenance by set/way traps: it acts on caches shared with hyp and
///   other VMs; hyp turns it into maintenance of the VM's own memory by address.
/// - TERR (FEAT_RAS): the RAS error record registers (`ERR*`, `ERX*`) trap; RAS is hidden, so
///   they are UNDEFINED instead of reading or clearing errors of the shared error records.
/// - TEA (FEAT_RAS): synchronous external aborts go to EL2; hyp reflects them to the guest
///   as external aborts (hyp sees each one first).
/// - TLOR (FEAT_LOR): the LORegions registers trap (LOR is hidden).
/// - RW: EL1 is AArch64.
/// - FWB: set when the VM's stage-2 descriptors use the FEAT_S2FWB MemAttr encoding (Arm ARM
///   D8.6.6): stage 2 then forces write-back for guest RAM whatever the guest's stage 1 says.
///
/// Left 0, each a trap or a feature kept off: API and APK (pointer authentication
/// instructions and key registers trap: PAuth is hidden), ATA (MTE allocation tags
/// inaccessible: tag accesses read as zero and are ignored, MTE registers trap), TID2 (the
/// cache ID registers describe the guest's own CPU), FB (vCPUs never migrate), TVM/TRVM (the
/// guest owns its stage 1), no TGE/E2H (hyp is not a host OS), no VI/VF/VSE (virtual
/// interrupts come from the list registers), DC/CD/ID, NV (no nested virtualization), FIEN.
fn hcr(h: &HostFeatures, fwb: bool) -> u64 {
    (HCR_EL2::VM::Enable
        + set_if(fwb, HCR_EL2::FWB::SET)
        + HCR_EL2::SWIO::SET
        + HCR_EL2::PTW::SET
        + HCR_EL2::FMO::EnableVirtualFIQ
        + HCR_EL2::IMO::EnableVirtualIRQ
        + HCR_EL2::AMO::SET
        + HCR_EL2::BSU::InnerShareable
        + HCR_EL2::TWI::SET
        + HCR_EL2::TID3::SET
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::TIDCP::SET
        + HCR_EL2::TACR::SET
        + HCR_EL2::TSW::SET
        + set_if(h.ras(), HCR_EL2::TERR::SET)
        + set_if(h.ras(), HCR_EL2::TEA::SET)
        + set_if(h.lor(), HCR_EL2::TLOR::SET)
        + HCR_EL2::RW::EL1IsAarch64)
        .value
}

/// `CPTR_EL2` (E2H = 0):
/// - TFP = 0: the guest owns FP/SIMD (hyp saves and restores it around its own code).
/// - TZ = 1: SVE traps (hidden: its state is not context-switched).
/// - TSM = 1: SME traps (hidden; RES1 without FEAT_SME anyway).
/// - TTA = 1: the trace registers trap (trace units are shared debug hardware).
/// - TAM = 1 (FEAT_AMUv1): the Activity Monitors trap (hidden; shared counters).
/// - TCPAC = 0: `CPACR_EL1` is the guest's.
fn cptr(h: &HostFeatures) -> u64 {
    (CPTR_EL2_NVHE::RES1_7_0.val(0xff)
        + CPTR_EL2_NVHE::RES1_9::SET
        + CPTR_EL2_NVHE::RES1_13::SET
        + CPTR_EL2_NVHE::TZ::SET
        + CPTR_EL2_NVHE::TSM::SET
        + CPTR_EL2_NVHE::TTA::SET
        + set_if(h.amu(), CPTR_EL2_NVHE::TAM::SET))
    .value
}

/// `MDCR_EL2`:
/// - With a guest PMU ([`HostFeatures::guest_pmu`], FEAT_PMUv3p5): TPM = 0, TPMCR = 0: the
///   guest owns the PMU registers (pinned vCPU: the counters are its own). HPMN = `hpmn`, the
///   CPU's `PMCR_EL0.N`: every event counter is the guest's (none reserved for EL2, so HPME
///   and HLP, which act only on counters HPMN and above, stay 0), and EL1 reads of
///   `PMCR_EL0.N` return HPMN. HPMD = 1: event counting is prohibited at EL2 (FEAT_PMUv3p1);
///   HCCD = 1: the cycle counter does not count at EL2 either (FEAT_PMUv3p5), whatever the
///   guest writes to the `NSH` filter bits. MTPME = 0: `PMEVTYPER<n>_EL0.MT` is treated as 0,
///   so no counter counts the events of another thread of the core (FEAT_MTPMU).
/// - Without: TPM, TPMCR: the PMU traps (hidden: `PMUVer` = 0). HPMN keeps its reset value.
/// - TDOSA: the OS lock and power-down registers (`OSLAR_EL1`, `OSLSR_EL1`, `OSDLR_EL1`,
///   `DBGPRCR_EL1`) trap; hyp keeps a per-vCPU copy (`crate::sysregs`).
/// - TDRA: the debug ROM address register (`MDRAR_EL1`) traps and reads 0.
/// - TTRF (FEAT_TRF): the trace filter control `TRFCR_EL1` traps (trace is hidden).
/// - TPMS (FEAT_SPE): the statistical profiling registers trap; E2PB = 0b00 keeps the
///   profiling buffer EL2's (SPE is hidden).
/// - E2TB = 0b00: the trace buffer (FEAT_TRBE) is EL2's, EL1 accesses trap.
/// - TDA = 0, TDE = 0: the guest owns the breakpoint and watchpoint registers and `MDSCR_EL1`
///   (its vCPU is pinned, so they are its own), and debug exceptions go to its EL1; they can
///   never fire at EL2 (TDE = 0: debug exceptions are disabled at EL2, Arm ARM D2.10).
fn mdcr(h: &HostFeatures, hpmn: u64) -> u64 {
    let pmu = h.guest_pmu().is_some();
    (set_if(!pmu, MDCR_EL2::TPM::SET)
        + set_if(!pmu, MDCR_EL2::TPMCR::SET)
        + MDCR_EL2::HPMN.val(hpmn & 0x1f)
        + set_if(pmu, MDCR_EL2::HPMD::SET)
        + set_if(pmu, MDCR_EL2::HCCD::SET)
        + MDCR_EL2::TDOSA::SET
        + MDCR_EL2::TDRA::SET
        + set_if(h.trf(), MDCR_EL2::TTRF::SET)
        + set_if(h.spe(), MDCR_EL2::TPMS::SET))
    .value
}

/// The trap controls for a guest on a CPU with `h`'s features. `fwb`: the VM's stage-2
/// descriptors use the FEAT_S2FWB encoding. `hpmn`: `MDCR_EL2.HPMN`: the CPU's
/// `PMCR_EL0.N` when the guest gets the PMU, else `MDCR_EL2.HPMN`'s reset value.
///
/// `HCRX_EL2` (FEAT_HCX) is 0: every feature it enables for EL1 and EL0 stays off and traps
/// (LS64, MOPS, FPMR, GCS, TCR2/SCTLR2, the NMI controls, 128-bit system registers), all hidden
/// from the guest. The fine-grained trap registers (FEAT_FGT) are 0: no extra traps from the
/// `Tx` bits, and the inverted `nX` bits trap what they guard (SME's `TPIDR2_EL0`/`SMPRI_EL1`,
/// S1PIE, S1POE, GCS, LS64, THE), which the guest is not shown either.
pub fn guest_controls(h: &HostFeatures, fwb: bool, hpmn: u64) -> Controls {
    Controls {
        hcr: hcr(h, fwb),
        cptr: cptr(h),
        mdcr: mdcr(h, hpmn),
        hcrx: h.hcx().then_some(0),
        zero_fgt: h.fgt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU like QEMU 10's `-cpu max`: RAS, SVE, SME, TRF, LOR, HCX, FGT and PMUv3p5; no AMU,
    /// no SPE.
    const MAX: HostFeatures = HostFeatures {
        // RAS 31:28, SVE 35:32 (and FP/AdvSIMD/EL0-3 fields).
        pfr0: 0x0000_0001_1000_2222,
        // SME 27:24.
        pfr1: 0x0000_0000_0100_0000,
        // TraceFilt 43:40; PMSVer 35:32 = 0; PMUVer 11:8 = 6 (PMUv3p5).
        dfr0: 0x0000_0100_0000_0606,
        // FGT 59:56.
        mmfr0: 0x0100_0000_0000_1125,
        // HCX 43:40, LO 19:16.
        mmfr1: 0x0000_0100_0001_0000,
    };
    /// `-cpu cortex-a72`: no RAS, SVE, SME, LOR, HCX, FGT.
    const A72: HostFeatures = HostFeatures {
        pfr0: 0x0000_0000_0000_2222,
        pfr1: 0,
        dfr0: 0x0000_0000_1030_5106,
        mmfr0: 0x1124,
        mmfr1: 0,
    };

    fn bit(v: u64, b: u32) -> bool {
        v >> b & 1 == 1
    }

    #[test]
    fn hidden_features_trap_and_owned_ones_do_not() {
        let c = guest_controls(&MAX, true, 6);
        // HCR: TACR 21, TSW 22, TERR 36, TEA 37, TLOR 35, TIDCP 20, TID3 18, TSC 19, FWB 46.
        for b in [0, 1, 2, 3, 4, 5, 13, 18, 19, 20, 21, 22, 31, 35, 36, 37, 46] {
            assert!(bit(c.hcr, b), "HCR_EL2 bit {b}");
        }
        // API 41, APK 40, ATA 56 clear: PAuth and MTE tag access trap; no TGE 27, no E2H 34,
        // no TVM 26, no FB 9, no TWE 14.
        for b in [9, 14, 26, 27, 34, 40, 41, 56] {
            assert!(!bit(c.hcr, b), "HCR_EL2 bit {b}");
        }
        // CPTR: TZ 8, TSM 12, TTA 20 set; TFP 10 and TCPAC 31 clear.
        assert!(bit(c.cptr, 8) && bit(c.cptr, 12) && bit(c.cptr, 20));
        assert!(!bit(c.cptr, 10) && !bit(c.cptr, 31));
        assert_eq!(c.cptr & 0x2ff, 0x2ff, "RES1 bits 9, 7:0");
        assert!(bit(c.cptr, 13));
        // MDCR: TDOSA 10, TDRA 11, TTRF 19 (max has TRF); the PMU is the guest's (TPM 6 and
        // TPMCR 5 clear) with every counter (HPMN = N), and counts nothing at EL2 (HPMD 17,
        // HCCD 23); HPME 7, HLP 26, MTPME 28 clear; TDA 9 and TDE 8 clear.
        for b in [10, 11, 17, 19, 23] {
            assert!(bit(c.mdcr, b), "MDCR_EL2 bit {b}");
        }
        for b in [5, 6, 7, 8, 9, 26, 28] {
            assert!(!bit(c.mdcr, b), "MDCR_EL2 bit {b}");
        }
        assert_eq!(c.mdcr & 0x1f, 6);
        assert_eq!(c.hcrx, Some(0));
        assert!(c.zero_fgt);
    }

    #[test]
    fn feature_bits_are_res0_without_the_feature() {
        let c = guest_controls(&A72, false, 6);
        // No RAS: TERR, TEA clear; no LOR: TLOR clear; no FWB asked.
        for b in [35, 36, 37, 46] {
            assert!(!bit(c.hcr, b), "HCR_EL2 bit {b}");
        }
        // TACR and TSW do not depend on a feature.
        assert!(bit(c.hcr, 21) && bit(c.hcr, 22));
        // No AMU: TAM clear. No TRF/SPE: TTRF, TPMS clear.
        assert!(!bit(c.cptr, 30));
        assert!(!bit(c.mdcr, 19) && !bit(c.mdcr, 14));
        // PMUv3 (1) only: the PMU is hidden and traps (TPM 6, TPMCR 5); HPMD 17 and HCCD 23
        // (RES0 before PMUv3p1/p5) clear; HPMN as given.
        assert!(bit(c.mdcr, 5) && bit(c.mdcr, 6));
        assert!(!bit(c.mdcr, 17) && !bit(c.mdcr, 23));
        assert_eq!(c.mdcr & 0x1f, 6);
        assert_eq!(c.hcrx, None);
        assert!(!c.zero_fgt);
    }

    #[test]
    fn pmu_below_pmuv3p5_traps() {
        // PMUv3p1 (neoverse-n1) and PMUv3p4: HPMD exists but HCCD does not, so the cycle
        // counter could count at EL2: hidden, trapped.
        for v in [4, 5] {
            let h = HostFeatures {
                dfr0: v << 8,
                ..MAX
            };
            assert_eq!(h.guest_pmu(), None);
            let c = guest_controls(&h, false, 6);
            assert!(bit(c.mdcr, 5) && bit(c.mdcr, 6), "PMUVer {v}");
            assert!(!bit(c.mdcr, 17) && !bit(c.mdcr, 23), "PMUVer {v}");
        }
        // A later PMU is passed through as PMUv3p5, with its own counter count.
        let h = HostFeatures {
            dfr0: 8 << 8,
            ..MAX
        };
        assert_eq!(h.guest_pmu(), Some(6));
        let c = guest_controls(&h, false, 20);
        assert!(!bit(c.mdcr, 5) && !bit(c.mdcr, 6));
        assert_eq!(c.mdcr & 0x1f, 20);
    }

    #[test]
    fn amu_and_spe_trap_when_present() {
        let h = HostFeatures {
            pfr0: 1 << 44,
            dfr0: 1 << 32,
            ..A72
        };
        let c = guest_controls(&h, false, 0);
        assert!(bit(c.cptr, 30), "TAM");
        assert!(bit(c.mdcr, 14), "TPMS");
        assert_eq!(
            (c.mdcr >> 12) & 3,
            0,
            "E2PB: the profiling buffer stays EL2's"
        );
    }
}
