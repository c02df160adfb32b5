//! The system config: one TOML file, a `[hypervisor]` table and zero or more `[[vm]]` tables.
//!
//! ```toml
//! [hypervisor]
//! granule = "4k"                 # hyp's own stage-1 granule: 4k | 16k | 64k | auto (default auto)
//!
//! [[vm]]
//! name = "web"                   # unique; [a-z0-9-]+, at most 32 characters
//! vcpus = 2                      # default 1; pinned one to one to physical CPUs
//! memory = "512M"                # K/M/G/T suffixes (powers of 1024) or bytes; multiple of 2M
//! kernel = "guests/Image-16k"    # arm64 Image, plain or gzip; relative to this file
//! initrd = "guests/initramfs.cpio.gz"   # optional
//! cmdline = "console=ttyAMA0"    # optional; hyp appends arm64.pagesize=
//! page_size = "16k"              # 4k | 16k | 64k | kernel (default kernel: the Image header's)
//! fallback = ["4k"]              # optional, tried in order when page_size cannot be used
//! [vm.stage2]
//! granule = "16k"                # 4k | 16k | 64k | page_size (default page_size)
//! ipa_bits = 40                  # 32..PARange (default 40)
//! mapping = "eager"              # eager | lazy (default eager)
//! table_memory = "256K"          # lazy only: cap the VM's stage-2 tables (default: the
//!                                # worst case for its RAM, which never runs out)
//! ```
//!
//! Parsing ([`parse_config`]) checks everything that needs neither the CPU nor the files;
//! [`crate::plan`] checks the rest. Every error names the file, the line, the VM and the key.

use crate::layout::{MEMORY_ALIGN, RAM_BASE};
use crate::pci::{PciDevice, PciModel, MAX_PCI_DEVICES};
use crate::size::{format_size, parse_size, SizeError};
use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use platform::virt::MAX_VCPUS;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use stage2::Granule;
use toml::Spanned;

/// The default `stage2.ipa_bits`.
pub const DEFAULT_IPA_BITS: u32 = 40;
/// The narrowest IPA space accepted (VTCR_EL2.T0SZ ≤ 32 for every granule's start level).
pub const MIN_IPA_BITS: u32 = 32;
/// The widest IPA space the Arm ARM defines (FEAT_LPA/LPA2).
pub const MAX_IPA_BITS: u32 = 52;
/// The longest VM name.
pub const MAX_NAME_LEN: usize = 32;

/// `[hypervisor] granule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GranuleChoice {
    /// 4K where the CPU has it, else 16K, else 64K.
    Auto,
    /// This granule (falls back to `auto` with a note when the CPU lacks it).
    Fixed(Granule),
}

impl fmt::Display for GranuleChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GranuleChoice::Auto => f.write_str("auto"),
            GranuleChoice::Fixed(g) => f.write_str(g.name()),
        }
    }
}

/// `page_size` of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// This granule.
    Fixed(Granule),
    /// Whatever the kernel's Image header says; a header that leaves it unspecified takes the
    /// first granule the CPU supports at stage 1 in the order 4K, 16K, 64K.
    Kernel,
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageSize::Fixed(g) => f.write_str(g.name()),
            PageSize::Kernel => f.write_str("kernel"),
        }
    }
}

/// `stage2.granule` of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage2Granule {
    /// This granule.
    Fixed(Granule),
    /// The guest's resolved page size.
    PageSize,
}

impl fmt::Display for Stage2Granule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage2Granule::Fixed(g) => f.write_str(g.name()),
            Stage2Granule::PageSize => f.write_str("page_size"),
        }
    }
}

/// `stage2.mapping` of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// All RAM mapped before the first vCPU runs.
    Eager,
    /// Mapped on the first stage-2 fault of each page or block.
    Lazy,
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mapping::Eager => "eager",
            Mapping::Lazy => "lazy",
        })
    }
}

/// A line and column (1-based) in the config file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line, 1-based.
    pub line: u32,
    /// Column in characters, 1-based.
    pub column: u32,
}

/// Where each key of a `[[vm]]` table was written (for errors found after parsing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmPos {
    /// The `[[vm]]` table itself.
    pub table: Pos,
    /// `name`.
    pub name: Pos,
    /// `vcpus` (the table when absent).
    pub vcpus: Pos,
    /// `memory`.
    pub memory: Pos,
    /// `kernel`.
    pub kernel: Pos,
    /// `initrd`.
    pub initrd: Pos,
    /// `cmdline`.
    pub cmdline: Pos,
    /// `page_size`.
    pub page_size: Pos,
    /// `fallback`.
    pub fallback: Pos,
    /// `stage2.granule`.
    pub stage2_granule: Pos,
    /// `stage2.ipa_bits`.
    pub ipa_bits: Pos,
    /// `stage2.table_memory`.
    pub table_memory: Pos,
    /// Byte range of the `kernel` string value (with quotes), for the bundle's rewrite.
    pub kernel_span: Range<usize>,
    /// Byte range of the `initrd` string value, if any.
    pub initrd_span: Option<Range<usize>>,
    /// Each `[[vm.pci]]` entry (its `file` when it has one), in order.
    pub pci: Vec<Pos>,
}

/// `[vm.stage2]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Config {
    /// The stage-2 granule.
    pub granule: Stage2Granule,
    /// IPA size in bits.
    pub ipa_bits: u32,
    /// Eager or lazy mapping.
    pub mapping: Mapping,
    /// A cap on the bytes of stage-2 tables (`None`: the geometry's worst case for the
    /// VM's RAM, [`stage2::Geometry::table_budget`]).
    pub table_memory: Option<u64>,
}

/// One validated `[[vm]]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Unique name, `[a-z0-9-]+`.
    pub name: String,
    /// vCPUs (≥ 1).
    pub vcpus: u32,
    /// RAM in bytes (a multiple of 2 MiB, fits the IPA space above 0x4000_0000).
    pub memory: u64,
    /// The kernel's path as written (relative to the config file).
    pub kernel: String,
    /// The initrd's path as written.
    pub initrd: Option<String>,
    /// The user's command line (without `arm64.pagesize=`).
    pub cmdline: String,
    /// The guest page size asked for.
    pub page_size: PageSize,
    /// Page sizes to try, in order, when `page_size` cannot be used.
    pub fallback: Vec<Granule>,
    /// `[vm.stage2]`.
    pub stage2: Stage2Config,
    /// `[[vm.pci]]`: the PCI functions the VM owns, in order.
    pub pci: Vec<PciDevice>,
    /// Where the keys were written.
    pub pos: VmPos,
}

/// A validated system config (before the CPU and the files are looked at).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    /// The file name used in error messages.
    pub file: String,
    /// `[hypervisor] granule`.
    pub granule: GranuleChoice,
    /// Where `[hypervisor] granule` was written.
    pub granule_pos: Pos,
    /// The VMs, in file order.
    pub vms: Vec<VmConfig>,
}

