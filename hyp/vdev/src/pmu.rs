//! The guest's PMU (PMUv3, passed through: [`platform::pmu`] says when and why): the state a
//! vCPU starts with. When its overflow interrupt is asserted is [`crate::ppi::pmu_asserted`].
//!
//! The registers live in the hardware of the vCPU's own CPU (pinned one to one); hyp writes
//! them only when a vCPU starts (`el2::arch::vsys::reset_pmu`) and reads three of them to
//! follow the overflow interrupt's level.

/// `PMCR_EL0.P` (bit 1, write-only): reset every event counter to zero.
pub const PMCR_P: u64 = 1 << 1;
/// `PMCR_EL0.C` (bit 2, write-only): reset the cycle counter to zero.
pub const PMCR_C: u64 = 1 << 2;
/// `PMCR_EL0.N` (bits 15:11): the number of event counters.
const PMCR_N_SHIFT: u32 = 11;
/// The cycle counter's bit in `PMCNTEN*`, `PMINTEN*` and `PMOVS*`.
pub const CYCLE_COUNTER: u64 = 1 << 31;

/// `PMCR_EL0.N`: the event counters the CPU has (what `MDCR_EL2.HPMN` gives the guest).
pub const fn pmcr_n(pmcr: u64) -> u64 {
    (pmcr >> PMCR_N_SHIFT) & 0x1f
}

/// The bits of `PMCNTEN*`, `PMINTEN*` and `PMOVS*` that exist with `n` event counters: event
/// counters 0..n and the cycle counter.
pub const fn counter_mask(n: u64) -> u64 {
    let n = if n > 31 { 31 } else { n };
    ((1u64 << n) - 1) | CYCLE_COUNTER
}

/// The guest-visible PMU state of a vCPU that starts (PSCI CPU_ON or its first entry). The
/// Arm ARM leaves most PMU registers UNKNOWN after a warm reset; hyp makes them all zero, so
/// that nothing of the previous run (of this VM or another one on the same CPU) is left:
/// counting off, every counter (event and cycle) zero, no enables, no interrupt enables, no
/// overflow flags, EL0 access off, event types and filters zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetState {
    /// Written to `PMCR_EL0` first: E = 0, and P and C reset every counter.
    pub pmcr_clear: u64,
    /// `PMCR_EL0` afterwards: 0 (LC, LP, DP, X, D and E all 0).
    pub pmcr: u64,
    /// Written to `PMCNTENCLR_EL0`, `PMINTENCLR_EL1` and `PMOVSCLR_EL0`.
    pub clear_mask: u64,
    /// `PMSELR_EL0`, `PMUSERENR_EL0`, `PMCCFILTR_EL0`, `PMCCNTR_EL0`, and for every event
    /// counter `PMEVTYPER<n>_EL0` and `PMEVCNTR<n>_EL0`.
    pub zero: u64,
    /// The event counters to clear one by one (`PMCR_EL0.N`).
    pub counters: u64,
}

/// The reset state for a CPU whose `PMCR_EL0` reads `pmcr` at EL2.
pub const fn reset_state(pmcr: u64) -> ResetState {
    let n = pmcr_n(pmcr);
    ResetState {
        pmcr_clear: PMCR_P | PMCR_C,
        pmcr: 0,
        clear_mask: counter_mask(n),
        zero: 0,
        counters: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_clears_every_counter_the_cpu_has() {
        // QEMU 10 max: PMCR_EL0 reads 0x41013000 at EL2, N = 6.
        let r = reset_state(0x4101_3000);
        assert_eq!(r.counters, 6);
        assert_eq!(r.clear_mask, 0x8000_003f);
        assert_eq!(r.pmcr_clear, 0b110);
        assert_eq!(r.pmcr, 0);
        assert_eq!(r.zero, 0);
        // 31 event counters: all of 30:0, and the cycle counter.
        assert_eq!(reset_state(31 << 11).clear_mask, 0xffff_ffff);
        assert_eq!(reset_state(0).clear_mask, CYCLE_COUNTER);
        assert_eq!(pmcr_n(0x4102_3000), 6);
    }
}
