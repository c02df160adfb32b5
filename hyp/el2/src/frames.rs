//! Page-table memory for hyp: a [`TableAlloc`] over identity-mapped RAM (the one place where
//! table frames become slices, of `AtomicU64` so that every access to a live descriptor is a
//! single-copy-atomic 64-bit one), and `HwMaintenance` (aarch64 only), the real barriers,
//! TLBIs and cache operations behind `stage2`'s `Maintenance`.

use alloc::vec::Vec;
use core::sync::atomic::AtomicU64;
use stage2::{AddrRange, Granule, Pa, TableAlloc};

use crate::dt::HalfOpen;
use crate::memmap::PhysBump;

/// Where frames come from: `alloc(size, align)` returns a physical address (identity mapped),
/// or `None` when memory is exhausted.
pub type FrameSource = fn(u64, u64) -> Option<u64>;

/// New frames come from a shared source, or from a range reserved for one table alone.
enum Source {
    Shared(FrameSource),
    Pool(PhysBump),
}

/// Table frames from a [`FrameSource`] or a reserved pool, recycled through a free list.
pub struct FrameAlloc {
    source: Source,
    /// Every frame handed out lies in this range (checked before making a slice).
    bounds: AddrRange<Pa>,
    free: Vec<(u64, u64)>,
    live_bytes: u64,
}

impl FrameAlloc {
    /// A frame allocator taking memory from `source`, which only returns addresses in
    /// `bounds`.
    ///
    /// # Safety
    /// Every range `source` returns must be RAM inside `bounds`, readable and writable at
    /// VA = PA (identity mapped, or the MMU off) for as long as this allocator or any table
    /// built with it lives, and used by nothing else.
    pub unsafe fn new(source: FrameSource, bounds: AddrRange<Pa>) -> Self {
        FrameAlloc {
            source: Source::Shared(source),
            bounds,
            free: Vec::new(),
            live_bytes: 0,
        }
    }

    /// A frame allocator with `pool` to itself: its tables never hold more than `pool.len()`
    /// bytes (a VM's stage-2 table budget), and when that is exhausted only its own
    /// allocations fail. Align `pool.start()` to the largest allocation (the concatenated root)
    /// so that no byte is lost to alignment.
    ///
    /// # Safety
    /// `pool` must be RAM, readable and writable at VA = PA, used by nothing else for as long
    /// as this allocator or any table built with it lives.
    pub unsafe fn pool(pool: AddrRange<Pa>) -> Self {
        FrameAlloc {
            source: Source::Pool(PhysBump::new(pool)),
            bounds: pool,
            free: Vec::new(),
            live_bytes: 0,
        }
    }

    /// Bytes of tables currently allocated.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The identity-mapped pointer to the table memory `pa..pa + bytes`, checked to lie in
    /// our frame range.
    fn check(&self, pa: Pa, bytes: u64) -> *mut u64 {
        let end = pa.checked_add(bytes);
        if !pa.is_aligned(8u64)
            || !self.bounds.contains(pa)
            || end.is_none_or(|e| e > self.bounds.end())
        {
            // A table address that did not come from here is a bug in the table code; making
            // a slice of it would corrupt memory, so stop.
            panic!(
                "invariant: table {pa:#x}+{bytes:#x} outside the frame range {}",
                HalfOpen(self.bounds)
            );
        }
        pa.get() as *mut u64
    }
}

impl TableAlloc for FrameAlloc {
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<Pa> {
        let bytes = granule.size().checked_mul(count as u64)?;
        let pa = match self.free.iter().position(|&(_, b)| b == bytes) {
            Some(i) if self.free[i].0.is_multiple_of(bytes) => self.free.swap_remove(i).0,
            _ => match &mut self.source {
                Source::Shared(f) => f(bytes, bytes)?,
                Source::Pool(b) => b.alloc(bytes, bytes)?,
            },
        };
        let pa = Pa::new(pa);
        let p = self.check(pa, bytes);
        // SAFETY: `pa..pa + bytes` came from the source (or our free list of its frames),
        // which `new`'s contract makes RAM, identity mapped, writable and ours alone.
        unsafe { core::ptr::write_bytes(p, 0, (bytes / 8) as usize) };
        self.live_bytes += bytes;
        Some(pa)
    }

