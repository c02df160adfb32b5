//! hyp's own mailbox for the secondary CPUs once VMs are about to run.
//!
//! `el2::smp`'s mailbox waits in `WFE`, which QEMU TCG does not halt on: an idle CPU would
//! spin and take host time from the vCPUs. So `run_system` hands every secondary one
//! `el2::smp` work item, [`idle_loop`], that never returns: it sets up the CPU's GIC interface
//! and waits in `WFI` for hyp's kick SGI, then runs what [`dispatch`] posted.

use crate::gic;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use el2::arch::vsys;
use el2::dt::MAX_CPUS;

/// Work for a CPU: `f(arg)`.
pub type Work = fn(u64);

struct Slot {
    work: AtomicUsize,
    arg: AtomicU64,
}

static SLOTS: [Slot; MAX_CPUS] = [const {
    Slot {
        work: AtomicUsize::new(0),
        arg: AtomicU64::new(0),
    }
}; MAX_CPUS];
static READY: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// Takes over `cpu` (a secondary) from `el2::smp`; returns false if it is offline or busy.
pub fn take_over(cpu: usize) -> bool {
    if cpu == 0 || cpu >= MAX_CPUS {
        return false;
    }
    if !el2::smp::send_work(cpu, idle_loop, cpu as u64) {
        return false;
    }
    // Wait (up to ~1 s) until it is listening, so the first kick is not lost.
    let (t0, freq) = el2::arch::sysreg::counter();
    while READY[cpu].load(Ordering::Acquire) == 0 {
        if el2::arch::sysreg::counter().0.wrapping_sub(t0) > freq {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Posts `f(arg)` to `cpu` (taken over with [`take_over`]) and kicks it. Returns false if
/// the CPU is not taken over or still has work pending.
pub fn dispatch(cpu: usize, f: Work, arg: u64) -> bool {
    let Some(slot) = SLOTS.get(cpu) else {
        return false;
    };
    if READY[cpu].load(Ordering::Acquire) == 0 || slot.work.load(Ordering::Acquire) != 0 {
        return false;
    }
    slot.arg.store(arg, Ordering::Relaxed);
    slot.work.store(f as usize, Ordering::Release);
    gic::kick(cpu);
    true
}

fn idle_loop(cpu: u64) {
    let cpu = cpu as usize;
    if gic::init_cpu().is_err() {
        return; // stays in el2's mailbox; `take_over` times out and reports it
    }
    READY[cpu].store(1, Ordering::Release);
    let slot = &SLOTS[cpu];
    loop {
        let w = slot.work.swap(0, Ordering::AcqRel);
        if w != 0 {
            // SAFETY: only `dispatch` stores non-zero values, and those are `Work` fn
            // pointers; fn pointers round-trip through usize.
            let f: Work = unsafe { core::mem::transmute::<usize, Work>(w) };
            f(slot.arg.load(Ordering::Relaxed));
            continue;
        }
        vsys::wfi();
        while let Some(iar) = gic::ack() {
            super::vcpu::host_irq(iar);
            gic::eoi(iar);
        }
    }
}
