//! A vCPU's thread on its physical CPU: EL2 controls for the VM, the run loop, and exit
//! handling.
//!
//! vCPUs are pinned one to one, so a physical CPU only ever runs one vCPU: the guest's EL1
//! system registers, its timer registers and the GIC list registers stay live in the hardware
//! across exits and are never switched. Only what hyp's own code may clobber is saved at each
//! exit: GPRs, SP_EL0, ELR/SPSR, FP/SIMD (`el2::arch::guest`).

use super::ppi::{self, FORWARDED};
use super::{Region, Vm, VmState};
use crate::gic;
use aarch64_cpu::registers::{CNTHCTL_EL2, ICH_HCR_EL2, ICH_LR0_EL2, ICH_VTR_EL2, ID_AA64DFR0_EL1};
use core::sync::atomic::Ordering;
use el2::arch::guest::{self, ExitVector, GuestRegs};
use el2::arch::{barrier, sysreg, vsys};
use el2::exc::{self, SPSR_EL1H_MASKED};
use el2::trap::{Kind, Source, Vector};
use platform::esr::Esr;
use platform::virt::{MAINTENANCE_INTID, UART_INTID};
use stage2::{AddrRange, Attrs, Ipa, MapError, MapOpts};
use tock_registers::LocalRegisterCopy;
use vdev::exit::{
    DataAbort, Exit, ExitError, FaultKind, InstrAbort, MmioAccess, SysRegAccess, Wfx,
};
use vdev::mmio::MmioError;
use vdev::ppi::{Change, Forwarder};
use vdev::psci::PsciAction;
use vdev::sysregs::{Emulated, VcpuSysRegs};
use vdev::traps;
use vdev::vgic::{VcpuSet, MAX_LRS};
use vdev::{Mpidr, SysReg};

/// What a secondary CPU is asked to run.
pub struct Start {
    /// The VM.
    pub vm: &'static Vm,
    /// The vCPU index.
    pub vcpu: usize,
}

/// `cpus::dispatch` entry: `arg` is a leaked `Box<Start>`.
pub fn thread_entry(arg: u64) {
    // SAFETY: `run_system` passes a pointer from `Box::leak`, used once, here.
    let s = unsafe { &*(arg as *const Start) };
    thread(s.vm, s.vcpu);
}

/// CNTHCTL_EL2 (E2H = 0): EL1PCTEN and EL1PCEN: the guest reads the physical counter and uses
/// the EL1 physical timer of its own CPU without traps (pinned 1:1; hyp uses neither). The
/// virtual timer is the guest's; CNTVOFF_EL2 sets its counter. ECV (bit 12) stays 0: the guest's
/// physical counter is the host's, without `CNTPOFF_EL2` (README, "Timers and counters").
fn cnthctl_guest() -> u64 {
    (CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::SET).value
}

/// The list registers this CPU has (`ICH_VTR_EL2.ListRegs` + 1, at most 16).
fn list_registers() -> usize {
    let vtr = LocalRegisterCopy::<u64, ICH_VTR_EL2::Register>::new(vsys::ich_vtr_el2());
    (vtr.read(ICH_VTR_EL2::ListRegs) as usize + 1).min(MAX_LRS)
}

/// The `ICH_AP0R<n>_EL2`/`ICH_AP1R<n>_EL2` registers this CPU has: 1, 2 or 4 for 5, 6 or 7
/// bits of preemption (`ICH_VTR_EL2.PREbits` + 1).
fn active_priority_registers() -> usize {
    let vtr = LocalRegisterCopy::<u64, ICH_VTR_EL2::Register>::new(vsys::ich_vtr_el2());
    1 << (vtr.read(ICH_VTR_EL2::PREbits).clamp(4, 6) - 4)
}

/// ICH_HCR_EL2: the virtual CPU interface on (En), with the underflow maintenance interrupt
/// (UIE: at most one list register valid) when more is pending than the list registers hold.
fn ich_hcr(underflow: bool) -> u64 {
    let uie = if underflow {
        ICH_HCR_EL2::UIE::SET
    } else {
        ICH_HCR_EL2::UIE::CLEAR
    };
    (ICH_HCR_EL2::En::SET + uie).value
}

/// `ICH_LR<n>_EL2.EOI` (HW = 0): a maintenance interrupt when the guest deactivates the entry.
fn lr_eoi() -> u64 {
    ICH_LR0_EL2::EOI::SET.value
}

/// How a run of the vCPU ended.
enum Stop {
    /// The VM stopped.
    Vm,
    /// PSCI CPU_OFF: wait for a CPU_ON.
    CpuOff,
}

struct Vcpu {
    vm: &'static Vm,
    id: usize,
    regs: GuestRegs,
    /// The forwarded PPIs (`ppi::FORWARDED`): which lines are high in the vGIC, their
    /// physical PPIs disabled.
    ppis: Forwarder,
    n_lrs: usize,
    /// `ICH_AP0R<n>_EL2`/`ICH_AP1R<n>_EL2` registers of this CPU.
    n_aprs: usize,
    /// The CPU has FEAT_WFxT (`ID_AA64ISAR2_EL1.WFxT` = 2), so the guest sees WFIT and hyp
    /// can wait for a trapped WFIT's deadline with WFIT itself.
    wfxt: bool,
    lrs: [u64; MAX_LRS],
    /// The model holds this exit's list-register state (`sync` ran since the last entry).
    synced: bool,
    /// When the last exit happened (counter ticks), for `Stats::handling`.
    exit_at: Option<u64>,
    /// This vCPU's exits (drives `hyp.stress`).
    exits: u64,
    /// The EL1 registers hyp emulates for this vCPU (OS lock, ACTLR).
    sysregs: VcpuSysRegs,
    /// A set/way operation made the VM's memory coherent since the last other exit: the
    /// rest of that set/way loop needs no more maintenance.
    set_way_done: bool,
}

