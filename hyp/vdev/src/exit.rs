//! Decoding the exits hyp handles from `ESR_EL2`, `FAR_EL2` and `HPFAR_EL2`.
//!
//! References (Arm ARM, DDI 0487): D24.2.41 `ESR_EL2` (EC and IL), the ISS encodings for
//! "an exception from a Data Abort" (ISV, SAS, SSE, SRT, SF, AR, FnV, EA, S1PTW, WnR, DFSC),
//! "an Instruction Abort", "HVC or SVC", "SMC", "MSR, MRS or System instruction" (EC 0x18) and
//! "WF* instruction" (EC 0x01); D24.2.66 `HPFAR_EL2` (FIPA, bits \[43:4\] = IPA\[51:12\]).
//!
//! The run loop reads the three registers and calls [`Exit::decode`]; everything else is pure.

use crate::mmio::AccessSize;
use aarch64_cpu::registers::{ESR_EL2, SPSR_EL2};
use core::fmt;
use platform::esr::{Class, Esr, ISS_DABT};
use stage2::Ipa;
use tock_registers::fields::Field;
use tock_registers::{register_bitfields, LocalRegisterCopy};

pub use platform::esr::FaultKind;

register_bitfields! {u64,
    /// ISS of a trapped MSR/MRS/system instruction (EC 0b011000).
    ISS_SYS [
        /// Op0.
        OP0 OFFSET(20) NUMBITS(2) [],
        /// Op2.
        OP2 OFFSET(17) NUMBITS(3) [],
        /// Op1.
        OP1 OFFSET(14) NUMBITS(3) [],
        /// CRn.
        CRN OFFSET(10) NUMBITS(4) [],
        /// Rt.
        RT OFFSET(5) NUMBITS(5) [],
        /// CRm.
        CRM OFFSET(1) NUMBITS(4) [],
        /// Direction: 1 = read (MRS), 0 = write (MSR).
        DIR OFFSET(0) NUMBITS(1) []
    ],
    /// ISS of a trapped WFI/WFE/WFIT/WFET (EC 0b000001).
    ISS_WFX [
        /// Register field valid (WFxT only).
        RV OFFSET(2) NUMBITS(1) [],
        /// Register holding the timeout (WFxT only).
        RN OFFSET(5) NUMBITS(5) [],
        /// Trapped instruction: 0 WFI, 1 WFE, 2 WFIT, 3 WFET.
        TI OFFSET(0) NUMBITS(2) []
    ],
    /// ISS of HVC/SVC/SMC from AArch64.
    ISS_IMM [
        /// The instruction's 16-bit immediate.
        IMM16 OFFSET(0) NUMBITS(16) []
    ],
    /// `HPFAR_EL2` (without FEAT_D128).
    HPFAR [
        /// Faulting IPA bits \[51:12\].
        FIPA OFFSET(4) NUMBITS(40) []
    ]
}

/// An encoded system register or system instruction: (op0, op1, CRn, CRm, op2).
///
/// Packed as `op0:2 | op1:3 | CRn:4 | CRm:4 | op2:3` (the order of the `S<op0>_<op1>_C<n>_C<m>_<op2>`
/// spelling), so values sort in encoding order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysReg(u16);

impl SysReg {
    /// Builds an encoding; each field is truncated to its width (op0 2 bits, op1/op2 3, CRn/CRm 4).
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        SysReg(
            ((op0 as u16 & 3) << 14)
                | ((op1 as u16 & 7) << 11)
                | ((crn as u16 & 15) << 7)
                | ((crm as u16 & 15) << 3)
                | (op2 as u16 & 7),
        )
    }
    /// op0.
    pub const fn op0(self) -> u8 {
        (self.0 >> 14) as u8 & 3
    }
    /// op1.
    pub const fn op1(self) -> u8 {
        (self.0 >> 11) as u8 & 7
    }
    /// CRn.
    pub const fn crn(self) -> u8 {
        (self.0 >> 7) as u8 & 15
    }
    /// CRm.
    pub const fn crm(self) -> u8 {
        (self.0 >> 3) as u8 & 15
    }
    /// op2.
    pub const fn op2(self) -> u8 {
        self.0 as u8 & 7
    }
    /// The packed 16-bit value.
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// `ICC_SGI1R_EL1` (S3_0_C12_C11_5): Group 1 SGI generation.
    pub const ICC_SGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 5);
    /// `ICC_ASGI1R_EL1` (S3_0_C12_C11_6): alias Group 1 SGI generation.
    pub const ICC_ASGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 6);
    /// `ICC_SGI0R_EL1` (S3_0_C12_C11_7): Group 0 SGI generation.
    pub const ICC_SGI0R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 7);
}

