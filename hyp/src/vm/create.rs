//! Building one VM from its plan, in order: its memory (a table pool and RAM), a VMID and its
//! stage 2, the images checked against its RAM, what must be filled before its first entry,
//! its PCI functions, then its devices and the [`Vm`] itself.

use super::{fill_ram, stress, Devices, Stats, Vm, VmState};
use crate::boot::Boot;
use crate::failure::VmFailure;
use crate::mem;
use crate::smmu::VmMaintenance;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize};
use el2::arch::{cache, vsys};
use el2::frames::{FrameAlloc, HwMaintenance};
use el2::scrub::{Chunks, CHUNK};
use el2::smp;
use guest_loader::config::Mapping;
use guest_loader::VmPlan;
use log::{info, warn};
use platform::virt::RAM_BASE;
use spin::mutex::SpinMutex;
use stage2::VmidAllocator;
use stage2::{AddrRange, Attrs, Geometry, Ipa, MapError, MapOpts, Pa, PageTable, Vmid};
use vdev::console::OutQueue;
use vdev::idregs::{GuestIdRegs, IdPolicy};
use vdev::pci::{ConfigSpace, PciView};
use vdev::pl011::Pl011;
use vdev::psci::Psci;
use vdev::traps::HostFeatures;
use vdev::vgic::{Vgic, VgicConfig};

type Stage2 = PageTable<FrameAlloc, VmMaintenance>;

/// An image to place in the VM's RAM: (offset in RAM, what it is, its bytes).
type Item<'a> = (u64, &'static str, &'a [u8]);

/// Builds one VM from its plan.
pub(super) fn create(
    boot: &Boot,
    bundle: &'static [u8],
    vp: &VmPlan<'_>,
    vmids: &mut VmidAllocator,
) -> Result<&'static Vm, VmFailure> {
    let (frames, ram_pa, align) = alloc_memory(vp)?;
    let vmid = alloc_vmid(vmids, &vp.name)?;
    let owns_devices = !vp.pci.is_empty();
    let maint = crate::smmu::maintenance(vmid.get(), owns_devices);
    let mut pt = PageTable::with_vmid(vp.geometry, vmid.get(), frames, maint)
        .map_err(VmFailure::Stage2Root)?;
    debug_assert_eq!(vp.layout.ram.start().get(), RAM_BASE);
    let items = load_items(vp)?;
    let fill = Fill::new(boot, vp, align);
    let chunks = Chunks::new(vp.memory);
    // Fill now the chunks (whole fill units) of the images that are not in the bundle; for a
    // VM that owns devices, all of its RAM: a device may DMA to any of it from its first
    // instruction on, and DMA never faults a chunk in.
    let now = if owns_devices {
        fill.all(vp.memory)
    } else {
        fill.outside_bundle(&items, bundle, vp.memory)
    };
    let ram = (vp.layout.ram.start(), ram_pa);
    fill_now(&mut pt, &fill, &chunks, &items, ram, &now)?;
    let (pci, intx) = attach_devices(vp, &mut pt, vmid, ram_pa)?;
    let parts = Parts {
        images: in_bundle_images(&items, bundle),
        pt,
        vmid,
        ram_pa,
        owns_devices,
        pci,
        intx,
        fill,
        chunks,
    };
    assemble(boot, vp, parts)
}

/// The VM's stage-2 table pool (the plan's budget for it) and its RAM, aligned to the largest
/// stage-2 block that fits (so that stage 2 can use blocks: `hyp.stage2=blocks`; by default it
/// maps pages, see el2::cmdline). Returns the pool, the RAM's PA and that alignment.
fn alloc_memory(vp: &VmPlan<'_>) -> Result<(FrameAlloc, Pa, u64), VmFailure> {
    let geo = vp.geometry;
    let memory = vp.memory;
    let align = (geo.start_level()..=2)
        .filter_map(|level| geo.block_size(level))
        .filter(|&b| b <= memory)
        .fold(geo.page_size(), u64::max);
    // A VM can exhaust only its own table memory. The pool is aligned to the concatenated root
    // (the first and largest allocation), so no byte of it is lost to alignment; taken before
    // the RAM, whose alignment to a large block could otherwise leave no room behind it.
    let budget = vp.table_budget;
    let Some(pool) = mem::alloc_phys(budget, geo.root_bytes()) else {
        return Err(VmFailure::TableBudget {
            budget,
            free: mem::remaining(),
        });
    };
    let pool = AddrRange::from_start_len(Pa::new(pool), budget)
        .expect("invariant: alloc_phys hands out ranges below the last address");
    // SAFETY: `mem::alloc_phys` handed out this identity-mapped RAM to this VM's tables alone.
    let frames = unsafe { FrameAlloc::pool(pool) };
    let Some(pa) = mem::alloc_phys(memory, align) else {
        return Err(VmFailure::Ram {
            memory,
            align,
            free: mem::remaining(),
        });
    };
    Ok((frames, Pa::new(pa), align))
}