/// Runs vCPU `id` of `vm` on this CPU until the VM stops.
pub fn thread(vm: &'static Vm, id: usize) {
    if let Err(e) = gic::init_cpu() {
        vm.stop(VmState::Killed, id, Some(format_args!("vCPU {id}: {e}")));
    } else {
        let mut v = Vcpu {
            vm,
            id,
            regs: GuestRegs::default(),
            ppis: Forwarder::default(),
            n_lrs: list_registers(),
            n_aprs: active_priority_registers(),
            // ID_AA64ISAR2_EL1.WFxT, bits [3:0]: 0b0010 = WFET and WFIT.
            wfxt: vsys::id_reg(6, 2) & 0xf >= 2,
            lrs: [0; MAX_LRS],
            synced: true,
            exit_at: None,
            exits: 0,
            sysregs: VcpuSysRegs::default(),
            set_way_done: false,
        };
        v.setup_el2();
        let mut start = if id == 0 {
            Some((vm.entry, vm.dtb))
        } else {
            None
        };
        while let Some((entry, ctx)) = start.take().or_else(|| v.wait_for_cpu_on()) {
            v.reset(entry, ctx);
            v.exit_at = None;
            match v.run() {
                Stop::Vm => break,
                Stop::CpuOff => continue,
            }
        }
        // Leave nothing of the guest's interrupt state behind on this CPU.
        // SAFETY: this CPU runs no guest any more.
        unsafe {
            vsys::set_ich_hcr_el2(0);
            for i in 0..v.n_lrs {
                vsys::set_ich_lr(i, 0);
            }
        }
        for f in &FORWARDED {
            gic::set_ppi(f.line.physical, false);
        }
        if v.id == 0 {
            for &intid in &vm.intx {
                gic::set_spi(intid, false);
            }
        }
    }
    if vm.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        vm.finish();
    }
}

impl Vcpu {
    /// The EL2 controls for this VM on this CPU. A CPU runs one vCPU for good, so these are
    /// written once; VTCR_EL2/VTTBR_EL2 carry this VM's own stage-2 granule and VMID.
    fn setup_el2(&mut self) {
        let vm = self.vm;
        let mpidr = Mpidr::from_vcpu(self.id)
            .map(|m| m.vmpidr())
            .unwrap_or(1 << 31);
        // SAFETY: this CPU is dedicated to this vCPU; the stage-2 tables in VTTBR_EL2 map only
        // the VM's RAM; nothing runs at EL1 until `enter`.
        unsafe {
            vsys::set_vtcr_el2(vm.vtcr);
            sysreg::set_vttbr_el2(vm.vttbr);
            barrier::isb();
            // No stale EL1&0 translations of this VMID on this CPU.
            vsys::tlbi_vmalls12e1_local();
            vsys::set_vpidr_el2(vsys::midr_el1());
            vsys::set_vmpidr_el2(mpidr);
            vsys::set_cnthctl_el2(cnthctl_guest());
            vsys::set_cntvoff_el2(vm.cntvoff);
            // Trap controls (vdev::traps: each bit with its reason).
            let c = traps::guest_controls(&vm.host, vm.fwb, super::pmu::hpmn(&vm.host));
            vsys::set_mdcr_el2(c.mdcr);
            vsys::set_cptr_el2(c.cptr);
            if let Some(hcrx) = c.hcrx {
                vsys::set_hcrx_el2(hcrx);
            }
            if c.zero_fgt {
                vsys::set_hfgrtr_el2(0);
                vsys::set_hfgwtr_el2(0);
                vsys::set_hfgitr_el2(0);
                vsys::set_hdfgrtr_el2(0);
                vsys::set_hdfgwtr_el2(0);
            }
            vsys::set_ich_vmcr_el2(0);
            vsys::set_ich_hcr_el2(ich_hcr(false));
            for i in 0..self.n_lrs {
                vsys::set_ich_lr(i, 0);
            }
            sysreg::set_hcr_el2(c.hcr);
        }
        barrier::isb();
        for f in &FORWARDED {
            gic::set_ppi(f.line.physical, true);
        }
        // The VM's INTx lines come to its vCPU 0's CPU.
        if self.id == 0 {
            for &intid in &vm.intx {
                gic::route_spi(intid, el2::smp::current_cpu());
            }
        }
    }

    /// Architectural entry state (booting.rst; PSCI CPU_ON, DEN 0022 §6.4.3): EL1h, DAIF
    /// masked, MMU and caches off, x0 = `ctx`, pc = `entry`.
    fn reset(&mut self, entry: u64, ctx: u64) {
        // After a CPU_OFF the list registers still hold the last run's interrupts: fold them
        // into the model (whose SGIs and PPIs for this vCPU were reset at CPU_OFF, `psci`),
        // then reset the virtual CPU interface as a PE's at power-up: its active priorities
        // (ICH_AP0R/AP1R), its control (ICH_VMCR_EL2: priority mask 0, groups disabled) and
        // the list registers (rewritten from the model at entry).
        self.sync();
        // SAFETY: this CPU's virtual CPU interface, between two runs of its vCPU; only the
        // implemented active-priority registers (n_aprs) are written.
        unsafe {
            for n in 0..self.n_aprs {
                vsys::set_ich_apr(false, n, 0);
                vsys::set_ich_apr(true, n, 0);
            }
            vsys::set_ich_vmcr_el2(0);
            for i in 0..self.n_lrs {
                vsys::set_ich_lr(i, 0);
            }
        }
        self.lrs = [0; MAX_LRS];
        self.regs = GuestRegs::default();
        self.regs.x[0] = ctx;
        self.regs.elr = entry;
        self.regs.spsr = SPSR_EL1H_MASKED;
        // Every EL1 register the guest can reach starts from its reset value: the ones hyp
        // emulates in the model, the rest in the hardware (vsys::reset_el1_state).
        self.sysregs = VcpuSysRegs::default();
        // ID_AA64DFR0_EL1.BRPs/WRPs: the number of breakpoints/watchpoints minus one.
        let dfr0 = LocalRegisterCopy::<u64, ID_AA64DFR0_EL1::Register>::new(self.vm.host.dfr0);
        let brps = dfr0.read(ID_AA64DFR0_EL1::BRPs) as u32 + 1;
        let wrps = dfr0.read(ID_AA64DFR0_EL1::WRPs) as u32 + 1;
        // SAFETY: the guest's own EL1 state on its dedicated CPU.
        unsafe { vsys::reset_el1_state(brps, wrps) };
        super::pmu::reset(&self.vm.host);
        barrier::isb();
        // The timers were reset (disabled) above: every forwarded line is low again.
        let mut d = self.vm.dev.lock();
        for i in self.ppis.reset() {
            let f = &FORWARDED[i];
            let _ = d.vgic.set_level(f.line.virt, self.id, false);
            gic::set_ppi(f.line.physical, true);
        }
    }

