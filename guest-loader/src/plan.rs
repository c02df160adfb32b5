//! Resolution: a validated [`SystemConfig`] + the files it names + the host (CPU features,
//! physical CPUs, RAM for guests) → a [`SystemPlan`]: per VM the guest page size, the stage-2
//! granule and geometry, the mapping mode, the memory layout and what goes where, the final
//! command line, the device tree, and the report of every granule decision.

use crate::cmdline;
use crate::config::{
    parse_config, ConfigError, ErrorKind, Errors, GranuleChoice, Mapping, PageSize, Pos,
    Stage2Granule, SystemConfig, VmConfig,
};
use crate::fdt::{guest_dtb, DtbInput};
use crate::image::{load_kernel, ImageHeader, Kernel, MAX_IMAGE_SIZE};
use crate::layout::{place, Layout, LayoutRequest, RAM_BASE};
use crate::pci::{self, Bdf, PciDevice};
use crate::size::format_size;
use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write as _;
use core::ops::Range;
use platform::virt::{pci_intx_spi, pci_mmio_slice};
use smmu::{Refusal as SmmuRefusal, SmmuFeatures};
use stage2::geometry::{Geometry, GeometryError};
use stage2::{AddrRange, CpuFeatures, Granule, GranuleRefusal, Ipa, Stage};

/// Where the files a config names come from: the disk (the CLI, relative to the config file)
/// or a boot bundle (relative to the archive root). Paths are passed as written in the config.
pub trait FileSource {
    /// The bytes of `path`, or `None` when it does not exist.
    fn file(&self, path: &str) -> Option<&[u8]>;
}

impl FileSource for BTreeMap<String, Vec<u8>> {
    fn file(&self, path: &str) -> Option<&[u8]> {
        self.get(path).map(Vec::as_slice)
    }
}

/// The machine the system will run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    /// The CPU features hyp acts on (ID registers and the hide mask).
    pub cpu: CpuFeatures,
    /// Physical CPUs (each vCPU is pinned to one).
    pub cpus: u32,
    /// Bytes of RAM available for guests.
    pub guest_ram: u64,
    /// The SMMUv3 in front of the PCIe bus, if any (with `hyp.hide-smmu-granules=` applied):
    /// a VM that owns PCI functions needs one that can walk its stage 2.
    pub smmu: Option<SmmuFeatures>,
}

/// Why one candidate page size was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The CPU lacks the granule at stage 1 (the guest's own tables).
    Cpu(GranuleRefusal),
    /// `stage2.granule = "page_size"`, and the CPU lacks the granule at stage 2.
    Stage2(GranuleRefusal),
    /// `stage2.granule = "page_size"`, and no stage-2 geometry exists for it.
    Geometry(GeometryError),
    /// The kernel is built for another page size.
    KernelHeader {
        /// The page size in the Image header.
        header: Granule,
        /// The header's flags.
        flags: u64,
    },
    /// `stage2.granule = "page_size"`, the VM owns PCI functions, and the SMMU cannot walk
    /// stage-2 tables of this granule.
    Smmu(SmmuRefusal),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Cpu(r) => r.fmt(f),
            Refusal::Stage2(r) => write!(f, "stage2.granule follows page_size, but {r}"),
            Refusal::Geometry(e) => write!(f, "stage2.granule follows page_size, but {e}"),
            Refusal::Smmu(r) => write!(f, "stage2.granule follows page_size, but {r}"),
            Refusal::KernelHeader { header, flags } => write!(
                f,
                "the kernel is built for {header} pages only (Image header flags {flags:#x}, \
                 page-size field {})",
                (flags >> 1) & 3
            ),
        }
    }
}

/// One candidate that was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The page size tried.
    pub granule: Granule,
    /// Where it came from: `page_size` or `fallback[i]`.
    pub from: Source,
    /// Why it was refused.
    pub refusal: Refusal,
}

/// Where the chosen page size came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `page_size` as written.
    PageSize,
    /// `page_size = "kernel"` and the Image header names it.
    KernelHeader,
    /// `page_size = "kernel"`, the header leaves it unspecified: the first granule the CPU
    /// supports at stage 1 (and at stage 2 when `stage2.granule = "page_size"`) in the order
    /// 4K, 16K, 64K.
    KernelAuto,
    /// `fallback[i]`.
    Fallback(usize),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::PageSize => f.write_str("page_size"),
            Source::KernelHeader => f.write_str("the kernel's Image header"),
            Source::KernelAuto => {
                f.write_str("the CPU (the kernel's Image header leaves it unspecified)")
            }
            Source::Fallback(i) => write!(f, "fallback[{i}]"),
        }
    }
}

