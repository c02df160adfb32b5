//! The one walker: visits, flags, and the walk cache it owns.
//!
//! [`Ctx::walk_from`] walks a range of input addresses through a subtree, iteratively (no
//! recursion, at most one stack frame per level), calling a visitor for the entries the
//! [`WalkFlags`] ask for. It descends into every table descriptor it meets (including one a
//! leaf visitor just installed) unless the visitor sets [`Visit::skip_children`]. Every walk
//! of the table code is this one: [`PageTable::walk`] from the root, or, with leaf visits
//! only, from where the cached descent ([`Ctx::descend`]) through the levels that hold the
//! range in one entry ends; the fill of a fresh subtree before it is published; the
//! collection of a detached subtree's tables. The one-entry fast paths of map and unmap are
//! that cached descent followed by their own stores, without the iteration.

use super::{Ctx, MapError, PageTable, LAST_LEVEL};
use crate::addr::{AddrRange, InputAddress};
use crate::frames::TableAlloc;
use crate::maint::Maintenance;
use core::ops::Range;

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
    /// With `LEAF`: the last level's entries come as one visit per table, whose `addr..end`
    /// spans every page of that table in the range (`entry_pa`, `old` and `entry` are the
    /// first one's); the visitor reads and writes each entry itself. For the library's bulk
    /// visitors (fill, protect), whose per-page work is a few instructions.
    pub(crate) const LEAF_RUNS: WalkFlags = WalkFlags(8);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: WalkFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether table entries are visited (before or after their subtree).
    const fn visits_tables(self) -> bool {
        self.0 & (WalkFlags::TABLE_PRE.0 | WalkFlags::TABLE_POST.0) != 0
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

/// One visited descriptor.
///
/// Its addresses are numbers: `addr` and `end` are input addresses of the table's kind
/// ([`crate::Ipa`] or [`crate::Va`]), `entry_pa` a physical one. The walker works on numbers;
/// [`PageTable::walk`] takes a typed range.
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
}

/// One walk-cache slot: the table that translates the input span `start..end`.
#[derive(Clone, Copy, Debug)]
struct CachedTable {
    table: u64,
    start: u64,
    end: u64,
}

impl CachedTable {
    /// A slot that holds no range (`start > end`).
    const EMPTY: CachedTable = CachedTable {
        table: 0,
        start: u64::MAX,
        end: 0,
    };
}

/// The walk cache: per level, the last table a walk from the root descended into, with the
/// input span it translates. [`Ctx::descend`] starts at the deepest cached table holding its
/// range instead of the root, which makes the lazy-fault pattern (one page after another in
/// one table) a read of one descriptor. Cleared whenever a table descriptor is overwritten or a table is
/// freed (one slot per level: more slots did not help the random-order benchmark).
#[derive(Clone, Copy, Debug)]
pub(super) struct WalkCache([CachedTable; 4]);

impl WalkCache {
    /// Nothing cached.
    pub(super) const EMPTY: WalkCache = WalkCache([CachedTable::EMPTY; 4]);

    /// Forgets every table.
    #[inline(always)]
    pub(super) fn clear(&mut self) {
        *self = WalkCache::EMPTY;
    }

    /// Records that the level-`level` table `table` translates `start..end`.
    #[inline(always)]
    fn remember(&mut self, level: u32, table: u64, start: u64, end: u64) {
        self.0[level as usize & 3] = CachedTable { table, start, end };
    }

    /// The deepest cached table of a level in `top + 1..=bottom` whose span holds all of
    /// `lo..hi`: (table, level).
    #[inline(always)]
    fn deepest(&self, top: u32, bottom: u32, lo: u64, hi: u64) -> Option<(u64, u32)> {
        let mut level = bottom;
        while level > top {
            let slot = self.0[level as usize & 3];
            if lo >= slot.start && hi <= slot.end {
                return Some((slot.table, level));
            }
            level -= 1;
        }
        None
    }
}

