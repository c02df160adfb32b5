//! Host physical memory: which RAM hyp may hand out, and a bump allocator over it.
//!
//! ```text
//!  RAM (QEMU virt: 0x4000_0000 ..)
//!  +------------------+----------------------------+-----+-----------------------------+
//!  | QEMU boot stub,  | hyp image: text, rodata,   | ... | DTB (x0), left in place     |
//!  | unused (2 MiB)   | data, bss, stacks          |     | and reserved                |
//!  +------------------+----------------------------+-----+-----------------------------+
//!                      ^ 0x4020_0000 (text_offset)   ^ the largest free piece is split:
//!                                                      heap, then page-table frames and
//!                                                      VM memory (bump, never freed)
//! ```

use crate::dt::PhysRange;

/// The largest piece of `ram` that overlaps none of `reserved`.
pub fn largest_free(ram: &[PhysRange], reserved: &[PhysRange]) -> Option<PhysRange> {
    let mut best: Option<PhysRange> = None;
    for r in ram {
        let starts = core::iter::once(r.base).chain(
            reserved
                .iter()
                .map(|x| x.end())
                .filter(|&e| r.base < e && e < r.end()),
        );
        for s in starts {
            if reserved.iter().any(|x| x.contains(s) && x.size > 0) {
                continue;
            }
            let e = reserved
                .iter()
                .filter(|x| x.size > 0 && x.base > s)
                .map(|x| x.base)
                .fold(r.end(), u64::min);
            let piece = PhysRange::new(s, e - s);
            if piece.size > 0 && best.is_none_or(|b| piece.size > b.size) {
                best = Some(piece);
            }
        }
    }
    best
}

/// Rounds `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(x: u64, align: u64) -> Option<u64> {
    match x.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// A bump allocator of physical memory: hands out aligned ranges, never frees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysBump {
    next: u64,
    end: u64,
}

impl PhysBump {
    /// An allocator over `range`.
    pub const fn new(range: PhysRange) -> Self {
        PhysBump {
            next: range.base,
            end: range.end(),
        }
    }

    /// `size` bytes aligned to `align` (a power of two), or `None` when out of memory.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        if !align.is_power_of_two() {
            return None;
        }
        let base = align_up(self.next, align)?;
        let end = base.checked_add(size)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(base)
    }

    /// What is left.
    pub fn remaining(&self) -> PhysRange {
        PhysRange::new(self.next, self.end - self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: PhysRange = PhysRange::new(0x4000_0000, 0x8000_0000);

    #[test]
    fn qemu_layout_picks_the_gap_after_the_image() {
        let image = PhysRange::new(0x4000_0000, 0x60_0000); // stub + image
        let dtb = PhysRange::new(0x4800_0000, 0x2000);
        let f = largest_free(&[RAM], &[image, dtb]).unwrap();
        assert_eq!(f, PhysRange::new(0x4800_2000, 0x77ff_e000));
        // DTB low: the gap after the image wins when it is the larger one.
        let dtb = PhysRange::new(0xbff0_0000, 0x2000);
        let f = largest_free(&[RAM], &[image, dtb]).unwrap();
        assert_eq!(f, PhysRange::new(0x4060_0000, 0xbff0_0000 - 0x4060_0000));
    }

    #[test]
    fn reserved_outside_ram_and_overlapping_reserved() {
        let far = PhysRange::new(0x1_0000_0000_0000, 0x1000);
        assert_eq!(largest_free(&[RAM], &[far]), Some(RAM));
        let a = PhysRange::new(0x4000_0000, 0x1000_0000);
        let b = PhysRange::new(0x4800_0000, 0x1000_0000); // overlaps a
        let f = largest_free(&[RAM], &[a, b]).unwrap();
        assert_eq!(f, PhysRange::new(0x5800_0000, RAM.end() - 0x5800_0000));
        // Everything reserved.
        assert_eq!(largest_free(&[RAM], &[RAM]), None);
        assert_eq!(largest_free(&[], &[]), None);
    }

    #[test]
    fn several_ram_banks() {
        let small = PhysRange::new(0x4000_0000, 0x100_0000);
        let big = PhysRange::new(0x1_0000_0000, 0x4000_0000);
        assert_eq!(largest_free(&[small, big], &[]), Some(big));
    }

    #[test]
    fn bump() {
        let mut b = PhysBump::new(PhysRange::new(0x1000, 0x10000));
        assert_eq!(b.alloc(0x10, 8), Some(0x1000));
        assert_eq!(b.alloc(0x4000, 0x4000), Some(0x4000));
        assert_eq!(b.alloc(0x1, 3), None);
        assert_eq!(b.alloc(0x10000, 8), None);
        assert_eq!(b.remaining(), PhysRange::new(0x8000, 0x9000));
        assert_eq!(b.alloc(0x9000, 0x1000), Some(0x8000));
        assert_eq!(b.alloc(1, 1), None);
        assert_eq!(align_up(u64::MAX, 0x1000), None);
    }
}
