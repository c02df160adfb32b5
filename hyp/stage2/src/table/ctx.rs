//! [`Ctx`]: what a visitor works with (geometry, allocator, maintenance, VMID, pending
//! invalidations, reserved tables, the walk cache), the stores it may make, and the
//! descriptor encodings the table code reads and writes.

use super::reserve::FreshTable;
use super::walk::{Visit, WalkCache};
use super::LAST_LEVEL;
use crate::addr::Pa;
use crate::attrs::{
    self, AttrError, Attrs, DESC_BLOCK, DESC_OA_MASK, DESC_PAGE, DESC_TABLE, DESC_TYPE_MASK,
};
use crate::frames::TableAlloc;
use crate::geometry::Geometry;
use crate::maint::{MaintOp, Maintenance};
use alloc::vec::Vec;

/// The state a visitor works with: geometry, allocator, maintenance, VMID, pending
/// invalidations and reserved tables.
#[derive(Debug)]
pub struct Ctx<A, M> {
    pub(super) geo: Geometry,
    /// `level_shift` per level, and the index mask per level (the root's covers every
    /// concatenated table), cached from `geo`.
    shift: [u32; 4],
    idx_mask: [u64; 4],
    /// The first level with block descriptors (and not above the start level).
    pub(super) min_block: u32,
    /// Per `log2(size)`: 1 + the level whose entries map exactly `size` bytes and may be
    /// leaves (level 3, or a block level at or below `min_block`); 0 if none. Lets the
    /// one-entry fast path find its level without geometry arithmetic.
    leaf_level: [u8; 64],
    /// The last attributes encoded and their bits (maps repeat the same attributes).
    pub(super) last_attrs: Option<(Attrs, u64)>,
    /// The tables the last walks descended into (see [`WalkCache`]).
    pub(super) walk_cache: WalkCache,
    pub(super) alloc: A,
    pub(super) maint: M,
    pub(super) vmid: u16,
    /// Tables in use, root tables included.
    pub(super) tables: usize,
    /// Zeroed tables the prepare pass allocated for the commit to take.
    pub(super) reserve: Vec<u64>,
    /// Inputs whose invalidation waits for the end of the operation.
    pub(super) pending: Vec<u64>,
    /// More than [`super::MAX_TLBI_BY_ADDRESS`] were pending: flush the whole VMID (regime).
    pub(super) pending_all: bool,
    /// Tables to free once the pending invalidations are issued.
    pub(super) free_later: Vec<u64>,
}

impl<A, M> Ctx<A, M> {
    /// The state of a new table of `geo` whose root is `root_tables` tables.
    pub(super) fn new(geo: Geometry, alloc: A, maint: M, root_tables: usize) -> Self {
        let min_block = geo.granule().min_block_level().max(geo.start_level());
        let mut leaf_level = [0u8; 64];
        for l in min_block..=LAST_LEVEL {
            leaf_level[geo.level_shift(l) as usize & 63] = l as u8 + 1;
        }
        Ctx {
            geo,
            shift: core::array::from_fn(|l| geo.level_shift(l as u32)),
            idx_mask: core::array::from_fn(|l| {
                if l as u32 == geo.start_level() {
                    geo.root_entries() as u64 - 1
                } else {
                    geo.entries() as u64 - 1
                }
            }),
            min_block,
            leaf_level,
            last_attrs: None,
            walk_cache: WalkCache::EMPTY,
            alloc,
            maint,
            vmid: 0,
            tables: root_tables,
            reserve: Vec::new(),
            pending: Vec::new(),
            pending_all: false,
            free_later: Vec::new(),
        }
    }

    /// The same state with another maintenance sink, and the old sink.
    pub(super) fn with_maintenance<M2>(self, maint: M2) -> (Ctx<A, M2>, M) {
        (
            Ctx {
                geo: self.geo,
                shift: self.shift,
                idx_mask: self.idx_mask,
                min_block: self.min_block,
                leaf_level: self.leaf_level,
                last_attrs: self.last_attrs,
                walk_cache: self.walk_cache,
                alloc: self.alloc,
                maint,
                vmid: self.vmid,
                tables: self.tables,
                reserve: self.reserve,
                pending: self.pending,
                pending_all: self.pending_all,
                free_later: self.free_later,
            },
            self.maint,
        )
    }
}

