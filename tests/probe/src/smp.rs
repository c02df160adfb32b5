//! The probe's other vCPUs: started with PSCI CPU_ON to run one function each, then off.

use crate::rt;
use crate::{arch, mmu};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Most vCPUs the probe runs (its linker script has 8 stacks).
pub const MAX_VCPUS: usize = 8;
/// Each vCPU's stack (linker script `STACK_SIZE`), from `__stacks_start` in vCPU order.
pub const STACK_BYTES: u64 = 0x1_0000;

/// The most vCPUs that ever ran (1 until `run_on_all`).
static STARTED: AtomicUsize = AtomicUsize::new(1);

/// How many vCPUs have run (their stacks were used).
pub fn started() -> usize {
    STARTED.load(Ordering::Acquire)
}

/// PSCI CPU_ON and CPU_OFF (SMC32 function IDs; CPU_ON takes 64-bit arguments in SMC64).
const CPU_ON_64: u32 = 0xc400_0003;
const CPU_OFF: u32 = 0x8400_0002;

/// The function every vCPU runs (`fn(vcpu, vcpus)` as an address), and how many returned.
static WORK: AtomicU64 = AtomicU64::new(0);
static VCPUS: AtomicUsize = AtomicUsize::new(1);
static DONE: AtomicUsize = AtomicUsize::new(0);

/// The vCPUs' MPIDRs from the device tree's `/cpus` (at most [`MAX_VCPUS`]).
fn mpidrs(dtb: usize) -> ([u64; MAX_VCPUS], usize) {
    let mut out = [0; MAX_VCPUS];
    let mut n = 0;
    // SAFETY: hyp passes the VM's device tree in x0.
    if let Ok(fdt) = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        for cpu in fdt.cpus() {
            if n < MAX_VCPUS {
                out[n] = cpu.ids().first() as u64;
                n += 1;
            }
        }
    }
    (out, n.max(1))
}

/// Runs `work(vcpu, n)` on every vCPU of the VM (vCPU 0 is this one) and returns `n` once all
/// have returned; the others power off. The MMU must be on (the vCPUs synchronise with
/// atomics); each secondary turns it on with the same tables before it runs `work`.
pub fn run_on_all(dtb: usize, work: fn(usize, usize)) -> Result<usize, crate::tests::Line> {
    let (mpidr, n) = mpidrs(dtb);
    WORK.store(work as *const () as u64, Ordering::Release);
    VCPUS.store(n, Ordering::Release);
    STARTED.fetch_max(n, Ordering::AcqRel);
    DONE.store(0, Ordering::Release);
    for (i, &m) in mpidr.iter().enumerate().take(n).skip(1) {
        let r = arch::smccc(
            false,
            [
                u64::from(CPU_ON_64),
                m,
                arch::secondary_entry(),
                i as u64,
                0,
                0,
                0,
                0,
            ],
        )[0] as i64;
        if r != 0 {
            return Err(crate::line!(
                "PSCI CPU_ON of vCPU {i} (MPIDR {m:#x}) answered {r}"
            ));
        }
    }
    work(0, n);
    let t0 = arch::counter();
    while DONE.load(Ordering::Acquire) < n - 1 {
        if rt::micros(t0, arch::counter()) > 60_000_000 {
            return Err(crate::line!(
                "only {} of {} secondary vCPUs finished in 60 s",
                DONE.load(Ordering::Acquire),
                n - 1
            ));
        }
        core::hint::spin_loop();
    }
    Ok(n)
}

/// Rust entry of a secondary vCPU (from `arch`'s `probe_secondary_entry`).
#[no_mangle]
extern "C" fn probe_secondary_main(vcpu: usize) -> ! {
    mmu::enable_here();
    let f = WORK.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: `run_on_all` stored a `fn(usize, usize)` there before starting this vCPU.
        let work: fn(usize, usize) = unsafe { core::mem::transmute(f as usize) };
        work(vcpu, VCPUS.load(Ordering::Acquire));
    }
    DONE.fetch_add(1, Ordering::AcqRel);
    arch::smccc(false, [u64::from(CPU_OFF), 0, 0, 0, 0, 0, 0, 0]);
    loop {
        core::hint::spin_loop();
    }
}