/// Where a walk starts: a table and its level.
#[derive(Clone, Copy, Debug)]
pub(super) struct Subtree {
    table: u64,
    level: u32,
    /// Reachable from the root, so the tables below it may go to the walk cache. A fresh
    /// subtree (being filled) or a detached one (being freed) is not.
    attached: bool,
}

impl Subtree {
    /// The live table `table` at `level`.
    pub(super) const fn attached(table: u64, level: u32) -> Subtree {
        Subtree {
            table,
            level,
            attached: true,
        }
    }

    /// The table `table` at `level`, which no walker reaches from the root.
    pub(super) const fn unreachable(table: u64, level: u32) -> Subtree {
        Subtree {
            table,
            level,
            attached: false,
        }
    }
}

/// A table the walk descended from and must come back to: where to continue in it, and the
/// table descriptor that led down (for the `TablePost` visit).
#[derive(Clone, Copy)]
struct Frame {
    table: u64,
    level: u32,
    hi: u64,
    child_start: u64,
    entry_pa: u64,
}

const FRAME0: Frame = Frame {
    table: 0,
    level: 0,
    hi: 0,
    child_start: 0,
    entry_pa: 0,
};

impl<A: TableAlloc, M: Maintenance> Ctx<A, M> {
    /// The cached descent every walk with leaf visits only starts with, and the one-entry
    /// fast paths use alone: from the deepest cached table whose span holds the non-empty
    /// range `lo..hi` (else from `root`), down through table descriptors to level `stop` at
    /// most (the range lies inside one entry of every level above `stop`). Returns the table
    /// and level where it met an entry that is not a table, or reached `stop`. Reads only,
    /// and remembers the tables it passes.
    #[inline(always)]
    pub(super) fn descend(&mut self, root: u64, lo: u64, hi: u64, stop: u32) -> (u64, u32) {
        let top = self.geo.start_level();
        let (mut table, mut level) = self
            .walk_cache
            .deepest(top, stop, lo, hi)
            .unwrap_or((root, top));
        while level < stop {
            let shift = self.shift(level);
            let desc = self.read(self.entry_pa(table, level, lo));
            if !self.is_table(desc, level) {
                break;
            }
            let child = self.table_pa(desc);
            let span = lo & !((1u64 << shift) - 1);
            self.walk_cache
                .remember(level + 1, child, span, span + (1u64 << shift));
            (table, level) = (child, level + 1);
        }
        (table, level)
    }

    /// The walker: visits `lo..hi` in the subtree `at` as `flags` ask. Iterative: the
    /// current table's state stays in locals and only the tables to come back to are on a
    /// stack of at most three frames (one per level above the last). Without `TablePost`
    /// visits, descending into the last entry of a table's part of the range pushes no frame,
    /// so a range inside one entry per level needs none.
    #[inline(always)]
    pub(super) fn walk_from<E, F>(
        &mut self,
        at: Subtree,
        lo: u64,
        hi: u64,
        flags: WalkFlags,
        f: &mut F,
    ) -> Result<(), E>
    where
        F: FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>,
    {
        let post = flags.contains(WalkFlags::TABLE_POST);
        let mut stack = [FRAME0; 3];
        let mut depth = 0usize;
        let (mut table, mut level, mut addr, mut hi) = (at.table, at.level, lo, hi);
        loop {
            if addr >= hi {
                if depth == 0 {
                    return Ok(());
                }
                depth -= 1;
                let fr = stack[depth];
                // The child's part of the range ended where its parent entry's part ends.
                if post {
                    let entry = self.read(fr.entry_pa);
                    let kind = VisitKind::TablePost;
                    let mut v = Visit::at(fr.child_start, hi, fr.level, kind, entry, fr.entry_pa);
                    f(self, &mut v)?;
                }
                (table, level, addr, hi) = (fr.table, fr.level, hi, fr.hi);
                continue;
            }
            if level == LAST_LEVEL {
                self.visit_last_level(table, addr, hi, flags, f)?;
                addr = hi;
                continue;
            }
            let size = self.size(level);
            let end = ((addr | (size - 1)) + 1).min(hi);
            let entry_pa = self.entry_pa(table, level, addr);
            let old = self.read(entry_pa);
            let was_table = self.is_table(old, level);
            let (kind, want) = if was_table {
                (VisitKind::TablePre, WalkFlags::TABLE_PRE)
            } else {
                (VisitKind::Leaf, WalkFlags::LEAF)
            };
            let mut v = Visit::at(addr, end, level, kind, old, entry_pa);
            if flags.contains(want) {
                f(self, &mut v)?;
            }
            if !self.is_table(v.entry, level) || v.skip_children {
                addr = end;
                continue;
            }
            let child = self.table_pa(v.entry);
            if post || end < hi {
                stack[depth] = Frame {
                    table,
                    level,
                    hi,
                    child_start: addr,
                    entry_pa,
                };
                depth += 1;
            }
            if at.attached {
                let span = addr & !(size - 1);
                self.walk_cache
                    .remember(level + 1, child, span, span + size);
            }
            (table, level, hi) = (child, level + 1, end);
        }
    }