/// A VMID for the VM. On a rollover the allocator itself invalidates every VMID's TLB entries
/// (TLBI ALLE1IS, DSB ISH) before returning.
fn alloc_vmid(vmids: &mut VmidAllocator, name: &str) -> Result<Vmid, VmFailure> {
    let grant = vmids.alloc(&mut HwMaintenance).map_err(VmFailure::Vmid)?;
    if grant.flushed {
        log::debug!("vm {name}: VMID rollover: every VMID's TLB entries invalidated");
    }
    Ok(grant.vmid)
}

/// The images of the plan, each checked to lie inside the VM's RAM and to overlap no other;
/// sorted by offset.
fn load_items<'a>(vp: &'a VmPlan<'_>) -> Result<Vec<Item<'a>>, VmFailure> {
    let ram_ipa = vp.layout.ram.start().get();
    let mut items: Vec<Item<'a>> = Vec::new();
    for item in vp.load_items() {
        let off = item.ipa.get().wrapping_sub(ram_ipa);
        let len = item.data.len() as u64;
        if item.ipa.get() < ram_ipa || off.checked_add(len).is_none_or(|e| e > vp.memory) {
            return Err(VmFailure::LoadOutside {
                what: item.what,
                ipa: item.ipa,
                len,
            });
        }
        items.push((off, item.what, item.data));
    }
    items.sort_by_key(|i| i.0);
    for w in items.windows(2) {
        if w[0].0 + w[0].2.len() as u64 > w[1].0 {
            return Err(VmFailure::LoadOverlap {
                what: w[1].1,
                other: w[0].1,
            });
        }
    }
    Ok(items)
}