impl fmt::Debug for SysReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SysReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = crate::idregs::name(*self) {
            return f.write_str(name);
        }
        write!(
            f,
            "S{}_{}_C{}_C{}_{}",
            self.op0(),
            self.op1(),
            self.crn(),
            self.crm(),
            self.op2()
        )
    }
}

/// A trapped MSR/MRS (EC 0x18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// The register accessed.
    pub reg: SysReg,
    /// The general-purpose register transferred (31 = XZR).
    pub rt: u8,
    /// `true` for MRS (read into `rt`), `false` for MSR (write from `rt`).
    pub read: bool,
}

/// The IPA a stage-2 abort faulted on: `HPFAR_EL2.FIPA` (bits \[43:4\], IPA\[51:12\]) shifted into
/// place, plus the page offset from `FAR_EL2[11:0]` (the offset within a 4 KiB page is the same
/// for every granule, since FIPA is always in 4 KiB units).
pub fn fault_ipa(hpfar: u64, far: u64) -> Ipa {
    let h: LocalRegisterCopy<u64, HPFAR::Register> = LocalRegisterCopy::new(hpfar);
    Ipa::new((h.read(HPFAR::FIPA) << 12) | (far & 0xfff))
}

/// A data abort taken from the guest (EC 0x24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// The raw `ESR_EL2`.
    pub esr: u64,
    /// `FAR_EL2` (the guest virtual address; meaningless when `far_valid` is false).
    pub far: u64,
    /// `FnV` clear: `FAR_EL2` is valid.
    pub far_valid: bool,
    /// The faulting IPA, when `HPFAR_EL2` is valid for this fault (see
    /// [`FaultKind::hpfar_valid`]). The low 12 bits come from FAR_EL2 and are 0 when
    /// `far_valid` is false.
    pub ipa: Option<Ipa>,
    /// The fault status.
    pub fault: FaultKind,
    /// The fault happened on the stage-2 translation of a stage-1 table walk.
    pub s1ptw: bool,
    /// Write (`WnR`); for a fault on a stage-1 walk (S1PTW) this is about the walk, not the
    /// instruction.
    pub write: bool,
    /// Cache maintenance or address translation instruction (`CM`).
    pub cache_maintenance: bool,
    /// External abort type (`EA`).
    pub external: bool,
}

/// Why an exit cannot be emulated. The run loop injects an external abort into the guest and
/// logs the reason at `warn!` level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitError {
    /// A data abort without a valid instruction syndrome (ISV = 0): load/store pair, writeback,
    /// SIMD/FP, exclusive or atomic access to an emulated region. hyp does not decode guest
    /// instructions.
    NoSyndrome {
        /// The raw `ESR_EL2`.
        esr: u64,
        /// The faulting IPA, if known.
        ipa: Option<Ipa>,
    },
    /// The abort does not carry a faulting IPA (it is not a stage-2 fault of a kind that sets
    /// `HPFAR_EL2`, or FAR_EL2 is not valid).
    NoIpa {
        /// The raw `ESR_EL2`.
        esr: u64,
        /// The decoded fault status.
        fault: FaultKind,
    },
    /// The access was to emulated MMIO on the stage-2 walk of a guest stage-1 table walk: the
    /// guest put its page tables in device memory.
    TableWalkToMmio {
        /// The faulting IPA.
        ipa: Ipa,
    },
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitError::NoSyndrome { esr, ipa } => {
                write!(
                    f,
                    "data abort without instruction syndrome (ESR_EL2 {esr:#x}"
                )?;
                if let Some(ipa) = ipa {
                    write!(f, ", IPA {ipa:#018x}")?;
                }
                f.write_str(
                    "): the guest used a load/store form hyp cannot emulate on MMIO \
                     (pair, writeback, SIMD, atomic); use plain LDR/STR for device registers",
                )
            }
            ExitError::NoIpa { esr, fault } => write!(
                f,
                "abort without a faulting IPA (ESR_EL2 {esr:#x}, {fault:?}): not a stage-2 \
                 fault hyp can resolve"
            ),
            ExitError::TableWalkToMmio { ipa } => write!(
                f,
                "guest stage-1 table walk touched emulated MMIO at IPA {ipa:#018x}: \
                 translation tables must live in RAM"
            ),
        }
    }
}

