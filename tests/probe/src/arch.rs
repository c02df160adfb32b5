//! Everything the probe does with assembly: the Image header and entry, the EL1 exception
//! vectors, and small wrappers for the instructions the tests need.
//!
//! The probe runs at EL1 with its MMU off (SCTLR_EL1.M = 0, as hyp enters it): data accesses
//! are Device-nGnRnE, so the probe makes no unaligned accesses (the target's `+strict-align`)
//! and keeps one vCPU per VM (no exclusives on Device memory).

use core::arch::{asm, global_asm};

global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    // arm64 Image header (Documentation/arch/arm64/booting.rst), 64 bytes.
    b       1f                      // code0
    .long   0                       // code1
    .quad   0                       // text_offset: at the 2 MiB aligned base itself
    .quad   __image_size            // image_size: up to the end of the stacks
    .quad   0                       // flags: little-endian, page size unspecified (0)
    .quad   0
    .quad   0
    .quad   0
    .ascii  "ARM\x64"
    .long   0
1:  mov     x19, x0                 // the device tree
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    str     xzr, [x1], #8
    b       2b
3:  mov     x0, #3 << 20            // CPACR_EL1.FPEN = 0b11: FP/SIMD at EL1 and EL0
    msr     cpacr_el1, x0
    adrp    x0, probe_vectors
    add     x0, x0, :lo12:probe_vectors
    msr     vbar_el1, x0
    isb
    adrp    x0, __stacks_start
    add     x0, x0, :lo12:__stacks_start
    add     sp, x0, #0x10000        // vCPU 0's stack: the first 64 KiB
    mov     x0, x19
    bl      probe_main
4:  wfi
    b       4b

// A secondary vCPU, started by PSCI CPU_ON with x0 = its index (the context id): MMU off,
// its own 64 KiB stack, then Rust.
.global probe_secondary_entry
probe_secondary_entry:
    mov     x19, x0
    mov     x1, #3 << 20            // CPACR_EL1.FPEN
    msr     cpacr_el1, x1
    adrp    x1, probe_vectors
    add     x1, x1, :lo12:probe_vectors
    msr     vbar_el1, x1
    isb
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x19, #1
    lsl     x2, x2, #16
    add     sp, x1, x2
    mov     x0, x19
    bl      probe_secondary_main
5:  wfi
    b       5b

// EL1 exception vectors (Arm ARM D1.3.1): only "current EL with SP_ELx" is used.
.section .text.vectors, "ax"
.balign 0x800
.global probe_vectors
probe_vectors:
    .balign 0x80
    b       .                       // current EL, SP_EL0: unused
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80                    // current EL, SP_ELx: synchronous
    b       probe_sync_entry
    .balign 0x80                    // IRQ
    b       .
    .balign 0x80                    // FIQ
    b       .
    .balign 0x80                    // SError
    b       .
    .balign 0x80                    // lower EL (unused: no EL0)
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .

.text
probe_sync_entry:
    sub     sp, sp, #256
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x30, [sp, #144]
    mrs     x0, esr_el1
    mrs     x1, elr_el1
    mrs     x2, far_el1
    bl      probe_sync_exception    // returns the address to resume at
    msr     elr_el1, x0
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x30, [sp, #144]
    add     sp, sp, #256
    eret
"#
);

/// An SMCCC call through HVC (`smc = false`) or SMC with x0..x7 = `args`; returns x0..x3.
pub fn smccc(smc: bool, args: [u64; 8]) -> [u64; 4] {
    let (mut r0, mut r1, mut r2, mut r3) = (args[0], args[1], args[2], args[3]);
    // SAFETY: an SMCCC call returns to the next instruction with x0-x17 possibly changed
    // (SMCCC 1.1+ preserves x4-x17; the older convention may clobber them, so all are
    // declared clobbered); it touches no memory of ours.
    unsafe {
        if smc {
            asm!("smc #0",
                inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
                inout("x4") args[4] => _, inout("x5") args[5] => _,
                inout("x6") args[6] => _, inout("x7") args[7] => _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack));
        } else {
            asm!("hvc #0",
                inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
                inout("x4") args[4] => _, inout("x5") args[5] => _,
                inout("x6") args[6] => _, inout("x7") args[7] => _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack));
        }
    }
    [r0, r1, r2, r3]
}

/// `HVC #imm` for a few non-zero immediates (an HVC's immediate is part of the instruction).
pub fn hvc_imm(which: u32, x0: u64) -> u64 {
    let mut r = x0;
    // SAFETY: as `smccc`: a hypervisor call that returns to the next instruction.
    unsafe {
        match which % 3 {
            0 => asm!("hvc #1", inout("x0") r, out("x1") _, out("x2") _, out("x3") _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _, options(nostack)),
            1 => asm!("hvc #0x4242", inout("x0") r, out("x1") _, out("x2") _, out("x3") _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _, options(nostack)),
            _ => asm!("hvc #0xffff", inout("x0") r, out("x1") _, out("x2") _, out("x3") _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _, options(nostack)),
        }
    }
    r
}

