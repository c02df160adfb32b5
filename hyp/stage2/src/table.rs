//! One granule-generic translation table type for every regime, with one walker.
//!
//! [`PageTable`] owns a root (concatenated for stage 2 where the geometry says so), a
//! [`TableAlloc`] and a [`Maintenance`]. Every operation is a visitor run by [`PageTable::walk`]
//! (KVM's `kvm_pgtable_walk`): map, unmap, protect, translate, destroy, and the prepare pass
//! that counts the tables a map will need.
//!
//! Updates follow three rules:
//! - **Prepare, then commit** (Hafnium): every table an operation needs is allocated before the
//!   first descriptor changes, so an allocation failure leaves the tables bit-identical.
//! - **Break-before-make** (Arm ARM D8.16.1): a valid descriptor is never replaced by a valid
//!   one with another output address, size, memory type or table-ness; it is first made
//!   invalid, then `DSB`, TLBI, `DSB`, `ISB`, then written. Permission-only changes are
//!   written in place and invalidated at the end of the operation.
//! - **Batched invalidation**: invalidations that can wait go to a pending list flushed once
//!   per operation: stage 2 `TLBI IPAS2E1IS` per entry, `DSB ISH`, `TLBI VMALLE1IS`, or one
//!   `TLBI VMALLS12E1IS` above 512 entries. Replacing a table by a block flushes the VMID.
//!   Tables emptied by an unmap are freed only after that flush.
//!
//! Fast paths (the lazy-fault, block and per-page-unmap patterns) skip the walker when the
//! operation needs no table: a map of one page/block (or a run of same-size leaves in one
//! table) over invalid entries below existing tables is the cache maintenance plus the
//! descriptor stores; an unmap of one valid leaf is one store plus its invalidation (the
//! general walk still runs, after the store, when the leaf's table became empty). Each
//! checks everything before its first store and otherwise leaves the work to the general
//! path, so the rules above hold unchanged.
//!
//! **Descriptor stores.** Walkers read live tables concurrently, so every store to a live
//! descriptor is one single-copy-atomic 64-bit store (Arm ARM B2.2.1) through
//! [`TableAlloc::write_entry`] (`Relaxed`) or, for a table descriptor that publishes a fresh
//! subtree, [`TableAlloc::publish_entry`] (`Release`: the subtree's fill is ordered before
//! it). Only fresh tables (`FreshTable`: from the reserve, not yet published) are written in
//! bulk. What orders the `Relaxed` stores is the break-before-make sequence itself: the
//! `DSB ISHST` after the invalid store makes it visible to every walker before the TLBI, and
//! the `DSB ISH` after the TLBI completes the invalidation before the new store; the compiler
//! cannot move a store across them because hyp's [`Maintenance`] runs each operation as an
//! `asm!` block that may access memory (no `nomem`), a compiler barrier. Guest data is
//! ordered before the leaf that maps it by the clean to PoC (which ends in `DSB`) or by the
//! caller when it skips it.

use crate::attrs::{
    self, attrs_change_needs_bbm, AttrError, Attrs, MemType, DESC_ATTR_MASK, DESC_OA_MASK,
    DESC_VALID,
};
use crate::frames::TableAlloc;
use crate::geometry::{tlbi_ipa_operand, tlbi_va_operand, Geometry, Regime};
use crate::maint::{MaintOp, Maintenance};
use crate::Granule;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

/// Above this many pending per-entry invalidations, one whole-VMID (or whole-regime) TLBI is
/// issued instead (Hafnium and KVM use the same threshold).
pub const MAX_TLBI_BY_ADDRESS: usize = 512;

/// An empty walk cache (one slot per level: more slots did not help the random-order
/// benchmark).
const EMPTY_WALK_CACHE: [(u64, u64, u64); 4] = [(0, 0, 0); 4];

/// Frames kept in reserve between operations so that a single-page map (the lazy-fault path)
/// needs no counting pass; at most this many.
const RESERVE_KEEP: usize = 4;

/// Why a table operation failed. The tables are unchanged whenever an error is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The range ends before it starts.
    RangeBackwards {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// The range reaches beyond the geometry's input size.
    OutOfRange {
        /// One past the last address asked for.
        end: u64,
        /// One past the last address the table can translate.
        limit: u64,
    },
    /// An address is not aligned to the granule.
    Misaligned {
        /// The address.
        addr: u64,
        /// The granule it must be aligned to.
        granule: Granule,
    },
    /// The output address range does not fit in 48 bits.
    OutputTooLarge {
        /// One past the last output address.
        end: u64,
    },
    /// The attributes cannot be expressed or are not allowed.
    Attrs(AttrError),
    /// The table allocator ran out of memory.
    NoMemory {
        /// Tables the operation needed.
        needed: usize,
        /// Tables that could be allocated.
        got: usize,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::RangeBackwards { start, end } => {
                write!(f, "range {start:#018x}..{end:#018x} ends before it starts")
            }
            MapError::OutOfRange { end, limit } => write!(
                f,
                "range end {end:#018x} is beyond the table's input limit {limit:#018x}; \
                 use a larger input size"
            ),
            MapError::Misaligned { addr, granule } => write!(
                f,
                "address {addr:#018x} is not aligned to the {granule} granule"
            ),
            MapError::OutputTooLarge { end } => write!(
                f,
                "output range ends at {end:#018x}, beyond the 48-bit output address limit"
            ),
            MapError::Attrs(e) => write!(f, "{e}"),
            MapError::NoMemory { needed, got } => write!(
                f,
                "out of table memory: needed {needed} tables, got {got}; tables unchanged"
            ),
        }
    }
}

impl From<AttrError> for MapError {
    fn from(e: AttrError) -> Self {
        MapError::Attrs(e)
    }
}

/// Which visits a walk makes (KVM `KVM_PGTABLE_WALK_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkFlags(u8);

impl WalkFlags {
    /// Visit leaf entries: blocks, pages and invalid entries.
    pub const LEAF: WalkFlags = WalkFlags(1);
    /// Visit table entries before descending.
    pub const TABLE_PRE: WalkFlags = WalkFlags(2);
    /// Visit table entries after their subtree.
    pub const TABLE_POST: WalkFlags = WalkFlags(4);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: WalkFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for WalkFlags {
    type Output = WalkFlags;
    fn bitor(self, rhs: WalkFlags) -> WalkFlags {
        WalkFlags(self.0 | rhs.0)
    }
}

/// Which kind of visit this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisitKind {
    /// A leaf entry (block, page or invalid).
    Leaf,
    /// A table entry, before its subtree is walked.
    TablePre,
    /// A table entry, after its subtree was walked.
    TablePost,
}

impl VisitKind {
    /// The kind of a visit before descending: `TablePre` for a table entry, else `Leaf`.
    #[inline(always)]
    const fn of(is_table: bool) -> Self {
        if is_table {
            VisitKind::TablePre
        } else {
            VisitKind::Leaf
        }
    }
}

/// One visited descriptor.
#[derive(Clone, Copy, Debug)]
pub struct Visit {
    /// The first input address of the walked range inside this entry.
    pub addr: u64,
    /// One past the last input address of the walked range inside this entry.
    pub end: u64,
    /// The level of the entry.
    pub level: u32,
    /// What kind of visit.
    pub kind: VisitKind,
    /// The descriptor when it was visited.
    pub old: u64,
    /// The descriptor now (updated by [`Ctx::store`]); the walker descends if it is a table.
    pub entry: u64,
    /// The physical address of the descriptor.
    pub entry_pa: u64,
    /// Set by a visitor to stop the walker from descending into `entry`.
    pub skip_children: bool,
}

impl Visit {
    /// A visit of the entry at `entry_pa` holding `desc`, for `addr..end` of the walked range.
    #[inline(always)]
    const fn at(
        addr: u64,
        end: u64,
        level: u32,
        kind: VisitKind,
        desc: u64,
        entry_pa: u64,
    ) -> Self {
        Visit {
            addr,
            end,
            level,
            kind,
            old: desc,
            entry: desc,
            entry_pa,
            skip_children: false,
        }
    }

    /// The first input address the entry maps.
    pub fn entry_start(&self, geo: &Geometry) -> u64 {
        self.addr & !(geo.entry_size(self.level) - 1)
    }

    /// Whether the walked range covers the entry's whole span.
    pub fn covers_entry(&self, geo: &Geometry) -> bool {
        let size = geo.entry_size(self.level);
        self.addr & (size - 1) == 0 && self.end - self.addr == size
    }
}