    /// Waits (idle) until a PSCI CPU_ON names this vCPU; `None` when the VM stops first.
    fn wait_for_cpu_on(&mut self) -> Option<(u64, u64)> {
        self.sync();
        loop {
            if self.vm.stopped() {
                return None;
            }
            {
                let mut d = self.vm.dev.lock();
                if let Some(s) = d.starts.get_mut(self.id).and_then(Option::take) {
                    d.psci.started(self.id);
                    return Some(s);
                }
            }
            if super::output::pump_one() || super::fill_idle() {
                continue;
            }
            vsys::wfi();
            self.physical_irqs();
        }
    }

    /// Runs the guest until the VM stops or this vCPU powers off (PSCI CPU_OFF).
    fn run(&mut self) -> Stop {
        loop {
            if self.vm.stopped() {
                return Stop::Vm;
            }
            self.prepare_entry();
            // SAFETY: setup_el2 made this CPU's stage-2 and trap context the VM's.
            let vector = unsafe { guest::enter(&mut self.regs) };
            self.count_exit();
            if let Some(stop) = self.exit(vector) {
                return stop;
            }
        }
    }

    /// What each entry needs first: a line of console output, the forwarded lines' check,
    /// the list registers, and the end of the last exit's handling time.
    fn prepare_entry(&mut self) {
        // At most one line of queued console output (never waits for the console).
        super::output::pump_one();
        self.ppi_check();
        // The list registers are rewritten only after the model was brought up to date at
        // this exit (`sync`); an exit that touched no interrupt state (most PL011 accesses, ID
        // registers, PSCI) re-enters with the list registers as they are.
        if self.synced {
            self.flush();
        }
        if let Some(t) = self.exit_at.take() {
            self.vm
                .stats
                .handling
                .fetch_add(vsys::cntpct_el0().wrapping_sub(t), Ordering::Relaxed);
        }
    }

    /// Counts an exit; every N-th exit of vCPU 0 runs a `hyp.stress` step.
    fn count_exit(&mut self) {
        let vm = self.vm;
        self.exit_at = Some(vsys::cntpct_el0());
        self.synced = false;
        vm.stats.total.fetch_add(1, Ordering::Relaxed);
        self.exits += 1;
        if let (0, Some(st)) = (self.id, &vm.stress) {
            if self.exits.is_multiple_of(st.period) {
                self.stress_step(st);
            }
        }
    }

    /// Handles the exit taken through exception vector `vector`; `Some` when this vCPU stops
    /// running.
    fn exit(&mut self, vector: ExitVector) -> Option<Stop> {
        let vm = self.vm;
        let from = Vector::from_index(vector);
        if let (Source::Lower64, Kind::Sync | Kind::Irq | Kind::Fiq) = (from.source, from.kind) {
            if let Some(ill) = vdev::exit::aarch32_el0(self.regs.spsr) {
                if from.kind != Kind::Sync {
                    vm.stats.irq.fetch_add(1, Ordering::Relaxed);
                    self.sync();
                    self.physical_irqs();
                }
                self.refuse_aarch32_el0(ill);
                return None;
            }
        }
        match (from.source, from.kind) {
            (Source::Lower64, Kind::Sync) => return self.sync_exit(),
            (Source::Lower64, Kind::Irq | Kind::Fiq) => {
                vm.stats.irq.fetch_add(1, Ordering::Relaxed);
                self.sync();
                self.physical_irqs();
            }
            (Source::Lower64, Kind::SError) => {
                vm.stop(
                    VmState::Killed,
                    self.id,
                    Some(format_args!(
                        "SError from vCPU {} (ESR_EL2 {:#x}, pc {:#x})",
                        self.id, self.regs.esr, self.regs.elr
                    )),
                );
                return Some(Stop::Vm);
            }
            _ => {
                vm.stop(
                    VmState::Killed,
                    self.id,
                    Some(format_args!(
                        "vCPU {} left AArch64 (exception vector {vector}): AArch32 guests are not supported",
                        self.id
                    )),
                );
                return Some(Stop::Vm);
            }
        }
        None
    }

    /// Folds the list registers back into the vGIC model (once per exit, before anything
    /// reads or changes this vCPU's interrupt state; vdev's `sync_lrs` contract).
    fn sync(&mut self) {
        if self.synced {
            return;
        }
        for i in 0..self.n_lrs {
            self.lrs[i] = vsys::ich_lr(i);
        }
        self.vm
            .dev
            .lock()
            .vgic
            .sync_lrs(self.id, &self.lrs[..self.n_lrs]);
        self.synced = true;
    }

    /// Writes the list registers from the model for the next entry (after `sync`).
    fn flush(&mut self) {
        let underflow = {
            let mut d = self.vm.dev.lock();
            let f = d.vgic.flush_lrs(self.id, &mut self.lrs, self.n_lrs);
            f.underflow
        };
        // SAFETY: the list registers of this CPU's vCPU.
        unsafe {
            for i in 0..self.n_lrs {
                let mut lr = self.lrs[i];
                // A forwarded PPI is level-sensitive and its physical PPI is off while the
                // line is high: ask for a maintenance interrupt at its deactivation to look at
                // the device again (the guest reprograms a timer without exiting).
                let lr_reg = LocalRegisterCopy::<u64, ICH_LR0_EL2::Register>::new(lr);
                let vintid = lr_reg.read(ICH_LR0_EL2::vINTID);
                let forwarded = ppi::is_forwarded_virt(vintid)
                    || self.vm.intx.iter().any(|&i| u64::from(i) == vintid);
                if forwarded && lr_reg.read(ICH_LR0_EL2::State) != 0 {
                    lr |= lr_eoi();
                }
                vsys::set_ich_lr(i, lr);
            }
            vsys::set_ich_hcr_el2(ich_hcr(underflow));
        }
    }

