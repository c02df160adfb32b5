//! The per-CPU devices whose level-sensitive PPI hyp forwards to the vCPU pinned on the CPU,
//! and how to read whether each asserts its output (the decisions are `vdev::ppi`'s).
//!
//! A device joins by one more entry of [`FORWARDED`]: its physical and virtual INTIDs and a
//! function reading its registers (live in the hardware: the vCPU owns this CPU). The run loop
//! enables each entry's physical PPI, raises the virtual line when the PPI fires, and lowers
//! it (re-enabling the PPI) once the function says the output is no longer asserted.

use el2::arch::vsys;
use platform::pmu::PMU_INTID;
use platform::virt::{PTIMER_INTID, VTIMER_INTID};
use vdev::ppi::{timer_asserted, Line};

/// One forwarded PPI.
pub struct Forwarded {
    /// The physical and virtual INTIDs.
    pub line: Line,
    /// Whether the device asserts its interrupt output now (read on the vCPU's own CPU).
    pub asserted: fn() -> bool,
}

/// How many PPIs are forwarded.
const N: usize = 3;
const _: () = assert!(
    N <= vdev::ppi::MAX_FORWARDED,
    "vdev::ppi::Forwarder has too few lines"
);

/// The forwarded PPIs, indexed as `vdev::ppi::Forwarder`'s lines.
pub static FORWARDED: [Forwarded; N] = [
    // The EL1 virtual timer (the guest's CNTV_*, counting CNTPCT - CNTVOFF_EL2).
    Forwarded {
        line: Line {
            physical: VTIMER_INTID,
            virt: VTIMER_INTID,
        },
        asserted: || timer_asserted(vsys::cntv_ctl_el0()),
    },
    // The EL1 physical timer (the guest's CNTP_*: CNTHCTL_EL2.EL1PCEN gives it to the guest).
    Forwarded {
        line: Line {
            physical: PTIMER_INTID,
            virt: PTIMER_INTID,
        },
        asserted: || timer_asserted(vsys::cntp_ctl_el0()),
    },
    // The PMU's overflow interrupt (PMUv3 passed through: `super::pmu`; never asserted where
    // the guest does not get the PMU).
    Forwarded {
        line: Line {
            physical: PMU_INTID,
            virt: PMU_INTID,
        },
        asserted: super::pmu::overflow_asserted,
    },
];

/// The index of the entry whose physical INTID is `intid`.
pub fn by_physical(intid: u32) -> Option<usize> {
    FORWARDED.iter().position(|f| f.line.physical == intid)
}

/// Whether `vintid` is a forwarded line's virtual INTID.
pub fn is_forwarded_virt(vintid: u64) -> bool {
    FORWARDED.iter().any(|f| u64::from(f.line.virt) == vintid)
}
