//! Physical memory hyp hands out after boot: page-table frames and VM memory come from one
//! bump allocator over the largest free RAM range (see `el2::memmap`).

use el2::memmap::PhysBump;
use spin::mutex::SpinMutex;
use stage2::{AddrRange, Pa};

static PHYS: SpinMutex<Option<PhysBump>> = SpinMutex::new(None);

/// Gives the allocator its range (once, at boot).
pub fn init(range: AddrRange<Pa>) {
    *PHYS.lock() = Some(PhysBump::new(range));
}

/// `size` bytes of RAM aligned to `align` (a power of two), identity mapped (VA = PA) as
/// normal write-back memory, not zeroed. `None` when RAM is exhausted.
pub fn alloc_phys(size: u64, align: u64) -> Option<u64> {
    PHYS.lock().as_mut()?.alloc(size, align)
}

/// What is left.
pub fn remaining() -> AddrRange<Pa> {
    PHYS.lock()
        .as_ref()
        .map(|b| b.remaining())
        .unwrap_or_default()
}
