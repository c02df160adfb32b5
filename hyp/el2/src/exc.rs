//! Pure rules for what hyp does to a guest's EL1 state: the state a vCPU starts in, taking an
//! exception to the guest (vector offset, PSTATE, syndrome), reading its virtual timer's
//! output, and addressing an SGI to a physical CPU. Every value is built from named register
//! fields (aarch64-cpu's, `platform`'s, or the few below that aarch64-cpu does not name).
//! Tested on the host; the run loop in `hyp` applies them.

use aarch64_cpu::registers::{ESR_EL1, SCTLR_EL1, SPSR_EL2};
use platform::esr::{FaultKind, ISS_DABT};
use platform::gicv3::ICC_SGI1R_EL1;
use platform::Mpidr;
use tock_registers::fields::Field;
use tock_registers::LocalRegisterCopy;

/// `SPSR_ELx.PAN` (bit 22, FEAT_PAN; aarch64-cpu does not name it).
const SPSR_PAN: Field<u64, SPSR_EL2::Register> = Field::new(1, 22);
/// `SPSR_ELx.M[4]` (bit 4): the exception was taken from AArch32 (aarch64-cpu's `M` is the
/// AArch64 modes' M\[3:0\]).
const SPSR_M_AARCH32: Field<u64, SPSR_EL2::Register> = Field::new(1, 4);
/// `SCTLR_EL1.SPAN` (bit 23): 0 sets PSTATE.PAN on taking an exception to EL1.
const SCTLR_SPAN: Field<u64, SCTLR_EL1::Register> = Field::new(1, 23);

/// `SCTLR_EL1` bits aarch64-cpu does not name, each RES1 in Armv8.0 and a control of a later
/// feature whose value 1 keeps the Armv8.0 behaviour (Arm ARM D19.2.118): `EOS` (11) and
/// `EIS` (22), exception exit and entry are context synchronizing (FEAT_ExS); `TSCXT` (20),
/// EL0 access to `SCXTNUM_EL0` disabled (FEAT_CSV2_2); `SPAN` (23), PAN unchanged on
/// exceptions (FEAT_PAN); `nTLSMD` (28) and `LSMAOE` (29), no trap of load/store multiple
/// to device memory and their ordering (FEAT_LSMAOC).
const SCTLR_EL1_ARMV8_0: [Field<u64, SCTLR_EL1::Register>; 6] = [
    Field::new(1, 11),
    Field::new(1, 20),
    Field::new(1, 22),
    SCTLR_SPAN,
    Field::new(1, 28),
    Field::new(1, 29),
];

/// `SCTLR_EL1` at vCPU entry: the Armv8.0 RES1 bits set, MMU (`M`), alignment checks (`A`),
/// data and instruction caches (`C`, `I`) off, little-endian at EL1 and EL0 (`EE`, `E0E`);
/// booting.rst: "MMU off, D-cache off".
pub fn sctlr_el1_reset() -> u64 {
    let armv8_0 = SCTLR_EL1_ARMV8_0.iter().fold(0, |v, f| v | f.val(1).value);
    armv8_0
        | (SCTLR_EL1::M::Disable
            + SCTLR_EL1::A::Disable
            + SCTLR_EL1::C::NonCacheable
            + SCTLR_EL1::I::NonCacheable
            + SCTLR_EL1::EE::LittleEndian
            + SCTLR_EL1::E0E::LittleEndian)
            .value
}

