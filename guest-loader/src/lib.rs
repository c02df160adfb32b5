//! hyp's guest loader: everything between a system config file and the load plan of its VMs.
//!
//! - [`config`]: the TOML system config (serde + toml, spans for line numbers), validated.
//! - [`plan`]: resolution against the CPU's features, the physical CPUs, the RAM and the
//!   files: granule decisions (with `fallback`), stage-2 geometry, layout, command line, DTB.
//! - [`image`]: arm64 Image headers, plain or gzip.
//! - [`cmdline`]: the command line with `arm64.pagesize=`.
//! - [`layout`]: the guest memory map (QEMU `virt`).
//! - [`fdt`]: the guest device tree.
//! - [`bundle`]: the boot bundle (cpio newc) hyp reads from its disk.
//!
//! The library is `no_std` + `alloc` and parses byte slices only; the `guest-loader` binary is
//! the host CLI around it.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod bundle;
pub mod cmdline;
pub mod config;
pub mod fdt;
pub mod image;
pub mod layout;
pub mod pci;
pub mod plan;
pub mod size;

pub use bundle::{Bundle, BundleError};
pub use config::{parse_config, ConfigError, Errors, SystemConfig, VmConfig};
pub use image::{ImageError, ImageHeader};
pub use plan::{plan_system, plan_text, FileSource, Host, SystemPlan, VmPlan};
pub use smmu::SmmuFeatures;
pub use stage2::{CpuFeatures, Granule};
