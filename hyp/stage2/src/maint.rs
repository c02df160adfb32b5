//! Barriers, TLB and cache maintenance, behind one trait.
//!
//! The tables never execute an instruction themselves: every barrier, TLBI and cache operation
//! is a [`MaintOp`] handed to a [`Maintenance`] implementation. hyp's implementation runs the
//! instructions (in `hyp/el2/src/arch/`); [`NoMaintenance`] is for tables no walker can see
//! yet (hyp's EL2 tables built with the MMU off, a VM that never ran); [`Recorder`] records
//! the sequence, together with every descriptor store, so host tests can prove
//! break-before-make ([`check_bbm`]).

use crate::addr::Pa;
use crate::attrs::DESC_VALID;
use alloc::vec::Vec;
use core::fmt;

/// One maintenance operation.
///
/// TLBI operands are already encoded (see [`crate::geometry::tlbi_ipa_operand`]): the address
/// in 4K units whatever the granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaintOp {
    /// `DSB ISHST`: make descriptor stores visible to walkers before what follows.
    DsbIshSt,
    /// `DSB ISH`.
    DsbIsh,
    /// `ISB`.
    Isb,
    /// `TLBI IPAS2E1IS, <operand>` for `vmid`: stage-2 entries for one IPA (all levels,
    /// including walk-cache entries). The implementer loads `vmid` into `VTTBR_EL2` first if
    /// that VM is not the one loaded on this CPU, and restores it after.
    TlbiIpas2e1is {
        /// The VM's VMID.
        vmid: u16,
        /// IPA >> 12.
        operand: u64,
    },
    /// `TLBI VMALLE1IS` for `vmid`: all stage-1 entries of the VM (combined stage-1+2 TLB
    /// entries are only removed by this; Arm ARM D8.16.5).
    TlbiVmalle1is {
        /// The VM's VMID.
        vmid: u16,
    },
    /// `TLBI VMALLS12E1IS` for `vmid`: all stage-1 and stage-2 entries of the VM.
    TlbiVmalls12e1is {
        /// The VM's VMID.
        vmid: u16,
    },
    /// `TLBI ALLE1IS`: every stage-1 and stage-2 EL1&0 entry of every VMID (a VMID
    /// rollover: freed VMIDs are about to be reused).
    TlbiAlle1is,
    /// `TLBI VAE2IS, <operand>`: one EL2 virtual address (all levels).
    TlbiVae2is {
        /// VA >> 12.
        operand: u64,
    },
    /// `TLBI ALLE2IS`: every EL2 entry.
    TlbiAlle2is,
    /// `TLBI VAAE1IS, <operand>`: one EL1 virtual address, all ASIDs (run at EL1).
    TlbiVaae1is {
        /// VA >> 12.
        operand: u64,
    },
    /// `TLBI VMALLE1IS` in the current EL1 context (run at EL1 by a guest's own tables).
    TlbiVmalle1Current,
    /// Clean (and invalidate) data cache lines of `[pa, pa + len)` to the Point of Coherency
    /// (`DC CIVAC` per line, then `DSB`): guests start with caches off and must see the data.
    CleanDcachePoc {
        /// First byte (hyp identity-maps RAM: [`Pa::identity_va`]).
        pa: Pa,
        /// Length in bytes.
        len: u64,
    },
    /// Invalidate the instruction cache for `[pa, pa + len)` to the Point of Unification
    /// (`IC IALLUIS` or `IC IVAU` per line), before the memory is mapped executable.
    InvalidateIcachePou {
        /// First byte.
        pa: Pa,
        /// Length in bytes.
        len: u64,
    },
}

/// Where maintenance goes. `op` must perform the operation before returning.
pub trait Maintenance {
    /// Performs one maintenance operation.
    fn op(&mut self, op: MaintOp);

    /// Called for every store to a descriptor of a live table: `entry_pa` is the descriptor's
    /// physical address, `input` the first input address it maps, `level` its level. The
    /// default does nothing (and compiles to nothing); [`Recorder`] logs it.
    #[inline(always)]
    fn store(&mut self, entry_pa: u64, input: u64, level: u32, old: u64, new: u64) {
        let _ = (entry_pa, input, level, old, new);
    }
}

