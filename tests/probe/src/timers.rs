//! The EL1 timers, WFIT, AArch32 EL0 and a vCPU's restart, from inside the VM.
//!
//! The probe takes no IRQ exceptions (PSTATE.I stays masked): a test waits with WFI, which
//! wakes for a pending virtual interrupt whatever PSTATE.I says (Arm ARM, "Wait for
//! Interrupt"), and acknowledges it by reading `ICC_IAR1_EL1` (the virtual CPU interface).

use crate::rt;
use crate::tests::{fail, pass, Env, Verdict};
use crate::{arch, line, smp};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

/// The emulated GIC (QEMU virt layout): the distributor and each vCPU's redistributor.
const GICD: u64 = 0x0800_0000;
const GICR: u64 = 0x080a_0000;
const GICR_STRIDE: u64 = 0x2_0000;
/// The SGI/PPI frame of a redistributor, and its registers (IHI 0069 §12.10-12.11).
const SGI_FRAME: u64 = 0x1_0000;
const GICR_WAKER: u64 = 0x14;
const IGROUPR0: u64 = 0x80;
const ISENABLER0: u64 = 0x100;
const ICENABLER0: u64 = 0x180;
const ISPENDR0: u64 = 0x200;
const ICPENDR0: u64 = 0x280;
const ISACTIVER0: u64 = 0x300;
const ICACTIVER0: u64 = 0x380;

/// The INTIDs.
const VTIMER: u32 = 27;
const PTIMER: u32 = 30;
const SPURIOUS: u32 = 1023;

/// CNTx_CTL_EL0 bits.
const ENABLE: u64 = 1;
const IMASK: u64 = 2;
const ISTATUS: u64 = 4;

fn rd(vcpu: usize, reg: u64) -> u64 {
    GICR + vcpu as u64 * GICR_STRIDE + SGI_FRAME + reg
}

fn read(addr: u64) -> u32 {
    // SAFETY: a register of the emulated GIC.
    unsafe { arch::read32(addr) }
}

fn write(addr: u64, v: u32) {
    // SAFETY: a register of the emulated GIC.
    unsafe { arch::write32(addr, v) }
}

macro_rules! sysreg {
    ($get:ident, $set:ident, $name:literal) => {
        #[allow(dead_code)]
        fn $get() -> u64 {
            let v: u64;
            // SAFETY: reading a timer or GIC CPU interface register of this vCPU.
            unsafe { asm!(concat!("isb", "\n", "mrs {}, ", $name), out(reg) v, options(nostack)) };
            v
        }
        #[allow(dead_code)]
        fn $set(v: u64) {
            // SAFETY: this vCPU's own timer or GIC CPU interface state.
            unsafe { asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) v, options(nostack)) };
        }
    };
}

sysreg!(cntp_ctl, set_cntp_ctl, "cntp_ctl_el0");
sysreg!(cntp_cval, set_cntp_cval, "cntp_cval_el0");
sysreg!(cntv_ctl, set_cntv_ctl, "cntv_ctl_el0");
sysreg!(cntv_cval, set_cntv_cval, "cntv_cval_el0");
sysreg!(cntpct, set_cntpct_unused, "cntpct_el0");
sysreg!(icc_sre, set_icc_sre, "S3_0_C12_C12_5");
sysreg!(icc_pmr, set_icc_pmr, "S3_0_C4_C6_0");
sysreg!(icc_igrpen1, set_icc_igrpen1, "S3_0_C12_C12_7");
sysreg!(icc_iar1, set_icc_iar1_unused, "S3_0_C12_C12_0");
sysreg!(icc_eoir1_unused, set_icc_eoir1, "S3_0_C12_C12_1");
sysreg!(icc_rpr, set_icc_rpr_unused, "S3_0_C12_C11_3");
sysreg!(icc_ap1r0, set_icc_ap1r0_unused, "S3_0_C12_C9_0");
sysreg!(icc_sgi1r_unused, set_icc_sgi1r, "S3_0_C12_C11_5");
sysreg!(id_aa64pfr0, set_id_aa64pfr0_unused, "S3_0_C0_C4_0");
sysreg!(id_aa64isar2, set_id_aa64isar2_unused, "S3_0_C0_C6_2");

