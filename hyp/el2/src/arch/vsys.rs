//! System registers of virtualization, the GICv3 CPU interface and the guest's EL1 state
//! that the VM run loop reads and writes.
//!
//! Reads are safe (reading `ICC_IAR1_EL1` acknowledges an interrupt, which is a change of
//! GIC state, not of memory). Writes are `unsafe fn`: each changes how a guest runs, what it
//! sees or how interrupts reach this CPU.

use crate::exc::El1Reg;
use core::arch::asm;

macro_rules! rw {
    ($(#[$m:meta])* $get:ident, $set:ident, $reg:literal) => {
        $(#[$m])*
        #[inline(always)]
        pub fn $get() -> u64 {
            let v: u64;
            // SAFETY: reading this system register has no effect on memory.
            unsafe { asm!(concat!("mrs {0}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) }
            v
        }
        $(#[$m])*
        ///
        /// # Safety
        /// Changes how this CPU's guest runs or how interrupts reach this CPU: the caller owns
        /// this CPU's virtualization state and keeps it consistent with the VM it runs.
        #[inline(always)]
        pub unsafe fn $set(v: u64) {
            // SAFETY: the caller upholds the contract above.
            unsafe { asm!(concat!("msr ", $reg, ", {0}"), in(reg) v, options(nostack, preserves_flags)) }
        }
    };
}

macro_rules! ro {
    ($(#[$m:meta])* $get:ident, $reg:literal) => {
        $(#[$m])*
        #[inline(always)]
        pub fn $get() -> u64 {
            let v: u64;
            // SAFETY: reading this system register has no effect on memory.
            unsafe { asm!(concat!("mrs {0}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) }
            v
        }
    };
}

macro_rules! wo {
    ($(#[$m:meta])* $set:ident, $reg:literal) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Changes interrupt state of this CPU or others: the caller owns the GIC.
        #[inline(always)]
        pub unsafe fn $set(v: u64) {
            // SAFETY: the caller upholds the contract above.
            unsafe { asm!(concat!("msr ", $reg, ", {0}"), in(reg) v, options(nostack, preserves_flags)) }
        }
    };
}

rw!(/// `VTCR_EL2`.
    vtcr_el2, set_vtcr_el2, "vtcr_el2");
rw!(/// `VPIDR_EL2` (what the guest reads as `MIDR_EL1`).
    vpidr_el2, set_vpidr_el2, "vpidr_el2");
rw!(/// `VMPIDR_EL2` (what the guest reads as `MPIDR_EL1`).
    vmpidr_el2, set_vmpidr_el2, "vmpidr_el2");
rw!(/// `CNTHCTL_EL2`.
    cnthctl_el2, set_cnthctl_el2, "cnthctl_el2");
rw!(/// `CNTVOFF_EL2`.
    cntvoff_el2, set_cntvoff_el2, "cntvoff_el2");
rw!(/// `MDCR_EL2`.
    mdcr_el2, set_mdcr_el2, "mdcr_el2");
rw!(/// `CPTR_EL2`.
    cptr_el2, set_cptr_el2, "cptr_el2");
rw!(/// `HCRX_EL2` (FEAT_HCX only).
    hcrx_el2, set_hcrx_el2, "S3_4_C1_C2_2");
wo!(/// `HFGRTR_EL2` (FEAT_FGT only).
    set_hfgrtr_el2, "S3_4_C1_C1_4");
wo!(/// `HFGWTR_EL2` (FEAT_FGT only).
    set_hfgwtr_el2, "S3_4_C1_C1_5");
wo!(/// `HFGITR_EL2` (FEAT_FGT only).
    set_hfgitr_el2, "S3_4_C1_C1_6");
wo!(/// `HDFGRTR_EL2` (FEAT_FGT only).
    set_hdfgrtr_el2, "S3_4_C3_C1_4");
wo!(/// `HDFGWTR_EL2` (FEAT_FGT only).
    set_hdfgwtr_el2, "S3_4_C3_C1_5");
ro!(/// `CNTV_CTL_EL0` (the guest's virtual timer control, live while its vCPU is pinned here).
    cntv_ctl_el0, "cntv_ctl_el0");
ro!(/// `CNTP_CTL_EL0` (the guest's EL1 physical timer control, live while its vCPU is pinned
    /// here: `CNTHCTL_EL2.EL1PCEN` gives it to the guest).
    cntp_ctl_el0, "cntp_ctl_el0");
rw!(/// `ICC_SRE_EL2`.
    icc_sre_el2, set_icc_sre_el2, "S3_4_C12_C9_5");
rw!(/// `ICC_PMR_EL1`.
    icc_pmr_el1, set_icc_pmr_el1, "S3_0_C4_C6_0");
rw!(/// `ICC_CTLR_EL1`.
    icc_ctlr_el1, set_icc_ctlr_el1, "S3_0_C12_C12_4");
rw!(/// `ICC_BPR1_EL1`.
    icc_bpr1_el1, set_icc_bpr1_el1, "S3_0_C12_C12_3");
rw!(/// `ICC_IGRPEN1_EL1`.
    icc_igrpen1_el1, set_icc_igrpen1_el1, "S3_0_C12_C12_7");
ro!(/// `ICC_IAR1_EL1`: acknowledges the highest-priority pending group 1 interrupt.
    icc_iar1_el1, "S3_0_C12_C12_0");
wo!(/// `ICC_EOIR1_EL1`: priority drop (and deactivation with `EOImode` = 0).
    set_icc_eoir1_el1, "S3_0_C12_C12_1");
wo!(/// `ICC_SGI1R_EL1`: sends a group 1 SGI.
    set_icc_sgi1r_el1, "S3_0_C12_C11_5");
rw!(/// `ICH_HCR_EL2`.
    ich_hcr_el2, set_ich_hcr_el2, "S3_4_C12_C11_0");
ro!(/// `ICH_VTR_EL2`.
    ich_vtr_el2, "S3_4_C12_C11_1");
ro!(/// `ICH_MISR_EL2`.
    ich_misr_el2, "S3_4_C12_C11_2");
ro!(/// `ICH_EISR_EL2`.
    ich_eisr_el2, "S3_4_C12_C11_3");
rw!(/// `ICH_VMCR_EL2`.
    ich_vmcr_el2, set_ich_vmcr_el2, "S3_4_C12_C11_7");
ro!(/// `SCTLR_EL1`.
    sctlr_el1, "sctlr_el1");
rw!(/// `ESR_EL1`.
    esr_el1, set_esr_el1, "esr_el1");
rw!(/// `FAR_EL1`.
    far_el1, set_far_el1, "far_el1");
rw!(/// `ELR_EL1`.
    elr_el1, set_elr_el1, "elr_el1");
rw!(/// `SPSR_EL1`.
    spsr_el1, set_spsr_el1, "spsr_el1");
rw!(/// `VBAR_EL1`.
    vbar_el1, set_vbar_el1, "vbar_el1");
ro!(/// `MIDR_EL1`.
    midr_el1, "midr_el1");
ro!(/// `CNTPCT_EL0`.
    cntpct_el0, "cntpct_el0");

macro_rules! lr_access {
    ($($n:literal => $reg:literal),* $(,)?) => {
        /// `ICH_LR<n>_EL2` (0 for n > 15).
        #[inline]
        pub fn ich_lr(n: usize) -> u64 {
            let v: u64;
            match n {
                $($n => {
                    // SAFETY: reading a list register has no effect on memory.
                    unsafe { asm!(concat!("mrs {0}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) }
                })*
                _ => v = 0,
            }
            v
        }

        /// Writes `ICH_LR<n>_EL2` (ignored for n > 15).
        ///
        /// # Safety
        /// Changes the virtual interrupts the guest on this CPU sees.
        #[inline]
        pub unsafe fn set_ich_lr(n: usize, v: u64) {
            match n {
                $($n => {
                    // SAFETY: the caller upholds the contract above.
                    unsafe { asm!(concat!("msr ", $reg, ", {0}"), in(reg) v, options(nostack, preserves_flags)) }
                })*
                _ => {}
            }
        }
    };
}

lr_access!(
    0 => "S3_4_C12_C12_0", 1 => "S3_4_C12_C12_1", 2 => "S3_4_C12_C12_2", 3 => "S3_4_C12_C12_3",
    4 => "S3_4_C12_C12_4", 5 => "S3_4_C12_C12_5", 6 => "S3_4_C12_C12_6", 7 => "S3_4_C12_C12_7",
    8 => "S3_4_C12_C13_0", 9 => "S3_4_C12_C13_1", 10 => "S3_4_C12_C13_2", 11 => "S3_4_C12_C13_3",
    12 => "S3_4_C12_C13_4", 13 => "S3_4_C12_C13_5", 14 => "S3_4_C12_C13_6", 15 => "S3_4_C12_C13_7",
);

/// Writes `ICH_AP0R<n>_EL2` (`group1` false) or `ICH_AP1R<n>_EL2` (n 0..=3; ignored above).
///
/// # Safety
/// Register `n` must be implemented (`n < 1 << (ICH_VTR_EL2.PREbits - 4)`, at most 4: the
/// others are UNDEFINED); changes the active priorities of the guest on this CPU.
pub unsafe fn set_ich_apr(group1: bool, n: usize, v: u64) {
    // SAFETY: the caller's contract (register `n` exists), for every arm.
    unsafe {
        match (group1, n) {
            (false, 0) => {
                asm!("msr S3_4_C12_C8_0, {0}", in(reg) v, options(nostack, preserves_flags))
            }
            (false, 1) => {
                asm!("msr S3_4_C12_C8_1, {0}", in(reg) v, options(nostack, preserves_flags))
            }
            (false, 2) => {
                asm!("msr S3_4_C12_C8_2, {0}", in(reg) v, options(nostack, preserves_flags))
            }
            (false, 3) => {
                asm!("msr S3_4_C12_C8_3, {0}", in(reg) v, options(nostack, preserves_flags))
            }
            (true, 0) => {
                asm!("msr S3_4_C12_C9_0, {0}", in(reg) v, options(nostack, preserves_flags))
            }
            (true, 1) => {
                asm!("msr S3_4_C12_C9_1, {0}", in(reg) v, options(nostack, preserves_flags))
            }
            (true, 2) => {
                asm!("msr S3_4_C12_C9_2, {0}", in(reg) v, options(nostack, preserves_flags))
            }
            (true, 3) => {
                asm!("msr S3_4_C12_C9_3, {0}", in(reg) v, options(nostack, preserves_flags))
            }
            _ => {}
        }
    }
}

macro_rules! id_space {
    ($($crm:literal : $($op2:literal)*;)*) => {
        /// The ID register `S3_0_C0_C<crm>_<op2>` (CRm 1..=7): the feature ID space that
        /// `HCR_EL2.TID3` traps. Unallocated encodings there read as zero (Arm ARM D23.3.1,
        /// "reserved, RAZ"); outside the space this returns 0 without reading.
        pub fn id_reg(crm: u8, op2: u8) -> u64 {
            let v: u64;
            match (crm, op2) {
                $($(($crm, $op2) => {
                    // SAFETY: reading an ID register has no side effect.
                    unsafe { asm!(concat!("mrs {0}, S3_0_C0_C", stringify!($crm), "_", stringify!($op2)), out(reg) v, options(nomem, nostack, preserves_flags)) }
                })*)*
                _ => v = 0,
            }
            v
        }
    };
}

id_space!(
    1: 0 1 2 3 4 5 6 7;
    2: 0 1 2 3 4 5 6 7;
    3: 0 1 2 3 4 5 6 7;
    4: 0 1 2 3 4 5 6 7;
    5: 0 1 2 3 4 5 6 7;
    6: 0 1 2 3 4 5 6 7;
    7: 0 1 2 3 4 5 6 7;
);

/// `WFI` (wakes on any pending physical interrupt, even with PSTATE.I set: Arm ARM D1.6.2).
#[inline(always)]
pub fn wfi() {
    // SAFETY: waiting for an interrupt has no effect on memory.
    unsafe { asm!("dsb sy", "wfi", options(nostack, preserves_flags)) }
}

/// `WFIT` with the timeout `deadline` (FEAT_WFxT only): waits as [`wfi`] does, or until
/// `CNTVCT_EL0` >= `deadline` (Arm ARM, "WFIT"). At EL2 with `HCR_EL2.E2H` = 0 the virtual count
/// is `CNTPCT_EL0 - CNTVOFF_EL2`, the guest's own virtual count. Encoded by hand (`WFIT X0` is
/// 0xd5031020) so the assembler needs no `wfxt` feature.
#[inline(always)]
pub fn wfit(deadline: u64) {
    // SAFETY: waiting for an interrupt or a timeout has no effect on memory; the caller
    // checked the CPU implements FEAT_WFxT (else the encoding is UNDEFINED).
    unsafe {
        asm!("dsb sy", ".inst 0xd5031020", in("x0") deadline, options(nostack, preserves_flags))
    }
}

/// `AT S12E1R` (`el0` false) or `AT S12E0R` of the guest virtual address `va` through the
/// guest's stage 1 and this CPU's stage 2 (VTTBR_EL2), returning `PAR_EL1`; the guest's own
/// `PAR_EL1` is preserved.
#[inline(always)]
pub fn at_s12(va: u64, el0: bool) -> u64 {
    let par: u64;
    // SAFETY: address translation writes only PAR_EL1, which is restored.
    unsafe {
        if el0 {
            asm!("mrs {s}, par_el1", "at s12e0r, {va}", "isb", "mrs {p}, par_el1",
                "msr par_el1, {s}", va = in(reg) va, s = out(reg) _, p = out(reg) par,
                options(nostack, preserves_flags));
        } else {
            asm!("mrs {s}, par_el1", "at s12e1r, {va}", "isb", "mrs {p}, par_el1",
                "msr par_el1, {s}", va = in(reg) va, s = out(reg) _, p = out(reg) par,
                options(nostack, preserves_flags));
        }
    }
    par
}

/// `TLBI VMALLS12E1` for the current VMID on this CPU only, then `DSB NSH; ISB`.
#[inline(always)]
pub fn tlbi_vmalls12e1_local() {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe {
        asm!(
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    }
}

macro_rules! el1_writer {
    ($($reg:ident => $name:literal),* $(,)?) => {
        /// Writes one of the EL1/EL0 registers of [`El1Reg`].
        ///
        /// # Safety
        /// The caller owns this CPU's EL1 state: no guest runs on it until the next entry.
        unsafe fn set_el1(reg: El1Reg, v: u64) {
            match reg {
                $(El1Reg::$reg => {
                    // SAFETY: an EL1/EL0 register of the guest this CPU is dedicated to (the
                    // caller's contract); none of them affects EL2's own translation or memory.
                    unsafe { asm!(concat!("msr ", $name, ", {0}"), in(reg) v, options(nostack, preserves_flags)) }
                })*
            }
        }
    };
}

el1_writer!(
    SctlrEl1 => "sctlr_el1", CpacrEl1 => "cpacr_el1", Ttbr0El1 => "ttbr0_el1",
    Ttbr1El1 => "ttbr1_el1", TcrEl1 => "tcr_el1", MairEl1 => "mair_el1", AmairEl1 => "amair_el1",
    VbarEl1 => "vbar_el1", ContextidrEl1 => "contextidr_el1", TpidrEl1 => "tpidr_el1",
    TpidrEl0 => "tpidr_el0", TpidrroEl0 => "tpidrro_el0", SpEl1 => "sp_el1", ElrEl1 => "elr_el1",
    SpsrEl1 => "spsr_el1", EsrEl1 => "esr_el1", FarEl1 => "far_el1", Afsr0El1 => "afsr0_el1",
    Afsr1El1 => "afsr1_el1", ParEl1 => "par_el1", CntkctlEl1 => "cntkctl_el1",
    CntvCtlEl0 => "cntv_ctl_el0", CntvCvalEl0 => "cntv_cval_el0", CntpCtlEl0 => "cntp_ctl_el0",
    CntpCvalEl0 => "cntp_cval_el0", MdscrEl1 => "mdscr_el1", MdccintEl1 => "mdccint_el1",
    CsselrEl1 => "csselr_el1",
);

/// Gives a vCPU's EL1 and EL0 state its entry values: every register of
/// [`crate::exc::el1_entry_state`], and the breakpoint and watchpoint pairs the CPU has
/// (`brps`/`wrps`: `ID_AA64DFR0_EL1.BRPs/WRPs` + 1) cleared.
///
/// # Safety
/// The caller owns this CPU's EL1 state: no guest runs on it until the next entry.
pub unsafe fn reset_el1_state(brps: u32, wrps: u32) {
    for (reg, value) in crate::exc::el1_entry_state() {
        // SAFETY: the caller's contract.
        unsafe { set_el1(reg, value) };
    }
    for n in 0..brps.min(16) {
        // SAFETY: breakpoint `n` exists (n < BRPs + 1).
        unsafe { set_dbg_bp(n, 0, 0) };
    }
    for n in 0..wrps.min(16) {
        // SAFETY: watchpoint `n` exists (n < WRPs + 1).
        unsafe { set_dbg_wp(n, 0, 0) };
    }
}

macro_rules! dbg_pair {
    ($(#[$m:meta])* $name:ident, $ctl:literal, $val:literal: $($n:literal)*) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Register pair `n` must exist on this CPU; the caller owns this CPU's EL1 state.
        unsafe fn $name(n: u32, ctl: u64, val: u64) {
            match n {
                $(
                    // SAFETY: the caller's contract.
                    $n => unsafe {
                        asm!(concat!("msr ", $ctl, $n, "_el1, {0}"), concat!("msr ", $val, $n, "_el1, {1}"),
                            in(reg) ctl, in(reg) val, options(nostack, preserves_flags))
                    },
                )*
                _ => {}
            }
        }
    };
}

dbg_pair!(/// `DBGBCR<n>_EL1` and `DBGBVR<n>_EL1`.
    set_dbg_bp, "dbgbcr", "dbgbvr": 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
dbg_pair!(/// `DBGWCR<n>_EL1` and `DBGWVR<n>_EL1`.
    set_dbg_wp, "dbgwcr", "dbgwvr": 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);

// ---- The guest's PMU (PMUv3, passed through when the guest gets it: `platform::pmu`). hyp
// reads `PMCR_EL0` (its `N`), `PMOVSSET_EL0` and `PMINTENSET_EL1` (the overflow interrupt's
// level) and writes the PMU only to reset it for a vCPU that starts; it never counts with it.
// Every one of these is UNDEFINED on a CPU without a PMU: callers check `PMUVer` first.

ro!(/// `PMCR_EL0` (at EL2 its `N` is the CPU's number of event counters, not `MDCR_EL2.HPMN`).
    pmcr_el0, "pmcr_el0");
ro!(/// `PMOVSSET_EL0`: the overflow flags.
    pmovsset_el0, "pmovsset_el0");
ro!(/// `PMINTENSET_EL1`: the overflow interrupt enables.
    pmintenset_el1, "pmintenset_el1");

/// Resets the PMU of this CPU for a vCPU that starts: `PMCR_EL0` = `pmcr_clear` (P and C:
/// every counter to zero, E = 0), the counter enables, interrupt enables and overflow flags of
/// `clear_mask` cleared, `PMUSERENR_EL0`, `PMCCFILTR_EL0`, `PMCCNTR_EL0` zero, the type and
/// count of event counters `0..counters` zero (through `PMSELR_EL0`/`PMXEV*`), then
/// `PMSELR_EL0` and `PMCR_EL0` zero.
///
/// # Safety
/// The CPU has a PMU (`ID_AA64DFR0_EL1.PMUVer` is PMUv3) with at least `counters` event
/// counters, and the caller owns this CPU's EL1 state: no guest runs on it until the next
/// entry.
pub unsafe fn reset_pmu(pmcr_clear: u64, clear_mask: u64, counters: u64) {
    // SAFETY: PMU registers of the guest this CPU is dedicated to (the caller's contract);
    // none of them affects EL2's own translation or memory.
    unsafe {
        asm!(
            "msr pmcr_el0, {pc}",
            "isb",
            "msr pmcntenclr_el0, {m}",
            "msr pmintenclr_el1, {m}",
            "msr pmovsclr_el0, {m}",
            "msr pmuserenr_el0, xzr",
            "msr pmccfiltr_el0, xzr",
            "msr pmccntr_el0, xzr",
            pc = in(reg) pmcr_clear,
            m = in(reg) clear_mask,
            options(nostack, preserves_flags)
        );
        for n in 0..counters.min(31) {
            asm!(
                "msr pmselr_el0, {n}",
                "isb",
                "msr pmxevtyper_el0, xzr",
                "msr pmxevcntr_el0, xzr",
                n = in(reg) n,
                options(nostack, preserves_flags)
            );
        }
        asm!(
            "msr pmselr_el0, xzr",
            "msr pmcr_el0, xzr",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}