impl SystemConfig {
    /// Every file the VMs reference (kernels and initrds), as written, without duplicates,
    /// in file order.
    pub fn referenced_files(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for vm in &self.vms {
            for p in core::iter::once(vm.kernel.as_str()).chain(vm.initrd.as_deref()) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// What is wrong, with the data to say how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// TOML syntax, a wrong type, an unknown or missing key (toml and serde's message).
    Toml {
        /// The message.
        message: String,
    },
    /// A string key with a value outside its set.
    BadValue {
        /// As written.
        value: String,
        /// The accepted values, e.g. `"4k, 16k, 64k or auto"`.
        expected: &'static str,
    },
    /// A VM name outside `[a-z0-9-]{1,32}`.
    BadName {
        /// As written.
        name: String,
    },
    /// Two VMs with one name.
    DuplicateName {
        /// The name.
        name: String,
        /// Line of the first VM with it.
        first_line: u32,
    },
    /// A size that does not parse.
    BadSize(SizeError),
    /// `memory = 0`.
    ZeroMemory,
    /// `memory` not a multiple of 2 MiB.
    MemoryNotAligned {
        /// Bytes.
        memory: u64,
    },
    /// `memory` beyond the IPA space.
    MemoryBeyondIpa {
        /// Bytes.
        memory: u64,
        /// `stage2.ipa_bits`.
        ipa_bits: u32,
    },
    /// `vcpus` 0 or negative.
    ZeroVcpus {
        /// As written.
        value: i64,
    },
    /// More vCPUs than the GIC redistributor window holds.
    TooManyVcpusForGic {
        /// As written.
        value: i64,
    },
    /// `ipa_bits` outside 32..=52.
    IpaBitsRange {
        /// As written.
        value: i64,
    },
    /// A fallback listed twice.
    DuplicateFallback {
        /// The granule.
        granule: Granule,
    },
    /// An empty path.
    EmptyPath,
    /// The whole system needs more vCPUs than there are physical CPUs.
    TooManyVcpus {
        /// This VM's vCPUs.
        asked: u32,
        /// Physical CPUs not pinned by earlier VMs.
        free: u32,
        /// Physical CPUs.
        host: u32,
    },
    /// The whole system needs more RAM than the host has for guests.
    OutOfMemory {
        /// This VM's memory.
        asked: u64,
        /// Its stage-2 table budget (0 when its plan failed earlier).
        tables: u64,
        /// Guest RAM not used by earlier VMs.
        free: u64,
        /// Guest RAM in total.
        host: u64,
    },
    /// `stage2.table_memory` with eager mapping, below what mapping all RAM takes.
    TableMemoryEager {
        /// As written.
        asked: u64,
        /// What an eager map of the VM's RAM needs.
        needed: u64,
    },
    /// `stage2.table_memory` below the root tables and one table per level.
    TableMemoryTooSmall {
        /// As written.
        asked: u64,
        /// The least that can map one page.
        min: u64,
    },
    /// `ipa_bits` beyond the CPU's PARange.
    IpaBeyondPaRange {
        /// As written.
        ipa_bits: u32,
        /// PA size the CPU supports.
        pa_bits: u32,
        /// `ID_AA64MMFR0_EL1.PARange`.
        parange: u8,
    },
    /// A referenced file does not exist (or cannot be read).
    MissingFile {
        /// The path as written.
        path: String,
    },
    /// A referenced file is empty.
    EmptyFile {
        /// The path as written.
        path: String,
    },
    /// The kernel is not a loadable Image.
    Image(crate::image::ImageError),
    /// The command line is not acceptable.
    Cmdline(crate::cmdline::CmdlineError),
    /// The explicit stage-2 granule is not supported.
    Stage2Granule(stage2::GranuleRefusal),
    /// The stage-2 tables cannot be built with this granule and IPA size.
    Geometry {
        /// The granule.
        granule: Granule,
        /// IPA bits.
        ipa_bits: u32,
        /// Why (the geometry error's message).
        reason: String,
    },
    /// No page size in `page_size` + `fallback` can be used.
    NoPageSize(crate::plan::Decision),
    /// The CPU supports no granule at stage 1 (or all are hidden).
    NoHypGranule,
    /// The kernel, initrd and DTB do not fit.
    Layout(crate::layout::LayoutError),
    /// The device tree cannot be written.
    Dtb(crate::fdt::DtbError),
    /// A `[[vm.pci]]` model backed by a file has none.
    PciNeedsFile {
        /// The model.
        model: PciModel,
    },
    /// A `[[vm.pci]]` model that takes no file has one (or `readonly`).
    PciTakesNoFile {
        /// The model.
        model: PciModel,
        /// The key written: `file` or `readonly`.
        key: &'static str,
    },
    /// More `[[vm.pci]]` entries in the system than the root bus has slots.
    TooManyPciDevices,
    /// A VM owns PCI functions but the host has no SMMUv3 to confine their DMA.
    PciNoSmmu,
    /// A function's legacy INTx line is already another VM's.
    PciIntxShared {
        /// The function's place.
        bdf: crate::pci::Bdf,
        /// The SPI its INTA is wired to.
        spi: u32,
        /// The VM owning that line.
        other: String,
    },
    /// A VM owns PCI functions and maps its RAM lazily.
    PciLazy,
    /// The SMMU cannot walk the VM's stage 2.
    Smmu(smmu::Refusal),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        // One method per family of errors. This match stays exhaustive: a new variant must be
        // given a family here, and a message there (the message test lists every variant).
        match self {
            Toml { .. }
            | BadValue { .. }
            | BadName { .. }
            | DuplicateName { .. }
            | DuplicateFallback { .. }
            | EmptyPath => self.fmt_value(f),
            BadSize(_)
            | ZeroMemory
            | MemoryNotAligned { .. }
            | MemoryBeyondIpa { .. }
            | ZeroVcpus { .. }
            | TooManyVcpusForGic { .. }
            | IpaBitsRange { .. } => self.fmt_quantity(f),
            TooManyVcpus { .. }
            | OutOfMemory { .. }
            | TableMemoryEager { .. }
            | TableMemoryTooSmall { .. } => self.fmt_capacity(f),
            IpaBeyondPaRange { .. }
            | Stage2Granule(_)
            | Geometry { .. }
            | NoPageSize(_)
            | NoHypGranule => self.fmt_cpu(f),
            MissingFile { .. } | EmptyFile { .. } | Image(_) | Cmdline(_) | Layout(_) | Dtb(_) => {
                self.fmt_guest(f)
            }
            PciNeedsFile { .. }
            | PciTakesNoFile { .. }
            | TooManyPciDevices
            | PciNoSmmu
            | PciIntxShared { .. }
            | PciLazy
            | Smmu(_) => self.fmt_pci(f),
        }
    }
}

impl ErrorKind {
    /// A variant that [`fmt::Display`] routed to the wrong family: shown as data rather than
    /// lost (the message test covers every variant, so this is never reached).
    fn fmt_misrouted(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }

