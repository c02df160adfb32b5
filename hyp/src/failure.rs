//! Why hyp stops: [`Fatal`], what failed and why as data, returned up to `el2_primary_main`,
//! which prints it as `hyp: error: <summary>` (after its detail lines) and powers off.

use crate::gic::GicError;
use crate::smmu::AssignError;
use alloc::string::String;
use core::fmt;
use el2::dt::HalfOpen;
use guest_loader::bundle::BundleError;
use guest_loader::Errors;
use stage2::{AddrRange, Ipa, MapError, Pa, VmidError};
use vdev::psci::PsciError;
use vdev::vgic::VgicError;

/// A failure that ends the run. `Display` is the summary line (`hyp: error: ...`);
/// [`Fatal::detail`] the line that explains it, printed first with `error!`.
#[derive(Debug)]
pub enum Fatal {
    /// The physical GIC could not be set up.
    Gic(GicError),
    /// The boot bundle does not parse.
    BundleCorrupt(BundleError),
    /// The bundle's system config does not fit this machine.
    PlanRefused(Errors),
    /// Building VM `vm` failed.
    Vm {
        /// The VM's name.
        vm: String,
        /// What failed.
        why: VmFailure,
    },
    /// A VM's stage 2 mapped memory that is not its RAM when it exited (the audit line was
    /// printed then).
    AuditAtExit,
    /// Some VM did not end with PSCI SYSTEM_OFF (its `vm` lines say how it ended).
    NotClean,
}

/// What failed while building a VM.
#[derive(Debug)]
pub enum VmFailure {
    /// Its stage-2 table budget does not fit in the free host RAM.
    TableBudget {
        /// The budget in bytes.
        budget: u64,
        /// The free host RAM.
        free: AddrRange<Pa>,
    },
    /// Its RAM does not fit in the free host RAM.
    Ram {
        /// Bytes of RAM.
        memory: u64,
        /// The alignment asked for.
        align: u64,
        /// The free host RAM.
        free: AddrRange<Pa>,
    },
    /// No VMID left.
    Vmid(VmidError),
    /// Its PCI functions could not be given to it at the SMMU.
    Devices(AssignError),
    /// It owns PCI functions but hyp found no PCIe bus (ECAM) in the host device tree.
    NoPciBus,
    /// A function it owns is not on the host's bus.
    NoFunction(platform::pci::Bdf),
    /// A function it owns interrupts on a pin other than INTA.
    IntxPin(platform::pci::Bdf, u32),
    /// Its stage-2 root tables could not be allocated.
    Stage2Root(MapError),
    /// Mapping its RAM at stage 2 failed.
    Stage2Map(MapError),
    /// An image of the load plan lies outside its RAM.
    LoadOutside {
        /// `kernel`, `initrd` or `dtb`.
        what: &'static str,
        /// Where it would go.
        ipa: Ipa,
        /// Its length.
        len: u64,
    },
    /// Two images of the load plan overlap.
    LoadOverlap {
        /// `kernel`, `initrd` or `dtb`.
        what: &'static str,
        /// The one it overlaps.
        other: &'static str,
    },
    /// The vGIC refused its shape.
    Vgic(VgicError),
    /// PSCI refused its shape.
    Psci(PsciError),
    /// Its vCPUs need CPUs that are not online.
    Cpus {
        /// First CPU needed.
        start: u32,
        /// One past the last.
        end: u32,
        /// CPUs online.
        online: usize,
    },
    /// Its stage 2 as built maps memory that is not its RAM (a hyp bug).
    Audit {
        /// The leaf's IPA.
        ipa: Ipa,
        /// What it maps.
        pa: Pa,
    },
}

impl Fatal {
    /// The line that explains the failure (printed with `error!` before the summary), if
    /// there is more to say than the summary.
    pub fn detail(&self) -> Option<Detail<'_>> {
        match self {
            Fatal::Gic(_) | Fatal::AuditAtExit | Fatal::NotClean => None,
            _ => Some(Detail(self)),
        }
    }
}

