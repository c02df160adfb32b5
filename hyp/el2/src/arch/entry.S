// hyp's entry: the arm64 Image header (Documentation/arch/arm64/booting.rst), the primary
// CPU's entry from the loader, and the secondary CPUs' entry from PSCI CPU_ON.
//
// The primary enters with the MMU and D-cache off, x0 = physical address of the device tree,
// x1..x3 = 0, at EL2 (QEMU -M virt,virtualization=on). Everything here runs at the linked
// address (0x40200000: the loader places the image at a 2 MiB aligned base + text_offset).

.equ STACK_STRIDE, 0x60000          // per CPU, arch/mod.rs: guard, exception stack, guard, stack
.equ EXC_STACK_TOP, 0x20000         // SP_EL2: exceptions (64 KiB above a 64 KiB guard)
.equ MAIN_STACK_TOP, 0x60000        // SP_EL0: hyp's code (192 KiB above a 64 KiB guard)
.equ SCTLR_EL2_MMU_OFF, 0x30c50830  // RES1 bits 4,5,11,16,18,22,23,28,29 (HCR_EL2.E2H=0); M,C,I,EE=0;
                                    // DSSBS (44) = 0: exceptions enter EL2 with PSTATE.SSBS = 0
.equ HCR_EL2_BOOT, (1 << 31)        // RW: EL1 is AArch64; everything else 0 (no traps yet)
.equ CPTR_EL2_BOOT, 0x32ff          // RES1 bits 13,12,9,7:0; TFP=0 and TZ=0: FP/SIMD not trapped
.equ CPACR_EL1_FPEN, (3 << 20)      // FPEN=0b11: no FP/SIMD traps at EL1/EL0

.section .text.head, "ax"
.global _start
_start:
    // Image header, 64 bytes.
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0x200000                // text_offset: loaded at a 2 MiB aligned base + 2 MiB
    .quad   __image_size            // image_size: everything up to the end of the stacks
    .quad   0                       // flags: little-endian, page size unspecified, base near DRAM start
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

.section .text.boot, "ax"
primary_entry:
    mov     x19, x0                 // device tree
    // We only work at the linked address (static relocation model).
    adr     x1, _start
    ldr     x2, =_start
    cmp     x1, x2
    b.ne    park
    mrs     x20, CurrentEL
    lsr     x20, x20, #2
    cmp     x20, #2
    b.ne    not_el2

    bl      el2_regs_init
    bl      clear_bss
    mov     x0, #0
    bl      set_stacks
    mov     x0, x19
    bl      el2_primary_main        // never returns
    b       park

// Entered at EL1 or EL3: say so through the UART, then power off (Rust does both).
not_el2:
    cmp     x20, #1
    b.ne    1f
    mov     x1, #CPACR_EL1_FPEN
    msr     cpacr_el1, x1
    isb
1:  bl      clear_bss
    mov     x0, #0
    bl      set_stacks
    mov     x0, x19
    mov     x1, x20
    bl      el2_wrong_el            // never returns
    b       park

// PSCI CPU_ON target: x0 = context_id = the CPU's logical index. MMU and caches off.
.global secondary_entry
secondary_entry:
    mov     x19, x0
    bl      el2_regs_init
    // Turn on the MMU with the primary's tables (SECONDARY_BOOT: mair, tcr, ttbr0, sctlr;
    // the primary cleaned it to the point of coherency before CPU_ON).
    adrp    x1, SECONDARY_BOOT
    add     x1, x1, :lo12:SECONDARY_BOOT
    ldp     x2, x3, [x1]
    ldp     x4, x5, [x1, #16]
    cbz     x5, 2f                  // sctlr == 0: the primary runs without its MMU
    msr     mair_el2, x2
    msr     tcr_el2, x3
    msr     ttbr0_el2, x4
    isb
    tlbi    alle2                   // no stale entries from before reset
    dsb     nsh
    isb
    msr     sctlr_el2, x5
    isb
2:  mov     x0, x19
    bl      set_stacks
    mov     x0, x19
    bl      el2_secondary_main      // never returns
    b       park

// Known EL2 state: MMU/caches off, little-endian, EL1 AArch64 with no traps, FP/SIMD not
// trapped, our vectors, SP_EL2 selected. Clobbers x1.
el2_regs_init:
    ldr     x1, =SCTLR_EL2_MMU_OFF
    msr     sctlr_el2, x1
    isb
    ldr     x1, =HCR_EL2_BOOT
    msr     hcr_el2, x1
    ldr     x1, =CPTR_EL2_BOOT
    msr     cptr_el2, x1
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    msr     tpidr_el2, xzr          // no guest context: lower-EL exceptions are not exits
    msr     spsel, #1
    isb
    ret

// Zeroes [__bss_start, __bss_end) (16-byte aligned by the linker script). Clobbers x1, x2.
clear_bss:
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
3:  cmp     x1, x2
    b.hs    4f
    stp     xzr, xzr, [x1], #16
    b       3b
4:  ret

// x0 = CPU index: points SP_ELx (the exception stack) and SP_EL0 (hyp's stack) at the top
// of that CPU's two stacks and selects SP_EL0. hyp's code runs on SP_EL0, so an exception
// (even a stack overflow into the guard page) is handled on the separate SP_ELx stack.
// Clobbers x0..x2.
set_stacks:
    msr     spsel, #1
    ldr     x1, =STACK_STRIDE
    mul     x0, x0, x1
    adrp    x2, __stacks_start
    add     x2, x2, :lo12:__stacks_start
    add     x0, x0, x2
    ldr     x1, =EXC_STACK_TOP
    add     x1, x0, x1
    mov     sp, x1
    ldr     x1, =MAIN_STACK_TOP
    add     x1, x0, x1
    msr     sp_el0, x1
    msr     spsel, #0
    ret

park:
    wfe
    b       park

.ltorg
