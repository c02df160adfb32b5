// EL2 exception vectors (Arm ARM D1.3.1, "Exception vectors": 16 entries of 0x80 bytes,
// table aligned to 2 KiB). hyp's code runs on SP_EL0 (arch/entry.S), so its own exceptions
// arrive through the "current EL with SP_EL0" entries, and every exception is handled on the
// per-CPU exception stack in SP_EL2. Every entry saves a TrapFrame (trap.rs) there and calls
// el2_trap(frame, kind); if that returns, the frame (possibly changed) is restored and ERET
// resumes. Lower-EL entries (8-15) are guest exits while TPIDR_EL2 holds a guest context
// (arch/guest.S); without one they take the same path as the others. kind = source * 4 + type: source 0 current EL with SP_EL0, 1 current EL with
// SP_EL2, 2 lower EL AArch64, 3 lower EL AArch32; type 0 sync, 1 IRQ, 2 FIQ, 3 SError.

.equ FRAME_SIZE, 288                // 31 GPRs, sp, elr, spsr, esr, far

.macro ventry kind
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       el2_trap_common
.endm

.macro gentry kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el2
    cbz     x0, 1f
    mov     x1, #\kind
    b       el2_guest_exit          // a guest exit (arch/guest.S)
1:  ldp     x0, x1, [sp], #16
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       el2_trap_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    ventry 0
    ventry 1
    ventry 2
    ventry 3
    ventry 4
    ventry 5
    ventry 6
    ventry 7
    gentry 8
    gentry 9
    gentry 10
    gentry 11
    gentry 12
    gentry 13
    gentry 14
    gentry 15

el2_trap_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x1, sp_el0
    stp     x30, x1, [sp, #240]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [sp, #256]
    mrs     x2, esr_el2
    mrs     x3, far_el2
    stp     x2, x3, [sp, #272]
    mov     x1, x0
    mov     x0, sp
    bl      el2_trap
    ldp     x2, x3, [sp, #256]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldr     x2, [sp, #248]
    msr     sp_el0, x2
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #FRAME_SIZE
    eret
