//! hyp's idle loop for the secondary CPUs once VMs are about to run.
//!
//! Until then a secondary waits for its `el2::smp` mailbox in `WFE`, which QEMU TCG does not
//! halt on: an idle CPU would spin and take host time from the vCPUs. So `run_system` posts
//! every secondary [`idle_loop`], which never returns: it sets up the CPU's GIC interface and
//! waits in `WFI` for hyp's kick SGI, taking what [`dispatch`] posts from the same mailbox.

use crate::gic;
use core::sync::atomic::{AtomicBool, Ordering};
use el2::arch::vsys;
use el2::dt::MAX_CPUS;
use el2::smp::{self, Work};

/// The CPU runs [`idle_loop`] (its GIC interface is up, so the kick SGI wakes it).
static READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Moves every secondary CPU in `cpus` into [`idle_loop`], all at once, and returns the ones
/// that did not get there (offline or busy).
pub fn take_over(cpus: core::ops::Range<usize>) -> impl Iterator<Item = usize> {
    let posted: [bool; MAX_CPUS] = core::array::from_fn(|cpu| {
        cpu != 0 && cpus.contains(&cpu) && smp::post(cpu, idle_loop, cpu as u64)
    });
    // Wait until each is listening, so the first kick is not lost.
    cpus.filter(move |&cpu| {
        !(posted.get(cpu).copied().unwrap_or(false)
            && smp::wait_for_answer(|| READY[cpu].load(Ordering::Acquire)))
    })
}

/// Posts `f(arg)` to `cpu` (taken over with [`take_over`]) and kicks it. Returns false if
/// the CPU is not taken over or still has work waiting.
pub fn dispatch(cpu: usize, f: Work, arg: u64) -> bool {
    if !READY.get(cpu).is_some_and(|r| r.load(Ordering::Acquire)) || !smp::post(cpu, f, arg) {
        return false;
    }
    gic::kick(cpu);
    true
}

fn idle_loop(cpu: u64) {
    let cpu = cpu as usize;
    if gic::init_cpu().is_err() {
        return; // back to el2's WFE loop; `take_over` times out and reports it
    }
    let Some(mailbox) = smp::mailbox(cpu) else {
        return;
    };
    READY[cpu].store(true, Ordering::Release);
    loop {
        if let Some((work, arg)) = mailbox.take() {
            work(arg);
            continue;
        }
        // Nothing to run: fill VM RAM that is not filled yet (`vm::fill_idle`).
        if super::fill_idle() {
            continue;
        }
        vsys::wfi();
        while let Some(iar) = gic::ack() {
            super::vcpu::host_irq(iar);
            gic::eoi(iar);
        }
    }
}
