//! Exception syndromes (Arm ARM D24.2.41 `ESR_EL2`, D24.2.40 `ESR_EL1`): the one table of
//! exception classes hyp tells apart, the data/instruction fault status codes, and the ISS
//! layout of a data abort, which hyp both decodes (guest exits, its own exceptions) and builds
//! (the aborts it injects).

use aarch64_cpu::registers::ESR_EL2;
use core::fmt;
use tock_registers::LocalRegisterCopy;

pub use fields::ISS_DABT;

/// `register_bitfields!` generates helper items without documentation; each field is
/// documented here.
#[allow(missing_docs)]
mod fields {
    use tock_registers::register_bitfields;

    register_bitfields! {u64,
        /// ISS of a Data Abort (EC 0b100100 / 0b100101). An Instruction Abort's ISS shares
        /// `FnV`, `EA`, `S1PTW` and the status code (`IFSC`) at the same positions.
        pub ISS_DABT [
            /// Instruction Syndrome Valid: bits \[23:14\] hold a valid syndrome.
            ISV OFFSET(24) NUMBITS(1) [],
            /// Syndrome Access Size: 0 byte, 1 halfword, 2 word, 3 doubleword.
            SAS OFFSET(22) NUMBITS(2) [],
            /// Syndrome Sign Extend: the load sign-extends.
            SSE OFFSET(21) NUMBITS(1) [],
            /// Syndrome Register Transfer: Rt (31 = XZR/WZR).
            SRT OFFSET(16) NUMBITS(5) [],
            /// Sixty-Four: Rt is a 64-bit (X) register.
            SF OFFSET(15) NUMBITS(1) [],
            /// Acquire/Release semantics.
            AR OFFSET(14) NUMBITS(1) [],
            /// FAR not Valid.
            FNV OFFSET(10) NUMBITS(1) [],
            /// External abort type.
            EA OFFSET(9) NUMBITS(1) [],
            /// Cache maintenance.
            CM OFFSET(8) NUMBITS(1) [],
            /// The fault was on a stage-2 walk for a stage-1 translation table walk.
            S1PTW OFFSET(7) NUMBITS(1) [],
            /// Write not Read.
            WNR OFFSET(6) NUMBITS(1) [],
            /// Data (or Instruction) Fault Status Code: a [`super::FaultKind`].
            DFSC OFFSET(0) NUMBITS(6) []
        ]
    }
}

/// An exception class, named by aarch64-cpu's `ESR_EL2::EC` values (the same encodings as
/// `ESR_EL1::EC`).
pub type Class = ESR_EL2::EC::Value;

/// An `ESR_EL2` value with typed field access.
#[derive(Clone, Copy)]
pub struct Esr(LocalRegisterCopy<u64, ESR_EL2::Register>);

impl fmt::Debug for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Esr({:#x})", self.0.get())
    }
}

impl Esr {
    /// Wraps a raw value.
    pub fn new(raw: u64) -> Self {
        Esr(LocalRegisterCopy::new(raw))
    }

    /// The raw value.
    pub fn raw(&self) -> u64 {
        self.0.get()
    }

    /// The exception class, `ESR_EL2.EC` \[31:26\], or `None` for an unallocated encoding.
    pub fn class(&self) -> Option<Class> {
        self.0.read_as_enum(ESR_EL2::EC)
    }

    /// The raw exception class.
    pub fn ec(&self) -> u8 {
        self.0.read(ESR_EL2::EC) as u8
    }

    /// The instruction-specific syndrome, `ESR_EL2.ISS` \[24:0\].
    pub fn iss(&self) -> u32 {
        self.0.read(ESR_EL2::ISS) as u32
    }

    /// The ISS read as a data (or instruction) abort's.
    pub fn abort_iss(&self) -> LocalRegisterCopy<u64, ISS_DABT::Register> {
        LocalRegisterCopy::new(u64::from(self.iss()))
    }

    /// `ESR_EL2.IL`: the trapped instruction was 32 bits (else 16).
    pub fn il32(&self) -> bool {
        self.0.is_set(ESR_EL2::IL)
    }

