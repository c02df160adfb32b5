//! TLB maintenance: at once (the middle of break-before-make) or batched to the end of an
//! operation, and the tables that may only be freed after it.

use super::walk::{Subtree, WalkFlags};
use super::Ctx;
use crate::addr::{Ipa, Pa, Va};
use crate::frames::TableAlloc;
use crate::geometry::{tlbi_ipa_operand, tlbi_va_operand, Regime};
use crate::maint::{MaintOp, Maintenance};
use alloc::vec::Vec;
use core::convert::Infallible;

/// Above this many pending per-entry invalidations, one whole-VMID (or whole-regime) TLBI is
/// issued instead (Hafnium and KVM use the same threshold).
pub const MAX_TLBI_BY_ADDRESS: usize = 512;

impl<A: TableAlloc, M: Maintenance> Ctx<A, M> {
    /// The TLBI that invalidates the entry translating `input` (last level and above).
    fn tlbi_by_address(&self, input: u64) -> MaintOp {
        match self.geo.regime() {
            Regime::Stage2 => MaintOp::TlbiIpas2e1is {
                vmid: self.vmid,
                operand: tlbi_ipa_operand(Ipa::new(input)),
            },
            Regime::El2 => MaintOp::TlbiVae2is {
                operand: tlbi_va_operand(Va::new(input)),
            },
            Regime::El1 => MaintOp::TlbiVaae1is {
                operand: tlbi_va_operand(Va::new(input)),
            },
        }
    }

    /// Invalidates the TLB entries for `input` now (the middle of break-before-make).
    pub(super) fn invalidate_now(&mut self, input: u64) {
        self.op(MaintOp::DsbIshSt);
        self.op(self.tlbi_by_address(input));
        if self.geo.regime() == Regime::Stage2 {
            // Stage 2 TLBIs by IPA leave the combined stage-1+2 entries: drop those too.
            self.op(MaintOp::DsbIsh);
            self.op(MaintOp::TlbiVmalle1is { vmid: self.vmid });
        }
        self.op(MaintOp::DsbIsh);
        self.op(MaintOp::Isb);
    }

    /// Invalidates every entry of this table's VMID (or regime) now.
    pub(super) fn invalidate_all_now(&mut self) {
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
    pub(super) fn defer_invalidate(&mut self, input: u64) {
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
    pub(super) fn flush(&mut self) {
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
                for i in 0..self.pending.len() {
                    self.op(self.tlbi_by_address(self.pending[i]));
                }
                if self.geo.regime() == Regime::Stage2 {
                    self.op(MaintOp::DsbIsh);
                    self.op(MaintOp::TlbiVmalle1is { vmid: self.vmid });
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

    /// Returns a table no walker can reach any more (and no TLB holds) to the allocator.
    pub(super) fn free_table(&mut self, pa: u64) {
        self.walk_cache.clear();
        self.alloc.free(Pa::new(pa), self.geo.granule(), 1);
        self.tables -= 1;
    }

    /// Appends to `out` every table of the subtree whose level-`level` table `t` translated
    /// the input span starting at `span_start`, then `t` itself: a walk of the subtree (now
    /// unreachable: detached or being destroyed) with `TablePost` visits only.
    pub(super) fn collect_subtree(
        &mut self,
        t: u64,
        level: u32,
        span_start: u64,
        out: &mut Vec<u64>,
    ) {
        let span_end = span_start + self.size(level - 1);
        let _: Result<(), Infallible> = self.walk_from(
            Subtree::unreachable(t, level),
            span_start,
            span_end,
            WalkFlags::TABLE_POST,
            &mut |c: &mut Ctx<A, M>, v| {
                out.push(c.table_pa(v.entry));
                Ok(())
            },
        );
        out.push(t);
    }
}