/// Options of [`PageTable::map`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOpts {
    /// Map with pages only (no blocks), e.g. for dirty tracking at page granularity.
    pub pages_only: bool,
    /// Skip the cache maintenance of the mapped memory (the caller already did it, or the
    /// memory was never written through a cacheable alias).
    pub skip_cmo: bool,
}

impl MapOpts {
    /// Pages only.
    pub const PAGES: MapOpts = MapOpts {
        pages_only: true,
        skip_cmo: false,
    };
}

/// The state a visitor works with: geometry, allocator, maintenance, VMID, pending
/// invalidations and reserved tables.
#[derive(Debug)]
pub struct Ctx<A, M> {
    geo: Geometry,
    /// `level_shift` per level, and the index mask per level (the root's covers every
    /// concatenated table), cached from `geo`.
    shift: [u32; 4],
    idx_mask: [u64; 4],
    /// The first level with block descriptors (and not above the start level).
    min_block: u32,
    /// Per `log2(size)`: 1 + the level whose entries map exactly `size` bytes and may be
    /// leaves (level 3, or a block level at or below `min_block`); 0 if none. Lets the
    /// one-entry fast paths find their level without geometry arithmetic.
    leaf_level: [u8; 64],
    /// The last attributes encoded and their bits (maps repeat the same attributes).
    last_attrs: Option<(Attrs, u64)>,
    /// A walk cache: per level, the last table descended into and the input span it covers
    /// (`end == 0`: empty). Leaf-only walks inside a span start at the deepest such table.
    /// Cleared whenever a table descriptor is overwritten or a table is freed.
    walk_cache: [(u64, u64, u64); 4],
    alloc: A,
    maint: M,
    vmid: u16,
    tables: usize,
    reserve: Vec<u64>,
    pending: Vec<u64>,
    pending_all: bool,
    free_later: Vec<u64>,
}

/// A table taken from the reserve and not yet published: no walker can reach it, so it may
/// be filled in bulk ([`Ctx::fresh`]). Not `Copy`: [`FreshTable::descriptor`] gives up the
/// bulk access and yields the one table descriptor that links it, stored either into a
/// fresh parent (published with it) or by [`Ctx::store_table`].
struct FreshTable(u64);

impl FreshTable {
    /// The table descriptor pointing at this table.
    #[inline(always)]
    fn descriptor(self) -> u64 {
        self.0 | 3
    }
}

/// What a fresh subtree is filled with: input `a` maps to `out + (a - lo)`.
struct Fill {
    out: u64,
    lo: u64,
    bits: u64,
    pages_only: bool,
}

impl Fill {
    #[inline(always)]
    fn out(&self, addr: u64) -> u64 {
        self.out + (addr - self.lo)
    }
}

/// What the prepare pass counts for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Map { out: u64, lo: u64, pages_only: bool },
    Split,
}

impl<A: TableAlloc, M: Maintenance> Ctx<A, M> {
    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Reads the descriptor at `entry_pa`.
    #[inline(always)]
    pub fn read(&self, entry_pa: u64) -> u64 {
        self.alloc.read_entry(entry_pa, self.geo.granule())
    }

    /// One single-copy-atomic store of a leaf or invalid descriptor of a live table.
    #[inline(always)]
    fn write(&mut self, entry_pa: u64, value: u64) {
        self.alloc.write_entry(entry_pa, self.geo.granule(), value);
    }

    /// Stores the leaf or invalid descriptor `new` into the visited descriptor (reported to
    /// [`Maintenance::store`]) and updates `v.entry`: one single-copy-atomic `Relaxed` store.
    /// The caller is responsible for break-before-make. Table descriptors are stored only by
    /// the library, which publishes the subtrees it builds with a `Release` store.
    #[inline(always)]
    pub fn store(&mut self, v: &mut Visit, new: u64) {
        debug_assert!(
            !self.is_table(new, v.level),
            "invariant: table descriptors are published with store_table"
        );
        if self.is_table(v.entry, v.level) {
            self.walk_cache = EMPTY_WALK_CACHE;
        }
        let start = self.start_of(v);
        self.maint.store(v.entry_pa, start, v.level, v.entry, new);
        self.write(v.entry_pa, new);
        v.entry = new;
    }

    /// Publishes the fresh table `t` (its subtree filled) in the visited, invalid descriptor:
    /// one single-copy-atomic `Release` store of its table descriptor, so every store that
    /// filled the subtree is ordered before it (KVM's `smp_store_release`). The caller
    /// issues the `DSB ISHST` that orders them for this CPU's walker.
    #[inline(always)]
    fn store_table(&mut self, v: &mut Visit, t: FreshTable) {
        let new = t.descriptor();
        if self.is_table(v.entry, v.level) {
            self.walk_cache = EMPTY_WALK_CACHE;
        }
        let start = self.start_of(v);
        self.maint.store(v.entry_pa, start, v.level, v.entry, new);
        self.alloc
            .publish_entry(v.entry_pa, self.geo.granule(), new);
        v.entry = new;
    }

    /// Bytes a level-`level` entry maps (cached `Geometry::entry_size`).
    #[inline(always)]
    pub fn size(&self, level: u32) -> u64 {
        1u64 << self.shift[level as usize & 3]
    }

    /// Whether the visit's range covers its entry's whole span.
    #[inline(always)]
    pub fn covers(&self, v: &Visit) -> bool {
        let size = self.size(v.level);
        v.addr & (size - 1) == 0 && v.end - v.addr == size
    }

    /// The first input address the visited entry maps.
    #[inline(always)]
    pub fn start_of(&self, v: &Visit) -> u64 {
        v.addr & !(self.size(v.level) - 1)
    }

    /// The walk-cache slot of `level` for input address `addr`: (table, span start, span end).
    #[inline(always)]
    fn cached(&self, level: u32, _addr: u64) -> (u64, u64, u64) {
        self.walk_cache[level as usize & 3]
    }

    /// The level whose single entry `[start, end)` is exactly (one aligned page, or one
    /// aligned block at a level that may hold blocks), or `None`.
    #[inline(always)]
    fn one_entry_level(&self, start: u64, end: u64) -> Option<u32> {
        let len = end.wrapping_sub(start);
        if start >= end || !len.is_power_of_two() || start & (len - 1) != 0 {
            return None;
        }
        match self.leaf_level[len.trailing_zeros() as usize & 63] {
            0 => None,
            l => Some(l as u32 - 1),
        }
    }

    /// Descends through table descriptors only, from the deepest cached table (or `root`), to
    /// the level-`level` entry translating `addr`: (descriptor address, table holding it), or
    /// `None` if a non-table entry is met above `level`. Reads only (and fills the walk cache).
    #[inline(always)]
    fn descend(&mut self, root: u64, addr: u64, level: u32) -> Option<(u64, u64)> {
        let start = self.geo.start_level();
        let mut l = level;
        let mut table = root;
        while l > start {
            let (ct, cs, ce) = self.walk_cache[l as usize & 3];
            if addr >= cs && addr < ce {
                table = ct;
                break;
            }
            l -= 1;
        }
        while l < level {
            let shift = self.shift[l as usize & 3];
            let entry_pa = table + ((addr >> shift) & self.idx_mask[l as usize & 3]) * 8;
            let d = self.read(entry_pa);
            if !self.is_table(d, l) {
                return None;
            }
            table = self.table_pa(d);
            l += 1;
            self.remember(l, addr, table);
        }
        let shift = self.shift[level as usize & 3];
        let entry_pa = table + ((addr >> shift) & self.idx_mask[level as usize & 3]) * 8;
        Some((entry_pa, table))
    }

    /// Stage 2's cache maintenance of memory about to be mapped: clean to PoC unless FWB,
    /// and invalidate the I-cache before an executable mapping unless DIC (guests start with
    /// caches off; Arm ARM D7.5.9, D7.5.2).
    #[inline(always)]
    fn map_cmo(&mut self, out: u64, len: u64, attrs: Attrs, opts: MapOpts) {
        if self.geo.regime() == Regime::Stage2 && !opts.skip_cmo && attrs.mem == MemType::Normal {
            if !self.geo.fwb() {
                self.op(MaintOp::CleanDcachePoc { pa: out, len });
            }
            if attrs.exec && !self.geo.dic() {
                self.op(MaintOp::InvalidateIcachePou { pa: out, len });
            }
        }
    }

    /// Records that the level-`level` table `table` translates the parent span around `addr`.
    #[inline(always)]
    fn remember(&mut self, level: u32, addr: u64, table: u64) {
        let s = self.shift[(level as usize - 1) & 3];
        let span = addr & !((1u64 << s) - 1);
        self.walk_cache[level as usize & 3] = (table, span, span + (1u64 << s));
    }