/// How the guest page size was chosen: the request, every refused candidate, the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `page_size` as written.
    pub requested: PageSize,
    /// The Image header's page size (`None`: unspecified).
    pub header: Option<Granule>,
    /// Candidates refused, in the order tried.
    pub refused: Vec<Attempt>,
    /// The page size chosen and where it came from (`None`: the VM is refused).
    pub chosen: Option<(Granule, Source)>,
}

impl Decision {
    /// `16K (page_size): <reason>; 4K (fallback[0]): <reason>`.
    pub fn refusals(&self) -> String {
        let mut s = String::new();
        for (i, a) in self.refused.iter().enumerate() {
            if i > 0 {
                s.push_str("; ");
            }
            let _ = write!(s, "{} ({}) refused: {}", a.granule, a.from, a.refusal);
        }
        if s.is_empty() {
            s.push_str("no candidate");
        }
        s
    }

    /// Whether a fallback was used.
    pub fn fell_back(&self) -> bool {
        matches!(self.chosen, Some((_, Source::Fallback(_))))
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.chosen {
            Some((g, from)) if self.refused.is_empty() => write!(f, "{g} from {from}"),
            Some((g, from)) => write!(f, "{}; {g} from {from}", self.refusals()),
            None => write!(f, "refused: {}", self.refusals()),
        }
    }
}

/// hyp's own stage-1 granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypPlan {
    /// `[hypervisor] granule` as written.
    pub requested: GranuleChoice,
    /// The granule hyp will use.
    pub granule: Granule,
    /// Why the requested granule was not used (then `auto` was).
    pub refused: Option<GranuleRefusal>,
}

/// One thing to copy into a VM's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadItem<'p> {
    /// `kernel`, `initrd` or `dtb`.
    pub what: &'static str,
    /// Its IPA.
    pub ipa: Ipa,
    /// Its bytes.
    pub data: &'p [u8],
}

/// A VM, resolved and ready to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmPlan<'a> {
    /// The VM's name.
    pub name: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The physical CPUs its vCPUs are pinned to (vCPU i on `cpus.start + i`).
    pub cpus: Range<u32>,
    /// RAM in bytes.
    pub memory: u64,
    /// The guest's page size (its stage-1 granule; `arm64.pagesize=`).
    pub page_size: Granule,
    /// The granules the VM's `ID_AA64MMFR0_EL1` view should advertise at stage 1 (a mask of
    /// [`Granule::bit`]): only `page_size` when the config names it, every granule the CPU
    /// has when `page_size = "kernel"`.
    pub advertised_granules: u8,
    /// How the page size was chosen.
    pub decision: Decision,
    /// The stage-2 granule.
    pub stage2_granule: Granule,
    /// IPA bits.
    pub ipa_bits: u32,
    /// The stage-2 geometry (start level, root tables, VTCR fields).
    pub geometry: Geometry,
    /// Eager or lazy stage-2 mapping.
    pub mapping: Mapping,
    /// Bytes of host RAM reserved for the VM's stage-2 tables: the geometry's worst case for
    /// its RAM ([`Geometry::table_budget`]), or the smaller `stage2.table_memory` of a lazy
    /// VM. The VM's tables never take more; only this VM stops when they run out.
    pub table_budget: u64,
    /// The final command line (with `arm64.pagesize=`).
    pub cmdline: String,
    /// Where everything goes.
    pub layout: Layout,
    /// The kernel's Image header.
    pub kernel_header: ImageHeader,
    /// The kernel file was gzip (then `kernel` holds the inflated bytes).
    pub kernel_gzip: bool,
    /// The kernel Image bytes (to copy to `layout.kernel.start`; zero the rest of
    /// `layout.kernel` as BSS).
    pub kernel: Cow<'a, [u8]>,
    /// The initrd bytes.
    pub initrd: Option<&'a [u8]>,
    /// The device tree blob (to copy to `layout.dtb()`; x0 at entry).
    pub dtb: Vec<u8>,
    /// The PCI functions the VM owns (`[[vm.pci]]`), each with its place on the root bus.
    pub pci: Vec<(Bdf, PciDevice)>,
    /// Its slice of the PCI memory window (IPA = PA), when it owns functions.
    pub pci_window: Option<AddrRange<Ipa>>,
}

