//! Table memory: the [`TableAlloc`] trait, a `Vec`-backed allocator for host tests, and
//! [`StoreAudit`], a test wrapper that checks how live tables are written.
//!
//! Tables are allocated in units of the granule. The walker never holds a pointer: it names a
//! table by its physical address and asks the allocator for the table's descriptors as a safe
//! slice. In hyp the implementer backs `table`/`fresh_table` with identity-mapped memory (the
//! only `unsafe` involved lives there); on the host [`VecAlloc`] backs them with a `Vec`.
//!
//! # Live and fresh tables
//! A table is *live* once a walker may read it: a root, and every table whose descriptor has
//! been stored in a live table. Hardware walkers (this CPU's and the others') read live tables
//! concurrently with hyp's updates, so every store to a live descriptor must be one
//! single-copy-atomic 64-bit store (Arm ARM B2.2.1): never torn, merged into a wider (SIMD,
//! `STP`, `memcpy`/`memset`) store or split. The types make this the only way: live tables are
//! `&[AtomicU64]` ([`TableAlloc::table`]), whose only stores are atomic ones, and stage2
//! writes them through [`TableAlloc::write_entry`] / [`TableAlloc::publish_entry`]. A
//! *fresh* table (allocated, its descriptor not yet stored anywhere) is no walker's business:
//! [`TableAlloc::fresh_table`] gives it as `&mut [AtomicU64]`, and `AtomicU64::get_mut` lets
//! the compiler fill it with whatever stores it likes. The table becomes live with one
//! `publish_entry` of its descriptor, which orders the fill before it.

use crate::addr::Pa;
use crate::attrs::{DESC_OA_MASK, DESC_TABLE, DESC_TYPE_MASK};
use crate::{Geometry, Granule};
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// Memory for translation tables.
pub trait TableAlloc {
    /// Allocates `count` contiguous tables of `granule` size, aligned to their total size
    /// (`count * granule.size()`, as concatenated stage-2 roots need) and zeroed. Returns the
    /// physical address of the first, or `None` when out of memory.
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<Pa>;

    /// Returns `count` tables at `pa` from an earlier `alloc(granule, count)`.
    fn free(&mut self, pa: Pa, granule: Granule, count: usize);

    /// The descriptors of the table of `granule` size at `pa` (one table: `granule.entries()`
    /// entries), as walkers see them: only single-copy-atomic loads and stores are possible.
    /// Only called with addresses this allocator returned and not yet freed.
    fn table(&self, pa: Pa, granule: Granule) -> &[AtomicU64];

    /// Exclusive access to the *fresh* table of `granule` size at `pa`: allocated and not yet
    /// published (no walker can reach it), for bulk initialisation through
    /// `AtomicU64::get_mut` (plain stores the compiler may merge). Never called for a live
    /// table: stage2 only calls it for tables it took from its reserve and has not published.
    fn fresh_table(&mut self, pa: Pa, granule: Granule) -> &mut [AtomicU64];

    /// Reads the descriptor at `entry_pa` (inside a table of `granule` size): one 64-bit
    /// load (`Relaxed`: nothing else in memory is read on the strength of it without the
    /// table lock, and stage-2 hardware access-flag/dirty updates are off). The default goes
    /// through [`TableAlloc::table`]; implementations may read it directly.
    #[inline(always)]
    fn read_entry(&self, entry_pa: Pa, granule: Granule) -> u64 {
        let i = ((entry_pa.get() & (granule.size() - 1)) >> 3) as usize;
        self.table(entry_pa.align_down(granule), granule)[i].load(Ordering::Relaxed)
    }

    /// Writes the descriptor at `entry_pa` of a live table with one single-copy-atomic 64-bit
    /// store (`Relaxed`: the `DSB`s of the break-before-make sequences order it against the
    /// TLB maintenance for the hardware; see the `table` module).
    #[inline(always)]
    fn write_entry(&mut self, entry_pa: Pa, granule: Granule, value: u64) {
        let i = ((entry_pa.get() & (granule.size() - 1)) >> 3) as usize;
        self.table(entry_pa.align_down(granule), granule)[i].store(value, Ordering::Relaxed);
    }

