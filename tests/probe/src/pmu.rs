//! The guest's PMU (PMUv3 passed through by hyp on a CPU with PMUv3p5): what the ID registers
//! and the device tree say, and what the counters count.
//!
//! Under QEMU TCG the cycle counter follows QEMU's virtual clock at 1 GHz and `INST_RETIRED`
//! exists only with `-icount` (precise instruction counting); with `-icount shift=0` one
//! instruction takes 1 ns, so cycles and instructions agree and every figure below is exact
//! to within a few instructions. The cases run under `+icount` (tests/qemu/run-linux).

use crate::rt::{expect, fid};
use crate::tests::{fail, pass, Env, Verdict};
use crate::{arch, line};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

macro_rules! rd {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading a PMU or ID register of this vCPU has no effect on memory.
        unsafe { asm!("isb", concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

macro_rules! wr {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: a PMU register of this vCPU: it changes what the counters count, nothing
        // of memory.
        unsafe { asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) v, options(nomem, nostack)) };
    }};
}

/// `PMCR_EL0` bits.
const PMCR_E: u64 = 1 << 0;
const PMCR_P: u64 = 1 << 1;
const PMCR_C: u64 = 1 << 2;
/// `PMCR_EL0.LC`: the cycle counter overflows at 64 bits.
const PMCR_LC: u64 = 1 << 6;
/// The cycle counter's bit in `PMCNTEN*`, `PMINTEN*`, `PMOVS*`.
const CYCLES: u64 = 1 << 31;
/// `PMEVTYPER<n>_EL0`/`PMCCFILTR_EL0.NSH` (bit 27): count at EL2 too, if EL2 lets it.
const NSH: u64 = 1 << 27;
/// Common events (Arm ARM D13.11): software increment, instructions retired, cycles.
const SW_INCR: u64 = 0x00;
const INST_RETIRED: u64 = 0x08;
const CPU_CYCLES: u64 = 0x11;
/// The PMU overflow interrupt (PPI 7).
const PMU_INTID: u64 = 23;

fn pmuver() -> u64 {
    (rd!("id_aa64dfr0_el1") >> 8) & 0xf
}

fn pmcr_n() -> u64 {
    (rd!("pmcr_el0") >> 11) & 0x1f
}

/// The `/pmu` node's `interrupts` cells, if the device tree has one with PMUv3's compatible.
fn dt_pmu(dtb: usize) -> Option<[u32; 3]> {
    // SAFETY: hyp passes the VM's device tree in x0.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()?;
    let node = fdt.find_node("/pmu")?;
    if !node.compatible()?.all().any(|c| c == "arm,armv8-pmuv3") {
        return None;
    }
    let v = node.property("interrupts")?.value;
    if v.len() != 12 {
        return None;
    }
    let cell = |i: usize| u32::from_be_bytes([v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]]);
    Some([cell(0), cell(1), cell(2)])
}

/// Event counter `n`'s type (`PMEVTYPER<n>_EL0`) and value (`PMEVCNTR<n>_EL0`), through
/// `PMSELR_EL0`.
fn set_counter(n: u64, evtype: u64, value: u64) {
    wr!("pmselr_el0", n);
    wr!("pmxevtyper_el0", evtype);
    wr!("pmxevcntr_el0", value);
}

fn read_counter(n: u64) -> u64 {
    wr!("pmselr_el0", n);
    rd!("pmxevcntr_el0")
}

/// Stops and zeroes everything the tests use.
fn quiesce() {
    wr!("pmcr_el0", PMCR_P | PMCR_C);
    wr!("pmcntenclr_el0", u64::from(u32::MAX));
    wr!("pmintenclr_el1", u64::from(u32::MAX));
    wr!("pmovsclr_el0", u64::from(u32::MAX));
}

/// `n` iterations of a 2-instruction loop (`subs`, `b.ne`).
#[inline(always)]
fn spin(n: u64) {
    // SAFETY: register arithmetic only.
    unsafe {
        asm!("1: subs {n}, {n}, #1", "b.ne 1b", n = inout(reg) n.max(1) => _, options(nomem, nostack))
    };
}

