//! EL1 system registers and system instructions that hyp traps and emulates itself (not the
//! ID registers: [`crate::idregs`]; not the GIC's SGI registers: [`crate::vgic`]).
//!
//! What traps, and why (the register-class table in the README is the full list):
//! - **OS lock** (`MDCR_EL2.TDOSA`): `OSLAR_EL1`, `OSLSR_EL1`, `OSDLR_EL1`, `DBGPRCR_EL1` are
//!   shared power-down and debug-lock controls of the physical CPU; each vCPU gets its own
//!   copy. `OSLSR_EL1.OSLM` = 0b10 says the OS lock is implemented (Arm ARM D19.2.90).
//! - **Debug ROM** (`MDCR_EL2.TDRA`): `MDRAR_EL1` reads 0, "no ROM table" (Valid = 0b00).
//! - **ACTLR_EL1, ACTLR2_EL1** (`HCR_EL2.TACR`): IMPLEMENTATION DEFINED controls of the
//!   physical CPU; read as zero, writes ignored.
//! - **Data cache maintenance by set/way** (`HCR_EL2.TSW`): `DC ISW/CSW/CISW` (and the MTE
//!   tag forms `DC IGSW/IGDSW/CGSW/CGDSW/CIGSW/CIGDSW`) act on the physical caches, shared with
//!   hyp and other VMs, and cannot be virtualized; they become [`Emulated::SetWay`], which the
//!   run loop turns into cleaning the VM's own memory by address, as KVM does.
//!
//! Everything else that traps here is UNDEFINED to the guest.

mod oslsr {
    tock_registers::register_bitfields! {u64,
        /// `OSLSR_EL1` (Arm ARM D24.3.21): the OS lock status hyp emulates.
        pub OSLSR_EL1 [
            /// `OSLM[1]`.
            OSLM_1 OFFSET(3) NUMBITS(1) [],
            /// Not trapped.
            NTT OFFSET(2) NUMBITS(1) [],
            /// The OS lock is locked.
            OSLK OFFSET(1) NUMBITS(1) [],
            /// `OSLM[0]`.
            OSLM_0 OFFSET(0) NUMBITS(1) []
        ]
    }
}

use crate::exit::SysReg;

/// `OSLAR_EL1` (write-only).
pub const OSLAR_EL1: SysReg = SysReg::new(2, 0, 1, 0, 4);
/// `OSLSR_EL1` (read-only).
pub const OSLSR_EL1: SysReg = SysReg::new(2, 0, 1, 1, 4);
/// `OSDLR_EL1`.
pub const OSDLR_EL1: SysReg = SysReg::new(2, 0, 1, 3, 4);
/// `DBGPRCR_EL1`.
pub const DBGPRCR_EL1: SysReg = SysReg::new(2, 0, 1, 4, 4);
/// `MDRAR_EL1` (read-only).
pub const MDRAR_EL1: SysReg = SysReg::new(2, 0, 1, 0, 0);
/// `ACTLR_EL1`.
pub const ACTLR_EL1: SysReg = SysReg::new(3, 0, 1, 0, 1);
/// `ACTLR2_EL1`.
pub const ACTLR2_EL1: SysReg = SysReg::new(3, 0, 1, 0, 3);

/// Whether `reg` is a data cache maintenance instruction by set/way: `DC <op>, Xt` with op0 1,
/// op1 0, CRn 7, CRm 6 (invalidate), 10 (clean) or 14 (clean and invalidate), op2 2 (data),
/// 4 or 6 (MTE tags, and tags with data).
pub fn is_set_way(reg: SysReg) -> bool {
    reg.op0() == 1
        && reg.op1() == 0
        && reg.crn() == 7
        && matches!(reg.crm(), 6 | 10 | 14)
        && matches!(reg.op2(), 2 | 4 | 6)
}

/// What the run loop does with a trapped access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulated {
    /// An MRS: write this value to Rt. Advance the PC.
    Read(u64),
    /// An MSR or a system instruction with no further effect. Advance the PC.
    Done,
    /// A set/way cache maintenance instruction: make the VM's memory coherent (by address),
    /// then advance the PC.
    SetWay,
    /// Not emulated: inject an Undefined Instruction exception.
    Undefined,
}

/// One vCPU's emulated EL1 registers, in their reset state (OS lock locked, as after a cold
/// reset: `OSLSR_EL1.OSLK` resets to 1, Arm ARM D19.2.90).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuSysRegs {
    os_lock: bool,
    os_double_lock: bool,
    core_no_powerdown: bool,
}

impl Default for VcpuSysRegs {
    fn default() -> Self {
        VcpuSysRegs {
            os_lock: true,
            os_double_lock: false,
            core_no_powerdown: false,
        }
    }
}