impl VmPlan<'_> {
    /// What to copy where.
    pub fn load_items(&self) -> Vec<LoadItem<'_>> {
        let mut v = Vec::with_capacity(3);
        v.push(LoadItem {
            what: "kernel",
            ipa: self.layout.kernel.start(),
            data: &self.kernel,
        });
        if let (Some(r), Some(d)) = (self.layout.initrd, self.initrd) {
            v.push(LoadItem {
                what: "initrd",
                ipa: r.start(),
                data: d,
            });
        }
        v.push(LoadItem {
            what: "dtb",
            ipa: self.layout.dtb(),
            data: &self.dtb,
        });
        v
    }

    /// The stable line `vm <name>: stage-2 granule 4K, ipa 40 bits, start level 1, 2 root tables`.
    pub fn stage2_line(&self) -> String {
        format!(
            "vm {}: stage-2 granule {}, ipa {} bits, start level {}, {} root table{}",
            self.name,
            self.stage2_granule,
            self.ipa_bits,
            self.geometry.start_level(),
            self.geometry.root_tables(),
            if self.geometry.root_tables() == 1 {
                ""
            } else {
                "s"
            }
        )
    }

    /// The stable line `vm <name>: guest page size 16K (arm64.pagesize=16k)`.
    pub fn page_size_line(&self) -> String {
        format!(
            "vm {}: guest page size {} (arm64.pagesize={})",
            self.name,
            self.page_size,
            self.page_size.name()
        )
    }
}

/// The whole system, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemPlan<'a> {
    /// hyp's own granule.
    pub hyp: HypPlan,
    /// The VMs, in config order.
    pub vms: Vec<VmPlan<'a>>,
}

impl SystemPlan<'_> {
    /// The plan as the CLI's `check` prints it, one fact per line (the two stable lines of
    /// the architecture document included).
    pub fn report(&self) -> String {
        let mut s = String::new();
        let h = &self.hyp;
        // Not hyp's own boot line (`hyp: el2 granule ..`), so that a log holding both cannot
        // confuse a test that looks for hyp's.
        let _ = write!(
            s,
            "system: hyp el2 granule {} (granule = \"{}\")",
            h.granule, h.requested
        );
        if let Some(r) = h.refused {
            let _ = write!(s, "; {r}, using auto");
        }
        s.push('\n');
        if self.vms.is_empty() {
            s.push_str("system: no VMs\n");
        }
        for vm in &self.vms {
            vm.report_translation(&mut s);
            vm.report_contents(&mut s);
        }
        s
    }
}

impl VmPlan<'_> {
    /// The report's lines on the VM's CPUs, memory, page size and stage 2.
    fn report_translation(&self, s: &mut String) {
        let n = &self.name;
        let _ = writeln!(
            s,
            "vm {n}: {} vCPU{} on cpus {}..={}, memory {}",
            self.vcpus,
            if self.vcpus == 1 { "" } else { "s" },
            self.cpus.start,
            self.cpus.end - 1,
            format_size(self.memory)
        );
        let _ = writeln!(s, "{}", self.page_size_line());
        let _ = writeln!(s, "vm {n}: page size decision: {}", self.decision);
        let _ = writeln!(s, "{}", self.stage2_line());
        let _ = writeln!(
            s,
            "vm {n}: stage-2 VTCR_EL2 TG0 {:#04b}, SL0 {}, T0SZ {}; mapping {}",
            self.geometry.tg0(),
            self.geometry.sl0(),
            self.geometry.t0sz(),
            self.mapping
        );
        let _ = writeln!(
            s,
            "vm {n}: device tree /hypervisor: hyp,stage2-granule = <{:#x}>, hyp,ipa-bits = <{}>",
            self.stage2_granule.size(),
            self.ipa_bits
        );
        let _ = writeln!(
            s,
            "vm {n}: stage-2 table budget {} ({} bytes, reserved beside its RAM)",
            format_size(self.table_budget),
            self.table_budget
        );
    }

    /// The report's lines on what the VM boots with: kernel, initrd, device tree, command
    /// line, PCI functions.
    fn report_contents(&self, s: &mut String) {
        let n = &self.name;
        let h = &self.kernel_header;
        let _ = writeln!(
            s,
            "vm {n}: kernel {} ({}{} bytes, text_offset {:#x}, image_size {:#x}, flags {:#x})",
            self.layout.kernel,
            if self.kernel_gzip { "gzip, " } else { "" },
            self.kernel.len(),
            h.text_offset,
            h.image_size,
            h.flags
        );
        if let Some(r) = self.layout.initrd {
            let _ = writeln!(s, "vm {n}: initrd {r} ({} bytes)", r.len());
        }
        let _ = writeln!(
            s,
            "vm {n}: dtb {:#x} ({} bytes), ram {}",
            self.layout.dtb(),
            self.dtb.len(),
            self.layout.ram
        );
        let _ = writeln!(s, "vm {n}: cmdline \"{}\"", self.cmdline);
        for (bdf, d) in &self.pci {
            let _ = write!(s, "vm {n}: pci {bdf} (stream {:#x}) {}", bdf.rid(), d.model);
            if let Some(f) = &d.file {
                let access = if d.readonly {
                    "read-only"
                } else {
                    "read-write"
                };
                let _ = write!(s, " \"{f}\" ({access})");
            }
            s.push('\n');
        }
    }
}

