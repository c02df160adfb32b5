//! The boot CPU's bring-up, in order: device tree → console → command line → CPU features →
//! EL2 granule → memory → EL2 MMU → Spectre mitigations → secondary CPUs.

use crate::{mem, mmu, HEAP};
use el2::arch::{self, sysreg, ImageLayout};
use el2::cmdline::{Cmdline, LogLevel};
use el2::dt::{dtb_total_size, HalfOpen, Platform, MAX_DTB_SIZE, MAX_RESERVED_RANGES};
use el2::granule::choose_el2_granule;
use el2::memmap::{heap_size, largest_free};
use el2::spectre::{Decision, ExitOverride};
use el2::{console, fatal, psci, smp};
use log::{debug, info, warn};
use stage2::{AddrRange, CpuFeatures, Granule, IdRegs, Pa};
use vdev::psci::Workarounds;

/// The Image header's `text_offset` (hyp/el2/src/arch/entry.S): the loader puts hyp at a 2 MiB
/// aligned RAM base plus this, so the bytes below the image up to that base are hyp's too.
const IMAGE_TEXT_OFFSET: u64 = 0x20_0000;

/// What boot found and decided; handed to the rest of hyp.
pub struct Boot {
    /// The host device tree, parsed.
    pub platform: Platform<'static>,
    /// Where the device tree blob is (left in place, never handed out).
    pub dtb: AddrRange<Pa>,
    /// The boot bundle the loader put in RAM as the initrd (QEMU: `-initrd`), left in place
    /// and never handed out; `None` when there is none.
    pub bundle: Option<&'static [u8]>,
    /// hyp's command line.
    pub cmdline: Cmdline,
    /// The CPU features every granule decision uses (ID registers + `hyp.hide-granules=`),
    /// built once here.
    pub cpu: CpuFeatures,
    /// hyp's own EL2 stage-1 granule.
    pub el2_granule: Granule,
    /// What every VM's guests are told by `SMCCC_ARCH_FEATURES` for the Spectre workarounds
    /// (`el2::spectre`).
    pub workarounds: Workarounds,
}

/// The device tree at `dtb` as a slice, or `None` if there is no valid header there.
pub(crate) fn dtb_slice(dtb: usize) -> Option<&'static [u8]> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the arm64 boot protocol puts a device tree at x0 (8-byte aligned, in RAM, at
    // most MAX_DTB_SIZE bytes); we read its 40-byte header, which every blob has, then at most
    // `totalsize` bytes once the magic and size are checked. Nothing writes the blob: its range
    // is excluded from every allocator.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 40) };
    let size = dtb_total_size(header).ok()?;
    debug_assert!(size <= MAX_DTB_SIZE);
    // SAFETY: as above, `size` bytes checked against the limit.
    Some(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) })
}

/// Device tree and console. Without a console nothing can be reported, so failures before
/// it is up power off silently; a tree hyp refuses (`Platform::parse`) is reported on its
/// console when one can still be found in it.
fn platform_and_console(dtb: usize) -> Platform<'static> {
    let Some(blob) = dtb_slice(dtb) else {
        psci::system_off();
    };
    let platform = match Platform::parse(blob) {
        Ok(p) => p,
        Err(e) => {
            let (uart, method) = Platform::find_console(blob);
            if let Some(m) = method {
                psci::set_method(m);
            }
            let Some(uart) = uart else {
                psci::system_off();
            };
            // SAFETY: as below: the device tree names this PL011 as the console.
            unsafe { console::init(uart.regs.start().get() as usize) };
            console::init_logger(log::LevelFilter::Info);
            el2::fatal!("host device tree refused: {e}")
        }
    };
    if let Some(m) = platform.psci {
        psci::set_method(m);
    }
    let Some(uart) = platform.uart else {
        psci::system_off();
    };
    // SAFETY: the device tree names this PL011 as the console; hyp is its only driver and
    // runs identity mapped (or with the MMU off).
    unsafe { console::init(uart.regs.start().get() as usize) };
    platform
}

fn level(l: LogLevel) -> log::LevelFilter {
    match l {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    }
}