/// The EL1 and EL0 system registers a vCPU reaches without a trap and hyp does not switch
/// (vCPUs are pinned: the hardware holds them across exits), each given its entry value by
/// [`el1_entry_state`] when the vCPU starts (boot, or PSCI CPU_ON). Not here: `SP_EL0`,
/// `ELR_EL2`/`SPSR_EL2` and the general and FP/SIMD registers (the world switch loads them),
/// the debug breakpoint and watchpoint pairs (as many as the CPU has: `vsys`), and every
/// register that traps (emulated per vCPU in `vdev::sysregs`, or UNDEFINED).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum El1Reg {
    /// `SCTLR_EL1`.
    SctlrEl1,
    /// `CPACR_EL1`.
    CpacrEl1,
    /// `TTBR0_EL1`.
    Ttbr0El1,
    /// `TTBR1_EL1`.
    Ttbr1El1,
    /// `TCR_EL1`.
    TcrEl1,
    /// `MAIR_EL1`.
    MairEl1,
    /// `AMAIR_EL1`.
    AmairEl1,
    /// `VBAR_EL1`.
    VbarEl1,
    /// `CONTEXTIDR_EL1`.
    ContextidrEl1,
    /// `TPIDR_EL1`.
    TpidrEl1,
    /// `TPIDR_EL0`.
    TpidrEl0,
    /// `TPIDRRO_EL0`.
    TpidrroEl0,
    /// `SP_EL1`.
    SpEl1,
    /// `ELR_EL1`.
    ElrEl1,
    /// `SPSR_EL1`.
    SpsrEl1,
    /// `ESR_EL1`.
    EsrEl1,
    /// `FAR_EL1`.
    FarEl1,
    /// `AFSR0_EL1`.
    Afsr0El1,
    /// `AFSR1_EL1`.
    Afsr1El1,
    /// `PAR_EL1`.
    ParEl1,
    /// `CNTKCTL_EL1`.
    CntkctlEl1,
    /// `CNTV_CTL_EL0`.
    CntvCtlEl0,
    /// `CNTV_CVAL_EL0`.
    CntvCvalEl0,
    /// `CNTP_CTL_EL0`.
    CntpCtlEl0,
    /// `CNTP_CVAL_EL0`.
    CntpCvalEl0,
    /// `MDSCR_EL1`.
    MdscrEl1,
    /// `MDCCINT_EL1`.
    MdccintEl1,
    /// `CSSELR_EL1`.
    CsselrEl1,
}

/// Every [`El1Reg`] with the value a vCPU starts with: [`sctlr_el1_reset`] for `SCTLR_EL1`,
/// 0 for the rest (the Arm ARM leaves most of them UNKNOWN at reset; 0 disables every
/// translation, timer and debug event they control, and `CPACR_EL1` = 0 traps EL0/EL1 FP and
/// SIMD to EL1, as after a reset).
pub fn el1_entry_state() -> [(El1Reg, u64); 28] {
    use El1Reg::*;
    [
        (SctlrEl1, sctlr_el1_reset()),
        (CpacrEl1, 0),
        (Ttbr0El1, 0),
        (Ttbr1El1, 0),
        (TcrEl1, 0),
        (MairEl1, 0),
        (AmairEl1, 0),
        (VbarEl1, 0),
        (ContextidrEl1, 0),
        (TpidrEl1, 0),
        (TpidrEl0, 0),
        (TpidrroEl0, 0),
        (SpEl1, 0),
        (ElrEl1, 0),
        (SpsrEl1, 0),
        (EsrEl1, 0),
        (FarEl1, 0),
        (Afsr0El1, 0),
        (Afsr1El1, 0),
        (ParEl1, 0),
        (CntkctlEl1, 0),
        (CntvCtlEl0, 0),
        (CntvCvalEl0, 0),
        (CntpCtlEl0, 0),
        (CntpCvalEl0, 0),
        (MdscrEl1, 0),
        (MdccintEl1, 0),
        (CsselrEl1, 0),
    ]
}

/// `SPSR` for a vCPU's first instruction and for every exception hyp takes to its EL1:
/// EL1h, D, A, I, F masked (Arm ARM D1.3.2; booting.rst for entry).
pub const SPSR_EL1H_MASKED: u64 = SPSR_EL2::M::EL1h.value
    | SPSR_EL2::D::Masked.value
    | SPSR_EL2::A::Masked.value
    | SPSR_EL2::I::Masked.value
    | SPSR_EL2::F::Masked.value;

/// `ESR_EL1` for an Undefined Instruction exception: EC 0x00 (unknown reason), IL 1 (32-bit
/// instruction).
pub const ESR_UNDEF: u64 = ESR_EL1::EC::Unknown.value | ESR_EL1::IL::SET.value;

fn spsr(v: u64) -> LocalRegisterCopy<u64, SPSR_EL2::Register> {
    LocalRegisterCopy::new(v)
}

/// The offset from `VBAR_EL1` of the synchronous exception vector for an exception taken to
/// EL1 from the PSTATE in `spsr` (Arm ARM D1.3.1): current EL with SP_EL0 0x000, current EL
/// with SP_ELx 0x200, lower EL AArch64 0x400, lower EL AArch32 0x600.
pub fn sync_vector_offset(spsr_value: u64) -> u64 {
    let s = spsr(spsr_value);
    if s.is_set(SPSR_M_AARCH32) {
        return 0x600; // AArch32 (necessarily EL0 under an AArch64 EL1)
    }
    match s.read_as_enum(SPSR_EL2::M) {
        Some(SPSR_EL2::M::Value::EL1h) => 0x200,
        Some(SPSR_EL2::M::Value::EL1t) => 0x000,
        _ => 0x400, // EL0t
    }
}