struct Resolver<'c, 'a, F: ?Sized> {
    cfg: &'c SystemConfig,
    files: &'a F,
    host: &'c Host,
    errors: Vec<ConfigError>,
}

impl<'c, 'a, F: FileSource + ?Sized> Resolver<'c, 'a, F> {
    fn err(&mut self, vm: &VmConfig, pos: Pos, key: &str, kind: ErrorKind) {
        self.errors.push(ConfigError {
            file: self.cfg.file.clone(),
            pos: Some(pos),
            vm: Some(vm.name.clone()),
            key: Some(key.into()),
            kind,
        });
    }

    fn read(&mut self, vm: &VmConfig, path: &str, pos: Pos, key: &str) -> Option<&'a [u8]> {
        match self.files.file(path) {
            None => {
                self.err(vm, pos, key, ErrorKind::MissingFile { path: path.into() });
                None
            }
            Some([]) => {
                self.err(vm, pos, key, ErrorKind::EmptyFile { path: path.into() });
                None
            }
            Some(d) => Some(d),
        }
    }

    fn stage2_for(&self, vm: &VmConfig, g: Granule) -> Result<Geometry, GeometryError> {
        Geometry::stage2(g, vm.stage2.ipa_bits, &self.host.cpu)
    }

    /// Tries `page_size`, then each fallback.
    fn decide(&self, vm: &VmConfig, header: &ImageHeader) -> Decision {
        let cpu = &self.host.cpu;
        let mut candidates: Vec<(Granule, Source)> = Vec::new();
        match vm.page_size {
            PageSize::Fixed(g) => candidates.push((g, Source::PageSize)),
            PageSize::Kernel => match header.page_size {
                Some(g) => candidates.push((g, Source::KernelHeader)),
                // Every granule the CPU has at stage 1, in the `auto` order, so that a stage-2
                // refusal moves on to the next.
                None => candidates.extend(
                    Granule::ALL
                        .into_iter()
                        .filter(|&g| cpu.stage1(g).is_ok())
                        .map(|g| (g, Source::KernelAuto)),
                ),
            },
        }
        candidates.extend(
            vm.fallback
                .iter()
                .enumerate()
                .map(|(i, &g)| (g, Source::Fallback(i))),
        );
        let mut d = Decision {
            requested: vm.page_size,
            header: header.page_size,
            refused: Vec::new(),
            chosen: None,
        };
        for (g, from) in candidates {
            let refusal = if let Some(h) = header.page_size.filter(|&h| h != g) {
                Some(Refusal::KernelHeader {
                    header: h,
                    flags: header.flags,
                })
            } else if let Err(r) = cpu.stage1(g) {
                Some(Refusal::Cpu(r))
            } else if vm.stage2.granule == Stage2Granule::PageSize {
                match self.stage2_for(vm, g) {
                    Ok(_) => self.smmu_refusal(vm, g).map(Refusal::Smmu),
                    Err(GeometryError::Granule(r)) => Some(Refusal::Stage2(r)),
                    Err(e) => Some(Refusal::Geometry(e)),
                }
            } else {
                None
            };
            match refusal {
                Some(refusal) => d.refused.push(Attempt {
                    granule: g,
                    from,
                    refusal,
                }),
                None => {
                    d.chosen = Some((g, from));
                    break;
                }
            }
        }
        d
    }

    /// Why the SMMU cannot walk a `g` stage 2 of `vm`, when `vm` owns PCI functions.
    fn smmu_refusal(&self, vm: &VmConfig, g: Granule) -> Option<SmmuRefusal> {
        let smmu = self.host.smmu.filter(|_| !vm.pci.is_empty())?;
        let geo = self.stage2_for(vm, g).ok()?;
        smmu.check(
            &geo.without_fwb(),
            smmu.oas_bits.min(self.host.cpu.pa_bits()),
        )
        .err()
    }

    /// For a VM that owns PCI functions: the SMMU exists, the mapping is eager, and an explicit
    /// stage-2 granule is one the SMMU walks. Errors are recorded.
    fn check_pci(&mut self, vm: &VmConfig) {
        if vm.pci.is_empty() {
            return;
        }
        let at = vm.pos.pci.first().copied().unwrap_or(vm.pos.table);
        if self.host.smmu.is_none() {
            self.err(vm, at, "pci", ErrorKind::PciNoSmmu);
            return;
        }
        if vm.stage2.mapping == Mapping::Lazy {
            self.err(
                vm,
                vm.pos.stage2_granule,
                "stage2.mapping",
                ErrorKind::PciLazy,
            );
            return;
        }
        if let Stage2Granule::Fixed(g) = vm.stage2.granule {
            if let Some(r) = self.smmu_refusal(vm, g) {
                self.err(
                    vm,
                    vm.pos.stage2_granule,
                    "stage2.granule",
                    ErrorKind::Smmu(r),
                );
            }
        }
    }

    /// The VM's stage-2 table budget (see [`VmPlan::table_budget`]); `None` after an error.
    fn table_budget(
        &mut self,
        vm: &VmConfig,
        geo: &Geometry,
        pci_window: Option<AddrRange<Ipa>>,
    ) -> Option<u64> {
        // RAM beyond the last IPA is refused by the layout; its budget does not matter.
        let mut worst = AddrRange::from_start_len(Ipa::new(RAM_BASE), vm.memory)
            .map_or(u64::MAX, |ram| geo.table_budget(ram));
        if let Some(w) = pci_window {
            // The PCI window is mapped too (pages): its tables beside the RAM's, sharing the
            // root (an upper-level table both use is counted twice: a cap, never short).
            worst = worst.saturating_add(geo.table_budget(w) - geo.root_bytes());
        }
        let Some(asked) = vm.stage2.table_memory else {
            return Some(worst);
        };
        let min = geo.root_bytes() + u64::from(3 - geo.start_level()) * geo.table_bytes();
        let kind = if asked < min {
            ErrorKind::TableMemoryTooSmall { asked, min }
        } else if vm.stage2.mapping == Mapping::Eager && asked < worst {
            ErrorKind::TableMemoryEager {
                asked,
                needed: worst,
            }
        } else {
            // More than the worst case is never used.
            return Some(asked.min(worst));
        };
        self.err(vm, vm.pos.table_memory, "stage2.table_memory", kind);
        None
    }

    /// Resolves one VM: checks what needs the CPU and the files, chooses its page size and
    /// stage 2, and builds its command line, layout and device tree. `None` after an error.
    fn vm(
        &mut self,
        vm: &VmConfig,
        cpus: Range<u32>,
        first_pci: usize,
        pci_window: Option<AddrRange<Ipa>>,
    ) -> Option<VmPlan<'a>> {
        let before = self.errors.len();
        self.check_stage2(vm);
        self.check_pci(vm);
        let (kernel, initrd) = self.load_files(vm);
        if self.errors.len() != before {
            return None;
        }
        let kernel = kernel?;
        let decision = self.decide(vm, &kernel.header);
        let Some((page_size, _)) = decision.chosen else {
            let kind = ErrorKind::NoPageSize(decision);
            self.err(vm, vm.pos.page_size, "page_size", kind);
            return None;
        };
        let stage2_granule = match vm.stage2.granule {
            Stage2Granule::Fixed(g) => g,
            Stage2Granule::PageSize => page_size,
        };
        let geometry = self.geometry(vm, stage2_granule)?;
        let table_budget = self.table_budget(vm, &geometry, pci_window)?;
        let cmdline = match cmdline::build(&vm.cmdline, page_size) {
            Ok(c) => c,
            Err(e) => {
                self.err(vm, vm.pos.cmdline, "cmdline", ErrorKind::Cmdline(e));
                return None;
            }
        };
        let layout = self.layout(vm, &kernel, initrd)?;
        let dtb = self.dtb(vm, &layout, &cmdline, stage2_granule, pci_window)?;
        Some(VmPlan {
            name: vm.name.clone(),
            vcpus: vm.vcpus,
            cpus,
            memory: vm.memory,
            page_size,
            advertised_granules: advertised_granules(&self.host.cpu, vm.page_size, page_size),
            decision,
            stage2_granule,
            ipa_bits: vm.stage2.ipa_bits,
            geometry,
            mapping: vm.stage2.mapping,
            table_budget,
            cmdline,
            layout,
            kernel_header: kernel.header,
            kernel_gzip: kernel.gzip,
            kernel: kernel.data,
            initrd,
            dtb,
            pci: place_pci(&vm.pci, first_pci),
            pci_window,
        })
    }

    /// `stage2.ipa_bits` against the CPU's PARange, and an explicit `stage2.granule` (which
    /// has no fallback) against the CPU's stage 2. Errors are recorded.
    fn check_stage2(&mut self, vm: &VmConfig) {
        let cpu = self.host.cpu;
        let ipa = vm.stage2.ipa_bits;
        if ipa > cpu.pa_bits() {
            let kind = ErrorKind::IpaBeyondPaRange {
                ipa_bits: ipa,
                pa_bits: cpu.pa_bits(),
                parange: cpu.pa_range(),
            };
            self.err(vm, vm.pos.ipa_bits, "stage2.ipa_bits", kind);
            return;
        }
        let Stage2Granule::Fixed(g) = vm.stage2.granule else {
            return;
        };
        match self.stage2_for(vm, g) {
            Ok(_) => {}
            Err(GeometryError::Granule(r)) => self.err(
                vm,
                vm.pos.stage2_granule,
                "stage2.granule",
                ErrorKind::Stage2Granule(r),
            ),
            Err(e) => {
                let kind = ErrorKind::Geometry {
                    granule: g,
                    ipa_bits: ipa,
                    reason: e.to_string(),
                };
                self.err(vm, vm.pos.ipa_bits, "stage2.ipa_bits", kind);
            }
        }
    }

    /// Reads the kernel (inflated, its header decoded) and the initrd. Errors are recorded.
    fn load_files(&mut self, vm: &VmConfig) -> (Option<Kernel<'a>>, Option<&'a [u8]>) {
        let kernel_file = self.read(vm, &vm.kernel, vm.pos.kernel, "kernel");
        let initrd = match &vm.initrd {
            Some(p) => self.read(vm, p, vm.pos.initrd, "initrd"),
            None => None,
        };
        let kernel = match kernel_file.map(|k| load_kernel(k, vm.memory.min(MAX_IMAGE_SIZE))) {
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => {
                self.err(vm, vm.pos.kernel, "kernel", ErrorKind::Image(e));
                None
            }
            None => None,
        };
        (kernel, initrd)
    }

    /// The VM's stage-2 geometry for `granule`, in the attribute encoding of every walker that
    /// reads it (hyp's MMU and, for a VM that owns PCI functions, the SMMU).
    fn geometry(&mut self, vm: &VmConfig, granule: Granule) -> Option<Geometry> {
        match self.stage2_for(vm, granule) {
            // A stage 2 the SMMU shares is written in the attribute encoding it reads: the
            // FEAT_S2FWB one only if it has STE.S2FWB (SMMU_IDR3.FWB).
            Ok(g) if !vm.pci.is_empty() && !self.host.smmu.is_some_and(|s| s.fwb) => {
                Some(g.without_fwb())
            }
            Ok(g) => Some(g),
            Err(e) => {
                // Checked by check_stage2 (a fixed granule) and decide (page_size); kept as an
                // error, never a panic.
                let kind = ErrorKind::Geometry {
                    granule,
                    ipa_bits: vm.stage2.ipa_bits,
                    reason: e.to_string(),
                };
                self.err(vm, vm.pos.stage2_granule, "stage2.granule", kind);
                None
            }
        }
    }

    /// Where the kernel, initrd and device tree go in the VM's RAM.
    fn layout(
        &mut self,
        vm: &VmConfig,
        kernel: &Kernel<'_>,
        initrd: Option<&[u8]>,
    ) -> Option<Layout> {
        let request = LayoutRequest {
            memory: vm.memory,
            text_offset: kernel.header.text_offset,
            image_size: kernel.header.image_size,
            file_size: kernel.data.len() as u64,
            initrd_size: initrd.map(|i| i.len() as u64),
        };
        match place(&request) {
            Ok(l) => Some(l),
            Err(e) => {
                self.err(vm, vm.pos.memory, "memory", ErrorKind::Layout(e));
                None
            }
        }
    }

    /// The VM's device tree.
    fn dtb(
        &mut self,
        vm: &VmConfig,
        layout: &Layout,
        cmdline: &str,
        stage2_granule: Granule,
        pci_window: Option<AddrRange<Ipa>>,
    ) -> Option<Vec<u8>> {
        let input = DtbInput {
            vcpus: vm.vcpus,
            ram: layout.ram,
            cmdline,
            initrd: layout.initrd,
            stage2_granule,
            ipa_bits: vm.stage2.ipa_bits,
            pci_window,
            pmu: platform::pmu::guest_pmu_version(self.host.cpu.dfr0()).is_some(),
        };
        match guest_dtb(&input) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(vm, vm.pos.cmdline, "cmdline", ErrorKind::Dtb(e));
                None
            }
        }
    }
}

