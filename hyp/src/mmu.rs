//! hyp's EL2 identity map (VA = PA), built with `stage2`'s granule-generic tables in the EL2
//! regime, then switched on.
//!
//! - RAM: normal write-back, read/write, never executable, except hyp's image:
//!   text RX, rodata RO, data/bss RW+XN, each CPU's two stacks RW+XN above unmapped 64 KiB
//!   guards.
//! - Devices from the device tree (UART, GIC distributor and redistributors):
//!   Device-nGnRE, RW+XN, rounded out to the granule.
//! - SCTLR_EL2.WXN on top, so no writable page is ever executable.

use crate::mem;
use aarch64_cpu::registers::{SCTLR_EL2, TCR_EL2};
use core::fmt;
use el2::arch::{self, barrier, cache, sysreg, tlb, ImageLayout};
use el2::dt::{HalfOpen, Platform, MAX_REDIST_REGIONS};
use el2::frames::{FrameAlloc, HwMaintenance};
use el2::memmap::{align_up, merge, round_out, saturating_range};
use el2::smp;
use spin::mutex::SpinMutex;
use stage2::{
    AddrRange, Attrs, CpuFeatures, Geometry, GeometryError, Granule, MapError, MapOpts,
    NoMaintenance, Pa, PageTable, Regime, Va, MAIR_EL2,
};
use tock_registers::LocalRegisterCopy;

/// What the MMU runs with.
pub struct MmuInfo {
    /// Input (virtual) address bits.
    pub va_bits: u32,
    /// Translation levels walked.
    pub levels: u32,
}

/// Why the EL2 map could not be built.
#[derive(Debug)]
pub enum MmuError {
    /// The geometry was refused.
    Geometry(GeometryError),
    /// A mapping failed.
    Map {
        /// What was being mapped.
        what: &'static str,
        /// The range.
        range: AddrRange<Pa>,
        /// Why.
        err: MapError,
    },
    /// `map_device` before the MMU is on.
    NotReady,
    /// `map_device` on a page already mapped as something other than a device.
    NotDevice {
        /// The page.
        range: AddrRange<Pa>,
    },
    /// A region lies beyond the VA size.
    TooHigh {
        /// The region.
        range: AddrRange<Pa>,
        /// The VA size.
        va_bits: u32,
    },
}

impl fmt::Display for MmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmuError::Geometry(e) => write!(f, "{e}"),
            MmuError::Map { what, range, err } => {
                write!(f, "mapping {what} {}: {err}", HalfOpen(*range))
            }
            MmuError::NotReady => f.write_str("hyp's EL2 map is not live yet"),
            MmuError::NotDevice { range } => {
                write!(
                    f,
                    "{} is already mapped as normal memory, not a device",
                    HalfOpen(*range)
                )
            }
            MmuError::TooHigh { range, va_bits } => write!(
                f,
                "{} lies beyond the {va_bits}-bit identity map (PARange too small?)",
                HalfOpen(*range)
            ),
        }
    }
}

/// SCTLR_EL2 fields set on top of the boot value (arch/entry.S): M (MMU), C (data cache),
/// I (instruction cache), WXN (writable implies execute-never) (Arm ARM D19.2.118).
fn sctlr_on_bits() -> u64 {
    (SCTLR_EL2::M::Enable
        + SCTLR_EL2::C::Cacheable
        + SCTLR_EL2::I::Cacheable
        + SCTLR_EL2::WXN::Enable)
        .value
}

type Table = PageTable<FrameAlloc, NoMaintenance, Va>;

/// Device ranges hyp maps for itself: the console UART, the GIC distributor and its
/// redistributor regions, each at most as many as `Platform` lists.
const MAX_DEVICE_RANGES: usize = 2 + MAX_REDIST_REGIONS;

/// hyp's live EL2 table, once the MMU is on.
static EL2_TABLE: SpinMutex<Option<PageTable<FrameAlloc, HwMaintenance, Va>>> =
    SpinMutex::new(None);

/// Maps `range` (rounded out to the EL2 granule) as Device-nGnRE, read/write, execute-never,
/// in hyp's live identity map, for devices the boot map did not include. Already-mapped device
/// pages are left as they are. Break-before-make and TLB maintenance are done by `stage2`
/// through [`HwMaintenance`].
pub fn map_device(range: AddrRange<Pa>) -> Result<(), MmuError> {
    let mut g = EL2_TABLE.lock();
    let Some(t) = g.as_mut() else {
        return Err(MmuError::NotReady);
    };
    let page = t.geometry().granule().size();
    let pages = round_out(range, page);
    let (mut a, e) = (pages.start().get(), pages.end().get());
    while a < e {
        match t.translate(Pa::new(a).identity_va()) {
            Some((_, attrs, _)) if attrs == Attrs::device() => {}
            Some(_) => {
                return Err(MmuError::NotDevice {
                    range: saturating_range(a, page),
                })
            }
            None => map(t, "device", a, a + page, Attrs::device())?,
        }
        a += page;
    }
    Ok(())
}