    /// Writes a table descriptor that publishes a fresh subtree: one single-copy-atomic
    /// 64-bit `Release` store, so every store that filled the subtree is ordered before it
    /// (KVM's `smp_store_release` of a new table PTE).
    #[inline(always)]
    fn publish_entry(&mut self, entry_pa: Pa, granule: Granule, value: u64) {
        let i = ((entry_pa.get() & (granule.size() - 1)) >> 3) as usize;
        self.table(entry_pa.align_down(granule), granule)[i].store(value, Ordering::Release);
    }
}

impl<T: TableAlloc + ?Sized> TableAlloc for &mut T {
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<Pa> {
        (**self).alloc(granule, count)
    }
    fn free(&mut self, pa: Pa, granule: Granule, count: usize) {
        (**self).free(pa, granule, count)
    }
    fn table(&self, pa: Pa, granule: Granule) -> &[AtomicU64] {
        (**self).table(pa, granule)
    }
    fn fresh_table(&mut self, pa: Pa, granule: Granule) -> &mut [AtomicU64] {
        (**self).fresh_table(pa, granule)
    }
    #[inline(always)]
    fn read_entry(&self, entry_pa: Pa, granule: Granule) -> u64 {
        (**self).read_entry(entry_pa, granule)
    }
    #[inline(always)]
    fn write_entry(&mut self, entry_pa: Pa, granule: Granule, value: u64) {
        (**self).write_entry(entry_pa, granule, value)
    }
    #[inline(always)]
    fn publish_entry(&mut self, entry_pa: Pa, granule: Granule, value: u64) {
        (**self).publish_entry(entry_pa, granule, value)
    }
}

/// A `Vec`-backed [`TableAlloc`] for host tests and benchmarks.
///
/// Physical addresses are offsets into one arena plus [`VecAlloc::BASE`]. Freed tables go to
/// a free list per size and are reused (zeroed) first. It counts live tables, supports failure
/// injection ([`VecAlloc::fail_after`]) and records misuse instead of panicking.
#[derive(Debug, Default)]
pub struct VecAlloc {
    arena: Vec<AtomicU64>,
    free: Vec<(u64, u64)>,
    live_bytes: u64,
    live_allocs: usize,
    allocs: u64,
    frees: u64,
    fail_after: Option<u64>,
    live_limit: Option<u64>,
    /// Frees of addresses that were not live (double or wild frees).
    pub bad_frees: u64,
}

impl VecAlloc {
    /// The fake physical address of the arena's first byte.
    pub const BASE: u64 = 0x8_0000_0000;

    /// An empty allocator.
    pub fn new() -> VecAlloc {
        VecAlloc::default()
    }

    /// An allocator whose arena already holds `bytes` of touched memory (a pre-filled frame
    /// pool: no host page faults while timing).
    pub fn with_pool(bytes: u64) -> VecAlloc {
        let mut a = VecAlloc::new();
        let words = (bytes / 8) as usize;
        a.arena.resize_with(words, || AtomicU64::new(0));
        a.free.push((VecAlloc::BASE, bytes & !7));
        a
    }

    /// Makes the allocation after the next `n` ones fail (`None` clears it).
    pub fn fail_after(&mut self, n: Option<u64>) {
        self.fail_after = n;
    }

    /// Refuses any allocation that would make more than `bytes` live at once (a table
    /// budget; `None` clears it).
    pub fn limit_live_bytes(&mut self, bytes: Option<u64>) {
        self.live_limit = bytes;
    }

    /// Bytes currently allocated.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Allocations currently live.
    pub fn live_allocs(&self) -> usize {
        self.live_allocs
    }

    /// Successful allocations so far.
    pub fn total_allocs(&self) -> u64 {
        self.allocs
    }

    /// Frees so far.
    pub fn total_frees(&self) -> u64 {
        self.frees
    }

    #[inline(always)]
    fn index(&self, pa: u64) -> usize {
        (pa.wrapping_sub(VecAlloc::BASE) / 8) as usize
    }

