//! VMs: built from the boot bundle's plan, their vCPUs pinned one to one on physical CPUs,
//! run until every VM has exited.
//!
//! A VM's lifetime: [`create`] (RAM from host memory, aligned to the largest stage-2 block that
//! fits; a VMID; stage-2 tables with the VM's own geometry) → its vCPU threads start on their
//! CPUs (`vcpu::thread`) → a PSCI SYSTEM_OFF / SYSTEM_RESET, or a kill, stops every vCPU → the
//! last vCPU out prints `vm <name>: exited (...)`.
//!
//! **RAM contents.** A VM's RAM is filled chunk by chunk (`el2::scrub`, 2 MiB chunks): each
//! chunk gets the bytes of the VM's images (kernel, initrd, device tree) that fall in it and
//! zeros everywhere else, once, before stage 2 maps any of it. Nothing is filled before the
//! first vCPU starts except the chunks of images that are not in the boot bundle (the device
//! tree, a gzip kernel's inflated bytes); the others are filled on the VM's first stage-2
//! fault in them ([`Vm::prepare`]) or by a CPU with nothing else to do ([`fill_idle`]). An
//! eager VM's chunk is mapped by whoever filled it, before the chunk is marked ready; a lazy
//! VM maps pages on faults as before, after the fill. So a guest never reads a byte hyp did not
//! write for it (XSA-245), and no path that maps guest RAM (faults, `hyp.stress`'s
//! migrations, which only move mapped pages) can expose an unfilled chunk.

pub mod cpus;
pub mod output;
pub mod pmu;
pub mod ppi;
pub mod stress;
pub mod vcpu;

use crate::boot::Boot;
use crate::failure::{Fatal, VmFailure};
use crate::smmu::VmMaintenance;
use crate::{gic, mem, Verdict};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use el2::arch::{cache, vsys};
use el2::frames::{FrameAlloc, HwMaintenance};
use el2::scrub::{segments, Chunks, Segment, CHUNK};
use el2::smp;
use guest_loader::config::Mapping;
use guest_loader::{Bundle, Host, VmPlan};
use log::{error, info, warn};
use platform::virt::{
    GICD_BASE, GICD_SIZE, GICR_BASE, PCI_ECAM_BASE, PCI_ECAM_SIZE, RAM_BASE, UART_BASE, UART_SIZE,
};
use spin::mutex::SpinMutex;
use spin::Once;
use stage2::{AddrRange, Attrs, Ipa, MapError, MapOpts, Pa, PageTable, VmidAllocator};
use vdev::console::OutQueue;
use vdev::idregs::{GuestIdRegs, IdPolicy};
use vdev::pci::{ConfigSpace, PciView};
use vdev::pl011::Pl011;
use vdev::psci::Psci;
use vdev::traps::HostFeatures;
use vdev::vgic::{Vgic, VgicConfig};

/// Why a VM stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VmState {
    /// Running.
    Running = 0,
    /// PSCI SYSTEM_OFF: a clean exit.
    Off = 1,
    /// PSCI SYSTEM_RESET (hyp does not restart VMs).
    Reset = 2,
    /// hyp stopped it (the reason was printed).
    Killed = 3,
}

/// The VM's emulated devices and power state, shared by its vCPUs.
pub struct Devices {
    /// The GICv3 model.
    pub vgic: Vgic,
    /// PSCI state.
    pub psci: Psci,
    /// The virtual PL011.
    pub uart: Pl011,
    /// CPU_ON requests not yet picked up: (entry, context id) per vCPU.
    pub starts: Vec<Option<(u64, u64)>>,
    /// Host console bytes the UART had no room for yet.
    pub rx_backlog: Vec<u8>,
    /// The VM's forwarded INTx lines (`Vm::intx`, by index): which are high in the vGIC with
    /// their physical SPI disabled.
    pub intx: vdev::ppi::Forwarder,
}

/// Exit counters, by class.
#[derive(Default)]
pub struct Stats {
    /// All exits.
    pub total: AtomicU64,
    /// PL011 accesses.
    pub uart: AtomicU64,
    /// Distributor and redistributor accesses.
    pub gic: AtomicU64,
    /// HVC/SMC calls.
    pub hvc: AtomicU64,
    /// Trapped system registers (ID registers, SGIs).
    pub sysreg: AtomicU64,
    /// WFI/WFE.
    pub wfx: AtomicU64,
    /// Physical interrupts.
    pub irq: AtomicU64,
    /// Stage-2 faults resolved by mapping (lazy mapping).
    pub s2fault: AtomicU64,
    /// Aborts and undefined instructions injected into the guest.
    pub injected: AtomicU64,
    /// Counter ticks spent in hyp between an exit and the next entry (idle excluded).
    pub handling: AtomicU64,
    /// Data cache maintenance instructions by set/way (trapped).
    pub set_way: AtomicU64,
    /// Cleans of the VM's RAM they caused.
    pub set_way_flushes: AtomicU64,
}