    /// Physical interrupts pending at this CPU, acknowledged and handled (after `sync`).
    fn physical_irqs(&mut self) {
        while let Some(iar) = gic::ack() {
            let intid = gic::intid(iar);
            if let Some(i) = self.vm.intx.iter().position(|&x| x == intid) {
                // A device's INTx: off until the guest has dealt with it (intx_check), then
                // EOI. The line is level-sensitive: it fired, so it is asserted.
                let mut d = self.vm.dev.lock();
                if d.intx.fired(i, true) == Some(Change::Raise) {
                    gic::set_spi(intid, false);
                    let k = d.vgic.set_level(intid, self.id, true);
                    drop(d);
                    if let Ok(k) = k {
                        self.vm.kick(k, self.id);
                    }
                }
                gic::eoi(iar);
                continue;
            }
            if let Some(i) = ppi::by_physical(intid) {
                // A forwarded device's line: off until the guest has dealt with it
                // (ppi_check), then EOI.
                let f = &FORWARDED[i];
                if self.ppis.fired(i, (f.asserted)()) == Some(Change::Raise) {
                    gic::set_ppi(f.line.physical, false);
                    let k = self
                        .vm
                        .dev
                        .lock()
                        .vgic
                        .set_level(f.line.virt, self.id, true);
                    if let Ok(k) = k {
                        self.vm.kick(k, self.id);
                    }
                }
                gic::eoi(iar);
                continue;
            }
            match intid {
                MAINTENANCE_INTID => {
                    // The model already folded the list registers back (sync_lrs); clear the
                    // conditions so the level drops: EOI bits of deactivated entries, UIE.
                    let eisr = vsys::ich_eisr_el2();
                    // SAFETY: the list registers of this CPU's vCPU; only maintenance bits.
                    unsafe {
                        for i in 0..self.n_lrs {
                            if eisr & (1 << i) != 0 {
                                vsys::set_ich_lr(i, vsys::ich_lr(i) & !lr_eoi());
                            }
                        }
                        vsys::set_ich_hcr_el2(ich_hcr(false));
                    }
                }
                _ => host_irq(iar),
            }
            gic::eoi(iar);
        }
    }

    /// The forwarded lines that are high (`vdev::ppi`): while one is high in the vGIC its
    /// physical PPI is off; once the guest has masked, disabled or reprogrammed the device,
    /// the line drops and the PPI is back on.
    fn ppi_check(&mut self) {
        self.intx_check();
        if !self.ppis.any_high() {
            return;
        }
        for (i, f) in FORWARDED.iter().enumerate() {
            if !self.ppis.is_high(i) || (f.asserted)() {
                continue;
            }
            self.sync();
            if self.ppis.check(i, false) == Some(Change::Lower) {
                let _ = self
                    .vm
                    .dev
                    .lock()
                    .vgic
                    .set_level(f.line.virt, self.id, false);
                gic::set_ppi(f.line.physical, true);
            }
        }
    }

    /// The VM's INTx lines that are high: once the device no longer asserts its line (the
    /// physical SPI, disabled, is no longer pending: for a level-sensitive SPI that is its
    /// input, IHI 0069 §4.1.2), the virtual line drops and the SPI is enabled again. Any vCPU
    /// of the VM does it: the guest may have routed the interrupt to any of them.
    fn intx_check(&mut self) {
        let vm = self.vm;
        if vm.intx.is_empty() {
            return;
        }
        let mut d = vm.dev.lock();
        if !d.intx.any_high() {
            return;
        }
        for (i, &intid) in vm.intx.iter().enumerate() {
            if d.intx.is_high(i)
                && !gic::spi_pending(intid)
                && d.intx.check(i, false) == Some(Change::Lower)
            {
                let _ = d.vgic.set_level(intid, self.id, false);
                gic::set_spi(intid, true);
            }
        }
    }

    /// The A64 instruction at the guest's PC (`ELR_EL2`), read through its stage 1 and the
    /// VM's stage 2 (`AT S12E1R`/`S12E0R`); `None` when it does not translate to RAM. The
    /// stage-2 lock keeps `hyp.stress` from moving the page meanwhile.
    fn guest_instr(&self) -> Option<u32> {
        let vm = self.vm;
        let pt = vm.s2.lock();
        let par = vsys::at_s12(self.regs.elr, exc::at_el0(self.regs.spsr));
        if par & 1 != 0 {
            return None;
        }
        // PAR_EL1.PA, bits [51:12] (Arm ARM, PAR_EL1 with F = 0), and the page offset.
        let pa = (par & 0x000f_ffff_ffff_f000) | (self.regs.elr & 0xfff);
        let ram = vm.ram_pa.get()..vm.ram_pa.get() + vm.ram_size;
        let in_ram = ram.contains(&pa) || vm.stress.is_some();
        if !in_ram || pa & 3 != 0 {
            return None;
        }
        // SAFETY: `pa` is what the VM's stage 2 maps for its code (its RAM, or a frame
        // `hyp.stress` moved a page to, held by the stage-2 lock), identity-mapped at EL2;
        // an aligned 4-byte read.
        let v = unsafe { (pa as *const u32).read_volatile() };
        drop(pt);
        Some(v)
    }