impl<T: Maintenance + ?Sized> Maintenance for &mut T {
    #[inline(always)]
    fn op(&mut self, op: MaintOp) {
        (**self).op(op)
    }
    #[inline(always)]
    fn store(&mut self, entry_pa: u64, input: u64, level: u32, old: u64, new: u64) {
        (**self).store(entry_pa, input, level, old, new)
    }
}

/// Maintenance for tables no hardware walker can see yet: does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMaintenance;

impl Maintenance for NoMaintenance {
    #[inline(always)]
    fn op(&mut self, _op: MaintOp) {}
}

/// Counts operations by kind without recording them (cheap enough for benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// TLBI instructions of any kind.
    pub tlbi: u64,
    /// Whole-VMID (or whole-regime) TLBIs.
    pub full_flushes: u64,
    /// DSB instructions.
    pub dsb: u64,
    /// Cache maintenance operations (ranges).
    pub cmo: u64,
}

impl Maintenance for Counter {
    fn op(&mut self, op: MaintOp) {
        match op {
            MaintOp::DsbIsh | MaintOp::DsbIshSt => self.dsb += 1,
            MaintOp::Isb => {}
            MaintOp::TlbiVmalls12e1is { .. } | MaintOp::TlbiAlle2is | MaintOp::TlbiAlle1is => {
                self.tlbi += 1;
                self.full_flushes += 1;
            }
            MaintOp::TlbiIpas2e1is { .. }
            | MaintOp::TlbiVmalle1is { .. }
            | MaintOp::TlbiVae2is { .. }
            | MaintOp::TlbiVaae1is { .. }
            | MaintOp::TlbiVmalle1Current => self.tlbi += 1,
            MaintOp::CleanDcachePoc { .. } | MaintOp::InvalidateIcachePou { .. } => self.cmo += 1,
        }
    }
}

/// One recorded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A maintenance operation.
    Op(MaintOp),
    /// A descriptor store.
    Store {
        /// Physical address of the descriptor.
        entry_pa: u64,
        /// First input address the descriptor maps.
        input: u64,
        /// Level of the descriptor.
        level: u32,
        /// Value before.
        old: u64,
        /// Value after.
        new: u64,
    },
}

/// Records every operation and store, for tests.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    /// The events in order.
    pub events: Vec<Event>,
}

impl Recorder {
    /// The recorded maintenance operations (stores left out).
    pub fn ops(&self) -> Vec<MaintOp> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Op(op) => Some(*op),
                Event::Store { .. } => None,
            })
            .collect()
    }
}

impl Maintenance for Recorder {
    fn op(&mut self, op: MaintOp) {
        self.events.push(Event::Op(op));
    }
    fn store(&mut self, entry_pa: u64, input: u64, level: u32, old: u64, new: u64) {
        self.events.push(Event::Store {
            entry_pa,
            input,
            level,
            old,
            new,
        });
    }
}

/// A break-before-make violation found by [`check_bbm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BbmViolation {
    /// Index of the offending store in the event list.
    pub event: usize,
    /// The descriptor's physical address.
    pub entry_pa: u64,
    /// What was wrong.
    pub reason: &'static str,
}

impl fmt::Display for BbmViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "break-before-make violated at event {} (descriptor {:#018x}): {}",
            self.event, self.entry_pa, self.reason
        )
    }
}

/// Checks break-before-make over a stream of events fed in pieces (state carries over, so an
/// invalidation in one operation and a new mapping in a later one are matched).
///
/// A valid descriptor must never be replaced by a valid one with another output address, size
/// or type without an invalid store, `DSB`, a TLBI covering it and a `DSB` in between (Arm ARM
/// D8.16.1 "Using break-before-make"). Permission-only changes are allowed. `oa_mask` picks the
/// output address bits.
#[derive(Clone, Debug)]
pub struct BbmChecker {
    oa_mask: u64,
    seen: usize,
    // entry_pa -> (last valid value, first input address, stage 0..=3 of DSB/TLBI/DSB).
    broken: Vec<(u64, u64, u64, u8)>,
}

impl BbmChecker {
    /// A checker for descriptors whose output address bits are `oa_mask`.
    pub fn new(oa_mask: u64) -> BbmChecker {
        BbmChecker {
            oa_mask,
            seen: 0,
            broken: Vec::new(),
        }
    }

    fn same_shape(&self, a: u64, b: u64) -> bool {
        (a & self.oa_mask) == (b & self.oa_mask) && (a & 3) == (b & 3)
    }