    /// [`attrs::encode`] for this regime, remembering the last result.
    #[inline(always)]
    fn encode(&mut self, a: Attrs) -> Result<u64, AttrError> {
        match self.last_attrs {
            Some((last, bits)) if last == a => Ok(bits),
            _ => {
                let bits = attrs::encode_with(self.geo.regime(), self.geo.fwb(), a)?;
                self.last_attrs = Some((a, bits));
                Ok(bits)
            }
        }
    }

    #[inline(always)]
    fn is_table(&self, desc: u64, level: u32) -> bool {
        level < 3 && desc & 3 == 3
    }

    #[inline(always)]
    fn table_pa(&self, desc: u64) -> u64 {
        desc & DESC_OA_MASK & !(self.size(3) - 1)
    }

    #[inline(always)]
    fn leaf_oa(&self, desc: u64, level: u32) -> u64 {
        desc & DESC_OA_MASK & !(self.size(level) - 1)
    }

    #[inline(always)]
    fn leaf_desc(out: u64, level: u32, attr_bits: u64) -> u64 {
        out | attr_bits | if level == 3 { 3 } else { 1 }
    }

    fn op(&mut self, op: MaintOp) {
        self.maint.op(op);
    }

    /// Invalidates the TLB entries for `input` now (the middle of break-before-make).
    fn invalidate_now(&mut self, input: u64) {
        self.op(MaintOp::DsbIshSt);
        match self.geo.regime() {
            Regime::Stage2 => {
                let vmid = self.vmid;
                self.op(MaintOp::TlbiIpas2e1is {
                    vmid,
                    operand: tlbi_ipa_operand(input),
                });
                self.op(MaintOp::DsbIsh);
                self.op(MaintOp::TlbiVmalle1is { vmid });
            }
            Regime::El2 => self.op(MaintOp::TlbiVae2is {
                operand: tlbi_va_operand(input),
            }),
            Regime::El1 => self.op(MaintOp::TlbiVaae1is {
                operand: tlbi_va_operand(input),
            }),
        }
        self.op(MaintOp::DsbIsh);
        self.op(MaintOp::Isb);
    }

    /// Invalidates every entry of this table's VMID (or regime) now.
    fn invalidate_all_now(&mut self) {
        self.op(MaintOp::DsbIshSt);
        self.op(self.full_flush_op());
        self.op(MaintOp::DsbIsh);
        self.op(MaintOp::Isb);
    }

    fn full_flush_op(&self) -> MaintOp {
        match self.geo.regime() {
            Regime::Stage2 => MaintOp::TlbiVmalls12e1is { vmid: self.vmid },
            Regime::El2 => MaintOp::TlbiAlle2is,
            Regime::El1 => MaintOp::TlbiVmalle1Current,
        }
    }

    /// Queues an invalidation of `input` for the end of the operation.
    #[inline(always)]
    fn defer_invalidate(&mut self, input: u64) {
        if self.pending_all {
            return;
        }
        if self.pending.len() >= MAX_TLBI_BY_ADDRESS {
            self.pending_all = true;
            self.pending.clear();
        } else {
            self.pending.push(input);
        }
    }

    /// Issues the queued invalidations, then frees the tables that waited for them.
    #[inline(always)]
    fn flush(&mut self) {
        if self.pending_all || !self.pending.is_empty() || !self.free_later.is_empty() {
            self.flush_slow();
        }
    }

    fn flush_slow(&mut self) {
        if self.pending_all || !self.pending.is_empty() {
            self.op(MaintOp::DsbIshSt);
            if self.pending_all {
                self.op(self.full_flush_op());
            } else {
                let vmid = self.vmid;
                let regime = self.geo.regime();
                for i in 0..self.pending.len() {
                    let a = self.pending[i];
                    self.maint.op(match regime {
                        Regime::Stage2 => MaintOp::TlbiIpas2e1is {
                            vmid,
                            operand: tlbi_ipa_operand(a),
                        },
                        Regime::El2 => MaintOp::TlbiVae2is {
                            operand: tlbi_va_operand(a),
                        },
                        Regime::El1 => MaintOp::TlbiVaae1is {
                            operand: tlbi_va_operand(a),
                        },
                    });
                }
                if regime == Regime::Stage2 {
                    self.op(MaintOp::DsbIsh);
                    self.op(MaintOp::TlbiVmalle1is { vmid });
                }
            }
            self.op(MaintOp::DsbIsh);
            self.op(MaintOp::Isb);
            self.pending.clear();
            self.pending_all = false;
        }
        while let Some(t) = self.free_later.pop() {
            self.free_table(t);
        }
    }

    fn free_table(&mut self, pa: u64) {
        self.walk_cache = EMPTY_WALK_CACHE;
        self.alloc.free(pa, self.geo.granule(), 1);
        self.tables -= 1;
    }

    /// Takes a zeroed table from the reserve filled by the prepare pass.
    fn take_table(&mut self) -> FreshTable {
        let t = self
            .reserve
            .pop()
            .expect("invariant: the prepare pass reserved every table the commit takes");
        self.tables += 1;
        FreshTable(t)
    }

    /// The descriptors of a fresh table, for bulk initialisation (`AtomicU64::get_mut`).
    #[inline(always)]
    fn fresh(&mut self, t: &FreshTable) -> &mut [AtomicU64] {
        self.alloc.fresh_table(t.0, self.geo.granule())
    }

    /// Collects every table below the table at `pa` (level `level`) and `pa` itself.
    fn collect_subtree(&mut self, pa: u64, level: u32, out: &mut Vec<u64>) {
        if level < 3 {
            for i in 0..self.geo.entries() {
                let d = self.alloc.table(pa, self.geo.granule())[i].load(Ordering::Relaxed);
                if self.is_table(d, level) {
                    let t = self.table_pa(d);
                    self.collect_subtree(t, level + 1, out);
                }
            }
        }
        out.push(pa);
    }

    /// Tables needed below an entry at `level` that must become a table for `[addr, end)`.
    fn count_below(&self, op: Op, level: u32, addr: u64, end: u64) -> usize {
        if level + 1 == 3 {
            return 1;
        }
        let cl = level + 1;
        let cs = self.size(cl);
        let mut n = 1;
        let mut a = addr;
        while a < end {
            let span = a & !(cs - 1);
            let e = (span + cs).min(end);
            let full = a == span && e == span + cs;
            if !self.child_done(op, cl, full, a) {
                n += self.count_below(op, cl, a, e);
            }
            a = e;
        }
        n
    }

    /// Whether an entry at `level` needs no table of its own for the operation.
    #[inline(always)]
    fn child_done(&self, op: Op, level: u32, full: bool, addr: u64) -> bool {
        match op {
            Op::Map {
                out,
                lo,
                pages_only,
            } => full && self.blockable(level, out + (addr - lo), pages_only),
            Op::Split => full,
        }
    }

    #[inline(always)]
    fn blockable(&self, level: u32, out: u64, pages_only: bool) -> bool {
        level == 3 || (!pages_only && level >= self.min_block && out & (self.size(level) - 1) == 0)
    }

    /// Fills the fresh (invisible) table `t` at `level` for `[addr, end)` as `fill` says,
    /// building the tables below it from the reserve. Plain stores: no walker sees `t` before
    /// its descriptor is published.
    fn build(&mut self, t: &FreshTable, level: u32, addr: u64, end: u64, fill: &Fill) {
        let size = self.size(level);
        let idx_mask = (self.geo.entries() - 1) as u64;
        let shift = self.geo.level_shift(level);
        if level == 3 {
            let i0 = ((addr >> shift) & idx_mask) as usize;
            let n = ((end - addr) >> shift) as usize;
            let base = fill.out(addr) | fill.bits | 3;
            let table = self.fresh(t);
            for (k, e) in table[i0..i0 + n].iter_mut().enumerate() {
                *e.get_mut() = base + ((k as u64) << shift);
            }
            return;
        }
        let mut a = addr;
        while a < end {
            let span = a & !(size - 1);
            let e = (span + size).min(end);
            let o = fill.out(a);
            let full = a == span && e == span + size;
            let idx = ((a >> shift) & idx_mask) as usize;
            let d = if full && self.blockable(level, o, fill.pages_only) {
                Self::leaf_desc(o, level, fill.bits)
            } else {
                let c = self.take_table();
                self.build(&c, level + 1, a, e, fill);
                // `t` is fresh too: `c` is published with it.
                c.descriptor()
            };
            *self.fresh(t)[idx].get_mut() = d;
            a = e;
        }
    }