    fn free(&mut self, pa: Pa, granule: Granule, count: usize) {
        let bytes = granule.size() * count as u64;
        self.live_bytes = self.live_bytes.saturating_sub(bytes);
        self.free.push((pa.get(), bytes));
    }

    fn table(&self, pa: Pa, granule: Granule) -> &[AtomicU64] {
        let p = self.check(pa, granule.size()).cast::<AtomicU64>();
        // SAFETY: `pa` is a table this allocator handed out (TableAlloc's contract, and
        // `check` keeps it inside our RAM and 8-byte aligned, as `AtomicU64` needs); it is
        // identity mapped and the borrow of `self` keeps the table from being freed or handed
        // out meanwhile. `AtomicU64` has the size and bit validity of `u64`. Hardware walkers read the memory concurrently (stage-2 access-flag and
        // dirty updates are off, so they never write it); atomic types allow that, and every
        // store through the slice is one single-copy-atomic 64-bit store.
        unsafe { core::slice::from_raw_parts(p, granule.entries()) }
    }

    fn fresh_table(&mut self, pa: Pa, granule: Granule) -> &mut [AtomicU64] {
        let p = self.check(pa, granule.size()).cast::<AtomicU64>();
        // SAFETY: as in `table`; the `&mut self` borrow makes this the only slice of it.
        // TableAlloc's contract: stage2 asks only for tables not yet published, which no
        // walker reads, so plain (possibly merged) stores through `get_mut` are not seen
        // half-done by any walker.
        unsafe { core::slice::from_raw_parts_mut(p, granule.entries()) }
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use hw::HwMaintenance;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    use crate::arch::tlb::raw;
    use crate::arch::{barrier, cache, sysreg};
    use stage2::{MaintOp, Maintenance};

    /// `stage2::Maintenance` with the real instructions.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct HwMaintenance;

    /// Runs `f` with `vmid` in VTTBR_EL2.VMID (bits \[63:48\]), restoring the old value after:
    /// stage-1/2 EL1 TLBIs act on the VMID in VTTBR_EL2 (Arm ARM D8.16).
    fn with_vmid(vmid: u16, f: impl FnOnce()) {
        let old = sysreg::vttbr_el2();
        let want = (old & !(0xffff << 48)) | (u64::from(vmid) << 48);
        if want == old {
            f();
            return;
        }
        // SAFETY: hyp runs at EL2 here, not a guest: only the VMID of VTTBR_EL2 matters until
        // it is restored below, before any guest entry.
        unsafe { sysreg::set_vttbr_el2(want) };
        barrier::isb();
        f();
        // SAFETY: restores the value read above.
        unsafe { sysreg::set_vttbr_el2(old) };
        barrier::isb();
    }

    impl Maintenance for HwMaintenance {
        fn op(&mut self, op: MaintOp) {
            match op {
                MaintOp::DsbIshSt => barrier::dsb_ishst(),
                MaintOp::DsbIsh => barrier::dsb_ish(),
                MaintOp::Isb => barrier::isb(),
                MaintOp::TlbiIpas2e1is { vmid, operand } => {
                    with_vmid(vmid, || raw::ipas2e1is(operand))
                }
                MaintOp::TlbiVmalle1is { vmid } => with_vmid(vmid, raw::vmalle1is),
                MaintOp::TlbiVmalls12e1is { vmid } => with_vmid(vmid, raw::vmalls12e1is),
                MaintOp::TlbiAlle1is => raw::alle1is(),
                MaintOp::TlbiVae2is { operand } => raw::vae2is(operand),
                MaintOp::TlbiAlle2is => raw::alle2is(),
                MaintOp::TlbiVaae1is { operand } => raw::vaae1is(operand),
                MaintOp::TlbiVmalle1Current => raw::vmalle1is(),
                MaintOp::CleanDcachePoc { pa, len } => {
                    // hyp's EL2 map of RAM is the identity.
                    cache::clean_invalidate_to_poc(pa.identity_va().get(), len)
                }
                MaintOp::InvalidateIcachePou { .. } => cache::invalidate_icache_all(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;

    /// The host stands in for identity-mapped RAM with a leaked, aligned buffer.
    fn arena(bytes: usize) -> AddrRange<Pa> {
        let layout = core::alloc::Layout::from_size_align(bytes, 0x1_0000).unwrap();
        // SAFETY: non-zero size; the memory is leaked for the test's lifetime.
        let p = unsafe { std::alloc::alloc(layout) } as u64;
        AddrRange::from_start_len(Pa::new(p), bytes as u64).unwrap()
    }

    static NEXT: std::sync::Mutex<(u64, u64)> = std::sync::Mutex::new((0, 0));

    fn source(size: u64, align: u64) -> Option<u64> {
        let mut g = NEXT.lock().unwrap();
        let base = (g.0 + align - 1) & !(align - 1);
        if base + size > g.1 {
            return None;
        }
        g.0 = base + size;
        Some(base)
    }

    #[test]
    fn frames_are_aligned_zeroed_bounded_and_recycled() {
        let r = arena(0x40000);
        *NEXT.lock().unwrap() = (r.start().get(), r.end().get());
        // SAFETY: `source` hands out pieces of the leaked arena `r` only.
        let mut a = unsafe { FrameAlloc::new(source, r) };
        let t = a.alloc(Granule::K16, 2).unwrap();
        assert!(t.is_aligned(0x8000u64));
        assert!(a
            .table(t, Granule::K16)
            .iter()
            .all(|d| d.load(Ordering::Relaxed) == 0));
        *a.fresh_table(t, Granule::K16)[5].get_mut() = 0xdead;
        assert_eq!(a.read_entry(t + 5 * 8, Granule::K16), 0xdead);
        a.write_entry(t + 6 * 8, Granule::K16, 0xbeef);
        assert_eq!(a.table(t, Granule::K16)[6].load(Ordering::Relaxed), 0xbeef);
        assert_eq!(a.live_bytes(), 0x8000);
        a.free(t, Granule::K16, 2);
        assert_eq!(a.live_bytes(), 0);
        // Reused and zeroed again.
        let t2 = a.alloc(Granule::K16, 2).unwrap();
        assert_eq!(t2, t);
        assert_eq!(a.read_entry(t2 + 5 * 8, Granule::K16), 0);
        // Exhaustion is None, not a panic.
        assert!(a.alloc(Granule::K64, 8).is_none());
    }

    #[test]
    fn a_pool_holds_exactly_its_budget_and_recycles() {
        // A 16K table with 2 concatenated roots plus 3 tables: 5 frames of 16 KiB.
        let r = arena(0x40000);
        let pool = AddrRange::from_start_len(r.start(), 5 * 0x4000).unwrap();
        // SAFETY: the pool is part of the leaked arena `r`, used by nothing else.
        let mut a = unsafe { FrameAlloc::pool(pool) };
        let root = a.alloc(Granule::K16, 2).unwrap();
        assert_eq!(
            root,
            pool.start(),
            "an aligned pool loses nothing to alignment"
        );
        let t: Vec<Pa> = (0..3).map(|_| a.alloc(Granule::K16, 1).unwrap()).collect();
        assert!(t
            .iter()
            .all(|&f| pool.contains(f) && f + 0x4000 <= pool.end()));
        // The budget is spent: the next table fails, and only here.
        assert!(a.alloc(Granule::K16, 1).is_none());
        a.free(t[1], Granule::K16, 1);
        assert_eq!(
            a.alloc(Granule::K16, 1),
            Some(t[1]),
            "freed frames come back"
        );
        assert!(a.alloc(Granule::K16, 1).is_none());
        assert_eq!(a.live_bytes(), 5 * 0x4000);
    }

    #[test]
    #[should_panic(expected = "outside the frame range")]
    fn a_foreign_address_is_refused() {
        let r = arena(0x10000);
        // SAFETY: `source` is never called by this test.
        let a = unsafe { FrameAlloc::new(source, r) };
        let _ = a.table(r.end(), Granule::K4);
    }
}