/// Microseconds of `ticks` counter ticks.
fn us(ticks: u64) -> u64 {
    rt::micros(0, ticks)
}

/// Counter ticks in `us` microseconds.
fn ticks(us: u64) -> u64 {
    arch::counter_hz() * us / 1_000_000
}

/// Brings up the distributor, this vCPU's redistributor (every SGI/PPI group 1, priority 0,
/// disabled, not pending, not active) and its CPU interface (priority mask open, group 1 on).
fn gic_init(vcpu: usize) {
    write(GICD, 0x13); // EnableGrp0, EnableGrp1, ARE
    write(GICR + vcpu as u64 * GICR_STRIDE + GICR_WAKER, 0);
    write(rd(vcpu, IGROUPR0), u32::MAX);
    write(rd(vcpu, ICENABLER0), u32::MAX);
    write(rd(vcpu, ICPENDR0), u32::MAX);
    write(rd(vcpu, ICACTIVER0), u32::MAX);
    set_icc_sre(icc_sre() | 1);
    set_icc_pmr(0xff);
    set_icc_igrpen1(1);
}

fn enable(vcpu: usize, intid: u32, on: bool) {
    let reg = if on { ISENABLER0 } else { ICENABLER0 };
    write(rd(vcpu, reg), 1 << intid);
}

/// Acknowledges the next interrupt, polling `ICC_IAR1_EL1` for up to `timeout_us`.
fn poll(timeout_us: u64) -> Option<u32> {
    let t0 = arch::counter();
    loop {
        let iar = (icc_iar1() & 0xff_ffff) as u32;
        if iar != SPURIOUS {
            return Some(iar);
        }
        if rt::micros(t0, arch::counter()) > timeout_us {
            return None;
        }
    }
}

/// Waits with WFI until an interrupt can be acknowledged. Under hyp a WFI sleeps until an
/// interrupt is deliverable, so the caller makes sure one will be (a backstop timer).
fn take() -> u32 {
    loop {
        let iar = (icc_iar1() & 0xff_ffff) as u32;
        if iar != SPURIOUS {
            return iar;
        }
        // SAFETY: waiting for an interrupt has no effect on memory.
        unsafe { asm!("dsb sy", "wfi", options(nostack)) };
    }
}

fn eoi(intid: u32) {
    set_icc_eoir1(u64::from(intid));
}

/// Arms the virtual (`phys` false) or physical timer `after_us` from now; returns its deadline
/// in its own counter.
fn arm(phys: bool, after_us: u64) -> u64 {
    if phys {
        let d = cntpct() + ticks(after_us);
        set_cntp_cval(d);
        set_cntp_ctl(ENABLE);
        d
    } else {
        let d = arch::counter() + ticks(after_us);
        set_cntv_cval(d);
        set_cntv_ctl(ENABLE);
        d
    }
}

fn stop_timers() {
    set_cntp_ctl(0);
    set_cntv_ctl(0);
}