/// Display helper of [`Fatal::detail`].
pub struct Detail<'a>(&'a Fatal);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Fatal::BundleCorrupt(e) => write!(f, "hyp: boot bundle: {e}"),
            Fatal::PlanRefused(e) => write!(f, "{e}"),
            Fatal::Vm { vm, why } => match why {
                VmFailure::TableBudget { budget, free } => write!(
                    f,
                    "vm {vm}: its stage-2 table budget of {budget:#x} bytes does not fit in the \
                     free host RAM {}",
                    HalfOpen(*free)
                ),
                VmFailure::Ram {
                    memory,
                    align,
                    free,
                } => write!(
                    f,
                    "vm {vm}: {memory:#x} bytes of RAM aligned to {align:#x} do not fit in the \
                     free host RAM {}",
                    HalfOpen(*free)
                ),
                VmFailure::Vmid(e) => write!(f, "vm {vm}: {e}"),
                VmFailure::Devices(e) => write!(f, "vm {vm}: its PCI devices: {e}"),
                VmFailure::NoPciBus => write!(
                    f,
                    "vm {vm}: it owns PCI devices but the host device tree has no PCIe bus \
                     (pci-host-ecam-generic)"
                ),
                VmFailure::IntxPin(bdf, pin) => write!(
                    f,
                    "vm {vm}: PCI function {bdf} interrupts on INT{} (pin {pin}); hyp gives each \
                     VM the INTA lines of its slots only",
                    char::from(b'A' + (*pin as u8).saturating_sub(1).min(3))
                ),
                VmFailure::NoFunction(bdf) => write!(
                    f,
                    "vm {vm}: no PCI function at {bdf} on the host's bus (./run attaches the \
                     config's devices there)"
                ),
                VmFailure::Stage2Root(e) => write!(f, "vm {vm}: stage-2 root tables: {e}"),
                VmFailure::Stage2Map(e) => write!(f, "vm {vm}: stage-2 map of RAM: {e}"),
                VmFailure::LoadOutside { what, ipa, len } => write!(
                    f,
                    "vm {vm}: {what} at IPA {ipa:#x} (+{len:#x}) is outside the VM's RAM"
                ),
                VmFailure::LoadOverlap { what, other } => {
                    write!(f, "vm {vm}: {what} overlaps {other} in the VM's RAM")
                }
                VmFailure::Vgic(e) => write!(f, "vm {vm}: {e}"),
                VmFailure::Psci(e) => write!(f, "vm {vm}: {e}"),
                VmFailure::Cpus { start, end, online } => write!(
                    f,
                    "vm {vm}: needs CPUs {start}..{end}, but only {online} are online"
                ),
                VmFailure::Audit { ipa, pa } => write!(
                    f,
                    "vm {vm}: stage-2 audit after setup: IPA {ipa:#x} maps PA {pa:#x}, not this \
                     VM's RAM"
                ),
            },
            Fatal::Gic(_) | Fatal::AuditAtExit | Fatal::NotClean => fmt::Display::fmt(self.0, f),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fatal::Gic(e) => return write!(f, "{e}"),
            Fatal::BundleCorrupt(_) => {
                "the boot bundle is corrupt: rebuild it with `guest-loader bundle`"
            }
            Fatal::PlanRefused(_) => {
                "the bundle's system config was refused on this machine (see above)"
            }
            Fatal::Vm { why, .. } => match why {
                VmFailure::TableBudget { .. } => "not enough host RAM for the VMs' stage-2 tables",
                VmFailure::Ram { .. } => {
                    "not enough host RAM for the VMs: lower a VM's memory or give QEMU more (-m)"
                }
                VmFailure::Vmid(_) => "no VMID left",
                VmFailure::Devices(_)
                | VmFailure::NoPciBus
                | VmFailure::NoFunction(_)
                | VmFailure::IntxPin(..) => "cannot give a VM its PCI devices",
                VmFailure::Stage2Root(_) => "cannot allocate stage-2 tables",
                VmFailure::Stage2Map(_) => "cannot build the VM's stage-2 tables",
                VmFailure::LoadOutside { .. } | VmFailure::LoadOverlap { .. } => {
                    "the load plan does not fit the VM's RAM"
                }
                VmFailure::Vgic(_) => "cannot build the VM's GIC",
                VmFailure::Psci(_) => "cannot build the VM's PSCI",
                VmFailure::Cpus { .. } => "not enough CPUs online for the VMs' vCPUs",
                VmFailure::Audit { .. } => "a VM's stage 2 maps memory that is not its RAM",
            },
            Fatal::AuditAtExit => {
                "a VM's stage 2 maps memory that is not its RAM (see the audit above)"
            }
            Fatal::NotClean => "not every VM exited cleanly (see the vm lines above)",
        })
    }
}