/// Where `va` translates in hyp's live map: (PA, attributes, level), or `None`.
pub fn translate(va: Va) -> Option<(Pa, Attrs, u32)> {
    EL2_TABLE.lock().as_mut()?.translate(va)
}

fn map<M: stage2::Maintenance>(
    t: &mut PageTable<FrameAlloc, M, Va>,
    what: &'static str,
    start: u64,
    end: u64,
    attrs: Attrs,
) -> Result<(), MmuError> {
    if end <= start {
        return Ok(());
    }
    // hyp's EL2 map is the identity: each physical range at the same virtual addresses.
    let pas = AddrRange::new(Pa::new(start), Pa::new(end)).expect("invariant: end > start");
    t.map(pas.identity_va(), pas.start(), attrs, MapOpts::default())
        .map_err(|err| MmuError::Map {
            what,
            range: pas,
            err,
        })
}

/// Builds hyp's identity map at `granule`, loads it on this CPU, turns on the MMU and caches,
/// and publishes the registers for the secondaries.
///
/// `heap_head` is the start of the heap region used before the MMU is on (its first MiB is
/// invalidated from the data cache with the rest of what was written with caches off).
pub fn enable(
    p: &Platform<'_>,
    cpu: &CpuFeatures,
    granule: Granule,
    heap_head: AddrRange<Pa>,
) -> Result<MmuInfo, MmuError> {
    // VA size: 48 bits, or the PA size if smaller (an identity map needs no more).
    let va_bits = cpu.pa_bits().min(48);
    let geo = Geometry::new(Regime::El2, granule, va_bits, cpu).map_err(MmuError::Geometry)?;

    let frames_start = mem::remaining().start().get();
    // SAFETY: `mem::alloc_phys` hands out RAM from the free range once each, which is identity
    // mapped by the tables built here (and accessible with the MMU off before that).
    let fa = unsafe { FrameAlloc::new(mem::alloc_phys, mem::remaining()) };
    let mut t: Table = PageTable::new(geo, fa, NoMaintenance).map_err(|err| MmuError::Map {
        what: "root table",
        range: AddrRange::default(),
        err,
    })?;
    let l = arch::image_layout();
    map_ram(&mut t, p.memory.as_slice(), &l, va_bits)?;
    map_devices(&mut t, p, va_bits)?;
    let frames_end = mem::remaining().start().get();
    log::debug!(
        "hyp: el2 tables: {} bytes in {} tables, root {:#x}",
        t.table_bytes(),
        t.tables(),
        t.root_pa()
    );

    // Everything so far was written with the data cache off: drop any stale lines for the
    // image (data, bss, stacks), the heap's first block and the tables before caches go on
    // (the same reason Linux invalidates its early page tables, arm64 head.S).
    // The loader cleaned the image to the PoC (booting.rst), so memory holds the data.
    cache::invalidate_to_poc(l.start, l.end - l.start);
    cache::invalidate_to_poc(frames_start, frames_end - frames_start);
    cache::invalidate_to_poc(heap_head.start().get(), heap_head.len().min(1 << 20));

    switch_on(t, cpu);
    Ok(MmuInfo {
        va_bits,
        levels: geo.levels(),
    })
}

/// Maps RAM (`memory`, shrunk to whole pages) as data, except hyp's image, which
/// [`map_image`] maps section by section.
fn map_ram(
    t: &mut Table,
    memory: &[AddrRange<Pa>],
    l: &ImageLayout,
    va_bits: u32,
) -> Result<(), MmuError> {
    let page = t.geometry().granule().size();
    let limit = t.geometry().input_limit();
    for r in memory {
        let (base, end) = (r.start().get(), r.end().get());
        if end > limit {
            return Err(MmuError::TooHigh { range: *r, va_bits });
        }
        let (s, e) = (align_up(base, page).unwrap_or(end), end & !(page - 1));
        if l.start >= s && l.end <= e {
            map(t, "RAM", s, l.start, Attrs::data())?;
            map_image(t, l)?;
            map(t, "RAM", l.end, e, Attrs::data())?;
        } else {
            map(t, "RAM", s, e, Attrs::data())?;
        }
    }
    Ok(())
}