/// One MMIO access, decoded from a data abort with a valid syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The IPA accessed.
    pub ipa: Ipa,
    /// The access size.
    pub size: AccessSize,
    /// `true` for a store, `false` for a load.
    pub write: bool,
    /// The transfer register Rt; 31 means XZR/WZR (a store of zero, or a load that is discarded).
    pub reg: u8,
    /// The load sign-extends (`SSE`).
    pub sign_extend: bool,
    /// The register is a 64-bit X register (`SF`); otherwise a 32-bit W register.
    pub reg64: bool,
    /// Load-acquire / store-release (`AR`).
    pub acquire_release: bool,
}

impl MmioAccess {
    /// The value to write into Xt for a load that returned `data` from the device, following
    /// the Arm ARM rules for a load: only `size` bytes are meaningful; with `SSE` the value is
    /// sign-extended from the access size, otherwise zero-extended; a W destination (`SF` = 0)
    /// then has bits \[63:32\] cleared (writes to Wt zero the upper half of Xt).
    pub fn load_value(&self, data: u64) -> u64 {
        let bits = self.size.bits();
        let mut v = data & self.size.mask();
        if self.sign_extend && bits < 64 {
            let shift = 64 - bits;
            v = (((v << shift) as i64) >> shift) as u64;
        }
        if !self.reg64 {
            v &= 0xffff_ffff;
        }
        v
    }

    /// The value a store writes to the device, given the current value of Xt (pass 0 for
    /// `reg` 31, the zero register): its low `size` bytes.
    pub fn store_value(&self, reg_value: u64) -> u64 {
        reg_value & self.size.mask()
    }
}

impl DataAbort {
    /// The MMIO access this abort describes, or why it cannot be emulated.
    pub fn mmio(&self) -> Result<MmioAccess, ExitError> {
        let iss = Esr::new(self.esr).abort_iss();
        let Some(ipa) = self.ipa.filter(|_| self.far_valid) else {
            return Err(ExitError::NoIpa {
                esr: self.esr,
                fault: self.fault,
            });
        };
        if self.s1ptw {
            return Err(ExitError::TableWalkToMmio { ipa });
        }
        if !iss.is_set(ISS_DABT::ISV) {
            return Err(ExitError::NoSyndrome {
                esr: self.esr,
                ipa: Some(ipa),
            });
        }
        Ok(MmioAccess {
            ipa,
            size: AccessSize::from_sas(iss.read(ISS_DABT::SAS)),
            write: self.write,
            reg: iss.read(ISS_DABT::SRT) as u8,
            sign_extend: iss.is_set(ISS_DABT::SSE),
            reg64: iss.is_set(ISS_DABT::SF),
            acquire_release: iss.is_set(ISS_DABT::AR),
        })
    }
}

/// An instruction abort taken from the guest (EC 0x20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrAbort {
    /// The raw `ESR_EL2`.
    pub esr: u64,
    /// `FAR_EL2` (meaningless when `far_valid` is false).
    pub far: u64,
    /// `FnV` clear: FAR_EL2 is valid.
    pub far_valid: bool,
    /// The faulting IPA when HPFAR_EL2 is valid for this fault.
    pub ipa: Option<Ipa>,
    /// The fault status (`IFSC`).
    pub fault: FaultKind,
    /// The fault happened on the stage-2 translation of a stage-1 table walk.
    pub s1ptw: bool,
}