impl VcpuSysRegs {
    /// Whether the guest has its OS lock set.
    pub fn os_locked(&self) -> bool {
        self.os_lock
    }

    /// A trapped MRS (`read`) or MSR of `reg` with `value` (the MSR's Rt).
    pub fn access(&mut self, reg: SysReg, read: bool, value: u64) -> Emulated {
        if is_set_way(reg) {
            return if read {
                Emulated::Undefined
            } else {
                Emulated::SetWay
            };
        }
        match (reg, read) {
            (OSLAR_EL1, false) => self.os_lock = value & 1 != 0,
            (OSLSR_EL1, true) => {
                // OSLM = 0b10: the OS lock is implemented (FEAT_DoubleLock's model); nTT = 0.
                return Emulated::Read(
                    (oslsr::OSLSR_EL1::OSLM_1::SET
                        + oslsr::OSLSR_EL1::OSLK.val(u64::from(self.os_lock)))
                    .value,
                );
            }
            (OSDLR_EL1, true) => return Emulated::Read(u64::from(self.os_double_lock)),
            (OSDLR_EL1, false) => self.os_double_lock = value & 1 != 0,
            (DBGPRCR_EL1, true) => return Emulated::Read(u64::from(self.core_no_powerdown)),
            (DBGPRCR_EL1, false) => self.core_no_powerdown = value & 1 != 0,
            (MDRAR_EL1, true) | (ACTLR_EL1, true) | (ACTLR2_EL1, true) => return Emulated::Read(0),
            (ACTLR_EL1, false) | (ACTLR2_EL1, false) => {}
            _ => return Emulated::Undefined,
        }
        Emulated::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_lock_is_per_vcpu_and_starts_locked() {
        let mut a = VcpuSysRegs::default();
        let b = VcpuSysRegs::default();
        assert_eq!(a.access(OSLSR_EL1, true, 0), Emulated::Read(0b1010));
        assert_eq!(a.access(OSLAR_EL1, false, 0), Emulated::Done);
        assert_eq!(a.access(OSLSR_EL1, true, 0), Emulated::Read(0b1000));
        assert!(!a.os_locked());
        assert!(b.os_locked(), "another vCPU's lock is its own");
        assert_eq!(a.access(OSLAR_EL1, false, 1), Emulated::Done);
        assert_eq!(a.access(OSLSR_EL1, true, 0), Emulated::Read(0b1010));
    }

    #[test]
    fn double_lock_and_powerdown_request_keep_one_bit() {
        let mut v = VcpuSysRegs::default();
        assert_eq!(v.access(OSDLR_EL1, false, !0), Emulated::Done);
        assert_eq!(v.access(OSDLR_EL1, true, 0), Emulated::Read(1));
        assert_eq!(v.access(DBGPRCR_EL1, false, 0xffff_fffe), Emulated::Done);
        assert_eq!(v.access(DBGPRCR_EL1, true, 0), Emulated::Read(0));
    }

    #[test]
    fn read_only_write_only_and_unknown_registers() {
        let mut v = VcpuSysRegs::default();
        assert_eq!(v.access(OSLAR_EL1, true, 0), Emulated::Undefined);
        assert_eq!(v.access(OSLSR_EL1, false, 1), Emulated::Undefined);
        assert_eq!(v.access(MDRAR_EL1, true, 0), Emulated::Read(0));
        assert_eq!(v.access(MDRAR_EL1, false, 0), Emulated::Undefined);
        assert_eq!(v.access(ACTLR_EL1, false, !0), Emulated::Done);
        assert_eq!(v.access(ACTLR_EL1, true, 0), Emulated::Read(0));
        // ERRIDR_EL1 (RAS is hidden) and PMCR_EL0 (no PMU): UNDEFINED.
        assert_eq!(
            v.access(SysReg::new(3, 0, 5, 3, 0), true, 0),
            Emulated::Undefined
        );
        assert_eq!(
            v.access(SysReg::new(3, 3, 9, 12, 0), true, 0),
            Emulated::Undefined
        );
    }

    #[test]
    fn set_way_instructions_and_nothing_else() {
        let mut v = VcpuSysRegs::default();
        let mut n = 0;
        for crm in 0..16 {
            for op2 in 0..8 {
                let r = SysReg::new(1, 0, 7, crm, op2);
                if is_set_way(r) {
                    n += 1;
                    assert_eq!(v.access(r, false, 0), Emulated::SetWay);
                }
            }
        }
        // ISW, CSW, CISW, and the six MTE tag forms.
        assert_eq!(n, 9);
        // DC CIVAC (by address) is not set/way.
        assert!(!is_set_way(SysReg::new(1, 3, 7, 14, 1)));
        // DC ZVA is not either.
        assert!(!is_set_way(SysReg::new(1, 3, 7, 4, 1)));
    }
}
