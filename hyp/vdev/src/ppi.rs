//! Forwarded level-sensitive PPIs: devices of a vCPU's own physical CPU (the EL1 virtual and
//! physical timers, and any other per-CPU device the guest owns) whose physical PPI hyp takes
//! and whose level it mirrors on the vCPU's PPI in the vGIC.
//!
//! vCPUs are pinned one to one, so the device's registers are the guest's own and its output
//! line is the physical PPI of the CPU the vCPU runs on. hyp cannot link the physical PPI to
//! the guest's interrupt (no `ICH_LR<n>_EL2.HW` here), so each forwarded line is a small
//! state machine, [`Forwarder`], one per vCPU:
//!
//! - **low**: the physical PPI is enabled. When it fires (a physical IRQ exit, or the wake-up
//!   of an idle vCPU) and the device still asserts its output, the virtual line goes high in
//!   the vGIC (pending for as long as it stays high: level semantics, visible in
//!   `GICR_ISPENDR0` even while the guest has the interrupt disabled) and the physical PPI is
//!   disabled, since a level-sensitive PPI whose line stays high would fire again at once.
//! - **high**: at every exit that may observe the interrupt (before any vGIC register access,
//!   before each entry, while idle, and at the maintenance interrupt the list register's
//!   `EOI` bit asks for when the guest deactivates it), hyp reads the device again; once it
//!   no longer asserts its output (the guest masked, disabled or reprogrammed it), the virtual
//!   line drops and the physical PPI is enabled again.
//!
//! Which devices are forwarded, and how to read whether each asserts its output, is the
//! table in `hyp/src/vm/ppi.rs`; the per-device "asserted" decisions are here, pure:
//! [`timer_asserted`] for the generic timers and [`pmu_asserted`] for the PMU.

/// One forwarded PPI: the physical INTID hyp takes and the INTID the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    /// The PPI on the physical CPU (16..=31).
    pub physical: u32,
    /// The PPI the vCPU sees in its vGIC redistributor (16..=31).
    pub virt: u32,
}

/// What the run loop must do to a forwarded line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Disable the physical PPI, then drive the virtual line high (`Vgic::set_level(virt, v,
    /// true)`).
    Raise,
    /// Drive the virtual line low, then enable the physical PPI again.
    Lower,
}

/// Up to this many forwarded PPIs per vCPU.
pub const MAX_FORWARDED: usize = 8;

/// The state of a vCPU's forwarded lines, by index in the run loop's table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forwarder {
    /// Bit `i`: line `i` is high in the vGIC and its physical PPI is disabled.
    high: u8,
}

impl Forwarder {
    /// Whether line `i` is high (its physical PPI disabled).
    pub fn is_high(&self, i: usize) -> bool {
        i < MAX_FORWARDED && self.high & (1 << i) != 0
    }

    /// Whether any line is high: only then does [`Forwarder::check`] have work to do.
    pub fn any_high(&self) -> bool {
        self.high != 0
    }

    /// Line `i`'s physical PPI was acknowledged; `asserted` is the device's output now. A
    /// device that no longer asserts it (a level-sensitive PPI sampled after the guest
    /// changed it) raises nothing.
    pub fn fired(&mut self, i: usize, asserted: bool) -> Option<Change> {
        if i >= MAX_FORWARDED || !asserted || self.is_high(i) {
            return None;
        }
        self.high |= 1 << i;
        Some(Change::Raise)
    }

    /// Line `i` is high and the device's output is now `asserted`: [`Change::Lower`] once it
    /// is not.
    pub fn check(&mut self, i: usize, asserted: bool) -> Option<Change> {
        if !self.is_high(i) || asserted {
            return None;
        }
        self.high &= !(1 << i);
        Some(Change::Lower)
    }

    /// The vCPU starts again (PSCI CPU_ON; its devices are reset): every high line goes low,
    /// its physical PPI enabled again. Returns the lines that were high.
    pub fn reset(&mut self) -> impl Iterator<Item = usize> {
        let was = core::mem::take(&mut self.high);
        (0..MAX_FORWARDED).filter(move |i| was & (1 << i) != 0)
    }
}

