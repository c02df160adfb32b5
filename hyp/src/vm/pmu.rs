//! The guest's PMU on its vCPU's CPU: passed through when the guest gets it
//! (`platform::pmu`), reset when a vCPU starts, and its overflow interrupt's level (forwarded
//! as PPI 23 by `super::ppi`).

use aarch64_cpu::registers::MDCR_EL2;
use el2::arch::vsys;
use platform::pmu::{guest_pmu_version, has_pmuv3};
use vdev::pmu;
use vdev::traps::HostFeatures;

/// `MDCR_EL2.HPMN` for a guest on this CPU: every event counter the CPU has (`PMCR_EL0.N` read
/// at EL2) when the guest gets the PMU, else the field's current (reset) value.
pub fn hpmn(host: &HostFeatures) -> u64 {
    if host.guest_pmu().is_some() {
        pmu::pmcr_n(vsys::pmcr_el0())
    } else {
        MDCR_EL2::HPMN.read(vsys::mdcr_el2())
    }
}

/// Resets the PMU for a vCPU that starts (`vdev::pmu::reset_state`): nothing counted by a
/// previous run of this CPU (this VM's or another's) is left. Done on every CPU with PMUv3,
/// also where the guest does not get it: then no overflow interrupt can be left enabled either.
pub fn reset(host: &HostFeatures) {
    if !has_pmuv3(host.dfr0) {
        return;
    }
    let r = pmu::reset_state(vsys::pmcr_el0());
    // SAFETY: the CPU has PMUv3 (has_pmuv3), `r.counters` is its own PMCR_EL0.N, and the
    // caller (the vCPU's reset) owns this CPU's EL1 state.
    unsafe { vsys::reset_pmu(r.pmcr_clear, r.clear_mask, r.counters) };
}

/// Whether the PMU's overflow interrupt request is asserted on this CPU (`vdev::ppi`): never
/// when the guest does not get the PMU (its registers trap, and `reset` left them off).
pub fn overflow_asserted() -> bool {
    if guest_pmu_version(vsys::id_reg(5, 0)).is_none() {
        return false;
    }
    vdev::ppi::pmu_asserted(
        vsys::pmcr_el0(),
        vsys::pmovsset_el0(),
        vsys::pmintenset_el1(),
    )
}
