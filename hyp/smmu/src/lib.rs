//! hyp's model of an Arm SMMUv3 (IHI 0070) for device assignment, as pure logic tested on
//! the host.
//!
//! A PCI function assigned to a VM does DMA through an SMMU that walks *the VM's own stage-2
//! tables*, whatever their granule. This crate holds everything about that which is not a
//! register access:
//!
//! - [`SmmuFeatures`]: `SMMU_IDR0..5` decoded, and [`SmmuFeatures::check`] of a VM's
//!   [`stage2::Geometry`] against them (granule via `SMMU_IDR5.GRAN*`, IPA and output sizes via
//!   `OAS`, the attribute encoding via `SMMU_IDR3.FWB`): every refusal names the field.
//! - [`Ste`]: stream table entries; a stage-2 entry takes its translation fields from
//!   [`stage2::Geometry::vtcr_el2`], the value the CPUs load.
//! - [`Command`], [`CommandQueue`], [`EventQueue`], [`Event`]: the queues and their records.
//! - [`SmmuMirror`]: a [`stage2::Maintenance`] that mirrors every stage-2 invalidation of a VM
//!   to the SMMU inside the CPU's break-before-make sequence.
//!
//! Register offsets and fields are in [`regs`].
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cmd;
pub mod event;
pub mod features;
pub mod mirror;
pub mod queue;
pub mod regs;
pub mod ste;

pub use cmd::Command;
pub use event::{Event, EventType};
pub use features::{Refusal, SmmuFeatures};
pub use mirror::{CommandSink, SmmuMirror};
pub use queue::{
    CommandError, CommandMemory, CommandQueue, EventMemory, EventQueue, QueueFull, Ring,
};
pub use ste::Ste;