/// `pmu-id`: `PMUVer` and `PMCR_EL0.N` are what the case expects (`probe.pmuver`,
/// `probe.counters`), and the `/pmu` node exists (PPI 7, level-high) exactly when the PMU
/// does; without a PMU its registers are UNDEFINED.
pub fn id(env: &Env) -> Verdict {
    let want_ver = env.args.num("probe.pmuver", 6);
    let ver = pmuver();
    if ver != want_ver {
        return fail(line!("ID_AA64DFR0_EL1.PMUVer {ver}, expected {want_ver}"));
    }
    let dt = dt_pmu(env.dtb);
    if ver == 0 {
        let mut v = 0;
        let o = expect(|| v = rd!("pmcr_el0"));
        if o.class() != Some(crate::rt::ec::UNKNOWN) {
            return fail(line!("no PMU, but PMCR_EL0 read gave {o:?} ({v:#x})"));
        }
        if dt.is_some() {
            return fail(line!("no PMU, but the device tree has a /pmu node"));
        }
        return pass(line!("PMUVer 0, PMCR_EL0 UNDEFINED, no /pmu node"));
    }
    let n = pmcr_n();
    let want_n = env.args.num("probe.counters", 6);
    if n != want_n {
        return fail(line!("PMCR_EL0.N {n}, expected {want_n}"));
    }
    match dt {
        Some([1, 7, 4]) => pass(line!(
            "PMUVer {ver}, {n} event counters, /pmu interrupt PPI 7 level-high"
        )),
        other => fail(line!(
            "/pmu node interrupts {other:?}, expected PPI 7 level-high"
        )),
    }
}

/// Reads the cycle counter around `n` loop iterations.
fn cycles_for(n: u64) -> u64 {
    let a = rd!("pmccntr_el0");
    spin(n);
    let b = rd!("pmccntr_el0");
    b.wrapping_sub(a)
}

/// `pmu-cycles`: the cycle counter (counting EL1, 64-bit) never goes backwards over 10,000
/// reads, and twice the loop takes twice the cycles (within 10%: the loop is 2 instructions
/// per iteration, 200,000 and 400,000 of them).
pub fn cycles(_env: &Env) -> Verdict {
    quiesce();
    wr!("pmccfiltr_el0", 0);
    wr!("pmcntenset_el0", CYCLES);
    wr!("pmcr_el0", PMCR_E | PMCR_LC);
    let mut last = rd!("pmccntr_el0");
    for i in 0..10_000 {
        let now = rd!("pmccntr_el0");
        if now < last {
            quiesce();
            return fail(line!(
                "PMCCNTR_EL0 went back from {last} to {now} at read {i}"
            ));
        }
        last = now;
    }
    let n = 100_000;
    let one = cycles_for(n);
    let two = cycles_for(2 * n);
    quiesce();
    if one == 0 {
        return fail(line!("the cycle counter did not count ({one} cycles)"));
    }
    // ratio x1000, in [1800, 2200].
    let ratio = two * 1000 / one;
    if !(1800..=2200).contains(&ratio) {
        return fail(line!(
            "{n} iterations took {one} cycles, {} took {two}: ratio {}.{:03}, expected 2 +- 10%",
            2 * n,
            ratio / 1000,
            ratio % 1000
        ));
    }
    pass(line!(
        "monotonic over 10000 reads; {n} iterations {one} cycles, {} iterations {two} cycles (ratio {}.{:03})",
        2 * n,
        ratio / 1000,
        ratio % 1000
    ))
}

/// `pmu-instructions`: event counter 0 counting `INST_RETIRED` counts a known loop of
/// 2 x 100,000 instructions to within 64 (the reads around it).
pub fn instructions(_env: &Env) -> Verdict {
    if rd!("pmceid0_el0") & (1 << INST_RETIRED) == 0 {
        return fail(line!(
            "INST_RETIRED not implemented (PMCEID0_EL0 bit 8 = 0; QEMU counts instructions only with -icount)"
        ));
    }
    quiesce();
    set_counter(0, INST_RETIRED, 0);
    wr!("pmcntenset_el0", 1);
    wr!("pmcr_el0", PMCR_E);
    let n = 100_000;
    let (a, b): (u64, u64);
    // SAFETY: reads of this vCPU's event counter 0 around a register-only loop.
    unsafe {
        asm!(
            "isb",
            "mrs {a}, pmevcntr0_el0",
            "1: subs {n}, {n}, #1",
            "b.ne 1b",
            "mrs {b}, pmevcntr0_el0",
            a = out(reg) a, b = out(reg) b, n = inout(reg) n => _,
            options(nomem, nostack)
        )
    };
    quiesce();
    let got = b.wrapping_sub(a);
    let want = 2 * n;
    if got.abs_diff(want) > 64 {
        return fail(line!(
            "INST_RETIRED counted {got} for a loop of {want} instructions"
        ));
    }
    pass(line!(
        "INST_RETIRED {got} for a loop of {want} instructions"
    ))
}

