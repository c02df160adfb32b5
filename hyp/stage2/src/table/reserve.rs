//! Prepare, then commit: the reserve of zeroed tables an operation takes from, and the
//! prepare pass that fills it before the first descriptor changes.

use super::walk::{VisitKind, WalkFlags};
use super::{Ctx, MapError, PageTable, Visit, LAST_LEVEL};
use crate::addr::{InputAddress, Pa};
use crate::attrs::{DESC_TABLE, DESC_VALID};
use crate::frames::TableAlloc;
use crate::maint::Maintenance;
use core::ops::Range;
use core::sync::atomic::AtomicU64;

/// Frames kept in reserve between operations so that a single-page map (the lazy-fault path)
/// needs no counting pass; at most this many.
pub(super) const RESERVE_KEEP: usize = 4;

/// A table taken from the reserve and not yet published: no walker can reach it, so it may
/// be filled in bulk ([`Ctx::fresh`]). Not `Copy`: [`FreshTable::descriptor`] gives up the
/// bulk access and yields the one table descriptor that links it, stored either into a
/// fresh parent (published with it) or by [`Ctx::store_table`].
pub(super) struct FreshTable(u64);

impl FreshTable {
    /// The table's physical address.
    pub(super) fn pa(&self) -> u64 {
        self.0
    }

    /// The table descriptor pointing at this table.
    #[inline(always)]
    pub(super) fn descriptor(self) -> u64 {
        self.0 | DESC_TABLE
    }
}

/// What the prepare pass counts tables for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// Mapping input `lo..` to output `out..`: an entry needs a table unless the range
    /// covers it and it can be one leaf.
    Map { out: u64, lo: u64, pages_only: bool },
    /// Unmap or protect: a block the range cuts needs a table (it is split).
    Split,
}

impl<A: TableAlloc, M: Maintenance> Ctx<A, M> {
    /// Takes a zeroed table from the reserve filled by the prepare pass.
    pub(super) fn take_table(&mut self) -> FreshTable {
        let t = self
            .reserve
            .pop()
            .expect("invariant: the prepare pass reserved every table the commit takes");
        self.tables += 1;
        FreshTable(t)
    }

    /// The descriptors of a fresh table, for bulk initialisation (`AtomicU64::get_mut`).
    #[inline(always)]
    pub(super) fn fresh(&mut self, t: &FreshTable) -> &mut [AtomicU64] {
        self.alloc.fresh_table(Pa::new(t.0), self.geo.granule())
    }

    /// Tables an operation needs below an entry at `level` that must become a table for
    /// `[lo, hi)` (inside the entry): the entry's own table, and at each deeper level above
    /// the last, every entry in the range that cannot be one leaf. Those nest (an entry that
    /// needs a table lies in one that needs a table), so the count is a sum per level: every
    /// entry the range touches where no entry can be a leaf (a map whose output is misaligned
    /// for that level's blocks, or pages only), else the at most two entries the range cuts.
    pub(super) fn tables_below(&self, op: Op, level: u32, lo: u64, hi: u64) -> usize {
        let mut n = 1;
        for l in level + 1..LAST_LEVEL {
            let s = self.shift(l);
            let mask = (1u64 << s) - 1;
            let (first, last) = (lo >> s, (hi - 1) >> s);
            let no_leaf = match op {
                Op::Map {
                    out,
                    lo: map_lo,
                    pages_only,
                } => !self.blockable(l, out.wrapping_sub(map_lo), pages_only),
                Op::Split => false,
            };
            n += if no_leaf {
                (last - first + 1) as usize
            } else {
                let head = lo & mask != 0;
                let tail = hi & mask != 0;
                match (head, tail) {
                    (true, true) if first == last => 1,
                    _ => head as usize + tail as usize,
                }
            };
        }
        n
    }

    /// Whether a leaf entry at `level` needs a table of its own for the operation.
    #[inline(always)]
    fn needs_table(&self, op: Op, v: &Visit) -> bool {
        let full = self.covers(v);
        match op {
            Op::Map {
                out,
                lo,
                pages_only,
            } => !(full && self.blockable(v.level, out + (v.addr - lo), pages_only)),
            Op::Split => v.old & DESC_VALID != 0 && !full,
        }
    }

    /// Frees reserved frames beyond `keep`.
    #[inline(always)]
    pub(super) fn trim_reserve(&mut self, keep: usize) {
        let g = self.geo.granule();
        while self.reserve.len() > keep {
            if let Some(t) = self.reserve.pop() {
                self.alloc.free(Pa::new(t), g, 1);
            }
        }
    }

    /// Tops the reserve up to `need` frames; on failure returns the frames it took and
    /// leaves the reserve as it was.
    fn fill_reserve(&mut self, need: usize) -> Result<(), MapError> {
        let have = self.reserve.len();
        let g = self.geo.granule();
        while self.reserve.len() < need {
            match self.alloc.alloc(g, 1) {
                Some(t) => self.reserve.push(t.get()),
                None => {
                    let got = self.reserve.len();
                    self.trim_reserve(have);
                    return Err(MapError::NoMemory { needed: need, got });
                }
            }
        }
        Ok(())
    }
}

impl<A: TableAlloc, M: Maintenance, I: InputAddress> PageTable<A, M, I> {
    /// Ensures the reserve holds the tables an operation on `range` needs (prepare).
    #[inline(always)]
    pub(super) fn prepare(&mut self, range: &Range<u64>, op: Op) -> Result<(), MapError> {
        let c = &self.ctx;
        let start = c.geo.start_level();
        // One page needs at most one table per level below the root.
        if range.end - range.start == c.size(LAST_LEVEL)
            && c.reserve.len() >= (LAST_LEVEL - start) as usize
        {
            return Ok(());
        }
        // Cheap upper bound: one table per level-(L-1) entry the range touches, per level,
        // down to the level whose blocks tile a map exactly (no table is needed below it).
        let mut bound = 0usize;
        for l in start + 1..=LAST_LEVEL {
            let s = c.shift(l - 1);
            if let Op::Map {
                out,
                pages_only: false,
                ..
            } = op
            {
                let m = (1u64 << s) - 1;
                if l > c.min_block && (range.start | range.end | out) & m == 0 {
                    break;
                }
            }
            bound += (((range.end - 1) >> s) - (range.start >> s) + 1) as usize;
        }
        if bound <= c.reserve.len() {
            return Ok(());
        }
        self.prepare_slow(range, op, bound)
    }

    /// The counting pass of [`PageTable::prepare`]: a walk that visits the leaves above the
    /// last level (a table of pages has nothing below it that could need a table).
    fn prepare_slow(&mut self, range: &Range<u64>, op: Op, bound: usize) -> Result<(), MapError> {
        if bound <= RESERVE_KEEP && self.ctx.fill_reserve(bound).is_ok() {
            return Ok(());
        }
        let mut need = 0usize;
        let flags = WalkFlags::LEAF | WalkFlags::TABLE_PRE;
        let _: Result<(), MapError> = self.walk_in(
            range.clone(),
            flags,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                match v.kind {
                    VisitKind::TablePre => v.skip_children = v.level + 1 == LAST_LEVEL,
                    VisitKind::Leaf if v.level < LAST_LEVEL && c.needs_table(op, v) => {
                        need += c.tables_below(op, v.level, v.addr, v.end);
                    }
                    _ => {}
                }
                Ok(())
            },
        );
        self.ctx.fill_reserve(need)
    }
}