/// `timer-phys`: the EL1 physical timer alone fires PPI 30 and wakes a WFI, no earlier than
/// its deadline; once disabled it is not delivered again.
pub fn phys(_env: &Env) -> Verdict {
    gic_init(0);
    stop_timers();
    enable(0, PTIMER, true);
    // The backstop: the virtual timer 2 s later ends the WFI if PPI 30 never comes.
    enable(0, VTIMER, true);
    arm(false, 2_000_000);
    let t0 = cntpct();
    let deadline = arm(true, 10_000);
    let got = Some(take());
    let t1 = cntpct();
    let ctl = cntp_ctl();
    stop_timers();
    if let Some(i) = got {
        eoi(i);
    }
    enable(0, VTIMER, false);
    if got != Some(PTIMER) {
        return fail(line!(
            "waited for PPI 30 (CNTP_CTL_EL0 {ctl:#x}), got {got:?} after {} us",
            us(t1 - t0)
        ));
    }
    if t1 < deadline || ctl & ISTATUS == 0 {
        return fail(line!(
            "PPI 30 before the deadline ({} us early, CNTP_CTL_EL0 {ctl:#x})",
            us(deadline.saturating_sub(t1))
        ));
    }
    if let Some(again) = poll(20_000) {
        eoi(again);
        return fail(line!(
            "INTID {again} delivered after the timer was disabled"
        ));
    }
    enable(0, PTIMER, false);
    pass(line!(
        "PPI 30 woke WFI {} us after arming (deadline 10000 us), once",
        us(t1 - t0)
    ))
}

/// Waits for the two timers' interrupts; each is masked at its timer and EOId when taken.
/// Both must come, once each, neither before its own deadline (so an interrupt taken while the
/// other timer's deadline is still ahead is the right one: the order follows the deadlines
/// unless both had expired when the probe looked).
fn take_both(dv: u64, dp: u64) -> Result<(), crate::tests::Line> {
    let mut seen = [false; 2];
    while !(seen[0] && seen[1]) {
        let i = take();
        let (k, now, deadline) = match i {
            VTIMER => (0, arch::counter(), dv),
            PTIMER => (1, cntpct(), dp),
            other => {
                eoi(other);
                return Err(line!("unexpected INTID {other}"));
            }
        };
        if i == VTIMER {
            set_cntv_ctl(ENABLE | IMASK);
        } else {
            set_cntp_ctl(ENABLE | IMASK);
        }
        eoi(i);
        if now < deadline {
            return Err(line!(
                "INTID {i} {} us before its deadline",
                us(deadline - now)
            ));
        }
        if seen[k] {
            return Err(line!("INTID {i} delivered twice"));
        }
        seen[k] = true;
    }
    stop_timers();
    Ok(())
}

/// `timer-both`: both EL1 timers armed at once, the virtual one first, the physical one first
/// and both at one deadline: each delivers its own PPI, once, no earlier than its own deadline.
pub fn both(_env: &Env) -> Verdict {
    gic_init(0);
    stop_timers();
    enable(0, VTIMER, true);
    enable(0, PTIMER, true);
    for (round, (v_us, p_us)) in [(5_000, 15_000), (15_000, 5_000), (8_000, 8_000)]
        .into_iter()
        .enumerate()
    {
        let dv = arm(false, v_us);
        let dp = arm(true, p_us);
        if let Err(e) = take_both(dv, dp) {
            stop_timers();
            return fail(e);
        }
        if let Some(extra) = poll(10_000) {
            eoi(extra);
            return fail(line!("round {round}: INTID {extra} delivered again"));
        }
    }
    enable(0, VTIMER, false);
    enable(0, PTIMER, false);
    pass(line!(
        "virtual first, physical first, one deadline: each PPI once, none before its deadline"
    ))
}

/// Polls `GICR_ISPENDR0` until bit `intid` is `want`; the last value read.
fn wait_pending(intid: u32, want: bool, timeout_us: u64) -> u32 {
    let t0 = arch::counter();
    loop {
        let p = read(rd(0, ISPENDR0));
        if (p & 1 << intid != 0) == want || rt::micros(t0, arch::counter()) > timeout_us {
            return p;
        }
    }
}

