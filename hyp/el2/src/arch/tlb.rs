//! EL2 TLB maintenance (Arm ARM D8.13).

use super::barrier::{dsb_ish, dsb_ishst, dsb_nsh, isb};
use core::arch::asm;

/// Invalidates every EL2 TLB entry on this CPU: `DSB ISHST; TLBI ALLE2; DSB NSH; ISB`.
pub fn flush_el2_local() {
    dsb_ishst();
    // SAFETY: invalidating TLB entries cannot break memory safety; the tables stay valid.
    unsafe { asm!("tlbi alle2", options(nostack, preserves_flags)) }
    dsb_nsh();
    isb();
}

/// Invalidates every EL2 TLB entry in the inner-shareable domain:
/// `DSB ISHST; TLBI ALLE2IS; DSB ISH; ISB`.
pub fn flush_el2_all() {
    dsb_ishst();
    // SAFETY: invalidating TLB entries cannot break memory safety; the tables stay valid.
    unsafe { asm!("tlbi alle2is", options(nostack, preserves_flags)) }
    dsb_ish();
    isb();
}

/// Invalidates the EL2 entries for the page holding `va` in the inner-shareable domain.
/// The operand is VA\[55:12\] in bits \[43:0\] for every granule (Arm ARM D8.13.5, "TLBI VAE2IS").
pub fn flush_el2_va(va: u64) {
    dsb_ishst();
    let op = (va >> 12) & ((1 << 44) - 1);
    // SAFETY: invalidating TLB entries cannot break memory safety; the tables stay valid.
    unsafe { asm!("tlbi vae2is, {0}", in(reg) op, options(nostack, preserves_flags)) }
    dsb_ish();
    isb();
}

/// `TLBI IPAS2E1IS` for the page holding `ipa`, then `DSB ISH; TLBI VMALLE1IS; DSB ISH; ISB`
/// for the VMID currently in `VTTBR_EL2` (an IPA-only invalidate does not remove combined
/// stage-1+2 entries). The operand is IPA\[55:12\] for every granule.
pub fn flush_s2_ipa(ipa: u64) {
    dsb_ishst();
    let op = (ipa >> 12) & ((1 << 44) - 1);
    // SAFETY: invalidating TLB entries cannot break memory safety.
    unsafe {
        asm!("tlbi ipas2e1is, {0}", in(reg) op, options(nostack, preserves_flags));
    }
    dsb_ish();
    // SAFETY: as above.
    unsafe { asm!("tlbi vmalle1is", options(nostack, preserves_flags)) }
    dsb_ish();
    isb();
}

/// `TLBI VMALLS12E1IS` for the VMID currently in `VTTBR_EL2`, then `DSB ISH; ISB`.
pub fn flush_s12_vmid() {
    dsb_ishst();
    // SAFETY: invalidating TLB entries cannot break memory safety.
    unsafe { asm!("tlbi vmalls12e1is", options(nostack, preserves_flags)) }
    dsb_ish();
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
