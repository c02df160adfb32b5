//! VMID allocation, sized from `ID_AA64MMFR1_EL1.VMIDBits` (8 or 16 bits).
//!
//! VMID 0 is never issued (hyp keeps it for "no VM loaded"); no two live VMs share a VMID.
//! Freed VMIDs may still have TLB entries, so they are reused only after a flush: the
//! allocator hands out never-used (or already flushed) VMIDs first and, when none is left,
//! performs one rollover flush itself (`DSB ISHST; TLBI ALLE1IS; DSB ISH; ISB` through the
//! [`Maintenance`] it is given, KVM's `__kvm_flush_vm_context`) before returning, after which
//! every freed VMID is clean again. A caller cannot forget the flush; flushes equal
//! rollovers ([`VmidGrant::flushed`]).

use crate::maint::{MaintOp, Maintenance};
use crate::CpuFeatures;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// A VMID, never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmid(u16);

impl Vmid {
    /// The value for `VTTBR_EL2.VMID`.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A VMID handed out by [`VmidAllocator::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmidGrant {
    /// The VMID.
    pub vmid: Vmid,
    /// This allocation was a rollover: freed VMIDs are being recycled, and the allocator
    /// already invalidated every VMID's stage-1 and stage-2 TLB entries (`TLBI ALLE1IS`,
    /// completed by `DSB ISH`) before returning.
    pub flushed: bool,
}

/// Why a VMID cannot be allocated or freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmidError {
    /// Every VMID is in use by a live VM.
    Exhausted {
        /// Live VMs.
        live: usize,
        /// VMID width in bits.
        bits: u32,
    },
    /// A VMID that is not live was freed.
    NotLive(u16),
}

impl fmt::Display for VmidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmidError::Exhausted { live, bits } => write!(
                f,
                "all {live} VMIDs of this CPU's {bits}-bit VMID space are in use; destroy a VM first"
            ),
            VmidError::NotLive(v) => write!(f, "VMID {v} freed but it is not in use"),
        }
    }
}

/// Allocates VMIDs 1..2^bits.
#[derive(Clone, Debug)]
pub struct VmidAllocator {
    bits: u32,
    live: Vec<u64>,
    dirty: Vec<u64>,
    cursor: usize,
    live_count: usize,
    rollovers: u64,
}

impl VmidAllocator {
    /// An allocator for `bits`-bit VMIDs (8 or 16; anything else is treated as 8).
    pub fn new(bits: u32) -> VmidAllocator {
        let bits = if bits == 16 { 16 } else { 8 };
        let words = (1usize << bits) / 64;
        VmidAllocator {
            bits,
            live: vec![0; words],
            dirty: vec![0; words],
            cursor: 1,
            live_count: 0,
            rollovers: 0,
        }
    }

    /// An allocator sized from the CPU's `VMIDBits`.
    pub fn for_cpu(cpu: &CpuFeatures) -> VmidAllocator {
        VmidAllocator::new(cpu.vmid_bits())
    }

    /// VMID width in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// How many VMIDs can be live at once (VMID 0 excluded).
    pub fn capacity(&self) -> usize {
        (1 << self.bits) - 1
    }

    /// Live VMIDs.
    pub fn live(&self) -> usize {
        self.live_count
    }

    /// Rollover flushes requested so far.
    pub fn rollovers(&self) -> u64 {
        self.rollovers
    }

    fn test(map: &[u64], v: usize) -> bool {
        map[v / 64] & (1 << (v % 64)) != 0
    }

    fn set(map: &mut [u64], v: usize, on: bool) {
        if on {
            map[v / 64] |= 1 << (v % 64);
        } else {
            map[v / 64] &= !(1 << (v % 64));
        }
    }

    fn find_clean(&self) -> Option<usize> {
        let n = 1usize << self.bits;
        (0..n - 1)
            .map(|k| 1 + (self.cursor - 1 + k) % (n - 1))
            .find(|&v| !Self::test(&self.live, v) && !Self::test(&self.dirty, v))
    }

    /// Allocates a VMID. On a rollover (no never-used or already flushed VMID is left) it
    /// first invalidates every VMID's TLB entries through `maint`, inner shareable, and
    /// waits for completion, so the VMID returned has no stale entry on any CPU.
    pub fn alloc(&mut self, maint: &mut impl Maintenance) -> Result<VmidGrant, VmidError> {
        if self.live_count == self.capacity() {
            return Err(VmidError::Exhausted {
                live: self.live_count,
                bits: self.bits,
            });
        }
        let mut flushed = false;
        let v = match self.find_clean() {
            Some(v) => v,
            None => {
                // Rollover: one full flush makes every freed VMID clean. (Live VMIDs lose
                // their entries too; they refill them.)
                maint.op(MaintOp::DsbIshSt);
                maint.op(MaintOp::TlbiAlle1is);
                maint.op(MaintOp::DsbIsh);
                maint.op(MaintOp::Isb);
                self.dirty.iter_mut().for_each(|w| *w = 0);
                self.rollovers += 1;
                flushed = true;
                self.find_clean().ok_or(VmidError::Exhausted {
                    live: self.live_count,
                    bits: self.bits,
                })?
            }
        };
        Self::set(&mut self.live, v, true);
        self.live_count += 1;
        self.cursor = v % self.capacity() + 1;
        Ok(VmidGrant {
            vmid: Vmid(v as u16),
            flushed,
        })
    }