    fn covers(op: &MaintOp, input: u64) -> bool {
        match *op {
            MaintOp::TlbiIpas2e1is { operand, .. } => {
                operand == crate::tlbi_ipa_operand(crate::Ipa::new(input))
            }
            MaintOp::TlbiVae2is { operand } | MaintOp::TlbiVaae1is { operand } => {
                operand == crate::tlbi_va_operand(crate::Va::new(input))
            }
            MaintOp::TlbiVmalls12e1is { .. }
            | MaintOp::TlbiAlle1is
            | MaintOp::TlbiAlle2is
            | MaintOp::TlbiVmalle1Current => true,
            _ => false,
        }
    }

    /// Feeds more events; returns the first violation.
    pub fn feed(&mut self, events: &[Event]) -> Result<(), BbmViolation> {
        for ev in events {
            let i = self.seen;
            self.seen += 1;
            match ev {
                Event::Store {
                    entry_pa,
                    input,
                    old,
                    new,
                    ..
                } => {
                    let pos = self.broken.iter().position(|b| b.0 == *entry_pa);
                    let was_valid = old & DESC_VALID != 0;
                    let is_valid = new & DESC_VALID != 0;
                    if was_valid && is_valid && !self.same_shape(*old, *new) {
                        return Err(BbmViolation {
                            event: i,
                            entry_pa: *entry_pa,
                            reason: "valid descriptor replaced by one with another address or size",
                        });
                    }
                    if was_valid && !is_valid {
                        let st = (*entry_pa, *old, *input, 0);
                        match pos {
                            Some(p) => self.broken[p] = st,
                            None => self.broken.push(st),
                        }
                    } else if !was_valid && is_valid {
                        if let Some(p) = pos {
                            let (_, last, _, stage) = self.broken[p];
                            if stage < 3 && !self.same_shape(last, *new) {
                                return Err(BbmViolation {
                                    event: i,
                                    entry_pa: *entry_pa,
                                    reason: "new descriptor written before DSB, TLBI and DSB \
                                             completed for the old one",
                                });
                            }
                            self.broken.swap_remove(p);
                        }
                    }
                }
                Event::Op(op) => {
                    for b in self.broken.iter_mut() {
                        b.3 = match (b.3, op) {
                            (0, MaintOp::DsbIsh | MaintOp::DsbIshSt) => 1,
                            (1, op) if Self::covers(op, b.2) => 2,
                            (2, MaintOp::DsbIsh) => 3,
                            (s, _) => s,
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks one complete event stream with a fresh [`BbmChecker`].
pub fn check_bbm(events: &[Event], oa_mask: u64) -> Result<(), BbmViolation> {
    BbmChecker::new(oa_mask).feed(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(pa: u64, old: u64, new: u64) -> Event {
        Event::Store {
            entry_pa: pa,
            input: 0x4000_0000,
            level: 3,
            old,
            new,
        }
    }

    #[test]
    fn checker_catches_and_accepts() {
        let mask = 0x0000_ffff_ffff_f000;
        let v1 = 0x1000_0003;
        let v2 = 0x2000_0003;
        // Direct valid -> valid with another address.
        assert!(check_bbm(&[st(8, v1, v2)], mask).is_err());
        // Permission change only: fine.
        assert!(check_bbm(&[st(8, v1, v1 | (1 << 54))], mask).is_ok());
        // Invalid then valid without TLBI.
        let bad = [st(8, v1, 0), Event::Op(MaintOp::DsbIsh), st(8, 0, v2)];
        assert!(check_bbm(&bad, mask).is_err());
        // TLBI for the wrong address.
        let bad = [
            st(8, v1, 0),
            Event::Op(MaintOp::DsbIsh),
            Event::Op(MaintOp::TlbiIpas2e1is {
                vmid: 1,
                operand: 0x1234,
            }),
            Event::Op(MaintOp::DsbIsh),
            st(8, 0, v2),
        ];
        assert!(check_bbm(&bad, mask).is_err());
        let good = [
            st(8, v1, 0),
            Event::Op(MaintOp::DsbIsh),
            Event::Op(MaintOp::TlbiIpas2e1is {
                vmid: 1,
                operand: 0x4_0000,
            }),
            Event::Op(MaintOp::DsbIsh),
            st(8, 0, v2),
        ];
        assert!(check_bbm(&good, mask).is_ok());
    }
}
