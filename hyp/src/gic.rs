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
//! - The PPIs of per-CPU devices the vCPU pinned here owns (the EL1 virtual and physical timers,
//!   PPIs 27 and 30): enabled by the vCPU, disabled while its virtual line is high (`vm::ppi`).
//! - The host PL011's SPI, routed to CPU 0: console input for the first VM.

use aarch64_cpu::registers::ICC_SRE_EL2;
use el2::arch::{barrier, vsys};
use el2::dt::{Platform, MAX_REDIST_REGIONS};
use el2::mmio::MmioRegion;
use el2::smp;
use log::warn;
use platform::gicv3::{
    gicd, gicr, GICD_CTLR, GICD_TYPER, GICR_STRIDE, GICR_TYPER, GICR_WAKER, ICC_IAR1_EL1,
    SPECIAL_INTIDS,
};
use platform::virt::MAINTENANCE_INTID;
use platform::{pl011, Mpidr};
use spin::Once;
use tock_registers::LocalRegisterCopy;

/// The SGI one CPU sends another to make its vCPU exit or wake.
pub const KICK_SGI: u32 = 8;

const PRIORITY: u8 = 0xa0;

struct Layout {
    dist: MmioRegion,
    redists: [Option<MmioRegion>; MAX_REDIST_REGIONS],
    uart_spi: Option<u32>,
    uart: Option<MmioRegion>,
}

static LAYOUT: Once<Layout> = Once::new();
/// Each CPU's redistributor, once found.
static REDIST: [Once<MmioRegion>; el2::dt::MAX_CPUS] = [const { Once::new() }; el2::dt::MAX_CPUS];

/// A register offset of `platform::gicv3` or `platform::pl011` as an `MmioRegion` offset.
const fn off(offset: u64) -> usize {
    offset as usize
}

