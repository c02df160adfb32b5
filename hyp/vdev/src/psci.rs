//! PSCI 1.1 (DEN 0022) and SMCCC 1.1 (DEN 0028) for one VM, over per-vCPU power state.
//!
//! The run loop calls [`Psci::call`] for every HVC/SMC with immediate 0, with the caller's
//! x0..x3, and applies the returned [`PsciAction`]. Every function this module does not
//! implement returns `NOT_SUPPORTED` (-1), as SMCCC requires for unknown function IDs.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use platform::mpidr::{Mpidr, AFFINITY_MASK};

/// Function identifiers (DEN 0022 §5.1, DEN 0028 §7). `_32` is the SMC32 convention, `_64`
/// the SMC64 one (bit 30 set).
pub mod fid {
    /// PSCI_VERSION.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// CPU_SUSPEND (SMC32).
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    /// CPU_SUSPEND (SMC64).
    pub const CPU_SUSPEND_64: u32 = 0xc400_0001;
    /// CPU_OFF.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// CPU_ON (SMC32).
    pub const CPU_ON_32: u32 = 0x8400_0003;
    /// CPU_ON (SMC64).
    pub const CPU_ON_64: u32 = 0xc400_0003;
    /// AFFINITY_INFO (SMC32).
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    /// AFFINITY_INFO (SMC64).
    pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
    /// MIGRATE (SMC32).
    pub const MIGRATE_32: u32 = 0x8400_0005;
    /// MIGRATE (SMC64).
    pub const MIGRATE_64: u32 = 0xc400_0005;
    /// MIGRATE_INFO_TYPE.
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    /// MIGRATE_INFO_UP_CPU (SMC32).
    pub const MIGRATE_INFO_UP_CPU_32: u32 = 0x8400_0007;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// SYSTEM_RESET.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// PSCI_FEATURES.
    pub const PSCI_FEATURES: u32 = 0x8400_000a;
    /// SYSTEM_SUSPEND (SMC64).
    pub const SYSTEM_SUSPEND_64: u32 = 0xc400_000e;
    /// SYSTEM_RESET2 (SMC64).
    pub const SYSTEM_RESET2_64: u32 = 0xc400_0012;
    /// SMCCC_VERSION.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// SMCCC_ARCH_SOC_ID.
    pub const SMCCC_ARCH_SOC_ID: u32 = 0x8000_0002;
    /// SMCCC_ARCH_WORKAROUND_1 (Spectre v2, CVE-2017-5715).
    pub const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;
    /// SMCCC_ARCH_WORKAROUND_2 (Spectre v4, CVE-2018-3639).
    pub const SMCCC_ARCH_WORKAROUND_2: u32 = 0x8000_7fff;
    /// SMCCC_ARCH_WORKAROUND_3 (Spectre-BHB).
    pub const SMCCC_ARCH_WORKAROUND_3: u32 = 0x8000_3fff;
}

/// Return codes (DEN 0022 §5.2.2; SMCCC `NOT_SUPPORTED` is the same -1).
pub mod ret {
    /// SUCCESS.
    pub const SUCCESS: i64 = 0;
    /// NOT_SUPPORTED.
    pub const NOT_SUPPORTED: i64 = -1;
    /// INVALID_PARAMETERS.
    pub const INVALID_PARAMETERS: i64 = -2;
    /// DENIED.
    pub const DENIED: i64 = -3;
    /// ALREADY_ON.
    pub const ALREADY_ON: i64 = -4;
    /// ON_PENDING.
    pub const ON_PENDING: i64 = -5;
    /// INTERNAL_FAILURE.
    pub const INTERNAL_FAILURE: i64 = -6;
    /// NOT_PRESENT.
    pub const NOT_PRESENT: i64 = -7;
    /// DISABLED.
    pub const DISABLED: i64 = -8;
    /// INVALID_ADDRESS.
    pub const INVALID_ADDRESS: i64 = -9;
}

/// PSCI version 1.1 (major \[30:16\], minor \[15:0\]).
pub const PSCI_VERSION_1_1: u64 = 0x0001_0001;
/// SMCCC version 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x0001_0001;
/// MIGRATE_INFO_TYPE: "Trusted OS is either not present or does not require migration".
pub const MIGRATE_INFO_TYPE_NOT_PRESENT: u64 = 2;

