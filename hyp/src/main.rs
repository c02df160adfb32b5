//! hyp: the EL2 binary.
//!
//! Boot flow (primary CPU, from `el2::arch` entry.S with the MMU off):
//! 1. `boot::early`: device tree, console, command line, CPU features, EL2 granule, memory
//!    (heap and the physical allocator), EL2 page tables and MMU, exception vectors.
//! 2. The physical GIC (`vm::init_gic`), then PSCI CPU_ON for every other CPU of the device
//!    tree, each going straight into hyp's WFI idle loop (`vm::cpus`); while they come up, the
//!    boot bundle the loader put in RAM as the initrd (`/chosen` `linux,initrd-start`) and its
//!    config are read (`vm::read_bundle`). Then hyp waits for the secondaries.
//! 3. The SMMU and PCI functions (`boot::take_over_devices`), test switches (`hyp.test=`,
//!    `selftest`).
//! 4. `vm::run_system`: the plan (`guest-loader`), the VMs, and one vCPU thread per physical
//!    CPU until every VM has exited.
//! 5. Power off with the success marker, or the failure marker on any fatal error.
//!
//! hyp is built only for `aarch64-unknown-none`; on any other target this is a stub `main`
//! that says so, so `cargo clippy --workspace` and `cargo doc` work on the host.
//! (The bare-metal build is `cfg(all(target_arch = "aarch64", target_os = "none"))`, spelled
//! the same way in every crate.)
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std)]
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_main)]

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn main() {
    eprintln!(
        "hyp runs only on bare-metal arm64: cargo build -p hyp --release --target \
         aarch64-unknown-none (tools/build-hyp makes the Image)"
    );
    std::process::exit(2);
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
extern crate alloc;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod boot;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod failure;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod gic;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod mem;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod mmu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod pci;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod selftest;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod smmu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod vm;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use el2::fatal;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use el2::heap::LockedHeap;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use log::info;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    el2::fatal::panic(info)
}

/// What a run of the system ended with.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// There was nothing to run (no bundle, or a system with no VMs).
    NoVms,
    /// Every VM exited cleanly.
    Ok,
}

/// Rust entry of the boot CPU (from `el2::arch` entry.S): x0 = device tree address.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[no_mangle]
extern "C" fn el2_primary_main(dtb: usize) -> ! {
    let boot = boot::early(dtb);
    // Under QEMU TCG first running any code costs its translation, so the boot CPU reads the
    // bundle while the secondaries come up (into hyp's idle loop when the GIC is there).
    let gic = vm::init_gic(&boot);
    let secondaries = boot::power_on_secondaries(&boot, gic.is_ok());
    let bundle = vm::read_bundle(&boot);
    boot::await_secondaries(secondaries);
    boot::take_over_devices(&boot);

    selftest::run(&boot);

    let result = vm::run_system(&boot, gic, bundle);
    if let Err(e) = smmu::poll() {
        el2::fatal!("{e}")
    }
    match result {
        Ok(Verdict::NoVms) => {
            info!("hyp: no VMs to run, powering off");
            fatal::power_off_ok()
        }
        Ok(Verdict::Ok) => fatal::power_off_ok(),
        Err(e) => {
            if let Some(detail) = e.detail() {
                log::error!("{detail}");
            }
            el2::fatal!("{e}")
        }
    }
}

/// Rust entry when the loader entered hyp at EL1 or EL3 (from entry.S): says so and powers
/// off.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[no_mangle]
extern "C" fn el2_wrong_el(dtb: usize, el: u64) -> ! {
    boot::wrong_el(dtb, el)
}
