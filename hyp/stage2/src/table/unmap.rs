//! Unmap: the one-leaf fast path, and the general walk that splits the blocks the range
//! cuts, detaches whole subtrees and frees the tables it empties.

use super::reserve::{Op, RESERVE_KEEP};
use super::walk::{VisitKind, WalkFlags};
use super::{Ctx, MapError, PageTable, Visit, LAST_LEVEL};
use crate::addr::{AddrRange, InputAddress, Pa};
use crate::attrs::DESC_VALID;
use crate::frames::TableAlloc;
use crate::maint::Maintenance;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

/// What the fast path of [`PageTable::unmap`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// Nothing: the general path unmaps the range.
    Refused,
    /// Cleared and invalidated the range's one entry: the unmap is done.
    Done,
    /// Cleared the range's one entry and queued its invalidation; its table (this one) is
    /// empty now, and the general path frees it.
    Emptied(u64),
}

impl<A: TableAlloc, M: Maintenance, I: InputAddress> PageTable<A, M, I> {
    /// Unmaps `range`, splitting blocks the range cuts and freeing tables it empties.
    #[inline]
    pub fn unmap(&mut self, range: AddrRange<I>) -> Result<(), MapError> {
        let range = range.raw();
        self.check_range(&range)?;
        if range.is_empty() {
            return Ok(());
        }
        match self.unmap_fast(&range) {
            Fast::Done => Ok(()),
            Fast::Emptied(table) => self.unmap_slow(range, Some(table)),
            Fast::Refused => self.unmap_slow(range, None),
        }
    }

    /// The fast path of [`PageTable::unmap`] (the per-page pattern): the range is exactly one
    /// valid leaf entry. It needs no table: the walker's cached descent to the entry, one
    /// store of the invalid descriptor, then the entry's invalidation at once (the sequence a
    /// flush of one pending entry issues) unless its table is now empty; then the general
    /// walk frees the emptied tables (its leaf visit finds the entry invalid) and its one
    /// flush covers everything.
    #[inline(always)]
    fn unmap_fast(&mut self, range: &Range<u64>) -> Fast {
        let c = &mut self.ctx;
        let (start, end) = (range.start, range.end);
        let Some(level) = c.one_entry_level(start, end) else {
            return Fast::Refused;
        };
        let (table, reached) = c.descend(self.root, start, end, level);
        if reached != level {
            return Fast::Refused;
        }
        let entry_pa = c.entry_pa(table, level, start);
        let old = c.read(entry_pa);
        if old & DESC_VALID == 0 || c.is_table(old, level) {
            return Fast::Refused;
        }
        c.store_leaf(entry_pa, start, level, old, 0);
        if level > c.geo.start_level() && c.emptied(table, level, start, end) {
            c.defer_invalidate(start);
            Fast::Emptied(table)
        } else {
            c.invalidate_now(start);
            Fast::Done
        }
    }

    /// [`PageTable::unmap`] beyond its fast path: prepare, walk (splitting blocks, freeing
    /// emptied tables), flush. `emptied`: the fast path already cleared the range's one
    /// entry, queued its invalidation and found its table empty; only the emptied tables
    /// remain to be freed.
    #[inline(never)]
    fn unmap_slow(&mut self, range: Range<u64>, emptied: Option<u64>) -> Result<(), MapError> {
        // After the fast path cleared the entry, the walk only frees tables: nothing to
        // prepare (and nothing may fail).
        if emptied.is_none() {
            self.prepare(&range, Op::Split)?;
        }
        // Whole subtrees can only be detached if the range covers a whole table entry.
        let flags = if range.end - range.start >= self.ctx.size(LAST_LEVEL - 1) {
            WalkFlags::LEAF | WalkFlags::TABLE_PRE | WalkFlags::TABLE_POST
        } else {
            WalkFlags::LEAF | WalkFlags::TABLE_POST
        };
        let r: Result<(), MapError> =
            self.walk_in(range, flags, &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                match v.kind {
                    VisitKind::Leaf => c.unmap_leaf(v),
                    VisitKind::TablePre => c.unmap_table_pre(v),
                    VisitKind::TablePost => c.unmap_table_post(v, emptied),
                }
                Ok(())
            });
        self.ctx.flush();
        self.ctx.trim_reserve(RESERVE_KEEP);
        r
    }
}

impl<A: TableAlloc, M: Maintenance> Ctx<A, M> {
    /// A leaf in the range: cleared if covered (invalidated at the end), split if cut.
    #[inline(always)]
    fn unmap_leaf(&mut self, v: &mut Visit) {
        if v.old & DESC_VALID == 0 {
            return;
        }
        if self.covers(v) {
            let start = self.start_of(v);
            self.store(v, 0);
            self.defer_invalidate(start);
        } else {
            self.split_block(v);
        }
    }

    /// A table the range covers is detached whole: one store, one flush of the VMID for
    /// every entry in it, and its tables are freed after the flush.
    fn unmap_table_pre(&mut self, v: &mut Visit) {
        if !self.covers(v) {
            return;
        }
        let (t, start) = (self.table_pa(v.old), self.start_of(v));
        self.store(v, 0);
        self.pending_all = true;
        let mut sub = core::mem::take(&mut self.free_later);
        self.collect_subtree(t, v.level + 1, start, &mut sub);
        self.free_later = sub;
        v.skip_children = true;
    }

    /// After a table's part of the range: the table goes if nothing in it is valid any more
    /// (`known_empty`: a table the fast path found empty).
    fn unmap_table_post(&mut self, v: &mut Visit, known_empty: Option<u64>) {
        if !self.is_table(v.entry, v.level) {
            return;
        }
        let t = self.table_pa(v.entry);
        if known_empty == Some(t) || self.covers(v) || self.emptied(t, v.level + 1, v.addr, v.end) {
            let start = self.start_of(v);
            self.store(v, 0);
            self.defer_invalidate(start);
            self.free_later.push(t);
        }
    }

    /// Whether the table `t` of level-`level` entries has no valid entry left, `lo..hi`
    /// being the part of it just cleared: its two neighbours first (where a valid entry is
    /// likeliest), then the whole table.
    pub(super) fn emptied(&self, t: u64, level: u32, lo: u64, hi: u64) -> bool {
        let shift = self.shift(level);
        let n = self.geo.entries();
        let mask = (n - 1) as u64;
        let first = ((lo >> shift) & mask) as usize;
        let last = (((hi - 1) >> shift) & mask) as usize;
        let table = self.alloc.table(Pa::new(t), self.geo.granule());
        let valid = |e: &AtomicU64| e.load(Ordering::Relaxed) & DESC_VALID != 0;
        let neighbours = [first.wrapping_sub(1), last + 1];
        if neighbours.iter().any(|&i| table.get(i).is_some_and(valid)) {
            return false;
        }
        !table.iter().any(valid)
    }
}