/// `AFFINITY_INFO` results.
const AFF_ON: i64 = 0;
const AFF_OFF: i64 = 1;
const AFF_ON_PENDING: i64 = 2;

/// The power state of one vCPU as PSCI sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    /// Off (never started, or after CPU_OFF).
    Off,
    /// CPU_ON accepted; the run loop has not yet started it ([`Psci::started`]).
    OnPending,
    /// Running (or idle in WFI / CPU_SUSPEND).
    On,
}

/// What the run loop does after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciAction {
    /// Write the value to the caller's x0 and resume it.
    Return(u64),
    /// Write SUCCESS (0) to the caller's x0 and resume it; start vCPU `vcpu` at EL1h with
    /// `pc = entry`, `x0 = context_id`, MMU and caches off, DAIF masked (DEN 0022 §6.4.3),
    /// then call [`Psci::started`].
    CpuOn {
        /// The vCPU index to start.
        vcpu: usize,
        /// Entry point (an IPA in the VM's RAM).
        entry: u64,
        /// The value for the new vCPU's x0.
        context_id: u64,
    },
    /// The caller is now off: stop running it until a CPU_ON names it.
    CpuOff,
    /// The guest asked to power the system off: stop the VM (`vm <name>: exited (system off)`).
    SystemOff,
    /// The guest asked for a reset: stop the VM (`exited (system reset)`), or restart it and
    /// call [`Psci::reset`].
    SystemReset,
    /// CPU_SUSPEND: write SUCCESS (0) to x0, resume at the next instruction, and treat it as a
    /// WFI (idle until an interrupt is pending). A power-down state returning like a standby
    /// state is allowed by DEN 0022 §5.4.
    Idle,
}

/// `SMCCC_ARCH_FEATURES` answers for the Spectre workaround calls: the value returned for each
/// (DEN 0028). hyp decides them at boot from the CPU and its firmware (`el2::spectre`, with
/// KVM's values: `SUCCESS` 0 mitigated, `SMCCC_ARCH_WORKAROUND_RET_UNAFFECTED` 1, `NOT_REQUIRED`
/// -2 for a Spectre v4 mitigation that is always on, `NOT_SUPPORTED` -1). The default, used by
/// tests, is `NOT_SUPPORTED` for all three.
///
/// The calls themselves do nothing but answer: a guest's `SMCCC_ARCH_WORKAROUND_1`/`_3` is an
/// exit from the guest, and hyp's exit path already ran the mitigation the CPU needs before
/// this code (`el2` `vectors.S`), as KVM returns at once from the same calls in
/// `hyp-entry.S`. `SMCCC_ARCH_WORKAROUND_2` (enable/disable) is not switched per guest: when
/// it is offered (`NOT_REQUIRED`), the mitigation is on for good and the request is
/// acknowledged with `SUCCESS`, as KVM does. A call whose answer is `NOT_SUPPORTED` returns
/// `NOT_SUPPORTED` (KVM returns `SUCCESS` there; SMCCC allows either for an unsupported call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workarounds {
    /// Answer for `SMCCC_ARCH_WORKAROUND_1`.
    pub wa1: i64,
    /// Answer for `SMCCC_ARCH_WORKAROUND_2`.
    pub wa2: i64,
    /// Answer for `SMCCC_ARCH_WORKAROUND_3`.
    pub wa3: i64,
}

impl Default for Workarounds {
    fn default() -> Self {
        Workarounds {
            wa1: ret::NOT_SUPPORTED,
            wa2: ret::NOT_SUPPORTED,
            wa3: ret::NOT_SUPPORTED,
        }
    }
}

/// A VM's PSCI configuration could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciError {
    /// The VM has no vCPUs or more than hyp's MPIDR numbering can name.
    VcpuCount {
        /// The number asked for.
        n: usize,
    },
}

impl fmt::Display for PsciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PsciError::VcpuCount { n } => write!(
                f,
                "a VM needs 1 to 4096 vCPUs for PSCI, not {n}; fix the VM's vcpus setting"
            ),
        }
    }
}

