//! hyp's heap: a first-fit free-list allocator (`linked_list_allocator`) behind a spin lock,
//! over a RAM range given at boot.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use linked_list_allocator::Heap;
use spin::mutex::SpinMutex;

/// A global allocator; empty (every allocation fails) until [`LockedHeap::init`].
pub struct LockedHeap(SpinMutex<Heap>);

impl LockedHeap {
    /// An empty heap.
    pub const fn empty() -> Self {
        LockedHeap(SpinMutex::new(Heap::empty()))
    }

    /// Gives the heap `[start, start + size)`.
    ///
    /// # Safety
    /// The range must be mapped read/write, used for nothing else for the rest of hyp's life,
    /// and this must be called at most once.
    pub unsafe fn init(&self, start: usize, size: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.lock().init(start as *mut u8, size) }
    }

    /// (used, free) bytes.
    pub fn usage(&self) -> (usize, usize) {
        let h = self.0.lock();
        (h.used(), h.free())
    }
}

// SAFETY: `Heap` hands out disjoint blocks of the memory given to `init` (whose caller vouched
// for it) and takes back only blocks it handed out, under the lock.
unsafe impl GlobalAlloc for LockedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this `layout`.
            unsafe { self.0.lock().deallocate(p, layout) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_inside_its_range_and_reuses_freed_memory() {
        let mut backing = alloc::vec![0u64; 1024];
        let start = backing.as_mut_ptr() as usize;
        let h = LockedHeap::empty();
        let l = Layout::from_size_align(64, 16).unwrap();
        // SAFETY: empty heap: alloc fails, returns null.
        assert!(unsafe { h.alloc(l) }.is_null());
        // SAFETY: `backing` outlives `h` and is used for nothing else meanwhile.
        unsafe { h.init(start, 8192) };
        // SAFETY: the heap is initialised.
        let a = unsafe { h.alloc(l) };
        assert!(!a.is_null());
        assert!((a as usize) >= start && (a as usize) + 64 <= start + 8192);
        assert_eq!(a as usize % 16, 0);
        // SAFETY: `a` came from `h.alloc(l)`.
        unsafe { h.dealloc(a, l) };
        // SAFETY: as above.
        let b = unsafe { h.alloc(l) };
        assert_eq!(a, b);
        let big = Layout::from_size_align(16384, 8).unwrap();
        // SAFETY: too large: fails with null.
        assert!(unsafe { h.alloc(big) }.is_null());
        drop(backing);
    }
}
