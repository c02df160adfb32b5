//! Protect: new attributes for every mapped page of a range (e.g. write-protect for dirty
//! tracking), splitting the blocks the range cuts.

use super::reserve::{Op, RESERVE_KEEP};
use super::walk::WalkFlags;
use super::{Ctx, MapError, PageTable, Visit, LAST_LEVEL};
use crate::addr::{AddrRange, InputAddress, Pa};
use crate::attrs::{self, attrs_change_needs_bbm, Attrs, DESC_ATTR_MASK, DESC_VALID};
use crate::frames::TableAlloc;
use crate::geometry::Regime;
use crate::maint::{MaintOp, Maintenance};

/// What protect writes: the attribute bits, and whether a leaf that becomes executable needs
/// its I-cache invalidated first (stage 2 without `CTR_EL0.DIC`).
#[derive(Clone, Copy)]
struct Protect {
    bits: u64,
    icache: bool,
}

impl<A: TableAlloc, M: Maintenance, I: InputAddress> PageTable<A, M, I> {
    /// Changes the attributes of every mapped page in `range` to `attrs` (e.g. write-protect
    /// for dirty tracking), splitting blocks the range cuts. Unmapped parts stay unmapped.
    pub fn protect(&mut self, range: AddrRange<I>, attrs: Attrs) -> Result<(), MapError> {
        let range = range.raw();
        self.check_range(&range)?;
        let bits = self.ctx.encode(attrs)?;
        if range.is_empty() {
            return Ok(());
        }
        self.prepare(&range, Op::Split)?;
        let geo = self.ctx.geo;
        let p = Protect {
            bits,
            icache: geo.regime() == Regime::Stage2 && attrs.exec && !geo.dic(),
        };
        // Pages come as one visit per table: their loop is the whole cost of the operation.
        let flags = WalkFlags::LEAF | WalkFlags::LEAF_RUNS;
        let r: Result<(), MapError> =
            self.walk_in(range, flags, &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                if v.level == LAST_LEVEL {
                    c.protect_pages(v, p);
                } else if v.old & DESC_VALID == 0 {
                } else if c.covers(v) {
                    let new = (v.old & !DESC_ATTR_MASK) | p.bits;
                    if new != v.old {
                        c.protect_leaf(v.entry_pa, c.start_of(v), v.level, v.old, new, p);
                    }
                } else {
                    c.split_block(v);
                }
                Ok(())
            });
        self.ctx.flush();
        self.ctx.trim_reserve(RESERVE_KEEP);
        r
    }
}

impl<A: TableAlloc, M: Maintenance> Ctx<A, M> {
    /// The pages of one last-level table in `v.addr..v.end` (a [`WalkFlags::LEAF_RUNS`]
    /// visit): each valid one whose attributes change gets the new ones.
    #[inline(always)]
    fn protect_pages(&mut self, v: &Visit, p: Protect) {
        let page = self.size(LAST_LEVEL);
        let mut entry_pa = v.entry_pa;
        let mut input = v.addr;
        while input < v.end {
            let old = self.read(entry_pa);
            let new = (old & !DESC_ATTR_MASK) | p.bits;
            if old & DESC_VALID != 0 && new != old {
                self.protect_leaf(entry_pa, input, LAST_LEVEL, old, new, p);
            }
            entry_pa += 8;
            input += page;
        }
    }

    /// One valid leaf whose attributes change from `old` to `new`: in place (invalidated at
    /// the end of the operation) if only permissions change, else break-before-make.
    #[inline(always)]
    fn protect_leaf(
        &mut self,
        entry_pa: u64,
        input: u64,
        level: u32,
        old: u64,
        new: u64,
        p: Protect,
    ) {
        // Stage 2 only: the guest may now execute what it could not before.
        if p.icache && old & attrs::S2_XN != 0 {
            let (pa, len) = (Pa::new(self.leaf_oa(old, level)), self.size(level));
            self.op(MaintOp::InvalidateIcachePou { pa, len });
        }
        if attrs_change_needs_bbm(old, new) {
            self.protect_bbm(entry_pa, input, level, old, new);
        } else {
            self.store_leaf(entry_pa, input, level, old, new);
            self.defer_invalidate(input);
        }
    }

    /// Break, invalidate, make.
    #[inline(never)]
    fn protect_bbm(&mut self, entry_pa: u64, input: u64, level: u32, old: u64, new: u64) {
        self.store_leaf(entry_pa, input, level, old, 0);
        self.invalidate_now(input);
        self.store_leaf(entry_pa, input, level, 0, new);
    }
}