/// Everything up to a running MMU on the boot CPU.
pub fn early(dtb: usize) -> Boot {
    smp::init_boot_cpu();
    let platform = platform_and_console(dtb);
    let cmdline = cmdline_and_logger(&platform);
    debug!(
        "hyp: at EL{} on mpidr {:#x}, device tree at {dtb:#x} ({} bytes), bootargs \"{}\"",
        sysreg::current_el(),
        sysreg::mpidr_affinity(),
        platform.dtb_size,
        platform.bootargs
    );
    if platform.psci.is_none() {
        el2::fatal!("{}", el2::dt::DtError::NoPsci);
    }
    let cpu = cpu_features(&cmdline);
    let granule = el2_granule(&cpu, &cmdline);

    // Memory: everything but the boot stub + image and the device tree.
    let layout = arch::image_layout();
    check_stack_area(&layout);
    let dtb_range = AddrRange::from_start_len(Pa::new(dtb as u64), platform.dtb_size as u64)
        .expect("invariant: the device tree blob lies in memory");
    let bundle = boot_bundle(&platform);
    let free = free_ram(&platform, &layout, dtb_range, bundle);
    let heap = init_heap(free, &layout);

    let mmu = match mmu::enable(&platform, &cpu, granule, heap) {
        Ok(m) => m,
        Err(e) => el2::fatal!("cannot build hyp's EL2 page tables: {e}"),
    };
    info!(
        "hyp: el2 granule {}, va {} bits, {} levels",
        granule.label(),
        mmu.va_bits,
        mmu.levels
    );
    let workarounds = spectre(&cmdline);
    // SAFETY: the range is RAM (checked by `boot_bundle`) that no allocator hands out
    // (reserved by `free_ram`), identity mapped by mmu::enable as RAM; nothing writes it: hyp
    // only reads the bundle.
    let bundle = bundle.map(|b| unsafe {
        core::slice::from_raw_parts(b.start().get() as *const u8, b.len() as usize)
    });

    Boot {
        platform,
        dtb: dtb_range,
        bundle,
        cmdline,
        cpu,
        el2_granule: granule,
        workarounds,
    }
}

/// hyp's command line from `/chosen` `bootargs`, and the logger at its `hyp.log=` level (a
/// command line hyp refuses is reported at the default level).
fn cmdline_and_logger(platform: &Platform<'_>) -> Cmdline {
    let cmdline = match Cmdline::parse(platform.bootargs) {
        Ok(c) => c,
        Err(e) => {
            console::init_logger(log::LevelFilter::Info);
            el2::fatal!("{e}")
        }
    };
    console::init_logger(level(cmdline.log_level));
    cmdline
}

/// The CPU features: one value, built once, with the `hyp.hide-granules=` mask applied.
fn cpu_features(cmdline: &Cmdline) -> CpuFeatures {
    let cpu = CpuFeatures::from_id_regs(IdRegs {
        mmfr0: sysreg::id_aa64mmfr0_el1(),
        mmfr1: sysreg::id_aa64mmfr1_el1(),
        mmfr2: sysreg::id_aa64mmfr2_el1(),
        ctr: sysreg::ctr_el0(),
        dfr0: arch::vsys::id_reg(5, 0),
    })
    .hide(cmdline.hide_granules);
    debug!(
        "hyp: ID_AA64MMFR0_EL1 {:#018x}, PA {} bits",
        cpu.mmfr0(),
        cpu.pa_bits()
    );
    cpu
}

/// hyp's own EL2 granule: `hyp.granule=` if the CPU has it, else the first it has (with a
/// warning saying why).
fn el2_granule(cpu: &CpuFeatures, cmdline: &Cmdline) -> Granule {
    let choice = match choose_el2_granule(cpu, cmdline.granule) {
        Ok(c) => c,
        Err(e) => el2::fatal!("{e}"),
    };
    if let Some(line) = choice.fallback_line() {
        warn!("{line}");
    }
    choice.granule
}

/// The linker script, entry.S and arch::STACK_STRIDE must agree on the stack area.
fn check_stack_area(layout: &ImageLayout) {
    if layout.stacks_end - layout.stacks_start != el2::dt::MAX_CPUS as u64 * arch::STACK_STRIDE {
        el2::fatal!(
            "stack area {:#x}..{:#x} does not hold {} CPUs of {:#x} bytes (linker.ld vs arch)",
            layout.stacks_start,
            layout.stacks_end,
            el2::dt::MAX_CPUS,
            arch::STACK_STRIDE
        );
    }
}

