//! Data and instruction cache maintenance by address (Arm ARM D7.5.9).

use super::barrier::{dsb_ish, isb};
use super::sysreg;
use core::arch::asm;

/// The smallest D-cache line size in bytes, from `CTR_EL0.DminLine` (log2 of words).
pub fn dcache_line() -> u64 {
    4 << ((sysreg::ctr_el0() >> 16) & 0xf)
}

/// Cleans `[start, start + len)` to the point of coherency (`DC CVAC` per line, `DSB ISH`),
/// so that an observer with caches off (a secondary CPU before its MMU is on, a guest with
/// its MMU off) sees the data.
pub fn clean_to_poc(start: u64, len: u64) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    let end = start.saturating_add(len);
    while a < end {
        // SAFETY: cleaning a line writes back dirty data and changes no value; the address
        // is mapped (identity) or the instruction is a no-op fault-free by D7.5.9.
        unsafe { asm!("dc cvac, {0}", in(reg) a, options(nostack, preserves_flags)) }
        a += line;
    }
    dsb_ish();
}

/// Cleans and invalidates `[start, start + len)` to the point of coherency (`DC CIVAC`).
pub fn clean_invalidate_to_poc(start: u64, len: u64) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    let end = start.saturating_add(len);
    while a < end {
        // SAFETY: clean+invalidate keeps the memory's value (dirty lines are written back).
        unsafe { asm!("dc civac, {0}", in(reg) a, options(nostack, preserves_flags)) }
        a += line;
    }
    dsb_ish();
}

/// Invalidates the whole I-cache to the point of unification, inner shareable
/// (`IC IALLUIS; DSB ISH; ISB`).
pub fn invalidate_icache_all() {
    // SAFETY: instruction-cache invalidation changes no data.
    unsafe { asm!("ic ialluis", options(nostack, preserves_flags)) }
    dsb_ish();
    isb();
}

/// Invalidates `[start, start + len)` to the point of coherency (`DC IVAC`) without cleaning:
/// for memory written with the data cache off, whose cached copies (if any) are stale.
/// `start` and `len` should be cache-line aligned: partial lines at the edges are cleaned and
/// invalidated (`DC CIVAC`) instead, so neighbouring data is not lost.
pub fn invalidate_to_poc(start: u64, len: u64) {
    let line = dcache_line();
    let end = start.saturating_add(len);
    let mut a = start & !(line - 1);
    while a < end {
        if a < start || a + line > end {
            // SAFETY: clean+invalidate keeps the memory's value.
            unsafe { asm!("dc civac, {0}", in(reg) a, options(nostack, preserves_flags)) }
        } else {
            // SAFETY: the caller states the lines' cached copies are stale (memory holds the
            // data); invalidating them loses nothing.
            unsafe { asm!("dc ivac, {0}", in(reg) a, options(nostack, preserves_flags)) }
        }
        a += line;
    }
    dsb_ish();
}
