//! System registers. Reads are safe; writes that change translation, caching or exception
//! routing are `unsafe fn` with their contract.

use core::arch::asm;

macro_rules! read {
    ($(#[$m:meta])* $name:ident, $reg:literal) => {
        $(#[$m])*
        #[inline(always)]
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading a system register has no side effect on memory.
            unsafe { asm!(concat!("mrs {0}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) }
            v
        }
    };
}

read!(/// `CurrentEL`; the EL is bits \[3:2\].
    current_el_raw, "CurrentEL");
read!(/// `MPIDR_EL1`.
    mpidr_el1, "mpidr_el1");
read!(/// `ID_AA64MMFR0_EL1`.
    id_aa64mmfr0_el1, "id_aa64mmfr0_el1");
read!(/// `ID_AA64MMFR1_EL1`.
    id_aa64mmfr1_el1, "id_aa64mmfr1_el1");
read!(/// `ID_AA64MMFR2_EL1`.
    id_aa64mmfr2_el1, "id_aa64mmfr2_el1");
read!(/// `CTR_EL0`.
    ctr_el0, "ctr_el0");
read!(/// `ESR_EL2`.
    esr_el2, "esr_el2");
read!(/// `ELR_EL2`.
    elr_el2, "elr_el2");
read!(/// `FAR_EL2`.
    far_el2, "far_el2");
read!(/// `SCTLR_EL2`.
    sctlr_el2, "sctlr_el2");
read!(/// `TCR_EL2`.
    tcr_el2, "tcr_el2");
read!(/// `TTBR0_EL2`.
    ttbr0_el2, "ttbr0_el2");
read!(/// `MAIR_EL2`.
    mair_el2, "mair_el2");
read!(/// `HCR_EL2`.
    hcr_el2, "hcr_el2");
read!(/// `VBAR_EL2`.
    vbar_el2, "vbar_el2");

/// The current exception level (0..=3).
pub fn current_el() -> u8 {
    ((current_el_raw() >> 2) & 3) as u8
}

/// The logical affinity of this CPU: `MPIDR_EL1` Aff3..Aff0 (bits \[39:32\], \[23:0\]), the
/// value the device tree's `cpu` `reg` holds.
pub fn mpidr_affinity() -> u64 {
    mpidr_el1() & 0xff_00ff_ffff
}

macro_rules! write_unsafe {
    ($(#[$m:meta])* $name:ident, $reg:literal) => {
        $(#[$m])*
        #[inline(always)]
        pub unsafe fn $name(v: u64) {
            // SAFETY: the caller upholds this function's contract.
            unsafe { asm!(concat!("msr ", $reg, ", {0}"), in(reg) v, options(nostack, preserves_flags)) }
        }
    };
}

write_unsafe!(
    /// Writes `SCTLR_EL2`.
    ///
    /// # Safety
    /// Turning translation or caches on or off changes how every address is interpreted:
    /// the tables in `TTBR0_EL2` must map the running code, stack and data at their current
    /// addresses with the attributes they need, and an `ISB` must follow.
    set_sctlr_el2, "sctlr_el2");
write_unsafe!(
    /// Writes `TCR_EL2`.
    ///
    /// # Safety
    /// With the MMU on, the new value must describe the live tables; the caller must
    /// invalidate the TLB and `ISB` as the Arm ARM requires.
    set_tcr_el2, "tcr_el2");
write_unsafe!(
    /// Writes `TTBR0_EL2`.
    ///
    /// # Safety
    /// With the MMU on, the new root must map the running code, stack and data; it must
    /// stay allocated while in use.
    set_ttbr0_el2, "ttbr0_el2");
write_unsafe!(
    /// Writes `MAIR_EL2`.
    ///
    /// # Safety
    /// With the MMU on, changing an attribute index that live descriptors use changes the
    /// memory type of those pages.
    set_mair_el2, "mair_el2");
write_unsafe!(
    /// Writes `VBAR_EL2`.
    ///
    /// # Safety
    /// The address must be a 2 KiB aligned, mapped, executable vector table.
    set_vbar_el2, "vbar_el2");
write_unsafe!(
    /// Writes `HCR_EL2`.
    ///
    /// # Safety
    /// Changes how EL1/EL0 execute and which of their exceptions trap to EL2; the EL2
    /// vectors must handle what the new value routes there.
    set_hcr_el2, "hcr_el2");

read!(/// `VTTBR_EL2`.
    vttbr_el2, "vttbr_el2");

write_unsafe!(
    /// Writes `VTTBR_EL2`.
    ///
    /// # Safety
    /// While a guest runs (HCR_EL2.VM = 1 and EL1 is entered), the root must be a live stage-2
    /// table of that VM; outside guest execution only the VMID matters (TLB maintenance).
    set_vttbr_el2, "vttbr_el2");

/// `CNTPCT_EL0` (after an `ISB`, so it is not read early) and `CNTFRQ_EL0` (at least 1).
pub fn counter() -> (u64, u64) {
    let (cnt, freq): (u64, u64);
    // SAFETY: reading the generic timer's counter and frequency has no side effect.
    unsafe {
        asm!(
            "isb",
            "mrs {0}, cntpct_el0",
            "mrs {1}, cntfrq_el0",
            out(reg) cnt,
            out(reg) freq,
            options(nomem, nostack, preserves_flags)
        );
    }
    (cnt, freq.max(1))
}