/// What the VMs resolved so far took from the host (VMs are placed in config order).
#[derive(Default)]
struct Taken {
    /// Physical CPUs (vCPUs are pinned one to one).
    cpus: u32,
    /// Guest RAM, with each VM's stage-2 table budget.
    ram: u64,
    /// PCI functions (their places on the root bus, in order).
    pci: usize,
    /// Slices of the PCI memory window.
    windows: u64,
    /// Which VM owns each legacy INTx line (SPI) of the root bus.
    intx: Vec<(u32, String)>,
}

// The system: hyp's granule, then each VM on what the earlier ones left.
impl<'c, 'a, F: FileSource + ?Sized> Resolver<'c, 'a, F> {
    /// hyp's own granule: a granule the CPU lacks falls back to `auto`, with the reason.
    /// `None` (error recorded) when the CPU has none at stage 1.
    fn hyp_granule(&mut self) -> (Option<Granule>, Option<GranuleRefusal>) {
        let cpu = &self.host.cpu;
        let auto = cpu.auto(Stage::One);
        let (granule, refused) = match self.cfg.granule {
            GranuleChoice::Fixed(g) => match cpu.stage1(g) {
                Ok(()) => (Some(g), None),
                Err(e) => (auto, Some(e)),
            },
            GranuleChoice::Auto => (auto, None),
        };
        if granule.is_none() {
            self.errors.push(ConfigError {
                file: self.cfg.file.clone(),
                pos: Some(self.cfg.granule_pos),
                vm: None,
                key: Some("hypervisor.granule".into()),
                kind: ErrorKind::NoHypGranule,
            });
        }
        (granule, refused)
    }