/// `pmu-swinc`: event counter 1 counting `SW_INCR` goes up by exactly one per write of its
/// bit to `PMSWINC_EL0` (1000 writes), and not for writes of other bits.
pub fn swinc(_env: &Env) -> Verdict {
    quiesce();
    set_counter(1, SW_INCR, 0);
    wr!("pmcntenset_el0", 0b10);
    wr!("pmcr_el0", PMCR_E);
    for _ in 0..1000 {
        wr!("pmswinc_el0", 0b10);
    }
    // Counter 2 is not enabled for SW_INCR: its bit does nothing to counter 1.
    for _ in 0..10 {
        wr!("pmswinc_el0", 0b100);
    }
    let got = read_counter(1);
    quiesce();
    if got != 1000 {
        return fail(line!("1000 PMSWINC_EL0 writes gave a count of {got}"));
    }
    pass(line!("1000 PMSWINC_EL0 writes counted 1000"))
}

/// `pmu-el2`: counters do not count hyp's work. With the `NSH` filter bit set (the guest asks
/// to count EL2 too), the cycle counter and an `INST_RETIRED` counter run over 2,000 HVC calls
/// (PSCI_VERSION, each a full exit into hyp and back). The guest executes 4 instructions per
/// call (`mov`, `hvc`, `subs`, `b.ne`): the bound is 5 per call plus 64 (the reads), where
/// each exit runs hundreds to thousands of instructions in hyp. The virtual counter (1 GHz,
/// everything included) shows what the calls really took.
pub fn el2(_env: &Env) -> Verdict {
    quiesce();
    let insts = rd!("pmceid0_el0") & (1 << INST_RETIRED) != 0;
    set_counter(0, INST_RETIRED | NSH, 0);
    wr!("pmccfiltr_el0", NSH);
    wr!("pmcntenset_el0", CYCLES | 1);
    wr!("pmcr_el0", PMCR_E | PMCR_LC);
    let calls: u64 = 2000;
    let (c0, i0, t0) = (rd!("pmccntr_el0"), rd!("pmevcntr0_el0"), arch::counter());
    // SAFETY: PSCI_VERSION changes nothing; x0-x17 are declared clobbered (SMCCC).
    unsafe {
        asm!(
            "1: mov x0, {f}",
            "hvc #0",
            "subs {n}, {n}, #1",
            "b.ne 1b",
            f = in(reg) u64::from(fid::PSCI_VERSION),
            n = inout(reg) calls => _,
            out("x0") _, out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
            out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack)
        )
    };
    let (c1, i1, t1) = (rd!("pmccntr_el0"), rd!("pmevcntr0_el0"), arch::counter());
    quiesce();
    wr!("pmccfiltr_el0", 0);
    set_counter(0, 0, 0);
    let (cyc, ins, ticks) = (c1 - c0, i1.wrapping_sub(i0), t1 - t0);
    let bound = 5 * calls + 64;
    if cyc > bound {
        return fail(line!(
            "{calls} HVC calls counted {cyc} cycles, more than the guest's {bound} (virtual counter {ticks} ticks)"
        ));
    }
    if insts && ins > bound {
        return fail(line!(
            "{calls} HVC calls counted {ins} instructions, more than the guest's {bound}"
        ));
    }
    if !insts {
        return fail(line!(
            "INST_RETIRED not implemented (QEMU counts instructions only with -icount)"
        ));
    }
    pass(line!(
        "{calls} HVC calls: {cyc} cycles, {ins} instructions counted (bound {bound}), virtual counter {ticks} ticks"
    ))
}

/// The GIC the probe polls: distributor and vCPU 0's redistributor (QEMU virt layout).
const GICD: u64 = 0x0800_0000;
const GICR_SGI: u64 = 0x080A_0000 + 0x1_0000;

