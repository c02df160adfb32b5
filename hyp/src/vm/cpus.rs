//! hyp's idle loop for the secondary CPUs, from the moment they are powered on.
//!
//! A secondary waiting for its `el2::smp` mailbox in `WFE` would spin under QEMU TCG, which
//! does not halt on `WFE`, taking host time from the boot CPU and the vCPUs. So boot leaves
//! [`idle_loop`] in every secondary's mailbox before powering it on: it never returns, sets
//! up the CPU's GIC interface and waits in `WFI` for hyp's kick SGI, taking what [`dispatch`]
//! posts from the same mailbox.

use crate::gic;
use core::sync::atomic::{AtomicBool, Ordering};
use el2::arch::vsys;
use el2::dt::MAX_CPUS;
use el2::smp::{self, Work};

/// The CPU runs [`idle_loop`] (its GIC interface is up, so the kick SGI wakes it).
static READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Leaves [`idle_loop`] in secondary CPU `cpu`'s mailbox, to be the first thing it runs once
/// powered on (`boot::power_on_secondaries`), so it never spins in el2's `WFE` loop. The GIC
/// must be initialised ([`gic::init_distributor`]) first. Returns false if the mailbox is
/// taken.
pub fn post_idle_loop(cpu: usize) -> bool {
    cpu != 0 && smp::mailbox(cpu).is_some_and(|mb| mb.put(idle_loop, cpu as u64))
}

/// Waits for every CPU in `cpus` that was given [`post_idle_loop`] to be listening in it, so
/// the first kick is not lost; returns the ones that did not get there.
pub fn await_idle_loop(cpus: core::ops::Range<usize>) -> impl Iterator<Item = usize> {
    cpus.filter(|&cpu| !smp::wait_for_answer(|| READY[cpu].load(Ordering::Acquire)))
}

/// Posts `f(arg)` to `cpu` (listening in [`idle_loop`]) and kicks it. Returns false if the
/// CPU is not in its idle loop or still has work waiting.
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
