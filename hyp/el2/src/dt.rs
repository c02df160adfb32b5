//! The host device tree: what hyp needs from it, parsed with the `fdt` crate into plain values.
//!
//! Only bounds-checked accessors of `fdt` 0.1.5 are used here (`find_node`, `all_nodes`,
//! `property`, `raw_reg`); its `cpus()`, `memory()` and `chosen()` helpers panic when a node is
//! missing, so they are avoided. Cell values are decoded here from the raw bytes.
//!
//! Addresses are taken as they appear in `reg` (QEMU's virt machine puts every device we use
//! at the root or under an identity `ranges;`), so no bus translation is done.

use core::fmt;
use fdt::node::FdtNode;
use fdt::Fdt;

/// The largest device tree the arm64 booting protocol allows (Documentation/arch/arm64/
/// booting.rst: "The device tree blob (dtb) must ... not exceed 2 megabytes in size").
pub const MAX_DTB_SIZE: usize = 2 << 20;

/// The most CPUs hyp tracks.
pub const MAX_CPUS: usize = 16;

/// A physical address range `[base, base + size)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl PhysRange {
    /// A range from base and size.
    pub const fn new(base: u64, size: u64) -> Self {
        PhysRange { base, size }
    }

    /// One past the last byte (saturating at `u64::MAX`).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Whether the two ranges share a byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.base < other.end() && other.base < self.end()
    }

    /// Whether `addr` lies in the range.
    pub const fn contains(&self, addr: u64) -> bool {
        self.base <= addr && addr < self.end()
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.base, self.end())
    }
}

/// A list with a fixed capacity (the device tree is parsed before hyp has a heap).
#[derive(Clone, Copy, Debug)]
pub struct List<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
    dropped: usize,
}

impl<T: Copy + Default, const N: usize> Default for List<T, N> {
    fn default() -> Self {
        List {
            items: [T::default(); N],
            len: 0,
            dropped: 0,
        }
    }
}

