//! What hyp's crates share about the machine, each named once.
//!
//! - [`virt`]: the VM's platform, QEMU `virt` as hyp emulates it: guest physical addresses,
//!   region sizes, interrupt IDs and the vCPU limit. `guest-loader` describes it in the guest's
//!   device tree, `vdev` emulates it and `hyp` routes exits by it.
//! - [`mpidr`]: vCPU index ↔ MPIDR affinity (the device tree's `cpu` `reg`, `VMPIDR_EL2`,
//!   PSCI and SGI targets).
//! - [`gicv3`]: the GICv3 register frames and fields (IHI 0069), for hyp's driver of the
//!   physical GIC and `vdev`'s model of the virtual one.
//! - [`pl011`]: the PL011 UART's registers, for the guests' virtual UART, hyp's console and
//!   the host UART's input.
//! - [`pmu`]: whether a VM gets the CPU's PMUv3 (and which version), and its interrupt.
//! - [`esr`]: the one exception-class table and fault-status decoding, for `el2`'s reports of
//!   hyp's own exceptions, `vdev`'s exit decoding and the syndromes hyp injects.
//! - [`MAX_HOST_CPUS`]: how many physical CPUs hyp runs on.
//!
//! `no_std`, no `unsafe`, and no dependency beyond `aarch64-cpu` and `tock-registers`, so that
//! every crate of hyp can use it without pulling in another's.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
extern crate alloc;

pub mod esr;
pub mod gicv3;
pub mod mpidr;
pub mod pci;
pub mod pl011;
pub mod pmu;
pub mod virt;

pub use mpidr::Mpidr;

/// The most physical CPUs hyp runs on: its per-CPU stacks (`hyp/linker.ld` sizes the stack
/// area for this many, checked at boot) and its per-CPU tables. vCPUs are pinned one to one,
/// so this also bounds the vCPUs of all VMs together; one VM alone is bounded by
/// [`virt::MAX_VCPUS`] as well.
pub const MAX_HOST_CPUS: usize = 16;