impl<A: TableAlloc, M: Maintenance> Ctx<A, M> {
    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Reads the descriptor at `entry_pa`.
    #[inline(always)]
    pub fn read(&self, entry_pa: u64) -> u64 {
        self.alloc.read_entry(Pa::new(entry_pa), self.geo.granule())
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
            self.walk_cache.clear();
        }
        let start = self.start_of(v);
        self.store_leaf(v.entry_pa, start, v.level, v.entry, new);
        v.entry = new;
    }

    /// [`Ctx::store`] by address: the non-table descriptor `old` at `entry_pa`, translating
    /// `input` at `level`, becomes the leaf or invalid descriptor `new`.
    #[inline(always)]
    pub(super) fn store_leaf(&mut self, entry_pa: u64, input: u64, level: u32, old: u64, new: u64) {
        self.maint.store(entry_pa, input, level, old, new);
        self.alloc
            .write_entry(Pa::new(entry_pa), self.geo.granule(), new);
    }

    /// Publishes the fresh table `t` (its subtree filled) in the visited, invalid descriptor:
    /// one single-copy-atomic `Release` store of its table descriptor, so every store that
    /// filled the subtree is ordered before it (KVM's `smp_store_release`). The caller
    /// issues the `DSB ISHST` that orders them for this CPU's walker.
    #[inline(always)]
    pub(super) fn store_table(&mut self, v: &mut Visit, t: FreshTable) {
        let new = t.descriptor();
        if self.is_table(v.entry, v.level) {
            self.walk_cache.clear();
        }
        let start = self.start_of(v);
        self.maint.store(v.entry_pa, start, v.level, v.entry, new);
        self.alloc
            .publish_entry(Pa::new(v.entry_pa), self.geo.granule(), new);
        v.entry = new;
    }

    /// Bytes a level-`level` entry maps (cached `Geometry::entry_size`).
    #[inline(always)]
    pub fn size(&self, level: u32) -> u64 {
        1u64 << self.shift(level)
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

    /// log2 of the bytes a level-`level` entry maps.
    #[inline(always)]
    pub(super) fn shift(&self, level: u32) -> u32 {
        self.shift[level as usize & 3]
    }

    /// The address of the level-`level` descriptor in `table` that translates `addr`.
    #[inline(always)]
    pub(super) fn entry_pa(&self, table: u64, level: u32, addr: u64) -> u64 {
        table + ((addr >> self.shift(level)) & self.idx_mask[level as usize & 3]) * 8
    }

    /// The (granule-sized, non-root) table holding the descriptor at `entry_pa`.
    #[inline(always)]
    pub(super) fn table_of(&self, entry_pa: u64) -> u64 {
        entry_pa & !(self.size(LAST_LEVEL) - 1)
    }

    /// The level whose single entry `[start, end)` is exactly (one aligned page, or one
    /// aligned block at a level that may hold blocks), or `None`.
    #[inline(always)]
    pub(super) fn one_entry_level(&self, start: u64, end: u64) -> Option<u32> {
        let len = end.wrapping_sub(start);
        if start >= end || !len.is_power_of_two() || start & (len - 1) != 0 {
            return None;
        }
        match self.leaf_level[len.trailing_zeros() as usize & 63] {
            0 => None,
            l => Some(l as u32 - 1),
        }
    }

    /// [`attrs::encode`] for this regime, remembering the last result.
    #[inline(always)]
    pub(super) fn encode(&mut self, a: Attrs) -> Result<u64, AttrError> {
        match self.last_attrs {
            Some((last, bits)) if last == a => Ok(bits),
            _ => {
                let bits = attrs::encode_with(self.geo.regime(), self.geo.fwb(), a)?;
                self.last_attrs = Some((a, bits));
                Ok(bits)
            }
        }
    }

    /// Whether a level-`level` entry mapping output `out` may be one leaf (a page, or a block
    /// at a block level with `out` aligned to it).
    #[inline(always)]
    pub(super) fn blockable(&self, level: u32, out: u64, pages_only: bool) -> bool {
        level == LAST_LEVEL
            || (!pages_only && level >= self.min_block && out & (self.size(level) - 1) == 0)
    }

    /// Whether `desc` at `level` is a table descriptor.
    #[inline(always)]
    pub(super) fn is_table(&self, desc: u64, level: u32) -> bool {
        level < LAST_LEVEL && desc & DESC_TYPE_MASK == DESC_TABLE
    }

    /// The next-level table a table descriptor points to.
    #[inline(always)]
    pub(super) fn table_pa(&self, desc: u64) -> u64 {
        desc & DESC_OA_MASK & !(self.size(LAST_LEVEL) - 1)
    }

    /// The output address of a leaf descriptor at `level`.
    #[inline(always)]
    pub(super) fn leaf_oa(&self, desc: u64, level: u32) -> u64 {
        desc & DESC_OA_MASK & !(self.size(level) - 1)
    }

    /// The leaf descriptor at `level` mapping `out` with the attribute bits `attr_bits`: a
    /// page at the last level, a block above it.
    #[inline(always)]
    pub(super) fn leaf_desc(out: u64, level: u32, attr_bits: u64) -> u64 {
        let ty = if level == LAST_LEVEL {
            DESC_PAGE
        } else {
            DESC_BLOCK
        };
        out | attr_bits | ty
    }

    /// Issues one maintenance operation.
    #[inline(always)]
    pub(super) fn op(&mut self, op: MaintOp) {
        self.maint.op(op);
    }
}
