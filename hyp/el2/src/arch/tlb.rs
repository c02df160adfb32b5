//! EL2 TLB maintenance (Arm ARM D8.13).

use super::barrier::{dsb_ishst, dsb_nsh, isb};
use core::arch::asm;

/// Invalidates every EL2 TLB entry on this CPU: `DSB ISHST; TLBI ALLE2; DSB NSH; ISB`.
pub fn flush_el2_local() {
    dsb_ishst();
    // SAFETY: invalidating TLB entries cannot break memory safety; the tables stay valid.
    unsafe { asm!("tlbi alle2", options(nostack, preserves_flags)) }
    dsb_nsh();
    isb();
}

/// Single TLBI instructions without barriers, for `stage2::Maintenance` (whose operation
/// sequences carry the barriers). Operands are already encoded (address >> 12).
pub mod raw {
    use core::arch::asm;

    /// `TLBI IPAS2E1IS, op` (VMID from VTTBR_EL2).
    pub fn ipas2e1is(op: u64) {
        // SAFETY: TLB invalidation cannot break memory safety.
        unsafe { asm!("tlbi ipas2e1is, {0}", in(reg) op, options(nostack, preserves_flags)) }
    }

    /// `TLBI VMALLE1IS` (VMID from VTTBR_EL2).
    pub fn vmalle1is() {
        // SAFETY: TLB invalidation cannot break memory safety.
        unsafe { asm!("tlbi vmalle1is", options(nostack, preserves_flags)) }
    }

    /// `TLBI VMALLS12E1IS` (VMID from VTTBR_EL2).
    pub fn vmalls12e1is() {
        // SAFETY: TLB invalidation cannot break memory safety.
        unsafe { asm!("tlbi vmalls12e1is", options(nostack, preserves_flags)) }
    }

    /// `TLBI ALLE1IS`: every EL1&0 stage-1 and stage-2 entry of every VMID (VMID rollover).
    pub fn alle1is() {
        // SAFETY: TLB invalidation cannot break memory safety.
        unsafe { asm!("tlbi alle1is", options(nostack, preserves_flags)) }
    }

    /// `TLBI VAE2IS, op`.
    pub fn vae2is(op: u64) {
        // SAFETY: TLB invalidation cannot break memory safety.
        unsafe { asm!("tlbi vae2is, {0}", in(reg) op, options(nostack, preserves_flags)) }
    }

    /// `TLBI ALLE2IS`.
    pub fn alle2is() {
        // SAFETY: TLB invalidation cannot break memory safety.
        unsafe { asm!("tlbi alle2is", options(nostack, preserves_flags)) }
    }

    /// `TLBI VAAE1IS, op`.
    pub fn vaae1is(op: u64) {
        // SAFETY: TLB invalidation cannot break memory safety.
        unsafe { asm!("tlbi vaae1is, {0}", in(reg) op, options(nostack, preserves_flags)) }
    }
}
