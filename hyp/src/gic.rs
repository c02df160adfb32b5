//! The physical GICv3 as hyp drives it: the distributor (once), each CPU's redistributor and
//! CPU interface (on that CPU), and the few interrupts hyp itself takes.
//!
//! hyp runs with PSTATE.I masked and never takes an IRQ exception at EL2: physical interrupts
//! arrive as guest exits (HCR_EL2.IMO routes them to EL2 while a guest runs) or wake a `WFI`,
//! and the run loop acknowledges them by polling `ICC_IAR1_EL1`.
//!
//! Interrupts hyp enables (group 1, one priority, `EOImode` = 0: `EOIR1` deactivates):
//! - SGI [`KICK_SGI`]: another CPU changed this CPU's vCPU (an injection, a VM stopping).
//! - PPI 25: the GIC maintenance interrupt (a list register with `EOI` set was deactivated,
//!   or list-register underflow).
//! - PPI 27: the EL1 virtual timer of the vCPU pinned here (disabled while its virtual line is
//!   high, see `vm::vcpu`).
//! - The host PL011's SPI, routed to CPU 0: console input for the first VM.

use aarch64_cpu::registers::ICC_SRE_EL2;
use el2::arch::{barrier, vsys};
use el2::dt::{Platform, MAX_REDIST_REGIONS};
use el2::smp;
use log::warn;
use platform::gicv3::{GICR_STRIDE, ICC_IAR1_EL1, SPECIAL_INTIDS};
use platform::virt::{MAINTENANCE_INTID, VTIMER_INTID};
use spin::Once;
use tock_registers::LocalRegisterCopy;

/// The SGI one CPU sends another to make its vCPU exit or wake.
pub const KICK_SGI: u32 = 8;

const PRIORITY: u8 = 0xa0;

// Distributor registers (IHI 0069 §12.9).
const GICD_CTLR: usize = 0x0;
const GICD_TYPER: usize = 0x4;
const GICD_IGROUPR: usize = 0x80;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ICFGR: usize = 0xc00;
const GICD_IROUTER: usize = 0x6000;
const CTLR_RWP: u32 = 1 << 31;
const CTLR_ARE_NS: u32 = 1 << 4;
const CTLR_ENABLE_G1NS: u32 = 1 << 1;

// Redistributor registers (IHI 0069 §12.10/12.11).
const GICR_TYPER: usize = 0x8;
const GICR_WAKER: usize = 0x14;
const SGI_BASE: usize = 0x1_0000;
const GICR_IGROUPR0: usize = SGI_BASE + 0x80;
const GICR_ISENABLER0: usize = SGI_BASE + 0x100;
const GICR_ICENABLER0: usize = SGI_BASE + 0x180;
const GICR_IPRIORITYR: usize = SGI_BASE + 0x400;
const GICR_ICFGR1: usize = SGI_BASE + 0xc04;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

struct Layout {
    dist: usize,
    redists: [(usize, usize); MAX_REDIST_REGIONS],
    n_redists: usize,
    uart_spi: Option<u32>,
    uart: usize,
}

static LAYOUT: Once<Layout> = Once::new();
/// Each CPU's redistributor (0 = not found yet).
static REDIST: [core::sync::atomic::AtomicUsize; el2::dt::MAX_CPUS] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; el2::dt::MAX_CPUS];

fn rd(addr: usize) -> u32 {
    // SAFETY: `addr` is a register of the GIC the device tree names, mapped Device-nGnRE in
    // hyp's identity map (mmu.rs maps every GIC region).
    unsafe { (addr as *const u32).read_volatile() }
}

fn wr(addr: usize, v: u32) {
    // SAFETY: as in `rd`; hyp is the only driver of the physical GIC.
    unsafe { (addr as *mut u32).write_volatile(v) }
}

fn rd64(addr: usize) -> u64 {
    // SAFETY: as in `rd` (GICR_TYPER is a 64-bit register).
    unsafe { (addr as *const u64).read_volatile() }
}

fn wr64(addr: usize, v: u64) {
    // SAFETY: as in `wr` (GICD_IROUTER<n> is a 64-bit register).
    unsafe { (addr as *mut u64).write_volatile(v) }
}

fn wait_rwp(dist: usize) {
    for _ in 0..10_000_000 {
        if rd(dist + GICD_CTLR) & CTLR_RWP == 0 {
            return;
        }
        core::hint::spin_loop();
    }
    warn!("hyp: GICD_CTLR.RWP stuck: the distributor did not complete a write");
}

/// Why the physical GIC cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// The host device tree has no GICv3.
    NoGic,
    /// No redistributor in the device tree's GICR regions serves the CPU with this affinity.
    NoRedistributor {
        /// The CPU's MPIDR affinity.
        mpidr: u64,
    },
}