    /// The map visitor: the common case (a page or block over an invalid entry) inline, the
    /// rest out of line.
    #[inline(always)]
    fn map_visit(&mut self, v: &mut Visit, fill: &Fill) {
        let o = fill.out(v.addr);
        let block = self.covers(v) && self.blockable(v.level, o, fill.pages_only);
        match v.kind {
            VisitKind::Leaf if block => {
                let new = Self::leaf_desc(o, v.level, fill.bits);
                if v.old & DESC_VALID == 0 {
                    self.store(v, new);
                } else if v.old != new {
                    self.map_replace_leaf(v, new);
                }
            }
            VisitKind::Leaf => self.map_need_table(v, fill),
            VisitKind::TablePre if block => self.map_table_to_block(v, o, fill.bits),
            VisitKind::TablePre | VisitKind::TablePost => {}
        }
    }

    /// A valid leaf becomes another leaf of the same size: in place if only permissions
    /// change, else break-before-make.
    #[inline(never)]
    fn map_replace_leaf(&mut self, v: &mut Visit, new: u64) {
        let start = self.start_of(v);
        if (v.old ^ new) & !DESC_ATTR_MASK == 0 && !attrs_change_needs_bbm(v.old, new) {
            self.store(v, new);
            self.defer_invalidate(start);
        } else {
            self.store(v, 0);
            self.invalidate_now(start);
            self.store(v, new);
        }
    }

    /// The range needs a table here: split a valid block, or build a fresh subtree offline
    /// and publish it with one store.
    #[inline(never)]
    fn map_need_table(&mut self, v: &mut Visit, fill: &Fill) {
        if v.old & DESC_VALID != 0 {
            self.split_block(v);
        } else {
            let t = self.take_table();
            self.build(&t, v.level + 1, v.addr, v.end, fill);
            // The new subtree must be visible to every walker before the table descriptor:
            // `DSB ISHST` for the hardware (this CPU's walker included), and the `Release`
            // store of `store_table` for the compiler and any other observer.
            self.op(MaintOp::DsbIshSt);
            self.store_table(v, t);
            v.skip_children = true;
        }
    }

    /// Replaces a table by a block: break, flush the VMID, make; then the old subtree is
    /// unreachable and its tables are freed.
    #[inline(never)]
    fn map_table_to_block(&mut self, v: &mut Visit, out: u64, bits: u64) {
        let old_t = self.table_pa(v.old);
        self.store(v, 0);
        self.invalidate_all_now();
        self.store(v, Self::leaf_desc(out, v.level, bits));
        let mut sub = Vec::new();
        self.collect_subtree(old_t, v.level + 1, &mut sub);
        for t in sub {
            self.free_table(t);
        }
    }

    /// Replaces the valid block in `v` by a table of equivalent entries (break-before-make).
    fn split_block(&mut self, v: &mut Visit) {
        let level = v.level;
        let child = level + 1;
        let cs = self.size(child);
        let bits = v.entry & DESC_ATTR_MASK;
        let oa = self.leaf_oa(v.entry, level);
        let t = self.take_table();
        let ty = if child == 3 { 3 } else { 1 };
        for (k, e) in self.fresh(&t).iter_mut().enumerate() {
            *e.get_mut() = (oa + k as u64 * cs) | bits | ty;
        }
        let start = self.start_of(v);
        self.store(v, 0);
        // The DSB ISH that ends the invalidation also orders the fill before the table
        // descriptor for the hardware; the store is `Release` for the compiler.
        self.invalidate_now(start);
        self.store_table(v, t);
    }

    /// Whether the table at `t` (child of the visit `v`) is empty after `v`'s range was
    /// cleared; scans outward from the cleared indices.
    fn emptied(&self, t: u64, v: &Visit) -> bool {
        if self.covers(v) {
            return true;
        }
        let cl = v.level + 1;
        let shift = self.geo.level_shift(cl);
        let n = self.geo.entries();
        let mask = (n - 1) as u64;
        let lo = ((v.addr >> shift) & mask) as usize;
        let hi = (((v.end - 1) >> shift) & mask) as usize;
        let table = self.alloc.table(t, self.geo.granule());
        let valid = |i: usize| table[i].load(Ordering::Relaxed) & DESC_VALID != 0;
        if valid(lo) || valid(hi) {
            return false;
        }
        let mut below = lo;
        let mut above = hi + 1;
        while below > 0 || above < n {
            if below > 0 {
                below -= 1;
                if valid(below) {
                    return false;
                }
            }
            if above < n {
                if valid(above) {
                    return false;
                }
                above += 1;
            }
        }
        true
    }
}

/// A translation table of any regime, with its own geometry.
///
/// Not `Drop`: call [`PageTable::destroy`] to return every frame to the allocator.
#[derive(Debug)]
pub struct PageTable<A: TableAlloc, M: Maintenance> {
    root: u64,
    ctx: Ctx<A, M>,
}

impl<A: TableAlloc, M: Maintenance> PageTable<A, M> {
    /// Allocates an empty root (all concatenated root tables, contiguous and aligned to their
    /// total size) for `geometry`.
    pub fn new(geometry: Geometry, mut alloc: A, maint: M) -> Result<Self, MapError> {
        let n = geometry.root_tables() as usize;
        let root = alloc
            .alloc(geometry.granule(), n)
            .ok_or(MapError::NoMemory { needed: n, got: 0 })?;
        Ok(PageTable {
            root,
            ctx: Ctx {
                geo: geometry,
                shift: core::array::from_fn(|l| geometry.level_shift(l as u32)),
                idx_mask: core::array::from_fn(|l| {
                    if l as u32 == geometry.start_level() {
                        geometry.root_entries() as u64 - 1
                    } else {
                        geometry.entries() as u64 - 1
                    }
                }),
                min_block: geometry
                    .granule()
                    .min_block_level()
                    .max(geometry.start_level()),
                leaf_level: {
                    let min_block = geometry
                        .granule()
                        .min_block_level()
                        .max(geometry.start_level());
                    let mut t = [0u8; 64];
                    for l in min_block..=3 {
                        t[geometry.level_shift(l) as usize & 63] = l as u8 + 1;
                    }
                    t
                },
                walk_cache: EMPTY_WALK_CACHE,
                last_attrs: None,
                alloc,
                maint,
                vmid: 0,
                tables: n,
                reserve: Vec::new(),
                pending: Vec::new(),
                pending_all: false,
                free_later: Vec::new(),
            },
        })
    }

    /// Like [`PageTable::new`], tagged with a VMID (stage 2).
    pub fn with_vmid(geometry: Geometry, vmid: u16, alloc: A, maint: M) -> Result<Self, MapError> {
        let mut t = Self::new(geometry, alloc, maint)?;
        t.ctx.vmid = vmid;
        Ok(t)
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.ctx.geo
    }

    /// The physical address of the root (the first concatenated table).
    pub fn root_pa(&self) -> u64 {
        self.root
    }

    /// The VMID TLB maintenance uses (stage 2).
    pub fn vmid(&self) -> u16 {
        self.ctx.vmid
    }

    /// Sets the VMID (before the table is first used by a VM).
    pub fn set_vmid(&mut self, vmid: u16) {
        self.ctx.vmid = vmid;
    }

    /// `VTTBR_EL2`: VMID\[63:48\] and the root address (BADDR, aligned to the root's size).
    pub fn vttbr(&self) -> u64 {
        ((self.ctx.vmid as u64) << 48) | self.root
    }

    /// Tables in use, root tables included.
    pub fn tables(&self) -> usize {
        self.ctx.tables
    }

    /// Bytes of tables in use, root included (frames held in reserve not included).
    pub fn table_bytes(&self) -> u64 {
        self.ctx.tables as u64 * self.ctx.geo.table_bytes()
    }

    /// Frames held in reserve for the next operations (at most a handful).
    pub fn reserved_tables(&self) -> usize {
        self.ctx.reserve.len()
    }

    /// Returns the reserved frames to the allocator.
    pub fn release_reserve(&mut self) {
        let g = self.ctx.geo.granule();
        while let Some(t) = self.ctx.reserve.pop() {
            self.ctx.alloc.free(t, g, 1);
        }
    }

    /// The allocator.
    pub fn allocator(&self) -> &A {
        &self.ctx.alloc
    }

    /// The allocator, mutably (e.g. for failure injection in tests). Freeing or reusing a
    /// frame the table still uses through it corrupts the table.
    pub fn allocator_mut(&mut self) -> &mut A {
        &mut self.ctx.alloc
    }

    /// The maintenance sink.
    pub fn maintenance(&self) -> &M {
        &self.ctx.maint
    }

    /// The maintenance sink, mutably (e.g. to clear a recorder).
    pub fn maintenance_mut(&mut self) -> &mut M {
        &mut self.ctx.maint
    }