    fn take_free(&mut self, bytes: u64) -> Option<u64> {
        // Exact-size frames first (most recent first: warm in cache), then split a larger
        // aligned run.
        if let Some(i) = self.free.iter().rposition(|&(_, b)| b == bytes) {
            return Some(self.free.swap_remove(i).0);
        }
        let i = self.free.iter().rposition(|&(pa, b)| {
            let start = (pa + bytes - 1) & !(bytes - 1);
            start + bytes <= pa + b
        })?;
        let (pa, b) = self.free.swap_remove(i);
        let start = (pa + bytes - 1) & !(bytes - 1);
        if start > pa {
            self.free.push((pa, start - pa));
        }
        if start + bytes < pa + b {
            self.free.push((start + bytes, pa + b - start - bytes));
        }
        Some(start)
    }
}

impl TableAlloc for VecAlloc {
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<Pa> {
        if let Some(n) = self.fail_after {
            if n == 0 {
                return None;
            }
            self.fail_after = Some(n - 1);
        }
        let bytes = granule.size() * count as u64;
        if self
            .live_limit
            .is_some_and(|l| self.live_bytes.saturating_add(bytes) > l)
        {
            return None;
        }
        let pa = match self.take_free(bytes) {
            Some(pa) => {
                let i = self.index(pa);
                // A freed frame: no walker reaches it any more, so plain stores will do.
                for w in &mut self.arena[i..i + (bytes / 8) as usize] {
                    *w.get_mut() = 0;
                }
                pa
            }
            None => {
                let end = VecAlloc::BASE + self.arena.len() as u64 * 8;
                let start = (end + bytes - 1) & !(bytes - 1);
                if start > end {
                    self.free.push((end, start - end));
                }
                self.arena
                    .resize_with(((start + bytes - VecAlloc::BASE) / 8) as usize, || {
                        AtomicU64::new(0)
                    });
                start
            }
        };
        self.live_bytes += bytes;
        self.live_allocs += 1;
        self.allocs += 1;
        Some(Pa::new(pa))
    }

    fn free(&mut self, pa: Pa, granule: Granule, count: usize) {
        let pa = pa.get();
        let bytes = granule.size() * count as u64;
        let in_arena = pa >= VecAlloc::BASE
            && pa + bytes <= VecAlloc::BASE + self.arena.len() as u64 * 8
            && pa.is_multiple_of(bytes);
        if !in_arena || self.live_allocs == 0 || self.live_bytes < bytes {
            self.bad_frees += 1;
            return;
        }
        self.live_bytes -= bytes;
        self.live_allocs -= 1;
        self.frees += 1;
        self.free.push((pa, bytes));
    }

    fn table(&self, pa: Pa, granule: Granule) -> &[AtomicU64] {
        let i = self.index(pa.get());
        &self.arena[i..i + granule.entries()]
    }

    fn fresh_table(&mut self, pa: Pa, granule: Granule) -> &mut [AtomicU64] {
        let i = self.index(pa.get());
        &mut self.arena[i..i + granule.entries()]
    }

    #[inline(always)]
    fn read_entry(&self, entry_pa: Pa, _granule: Granule) -> u64 {
        self.arena[self.index(entry_pa.get())].load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn write_entry(&mut self, entry_pa: Pa, _granule: Granule, value: u64) {
        self.arena[self.index(entry_pa.get())].store(value, Ordering::Relaxed);
    }

    #[inline(always)]
    fn publish_entry(&mut self, entry_pa: Pa, _granule: Granule, value: u64) {
        self.arena[self.index(entry_pa.get())].store(value, Ordering::Release);
    }
}

/// One store to a live table, as [`StoreAudit`] saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveStore {
    /// The descriptor's physical address.
    pub entry_pa: u64,
    /// The value stored.
    pub value: u64,
    /// Stored by [`TableAlloc::publish_entry`] (`Release`) rather than `write_entry`.
    pub publish: bool,
}

/// A misuse of live table memory found by [`StoreAudit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditViolation {
    /// The descriptor (or table) concerned.
    pub pa: u64,
    /// What was wrong.
    pub reason: &'static str,
}

impl core::fmt::Display for AuditViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "live table memory at {:#018x}: {}", self.pa, self.reason)
    }
}