    /// Resolves `vm` on what the earlier VMs left of the host: its physical CPUs, its PCI
    /// slots, INTx lines and window, then its RAM and stage-2 tables. Records what it takes
    /// even when it is refused, so that later VMs are checked as if it ran.
    fn vm_on_host(&mut self, vm: &VmConfig, taken: &mut Taken) -> Option<VmPlan<'a>> {
        let host = self.host;
        let free_cpus = host.cpus.saturating_sub(taken.cpus);
        if vm.vcpus > free_cpus {
            let kind = ErrorKind::TooManyVcpus {
                asked: vm.vcpus,
                free: free_cpus,
                host: host.cpus,
            };
            self.err(vm, vm.pos.vcpus, "vcpus", kind);
        }
        let free_ram = host.guest_ram.saturating_sub(taken.ram);
        let cpus = taken.cpus..taken.cpus.saturating_add(vm.vcpus);
        taken.cpus = taken.cpus.saturating_add(vm.vcpus);
        let pci_window = self.pci_window(vm, taken);
        let plan = self.vm(vm, cpus, taken.pci, pci_window);
        taken.pci += vm.pci.len();
        // RAM and the VM's stage-2 tables are both carved from host RAM.
        let tables = plan.as_ref().map_or(0, |p| p.table_budget);
        let needed = vm.memory.saturating_add(tables);
        if needed > free_ram {
            let kind = ErrorKind::OutOfMemory {
                asked: vm.memory,
                tables,
                free: free_ram,
                host: host.guest_ram,
            };
            self.err(vm, vm.pos.memory, "memory", kind);
        }
        taken.ram = taken.ram.saturating_add(needed);
        plan
    }

    /// For a VM that owns PCI functions: its slice of the PCI memory window, and the INTx
    /// line of each function's slot, which no other VM may share. Errors are recorded.
    fn pci_window(&mut self, vm: &VmConfig, taken: &mut Taken) -> Option<AddrRange<Ipa>> {
        if vm.pci.is_empty() {
            return None;
        }
        let (start, size) = pci_mmio_slice(taken.windows);
        taken.windows += 1;
        for i in 0..vm.pci.len() {
            let Some(bdf) = pci::place(taken.pci + i) else {
                break;
            };
            let spi = pci_intx_spi(u32::from(bdf.device), 0);
            match taken.intx.iter().find(|(s, _)| *s == spi) {
                Some((_, other)) if *other != vm.name => {
                    let other = other.clone();
                    let at = vm.pos.pci.get(i).copied().unwrap_or(vm.pos.table);
                    self.err(vm, at, "pci", ErrorKind::PciIntxShared { bdf, spi, other });
                }
                Some(_) => {}
                None => taken.intx.push((spi, vm.name.clone())),
            }
        }
        AddrRange::from_start_len(Ipa::new(start), size).ok()
    }
}

