//! The vGICv3 driven by guests' access sequences to the distributor and the redistributors
//! (any offset, size and value), interleaved with what the run loop does: line levels and
//! edges from devices, SGIs written to `ICC_SGI1R_EL1`, `flush_lrs` before entering a vCPU,
//! the guest acknowledging and completing what its list registers hold, and `sync_lrs` at
//! the next exit. The VM shape (1-8 vCPUs, 1-988 SPIs) comes from the first bytes.
//!
//! Checks: MMIO values within the access size; errors exactly for accesses outside the
//! region; kicks name existing vCPUs only (never the sender of an SGI); a flush fills at
//! most the list registers it was given, each with a valid state and an implemented
//! INTID, no INTID twice on one vCPU, and no SPI listed on two running vCPUs at once.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use platform::gicv3::GICD_SIZE;
use vdev::vgic::{VcpuSet, Vgic, VgicConfig, MAX_LRS};
use vdev::{AccessSize, MmioError};

const LR_STATE_SHIFT: u64 = 62;
const ST_PENDING: u64 = 1;
const ST_ACTIVE: u64 = 2;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Offsets are taken modulo the region plus one 64 KiB frame, so some accesses land
    /// just outside it.
    DistRead {
        offset: u32,
        sas: u8,
    },
    DistWrite {
        offset: u32,
        sas: u8,
        value: u64,
    },
    RedistRead {
        offset: u32,
        sas: u8,
    },
    RedistWrite {
        offset: u32,
        sas: u8,
        value: u64,
    },
    SetLevel {
        intid: u16,
        vcpu: u8,
        level: bool,
    },
    SetPending {
        intid: u16,
        vcpu: u8,
    },
    Sgi {
        from: u8,
        value: u64,
    },
    /// Enter `vcpu` with `n_lrs` list registers (if it is not running).
    Enter {
        vcpu: u8,
        n_lrs: u8,
    },
    /// The running `vcpu`'s guest acknowledges (pending → active) the list registers in
    /// `ack` and completes (active → invalid) those in `eoi`.
    Guest {
        vcpu: u8,
        ack: u16,
        eoi: u16,
    },
    /// `vcpu` exits: `sync_lrs`.
    Exit {
        vcpu: u8,
    },
    /// A WFI check.
    Deliverable {
        vcpu: u8,
    },
}

fn lr_state(lr: u64) -> u64 {
    lr >> LR_STATE_SHIFT
}

fn lr_intid(lr: u64) -> u32 {
    lr as u32
}

fn check_kicks(k: VcpuSet, n: usize) {
    assert!(
        k.iter().all(|v| v < n),
        "kick of a vCPU that does not exist: {k:?}"
    );
}

fn check_read(r: Result<u64, MmioError>, size: AccessSize, region: u64, offset: u64) {
    match r {
        Ok(v) => assert!(v <= size.mask(), "{size} read at {offset:#x} gave {v:#x}"),
        Err(e) => check_error(e, region, offset, size),
    }
}