fn gic_poll_setup() {
    // SAFETY: the VM's emulated GIC frames; these registers configure only this VM's
    // interrupts (ARE and group 1 on, PPI 23 group 1, priority 0x80, enabled).
    unsafe {
        arch::write32(GICD, (1 << 4) | (1 << 1));
        arch::write32(0x080A_0000 + 0x14, 0);
        arch::write32(GICR_SGI + 0x80, 1 << PMU_INTID);
        arch::write32(GICR_SGI + 0x400 + 20, 0x80 << 24);
        arch::write32(GICR_SGI + 0x100, 1 << PMU_INTID);
    }
    wr!("S3_0_C4_C6_0", 0xff); // ICC_PMR_EL1
    wr!("S3_0_C12_C12_7", 1); // ICC_IGRPEN1_EL1
}

/// `ICC_IAR1_EL1` polled up to `tries` times (with short waits) until it is not spurious.
fn poll_iar(tries: u32) -> u64 {
    for _ in 0..tries {
        let iar = rd!("S3_0_C12_C12_0") & 0xff_ffff;
        if iar != 1023 {
            return iar;
        }
        crate::rt::delay_us(100);
    }
    1023
}

/// `pmu-overflow`: event counter 2 counting cycles, preloaded 4,096 below 2^32 with its
/// overflow interrupt enabled, overflows; the overflow interrupt arrives through the vGIC as
/// INTID 23 (polled with IRQs masked); it is level-sensitive: after an EOI with the overflow
/// flag still set it is pending again, and after the flag is cleared it is not.
pub fn overflow(_env: &Env) -> Verdict {
    gic_poll_setup();
    quiesce();
    set_counter(2, CPU_CYCLES, (1 << 32) - 4096);
    wr!("pmintenset_el1", 0b100);
    wr!("pmcntenset_el0", 0b100);
    wr!("pmcr_el0", PMCR_E);
    let mut spins = 0;
    // Reading the counter first makes QEMU bring its flags up to date (it folds the count and
    // sets PMOVSSET_EL0 when a counter is read or the EL changes).
    loop {
        let _ = read_counter(2);
        if rd!("pmovsset_el0") & 0b100 != 0 {
            break;
        }
        spin(1000);
        spins += 1;
        if spins > 100_000 {
            let c = read_counter(2);
            quiesce();
            return fail(line!("counter 2 never overflowed ({c:#x})"));
        }
    }
    // Stop counting further, keep the flag and the request (PMCR_EL0.E must stay 1).
    wr!("pmcntenclr_el0", 0b100);
    let first = poll_iar(2000);
    if first != PMU_INTID {
        quiesce();
        return fail(line!(
            "overflow flag set, but ICC_IAR1_EL1 gave {first}, expected {PMU_INTID}"
        ));
    }
    wr!("S3_0_C12_C12_1", first); // ICC_EOIR1_EL1
    let again = poll_iar(2000);
    if again != PMU_INTID {
        quiesce();
        return fail(line!(
            "the overflow flag is still set, but after EOI ICC_IAR1_EL1 gave {again}"
        ));
    }
    wr!("pmovsclr_el0", 0b100);
    wr!("S3_0_C12_C12_1", again);
    let after = poll_iar(200);
    quiesce();
    if after != 1023 {
        wr!("S3_0_C12_C12_1", after);
        return fail(line!(
            "the overflow flag is clear, but ICC_IAR1_EL1 still gave {after}"
        ));
    }
    pass(line!(
        "INTID {PMU_INTID} taken, pending again while the overflow flag stayed set, gone once cleared"
    ))
}

/// PMU state a vCPU saw at its start, from [`reset`]'s second run on vCPU 1 (bit set: that
/// register was not zero), and the values themselves for the message.
static SEEN: AtomicU64 = AtomicU64::new(u64::MAX);
static SEEN_VALUES: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];

const STATE_NAMES: [&str; 11] = [
    "PMCR_EL0 (E, LC, LP)",
    "PMCCNTR_EL0",
    "PMEVCNTR0_EL0",
    "PMEVTYPER0_EL0",
    "PMSELR_EL0",
    "PMCNTENSET_EL0",
    "PMINTENSET_EL1",
    "PMOVSSET_EL0",
    "PMUSERENR_EL0",
    "PMCCFILTR_EL0",
    "PMEVCNTR5_EL0",
];

