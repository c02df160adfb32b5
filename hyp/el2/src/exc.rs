//! Pure rules for what hyp does to a guest's EL1 state: taking an exception to the guest
//! (vector offset, PSTATE, syndrome), reading its virtual timer's output, and addressing an
//! SGI to a physical CPU. Tested on the host; the run loop in `hyp` applies them.

/// `SPSR` for a vCPU's first instruction and for every exception hyp takes to its EL1:
/// M\[3:0\] = 0b0101 (EL1h), D, A, I, F masked (Arm ARM D1.3.2; booting.rst for entry).
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// `ESR_EL1` for an Undefined Instruction exception: EC 0x00, IL 1 (32-bit instruction).
pub const ESR_UNDEF: u64 = 1 << 25;

/// The offset from `VBAR_EL1` of the synchronous exception vector for an exception taken to
/// EL1 from the PSTATE in `spsr` (Arm ARM D1.3.1): current EL with SP_EL0 0x000, current EL
/// with SP_ELx 0x200, lower EL AArch64 0x400, lower EL AArch32 0x600.
pub fn sync_vector_offset(spsr: u64) -> u64 {
    if spsr & 0x10 != 0 {
        return 0x600; // M[4] = 1: AArch32 (necessarily EL0 under an AArch64 EL1)
    }
    match spsr & 0xf {
        0b0101 => 0x200, // EL1h
        0b0100 => 0x000, // EL1t
        _ => 0x400,      // EL0t
    }
}

/// Whether `spsr` describes EL0 (AArch64 EL0t or any AArch32 mode, which is EL0 here).
pub fn at_el0(spsr: u64) -> bool {
    spsr & 0x10 != 0 || spsr & 0xc == 0
}

/// PSTATE after taking an exception to EL1 (as SPSR_EL2 for the ERET into it): EL1h with
/// D, A, I, F masked; PAN set when `SCTLR_EL1.SPAN` (bit 23) is 0, otherwise kept from the
/// interrupted context (Arm ARM D1.3.2, "PSTATE on taking an exception").
pub fn exception_pstate(old_spsr: u64, sctlr_el1: u64) -> u64 {
    const PAN: u64 = 1 << 22;
    let pan = if sctlr_el1 & (1 << 23) == 0 {
        PAN
    } else {
        old_spsr & PAN
    };
    SPSR_EL1H_MASKED | pan
}

/// `ESR_EL1` for a synchronous external abort hyp injects: EC 0x24/0x25 (data abort from a
/// lower/the same EL) or 0x20/0x21 (instruction abort), IL 1, FSC 0b010000 (synchronous
/// external abort, not on a table walk), WnR (bit 6) for a data write.
pub fn external_abort_esr(data: bool, from_el0: bool, write: bool) -> u64 {
    let ec: u64 = match (data, from_el0) {
        (true, false) => 0x25,
        (true, true) => 0x24,
        (false, false) => 0x21,
        (false, true) => 0x20,
    };
    let wnr = if data && write { 1 << 6 } else { 0 };
    (ec << 26) | (1 << 25) | wnr | 0x10
}

/// Whether the virtual timer's interrupt output is asserted, from `CNTV_CTL_EL0`: ENABLE (bit
/// 0) set, IMASK (bit 1) clear, ISTATUS (bit 2) set (Arm ARM D12.8.26).
pub fn timer_asserted(cntv_ctl: u64) -> bool {
    cntv_ctl & 0b111 == 0b101
}