/// PSCI state of one VM.
#[derive(Clone, Debug)]
pub struct Psci {
    power: Vec<PowerState>,
    ram: Vec<Range<u64>>,
    workarounds: Workarounds,
}

fn r(code: i64) -> PsciAction {
    PsciAction::Return(code as u64)
}

impl Psci {
    /// PSCI for a VM with `n_vcpus` vCPUs (vCPU 0 on, the others off) whose RAM is `ram`
    /// (IPA ranges; a CPU_ON entry point must lie inside one).
    pub fn new(
        n_vcpus: usize,
        ram: &[Range<u64>],
        workarounds: Workarounds,
    ) -> Result<Self, PsciError> {
        if n_vcpus == 0 || Mpidr::from_vcpu(n_vcpus - 1).is_none() {
            return Err(PsciError::VcpuCount { n: n_vcpus });
        }
        let mut power = alloc::vec![PowerState::Off; n_vcpus];
        power[0] = PowerState::On;
        Ok(Psci {
            power,
            ram: ram.to_vec(),
            workarounds,
        })
    }

    /// The power state of `vcpu`, if it exists.
    pub fn power_state(&self, vcpu: usize) -> Option<PowerState> {
        self.power.get(vcpu).copied()
    }

    /// The run loop started a vCPU after [`PsciAction::CpuOn`]: `OnPending` becomes `On`.
    pub fn started(&mut self, vcpu: usize) {
        if let Some(s @ PowerState::OnPending) = self.power.get_mut(vcpu) {
            *s = PowerState::On;
        }
    }

    /// Back to the power-on state after a system reset: vCPU 0 on, the others off.
    pub fn reset(&mut self) {
        for (i, s) in self.power.iter_mut().enumerate() {
            *s = if i == 0 {
                PowerState::On
            } else {
                PowerState::Off
            };
        }
    }

    fn entry_valid(&self, entry: u64) -> bool {
        // A64 instructions are 4-byte aligned; the entry must be in the VM's RAM.
        entry.is_multiple_of(4) && self.ram.iter().any(|r| r.contains(&entry))
    }

    fn vcpu_of(&self, target: u64) -> Option<usize> {
        if target & !AFFINITY_MASK != 0 {
            return None;
        }
        Mpidr::from_affinity(target)
            .vcpu()
            .filter(|&v| v < self.power.len())
    }

    /// Handles one call from vCPU `caller` with the caller's `x0..x3`. Never panics.
    pub fn call(&mut self, caller: usize, x: [u64; 4]) -> PsciAction {
        // SMCCC: the function ID is W0; for SMC32/HVC32 IDs (bit 30 clear) the arguments
        // are W1..W3 and the upper halves are ignored (DEN 0028 §2.6).
        let id = x[0] as u32;
        let args = if id & (1 << 30) == 0 {
            [x[1] & 0xffff_ffff, x[2] & 0xffff_ffff, x[3] & 0xffff_ffff]
        } else {
            [x[1], x[2], x[3]]
        };
        match id {
            fid::PSCI_VERSION => PsciAction::Return(PSCI_VERSION_1_1),
            fid::SMCCC_VERSION => PsciAction::Return(SMCCC_VERSION_1_1),
            fid::CPU_ON_32 | fid::CPU_ON_64 => self.cpu_on(args[0], args[1], args[2]),
            fid::CPU_OFF => match self.power.get_mut(caller) {
                Some(s) => {
                    *s = PowerState::Off;
                    PsciAction::CpuOff
                }
                None => r(ret::INTERNAL_FAILURE),
            },
            fid::CPU_SUSPEND_32 | fid::CPU_SUSPEND_64 => PsciAction::Idle,
            fid::AFFINITY_INFO_32 | fid::AFFINITY_INFO_64 => {
                r(self.affinity_info(args[0], args[1]))
            }
            fid::MIGRATE_INFO_TYPE => PsciAction::Return(MIGRATE_INFO_TYPE_NOT_PRESENT),
            fid::SYSTEM_OFF => PsciAction::SystemOff,
            fid::SYSTEM_RESET => PsciAction::SystemReset,
            fid::PSCI_FEATURES => r(self.psci_features(args[0] as u32)),
            fid::SMCCC_ARCH_FEATURES => r(self.arch_features(args[0] as u32)),
            fid::SMCCC_ARCH_WORKAROUND_1 => r(self.workaround_call(self.workarounds.wa1)),
            fid::SMCCC_ARCH_WORKAROUND_2 => r(self.workaround_call(self.workarounds.wa2)),
            fid::SMCCC_ARCH_WORKAROUND_3 => r(self.workaround_call(self.workarounds.wa3)),
            _ => r(ret::NOT_SUPPORTED),
        }
    }

