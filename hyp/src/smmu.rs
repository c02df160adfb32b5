//! hyp's SMMUv3 driver (Arm IHI 0070): the register side of the `smmu` crate's model.
//!
//! At boot, if the host device tree has an `arm,smmu-v3` node, hyp takes the SMMU over: it
//! reads `SMMU_IDR0..5`, and, when the SMMU can translate at stage 2 for hyp, builds a linear
//! stream table in which every StreamID aborts, a command queue and an event queue, invalidates
//! everything the SMMU may have cached, and enables translation. From then on no device behind
//! the SMMU reaches memory unless hyp points its STE at a VM's stage 2. When it cannot (no
//! stage 2, no AArch64 tables, non-coherent table walks), hyp says why and leaves the SMMU
//! disabled with `SMMU_GBPA.ABORT` set, so devices behind it still reach nothing.
//!
//! Events are polled ([`Smmu::poll`]); a global error (`SMMU_GERROR`) is fatal: the
//! invalidations hyp relies on may not have happened.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use el2::arch::{barrier, sysreg};
use el2::frames::{FrameAlloc, HwMaintenance};
use el2::mmio::MmioRegion;
use guest_loader::pci::{Bdf, PciDevice};
use log::{info, warn};
use smmu::regs::{offset, CR0, CR1, GBPA, GERROR, QUEUE_BASE, STRTAB_BASE_CFG};
use smmu::{
    Command, CommandError, CommandMemory, CommandQueue, CommandSink, Event, EventMemory,
    EventQueue, Refusal, SmmuFeatures, SmmuMirror, Ste,
};
use spin::mutex::SpinMutex;
use stage2::{AddrRange, Geometry, Granule, Pa, TableAlloc};
use tock_registers::LocalRegisterCopy;

use crate::mem;

/// StreamIDs hyp's stream table covers: bus 0 (requester IDs 0x00..=0xff), where QEMU's virt
/// machine puts every PCIe function of its root bus. A StreamID beyond it is reported
/// (`C_BAD_STREAMID`, `CR2.RECINVSID`) and aborted.
const STREAM_LOG2: u32 = 8;
/// Command queue entries (log2): 256 × 16 bytes, one 4 KiB frame.
const CMDQ_LOG2: u32 = 8;
/// Event queue entries (log2): 1024 × 32 bytes, 32 KiB.
const EVENTQ_LOG2: u32 = 10;
/// The frames below are 4 KiB whatever hyp's granule: the SMMU's structures are sized in
/// bytes, and 4 KiB is the smallest unit `FrameAlloc` hands out.
const FRAME: Granule = Granule::K4;
/// How long hyp waits for the SMMU to acknowledge a register update or complete a
/// `CMD_SYNC`: the architecture gives no bound; a second is far beyond any real SMMU.
const TIMEOUT_MS: u64 = 1000;
/// `SMMU_CR2`: `RECINVSID` (bit 1), record events for out-of-range StreamIDs; `PTM` (bit 2),
/// ignore broadcast TLB maintenance: hyp invalidates the SMMU by commands only
/// (`smmu::SmmuMirror`), so the CPUs' TLBIs of other VMIDs cost the SMMU nothing.
const CR2_RECINVSID_PTM: u32 = 0b110;

/// Log2 of the entries of the stream table and the queues hyp builds: its own choices
/// ([`STREAM_LOG2`], [`CMDQ_LOG2`], [`EVENTQ_LOG2`]), capped by what the SMMU supports.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    sid_log2: u32,
    cmdq_log2: u32,
    evtq_log2: u32,
}

impl Sizes {
    fn of(features: &SmmuFeatures) -> Sizes {
        Sizes {
            sid_log2: STREAM_LOG2.min(features.sid_bits),
            cmdq_log2: CMDQ_LOG2.min(features.cmdq_log2),
            evtq_log2: EVENTQ_LOG2.min(features.eventq_log2),
        }
    }
}

/// Words of DMA-visible memory made of consecutive 4 KiB frames from hyp's allocator.
struct Frames {
    base: Pa,
    frames: usize,
}