    /// The length of the trapped instruction: 4, or 2 for a 16-bit T32 instruction (only
    /// possible from AArch32 EL0).
    pub fn instr_len(&self) -> u64 {
        if self.il32() {
            4
        } else {
            2
        }
    }

    /// Whether the class is a data or instruction abort (so FAR_EL2 and a fault status
    /// code are meaningful).
    pub fn is_abort(&self) -> bool {
        matches!(
            self.class(),
            Some(
                Class::DataAbortLowerEL
                    | Class::DataAbortCurrentEL
                    | Class::InstrAbortLowerEL
                    | Class::InstrAbortCurrentEL
            )
        )
    }

    /// Whether the class is a data abort.
    pub fn is_data_abort(&self) -> bool {
        matches!(
            self.class(),
            Some(Class::DataAbortLowerEL | Class::DataAbortCurrentEL)
        )
    }

    /// The fault status of an abort (`DFSC`/`IFSC`).
    pub fn fault(&self) -> Option<FaultKind> {
        self.is_abort()
            .then(|| FaultKind::from_fsc(self.abort_iss().read(ISS_DABT::DFSC) as u8))
    }

    /// `WnR` of a data abort: the access was a write.
    pub fn write(&self) -> Option<bool> {
        self.is_data_abort()
            .then(|| self.abort_iss().is_set(ISS_DABT::WNR))
    }

    /// A short description of the exception class.
    pub fn class_name(&self) -> &'static str {
        match self.class() {
            Some(Class::Unknown) => "unknown reason (undefined instruction)",
            Some(Class::TrappedWFIorWFE) => "trapped WFI/WFE",
            Some(Class::TrappedFP) => "trapped SVE/SIMD/FP access",
            Some(Class::TrappedPointerAuth) => "trapped pointer authentication instruction",
            Some(Class::BranchTarget) => "branch target exception",
            Some(Class::IllegalExecutionState) => "illegal execution state",
            Some(Class::SVC64) => "SVC in AArch64",
            Some(Class::HVC64) => "HVC in AArch64",
            Some(Class::SMC64) => "SMC in AArch64",
            Some(Class::TrappedMsrMrs) => "trapped MSR/MRS/system instruction",
            Some(Class::TrappedSve) => "trapped SVE access",
            Some(Class::PointerAuth) => "pointer authentication failure",
            Some(Class::TrappedSME) => "trapped SME access",
            Some(Class::InstrAbortLowerEL) => "instruction abort from a lower EL",
            Some(Class::InstrAbortCurrentEL) => "instruction abort at EL2",
            Some(Class::PCAlignmentFault) => "PC alignment fault",
            Some(Class::DataAbortLowerEL) => "data abort from a lower EL",
            Some(Class::DataAbortCurrentEL) => "data abort at EL2",
            Some(Class::SPAlignmentFault) => "SP alignment fault",
            Some(Class::TrappedFP64) => "trapped floating-point exception",
            Some(Class::SError) => "SError",
            Some(Class::BreakpointLowerEL) => "breakpoint from a lower EL",
            Some(Class::BreakpointCurrentEL) => "breakpoint at EL2",
            Some(Class::SoftwareStepLowerEL) => "software step from a lower EL",
            Some(Class::SoftwareStepCurrentEL) => "software step at EL2",
            Some(Class::WatchpointLowerEL) => "watchpoint from a lower EL",
            Some(Class::WatchpointCurrentEL) => "watchpoint at EL2",
            Some(Class::Brk64) => "BRK in AArch64",
            Some(_) => "AArch32 or other trap",
            None => "reserved exception class",
        }
    }
}

