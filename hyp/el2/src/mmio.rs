//! [`MmioRegion`]: a device's register frame, the one way hyp's safe code reaches MMIO it drives
//! itself. Creating one is `unsafe` (the caller vouches that the range is a mapped device that
//! hyp may drive); after that every access is bounds-checked against the range, so no safe
//! function can touch memory outside the devices it was given.

use core::fmt;
use stage2::{AddrRange, Pa};

/// The register frame `[base, base + size)` of a device, at its (identity-mapped) address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MmioRegion {
    base: usize,
    size: usize,
}

impl fmt::Debug for MmioRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MmioRegion({:#x}+{:#x})", self.base, self.size)
    }
}

impl MmioRegion {
    /// The device registers at `[base, base + size)`.
    ///
    /// # Safety
    /// The range must be one device's registers, mapped (Device-nGnRE in hyp's identity map,
    /// or with the MMU off) for as long as the region is used, and hyp must be allowed to
    /// access every register in it with 32- and 64-bit accesses: nothing else (the guests,
    /// another driver) relies on their state. Accesses have only device side effects, never
    /// touch RAM.
    pub const unsafe fn new(base: usize, size: usize) -> Self {
        MmioRegion { base, size }
    }

    /// The device registers at the physical addresses `regs`, identity mapped (VA = PA).
    ///
    /// # Safety
    /// As for [`MmioRegion::new`].
    pub unsafe fn of(regs: AddrRange<Pa>) -> Self {
        MmioRegion {
            base: regs.start().get() as usize,
            size: regs.len() as usize,
        }
    }

    /// The first address.
    pub const fn base(&self) -> usize {
        self.base
    }

    /// Bytes in the region.
    pub const fn size(&self) -> usize {
        self.size
    }

    /// The part `[offset, offset + size)` of this region, if it lies inside it.
    pub fn sub(&self, offset: usize, size: usize) -> Option<MmioRegion> {
        let end = offset.checked_add(size)?;
        (end <= self.size).then_some(MmioRegion {
            base: self.base + offset,
            size,
        })
    }

    /// The address of the `bytes`-wide register at `offset`.
    ///
    /// Panics unless the register lies inside the region and is naturally aligned: offsets are
    /// hyp's own register constants, so anything else is a hyp bug.
    fn at(&self, offset: usize, bytes: usize) -> usize {
        assert!(
            offset
                .checked_add(bytes)
                .is_some_and(|end| end <= self.size)
                && offset.is_multiple_of(bytes),
            "invariant: register {offset:#x} ({bytes} bytes) inside {self:?}"
        );
        self.base + offset
    }

    /// Reads the 32-bit register at `offset`.
    pub fn read32(&self, offset: usize) -> u32 {
        let p = self.at(offset, 4) as *const u32;
        // SAFETY: inside the region (checked) and aligned; `new`'s caller vouched that the
        // region's registers are mapped and hyp's to access.
        unsafe { p.read_volatile() }
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write32(&self, offset: usize, value: u32) {
        let p = self.at(offset, 4) as *mut u32;
        // SAFETY: as in `read32`.
        unsafe { p.write_volatile(value) }
    }

    /// Reads the 64-bit register at `offset`.
    pub fn read64(&self, offset: usize) -> u64 {
        let p = self.at(offset, 8) as *const u64;
        // SAFETY: as in `read32`.
        unsafe { p.read_volatile() }
    }

    /// Writes the 64-bit register at `offset`.
    pub fn write64(&self, offset: usize, value: u64) {
        let p = self.at(offset, 8) as *mut u64;
        // SAFETY: as in `read32`.
        unsafe { p.write_volatile(value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host buffer stands in for a device frame.
    fn frame(buf: &mut [u64; 4]) -> MmioRegion {
        // SAFETY: the buffer is 32 bytes of memory this test owns for the region's lifetime.
        unsafe { MmioRegion::new(buf.as_mut_ptr() as usize, 32) }
    }

    #[test]
    fn accesses_stay_inside_the_region() {
        let mut buf = [0u64; 4];
        let r = frame(&mut buf);
        r.write32(4, 0xdead_beef);
        r.write64(8, 0x1122_3344_5566_7788);
        assert_eq!(r.read32(4), 0xdead_beef);
        assert_eq!(r.read64(8), 0x1122_3344_5566_7788);
        assert_eq!(r.read32(28), 0);
        let sub = r.sub(8, 16).unwrap();
        assert_eq!(sub.read64(0), 0x1122_3344_5566_7788);
        assert_eq!(r.sub(24, 16), None);
        assert_eq!(r.sub(usize::MAX, 2), None);
        assert_eq!(buf[1], 0x1122_3344_5566_7788);
    }

    #[test]
    #[should_panic(expected = "invariant")]
    fn an_access_past_the_end_is_refused() {
        let mut buf = [0u64; 4];
        frame(&mut buf).read32(32);
    }

    #[test]
    #[should_panic(expected = "invariant")]
    fn a_misaligned_access_is_refused() {
        let mut buf = [0u64; 4];
        frame(&mut buf).read64(4);
    }
}