    /// A workaround call whose `SMCCC_ARCH_FEATURES` answer is `feature` (see [`Workarounds`]).
    fn workaround_call(&self, feature: i64) -> i64 {
        if feature == ret::NOT_SUPPORTED {
            ret::NOT_SUPPORTED
        } else {
            ret::SUCCESS
        }
    }

    fn cpu_on(&mut self, target: u64, entry: u64, context_id: u64) -> PsciAction {
        let Some(vcpu) = self.vcpu_of(target) else {
            return r(ret::INVALID_PARAMETERS);
        };
        match self.power[vcpu] {
            PowerState::On => r(ret::ALREADY_ON),
            PowerState::OnPending => r(ret::ON_PENDING),
            PowerState::Off => {
                // DEN 0022 §5.6.2: INVALID_ADDRESS when the entry point is known to be invalid.
                if !self.entry_valid(entry) {
                    return r(ret::INVALID_ADDRESS);
                }
                self.power[vcpu] = PowerState::OnPending;
                PsciAction::CpuOn {
                    vcpu,
                    entry,
                    context_id,
                }
            }
        }
    }

    fn affinity_info(&self, target: u64, lowest_level: u64) -> i64 {
        if lowest_level > 3 || target & !AFFINITY_MASK != 0 {
            return ret::INVALID_PARAMETERS;
        }
        // Affinity fields at and above `lowest_level` must match (DEN 0022 §5.7).
        let mask = match lowest_level {
            0 => AFFINITY_MASK,
            1 => 0xff_00ff_ff00,
            2 => 0xff_00ff_0000,
            _ => 0xff_0000_0000,
        };
        let (mut any, mut on, mut pending) = (false, false, false);
        for (i, s) in self.power.iter().enumerate() {
            let Some(m) = Mpidr::from_vcpu(i) else {
                continue;
            };
            if m.affinity() & mask == target & mask {
                any = true;
                on |= *s == PowerState::On;
                pending |= *s == PowerState::OnPending;
            }
        }
        match (any, on, pending) {
            (false, _, _) => ret::INVALID_PARAMETERS,
            (true, true, _) => AFF_ON,
            (true, false, true) => AFF_ON_PENDING,
            _ => AFF_OFF,
        }
    }

    fn psci_features(&self, f: u32) -> i64 {
        match f {
            // CPU_SUSPEND feature flags: bit 1 = 0 (original power_state format), bit 0 = 0
            // (platform-coordinated mode only).
            fid::CPU_SUSPEND_32 | fid::CPU_SUSPEND_64 => 0,
            fid::PSCI_VERSION
            | fid::CPU_OFF
            | fid::CPU_ON_32
            | fid::CPU_ON_64
            | fid::AFFINITY_INFO_32
            | fid::AFFINITY_INFO_64
            | fid::MIGRATE_INFO_TYPE
            | fid::SYSTEM_OFF
            | fid::SYSTEM_RESET
            | fid::PSCI_FEATURES
            | fid::SMCCC_VERSION => ret::SUCCESS,
            _ => ret::NOT_SUPPORTED,
        }
    }