    /// The same table with another maintenance sink, e.g. once hyp's EL2 tables become live
    /// (built with [`crate::NoMaintenance`] while the MMU is off).
    pub fn with_maintenance<M2: Maintenance>(self, maint: M2) -> (PageTable<A, M2>, M) {
        let c = self.ctx;
        (
            PageTable {
                root: self.root,
                ctx: Ctx {
                    geo: c.geo,
                    shift: c.shift,
                    idx_mask: c.idx_mask,
                    min_block: c.min_block,
                    leaf_level: c.leaf_level,
                    walk_cache: c.walk_cache,
                    last_attrs: c.last_attrs,
                    alloc: c.alloc,
                    maint,
                    vmid: c.vmid,
                    tables: c.tables,
                    reserve: c.reserve,
                    pending: c.pending,
                    pending_all: c.pending_all,
                    free_later: c.free_later,
                },
            },
            c.maint,
        )
    }

    /// Reads one descriptor by its physical address (for dumps and tests).
    pub fn read_entry(&self, entry_pa: u64) -> u64 {
        self.ctx.read(entry_pa)
    }

    #[inline(always)]
    fn check_range(&self, range: &Range<u64>) -> Result<(), MapError> {
        let mask = self.ctx.size(3) - 1;
        let limit = self.ctx.geo.input_limit();
        if range.end < range.start || range.end > limit || (range.start | range.end) & mask != 0 {
            return Err(self.range_error(range));
        }
        Ok(())
    }

    #[cold]
    fn range_error(&self, range: &Range<u64>) -> MapError {
        let g = self.ctx.geo.granule();
        let limit = self.ctx.geo.input_limit();
        if range.end < range.start {
            MapError::RangeBackwards {
                start: range.start,
                end: range.end,
            }
        } else if range.end > limit {
            MapError::OutOfRange {
                end: range.end,
                limit,
            }
        } else if range.start & (g.size() - 1) != 0 {
            MapError::Misaligned {
                addr: range.start,
                granule: g,
            }
        } else {
            MapError::Misaligned {
                addr: range.end,
                granule: g,
            }
        }
    }

    /// Walks `range` (clamped to nothing beyond the input limit), calling `visitor` for the
    /// visits `flags` asks for. A leaf visitor may turn an entry into a table (the walker then
    /// descends into it unless `skip_children` is set); a `TablePre` visitor may turn a table
    /// into a leaf (the walker then does not descend). Root iteration covers every
    /// concatenated root table.
    #[inline(always)]
    pub fn walk<E, F>(
        &mut self,
        range: Range<u64>,
        flags: WalkFlags,
        visitor: &mut F,
    ) -> Result<(), E>
    where
        E: From<MapError>,
        F: FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>,
    {
        if range.end < range.start {
            return Err(MapError::RangeBackwards {
                start: range.start,
                end: range.end,
            }
            .into());
        }
        let limit = self.ctx.geo.input_limit();
        if range.end > limit {
            return Err(MapError::OutOfRange {
                end: range.end,
                limit,
            }
            .into());
        }
        self.walk_in(range, flags, visitor)
    }

    /// [`PageTable::walk`] without the range check (callers checked it).
    #[inline(always)]
    fn walk_in<E, F>(
        &mut self,
        range: Range<u64>,
        flags: WalkFlags,
        visitor: &mut F,
    ) -> Result<(), E>
    where
        F: FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>,
    {
        let mut table = self.root;
        let mut level = self.ctx.geo.start_level();
        if flags == WalkFlags::LEAF {
            for l in (level + 1..=3).rev() {
                let (ct, cs, ce) = self.ctx.cached(l, range.start);
                if range.start >= cs && range.end <= ce {
                    (table, level) = (ct, l);
                    break;
                }
            }
        }
        // Without TablePost visits no stack is needed while the range fits one entry.
        if !flags.contains(WalkFlags::TABLE_POST) && range.start < range.end {
            return walk_one(
                &mut self.ctx,
                table,
                level,
                range.start,
                range.end,
                flags,
                visitor,
            );
        }
        walk_table(
            &mut self.ctx,
            table,
            level,
            range.start,
            range.end,
            flags,
            visitor,
        )
    }

    /// Ensures the reserve holds the tables an operation on `range` needs (prepare).
    #[inline(always)]
    fn prepare(&mut self, range: &Range<u64>, op: Op) -> Result<(), MapError> {
        let geo = self.ctx.geo;
        // One page needs at most one table per level below the root.
        if range.end - range.start == self.ctx.size(3)
            && self.ctx.reserve.len() >= (3 - geo.start_level()) as usize
        {
            return Ok(());
        }
        // Cheap upper bound: one table per level-(L-1) entry the range touches, per level,
        // down to the level whose blocks tile a map exactly (no table is needed below it).
        let mut bound = 0usize;
        for l in geo.start_level() + 1..=3 {
            let s = self.ctx.shift[l as usize - 1];
            if let Op::Map {
                out,
                pages_only: false,
                ..
            } = op
            {
                let m = (1u64 << s) - 1;
                if l > self.ctx.min_block && (range.start | range.end | out) & m == 0 {
                    break;
                }
            }
            bound += (((range.end - 1) >> s) - (range.start >> s) + 1) as usize;
        }
        let have = self.ctx.reserve.len();
        if bound <= have {
            return Ok(());
        }
        self.prepare_slow(range, op, bound)
    }

    /// The counting pass of [`PageTable::prepare`].
    fn prepare_slow(&mut self, range: &Range<u64>, op: Op, bound: usize) -> Result<(), MapError> {
        if bound <= RESERVE_KEEP && self.fill_reserve(bound).is_ok() {
            return Ok(());
        }
        let mut need = 0usize;
        let _ = self.walk_in(range.clone(), WalkFlags::LEAF, &mut |c: &mut Ctx<A, M>,
                                                                   v: &mut Visit|
         -> Result<
            (),
            MapError,
        > {
            if v.level == 3 {
                return Ok(());
            }
            let valid = v.old & DESC_VALID != 0;
            let full = c.covers(v);
            let needs = match op {
                Op::Map { .. } => !c.child_done(op, v.level, full, v.addr),
                Op::Split => valid && !full,
            };
            if needs {
                need += c.count_below(op, v.level, v.addr, v.end);
            }
            Ok(())
        });
        self.fill_reserve(need)
    }

    fn fill_reserve(&mut self, need: usize) -> Result<(), MapError> {
        let have = self.ctx.reserve.len();
        let g = self.ctx.geo.granule();
        while self.ctx.reserve.len() < need {
            match self.ctx.alloc.alloc(g, 1) {
                Some(t) => self.ctx.reserve.push(t),
                None => {
                    let got = self.ctx.reserve.len();
                    while self.ctx.reserve.len() > have {
                        let t = self.ctx.reserve.pop().unwrap_or_default();
                        self.ctx.alloc.free(t, g, 1);
                    }
                    return Err(MapError::NoMemory { needed: need, got });
                }
            }
        }
        Ok(())
    }

    /// Trims the reserve back to a handful of frames after an operation.
    #[inline(always)]
    fn trim_reserve(&mut self) {
        let g = self.ctx.geo.granule();
        while self.ctx.reserve.len() > RESERVE_KEEP {
            if let Some(t) = self.ctx.reserve.pop() {
                self.ctx.alloc.free(t, g, 1);
            }
        }
    }

    /// The fast path of [`PageTable::map`] (the lazy-fault and block patterns): one aligned
    /// page or block, with the attributes of the previous map, over an invalid entry whose
    /// tables all exist. It needs no table, so no prepare pass, no walker and no flush: the
    /// cache maintenance, then one descriptor store (invalid to valid: no break-before-make,
    /// no TLBI, Arm ARM D8.16.1). Returns `false`, having changed nothing, when the general
    /// path must run (including every error case).
    #[inline(always)]
    fn map_fast(&mut self, range: &Range<u64>, out: u64, attrs: Attrs, opts: MapOpts) -> bool {
        let Some(level) = self.ctx.one_entry_level(range.start, range.end) else {
            return self.map_run_fast(range, out, attrs, opts);
        };
        let c = &mut self.ctx;
        let len = range.end - range.start;
        if (level < 3 && opts.pages_only)
            || out & (len - 1) != 0
            || out > (1u64 << 48) - len
            || range.end > c.geo.input_limit()
        {
            return false;
        }
        let bits = match c.last_attrs {
            Some((a, b)) if a == attrs => b,
            _ => return false,
        };
        let Some((entry_pa, _)) = c.descend(self.root, range.start, level) else {
            return false;
        };
        let old = c.read(entry_pa);
        if old & DESC_VALID != 0 {
            return false;
        }
        c.map_cmo(out, len, attrs, opts);
        let new = Ctx::<A, M>::leaf_desc(out, level, bits);
        c.maint.store(entry_pa, range.start, level, old, new);
        c.write(entry_pa, new);
        true
    }

