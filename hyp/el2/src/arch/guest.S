// The world switch: entering a guest at EL1 and coming back from it.
//
// el2_guest_enter(ctx) saves hyp's callee-saved state (x19-x30, d8-d15, SP_EL0: hyp's code
// runs on SP_EL0) in ctx, loads the guest's GPRs, SP_EL0, FP/SIMD state, ELR_EL2 and
// SPSR_EL2 from ctx, and ERETs. Every exception from a lower EL while TPIDR_EL2 holds ctx
// (vectors.S, entries 8-15) lands in el2_guest_exit on the per-CPU exception stack (SP_EL2),
// which stores the guest's state and the syndrome registers back into ctx, restores hyp's
// state and returns from el2_guest_enter with x0 = the vector entry number. Exits are then
// handled on hyp's 192 KiB stack (SP_EL0), never on the 64 KiB exception stack.
//
// GuestRegs layout (arch/guest.rs; the offsets are asserted there):
//   0 x0..x30, 248 sp_el0, 256 elr, 264 spsr, 272 esr, 280 far, 288 hpfar,
//   296 host sp, 304 host x19..x30, 400 fpsr, 408 fpcr, 416 q0..q31, 928 host d8..d15.

.section .text.guest, "ax"
.global el2_guest_enter
el2_guest_enter:
    stp     x19, x20, [x0, #304]
    stp     x21, x22, [x0, #320]
    stp     x23, x24, [x0, #336]
    stp     x25, x26, [x0, #352]
    stp     x27, x28, [x0, #368]
    stp     x29, x30, [x0, #384]
    add     x1, x0, #928
    stp     d8, d9, [x1, #0]
    stp     d10, d11, [x1, #16]
    stp     d12, d13, [x1, #32]
    stp     d14, d15, [x1, #48]
    mov     x1, sp
    str     x1, [x0, #296]
    // The guest's FP/SIMD state (hyp's Rust code may use the registers between exits).
    add     x1, x0, #416
    ldp     q0, q1, [x1, #0]
    ldp     q2, q3, [x1, #32]
    ldp     q4, q5, [x1, #64]
    ldp     q6, q7, [x1, #96]
    ldp     q8, q9, [x1, #128]
    ldp     q10, q11, [x1, #160]
    ldp     q12, q13, [x1, #192]
    ldp     q14, q15, [x1, #224]
    ldp     q16, q17, [x1, #256]
    ldp     q18, q19, [x1, #288]
    ldp     q20, q21, [x1, #320]
    ldp     q22, q23, [x1, #352]
    ldp     q24, q25, [x1, #384]
    ldp     q26, q27, [x1, #416]
    ldp     q28, q29, [x1, #448]
    ldp     q30, q31, [x1, #480]
    ldp     x2, x3, [x0, #400]
    msr     fpsr, x2
    msr     fpcr, x3
    // From here on an exception from a lower EL is a guest exit for this ctx.
    msr     tpidr_el2, x0
    // Leave SP_EL0 (hyp's stack) for SP_EL2: MSR SP_EL0 is UNDEFINED while SPSel = 0
    // (Arm ARM C5.2.19), and the guest's SP_EL0 must be loaded.
    msr     spsel, #1
    ldr     x1, [x0, #248]
    msr     sp_el0, x1
    ldp     x2, x3, [x0, #256]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
    dsb     nsh                     // never executed: no speculation past the ERET
    isb

// Entered from vectors.S on SP_EL2 with the guest's x0/x1 pushed, x0 = ctx, x1 = entry.
.global el2_guest_exit
el2_guest_exit:
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x2, sp_el0
    str     x2, [x0, #248]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #256]
    mrs     x2, esr_el2
    mrs     x3, far_el2
    stp     x2, x3, [x0, #272]
    mrs     x2, hpfar_el2
    str     x2, [x0, #288]
    mrs     x2, fpsr
    mrs     x3, fpcr
    stp     x2, x3, [x0, #400]
    add     x2, x0, #416
    stp     q0, q1, [x2, #0]
    stp     q2, q3, [x2, #32]
    stp     q4, q5, [x2, #64]
    stp     q6, q7, [x2, #96]
    stp     q8, q9, [x2, #128]
    stp     q10, q11, [x2, #160]
    stp     q12, q13, [x2, #192]
    stp     q14, q15, [x2, #224]
    stp     q16, q17, [x2, #256]
    stp     q18, q19, [x2, #288]
    stp     q20, q21, [x2, #320]
    stp     q22, q23, [x2, #352]
    stp     q24, q25, [x2, #384]
    stp     q26, q27, [x2, #416]
    stp     q28, q29, [x2, #448]
    stp     q30, q31, [x2, #480]
    msr     tpidr_el2, xzr
    // Back to hyp's stack: SP_EL0, then SPSel = 0.
    ldr     x2, [x0, #296]
    msr     sp_el0, x2
    msr     spsel, #0
    ldp     x19, x20, [x0, #304]
    ldp     x21, x22, [x0, #320]
    ldp     x23, x24, [x0, #336]
    ldp     x25, x26, [x0, #352]
    ldp     x27, x28, [x0, #368]
    ldp     x29, x30, [x0, #384]
    add     x2, x0, #928
    ldp     d8, d9, [x2, #0]
    ldp     d10, d11, [x2, #16]
    ldp     d12, d13, [x2, #32]
    ldp     d14, d15, [x2, #48]
    mov     x0, x1
    ret