    /// Frees a VMID. Its TLB entries may remain until the next rollover flush.
    pub fn free(&mut self, vmid: Vmid) -> Result<(), VmidError> {
        let v = vmid.0 as usize;
        if v == 0 || v >= (1 << self.bits) || !Self::test(&self.live, v) {
            return Err(VmidError::NotLive(vmid.0));
        }
        Self::set(&mut self.live, v, false);
        Self::set(&mut self.dirty, v, true);
        self.live_count -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maint::Recorder;
    use std::collections::{BTreeMap, BTreeSet};

    /// A mock TLB shared by every CPU. Each VM that runs leaves entries tagged with its VMID
    /// and its own number (a VM's "generation" of that VMID); they go away only through the
    /// TLBIs the allocator issues, and only when a later `DSB ISH` completes them.
    #[derive(Default)]
    struct Tlb {
        /// VMID -> the VMs whose entries are tagged with it.
        entries: BTreeMap<u16, BTreeSet<u64>>,
        /// Issued, not yet completed: everything (`ALLE1IS`), or these VMIDs.
        pending_all: bool,
        pending: Vec<u16>,
        /// Completed whole-TLB flushes.
        flushes: u64,
    }

    impl Maintenance for Tlb {
        fn op(&mut self, op: MaintOp) {
            match op {
                MaintOp::TlbiAlle1is => self.pending_all = true,
                MaintOp::TlbiVmalls12e1is { vmid } => self.pending.push(vmid),
                MaintOp::DsbIsh => {
                    if core::mem::take(&mut self.pending_all) {
                        self.entries.clear();
                        self.flushes += 1;
                    }
                    for v in self.pending.drain(..) {
                        self.entries.remove(&v);
                    }
                }
                _ => {}
            }
        }
    }

    fn cycle(bits: u32, cycles: usize, live_target: usize) {
        let mut a = VmidAllocator::new(bits);
        let mut tlb = Tlb::default();
        let mut live: BTreeSet<u16> = BTreeSet::new();
        let mut order: Vec<Vmid> = Vec::new();
        let mut vms = 0u64;
        let mut flushes = 0;
        let mut seed = 0x1234_5678u64;
        for _ in 0..cycles {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if live.len() < live_target || (seed & 1 == 0 && live.len() < a.capacity()) {
                let before = tlb.flushes;
                let g = a.alloc(&mut tlb).unwrap();
                let v = g.vmid.get();
                assert_ne!(v, 0);
                assert!((v as usize) < (1 << bits));
                // The new VM must not meet a translation an earlier VM left under its VMID.
                if let Some(old) = tlb.entries.get(&v) {
                    panic!("VMID {v} granted to VM {vms} with stale TLB entries of VMs {old:?}");
                }
                assert_eq!(g.flushed, tlb.flushes == before + 1, "VMID {v}");
                flushes += u64::from(g.flushed);
                assert!(live.insert(v), "VMID {v} issued twice");
                order.push(g.vmid);
                // The VM runs and fills the TLB; freeing its VMID later leaves them there.
                tlb.entries.entry(v).or_default().insert(vms);
                vms += 1;
            } else {
                let i = (seed >> 8) as usize % order.len();
                let v = order.swap_remove(i);
                a.free(v).unwrap();
                live.remove(&v.get());
            }
            assert_eq!(a.live(), live.len());
        }
        assert_eq!(flushes, a.rollovers());
        assert_eq!(tlb.flushes, a.rollovers(), "flushes = rollovers");
        assert!(a.rollovers() > 0, "the cycle must roll over");
    }

    #[test]
    fn vmid8_never_zero_never_duplicate_never_stale() {
        cycle(8, 4 * 256 * 4, 200);
        let mut a = VmidAllocator::new(8);
        for _ in 0..255 {
            a.alloc(&mut Tlb::default()).unwrap();
        }
        assert_eq!(
            a.alloc(&mut Tlb::default()),
            Err(VmidError::Exhausted { live: 255, bits: 8 })
        );
        assert_eq!(a.free(Vmid(0)), Err(VmidError::NotLive(0)));
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes minutes under miri")]
    fn vmid16_never_zero_never_duplicate_never_stale() {
        cycle(16, 262_144, 100);
        let cpu = CpuFeatures::profile("max").unwrap();
        assert_eq!(VmidAllocator::for_cpu(&cpu).bits(), 16);
        let cpu = CpuFeatures::profile("cortex-a72").unwrap();
        assert_eq!(VmidAllocator::for_cpu(&cpu).capacity(), 255);
    }

    #[test]
    fn rollover_only_when_every_clean_vmid_is_used_and_flushes_before_returning() {
        let mut a = VmidAllocator::new(8);
        let mut rec = Recorder::default();
        let mut vs = Vec::new();
        for _ in 0..255 {
            let g = a.alloc(&mut rec).unwrap();
            assert!(!g.flushed);
            vs.push(g.vmid);
        }
        assert!(rec.events.is_empty(), "no maintenance without a rollover");
        a.free(vs[10]).unwrap();
        let g = a.alloc(&mut rec).unwrap();
        assert!(g.flushed, "reusing a freed VMID needs a flush");
        assert_eq!(g.vmid, vs[10]);
        assert_eq!(
            rec.ops(),
            [
                MaintOp::DsbIshSt,
                MaintOp::TlbiAlle1is,
                MaintOp::DsbIsh,
                MaintOp::Isb
            ]
        );
        assert_eq!(a.free(vs[10]), Ok(()));
        assert_eq!(a.free(vs[10]), Err(VmidError::NotLive(vs[10].get())));
    }
}