/// A [`TableAlloc`] wrapper for tests that audits how live tables are written.
///
/// It is given the tables' geometry and takes its first allocation as the root (as
/// [`crate::PageTable::new`] does); the root and every table reachable from it are live. It
/// keeps a shadow copy of every live table, changed only by `write_entry`/`publish_entry`,
/// and records as violations:
/// - [`TableAlloc::fresh_table`] (bulk, non-atomic access) of a live table;
/// - a live descriptor that differs from its shadow: a store that bypassed `write_entry` and
///   `publish_entry` (checked for the entry at every store, for every live table at every
///   `fresh_table` and at [`StoreAudit::check`]);
/// - a table descriptor stored by a `Relaxed` `write_entry` instead of `publish_entry`.
///
/// Every store to a live table is logged ([`StoreAudit::take_stores`]), so a test can match
/// them one to one with the stores the walker reports to `Maintenance::store`: a torn or
/// split store shows up as two.
#[derive(Debug)]
pub struct StoreAudit<A> {
    inner: A,
    geo: Geometry,
    root: Option<u64>,
    /// Live tables: physical address -> (level, shadow descriptors).
    live: BTreeMap<u64, (u32, Vec<u64>)>,
    stores: Vec<LiveStore>,
    violations: Vec<AuditViolation>,
}