impl core::fmt::Display for GicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            GicError::NoGic => {
                "the host device tree has no GICv3 (arm,gic-v3): start QEMU with gic-version=3"
            }
            GicError::NoRedistributor { .. } => {
                "no GIC redistributor for this CPU in the device tree's GICR regions"
            }
        })
    }
}

/// Sets up the distributor (boot CPU, once): affinity routing, group 1 enabled, every SPI
/// disabled except the host UART's (group 1, routed to CPU 0) when `uart_rx` is set.
pub fn init_distributor(platform: &Platform<'_>, uart_rx: bool) -> Result<(), GicError> {
    let Some(gic) = platform.gic else {
        return Err(GicError::NoGic);
    };
    // The same capacity as the device tree's list: every region it kept is used.
    let mut redists = [(0usize, 0usize); MAX_REDIST_REGIONS];
    for (slot, r) in redists.iter_mut().zip(gic.redists.as_slice()) {
        *slot = (r.base as usize, r.size as usize);
    }
    let n = gic.redists.len();
    let uart = platform.uart.map(|u| u.regs.base as usize).unwrap_or(0);
    let uart_spi = platform
        .uart
        .and_then(|u| u.intid)
        .filter(|&i| (32..1020).contains(&i));
    let layout = LAYOUT.call_once(|| Layout {
        dist: gic.dist.base as usize,
        redists,
        n_redists: n,
        uart_spi: if uart_rx { uart_spi } else { None },
        uart,
    });
    let d = layout.dist;
    // Disable, then turn on affinity routing (GICD_CTLR.ARE_NS) before enabling group 1
    // (IHI 0069 §12.9.4: ARE may only change while the groups are disabled).
    wr(d + GICD_CTLR, 0);
    wait_rwp(d);
    wr(d + GICD_CTLR, CTLR_ARE_NS);
    wait_rwp(d);
    let lines = ((rd(d + GICD_TYPER) & 0x1f) as usize + 1) * 32;
    for i in (32..lines.min(1020)).step_by(32) {
        wr(d + GICD_ICENABLER + i / 8, u32::MAX);
        wr(d + GICD_IGROUPR + i / 8, u32::MAX);
    }
    wait_rwp(d);
    if let Some(spi) = layout.uart_spi {
        let spi = spi as usize;
        // SAFETY-free MMIO: priority byte, level-triggered (ICFGR 0b00), routed to CPU 0.
        let prio_reg = d + GICD_IPRIORITYR + (spi & !3);
        let shift = (spi & 3) * 8;
        let v = (rd(prio_reg) & !(0xff << shift)) | ((PRIORITY as u32) << shift);
        wr(prio_reg, v);
        let cfg_reg = d + GICD_ICFGR + (spi / 16) * 4;
        wr(cfg_reg, rd(cfg_reg) & !(3 << ((spi % 16) * 2)));
        wr64(d + GICD_IROUTER + spi * 8, smp::mpidr_of(0).unwrap_or(0));
        wr(d + GICD_ISENABLER + (spi / 32) * 4, 1 << (spi % 32));
        // The host PL011: receive and receive-timeout interrupts (UARTIMSC RXIM | RTIM).
        if layout.uart != 0 {
            wr(layout.uart + 0x38, (1 << 4) | (1 << 6));
        }
    }
    wr(d + GICD_CTLR, CTLR_ARE_NS | CTLR_ENABLE_G1NS);
    wait_rwp(d);
    Ok(())
}

fn find_redist(mpidr: u64) -> Option<usize> {
    let layout = LAYOUT.get()?;
    // GICR_TYPER[63:32] = Aff3.Aff2.Aff1.Aff0 (IHI 0069 §12.11.39).
    let want = ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff);
    for &(base, size) in &layout.redists[..layout.n_redists] {
        let mut a = base;
        while a + GICR_STRIDE as usize <= base + size {
            let typer = rd64(a + GICR_TYPER);
            if typer >> 32 == want {
                return Some(a);
            }
            if typer & (1 << 4) != 0 {
                break; // Last
            }
            a += GICR_STRIDE as usize;
        }
    }
    None
}