fn check_error(e: MmioError, region: u64, offset: u64, size: AccessSize) {
    match e {
        MmioError::OutOfRange {
            offset: o,
            region: r,
        } => {
            assert_eq!((o, r), (offset, region));
            assert!(offset >= region);
        }
        MmioError::Unaligned { .. } => {
            assert!(offset < region && offset % size.bytes() != 0);
        }
        MmioError::BadSize { .. } => assert!(offset < region),
    }
    if offset >= region {
        assert!(matches!(e, MmioError::OutOfRange { .. }), "{e}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(vcpus), Ok(spis)) = (u8::arbitrary(&mut u), u16::arbitrary(&mut u)) else {
        return;
    };
    let n = usize::from(vcpus % 8) + 1;
    let config = VgicConfig {
        n_vcpus: n,
        n_spis: u32::from(spis) % 988 + 1,
    };
    let mut g = Vgic::new(config).expect("1-8 vCPUs and 1-988 SPIs are valid");
    let n_intids = g.n_intids();
    let redist = g.redist_size();
    let mut lrs = vec![[0u64; MAX_LRS]; n];
    let mut running = vec![false; n];
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::DistRead { offset, sas } => {
                let o = u64::from(offset) % (GICD_SIZE + 0x1_0000);
                let s = AccessSize::from_sas(sas.into());
                check_read(g.dist_read(o, s), s, GICD_SIZE, o);
            }
            Op::DistWrite { offset, sas, value } => {
                let o = u64::from(offset) % (GICD_SIZE + 0x1_0000);
                let s = AccessSize::from_sas(sas.into());
                match g.dist_write(o, s, value) {
                    Ok(k) => check_kicks(k, n),
                    Err(e) => check_error(e, GICD_SIZE, o, s),
                }
            }
            Op::RedistRead { offset, sas } => {
                let o = u64::from(offset) % (redist + 0x1_0000);
                let s = AccessSize::from_sas(sas.into());
                check_read(g.redist_read(o, s), s, redist, o);
            }
            Op::RedistWrite { offset, sas, value } => {
                let o = u64::from(offset) % (redist + 0x1_0000);
                let s = AccessSize::from_sas(sas.into());
                match g.redist_write(o, s, value) {
                    Ok(k) => check_kicks(k, n),
                    Err(e) => check_error(e, redist, o, s),
                }
            }
            Op::SetLevel { intid, vcpu, level } => {
                if let Ok(k) = g.set_level(intid.into(), vcpu.into(), level) {
                    check_kicks(k, n);
                }
            }
            Op::SetPending { intid, vcpu } => {
                if let Ok(k) = g.set_pending(intid.into(), vcpu.into()) {
                    check_kicks(k, n);
                }
            }
            Op::Sgi { from, value } => {
                let from = usize::from(from) % n;
                let k = g.sgi(from, value);
                check_kicks(k, n);
                assert!(!k.contains(from), "SGI sender {from} kicked");
            }
            Op::Enter { vcpu, n_lrs } => {
                let v = usize::from(vcpu) % n;
                if running[v] {
                    continue;
                }
                let given = usize::from(n_lrs) % (MAX_LRS + 1);
                // Stale values beyond `given` must be left alone.
                lrs[v] = [u64::MAX; MAX_LRS];
                let f = g.flush_lrs(v, &mut lrs[v], given);
                assert!(f.used <= given, "{} LRs used of {given}", f.used);
                assert!(lrs[v][given..].iter().all(|&lr| lr == u64::MAX));
                let listed = &lrs[v][..given];
                for (i, &lr) in listed.iter().enumerate() {
                    if i < f.used {
                        assert_ne!(lr_state(lr), 0, "LR {i} used but invalid");
                        assert!(lr_intid(lr) < n_intids, "LR {i}: INTID {}", lr_intid(lr));
                        assert!(
                            !listed[..i].iter().any(|&o| lr_intid(o) == lr_intid(lr)),
                            "INTID {} listed twice on vCPU {v}",
                            lr_intid(lr)
                        );
                    } else {
                        assert_eq!(lr, 0, "LR {i} beyond the used ones is not cleared");
                    }
                }
                running[v] = true;
                // An SPI is in the list registers of one running vCPU at most.
                for &lr in &listed[..f.used] {
                    let id = lr_intid(lr);
                    if id >= 32 {
                        for w in (0..n).filter(|&w| w != v && running[w]) {
                            assert!(
                                !lrs[w]
                                    .iter()
                                    .any(|&o| lr_state(o) != 0 && lr_intid(o) == id),
                                "SPI {id} listed on vCPUs {v} and {w}"
                            );
                        }
                    }
                }
            }
            Op::Guest { vcpu, ack, eoi } => {
                let v = usize::from(vcpu) % n;
                if !running[v] {
                    continue;
                }
                for (i, lr) in lrs[v].iter_mut().enumerate() {
                    let mut st = lr_state(*lr);
                    if st == 0 || *lr == u64::MAX {
                        continue;
                    }
                    if ack & (1 << i) != 0 && st & ST_PENDING != 0 {
                        st = (st & !ST_PENDING) | ST_ACTIVE;
                    }
                    if eoi & (1 << i) != 0 && st & ST_ACTIVE != 0 {
                        st &= !ST_ACTIVE;
                    }
                    *lr = (*lr & !(3 << LR_STATE_SHIFT)) | (st << LR_STATE_SHIFT);
                }
            }
            Op::Exit { vcpu } => {
                let v = usize::from(vcpu) % n;
                if running[v] {
                    g.sync_lrs(v, &lrs[v]);
                    running[v] = false;
                }
            }
            Op::Deliverable { vcpu } => {
                let _ = g.has_deliverable(vcpu.into());
            }
        }
    }
});
