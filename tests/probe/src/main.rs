//! hyp's probe guest: a small bare-metal arm64 guest that checks, from inside a VM, what hyp
//! promises about it.
//!
//! It boots like a Linux kernel (an arm64 Image header whose page-size flag is 0, "unspecified",
//! like a boot-time page size kernel), reads `probe.test=` (a comma-separated list of tests) and
//! the other `probe.<key>=<value>` words from `/chosen/bootargs`, runs each test and prints one
//! line per test:
//!
//! ```text
//! PROBE <test>: PASS <figures>
//! PROBE <test>: FAIL <why>
//! ```
//!
//! then calls PSCI SYSTEM_OFF. An exception nothing expected is a FAIL of the running test.
//! The tests and their parameters are listed in `tests.rs`.
#![cfg_attr(probe_bare, no_std)]
#![cfg_attr(probe_bare, no_main)]

#[cfg(probe_bare)]
extern crate alloc;

#[cfg(probe_bare)]
mod arch;
#[cfg(probe_bare)]
mod dma;
#[cfg(probe_bare)]
mod hostile;
#[cfg(probe_bare)]
mod isolation;
#[cfg(probe_bare)]
mod mem;
#[cfg(probe_bare)]
mod memtest;
#[cfg(probe_bare)]
mod mmu;
#[cfg(probe_bare)]
mod platform;
#[cfg(probe_bare)]
mod pmu;
#[cfg(probe_bare)]
mod rt;
#[cfg(probe_bare)]
mod smp;
#[cfg(probe_bare)]
mod tests;
#[cfg(probe_bare)]
mod timers;

/// Built for the host (workspace-wide `cargo` commands): the probe only runs as a guest.
#[cfg(not(probe_bare))]
fn main() {}