/// `timer-pending`: the physical timer's interrupt disabled in the vGIC: its expiry shows as
/// pending in `GICR_ISPENDR0` without being delivered; masking the timer (IMASK) clears the
/// pending state (level-sensitive), unmasking sets it again, and enabling the interrupt
/// delivers it.
pub fn pending(_env: &Env) -> Verdict {
    gic_init(0);
    stop_timers();
    enable(0, PTIMER, false);
    arm(true, 1_000);
    let t0 = arch::counter();
    while cntp_ctl() & ISTATUS == 0 {
        if rt::micros(t0, arch::counter()) > 1_000_000 {
            stop_timers();
            return fail(line!(
                "CNTP_CTL_EL0.ISTATUS not set 1 s after a 1 ms deadline"
            ));
        }
    }
    let p = wait_pending(PTIMER, true, 1_000_000);
    if p & 1 << PTIMER == 0 {
        stop_timers();
        return fail(line!(
            "timer expired but GICR_ISPENDR0 is {p:#x}: PPI 30 not pending"
        ));
    }
    if let Some(i) = poll(10_000) {
        eoi(i);
        stop_timers();
        return fail(line!("INTID {i} delivered while disabled"));
    }
    set_cntp_ctl(ENABLE | IMASK);
    let masked = read(rd(0, ISPENDR0));
    set_cntp_ctl(ENABLE);
    let again = wait_pending(PTIMER, true, 1_000_000);
    enable(0, PTIMER, true);
    let got = poll(1_000_000);
    set_cntp_ctl(0);
    if let Some(i) = got {
        eoi(i);
    }
    enable(0, PTIMER, false);
    if masked & 1 << PTIMER != 0 {
        return fail(line!(
            "GICR_ISPENDR0 {masked:#x} still has PPI 30 pending after IMASK (not level)"
        ));
    }
    if again & 1 << PTIMER == 0 {
        return fail(line!(
            "PPI 30 not pending again after unmasking ({again:#x})"
        ));
    }
    if got != Some(PTIMER) {
        return fail(line!("enabling PPI 30 delivered {got:?}"));
    }
    pass(line!(
        "GICR_ISPENDR0 bit 30 set while disabled, clear under IMASK, set again, delivered once enabled"
    ))
}

/// `wfit`: with FEAT_WFxT shown (`ID_AA64ISAR2_EL1.WFxT` = 2), a WFIT with a deadline 20 ms
/// ahead returns at its deadline (repeated while it returns early, which is allowed), not at
/// the backstop timer 1 s later.
pub fn wfit(_env: &Env) -> Verdict {
    let wfxt = id_aa64isar2() & 0xf;
    if wfxt < 2 {
        return pass(line!("WFxT not shown (ID_AA64ISAR2_EL1.WFxT {wfxt})"));
    }
    gic_init(0);
    stop_timers();
    // The backstop: a hyp that ignored the deadline would sleep until this.
    enable(0, PTIMER, true);
    arm(true, 1_000_000);
    let t0 = arch::counter();
    let deadline = t0 + ticks(20_000);
    let mut n = 0;
    while arch::counter() < deadline && n < 1000 {
        // SAFETY: WFIT X0 (0xd5031020: FEAT_WFxT is shown) waits without touching memory.
        unsafe { asm!("dsb sy", ".inst 0xd5031020", in("x0") deadline, options(nostack)) };
        n += 1;
    }
    let t1 = arch::counter();
    let backstop = cntp_ctl() & ISTATUS != 0;
    set_cntp_ctl(0);
    if let Some(i) = poll(0) {
        eoi(i);
    }
    enable(0, PTIMER, false);
    if backstop || t1 < deadline {
        return fail(line!(
            "WFIT with a 20000 us deadline returned after {} us ({n} WFIT, backstop fired: {backstop})",
            us(t1 - t0)
        ));
    }
    pass(line!(
        "WFIT with a 20000 us deadline returned after {} us ({n} WFIT)",
        us(t1 - t0)
    ))
}

// The vectors `aarch32-el0` runs with: every entry records its offset in x14 and the syndrome
// in x9 (ESR_EL1), x10 (ELR_EL1), x11 (SPSR_EL1), then returns to x12 at EL1h, DAIF masked.
global_asm!(
    r#"
.section .text.vectors, "ax"
.balign 0x800
.global timers_vectors
timers_vectors:
    .irp off, 0x000, 0x080, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380, 0x400, 0x480, 0x500, 0x580, 0x600, 0x680, 0x700, 0x780
    .balign 0x80
    mov     x14, #\off
    b       timers_catch
    .endr
.text
timers_catch:
    mrs     x9, esr_el1
    mrs     x10, elr_el1
    mrs     x11, spsr_el1
    msr     elr_el1, x12
    mov     x13, #0x3c5
    msr     spsr_el1, x13
    eret
"#
);

