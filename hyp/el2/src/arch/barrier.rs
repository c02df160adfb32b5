//! Barriers (Arm ARM B2.3.12).

use core::arch::asm;

/// `DSB ISH`: completes earlier memory accesses and maintenance in the inner-shareable domain.
#[inline(always)]
pub fn dsb_ish() {
    // SAFETY: a barrier changes no register or memory state visible to Rust.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) }
}

/// `DSB ISHST`: completes earlier stores in the inner-shareable domain.
#[inline(always)]
pub fn dsb_ishst() {
    // SAFETY: a barrier changes no register or memory state visible to Rust.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) }
}

/// `DSB NSH`: completes earlier accesses and maintenance on this CPU.
#[inline(always)]
pub fn dsb_nsh() {
    // SAFETY: a barrier changes no register or memory state visible to Rust.
    unsafe { asm!("dsb nsh", options(nostack, preserves_flags)) }
}

/// `ISB`: later instructions see the effect of earlier system-register writes.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier changes no register or memory state visible to Rust.
    unsafe { asm!("isb", options(nostack, preserves_flags)) }
}

/// `WFE`: waits for an event (SEV, an interrupt, or a cleared exclusive monitor).
#[inline(always)]
pub fn wfe() {
    // SAFETY: waiting changes no state visible to Rust.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) }
}

/// `SEV`: wakes CPUs waiting in WFE.
#[inline(always)]
pub fn sev() {
    // SAFETY: signalling an event changes no state visible to Rust.
    unsafe { asm!("sev", options(nomem, nostack, preserves_flags)) }
}
