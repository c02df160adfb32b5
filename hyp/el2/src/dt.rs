//! The host device tree: what hyp needs from it, parsed with the `fdt` crate into plain values.
//!
//! Only bounds-checked accessors of `fdt` 0.1.5 are used here (`find_node("/")`, `children`,
//! `property`, `properties`); its `cpus()`, `memory()` and `chosen()` helpers panic when a node
//! is missing, and its `raw_reg()` loops forever when a parent has `#address-cells = 0` and
//! `#size-cells = 0`, so they are avoided. `reg` is decoded here from the raw bytes with the
//! parent's cell counts, found by walking the tree from the root (`walk`), which also gives
//! every node its full path for error messages.
//!
//! The tree is parsed before hyp has a heap, so what hyp keeps lives in fixed-size [`List`]s.
//! None of them drops an entry silently: a tree with more RAM ranges, reserved ranges,
//! or redistributor regions than hyp keeps is refused with
//! [`DtError::TooMany`], naming the node and the limit, because a dropped reserved range would
//! become VM RAM. The one exception is `/cpus`: hyp runs on the first [`MAX_CPUS`] CPUs and
//! counts the others in [`Platform::cpus_not_listed`] (boot warns; CPUs hyp does not start
//! stay off, which exposes nothing).
//!
//! Addresses are taken as they appear in `reg` (QEMU's virt machine puts every device we use
//! at the root or under an identity `ranges;`), so no bus translation is done. Every range is
//! a `stage2::AddrRange<Pa>`; a `reg` entry or `/memreserve/` pair that runs past 2^64 - 1 is
//! cut at the last address ([`crate::memmap::saturating_range`]). Messages print ranges as
//! `[start, end)` ([`HalfOpen`]).

use crate::memmap::saturating_range;
use core::fmt;
use fdt::node::FdtNode;
use fdt::Fdt;
use stage2::{AddrRange, Pa};

/// The largest device tree the arm64 booting protocol allows (Documentation/arch/arm64/
/// booting.rst: "The device tree blob (dtb) must ... not exceed 2 megabytes in size").
pub const MAX_DTB_SIZE: usize = 2 << 20;

/// The most CPUs hyp runs on (one stack each in `linker.ld`): `platform::MAX_HOST_CPUS`.
pub const MAX_CPUS: usize = platform::MAX_HOST_CPUS;
/// The most RAM ranges hyp takes: the `reg` entries of every `device_type = "memory"` node.
pub const MAX_MEMORY_RANGES: usize = 16;
/// The most reserved ranges hyp takes: `/memreserve/` entries and the `reg` entries of every
/// `/reserved-memory` child, together.
pub const MAX_RESERVED_RANGES: usize = 32;
/// The most GICv3 redistributor regions (`#redistributor-regions`).
pub const MAX_REDIST_REGIONS: usize = 8;

/// How hyp's messages show a physical range: `[0x9000000, 0x9001000)`, the first address and
/// one past the last (the console lines the QEMU cases match are written this way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfOpen(pub AddrRange<Pa>);

impl fmt::Display for HalfOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.0.start(), self.0.end())
    }
}

/// A list with a fixed capacity (the device tree is parsed before hyp has a heap).
#[derive(Clone, Copy, Debug)]
pub struct List<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

/// [`List::push`] found the list full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListFull {
    /// The list's capacity.
    pub limit: usize,
}

impl<T: Copy + Default, const N: usize> Default for List<T, N> {
    fn default() -> Self {
        List {
            items: [T::default(); N],
            len: 0,
        }
    }
}

impl<T: Copy + Default, const N: usize> List<T, N> {
    /// Appends `item`, or says the list is full (the item is not kept).
    pub fn push(&mut self, item: T) -> Result<(), ListFull> {
        let slot = self.items.get_mut(self.len).ok_or(ListFull { limit: N })?;
        *slot = item;
        self.len += 1;
        Ok(())
    }

    /// The items kept.
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    /// Number of items kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no item was kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How PSCI is called (`/psci` `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    /// `smc #0` (QEMU with `virtualization=on`: PSCI is emulated as EL3 firmware).
    Smc,
    /// `hvc #0`.
    Hvc,
}

/// A PL011 UART.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pl011 {
    /// Its registers.
    pub regs: AddrRange<Pa>,
    /// Its interrupt ID (GIC INTID), if the node has an `interrupts` property.
    pub intid: Option<u32>,
}

/// A GICv3.
#[derive(Clone, Copy, Debug, Default)]
pub struct GicV3 {
    /// The distributor (GICD).
    pub dist: AddrRange<Pa>,
    /// The redistributor regions (GICR), `#redistributor-regions` of them.
    pub redists: List<AddrRange<Pa>, MAX_REDIST_REGIONS>,
}

/// One CPU of `/cpus`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuNode {
    /// Its `reg`: the MPIDR affinity fields (Aff3..Aff0).
    pub mpidr: u64,
    /// Whether `enable-method = "psci"`.
    pub psci: bool,
}

/// What hyp takes from the host device tree.
#[derive(Clone, Copy, Debug)]
pub struct Platform<'a> {
    /// The device tree blob itself (`totalsize` bytes at the address in x0).
    pub dtb_size: usize,
    /// RAM: the non-empty `reg` entries of every `device_type = "memory"` node.
    pub memory: List<AddrRange<Pa>, MAX_MEMORY_RANGES>,
    /// `/memreserve/` entries and the `reg` entries of every `/reserved-memory` child.
    pub reserved: List<AddrRange<Pa>, MAX_RESERVED_RANGES>,
    /// The console UART (the `/chosen` `stdout-path` one, else the first `arm,pl011`).
    pub uart: Option<Pl011>,
    /// The first GICv3, if any.
    pub gic: Option<GicV3>,
    /// The initrd the loader put in RAM (`/chosen` `linux,initrd-start` and
    /// `linux,initrd-end`, as for Linux): hyp's boot bundle (QEMU: `-initrd`).
    pub initrd: Option<AddrRange<Pa>>,
    /// How to call PSCI, if there is a `/psci` node.
    pub psci: Option<PsciMethod>,
    /// The first [`MAX_CPUS`] CPUs, in tree order (the first is normally the boot CPU).
    pub cpus: List<CpuNode, MAX_CPUS>,
    /// CPUs of `/cpus` beyond [`MAX_CPUS`], which hyp does not start.
    pub cpus_not_listed: usize,
    /// `/chosen` `bootargs` (empty when absent).
    pub bootargs: &'a str,
}

/// Bytes of a node path kept for messages (below 256, and small enough to keep `DtError`
/// under clippy's `result_large_err` limit); longer paths are shown cut, ending in `...`.
const PATH_BYTES: usize = 80;

/// The full path of a device-tree node, for error messages (no heap: a fixed buffer).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodePath {
    buf: [u8; PATH_BYTES],
    len: u8,
    cut: bool,
}

impl NodePath {
    /// The path `s` (a literal such as `"/memreserve/"`).
    pub fn new(s: &str) -> NodePath {
        let mut p = NodePath {
            buf: [0; PATH_BYTES],
            len: 0,
            cut: false,
        };
        p.push(s);
        p
    }

    /// The path of the node named by `names`, the node names from the root down (the root
    /// itself is `[]`).
    fn of(names: &[&str]) -> NodePath {
        if names.is_empty() {
            return NodePath::new("/");
        }
        let mut p = NodePath::new("");
        for n in names {
            p.push("/");
            p.push(n);
        }
        p
    }

    fn push(&mut self, s: &str) {
        for c in s.chars() {
            let mut b = [0u8; 4];
            let enc = c.encode_utf8(&mut b).as_bytes();
            let at = usize::from(self.len);
            match self.buf.get_mut(at..at + enc.len()) {
                Some(dst) if !self.cut => {
                    dst.copy_from_slice(enc);
                    // At most PATH_BYTES (< 256).
                    self.len += enc.len() as u8;
                }
                _ => {
                    self.cut = true;
                    return;
                }
            }
        }
    }