/// The boot bundle the loader put in RAM (the device tree's initrd), if there is a non-empty
/// one; fatal unless it lies inside one RAM range.
fn boot_bundle(platform: &Platform<'_>) -> Option<AddrRange<Pa>> {
    let bundle = platform.initrd.filter(|r| !r.is_empty())?;
    if !platform
        .memory
        .as_slice()
        .iter()
        .any(|m| m.contains_range(&bundle))
    {
        el2::fatal!(
            "the boot bundle (initrd) {} is not inside RAM",
            HalfOpen(bundle)
        );
    }
    Some(bundle)
}

/// The largest piece of RAM that holds none of: the boot stub and hyp's image, the device
/// tree, the boot bundle and the device tree's reserved ranges.
fn free_ram(
    platform: &Platform<'_>,
    layout: &ImageLayout,
    dtb: AddrRange<Pa>,
    bundle: Option<AddrRange<Pa>>,
) -> AddrRange<Pa> {
    let mut reserved = [AddrRange::default(); 3 + MAX_RESERVED_RANGES];
    reserved[0] = AddrRange::new(
        Pa::new(layout.start.saturating_sub(IMAGE_TEXT_OFFSET)),
        Pa::new(layout.end),
    )
    .expect("invariant: the linker script puts the image's end after its start");
    reserved[1] = dtb;
    reserved[2] = bundle.unwrap_or_default();
    for (slot, r) in reserved[3..].iter_mut().zip(platform.reserved.as_slice()) {
        *slot = *r;
    }
    let Some(free) = largest_free(platform.memory.as_slice(), &reserved) else {
        el2::fatal!("no free RAM after hyp's image and the device tree");
    };
    free
}

/// Hands `free` to the physical allocator ([`mem`]) and takes hyp's heap from it first
/// ([`heap_size`] bytes, 64 KiB aligned); returns the heap's range.
fn init_heap(free: AddrRange<Pa>, layout: &ImageLayout) -> AddrRange<Pa> {
    let size = heap_size(free.len());
    mem::init(free);
    let Some(heap) = mem::alloc_phys(size, 0x1_0000) else {
        el2::fatal!(
            "{} of free RAM is too little for hyp's heap ({size:#x} bytes)",
            HalfOpen(free)
        );
    };
    // SAFETY: `heap` is RAM inside the free range, handed out once by the bump allocator
    // (so used for nothing else), identity mapped read/write by mmu::enable below and
    // accessible with the MMU off before that.
    unsafe { HEAP.init(heap as usize, size as usize) };
    debug!(
        "hyp: image {:#x}..{:#x}, heap {heap:#x}+{size:#x}, free RAM {}",
        layout.start,
        layout.end,
        HalfOpen(mem::remaining())
    );
    AddrRange::from_start_len(Pa::new(heap), size)
        .expect("invariant: the heap lies in the free range")
}

/// Spectre-class hygiene (`el2::spectre`): decides from this CPU's ID registers and what EL3
/// firmware answers, prints `hyp: spectre: …`, installs the exit-path mitigation on this CPU
/// (the secondaries install the same when they start), and returns the guests' answers.
fn spectre(cmdline: &Cmdline) -> Workarounds {
    let ids = arch::spectre::cpu_ids();
    let firmware = arch::spectre::probe_firmware();
    debug!(
        "hyp: spectre: MIDR_EL1 {:#x}, ID_AA64PFR0_EL1 {:#x}, ID_AA64PFR1_EL1 {:#x}, \
         ID_AA64MMFR1_EL1 {:#x}, ID_AA64ISAR2_EL1 {:#x}; firmware: {firmware}",
        ids.midr, ids.pfr0, ids.pfr1, ids.mmfr1, ids.isar2
    );
    let d = Decision::new(ids, firmware);
    info!("{}", d.line());
    let exit = d.exit_with(cmdline.spectre_exit);
    if cmdline.spectre_exit != ExitOverride::Auto {
        warn!("hyp: spectre: exit path forced to {exit} by hyp.spectre-exit= (test only)");
    }
    arch::spectre::configure(&d, exit);
    let a = d.guest_answers();
    debug!(
        "hyp: spectre: guests' SMCCC_ARCH_FEATURES: WORKAROUND_1 {}, WORKAROUND_2 {}, \
         WORKAROUND_3 {}",
        a.wa1, a.wa2, a.wa3
    );
    Workarounds {
        wa1: a.wa1,
        wa2: a.wa2,
        wa3: a.wa3,
    }
}