/// Which WF* instruction trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wfx {
    /// WFI: idle until an interrupt (virtual or physical) is pending for this vCPU.
    Wfi,
    /// WFE: may idle until an event; hyp treats it as a yield.
    Wfe,
    /// WFIT with the timeout in `reg` (FEAT_WFxT).
    Wfit {
        /// Register holding the timeout (CNTVCT value).
        reg: u8,
    },
    /// WFET with the timeout in `reg` (FEAT_WFxT).
    Wfet {
        /// Register holding the timeout (CNTVCT value).
        reg: u8,
    },
}

/// An exit, decoded. Unless stated otherwise, the run loop resumes the guest at
/// `ELR_EL2 + Exit::instr_len` after emulating a trapped instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// WFI/WFE/WFIT/WFET (EC 0x01). Resume at the next instruction.
    Wfx(Wfx),
    /// HVC from AArch64 (EC 0x16). `ELR_EL2` already points after the HVC: do not advance.
    Hvc {
        /// The HVC immediate (0 for SMCCC calls).
        imm: u16,
    },
    /// SMC from AArch64 trapped by `HCR_EL2.TSC` (EC 0x17). `ELR_EL2` points at the SMC
    /// itself: advance by 4 (Arm ARM, "preferred exception return address" for a trapped SMC).
    Smc {
        /// The SMC immediate (0 for SMCCC calls).
        imm: u16,
    },
    /// MSR/MRS/system instruction (EC 0x18). Advance by 4.
    SysReg(SysRegAccess),
    /// Data abort from the guest (EC 0x24). Advance by 4 after an emulated MMIO access; do not
    /// advance after resolving a stage-2 fault.
    DataAbort(DataAbort),
    /// Instruction abort from the guest (EC 0x20).
    InstrAbort(InstrAbort),
    /// Any other class: the run loop reports it and injects an undefined instruction or stops
    /// the VM.
    Other {
        /// `ESR_EL2.EC`.
        ec: u8,
        /// `ESR_EL2.ISS`.
        iss: u32,
    },
}

impl Exit {
    /// Decodes an exit from the three registers the run loop reads. `hpfar` is only used for
    /// aborts of a kind for which it is valid; pass 0 otherwise.
    pub fn decode(esr: u64, far: u64, hpfar: u64) -> Exit {
        let syndrome = Esr::new(esr);
        let iss = u64::from(syndrome.iss());
        match syndrome.class() {
            Some(Class::TrappedWFIorWFE) => {
                let w: LocalRegisterCopy<u64, ISS_WFX::Register> = LocalRegisterCopy::new(iss);
                let r = w.read(ISS_WFX::RN) as u8;
                Exit::Wfx(match w.read(ISS_WFX::TI) {
                    0 => Wfx::Wfi,
                    1 => Wfx::Wfe,
                    2 => Wfx::Wfit { reg: r },
                    _ => Wfx::Wfet { reg: r },
                })
            }
            Some(Class::HVC64) => Exit::Hvc { imm: iss as u16 },
            Some(Class::SMC64) => Exit::Smc { imm: iss as u16 },
            Some(Class::TrappedMsrMrs) => {
                let s: LocalRegisterCopy<u64, ISS_SYS::Register> = LocalRegisterCopy::new(iss);
                Exit::SysReg(SysRegAccess {
                    reg: SysReg::new(
                        s.read(ISS_SYS::OP0) as u8,
                        s.read(ISS_SYS::OP1) as u8,
                        s.read(ISS_SYS::CRN) as u8,
                        s.read(ISS_SYS::CRM) as u8,
                        s.read(ISS_SYS::OP2) as u8,
                    ),
                    rt: s.read(ISS_SYS::RT) as u8,
                    read: s.is_set(ISS_SYS::DIR),
                })
            }
            Some(Class::DataAbortLowerEL) => {
                let d = syndrome.abort_iss();
                let fault = FaultKind::from_fsc(d.read(ISS_DABT::DFSC) as u8);
                let far_valid = !d.is_set(ISS_DABT::FNV);
                let far_low = if far_valid { far } else { 0 };
                Exit::DataAbort(DataAbort {
                    esr,
                    far,
                    far_valid,
                    ipa: fault.hpfar_valid().then(|| fault_ipa(hpfar, far_low)),
                    fault,
                    s1ptw: d.is_set(ISS_DABT::S1PTW),
                    write: d.is_set(ISS_DABT::WNR),
                    cache_maintenance: d.is_set(ISS_DABT::CM),
                    external: d.is_set(ISS_DABT::EA),
                })
            }
            Some(Class::InstrAbortLowerEL) => {
                // The instruction-abort ISS shares FnV, S1PTW and the status code layout.
                let d = syndrome.abort_iss();
                let fault = FaultKind::from_fsc(d.read(ISS_DABT::DFSC) as u8);
                let far_valid = !d.is_set(ISS_DABT::FNV);
                let far_low = if far_valid { far } else { 0 };
                Exit::InstrAbort(InstrAbort {
                    esr,
                    far,
                    far_valid,
                    ipa: fault.hpfar_valid().then(|| fault_ipa(hpfar, far_low)),
                    fault,
                    s1ptw: d.is_set(ISS_DABT::S1PTW),
                })
            }
            _ => Exit::Other {
                ec: syndrome.ec(),
                iss: iss as u32,
            },
        }
    }