impl Frames {
    fn alloc(fa: &mut FrameAlloc, bytes: usize) -> Option<Frames> {
        let frames = bytes.div_ceil(FRAME.size() as usize);
        let base = fa.alloc(FRAME, frames)?;
        Some(Frames { base, frames })
    }

    fn word<'a>(&self, fa: &'a FrameAlloc, i: usize) -> &'a AtomicU64 {
        let per = FRAME.entries();
        assert!(
            i / per < self.frames,
            "invariant: word {i} inside the frames"
        );
        let frame = self.base.wrapping_add((i / per) as u64 * FRAME.size());
        &fa.table(frame, FRAME)[i % per]
    }
}

/// The command queue's memory as `smmu::CommandQueue` writes it.
struct CmdMem<'a>(&'a FrameAlloc, &'a Frames);

impl CommandMemory for CmdMem<'_> {
    fn write(&mut self, slot: usize, words: [u64; 2]) {
        for (k, w) in words.into_iter().enumerate() {
            self.1
                .word(self.0, slot * 2 + k)
                .store(w, Ordering::Relaxed);
        }
    }
}

impl EventMemory for CmdMem<'_> {
    fn read(&self, slot: usize) -> [u64; 4] {
        core::array::from_fn(|k| self.1.word(self.0, slot * 4 + k).load(Ordering::Relaxed))
    }
}

/// Why hyp does not use the SMMU (it stays disabled, aborting every transaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// `SMMU_IDR0.S2P` = 0.
    NoStage2,
    /// `SMMU_IDR0.TTF` lacks AArch64.
    NoAarch64,
    /// `SMMU_IDR0.COHACC` = 0: hyp would have to clean every STE and queue entry to PoC.
    NotCoherent,
    /// No memory for the stream table or the queues.
    NoMemory,
    /// A register update was not acknowledged, or the first `CMD_SYNC` did not complete.
    Timeout(&'static str),
    /// The first commands failed.
    Command(CommandError),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::NoStage2 => f.write_str("no stage 2 (SMMU_IDR0.S2P = 0)"),
            Unusable::NoAarch64 => f.write_str("no AArch64 tables (SMMU_IDR0.TTF)"),
            Unusable::NotCoherent => f.write_str("table walks not coherent (SMMU_IDR0.COHACC = 0)"),
            Unusable::NoMemory => f.write_str("no memory for its stream table and queues"),
            Unusable::Timeout(what) => write!(f, "{what} timed out"),
            Unusable::Command(e) => write!(f, "command queue error {e:?}"),
        }
    }
}

/// A global error the SMMU raised (`SMMU_GERROR` bits not yet acknowledged in `GERRORN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalError(pub u32);

impl fmt::Display for GlobalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = LocalRegisterCopy::<u32, GERROR::Register>::new(self.0);
        write!(f, "SMMU global error {:#x}", self.0)?;
        if e.is_set(GERROR::CMDQ_ERR) {
            f.write_str(" (CMDQ_ERR)")?;
        }
        if e.is_set(GERROR::EVENTQ_ABT_ERR) {
            f.write_str(" (EVENTQ_ABT_ERR)")?;
        }
        if e.is_set(GERROR::SFM_ERR) {
            f.write_str(" (SFM_ERR: service failure mode)")?;
        }
        Ok(())
    }
}

/// A stream given to a VM.
struct Owner {
    sid: u32,
    vm: String,
    /// Events reported for it so far (the first [`EVENTS_SHOWN`] are printed).
    events: u32,
}

/// Events printed per stream: a device aimed at the wrong addresses by its guest must not be
/// able to flood the console; the rest are counted.
const EVENTS_SHOWN: u32 = 20;

/// The SMMU, taken over by hyp.
pub struct Smmu {
    regs: MmioRegion,
    features: SmmuFeatures,
    owners: Vec<Owner>,
    frames: FrameAlloc,
    strtab: Frames,
    cmdq: CommandQueue,
    cmdq_mem: Frames,
    evtq: EventQueue,
    evtq_mem: Frames,
}

/// The SMMU once [`init`] took it over (`None`: there is none, or hyp cannot use it).
static SMMU: SpinMutex<Option<Smmu>> = SpinMutex::new(None);