    /// WFI: idle this CPU until an interrupt is deliverable to the vCPU or the VM stops; WFIT
    /// (`deadline` in the guest's virtual count) also until the deadline.
    fn idle(&mut self, deadline: Option<u64>) {
        // Idle time is not exit handling.
        if let Some(t) = self.exit_at.take() {
            self.vm
                .stats
                .handling
                .fetch_add(vsys::cntpct_el0().wrapping_sub(t), Ordering::Relaxed);
        }
        self.sync();
        loop {
            if self.vm.stopped() {
                return;
            }
            self.ppi_check();
            if self.vm.dev.lock().vgic.has_deliverable(self.id) {
                return;
            }
            // An idle CPU writes queued console output, a line at a time, until none is left.
            if super::output::pump_one() || super::fill_idle() {
                continue;
            }
            match deadline {
                None => vsys::wfi(),
                Some(d) => {
                    // The guest's virtual count: CNTPCT - CNTVOFF_EL2 (one offset per VM).
                    if !self.wfxt || vsys::cntpct_el0().wrapping_sub(self.vm.cntvoff) >= d {
                        return;
                    }
                    // At EL2 (E2H = 0) WFIT counts the same virtual count as the guest.
                    vsys::wfit(d);
                }
            }
            self.physical_irqs();
        }
    }

    fn advance(&mut self) {
        self.regs.elr = self.regs.elr.wrapping_add(Exit::instr_len(self.regs.esr));
    }

    /// A synchronous exception from the guest (a trapped instruction or an abort), decoded and
    /// handled; `Some` when this vCPU stops running.
    fn sync_exit(&mut self) -> Option<Stop> {
        let r = &self.regs;
        let exit = Exit::decode(r.esr, r.far, r.hpfar);
        // Only consecutive set/way operations (one guest loop) share one maintenance.
        if !matches!(exit, Exit::SysReg(a) if vdev::sysregs::is_set_way(a.reg)) {
            self.set_way_done = false;
        }
        match exit {
            Exit::Hvc { imm } => return self.smccc(imm, false),
            Exit::Smc { imm } => return self.smccc(imm, true),
            Exit::SysReg(a) => self.sysreg_exit(a),
            Exit::Wfx(w) => self.wfx(w),
            Exit::DataAbort(da) => self.data_abort(da),
            Exit::InstrAbort(ia) => self.instr_abort(ia),
            Exit::Other { ec, iss } => {
                let vm = self.vm;
                vm.warn_limited(format_args!(
                    "vm {}: vCPU {}: exception class {ec:#x} (ISS {iss:#x}) at pc {:#x} is not handled: UNDEF injected",
                    vm.name, self.id, self.regs.elr
                ));
                self.inject_undef();
            }
        }
        None
    }

    /// HVC, or SMC (`smc`: `ELR_EL2` still points at it), with immediate `imm`.
    fn smccc(&mut self, imm: u16, smc: bool) -> Option<Stop> {
        self.vm.stats.hvc.fetch_add(1, Ordering::Relaxed);
        if smc {
            self.advance();
        }
        // SMCCC calls use immediate 0 (SMCCC, DEN 0028: "the immediate value ... is 0"); other
        // immediates are not SMCCC calls. hyp answers them with NOT_SUPPORTED in x0 and does
        // nothing else, as KVM does.
        if imm != 0 {
            self.regs.x[0] = vdev::psci::ret::NOT_SUPPORTED as u64;
            return None;
        }
        self.psci()
    }

    /// A trapped MSR/MRS: SGI generation, the ID registers' view, the registers emulated per
    /// vCPU; anything else gets an UNDEF.
    fn sysreg_exit(&mut self, a: SysRegAccess) {
        let vm = self.vm;
        vm.stats.sysreg.fetch_add(1, Ordering::Relaxed);
        let op = if a.read { "MRS" } else { "MSR" };
        log::trace!(
            "vm {}: vCPU {}: {op} {} x{} at pc {:#x}",
            vm.name,
            self.id,
            a.reg,
            a.rt,
            self.regs.elr
        );
        if a.reg == SysReg::ICC_SGI1R_EL1 && !a.read {
            self.sync();
            let v = self.regs.get(a.rt);
            let k = vm.dev.lock().vgic.sgi(self.id, v);
            vm.kick(k, self.id);
            self.advance();
        } else if a.reg == SysReg::ICC_SGI0R_EL1 || a.reg == SysReg::ICC_ASGI1R_EL1 {
            // Group 0 / the other security state: the VM has neither (GICD_CTLR.DS).
            self.advance();
        } else if let (true, Some(v)) = (a.read, vm.idregs.read(a.reg)) {
            self.regs.set(a.rt, v);
            self.advance();
        } else if !self.emulate_sysreg(a.reg, a.read, a.rt) {
            vm.warn_limited(format_args!(
                "vm {}: vCPU {}: {op} {} at pc {:#x} is not emulated: UNDEF injected",
                vm.name, self.id, a.reg, self.regs.elr
            ));
            self.inject_undef();
        }
    }

    /// WFI/WFE/WFIT/WFET: WFI and WFIT idle the CPU, WFE and WFET return at once.
    fn wfx(&mut self, w: Wfx) {
        self.vm.stats.wfx.fetch_add(1, Ordering::Relaxed);
        let w = match w {
            Wfx::Wfi if self.wfxt => Wfx::refine_wfi(self.guest_instr().unwrap_or(0)),
            w => w,
        };
        self.advance();
        match w {
            Wfx::Wfi => self.idle(None),
            // The register holds the deadline in the guest's virtual count (Arm ARM, "WFIT":
            // the wait ends when CNTVCT_EL0 >= Xt).
            Wfx::Wfit { reg } => self.idle(Some(self.regs.get(reg))),
            // WFE/WFET may complete at any time: return at once.
            Wfx::Wfe | Wfx::Wfet { .. } => {}
        }
    }

    /// A data abort: a stage-2 fault on RAM hyp resolves, else an MMIO access to emulate; an
    /// access hyp cannot emulate gets an external abort.
    fn data_abort(&mut self, da: DataAbort) {
        if let Some(ipa) = da.ipa {
            if self.stage2_fault(ipa, da.fault) {
                return;
            }
        }
        let emulated = da
            .mmio()
            .map_err(MmioFault::Undecodable)
            .and_then(|acc| self.mmio(acc));
        match emulated {
            Ok(()) => self.advance(),
            Err(e) => {
                let vm = self.vm;
                vm.warn_limited(format_args!(
                    "vm {}: vCPU {}: {e} at pc {:#x}: external abort injected",
                    vm.name, self.id, self.regs.elr
                ));
                self.inject_abort(true);
            }
        }
    }