/// The AArch32 code `aarch32-el0` tries to return to: `LDR r1, [r0]` (0xe5901000) with r0 the
/// UART's flag register, an access hyp emulates, so its first instruction exits to hyp; then
/// `B .` (0xeafffffe).
#[repr(align(8))]
struct A32Code([u32; 2]);
static A32_CODE: A32Code = A32Code([0xe590_1000, 0xeaff_fffe]);

/// `aarch32-el0`: EL0 is AArch64-only (`ID_AA64PFR0_EL1.EL0` = 1), and an ERET to AArch32
/// EL0 ends as an illegal exception return does (Arm ARM, "Illegal return events from
/// AArch64 state"): an Illegal Execution state exception (EC 0x0E) at EL1 from EL1h, at the
/// return address, with SPSR_EL1.IL set. Run with the MMU off (EL0 may execute anything).
pub fn aarch32_el0(_env: &Env) -> Verdict {
    let el0 = id_aa64pfr0() & 0xf;
    if el0 != 1 {
        return fail(line!("ID_AA64PFR0_EL1.EL0 is {el0}, not 1 (AArch64 only)"));
    }
    extern "C" {
        static timers_vectors: u8;
    }
    let vectors = core::ptr::addr_of!(timers_vectors) as u64;
    let target = A32_CODE.0.as_ptr() as u64;
    // AArch32 User mode (M = 0b10000), A, I and F masked.
    let spsr: u64 = 0x10 | 0b111 << 6;
    let (esr, elr, got_spsr, vector): (u64, u64, u64, u64);
    // SAFETY: the return goes nowhere but to `timers_vectors`, which comes back to label 1 at
    // EL1h with DAIF masked; VBAR_EL1 is restored; x0 and x9-x15 are declared clobbered.
    unsafe {
        asm!(
            "mrs x15, vbar_el1",
            "msr vbar_el1, {vec}",
            "msr spsr_el1, {spsr}",
            "msr elr_el1, {target}",
            "adr x12, 1f",
            "isb",
            "eret",
            "1:",
            "msr vbar_el1, x15",
            "isb",
            vec = in(reg) vectors,
            spsr = in(reg) spsr,
            target = in(reg) target,
            inout("x0") rt::UART + 0x18 => _,
            out("x9") esr, out("x10") elr, out("x11") got_spsr, out("x12") _, out("x13") _,
            out("x14") vector, out("x15") _,
            options(nostack)
        )
    };
    let ec = esr >> 26;
    if vector != 0x200
        || ec != 0x0e
        || elr != target
        || got_spsr & 1 << 20 == 0
        || got_spsr & 0x1f != 0b0101
    {
        return fail(line!(
            "ERET to AArch32 EL0 ended at vector {vector:#x}: ESR_EL1 {esr:#x}, ELR_EL1 {elr:#x} (target {target:#x}), SPSR_EL1 {got_spsr:#x}"
        ));
    }
    pass(line!(
        "ID_AA64PFR0_EL1.EL0 1; ERET to AArch32 EL0: Illegal Execution state (EC 0x0e) at EL1h, ELR at the target, SPSR_EL1.IL set"
    ))
}

/// What vCPU 1 recorded for `cpu-restart` (written by vCPU 1, read by vCPU 0 after).
static R_SGI_TAKEN: AtomicU64 = AtomicU64::new(0);
static R_LAST_COUNT: AtomicU64 = AtomicU64::new(0);
static R_FIRST_COUNT: AtomicU64 = AtomicU64::new(0);
static R_RPR: AtomicU64 = AtomicU64::new(0);
static R_AP1R0: AtomicU64 = AtomicU64::new(0);
static R_ACTIVE: AtomicU64 = AtomicU64::new(0);
static R_IGRPEN1: AtomicU64 = AtomicU64::new(0);
static R_AGAIN: AtomicU64 = AtomicU64::new(0);
static R_FREQ: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