fn ms_since(t0: u64) -> u64 {
    let (now, freq) = sysreg::counter();
    now.wrapping_sub(t0).saturating_mul(1000) / freq
}

impl Smmu {
    fn r32(&self, off: u64) -> u32 {
        self.regs.read32(off as usize)
    }

    fn w32(&self, off: u64, v: u32) {
        self.regs.write32(off as usize, v)
    }

    fn w64(&self, off: u64, v: u64) {
        self.regs.write64(off as usize, v)
    }

    /// Waits until `cond` holds, for at most [`TIMEOUT_MS`].
    fn wait(
        &self,
        what: &'static str,
        mut cond: impl FnMut(&Self) -> bool,
    ) -> Result<(), Unusable> {
        let (t0, _) = sysreg::counter();
        while !cond(self) {
            if ms_since(t0) > TIMEOUT_MS {
                return Err(Unusable::Timeout(what));
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// Writes `SMMU_CR0` and waits for `SMMU_CR0ACK` to match (IHI 0070 §6.3.9).
    fn set_cr0(&self, value: u32) -> Result<(), Unusable> {
        self.w32(offset::CR0, value);
        self.wait("SMMU_CR0ACK", |s| s.r32(offset::CR0ACK) == value)
    }

    /// Queues `cmd` (waiting for room), then publishes it: `DSB` so the command and every
    /// earlier store (e.g. an STE or a stage-2 descriptor) are visible to the SMMU, then
    /// `SMMU_CMDQ_PROD` (IHI 0070 §3.5.2).
    fn push(&mut self, cmd: Command) -> Result<(), Unusable> {
        let prod = loop {
            let mut mem = CmdMem(&self.frames, &self.cmdq_mem);
            match self.cmdq.push(&mut mem, cmd) {
                Ok(p) => break p,
                Err(_) => {
                    let cons = self.r32(offset::CMDQ_CONS);
                    self.cmdq.consumed(cons).map_err(Unusable::Command)?;
                    core::hint::spin_loop();
                }
            }
        };
        barrier::dsb_ish();
        self.w32(offset::CMDQ_PROD, prod);
        Ok(())
    }

    /// `CMD_SYNC`, then waits until the SMMU has consumed it (and so completed every command
    /// before it: IHI 0070 §4.7.3).
    fn sync(&mut self) -> Result<(), Unusable> {
        self.push(Command::Sync)?;
        let (t0, _) = sysreg::counter();
        loop {
            let cons = self.r32(offset::CMDQ_CONS);
            if self.cmdq.consumed(cons).map_err(Unusable::Command)? {
                return Ok(());
            }
            if ms_since(t0) > TIMEOUT_MS {
                return Err(Unusable::Timeout("CMD_SYNC"));
            }
            core::hint::spin_loop();
        }
    }

    /// Takes the SMMU over: IHI 0070 §3.21 ("Initialization" order: disable, program the
    /// tables and queues, enable the command queue, invalidate, enable the event queue,
    /// enable translation).
    fn take_over(regs: MmioRegion, features: SmmuFeatures) -> Result<Smmu, Unusable> {
        if !features.stage2 {
            return Err(Unusable::NoStage2);
        }
        if !features.aarch64_tables {
            return Err(Unusable::NoAarch64);
        }
        if !features.coherent {
            return Err(Unusable::NotCoherent);
        }
        let sizes = Sizes::of(&features);
        let mut s = Smmu::new(regs, features, sizes)?;
        s.stop_and_abort_all(sizes)?;
        s.program(sizes);
        s.start()?;
        Ok(s)
    }

    /// The driver state: a stream table and both queues of `sizes`, in frames of their own,
    /// not yet known to the SMMU.
    fn new(regs: MmioRegion, features: SmmuFeatures, sizes: Sizes) -> Result<Smmu, Unusable> {
        // SAFETY: `mem::alloc_phys` hands out identity-mapped RAM inside `mem::remaining()`
        // once and never takes it back; these frames are the SMMU's alone.
        let mut frames = unsafe { FrameAlloc::new(mem::alloc_phys, mem::remaining()) };
        let mut alloc = |bytes| Frames::alloc(&mut frames, bytes).ok_or(Unusable::NoMemory);
        let strtab = alloc(64 << sizes.sid_log2)?;
        let cmdq_mem = alloc(16 << sizes.cmdq_log2)?;
        let evtq_mem = alloc(32 << sizes.evtq_log2)?;
        Ok(Smmu {
            regs,
            features,
            owners: Vec::new(),
            frames,
            strtab,
            cmdq: CommandQueue::new(sizes.cmdq_log2),
            cmdq_mem,
            evtq: EventQueue::new(sizes.evtq_log2),
            evtq_mem,
        })
    }

    /// Turns the SMMU off with every incoming transaction aborted (`SMMU_GBPA.ABORT`):
    /// devices are stopped at the door while it is reprogrammed. Every stream table entry
    /// aborts.
    fn stop_and_abort_all(&mut self, sizes: Sizes) -> Result<(), Unusable> {
        self.set_cr0(0)?;
        self.w32(offset::GBPA, (GBPA::UPDATE::SET + GBPA::ABORT::SET).value);
        self.wait("SMMU_GBPA.UPDATE", |s| {
            LocalRegisterCopy::<u32, GBPA::Register>::new(s.r32(offset::GBPA)).read(GBPA::UPDATE)
                == 0
        })?;
        for sid in 0..1usize << sizes.sid_log2 {
            self.write_ste(sid, Ste::abort());
        }
        Ok(())
    }

    /// Points the SMMU at the stream table and the empty queues (interrupts off: hyp polls).
    fn program(&mut self, sizes: Sizes) {
        // Tables and queues are normal write-back, inner shareable, like hyp's own RAM.
        self.w32(
            offset::CR1,
            (CR1::QUEUE_SH.val(0b11)
                + CR1::QUEUE_OC.val(0b01)
                + CR1::QUEUE_IC.val(0b01)
                + CR1::TABLE_SH.val(0b11)
                + CR1::TABLE_OC.val(0b01)
                + CR1::TABLE_IC.val(0b01))
            .value,
        );
        self.w32(offset::CR2, CR2_RECINVSID_PTM);
        self.w64(offset::STRTAB_BASE, self.strtab.base.get());
        self.w32(
            offset::STRTAB_BASE_CFG,
            (STRTAB_BASE_CFG::FMT::Linear + STRTAB_BASE_CFG::LOG2SIZE.val(sizes.sid_log2)).value,
        );
        let queue_base = |mem: &Frames, log2: u32| {
            (QUEUE_BASE::ADDR.val(mem.base.get() >> 5) + QUEUE_BASE::LOG2SIZE.val(log2.into()))
                .value
        };
        self.w64(
            offset::CMDQ_BASE,
            queue_base(&self.cmdq_mem, sizes.cmdq_log2),
        );
        self.w32(offset::CMDQ_PROD, 0);
        self.w32(offset::CMDQ_CONS, 0);
        self.w64(
            offset::EVENTQ_BASE,
            queue_base(&self.evtq_mem, sizes.evtq_log2),
        );
        self.w32(offset::EVENTQ_PROD, 0);
        self.w32(offset::EVENTQ_CONS, 0);
        // Interrupts stay off: hyp polls the event queue and GERROR.
        self.w32(offset::IRQ_CTRL, 0);
    }

    /// Enables the command queue, invalidates everything the SMMU may have cached, then
    /// enables the event queue and translation.
    fn start(&mut self) -> Result<(), Unusable> {
        // The stream table and queue memory must be written before the SMMU may read it.
        barrier::dsb_ish();
        self.set_cr0(CR0::CMDQEN::SET.value)?;
        self.push(Command::CfgiAll)?;
        self.push(Command::TlbiNsnhAll)?;
        self.sync()?;
        self.set_cr0((CR0::CMDQEN::SET + CR0::EVENTQEN::SET).value)?;
        self.set_cr0((CR0::CMDQEN::SET + CR0::EVENTQEN::SET + CR0::SMMUEN::SET).value)
    }

    /// Writes StreamID `sid`'s entry. Word 0 (with `V`) last, so the SMMU never sees a valid
    /// entry with stale fields; the caller then issues `CMD_CFGI_STE` (IHI 0070 §3.21.3).
    fn write_ste(&self, sid: usize, ste: Ste) {
        for k in (0..8).rev() {
            self.strtab
                .word(&self.frames, sid * 8 + k)
                .store(ste.0[k], Ordering::Relaxed);
            if k == 1 {
                barrier::dsb_ishst();
            }
        }
    }

    /// Drains the event queue, reporting each record, and checks `SMMU_GERROR`.
    pub fn poll(&mut self) -> Result<usize, GlobalError> {
        let gerrorn = self.r32(offset::GERRORN);
        let active = self.r32(offset::GERROR) ^ gerrorn;
        // An event the SMMU could not write (QEMU raises it when the queue is full) loses
        // records, nothing else: a guest aiming its device's DMA at many bad addresses can
        // cause it, so it is reported and acknowledged, never fatal. Anything else is.
        let abt = GERROR::EVENTQ_ABT_ERR.mask << GERROR::EVENTQ_ABT_ERR.shift;
        if active & !abt != 0 {
            return Err(GlobalError(active));
        }
        if active & abt != 0 {
            warn!("hyp: smmu: the event queue was full: events were lost");
            self.w32(offset::GERRORN, gerrorn ^ abt);
        }
        if self.evtq.produced(self.r32(offset::EVENTQ_PROD)) {
            warn!("hyp: smmu: event queue overflowed: events were lost");
        }
        let mut n = 0;
        loop {
            let ev: Option<Event> = self.evtq.pop(&CmdMem(&self.frames, &self.evtq_mem));
            let Some(ev) = ev else { break };
            match self.owners.iter_mut().find(|o| o.sid == ev.sid) {
                Some(o) => {
                    o.events += 1;
                    if o.events <= EVENTS_SHOWN {
                        warn!("vm {}: {ev}", o.vm);
                    } else if o.events == EVENTS_SHOWN + 1 {
                        warn!("vm {}: more than {EVENTS_SHOWN} smmu events: the rest are only counted", o.vm);
                    }
                }
                None => warn!("hyp: {ev} (no VM owns that stream)"),
            }
            n += 1;
        }
        if n > 0 {
            self.w32(offset::EVENTQ_CONS, self.evtq.cons_reg());
        }
        Ok(n)
    }
}

impl Smmu {
    /// Points every stream of `devices` at the VM's stage 2 (`geometry`, `root`, `vmid`), after
    /// checking that the SMMU can walk it and that the VM's RAM and tables are within its
    /// output size. The STE is written with `V` last, then `CMD_CFGI_STE` and `CMD_SYNC`.
    fn assign(&mut self, a: &Assignment<'_>) -> Result<(), AssignError> {
        let pa_bits = self.features.oas_bits;
        self.features
            .check(a.geometry, pa_bits)
            .map_err(AssignError::Refused)?;
        let ram_end = a.ram.end().get();
        if ram_end > 1 << pa_bits || a.root.get() >= 1 << pa_bits {
            return Err(AssignError::Refused(Refusal::OutputSize {
                pa_bits: 64 - ram_end.leading_zeros(),
                oas_bits: pa_bits,
            }));
        }
        if !self.features.vmid16 && a.vmid > 0xff {
            return Err(AssignError::Vmid(a.vmid));
        }
        let streams = 1u32 << STREAM_LOG2.min(self.features.sid_bits);
        let ste = Ste::stage2(a.geometry, a.vmid, a.root, pa_bits, self.features.vmid16);
        for (bdf, _) in a.devices {
            let sid = bdf.rid();
            if sid >= streams {
                return Err(AssignError::Stream(sid));
            }
            if let Some(o) = self.owners.iter().find(|o| o.sid == sid) {
                return Err(AssignError::Taken(sid, o.vm.clone()));
            }
            self.write_ste(sid as usize, ste);
            self.push(Command::CfgiSte { sid })
                .map_err(AssignError::Smmu)?;
            self.owners.push(Owner {
                sid,
                vm: a.vm.into(),
                events: 0,
            });
        }
        self.sync().map_err(AssignError::Smmu)
    }

    /// Takes `vm`'s streams back: abort STEs, `CMD_CFGI_STE`, then invalidation of its VMID
    /// and `CMD_SYNC`, so no device DMA reaches its memory once this returns.
    fn release(&mut self, vm: &str, vmid: u16) -> Result<(), Unusable> {
        let mine: Vec<u32> = self
            .owners
            .iter()
            .filter(|o| o.vm == vm)
            .map(|o| o.sid)
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        for o in self
            .owners
            .iter()
            .filter(|o| o.vm == vm && o.events > EVENTS_SHOWN)
        {
            warn!(
                "vm {vm}: {} smmu events in all from {}",
                o.events,
                platform::pci::Bdf::from_rid(o.sid)
            );
        }
        for &sid in &mine {
            self.write_ste(sid as usize, Ste::abort());
            self.push(Command::CfgiSte { sid })?;
        }
        self.push(Command::TlbiS12Vmall { vmid })?;
        self.sync()?;
        self.owners.retain(|o| o.vm != vm);
        Ok(())
    }
}

/// What [`assign`] needs to point a VM's functions at its stage 2.
pub struct Assignment<'a> {
    /// The VM's name (for event lines).
    pub vm: &'a str,
    /// Its VMID.
    pub vmid: u16,
    /// Its stage-2 geometry (the plan's, with the encoding the SMMU reads).
    pub geometry: &'a Geometry,
    /// Its stage-2 root table.
    pub root: Pa,
    /// Its RAM, as host physical addresses.
    pub ram: AddrRange<Pa>,
    /// Its functions.
    pub devices: &'a [(Bdf, PciDevice)],
}

/// Why a VM's functions could not be given to it.
#[derive(Debug)]
pub enum AssignError {
    /// There is no usable SMMU.
    NoSmmu,
    /// The SMMU cannot walk the VM's stage 2.
    Refused(Refusal),
    /// The VM's VMID needs 16 bits and the SMMU has 8 (`SMMU_IDR0.VMID16` = 0).
    Vmid(u16),
    /// A StreamID beyond hyp's stream table.
    Stream(u32),
    /// The stream belongs to another VM.
    Taken(u32, String),
    /// The SMMU failed a command.
    Smmu(Unusable),
}

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssignError::NoSmmu => f.write_str("no usable SMMUv3 to confine its devices' DMA"),
            AssignError::Refused(r) => r.fmt(f),
            AssignError::Vmid(v) => write!(
                f,
                "VMID {v} needs 16 bits; the SMMU has 8 (SMMU_IDR0.VMID16 = 0)"
            ),
            AssignError::Stream(sid) => write!(f, "StreamID {sid:#x} is beyond hyp's stream table"),
            AssignError::Taken(sid, vm) => {
                write!(f, "StreamID {sid:#x} already belongs to vm {vm}")
            }
            AssignError::Smmu(e) => write!(f, "the SMMU failed: {e}"),
        }
    }
}