/// `d` as a slice of the boot bundle (which stays in place for good), if it is one.
fn in_bundle(bundle: &'static [u8], d: &[u8]) -> Option<&'static [u8]> {
    let at = (d.as_ptr() as usize).checked_sub(bundle.as_ptr() as usize)?;
    bundle
        .get(at..at + d.len())
        .filter(|b| b.as_ptr() == d.as_ptr())
}

/// The images borrowed from the bundle, filled into RAM on demand: (offset, bytes).
fn in_bundle_images(items: &[Item<'_>], bundle: &'static [u8]) -> Vec<(u64, &'static [u8])> {
    items
        .iter()
        .filter_map(|&(off, _, d)| Some((off, in_bundle(bundle, d)?)))
        .collect()
}

/// How the VM's RAM is filled and mapped.
struct Fill {
    /// Map everything at once rather than on fault.
    eager: bool,
    /// `hyp.stage2=blocks`.
    blocks: bool,
    /// A lazy VM's map-on-fault chunk; `None` when eager.
    lazy_chunk: Option<u64>,
    /// What a fault fills (and, eager, maps) at once: the lazy chunk; for an eager VM one
    /// fill chunk, or with blocks the largest block the RAM's alignment allows.
    unit: u64,
    /// Clean what hyp writes for the guest to the point of coherency unless stage 2 makes
    /// the guest's view cacheable (FEAT_S2FWB) and instruction fetch coherent with data
    /// (CTR_EL0.IDC: no clean to the point of unification needed, Arm ARM D7.5.9).
    clean: bool,
}

impl Fill {
    fn new(boot: &Boot, vp: &VmPlan<'_>, align: u64) -> Fill {
        let geo: Geometry = vp.geometry;
        let eager = vp.mapping == Mapping::Eager;
        let blocks = boot.cmdline.stage2_blocks;
        // Map per fault one page of the VM's stage-2 granule, or with `hyp.stage2=blocks`
        // the largest block up to 32 MiB that the RAM's alignment allows.
        let lazy_chunk = (!eager).then(|| {
            let blocks_ok = |b: u64| b <= vp.memory && b <= align && b <= (32 << 20);
            (geo.start_level()..=3)
                .filter_map(|level| geo.block_size(level))
                .filter(|&b| blocks && blocks_ok(b))
                .fold(geo.page_size(), u64::max)
        });
        let unit = match lazy_chunk {
            Some(c) => c,
            None if blocks => align.max(CHUNK),
            None => CHUNK,
        };
        Fill {
            eager,
            blocks,
            lazy_chunk,
            unit,
            clean: !geo.fwb() || !boot.cpu.idc(),
        }
    }

    /// Every fill unit of `memory` bytes of RAM, as offset ranges.
    fn all(&self, memory: u64) -> Vec<(u64, u64)> {
        (0..memory)
            .step_by(self.unit as usize)
            .map(|s| (s, (s + self.unit).min(memory)))
            .collect()
    }

    /// The fill units holding the images that are not in the bundle (the device tree, a gzip
    /// kernel's inflated bytes), as offset ranges.
    fn outside_bundle(
        &self,
        items: &[Item<'_>],
        bundle: &'static [u8],
        memory: u64,
    ) -> Vec<(u64, u64)> {
        items
            .iter()
            .filter(|&&(_, _, d)| in_bundle(bundle, d).is_none() && !d.is_empty())
            .map(|&(off, _, d)| {
                let start = off & !(self.unit - 1);
                let end = (off + d.len() as u64).div_ceil(self.unit) * self.unit;
                (start, end.min(memory))
            })
            .collect()
    }
}

/// Fills the RAM ranges `now` (offsets into RAM at IPA `ram.0`, host `ram.1`) with the images'
/// bytes and zeros, and (eager) maps them, before the VM's first entry.
fn fill_now(
    pt: &mut Stage2,
    fill: &Fill,
    chunks: &Chunks,
    items: &[Item<'_>],
    (ram_ipa, ram_pa): (Ipa, Pa),
    now: &[(u64, u64)],
) -> Result<(), VmFailure> {
    let spans: Vec<(u64, u64)> = items.iter().map(|i| (i.0, i.2.len() as u64)).collect();
    for &(start, end) in now {
        chunks.ensure(start..end, |r| {
            fill_ram(ram_pa, r.clone(), &spans, |i| items[i].2);
            if fill.clean {
                cache::clean_to_poc((ram_pa + r.start).get(), r.end - r.start);
            }
        });
        if fill.eager {
            let opts = MapOpts {
                skip_cmo: true,
                pages_only: !fill.blocks,
            };
            let ipa = ram_ipa + start;
            if pt.translate(ipa).is_none() {
                AddrRange::from_start_len(ipa, end - start)
                    .map_err(MapError::from)
                    .and_then(|r| pt.map(r, ram_pa + start, Attrs::ram(), opts))
                    .map_err(VmFailure::Stage2Map)?;
            }
        }
    }
    el2::arch::barrier::dsb_ish();
    cache::invalidate_icache_all();
    Ok(())
}

/// Points the VM's PCI functions' streams at its stage 2 (which now maps all of its RAM) and
/// gives it its PCI view; nothing for a VM without functions. Returns the view and the
/// functions' INTx INTIDs.
fn attach_devices(
    vp: &VmPlan<'_>,
    pt: &mut Stage2,
    vmid: Vmid,
    ram_pa: Pa,
) -> Result<(Option<SpinMutex<PciView>>, Vec<u32>), VmFailure> {
    if vp.pci.is_empty() {
        return Ok((None, Vec::new()));
    }
    let geo = vp.geometry;
    crate::smmu::assign(&crate::smmu::Assignment {
        vm: &vp.name,
        vmid: vmid.get(),
        geometry: &geo,
        root: pt.root_pa(),
        ram: AddrRange::from_start_len(ram_pa, vp.memory)
            .map_err(MapError::from)
            .map_err(VmFailure::Stage2Map)?,
        devices: &vp.pci,
    })
    .map_err(VmFailure::Devices)?;
    for (bdf, d) in &vp.pci {
        info!(
            "vm {}: pci {bdf} (stream {:#x}) {}: DMA through its {} stage 2, VMID {}",
            vp.name,
            bdf.rid(),
            d.model,
            geo.granule().label(),
            vmid.get()
        );
    }
    match vp.pci_window {
        Some(w) => {
            let (view, intx) = pci_view(vp, w, pt)?;
            Ok((Some(SpinMutex::new(view)), intx))
        }
        None => Ok((None, Vec::new())),
    }
}

/// A VM's PCI view: its functions' memory BARs measured on the devices (which start
/// quiesced), and its slice of the PCI memory window mapped into its stage 2 as device memory
/// at IPA = PA (the BARs, whose addresses `PciView` confines to the slice, decode there).
fn pci_view(
    vp: &VmPlan<'_>,
    window: AddrRange<Ipa>,
    pt: &mut Stage2,
) -> Result<(PciView, Vec<u32>), VmFailure> {
    let Some(mut ecam) = crate::pci::host() else {
        return Err(VmFailure::NoPciBus);
    };
    let mut functions = Vec::with_capacity(vp.pci.len());
    let mut intx = Vec::new();
    for (bdf, _) in &vp.pci {
        // A slot without a function reads all ones (PCI spec): QEMU did not attach one.
        if ecam.read32(*bdf, 0) == u32::MAX {
            return Err(VmFailure::NoFunction(*bdf));
        }
        // Interrupt Pin (config offset 0x3d): 1..=4 for INTA..INTD, 0 for none.
        let pin = (ecam.read32(*bdf, 0x3c) >> 8) & 0xff;
        // The plan gave each VM the INTA lines of its slots; another pin could be another
        // VM's line.
        if pin > 1 {
            return Err(VmFailure::IntxPin(*bdf, pin));
        }
        if pin == 1 {
            let id = platform::virt::spi_intid(platform::virt::pci_intx_spi(
                u32::from(bdf.device),
                pin - 1,
            ));
            if !intx.contains(&id) {
                intx.push(id);
            }
        }
        let bars = vdev::pci::measure_bars(&mut ecam, *bdf);
        log::debug!("vm {}: pci {bdf}: memory BARs {bars:x?}", vp.name);
        functions.push((*bdf, bars));
    }
    pt.map(
        window,
        window.start().identity_pa(),
        Attrs::device(),
        MapOpts::PAGES,
    )
    .map_err(VmFailure::Stage2Map)?;
    let range = window.start().get()..window.end().get();
    Ok((PciView::new(&functions, range, &mut ecam), intx))
}

/// What [`create`] built before the VM's devices and the [`Vm`] itself.
struct Parts {
    pt: Stage2,
    vmid: Vmid,
    ram_pa: Pa,
    owns_devices: bool,
    pci: Option<SpinMutex<PciView>>,
    intx: Vec<u32>,
    fill: Fill,
    chunks: Chunks,
    images: Vec<(u64, &'static [u8])>,
}

/// The VM's emulated devices: its vGIC, PSCI and PL011.
fn devices(boot: &Boot, vp: &VmPlan<'_>) -> Result<Devices, VmFailure> {
    let n = vp.vcpus as usize;
    let vgic = Vgic::new(VgicConfig {
        n_vcpus: n,
        n_spis: 32,
    })
    .map_err(VmFailure::Vgic)?;
    let ram_ipa = vp.layout.ram.start().get();
    let ram = ram_ipa..ram_ipa + vp.memory;
    let psci =
        Psci::new(n, core::slice::from_ref(&ram), boot.workarounds).map_err(VmFailure::Psci)?;
    let mut uart = Pl011::new(&vp.name);
    // Linux's earlycon writes before enabling the UART (firmware normally has).
    uart.set_transmit_when_disabled(true);
    let mut starts = Vec::with_capacity(n);
    starts.resize(n, None);
    Ok(Devices {
        vgic,
        psci,
        uart,
        starts,
        rx_backlog: Vec::new(),
        intx: vdev::ppi::Forwarder::default(),
    })
}

/// The physical CPUs of the VM's vCPUs, each online.
fn pcpus(vp: &VmPlan<'_>) -> Result<Vec<usize>, VmFailure> {
    let pcpus: Vec<usize> = (vp.cpus.start..vp.cpus.end).map(|c| c as usize).collect();
    if pcpus.len() != vp.vcpus as usize || pcpus.iter().any(|&c| smp::mpidr_of(c).is_none()) {
        return Err(VmFailure::Cpus {
            start: vp.cpus.start,
            end: vp.cpus.end,
            online: smp::online(),
        });
    }
    Ok(pcpus)
}

/// Builds the VM's devices and ID register view, prints its stage-2 and page-size lines, and
/// leaks the finished [`Vm`] (VMs live as long as hyp).
fn assemble(boot: &Boot, vp: &VmPlan<'_>, p: Parts) -> Result<&'static Vm, VmFailure> {
    let geo = vp.geometry;
    let n = vp.vcpus as usize;
    let dev = devices(boot, vp)?;
    let policy = IdPolicy {
        granules: vp.advertised_granules,
        ipa_bits: vp.ipa_bits,
    };
    let idregs = GuestIdRegs::new(&policy, |r| vsys::id_reg(r.crm(), r.op2()));
    let gicr_size = dev.vgic.redist_size();
    let pcpus = pcpus(vp)?;
    let vtcr = geo.vtcr_el2(boot.cpu.pa_bits(), boot.cpu.vmid_bits() == 16);
    print_lines(vp, &p, vtcr, &pcpus);
    // Device-visible memory stays mapped while a device may use it: hyp.stress does not touch
    // a VM that owns devices.
    let stress = (boot.cmdline.stress != 0 && !p.owns_devices).then(|| {
        let seed = vsys::cntpct_el0() ^ u64::from(p.vmid.get());
        stress::Stress::new(boot.cmdline.stress, seed, n)
    });
    Ok(Box::leak(Box::new(Vm {
        name: vp.name.clone(),
        pcpus,
        vttbr: p.pt.vttbr(),
        vtcr,
        fwb: geo.fwb(),
        host: HostFeatures {
            pfr0: vsys::id_reg(4, 0),
            pfr1: vsys::id_reg(4, 1),
            dfr0: vsys::id_reg(5, 0),
            mmfr0: vsys::id_reg(7, 0),
            mmfr1: vsys::id_reg(7, 1),
        },
        cntvoff: vsys::cntpct_el0(),
        ram_ipa: vp.layout.ram.start(),
        ram_pa: p.ram_pa,
        ram_size: vp.memory,
        gicr_size,
        entry: vp.layout.kernel.start().get(),
        dtb: vp.layout.dtb().get(),
        idregs,
        s2: SpinMutex::new(p.pt),
        owns_devices: p.owns_devices,
        pci: p.pci,
        intx: p.intx,
        pci_window: vp
            .pci_window
            .filter(|_| p.owns_devices)
            .map(|w| w.start().get()..w.end().get()),
        lazy_chunk: p.fill.lazy_chunk,
        blocks: p.fill.blocks,
        fill_unit: p.fill.unit,
        chunks: p.chunks,
        images: p.images,
        clean_fills: p.fill.clean,
        stress,
        dev: SpinMutex::new(dev),
        out: SpinMutex::new(OutQueue::new(&vp.name, vdev::console::QUEUE_BYTES)),
        out_pending: AtomicBool::new(false),
        warned: AtomicU64::new(0),
        audit_failed: AtomicBool::new(false),
        state: AtomicU8::new(VmState::Running as u8),
        live: AtomicUsize::new(n),
        done: AtomicBool::new(false),
        stats: Stats::default(),
    })))
}

/// The VM's creation lines: its stage 2 and page size (info), a granule fallback (warn), and
/// where everything went (debug).
fn print_lines(vp: &VmPlan<'_>, p: &Parts, vtcr: u64, pcpus: &[usize]) {
    info!("{}", vp.stage2_line());
    info!("{}", vp.page_size_line());
    if vp.decision.fell_back() {
        warn!("vm {}: {}", vp.name, vp.decision.refusals());
    }
    log::debug!(
        "vm {}: RAM IPA {:#x}+{:#x} at PA {:#x}, VMID {}, VTCR_EL2 {vtcr:#x}, {} vCPUs on CPUs {pcpus:?}, {} mapping with {}",
        vp.name,
        vp.layout.ram.start().get(),
        vp.memory,
        p.ram_pa,
        p.vmid.get(),
        vp.vcpus,
        if p.fill.eager { "eager" } else { "lazy" },
        if p.fill.blocks { "blocks" } else { "pages" }
    );
}