fn wait_rwp(dist: &MmioRegion) {
    for _ in 0..10_000_000 {
        if !GICD_CTLR::RWP.is_set(dist.read32(off(gicd::CTLR))) {
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
///
/// # Safety
/// The GIC's distributor and redistributor regions and the UART of `platform` must be mapped
/// Device-nGnRE in hyp's identity map for good (`mmu::enable` maps every device region of
/// the host device tree), and hyp must be the only driver of the GIC; the UART it shares
/// with the console (this driver only reads its receive FIFO and sets its interrupt mask).
pub unsafe fn init_distributor(platform: &Platform<'_>, uart_rx: bool) -> Result<(), GicError> {
    let Some(gic) = platform.gic else {
        return Err(GicError::NoGic);
    };
    // SAFETY: the caller's contract; the range is the device tree's own for the distributor
    // (and below, for each redistributor region and the UART).
    let dist = unsafe { MmioRegion::of(gic.dist) };
    // The same capacity as the device tree's list: every region it kept is used.
    let mut redists = [None; MAX_REDIST_REGIONS];
    for (slot, r) in redists.iter_mut().zip(gic.redists.as_slice()) {
        // SAFETY: as above.
        *slot = Some(unsafe { MmioRegion::of(*r) });
    }
    let uart = platform.uart.map(|u| {
        // SAFETY: as above.
        unsafe { MmioRegion::of(u.regs) }
    });
    let uart_spi = platform
        .uart
        .and_then(|u| u.intid)
        .filter(|&i| (32..SPECIAL_INTIDS.start).contains(&i));
    let layout = LAYOUT.call_once(|| Layout {
        dist,
        redists,
        uart_spi: if uart_rx { uart_spi } else { None },
        uart,
    });
    let d = &layout.dist;
    // Disable, then turn on affinity routing (GICD_CTLR.ARE_NS) before enabling group 1
    // (IHI 0069 §12.9.4: ARE may only change while the groups are disabled).
    d.write32(off(gicd::CTLR), 0);
    wait_rwp(d);
    d.write32(off(gicd::CTLR), GICD_CTLR::ARE::SET.value);
    wait_rwp(d);
    let typer = d.read32(off(gicd::TYPER));
    let lines = (GICD_TYPER::ITLinesNumber.read(typer) as usize + 1) * 32;
    for i in (32..lines.min(SPECIAL_INTIDS.start as usize)).step_by(32) {
        d.write32(off(gicd::ICENABLER) + i / 8, u32::MAX);
        d.write32(off(gicd::IGROUPR) + i / 8, u32::MAX);
    }
    wait_rwp(d);
    if let Some(spi) = layout.uart_spi {
        let spi = spi as usize;
        // Priority byte, level-triggered (ICFGR 0b00), routed to CPU 0.
        let prio_reg = off(gicd::IPRIORITYR) + (spi & !3);
        let shift = (spi & 3) * 8;
        let v = (d.read32(prio_reg) & !(0xff << shift)) | ((PRIORITY as u32) << shift);
        d.write32(prio_reg, v);
        let cfg_reg = off(gicd::ICFGR) + (spi / 16) * 4;
        d.write32(cfg_reg, d.read32(cfg_reg) & !(3 << ((spi % 16) * 2)));
        d.write64(off(gicd::IROUTER) + spi * 8, smp::mpidr_of(0).unwrap_or(0));
        d.write32(off(gicd::ISENABLER) + (spi / 32) * 4, 1 << (spi % 32));
        // The host PL011: receive and receive-timeout interrupts.
        if let Some(uart) = &layout.uart {
            uart.write32(off(pl011::reg::IMSC), pl011::int::RX | pl011::int::RT);
        }
    }
    d.write32(
        off(gicd::CTLR),
        (GICD_CTLR::ARE::SET + GICD_CTLR::EnableGrp1::SET).value,
    );
    wait_rwp(d);
    Ok(())
}

fn find_redist(mpidr: u64) -> Option<MmioRegion> {
    let layout = LAYOUT.get()?;
    let want = u64::from(Mpidr::from_affinity(mpidr).packed32());
    for region in layout.redists.iter().flatten() {
        let mut a = 0;
        while let Some(r) = region.sub(a, GICR_STRIDE as usize) {
            let typer = r.read64(off(gicr::TYPER));
            if GICR_TYPER::Affinity_Value.read(typer) == want {
                return Some(r);
            }
            if GICR_TYPER::Last.is_set(typer) {
                break;
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
    if slot.is_completed() {
        return Ok(());
    }
    let mpidr = el2::arch::sysreg::mpidr_affinity();
    let Some(r) = find_redist(mpidr) else {
        return Err(GicError::NoRedistributor { mpidr });
    };
    // Wake the redistributor (IHI 0069 §12.11.44).
    let waker = r.read32(off(gicr::WAKER));
    r.write32(
        off(gicr::WAKER),
        waker & !GICR_WAKER::ProcessorSleep::SET.value,
    );
    for _ in 0..10_000_000 {
        if !GICR_WAKER::ChildrenAsleep.is_set(r.read32(off(gicr::WAKER))) {
            break;
        }
        core::hint::spin_loop();
    }
    r.write32(off(gicr::ICENABLER0), u32::MAX);
    r.write32(off(gicr::IGROUPR0), u32::MAX);
    for i in 0..8 {
        r.write32(
            off(gicr::IPRIORITYR) + i * 4,
            u32::from_ne_bytes([PRIORITY; 4]),
        );
    }
    // Every PPI level-sensitive (ICFGR1 fields 0b00): the maintenance interrupt and the
    // per-CPU devices forwarded to the vCPU (`vm::ppi`, which enables those) all are.
    r.write32(off(gicr::ICFGR1), 0);
    r.write32(
        off(gicr::ISENABLER0),
        (1 << KICK_SGI) | (1 << MAINTENANCE_INTID),
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
    slot.call_once(|| r);
    Ok(())
}

fn my_redist() -> Option<&'static MmioRegion> {
    REDIST[smp::current_cpu().min(el2::dt::MAX_CPUS - 1)].get()
}

/// Enables (`on`) or disables a PPI on this CPU.
pub fn set_ppi(intid: u32, on: bool) {
    let Some(r) = my_redist() else { return };
    if intid >= 32 {
        return;
    }
    let reg = if on {
        gicr::ISENABLER0
    } else {
        gicr::ICENABLER0
    };
    r.write32(off(reg), 1 << intid);
}

/// Sets up SPI `intid` for a forwarded device line: level-sensitive, hyp's priority, routed to
/// the CPU with logical index `cpu` (the owning vCPU's), and enabled (IHI 0069 §12.9:
/// `GICD_IPRIORITYR`, `GICD_ICFGR`, `GICD_IROUTER`, `GICD_ISENABLER`).
pub fn route_spi(intid: u32, cpu: usize) {
    let Some(l) = LAYOUT.get() else { return };
    let spi = intid as usize;
    if !(32..SPECIAL_INTIDS.start as usize).contains(&spi) {
        return;
    }
    let d = &l.dist;
    let prio_reg = off(gicd::IPRIORITYR) + (spi & !3);
    let shift = (spi & 3) * 8;
    d.write32(
        prio_reg,
        (d.read32(prio_reg) & !(0xff << shift)) | ((PRIORITY as u32) << shift),
    );
    let cfg_reg = off(gicd::ICFGR) + (spi / 16) * 4;
    d.write32(cfg_reg, d.read32(cfg_reg) & !(3 << ((spi % 16) * 2)));
    d.write64(
        off(gicd::IROUTER) + spi * 8,
        smp::mpidr_of(cpu).unwrap_or(0),
    );
    set_spi(intid, true);
}

/// Enables (`on`) or disables SPI `intid` at the distributor.
pub fn set_spi(intid: u32, on: bool) {
    let Some(l) = LAYOUT.get() else { return };
    let spi = intid as usize;
    if !(32..SPECIAL_INTIDS.start as usize).contains(&spi) {
        return;
    }
    let reg = if on { gicd::ISENABLER } else { gicd::ICENABLER };
    l.dist.write32(off(reg) + (spi / 32) * 4, 1 << (spi % 32));
}

/// Whether SPI `intid` is pending at the distributor. For a level-sensitive SPI that is not
/// active this is its input line (IHI 0069 §4.1.2): the device's interrupt output.
pub fn spi_pending(intid: u32) -> bool {
    let Some(l) = LAYOUT.get() else { return false };
    let spi = intid as usize;
    if !(32..SPECIAL_INTIDS.start as usize).contains(&spi) {
        return false;
    }
    l.dist.read32(off(gicd::ISPENDR) + (spi / 32) * 4) & (1 << (spi % 32)) != 0
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
    let Some(uart) = LAYOUT.get().and_then(|l| l.uart.as_ref()) else {
        return;
    };
    for _ in 0..64 {
        if uart.read32(off(pl011::reg::FR)) & pl011::fr::RXFE != 0 {
            break;
        }
        f(uart.read32(off(pl011::reg::DR)) as u8);
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