    /// An instruction abort: a stage-2 fault on RAM hyp resolves, else a fetch from outside
    /// RAM, which gets an external abort.
    fn instr_abort(&mut self, ia: InstrAbort) {
        if let Some(ipa) = ia.ipa {
            if self.stage2_fault(ipa, ia.fault) {
                return;
            }
        }
        let vm = self.vm;
        vm.warn_limited(format_args!(
            "vm {}: vCPU {}: instruction fetch from IPA {:#x?} (not RAM) at pc {:#x}: external abort injected",
            vm.name, self.id, ia.ipa.map(Ipa::get), self.regs.elr
        ));
        self.inject_abort(false);
    }

    /// A trapped access hyp emulates per vCPU (`vdev::sysregs`); `false` when it is not
    /// emulated (the caller injects an UNDEF).
    fn emulate_sysreg(&mut self, reg: vdev::SysReg, read: bool, rt: u8) -> bool {
        match self.sysregs.access(reg, read, self.regs.get(rt)) {
            Emulated::Read(v) => {
                self.regs.set(rt, v);
                self.advance();
            }
            Emulated::Done => self.advance(),
            Emulated::SetWay => {
                self.set_way();
                self.advance();
            }
            Emulated::Undefined => return false,
        }
        true
    }

    /// A data cache maintenance instruction by set/way (`HCR_EL2.TSW`). Set/way operations act
    /// on the physical caches, shared with hyp and other VMs, and a guest issues them in loops
    /// over every set and way to make memory coherent before it turns its caches or MMU on or
    /// off. hyp does what that loop means for the VM's own memory, once per loop, as KVM does
    /// (`kvm_set_way_flush`): clean and invalidate the VM's RAM to the point of coherency by
    /// address. With FEAT_S2FWB stage 2 forces write-back for all guest RAM, so the guest's
    /// view is coherent whatever its caches do and there is nothing to do.
    fn set_way(&mut self) {
        let vm = self.vm;
        vm.stats.set_way.fetch_add(1, Ordering::Relaxed);
        if self.set_way_done || vm.fwb {
            return;
        }
        vm.stats.set_way_flushes.fetch_add(1, Ordering::Relaxed);
        el2::arch::cache::clean_invalidate_to_poc(vm.ram_pa.get(), vm.ram_size);
        self.set_way_done = true;
    }

    /// One `hyp.stress` step (vCPU 0, every N-th exit); a failure stops the VM.
    fn stress_step(&mut self, st: &super::stress::Stress) {
        let vm = self.vm;
        let r = {
            let mut pt = vm.s2.lock();
            // `create` made the VM's RAM from its layout's range: this never fails.
            AddrRange::from_start_len(vm.ram_ipa, vm.ram_size)
                .map_err(|e| alloc::format!("stress: guest RAM: {e}"))
                .and_then(|ram| st.step(&mut pt, ram, self.exits))
        };
        if let Err(e) = r {
            vm.stop(VmState::Killed, self.id, Some(format_args!("{e}")));
        }
    }

    /// A stage-2 fault on RAM that hyp resolves: a translation fault with lazy mapping or under
    /// `hyp.stress` ([`Vcpu::map_fault`]), or a permission fault under `hyp.stress`
    /// ([`Vcpu::restore_write`]). `false`: not such a fault.
    fn stage2_fault(&mut self, ipa: Ipa, fault: FaultKind) -> bool {
        let vm = self.vm;
        let Region::Ram(off) = vm.region(ipa) else {
            return false;
        };
        match (fault, vm.stress.as_ref()) {
            (FaultKind::Translation { .. }, _) => self.map_fault(ipa, off),
            (FaultKind::Permission { .. }, Some(st)) => self.restore_write(st, ipa, off),
            _ => return false,
        }
        true
    }

    /// A permission fault on RAM offset `off` under `hyp.stress`: the page was write-protected
    /// by a stress step (only hyp write-protects guest RAM). Write permission is restored and
    /// the page counted dirty; a failure stops the VM.
    fn restore_write(&mut self, st: &super::stress::Stress, ipa: Ipa, off: u64) {
        let vm = self.vm;
        let mut pt = vm.s2.lock();
        let page = pt.geometry().page_size();
        let attrs = match pt.translate(ipa) {
            // Unmapped meanwhile (a stress step): retry, which faults as translation.
            None => return,
            // Another vCPU restored it meanwhile.
            Some((_, attrs, _)) if attrs.write => return,
            Some((_, attrs, _)) => attrs,
        };
        // Restore what the stress took.
        let write = Attrs {
            write: true,
            ..attrs
        };
        let r = AddrRange::from_start_len(ipa.align_down(page), page)
            .map_err(MapError::from)
            .and_then(|page| pt.protect(page, write));
        if let Err(e) = r {
            drop(pt);
            vm.stop(
                VmState::Killed,
                self.id,
                Some(format_args!(
                    "stage-2 write permission for IPA {ipa:#x} failed: {e}"
                )),
            );
            return;
        }
        st.count_dirty(off / page);
        st.pin(self.id, self.regs.elr, off / page);
    }