    /// The fast path of [`PageTable::map`] for a run of same-size leaves in one table (e.g.
    /// a few 1 GiB blocks): `range` and `out` aligned to the largest leaf size they allow,
    /// the run inside one table, every entry of it invalid, every table above it present.
    /// The general walk would store exactly these descriptors in this order (each entry is
    /// covered, blockable and invalid: no break-before-make, no TLBI). Returns `false`,
    /// having changed nothing, when the general path must run.
    #[inline(never)]
    fn map_run_fast(&mut self, range: &Range<u64>, out: u64, attrs: Attrs, opts: MapOpts) -> bool {
        let c = &mut self.ctx;
        let (start, end) = (range.start, range.end);
        if start >= end || end > c.geo.input_limit() {
            return false;
        }
        let len = end - start;
        if out > (1u64 << 48) - len {
            return false;
        }
        // The largest leaf size the addresses allow (as the general path picks it).
        let m = (start | end | out).trailing_zeros();
        let mut level = if opts.pages_only { 3 } else { c.min_block };
        while level < 3 && c.shift[level as usize & 3] > m {
            level += 1;
        }
        let shift = c.shift[level as usize & 3];
        if shift > m {
            return false;
        }
        if level > c.geo.start_level() {
            let ps = c.shift[(level - 1) as usize & 3];
            if start >> ps != (end - 1) >> ps {
                return false;
            }
        }
        let bits = match c.last_attrs {
            Some((a, b)) if a == attrs => b,
            _ => return false,
        };
        let Some((entry_pa, _)) = c.descend(self.root, start, level) else {
            return false;
        };
        let n = len >> shift;
        if (0..n).any(|k| c.read(entry_pa + 8 * k) & DESC_VALID != 0) {
            return false;
        }
        c.map_cmo(out, len, attrs, opts);
        for k in 0..n {
            let pa = entry_pa + 8 * k;
            let old = c.read(pa);
            let new = Ctx::<A, M>::leaf_desc(out + (k << shift), level, bits);
            c.maint.store(pa, start + (k << shift), level, old, new);
            c.write(pa, new);
        }
        true
    }

    /// Maps `range` to output addresses from `out` with `attrs`, using the largest blocks
    /// alignment allows (unless `opts.pages_only`). Existing mappings in the range are
    /// replaced (with break-before-make). Either the whole range is mapped or, on error, the
    /// tables are unchanged.
    ///
    /// For stage 2, cacheable memory is cleaned to PoC first unless the CPU has FEAT_FWB, and
    /// executable memory has its I-cache invalidated unless `CTR_EL0.DIC` (both skipped with
    /// `opts.skip_cmo`).
    #[inline]
    pub fn map(
        &mut self,
        range: Range<u64>,
        out: u64,
        attrs: Attrs,
        opts: MapOpts,
    ) -> Result<(), MapError> {
        if self.map_fast(&range, out, attrs, opts) {
            return Ok(());
        }
        self.map_slow(range, out, attrs, opts)
    }

    /// [`PageTable::map`] beyond its fast path: check, prepare, maintain, walk, flush.
    #[inline(never)]
    fn map_slow(
        &mut self,
        range: Range<u64>,
        out: u64,
        attrs: Attrs,
        opts: MapOpts,
    ) -> Result<(), MapError> {
        self.check_range(&range)?;
        let geo = self.ctx.geo;
        let bits = self.ctx.encode(attrs)?;
        let len = range.end - range.start;
        let out_end = out.saturating_add(len);
        if out & (self.ctx.size(3) - 1) != 0 || out_end > 1 << 48 {
            return Err(if out_end > 1 << 48 {
                MapError::OutputTooLarge { end: out_end }
            } else {
                MapError::Misaligned {
                    addr: out,
                    granule: geo.granule(),
                }
            });
        }
        if len == 0 {
            return Ok(());
        }
        let lo = range.start;
        let op = Op::Map {
            out,
            lo,
            pages_only: opts.pages_only,
        };
        self.prepare(&range, op)?;
        self.ctx.map_cmo(out, len, attrs, opts);
        let po = opts.pages_only;
        let fill = Fill {
            out,
            lo,
            bits,
            pages_only: po,
        };
        let r: Result<(), MapError> = self.walk_in(
            range,
            // A table can only become a block if the range covers a whole block entry.
            if !po && len >= self.ctx.size(2) {
                WalkFlags::LEAF | WalkFlags::TABLE_PRE
            } else {
                WalkFlags::LEAF
            },
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                c.map_visit(v, &fill);
                Ok(())
            },
        );
        self.ctx.flush();
        self.trim_reserve();
        r
    }

    /// Unmaps `range`, splitting blocks the range cuts and freeing tables it empties.
    #[inline]
    pub fn unmap(&mut self, range: Range<u64>) -> Result<(), MapError> {
        self.check_range(&range)?;
        if range.is_empty() {
            return Ok(());
        }
        // Fast path (the per-page pattern): the range is exactly one valid leaf entry below
        // tables only. It needs no table; the entry is invalidated at once (the same
        // sequence a flush of one pending entry issues) unless its table is now empty, in
        // which case the general walk below frees the emptied tables (its leaf visit finds
        // the entry invalid) and the one flush covers everything.
        let mut cleared = false;
        if let Some(level) = self.ctx.one_entry_level(range.start, range.end) {
            if let Some((entry_pa, table)) = self.ctx.descend(self.root, range.start, level) {
                let c = &mut self.ctx;
                let old = c.read(entry_pa);
                if old & DESC_VALID != 0 && !c.is_table(old, level) {
                    c.maint.store(entry_pa, range.start, level, old, 0);
                    c.write(entry_pa, 0);
                    let emptied = level > c.geo.start_level() && {
                        let parent = Visit::at(
                            range.start,
                            range.end,
                            level - 1,
                            VisitKind::TablePost,
                            0,
                            0,
                        );
                        c.emptied(table, &parent)
                    };
                    if !emptied {
                        c.invalidate_now(range.start);
                        return Ok(());
                    }
                    c.defer_invalidate(range.start);
                    cleared = true;
                }
            }
        }
        self.unmap_slow(range, cleared)
    }

    /// [`PageTable::unmap`] beyond its fast path: prepare, walk (splitting blocks, freeing
    /// emptied tables), flush. `cleared`: the fast path already cleared the range's one
    /// entry and queued its invalidation, and only the emptied tables remain to be freed.
    #[inline(never)]
    fn unmap_slow(&mut self, range: Range<u64>, cleared: bool) -> Result<(), MapError> {
        // After the fast path cleared the entry, the walk only frees tables: nothing to
        // prepare (and nothing may fail).
        if !cleared {
            self.prepare(&range, Op::Split)?;
        }
        // Whole subtrees can only be detached if the range covers a whole table entry.
        let flags = if range.end - range.start >= self.ctx.geo.entry_size(2) {
            WalkFlags::LEAF | WalkFlags::TABLE_PRE | WalkFlags::TABLE_POST
        } else {
            WalkFlags::LEAF | WalkFlags::TABLE_POST
        };
        let mut visitor = |c: &mut Ctx<A, M>, v: &mut Visit| -> Result<(), MapError> {
            let full = c.covers(v);
            let start = c.start_of(v);
            match v.kind {
                VisitKind::Leaf => {
                    if v.old & DESC_VALID == 0 {
                    } else if full {
                        c.store(v, 0);
                        c.defer_invalidate(start);
                    } else {
                        c.split_block(v);
                    }
                }
                VisitKind::TablePre => {
                    if full {
                        // Detach the whole subtree; one flush covers every entry in it.
                        let t = c.table_pa(v.old);
                        c.store(v, 0);
                        c.pending_all = true;
                        let mut sub = core::mem::take(&mut c.free_later);
                        c.collect_subtree(t, v.level + 1, &mut sub);
                        c.free_later = sub;
                        v.skip_children = true;
                    }
                }
                VisitKind::TablePost => {
                    if c.is_table(v.entry, v.level) {
                        let t = c.table_pa(v.entry);
                        if c.emptied(t, v) {
                            c.store(v, 0);
                            c.defer_invalidate(start);
                            c.free_later.push(t);
                        }
                    }
                }
            }
            Ok(())
        };
        let r = self.walk_in(range, flags, &mut visitor);
        self.ctx.flush();
        self.trim_reserve();
        r
    }

    /// Changes the attributes of every mapped page in `range` to `attrs` (e.g. write-protect
    /// for dirty tracking), splitting blocks the range cuts. Unmapped parts stay unmapped.
    pub fn protect(&mut self, range: Range<u64>, attrs: Attrs) -> Result<(), MapError> {
        self.check_range(&range)?;
        let bits = self.ctx.encode(attrs)?;
        if range.is_empty() {
            return Ok(());
        }
        self.prepare(&range, Op::Split)?;
        let r: Result<(), MapError> = self.walk_in(
            range,
            WalkFlags::LEAF,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                if v.old & DESC_VALID == 0 {
                    return Ok(());
                }
                if !c.covers(v) {
                    c.split_block(v);
                    return Ok(());
                }
                let new = (v.old & !DESC_ATTR_MASK) | bits;
                if new == v.old {
                    return Ok(());
                }
                let start = c.start_of(v);
                // Stage 2 only: the guest may now execute what it could not before.
                let becomes_exec = attrs.exec && v.old & attrs::S2_XN != 0;
                if c.geo.regime() == Regime::Stage2 && becomes_exec && !c.geo.dic() {
                    let pa = c.leaf_oa(v.old, v.level);
                    let len = c.size(v.level);
                    c.op(MaintOp::InvalidateIcachePou { pa, len });
                }
                if attrs_change_needs_bbm(v.old, new) {
                    c.store(v, 0);
                    c.invalidate_now(start);
                    c.store(v, new);
                } else {
                    c.store(v, new);
                    c.defer_invalidate(start);
                }
                Ok(())
            },
        );
        self.ctx.flush();
        self.trim_reserve();
        r
    }

    /// Translates one input address: (output address, attributes, level of the leaf).
    pub fn translate(&mut self, addr: u64) -> Option<(u64, Attrs, u32)> {
        let geo = self.ctx.geo;
        if addr >= geo.input_limit() {
            return None;
        }
        let page = addr & !(geo.page_size() - 1);
        let mut found = None;
        let _: Result<(), MapError> = self.walk(
            page..page + geo.page_size(),
            WalkFlags::LEAF,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                if v.old & DESC_VALID != 0 {
                    let size = c.size(v.level);
                    let oa = c.leaf_oa(v.old, v.level) + (addr & (size - 1));
                    found = Some((oa, attrs::decode(c.geo.regime(), v.old), v.level));
                }
                Ok(())
            },
        );
        found
    }

    /// Calls `f(input, output, size)` for every valid leaf (block or page) of the whole
    /// input space, in address order: a visitor of the one walker (for audits: every leaf of a
    /// VM's stage 2 must lie in that VM's memory).
    pub fn for_each_leaf(&mut self, mut f: impl FnMut(u64, u64, u64)) {
        let limit = self.ctx.geo.input_limit();
        let _: Result<(), MapError> = self.walk(
            0..limit,
            WalkFlags::LEAF,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                if v.old & DESC_VALID != 0 {
                    let size = c.size(v.level);
                    f(v.addr & !(size - 1), c.leaf_oa(v.old, v.level), size);
                }
                Ok(())
            },
        );
    }

    /// Frees every table (root included) and the reserve, and returns the allocator and the
    /// maintenance sink. For stage 2 the VMID is flushed first.
    pub fn destroy(mut self) -> (A, M) {
        let limit = self.ctx.geo.input_limit();
        let mut tables = Vec::new();
        let _: Result<(), MapError> = self.walk(
            0..limit,
            WalkFlags::TABLE_PRE,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                let t = c.table_pa(v.old);
                c.collect_subtree(t, v.level + 1, &mut tables);
                v.skip_children = true;
                Ok(())
            },
        );
        if self.ctx.geo.regime() == Regime::Stage2 {
            self.ctx.invalidate_all_now();
        }
        for t in tables {
            self.ctx.free_table(t);
        }
        self.release_reserve();
        let g = self.ctx.geo.granule();
        let n = self.ctx.geo.root_tables() as usize;
        self.ctx.alloc.free(self.root, g, n);
        self.ctx.tables -= n;
        (self.ctx.alloc, self.ctx.maint)
    }
}

