//! Map: the fast path over invalid entries, the general prepare/commit path, the fill of a
//! fresh subtree before it is published, and block splitting (shared with unmap and
//! protect).

use super::reserve::{FreshTable, Op, RESERVE_KEEP};
use super::walk::{Subtree, VisitKind, WalkFlags};
use super::{Ctx, MapError, MapOpts, PageTable, Visit, LAST_LEVEL};
use crate::addr::{AddrRange, InputAddress, Pa};
use crate::attrs::{
    attrs_change_needs_bbm, Attrs, MemType, DESC_ATTR_MASK, DESC_VALID, OUTPUT_LIMIT,
};
use crate::frames::TableAlloc;
use crate::geometry::Regime;
use crate::maint::{MaintOp, Maintenance};
use alloc::vec::Vec;
use core::convert::Infallible;
use core::ops::Range;

/// What a map fills entries with: input `a` maps to `out + (a - lo)`.
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

impl<A: TableAlloc, M: Maintenance, I: InputAddress> PageTable<A, M, I> {
    /// Maps `range` to output addresses from `out` with `attrs`, using the largest blocks
    /// alignment allows (unless `opts.pages_only`). Existing mappings in the range are
    /// replaced (with break-before-make). Either the whole range is mapped or, on error, the
    /// tables are unchanged.
    ///
    /// For stage 2, cacheable memory is cleaned to PoC first unless the CPU has FEAT_FWB, and
    /// executable memory has its I-cache invalidated unless `CTR_EL0.DIC` (both skipped with
    /// `opts.skip_cmo`).
    ///
    /// Always inlined: its fast path is a few loads and one store, and a call would cost as
    /// much (the per-page map workload of `cargo bench -p stage2` took ~15% longer).
    #[inline(always)]
    pub fn map(
        &mut self,
        range: AddrRange<I>,
        out: Pa,
        attrs: Attrs,
        opts: MapOpts,
    ) -> Result<(), MapError> {
        let (range, out) = (range.raw(), out.get());
        if self.map_fast(&range, out, attrs, opts) {
            return Ok(());
        }
        self.map_slow(range, out, attrs, opts)
    }

    /// The fast path of [`PageTable::map`] (the lazy-fault and block patterns): a run of
    /// same-size leaves in one table, at the level the general path would choose, with the
    /// attributes of the previous map, over invalid entries whose tables all exist. It needs
    /// no table, so no prepare pass, no iteration and no flush: the walker's cached descent
    /// to the run, every check, the cache maintenance, then one store per entry (invalid to
    /// valid: no break-before-make, no TLBI, Arm ARM D8.16.1), exactly the stores the general
    /// path makes. Returns `false`, having changed nothing, when the general path must run
    /// (including every error case).
    #[inline(always)]
    fn map_fast(&mut self, range: &Range<u64>, out: u64, attrs: Attrs, opts: MapOpts) -> bool {
        let c = &mut self.ctx;
        let (start, end) = (range.start, range.end);
        let bits = match c.last_attrs {
            Some((a, b)) if a == attrs => b,
            _ => return false,
        };
        // One entry (the lazy-fault pattern) inline, a run out of line.
        let level = match c.one_entry_level(start, end) {
            Some(level) if level == LAST_LEVEL || !opts.pages_only => level,
            _ => return self.map_run_fast(range, out, attrs, opts, bits),
        };
        let len = end - start;
        if out & (len - 1) != 0 || out >= OUTPUT_LIMIT || len > OUTPUT_LIMIT - out {
            return false;
        }
        let (table, reached) = c.descend(self.root, start, end, level);
        if reached != level {
            return false;
        }
        let entry_pa = c.entry_pa(table, level, start);
        let old = c.read(entry_pa);
        if old & DESC_VALID != 0 {
            return false;
        }
        c.map_cmo(out, len, attrs, opts);
        c.store_leaf(
            entry_pa,
            start,
            level,
            old,
            Ctx::<A, M>::leaf_desc(out, level, bits),
        );
        true
    }