    /// A value as written: its syntax, its set, its uniqueness.
    fn fmt_value(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            Toml { message } => f.write_str(message.trim_end()),
            BadValue { value, expected } => {
                write!(f, "\"{value}\" is not valid; write {expected}")
            }
            BadName { name } => write!(
                f,
                "\"{name}\" is not a valid name; use 1 to {MAX_NAME_LEN} characters from a-z, \
                 0-9 and -, e.g. \"web-1\""
            ),
            DuplicateName { name, first_line } => write!(
                f,
                "\"{name}\" is already the name of the VM at line {first_line}; give each VM \
                 its own name"
            ),
            DuplicateFallback { granule } => write!(
                f,
                "\"{}\" is listed twice; list each page size once",
                granule.name()
            ),
            EmptyPath => f.write_str("the path is empty; name a file relative to the config"),
            _ => self.fmt_misrouted(f),
        }
    }

    /// A size or count outside what any machine accepts (`memory`, `vcpus`, `ipa_bits`).
    fn fmt_quantity(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            BadSize(e) => fmt::Display::fmt(e, f),
            ZeroMemory => f.write_str("a VM needs memory; write a size such as \"512M\""),
            MemoryNotAligned { memory } => write!(
                f,
                "{memory} bytes is not a multiple of 2M; round it, e.g. \"{}\"",
                format_size(
                    (memory / MEMORY_ALIGN)
                        .saturating_add(1)
                        .saturating_mul(MEMORY_ALIGN)
                )
            ),
            MemoryBeyondIpa { memory, ipa_bits } => {
                let max = (1u64 << ipa_bits).saturating_sub(RAM_BASE);
                write!(
                    f,
                    "{} of RAM from {RAM_BASE:#x} does not fit in a {ipa_bits}-bit IPA space \
                     (at most {}); use less memory or raise stage2.ipa_bits",
                    format_size(*memory),
                    format_size(max)
                )
            }
            ZeroVcpus { value } => write!(
                f,
                "{value} vCPUs: a VM needs at least one; write vcpus = 1 or more"
            ),
            TooManyVcpusForGic { value } => write!(
                f,
                "{value} vCPUs: at most {MAX_VCPUS} fit the GICv3 redistributor window; use \
                 fewer"
            ),
            IpaBitsRange { value } => write!(
                f,
                "{value} is outside {MIN_IPA_BITS}..={MAX_IPA_BITS}; write e.g. ipa_bits = 40"
            ),
            _ => self.fmt_misrouted(f),
        }
    }

    /// More than the host has left: physical CPUs, guest RAM, stage-2 table memory.
    fn fmt_capacity(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            TooManyVcpus { asked, free, host } => write!(
                f,
                "{asked} vCPUs asked but only {free} of the {host} physical CPUs are left \
                 (vCPUs are pinned one to one); lower vcpus or run with more CPUs (--smp)"
            ),
            OutOfMemory {
                asked,
                tables,
                free,
                host,
            } => write!(
                f,
                "{} asked (plus {} of stage-2 tables) but only {} of the {} of guest RAM is \
                 left; lower memory or give the machine more RAM (--mem)",
                format_size(*asked),
                format_size(*tables),
                format_size(*free),
                format_size(*host)
            ),
            TableMemoryEager { asked, needed } => write!(
                f,
                "{} is less than the {} of stage-2 tables that eager mapping of this VM's RAM \
                 takes; remove table_memory or use mapping = \"lazy\"",
                format_size(*asked),
                format_size(*needed)
            ),
            TableMemoryTooSmall { asked, min } => write!(
                f,
                "{} cannot hold the root tables and one table per level ({}); write at least \
                 table_memory = \"{}\"",
                format_size(*asked),
                format_size(*min),
                format_size(*min)
            ),
            _ => self.fmt_misrouted(f),
        }
    }

    /// What the CPU cannot do: its PA size, its granules at stage 1 and 2.
    fn fmt_cpu(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            IpaBeyondPaRange {
                ipa_bits,
                pa_bits,
                parange,
            } => write!(
                f,
                "{ipa_bits} bits is beyond the CPU's physical address size: \
                 ID_AA64MMFR0_EL1.PARange = {parange:#06b} ({pa_bits} bits); use ipa_bits = \
                 {pa_bits} or less"
            ),
            Stage2Granule(e) => write!(
                f,
                "{e}; choose a granule the CPU supports at stage 2 or \"page_size\""
            ),
            Geometry {
                granule,
                ipa_bits,
                reason,
            } => write!(
                f,
                "no stage-2 tables for {granule} with a {ipa_bits}-bit IPA: {reason}"
            ),
            NoPageSize(d) => write!(
                f,
                "no usable page size: {}; add a fallback the kernel and CPU support (e.g. \
                 fallback = [\"4k\"]) or use another kernel or CPU",
                d.refusals()
            ),
            NoHypGranule => f.write_str(
                "the CPU supports no translation granule at stage 1 (or all are hidden)",
            ),
            _ => self.fmt_misrouted(f),
        }
    }

    /// The guest's files and what is built from them: kernel, initrd, command line, layout,
    /// device tree.
    fn fmt_guest(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            MissingFile { path } => write!(
                f,
                "file \"{path}\" not found; paths are relative to the config file"
            ),
            EmptyFile { path } => write!(f, "file \"{path}\" is empty"),
            Image(e) => fmt::Display::fmt(e, f),
            Cmdline(e) => fmt::Display::fmt(e, f),
            Layout(e) => fmt::Display::fmt(e, f),
            Dtb(e) => fmt::Display::fmt(e, f),
            _ => self.fmt_misrouted(f),
        }
    }

    /// `[[vm.pci]]`: the entries, the root bus, the SMMU.
    fn fmt_pci(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            PciNeedsFile { model } => write!(
                f,
                "{model} is backed by a file; add file = \"disk.img\" (relative to the config)"
            ),
            PciTakesNoFile { model, key } => {
                write!(f, "{model} takes no backing file; remove {key}")
            }
            PciIntxShared { bdf, spi, other } => write!(
                f,
                "{bdf}'s INTx is wired to SPI {spi}, which a device of vm \"{other}\" already \
                 uses: the root bus has four INTx lines, each given to one VM (no MSI without a \
                 virtual ITS), and a VM's devices take one line per slot; give the devices to \
                 fewer VMs"
            ),
            PciNoSmmu => f.write_str(
                "the host has no SMMUv3 to confine the device's DMA; run QEMU with \
                 -M virt,iommu=smmuv3 (./run adds it when a config assigns devices)",
            ),
            PciLazy => f.write_str(
                "a VM that owns PCI devices keeps all its RAM mapped (devices may DMA to any of \
                 it at any time); use mapping = \"eager\"",
            ),
            Smmu(r) => write!(
                f,
                "{r}; pick a stage-2 granule the SMMU walks, or stage2.granule = \"page_size\" \
                 with a fallback"
            ),
            TooManyPciDevices => write!(
                f,
                "more than {MAX_PCI_DEVICES} PCI devices in the system: the root bus has slots \
                 1 to 31 for them; assign fewer"
            ),
            _ => self.fmt_misrouted(f),
        }
    }
}