/// The walker while the range fits in one entry per level: descends until a visit leaves a
/// non-table entry, and hands over to [`walk_table`] at the first level where the range
/// spans several entries. Only for walks without `TablePost` visits.
#[inline(always)]
fn walk_one<A, M, E, F>(
    c: &mut Ctx<A, M>,
    mut table: u64,
    mut level: u32,
    lo: u64,
    hi: u64,
    flags: WalkFlags,
    f: &mut F,
) -> Result<(), E>
where
    A: TableAlloc,
    M: Maintenance,
    F: FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>,
{
    loop {
        let shift = c.shift[level as usize & 3];
        if lo >> shift != (hi - 1) >> shift {
            return walk_table(c, table, level, lo, hi, flags, f);
        }
        let entry_pa = table + ((lo >> shift) & c.idx_mask[level as usize & 3]) * 8;
        let old = c.read(entry_pa);
        let was_table = c.is_table(old, level);
        let mut entry = old;
        let mut skip = false;
        let want = if was_table {
            flags.contains(WalkFlags::TABLE_PRE)
        } else {
            flags.contains(WalkFlags::LEAF)
        };
        if want {
            let mut v = Visit::at(lo, hi, level, VisitKind::of(was_table), old, entry_pa);
            f(c, &mut v)?;
            entry = v.entry;
            skip = v.skip_children;
        }
        if !c.is_table(entry, level) || skip {
            return Ok(());
        }
        level += 1;
        table = c.table_pa(entry);
        c.remember(level, lo, table);
    }
}

/// A table the walk descended from: where to continue in it, and the table descriptor that
/// led down (for the `TablePost` visit).
#[derive(Clone, Copy)]
struct Frame {
    table: u64,
    hi: u64,
    child_start: u64,
    entry_pa: u64,
}

const FRAME0: Frame = Frame {
    table: 0,
    hi: 0,
    child_start: 0,
    entry_pa: 0,
};