/// One VM.
pub struct Vm {
    /// Its name (for `[<name>]` output and `vm <name>:` lines).
    pub name: String,
    /// vCPU i runs on physical CPU `pcpus[i]`.
    pub pcpus: Vec<usize>,
    /// `VTTBR_EL2` (root table and VMID).
    pub vttbr: u64,
    /// `VTCR_EL2`, from the VM's own stage-2 geometry.
    pub vtcr: u64,
    /// The stage-2 descriptors use the FEAT_S2FWB encoding, so `HCR_EL2.FWB` must be set.
    pub fwb: bool,
    /// The host CPU's features the trap controls depend on (`vdev::traps`).
    pub host: HostFeatures,
    /// `CNTVOFF_EL2`: the guest's virtual counter starts near 0 at creation.
    pub cntvoff: u64,
    /// Guest RAM: IPA base, host PA, size.
    pub ram_ipa: u64,
    /// Host physical address of guest RAM.
    pub ram_pa: u64,
    /// Bytes of guest RAM.
    pub ram_size: u64,
    /// Redistributor region size (one frame pair per vCPU).
    pub gicr_size: u64,
    /// Kernel entry point and DTB IPA (x0) for vCPU 0.
    pub entry: u64,
    /// The DTB's IPA.
    pub dtb: u64,
    /// The ID register view.
    pub idregs: GuestIdRegs,
    /// The stage-2 tables (kept for the VM's lifetime).
    pub s2: SpinMutex<PageTable<FrameAlloc, VmMaintenance>>,
    /// It owns PCI functions (their streams go through its stage 2 at the SMMU).
    pub owns_devices: bool,
    /// Its view of PCI configuration space, when it owns functions.
    pub pci: Option<SpinMutex<PciView>>,
    /// Its slice of the PCI memory window (IPA = PA), mapped as device memory.
    pub pci_window: Option<core::ops::Range<u64>>,
    /// The INTIDs of its functions' legacy INTx lines (physical = virtual SPI), forwarded as
    /// level-sensitive lines: routed to its vCPU 0's CPU, raised in the vGIC when they fire,
    /// and lowered when the device no longer asserts them (`vcpu::Vcpu::intx_check`).
    pub intx: Vec<u32>,
    /// Map-on-fault (lazy) stage 2: the chunk mapped per fault; `None` when eager.
    pub lazy_chunk: Option<u64>,
    /// `hyp.stage2=blocks`: map with the largest blocks alignment allows.
    blocks: bool,
    /// What [`Vm::prepare`] fills (and, eager, maps) at once: the lazy chunk, or the eager
    /// map's unit ([`CHUNK`], or a larger block with `hyp.stage2=blocks`).
    fill_unit: u64,
    /// Which chunks of RAM are filled (`el2::scrub`).
    chunks: Chunks,
    /// The images not filled at creation, each borrowed from the boot bundle: (offset in RAM,
    /// bytes), sorted by offset, not overlapping.
    images: Vec<(u64, &'static [u8])>,
    /// Clean filled RAM to the point of coherency: the CPU lacks FEAT_S2FWB (the guest starts
    /// with its caches off) or `CTR_EL0.IDC` (instruction fetch needs the data cleaned).
    clean_fills: bool,
    /// `hyp.stress=N`: the stage-2 stress state; `None` when off.
    pub stress: Option<stress::Stress>,
    /// Devices and PSCI.
    pub dev: SpinMutex<Devices>,
    /// UART output lines waiting for the physical console (`output`). Taken after `dev`
    /// when both are held.
    pub out: SpinMutex<OutQueue>,
    /// `out` is not empty (read without its lock by CPUs looking for output to write).
    pub out_pending: AtomicBool,
    /// Warnings about this guest's misbehaviour printed so far (`warn_limited`).
    warned: AtomicU64,
    /// The stage-2 audit found a leaf outside the VM's RAM (a hyp bug: hyp fails).
    audit_failed: AtomicBool,
    state: AtomicU8,
    live: AtomicUsize,
    done: AtomicBool,
    /// Exit counters.
    pub stats: Stats,
}

impl Vm {
    /// The VM's state.
    pub fn state(&self) -> VmState {
        match self.state.load(Ordering::Acquire) {
            0 => VmState::Running,
            1 => VmState::Off,
            2 => VmState::Reset,
            _ => VmState::Killed,
        }
    }

    /// Whether the VM has stopped (its vCPUs leave their run loops).
    pub fn stopped(&self) -> bool {
        self.state.load(Ordering::Acquire) != VmState::Running as u8
    }