impl fmt::Display for Esr {
    /// `ESR_EL2 0x96000045: EC 0x25 data abort at EL2, IL 32-bit, ISS 0x45
    /// (translation fault, level 1, write)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ESR_EL2 {:#010x}: EC {:#04x} {}, IL {}, ISS {:#x}",
            self.raw(),
            self.ec(),
            self.class_name(),
            if self.il32() { "32-bit" } else { "16-bit" },
            self.iss()
        )?;
        if let Some(fault) = self.fault() {
            write!(f, " ({fault}")?;
            if let Some(w) = self.write() {
                f.write_str(if w { ", write" } else { ", read" })?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The class of a data or instruction fault, from `DFSC`/`IFSC` (Arm ARM, ISS encoding for a
/// Data Abort, DFSC table). `level` is -1..=3 (-1 only with FEAT_LPA2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Address size fault at `level`.
    AddressSize {
        /// Lookup level.
        level: i8,
    },
    /// Translation fault at `level`.
    Translation {
        /// Lookup level.
        level: i8,
    },
    /// Access flag fault at `level`.
    AccessFlag {
        /// Lookup level.
        level: i8,
    },
    /// Permission fault at `level`.
    Permission {
        /// Lookup level.
        level: i8,
    },
    /// Synchronous External abort, not on a translation table walk.
    SyncExternal,
    /// Synchronous External abort on a translation table walk at `level`.
    SyncExternalOnWalk {
        /// Lookup level.
        level: i8,
    },
    /// Alignment fault.
    Alignment,
    /// TLB conflict abort.
    TlbConflict,
    /// Any other status code (parity/ECC, tag check, granule protection, IMPDEF, ...).
    Other(u8),
}

/// DFSC of a synchronous tag check fault (FEAT_MTE2), kept as [`FaultKind::Other`].
const FSC_TAG_CHECK: u8 = 0b01_0001;

impl FaultKind {
    /// Decodes a 6-bit DFSC/IFSC.
    pub const fn from_fsc(fsc: u8) -> Self {
        let fsc = fsc & 0x3f;
        let level = (fsc & 3) as i8;
        match fsc {
            0b00_0000..=0b00_0011 => FaultKind::AddressSize { level },
            0b00_0100..=0b00_0111 => FaultKind::Translation { level },
            // 0b001000 is the level-0 access flag fault (FEAT_LPA2).
            0b00_1000..=0b00_1011 => FaultKind::AccessFlag { level },
            0b00_1100..=0b00_1111 => FaultKind::Permission { level },
            0b01_0000 => FaultKind::SyncExternal,
            0b01_0011 => FaultKind::SyncExternalOnWalk { level: -1 },
            0b01_0100..=0b01_0111 => FaultKind::SyncExternalOnWalk { level },
            0b10_0001 => FaultKind::Alignment,
            0b10_1001 => FaultKind::AddressSize { level: -1 },
            0b10_1011 => FaultKind::Translation { level: -1 },
            0b11_0000 => FaultKind::TlbConflict,
            other => FaultKind::Other(other),
        }
    }

    /// The 6-bit DFSC/IFSC of this kind (the inverse of [`FaultKind::from_fsc`] for every
    /// code it decodes); `None` for a level no encoding has.
    pub const fn fsc(self) -> Option<u8> {
        const fn by_level(base: u8, level: i8, minus_one: Option<u8>) -> Option<u8> {
            match level {
                -1 => minus_one,
                0..=3 => Some(base | level as u8),
                _ => None,
            }
        }
        match self {
            FaultKind::AddressSize { level } => by_level(0b00_0000, level, Some(0b10_1001)),
            FaultKind::Translation { level } => by_level(0b00_0100, level, Some(0b10_1011)),
            FaultKind::AccessFlag { level } => by_level(0b00_1000, level, None),
            FaultKind::Permission { level } => by_level(0b00_1100, level, None),
            FaultKind::SyncExternal => Some(0b01_0000),
            FaultKind::SyncExternalOnWalk { level } => by_level(0b01_0100, level, Some(0b01_0011)),
            FaultKind::Alignment => Some(0b10_0001),
            FaultKind::TlbConflict => Some(0b11_0000),
            FaultKind::Other(code) => Some(code & 0x3f),
        }
    }

    /// The lookup level, for the kinds that carry one.
    pub const fn level(self) -> Option<i8> {
        match self {
            FaultKind::AddressSize { level }
            | FaultKind::Translation { level }
            | FaultKind::AccessFlag { level }
            | FaultKind::Permission { level }
            | FaultKind::SyncExternalOnWalk { level } => Some(level),
            _ => None,
        }
    }

    /// Whether `HPFAR_EL2` holds the faulting IPA for this kind of fault taken to EL2: stage-2
    /// translation, access flag, permission and address size faults (Arm ARM D24.2.66,
    /// `HPFAR_EL2`: "valid for ... Translation, Access flag, Permission and Address size faults
    /// on stage 2 translation"). For other kinds HPFAR_EL2 is UNKNOWN.
    pub const fn hpfar_valid(self) -> bool {
        matches!(
            self,
            FaultKind::AddressSize { .. }
                | FaultKind::Translation { .. }
                | FaultKind::AccessFlag { .. }
                | FaultKind::Permission { .. }
        )
    }
}

impl fmt::Display for FaultKind {
    /// `translation fault, level 1`, `synchronous external abort`, `fault status 0x3f`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FaultKind::AddressSize { level } => write!(f, "address size fault, level {level}"),
            FaultKind::Translation { level } => write!(f, "translation fault, level {level}"),
            FaultKind::AccessFlag { level } => write!(f, "access flag fault, level {level}"),
            FaultKind::Permission { level } => write!(f, "permission fault, level {level}"),
            FaultKind::SyncExternal => f.write_str("synchronous external abort"),
            FaultKind::SyncExternalOnWalk { level } => {
                write!(f, "synchronous external abort on table walk, level {level}")
            }
            FaultKind::Alignment => f.write_str("alignment fault"),
            FaultKind::TlbConflict => f.write_str("TLB conflict abort"),
            FaultKind::Other(FSC_TAG_CHECK) => f.write_str("synchronous tag check fault"),
            FaultKind::Other(code) => write!(f, "fault status {code:#04x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn data_abort_at_el2_translation_fault_write() {
        // EC 0x25, IL, WnR, DFSC 0b000101 (translation fault level 1).
        let e = Esr::new(0x9600_0045);
        assert_eq!(e.ec(), 0x25);
        assert_eq!(e.class(), Some(Class::DataAbortCurrentEL));
        assert!(e.il32());
        assert_eq!(e.instr_len(), 4);
        assert_eq!(e.fault(), Some(FaultKind::Translation { level: 1 }));
        assert_eq!(e.write(), Some(true));
        assert_eq!(
            e.to_string(),
            "ESR_EL2 0x96000045: EC 0x25 data abort at EL2, IL 32-bit, ISS 0x45 \
             (translation fault, level 1, write)"
        );
    }

    #[test]
    fn read_permission_fault_level3() {
        let e = Esr::new((0x25 << 26) | (1 << 25) | 0x0f);
        assert_eq!(e.write(), Some(false));
        assert!(e.to_string().ends_with("(permission fault, level 3, read)"));
    }

    #[test]
    fn instruction_abort_has_no_direction() {
        let e = Esr::new((0x21 << 26) | (1 << 25) | 0x0e);
        assert_eq!(e.class_name(), "instruction abort at EL2");
        assert_eq!(e.write(), None);
        assert!(e.to_string().ends_with("(permission fault, level 2)"));
    }

    #[test]
    fn non_aborts() {
        let brk = Esr::new((0x3c << 26) | (1 << 25) | 0x1234);
        assert_eq!(brk.class_name(), "BRK in AArch64");
        assert_eq!(brk.iss(), 0x1234);
        assert_eq!(brk.fault(), None);
        assert_eq!(
            brk.to_string(),
            "ESR_EL2 0xf2001234: EC 0x3c BRK in AArch64, IL 32-bit, ISS 0x1234"
        );
        assert_eq!(
            Esr::new(0).class_name(),
            "unknown reason (undefined instruction)"
        );
        assert_eq!(Esr::new(0).instr_len(), 2);
        assert_eq!(Esr::new(0x16 << 26).class_name(), "HVC in AArch64");
        assert_eq!(Esr::new(0x17 << 26).class_name(), "SMC in AArch64");
        assert_eq!(
            Esr::new(0x18 << 26).class_name(),
            "trapped MSR/MRS/system instruction"
        );
        assert_eq!(
            Esr::new(0x24 << 26).class_name(),
            "data abort from a lower EL"
        );
        assert_eq!(Esr::new(0x2f << 26).class_name(), "SError");
        // 0x3f is not an allocated class.
        assert_eq!(
            Esr::new(0x3f << 26).class_name(),
            "reserved exception class"
        );
        assert_eq!(Esr::new(0x3f << 26).class(), None);
    }

    #[test]
    fn fault_status_codes() {
        let name = |fsc| FaultKind::from_fsc(fsc).to_string();
        assert_eq!(name(0x04), "translation fault, level 0");
        assert_eq!(name(0x0b), "access flag fault, level 3");
        assert_eq!(name(0x10), "synchronous external abort");
        assert_eq!(name(0x11), "synchronous tag check fault");
        assert_eq!(
            name(0x15),
            "synchronous external abort on table walk, level 1"
        );
        assert_eq!(name(0x21), "alignment fault");
        assert_eq!(name(0x2b), "translation fault, level -1");
        assert_eq!(name(0x29), "address size fault, level -1");
        assert_eq!(name(0x30), "TLB conflict abort");
        assert_eq!(name(0x3f), "fault status 0x3f");
        assert_eq!(
            FaultKind::from_fsc(0b000100),
            FaultKind::Translation { level: 0 }
        );
        assert_eq!(
            FaultKind::from_fsc(0b101011),
            FaultKind::Translation { level: -1 }
        );
        assert_eq!(
            FaultKind::from_fsc(0b001001),
            FaultKind::AccessFlag { level: 1 }
        );
        assert_eq!(
            FaultKind::from_fsc(0b001111),
            FaultKind::Permission { level: 3 }
        );
        assert_eq!(
            FaultKind::from_fsc(0b000010),
            FaultKind::AddressSize { level: 2 }
        );
        assert_eq!(
            FaultKind::from_fsc(0b010101),
            FaultKind::SyncExternalOnWalk { level: 1 }
        );
        assert_eq!(
            FaultKind::from_fsc(0b010011),
            FaultKind::SyncExternalOnWalk { level: -1 }
        );
        assert_eq!(FaultKind::from_fsc(0b100001), FaultKind::Alignment);
        assert_eq!(FaultKind::from_fsc(0b110000), FaultKind::TlbConflict);
        assert_eq!(FaultKind::from_fsc(0b011000), FaultKind::Other(0b011000));
        assert!(FaultKind::from_fsc(0b001101).hpfar_valid());
        assert!(!FaultKind::from_fsc(0b010000).hpfar_valid());
        assert_eq!(FaultKind::from_fsc(0b001110).level(), Some(2));
        assert_eq!(FaultKind::Alignment.level(), None);
    }

    #[test]
    fn every_status_code_round_trips() {
        for fsc in 0..64u8 {
            assert_eq!(FaultKind::from_fsc(fsc).fsc(), Some(fsc), "{fsc:#04x}");
        }
        assert_eq!(FaultKind::Permission { level: 4 }.fsc(), None);
        assert_eq!(FaultKind::AccessFlag { level: -1 }.fsc(), None);
    }

    #[test]
    fn abort_iss_fields_follow_the_arm_arm() {
        // ISV 24, SAS 23:22, SSE 21, SRT 20:16, SF 15, AR 14, FnV 10, EA 9, CM 8, S1PTW 7,
        // WnR 6, DFSC 5:0.
        let iss = ISS_DABT::ISV::SET
            + ISS_DABT::SAS.val(3)
            + ISS_DABT::SRT.val(31)
            + ISS_DABT::WNR::SET
            + ISS_DABT::DFSC.val(0x10);
        assert_eq!(iss.value, 0x01df_0050);
        assert_eq!(ISS_DABT::FNV::SET.value, 1 << 10);
        assert_eq!(ISS_DABT::S1PTW::SET.value, 1 << 7);
    }
}
