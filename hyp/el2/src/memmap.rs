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

use stage2::{AddrRange, Pa};

/// The largest piece of `ram` that overlaps none of `reserved` (empty reserved ranges reserve
/// nothing).
pub fn largest_free(ram: &[AddrRange<Pa>], reserved: &[AddrRange<Pa>]) -> Option<AddrRange<Pa>> {
    let mut best: Option<AddrRange<Pa>> = None;
    for r in ram {
        let starts = core::iter::once(r.start()).chain(
            reserved
                .iter()
                .map(|x| x.end())
                .filter(|&e| r.start() < e && e < r.end()),
        );
        for s in starts {
            if reserved.iter().any(|x| x.contains(s)) {
                continue;
            }
            let e = reserved
                .iter()
                .filter(|x| !x.is_empty() && x.start() > s)
                .map(|x| x.start())
                .fold(r.end(), Pa::min);
            let Ok(piece) = AddrRange::new(s, e) else {
                continue;
            };
            if !piece.is_empty() && best.is_none_or(|b| piece.len() > b.len()) {
                best = Some(piece);
            }
        }
    }
    best
}

/// The `size` bytes at `base`, cut at the last address when `base + size` is beyond
/// 2^64 - 1: how a device tree's `reg` entries and `/memreserve/` pairs are taken (a range
/// that wraps names no memory past the top of the address space).
pub fn saturating_range(base: u64, size: u64) -> AddrRange<Pa> {
    let (start, end) = (Pa::new(base), Pa::new(base.saturating_add(size)));
    AddrRange::new(start, end).expect("invariant: a saturated end is not below its start")
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
    pub fn new(range: AddrRange<Pa>) -> Self {
        PhysBump {
            next: range.start().get(),
            end: range.end().get(),
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
    pub fn remaining(&self) -> AddrRange<Pa> {
        AddrRange::new(Pa::new(self.next), Pa::new(self.end))
            .expect("invariant: the bump pointer never passes the end")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `size` bytes at `base`.
    fn pr(base: u64, size: u64) -> AddrRange<Pa> {
        AddrRange::from_start_len(Pa::new(base), size).unwrap()
    }

    /// QEMU virt's 2 GiB of RAM.
    fn ram() -> AddrRange<Pa> {
        pr(0x4000_0000, 0x8000_0000)
    }

    #[test]
    fn qemu_layout_picks_the_gap_after_the_image() {
        let image = pr(0x4000_0000, 0x60_0000); // stub + image
        let dtb = pr(0x4800_0000, 0x2000);
        let f = largest_free(&[ram()], &[image, dtb]).unwrap();
        assert_eq!(f, pr(0x4800_2000, 0x77ff_e000));
        // DTB low: the gap after the image wins when it is the larger one.
        let dtb = pr(0xbff0_0000, 0x2000);
        let f = largest_free(&[ram()], &[image, dtb]).unwrap();
        assert_eq!(f, pr(0x4060_0000, 0xbff0_0000 - 0x4060_0000));
    }

    #[test]
    fn reserved_outside_ram_and_overlapping_reserved() {
        let far = pr(0x1_0000_0000_0000, 0x1000);
        assert_eq!(largest_free(&[ram()], &[far]), Some(ram()));
        let a = pr(0x4000_0000, 0x1000_0000);
        let b = pr(0x4800_0000, 0x1000_0000); // overlaps a
        let f = largest_free(&[ram()], &[a, b]).unwrap();
        assert_eq!(f, pr(0x5800_0000, 0xc000_0000 - 0x5800_0000));
        // Everything reserved.
        assert_eq!(largest_free(&[ram()], &[ram()]), None);
        assert_eq!(largest_free(&[], &[]), None);
    }

    #[test]
    fn several_ram_banks() {
        let small = pr(0x4000_0000, 0x100_0000);
        let big = pr(0x1_0000_0000, 0x4000_0000);
        assert_eq!(largest_free(&[small, big], &[]), Some(big));
    }

    #[test]
    fn bump() {
        let mut b = PhysBump::new(pr(0x1000, 0x10000));
        assert_eq!(b.alloc(0x10, 8), Some(0x1000));
        assert_eq!(b.alloc(0x4000, 0x4000), Some(0x4000));
        assert_eq!(b.alloc(0x1, 3), None);
        assert_eq!(b.alloc(0x10000, 8), None);
        assert_eq!(b.remaining(), pr(0x8000, 0x9000));
        assert_eq!(b.alloc(0x9000, 0x1000), Some(0x8000));
        assert_eq!(b.alloc(1, 1), None);
        assert_eq!(align_up(u64::MAX, 0x1000), None);
    }
}
