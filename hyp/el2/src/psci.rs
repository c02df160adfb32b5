//! PSCI calls (Arm DEN0022), through `smccc` with the conduit the device tree names.

use crate::dt::PsciMethod;
use core::sync::atomic::{AtomicU8, Ordering};
use smccc::psci;
use smccc::{Hvc, Smc};

pub use smccc::psci::error::Error as PsciError;

const UNSET: u8 = 0;
const SMC: u8 = 1;
const HVC: u8 = 2;

static METHOD: AtomicU8 = AtomicU8::new(UNSET);

/// Records how to call PSCI (from the device tree's `/psci` `method`).
pub fn set_method(m: PsciMethod) {
    METHOD.store(
        match m {
            PsciMethod::Smc => SMC,
            PsciMethod::Hvc => HVC,
        },
        Ordering::Release,
    );
}

fn method() -> u8 {
    METHOD.load(Ordering::Acquire)
}

/// Whether the device tree named `smc` as the conduit: then EL3 firmware answers SMCCC calls
/// (an `hvc` from EL2 would reach hyp itself).
pub fn conduit_is_smc() -> bool {
    method() == SMC
}

/// `CPU_ON` (64-bit): starts `mpidr` at physical address `entry` with x0 = `context`.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), PsciError> {
    match method() {
        HVC => psci::cpu_on::<Hvc>(mpidr, entry, context),
        // QEMU virt with virtualization=on says "smc"; use it when nothing was recorded.
        _ => psci::cpu_on::<Smc>(mpidr, entry, context),
    }
}

/// `SYSTEM_OFF`. Returns only if the call failed; then this CPU waits forever.
pub fn system_off() -> ! {
    let _ = match method() {
        HVC => psci::system_off::<Hvc>(),
        _ => psci::system_off::<Smc>(),
    };
    loop {
        crate::arch::barrier::wfe();
    }
}