/// The PMU state that must be zero when a vCPU starts (PMCR_EL0 without its read-only fields).
fn state() -> [u64; 11] {
    [
        rd!("pmcr_el0") & 0xff,
        rd!("pmccntr_el0"),
        rd!("pmevcntr0_el0"),
        rd!("pmevtyper0_el0"),
        rd!("pmselr_el0"),
        rd!("pmcntenset_el0"),
        rd!("pmintenset_el1"),
        rd!("pmovsset_el0"),
        rd!("pmuserenr_el0"),
        rd!("pmccfiltr_el0"),
        rd!("pmevcntr5_el0"),
    ]
}

fn dirty() {
    set_counter(0, INST_RETIRED | NSH, 0x1234_5678);
    set_counter(5, CPU_CYCLES, 0xfff0_0000);
    wr!("pmccntr_el0", 0x4242_4242_4242);
    wr!("pmccfiltr_el0", NSH);
    wr!("pmuserenr_el0", 0xf);
    wr!("pmintenset_el1", CYCLES | 0x21);
    wr!("pmovsset_el0", 0x3);
    wr!("pmcntenset_el0", CYCLES | 0x21);
    wr!("pmselr_el0", 5);
    wr!("pmcr_el0", PMCR_E | PMCR_LC);
}

fn check_start() {
    let s = state();
    let mut bits = 0;
    for (i, v) in s.iter().enumerate() {
        SEEN_VALUES[i].store(*v, Ordering::Relaxed);
        if *v != 0 {
            bits |= 1 << i;
        }
    }
    SEEN.store(bits, Ordering::Release);
}

/// Waits until PSCI AFFINITY_INFO says the vCPU with `mpidr` is off.
fn wait_off(mpidr: u64) -> bool {
    let t0 = arch::counter();
    loop {
        let r = arch::smccc(false, [0xc400_0004, mpidr, 0, 0, 0, 0, 0, 0])[0];
        if r == 1 {
            return true;
        }
        if crate::rt::micros(t0, arch::counter()) > 10_000_000 {
            return false;
        }
    }
}

/// `pmu-reset` (2 vCPUs; turns the MMU on like `memory`): no PMU state survives a vCPU's restart. vCPU 0
/// checks its own state at its first test (all zero), then vCPU 1 is started, sets every PMU
/// register it can (counting on, counters, types, filters, enables, overflow flags, EL0
/// access) and powers off; started again (PSCI CPU_ON), it must find all of it zero.
pub fn reset(env: &Env) -> Verdict {
    let own = state();
    if let Some(i) = own.iter().position(|&v| v != 0) {
        return fail(line!(
            "vCPU 0 started with {} = {:#x}",
            STATE_NAMES[i],
            own[i]
        ));
    }
    // The vCPUs synchronise with atomics: the MMU must be on (as `memory` does).
    if !crate::mmu::is_on() {
        let Some(g) = crate::mmu::page_size(env) else {
            return fail(line!("no arm64.pagesize= on the command line"));
        };
        let ipa = crate::platform::hypervisor_node(env.dtb).map_or(40, |(_, i)| i as u32);
        if let Err(why) = crate::mmu::enable(env, g, ipa) {
            return fail(why);
        }
    }
    let r = crate::smp::run_on_all(env.dtb, |v, _| {
        if v == 1 {
            dirty();
        }
    });
    match r {
        Err(e) => return fail(e),
        Ok(2) => {}
        Ok(n) => return fail(line!("needs 2 vCPUs, has {n}")),
    }
    // vCPU 1 is Aff0 = 1 (the device tree's cpu@1).
    if !wait_off(1) {
        return fail(line!("vCPU 1 did not power off"));
    }
    if let Err(e) = crate::smp::run_on_all(env.dtb, |v, _| {
        if v == 1 {
            check_start();
        }
    }) {
        return fail(e);
    }
    let seen = SEEN.load(Ordering::Acquire);
    if seen == u64::MAX {
        return fail(line!("vCPU 1 did not report"));
    }
    if seen != 0 {
        let i = seen.trailing_zeros() as usize;
        return fail(line!(
            "vCPU 1 restarted with {} = {:#x} from its previous run",
            STATE_NAMES[i],
            SEEN_VALUES[i].load(Ordering::Relaxed)
        ));
    }
    pass(line!(
        "vCPU 0 started zeroed; vCPU 1 restarted with all {} registers zeroed",
        STATE_NAMES.len()
    ))
}
