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
//! - [`console`]: a VM's bounded queue of output lines, with counted drops.
//! - [`vgic`]: a GICv3 distributor and redistributors, SGIs, and list-register management.
//! - [`idregs`]: the guest's sanitized view of the ID registers.
//! - [`pmu`]: the guest PMU's reset state and overflow interrupt level.
//! - [`ppi`]: forwarded level-sensitive PPIs (the EL1 timers): when the virtual line rises
//!   and falls.
//! - [`mmio`]: the access-size and error types every MMIO device model shares.
//!
//! # How the run loop uses this crate (per exit of vCPU `v`)
//! 1. Read `ICH_LR<n>_EL2` and call [`vgic::Vgic::sync_lrs`]`(v, &lrs)`.
//! 2. If `SPSR_EL2` says AArch32 ([`exit::aarch32_el0`]), inject the [`IllegalReturn`] and
//!    handle nothing else. Otherwise [`Exit::decode`]`(esr, far, hpfar)`, then by variant:
//!    - `Hvc`/`Smc` with imm 0: [`psci::Psci::call`]`(v, [x0, x1, x2, x3])` and apply the
//!      [`psci::PsciAction`] (advance ELR by 4 for `Smc` only); at `CpuOff`, sync the list
//!      registers and [`vgic::Vgic::reset_vcpu`]. Any other immediate: x0 = NOT_SUPPORTED.
//!    - `DataAbort`: if the IPA is RAM, it is a stage-2 fault for the stage-2 code; otherwise
//!      [`DataAbort::mmio`] gives the access (or an [`ExitError`]: inject an external abort),
//!      dispatch `ipa - base` to [`pl011::Pl011`], [`vgic::Vgic::dist_read`]/`dist_write` or
//!      `redist_read`/`redist_write`; apply a load with [`MmioAccess::load_value`]; skip
//!      writes to Rt = 31 (XZR) and read 0 from it; advance ELR by 4. After a PL011 access,
//!      `vgic.set_level(uart_spi, 0, uart.irq_level())`.
//!    - `SysReg`: MRS of an ID register → [`idregs::GuestIdRegs::read`]; MSR to
//!      `ICC_SGI1R_EL1` (or `ICC_ASGI1R_EL1`/`ICC_SGI0R_EL1`) → [`vgic::Vgic::sgi`]; else
//!      inject an undefined instruction. Advance ELR by 4.
//!    - `Wfx(Wfi)` ([`exit::Wfx::refine_wfi`] of the instruction when the CPU has WFxT) and
//!      `Wfx(Wfit)`: advance ELR; idle unless [`vgic::Vgic::has_deliverable`]`(v)`, for WFIT
//!      no later than its deadline (a virtual count in the register).
//!    - Physical IRQ of a forwarded PPI (the timers): [`ppi::Forwarder::fired`] with the
//!      device's output; apply the [`ppi::Change`] (`vgic.set_level(virt, v, ..)` and the
//!      physical PPI's enable). Before vGIC accesses, entries and while idle,
//!      [`ppi::Forwarder::check`] each high line.
//! 3. Kick (IPI) every vCPU in the returned [`vgic::VcpuSet`]s other than `v`.
//! 4. [`vgic::Vgic::flush_lrs`]`(v, &mut lrs, n_lrs)`, write the LRs, set `ICH_HCR_EL2.UIE`
//!    if `underflow`, enter the guest.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod console;
pub mod exit;
pub mod idregs;
pub mod mmio;
pub mod pci;
pub mod pl011;
pub mod pmu;
pub mod ppi;
pub mod psci;
pub mod sysregs;
pub mod traps;
pub mod vgic;

pub use exit::{
    DataAbort, Exit, ExitError, FaultKind, IllegalReturn, MmioAccess, SysReg, SysRegAccess,
};
pub use mmio::{AccessSize, MmioError};
/// vCPU index ↔ MPIDR affinity: one mapping for the device tree, `VMPIDR_EL2`, PSCI and the
/// vGIC (`platform::mpidr`).
pub use platform::Mpidr;
