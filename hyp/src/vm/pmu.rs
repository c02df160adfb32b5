//! The guest's PMU on its vCPU's CPU: passed through when the guest gets it
//! (`platform::pmu`), reset when a vCPU starts, and its overflow interrupt's level.

use el2::arch::vsys;
use vdev::pmu;
use vdev::traps::HostFeatures;

/// `MDCR_EL2.HPMN` for a guest on this CPU: every event counter the CPU has (`PMCR_EL0.N` read
/// at EL2) when the guest gets the PMU, else the field's current (reset) value.
pub fn hpmn(host: &HostFeatures) -> u64 {
    if host.guest_pmu().is_some() {
        pmu::pmcr_n(vsys::pmcr_el0())
    } else {
        vsys::mdcr_el2() & 0x1f
    }
}

/// Resets the guest-visible PMU state for a vCPU that starts (`vdev::pmu::reset_state`):
/// nothing counted by a previous run of this CPU (this VM's or another's) is left.
pub fn reset(host: &HostFeatures) {
    if host.guest_pmu().is_none() {
        return;
    }
    let r = pmu::reset_state(vsys::pmcr_el0());
    // SAFETY: the CPU has PMUv3 (guest_pmu), `r.counters` is its own PMCR_EL0.N, and the
    // caller (the vCPU's reset) owns this CPU's EL1 state.
    unsafe { vsys::reset_pmu(r.pmcr_clear, r.clear_mask, r.counters) };
}

/// Whether the PMU's overflow interrupt request is asserted on this CPU (only called when the
/// guest has the PMU: the registers are UNDEFINED without one).
pub fn overflow_asserted() -> bool {
    pmu::overflow_asserted(
        vsys::pmcr_el0(),
        vsys::pmovsset_el0(),
        vsys::pmintenset_el1(),
    )
}