/// One error: where, which VM, which key, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// Where (when known).
    pub pos: Option<Pos>,
    /// The VM's name (when the error is inside a `[[vm]]`).
    pub vm: Option<String>,
    /// The key, e.g. `memory` or `stage2.granule`.
    pub key: Option<String>,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        f.write_str(": ")?;
        if let Some(vm) = &self.vm {
            write!(f, "vm \"{vm}\": ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// Every error found, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errors(pub Vec<ConfigError>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

/// Line and column (1-based) of byte `offset` in `text`.
pub fn pos_of(text: &str, offset: usize) -> Pos {
    let offset = offset.min(text.len());
    let before = text.as_bytes().get(..offset).unwrap_or_default();
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = text
        .get(line_start..offset)
        .map_or(offset - line_start, |s| s.chars().count())
        + 1;
    Pos {
        line: line as u32,
        column: column as u32,
    }
}

// ---- raw serde types ----

/// A size as written: an integer or a string.
#[derive(Clone, Debug)]
enum RawSize {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a string such as \"512M\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Int)
                    .map_err(|_| E::custom("size overflows"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    hypervisor: Option<RawHypervisor>,
    #[serde(default)]
    vm: Vec<Spanned<RawVm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHypervisor {
    granule: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Spanned<String>,
    vcpus: Option<Spanned<i64>>,
    memory: Spanned<RawSize>,
    kernel: Spanned<String>,
    initrd: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
    page_size: Option<Spanned<String>>,
    fallback: Option<Spanned<Vec<Spanned<String>>>>,
    stage2: Option<Spanned<RawStage2>>,
    pci: Option<Vec<Spanned<RawPci>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPci {
    device: Spanned<String>,
    file: Option<Spanned<String>>,
    readonly: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage2 {
    granule: Option<Spanned<String>>,
    ipa_bits: Option<Spanned<i64>>,
    mapping: Option<Spanned<String>>,
    table_memory: Option<Spanned<RawSize>>,
}

/// Only the names of the VMs, to say which VM a structural error is in.
#[derive(Deserialize)]
struct LooseSystem {
    #[serde(default)]
    vm: Vec<Spanned<toml::Table>>,
}

struct Ctx<'t> {
    file: &'t str,
    text: &'t str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn pos(&self, span: Range<usize>) -> Pos {
        pos_of(self.text, span.start)
    }

    fn err(&mut self, span: Range<usize>, vm: Option<&str>, key: &str, kind: ErrorKind) {
        let pos = Some(self.pos(span));
        self.errors.push(ConfigError {
            file: self.file.into(),
            pos,
            vm: vm.map(Into::into),
            key: Some(key.into()),
            kind,
        });
    }
}

fn granule_of(s: &str) -> Option<Granule> {
    match s {
        "4k" | "4K" => Some(Granule::K4),
        "16k" | "16K" => Some(Granule::K16),
        "64k" | "64K" => Some(Granule::K64),
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The error for a document that serde could not read, placed and attributed to a VM where
/// possible.
fn structural_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let pos = e.span().map(|s| pos_of(text, s.start));
    let mut vm = None;
    // The table the error is in: the last header line before it (`[vm.stage2]` → `stage2.`).
    let table = e
        .span()
        .and_then(|s| text.get(..s.start))
        .and_then(|before| {
            before
                .lines()
                .map(str::trim_start)
                .rfind(|l| l.starts_with('['))
        })
        .map(|h| {
            h.split(']')
                .next()
                .unwrap_or_default()
                .replace([' ', '['], "")
        });
    let prefix = match table.as_deref() {
        Some("vm.stage2") => "stage2.",
        Some("hypervisor") => "hypervisor.",
        _ => "",
    };
    if let (Some(span), Ok(loose)) = (e.span(), toml::from_str::<LooseSystem>(text)) {
        // A `[[vm]]` span covers its header only: the VM runs to the next table header that
        // is not one of its own sub-tables (`[vm.stage2]`).
        for t in &loose.vm {
            let start = t.span().start;
            let inside = start <= span.start
                && text.get(start..span.start).is_some_and(|between| {
                    between.lines().skip(1).all(|l| {
                        let l = l.trim_start();
                        !l.starts_with('[') || l.starts_with("[vm.") || l.starts_with("[ vm.")
                    })
                });
            if inside {
                vm = t
                    .get_ref()
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(Into::into);
            }
        }
    }
    // serde names the key in "unknown field `x`" and "missing field `x`".
    let key = ["unknown field `", "missing field `"].iter().find_map(|p| {
        let rest = e.message().split_once(p)?.1;
        Some(alloc::format!("{prefix}{}", rest.split_once('`')?.0))
    });
    ConfigError {
        file: file.into(),
        pos,
        vm,
        key,
        kind: ErrorKind::Toml {
            message: e.message().into(),
        },
    }
}

/// Parses and validates a system config. `file` names it in errors.
pub fn parse_config(file: &str, text: &str) -> Result<SystemConfig, Errors> {
    let raw: RawSystem =
        toml::from_str(text).map_err(|e| Errors(alloc::vec![structural_error(file, text, &e)]))?;
    let mut cx = Ctx {
        file,
        text,
        errors: Vec::new(),
    };
    let mut granule = GranuleChoice::Auto;
    let mut granule_pos = Pos::default();
    if let Some(g) = raw.hypervisor.and_then(|h| h.granule) {
        granule_pos = cx.pos(g.span());
        match g.get_ref().as_str() {
            "auto" => {}
            s => match granule_of(s) {
                Some(x) => granule = GranuleChoice::Fixed(x),
                None => cx.err(
                    g.span(),
                    None,
                    "hypervisor.granule",
                    ErrorKind::BadValue {
                        value: s.into(),
                        expected: "\"4k\", \"16k\", \"64k\" or \"auto\"",
                    },
                ),
            },
        }
    }
    let mut vms: Vec<VmConfig> = Vec::new();
    let mut pci_seen = 0;
    for raw_vm in raw.vm {
        let name = raw_vm.get_ref().name.get_ref().clone();
        for entry in raw_vm.get_ref().pci.iter().flatten() {
            pci_seen += 1;
            if pci_seen == MAX_PCI_DEVICES + 1 {
                cx.err(
                    entry.span(),
                    Some(&name),
                    "pci",
                    ErrorKind::TooManyPciDevices,
                );
            }
        }
        if let Some(vm) = vm_config(&mut cx, raw_vm, &vms) {
            vms.push(vm);
        }
    }
    if cx.errors.is_empty() {
        Ok(SystemConfig {
            file: file.into(),
            granule,
            granule_pos,
            vms,
        })
    } else {
        Err(Errors(cx.errors))
    }
}

/// One `[[vm]]` table, read key by key by a [`VmReader`]; `None` when any key is in error
/// (each error is in `cx`).
fn vm_config(cx: &mut Ctx<'_>, raw: Spanned<RawVm>, earlier: &[VmConfig]) -> Option<VmConfig> {
    let before = cx.errors.len();
    let table = cx.pos(raw.span());
    let raw = raw.into_inner();
    let name = raw.name.get_ref().clone();
    let mut r = VmReader {
        pos: VmPos {
            table,
            name: cx.pos(raw.name.span()),
            ..VmPos::default()
        },
        cx,
        vm: Some(&name),
    };
    r.name(&raw.name, earlier);
    let vcpus = r.vcpus(raw.vcpus.as_ref());
    // stage2 first: memory is checked against ipa_bits.
    let (stage2, ipa_ok) = r.stage2(raw.stage2.as_ref());
    let memory = r.memory(&raw.memory, stage2.ipa_bits, ipa_ok);
    r.kernel(&raw.kernel);
    let initrd = r.initrd(raw.initrd.as_ref());
    let cmdline = r.cmdline(raw.cmdline.as_ref());
    let page_size = r.page_size(raw.page_size.as_ref());
    let fallback = r.fallback(raw.fallback.as_ref());
    let pci = r.pci(raw.pci.as_deref().unwrap_or_default());
    let pos = r.pos;
    if cx.errors.len() != before {
        return None;
    }
    Some(VmConfig {
        name,
        vcpus,
        memory,
        kernel: raw.kernel.into_inner(),
        initrd,
        cmdline,
        page_size,
        fallback,
        stage2,
        pci,
        pos,
    })
}

/// A size as written: a number of bytes, or a string with an optional K/M/G/T suffix.
fn read_size(raw: &RawSize) -> Result<u64, SizeError> {
    match raw {
        RawSize::Int(v) if *v < 0 => Err(SizeError::Negative { value: *v }),
        RawSize::Int(v) => Ok(*v as u64),
        RawSize::Str(s) => parse_size(s),
    }
}

/// Reads the keys of one `[[vm]]` table in a fixed order (the order its errors are listed
/// in), recording where each was written (the table itself for an absent key) and each error
/// with the VM's name. A key in error reads as its default.
struct VmReader<'c, 't, 'n> {
    cx: &'c mut Ctx<'t>,
    vm: Option<&'n str>,
    pos: VmPos,
}

impl VmReader<'_, '_, '_> {
    fn at(&self, span: Range<usize>) -> Pos {
        self.cx.pos(span)
    }

    fn err(&mut self, span: Range<usize>, key: &str, kind: ErrorKind) {
        self.cx.err(span, self.vm, key, kind);
    }

    /// `name`: `[a-z0-9-]{1,32}`, and no earlier VM's.
    fn name(&mut self, name: &Spanned<String>, earlier: &[VmConfig]) {
        let n = name.get_ref();
        if !valid_name(n) {
            self.err(name.span(), "name", ErrorKind::BadName { name: n.clone() });
        } else if let Some(first) = earlier.iter().find(|v| v.name == *n) {
            let kind = ErrorKind::DuplicateName {
                name: n.clone(),
                first_line: first.pos.name.line,
            };
            self.err(name.span(), "name", kind);
        }
    }

    /// `vcpus`: 1 (the default) to [`MAX_VCPUS`].
    fn vcpus(&mut self, raw: Option<&Spanned<i64>>) -> u32 {
        self.pos.vcpus = self.pos.table;
        let Some(v) = raw else {
            return 1;
        };
        self.pos.vcpus = self.at(v.span());
        let n = *v.get_ref();
        if n < 1 {
            self.err(v.span(), "vcpus", ErrorKind::ZeroVcpus { value: n });
        } else if n > i64::from(MAX_VCPUS) {
            self.err(
                v.span(),
                "vcpus",
                ErrorKind::TooManyVcpusForGic { value: n },
            );
        } else {
            return n as u32;
        }
        1
    }

    /// `[vm.stage2]`, and whether its `ipa_bits` is valid (memory is checked against it only
    /// then).
    fn stage2(&mut self, raw: Option<&Spanned<RawStage2>>) -> (Stage2Config, bool) {
        let mut stage2 = Stage2Config {
            granule: Stage2Granule::PageSize,
            ipa_bits: DEFAULT_IPA_BITS,
            mapping: Mapping::Eager,
            table_memory: None,
        };
        self.pos.stage2_granule = self.pos.table;
        self.pos.ipa_bits = self.pos.table;
        self.pos.table_memory = self.pos.table;
        let Some(s2) = raw else {
            return (stage2, true);
        };
        let s2r = s2.get_ref();
        self.pos.stage2_granule = self.at(s2.span());
        self.pos.ipa_bits = self.at(s2.span());
        if let Some(g) = &s2r.granule {
            self.pos.stage2_granule = self.at(g.span());
            stage2.granule = self.stage2_granule(g).unwrap_or(stage2.granule);
        }
        let mut ipa_ok = true;
        if let Some(b) = &s2r.ipa_bits {
            self.pos.ipa_bits = self.at(b.span());
            match self.ipa_bits(b) {
                Some(n) => stage2.ipa_bits = n,
                None => ipa_ok = false,
            }
        }
        if let Some(m) = &s2r.mapping {
            stage2.mapping = self.mapping(m).unwrap_or(stage2.mapping);
        }
        if let Some(t) = &s2r.table_memory {
            self.pos.table_memory = self.at(t.span());
            match read_size(t.get_ref()) {
                Ok(b) => stage2.table_memory = Some(b),
                Err(e) => self.err(t.span(), "stage2.table_memory", ErrorKind::BadSize(e)),
            }
        }
        (stage2, ipa_ok)
    }

    /// `stage2.granule`: a granule or `"page_size"`.
    fn stage2_granule(&mut self, g: &Spanned<String>) -> Option<Stage2Granule> {
        match g.get_ref().as_str() {
            "page_size" => Some(Stage2Granule::PageSize),
            s => {
                let x = granule_of(s).map(Stage2Granule::Fixed);
                if x.is_none() {
                    let kind = ErrorKind::BadValue {
                        value: s.into(),
                        expected: "\"4k\", \"16k\", \"64k\" or \"page_size\"",
                    };
                    self.err(g.span(), "stage2.granule", kind);
                }
                x
            }
        }
    }

    /// `stage2.ipa_bits`: [`MIN_IPA_BITS`] to [`MAX_IPA_BITS`].
    fn ipa_bits(&mut self, b: &Spanned<i64>) -> Option<u32> {
        let n = *b.get_ref();
        if (i64::from(MIN_IPA_BITS)..=i64::from(MAX_IPA_BITS)).contains(&n) {
            return Some(n as u32);
        }
        self.err(
            b.span(),
            "stage2.ipa_bits",
            ErrorKind::IpaBitsRange { value: n },
        );
        None
    }

    /// `stage2.mapping`: `"eager"` or `"lazy"`.
    fn mapping(&mut self, m: &Spanned<String>) -> Option<Mapping> {
        match m.get_ref().as_str() {
            "eager" => Some(Mapping::Eager),
            "lazy" => Some(Mapping::Lazy),
            s => {
                let kind = ErrorKind::BadValue {
                    value: s.into(),
                    expected: "\"eager\" or \"lazy\"",
                };
                self.err(m.span(), "stage2.mapping", kind);
                None
            }
        }
    }

    /// `memory`: a size, not 0, a multiple of 2 MiB, and inside the IPA space when `ipa_bits`
    /// is valid. 0 after an error.
    fn memory(&mut self, raw: &Spanned<RawSize>, ipa_bits: u32, ipa_ok: bool) -> u64 {
        self.pos.memory = self.at(raw.span());
        let span = raw.span();
        let kind = match read_size(raw.get_ref()) {
            Err(e) => ErrorKind::BadSize(e),
            Ok(0) => ErrorKind::ZeroMemory,
            Ok(m) if m % MEMORY_ALIGN != 0 => ErrorKind::MemoryNotAligned { memory: m },
            Ok(m) => {
                let fits = RAM_BASE
                    .checked_add(m)
                    .is_some_and(|end| end <= 1u64 << ipa_bits);
                if !fits && ipa_ok {
                    let kind = ErrorKind::MemoryBeyondIpa {
                        memory: m,
                        ipa_bits,
                    };
                    self.err(span, "memory", kind);
                }
                return m;
            }
        };
        self.err(span, "memory", kind);
        0
    }

    /// `kernel`: a path that is not empty (the plan reads the file).
    fn kernel(&mut self, k: &Spanned<String>) {
        self.pos.kernel = self.at(k.span());
        self.pos.kernel_span = k.span();
        if k.get_ref().trim().is_empty() {
            self.err(k.span(), "kernel", ErrorKind::EmptyPath);
        }
    }

    /// `initrd`: absent, or a path that is not empty.
    fn initrd(&mut self, raw: Option<&Spanned<String>>) -> Option<String> {
        let i = raw?;
        self.pos.initrd = self.at(i.span());
        self.pos.initrd_span = Some(i.span());
        if i.get_ref().trim().is_empty() {
            self.err(i.span(), "initrd", ErrorKind::EmptyPath);
        }
        Some(i.get_ref().clone())
    }

    /// `cmdline`: characters Linux takes (empty when absent).
    fn cmdline(&mut self, raw: Option<&Spanned<String>>) -> String {
        self.pos.cmdline = self.pos.table;
        let Some(c) = raw else {
            return String::new();
        };
        self.pos.cmdline = self.at(c.span());
        if let Err(e) = crate::cmdline::check_chars(c.get_ref()) {
            self.err(c.span(), "cmdline", ErrorKind::Cmdline(e));
        }
        c.get_ref().clone()
    }

    /// `page_size`: a granule or `"kernel"` (the default).
    fn page_size(&mut self, raw: Option<&Spanned<String>>) -> PageSize {
        self.pos.page_size = self.pos.table;
        let Some(p) = raw else {
            return PageSize::Kernel;
        };
        self.pos.page_size = self.at(p.span());
        match p.get_ref().as_str() {
            "kernel" => PageSize::Kernel,
            s => match granule_of(s) {
                Some(g) => PageSize::Fixed(g),
                None => {
                    let kind = ErrorKind::BadValue {
                        value: s.into(),
                        expected: "\"4k\", \"16k\", \"64k\" or \"kernel\"",
                    };
                    self.err(p.span(), "page_size", kind);
                    PageSize::Kernel
                }
            },
        }
    }

    /// `fallback`: granules, each listed once (placed at `page_size` when absent).
    fn fallback(&mut self, raw: Option<&Spanned<Vec<Spanned<String>>>>) -> Vec<Granule> {
        let mut fallback = Vec::new();
        self.pos.fallback = self.pos.page_size;
        let Some(list) = raw else {
            return fallback;
        };
        self.pos.fallback = self.at(list.span());
        for item in list.get_ref() {
            match granule_of(item.get_ref()) {
                Some(g) if fallback.contains(&g) => {
                    let kind = ErrorKind::DuplicateFallback { granule: g };
                    self.err(item.span(), "fallback", kind);
                }
                Some(g) => fallback.push(g),
                None => {
                    let kind = ErrorKind::BadValue {
                        value: item.get_ref().clone(),
                        expected: "a list of \"4k\", \"16k\", \"64k\", e.g. [\"4k\"]",
                    };
                    self.err(item.span(), "fallback", kind);
                }
            }
        }
        fallback
    }

    /// `[[vm.pci]]`: each entry's model, and its file exactly when the model is backed by one.
    fn pci(&mut self, raw: &[Spanned<RawPci>]) -> Vec<PciDevice> {
        let mut out = Vec::new();
        for entry in raw {
            let r = entry.get_ref();
            let at = r.file.as_ref().map_or(entry.span(), |f| f.span());
            let at = self.at(at);
            self.pos.pci.push(at);
            let Some(model) = PciModel::from_name(r.device.get_ref()) else {
                let kind = ErrorKind::BadValue {
                    value: r.device.get_ref().clone(),
                    expected: "\"virtio-blk-pci\" or \"virtio-net-pci\"",
                };
                self.err(r.device.span(), "pci.device", kind);
                continue;
            };
            match (&r.file, model.needs_file()) {
                (None, true) => {
                    self.err(entry.span(), "pci.file", ErrorKind::PciNeedsFile { model })
                }
                (Some(f), false) => {
                    let kind = ErrorKind::PciTakesNoFile { model, key: "file" };
                    self.err(f.span(), "pci.file", kind);
                }
                (Some(f), true) if f.get_ref().trim().is_empty() => {
                    self.err(f.span(), "pci.file", ErrorKind::EmptyPath)
                }
                _ => {}
            }
            if let (Some(ro), false) = (&r.readonly, model.needs_file()) {
                let kind = ErrorKind::PciTakesNoFile {
                    model,
                    key: "readonly",
                };
                self.err(ro.span(), "pci.readonly", kind);
            }
            out.push(PciDevice {
                model,
                file: r.file.as_ref().map(|f| f.get_ref().clone()),
                readonly: r.readonly.as_ref().is_some_and(|r| *r.get_ref()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const FULL: &str = r#"
[hypervisor]
granule = "4k"

[[vm]]
name = "web"
vcpus = 2
memory = "512M"
kernel = "guests/Image-16k"
initrd = "guests/initramfs.cpio.gz"
cmdline = "console=ttyAMA0"
page_size = "16k"
fallback = ["4k"]
[vm.stage2]
granule = "16k"
ipa_bits = 40
mapping = "lazy"
"#;

    #[test]
    fn full_example() {
        let c = parse_config("x.toml", FULL).unwrap();
        assert_eq!(c.granule, GranuleChoice::Fixed(Granule::K4));
        assert_eq!(c.vms.len(), 1);
        let v = &c.vms[0];
        assert_eq!(v.name, "web");
        assert_eq!(v.vcpus, 2);
        assert_eq!(v.memory, 512 << 20);
        assert_eq!(v.kernel, "guests/Image-16k");
        assert_eq!(v.initrd.as_deref(), Some("guests/initramfs.cpio.gz"));
        assert_eq!(v.page_size, PageSize::Fixed(Granule::K16));
        assert_eq!(v.fallback, [Granule::K4]);
        assert_eq!(v.stage2.granule, Stage2Granule::Fixed(Granule::K16));
        assert_eq!(v.stage2.ipa_bits, 40);
        assert_eq!(v.stage2.mapping, Mapping::Lazy);
        assert_eq!(
            v.pos.memory,
            Pos {
                line: 8,
                column: 10
            }
        );
        assert_eq!(&FULL[v.pos.kernel_span.clone()], "\"guests/Image-16k\"");
        assert_eq!(
            c.referenced_files(),
            ["guests/Image-16k", "guests/initramfs.cpio.gz"]
        );
    }

    #[test]
    fn defaults() {
        let c = parse_config(
            "x.toml",
            "[[vm]]\nname = \"a\"\nmemory = 67108864\nkernel = \"k\"\n",
        )
        .unwrap();
        assert_eq!(c.granule, GranuleChoice::Auto);
        let v = &c.vms[0];
        assert_eq!(v.vcpus, 1);
        assert_eq!(v.memory, 64 << 20);
        assert_eq!(v.page_size, PageSize::Kernel);
        assert!(v.fallback.is_empty());
        assert_eq!(
            v.stage2,
            Stage2Config {
                granule: Stage2Granule::PageSize,
                ipa_bits: 40,
                mapping: Mapping::Eager,
                table_memory: None,
            }
        );
        assert!(v.cmdline.is_empty());
    }

    #[test]
    fn empty_system_is_valid() {
        let c = parse_config("e.toml", "[hypervisor]\ngranule = \"auto\"\n").unwrap();
        assert!(c.vms.is_empty());
        assert!(parse_config("e.toml", "").unwrap().vms.is_empty());
    }

    #[test]
    fn errors_are_collected_and_placed() {
        let text = "[[vm]]\nname = \"A\"\nmemory = \"1Q\"\nkernel = \"\"\nvcpus = 0\n";
        let e = parse_config("bad.toml", text).unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        let s = e.to_string();
        assert!(
            s.contains("bad.toml:2:8: vm \"A\": name: \"A\" is not a valid name"),
            "{s}"
        );
        assert!(
            s.contains("bad.toml:3:10: vm \"A\": memory: \"1Q\" is not a size"),
            "{s}"
        );
        assert!(
            s.contains("bad.toml:4:10: vm \"A\": kernel: the path is empty"),
            "{s}"
        );
        assert!(s.contains("bad.toml:5:9: vm \"A\": vcpus: 0 vCPUs"), "{s}");
    }

    #[test]
    fn unknown_key_names_the_vm() {
        let text = "[[vm]]\nname = \"a\"\nmemory = \"64M\"\nkernel = \"k\"\nmemroy = 1\n";
        let e = parse_config("u.toml", text).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("u.toml:5:1: vm \"a\": memroy: unknown field `memroy`, expected one of"),
            "{s}"
        );
    }

    #[test]
    fn huge_unaligned_memory_is_an_error_not_an_overflow() {
        let text = "[[vm]]\nname = \"a\"\nmemory = \"18446744073709551615\"\nkernel = \"k\"\n";
        let e = parse_config("h.toml", text).unwrap_err();
        assert!(
            matches!(
                e.0[0].kind,
                ErrorKind::MemoryNotAligned { memory: u64::MAX }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("is not a multiple of 2M"));
    }

    #[test]
    fn unknown_keys_in_sub_tables_carry_the_table() {
        let text = "[hypervisor]\ngranul = 1\n";
        let e = parse_config("u.toml", text).unwrap_err();
        assert_eq!(e.0[0].key.as_deref(), Some("hypervisor.granul"), "{e}");
        let text = "[[vm]]\nname = \"a\"\nmemory = \"64M\"\nkernel = \"k\"\n[vm.stage2]\nipa = 1\n";
        let e = parse_config("u.toml", text).unwrap_err();
        assert_eq!(e.0[0].key.as_deref(), Some("stage2.ipa"), "{e}");
        assert_eq!(e.0[0].vm.as_deref(), Some("a"), "{e}");
        assert_eq!(e.0[0].pos, Some(Pos { line: 6, column: 1 }));
    }

    #[test]
    fn sizes_are_bytes_or_suffixed_strings() {
        assert_eq!(read_size(&RawSize::Int(4096)), Ok(4096));
        assert_eq!(read_size(&RawSize::Int(0)), Ok(0));
        assert_eq!(
            read_size(&RawSize::Int(-1)),
            Err(SizeError::Negative { value: -1 })
        );
        assert_eq!(read_size(&RawSize::Str("2M".into())), Ok(2 << 20));
        assert!(read_size(&RawSize::Str("2Q".into())).is_err());
        // Both keys that take a size read it the same way.
        let text = "[[vm]]\nname = \"a\"\nmemory = -2\nkernel = \"k\"\n\
                    [vm.stage2]\nmapping = \"lazy\"\ntable_memory = -3\n";
        let e = parse_config("s.toml", text).unwrap_err();
        let kinds: Vec<_> = e.0.iter().map(|e| (e.key.as_deref(), &e.kind)).collect();
        assert_eq!(
            kinds,
            [
                (
                    Some("stage2.table_memory"),
                    &ErrorKind::BadSize(SizeError::Negative { value: -3 })
                ),
                (
                    Some("memory"),
                    &ErrorKind::BadSize(SizeError::Negative { value: -2 })
                ),
            ]
        );
    }

    #[test]
    fn absent_keys_are_placed_at_their_table() {
        let text = "\n[[vm]]\nname = \"a\"\nmemory = \"64M\"\nkernel = \"k\"\npage_size = \"4k\"\n";
        let v = &parse_config("p.toml", text).unwrap().vms[0];
        let table = Pos { line: 2, column: 1 };
        assert_eq!(v.pos.table, table);
        for (key, pos) in [
            ("vcpus", v.pos.vcpus),
            ("cmdline", v.pos.cmdline),
            ("stage2.granule", v.pos.stage2_granule),
            ("stage2.ipa_bits", v.pos.ipa_bits),
            ("stage2.table_memory", v.pos.table_memory),
        ] {
            assert_eq!(pos, table, "{key}");
        }
        // An absent fallback is placed at page_size.
        assert_eq!(
            v.pos.page_size,
            Pos {
                line: 6,
                column: 13
            }
        );
        assert_eq!(v.pos.fallback, v.pos.page_size);
        assert_eq!(v.pos.initrd_span, None);
    }

    /// One value of every [`ErrorKind`] and its message, byte for byte.
    fn every_kind() -> Vec<(ErrorKind, &'static str)> {
        use crate::cmdline::CmdlineError;
        use crate::fdt::DtbError;
        use crate::image::ImageError;
        use crate::layout::LayoutError;
        use crate::pci::Bdf;
        use crate::plan::Decision;
        use stage2::{GranuleRefusal, Stage};
        use ErrorKind::*;
        let bdf = Bdf {
            bus: 0,
            device: 2,
            function: 0,
        };
        let blk = PciModel::from_name("virtio-blk-pci").unwrap();
        let net = PciModel::from_name("virtio-net-pci").unwrap();
        let refusal = GranuleRefusal::Hidden {
            granule: Granule::K16,
            stage: Stage::Two,
        };
        let decision = Decision {
            requested: PageSize::Kernel,
            header: None,
            refused: Vec::new(),
            chosen: None,
        };
        alloc::vec![
            (
                Toml { message: "bad\n".into() },
                "bad",
            ),
            (
                BadValue { value: "8k".into(), expected: "\"4k\" or \"auto\"" },
                "\"8k\" is not valid; write \"4k\" or \"auto\"",
            ),
            (
                BadName { name: "A".into() },
                "\"A\" is not a valid name; use 1 to 32 characters from a-z, 0-9 and -, e.g. \
                 \"web-1\"",
            ),
            (
                DuplicateName { name: "a".into(), first_line: 3 },
                "\"a\" is already the name of the VM at line 3; give each VM its own name",
            ),
            (
                BadSize(SizeError::Empty),
                "the size is empty; write a number with an optional K, M or G suffix, e.g. \
                 \"512M\"",
            ),
            (
                ZeroMemory,
                "a VM needs memory; write a size such as \"512M\"",
            ),
            (
                MemoryNotAligned { memory: 3 << 20 },
                "3145728 bytes is not a multiple of 2M; round it, e.g. \"4M\"",
            ),
            (
                MemoryBeyondIpa { memory: 4 << 30, ipa_bits: 32 },
                "4G of RAM from 0x40000000 does not fit in a 32-bit IPA space (at most 3G); use \
                 less memory or raise stage2.ipa_bits",
            ),
            (
                ZeroVcpus { value: -1 },
                "-1 vCPUs: a VM needs at least one; write vcpus = 1 or more",
            ),
            (
                TooManyVcpusForGic { value: 999 },
                "999 vCPUs: at most 123 fit the GICv3 redistributor window; use fewer",
            ),
            (
                IpaBitsRange { value: 53 },
                "53 is outside 32..=52; write e.g. ipa_bits = 40",
            ),
            (
                DuplicateFallback { granule: Granule::K4 },
                "\"4k\" is listed twice; list each page size once",
            ),
            (
                EmptyPath,
                "the path is empty; name a file relative to the config",
            ),
            (
                TooManyVcpus { asked: 4, free: 2, host: 4 },
                "4 vCPUs asked but only 2 of the 4 physical CPUs are left (vCPUs are pinned one to \
                 one); lower vcpus or run with more CPUs (--smp)",
            ),
            (
                OutOfMemory { asked: 1 << 30, tables: 8 << 10, free: 512 << 20, host: 2 << 30 },
                "1G asked (plus 8K of stage-2 tables) but only 512M of the 2G of guest RAM is \
                 left; lower memory or give the machine more RAM (--mem)",
            ),
            (
                TableMemoryEager { asked: 4 << 10, needed: 24 << 10 },
                "4K is less than the 24K of stage-2 tables that eager mapping of this VM's RAM \
                 takes; remove table_memory or use mapping = \"lazy\"",
            ),
            (
                TableMemoryTooSmall { asked: 4 << 10, min: 16 << 10 },
                "4K cannot hold the root tables and one table per level (16K); write at least \
                 table_memory = \"16K\"",
            ),
            (
                IpaBeyondPaRange { ipa_bits: 48, pa_bits: 44, parange: 4 },
                "48 bits is beyond the CPU's physical address size: ID_AA64MMFR0_EL1.PARange = \
                 0b0100 (44 bits); use ipa_bits = 44 or less",
            ),
            (
                MissingFile { path: "k".into() },
                "file \"k\" not found; paths are relative to the config file",
            ),
            (
                EmptyFile { path: "k".into() },
                "file \"k\" is empty",
            ),
            (
                Image(ImageError::BigEndian),
                "the Image header's flags bit 0 says big-endian; hyp runs little-endian kernels \
                 only",
            ),
            (
                Cmdline(CmdlineError::NotPrintable { offset: 2, ch: '\u{e9}' }),
                "character 'é' at byte 2 is not printable ASCII; the kernel command line takes \
                 printable ASCII only",
            ),
            (
                Stage2Granule(refusal),
                "16K granule not supported at stage 2: hidden by hyp.hide-granules; choose a \
                 granule the CPU supports at stage 2 or \"page_size\"",
            ),
            (
                Geometry { granule: Granule::K64, ipa_bits: 32, reason: "why".into() },
                "no stage-2 tables for 64K with a 32-bit IPA: why",
            ),
            (
                NoPageSize(decision),
                "no usable page size: no candidate; add a fallback the kernel and CPU support \
                 (e.g. fallback = [\"4k\"]) or use another kernel or CPU",
            ),
            (
                NoHypGranule,
                "the CPU supports no translation granule at stage 1 (or all are hidden)",
            ),
            (
                Layout(LayoutError::RamOverflow { memory: 1 << 20 }),
                "1M of RAM from 0x40000000 overflows the address space; use less memory",
            ),
            (
                Dtb(DtbError::TooLarge { size: 3 << 20 }),
                "the guest device tree is 3145728 bytes, more than the 2M the boot protocol \
                 allows; shorten cmdline",
            ),
            (
                PciNeedsFile { model: blk },
                "virtio-blk-pci is backed by a file; add file = \"disk.img\" (relative to the \
                 config)",
            ),
            (
                PciTakesNoFile { model: net, key: "readonly" },
                "virtio-net-pci takes no backing file; remove readonly",
            ),
            (
                TooManyPciDevices,
                "more than 31 PCI devices in the system: the root bus has slots 1 to 31 for them; \
                 assign fewer",
            ),
            (
                PciNoSmmu,
                "the host has no SMMUv3 to confine the device's DMA; run QEMU with -M \
                 virt,iommu=smmuv3 (./run adds it when a config assigns devices)",
            ),
            (
                PciIntxShared { bdf, spi: 5, other: "b".into() },
                "00:02.0's INTx is wired to SPI 5, which a device of vm \"b\" already uses: the \
                 root bus has four INTx lines, each given to one VM (no MSI without a virtual \
                 ITS), and a VM's devices take one line per slot; give the devices to fewer VMs",
            ),
            (
                PciLazy,
                "a VM that owns PCI devices keeps all its RAM mapped (devices may DMA to any of it \
                 at any time); use mapping = \"eager\"",
            ),
            (
                Smmu(smmu::Refusal::NoStage2),
                "the SMMU has no stage 2 (SMMU_IDR0.S2P = 0); pick a stage-2 granule the SMMU \
                 walks, or stage2.granule = \"page_size\" with a fallback",
            ),
        ]
    }

    #[test]
    fn every_error_kind_has_its_message() {
        for (kind, want) in every_kind() {
            assert_eq!(kind.to_string(), want, "{kind:?}");
        }
    }

    #[test]
    fn pos_of_counts_lines_and_chars() {
        assert_eq!(pos_of("ab\ncd", 4), Pos { line: 2, column: 2 });
        assert_eq!(pos_of("é\nx", 0), Pos { line: 1, column: 1 });
        assert_eq!(pos_of("ab", 99), Pos { line: 1, column: 3 });
    }
}