    fn arch_features(&self, f: u32) -> i64 {
        match f {
            fid::SMCCC_VERSION | fid::SMCCC_ARCH_FEATURES => ret::SUCCESS,
            fid::SMCCC_ARCH_WORKAROUND_1 => self.workarounds.wa1,
            fid::SMCCC_ARCH_WORKAROUND_2 => self.workarounds.wa2,
            fid::SMCCC_ARCH_WORKAROUND_3 => self.workarounds.wa3,
            _ => ret::NOT_SUPPORTED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: Range<u64> = 0x4000_0000..0x8000_0000;

    fn psci(n: usize) -> Psci {
        Psci::new(n, &[RAM], Workarounds::default()).unwrap()
    }

    fn neg(code: i64) -> PsciAction {
        PsciAction::Return(code as u64)
    }

    #[test]
    fn versions() {
        let mut p = psci(1);
        assert_eq!(
            p.call(0, [0x8400_0000, 0, 0, 0]),
            PsciAction::Return(0x1_0001)
        );
        assert_eq!(
            p.call(0, [0x8000_0000, 0, 0, 0]),
            PsciAction::Return(0x1_0001)
        );
        // Upper half of x0 is not part of the function ID.
        assert_eq!(
            p.call(0, [0xffff_ffff_8400_0000, 0, 0, 0]),
            PsciAction::Return(0x1_0001)
        );
        assert_eq!(p.call(0, [0x8400_0006, 0, 0, 0]), PsciAction::Return(2));
    }

    #[test]
    fn cpu_on_lifecycle() {
        let mut p = psci(4);
        let target = Mpidr::from_vcpu(2).unwrap().affinity();
        assert_eq!(
            p.call(0, [fid::CPU_ON_64 as u64, target, 0x4008_0000, 0xc0ffee]),
            PsciAction::CpuOn {
                vcpu: 2,
                entry: 0x4008_0000,
                context_id: 0xc0ffee
            }
        );
        assert_eq!(p.power_state(2), Some(PowerState::OnPending));
        assert_eq!(
            p.call(0, [fid::CPU_ON_64 as u64, target, 0x4008_0000, 0]),
            neg(ret::ON_PENDING)
        );
        assert_eq!(
            p.call(0, [fid::AFFINITY_INFO_64 as u64, target, 0, 0]),
            PsciAction::Return(2)
        );
        p.started(2);
        assert_eq!(
            p.call(0, [fid::CPU_ON_64 as u64, target, 0x4008_0000, 0]),
            neg(ret::ALREADY_ON)
        );
        assert_eq!(
            p.call(1, [fid::AFFINITY_INFO_64 as u64, target, 0, 0]),
            PsciAction::Return(0)
        );
        assert_eq!(
            p.call(2, [fid::CPU_OFF as u64, 0, 0, 0]),
            PsciAction::CpuOff
        );
        assert_eq!(
            p.call(0, [fid::AFFINITY_INFO_64 as u64, target, 0, 0]),
            PsciAction::Return(1)
        );
        // An off vCPU can be started again.
        assert!(matches!(
            p.call(0, [fid::CPU_ON_64 as u64, target, 0x4000_0000, 0]),
            PsciAction::CpuOn { vcpu: 2, .. }
        ));
    }

    #[test]
    fn cpu_on_32_ignores_upper_halves() {
        let mut p = psci(2);
        assert_eq!(
            p.call(
                0,
                [
                    fid::CPU_ON_32 as u64,
                    0xdead_0000_0000_0001,
                    0xffff_ffff_4000_1000,
                    0x1_0000_0005
                ]
            ),
            PsciAction::CpuOn {
                vcpu: 1,
                entry: 0x4000_1000,
                context_id: 5
            }
        );
    }

    #[test]
    fn cpu_on_rejects_bad_targets_and_entries() {
        let mut p = psci(2);
        let on = fid::CPU_ON_64 as u64;
        // No such vCPU, Aff0 >= 16, stray non-affinity bits.
        for t in [2, 0x10, 0x1_0000, 1 << 31, 1 << 40] {
            assert_eq!(
                p.call(0, [on, t, 0x4000_0000, 0]),
                neg(ret::INVALID_PARAMETERS),
                "{t:#x}"
            );
        }
        // Entry outside RAM or misaligned.
        for e in [0, 0x3fff_fffc, 0x8000_0000, 0x4000_0002] {
            assert_eq!(
                p.call(0, [on, 1, e, 0]),
                neg(ret::INVALID_ADDRESS),
                "{e:#x}"
            );
        }
        assert_eq!(p.power_state(1), Some(PowerState::Off));
        // Unchanged state after refusals.
        assert!(matches!(
            p.call(0, [on, 1, 0x7fff_fffc, 0]),
            PsciAction::CpuOn { .. }
        ));
    }

    #[test]
    fn affinity_info_levels() {
        let mut p = psci(20);
        let ai = fid::AFFINITY_INFO_64 as u64;
        // vCPU 17 is Aff1=1, Aff0=1: off; level 1 over cluster 1 (vCPUs 16..19): all off.
        assert_eq!(p.call(0, [ai, 0x101, 0, 0]), PsciAction::Return(1));
        assert_eq!(p.call(0, [ai, 0x100, 1, 0]), PsciAction::Return(1));
        // Cluster 0 contains vCPU 0, which is on.
        assert_eq!(p.call(0, [ai, 0x00, 1, 0]), PsciAction::Return(0));
        assert_eq!(p.call(0, [ai, 0, 4, 0]), neg(ret::INVALID_PARAMETERS));
        assert_eq!(p.call(0, [ai, 0x500, 0, 0]), neg(ret::INVALID_PARAMETERS));
        assert_eq!(p.call(0, [ai, 0x500, 1, 0]), neg(ret::INVALID_PARAMETERS));
    }

    #[test]
    fn system_calls_and_suspend() {
        let mut p = psci(1);
        assert_eq!(
            p.call(0, [fid::SYSTEM_OFF as u64, 0, 0, 0]),
            PsciAction::SystemOff
        );
        assert_eq!(
            p.call(0, [fid::SYSTEM_RESET as u64, 0, 0, 0]),
            PsciAction::SystemReset
        );
        assert_eq!(
            p.call(0, [fid::CPU_SUSPEND_64 as u64, 0, 0, 0]),
            PsciAction::Idle
        );
        assert_eq!(
            p.call(0, [fid::CPU_SUSPEND_32 as u64, 0x1_0000, 0, 0]),
            PsciAction::Idle
        );
    }

    #[test]
    fn features() {
        let mut p = psci(1);
        let f = fid::PSCI_FEATURES as u64;
        for id in [
            fid::CPU_ON_64,
            fid::CPU_ON_32,
            fid::CPU_OFF,
            fid::SYSTEM_OFF,
            fid::SYSTEM_RESET,
            fid::AFFINITY_INFO_64,
            fid::MIGRATE_INFO_TYPE,
            fid::PSCI_FEATURES,
            fid::SMCCC_VERSION,
            fid::CPU_SUSPEND_64,
        ] {
            assert_eq!(
                p.call(0, [f, id as u64, 0, 0]),
                PsciAction::Return(0),
                "{id:#x}"
            );
        }
        for id in [
            fid::SYSTEM_RESET2_64,
            fid::SYSTEM_SUSPEND_64,
            fid::MIGRATE_64,
            0x1234,
        ] {
            assert_eq!(
                p.call(0, [f, id as u64, 0, 0]),
                neg(ret::NOT_SUPPORTED),
                "{id:#x}"
            );
        }
        let af = fid::SMCCC_ARCH_FEATURES as u64;
        for id in [
            fid::SMCCC_ARCH_WORKAROUND_1,
            fid::SMCCC_ARCH_WORKAROUND_2,
            fid::SMCCC_ARCH_WORKAROUND_3,
            fid::SMCCC_ARCH_SOC_ID,
        ] {
            assert_eq!(p.call(0, [af, id as u64, 0, 0]), neg(ret::NOT_SUPPORTED));
        }
        assert_eq!(
            p.call(0, [fid::SMCCC_ARCH_WORKAROUND_1 as u64, 0, 0, 0]),
            neg(ret::NOT_SUPPORTED)
        );
        // Told otherwise.
        let mut p = Psci::new(
            1,
            &[RAM],
            Workarounds {
                wa1: 0,
                ..Workarounds::default()
            },
        )
        .unwrap();
        assert_eq!(
            p.call(0, [af, fid::SMCCC_ARCH_WORKAROUND_1 as u64, 0, 0]),
            PsciAction::Return(0)
        );
        assert_eq!(
            p.call(0, [fid::SMCCC_ARCH_WORKAROUND_1 as u64, 0, 0, 0]),
            PsciAction::Return(0)
        );
        assert_eq!(
            p.call(0, [af, fid::SMCCC_ARCH_WORKAROUND_2 as u64, 0, 0]),
            neg(ret::NOT_SUPPORTED)
        );
        // QEMU -cpu max (el2::spectre): WORKAROUND_1/3 unaffected (1), WORKAROUND_2
        // NOT_SUPPORTED (the guest has SSBS).
        let mut p = Psci::new(
            1,
            &[RAM],
            Workarounds {
                wa1: 1,
                wa2: ret::NOT_SUPPORTED,
                wa3: 1,
            },
        )
        .unwrap();
        for (id, want) in [
            (fid::SMCCC_ARCH_WORKAROUND_1, 1),
            (fid::SMCCC_ARCH_WORKAROUND_2, ret::NOT_SUPPORTED),
            (fid::SMCCC_ARCH_WORKAROUND_3, 1),
        ] {
            assert_eq!(p.call(0, [af, id as u64, 0, 0]), neg(want), "{id:#x}");
        }
        assert_eq!(
            p.call(0, [fid::SMCCC_ARCH_WORKAROUND_3 as u64, 0, 0, 0]),
            PsciAction::Return(0)
        );
        assert_eq!(
            p.call(0, [fid::SMCCC_ARCH_WORKAROUND_2 as u64, 1, 0, 0]),
            neg(ret::NOT_SUPPORTED)
        );
        // Firmware SSBD on for good: NOT_REQUIRED, and WORKAROUND_2(0 or 1) is acknowledged
        // without effect.
        let mut p = Psci::new(
            1,
            &[RAM],
            Workarounds {
                wa1: 0,
                wa2: -2,
                wa3: 0,
            },
        )
        .unwrap();
        assert_eq!(
            p.call(0, [af, fid::SMCCC_ARCH_WORKAROUND_2 as u64, 0, 0]),
            neg(-2)
        );
        for enable in [0, 1] {
            assert_eq!(
                p.call(0, [fid::SMCCC_ARCH_WORKAROUND_2 as u64, enable, 0, 0]),
                PsciAction::Return(0)
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes minutes under miri")]
    fn unknown_functions_return_not_supported() {
        let mut p = psci(2);
        // A cheap deterministic sweep (xorshift) over function IDs and arguments.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let known = [
            0x8400_0000u32,
            0x8400_0001,
            0xc400_0001,
            0x8400_0002,
            0x8400_0003,
            0xc400_0003,
            0x8400_0004,
            0xc400_0004,
            0x8400_0006,
            0x8400_0008,
            0x8400_0009,
            0x8400_000a,
            0x8000_0000,
            0x8000_0001,
            0x8000_8000,
            0x8000_7fff,
            0x8000_3fff,
        ];
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let id = s as u32;
            if known.contains(&id) {
                continue;
            }
            assert_eq!(
                p.call(1, [s, s.rotate_left(7), s.rotate_left(19), 0]),
                neg(ret::NOT_SUPPORTED)
            );
        }
        assert_eq!(
            p.call(0, [0xc400_0012, 0, 0, 0]),
            PsciAction::Return(u64::MAX)
        );
    }

    #[test]
    fn reset_and_bad_construction() {
        let mut p = psci(3);
        assert!(matches!(
            p.call(0, [fid::CPU_ON_64 as u64, 1, 0x4000_0000, 0]),
            PsciAction::CpuOn { .. }
        ));
        p.started(1);
        p.reset();
        assert_eq!(p.power_state(0), Some(PowerState::On));
        assert_eq!(p.power_state(1), Some(PowerState::Off));
        assert_eq!(p.power_state(3), None);
        assert_eq!(
            Psci::new(0, &[RAM], Workarounds::default()).unwrap_err(),
            PsciError::VcpuCount { n: 0 }
        );
        assert!(Psci::new(4097, &[RAM], Workarounds::default()).is_err());
        // CPU_OFF from a caller index hyp never created does not panic.
        assert_eq!(
            p.call(7, [fid::CPU_OFF as u64, 0, 0, 0]),
            neg(ret::INTERNAL_FAILURE)
        );
    }
}
