//! hyp's virtual devices and exit decoding, as pure state machines tested on the host.
//!
//! Nothing here touches a system register or memory-mapped hardware: the vCPU run loop in `hyp`
//! reads `ESR_EL2`, `FAR_EL2`, `HPFAR_EL2` and the `ICH_*` registers, hands the plain values to
//! this crate, and applies the plain decisions it gets back.
//!
//! - [`exit`]: `ESR_EL2` decoding (data/instruction aborts, HVC/SMC, MSR/MRS, WFI/WFE) and the
//!   MMIO load rules (size, sign extension, 32/64-bit destination).
//! - [`psci`]: PSCI 1.1 and SMCCC 1.1 dispatch and per-vCPU power state.
//! - [`pl011`]: a virtual PL011 UART with line-buffered, prefixed output.
//! - [`vgic`]: a GICv3 distributor and redistributors, SGIs, and list-register management.
//! - [`idregs`]: the guest's sanitized view of the ID registers.
//! - [`mpidr`]: vCPU index ↔ MPIDR affinity.
//! - [`mmio`]: the access-size and error types every MMIO device model shares.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod exit;
pub mod idregs;
pub mod mmio;
pub mod mpidr;
pub mod pl011;
pub mod psci;
pub mod vgic;

pub use exit::{DataAbort, Exit, ExitError, FaultKind, MmioAccess, SysReg, SysRegAccess};
pub use mmio::{AccessSize, MmioError};
pub use mpidr::Mpidr;
