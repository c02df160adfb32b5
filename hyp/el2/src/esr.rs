//! Decoding `ESR_EL2` for exception reports (Arm ARM D24.2.41, "ESR_EL2").

use aarch64_cpu::registers::ESR_EL2;
use core::fmt;
use tock_registers::LocalRegisterCopy;

/// A raw `ESR_EL2` value with typed field access.
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

    /// The exception class, `ESR_EL2.EC` \[31:26\].
    pub fn ec(&self) -> u8 {
        self.0.read(ESR_EL2::EC) as u8
    }

    /// The instruction-specific syndrome, `ESR_EL2.ISS` \[24:0\].
    pub fn iss(&self) -> u32 {
        self.0.read(ESR_EL2::ISS) as u32
    }

    /// `ESR_EL2.IL`: the trapped instruction was 32 bits (else 16).
    pub fn il32(&self) -> bool {
        self.0.is_set(ESR_EL2::IL)
    }

    /// Whether the class is a data or instruction abort (so FAR_EL2 and a fault status
    /// code are meaningful).
    pub fn is_abort(&self) -> bool {
        use ESR_EL2::EC::Value as E;
        matches!(
            self.0.read_as_enum(ESR_EL2::EC),
            Some(E::DataAbortLowerEL)
                | Some(E::DataAbortCurrentEL)
                | Some(E::InstrAbortLowerEL)
                | Some(E::InstrAbortCurrentEL)
        )
    }

    /// Whether the class is a data abort.
    pub fn is_data_abort(&self) -> bool {
        use ESR_EL2::EC::Value as E;
        matches!(
            self.0.read_as_enum(ESR_EL2::EC),
            Some(E::DataAbortLowerEL) | Some(E::DataAbortCurrentEL)
        )
    }

    /// A short description of the exception class.
    pub fn class_name(&self) -> &'static str {
        use ESR_EL2::EC::Value as E;
        match self.0.read_as_enum(ESR_EL2::EC) {
            Some(E::Unknown) => "unknown reason (undefined instruction)",
            Some(E::TrappedWFIorWFE) => "trapped WFI/WFE",
            Some(E::TrappedFP) => "trapped SVE/SIMD/FP access",
            Some(E::TrappedPointerAuth) => "trapped pointer authentication instruction",
            Some(E::BranchTarget) => "branch target exception",
            Some(E::IllegalExecutionState) => "illegal execution state",
            Some(E::SVC64) => "SVC in AArch64",
            Some(E::HVC64) => "HVC in AArch64",
            Some(E::SMC64) => "SMC in AArch64",
            Some(E::TrappedMsrMrs) => "trapped MSR/MRS/system instruction",
            Some(E::TrappedSve) => "trapped SVE access",
            Some(E::PointerAuth) => "pointer authentication failure",
            Some(E::TrappedSME) => "trapped SME access",
            Some(E::InstrAbortLowerEL) => "instruction abort from a lower EL",
            Some(E::InstrAbortCurrentEL) => "instruction abort at EL2",
            Some(E::PCAlignmentFault) => "PC alignment fault",
            Some(E::DataAbortLowerEL) => "data abort from a lower EL",
            Some(E::DataAbortCurrentEL) => "data abort at EL2",
            Some(E::SPAlignmentFault) => "SP alignment fault",
            Some(E::TrappedFP64) => "trapped floating-point exception",
            Some(E::SError) => "SError",
            Some(E::BreakpointLowerEL) => "breakpoint from a lower EL",
            Some(E::BreakpointCurrentEL) => "breakpoint at EL2",
            Some(E::SoftwareStepLowerEL) => "software step from a lower EL",
            Some(E::SoftwareStepCurrentEL) => "software step at EL2",
            Some(E::WatchpointLowerEL) => "watchpoint from a lower EL",
            Some(E::WatchpointCurrentEL) => "watchpoint at EL2",
            Some(E::Brk64) => "BRK in AArch64",
            Some(_) => "AArch32 or other trap",
            None => "reserved exception class",
        }
    }

    /// The data/instruction fault status code, ISS\[5:0\] (aborts only).
    pub fn fsc(&self) -> Option<u8> {
        self.is_abort().then_some((self.iss() & 0x3f) as u8)
    }

    /// `WnR` (ISS bit 6) of a data abort: the access was a write.
    pub fn write(&self) -> Option<bool> {
        self.is_data_abort().then_some(self.iss() & (1 << 6) != 0)
    }
}

/// Describes a data/instruction fault status code (Arm ARM D24.2.41, DFSC/IFSC).
pub fn fsc_name(fsc: u8) -> FscName {
    FscName(fsc)
}

/// Display helper of [`fsc_name`].
#[derive(Clone, Copy, Debug)]
pub struct FscName(u8);

impl fmt::Display for FscName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fsc = self.0;
        let level = fsc & 3;
        match fsc {
            0b00_0000..=0b00_0011 => write!(f, "address size fault, level {level}"),
            0b00_0100..=0b00_0111 => write!(f, "translation fault, level {level}"),
            0b00_1000..=0b00_1011 => write!(f, "access flag fault, level {level}"),
            0b00_1100..=0b00_1111 => write!(f, "permission fault, level {level}"),
            0b01_0000 => f.write_str("synchronous external abort"),
            0b01_0001 => f.write_str("synchronous tag check fault"),
            0b01_0100..=0b01_0111 => {
                write!(f, "synchronous external abort on table walk, level {level}")
            }
            0b10_1001 => f.write_str("address size fault, level -1"),
            0b10_1011 => f.write_str("translation fault, level -1"),
            0b10_0001 => f.write_str("alignment fault"),
            0b11_0000 => f.write_str("TLB conflict abort"),
            _ => write!(f, "fault status {fsc:#04x}"),
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
        if let Some(fsc) = self.fsc() {
            write!(f, " ({}", fsc_name(fsc))?;
            if let Some(w) = self.write() {
                f.write_str(if w { ", write" } else { ", read" })?;
            }
            f.write_str(")")?;
        }
        Ok(())
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
        assert!(e.il32());
        assert_eq!(e.fsc(), Some(0x05));
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
        assert_eq!(brk.fsc(), None);
        assert_eq!(
            brk.to_string(),
            "ESR_EL2 0xf2001234: EC 0x3c BRK in AArch64, IL 32-bit, ISS 0x1234"
        );
        assert_eq!(
            Esr::new(0).class_name(),
            "unknown reason (undefined instruction)"
        );
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
    }

    #[test]
    fn fault_status_codes() {
        assert_eq!(fsc_name(0x04).to_string(), "translation fault, level 0");
        assert_eq!(fsc_name(0x0b).to_string(), "access flag fault, level 3");
        assert_eq!(fsc_name(0x10).to_string(), "synchronous external abort");
        assert_eq!(fsc_name(0x21).to_string(), "alignment fault");
        assert_eq!(fsc_name(0x2b).to_string(), "translation fault, level -1");
        assert_eq!(fsc_name(0x3f).to_string(), "fault status 0x3f");
    }
}
