//! The boot bundle's disk: a virtio-blk device on one of the DTB's virtio-mmio slots, read with
//! `virtio-drivers` into memory.
//!
//! hyp runs with an identity map (VA == PA) and QEMU's virt virtio-mmio devices are DMA-coherent,
//! so DMA buffers are plain heap allocations, aligned to virtio's page size.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::fmt;
use core::ptr::NonNull;
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// The largest bundle hyp reads (a sanity bound against a bogus capacity).
const MAX_BUNDLE: u64 = 1 << 30;
/// Bytes per read request.
const CHUNK: usize = 1024 * 1024;

/// Why the bundle disk could not be read.
#[derive(Debug)]
pub enum DiskError {
    /// No virtio-mmio slot holds a block device.
    NoDisk,
    /// The device reports a capacity hyp refuses.
    TooLarge(u64),
    /// The driver failed.
    Virtio(virtio_drivers::Error),
    /// Out of memory for the bundle.
    NoMemory(u64),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::NoDisk => write!(
                f,
                "no virtio-blk disk with a boot bundle (run hyp through ./run)"
            ),
            DiskError::TooLarge(n) => write!(
                f,
                "bundle disk of {n} bytes exceeds the {MAX_BUNDLE}-byte limit"
            ),
            DiskError::Virtio(e) => write!(f, "virtio-blk: {e}"),
            DiskError::NoMemory(n) => write!(f, "cannot allocate {n} bytes for the bundle"),
        }
    }
}

/// DMA for virtio-drivers under hyp's identity map.
struct IdentityHal;

// SAFETY: dma_alloc returns zeroed, page-aligned, exclusively owned heap memory whose physical
// address equals its virtual address (hyp's EL2 identity map); share/unshare hand out the
// buffer's own address, valid because the map is the identity and the device is DMA-coherent.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE)
            .expect("invariant: virtio DMA sizes are small multiples of the page size");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).expect("invariant: the heap has room for virtio queues");
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE)
            .expect("invariant: same layout as dma_alloc");
        // SAFETY: the caller passes memory from dma_alloc with the same page count.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("invariant: MMIO addresses are not 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Finds the first virtio-blk device among `slots` (base, size) and reads it whole.
/// The bundle's memory comes from `alloc(size, align)` and is kept for good.
///
/// # Safety
/// - Every slot must be a virtio-mmio register frame, mapped Device-nGnRE in hyp's identity
///   map, that nothing else in hyp drives (the device DMAs into memory hyp hands it).
/// - `alloc` must return the address of `size` bytes aligned to `align`, identity-mapped
///   normal RAM that nothing else uses now or later (never freed), or `None`: the bytes
///   become the returned `&'static` slice.
pub unsafe fn read_bundle_disk(
    slots: &[(u64, u64)],
    alloc: fn(u64, u64) -> Option<u64>,
) -> Result<&'static [u8], DiskError> {
    for &(base, size) in slots {
        let Some(header) = NonNull::new(base as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: the caller guarantees `base` is a mapped virtio-mmio frame of `size` bytes
        // that nothing else in hyp drives.
        let transport = match unsafe { MmioTransport::new(header, size as usize) } {
            Ok(t) => t,
            Err(_) => continue, // an empty slot (device id 0) or a legacy device
        };
        if transport.device_type() != DeviceType::Block {
            continue;
        }
        // virtio-drivers reports the device at info level; hyp's output lines are its own.
        let level = log::max_level();
        log::set_max_level(level.min(log::LevelFilter::Warn));
        let blk = VirtIOBlk::<IdentityHal, _>::new(transport);
        log::set_max_level(level);
        let mut blk = blk.map_err(DiskError::Virtio)?;
        let bytes = blk.capacity() * SECTOR_SIZE as u64;
        if bytes > MAX_BUNDLE {
            return Err(DiskError::TooLarge(bytes));
        }
        let len = bytes as usize;
        // Host RAM straight from the physical allocator: no heap, and no zero-filling of a
        // buffer the device overwrites whole (tens of MiB on an emulated CPU).
        let pa = alloc(bytes.max(SECTOR_SIZE as u64), PAGE_SIZE as u64)
            .ok_or(DiskError::NoMemory(bytes))?;
        // SAFETY: the caller guarantees `alloc` hands out identity-mapped RAM used by nothing
        // else, for good (never freed); RAM always holds some bytes, so the slice is
        // initialized.
        let data = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, len) };
        let mut off = 0;
        while off < len {
            let n = CHUNK.min(len - off);
            blk.read_blocks(off / SECTOR_SIZE, &mut data[off..off + n])
                .map_err(DiskError::Virtio)?;
            off += n;
        }
        log::info!("hyp: bundle disk at {base:#x}: {len} bytes");
        return Ok(data);
    }
    Err(DiskError::NoDisk)
}