/// The `ICC_SGI1R_EL1` value that sends SGI `intid` (0-15) to the one CPU with MPIDR
/// affinity `mpidr` (Aff3 in bits \[39:32\], Aff2..Aff0 in \[23:0\]), or `None` when its Aff0
/// is above 15 (the target list has 16 bits and hyp uses no range selector) or `intid` is not
/// an SGI. Fields (IHI 0069 §12.2.23): TargetList \[15:0\], Aff1 \[23:16\], INTID \[27:24\],
/// Aff2 \[39:32\], Aff3 \[55:48\].
pub fn sgi1r(mpidr: u64, intid: u32) -> Option<u64> {
    let aff0 = mpidr & 0xff;
    if aff0 >= 16 || intid >= 16 {
        return None;
    }
    Some(
        ((mpidr >> 32) & 0xff) << 48
            | ((mpidr >> 16) & 0xff) << 32
            | ((mpidr >> 8) & 0xff) << 16
            | u64::from(intid) << 24
            | 1 << aff0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_offsets_follow_the_interrupted_mode() {
        assert_eq!(sync_vector_offset(0x3c5), 0x200); // EL1h
        assert_eq!(sync_vector_offset(0x3c4), 0x000); // EL1t
        assert_eq!(sync_vector_offset(0x0), 0x400); // EL0t
        assert_eq!(sync_vector_offset(0x80000000), 0x400); // EL0t with N set
        assert_eq!(sync_vector_offset(0x10), 0x600); // AArch32 User
        assert_eq!(sync_vector_offset(0x1f), 0x600); // AArch32 System
    }

    #[test]
    fn el0_detection() {
        assert!(at_el0(0x0));
        assert!(at_el0(0x10));
        assert!(!at_el0(0x3c5));
        assert!(!at_el0(0x4));
    }

    #[test]
    fn pstate_masks_everything_and_sets_pan_unless_span() {
        // SPAN = 0: PAN is set on entry.
        assert_eq!(exception_pstate(0, 0), 0x3c5 | 1 << 22);
        // SPAN = 1: PAN is kept from the interrupted context.
        assert_eq!(exception_pstate(0, 1 << 23), 0x3c5);
        assert_eq!(exception_pstate(1 << 22, 1 << 23), 0x3c5 | 1 << 22);
        // Nothing else of the old PSTATE survives (flags, SS, IL).
        assert_eq!(
            exception_pstate(0xf000_0000 | 1 << 21 | 1 << 20, 1 << 23),
            0x3c5
        );
    }

    #[test]
    fn external_abort_syndromes() {
        // The values Linux's do_sea sees: EC, IL, FSC 0x10.
        assert_eq!(external_abort_esr(true, false, false), 0x9600_0010);
        assert_eq!(external_abort_esr(true, false, true), 0x9600_0050);
        assert_eq!(external_abort_esr(true, true, false), 0x9200_0010);
        assert_eq!(external_abort_esr(false, false, true), 0x8600_0010);
        assert_eq!(external_abort_esr(false, true, false), 0x8200_0010);
        assert_eq!(ESR_UNDEF >> 26, 0);
        assert_eq!(ESR_UNDEF, 0x0200_0000);
    }

    #[test]
    fn timer_output() {
        assert!(timer_asserted(0b101));
        assert!(!timer_asserted(0b111)); // masked
        assert!(!timer_asserted(0b001)); // not expired
        assert!(!timer_asserted(0b100)); // disabled
        assert!(timer_asserted(0b101 | 1 << 8)); // bits above are ignored
    }

    #[test]
    fn sgi_targets() {
        // CPU 0 (QEMU virt: Aff0 = 0), SGI 8.
        assert_eq!(sgi1r(0, 8), Some(8 << 24 | 1));
        // Aff3.Aff2.Aff1.Aff0 = 1.2.3.4, SGI 15.
        let v = sgi1r(1 << 32 | 2 << 16 | 3 << 8 | 4, 15).unwrap();
        assert_eq!(v & 0xffff, 1 << 4);
        assert_eq!((v >> 16) & 0xff, 3);
        assert_eq!((v >> 24) & 0xf, 15);
        assert_eq!((v >> 32) & 0xff, 2);
        assert_eq!((v >> 48) & 0xff, 1);
        assert_eq!(v & (1 << 40), 0); // IRM = 0: only the target list
        assert_eq!(sgi1r(16, 0), None);
        assert_eq!(sgi1r(0, 16), None);
    }
}