/// Whether `spsr` describes EL0 (AArch64 EL0t, or any AArch32 mode, which is EL0 here): the
/// mode's exception level, M\[3:2\], is 0.
pub fn at_el0(spsr_value: u64) -> bool {
    let s = spsr(spsr_value);
    s.is_set(SPSR_M_AARCH32) || s.read(SPSR_EL2::M) >> 2 == 0
}

/// PSTATE after taking an exception to EL1 (as SPSR_EL2 for the ERET into it): EL1h with
/// D, A, I, F masked; PAN set when `SCTLR_EL1.SPAN` is 0, otherwise kept from the
/// interrupted context (Arm ARM D1.3.2, "PSTATE on taking an exception").
pub fn exception_pstate(old_spsr: u64, sctlr_el1: u64) -> u64 {
    let span = LocalRegisterCopy::<u64, SCTLR_EL1::Register>::new(sctlr_el1).is_set(SCTLR_SPAN);
    let pan = !span || spsr(old_spsr).is_set(SPSR_PAN);
    SPSR_EL1H_MASKED | SPSR_PAN.val(u64::from(pan)).value
}

/// `ESR_EL1` for a synchronous external abort hyp injects: a data abort (EC 0x24/0x25, from a
/// lower/the same EL) or an instruction abort (EC 0x20/0x21), IL 1, status "synchronous
/// external abort, not on a table walk", `WnR` for a data write.
pub fn external_abort_esr(data: bool, from_el0: bool, write: bool) -> u64 {
    use ESR_EL1::EC::Value as Ec;
    let ec = match (data, from_el0) {
        (true, false) => Ec::DataAbortCurrentEL,
        (true, true) => Ec::DataAbortLowerEL,
        (false, false) => Ec::InstrAbortCurrentEL,
        (false, true) => Ec::InstrAbortLowerEL,
    };
    let fsc = FaultKind::SyncExternal
        .fsc()
        .expect("invariant: a synchronous external abort has a status code");
    let iss = ISS_DABT::WNR.val(u64::from(data && write)) + ISS_DABT::DFSC.val(fsc.into());
    (ESR_EL1::EC.val(ec as u64) + ESR_EL1::IL::SET + ESR_EL1::ISS.val(iss.value)).value
}

/// The `ICC_SGI1R_EL1` value that sends SGI `intid` (0-15) to the one CPU with MPIDR
/// affinity `mpidr`, or `None` when its Aff0 is above 15 (the target list has 16 bits and hyp
/// uses no range selector) or `intid` is not an SGI.
pub fn sgi1r(mpidr: u64, intid: u32) -> Option<u64> {
    let m = Mpidr::from_affinity(mpidr);
    let aff0 = m.aff(0);
    if aff0 >= 16 || intid >= 16 {
        return None;
    }
    Some(
        (ICC_SGI1R_EL1::Aff3.val(m.aff(3).into())
            + ICC_SGI1R_EL1::Aff2.val(m.aff(2).into())
            + ICC_SGI1R_EL1::Aff1.val(m.aff(1).into())
            + ICC_SGI1R_EL1::INTID.val(intid.into())
            + ICC_SGI1R_EL1::TargetList.val(1 << aff0))
        .value,
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
    fn entry_state_values() {
        // Arm ARM values: EL1h = 0b0101, D A I F = bits 9..6; SCTLR_EL1 RES1 bits 11, 20,
        // 22, 23, 28, 29 with M, A, C, I, EE, E0E clear.
        assert_eq!(SPSR_EL1H_MASKED, 0x3c5);
        assert_eq!(sctlr_el1_reset(), 0x30d0_0800);
    }

    #[test]
    fn every_el1_register_gets_one_entry_value() {
        let state = el1_entry_state();
        // In declaration order, each once: the table covers every variant.
        for (i, &(reg, _)) in state.iter().enumerate() {
            assert_eq!(reg as usize, i, "{reg:?}");
        }
        assert_eq!(El1Reg::CsselrEl1 as usize + 1, state.len());
        assert!(state.contains(&(El1Reg::SctlrEl1, 0x30d0_0800)));
        assert!(state.iter().all(|&(r, v)| r == El1Reg::SctlrEl1 || v == 0));
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
