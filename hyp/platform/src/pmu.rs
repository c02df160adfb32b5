//! The guest's PMU: whether a VM gets the CPU's PMUv3, which version it is told, and its
//! interrupt. One rule, used by `guest-loader` (the `/pmu` device tree node), `vdev`
//! (`ID_AA64DFR0_EL1.PMUVer` and `MDCR_EL2`) and hyp (the vCPU's PMU reset and its PPI).
//!
//! hyp passes the architected PMU through: vCPUs are pinned one to one, so the counters of a
//! physical CPU are its vCPU's own, and `MDCR_EL2.HPMN` gives the guest all of them. The
//! guest's counters must never count hyp's own work (EL2), which the hardware guarantees only
//! with FEAT_PMUv3p5: `MDCR_EL2.HPMD` (FEAT_PMUv3p1) prohibits the event counters at EL2, and
//! `MDCR_EL2.HCCD` (FEAT_PMUv3p5) the cycle counter (Arm ARM D13, "The Performance
//! Monitors Extension", and the `MDCR_EL2` field descriptions). Without HCCD the cycle counter counts at EL2
//! whenever the guest sets `PMCCFILTR_EL0.NSH` and `PMCR_EL0.DP` is 0, and without HPMD so do
//! the event counters with `PMEVTYPER<n>_EL0.NSH`: making that impossible would take trapping
//! `PMCR_EL0` (PMUv3p1..p4) or every PMU register (PMUv3), i.e. emulation. So a CPU older
//! than PMUv3p5 gives its guests no PMU (`PMUVer` = 0, every PMU register UNDEFINED).

use crate::virt::ppi_number;

/// The PMU overflow interrupt (Arm BSA: PPI 7, INTID 23).
pub const PMU_INTID: u32 = 23;
/// The PMU interrupt's PPI number as the device tree writes it.
pub const PMU_PPI: u32 = ppi_number(PMU_INTID);

/// `ID_AA64DFR0_EL1.PMUVer` for FEAT_PMUv3p5.
pub const PMUV3P5: u8 = 0b0110;
/// `ID_AA64DFR0_EL1.PMUVer` = 0b1111: an IMPLEMENTATION DEFINED PMU, not PMUv3.
const PMUVER_IMPDEF: u8 = 0b1111;

/// `ID_AA64DFR0_EL1.PMUVer` (bits 11:8) of `dfr0`.
pub const fn pmu_version(dfr0: u64) -> u8 {
    ((dfr0 >> 8) & 0xf) as u8
}

/// Whether the CPU implements PMUv3 (any version; `PMUVer` 0 is no PMU, 0b1111 an
/// IMPLEMENTATION DEFINED one): its PMU registers exist at EL2.
pub const fn has_pmuv3(dfr0: u64) -> bool {
    let v = pmu_version(dfr0);
    v != 0 && v != PMUVER_IMPDEF
}

/// The `PMUVer` a guest on a CPU with `ID_AA64DFR0_EL1` = `dfr0` is shown: `None` (no PMU)
/// below FEAT_PMUv3p5 or for an IMPLEMENTATION DEFINED PMU; else the CPU's version capped at
/// PMUv3p5, the newest whose EL2 controls hyp sets (later versions add features such as the
/// fixed instruction counter of FEAT_PMUv3_ICNTR, whose EL2 side hyp does not manage).
pub const fn guest_pmu_version(dfr0: u64) -> Option<u8> {
    let v = pmu_version(dfr0);
    if v == PMUVER_IMPDEF || v < PMUV3P5 {
        None
    } else {
        Some(PMUV3P5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pmuv3p5_and_later_is_passed_through() {
        // QEMU 10: max has PMUv3p5 (6), neoverse-n1 PMUv3p1 (4), cortex-a72 PMUv3 (1).
        assert_eq!(guest_pmu_version(0x0000_0001_1030_5609), Some(6));
        assert_eq!(guest_pmu_version(0x0000_0001_1030_5408), None);
        assert_eq!(guest_pmu_version(0x1030_5106), None);
        assert_eq!(guest_pmu_version(0), None);
        // PMUv3p4 (5): HPMD but no HCCD.
        assert_eq!(guest_pmu_version(5 << 8), None);
        // Later versions are capped; IMPLEMENTATION DEFINED is not PMUv3.
        assert_eq!(guest_pmu_version(7 << 8), Some(6));
        assert_eq!(guest_pmu_version(9 << 8), Some(6));
        assert_eq!(guest_pmu_version(0xf << 8), None);
        assert_eq!((PMU_INTID, PMU_PPI), (23, 7));
        assert!(has_pmuv3(1 << 8) && has_pmuv3(4 << 8) && has_pmuv3(6 << 8));
        assert!(!has_pmuv3(0) && !has_pmuv3(0xf << 8));
    }
}