impl<A: TableAlloc> StoreAudit<A> {
    /// Audits `inner` for tables of geometry `geo`.
    pub fn new(inner: A, geo: Geometry) -> StoreAudit<A> {
        StoreAudit {
            inner,
            geo,
            root: None,
            live: BTreeMap::new(),
            stores: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// The audited allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The audited allocator, mutably (e.g. for failure injection).
    pub fn inner_mut(&mut self) -> &mut A {
        &mut self.inner
    }

    /// Unwraps the audited allocator.
    pub fn into_inner(self) -> A {
        self.inner
    }

    /// Live tables (the root tables included).
    pub fn live_tables(&self) -> usize {
        self.live.len()
    }

    /// The stores to live tables since the last call, in order.
    pub fn take_stores(&mut self) -> Vec<LiveStore> {
        core::mem::take(&mut self.stores)
    }

    /// Compares every live table with its shadow, then returns the first violation seen so
    /// far (and forgets them all).
    pub fn check(&mut self) -> Result<(), AuditViolation> {
        self.verify();
        match self.violations.first().copied() {
            Some(v) => {
                self.violations.clear();
                Err(v)
            }
            None => Ok(()),
        }
    }

    fn violation(&mut self, pa: u64, reason: &'static str) {
        self.violations.push(AuditViolation { pa, reason });
    }

    fn verify(&mut self) {
        let g = self.geo.granule();
        let mut bad = Vec::new();
        for (&pa, (_, shadow)) in &self.live {
            let now = self.inner.table(Pa::new(pa), g);
            if let Some(i) =
                (0..shadow.len()).find(|&i| now[i].load(Ordering::Relaxed) != shadow[i])
            {
                bad.push(pa + 8 * i as u64);
            }
        }
        for pa in bad {
            self.violation(
                pa,
                "a live descriptor changed without a store through write_entry or publish_entry",
            );
        }
    }

    fn child(&self, desc: u64) -> u64 {
        desc & DESC_OA_MASK & !(self.geo.granule().size() - 1)
    }

    /// Makes the table at `pa` (level `level`) and every table below it live.
    fn adopt(&mut self, pa: u64, level: u32) {
        let g = self.geo.granule();
        let shadow: Vec<u64> = self
            .inner
            .table(Pa::new(pa), g)
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect();
        let children: Vec<u64> = if level < 3 {
            shadow
                .iter()
                .filter(|&&d| d & DESC_TYPE_MASK == DESC_TABLE)
                .map(|&d| self.child(d))
                .collect()
        } else {
            vec![]
        };
        if self.live.insert(pa, (level, shadow)).is_some() {
            self.violation(pa, "a live table was published a second time");
        }
        for c in children {
            self.adopt(c, level + 1);
        }
    }

    /// The table at `pa` and every table below it are no longer reachable.
    fn detach(&mut self, pa: u64) {
        if let Some((level, shadow)) = self.live.remove(&pa) {
            if level < 3 {
                for d in shadow {
                    if d & DESC_TYPE_MASK == DESC_TABLE {
                        let c = self.child(d);
                        self.detach(c);
                    }
                }
            }
        }
    }

    fn store(&mut self, entry_pa: u64, value: u64, publish: bool) {
        let g = self.geo.granule();
        let t = entry_pa & !(g.size() - 1);
        let i = ((entry_pa - t) / 8) as usize;
        let now = self.inner.read_entry(Pa::new(entry_pa), g);
        if publish {
            self.inner.publish_entry(Pa::new(entry_pa), g, value);
        } else {
            self.inner.write_entry(Pa::new(entry_pa), g, value);
        }
        let Some((level, shadow)) = self.live.get_mut(&t) else {
            // A fresh table written atomically: allowed (if unusual).
            return;
        };
        let (level, old) = (*level, core::mem::replace(&mut shadow[i], value));
        self.stores.push(LiveStore {
            entry_pa,
            value,
            publish,
        });
        if now != old {
            self.violation(
                entry_pa,
                "a live descriptor changed without a store through write_entry or publish_entry",
            );
        }
        if level < 3 && old & DESC_TYPE_MASK == DESC_TABLE && old != value {
            let c = self.child(old);
            self.detach(c);
        }
        if level < 3 && value & DESC_TYPE_MASK == DESC_TABLE && old != value {
            if !publish {
                self.violation(
                    entry_pa,
                    "a table descriptor was stored without Release (write_entry, not publish_entry)",
                );
            }
            let c = self.child(value);
            self.adopt(c, level + 1);
        }
    }
}

impl<A: TableAlloc> TableAlloc for StoreAudit<A> {
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<Pa> {
        let pa = self.inner.alloc(granule, count)?;
        let raw = pa.get();
        if self.root.is_none() {
            self.root = Some(raw);
            let start = self.geo.start_level();
            for k in 0..count as u64 {
                self.adopt(raw + k * granule.size(), start);
            }
        }
        Some(pa)
    }

    fn free(&mut self, pa: Pa, granule: Granule, count: usize) {
        if self.root == Some(pa.get()) {
            // The whole table goes (destroy): nothing is live any more.
            self.root = None;
            self.live.clear();
        } else {
            self.detach(pa.get());
        }
        self.inner.free(pa, granule, count)
    }

    fn table(&self, pa: Pa, granule: Granule) -> &[AtomicU64] {
        self.inner.table(pa, granule)
    }

    fn fresh_table(&mut self, pa: Pa, granule: Granule) -> &mut [AtomicU64] {
        if self.live.contains_key(&pa.get()) {
            self.violation(
                pa.get(),
                "fresh_table (bulk, non-atomic access) of a live table",
            );
        }
        self.verify();
        self.inner.fresh_table(pa, granule)
    }

    fn read_entry(&self, entry_pa: Pa, granule: Granule) -> u64 {
        self.inner.read_entry(entry_pa, granule)
    }

    fn write_entry(&mut self, entry_pa: Pa, _granule: Granule, value: u64) {
        self.store(entry_pa.get(), value, false);
    }

    fn publish_entry(&mut self, entry_pa: Pa, _granule: Granule, value: u64) {
        self.store(entry_pa.get(), value, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuFeatures;

    #[test]
    fn aligned_zeroed_and_counted() {
        let mut a = VecAlloc::new();
        let p1 = a.alloc(Granule::K4, 1).unwrap();
        *a.fresh_table(p1, Granule::K4)[3].get_mut() = 7;
        let p16 = a.alloc(Granule::K4, 16).unwrap();
        assert!(p16.is_aligned(16 * 4096u64));
        assert_eq!(a.live_allocs(), 2);
        a.free(p1, Granule::K4, 1);
        let p2 = a.alloc(Granule::K4, 1).unwrap();
        assert_eq!(p2, p1, "freed frame is reused");
        assert!(a
            .table(p2, Granule::K4)
            .iter()
            .all(|d| d.load(Ordering::Relaxed) == 0));
        a.free(p2, Granule::K4, 1);
        a.free(p16, Granule::K4, 16);
        assert_eq!((a.live_allocs(), a.live_bytes(), a.bad_frees), (0, 0, 0));
        a.free(Pa::new(0x1234), Granule::K4, 1);
        assert_eq!(a.bad_frees, 1);
        a.fail_after(Some(1));
        assert!(a.alloc(Granule::K64, 1).is_some());
        assert!(a.alloc(Granule::K64, 1).is_none());
    }

    #[test]
    fn pool_is_reused_without_growth() {
        let mut a = VecAlloc::with_pool(1 << 20);
        let len = a.arena.len();
        for _ in 0..16 {
            a.alloc(Granule::K64, 1).unwrap();
        }
        assert_eq!(a.arena.len(), len);
        assert!(a.alloc(Granule::K64, 1).is_some());
        assert!(a.arena.len() > len);
    }

    /// A 4K stage-2 audit with its root (level 1, two concatenated tables) allocated.
    fn audit() -> (StoreAudit<VecAlloc>, u64) {
        let cpu = CpuFeatures::profile("max").unwrap();
        let geo = Geometry::stage2(Granule::K4, 40, &cpu).unwrap();
        let mut a = StoreAudit::new(VecAlloc::new(), geo);
        let root = a.alloc(Granule::K4, 2).unwrap();
        (a, root.get())
    }

    #[test]
    fn audit_follows_publication_and_detachment() {
        let g = Granule::K4;
        let (mut a, root) = audit();
        assert_eq!(a.live_tables(), 2);
        // A fresh L2 table with a fresh L3 table below it, filled in bulk, then published.
        let l2 = a.alloc(g, 1).unwrap().get();
        let l3 = a.alloc(g, 1).unwrap().get();
        for (k, e) in a.fresh_table(Pa::new(l3), g).iter_mut().enumerate() {
            *e.get_mut() = (0x4000_0000 + (k as u64) * 4096) | 0x443;
        }
        *a.fresh_table(Pa::new(l2), g)[5].get_mut() = l3 | 3;
        a.publish_entry(Pa::new(root + 8), g, l2 | 3);
        assert_eq!(a.live_tables(), 4);
        // Atomic stores to live tables are logged; so is their kind.
        a.write_entry(Pa::new(l3 + 16), g, 0);
        assert_eq!(
            a.take_stores(),
            [
                LiveStore {
                    entry_pa: root + 8,
                    value: l2 | 3,
                    publish: true
                },
                LiveStore {
                    entry_pa: l3 + 16,
                    value: 0,
                    publish: false
                }
            ]
        );
        // Break the L2 entry: both tables leave the live set and may be refilled in bulk.
        a.write_entry(Pa::new(root + 8), g, 0);
        assert_eq!(a.live_tables(), 2);
        a.fresh_table(Pa::new(l3), g)[0].get_mut();
        assert_eq!(a.check(), Ok(()));
        a.free(Pa::new(l3), g, 1);
        a.free(Pa::new(l2), g, 1);
        a.free(Pa::new(root), g, 2);
        assert_eq!((a.live_tables(), a.inner().live_allocs()), (0, 0));
    }

    #[test]
    fn audit_catches_bulk_bypassing_and_relaxed_publication() {
        let g = Granule::K4;
        // Bulk (non-atomic) access to a live table.
        let (mut a, root) = audit();
        *a.fresh_table(Pa::new(root), g)[1].get_mut() = 0x4000_0401;
        let e = a.check().unwrap_err();
        assert_eq!(e.pa, root);
        assert!(e.reason.contains("fresh_table"), "{e}");
        // A store through `table()` that bypassed write_entry: found by the next store to
        // the entry, and by `check`.
        let (mut a, root) = audit();
        a.table(Pa::new(root), g)[3].store(0x4000_0401, Ordering::Relaxed);
        assert_eq!(
            a.check().map_err(|e| e.pa),
            Err(root + 24),
            "bypass found by check"
        );
        let (mut a, root) = audit();
        a.table(Pa::new(root), g)[3].store(0x4000_0401, Ordering::Relaxed);
        a.write_entry(Pa::new(root + 24), g, 0);
        assert_eq!(a.check().map_err(|e| e.pa), Err(root + 24));
        // A torn store: two stores where the walker meant one (the log shows both).
        let (mut a, root) = audit();
        a.write_entry(Pa::new(root + 24), g, 0x4000_0000);
        a.write_entry(Pa::new(root + 24), g, 0x4000_0401);
        assert_eq!(a.take_stores().len(), 2);
        // A table published with a Relaxed store.
        let (mut a, root) = audit();
        let t = a.alloc(g, 1).unwrap().get();
        a.write_entry(Pa::new(root), g, t | 3);
        let e = a.check().unwrap_err();
        assert!(e.reason.contains("Release"), "{e}");
    }
}
