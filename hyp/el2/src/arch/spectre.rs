//! The instructions of Spectre-class hygiene (the decision is `crate::spectre`): reading the
//! ID registers, asking EL3 firmware through `SMC`, and installing the decision on each CPU:
//! the vector table whose lower-EL entries run the exit mitigation (`vectors.S`), `PSTATE.SSBS`
//! cleared where the CPU has it, and the firmware's Spectre v4 mitigation switched on.

use super::{barrier, sysreg, vsys};
use crate::spectre::{CpuIds, Decision, ExitMitigation, Firmware};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

extern "C" {
    static el2_vectors: u8;
    static el2_vectors_bhb_loop: u8;
    static el2_vectors_clrbhb: u8;
    static el2_vectors_fw_wa1: u8;
    static el2_vectors_fw_wa3: u8;
}

/// The loop count `vectors.S`'s `el2_vectors_bhb_loop` reads on every exit; at least 1.
#[no_mangle]
static EL2_BHB_LOOP_K: AtomicU64 = AtomicU64::new(crate::spectre::DEFAULT_LOOP_K as u64);

/// What every CPU installs, set once by the boot CPU before it starts the others.
static VBAR: AtomicU64 = AtomicU64::new(0);
static FIRMWARE_WA2: AtomicBool = AtomicBool::new(false);
static BOOT_CPU: spin::Once<CpuIds> = spin::Once::new();

/// This CPU's registers the decision reads.
pub fn cpu_ids() -> CpuIds {
    CpuIds {
        midr: vsys::midr_el1(),
        pfr0: vsys::id_reg(4, 0),
        pfr1: vsys::id_reg(4, 1),
        mmfr1: vsys::id_reg(7, 1),
        isar2: vsys::id_reg(6, 2),
    }
}

fn smc(function: u32, x1: u32) -> i32 {
    smccc::smc32(function, [x1, 0, 0, 0, 0, 0, 0])[0] as i32
}

/// Asks EL3 firmware, through `SMC` when the device tree's PSCI conduit is `smc`
/// ([`Firmware::probe`]).
pub fn probe_firmware() -> Firmware {
    Firmware::probe(crate::psci::conduit_is_smc(), smc)
}

/// The vector table that runs `exit` on every exit from a guest.
fn table(exit: ExitMitigation) -> u64 {
    // Only the addresses of the tables are taken (vectors.S).
    match exit {
        ExitMitigation::None => (&raw const el2_vectors) as u64,
        ExitMitigation::BhbLoop(_) => (&raw const el2_vectors_bhb_loop) as u64,
        ExitMitigation::ClearBhb => (&raw const el2_vectors_clrbhb) as u64,
        ExitMitigation::FirmwareWa1 => (&raw const el2_vectors_fw_wa1) as u64,
        ExitMitigation::FirmwareWa3 => (&raw const el2_vectors_fw_wa3) as u64,
    }
}

/// Records what every CPU installs and installs it on this (the boot) CPU. Call once,
/// before the other CPUs start and before any guest runs. `exit` is the decision's exit
/// mitigation, or the one `hyp.spectre-exit=` forces.
pub fn configure(d: &Decision, exit: ExitMitigation) {
    if let ExitMitigation::BhbLoop(k) = exit {
        EL2_BHB_LOOP_K.store(u64::from(k.max(1)), Ordering::Release);
    }
    FIRMWARE_WA2.store(d.firmware_wa2(), Ordering::Release);
    BOOT_CPU.call_once(|| d.cpu);
    VBAR.store(table(exit), Ordering::Release);
    install_this_cpu();
}

/// Installs the boot CPU's decision on this CPU (each secondary, once, before it runs work);
/// does nothing before [`configure`].
pub fn install_this_cpu() {
    let vbar = VBAR.load(Ordering::Acquire);
    if vbar == 0 {
        return;
    }
    let me = cpu_ids();
    if let Some(boot) = BOOT_CPU.get().filter(|b| !b.decides_as(&me)) {
        // A big.LITTLE system would need a decision per CPU type (Linux keeps the worst
        // state of all); hyp decided for the boot CPU.
        log::warn!(
            "hyp: spectre: a cpu with MIDR {:#x} (boot cpu {:#x}) and other Spectre fields \
             uses the boot cpu's decision",
            me.midr,
            boot.midr
        );
    }
    // SAFETY: `vbar` is one of vectors.S's five tables (`table`): each 2 KiB aligned, in
    // hyp's text, which is mapped executable on every CPU; all five handle every exception
    // as `el2_vectors` does, after their mitigation.
    unsafe { sysreg::set_vbar_el2(vbar) };
    barrier::isb();
    if me.ssbs() != 0 {
        // PSTATE.SSBS = 0: speculative store bypass not allowed at EL2 (proton-pack.c
        // spectre_v4_enable_hw_mitigation: set_pstate_ssbs(0), then a speculation barrier
        // for CPUs that speculate with a stale SSBS, erratum 3194386). Every exception to
        // EL2 also enters with SSBS = SCTLR_EL2.DSSBS = 0 (entry.S).
        // SAFETY: writes PSTATE.SSBS (S3_3_C4_C2_6; this CPU has it: ID_AA64PFR1_EL1.SSBS),
        // which only changes speculation; no memory or other register is touched.
        unsafe {
            asm!(
                "msr S3_3_C4_C2_6, xzr",
                "dsb nsh",
                "isb",
                options(nostack, preserves_flags)
            )
        };
    }
    if FIRMWARE_WA2.load(Ordering::Acquire) {
        // proton-pack.c spectre_v4_enable_fw_mitigation: SMCCC_ARCH_WORKAROUND_2 with 1, on
        // every CPU; hyp never switches it off, so guests are told NOT_REQUIRED. The call
        // returns nothing (Linux ignores x0, and Trusted Firmware-A leaves it unchanged).
        smc(crate::spectre::fid::WORKAROUND_2, 1);
    }
}