    /// Stops the VM (the first reason wins) and kicks every vCPU but `me`.
    pub fn stop(&self, why: VmState, me: usize, reason: Option<core::fmt::Arguments<'_>>) {
        if self
            .state
            .compare_exchange(
                VmState::Running as u8,
                why as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        if let Some(r) = reason {
            // Guest misbehaviour: warn, not error (it is not hyp's failure).
            warn!("vm {}: killed: {r}", self.name);
        }
        for (v, &p) in self.pcpus.iter().enumerate() {
            if v != me {
                gic::kick(p);
            }
        }
    }

    /// A warning about this guest's misbehaviour: the first [`WARN_BUDGET`] of each VM are
    /// printed, then one line saying the rest are counted (a guest cannot flood hyp's console
    /// or silence another VM's warnings). Guest misbehaviour is `warn!`, not `error!`: it is not hyp's failure.
    pub fn warn_limited(&self, args: core::fmt::Arguments<'_>) {
        let n = self.warned.fetch_add(1, Ordering::Relaxed);
        if n < WARN_BUDGET {
            warn!("{args}");
        } else if n == WARN_BUDGET {
            warn!(
                "vm {}: more than {WARN_BUDGET} warnings: the rest are only counted",
                self.name
            );
        }
    }

    /// Kicks the vCPUs in `set` (except `me`) so they pick up a change of their interrupts.
    pub fn kick(&self, set: vdev::vgic::VcpuSet, me: usize) {
        for v in set.iter() {
            if v != me {
                if let Some(&p) = self.pcpus.get(v) {
                    gic::kick(p);
                }
            }
        }
    }

    /// Walks the VM's stage 2 and checks that every leaf maps guest RAM to the host frames
    /// that hold it: RAM at `ram_pa + offset`, or the frame `hyp.stress` migrated the page to.
    /// Returns the number of leaves, or the first leaf that maps anything else (a hyp bug
    /// that would let the guest reach memory not its own).
    pub fn audit_stage2(&self) -> Result<Audit, (u64, u64)> {
        let mut pt = self.s2.lock();
        let page = pt.geometry().page_size();
        let mut leaves = 0;
        let mut window_leaves = 0;
        let mut bad = None;
        pt.for_each_leaf(|ipa, pa, size| {
            let (ipa, pa) = (ipa.get(), pa.get());
            // Its PCI window: device memory at IPA = PA, where its BARs decode.
            if let Some(w) = &self.pci_window {
                if ipa >= w.start && ipa.checked_add(size).is_some_and(|e| e <= w.end) {
                    window_leaves += 1;
                    if pa != ipa && bad.is_none() {
                        bad = Some((ipa, pa));
                    }
                    return;
                }
            }
            leaves += 1;
            let off = ipa.wrapping_sub(self.ram_ipa);
            let inside =
                ipa >= self.ram_ipa && off.checked_add(size).is_some_and(|e| e <= self.ram_size);
            let want = match &self.stress {
                Some(st) if inside && size == page => st.frame_of(off, page, self.ram_pa),
                _ => self.ram_pa.wrapping_add(off),
            };
            if (!inside || pa != want) && bad.is_none() {
                bad = Some((ipa, pa));
            }
        });
        match bad {
            None => Ok(Audit {
                leaves,
                window_leaves,
            }),
            Some(b) => Err(b),
        }
    }

    /// Makes the RAM around offset `off` (the fill unit holding it) ready to map: fills its
    /// chunks that are not filled yet; an eager VM's are then mapped. Returns whether some of
    /// it had never been filled (so never mapped) when this call looked.
    pub fn prepare(&self, off: u64) -> bool {
        let unit = self.fill_unit;
        let start = off & !(unit - 1);
        let range = start..(start + unit).min(self.ram_size);
        let eager = self.lazy_chunk.is_none();
        if eager && unit == CHUNK {
            // Mapped before the chunk is marked ready, by the CPU that filled it.
            self.chunks.ensure(range, |r| {
                self.fill(r.clone());
                self.map_ram(r);
            })
        } else {
            let fresh = self.chunks.ensure(range.clone(), |r| self.fill(r));
            if fresh && eager {
                self.map_ram(range);
            }
            fresh
        }
    }

    /// Writes the initial contents of RAM offsets `r` (a whole chunk): the images' bytes in
    /// it, zeros around them.
    fn fill(&self, r: Range<u64>) {
        let spans: Vec<(u64, u64)> = self
            .images
            .iter()
            .map(|(o, d)| (*o, d.len() as u64))
            .collect();
        fill_ram(self.ram_pa, r.clone(), &spans, |i| self.images[i].1);
        self.after_fill(r);
    }

    /// Cache maintenance after filling RAM offsets `r`, before the chunk is marked ready.
    fn after_fill(&self, r: Range<u64>) {
        if self.clean_fills {
            // The guest may read with its caches off (no FWB), or fetch instructions that
            // must see the data (no IDC): clean to the point of coherency (DSB ISH included).
            cache::clean_to_poc(self.ram_pa + r.start, r.end - r.start);
        } else {
            el2::arch::barrier::dsb_ish();
        }
        // Nothing stale from these frames' previous use may be fetched as the guest's code.
        cache::invalidate_icache_all();
    }

    /// Maps RAM offsets `r` (filled) at stage 2, unless it is mapped already (a block another
    /// CPU mapped first); a failure stops the VM.
    fn map_ram(&self, r: Range<u64>) {
        let ipa = self.ram_ipa + r.start;
        let mut pt = self.s2.lock();
        if pt.translate(Ipa::new(ipa)).is_some() {
            return;
        }
        let opts = MapOpts {
            skip_cmo: true,
            pages_only: !self.blocks,
        };
        let mapped = AddrRange::from_start_len(Ipa::new(ipa), r.end - r.start)
            .map_err(MapError::from)
            .and_then(|range| pt.map(range, Pa::new(self.ram_pa + r.start), Attrs::ram(), opts));
        if let Err(e) = mapped {
            drop(pt);
            self.stop(
                VmState::Killed,
                usize::MAX,
                Some(format_args!("stage-2 map of IPA {ipa:#x} failed: {e}")),
            );
        }
    }

    fn finish(&self) {
        if self.owns_devices {
            // Devices stop first (bus mastering off), their events are reported while their
            // streams are still this VM's, then the streams are taken back.
            if let (Some(view), Some(mut ecam)) = (&self.pci, crate::pci::host()) {
                view.lock().quiesce(&mut ecam);
            }
            if let Err(e) = crate::smmu::poll() {
                el2::fatal!("{e}")
            }
            crate::smmu::release(&self.name, (self.vttbr >> 48) as u16);
        }
        {
            let mut d = self.dev.lock();
            d.uart.flush(&mut |line: &str| output::queue(self, line));
        }
        output::drain(self);
        match self.audit_stage2() {
            Ok(Audit {
                leaves,
                window_leaves: 0,
            }) => info!(
                "vm {}: stage-2 audit: {leaves} leaves, all inside guest RAM",
                self.name
            ),
            Ok(a) => info!(
                "vm {}: stage-2 audit: {} leaves, all inside guest RAM, and {} in its PCI window",
                self.name, a.leaves, a.window_leaves
            ),
            Err((ipa, pa)) => {
                error!(
                    "vm {}: stage-2 audit: IPA {ipa:#x} maps PA {pa:#x}, which is not this VM's RAM there",
                    self.name
                );
                self.audit_failed.store(true, Ordering::Release);
            }
        }
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let freq = el2::arch::sysreg::counter().1;
        info!(
            "vm {}: exits {} (uart {}, gic {}, hvc {}, sysreg {}, wfx {}, irq {}, stage-2 faults {}, injected {}), handled in {} ms",
            self.name,
            g(&s.total),
            g(&s.uart),
            g(&s.gic),
            g(&s.hvc),
            g(&s.sysreg),
            g(&s.wfx),
            g(&s.irq),
            g(&s.s2fault),
            g(&s.injected),
            g(&s.handling) * 1000 / freq
        );
        if let Some(st) = &self.stress {
            info!("{}", st.line(&self.name));
        }
        let sw = g(&s.set_way);
        if sw > 0 {
            info!(
                "vm {}: set/way: {sw} operations trapped, {} cleans of guest RAM",
                self.name,
                g(&s.set_way_flushes)
            );
        }
        let dropped = self.out.lock().dropped_total();
        if dropped > 0 {
            info!(
                "vm {}: console: {dropped} bytes dropped (the guest wrote faster than the UART drains)",
                self.name
            );
        }
        let warned = self.warned.load(Ordering::Relaxed);
        if warned > WARN_BUDGET {
            info!("vm {}: {warned} warnings in all", self.name);
        }
        match self.state() {
            VmState::Off => info!("vm {}: exited (system off)", self.name),
            VmState::Reset => info!("vm {}: exited (system reset)", self.name),
            VmState::Killed | VmState::Running => info!("vm {}: exited (killed)", self.name),
        }
        self.done.store(true, Ordering::Release);
        gic::kick(0);
    }
}

static VMS: Once<Vec<&'static Vm>> = Once::new();

/// Every VM (after creation).
pub fn vms() -> &'static [&'static Vm] {
    VMS.get().map(|v| v.as_slice()).unwrap_or(&[])
}

/// Fills one chunk of some VM's RAM that is not filled yet (and maps it if the VM is eager),
/// for a CPU with nothing else to do. Returns whether there was one.
pub fn fill_idle() -> bool {
    for vm in vms() {
        if vm.stopped() {
            continue;
        }
        let Some(i) = vm.chunks.claim() else {
            continue;
        };
        let r = vm.chunks.range(i);
        vm.fill(r.clone());
        let eager = vm.lazy_chunk.is_none();
        if eager && vm.fill_unit == CHUNK {
            vm.map_ram(r.clone());
        }
        vm.chunks.finish(i);
        if eager && vm.fill_unit > CHUNK {
            let start = r.start & !(vm.fill_unit - 1);
            let unit = start..(start + vm.fill_unit).min(vm.ram_size);
            if vm.chunks.ready(unit.clone()) {
                vm.map_ram(unit);
            }
        }
        return true;
    }
    false
}

/// Writes the initial contents of RAM offsets `r` of RAM at host `ram_pa`: `image(i)`'s bytes
/// where `spans[i]` (offset, length) says, zeros elsewhere (`el2::scrub::segments`).
fn fill_ram<'a>(
    ram_pa: u64,
    r: Range<u64>,
    spans: &[(u64, u64)],
    image: impl Fn(usize) -> &'a [u8],
) {
    for seg in segments(r, spans) {
        match seg {
            Segment::Zero(z) => {
                // SAFETY: the offsets lie in the VM's RAM (chunks never pass its end), host
                // RAM identity mapped for hyp and claimed by this CPU alone until the chunk
                // is marked ready (no mapping of it exists yet).
                unsafe {
                    el2::arch::guest::zero_bulk(
                        (ram_pa + z.start) as *mut u8,
                        (z.end - z.start) as usize,
                    )
                }
            }
            Segment::Image {
                image: i,
                dst,
                from,
            } => {
                let len = (dst.end - dst.start) as usize;
                let src = &image(i)[from as usize..from as usize + len];
                // SAFETY: as above for the destination; the source is the boot bundle or a
                // heap buffer, never guest RAM.
                unsafe {
                    el2::arch::guest::copy_bulk((ram_pa + dst.start) as *mut u8, src.as_ptr(), len)
                };
            }
        }
    }
}