const SGI: u32 = 5;

/// ICC_SGI1R_EL1 for SGI `SGI` to the vCPU with Aff0 1 (vCPU 1).
fn sgi_to_vcpu1() -> u64 {
    u64::from(SGI) << 24 | 1 << 1
}

/// vCPU 1, first run: takes SGI 5 and leaves it active (no EOI), then powers off.
fn restart_phase1(vcpu: usize, _n: usize) {
    if vcpu != 1 {
        return;
    }
    R_FREQ[1].store(arch::counter_hz(), Ordering::Release);
    gic_init(1);
    enable(1, SGI, true);
    set_icc_sgi1r(sgi_to_vcpu1());
    let got = poll(1_000_000);
    R_SGI_TAKEN.store(got.map_or(0, |i| u64::from(i) + 1), Ordering::Release);
    R_LAST_COUNT.store(arch::counter(), Ordering::Release);
}

/// vCPU 1, second run: its interrupt state must be the reset state; SGI 5 is taken again.
fn restart_phase2(vcpu: usize, _n: usize) {
    if vcpu != 1 {
        return;
    }
    R_FIRST_COUNT.store(arch::counter(), Ordering::Release);
    R_RPR.store(icc_rpr() & 0xff, Ordering::Release);
    R_AP1R0.store(icc_ap1r0(), Ordering::Release);
    R_ACTIVE.store(u64::from(read(rd(1, ISACTIVER0))), Ordering::Release);
    R_IGRPEN1.store(icc_igrpen1(), Ordering::Release);
    gic_init(1);
    enable(1, SGI, true);
    set_icc_sgi1r(sgi_to_vcpu1());
    let got = poll(1_000_000);
    if let Some(i) = got {
        eoi(i);
    }
    R_AGAIN.store(got.map_or(0, |i| u64::from(i) + 1), Ordering::Release);
}

/// PSCI AFFINITY_INFO (SMC64) of vCPU 1 (MPIDR Aff0 = 1): 0 on, 1 off, 2 on pending.
fn vcpu1_state() -> i64 {
    arch::smccc(false, [0xc400_0004, 1, 0, 0, 0, 0, 0, 0])[0] as i64
}

