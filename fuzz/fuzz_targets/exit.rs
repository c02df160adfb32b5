//! What a guest controls at an exit: `ESR_EL2`, `FAR_EL2` and `HPFAR_EL2` decoded into an
//! [`Exit`], the MMIO access of a data abort with the register value it stores or the device
//! value it loads, the ID register a trapped MRS names, and the MPIDR a guest passes around.
//! Checks the decoders' own rules: sizes, zero/sign extension, the IPA range, ID reads for
//! exactly the trapped space.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vdev::idregs::{is_trapped, GuestIdRegs, IdPolicy};
use vdev::{Exit, Mpidr};

#[derive(Arbitrary, Debug)]
struct Input {
    esr: u64,
    far: u64,
    hpfar: u64,
    /// The value of the store's source register, or what the device returned for a load.
    value: u64,
}

fn id_regs() -> &'static GuestIdRegs {
    static REGS: OnceLock<GuestIdRegs> = OnceLock::new();
    REGS.get_or_init(|| {
        let policy = IdPolicy {
            granules: stage2::Granule::K16.bit(),
            ipa_bits: 40,
        };
        // Every host field set: sanitizing must cope with any value.
        GuestIdRegs::new(&policy, |_| u64::MAX)
    })
}

fuzz_target!(|i: Input| {
    assert!(matches!(Exit::instr_len(i.esr), 2 | 4));
    match Exit::decode(i.esr, i.far, i.hpfar) {
        Exit::DataAbort(d) => {
            if let Some(ipa) = d.ipa.map(|a| a.get()) {
                assert!(ipa < 1 << 52, "IPA {ipa:#x} beyond 52 bits");
                assert_eq!(ipa & 0xfff, if d.far_valid { i.far & 0xfff } else { 0 });
            }
            match d.mmio() {
                Ok(m) => {
                    assert_eq!(Some(m.ipa), d.ipa);
                    assert!(m.reg <= 31);
                    let mask = m.size.mask();
                    assert!(m.store_value(i.value) <= mask);
                    let v = m.load_value(i.value);
                    if !m.reg64 {
                        assert!(v <= u64::from(u32::MAX), "W destination got {v:#x}");
                    }
                    if !m.sign_extend {
                        assert!(v <= mask, "zero-extended load {v:#x} wider than {}", m.size);
                    }
                    assert_eq!(
                        v & mask & u64::from(u32::MAX),
                        i.value & mask & u64::from(u32::MAX)
                    );
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        Exit::InstrAbort(a) => {
            if let Some(ipa) = a.ipa {
                assert!(ipa.get() < 1 << 52);
            }
        }
        Exit::SysReg(s) => {
            assert!(s.rt <= 31);
            let v = id_regs().read(s.reg);
            assert_eq!(v.is_some(), is_trapped(s.reg), "{:?}", s.reg);
            let _ = vdev::idregs::name(s.reg);
        }
        Exit::Wfx(_) | Exit::Hvc { .. } | Exit::Smc { .. } | Exit::Other { .. } => {}
    }
    // A guest-chosen MPIDR (PSCI CPU_ON target, SGI affinity) maps to a vCPU and back.
    let m = Mpidr::from_affinity(i.value);
    if let Some(v) = m.vcpu() {
        assert_eq!(
            Mpidr::from_vcpu(v).map(|b| b.affinity()),
            Some(m.affinity())
        );
    }
});