/// The secondary CPUs [`power_on_secondaries`] started, for [`await_secondaries`].
pub struct Secondaries {
    /// The MPIDR of each CPU powered on, by logical index.
    started: [Option<u64>; el2::dt::MAX_CPUS],
    idle_loop: bool,
}

/// Powers on every other CPU of the device tree (PSCI CPU_ON) without waiting for them, so
/// they come up while the boot CPU reads the bundle. With `idle_loop` (the GIC is up) each
/// first enters hyp's idle loop (`vm::cpus`); otherwise it waits in el2's mailbox loop.
pub fn power_on_secondaries(boot: &Boot, idle_loop: bool) -> Secondaries {
    let (list, skipped) =
        smp::assign_indices(sysreg::mpidr_affinity(), boot.platform.cpus.as_slice());
    let not_started = skipped + boot.platform.cpus_not_listed;
    if not_started > 0 {
        warn!(
            "hyp: {not_started} cpus of /cpus not started: hyp runs on at most {} (dt::MAX_CPUS)",
            el2::dt::MAX_CPUS
        );
    }
    let mut started = [None; el2::dt::MAX_CPUS];
    for &(index, mpidr) in list.as_slice() {
        if idle_loop && !crate::vm::cpus::post_idle_loop(index) {
            warn!("hyp: cpu {index} (mpidr {mpidr:#x}) not started: its mailbox is taken");
            continue;
        }
        match smp::power_on(index, mpidr) {
            Ok(()) => started[index] = Some(mpidr),
            Err(e) => warn!("hyp: cpu {index} (mpidr {mpidr:#x}) not started: {e}"),
        }
    }
    Secondaries { started, idle_loop }
}

/// Waits for the CPUs [`power_on_secondaries`] started and prints `hyp: <n> cpus online`;
/// then, if they were sent to hyp's idle loop, for each to listen there.
pub fn await_secondaries(s: Secondaries) {
    for (index, mpidr) in (0..).zip(s.started).filter_map(|(i, m)| Some((i, m?))) {
        if let Err(e) = smp::wait_online(index) {
            warn!("hyp: cpu {index} (mpidr {mpidr:#x}) not started: {e}");
        }
    }
    info!("hyp: {} cpus online", smp::online());
    if s.idle_loop {
        for cpu in crate::vm::cpus::await_idle_loop(1..smp::online()) {
            warn!("hyp: cpu {cpu} did not come to hyp's idle loop: it runs no vCPU");
        }
    }
}

/// Takes over the SMMUv3 the host device tree describes (`arm,smmu-v3`), if any: maps its
/// registers and hands them to [`crate::smmu::init`], which leaves every stream aborted.
pub fn take_over_devices(boot: &Boot) {
    let Some(dt) = dtb_slice(boot.dtb.start().get() as usize) else {
        return;
    };
    let Some(regs) = Platform::find_compatible_reg(dt, "arm,smmu-v3") else {
        return;
    };
    if let Err(e) = mmu::map_device(regs) {
        warn!("hyp: smmu at {:#x} not mapped: {e}; not used", regs.start());
        return;
    }
    // SAFETY: `regs` is the SMMUv3's register frame from the host device tree, just mapped
    // Device-nGnRE in hyp's identity map; hyp is the only software driving it.
    unsafe { crate::smmu::init(regs, boot.cmdline.hide_smmu_granules) };
    // The PCIe functions behind it are configured by hyp (for the VMs that own them).
    let Some(ecam) = Platform::find_compatible_reg(dt, "pci-host-ecam-generic") else {
        return;
    };
    let bus0 = crate::pci::bus0(ecam);
    if let Err(e) = mmu::map_device(bus0) {
        warn!(
            "hyp: pci: ECAM {} not mapped: {e}; no PCI devices for VMs",
            HalfOpen(bus0)
        );
        return;
    }
    // SAFETY: `ecam` is the host's ECAM window from its device tree; its first MiB was just
    // mapped Device-nGnRE; there is no firmware or other software configuring the bus.
    unsafe { crate::pci::init(ecam) };
}

/// Entered at EL1/EL3 instead of EL2: report it through the console and power off.
pub fn wrong_el(dtb: usize, el: u64) -> ! {
    let _ = platform_and_console(dtb);
    console::init_logger(log::LevelFilter::Info);
    fatal::fatal(format_args!(
        "hyp was entered at EL{el}, but it must run at EL2: start QEMU with \
         -M virt,virtualization=on (or have the firmware enter the Image at EL2)"
    ))
}