/// `cpu-restart` (2 vCPUs, MMU on): vCPU 1 takes an SGI and powers off with it still active;
/// started again, it finds its interrupt state reset (running priority idle, no active
/// priority, no active interrupt, group 1 off) and takes the SGI again; its virtual counter
/// never went backwards across the restart; CNTFRQ_EL0 is the same on both vCPUs.
pub fn restart(env: &Env) -> Verdict {
    R_FREQ[0].store(arch::counter_hz(), Ordering::Release);
    if let Err(e) = smp::run_on_all(env.dtb, restart_phase1) {
        return fail(e);
    }
    let taken = R_SGI_TAKEN.load(Ordering::Acquire);
    if taken != u64::from(SGI) + 1 {
        return fail(line!(
            "vCPU 1 did not take SGI {SGI} (got {})",
            taken as i64 - 1
        ));
    }
    let t0 = arch::counter();
    while vcpu1_state() != 1 {
        if rt::micros(t0, arch::counter()) > 1_000_000 {
            return fail(line!("vCPU 1 not OFF 1 s after CPU_OFF"));
        }
    }
    let before_on = arch::counter();
    if let Err(e) = smp::run_on_all(env.dtb, restart_phase2) {
        return fail(e);
    }
    let (last, first) = (
        R_LAST_COUNT.load(Ordering::Acquire),
        R_FIRST_COUNT.load(Ordering::Acquire),
    );
    let rpr = R_RPR.load(Ordering::Acquire);
    let ap = R_AP1R0.load(Ordering::Acquire);
    let active = R_ACTIVE.load(Ordering::Acquire);
    let grp = R_IGRPEN1.load(Ordering::Acquire);
    let again = R_AGAIN.load(Ordering::Acquire);
    if rpr != 0xff || ap != 0 || active != 0 || grp != 0 {
        return fail(line!(
            "after restart: ICC_RPR_EL1 {rpr:#x}, ICC_AP1R0_EL1 {ap:#x}, GICR_ISACTIVER0 {active:#x}, ICC_IGRPEN1_EL1 {grp} (expected 0xff, 0, 0, 0)"
        ));
    }
    if again != u64::from(SGI) + 1 {
        return fail(line!(
            "after restart SGI {SGI} was not taken again (got {})",
            again as i64 - 1
        ));
    }
    if first < last || first < before_on {
        return fail(line!(
            "virtual counter went backwards across the restart: {last} before CPU_OFF, {first} after CPU_ON (vCPU 0 read {before_on} before it)"
        ));
    }
    let f = [0, 1].map(|i| R_FREQ[i].load(Ordering::Acquire));
    if f[0] != f[1] {
        return fail(line!(
            "CNTFRQ_EL0 differs: {} on vCPU 0, {} on vCPU 1",
            f[0],
            f[1]
        ));
    }
    pass(line!(
        "interrupt state reset on CPU_ON (RPR idle, AP1R0 0, nothing active), SGI taken again, counter +{} us across the restart, CNTFRQ {} Hz on both vCPUs",
        us(first - last),
        f[0]
    ))
}

/// The counter hand-off of `counters`: round `r`'s stamp from vCPU `r % 2`.
static STAMP: AtomicU64 = AtomicU64::new(0);
static ROUND: AtomicU64 = AtomicU64::new(0);
static BAD: AtomicU64 = AtomicU64::new(0);
const ROUNDS: u64 = 200;

/// Each vCPU, in turn, reads its counter after the other's stamp and checks it is not lower.
fn hand_off(vcpu: usize, n: usize) {
    if vcpu >= 2 || n < 2 {
        return;
    }
    let t0 = arch::counter();
    loop {
        let r = ROUND.load(Ordering::Acquire);
        if r >= ROUNDS || rt::micros(t0, arch::counter()) > 10_000_000 {
            return;
        }
        if r % 2 != vcpu as u64 {
            core::hint::spin_loop();
            continue;
        }
        let now = arch::counter();
        if now < STAMP.load(Ordering::Acquire) {
            BAD.fetch_add(1, Ordering::AcqRel);
        }
        STAMP.store(arch::counter(), Ordering::Release);
        ROUND.store(r + 1, Ordering::Release);
    }
}

/// `counters` (2 vCPUs, MMU on): the virtual counter is one counter for the VM: 200 hand-offs
/// between the vCPUs, each reading its counter after the other's last reading, never see it
/// lower.
pub fn counters(env: &Env) -> Verdict {
    STAMP.store(0, Ordering::Release);
    ROUND.store(0, Ordering::Release);
    BAD.store(0, Ordering::Release);
    match smp::run_on_all(env.dtb, hand_off) {
        Ok(n) if n >= 2 => {}
        Ok(n) => return fail(line!("needs 2 vCPUs, the VM has {n}")),
        Err(e) => return fail(e),
    }
    let rounds = ROUND.load(Ordering::Acquire);
    let bad = BAD.load(Ordering::Acquire);
    if rounds != ROUNDS || bad != 0 {
        return fail(line!(
            "{rounds} of {ROUNDS} hand-offs, {bad} saw the other vCPU's counter ahead"
        ));
    }
    pass(line!(
        "{ROUNDS} hand-offs between 2 vCPUs, the virtual counter never lower, CNTFRQ_EL0 {} Hz",
        arch::counter_hz()
    ))
}