/// The virtual counter (`CNTVCT_EL0`).
pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: reading the virtual counter has no side effects.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// The counter frequency (`CNTFRQ_EL0`), in Hz.
pub fn counter_hz() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v.max(1)
}

/// A 32-bit volatile store (MMIO or RAM).
///
/// # Safety
/// `addr` must be 4-byte aligned; a store there must not break the probe (its own code, data
/// and stacks are off limits), and an abort it may raise must be expected (`rt::expect`).
pub unsafe fn write32(addr: u64, v: u32) {
    // SAFETY: the caller's contract.
    unsafe { (addr as *mut u32).write_volatile(v) }
}

/// A 32-bit volatile load.
///
/// # Safety
/// As [`write32`].
pub unsafe fn read32(addr: u64) -> u32 {
    // SAFETY: the caller's contract.
    unsafe { (addr as *const u32).read_volatile() }
}

/// A volatile access of `size` bytes (1, 2, 4, 8): a store of `value` or a load, returning
/// what was loaded (0 for a store).
///
/// # Safety
/// As [`write32`], for `size` bytes at `addr` (aligned to `size`).
pub unsafe fn access(addr: u64, size: u32, write: bool, value: u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe {
        match (size, write) {
            (1, true) => (addr as *mut u8).write_volatile(value as u8),
            (2, true) => (addr as *mut u16).write_volatile(value as u16),
            (4, true) => (addr as *mut u32).write_volatile(value as u32),
            (8, true) => (addr as *mut u64).write_volatile(value),
            (1, false) => return u64::from((addr as *const u8).read_volatile()),
            (2, false) => return u64::from((addr as *const u16).read_volatile()),
            (4, false) => return u64::from((addr as *const u32).read_volatile()),
            _ => return (addr as *const u64).read_volatile(),
        }
    }
    0
}

/// `LDP` of two 64-bit registers from `addr` (an access hyp cannot decode from ESR: ISV = 0).
///
/// # Safety
/// As [`write32`], for 16 bytes at `addr`.
pub unsafe fn ldp(addr: u64) -> u64 {
    let (a, b): (u64, u64);
    // SAFETY: the caller's contract.
    unsafe { asm!("ldp {}, {}, [{}]", out(reg) a, out(reg) b, in(reg) addr, options(nostack)) };
    a ^ b
}

/// `ID_AA64MMFR0_EL1` as hyp shows it to the guest.
pub fn id_aa64mmfr0() -> u64 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects (hyp traps and answers it).
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// Turns on the EL1 MMU and caches with `mair`, `tcr` and the root table `ttbr0` (Arm ARM
/// D8.2: the tables, MAIR and TCR must be in place, and the TLB free of stale entries, before
/// SCTLR_EL1.M is set).
///
/// # Safety
/// The tables at `ttbr0` must identity-map everything the probe will touch (code, data,
/// stacks, devices) with the attributes of `mair`, and be in memory (written with the caches
/// off or cleaned).
pub unsafe fn enable_mmu(mair: u64, tcr: u64, ttbr0: u64) {
    // SAFETY: the caller's contract; the sequence is the architectural one.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {t}, sctlr_el1",
            "orr {t}, {t}, #(1 << 0)",   // M
            "orr {t}, {t}, #(1 << 2)",   // C
            "orr {t}, {t}, #(1 << 12)",  // I
            "msr sctlr_el1, {t}",
            "isb",
            mair = in(reg) mair,
            tcr = in(reg) tcr,
            ttbr = in(reg) ttbr0,
            t = out(reg) _,
            options(nostack)
        )
    };
}

/// `AT S1E1R` of `va`, then `PAR_EL1` (bit 0 = F: the translation faulted).
pub fn at_s1e1r(va: u64) -> u64 {
    let par: u64;
    // SAFETY: address translation writes only PAR_EL1.
    unsafe {
        asm!("at s1e1r, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par,
            options(nostack))
    };
    par
}

/// `SCTLR_EL1`.
pub fn sctlr_el1() -> u64 {
    let v: u64;
    // SAFETY: reading SCTLR_EL1 has no side effects.
    unsafe { asm!("mrs {}, sctlr_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// The address of the secondary vCPUs' entry point (for PSCI CPU_ON).
pub fn secondary_entry() -> u64 {
    extern "C" {
        fn probe_secondary_entry();
    }
    probe_secondary_entry as *const () as u64
}

/// `TLBI VMALLE1` and the barriers that complete it (`DSB NSH; ISB`): this vCPU forgets its
/// stage-1 translations and sees every table store made before.
pub fn tlbi_vmalle1() {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack)
        )
    };
}
