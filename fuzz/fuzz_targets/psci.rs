//! Sequences of PSCI/SMCCC calls from a 4-vCPU guest (x0..x3 are the guest's registers),
//! with the run loop's follow-ups (`started` after CPU_ON, `reset`). Checks that CPU_ON only
//! starts an existing vCPU that was off, at a 4-byte aligned entry in the VM's RAM, and that
//! CPU_OFF turns the caller off.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use vdev::psci::{PowerState, Psci, PsciAction, Workarounds};

const VCPUS: usize = 4;
const RAM: std::ops::Range<u64> = 0x4000_0000..0x8000_0000;

#[derive(Arbitrary, Debug)]
enum Op {
    Call { caller: u8, x: [u64; 4] },
    Started { vcpu: u8 },
    Reset,
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut p = Psci::new(VCPUS, &[RAM], Workarounds::default()).expect("4 vCPUs");
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Call { caller, x } => {
                let caller = usize::from(caller);
                let before: Vec<_> = (0..VCPUS).map(|v| p.power_state(v)).collect();
                match p.call(caller, x) {
                    PsciAction::CpuOn { vcpu, entry, .. } => {
                        assert!(vcpu < VCPUS, "CPU_ON of vCPU {vcpu}");
                        assert_eq!(before[vcpu], Some(PowerState::Off));
                        assert_eq!(p.power_state(vcpu), Some(PowerState::OnPending));
                        assert!(RAM.contains(&entry) && entry % 4 == 0, "entry {entry:#x}");
                    }
                    PsciAction::CpuOff => {
                        assert_eq!(p.power_state(caller), Some(PowerState::Off));
                    }
                    PsciAction::Return(_)
                    | PsciAction::SystemOff
                    | PsciAction::SystemReset
                    | PsciAction::Idle => {}
                }
            }
            Op::Started { vcpu } => p.started(usize::from(vcpu)),
            Op::Reset => {
                p.reset();
                assert_eq!(p.power_state(0), Some(PowerState::On));
            }
        }
        assert_eq!(p.power_state(VCPUS), None);
    }
});
