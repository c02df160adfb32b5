//! Table memory: the [`TableAlloc`] trait and a `Vec`-backed allocator for host tests.
//!
//! Tables are allocated in units of the granule. The walker never holds a pointer: it names a
//! table by its physical address and asks the allocator for the table's descriptors as a safe
//! slice. In hyp the implementer backs `table`/`table_mut` with identity-mapped memory (the
//! only `unsafe` involved lives there); on the host [`VecAlloc`] backs them with a `Vec`.

use crate::Granule;
use alloc::vec::Vec;

/// Memory for translation tables.
pub trait TableAlloc {
    /// Allocates `count` contiguous tables of `granule` size, aligned to their total size
    /// (`count * granule.size()`, as concatenated stage-2 roots need) and zeroed. Returns the
    /// physical address of the first, or `None` when out of memory.
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<u64>;

    /// Returns `count` tables at `pa` from an earlier `alloc(granule, count)`.
    fn free(&mut self, pa: u64, granule: Granule, count: usize);

    /// The descriptors of the table of `granule` size at `pa` (one table: `granule.entries()`
    /// entries). Only called with addresses this allocator returned and not yet freed.
    fn table(&self, pa: u64, granule: Granule) -> &[u64];

    /// Mutable access to the table of `granule` size at `pa`.
    fn table_mut(&mut self, pa: u64, granule: Granule) -> &mut [u64];

    /// Reads the descriptor at `entry_pa` (inside a table of `granule` size). The default goes
    /// through [`TableAlloc::table`]; implementations may read it directly.
    #[inline(always)]
    fn read_entry(&self, entry_pa: u64, granule: Granule) -> u64 {
        let mask = granule.size() - 1;
        self.table(entry_pa & !mask, granule)[((entry_pa & mask) >> 3) as usize]
    }

    /// Writes the descriptor at `entry_pa` (a single 64-bit store, as the Arm ARM requires
    /// for descriptors a walker may see: B2.2.1 single-copy atomicity).
    #[inline(always)]
    fn write_entry(&mut self, entry_pa: u64, granule: Granule, value: u64) {
        let mask = granule.size() - 1;
        self.table_mut(entry_pa & !mask, granule)[((entry_pa & mask) >> 3) as usize] = value;
    }
}

impl<T: TableAlloc + ?Sized> TableAlloc for &mut T {
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<u64> {
        (**self).alloc(granule, count)
    }
    fn free(&mut self, pa: u64, granule: Granule, count: usize) {
        (**self).free(pa, granule, count)
    }
    fn table(&self, pa: u64, granule: Granule) -> &[u64] {
        (**self).table(pa, granule)
    }
    fn table_mut(&mut self, pa: u64, granule: Granule) -> &mut [u64] {
        (**self).table_mut(pa, granule)
    }
    #[inline(always)]
    fn read_entry(&self, entry_pa: u64, granule: Granule) -> u64 {
        (**self).read_entry(entry_pa, granule)
    }
    #[inline(always)]
    fn write_entry(&mut self, entry_pa: u64, granule: Granule, value: u64) {
        (**self).write_entry(entry_pa, granule, value)
    }
}

/// A `Vec`-backed [`TableAlloc`] for host tests and benchmarks.
///
/// Physical addresses are offsets into one arena plus [`VecAlloc::BASE`]. Freed tables go to
/// a free list per size and are reused (zeroed) first. It counts live tables, supports failure
/// injection ([`VecAlloc::fail_after`]) and records misuse instead of panicking.
#[derive(Debug, Default)]
pub struct VecAlloc {
    arena: Vec<u64>,
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
        a.arena.resize(words, 0);
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
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<u64> {
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
                self.arena[i..i + (bytes / 8) as usize].fill(0);
                pa
            }
            None => {
                let end = VecAlloc::BASE + self.arena.len() as u64 * 8;
                let start = (end + bytes - 1) & !(bytes - 1);
                if start > end {
                    self.free.push((end, start - end));
                }
                self.arena
                    .resize(((start + bytes - VecAlloc::BASE) / 8) as usize, 0);
                start
            }
        };
        self.live_bytes += bytes;
        self.live_allocs += 1;
        self.allocs += 1;
        Some(pa)
    }

    fn free(&mut self, pa: u64, granule: Granule, count: usize) {
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

    fn table(&self, pa: u64, granule: Granule) -> &[u64] {
        let i = self.index(pa);
        &self.arena[i..i + granule.entries()]
    }

    fn table_mut(&mut self, pa: u64, granule: Granule) -> &mut [u64] {
        let i = self.index(pa);
        &mut self.arena[i..i + granule.entries()]
    }

    #[inline(always)]
    fn read_entry(&self, entry_pa: u64, _granule: Granule) -> u64 {
        self.arena[self.index(entry_pa)]
    }

    #[inline(always)]
    fn write_entry(&mut self, entry_pa: u64, _granule: Granule, value: u64) {
        let i = self.index(entry_pa);
        self.arena[i] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_counted() {
        let mut a = VecAlloc::new();
        let p1 = a.alloc(Granule::K4, 1).unwrap();
        a.table_mut(p1, Granule::K4)[3] = 7;
        let p16 = a.alloc(Granule::K4, 16).unwrap();
        assert_eq!(p16 % (16 * 4096), 0);
        assert_eq!(a.live_allocs(), 2);
        a.free(p1, Granule::K4, 1);
        let p2 = a.alloc(Granule::K4, 1).unwrap();
        assert_eq!(p2, p1, "freed frame is reused");
        assert!(a.table(p2, Granule::K4).iter().all(|&d| d == 0));
        a.free(p2, Granule::K4, 1);
        a.free(p16, Granule::K4, 16);
        assert_eq!((a.live_allocs(), a.live_bytes(), a.bad_frees), (0, 0, 0));
        a.free(0x1234, Granule::K4, 1);
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
}
