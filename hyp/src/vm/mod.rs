//! VMs: built from the boot bundle's plan, their vCPUs pinned one to one on physical CPUs,
//! run until every VM has exited.
//!
//! A VM's lifetime: `create` (RAM from host memory, aligned to the largest stage-2 block that
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
mod create;
mod system;
pub use system::{init_gic, read_bundle, run_system};
pub mod output;
pub mod pmu;
pub mod ppi;
pub mod stress;
pub mod vcpu;

use crate::gic;
use crate::smmu::VmMaintenance;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use el2::arch::cache;
use el2::frames::FrameAlloc;
use el2::scrub::{segments, Chunks, Segment, CHUNK};
use log::{error, info, warn};
use platform::virt::{
    GICD_BASE, GICD_SIZE, GICR_BASE, PCI_ECAM_BASE, PCI_ECAM_SIZE, UART_BASE, UART_SIZE,
};
use spin::mutex::SpinMutex;
use spin::Once;
use stage2::{AddrRange, Attrs, Ipa, MapError, MapOpts, Pa, PageTable};
use vdev::console::OutQueue;
use vdev::idregs::GuestIdRegs;
use vdev::pci::PciView;
use vdev::pl011::Pl011;
use vdev::psci::Psci;
use vdev::traps::HostFeatures;
use vdev::vgic::Vgic;

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
    /// The first IPA of guest RAM.
    pub ram_ipa: Ipa,
    /// Host physical address of guest RAM.
    pub ram_pa: Pa,
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
    pub fn audit_stage2(&self) -> Result<Audit, (Ipa, Pa)> {
        let mut pt = self.s2.lock();
        let page = pt.geometry().page_size();
        let ram_pa = self.ram_pa;
        let mut leaves = 0;
        let mut window_leaves = 0;
        let mut bad = None;
        pt.for_each_leaf(|ipa, pa, size| {
            // Its PCI window: device memory at IPA = PA, where its BARs decode.
            if let Some(w) = &self.pci_window {
                let a = ipa.get();
                if a >= w.start && a.checked_add(size).is_some_and(|e| e <= w.end) {
                    window_leaves += 1;
                    if pa != ipa.identity_pa() && bad.is_none() {
                        bad = Some((ipa, pa));
                    }
                    return;
                }
            }
            leaves += 1;
            // The leaf's offset in RAM, when all of it is inside.
            let off = ipa
                .checked_offset_from(self.ram_ipa)
                .filter(|o| o.checked_add(size).is_some_and(|e| e <= self.ram_size));
            let want = match (off, &self.stress) {
                (Some(off), Some(st)) if size == page => Some(st.frame_of(off, page, ram_pa)),
                (Some(off), _) => Some(ram_pa.wrapping_add(off)),
                (None, _) => None,
            };
            if want != Some(pa) && bad.is_none() {
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
            cache::clean_to_poc((self.ram_pa + r.start).get(), r.end - r.start);
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
        if pt.translate(ipa).is_some() {
            return;
        }
        let opts = MapOpts {
            skip_cmo: true,
            pages_only: !self.blocks,
        };
        let mapped = AddrRange::from_start_len(ipa, r.end - r.start)
            .map_err(MapError::from)
            .and_then(|range| pt.map(range, self.ram_pa + r.start, Attrs::ram(), opts));
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
            self.release_devices();
        }
        {
            let mut d = self.dev.lock();
            d.uart.flush(&mut |line: &str| output::queue(self, line));
        }
        output::drain(self);
        self.report_audit();
        self.report_counts();
        match self.state() {
            VmState::Off => info!("vm {}: exited (system off)", self.name),
            VmState::Reset => info!("vm {}: exited (system reset)", self.name),
            VmState::Killed | VmState::Running => info!("vm {}: exited (killed)", self.name),
        }
        self.done.store(true, Ordering::Release);
        gic::kick(0);
    }

    /// Stops the VM's devices first (bus mastering off), reports their events while their
    /// streams are still this VM's, then takes the streams back.
    fn release_devices(&self) {
        if let (Some(view), Some(mut ecam)) = (&self.pci, crate::pci::host()) {
            view.lock().quiesce(&mut ecam);
        }
        if let Err(e) = crate::smmu::poll() {
            el2::fatal!("{e}")
        }
        crate::smmu::release(&self.name, (self.vttbr >> 48) as u16);
    }

    /// Prints the stage-2 audit at exit; a leaf outside the VM's RAM marks the run failed.
    fn report_audit(&self) {
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
    }

    /// Prints the VM's exit counts, its stress line, and what it had trapped, dropped or was
    /// warned about.
    fn report_counts(&self) {
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
    ram_pa: Pa,
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
                        (ram_pa + z.start).get() as *mut u8,
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
                    el2::arch::guest::copy_bulk(
                        (ram_pa + dst.start).get() as *mut u8,
                        src.as_ptr(),
                        len,
                    )
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
    pub fn region(&self, ipa: Ipa) -> Region {
        if let Some(off) = ipa
            .checked_offset_from(self.ram_ipa)
            .filter(|&off| off < self.ram_size)
        {
            return Region::Ram(off);
        }
        // The devices' windows are at fixed IPAs (`platform::virt`).
        let ipa = ipa.get();
        if (GICD_BASE..GICD_BASE + GICD_SIZE).contains(&ipa) {
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