/// Sets up this CPU's redistributor and CPU interface (on the CPU itself; idempotent).
pub fn init_cpu() -> Result<(), GicError> {
    let cpu = smp::current_cpu();
    let slot = &REDIST[cpu.min(el2::dt::MAX_CPUS - 1)];
    if slot.load(core::sync::atomic::Ordering::Acquire) != 0 {
        return Ok(());
    }
    let mpidr = el2::arch::sysreg::mpidr_affinity();
    let Some(r) = find_redist(mpidr) else {
        return Err(GicError::NoRedistributor { mpidr });
    };
    // Wake the redistributor (IHI 0069 §12.11.44).
    wr(r + GICR_WAKER, rd(r + GICR_WAKER) & !WAKER_PROCESSOR_SLEEP);
    for _ in 0..10_000_000 {
        if rd(r + GICR_WAKER) & WAKER_CHILDREN_ASLEEP == 0 {
            break;
        }
        core::hint::spin_loop();
    }
    wr(r + GICR_ICENABLER0, u32::MAX);
    wr(r + GICR_IGROUPR0, u32::MAX);
    for i in 0..8 {
        wr(
            r + GICR_IPRIORITYR + i * 4,
            u32::from_ne_bytes([PRIORITY; 4]),
        );
    }
    // PPIs 25 and 27 level-sensitive (ICFGR1 fields 0b00).
    let cfg = rd(r + GICR_ICFGR1)
        & !(3 << ((MAINTENANCE_INTID - 16) * 2) | 3 << ((VTIMER_INTID - 16) * 2));
    wr(r + GICR_ICFGR1, cfg);
    wr(
        r + GICR_ISENABLER0,
        (1 << KICK_SGI) | (1 << MAINTENANCE_INTID) | (1 << VTIMER_INTID),
    );
    // SAFETY: the CPU interface at EL2: system-register access on (ICC_SRE_EL2.SRE) and
    // allowed for EL1 (Enable, so the guest's ICC_SRE_EL1 works: IHI 0069 §12.2.24); priority
    // mask open; no binary-point preemption (hyp never takes IRQs); EOImode 0; group 1 on.
    unsafe {
        vsys::set_icc_sre_el2(
            vsys::icc_sre_el2() | (ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET).value,
        );
        barrier::isb();
        vsys::set_icc_pmr_el1(0xff);
        vsys::set_icc_bpr1_el1(0);
        vsys::set_icc_ctlr_el1(0);
        vsys::set_icc_igrpen1_el1(1);
    }
    barrier::isb();
    slot.store(r, core::sync::atomic::Ordering::Release);
    Ok(())
}

fn my_redist() -> usize {
    REDIST[smp::current_cpu().min(el2::dt::MAX_CPUS - 1)]
        .load(core::sync::atomic::Ordering::Acquire)
}

/// Enables (`on`) or disables a PPI on this CPU.
pub fn set_ppi(intid: u32, on: bool) {
    let r = my_redist();
    if r == 0 || intid >= 32 {
        return;
    }
    let reg = if on { GICR_ISENABLER0 } else { GICR_ICENABLER0 };
    wr(r + reg, 1 << intid);
}

/// Sends [`KICK_SGI`] to the CPU with logical index `cpu`.
pub fn kick(cpu: usize) {
    let Some(m) = smp::mpidr_of(cpu) else { return };
    let Some(v) = el2::exc::sgi1r(m, KICK_SGI) else {
        return; // Aff0 above 15: not addressable without a range selector
    };
    barrier::dsb_ish();
    // SAFETY: sends an SGI; the target only exits its guest or wakes from WFI.
    unsafe { vsys::set_icc_sgi1r_el1(v) };
    barrier::isb();
}

/// The host UART's SPI, if hyp takes console input.
pub fn uart_spi() -> Option<u32> {
    LAYOUT.get().and_then(|l| l.uart_spi)
}

/// Reads every byte waiting in the host UART's receive FIFO into `f`.
pub fn drain_host_uart(mut f: impl FnMut(u8)) {
    let Some(l) = LAYOUT.get() else { return };
    if l.uart == 0 {
        return;
    }
    // UARTFR.RXFE (bit 4): receive FIFO empty.
    for _ in 0..64 {
        if rd(l.uart + 0x18) & (1 << 4) != 0 {
            break;
        }
        f(rd(l.uart) as u8);
    }
}

/// The INTID of an `ICC_IAR1_EL1` value.
pub fn intid(iar: u64) -> u32 {
    LocalRegisterCopy::<u64, ICC_IAR1_EL1::Register>::new(iar).read(ICC_IAR1_EL1::INTID) as u32
}

/// Acknowledges the highest-priority pending interrupt: its `ICC_IAR1_EL1` value, or `None`
/// when nothing is pending (a special INTID, 1020-1023).
pub fn ack() -> Option<u64> {
    let iar = vsys::icc_iar1_el1();
    if intid(iar) >= SPECIAL_INTIDS.start {
        None
    } else {
        Some(iar)
    }
}

/// Ends an interrupt acknowledged with [`ack`] (priority drop and deactivation).
pub fn eoi(iar: u64) {
    // SAFETY: `iar` came from ICC_IAR1_EL1 on this CPU.
    unsafe { vsys::set_icc_eoir1_el1(iar) };
}