    /// The leaf visits of the last level's table `table` for `addr..hi` (inside it): one per
    /// page, or one for the whole run with [`WalkFlags::LEAF_RUNS`].
    #[inline(always)]
    fn visit_last_level<E, F>(
        &mut self,
        table: u64,
        addr: u64,
        hi: u64,
        flags: WalkFlags,
        f: &mut F,
    ) -> Result<(), E>
    where
        F: FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>,
    {
        if !flags.contains(WalkFlags::LEAF) {
            return Ok(());
        }
        let mut entry_pa = self.entry_pa(table, LAST_LEVEL, addr);
        if flags.contains(WalkFlags::LEAF_RUNS) {
            let old = self.read(entry_pa);
            let mut v = Visit::at(addr, hi, LAST_LEVEL, VisitKind::Leaf, old, entry_pa);
            return f(self, &mut v);
        }
        let page = self.size(LAST_LEVEL);
        let mut a = addr;
        while a < hi {
            let end = ((a | (page - 1)) + 1).min(hi);
            let old = self.read(entry_pa);
            let mut v = Visit::at(a, end, LAST_LEVEL, VisitKind::Leaf, old, entry_pa);
            f(self, &mut v)?;
            a = end;
            entry_pa += 8;
        }
        Ok(())
    }
}

impl<A: TableAlloc, M: Maintenance, I: InputAddress> PageTable<A, M, I> {
    /// Walks `range` (which must lie inside the input limit), calling `visitor` for the
    /// visits `flags` asks for. A leaf visitor may turn an entry into a table (the walker then
    /// descends into it unless `skip_children` is set); a `TablePre` visitor may turn a table
    /// into a leaf (the walker then does not descend). Root iteration covers every
    /// concatenated root table.
    #[inline(always)]
    pub fn walk<E, F>(
        &mut self,
        range: AddrRange<I>,
        flags: WalkFlags,
        visitor: &mut F,
    ) -> Result<(), E>
    where
        E: From<MapError>,
        F: FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>,
    {
        let range = range.raw();
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

    /// [`PageTable::walk`] without the range check (callers checked it). A walk with leaf
    /// visits only starts with the cached descent ([`Ctx::descend`]): it visits nothing
    /// above the level where the range spans several entries.
    #[inline(always)]
    pub(super) fn walk_in<E, F>(
        &mut self,
        range: Range<u64>,
        flags: WalkFlags,
        visitor: &mut F,
    ) -> Result<(), E>
    where
        F: FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>,
    {
        let top = self.ctx.geo.start_level();
        let (table, level) = if flags.visits_tables() || range.is_empty() {
            (self.root, top)
        } else {
            let (lo, last) = (range.start, range.end - 1);
            let mut stop = top;
            while stop < LAST_LEVEL && lo >> self.ctx.shift(stop) == last >> self.ctx.shift(stop) {
                stop += 1;
            }
            self.ctx.descend(self.root, range.start, range.end, stop)
        };
        let at = Subtree::attached(table, level);
        self.ctx
            .walk_from(at, range.start, range.end, flags, visitor)
    }
}