/// Milliseconds since the counter started (QEMU: since the machine started).
fn ms() -> u64 {
    let (c, f) = el2::arch::sysreg::counter();
    c / (f / 1000).max(1)
}

/// Warnings printed per VM before the rest are only counted.
const WARN_BUDGET: u64 = 20;

/// Bytes of host RAM kept back from the plan's guest RAM for hyp's own needs after boot: the
/// alignment of each VM's RAM to its largest stage-2 block, and `hyp.stress`'s spare frames.
/// Each VM's stage-2 tables are not among them: the plan reserves them with the VM.
const HOST_RESERVE: u64 = 64 << 20;

/// Loads the system from the boot bundle and runs it until every VM has exited.
pub fn run_system(boot: &Boot) -> Result<Verdict, Fatal> {
    let t_start = ms();
    // The GIC, and the secondary CPUs into hyp's WFI-based idle loop.
    // SAFETY: `boot::early` mapped every device region of `boot.platform` Device-nGnRE in hyp's
    // identity map for good (mmu::enable), and hyp drives the GIC alone.
    let gic_ok =
        unsafe { gic::init_distributor(&boot.platform, true) }.and_then(|_| gic::init_cpu());
    if gic_ok.is_ok() {
        for cpu in cpus::take_over(1..smp::online()) {
            warn!("hyp: cpu {cpu} did not come to hyp's idle loop: it runs no vCPU");
        }
    }
    // The boot bundle is where the loader put it (the initrd); without one there is nothing
    // to run.
    let Some(data) = boot.bundle else {
        return Ok(Verdict::NoVms);
    };
    let bundle = Bundle::parse(data).map_err(Fatal::BundleCorrupt)?;
    let host = Host {
        smmu: crate::smmu::features(),
        cpu: boot.cpu,
        cpus: smp::online() as u32,
        guest_ram: mem::remaining().len().saturating_sub(HOST_RESERVE),
    };
    let plan = bundle.plan(&host).map_err(Fatal::PlanRefused)?;
    let t_plan = ms();
    if plan.vms.is_empty() {
        return Ok(Verdict::NoVms);
    }
    gic_ok.map_err(Fatal::Gic)?;
    log::debug!(
        "hyp: {} VMs; hyp's own granule {}",
        plan.vms.len(),
        boot.el2_granule
    );

    let mut vmids = VmidAllocator::for_cpu(&boot.cpu);
    let mut vms = Vec::new();
    for vp in &plan.vms {
        let vm = create(boot, data, vp, &mut vmids).map_err(|why| Fatal::Vm {
            vm: vp.name.clone(),
            why,
        })?;
        vms.push(vm);
    }
    // Every VM's stage 2 as built maps only its own RAM (printed at exit, after everything
    // the guest and hyp.stress did to it; a failure here stops hyp before any guest runs).
    for vm in &vms {
        if let Err((ipa, pa)) = vm.audit_stage2() {
            return Err(Fatal::Vm {
                vm: vm.name.clone(),
                why: VmFailure::Audit { ipa, pa },
            });
        }
    }
    let vms: &'static [&'static Vm] = VMS.call_once(|| vms).as_slice();
    log::debug!(
        "hyp: times since boot: hyp up {t_start} ms, planned {t_plan} ms, VMs built {} ms",
        ms()
    );
    drop(plan);

    // Start every vCPU on its CPU; the one pinned to CPU 0 (this one) runs last, here.
    let mut mine = None;
    for vm in vms {
        info!(
            "vm {}: starting vCPU 0 at IPA {:#x} ({} vCPUs)",
            vm.name,
            vm.entry,
            vm.pcpus.len()
        );
        for (v, &p) in vm.pcpus.iter().enumerate() {
            if p == 0 {
                mine = Some((*vm, v));
                continue;
            }
            let arg = Box::leak(Box::new(vcpu::Start { vm, vcpu: v })) as *mut vcpu::Start;
            if !cpus::dispatch(p, vcpu::thread_entry, arg as u64) {
                error!(
                    "vm {}: cpu {p} is busy or offline: vCPU {v} cannot start",
                    vm.name
                );
                vm.stop(
                    VmState::Killed,
                    usize::MAX,
                    Some(format_args!("cpu {p} unavailable")),
                );
                vm.live.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    // CPUs that run no vCPU fill the VMs' RAM meanwhile (their idle loop's `fill_idle`); woken
    // once the vCPUs are on their way, so filling does not delay their start.
    for cpu in 1..smp::online() {
        if !vms.iter().any(|vm| vm.pcpus.contains(&cpu)) {
            gic::kick(cpu);
        }
    }
    if let Some((vm, v)) = mine {
        vcpu::thread(vm, v);
    }
    // Wait for every VM; CPU 0 keeps writing queued output and taking the host console's
    // input meanwhile.
    while !vms.iter().all(|vm| vm.done.load(Ordering::Acquire)) {
        if let Err(e) = crate::smmu::poll() {
            el2::fatal!("{e}")
        }
        if output::pump_one() || fill_idle() {
            continue;
        }
        vsys::wfi();
        while let Some(iar) = gic::ack() {
            vcpu::host_irq(iar);
            gic::eoi(iar);
        }
    }
    output::drain_all();
    if vms.iter().any(|vm| vm.audit_failed.load(Ordering::Acquire)) {
        return Err(Fatal::AuditAtExit);
    }
    if vms.iter().all(|vm| vm.state() == VmState::Off) {
        Ok(Verdict::Ok)
    } else {
        Err(Fatal::NotClean)
    }
}

/// Builds one VM from its plan.
fn create(
    boot: &Boot,
    bundle: &'static [u8],
    vp: &VmPlan<'_>,
    vmids: &mut VmidAllocator,
) -> Result<&'static Vm, VmFailure> {
    let geo = vp.geometry;
    let memory = vp.memory;
    // Align guest RAM to the largest stage-2 block that fits, so that stage 2 can use blocks
    // (`hyp.stage2=blocks`; by default it maps pages, see el2::cmdline).
    let mut align = geo.page_size();
    for level in geo.start_level()..=2 {
        if let Some(b) = geo.block_size(level) {
            if b <= memory && b > align {
                align = b;
            }
        }
    }
    // The VM's stage-2 tables come from their own pool, the plan's budget for them: a VM can
    // exhaust only its own table memory. Aligned to the concatenated root (the first and
    // largest allocation), so no byte of it is lost to alignment; taken before the RAM,
    // whose alignment to a large block could otherwise leave no room behind it.
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
    // On a VMID rollover the allocator itself invalidates every VMID's TLB entries
    // (TLBI ALLE1IS, DSB ISH) before returning.
    let grant = vmids.alloc(&mut HwMaintenance).map_err(VmFailure::Vmid)?;
    if grant.flushed {
        log::debug!(
            "vm {}: VMID rollover: every VMID's TLB entries invalidated",
            vp.name
        );
    }
    let vmid16 = vmids.bits() == 16;
    let vmid = grant.vmid;
    let owns_devices = !vp.pci.is_empty();
    let maint = crate::smmu::maintenance(vmid.get(), owns_devices);
    let mut pt =
        PageTable::with_vmid(geo, vmid.get(), frames, maint).map_err(VmFailure::Stage2Root)?;
    let ram_ipa = vp.layout.ram.start().get();
    debug_assert_eq!(ram_ipa, RAM_BASE);
    let eager = vp.mapping == Mapping::Eager;
    let blocks = boot.cmdline.stage2_blocks;
    // The images, checked against RAM and each other. Those in the boot bundle (borrowed from
    // it: it stays in place for good) are filled into RAM on demand; the others (the device
    // tree, a gzip kernel's inflated bytes) now, below.
    let mut items: Vec<(u64, &'static str, &[u8])> = Vec::new();
    for item in vp.load_items() {
        let off = item.ipa.get().wrapping_sub(ram_ipa);
        let len = item.data.len() as u64;
        if item.ipa.get() < ram_ipa || off.checked_add(len).is_none_or(|e| e > memory) {
            return Err(VmFailure::LoadOutside {
                what: item.what,
                ipa: item.ipa.get(),
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
    let in_bundle = |d: &[u8]| -> Option<&'static [u8]> {
        let at = (d.as_ptr() as usize).checked_sub(bundle.as_ptr() as usize)?;
        bundle
            .get(at..at + d.len())
            .filter(|b| b.as_ptr() == d.as_ptr())
    };
    let images: Vec<(u64, &'static [u8])> = items
        .iter()
        .filter_map(|&(off, _, d)| Some((off, in_bundle(d)?)))
        .collect();
    // What a fault fills and (eager) maps at once: a lazy VM's chunk; for an eager VM one fill
    // chunk, or with blocks the largest block the RAM's alignment allows.
    let lazy_chunk = if eager {
        None
    } else {
        // Map per fault one page of the VM's stage-2 granule, or with `hyp.stage2=blocks` the
        // largest block up to 32 MiB that the RAM's alignment allows.
        let mut chunk = geo.page_size();
        if blocks {
            for level in geo.start_level()..=3 {
                if let Some(b) = geo.block_size(level) {
                    if b <= memory && b <= align && b > chunk && b <= (32 << 20) {
                        chunk = b;
                    }
                }
            }
        }
        Some(chunk)
    };
    let fill_unit = match lazy_chunk {
        Some(c) => c,
        None if blocks => align.max(CHUNK),
        None => CHUNK,
    };
    let chunks = Chunks::new(memory);
    // Clean what hyp writes for the guest to the point of coherency unless stage 2 makes the
    // guest's view cacheable (FEAT_S2FWB) and instruction fetch coherent with data
    // (CTR_EL0.IDC: no clean to the point of unification needed, Arm ARM D7.5.9).
    let clean_fills = !geo.fwb() || !boot.cpu.idc();
    // Fill now the chunks (whole fill units) of the images that are not in the bundle; for a
    // VM that owns devices, all of its RAM: a device may DMA to any of it from its first
    // instruction on, and DMA never faults a chunk in.
    let spans: Vec<(u64, u64)> = items.iter().map(|i| (i.0, i.2.len() as u64)).collect();
    let mut now: Vec<(u64, u64)> = items
        .iter()
        .filter(|&&(_, _, d)| in_bundle(d).is_none() && !d.is_empty())
        .map(|&(off, _, d)| {
            let start = off & !(fill_unit - 1);
            let end = (off + d.len() as u64).div_ceil(fill_unit) * fill_unit;
            (start, end.min(memory))
        })
        .collect();
    if owns_devices {
        now = (0..memory)
            .step_by(fill_unit as usize)
            .map(|s| (s, (s + fill_unit).min(memory)))
            .collect();
    }
    for (start, end) in now {
        chunks.ensure(start..end, |r| {
            fill_ram(pa, r.clone(), &spans, |i| items[i].2);
            if clean_fills {
                cache::clean_to_poc(pa + r.start, r.end - r.start);
            }
        });
        if eager {
            let opts = MapOpts {
                skip_cmo: true,
                pages_only: !blocks,
            };
            let ipa = ram_ipa + start;
            if pt.translate(Ipa::new(ipa)).is_none() {
                AddrRange::from_start_len(Ipa::new(ipa), end - start)
                    .map_err(MapError::from)
                    .and_then(|r| pt.map(r, Pa::new(pa + start), Attrs::ram(), opts))
                    .map_err(VmFailure::Stage2Map)?;
            }
        }
    }
    el2::arch::barrier::dsb_ish();
    cache::invalidate_icache_all();
    // Its devices' DMA goes through the same stage 2, now that it maps all of its RAM.
    if owns_devices {
        crate::smmu::assign(&crate::smmu::Assignment {
            vm: &vp.name,
            vmid: vmid.get(),
            geometry: &geo,
            root: pt.root_pa(),
            ram: pa..pa + memory,
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
    }
    let (pci, intx) = match vp.pci_window {
        Some(w) if owns_devices => {
            let (view, intx) = pci_view(vp, w, &mut pt)?;
            (Some(SpinMutex::new(view)), intx)
        }
        _ => (None, Vec::new()),
    };

    let n = vp.vcpus as usize;
    let vgic = Vgic::new(VgicConfig {
        n_vcpus: n,
        n_spis: 32,
    })
    .map_err(VmFailure::Vgic)?;
    let ram = ram_ipa..ram_ipa + memory;
    let ram_range = core::slice::from_ref(&ram);
    let psci = Psci::new(n, ram_range, boot.workarounds).map_err(VmFailure::Psci)?;
    let policy = IdPolicy {
        granules: vp.advertised_granules,
        ipa_bits: vp.ipa_bits,
    };
    let idregs = GuestIdRegs::new(&policy, |r| vsys::id_reg(r.crm(), r.op2()));
    let gicr_size = vgic.redist_size();
    let pcpus: Vec<usize> = (vp.cpus.start..vp.cpus.end).map(|c| c as usize).collect();
    if pcpus.len() != n || pcpus.iter().any(|&c| smp::mpidr_of(c).is_none()) {
        return Err(VmFailure::Cpus {
            start: vp.cpus.start,
            end: vp.cpus.end,
            online: smp::online(),
        });
    }
    let vtcr = geo.vtcr_el2(boot.cpu.pa_bits(), vmid16);
    let vttbr = pt.vttbr();
    info!("{}", vp.stage2_line());
    info!("{}", vp.page_size_line());
    if vp.decision.fell_back() {
        warn!("vm {}: {}", vp.name, vp.decision.refusals());
    }
    log::debug!(
        "vm {}: RAM IPA {ram_ipa:#x}+{memory:#x} at PA {pa:#x}, VMID {}, VTCR_EL2 {vtcr:#x}, {} vCPUs on CPUs {:?}, {} mapping with {}",
        vp.name,
        vmid.get(),
        n,
        pcpus,
        if eager { "eager" } else { "lazy" },
        if blocks {
            "blocks"
        } else {
            "pages"
        }
    );
    let mut starts = Vec::with_capacity(n);
    starts.resize(n, None);
    let vm = Box::leak(Box::new(Vm {
        name: vp.name.clone(),
        pcpus,
        vttbr,
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
        ram_ipa,
        ram_pa: pa,
        ram_size: memory,
        gicr_size,
        entry: vp.layout.kernel.start().get(),
        dtb: vp.layout.dtb().get(),
        idregs,
        s2: SpinMutex::new(pt),
        owns_devices,
        pci,
        intx,
        pci_window: vp
            .pci_window
            .filter(|_| owns_devices)
            .map(|w| w.start().get()..w.end().get()),
        lazy_chunk,
        blocks,
        fill_unit,
        chunks,
        images,
        clean_fills,
        // Device-visible memory stays mapped while a device may use it: hyp.stress does not
        // touch a VM that owns devices.
        stress: (boot.cmdline.stress != 0 && !owns_devices).then(|| {
            stress::Stress::new(
                boot.cmdline.stress,
                vsys::cntpct_el0() ^ u64::from(vmid.get()),
                n,
            )
        }),
        dev: SpinMutex::new(Devices {
            vgic,
            psci,
            uart: {
                let mut u = Pl011::new(&vp.name);
                // Linux's earlycon writes before enabling the UART (firmware normally has).
                u.set_transmit_when_disabled(true);
                u
            },
            starts,
            rx_backlog: Vec::new(),
            intx: vdev::ppi::Forwarder::default(),
        }),
        out: SpinMutex::new(OutQueue::new(&vp.name, vdev::console::QUEUE_BYTES)),
        out_pending: AtomicBool::new(false),
        warned: AtomicU64::new(0),
        audit_failed: AtomicBool::new(false),
        state: AtomicU8::new(VmState::Running as u8),
        live: AtomicUsize::new(n),
        done: AtomicBool::new(false),
        stats: Stats::default(),
    }));
    Ok(vm)
}

/// A VM's PCI view: its functions' memory BARs measured on the devices (which start
/// quiesced), and its slice of the PCI memory window mapped into its stage 2 as device memory
/// at IPA = PA (the BARs, whose addresses `PciView` confines to the slice, decode there).
fn pci_view(
    vp: &VmPlan<'_>,
    window: AddrRange<Ipa>,
    pt: &mut PageTable<FrameAlloc, VmMaintenance>,
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

/// What [`Vm::audit_stage2`] counted: leaves mapping the VM's RAM, and leaves mapping its PCI
/// window.
pub struct Audit {
    /// Leaves inside its RAM.
    pub leaves: u64,
    /// Leaves inside its PCI window.
    pub window_leaves: u64,
}

/// Where an IPA falls in the VM's memory map.
pub enum Region {
    /// Guest RAM, at this offset.
    Ram(u64),
    /// The GIC distributor, at this offset.
    Gicd(u64),
    /// The redistributors, at this offset.
    Gicr(u64),
    /// The PL011, at this offset.
    Uart(u64),
    /// The PCI configuration space of a VM that owns functions, at this offset.
    Ecam(u64),
    /// Nothing.
    None,
}

impl Vm {
    /// Classifies an IPA.
    pub fn region(&self, ipa: u64) -> Region {
        if ipa >= self.ram_ipa && ipa - self.ram_ipa < self.ram_size {
            Region::Ram(ipa - self.ram_ipa)
        } else if (GICD_BASE..GICD_BASE + GICD_SIZE).contains(&ipa) {
            Region::Gicd(ipa - GICD_BASE)
        } else if ipa >= GICR_BASE && ipa - GICR_BASE < self.gicr_size {
            Region::Gicr(ipa - GICR_BASE)
        } else if (UART_BASE..UART_BASE + UART_SIZE).contains(&ipa) {
            Region::Uart(ipa - UART_BASE)
        } else if self.pci.is_some()
            && (PCI_ECAM_BASE..PCI_ECAM_BASE + PCI_ECAM_SIZE).contains(&ipa)
        {
            Region::Ecam(ipa - PCI_ECAM_BASE)
        } else {
            Region::None
        }
    }
}