/// Gives `a.devices` to `a.vm` (see [`Smmu::assign`]).
pub fn assign(a: &Assignment<'_>) -> Result<(), AssignError> {
    SMMU.lock().as_mut().ok_or(AssignError::NoSmmu)?.assign(a)
}

/// Takes a stopped VM's streams back before anything reuses its memory; an SMMU that fails
/// here leaves devices able to reach that memory, so hyp stops.
pub fn release(vm: &str, vmid: u16) {
    if let Some(s) = SMMU.lock().as_mut() {
        if let Err(e) = s.release(vm, vmid) {
            el2::fatal!("vm {vm}: its devices could not be stopped: the SMMU failed: {e}")
        }
    }
}

/// The SMMU's features as hyp uses them (`hyp.hide-smmu-granules=` applied), for the plan.
pub fn features() -> Option<SmmuFeatures> {
    SMMU.lock().as_ref().map(|s| s.features)
}

/// Where a VM's stage-2 invalidations go besides the CPUs: the SMMU, when the VM owns
/// devices. An SMMU that fails an invalidation may keep translating through a mapping hyp has
/// just removed, so hyp stops.
#[derive(Debug)]
pub struct Sink {
    owns_devices: bool,
}

impl CommandSink for Sink {
    fn push(&mut self, cmd: Command) {
        if self.owns_devices {
            if let Some(Err(e)) = SMMU.lock().as_mut().map(|s| s.push(cmd)) {
                el2::fatal!("hyp: smmu: stage-2 invalidation failed: {e}")
            }
        }
    }