/// The stage-1 granules a VM's `ID_AA64MMFR0_EL1` advertises (a mask of [`Granule::bit`]):
/// the chosen page size when the config names one, every granule the CPU has at stage 1 when
/// `page_size = "kernel"`.
fn advertised_granules(cpu: &CpuFeatures, requested: PageSize, page_size: Granule) -> u8 {
    match requested {
        PageSize::Fixed(_) => page_size.bit(),
        PageSize::Kernel => Granule::ALL
            .into_iter()
            .filter(|&g| cpu.stage1(g).is_ok())
            .fold(0, |m, g| m | g.bit()),
    }
}

/// A VM's PCI functions with their places on the root bus, the first at place `first` (the
/// config check refuses functions past the bus's last slot).
fn place_pci(devices: &[PciDevice], first: usize) -> Vec<(Bdf, PciDevice)> {
    devices
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((pci::place(first + i)?, d.clone())))
        .collect()
}

/// Resolves a parsed config against the host and the files.
pub fn plan_system<'a, F: FileSource + ?Sized>(
    cfg: &SystemConfig,
    files: &'a F,
    host: &Host,
) -> Result<SystemPlan<'a>, Errors> {
    let mut r = Resolver {
        cfg,
        files,
        host,
        errors: Vec::new(),
    };
    let (granule, refused) = r.hyp_granule();
    let mut taken = Taken::default();
    let mut vms = Vec::new();
    for vm in &cfg.vms {
        if let Some(p) = r.vm_on_host(vm, &mut taken) {
            vms.push(p);
        }
    }
    match (granule, r.errors.is_empty()) {
        (Some(granule), true) => Ok(SystemPlan {
            hyp: HypPlan {
                requested: cfg.granule,
                granule,
                refused,
            },
            vms,
        }),
        _ => Err(Errors(r.errors)),
    }
}
/// Parses `text` (named `file` in errors) and resolves it.
pub fn plan_text<'a, F: FileSource + ?Sized>(
    file: &str,
    text: &str,
    files: &'a F,
    host: &Host,
) -> Result<SystemPlan<'a>, Errors> {
    let cfg = parse_config(file, text)?;
    plan_system(&cfg, files, host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciModel;

    #[test]
    fn advertised_granules_follow_the_choice_or_the_cpu() {
        let max = CpuFeatures::profile("max").unwrap();
        let no16 = max.hide(Granule::K16.bit());
        // A named page size advertises the one chosen (here a fallback), not the one asked.
        let fixed = PageSize::Fixed(Granule::K16);
        assert_eq!(
            advertised_granules(&max, fixed, Granule::K4),
            Granule::K4.bit()
        );
        // "kernel" advertises every granule the CPU has at stage 1, hidden ones excepted.
        let all = Granule::K4.bit() | Granule::K16.bit() | Granule::K64.bit();
        assert_eq!(
            advertised_granules(&max, PageSize::Kernel, Granule::K4),
            all
        );
        assert_eq!(
            advertised_granules(&no16, PageSize::Kernel, Granule::K64),
            Granule::K4.bit() | Granule::K64.bit()
        );
    }

    #[test]
    fn pci_functions_are_placed_from_the_first_free_slot() {
        let disk = PciDevice {
            model: PciModel::VirtioBlk,
            file: Some("d.img".into()),
            readonly: true,
        };
        let net = PciDevice {
            model: PciModel::VirtioNet,
            file: None,
            readonly: false,
        };
        let placed = place_pci(&[disk.clone(), net.clone()], 2);
        let slots: Vec<_> = placed.iter().map(|(b, d)| (b.to_string(), d)).collect();
        assert_eq!(slots, [("00:03.0".into(), &disk), ("00:04.0".into(), &net)]);
        // Past the root bus's last slot nothing is placed (the config check refuses it).
        assert!(place_pci(&[net], crate::pci::MAX_PCI_DEVICES).is_empty());
    }
}