/// Maps hyp's image: text RX, rodata RO, data and bss RW, and each CPU's two stacks RW
/// above their unmapped guards.
fn map_image(t: &mut Table, l: &ImageLayout) -> Result<(), MmuError> {
    map(t, "hyp text", l.start, l.text_end, Attrs::code())?;
    map(
        t,
        "hyp rodata",
        l.rodata_start,
        l.rodata_end,
        Attrs::rodata(),
    )?;
    map(t, "hyp data", l.data_start, l.stacks_start, Attrs::data())?;
    let mut base = l.stacks_start;
    while base + arch::STACK_STRIDE <= l.stacks_end {
        // The guards below each stack stay unmapped (arch::STACK_STRIDE layout).
        let exc = base + arch::STACK_GUARD..base + arch::EXC_STACK_TOP;
        map(t, "exception stack", exc.start, exc.end, Attrs::data())?;
        let main = base + arch::MAIN_STACK_BASE..base + arch::STACK_STRIDE;
        map(t, "stack", main.start, main.end, Attrs::data())?;
        base += arch::STACK_STRIDE;
    }
    Ok(())
}

/// Maps the devices `Platform` lists (the UART, the GIC distributor and redistributors) as
/// Device-nGnRE, rounded out to the granule and merged so no page is mapped twice; a merged
/// range that overlaps RAM is left out with a warning.
fn map_devices(t: &mut Table, p: &Platform<'_>, va_bits: u32) -> Result<(), MmuError> {
    let page = t.geometry().granule().size();
    let limit = t.geometry().input_limit();
    // The array holds every device range `Platform` can list (its lists refuse a tree with
    // more).
    let mut devs = [AddrRange::default(); MAX_DEVICE_RANGES];
    let uart = p.uart.map(|u| u.regs);
    let gic = p
        .gic
        .as_ref()
        .into_iter()
        .flat_map(|g| core::iter::once(g.dist).chain(g.redists.as_slice().iter().copied()));
    let mut n = 0;
    for r in uart.into_iter().chain(gic).filter(|r| !r.is_empty()) {
        if let Some(slot) = devs.get_mut(n) {
            *slot = round_out(r, page);
            n += 1;
        }
    }
    let n = merge(&mut devs[..n]);
    for &cur in &devs[..n] {
        if cur.end().get() > limit {
            return Err(MmuError::TooHigh {
                range: cur,
                va_bits,
            });
        }
        if p.memory.as_slice().iter().any(|m| m.overlaps(&cur)) {
            log::warn!(
                "hyp: device range {} overlaps RAM; not mapped as a device",
                HalfOpen(cur)
            );
            continue;
        }
        let (s, e) = (cur.start().get(), cur.end().get());
        map(t, "device", s, e, Attrs::device())?;
    }
    Ok(())
}

/// Loads the finished tables on this CPU and turns the MMU and caches on (then the tables
/// become the live [`EL2_TABLE`]), checks TCR_EL2 reads back as built, and publishes the
/// registers for the secondaries.
fn switch_on(t: Table, cpu: &CpuFeatures) {
    let geo = *t.geometry();
    let tcr = geo.tcr_el2(cpu.pa_bits());
    let ttbr = t.root_pa();
    let sctlr = sysreg::sctlr_el2() | sctlr_on_bits();
    // SAFETY: the tables identity-map hyp's text (RX), rodata, data, bss and this CPU's
    // stack (RW) at their current addresses, and the console; MAIR indices match what
    // `stage2::attrs::encode` uses (ATTR_IDX_NORMAL/DEVICE); TLBs are invalidated before the
    // MMU goes on (Arm ARM D8.13: no stale entries from reset).
    unsafe {
        sysreg::set_mair_el2(MAIR_EL2);
        sysreg::set_tcr_el2(tcr);
        sysreg::set_ttbr0_el2(ttbr.get());
        barrier::isb();
        tlb::flush_el2_local();
        sysreg::set_sctlr_el2(sctlr);
        barrier::isb();
    }
    cache::invalidate_icache_all();
    // The tables live as long as hyp; from now on changes to them need real maintenance.
    let (live, _) = t.with_maintenance(HwMaintenance);
    *EL2_TABLE.lock() = Some(live);

    // Re-assert what the hardware now runs with (vmbase page_table.rs does the same).
    let tcr_now = LocalRegisterCopy::<u64, TCR_EL2::Register>::new(sysreg::tcr_el2());
    if tcr_now.read(TCR_EL2::T0SZ) != geo.t0sz() || tcr_now.read(TCR_EL2::TG0) != geo.tg0() {
        el2::fatal!(
            "TCR_EL2 reads back {:#x}, expected T0SZ {} and TG0 {:#b}",
            tcr_now.get(),
            geo.t0sz(),
            geo.tg0()
        );
    }
    smp::set_secondary_mmu(MAIR_EL2, tcr, ttbr.get(), sctlr);
}
