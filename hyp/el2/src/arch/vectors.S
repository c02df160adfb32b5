// EL2 exception vectors (Arm ARM D1.3.1, "Exception vectors": 16 entries of 0x80 bytes,
// table aligned to 2 KiB). hyp's code runs on SP_EL0 (arch/entry.S), so its own exceptions
// arrive through the "current EL with SP_EL0" entries, and every exception is handled on the
// per-CPU exception stack in SP_EL2. Every entry saves a TrapFrame (trap.rs) there and calls
// el2_trap(frame, kind); if that returns, the frame (possibly changed) is restored and ERET
// resumes. Lower-EL entries (8-15) are guest exits while TPIDR_EL2 holds a guest context
// (arch/guest.S); without one they take the same path as the others. kind = source * 4 + type: source 0 current EL with SP_EL0, 1 current EL with
// SP_EL2, 2 lower EL AArch64, 3 lower EL AArch32; type 0 sync, 1 IRQ, 2 FIQ, 3 SError.
//
// There are five tables, identical but for what the lower-EL entries run first, before any
// branch: the Spectre mitigation arch/spectre.rs chose at boot for this CPU (spectre.rs
// decides, VBAR_EL2 selects; the unaffected path, el2_vectors, runs nothing extra):
//   el2_vectors           nothing
//   el2_vectors_bhb_loop  the Spectre-BHB branch loop, EL2_BHB_LOOP_K iterations
//   el2_vectors_clrbhb    CLRBHB
//   el2_vectors_fw_wa1    the firmware's SMCCC_ARCH_WORKAROUND_1 (Spectre v2)
//   el2_vectors_fw_wa3    the firmware's SMCCC_ARCH_WORKAROUND_3 (Spectre v2 and BHB)
// as KVM's __bp_harden_hyp_vecs do at the start of each hyp vector (arch/arm64/kvm/hyp/
// hyp-entry.S): every exit from a guest runs it before hyp executes an indirect branch.

.equ FRAME_SIZE, 288                // 31 GPRs, sp, elr, spsr, esr, far

.macro ventry kind
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       el2_trap_common
.endm

// A lower-EL entry. `mit` selects the mitigation (0 none, 1 BHB loop, 2 CLRBHB, 3 firmware
// WORKAROUND_1, 4 firmware WORKAROUND_3); it uses only x0-x3, saved on the exception stack.
.macro gentry kind, mit
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
.if \mit == 1
    // Linux arch/arm64/include/asm/assembler.h __mitigate_spectre_bhb_loop (used by
    // hyp-entry.S hyp_ventry): k taken branches overwrite the guest's branch history, then a
    // speculation barrier (`sb`; DSB NSH + ISB, its form without FEAT_SB) so nothing after
    // the loop runs ahead of it. k >= 1 (spectre.rs).
    adrp    x0, EL2_BHB_LOOP_K
    ldr     x0, [x0, :lo12:EL2_BHB_LOOP_K]
2:  b       . + 4
    subs    x0, x0, #1
    b.ne    2b
    dsb     nsh
    isb
.elseif \mit == 2
    // assembler.h mitigate_spectre_bhb_clear_insn: CLRBHB (HINT #22, `clearbhb`), then ISB.
    hint    #22
    isb
.elseif \mit >= 3
    // hyp-entry.S spectrev2_smccc_wa1_smc (WORKAROUND_3 in place of _1 when Spectre-BHB is
    // mitigated by firmware: proton-pack.c spectre_bhb_patch_wa3). From SMCCC 1.1 (DEN 0028)
    // a call preserves x4-x30, so only x0-x3 are saved around it, as there.
    stp     x2, x3, [sp, #-16]!
.if \mit == 3
    mov     w0, #0x80008000         // SMCCC_ARCH_WORKAROUND_1
.else
    mov     w0, #0x80003fff         // SMCCC_ARCH_WORKAROUND_3
.endif
    smc     #0
    ldp     x2, x3, [sp], #16
.endif
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

.macro vector_table name, mit
    .balign 0x800
.global \name
\name:
    ventry 0
    ventry 1
    ventry 2
    ventry 3
    ventry 4
    ventry 5
    ventry 6
    ventry 7
    gentry 8, \mit
    gentry 9, \mit
    gentry 10, \mit
    gentry 11, \mit
    gentry 12, \mit
    gentry 13, \mit
    gentry 14, \mit
    gentry 15, \mit
    .org    \name + 0x800           // every entry fits its 0x80 bytes
.endm

.section .text.vectors, "ax"
    vector_table el2_vectors, 0
    vector_table el2_vectors_bhb_loop, 1
    vector_table el2_vectors_clrbhb, 2
    vector_table el2_vectors_fw_wa1, 3
    vector_table el2_vectors_fw_wa3, 4

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