    /// [`PageTable::map_fast`] for a run of several entries (e.g. a few 1 GiB blocks).
    #[inline(never)]
    fn map_run_fast(
        &mut self,
        range: &Range<u64>,
        out: u64,
        attrs: Attrs,
        opts: MapOpts,
        bits: u64,
    ) -> bool {
        let c = &mut self.ctx;
        let (start, end) = (range.start, range.end);
        let Some(level) = c.run_level(start, end, out, opts.pages_only) else {
            return false;
        };
        let (table, reached) = c.descend(self.root, start, end, level);
        if reached != level {
            return false;
        }
        let first = c.entry_pa(table, level, start);
        let shift = c.shift(level);
        let n = (end - start) >> shift;
        if (0..n).any(|k| c.read(first + 8 * k) & DESC_VALID != 0) {
            return false;
        }
        c.map_cmo(out, end - start, attrs, opts);
        for k in 0..n {
            let (entry_pa, offset) = (first + 8 * k, k << shift);
            let old = c.read(entry_pa);
            let new = Ctx::<A, M>::leaf_desc(out + offset, level, bits);
            c.store_leaf(entry_pa, start + offset, level, old, new);
        }
        true
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
        let bits = self.ctx.encode(attrs)?;
        let len = range.end - range.start;
        let out_end = out.saturating_add(len);
        if out_end > OUTPUT_LIMIT {
            return Err(MapError::OutputTooLarge { end: out_end });
        }
        if out & (self.ctx.size(LAST_LEVEL) - 1) != 0 {
            let granule = self.ctx.geo.granule();
            return Err(MapError::Misaligned { addr: out, granule });
        }
        if len == 0 {
            return Ok(());
        }
        let (lo, pages_only) = (range.start, opts.pages_only);
        self.prepare(
            &range,
            Op::Map {
                out,
                lo,
                pages_only,
            },
        )?;
        self.ctx.map_cmo(out, len, attrs, opts);
        let fill = Fill {
            out,
            lo,
            bits,
            pages_only,
        };
        // A table can only become a block if the range covers a whole block entry.
        let flags = if !pages_only && len >= self.ctx.size(LAST_LEVEL - 1) {
            WalkFlags::LEAF | WalkFlags::TABLE_PRE
        } else {
            WalkFlags::LEAF
        };
        let r: Result<(), MapError> =
            self.walk_in(range, flags, &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                c.map_visit(v, &fill);
                Ok(())
            });
        self.ctx.flush();
        self.ctx.trim_reserve(RESERVE_KEEP);
        r
    }
}

impl<A: TableAlloc, M: Maintenance> Ctx<A, M> {
    /// The level at which the general map stores `start..end` (to `out`) as a run of
    /// same-size leaves inside one table, the largest leaf size the addresses allow; `None`
    /// if it does not, or if anything is out of range or misaligned.
    #[inline(always)]
    fn run_level(&self, start: u64, end: u64, out: u64, pages_only: bool) -> Option<u32> {
        if start >= end
            || end > self.geo.input_limit()
            || out >= OUTPUT_LIMIT
            || end - start > OUTPUT_LIMIT - out
        {
            return None;
        }
        let m = (start | end | out).trailing_zeros();
        let mut level = if pages_only {
            LAST_LEVEL
        } else {
            self.min_block
        };
        while level < LAST_LEVEL && self.shift(level) > m {
            level += 1;
        }
        if self.shift(level) > m {
            return None;
        }
        if level > self.geo.start_level() {
            let ps = self.shift(level - 1);
            if start >> ps != (end - 1) >> ps {
                return None;
            }
        }
        Some(level)
    }

    /// Stage 2's cache maintenance of memory about to be mapped: clean to PoC unless FWB,
    /// and invalidate the I-cache before an executable mapping unless DIC (guests start with
    /// caches off; Arm ARM D7.5.9, D7.5.2).
    #[inline(always)]
    fn map_cmo(&mut self, out: u64, len: u64, attrs: Attrs, opts: MapOpts) {
        if self.geo.regime() == Regime::Stage2 && !opts.skip_cmo && attrs.mem == MemType::Normal {
            if !self.geo.fwb() {
                self.op(MaintOp::CleanDcachePoc {
                    pa: Pa::new(out),
                    len,
                });
            }
            if attrs.exec && !self.geo.dic() {
                self.op(MaintOp::InvalidateIcachePou {
                    pa: Pa::new(out),
                    len,
                });
            }
        }
    }