/// Whether a generic timer asserts its interrupt output, from its control register
/// (`CNTV_CTL_EL0` or `CNTP_CTL_EL0`; Arm ARM D11, "The Generic Timer in AArch64 state",
/// and the `CNTx_CTL_EL0` field descriptions):
/// ENABLE (bit 0) set, IMASK (bit 1) clear, ISTATUS (bit 2) set (the timer condition is met).
pub fn timer_asserted(ctl: u64) -> bool {
    const ENABLE: u64 = 1 << 0;
    const IMASK: u64 = 1 << 1;
    const ISTATUS: u64 = 1 << 2;
    ctl & (ENABLE | IMASK | ISTATUS) == ENABLE | ISTATUS
}

/// Whether the PMU asserts its overflow interrupt request (Arm ARM D13, "The
/// Performance Monitors Extension", overflow interrupt requests): counting enabled (`PMCR_EL0.E`, bit 0) and a counter with
/// both its overflow flag (`PMOVSSET_EL0`) and its interrupt enable (`PMINTENSET_EL1`) set.
pub fn pmu_asserted(pmcr: u64, pmovsset: u64, pmintenset: u64) -> bool {
    pmcr & 1 != 0 && pmovsset & pmintenset != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_output() {
        assert!(timer_asserted(0b101));
        assert!(!timer_asserted(0b111)); // masked
        assert!(!timer_asserted(0b001)); // condition not met
        assert!(!timer_asserted(0b100)); // disabled (ISTATUS is UNKNOWN then)
        assert!(!timer_asserted(0));
        assert!(timer_asserted(0b101 | 1 << 8)); // bits above are ignored
    }

    #[test]
    fn pmu_output() {
        assert!(pmu_asserted(1, 1 << 31, 1 << 31)); // cycle counter overflowed
        assert!(pmu_asserted(0b111, 0b101, 0b100));
        assert!(!pmu_asserted(0, 1, 1)); // PMCR_EL0.E clear
        assert!(!pmu_asserted(1, 0b01, 0b10)); // overflow without its interrupt enable
        assert!(!pmu_asserted(1, 0, u64::MAX));
    }

    #[test]
    fn level_cycle() {
        let mut f = Forwarder::default();
        assert!(!f.any_high());
        // Low: a check has nothing to do whatever the device says.
        assert_eq!(f.check(0, true), None);
        assert_eq!(f.check(0, false), None);
        // Fired while asserted: raise, once.
        assert_eq!(f.fired(0, true), Some(Change::Raise));
        assert!(f.is_high(0) && f.any_high());
        assert_eq!(f.fired(0, true), None);
        // High while the device asserts: stays high (the guest has not dealt with it).
        assert_eq!(f.check(0, true), None);
        assert!(f.is_high(0));
        // The guest masked it: lower, once.
        assert_eq!(f.check(0, false), Some(Change::Lower));
        assert_eq!(f.check(0, false), None);
        assert!(!f.any_high());
    }

    #[test]
    fn fired_but_no_longer_asserted() {
        let mut f = Forwarder::default();
        assert_eq!(f.fired(1, false), None);
        assert!(!f.is_high(1));
    }

    #[test]
    fn lines_are_independent() {
        let mut f = Forwarder::default();
        assert_eq!(f.fired(0, true), Some(Change::Raise));
        assert_eq!(f.fired(1, true), Some(Change::Raise));
        // Line 1 is dealt with, line 0 is not.
        assert_eq!(f.check(0, true), None);
        assert_eq!(f.check(1, false), Some(Change::Lower));
        assert!(f.is_high(0) && !f.is_high(1));
        // Line 1 fires again while line 0 is still high.
        assert_eq!(f.fired(1, true), Some(Change::Raise));
        assert_eq!(f.check(0, false), Some(Change::Lower));
        assert!(!f.is_high(0) && f.is_high(1));
    }

    #[test]
    fn reset_lowers_every_high_line() {
        let mut f = Forwarder::default();
        f.fired(0, true);
        f.fired(2, true);
        let lowered: std::vec::Vec<usize> = f.reset().collect();
        assert_eq!(lowered, [0, 2]);
        assert!(!f.any_high());
        assert_eq!(f.reset().count(), 0);
    }

    #[test]
    fn out_of_range_index_is_ignored() {
        let mut f = Forwarder::default();
        assert_eq!(f.fired(MAX_FORWARDED, true), None);
        assert_eq!(f.check(MAX_FORWARDED, false), None);
        assert!(!f.is_high(MAX_FORWARDED));
    }
}