    /// The path (its first `PATH_BYTES` bytes when it was longer).
    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are copied in.
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A device tree hyp cannot use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtError {
    /// The header is not a flattened device tree.
    BadMagic {
        /// The first 4 bytes, big-endian.
        found: u32,
    },
    /// `totalsize` is smaller than the header or larger than [`MAX_DTB_SIZE`], or the buffer
    /// is shorter than `totalsize`.
    BadSize {
        /// `totalsize` from the header.
        totalsize: u32,
    },
    /// `fdt` rejected the blob, or `validate` found what `fdt` would panic on.
    Malformed,
    /// No `/memory` node with a usable `reg`.
    NoMemory,
    /// No `/psci` node with `method = "smc"` or `"hvc"`.
    NoPsci,
    /// More entries of one kind than hyp keeps: hyp refuses to boot rather than drop one.
    TooMany {
        /// The node whose entry did not fit.
        node: NodePath,
        /// What the entries are, plural ("reserved ranges").
        what: &'static str,
        /// How many hyp keeps.
        limit: usize,
    },
    /// A `#address-cells`, `#size-cells` or `#redistributor-regions` that is not one 32-bit
    /// cell.
    BadCells {
        /// The node that has the property.
        node: NodePath,
        /// The property.
        name: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A `reg` hyp needs that does not decode with its parent's cell counts (hyp takes 1 or 2
    /// address cells and 0 to 2 size cells, and whole entries).
    BadReg {
        /// The node with the `reg`.
        node: NodePath,
        /// The parent's `#address-cells`.
        address_cells: u32,
        /// The parent's `#size-cells`.
        size_cells: u32,
        /// The length of `reg` in bytes.
        len: usize,
    },
    /// `/chosen` `linux,initrd-start`/`linux,initrd-end` that do not describe a range: a
    /// value that is not one or two 32-bit cells, one of the two without the other, or an end
    /// before the start.
    BadInitrd {
        /// What is wrong.
        why: &'static str,
    },
    /// A GICv3 whose `reg` has fewer redistributor regions than `#redistributor-regions`.
    MissingRedists {
        /// The GIC node.
        node: NodePath,
        /// `#redistributor-regions`.
        declared: usize,
        /// Regions present in `reg` after the distributor.
        found: usize,
    },
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::BadMagic { found } => write!(
                f,
                "x0 does not point at a device tree (magic {found:#010x}, expected 0xd00dfeed): \
                 boot hyp as an arm64 Image (QEMU: -kernel hyp.bin)"
            ),
            DtError::BadSize { totalsize } => write!(
                f,
                "device tree totalsize {totalsize:#x} is outside 0x28..={MAX_DTB_SIZE:#x} or \
                 beyond the buffer"
            ),
            DtError::Malformed => f.write_str(
                "the device tree is malformed (bad block offsets, token nesting, names, \
                 property sizes or /memreserve/ block)",
            ),
            DtError::NoMemory => {
                f.write_str("the device tree has no memory node with a reg property")
            }
            DtError::NoPsci => f.write_str(
                "the device tree has no /psci node with method \"smc\" or \"hvc\": hyp needs \
                 PSCI to start CPUs and power off",
            ),
            DtError::TooMany { node, what, limit } => write!(
                f,
                "device tree node {node}: more than {limit} {what} in the tree; hyp keeps at \
                 most {limit} and refuses to boot rather than ignore one"
            ),
            DtError::BadCells { node, name, len } => write!(
                f,
                "device tree node {node}: {name} is {len} bytes, not one 32-bit cell"
            ),
            DtError::BadReg {
                node,
                address_cells,
                size_cells,
                len,
            } => write!(
                f,
                "device tree node {node}: reg of {len} bytes does not decode with its parent's \
                 #address-cells = {address_cells} and #size-cells = {size_cells} (hyp takes 1 \
                 or 2 address cells, 0 to 2 size cells, whole entries)"
            ),
            DtError::BadInitrd { why } => write!(
                f,
                "device tree node /chosen: linux,initrd-start/linux,initrd-end: {why}"
            ),
            DtError::MissingRedists {
                node,
                declared,
                found,
            } => write!(
                f,
                "device tree node {node}: #redistributor-regions = {declared} but reg has \
                 {found} redistributor regions after the distributor"
            ),
        }
    }
}

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_HEADER_SIZE: u32 = 40;

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

/// The `totalsize` of the device tree whose header starts `header`, checked against the
/// magic and [`MAX_DTB_SIZE`]. Used to size the slice before parsing a blob found by address.
pub fn dtb_total_size(header: &[u8]) -> Result<usize, DtError> {
    let magic = be32(header, 0).ok_or(DtError::BadMagic { found: 0 })?;
    if magic != FDT_MAGIC {
        return Err(DtError::BadMagic { found: magic });
    }
    let totalsize = be32(header, 4).ok_or(DtError::BadSize { totalsize: 0 })?;
    if totalsize < FDT_HEADER_SIZE || totalsize as usize > MAX_DTB_SIZE {
        return Err(DtError::BadSize { totalsize });
    }
    Ok(totalsize as usize)
}

/// A big-endian value of 0, 1 or 2 cells (at most 8 bytes: callers check the cell counts).
fn be_cells(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

/// `/chosen`'s initrd range: `linux,initrd-start` up to `linux,initrd-end` (exclusive), each
/// one or two 32-bit cells (Linux's `drivers/of/fdt.c` reads either width); `None` when
/// neither is there.
fn initrd(chosen: FdtNode<'_, '_>) -> Result<Option<AddrRange<Pa>>, DtError> {
    let cell = |name| -> Result<Option<u64>, DtError> {
        match chosen.property(name) {
            None => Ok(None),
            Some(p) if p.value.len() == 4 || p.value.len() == 8 => Ok(Some(be_cells(p.value))),
            Some(_) => Err(DtError::BadInitrd {
                why: "a value is not one or two 32-bit cells",
            }),
        }
    };
    match (cell("linux,initrd-start")?, cell("linux,initrd-end")?) {
        (None, None) => Ok(None),
        (Some(start), Some(end)) => AddrRange::new(Pa::new(start), Pa::new(end))
            .map(Some)
            .map_err(|_| DtError::BadInitrd {
                why: "the end is before the start",
            }),
        _ => Err(DtError::BadInitrd {
            why: "one of the two is missing",
        }),
    }
}

/// The value of a property that must be exactly one 32-bit cell (`#address-cells` and the
/// like), or `None` when it is any other length.
fn one_cell(value: &[u8]) -> Option<u32> {
    if value.len() == 4 {
        be32(value, 0)
    } else {
        None
    }
}

/// How the `reg` of a node's children is laid out (the node's `#address-cells` and
/// `#size-cells`; 2 and 1 when absent, as the devicetree specification says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cells {
    address: u32,
    size: u32,
}

impl Cells {
    const DEFAULT: Cells = Cells {
        address: 2,
        size: 1,
    };

    /// The cell counts `node` gives its children; `path` is `node`'s path.
    fn of(node: FdtNode<'_, '_>, path: &[&str]) -> Result<Cells, DtError> {
        let mut c = Cells::DEFAULT;
        for (name, slot) in [
            ("#address-cells", &mut c.address),
            ("#size-cells", &mut c.size),
        ] {
            if let Some(p) = node.property(name) {
                *slot = one_cell(p.value).ok_or(DtError::BadCells {
                    node: NodePath::of(path),
                    name,
                    len: p.value.len(),
                })?;
            }
        }
        Ok(c)
    }

    /// Bytes per `reg` entry, or `None` for cell counts hyp does not decode (an address is 1
    /// or 2 cells, a size 0 to 2: one `u64` each, and never an empty entry).
    fn entry_bytes(self) -> Option<usize> {
        if (1..=2).contains(&self.address) && self.size <= 2 {
            Some(4 * (self.address + self.size) as usize)
        } else {
            None
        }
    }
}

/// One node met by [`walk`].
struct Visit<'v, 'b, 'a> {
    node: FdtNode<'b, 'a>,
    /// The parent (`None` for the root), whose cell counts decode `node`'s `reg`.
    parent: Option<FdtNode<'b, 'a>>,
    /// The node names from the root down to `node` (empty for the root).
    names: &'v [&'a str],
}

impl<'a> Visit<'_, '_, 'a> {
    fn path(&self) -> NodePath {
        NodePath::of(self.names)
    }

    /// Whether the node is a direct child of the root node named `name` (`/name/<node>`).
    fn is_child_of(&self, name: &str) -> bool {
        self.names.len() == 2 && self.names[0] == name
    }