    fn sync(&mut self) {
        if self.owns_devices {
            if let Some(Err(e)) = SMMU.lock().as_mut().map(|s| s.sync()) {
                el2::fatal!("hyp: smmu: stage-2 invalidation failed: {e}")
            }
        }
    }
}

/// A VM's stage-2 maintenance: the CPU's, mirrored to the SMMU when it owns devices.
pub type VmMaintenance = SmmuMirror<HwMaintenance, Sink>;

/// The maintenance for a VM with `vmid`.
pub fn maintenance(vmid: u16, owns_devices: bool) -> VmMaintenance {
    SmmuMirror::new(HwMaintenance, Sink { owns_devices }, vmid)
}

/// The boot line: `hyp: smmu at <base>: stage 2, granules 4K 16K 64K, oas 44 bits, 16-bit
/// VMIDs, <n> streams aborted`.
struct Summary<'a>(&'a SmmuFeatures, Pa);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let feat = self.0;
        write!(f, "hyp: smmu at {:#x}: stage 2, granules", self.1)?;
        let mut any = false;
        for g in Granule::ALL {
            if feat.supports(g) {
                write!(f, " {}", g.label())?;
                any = true;
            }
        }
        if !any {
            f.write_str(" none")?;
        }
        write!(
            f,
            ", oas {} bits, {}-bit VMIDs",
            feat.oas_bits,
            if feat.vmid16 { 16 } else { 8 }
        )
    }
}

