//! Every VM's console output onto the one physical UART: lines wait in their VM's bounded
//! queue (`vdev::console::OutQueue`) and are written round robin by VM, one line at a time,
//! by whichever CPU finds the UART free. No CPU ever waits for the UART on a guest's behalf:
//! a vCPU writes at most one line per exit (`pump_one`, which never waits for the console),
//! so no guest action makes another VM's UART store wait longer than one line of output.
//! Idle CPUs keep writing while anything is queued; a stopping VM's queue is written out
//! (`drain`) before its `vm <name>: exited` line.

use super::{vms, Vm};
use core::sync::atomic::{AtomicUsize, Ordering};
use el2::console::{self, Held};
use vdev::console::LINE_BYTES;

/// The VM whose line goes next (round robin).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Queues one line (`[<name>] text`) of `vm`'s UART output.
pub fn queue(vm: &Vm, line: &str) {
    let mut q = vm.out.lock();
    q.push(line);
    // Set under the queue's lock, as `write_one` clears it: never clear while non-empty.
    vm.out_pending.store(true, Ordering::Release);
}

fn pending() -> bool {
    vms()
        .iter()
        .any(|vm| vm.out_pending.load(Ordering::Acquire))
}

/// Writes `vm`'s oldest queued line with the console held; `false` when it had none.
fn write_one(held: &Held, vm: &Vm) -> bool {
    if !vm.out_pending.load(Ordering::Acquire) {
        return false;
    }
    let mut buf = [0u8; LINE_BYTES];
    let n = {
        let mut q = vm.out.lock();
        let n = q.pop(&mut buf);
        if q.is_empty() {
            vm.out_pending.store(false, Ordering::Release);
        }
        n
    };
    let Some(n) = n else {
        return false;
    };
    // Lines are queued from `&str` and never cut (the queue holds LINE_BYTES per line).
    let text = match core::str::from_utf8(&buf[..n]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
    };
    held.line(text);
    true
}

/// Writes at most one queued line, of the next VM in turn that has one, if no other CPU holds
/// the console (it never waits). Returns whether it wrote a line.
pub fn pump_one() -> bool {
    if !pending() {
        return false;
    }
    let Some(held) = console::try_hold() else {
        return false;
    };
    let all = vms();
    let start = NEXT.load(Ordering::Relaxed);
    for k in 0..all.len() {
        let i = (start + k) % all.len();
        if write_one(&held, all[i]) {
            NEXT.store(i + 1, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Writes everything `vm` has queued, waiting for the console in turn (its VM has stopped).
pub fn drain(vm: &Vm) {
    let held = console::hold();
    while write_one(&held, vm) {}
}

/// Writes every VM's queued output (before hyp's last line).
pub fn drain_all() {
    for vm in vms() {
        drain(vm);
    }
}
