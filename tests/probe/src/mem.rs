//! The probe's memory: a small heap (`stage2` allocates its walk state) and the frames of its
//! own stage-1 tables, both inside its image (BSS), so the rest of RAM stays free for tests.

use crate::rt;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use linked_list_allocator::Heap;
use stage2::{AddrRange, Granule, Pa, TableAlloc};

const HEAP_BYTES: usize = 256 << 10;
/// Table frames: enough for RAM and the devices at 4K pages (a 64 MiB VM's RAM takes 32 L3
/// tables) plus the isolation test's block map of a 48-bit space.
const POOL_BYTES: usize = 2 << 20;

#[repr(C, align(65536))]
struct Aligned<const N: usize>([u8; N]);

/// Heap and pool memory: zeroed with the BSS at boot, then handed out by [`HEAP`] and
/// [`Frames`] only.
struct Arena<const N: usize>(UnsafeCell<Aligned<N>>);

// SAFETY: the arenas are only reached through `HEAP` (under its lock) and `Frames` (one
// instance, created once by `take_pool`).
unsafe impl<const N: usize> Sync for Arena<N> {}

static HEAP_MEM: Arena<HEAP_BYTES> = Arena(UnsafeCell::new(Aligned([0; HEAP_BYTES])));
static POOL_MEM: Arena<POOL_BYTES> = Arena(UnsafeCell::new(Aligned([0; POOL_BYTES])));

/// The global allocator: `linked_list_allocator`'s heap behind a lock. Until the MMU is on
/// (RAM is Device memory then, where exclusives are not guaranteed) one vCPU runs and the
/// lock is not taken.
pub struct ProbeHeap {
    heap: UnsafeCell<Option<Heap>>,
    lock: AtomicBool,
}

// SAFETY: `heap` is only touched with `lock` held (or by the only vCPU, before the MMU is on).
unsafe impl Sync for ProbeHeap {}

static MMU_ON: AtomicBool = AtomicBool::new(false);

/// Says that the MMU is on: locks work from now on.
pub fn mmu_is_on() {
    MMU_ON.store(true, Ordering::Release);
}

impl ProbeHeap {
    fn with<R>(&self, f: impl FnOnce(&mut Heap) -> R) -> R {
        let locked = MMU_ON.load(Ordering::Acquire);
        if locked {
            while self
                .lock
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
        }
        // SAFETY: the lock is held, or only one vCPU runs (see `ProbeHeap`).
        let slot = unsafe { &mut *self.heap.get() };
        let heap = slot.get_or_insert_with(|| {
            // SAFETY: HEAP_MEM is used by this heap only, for the program's whole life.
            unsafe { Heap::new(HEAP_MEM.0.get().cast::<u8>(), HEAP_BYTES) }
        });
        let r = f(heap);
        if locked {
            self.lock.store(false, Ordering::Release);
        }
        r
    }
}

// SAFETY: allocations come from `Heap`, which hands out disjoint, suitably aligned blocks.
unsafe impl GlobalAlloc for ProbeHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with(|h| h.allocate_first_fit(layout))
            .map(|p| p.as_ptr())
            .unwrap_or(core::ptr::null_mut())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc's contract).
            self.with(|h| unsafe { h.deallocate(p, layout) });
        }
    }
}

#[global_allocator]
static HEAP: ProbeHeap = ProbeHeap {
    heap: UnsafeCell::new(None),
    lock: AtomicBool::new(false),
};

/// Table frames from the probe's pool (identity mapped: PA = VA, with the MMU off and on).
pub struct Frames {
    next: u64,
    end: u64,
    /// Freed runs of frames, reused for a request of the same size.
    free: alloc::vec::Vec<AddrRange<Pa>>,
}

static POOL_TAKEN: AtomicBool = AtomicBool::new(false);

impl Frames {
    /// The pool's allocator; `None` after the first call (one owner).
    pub fn take_pool() -> Option<Frames> {
        if POOL_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        let base = POOL_MEM.0.get() as u64;
        Some(Frames {
            next: base,
            end: base + POOL_BYTES as u64,
            free: alloc::vec::Vec::new(),
        })
    }

    fn slice(&self, pa: u64, granule: Granule) -> &[AtomicU64] {
        assert!(
            pa >= POOL_MEM.0.get() as u64 && pa + granule.size() <= self.end,
            "table {pa:#x} outside the probe's pool"
        );
        // SAFETY: `pa` is a frame of the pool this allocator owns (checked above), identity
        // mapped, 8-aligned; AtomicU64 has u64's layout.
        unsafe { core::slice::from_raw_parts(pa as *const AtomicU64, granule.entries()) }
    }
}

impl TableAlloc for Frames {
    fn alloc(&mut self, granule: Granule, count: usize) -> Option<Pa> {
        let bytes = granule.size() * count as u64;
        let pa = match self.free.iter().position(|r| r.len() == bytes) {
            Some(i) => self.free.swap_remove(i).start().get(),
            None => {
                let pa = self.next.checked_add(bytes - 1)? & !(bytes - 1);
                if pa + bytes > self.end {
                    return None;
                }
                self.next = pa + bytes;
                pa
            }
        };
        for t in 0..count as u64 {
            for d in self.slice(pa + t * granule.size(), granule) {
                d.store(0, Ordering::Relaxed);
            }
        }
        Some(Pa::new(pa))
    }

    fn free(&mut self, pa: Pa, granule: Granule, count: usize) {
        // Frames the pool handed out: they end below its end.
        self.free
            .push(rt::span(pa.get(), granule.size() * count as u64));
    }

    fn table(&self, pa: Pa, granule: Granule) -> &[AtomicU64] {
        self.slice(pa.get(), granule)
    }

    fn fresh_table(&mut self, pa: Pa, granule: Granule) -> &mut [AtomicU64] {
        let s = self.slice(pa.get(), granule);
        // SAFETY: stage2 calls this only for a fresh table (allocated, not yet published):
        // nothing else refers to it, so this is the only reference for the borrow of `self`.
        unsafe { core::slice::from_raw_parts_mut(s.as_ptr().cast_mut(), s.len()) }
    }
}
