//! hyp's EL2 layer: boot entry, exception vectors and reports, system registers, the console,
//! PSCI, secondary CPUs, the heap and frame allocators, and the pure helpers they need
//! (device tree, command line, granule choice, exception reports and injection, guest RAM's
//! fill state), which are
//! tested on the host. `ESR_EL2` decoding is `platform::esr`, shared with `vdev`.
//!
//! Everything that executes an arm64 instruction lives in `arch` and is compiled only for
//! `target_arch = "aarch64"` with `target_os = "none"` (the bare-metal target), so the crate
//! and its tests build on any host.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod arch;
pub mod cmdline;
pub mod console;
pub mod dt;
pub mod exc;
pub mod fatal;
pub mod frames;
pub mod granule;
pub mod heap;
pub mod memmap;
pub mod mmio;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod psci;
pub mod scrub;
pub mod smp;
pub mod spectre;
pub mod trap;