/// Takes over the SMMU the host device tree describes at `regs`, if any (`boot::early` mapped
/// it). `hide` is `hyp.hide-smmu-granules=` as a granule mask.
///
/// # Safety
/// `regs` must be the SMMUv3's register frame from the host device tree, mapped Device-nGnRE
/// in hyp's identity map, and driven by nothing else.
pub unsafe fn init(regs: AddrRange<Pa>, hide: u8) {
    let base = regs.start();
    let size = regs.len().min(offset::FRAME_SIZE);
    if size < offset::FRAME_SIZE {
        warn!(
            "hyp: smmu at {base:#x}: register frame {size:#x} bytes, expected {:#x}: not used",
            offset::FRAME_SIZE
        );
        return;
    }
    // SAFETY: the caller's contract.
    let mmio = unsafe { MmioRegion::new(base.get() as usize, size as usize) };
    let idr: [u32; 6] = core::array::from_fn(|i| mmio.read32(offset::IDR0 as usize + 4 * i));
    log::debug!("hyp: smmu at {base:#x}: SMMU_IDR0..5 = {idr:x?}");
    let mut features = SmmuFeatures::from_idr(idr);
    for g in Granule::ALL {
        if hide & g.bit() != 0 {
            features.hide(g);
        }
    }
    match Smmu::take_over(mmio, features) {
        Ok(s) => {
            info!(
                "{}, {} streams aborted until assigned",
                Summary(&s.features, base),
                1u32 << STREAM_LOG2.min(s.features.sid_bits)
            );
            *SMMU.lock() = Some(s);
        }
        Err(why) => {
            // Whatever failed, leave the SMMU off with every transaction aborted.
            mmio.write32(offset::CR0 as usize, 0);
            mmio.write32(
                offset::GBPA as usize,
                (GBPA::UPDATE::SET + GBPA::ABORT::SET).value,
            );
            warn!("hyp: smmu at {base:#x}: not used: {why}; devices behind it are aborted");
        }
    }
}

/// Drains the SMMU's events and checks for global errors (a no-op without an SMMU).
pub fn poll() -> Result<usize, GlobalError> {
    match SMMU.lock().as_mut() {
        Some(s) => s.poll(),
        None => Ok(0),
    }
}