    /// Whether `path` (absolute; a segment without `@unit` also matches a node name with
    /// one, as `fdt`'s `find_node` does) names this node.
    fn is_at(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut segs = rest.split('/').filter(|s| !s.is_empty());
        let mut names = self.names.iter();
        loop {
            match (segs.next(), names.next()) {
                (None, None) => return true,
                (Some(s), Some(n)) => {
                    let base = n.split('@').next().unwrap_or(n);
                    if s != *n && (s.contains('@') || s != base) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }

    /// The node's `reg` entries (none when it has no `reg`), decoded with the parent's cell
    /// counts; [`DtError::BadReg`] or [`DtError::BadCells`] when they do not decode.
    fn reg(&self) -> Result<impl Iterator<Item = AddrRange<Pa>> + 'a, DtError> {
        let value: &'a [u8] = self.node.property("reg").map(|p| p.value).unwrap_or(&[]);
        let parent_path = &self.names[..self.names.len().saturating_sub(1)];
        let cells = match self.parent {
            Some(p) => Cells::of(p, parent_path)?,
            None => Cells::DEFAULT,
        };
        let bad = DtError::BadReg {
            node: self.path(),
            address_cells: cells.address,
            size_cells: cells.size,
            len: value.len(),
        };
        let entry = cells.entry_bytes().ok_or(bad)?;
        if !value.len().is_multiple_of(entry) {
            return Err(bad);
        }
        let split = 4 * cells.address as usize;
        Ok(value.chunks_exact(entry).map(move |e| {
            let (a, s) = e.split_at(split);
            saturating_range(be_cells(a), be_cells(s))
        }))
    }

    /// The first `reg` entry, if any.
    fn first_reg(&self) -> Result<Option<AddrRange<Pa>>, DtError> {
        Ok(self.reg()?.next())
    }
}

/// Calls `f` on every node, parents before children, in tree order. `validate` bounds the
/// depth by [`MAX_DEPTH`], so neither the recursion nor `names` can run out.
fn walk<'b, 'a>(
    fdt: &'b Fdt<'a>,
    f: &mut dyn FnMut(&Visit<'_, 'b, 'a>) -> Result<(), DtError>,
) -> Result<(), DtError> {
    fn visit<'b, 'a>(
        node: FdtNode<'b, 'a>,
        parent: Option<FdtNode<'b, 'a>>,
        names: &mut [&'a str; MAX_DEPTH],
        depth: usize,
        f: &mut dyn FnMut(&Visit<'_, 'b, 'a>) -> Result<(), DtError>,
    ) -> Result<(), DtError> {
        f(&Visit {
            node,
            parent,
            names: &names[..depth],
        })?;
        for child in node.children() {
            let Some(slot) = names.get_mut(depth) else {
                return Err(DtError::Malformed);
            };
            *slot = child.name;
            visit(child, Some(node), names, depth + 1, f)?;
        }
        Ok(())
    }
    let root = fdt.find_node("/").ok_or(DtError::Malformed)?;
    visit(root, None, &mut [""; MAX_DEPTH], 0, f)
}

/// The child of the root named exactly `name`. (`fdt`'s `find_node` stops at a NOP between
/// the root's children and misses the nodes after it; `children` skips them.)
fn root_child<'b, 'a>(root: FdtNode<'b, 'a>, name: &str) -> Option<FdtNode<'b, 'a>> {
    root.children().find(|c| c.name == name)
}

fn is_compatible(node: FdtNode<'_, '_>, what: &str) -> bool {
    node.compatible()
        .map(|c| c.all().any(|s| s == what))
        .unwrap_or(false)
}

fn prop_str<'a>(node: FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    let v = node.property(name)?.value;
    let v = v.strip_suffix(&[0]).unwrap_or(v);
    core::str::from_utf8(v).ok()
}

/// The first interrupt of a node with a GIC parent (3 cells: type, number, flags), as an
/// INTID: SPI n -> 32 + n, PPI n -> 16 + n (GICv3 binding, arm,gic-v3.yaml).
fn gic_intid(node: FdtNode<'_, '_>) -> Option<u32> {
    let v = node.property("interrupts")?.value;
    let kind = be32(v, 0)?;
    let num = be32(v, 4)?;
    match kind {
        0 => num.checked_add(32),
        1 => num.checked_add(16),
        _ => None,
    }
}

/// `/memreserve/` entries, bounds-checked (pairs of big-endian u64, ended by a zero pair that
/// must be inside the blob).
fn memreserve<const N: usize>(
    data: &[u8],
    out: &mut List<AddrRange<Pa>, N>,
) -> Result<(), DtError> {
    let mut off = be32(data, 16).ok_or(DtError::Malformed)? as usize;
    loop {
        let (Some(base), Some(size)) = (be64(data, off), be64(data, off.saturating_add(8))) else {
            return Err(DtError::Malformed);
        };
        if base == 0 && size == 0 {
            return Ok(());
        }
        out.push(saturating_range(base, size))
            .map_err(|f| DtError::TooMany {
                node: NodePath::new("/memreserve/"),
                what: "reserved ranges",
                limit: f.limit,
            })?;
        off = off.saturating_add(16);
    }
}

/// The validated `fdt` view of `data` (at least `totalsize` bytes).
fn open(data: &[u8]) -> Result<Fdt<'_>, DtError> {
    let size = dtb_total_size(data)?;
    let data = data.get(..size).ok_or(DtError::BadSize {
        totalsize: size as u32,
    })?;
    validate(data)?;
    Fdt::new(data).map_err(|_| DtError::Malformed)
}

/// The console: the node `/chosen` `stdout-path` names (up to `:` options; an alias is
/// resolved through `/aliases`) if it is a PL011, else the first `arm,pl011` in tree order.
fn console(fdt: &Fdt<'_>) -> Result<Option<Pl011>, DtError> {
    let stdout = fdt
        .find_node("/")
        .and_then(|r| root_child(r, "chosen"))
        .and_then(|c| prop_str(c, "stdout-path"))
        .map(|p| p.split(':').next().unwrap_or(p))
        .and_then(|p| {
            if p.starts_with('/') {
                Some(p)
            } else {
                fdt.find_node("/")
                    .and_then(|r| root_child(r, "aliases"))
                    .and_then(|a| prop_str(a, p))
            }
        });
    let (mut chosen, mut first) = (None, None);
    walk(fdt, &mut |v| {
        if !is_compatible(v.node, "arm,pl011") {
            return Ok(());
        }
        let is_stdout = stdout.is_some_and(|p| v.is_at(p));
        if (is_stdout && chosen.is_none()) || first.is_none() {
            if let Some(regs) = v.first_reg()? {
                let uart = Pl011 {
                    regs,
                    intid: gic_intid(v.node),
                };
                if is_stdout && chosen.is_none() {
                    chosen = Some(uart);
                }
                first = first.or(Some(uart));
            }
        }
        Ok(())
    })?;
    Ok(chosen.or(first))
}

fn psci(fdt: &Fdt<'_>) -> Option<PsciMethod> {
    let psci = fdt.find_node("/").and_then(|r| root_child(r, "psci"));
    match psci.and_then(|n| prop_str(n, "method")) {
        Some("smc") => Some(PsciMethod::Smc),
        Some("hvc") => Some(PsciMethod::Hvc),
        _ => None,
    }
}

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Deepest node nesting accepted (QEMU's trees are 4 deep).
const MAX_DEPTH: usize = 16;

/// Checks the structure of the blob against everything `fdt` 0.1.5 assumes without checking
/// (it panics on a malformed blob): block offsets inside `totalsize`, well-nested tokens,
/// NUL-terminated UTF-8 names, properties before child nodes, property values and name offsets
/// inside their blocks, 4-byte `#...-cells` values, and NOPs only where `fdt` skips them.
fn validate(data: &[u8]) -> Result<(), DtError> {
    let (st, strings) = blocks(data).ok_or(DtError::Malformed)?;
    Structure::new(st, strings)
        .check()
        .ok_or(DtError::Malformed)
}

/// The structure block and the strings block of `data`, once the header's offsets and sizes
/// are inside `totalsize` and the buffer (and the structure block is 4-byte aligned).
fn blocks(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let h = |i: usize| be32(data, 4 * i).map(|v| v as usize);
    let (total, off_struct, off_strings, off_rsv) = (h(1)?, h(2)?, h(3)?, h(4)?);
    let (size_strings, size_struct) = (h(8)?, h(9)?);
    let in_total = |off: usize, size: usize| off.checked_add(size).is_some_and(|e| e <= total);
    if total > data.len()
        || !in_total(off_struct, size_struct)
        || !in_total(off_strings, size_strings)
        || off_rsv >= total
        || off_struct % 4 != 0
    {
        return None;
    }
    Some((
        &data[off_struct..off_struct + size_struct],
        &data[off_strings..off_strings + size_strings],
    ))
}

/// The length of the NUL-terminated UTF-8 string at `at` in `b` (without the NUL).
fn cstr(b: &[u8], at: usize) -> Option<usize> {
    let rest = b.get(at..)?;
    let n = rest.iter().position(|&c| c == 0)?;
    core::str::from_utf8(&rest[..n]).ok()?;
    Some(n)
}

/// `n` rounded up to a multiple of 4 (tokens are 4-byte aligned).
fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// The walk of a structure block token by token, for [`validate`]. Each step returns `None`
/// on the first thing `fdt` would trip over.
struct Structure<'d> {
    st: &'d [u8],
    strings: &'d [u8],
    /// Per open node: whether a child node was seen (then no more properties).
    children_seen: [bool; MAX_DEPTH],
    depth: usize,
    root_done: bool,
    /// The offset of the next token.
    pos: usize,
}

impl<'d> Structure<'d> {
    fn new(st: &'d [u8], strings: &'d [u8]) -> Self {
        Structure {
            st,
            strings,
            children_seen: [false; MAX_DEPTH],
            depth: 0,
            root_done: false,
            pos: 0,
        }
    }

    /// Walks every token up to `FDT_END`.
    fn check(mut self) -> Option<()> {
        loop {
            let tok = be32(self.st, self.pos)?;
            self.pos += 4;
            match tok {
                FDT_BEGIN_NODE => self.begin_node()?,
                FDT_END_NODE => self.end_node()?,
                FDT_PROP => self.prop()?,
                FDT_NOP => self.nop()?,
                FDT_END => return (self.depth == 0 && self.root_done).then_some(()),
                _ => return None,
            }
        }
    }

    /// A node opens: one root only, at most [`MAX_DEPTH`] deep, a valid name.
    fn begin_node(&mut self) -> Option<()> {
        if self.root_done || self.depth >= MAX_DEPTH {
            return None;
        }
        if self.depth > 0 {
            self.children_seen[self.depth - 1] = true;
        }
        let n = cstr(self.st, self.pos)?;
        self.pos = self.pos.checked_add(align4(n + 1)?)?;
        self.children_seen[self.depth] = false;
        self.depth += 1;
        Some(())
    }

    /// A node closes: one must be open.
    fn end_node(&mut self) -> Option<()> {
        self.depth = self.depth.checked_sub(1)?;
        if self.depth == 0 {
            self.root_done = true;
        }
        Some(())
    }

    /// A property: inside a node, before its children, with its name in the strings block, a
    /// `#...` value of at least one cell, and its value inside the structure block.
    fn prop(&mut self) -> Option<()> {
        if self.depth == 0 || self.children_seen[self.depth - 1] {
            return None;
        }
        let (len, nameoff) = (be32(self.st, self.pos)?, be32(self.st, self.pos + 4)?);
        let (len, nameoff) = (len as usize, nameoff as usize);
        let n = cstr(self.strings, nameoff)?;
        let name = &self.strings[nameoff..nameoff + n];
        if name.starts_with(b"#") && len < 4 {
            return None;
        }
        let end = self.pos.checked_add(8)?.checked_add(len)?;
        if end > self.st.len() {
            return None;
        }
        self.pos = (self.pos + 8).checked_add(align4(len)?)?;
        Some(())
    }

    /// NOPs: `fdt` skips them only before an END_NODE/END (and before properties and children
    /// when iterating, but not when skipping a node): accept them only where every path this
    /// module takes skips them. That includes NOPs before a child of the root (never skipped
    /// as a whole; `children` skips them), which is where libfdt leaves a deleted node, as
    /// QEMU does with `-dtb`.
    fn nop(&mut self) -> Option<()> {
        let mut p = self.pos;
        while be32(self.st, p) == Some(FDT_NOP) {
            p += 4;
        }
        let next = be32(self.st, p);
        let before_root_child = self.depth == 1 && next == Some(FDT_BEGIN_NODE);
        (before_root_child || matches!(next, Some(FDT_END_NODE) | Some(FDT_END))).then_some(())
    }
}

/// What [`Platform::parse`] takes from the nodes of the tree, met in tree order.
#[derive(Default)]
struct Nodes {
    memory: List<AddrRange<Pa>, MAX_MEMORY_RANGES>,
    reserved: List<AddrRange<Pa>, MAX_RESERVED_RANGES>,
    gic: Option<GicV3>,
    cpus: List<CpuNode, MAX_CPUS>,
    cpus_not_listed: usize,
}

impl Nodes {
    /// Takes what hyp needs from one node: its RAM ranges (`device_type = "memory"`), its
    /// reserved ranges (a `/reserved-memory` child), the CPU it is (a `/cpus` child with
    /// `device_type = "cpu"`), and the first GICv3.
    fn visit(&mut self, v: &Visit<'_, '_, '_>) -> Result<(), DtError> {
        let node = v.node;
        if prop_str(node, "device_type") == Some("memory") {
            for r in v.reg()?.filter(|r| !r.is_empty()) {
                self.memory
                    .push(r)
                    .map_err(|f| too_many(v, "RAM ranges", f))?;
            }
        }
        if v.is_child_of("reserved-memory") {
            for r in v.reg()? {
                self.reserved
                    .push(r)
                    .map_err(|f| too_many(v, "reserved ranges", f))?;
            }
        }
        if v.is_child_of("cpus") && prop_str(node, "device_type") == Some("cpu") {
            if let Some(r) = v.first_reg()? {
                let cpu = CpuNode {
                    mpidr: r.start().get(),
                    psci: prop_str(node, "enable-method") == Some("psci"),
                };
                if self.cpus.push(cpu).is_err() {
                    self.cpus_not_listed += 1;
                }
            }
        }
        if self.gic.is_none() && is_compatible(node, "arm,gic-v3") {
            self.gic = gic_v3(v)?;
        }
        Ok(())
    }
}

/// [`DtError::TooMany`] for the node `v`.
fn too_many(v: &Visit<'_, '_, '_>, what: &'static str, full: ListFull) -> DtError {
    DtError::TooMany {
        node: v.path(),
        what,
        limit: full.limit,
    }
}

/// The GICv3 of the `arm,gic-v3` node `v`: the distributor, then `#redistributor-regions`
/// (default 1) redistributor regions; `None` when `reg` is empty.
fn gic_v3(v: &Visit<'_, '_, '_>) -> Result<Option<GicV3>, DtError> {
    let mut regs = v.reg()?;
    let Some(dist) = regs.next() else {
        return Ok(None);
    };
    let declared = match v.node.property("#redistributor-regions") {
        Some(p) => one_cell(p.value).ok_or(DtError::BadCells {
            node: v.path(),
            name: "#redistributor-regions",
            len: p.value.len(),
        })? as usize,
        None => 1,
    };
    if declared > MAX_REDIST_REGIONS {
        let full = ListFull {
            limit: MAX_REDIST_REGIONS,
        };
        return Err(too_many(v, "redistributor regions", full));
    }
    let mut redists = List::default();
    for r in regs.take(declared) {
        redists
            .push(r)
            .map_err(|f| too_many(v, "redistributor regions", f))?;
    }
    if redists.len() < declared {
        return Err(DtError::MissingRedists {
            node: v.path(),
            declared,
            found: redists.len(),
        });
    }
    Ok(Some(GicV3 { dist, redists }))
}

impl<'a> Platform<'a> {
    /// Parses the device tree in `data` (at least `totalsize` bytes).
    pub fn parse(data: &'a [u8]) -> Result<Platform<'a>, DtError> {
        let fdt = open(data)?;
        let dtb_size = fdt.total_size();

        let mut nodes = Nodes::default();
        memreserve(&data[..dtb_size], &mut nodes.reserved)?;
        walk(&fdt, &mut |v| nodes.visit(v))?;
        if nodes.memory.is_empty() {
            return Err(DtError::NoMemory);
        }

        let chosen = fdt.find_node("/").and_then(|r| root_child(r, "chosen"));
        let bootargs = chosen.and_then(|c| prop_str(c, "bootargs")).unwrap_or("");
        let initrd = match chosen {
            Some(c) => initrd(c)?,
            None => None,
        };

        Ok(Platform {
            dtb_size,
            memory: nodes.memory,
            reserved: nodes.reserved,
            uart: console(&fdt)?,
            gic: nodes.gic,
            initrd,
            psci: psci(&fdt),
            cpus: nodes.cpus,
            cpus_not_listed: nodes.cpus_not_listed,
            bootargs,
        })
    }

    /// The console UART and PSCI method of the device tree in `data`, as far as they can be
    /// found, for reporting why [`Platform::parse`] refused it.
    pub fn find_console(data: &[u8]) -> (Option<Pl011>, Option<PsciMethod>) {
        match open(data) {
            Ok(fdt) => (console(&fdt).ok().flatten(), psci(&fdt)),
            Err(_) => (None, None),
        }
    }

    /// The first `reg` range of the first node compatible with `compatible` in the device
    /// tree `data` (the blob [`Platform::parse`] accepted), for devices `Platform` does not
    /// list.
    pub fn find_compatible_reg(data: &[u8], compatible: &str) -> Option<AddrRange<Pa>> {
        let fdt = open(data).ok()?;
        let mut found = None;
        walk(&fdt, &mut |v| {
            if found.is_none() && is_compatible(v.node, compatible) {
                found = Some(v.first_reg().ok().flatten());
            }
            Ok(())
        })
        .ok()?;
        found.flatten()
    }

    /// The PSCI method, or [`DtError::NoPsci`].
    pub fn psci_method(&self) -> Result<PsciMethod, DtError> {
        self.psci.ok_or(DtError::NoPsci)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    const MAX_SMP4: &[u8] = include_bytes!("../testdata/qemu-virt-max-smp4.dtb");
    const EL1_SMP2: &[u8] = include_bytes!("../testdata/qemu-virt-el1-smp2.dtb");
    /// QEMU 10.0 `-M virt,virtualization=on,gic-version=3 -cpu max -smp 4 -m 2G -kernel
    /// hyp.bin -initrd <4096 bytes> -append hyp.granule=4k`, dumped with `dumpdtb=` (padding
    /// dropped by a `dtc` round trip).
    const MAX_INITRD: &[u8] = include_bytes!("../testdata/qemu-virt-max-initrd.dtb");

    #[test]
    fn qemu_virt_max_smp4() {
        let p = Platform::parse(MAX_SMP4).unwrap();
        assert_eq!(p.dtb_size, MAX_SMP4.len());
        assert_eq!(p.memory.as_slice(), &[pr(0x4000_0000, 0x8000_0000)]);
        assert!(p.reserved.is_empty());
        assert_eq!(
            p.uart,
            Some(Pl011 {
                regs: pr(0x0900_0000, 0x1000),
                intid: Some(33)
            })
        );
        let gic = p.gic.unwrap();
        assert_eq!(gic.dist, pr(0x0800_0000, 0x1_0000));
        assert_eq!(gic.redists.as_slice(), &[pr(0x080a_0000, 0xf6_0000)]);
        assert_eq!(p.initrd, None);
        assert_eq!(p.psci, Some(PsciMethod::Smc));
        let mpidrs: Vec<u64> = p.cpus.as_slice().iter().map(|c| c.mpidr).collect();
        assert_eq!(mpidrs, [0, 1, 2, 3]);
        assert!(p.cpus.as_slice().iter().all(|c| c.psci));
        assert_eq!(p.bootargs, "hyp.granule=16k hyp.hide-granules=4k,64k");
    }

    #[test]
    fn qemu_virt_without_el2_uses_hvc_and_has_no_bootargs() {
        let p = Platform::parse(EL1_SMP2).unwrap();
        assert_eq!(p.psci, Some(PsciMethod::Hvc));
        assert_eq!(p.cpus.len(), 2);
        assert_eq!(p.bootargs, "");
        assert_eq!(p.memory.as_slice(), &[pr(0x4000_0000, 0x4000_0000)]);
    }

    #[test]
    fn find_compatible_reg_finds_devices_platform_does_not_list() {
        assert_eq!(
            Platform::find_compatible_reg(MAX_SMP4, "arm,pl031"),
            Some(pr(0x0901_0000, 0x1000))
        );
        assert_eq!(
            Platform::find_compatible_reg(MAX_SMP4, "arm,gic-v3-its"),
            Some(pr(0x0808_0000, 0x2_0000))
        );
        assert_eq!(
            Platform::find_compatible_reg(MAX_SMP4, "acme,nothing"),
            None
        );
        assert_eq!(
            Platform::find_compatible_reg(&MAX_SMP4[..100], "arm,pl031"),
            None
        );
    }

    #[test]
    fn header_checks() {
        assert_eq!(dtb_total_size(MAX_SMP4), Ok(MAX_SMP4.len()));
        let mut bad = MAX_SMP4.to_vec();
        bad[0] = 0x7f;
        let e = Platform::parse(&bad).unwrap_err();
        assert!(matches!(e, DtError::BadMagic { found: 0x7f0d_feed }));
        assert!(e.to_string().contains("0x7f0dfeed"));
        // totalsize above 2 MiB.
        let mut big = MAX_SMP4.to_vec();
        big[4..8].copy_from_slice(&0x0030_0000u32.to_be_bytes());
        assert_eq!(
            dtb_total_size(&big),
            Err(DtError::BadSize {
                totalsize: 0x30_0000
            })
        );
        assert!(dtb_total_size(&[]).is_err());
        assert!(dtb_total_size(&[0xd0, 0x0d]).is_err());
    }

    /// Truncating the blob anywhere gives an error, never a panic or a wrong answer.
    #[test]
    fn truncation_is_an_error() {
        for len in 0..MAX_SMP4.len() {
            assert!(Platform::parse(&MAX_SMP4[..len]).is_err(), "len {len}");
        }
    }

    /// Random corruption anywhere in the blob gives an answer or an error, never a panic
    /// (`fdt` 0.1.5 panics on malformed blobs; `validate` must stop them first).
    #[test]
    fn random_corruption_never_panics() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut rejected = 0;
        // EL2_DT_FUZZ_ITERS=200000 for a longer run.
        let iters: usize = std::env::var("EL2_DT_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4000);
        for _ in 0..iters {
            let mut d = MAX_SMP4.to_vec();
            for _ in 0..(1 + rnd() % 4) {
                let at = (rnd() as usize) % d.len();
                d[at] = rnd() as u8;
            }
            if Platform::parse(&d).is_err() {
                rejected += 1;
            }
        }
        // Most single-byte changes hit property values and stay parseable; some must not.
        assert!(rejected > iters / 200, "{rejected}");
    }

    #[test]
    fn structure_errors() {
        // A property after a child node, which fdt 0.1.5 cannot walk: build one by hand.
        let p = Platform::parse(MAX_SMP4).unwrap();
        assert!(p.memory.len() == 1);
        let mut d = MAX_SMP4.to_vec();
        // Corrupt the first token of the structure block (must be BEGIN_NODE).
        let off = u32::from_be_bytes([d[8], d[9], d[10], d[11]]) as usize;
        d[off + 3] = 2;
        assert_eq!(Platform::parse(&d).unwrap_err(), DtError::Malformed);
        // Strings block beyond totalsize.
        let mut d = MAX_SMP4.to_vec();
        d[12..16].copy_from_slice(&0xffff_0000u32.to_be_bytes());
        assert_eq!(Platform::parse(&d).unwrap_err(), DtError::Malformed);
    }

    /// A structure block and strings block written token by token, for [`Structure`] alone.
    #[derive(Default)]
    struct Tokens {
        st: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Tokens {
        fn token(mut self, t: u32) -> Self {
            self.st.extend_from_slice(&t.to_be_bytes());
            self
        }
        fn pad(mut self) -> Self {
            while !self.st.len().is_multiple_of(4) {
                self.st.push(0);
            }
            self
        }
        fn begin_raw(mut self, name: &[u8]) -> Self {
            self = self.token(FDT_BEGIN_NODE);
            self.st.extend_from_slice(name);
            self.st.push(0);
            self.pad()
        }
        fn begin(self, name: &str) -> Self {
            self.begin_raw(name.as_bytes())
        }
        fn end(self) -> Self {
            self.token(FDT_END_NODE)
        }
        fn nop(self) -> Self {
            self.token(FDT_NOP)
        }
        fn fin(self) -> Self {
            self.token(FDT_END)
        }
        fn prop(mut self, name: &str, value: &[u8]) -> Self {
            let nameoff = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            self = self
                .token(FDT_PROP)
                .token(value.len() as u32)
                .token(nameoff);
            self.st.extend_from_slice(value);
            self.pad()
        }
        fn ok(&self) -> bool {
            Structure::new(&self.st, &self.strings).check().is_some()
        }
    }

    #[test]
    fn structure_rules_one_by_one() {
        let t = Tokens::default;
        let root = || t().begin("").prop("#address-cells", &[0, 0, 0, 2]);
        assert!(root()
            .begin("memory@0")
            .prop("reg", &[0; 12])
            .end()
            .end()
            .fin()
            .ok());
        // Nesting: one root, closed, no extra END_NODE, an END at the end.
        assert!(!root().fin().ok(), "root left open");
        assert!(!root().end().end().fin().ok(), "an END_NODE too many");
        assert!(!root().end().begin("").end().fin().ok(), "a second root");
        assert!(!root().end().ok(), "no FDT_END");
        assert!(!t().fin().ok(), "no root");
        assert!(!root().end().token(7).fin().ok(), "an unknown token");
        // Properties: inside a node, before its children, `#...` at least one cell, the value
        // inside the block, the name a string of the strings block.
        assert!(
            !t().prop("x", &[]).begin("").end().fin().ok(),
            "outside a node"
        );
        assert!(
            !root().begin("a").end().prop("x", &[]).end().fin().ok(),
            "after a child"
        );
        assert!(!t().begin("").prop("#size-cells", &[0, 1]).end().fin().ok());
        assert!(t().begin("").prop("#size-cells", &[0; 4]).end().fin().ok());
        let mut long = root().prop("reg", &[0; 8]).end().fin();
        let at = long.st.len() - 4 - 4 - 8 - 8; // the property's length word
        long.st[at..at + 4].copy_from_slice(&0x100u32.to_be_bytes());
        assert!(!long.ok(), "a value beyond the structure block");
        let mut stray = t().begin("").prop("reg", &[]).end().fin();
        stray.strings.clear();
        assert!(!stray.ok(), "a name offset beyond the strings block");
        // Names are NUL-terminated UTF-8.
        assert!(!root().begin_raw(&[0xff]).end().end().fin().ok());
        // Depth: MAX_DEPTH nested nodes are taken, one more is not.
        let nest = |n: usize| {
            let mut x = t();
            for _ in 0..n {
                x = x.begin("n");
            }
            for _ in 0..n {
                x = x.end();
            }
            x.fin()
        };
        assert!(nest(MAX_DEPTH).ok() && !nest(MAX_DEPTH + 1).ok());
        // NOPs only where every path of this module skips them.
        assert!(root().nop().nop().end().fin().ok(), "before END_NODE");
        assert!(root().end().nop().fin().ok(), "before END");
        assert!(
            root().nop().begin("a").end().end().fin().ok(),
            "before a root child"
        );
        assert!(
            !root().nop().prop("x", &[]).end().fin().ok(),
            "before a property"
        );
        let grandchild = root().begin("a").nop().begin("b").end().end().end().fin();
        assert!(!grandchild.ok(), "before a grandchild");
    }

    #[test]
    fn psci_missing_is_reported() {
        let p = Platform::parse(MAX_SMP4).unwrap();
        assert_eq!(p.psci_method(), Ok(PsciMethod::Smc));
        let none = Platform { psci: None, ..p };
        assert_eq!(none.psci_method(), Err(DtError::NoPsci));
    }

    #[test]
    fn list_refuses_when_full() {
        let mut l: List<u32, 2> = List::default();
        assert_eq!(l.push(0), Ok(()));
        assert_eq!(l.push(1), Ok(()));
        assert_eq!(l.push(2), Err(ListFull { limit: 2 }));
        assert_eq!(l.as_slice(), &[0, 1]);
    }

    /// The `size` bytes at `base`.
    fn pr(base: u64, size: u64) -> AddrRange<Pa> {
        AddrRange::from_start_len(Pa::new(base), size).unwrap()
    }

    #[test]
    fn ranges() {
        let a = pr(0x1000, 0x1000);
        assert_eq!(HalfOpen(a).to_string(), "[0x1000, 0x2000)");
        assert_eq!(HalfOpen(AddrRange::default()).to_string(), "[0x0, 0x0)");
        // A `reg` entry that runs past the top of the address space ends there.
        let top = saturating_range(u64::MAX - 1, 10);
        assert_eq!(
            (top.start(), top.end()),
            (Pa::new(u64::MAX - 1), Pa::new(u64::MAX))
        );
        assert_eq!(saturating_range(0x1000, 0x1000), a);
    }

    // ---- Synthesized trees: every list either keeps everything or refuses by name ----

    use vm_fdt::{FdtReserveEntry, FdtWriter};

    /// What [`synth`] puts in a QEMU-virt-like tree besides its fixed parts (2 root cells,
    /// `/psci`, one PL011 as `stdout-path`, one `/memory` bank).
    #[derive(Default)]
    struct Synth {
        /// `/memreserve/` entries.
        memreserve: Vec<(u64, u64)>,
        /// `/reserved-memory` children, each with its `reg` entries (2+2 cells).
        reserved: Vec<Vec<(u64, u64)>>,
        /// `/reserved-memory`'s own properties replacing `#address-cells = 2`,
        /// `#size-cells = 2` (name, raw value).
        reserved_cells: Option<Vec<(&'static str, Vec<u8>)>>,
        /// Extra `reg` entries of the one memory node.
        memory: Vec<(u64, u64)>,
        /// More memory nodes, one bank each.
        memory_nodes: usize,
        /// GICv3 redistributor regions: (declared, present).
        redists: Option<(u32, usize)>,
        /// `/chosen`'s `linux,initrd-start` and `linux,initrd-end` (raw values).
        initrd: (Option<Vec<u8>>, Option<Vec<u8>>),
        /// CPUs.
        cpus: usize,
        /// The root's properties replacing `#address-cells = 2`, `#size-cells = 2`.
        root_cells: Option<Vec<(&'static str, Vec<u8>)>>,
        /// Adds an empty node `gone` (under the root, or under `/reserved-memory`) for
        /// [`nop_out`] to delete as libfdt does.
        gone: Option<&'static str>,
    }

    /// Turns the empty node `gone` into NOP tokens, as libfdt's `fdt_nop_node` deletes a node.
    fn nop_out(mut t: Vec<u8>) -> Vec<u8> {
        let mut node = Vec::new();
        node.extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
        node.extend_from_slice(b"gone\0\0\0\0");
        node.extend_from_slice(&FDT_END_NODE.to_be_bytes());
        let at = t.windows(node.len()).position(|w| w == node).unwrap();
        for i in 0..node.len() / 4 {
            t[at + 4 * i..at + 4 * i + 4].copy_from_slice(&FDT_NOP.to_be_bytes());
        }
        t
    }

    /// Parses a synthesized tree (leaked: `Platform` borrows it; tests only).
    fn parse(t: Vec<u8>) -> Result<Platform<'static>, DtError> {
        Platform::parse(t.leak())
    }

    fn reg64(entries: &[(u64, u64)]) -> Vec<u64> {
        entries.iter().flat_map(|&(b, s)| [b, s]).collect()
    }

    fn synth(s: &Synth) -> Vec<u8> {
        let rsv: Vec<FdtReserveEntry> = s
            .memreserve
            .iter()
            .map(|&(b, l)| FdtReserveEntry::new(b, l).unwrap())
            .collect();
        let mut w = FdtWriter::new_with_mem_reserv(&rsv).unwrap();
        let root = w.begin_node("").unwrap();
        let two = 2u32.to_be_bytes().to_vec();
        let root_cells = s.root_cells.clone().unwrap_or_else(|| {
            alloc::vec![
                ("#address-cells", two.clone()),
                ("#size-cells", two.clone())
            ]
        });
        for (name, v) in &root_cells {
            w.property(name, v).unwrap();
        }
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("stdout-path", "/pl011@9000000").unwrap();
        if let Some(v) = &s.initrd.0 {
            w.property("linux,initrd-start", v).unwrap();
        }
        if let Some(v) = &s.initrd.1 {
            w.property("linux,initrd-end", v).unwrap();
        }
        w.end_node(chosen).unwrap();
        if s.gone == Some("/") {
            let g = w.begin_node("gone").unwrap();
            w.end_node(g).unwrap();
        }
        let psci = w.begin_node("psci").unwrap();
        w.property_string("compatible", "arm,psci-1.0").unwrap();
        w.property_string("method", "smc").unwrap();
        w.end_node(psci).unwrap();
        let uart = w.begin_node("pl011@9000000").unwrap();
        w.property_string("compatible", "arm,pl011").unwrap();
        w.property_array_u64("reg", &[0x900_0000, 0x1000]).unwrap();
        w.property_array_u32("interrupts", &[0, 1, 4]).unwrap();
        w.end_node(uart).unwrap();
        let mut banks = alloc::vec![(0x4000_0000u64, 0x8000_0000u64)];
        banks.extend_from_slice(&s.memory);
        let mem = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u64("reg", &reg64(&banks)).unwrap();
        w.end_node(mem).unwrap();
        for i in 0..s.memory_nodes as u64 {
            let base = 0x10_0000_0000 + i * 0x1000_0000;
            let n = w.begin_node(&alloc::format!("memory@{base:x}")).unwrap();
            w.property_string("device_type", "memory").unwrap();
            w.property_array_u64("reg", &[base, 0x1000_0000]).unwrap();
            w.end_node(n).unwrap();
        }
        if !s.reserved.is_empty() || s.reserved_cells.is_some() {
            let rm = w.begin_node("reserved-memory").unwrap();
            let cells = s.reserved_cells.clone().unwrap_or_else(|| {
                alloc::vec![
                    ("#address-cells", two.clone()),
                    ("#size-cells", two.clone())
                ]
            });
            for (name, v) in &cells {
                w.property(name, v).unwrap();
            }
            w.property_null("ranges").unwrap();
            if s.gone == Some("/reserved-memory") {
                let g = w.begin_node("gone").unwrap();
                w.end_node(g).unwrap();
            }
            for (i, regs) in s.reserved.iter().enumerate() {
                let base = regs.first().map_or(i as u64, |r| r.0);
                let c = w
                    .begin_node(&alloc::format!("carveout{i}@{base:x}"))
                    .unwrap();
                w.property_array_u64("reg", &reg64(regs)).unwrap();
                w.property_null("no-map").unwrap();
                w.end_node(c).unwrap();
            }
            w.end_node(rm).unwrap();
        }
        if let Some((declared, present)) = s.redists {
            let gic = w.begin_node("intc@8000000").unwrap();
            w.property_string("compatible", "arm,gic-v3").unwrap();
            w.property_u32("#redistributor-regions", declared).unwrap();
            let mut regs = alloc::vec![(0x800_0000u64, 0x1_0000u64)];
            regs.extend((0..present as u64).map(|i| (0x10_0000 * (i + 1), 0x2_0000)));
            w.property_array_u64("reg", &reg64(&regs)).unwrap();
            w.end_node(gic).unwrap();
        }
        let cpus = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        for i in 0..s.cpus as u32 {
            let c = w.begin_node(&alloc::format!("cpu@{i:x}")).unwrap();
            w.property_string("device_type", "cpu").unwrap();
            w.property_string("enable-method", "psci").unwrap();
            w.property_u32("reg", i).unwrap();
            w.end_node(c).unwrap();
        }
        w.end_node(cpus).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    /// `n` disjoint 64 KiB ranges in RAM, starting at `from`.
    fn carveouts(from: u64, n: usize) -> Vec<(u64, u64)> {
        (0..n as u64)
            .map(|i| (from + i * 0x10_0000, 0x1_0000))
            .collect()
    }

    fn ranges_of(v: &[(u64, u64)]) -> Vec<AddrRange<Pa>> {
        v.iter().map(|&(b, s)| pr(b, s)).collect()
    }

    fn too_many(e: DtError) -> (alloc::string::String, &'static str, usize) {
        match e {
            DtError::TooMany { node, what, limit } => {
                let msg = e.to_string();
                assert!(msg.contains(node.as_str()), "{msg}");
                assert!(msg.contains(&alloc::format!("at most {limit}")), "{msg}");
                (node.as_str().into(), what, limit)
            }
            e => panic!("expected TooMany, got {e:?}"),
        }
    }

    #[test]
    fn the_synthesized_base_tree_parses() {
        let p = parse(synth(&Synth {
            cpus: 2,
            ..Synth::default()
        }))
        .unwrap();
        assert_eq!(p.memory.as_slice(), &[pr(0x4000_0000, 0x8000_0000)]);
        assert!(p.reserved.is_empty());
        assert_eq!(p.uart.unwrap().regs, pr(0x900_0000, 0x1000));
        assert_eq!(p.uart.unwrap().intid, Some(33));
        assert_eq!(p.psci, Some(PsciMethod::Smc));
        assert_eq!(p.cpus.len(), 2);
        assert!(p.gic.is_none());
    }

    /// Nine and more reserved ranges (the old limit was 8) are all kept, from `/memreserve/`
    /// and from `/reserved-memory` children with five and more `reg` entries (the old limit
    /// was 4 per child), up to the limit exactly.
    #[test]
    fn every_reserved_range_is_kept_up_to_the_limit() {
        let memreserve = carveouts(0x7000_0000, 9);
        let big_child = carveouts(0x5000_0000, 12);
        let rest = MAX_RESERVED_RANGES - 9 - 12;
        let small: Vec<Vec<(u64, u64)>> = carveouts(0x6000_0000, rest)
            .into_iter()
            .map(|r| alloc::vec![r])
            .collect();
        let mut reserved = alloc::vec![big_child.clone()];
        reserved.extend(small.iter().cloned());
        let p = parse(synth(&Synth {
            memreserve: memreserve.clone(),
            reserved,
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap();
        let mut want = ranges_of(&memreserve);
        want.extend(ranges_of(&big_child));
        want.extend(small.iter().flat_map(|c| ranges_of(c)));
        assert_eq!(p.reserved.as_slice(), &want[..]);
        assert_eq!(p.reserved.len(), MAX_RESERVED_RANGES);
    }

    #[test]
    fn one_reserved_range_too_many_refuses_naming_the_child() {
        // In one child's reg (five and more entries).
        let e = parse(synth(&Synth {
            reserved: alloc::vec![carveouts(0x5000_0000, MAX_RESERVED_RANGES + 1)],
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap_err();
        assert_eq!(
            too_many(e),
            (
                "/reserved-memory/carveout0@50000000".into(),
                "reserved ranges",
                MAX_RESERVED_RANGES
            )
        );
        // Spread over /memreserve/ and many children: the child that overflows is named.
        let mut reserved: Vec<Vec<(u64, u64)>> = carveouts(0x5000_0000, MAX_RESERVED_RANGES - 3)
            .into_iter()
            .map(|r| alloc::vec![r])
            .collect();
        reserved.push(carveouts(0x6800_0000, 5));
        let e = parse(synth(&Synth {
            memreserve: carveouts(0x7000_0000, 2),
            reserved,
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap_err();
        let (node, what, limit) = too_many(e);
        assert_eq!(node, "/reserved-memory/carveout29@68000000");
        assert_eq!((what, limit), ("reserved ranges", MAX_RESERVED_RANGES));
        // In /memreserve/ alone.
        let e = parse(synth(&Synth {
            memreserve: carveouts(0x7000_0000, MAX_RESERVED_RANGES + 1),
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap_err();
        assert_eq!(too_many(e).0, "/memreserve/");
    }

    #[test]
    fn every_ram_range_is_kept_or_the_tree_is_refused() {
        // Nine entries in one memory node (the old per-node limit was 8), more nodes up to
        // the limit.
        let extra = carveouts(0x1_0000_0000, 8);
        let p = parse(synth(&Synth {
            memory: extra.clone(),
            memory_nodes: MAX_MEMORY_RANGES - 9,
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap();
        assert_eq!(p.memory.len(), MAX_MEMORY_RANGES);
        assert_eq!(&p.memory.as_slice()[1..9], &ranges_of(&extra)[..]);
        let e = parse(synth(&Synth {
            memory: extra,
            memory_nodes: MAX_MEMORY_RANGES - 8,
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap_err();
        let (node, what, limit) = too_many(e);
        assert!(node.starts_with("/memory@"), "{node}");
        assert_eq!((what, limit), ("RAM ranges", MAX_MEMORY_RANGES));
    }

    #[test]
    fn redistributor_regions_beyond_four_are_kept_or_refused() {
        let p = parse(synth(&Synth {
            redists: Some((MAX_REDIST_REGIONS as u32, MAX_REDIST_REGIONS)),
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap();
        let g = p.gic.unwrap();
        assert_eq!(g.dist, pr(0x800_0000, 0x1_0000));
        assert_eq!(g.redists.len(), MAX_REDIST_REGIONS);
        assert_eq!(
            g.redists.as_slice().last(),
            Some(&pr(0x10_0000 * MAX_REDIST_REGIONS as u64, 0x2_0000))
        );
        let e = parse(synth(&Synth {
            redists: Some((MAX_REDIST_REGIONS as u32 + 1, MAX_REDIST_REGIONS + 1)),
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap_err();
        assert_eq!(
            too_many(e),
            (
                "/intc@8000000".into(),
                "redistributor regions",
                MAX_REDIST_REGIONS
            )
        );
        // Declared but missing from reg.
        let e = parse(synth(&Synth {
            redists: Some((3, 2)),
            cpus: 1,
            ..Synth::default()
        }))
        .unwrap_err();
        assert_eq!(
            e,
            DtError::MissingRedists {
                node: NodePath::new("/intc@8000000"),
                declared: 3,
                found: 2
            }
        );
        assert!(e.to_string().contains("/intc@8000000"), "{e}");
    }

    /// The boot bundle QEMU's `-initrd` loads: `/chosen` says where, in one or two cells each.
    #[test]
    fn initrd_range_from_chosen_in_one_or_two_cells() {
        let p = Platform::parse(MAX_INITRD).unwrap();
        assert_eq!(p.initrd, Some(pr(0x4800_0000, 0x1000)));
        assert_eq!(p.bootargs, "hyp.granule=4k");
        let cells = |start: u64, end: u64, two: bool| {
            let v = |x: u64| {
                if two {
                    x.to_be_bytes().to_vec()
                } else {
                    (x as u32).to_be_bytes().to_vec()
                }
            };
            parse(synth(&Synth {
                initrd: (Some(v(start)), Some(v(end))),
                cpus: 1,
                ..Synth::default()
            }))
        };
        let r = pr(0x4800_0000, 0x20_0000);
        assert_eq!(
            cells(0x4800_0000, 0x4820_0000, true).unwrap().initrd,
            Some(r)
        );
        assert_eq!(
            cells(0x4800_0000, 0x4820_0000, false).unwrap().initrd,
            Some(r)
        );
        let empty = cells(0x4800_0000, 0x4800_0000, true)
            .unwrap()
            .initrd
            .unwrap();
        assert_eq!(empty.len(), 0);
        let no_initrd = parse(synth(&Synth {
            cpus: 1,
            ..Synth::default()
        }));
        assert_eq!(no_initrd.unwrap().initrd, None);
    }

    #[test]
    fn initrd_that_is_not_a_range_refuses() {
        let why = |start: Option<Vec<u8>>, end: Option<Vec<u8>>| match parse(synth(&Synth {
            initrd: (start, end),
            cpus: 1,
            ..Synth::default()
        })) {
            Err(DtError::BadInitrd { why }) => why,
            other => panic!("{other:?}"),
        };
        let v = |x: u64| Some(x.to_be_bytes().to_vec());
        assert_eq!(
            why(v(0x4900_0000), v(0x4800_0000)),
            "the end is before the start"
        );
        assert_eq!(why(v(0x4800_0000), None), "one of the two is missing");
        assert_eq!(why(None, v(0x4800_0000)), "one of the two is missing");
        assert_eq!(
            why(Some(alloc::vec![0; 3]), v(0x4800_0000)),
            "a value is not one or two 32-bit cells"
        );
        let e = DtError::BadInitrd { why: "x" };
        assert!(e.to_string().contains("/chosen"), "{e}");
    }

    /// CPUs are the one list that neither grows nor refuses: hyp runs on the first
    /// MAX_CPUS and counts the rest (boot warns), since a CPU left off exposes nothing.
    #[test]
    fn cpus_beyond_the_limit_are_counted() {
        let p = parse(synth(&Synth {
            cpus: MAX_CPUS + 3,
            ..Synth::default()
        }))
        .unwrap();
        assert_eq!(p.cpus.len(), MAX_CPUS);
        assert_eq!(p.cpus_not_listed, 3);
        let mpidrs: Vec<u64> = p.cpus.as_slice().iter().map(|c| c.mpidr).collect();
        assert_eq!(mpidrs, (0..MAX_CPUS as u64).collect::<Vec<_>>());
    }

    fn cell(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    /// `#address-cells`/`#size-cells` that are not 4 bytes: shorter ones are stopped by
    /// `validate` (`fdt` would panic on them), longer ones by `Cells::of`. Each test fails
    /// if its check is removed.
    #[test]
    fn cell_count_properties_must_be_one_cell() {
        for (name, len) in [
            ("#address-cells", 0),
            ("#size-cells", 2),
            ("#address-cells", 3),
        ] {
            let short = synth(&Synth {
                reserved: alloc::vec![carveouts(0x5000_0000, 1)],
                reserved_cells: Some(alloc::vec![
                    (
                        "#address-cells",
                        if name == "#address-cells" {
                            alloc::vec![0; len]
                        } else {
                            cell(2)
                        }
                    ),
                    (
                        "#size-cells",
                        if name == "#size-cells" {
                            alloc::vec![0; len]
                        } else {
                            cell(2)
                        }
                    ),
                ]),
                cpus: 1,
                ..Synth::default()
            });
            assert_eq!(validate(&short), Err(DtError::Malformed), "{name} {len}");
            assert_eq!(
                Platform::parse(&short).unwrap_err(),
                DtError::Malformed,
                "{name} {len}"
            );
        }
        // A short cell count at the root (the parent of every memory and device node).
        let short_root = synth(&Synth {
            root_cells: Some(alloc::vec![
                ("#address-cells", alloc::vec![0, 2]),
                ("#size-cells", cell(2))
            ]),
            cpus: 1,
            ..Synth::default()
        });
        assert_eq!(
            Platform::parse(&short_root).unwrap_err(),
            DtError::Malformed
        );
        // Longer than one cell: fdt would read the first 4 bytes; hyp refuses.
        for name in ["#address-cells", "#size-cells"] {
            let mut long = cell(0);
            long.extend_from_slice(&cell(2));
            let t = synth(&Synth {
                reserved: alloc::vec![carveouts(0x5000_0000, 1)],
                reserved_cells: Some(alloc::vec![
                    (
                        "#address-cells",
                        if name == "#address-cells" {
                            long.clone()
                        } else {
                            cell(2)
                        }
                    ),
                    (
                        "#size-cells",
                        if name == "#size-cells" {
                            long.clone()
                        } else {
                            cell(2)
                        }
                    ),
                ]),
                cpus: 1,
                ..Synth::default()
            });
            assert_eq!(validate(&t), Ok(()));
            let e = Platform::parse(&t).unwrap_err();
            assert_eq!(
                e,
                DtError::BadCells {
                    node: NodePath::new("/reserved-memory"),
                    name,
                    len: 8
                }
            );
            assert!(e.to_string().contains("/reserved-memory: #"), "{e}");
        }
    }

    /// Cell counts hyp cannot decode refuse the node instead of dropping its ranges: 3
    /// address cells, 3 size cells, 0/0 (on which `fdt`'s `raw_reg` never ends), and a `reg`
    /// that is not whole entries.
    #[test]
    fn reg_that_does_not_decode_refuses_the_node() {
        for (a, s) in [(3, 2), (2, 3), (0, 0), (0, 2)] {
            let t = synth(&Synth {
                reserved: alloc::vec![carveouts(0x5000_0000, 1)],
                reserved_cells: Some(alloc::vec![
                    ("#address-cells", cell(a)),
                    ("#size-cells", cell(s))
                ]),
                cpus: 1,
                ..Synth::default()
            });
            let e = Platform::parse(&t).unwrap_err();
            assert_eq!(
                e,
                DtError::BadReg {
                    node: NodePath::new("/reserved-memory/carveout0@50000000"),
                    address_cells: a,
                    size_cells: s,
                    len: 16
                },
                "{a}/{s}"
            );
            assert!(
                e.to_string()
                    .contains("carveout0@50000000: reg of 16 bytes"),
                "{e}"
            );
        }
        // 2 address cells + 1 size cell: 16 bytes are one and a third entries.
        let t = synth(&Synth {
            reserved: alloc::vec![carveouts(0x5000_0000, 1)],
            reserved_cells: Some(alloc::vec![
                ("#address-cells", cell(2)),
                ("#size-cells", cell(1))
            ]),
            cpus: 1,
            ..Synth::default()
        });
        assert!(matches!(
            Platform::parse(&t),
            Err(DtError::BadReg {
                len: 16,
                address_cells: 2,
                size_cells: 1,
                ..
            })
        ));
        // 1 + 1 cells decode: the 16 bytes are two ranges.
        let t = synth(&Synth {
            reserved: alloc::vec![alloc::vec![(0x5000_0000_0001_0000, 0x2000_0000_0000_1000)]],
            reserved_cells: Some(alloc::vec![
                ("#address-cells", cell(1)),
                ("#size-cells", cell(1))
            ]),
            cpus: 1,
            ..Synth::default()
        });
        assert_eq!(
            Platform::parse(&t).unwrap().reserved.as_slice(),
            &[pr(0x5000_0000, 0x1_0000), pr(0x2000_0000, 0x1000)]
        );
        // A root with 1 + 0 cells: the memory node's reg has no size; hyp keeps no
        // empty RAM range and finds no memory.
        let t = synth(&Synth {
            root_cells: Some(alloc::vec![
                ("#address-cells", cell(1)),
                ("#size-cells", cell(0))
            ]),
            cpus: 1,
            ..Synth::default()
        });
        assert_eq!(Platform::parse(&t).unwrap_err(), DtError::NoMemory);
    }

    #[test]
    fn unterminated_memreserve_is_malformed() {
        let mut d = synth(&Synth {
            memreserve: carveouts(0x7000_0000, 1),
            cpus: 1,
            ..Synth::default()
        });
        assert_eq!(Platform::parse(&d).unwrap().reserved.len(), 1);
        // Point the block at its last 16 bytes before totalsize... minus 8: no terminator.
        let total = d.len();
        d[16..20].copy_from_slice(&((total - 8) as u32).to_be_bytes());
        assert_eq!(Platform::parse(&d).unwrap_err(), DtError::Malformed);
    }

    #[test]
    fn console_for_refusals_and_paths() {
        // A refused tree still yields its console and PSCI method for the report.
        let t = synth(&Synth {
            initrd: (Some(alloc::vec![0; 8]), None),
            cpus: 1,
            ..Synth::default()
        });
        assert!(Platform::parse(&t).is_err());
        let (uart, psci) = Platform::find_console(&t);
        assert_eq!(uart.unwrap().regs.start(), Pa::new(0x900_0000));
        assert_eq!(psci, Some(PsciMethod::Smc));
        assert_eq!(Platform::find_console(&t[..64]), (None, None));
        // Long paths are cut for messages, never a panic.
        let long = "n".repeat(200);
        let p = NodePath::of(&[&long, "x"]);
        assert_eq!(p.as_str().len(), PATH_BYTES);
        assert!(p.to_string().ends_with("n..."));
        assert_eq!(NodePath::of(&[]).to_string(), "/");
        assert_eq!(NodePath::of(&["a", "b@1"]).to_string(), "/a/b@1");
        // Multi-byte characters are never split.
        let wide = "é".repeat(100);
        assert!(NodePath::of(&[&wide]).as_str().len() <= PATH_BYTES);
    }

    /// A node deleted with libfdt's `fdt_nop_node` leaves NOP tokens; QEMU does this to the
    /// tree it loads with `-dtb`. Between the root's children they are skipped; inside
    /// another node `fdt` 0.1.5 would panic skipping it, so they are refused there.
    #[test]
    fn nops_of_a_deleted_root_child_are_skipped() {
        let base = Synth {
            reserved: alloc::vec![carveouts(0x5000_0000, 1)],
            cpus: 2,
            ..Synth::default()
        };
        let t = nop_out(synth(&Synth {
            gone: Some("/"),
            ..base
        }));
        let p = parse(t).unwrap();
        assert_eq!(p.psci, Some(PsciMethod::Smc));
        assert_eq!(p.uart.unwrap().regs.start(), Pa::new(0x900_0000));
        assert_eq!(p.bootargs, "");
        assert_eq!(p.reserved.len(), 1);
        assert_eq!(p.cpus.len(), 2);
        let t = nop_out(synth(&Synth {
            reserved: alloc::vec![carveouts(0x5000_0000, 1)],
            gone: Some("/reserved-memory"),
            cpus: 1,
            ..Synth::default()
        }));
        assert_eq!(parse(t).unwrap_err(), DtError::Malformed);
    }

    /// The `dt` fuzz target's seeds (fuzz/seeds/dt, made by tools/fuzz-seeds) are trees hyp
    /// accepts, so the fuzzer starts past the header and structure checks.
    #[test]
    fn the_fuzz_seeds_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/dt");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let p = Platform::parse(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(p.uart.is_some() && p.psci.is_some(), "{}", path.display());
            n += 1;
        }
        assert!(n >= 3, "{n} seeds");
        // The small one has something in every list.
        let small = std::fs::read(dir.join("small.dtb")).unwrap();
        let p = Platform::parse(&small).unwrap();
        assert_eq!(p.memory.len(), 2);
        assert_eq!(p.reserved.len(), 3);
        assert_eq!(p.gic.unwrap().redists.len(), 2);
        assert_eq!(p.cpus.len(), 2);
        assert_eq!(p.uart.unwrap().regs.start(), Pa::new(0x900_0000));
        assert_eq!(p.psci, Some(PsciMethod::Hvc));
    }
}