    /// A translation fault on RAM offset `off`: makes the RAM ready (`Vm::prepare`), then maps
    /// the lazy chunk around it or, under `hyp.stress`, its page (at its migrated frame if it
    /// moved); a failure stops the VM.
    fn map_fault(&mut self, ipa: Ipa, off: u64) {
        let vm = self.vm;
        let stress = vm.stress.as_ref();
        // RAM is filled (zeros and the VM's images) before it is first mapped; an eager VM's
        // is mapped by the fill (`Vm::prepare`).
        let fresh = vm.prepare(off);
        let mut pt = vm.s2.lock();
        // Under stress, one page of the VM's granule (migrated pages are recorded per page);
        // else the lazy chunk.
        let chunk = match (stress, vm.lazy_chunk) {
            (Some(_), _) => pt.geometry().page_size(),
            (None, Some(c)) => c,
            (None, None) => {
                if fresh {
                    vm.stats.s2fault.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        let start = off & !(chunk - 1);
        let end = (start + chunk).min(vm.ram_size);
        let pa = match stress {
            Some(st) => st.frame_of(start, chunk, vm.ram_pa),
            None => vm.ram_pa + start,
        };
        // Another vCPU may have mapped it meanwhile (this vCPU needs it all the same).
        if pt.translate(ipa).is_some() {
            if let Some(st) = stress {
                st.pin(self.id, self.regs.elr, start / chunk);
            }
            return;
        }
        let opts = MapOpts {
            skip_cmo: true,
            ..MapOpts::default()
        };
        let mapped = AddrRange::new(vm.ram_ipa + start, vm.ram_ipa + end)
            .map_err(MapError::from)
            .and_then(|ipas| pt.map(ipas, pa, Attrs::ram(), opts));
        if let Err(e) = mapped {
            let budget = pt.allocator().live_bytes();
            drop(pt);
            let why = match e {
                MapError::NoMemory { .. } => format_args!(
                    "stage-2 table budget exhausted ({budget} bytes in use) mapping IPA {ipa:#x}; raise stage2.table_memory"
                ),
                _ => format_args!("stage-2 map of IPA {ipa:#x} failed: {e}"),
            };
            vm.stop(VmState::Killed, self.id, Some(why));
            return;
        }
        vm.stats.s2fault.fetch_add(1, Ordering::Relaxed);
        if let Some(st) = stress {
            st.count_refault(start / chunk);
            st.pin(self.id, self.regs.elr, start / chunk);
        }
    }

    /// Emulates MMIO access `acc` at the device its IPA falls in, then kicks the vCPUs whose
    /// interrupts it changed.
    fn mmio(&mut self, acc: MmioAccess) -> Result<(), MmioFault> {
        let value = acc.store_value(self.regs.get(acc.reg));
        let kicks = match self.vm.region(acc.ipa) {
            Region::Gicd(off) => self.gic_access(acc, value, true, off)?,
            Region::Gicr(off) => self.gic_access(acc, value, false, off)?,
            Region::Uart(off) => self.uart_access(acc, value, off)?,
            Region::Ecam(off) => self.ecam_access(acc, value, off)?,
            Region::Ram(_) | Region::None => return Err(MmioFault::Outside(acc.ipa)),
        };
        self.vm.kick(kicks, self.id);
        Ok(())
    }

    /// An access to the vGIC's distributor (`dist`) or redistributors at offset `off`
    /// (`value`: what a store writes).
    fn gic_access(
        &mut self,
        acc: MmioAccess,
        value: u64,
        dist: bool,
        off: u64,
    ) -> Result<VcpuSet, MmioError> {
        let vm = self.vm;
        vm.stats.gic.fetch_add(1, Ordering::Relaxed);
        self.sync();
        // The guest may have dealt with a device since the last exit: the registers it reads
        // (GICR_ISPENDR0) show the lines as they are now.
        self.ppi_check();
        let mut d = vm.dev.lock();
        if acc.write {
            return if dist {
                d.vgic.dist_write(off, acc.size, value)
            } else {
                d.vgic.redist_write(off, acc.size, value)
            };
        }
        let v = if dist {
            d.vgic.dist_read(off, acc.size)?
        } else {
            d.vgic.redist_read(off, acc.size)?
        };
        self.regs.set(acc.reg, acc.load_value(v));
        Ok(VcpuSet::EMPTY)
    }

    /// An access to the PL011 at offset `off` (`value`: what a store writes); the vGIC is
    /// only touched when the UART's interrupt line changed.
    fn uart_access(&mut self, acc: MmioAccess, value: u64, off: u64) -> Result<VcpuSet, MmioError> {
        let vm = self.vm;
        vm.stats.uart.fetch_add(1, Ordering::Relaxed);
        let (before, after) = {
            let mut d = vm.dev.lock();
            let d = &mut *d;
            let before = d.uart.irq_level();
            if acc.write {
                d.uart.write(off, acc.size, value, &mut |line: &str| {
                    super::output::queue(vm, line)
                })?;
            } else {
                let v = d.uart.read(off, acc.size)?;
                self.regs.set(acc.reg, acc.load_value(v));
            }
            // Console input waiting for room in the receive FIFO.
            if !d.rx_backlog.is_empty() {
                let mut n = 0;
                while n < d.rx_backlog.len() && d.uart.push_rx(d.rx_backlog[n]) {
                    n += 1;
                }
                d.rx_backlog.drain(..n);
            }
            (before, d.uart.irq_level())
        };
        // The fast path: most accesses (FR polls, DR writes) leave the interrupt line as it
        // was, and then the vGIC is not touched at all.
        if before == after {
            return Ok(VcpuSet::EMPTY);
        }
        self.sync();
        Ok(vm
            .dev
            .lock()
            .vgic
            .set_level(UART_INTID, 0, after)
            .unwrap_or(VcpuSet::EMPTY))
    }

    /// An access to the PCI configuration space of a VM that owns functions, at offset `off`
    /// (`value`: what a store writes).
    fn ecam_access(&mut self, acc: MmioAccess, value: u64, off: u64) -> Result<VcpuSet, MmioFault> {
        let vm = self.vm;
        let (Some(view), Some(mut ecam)) = (vm.pci.as_ref(), crate::pci::host()) else {
            return Err(MmioFault::Outside(acc.ipa));
        };
        let mut view = view.lock();
        if acc.write {
            log::trace!(
                "vm {}: ecam write {off:#x} {:?} {value:#x}",
                vm.name,
                acc.size
            );
            let effect = view.write(&mut ecam, off, acc.size, value)?;
            if effect != vdev::pci::Effect::None {
                log::debug!("vm {}: pci: {effect:x?}", vm.name);
            }
        } else {
            let v = view.read(&mut ecam, off, acc.size)?;
            self.regs.set(acc.reg, acc.load_value(v));
        }
        Ok(VcpuSet::EMPTY)
    }

    fn psci(&mut self) -> Option<Stop> {
        let vm = self.vm;
        let x = [
            self.regs.x[0],
            self.regs.x[1],
            self.regs.x[2],
            self.regs.x[3],
        ];
        let action = {
            let mut d = vm.dev.lock();
            let action = d.psci.call(self.id, x);
            if action == PsciAction::CpuOff {
                // The vCPU's SGIs and PPIs return to their reset state as it powers down, under
                // the same lock that marked it off: whatever another vCPU sends it from now
                // on (an SGI after its CPU_ON) waits for it, as in a redistributor.
                if !self.synced {
                    for i in 0..self.n_lrs {
                        self.lrs[i] = vsys::ich_lr(i);
                    }
                    d.vgic.sync_lrs(self.id, &self.lrs[..self.n_lrs]);
                    self.synced = true;
                }
                d.vgic.reset_vcpu(self.id);
            }
            action
        };
        match action {
            PsciAction::Return(v) => self.regs.x[0] = v,
            PsciAction::CpuOn {
                vcpu,
                entry,
                context_id,
            } => {
                self.regs.x[0] = 0;
                if let Some(slot) = vm.dev.lock().starts.get_mut(vcpu) {
                    *slot = Some((entry, context_id));
                }
                if let Some(&p) = vm.pcpus.get(vcpu) {
                    gic::kick(p);
                }
            }
            PsciAction::CpuOff => return Some(Stop::CpuOff),
            PsciAction::SystemOff => {
                vm.stop(VmState::Off, self.id, None);
                return Some(Stop::Vm);
            }
            PsciAction::SystemReset => {
                vm.stop(VmState::Reset, self.id, None);
                return Some(Stop::Vm);
            }
            PsciAction::Idle => {
                self.regs.x[0] = 0;
                self.idle(None);
            }
        }
        None
    }

    /// Takes a synchronous exception to the guest's EL1 as the CPU would (Arm ARM D1.3.2):
    /// ELR_EL1/SPSR_EL1 from the interrupted context, ESR_EL1 (and FAR_EL1), then EL1h with
    /// DAIF masked at `VBAR_EL1` + the vector offset for where it came from (`el2::exc`).
    fn inject_sync(&mut self, esr: u64, far: Option<u64>) {
        self.vm.stats.injected.fetch_add(1, Ordering::Relaxed);
        let spsr = self.regs.spsr;
        // SAFETY: the guest's own EL1 registers on its dedicated CPU.
        unsafe {
            vsys::set_elr_el1(self.regs.elr);
            vsys::set_spsr_el1(spsr);
            vsys::set_esr_el1(esr);
            if let Some(f) = far {
                vsys::set_far_el1(f);
            }
        }
        self.regs.elr = vsys::vbar_el1().wrapping_add(exc::sync_vector_offset(spsr));
        self.regs.spsr = exc::exception_pstate(spsr, vsys::sctlr_el1());
    }

    /// The vCPU was found in AArch32 EL0, which its ID registers hide: it gets the Illegal
    /// Execution state exception an illegal exception return makes (`vdev::exit::aarch32_el0`),
    /// at EL1, from the AArch32 PC. The trapped instruction or interrupt exit is not emulated.
    fn refuse_aarch32_el0(&mut self, ill: vdev::IllegalReturn) {
        self.vm.warn_limited(format_args!(
            "vm {}: vCPU {}: running AArch32 EL0 (hidden: ID_AA64PFR0_EL1.EL0 = 1) at pc {:#x}: illegal exception return injected",
            self.vm.name, self.id, self.regs.elr
        ));
        self.regs.spsr = ill.spsr;
        self.inject_sync(ill.esr, None);
    }

    /// An Undefined Instruction exception.
    fn inject_undef(&mut self) {
        self.inject_sync(exc::ESR_UNDEF, None);
    }

    /// A synchronous external abort on the faulting address.
    fn inject_abort(&mut self, data: bool) {
        let write = Esr::new(self.regs.esr).write().unwrap_or(false);
        let esr = exc::external_abort_esr(data, exc::at_el0(self.regs.spsr), write);
        let far = self.regs.far;
        self.inject_sync(esr, Some(far));
    }
}

/// Why a data abort could not be emulated as an MMIO access.
enum MmioFault {
    /// The abort does not describe an access hyp can emulate.
    Undecodable(ExitError),
    /// The device refused the access.
    Device(MmioError),
    /// The IPA is neither RAM nor an emulated device.
    Outside(Ipa),
}

impl From<MmioError> for MmioFault {
    fn from(e: MmioError) -> Self {
        MmioFault::Device(e)
    }
}

impl core::fmt::Display for MmioFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmioFault::Undecodable(e) => write!(f, "{e}"),
            MmioFault::Device(e) => write!(f, "{e}"),
            MmioFault::Outside(ipa) => write!(
                f,
                "access to IPA {ipa:#x}, which is neither RAM nor an emulated device"
            ),
        }
    }
}

/// A physical interrupt that is not a vCPU's own: the host UART's input goes to the first VM.
pub fn host_irq(iar: u64) {
    if Some(gic::intid(iar)) == gic::uart_spi() {
        let Some(vm) = super::vms().first() else {
            gic::drain_host_uart(|_| {});
            return;
        };
        let mut d = vm.dev.lock();
        let d = &mut *d;
        gic::drain_host_uart(|b| {
            if (!d.rx_backlog.is_empty() || !d.uart.push_rx(b)) && d.rx_backlog.len() < 4096 {
                d.rx_backlog.push(b);
            }
        });
        let level = d.uart.irq_level();
        if let Ok(k) = d.vgic.set_level(UART_INTID, 0, level) {
            vm.kick(k, usize::MAX);
        }
    }
}
