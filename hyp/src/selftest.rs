//! Test-only failure paths and self-checks selected with `hyp.test=` (the QEMU tests in
//! `tests/qemu/` use them). Each failure path must end in the failure marker, never a hang.

use crate::boot::{dtb_slice, Boot};
use crate::mmu;
use el2::cmdline::TestSwitch;
use el2::dt::HalfOpen;
use el2::dt::Platform;
use el2::smp;
use log::info;

/// Runs what `hyp.test=` asked for (nothing for a normal boot).
pub fn run(boot: &Boot) {
    match boot.cmdline.test {
        TestSwitch::None => {}
        TestSwitch::Exception => {
            info!("hyp: test: taking an unexpected exception (hyp.test=exception)");
            trigger_exception();
        }
        TestSwitch::WriteText => {
            info!("hyp: test: writing to hyp's text (hyp.test=write-text)");
            write_text();
        }
        TestSwitch::ExecData => {
            info!("hyp: test: executing hyp's data (hyp.test=exec-data)");
            exec_data();
        }
        TestSwitch::StackOverflow => {
            info!("hyp: test: overflowing the stack (hyp.test=stack-overflow)");
            let depth = overflow_stack(0);
            el2::fatal!("recursed {depth} levels without a stack overflow");
        }
        TestSwitch::SmpWork => smp_work_test(),
        TestSwitch::MapDevice => map_device_test(boot),
        TestSwitch::Panic => {
            info!("hyp: test: panicking (hyp.test=panic)");
            panic!("test panic requested with hyp.test=panic");
        }
    }
}

/// `hyp.test=exception`: a load from an address nothing maps (a translation fault at EL2).
pub fn trigger_exception() {
    let p = 0x0000_dead_0000_0000u64 as *const u64;
    // SAFETY: deliberately unsound for the test: the load faults before it returns, and the
    // exception handler never returns to it (it reports and powers off).
    let v = unsafe { p.read_volatile() };
    el2::fatal!("the load from {p:?} did not fault (read {v:#x})");
}

/// `hyp.test=write-text`: a store into hyp's own text, which W^X maps read-only.
pub fn write_text() {
    let p = write_text as *const () as *mut u32;
    // SAFETY: deliberately unsound for the test: text is mapped RX, so the store takes a
    // permission fault and the handler powers off without returning.
    unsafe { p.write_volatile(0xd503_201f) };
    el2::fatal!("the store to hyp's text at {p:?} did not fault: W^X is not enforced");
}

/// `hyp.test=exec-data`: a branch into hyp's data (RW, execute-never).
pub fn exec_data() {
    static mut DATA_RET: [u32; 1] = [0xd65f_03c0]; // `ret`, in .data: RW + XN
    let p = (&raw const DATA_RET) as *const ();
    // SAFETY: deliberately unsound for the test: the page is execute-never, so the fetch
    // takes an instruction abort and the handler powers off without returning.
    let f: extern "C" fn() = unsafe { core::mem::transmute(p) };
    f();
    el2::fatal!("executing hyp's data at {p:?} did not fault: W^X is not enforced");
}

/// `hyp.test=map-device`: maps the PL031 RTC (not in the boot map) into the live EL2 map and
/// reads its PrimeCell peripheral ID (PL031 TRM: PeriphID0..3 at 0xfe0.. = 0x31, 0x10, 0x14/
/// 0x04, 0x00; the part number 0x031 is what the test checks).
pub fn map_device_test(boot: &Boot) {
    let Some(blob) = dtb_slice(boot.dtb.start().get() as usize) else {
        el2::fatal!("the device tree is gone");
    };
    let Some(rtc) = Platform::find_compatible_reg(blob, "arm,pl031") else {
        el2::fatal!("no arm,pl031 in the device tree");
    };
    let shown = HalfOpen(rtc);
    if mmu::translate(rtc.start().identity_va()).is_some() {
        el2::fatal!("{shown} is already mapped before map_device");
    }
    if let Err(e) = mmu::map_device(rtc) {
        el2::fatal!("map_device {shown}: {e}");
    }
    let Some((pa, attrs, level)) = mmu::translate(rtc.start().identity_va()) else {
        el2::fatal!("{shown} not mapped after map_device");
    };
    let id = |off: u64| {
        // SAFETY: `rtc` is the PL031's register range, now mapped Device-nGnRE; reading its
        // ID registers has no side effect.
        unsafe { ((rtc.start() + off).get() as *const u32).read_volatile() & 0xff }
    };
    let part = id(0xfe0) | (id(0xfe4) & 0xf) << 8;
    if part != 0x031 {
        el2::fatal!("PL031 part number reads {part:#x}, expected 0x031");
    }
    info!(
        "hyp: test: mapped {shown} as {attrs} at level {level} (pa {pa:#x}), PL031 part {part:#05x}"
    );
}

/// `hyp.test=smp-work`: every secondary runs a work item through its mailbox; each adds its
/// index to a sum, which must come out right within a second.
pub fn smp_work_test() {
    use core::sync::atomic::{AtomicU64, Ordering};
    static SUM: AtomicU64 = AtomicU64::new(0);
    static RAN: AtomicU64 = AtomicU64::new(0);
    fn work(arg: u64) {
        assert_eq!(arg, smp::current_cpu() as u64, "work ran on the wrong cpu");
        SUM.fetch_add(arg, Ordering::AcqRel);
        RAN.fetch_add(1, Ordering::AcqRel);
    }
    let n = smp::online();
    for cpu in 1..n {
        // The secondaries wait in hyp's idle loop (`vm::cpus`), woken by its kick SGI.
        if !crate::vm::cpus::dispatch(cpu, work, cpu as u64) {
            el2::fatal!("cpu {cpu} refused work");
        }
    }
    if !smp::wait_for_answer(|| RAN.load(Ordering::Acquire) >= (n - 1) as u64) {
        el2::fatal!(
            "only {} of {} secondary cpus ran their work within 1 s",
            RAN.load(Ordering::Acquire),
            n - 1
        );
    }
    let want = (n as u64 - 1) * n as u64 / 2;
    let got = SUM.load(Ordering::Acquire);
    if got != want {
        el2::fatal!("secondary work sum {got}, expected {want}");
    }
    info!("hyp: test: {} secondary cpus ran work", n - 1);
}

/// `hyp.test=stack-overflow`: recurses (1 KiB per level) until the stack runs into its
/// unmapped guard page.
#[inline(never)]
pub fn overflow_stack(depth: u64) -> u64 {
    let mut frame = [depth; 128];
    core::hint::black_box(&mut frame);
    if depth == u64::MAX {
        return depth;
    }
    overflow_stack(depth + 1) + core::hint::black_box(frame[7])
}
