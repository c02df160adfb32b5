//! The system's run, in the order that gets the first vCPU going soonest under QEMU TCG,
//! where first executing any code costs its translation: the GIC before the secondary CPUs
//! are powered on ([`init_gic`]), the boot bundle and its config read while they come up
//! ([`read_bundle`]), then ([`run_system`]) the plan, the VMs, their vCPUs, and the wait for
//! every VM to exit.

use super::create::create;
use super::output;
use super::{cpus, fill_idle, ms, vcpu, Vm, VmState, HOST_RESERVE, VMS};
use crate::boot::Boot;
use crate::failure::{Fatal, VmFailure};
use crate::gic::{self, GicError};
use crate::{mem, Verdict};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use el2::arch::vsys;
use el2::smp;
use guest_loader::bundle::CONFIG_NAME;
use guest_loader::{plan_system, Bundle, BundleError, Errors, Host, SystemConfig, SystemPlan};
use log::{error, info};
use stage2::VmidAllocator;

/// Initialises the physical GIC's distributor and this CPU's interface. Done before the
/// secondaries are powered on: each sets up its own interface first thing, in hyp's idle loop
/// (`cpus::idle_loop`).
pub fn init_gic(boot: &Boot) -> Result<(), GicError> {
    // SAFETY: `boot::early` mapped every device region of `boot.platform` Device-nGnRE in hyp's
    // identity map for good (mmu::enable), and hyp drives the GIC alone.
    unsafe { gic::init_distributor(&boot.platform, true) }.and_then(|_| gic::init_cpu())
}

/// The boot bundle, parsed, and its system config, parsed but not planned (the plan needs to
/// know how many CPUs came online).
pub struct Loaded {
    data: &'static [u8],
    bundle: Bundle<'static>,
    config: Result<SystemConfig, Errors>,
}

/// Reads the boot bundle the loader put in RAM as the initrd (`boot.bundle`) and parses its
/// config; `Ok(None)` when there is none. Prints nothing: [`run_system`] reports what went
/// wrong, after the boot lines, as before the bundle was read this early.
pub fn read_bundle(boot: &Boot) -> Result<Option<Loaded>, BundleError> {
    let Some(data) = boot.bundle else {
        return Ok(None);
    };
    let bundle = Bundle::parse(data)?;
    let config = guest_loader::parse_config(CONFIG_NAME, bundle.config());
    Ok(Some(Loaded {
        data,
        bundle,
        config,
    }))
}

/// Plans the system of `loaded` (from [`read_bundle`]) for this host, builds its VMs and runs
/// them until every VM has exited. `gic` is [`init_gic`]'s result.
pub fn run_system(
    boot: &Boot,
    gic: Result<(), GicError>,
    loaded: Result<Option<Loaded>, BundleError>,
) -> Result<Verdict, Fatal> {
    let t_start = ms();
    let Some(loaded) = loaded.map_err(Fatal::BundleCorrupt)? else {
        return Ok(Verdict::NoVms);
    };
    let host = Host {
        smmu: crate::smmu::features(),
        cpu: boot.cpu,
        cpus: smp::online() as u32,
        guest_ram: mem::remaining().len().saturating_sub(HOST_RESERVE),
    };
    let config = loaded.config.map_err(Fatal::PlanRefused)?;
    let plan = plan_system(&config, &loaded.bundle, &host).map_err(Fatal::PlanRefused)?;
    let t_plan = ms();
    if plan.vms.is_empty() {
        return Ok(Verdict::NoVms);
    }
    gic.map_err(Fatal::Gic)?;
    log::debug!(
        "hyp: {} VMs; hyp's own granule {}",
        plan.vms.len(),
        boot.el2_granule
    );
    let vms = build_vms(boot, loaded.data, &plan)?;
    log::debug!(
        "hyp: times since boot: hyp up {t_start} ms, planned {t_plan} ms, VMs built {} ms",
        ms()
    );
    drop(plan);
    start_vcpus(vms);
    wait_for_vms(vms)
}

/// Builds every VM of `plan` and checks that each one's stage 2 as built maps only its own RAM
/// (printed at exit, after everything the guest and hyp.stress did to it; a failure here stops
/// hyp before any guest runs).
fn build_vms(
    boot: &Boot,
    data: &'static [u8],
    plan: &SystemPlan<'_>,
) -> Result<&'static [&'static Vm], Fatal> {
    let mut vmids = VmidAllocator::for_cpu(&boot.cpu);
    let mut vms = Vec::new();
    for vp in &plan.vms {
        let vm = create(boot, data, vp, &mut vmids).map_err(|why| Fatal::Vm {
            vm: vp.name.clone(),
            why,
        })?;
        vms.push(vm);
    }
    for vm in &vms {
        if let Err((ipa, pa)) = vm.audit_stage2() {
            return Err(Fatal::Vm {
                vm: vm.name.clone(),
                why: VmFailure::Audit { ipa, pa },
            });
        }
    }
    Ok(VMS.call_once(|| vms).as_slice())
}

/// Starts every vCPU on its CPU; the one pinned to CPU 0 (this one) runs last, here, until it
/// stops. CPUs that run no vCPU fill the VMs' RAM meanwhile (their idle loop's `fill_idle`),
/// woken once the vCPUs are on their way, so filling does not delay their start.
fn start_vcpus(vms: &'static [&'static Vm]) {
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
            } else {
                dispatch_vcpu(vm, v, p);
            }
        }
    }
    for cpu in 1..smp::online() {
        if !vms.iter().any(|vm| vm.pcpus.contains(&cpu)) {
            gic::kick(cpu);
        }
    }
    if let Some((vm, v)) = mine {
        vcpu::thread(vm, v);
    }
}

/// Hands vCPU `v` of `vm` to CPU `p`'s idle loop; if that CPU cannot take it, the VM stops.
fn dispatch_vcpu(vm: &'static Vm, v: usize, p: usize) {
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

/// Waits for every VM to exit; CPU 0 keeps writing queued output, taking the host console's
/// input and the SMMU's events meanwhile, and fills VM RAM when it has nothing else to do.
fn wait_for_vms(vms: &[&Vm]) -> Result<Verdict, Fatal> {
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