/// The walker: iterative (no recursion), at most 4 levels deep; the current table's state
/// stays in locals and only the tables above it are on the stack.
#[inline(always)]
fn walk_table<A, M, E, F>(
    c: &mut Ctx<A, M>,
    root: u64,
    start: u32,
    lo: u64,
    hi: u64,
    flags: WalkFlags,
    f: &mut F,
) -> Result<(), E>
where
    A: TableAlloc,
    M: Maintenance,
    F: FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>,
{
    let mut stack = [FRAME0; 3];
    let mut depth = 0usize;
    let mut level = start;
    let mut table = root;
    let mut addr = lo;
    let mut fhi = hi;
    loop {
        if addr >= fhi {
            if depth == 0 {
                return Ok(());
            }
            depth -= 1;
            level -= 1;
            let fr = stack[depth];
            // The child's range ended where its parent entry's part of the walk ends.
            let child_end = fhi;
            if flags.contains(WalkFlags::TABLE_POST) {
                let entry = c.read(fr.entry_pa);
                let mut v = Visit::at(
                    fr.child_start,
                    child_end,
                    level,
                    VisitKind::TablePost,
                    entry,
                    fr.entry_pa,
                );
                f(c, &mut v)?;
            }
            table = fr.table;
            fhi = fr.hi;
            addr = child_end;
            continue;
        }
        let shift = c.shift[level as usize & 3];
        let size = 1u64 << shift;
        if level == 3 {
            // A leaf table: a tight loop over its entries in the range.
            if flags.contains(WalkFlags::LEAF) {
                let mut entry_pa = table + ((addr >> shift) & c.idx_mask[3]) * 8;
                while addr < fhi {
                    let end = ((addr | (size - 1)) + 1).min(fhi);
                    let old = c.read(entry_pa);
                    let mut v = Visit::at(addr, end, level, VisitKind::Leaf, old, entry_pa);
                    f(c, &mut v)?;
                    addr = end;
                    entry_pa += 8;
                }
            } else {
                addr = fhi;
            }
            continue;
        }
        let end = ((addr | (size - 1)) + 1).min(fhi);
        let entry_pa = table + ((addr >> shift) & c.idx_mask[level as usize & 3]) * 8;
        let old = c.read(entry_pa);
        let mut entry = old;
        let mut skip = false;
        let was_table = c.is_table(old, level);
        let want = if was_table {
            flags.contains(WalkFlags::TABLE_PRE)
        } else {
            flags.contains(WalkFlags::LEAF)
        };
        if want {
            let mut v = Visit::at(addr, end, level, VisitKind::of(was_table), old, entry_pa);
            f(c, &mut v)?;
            entry = v.entry;
            skip = v.skip_children;
        }
        if c.is_table(entry, level) && !skip && depth < 3 {
            stack[depth] = Frame {
                table,
                hi: fhi,
                child_start: addr,
                entry_pa,
            };
            depth += 1;
            level += 1;
            table = c.table_pa(entry);
            fhi = end;
            c.remember(level, addr, table);
        } else {
            addr = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maint::{check_bbm, Event, Recorder};
    use crate::{CpuFeatures, VecAlloc};
    use alloc::vec;

    fn table(g: Granule) -> PageTable<VecAlloc, Recorder> {
        let cpu = CpuFeatures::profile("max").unwrap();
        let geo = Geometry::stage2(g, 40, &cpu).unwrap();
        PageTable::with_vmid(geo, 3, VecAlloc::new(), Recorder::default()).unwrap()
    }

    fn oa_mask(g: Granule) -> u64 {
        DESC_OA_MASK & !(g.size() - 1)
    }

    /// The cache maintenance `map` issues for `[out, out + len)` of `Attrs::ram()`.
    fn cmo(pt: &PageTable<VecAlloc, Recorder>, out: u64, len: u64) -> Vec<Event> {
        let geo = pt.geometry();
        let mut v = vec![];
        if !geo.fwb() {
            v.push(Event::Op(MaintOp::CleanDcachePoc { pa: out, len }));
        }
        if Attrs::ram().exec && !geo.dic() {
            v.push(Event::Op(MaintOp::InvalidateIcachePou { pa: out, len }));
        }
        v
    }

    /// The single-entry invalidation of stage 2 (one flushed pending entry).
    fn tlbi(vmid: u16, input: u64) -> Vec<Event> {
        vec![
            Event::Op(MaintOp::DsbIshSt),
            Event::Op(MaintOp::TlbiIpas2e1is {
                vmid,
                operand: tlbi_ipa_operand(input),
            }),
            Event::Op(MaintOp::DsbIsh),
            Event::Op(MaintOp::TlbiVmalle1is { vmid }),
            Event::Op(MaintOp::DsbIsh),
            Event::Op(MaintOp::Isb),
        ]
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes minutes under miri")]
    fn one_page_map_into_existing_tables_needs_no_allocation_and_stores_once() {
        for g in Granule::ALL {
            let mut pt = table(g);
            let p = g.size();
            let base = 1u64 << 32;
            let ram = Attrs::ram();
            pt.map(base..base + p, 1 << 33, ram, MapOpts::default())
                .unwrap();
            let tables = pt.tables();
            // No allocation may succeed: the page must still map (its tables exist).
            pt.release_reserve();
            pt.allocator_mut().fail_after(Some(0));
            pt.maintenance_mut().events.clear();
            let (a, o) = (base + 5 * p, (1 << 33) + 9 * p);
            pt.map(a..a + p, o, ram, MapOpts::default()).unwrap();
            assert_eq!(pt.tables(), tables, "{g}");
            assert_eq!(pt.translate(a).map(|t| (t.0, t.1, t.2)), Some((o, ram, 3)));
            let ev = pt.maintenance().events.clone();
            let mut want = cmo(&pt, o, p);
            let Some(Event::Store {
                input, level, old, ..
            }) = ev.last().copied()
            else {
                panic!("{g}: no store in {ev:?}");
            };
            assert_eq!((input, level, old & DESC_VALID), (a, 3, 0), "{g}");
            want.push(ev[ev.len() - 1]);
            assert_eq!(ev, want, "{g}");
            // A page needing a new leaf table still fails, and changes nothing.
            let far = base + (1 << 30);
            assert!(matches!(
                pt.map(far..far + p, o, ram, MapOpts::default()),
                Err(MapError::NoMemory { got: 0, .. })
            ));
            assert_eq!(pt.tables(), tables, "{g}");
            assert_eq!(pt.translate(far), None);
            pt.allocator_mut().fail_after(None);
            check_bbm(&pt.maintenance().events, oa_mask(g)).unwrap();
            let (alloc, _) = pt.destroy();
            assert_eq!((alloc.live_allocs(), alloc.bad_frees), (0, 0), "{g}");
        }
    }

    #[test]
    fn one_block_map_over_invalid_entry_is_one_store_and_over_a_valid_one_is_bbm() {
        let g = Granule::K4;
        let mut pt = table(g);
        let gib = 1u64 << 30;
        let ram = Attrs::ram();
        pt.map(0..gib, 4 * gib, ram, MapOpts::default()).unwrap();
        pt.maintenance_mut().events.clear();
        pt.map(gib..2 * gib, 5 * gib, ram, MapOpts::default())
            .unwrap();
        let ev = pt.maintenance().events.clone();
        assert_eq!(ev.len(), cmo(&pt, 5 * gib, gib).len() + 1, "{ev:?}");
        assert!(matches!(
            ev.last(),
            Some(Event::Store { input, level: 1, old: 0, new, .. })
                if *input == gib && *new & DESC_OA_MASK == 5 * gib && *new & 3 == 1
        ));
        // Another output for a valid block: break, invalidate, make (the general path).
        pt.maintenance_mut().events.clear();
        pt.map(gib..2 * gib, 6 * gib, ram, MapOpts::default())
            .unwrap();
        let ev = pt.maintenance().events.clone();
        let stores: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Store { old, new, .. } => Some((*old & DESC_VALID, *new & DESC_VALID)),
                _ => None,
            })
            .collect();
        assert_eq!(stores, vec![(1, 0), (0, 1)], "{ev:?}");
        check_bbm(&ev, oa_mask(g)).unwrap();
        assert_eq!(pt.translate(gib + 4096).map(|t| t.0), Some(6 * gib + 4096));
        // A run of blocks in one table over invalid entries: the maintenance, then one store
        // per block in order, and no table.
        pt.release_reserve();
        let tables = pt.tables();
        let allocs = pt.allocator().total_allocs();
        pt.maintenance_mut().events.clear();
        pt.map(4 * gib..8 * gib, 16 * gib, ram, MapOpts::default())
            .unwrap();
        let ev = pt.maintenance().events.clone();
        let want = cmo(&pt, 16 * gib, 4 * gib);
        let n = want.len();
        assert_eq!(ev[..n], want[..], "{ev:?}");
        for (k, e) in ev[n..].iter().enumerate() {
            let k = k as u64;
            assert!(matches!(
                e,
                Event::Store { input, level: 1, old: 0, new, .. }
                    if *input == (4 + k) * gib && *new & DESC_OA_MASK == (16 + k) * gib
            ));
        }
        assert_eq!(ev.len(), n + 4);
        assert_eq!(
            (pt.tables(), pt.allocator().total_allocs()),
            (tables, allocs)
        );
        assert_eq!(
            pt.translate(7 * gib + 4096).map(|t| t.0),
            Some(19 * gib + 4096)
        );
        pt.destroy();
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes minutes under miri")]
    fn one_page_unmap_invalidates_at_once_and_frees_the_tables_it_empties() {
        for g in Granule::ALL {
            let mut pt = table(g);
            let p = g.size();
            let base = 1u64 << 32;
            let roots = pt.geometry().root_tables() as usize;
            pt.map(base..base + 2 * p, 1 << 33, Attrs::ram(), MapOpts::PAGES)
                .unwrap();
            let tables = pt.tables();
            assert!(tables > roots);
            pt.maintenance_mut().events.clear();
            pt.unmap(base..base + p).unwrap();
            let ev = pt.maintenance().events.clone();
            assert!(matches!(
                ev[0],
                Event::Store { input, level: 3, new: 0, old, .. } if input == base && old & 1 == 1
            ));
            assert_eq!(ev[1..], tlbi(3, base)[..], "{g}");
            assert_eq!(pt.tables(), tables, "{g}");
            assert_eq!(pt.translate(base), None);
            assert!(pt.translate(base + p).is_some());
            // The last page: its leaf table (and every table above it) is freed.
            pt.maintenance_mut().events.clear();
            pt.unmap(base + p..base + 2 * p).unwrap();
            assert_eq!(pt.tables(), roots, "{g}");
            let ev = pt.maintenance().events.clone();
            assert!(ev.contains(&Event::Op(MaintOp::TlbiIpas2e1is {
                vmid: 3,
                operand: tlbi_ipa_operand(base + p)
            })));
            check_bbm(&ev, oa_mask(g)).unwrap();
            // Unmapping what is not mapped changes nothing.
            pt.maintenance_mut().events.clear();
            pt.unmap(base..base + p).unwrap();
            assert!(pt.maintenance().events.is_empty(), "{g}");
            let (alloc, _) = pt.destroy();
            assert_eq!((alloc.live_allocs(), alloc.bad_frees), (0, 0), "{g}");
        }
    }
}