    /// The length of the trapped instruction from `ESR_EL2.IL`: 4, or 2 for a 16-bit T32
    /// instruction (only possible from AArch32 EL0).
    pub fn instr_len(esr: u64) -> u64 {
        Esr::new(esr).instr_len()
    }
}

impl Wfx {
    /// The instruction a trap reported as WFI really was, from its A64 encoding `instr`: WFIT
    /// (`0xd5031020 | Rd`, Arm ARM "WFIT") gives [`Wfx::Wfit`] with its register, anything else
    /// stays [`Wfx::Wfi`]. Some implementations (QEMU 10's TCG) report a trapped WFIT with
    /// `ESR_EL2.ISS.TI` = 0b00 and no register (the Arm ARM says 0b10, `RV` = 1, `RN`): the run
    /// loop reads the instruction to tell, so the deadline is kept there too.
    pub fn refine_wfi(instr: u32) -> Wfx {
        if instr & !0x1f == 0xd503_1020 {
            Wfx::Wfit {
                reg: (instr & 0x1f) as u8,
            }
        } else {
            Wfx::Wfi
        }
    }
}

/// The exception a vCPU found running AArch32 EL0 gets: the Illegal Execution state exception
/// that follows an illegal exception return (Arm ARM chapter D1, "Illegal return events from
/// AArch64 state": a return to an execution state the Exception level does not support).
///
/// hyp shows the guest an AArch64-only EL0 (`ID_AA64PFR0_EL1.EL0` = 1). The architecture gives
/// EL2 no control that refuses an `ERET` to AArch32 EL0 on a CPU that implements it, so the run
/// loop checks `SPSR_EL2.M[4]` at every exit instead; a vCPU in AArch32 state (necessarily EL0,
/// `HCR_EL2.RW` = 1) is put where the illegal return would have left it: at EL1 with
/// `PSTATE.IL` set, taking the Illegal Execution state exception (`ESR_EL1.EC` 0x0E) at the
/// AArch32 PC, from the current EL with SP_EL1 (vector offset 0x200).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IllegalReturn {
    /// `ESR_EL1`: EC 0x0E (Illegal Execution state), IL 1, ISS 0.
    pub esr: u64,
    /// The PSTATE the illegal return produced, which the exception saves in `SPSR_EL1`: EL1h
    /// (`M` = 0b0101), `IL` set, N, Z, C, V, A, I, F from the AArch32 PSTATE.
    pub spsr: u64,
}

/// `SPSR_EL2.M[4]`: the exit came from AArch32 state (aarch64-cpu's `M` field is bits 3:0).
const SPSR_M_AARCH32: Field<u64, SPSR_EL2::Register> = Field::new(1, 4);

