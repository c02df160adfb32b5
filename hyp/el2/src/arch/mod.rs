//! Everything that is an instruction: system registers, barriers, TLB and cache maintenance,
//! the boot entry and the exception vectors. Compiled only for aarch64 (see `lib.rs`).
//!
//! Reads, barriers and TLB/cache maintenance are safe wrappers; writes to registers that
//! change translation or exception routing (`SCTLR_EL2`, `TCR_EL2`, `TTBR0_EL2`, `MAIR_EL2`,
//! `VBAR_EL2`, `HCR_EL2`) are `unsafe fn`.

pub mod barrier;
pub mod cache;
pub mod guest;
pub mod spectre;
pub mod sysreg;
pub mod tlb;
pub mod vsys;

// The arm64 Image header, primary/secondary entry and early register setup.
core::arch::global_asm!(include_str!("entry.S"));
// The EL2 exception vector table and trap frame save/restore.
core::arch::global_asm!(include_str!("vectors.S"));
// The world switch (guest entry and exit).
core::arch::global_asm!(include_str!("guest.S"));

/// Each CPU's stack area (must match `entry.S` and the linker script), from its base:
///
/// ```text
/// +0x00000  guard, 64 KiB, unmapped
/// +0x10000  exception stack (SP_EL2), 64 KiB
/// +0x20000  guard, 64 KiB, unmapped
/// +0x30000  hyp's stack (SP_EL0), 192 KiB
/// +0x60000  next CPU
/// ```
///
/// Guards are 64 KiB so they are whole pages at every granule. hyp's code runs on SP_EL0;
/// exceptions (including a stack overflow into the guard) run on SP_EL2.
pub const STACK_STRIDE: u64 = 0x6_0000;
/// The unmapped guard below each stack.
pub const STACK_GUARD: u64 = 0x1_0000;
/// The exception stack (SP_EL2): `[base + STACK_GUARD, base + EXC_STACK_TOP)`.
pub const EXC_STACK_TOP: u64 = 0x2_0000;
/// hyp's stack (SP_EL0): `[base + EXC_STACK_TOP + STACK_GUARD, base + STACK_STRIDE)`.
pub const MAIN_STACK_BASE: u64 = EXC_STACK_TOP + STACK_GUARD;

/// Linker-script symbols describing hyp's image (hyp/linker.ld).
mod syms {
    extern "C" {
        pub static __image_start: u8;
        pub static __text_end: u8;
        pub static __rodata_start: u8;
        pub static __rodata_end: u8;
        pub static __data_start: u8;
        pub static __bss_end: u8;
        pub static __stacks_start: u8;
        pub static __stacks_end: u8;
        pub static __image_end: u8;
    }
}

/// Addresses of hyp's own image sections (identity mapped: VA = PA).
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Start of the image (the Image header, then text).
    pub start: u64,
    /// End of text (start of rodata), 64 KiB aligned.
    pub text_end: u64,
    /// Start of rodata.
    pub rodata_start: u64,
    /// End of rodata (start of data), 64 KiB aligned.
    pub rodata_end: u64,
    /// Start of data.
    pub data_start: u64,
    /// End of bss.
    pub bss_end: u64,
    /// Start of the per-CPU stacks (first guard).
    pub stacks_start: u64,
    /// End of the stacks.
    pub stacks_end: u64,
    /// End of everything hyp's image occupies.
    pub end: u64,
}

/// The layout of the running image.
pub fn image_layout() -> ImageLayout {
    // Only the addresses of the linker symbols are taken; nothing is read through them.
    ImageLayout {
        start: (&raw const syms::__image_start) as u64,
        text_end: (&raw const syms::__text_end) as u64,
        rodata_start: (&raw const syms::__rodata_start) as u64,
        rodata_end: (&raw const syms::__rodata_end) as u64,
        data_start: (&raw const syms::__data_start) as u64,
        bss_end: (&raw const syms::__bss_end) as u64,
        stacks_start: (&raw const syms::__stacks_start) as u64,
        stacks_end: (&raw const syms::__stacks_end) as u64,
        end: (&raw const syms::__image_end) as u64,
    }
}

extern "C" {
    fn secondary_entry();
}

/// The physical address where a secondary CPU started by PSCI CPU_ON begins (x0 = its
/// logical index).
pub fn secondary_entry_point() -> u64 {
    secondary_entry as *const () as u64
}