    /// The map visitor: the common case (a page or block over an invalid entry) inline, the
    /// rest out of line.
    #[inline(always)]
    fn map_visit(&mut self, v: &mut Visit, fill: &Fill) {
        let o = fill.out(v.addr);
        let leaf = self.covers(v) && self.blockable(v.level, o, fill.pages_only);
        match v.kind {
            VisitKind::Leaf if leaf => {
                let new = Self::leaf_desc(o, v.level, fill.bits);
                if v.old & DESC_VALID == 0 {
                    self.store(v, new);
                } else if v.old != new {
                    self.map_replace_leaf(v, new);
                }
            }
            VisitKind::Leaf => self.map_need_table(v, fill),
            VisitKind::TablePre if leaf => self.map_table_to_block(v, o, fill.bits),
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

    /// The range needs a table here: split a valid block, or fill a fresh subtree offline
    /// and publish it with one store.
    #[inline(never)]
    fn map_need_table(&mut self, v: &mut Visit, fill: &Fill) {
        if v.old & DESC_VALID != 0 {
            self.split_block(v);
        } else {
            let t = self.take_table();
            self.fill_fresh(&t, v.level + 1, v.addr, v.end, fill);
            // The new subtree must be visible to every walker before the table descriptor:
            // `DSB ISHST` for the hardware (this CPU's walker included), and the `Release`
            // store of `store_table` for the compiler and any other observer.
            self.op(MaintOp::DsbIshSt);
            self.store_table(v, t);
            v.skip_children = true;
        }
    }

    /// Fills the fresh table `t` at `level` for `[lo, hi)` as `fill` says, taking the tables
    /// below it from the reserve: a walk of the fresh subtree whose leaf visitor writes each
    /// (zero) entry in place with plain stores, since no walker sees `t` before its
    /// descriptor is published. An entry that needs a table gets a fresh one's descriptor,
    /// and the walker descends into it; the last level comes as runs, filled in a tight loop.
    fn fill_fresh(&mut self, t: &FreshTable, level: u32, lo: u64, hi: u64, fill: &Fill) {
        let at = Subtree::unreachable(t.pa(), level);
        let flags = WalkFlags::LEAF | WalkFlags::LEAF_RUNS;
        let _: Result<(), Infallible> = self.walk_from(
            at,
            lo,
            hi,
            flags,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                let g = c.geo.granule();
                let (table, i) = (c.table_of(v.entry_pa), (v.entry_pa & (g.size() - 1)) / 8);
                if v.level == LAST_LEVEL {
                    let shift = c.shift(LAST_LEVEL);
                    let n = (v.end - v.addr) >> shift;
                    let first = Self::leaf_desc(fill.out(v.addr), LAST_LEVEL, fill.bits);
                    let run =
                        &mut c.alloc.fresh_table(Pa::new(table), g)[i as usize..(i + n) as usize];
                    for (k, e) in run.iter_mut().enumerate() {
                        *e.get_mut() = first + ((k as u64) << shift);
                    }
                    return Ok(());
                }
                let o = fill.out(v.addr);
                v.entry = if c.covers(v) && c.blockable(v.level, o, fill.pages_only) {
                    Self::leaf_desc(o, v.level, fill.bits)
                } else {
                    // Published with its fresh parent.
                    c.take_table().descriptor()
                };
                *c.alloc.fresh_table(Pa::new(table), g)[i as usize].get_mut() = v.entry;
                Ok(())
            },
        );
    }

    /// Replaces a table by a block: break, flush the VMID, make; then the old subtree is
    /// unreachable and its tables are freed.
    #[inline(never)]
    fn map_table_to_block(&mut self, v: &mut Visit, out: u64, bits: u64) {
        let old_t = self.table_pa(v.old);
        let start = self.start_of(v);
        self.store(v, 0);
        self.invalidate_all_now();
        self.store(v, Self::leaf_desc(out, v.level, bits));
        let mut sub = Vec::new();
        self.collect_subtree(old_t, v.level + 1, start, &mut sub);
        for t in sub {
            self.free_table(t);
        }
    }

    /// Replaces the valid block in `v` by a table of equivalent entries (break-before-make).
    pub(super) fn split_block(&mut self, v: &mut Visit) {
        let child = v.level + 1;
        let cs = self.size(child);
        let bits = v.entry & DESC_ATTR_MASK;
        let oa = self.leaf_oa(v.entry, v.level);
        let t = self.take_table();
        for (k, e) in self.fresh(&t).iter_mut().enumerate() {
            *e.get_mut() = Self::leaf_desc(oa + k as u64 * cs, child, bits);
        }
        let start = self.start_of(v);
        self.store(v, 0);
        // The DSB ISH that ends the invalidation also orders the fill before the table
        // descriptor for the hardware; the store is `Release` for the compiler.
        self.invalidate_now(start);
        self.store_table(v, t);
    }
}