/// The [`IllegalReturn`] for an exit whose `SPSR_EL2` is `spsr_el2`, or `None` when the vCPU
/// was in AArch64 state.
pub fn aarch32_el0(spsr_el2: u64) -> Option<IllegalReturn> {
    let from = LocalRegisterCopy::<u64, SPSR_EL2::Register>::new(spsr_el2);
    if !from.is_set(SPSR_M_AARCH32) {
        return None;
    }
    // N, Z, C, V, A, I, F and IL sit at the same bits in the AArch32 and AArch64 layouts.
    let mut spsr = LocalRegisterCopy::<u64, SPSR_EL2::Register>::new(0);
    for f in [
        SPSR_EL2::N,
        SPSR_EL2::Z,
        SPSR_EL2::C,
        SPSR_EL2::V,
        SPSR_EL2::A,
        SPSR_EL2::I,
        SPSR_EL2::F,
    ] {
        spsr.modify(f.val(from.read(f)));
    }
    spsr.modify(SPSR_EL2::IL::SET + SPSR_EL2::M::EL1h);
    Some(IllegalReturn {
        esr: (ESR_EL2::EC::IllegalExecutionState + ESR_EL2::IL::SET).value,
        spsr: spsr.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // ESR values below were assembled by hand from the Arm ARM field tables:
    // EC<<26 | IL<<25 | ISS.

    #[test]
    fn str_w1_to_uart_is_a_word_store() {
        // EC 0x24, IL, ISV, SAS=2 (word), SRT=1, SF=0, WnR, DFSC=0b000111 (translation L3).
        let esr = 0x9381_0047;
        let hpfar = 0x0900_0000u64 >> 12 << 4;
        let exit = Exit::decode(esr, 0xffff_0000_0900_0030, hpfar);
        let Exit::DataAbort(d) = exit else {
            panic!("{exit:?}")
        };
        assert_eq!(d.fault, FaultKind::Translation { level: 3 });
        assert!(d.write && d.far_valid && !d.s1ptw);
        assert_eq!(d.ipa, Some(Ipa::new(0x0900_0030)));
        let m = d.mmio().unwrap();
        assert_eq!(
            m,
            MmioAccess {
                ipa: Ipa::new(0x0900_0030),
                size: AccessSize::B4,
                write: true,
                reg: 1,
                sign_extend: false,
                reg64: false,
                acquire_release: false
            }
        );
        assert_eq!(m.store_value(0xdead_beef_1234_5678), 0x1234_5678);
        assert_eq!(Exit::instr_len(esr), 4);
    }

    #[test]
    fn ldrsb_x3_sign_extends_to_64_bits() {
        // ISV, SAS=0, SSE, SRT=3, SF=1, read, DFSC translation L2 (0b000110).
        let esr = 0x9300_0000 | (1 << 21) | (3 << 16) | (1 << 15) | 0b000110;
        let d = match Exit::decode(esr, 0x1234, 0x8_0000_0000 >> 12 << 4) {
            Exit::DataAbort(d) => d,
            e => panic!("{e:?}"),
        };
        let m = d.mmio().unwrap();
        assert_eq!(m.ipa, Ipa::new(0x8_0000_0234));
        assert_eq!(m.size, AccessSize::B1);
        assert!(!m.write && m.sign_extend && m.reg64);
        assert_eq!(m.reg, 3);
        assert_eq!(m.load_value(0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(m.load_value(0x7f), 0x7f);
        // Garbage above the access size is ignored.
        assert_eq!(m.load_value(0xabcd_0001), 1);
    }

    #[test]
    fn load_rules_for_w_registers() {
        let mut m = MmioAccess {
            ipa: Ipa::ZERO,
            size: AccessSize::B2,
            write: false,
            reg: 0,
            sign_extend: true,
            reg64: false,
            acquire_release: false,
        };
        // LDRSH Wt: sign-extended to 32 bits, upper half of Xt zero.
        assert_eq!(m.load_value(0x8001), 0xffff_8001);
        m.sign_extend = false;
        assert_eq!(m.load_value(0xffff_8001), 0x8001);
        // LDRSW Xt.
        m.size = AccessSize::B4;
        m.sign_extend = true;
        m.reg64 = true;
        assert_eq!(m.load_value(0x8000_0000), 0xffff_ffff_8000_0000);
        // LDR Xt, 64-bit: no change.
        m.size = AccessSize::B8;
        m.sign_extend = false;
        assert_eq!(m.load_value(u64::MAX - 1), u64::MAX - 1);
    }

    #[test]
    fn data_abort_without_isv_is_an_error() {
        // LDP to MMIO: ISV=0, read, translation fault L3.
        let esr = 0x9200_0007;
        let Exit::DataAbort(d) = Exit::decode(esr, 0x10, 0x0800_0000 >> 12 << 4) else {
            panic!()
        };
        assert_eq!(
            d.mmio(),
            Err(ExitError::NoSyndrome {
                esr,
                ipa: Some(Ipa::new(0x0800_0010))
            })
        );
        let msg = alloc::format!("{}", d.mmio().unwrap_err());
        assert!(msg.contains("0x0000000008000010"), "{msg}");
    }

    #[test]
    fn external_abort_has_no_ipa() {
        // Synchronous external abort, FnV set.
        let esr = 0x9200_0000 | (1 << 10) | (1 << 9) | 0b010000;
        let Exit::DataAbort(d) = Exit::decode(esr, 0, 0x1230) else {
            panic!()
        };
        assert_eq!(d.fault, FaultKind::SyncExternal);
        assert!(d.external && !d.far_valid);
        assert_eq!(d.ipa, None);
        assert!(matches!(d.mmio(), Err(ExitError::NoIpa { .. })));
    }

    #[test]
    fn stage1_walk_fault_into_mmio_is_refused() {
        let esr = 0x9300_0000 | (1 << 7) | 0b000101;
        let Exit::DataAbort(d) = Exit::decode(esr, 0x40, 0x9000 << 4) else {
            panic!()
        };
        assert!(d.s1ptw);
        assert_eq!(
            d.mmio(),
            Err(ExitError::TableWalkToMmio {
                ipa: Ipa::new(0x0900_0040)
            })
        );
        // The IPA prints as the number it is, zero-padded (the warning line hyp logs).
        let msg = alloc::format!("{}", d.mmio().unwrap_err());
        assert!(msg.contains("at IPA 0x0000000009000040:"), "{msg}");
    }

    #[test]
    fn hpfar_uses_bits_43_to_4_for_ipa_51_to_12() {
        // Highest FIPA bit: IPA bit 51 <- HPFAR bit 43.
        assert_eq!(fault_ipa(1 << 43, 0), Ipa::new(1 << 51));
        assert_eq!(fault_ipa(1 << 4, 0xfff_fabc), Ipa::new(0x1abc));
        // NS (bit 63) and bits above 43 are not part of the address.
        assert_eq!(
            fault_ipa((1 << 63) | (1 << 44) | (0x40 << 4), 0),
            Ipa::new(0x40 << 12)
        );
    }

    #[test]
    fn hvc_smc_immediates() {
        assert_eq!(Exit::decode(0x5a00_0000, 0, 0), Exit::Hvc { imm: 0 });
        assert_eq!(Exit::decode(0x5a00_1234, 0, 0), Exit::Hvc { imm: 0x1234 });
        assert_eq!(Exit::decode(0x5e00_0007, 0, 0), Exit::Smc { imm: 7 });
    }

    #[test]
    fn msr_icc_sgi1r_and_mrs_id_register() {
        // MSR ICC_SGI1R_EL1, x2: Op0=3 Op2=5 Op1=0 CRn=12 Rt=2 CRm=11 dir=0.
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (2 << 5) | (11 << 1);
        let e = Exit::decode((0x18 << 26) | (1 << 25) | iss, 0, 0);
        assert_eq!(
            e,
            Exit::SysReg(SysRegAccess {
                reg: SysReg::ICC_SGI1R_EL1,
                rt: 2,
                read: false
            })
        );
        // MRS x30, ID_AA64MMFR0_EL1 (3,0,0,7,0).
        let iss = (3 << 20) | (30 << 5) | (7 << 1) | 1;
        let Exit::SysReg(a) = Exit::decode((0x18 << 26) | (1 << 25) | iss, 0, 0) else {
            panic!()
        };
        assert!(a.read);
        assert_eq!(a.rt, 30);
        assert_eq!(a.reg, SysReg::new(3, 0, 0, 7, 0));
        assert_eq!(alloc::format!("{}", a.reg), "ID_AA64MMFR0_EL1");
        assert_eq!(
            alloc::format!("{}", SysReg::new(3, 1, 15, 2, 1)),
            "S3_1_C15_C2_1"
        );
    }

    #[test]
    fn sysreg_fields_round_trip() {
        for op0 in 0..4 {
            for op1 in [0, 3, 7] {
                for crn in [0, 9, 15] {
                    for crm in [0, 5, 15] {
                        for op2 in [0, 6, 7] {
                            let r = SysReg::new(op0, op1, crn, crm, op2);
                            assert_eq!(
                                (r.op0(), r.op1(), r.crn(), r.crm(), r.op2()),
                                (op0, op1, crn, crm, op2)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn wfi_wfe_wfit() {
        assert_eq!(Exit::decode(0x0600_0000, 0, 0), Exit::Wfx(Wfx::Wfi));
        assert_eq!(Exit::decode(0x0600_0001, 0, 0), Exit::Wfx(Wfx::Wfe));
        assert_eq!(
            Exit::decode(0x0600_0000 | (9 << 5) | (1 << 2) | 2, 0, 0),
            Exit::Wfx(Wfx::Wfit { reg: 9 })
        );
        assert_eq!(
            Exit::decode(0x0600_0003 | (4 << 5), 0, 0),
            Exit::Wfx(Wfx::Wfet { reg: 4 })
        );
    }

    #[test]
    fn instruction_abort_and_other_classes() {
        // Instruction abort, permission fault L3, IPA 0x4008_0000.
        let Exit::InstrAbort(i) = Exit::decode(0x8200_000f, 0x123, 0x40080 << 4) else {
            panic!()
        };
        assert_eq!(i.fault, FaultKind::Permission { level: 3 });
        assert_eq!(i.ipa, Some(Ipa::new(0x4008_0123)));
        // EC 0 (unknown) and a 16-bit instruction length.
        assert_eq!(Exit::decode(0, 0, 0), Exit::Other { ec: 0, iss: 0 });
        assert_eq!(Exit::instr_len(0), 2);
        // SVE trap (EC 0x19) is not handled here.
        assert_eq!(
            Exit::decode((0x19 << 26) | (1 << 25), 0, 0),
            Exit::Other { ec: 0x19, iss: 0 }
        );
    }
    #[test]
    fn aarch32_el0_becomes_an_illegal_return() {
        // AArch64 EL1h, EL0t, EL1t: nothing to do.
        assert_eq!(aarch32_el0(0x3c5), None);
        assert_eq!(aarch32_el0(0x0), None);
        assert_eq!(aarch32_el0(0x4), None);
        // AArch32 User mode (0b10000), Z and C set, I masked, Thumb (bit 5) and E (bit 9).
        let r = aarch32_el0(0x6000_0000 | 1 << 9 | 1 << 7 | 1 << 5 | 0x10).unwrap();
        assert_eq!(r.esr >> 26, 0x0e);
        assert_eq!(r.esr & (1 << 25), 1 << 25);
        assert_eq!(r.esr & 0x1ff_ffff, 0);
        assert_eq!(r.spsr, 0x6000_0000 | 1 << 20 | 1 << 7 | 0b0101);
    }
    #[test]
    fn wfi_refined_from_its_encoding() {
        assert_eq!(Wfx::refine_wfi(0xd503_1020), Wfx::Wfit { reg: 0 });
        assert_eq!(Wfx::refine_wfi(0xd503_1029), Wfx::Wfit { reg: 9 });
        assert_eq!(Wfx::refine_wfi(0xd503_103e), Wfx::Wfit { reg: 30 });
        assert_eq!(Wfx::refine_wfi(0xd503_207f), Wfx::Wfi); // WFI
        assert_eq!(Wfx::refine_wfi(0xd503_1003), Wfx::Wfi); // WFET x3
        assert_eq!(Wfx::refine_wfi(0), Wfx::Wfi);
    }
}