impl<T: Copy + Default, const N: usize> List<T, N> {
    /// Appends `item`, or counts it as dropped when the list is full.
    pub fn push(&mut self, item: T) {
        if self.len < N {
            self.items[self.len] = item;
            self.len += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// The items kept.
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    /// How many items did not fit.
    pub fn dropped(&self) -> usize {
        self.dropped
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
    pub regs: PhysRange,
    /// Its interrupt ID (GIC INTID), if the node has an `interrupts` property.
    pub intid: Option<u32>,
}

/// A GICv3.
#[derive(Clone, Copy, Debug, Default)]
pub struct GicV3 {
    /// The distributor (GICD).
    pub dist: PhysRange,
    /// The redistributor regions (GICR), `#redistributor-regions` of them.
    pub redists: List<PhysRange, 4>,
}

/// A virtio-mmio slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioMmio {
    /// Its registers.
    pub regs: PhysRange,
    /// Its interrupt ID (GIC INTID).
    pub intid: u32,
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
    /// RAM: the `reg` entries of every `device_type = "memory"` node.
    pub memory: List<PhysRange, 8>,
    /// `/memreserve/` entries and `/reserved-memory` children with a `reg`.
    pub reserved: List<PhysRange, 8>,
    /// The console UART (the `/chosen` `stdout-path` one, else the first `arm,pl011`).
    pub uart: Option<Pl011>,
    /// The GICv3, if any.
    pub gic: Option<GicV3>,
    /// The virtio-mmio slots, in address order as the tree lists them.
    pub virtio_mmio: List<VirtioMmio, 32>,
    /// How to call PSCI, if there is a `/psci` node.
    pub psci: Option<PsciMethod>,
    /// The CPUs, in tree order (the first is normally the boot CPU).
    pub cpus: List<CpuNode, MAX_CPUS>,
    /// `/chosen` `bootargs` (empty when absent).
    pub bootargs: &'a str,
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
    /// `fdt` rejected the blob.
    Malformed,
    /// No `/memory` node with a usable `reg`.
    NoMemory,
    /// No `/psci` node with `method = "smc"` or `"hvc"`.
    NoPsci,
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
                "the device tree is malformed (bad block offsets, token nesting, names or \
                 property sizes)",
            ),
            DtError::NoMemory => {
                f.write_str("the device tree has no memory node with a reg property")
            }
            DtError::NoPsci => f.write_str(
                "the device tree has no /psci node with method \"smc\" or \"hvc\": hyp needs \
                 PSCI to start CPUs and power off",
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

/// A big-endian value of 1 or 2 cells.
fn cells(b: &[u8]) -> Option<u64> {
    match b.len() {
        0 => Some(0),
        4 => be32(b, 0).map(u64::from),
        8 => be64(b, 0),
        _ => None,
    }
}

fn regs<'a, const N: usize>(node: FdtNode<'_, 'a>) -> List<PhysRange, N> {
    let mut out = List::default();
    if let Some(it) = node.raw_reg() {
        for r in it {
            if let (Some(base), Some(size)) = (cells(r.address), cells(r.size)) {
                out.push(PhysRange { base, size });
            }
        }
    }
    out
}

fn first_reg(node: FdtNode<'_, '_>) -> Option<PhysRange> {
    regs::<1>(node).as_slice().first().copied()
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

/// `/memreserve/` entries, bounds-checked (pairs of big-endian u64, ended by a zero pair).
fn memreserve<const N: usize>(data: &[u8], out: &mut List<PhysRange, N>) {
    let Some(off) = be32(data, 16) else { return };
    let mut off = off as usize;
    while let (Some(base), Some(size)) = (be64(data, off), be64(data, off.saturating_add(8))) {
        if base == 0 && size == 0 {
            break;
        }
        out.push(PhysRange { base, size });
        off = off.saturating_add(16);
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
    let bad = Err(DtError::Malformed);
    let h = |i: usize| be32(data, 4 * i).map(|v| v as usize);
    let (Some(total), Some(off_struct), Some(off_strings), Some(off_rsv)) =
        (h(1), h(2), h(3), h(4))
    else {
        return bad;
    };
    let (Some(size_strings), Some(size_struct)) = (h(8), h(9)) else {
        return bad;
    };
    let in_total = |off: usize, size: usize| off.checked_add(size).is_some_and(|e| e <= total);
    if total > data.len()
        || !in_total(off_struct, size_struct)
        || !in_total(off_strings, size_strings)
        || off_rsv >= total
        || off_struct % 4 != 0
    {
        return bad;
    }
    let st = &data[off_struct..off_struct + size_struct];
    let strings = &data[off_strings..off_strings + size_strings];
    let cstr = |b: &[u8], at: usize| -> Option<usize> {
        let rest = b.get(at..)?;
        let n = rest.iter().position(|&c| c == 0)?;
        core::str::from_utf8(&rest[..n]).ok()?;
        Some(n)
    };
    let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);

    // Per open node: whether a child node was seen (then no more properties).
    let mut children_seen = [false; MAX_DEPTH];
    let mut depth = 0usize;
    let mut root_done = false;
    let mut pos = 0usize;
    loop {
        let Some(tok) = be32(st, pos) else { return bad };
        pos += 4;
        match tok {
            FDT_BEGIN_NODE => {
                if root_done || depth >= MAX_DEPTH {
                    return bad;
                }
                if depth > 0 {
                    children_seen[depth - 1] = true;
                }
                let Some(n) = cstr(st, pos) else { return bad };
                let Some(next) = align4(n + 1).and_then(|a| pos.checked_add(a)) else {
                    return bad;
                };
                pos = next;
                children_seen[depth] = false;
                depth += 1;
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return bad;
                }
                depth -= 1;
                if depth == 0 {
                    root_done = true;
                }
            }
            FDT_PROP => {
                if depth == 0 || children_seen[depth - 1] {
                    return bad;
                }
                let (Some(len), Some(nameoff)) = (be32(st, pos), be32(st, pos + 4)) else {
                    return bad;
                };
                let (len, nameoff) = (len as usize, nameoff as usize);
                let Some(n) = cstr(strings, nameoff) else {
                    return bad;
                };
                let name = &strings[nameoff..nameoff + n];
                if name.starts_with(b"#") && len < 4 {
                    return bad;
                }
                let Some(end) = pos.checked_add(8).and_then(|p| p.checked_add(len)) else {
                    return bad;
                };
                if end > st.len() {
                    return bad;
                }
                let Some(next) = align4(len).and_then(|a| (pos + 8).checked_add(a)) else {
                    return bad;
                };
                pos = next;
            }
            FDT_NOP => {
                // `fdt` skips NOPs only before an END_NODE/END (and before properties and
                // children when iterating, but not when skipping a node): accept them only
                // where every path skips them.
                let mut p = pos;
                while be32(st, p) == Some(FDT_NOP) {
                    p += 4;
                }
                if !matches!(be32(st, p), Some(FDT_END_NODE) | Some(FDT_END)) {
                    return bad;
                }
            }
            FDT_END => {
                return if depth == 0 && root_done { Ok(()) } else { bad };
            }
            _ => return bad,
        }
    }
}

impl<'a> Platform<'a> {
    /// Parses the device tree in `data` (at least `totalsize` bytes).
    pub fn parse(data: &'a [u8]) -> Result<Platform<'a>, DtError> {
        let dtb_size = dtb_total_size(data)?;
        if data.len() < dtb_size {
            return Err(DtError::BadSize {
                totalsize: dtb_size as u32,
            });
        }
        let data = &data[..dtb_size];
        validate(data)?;
        let fdt = Fdt::new(data).map_err(|_| DtError::Malformed)?;

        let mut memory = List::default();
        let mut reserved = List::default();
        let mut uart_nodes: List<Pl011, 4> = List::default();
        let mut gic = None;
        let mut virtio_mmio = List::default();

        memreserve(data, &mut reserved);

        for node in fdt.all_nodes() {
            if prop_str(node, "device_type") == Some("memory") {
                for r in regs::<8>(node).as_slice() {
                    if r.size > 0 {
                        memory.push(*r);
                    }
                }
            }
            if is_compatible(node, "arm,pl011") {
                if let Some(regs) = first_reg(node) {
                    uart_nodes.push(Pl011 {
                        regs,
                        intid: gic_intid(node),
                    });
                }
            }
            if is_compatible(node, "arm,gic-v3") {
                let all = regs::<8>(node);
                let n = node
                    .property("#redistributor-regions")
                    .and_then(|p| be32(p.value, 0))
                    .unwrap_or(1) as usize;
                if let Some((dist, rest)) = all.as_slice().split_first() {
                    let mut redists = List::default();
                    for r in rest.iter().take(n) {
                        redists.push(*r);
                    }
                    gic = Some(GicV3 {
                        dist: *dist,
                        redists,
                    });
                }
            }
            if is_compatible(node, "virtio,mmio") {
                if let (Some(regs), Some(intid)) = (first_reg(node), gic_intid(node)) {
                    virtio_mmio.push(VirtioMmio { regs, intid });
                }
            }
        }
        if memory.is_empty() {
            return Err(DtError::NoMemory);
        }
        if let Some(rm) = fdt.find_node("/reserved-memory") {
            for child in rm.children() {
                for r in regs::<4>(child).as_slice() {
                    reserved.push(*r);
                }
            }
        }

        let chosen = fdt.find_node("/chosen");
        let bootargs = chosen.and_then(|c| prop_str(c, "bootargs")).unwrap_or("");
        // The console: /chosen stdout-path (up to ':' options) if it names a PL011.
        let stdout = chosen
            .and_then(|c| prop_str(c, "stdout-path"))
            .map(|p| p.split(':').next().unwrap_or(p))
            .and_then(|p| fdt.find_node(p))
            .filter(|n| is_compatible(*n, "arm,pl011"))
            .and_then(|n| {
                first_reg(n).map(|regs| Pl011 {
                    regs,
                    intid: gic_intid(n),
                })
            });
        let uart = stdout.or_else(|| uart_nodes.as_slice().first().copied());

        let psci = fdt
            .find_node("/psci")
            .and_then(|n| prop_str(n, "method"))
            .and_then(|m| match m {
                "smc" => Some(PsciMethod::Smc),
                "hvc" => Some(PsciMethod::Hvc),
                _ => None,
            });

        let mut cpus = List::default();
        if let Some(cpus_node) = fdt.find_node("/cpus") {
            for c in cpus_node.children() {
                if prop_str(c, "device_type") != Some("cpu") {
                    continue;
                }
                if let Some(mpidr) = c
                    .raw_reg()
                    .and_then(|mut r| r.next())
                    .and_then(|r| cells(r.address))
                {
                    cpus.push(CpuNode {
                        mpidr,
                        psci: prop_str(c, "enable-method") == Some("psci"),
                    });
                }
            }
        }

        Ok(Platform {
            dtb_size,
            memory,
            reserved,
            uart,
            gic,
            virtio_mmio,
            psci,
            cpus,
            bootargs,
        })
    }

    /// The first `reg` range of the first node compatible with `compatible` in the device
    /// tree `data` (the blob [`Platform::parse`] accepted), for devices `Platform` does not
    /// list.
    pub fn find_compatible_reg(data: &[u8], compatible: &str) -> Option<PhysRange> {
        let size = dtb_total_size(data).ok()?;
        let data = data.get(..size)?;
        validate(data).ok()?;
        let fdt = Fdt::new(data).ok()?;
        let reg = fdt
            .all_nodes()
            .find(|n| is_compatible(*n, compatible))
            .and_then(first_reg);
        reg
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

    #[test]
    fn qemu_virt_max_smp4() {
        let p = Platform::parse(MAX_SMP4).unwrap();
        assert_eq!(p.dtb_size, MAX_SMP4.len());
        assert_eq!(
            p.memory.as_slice(),
            &[PhysRange::new(0x4000_0000, 0x8000_0000)]
        );
        assert!(p.reserved.is_empty());
        assert_eq!(
            p.uart,
            Some(Pl011 {
                regs: PhysRange::new(0x0900_0000, 0x1000),
                intid: Some(33)
            })
        );
        let gic = p.gic.unwrap();
        assert_eq!(gic.dist, PhysRange::new(0x0800_0000, 0x1_0000));
        assert_eq!(
            gic.redists.as_slice(),
            &[PhysRange::new(0x080a_0000, 0xf6_0000)]
        );
        assert_eq!(p.virtio_mmio.len(), 32);
        let mut slots: Vec<_> = p.virtio_mmio.as_slice().to_vec();
        slots.sort_by_key(|s| s.regs.base);
        for (n, s) in slots.iter().enumerate() {
            assert_eq!(
                s.regs,
                PhysRange::new(0x0a00_0000 + n as u64 * 0x200, 0x200)
            );
            assert_eq!(s.intid, 32 + 16 + n as u32);
        }
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
        assert_eq!(
            p.memory.as_slice(),
            &[PhysRange::new(0x4000_0000, 0x4000_0000)]
        );
    }

    #[test]
    fn find_compatible_reg_finds_devices_platform_does_not_list() {
        assert_eq!(
            Platform::find_compatible_reg(MAX_SMP4, "arm,pl031"),
            Some(PhysRange::new(0x0901_0000, 0x1000))
        );
        assert_eq!(
            Platform::find_compatible_reg(MAX_SMP4, "arm,gic-v3-its"),
            Some(PhysRange::new(0x0808_0000, 0x2_0000))
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

    #[test]
    fn psci_missing_is_reported() {
        let p = Platform::parse(MAX_SMP4).unwrap();
        assert_eq!(p.psci_method(), Ok(PsciMethod::Smc));
        let none = Platform { psci: None, ..p };
        assert_eq!(none.psci_method(), Err(DtError::NoPsci));
    }

    #[test]
    fn list_counts_overflow() {
        let mut l: List<u32, 2> = List::default();
        for i in 0..5 {
            l.push(i);
        }
        assert_eq!(l.as_slice(), &[0, 1]);
        assert_eq!(l.dropped(), 3);
    }

    #[test]
    fn ranges() {
        let a = PhysRange::new(0x1000, 0x1000);
        assert!(a.contains(0x1fff) && !a.contains(0x2000));
        assert!(a.overlaps(&PhysRange::new(0x1fff, 1)));
        assert!(!a.overlaps(&PhysRange::new(0x2000, 1)));
        assert_eq!(PhysRange::new(u64::MAX - 1, 10).end(), u64::MAX);
        assert_eq!(a.to_string(), "[0x1000, 0x2000)");
    }
}
