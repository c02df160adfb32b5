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

/// `r` rounded out to multiples of `align` (a power of two): the start down, the end up, or
/// to the last address when rounding it up would pass 2^64 - 1.
pub fn round_out(r: AddrRange<Pa>, align: u64) -> AddrRange<Pa> {
    let start = r.start().align_down(align);
    let end = r.end().align_up(align).unwrap_or(Pa::new(u64::MAX));
    AddrRange::new(start, end).expect("invariant: rounding out keeps the end after the start")
}

/// Merges the ranges of `ranges` that overlap or touch, in place: sorts them by start and
/// returns how many merged ranges now lead the slice, in address order (no address is in two
/// of them, and every address of the input is in one).
pub fn merge(ranges: &mut [AddrRange<Pa>]) -> usize {
    ranges.sort_unstable_by_key(|r| r.start());
    let mut n = 0usize;
    for i in 0..ranges.len() {
        let r = ranges[i];
        match n.checked_sub(1).map(|last| (last, ranges[last])) {
            Some((last, cur)) if r.start() <= cur.end() => {
                ranges[last] = AddrRange::new(cur.start(), cur.end().max(r.end()))
                    .expect("invariant: sorted by start, so the merged end is after its start");
            }
            _ => {
                ranges[n] = r;
                n += 1;
            }
        }
    }
    n
}

/// Bytes of hyp's heap when `free` bytes of RAM are free at boot: a quarter of them, between
/// 16 MiB and 256 MiB, in whole 64 KiB.
pub fn heap_size(free: u64) -> u64 {
    (free / 4).clamp(16 << 20, 256 << 20) & !0xffff
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

    /// `start..end`.
    fn span(start: u64, end: u64) -> AddrRange<Pa> {
        AddrRange::new(Pa::new(start), Pa::new(end)).unwrap()
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
    fn device_ranges_round_out_to_the_granule() {
        // QEMU virt's PL011 is 4 KiB: a 64K EL2 map takes the whole 64 KiB around it.
        assert_eq!(
            round_out(pr(0x900_0000, 0x1000), 0x1_0000),
            pr(0x900_0000, 0x1_0000)
        );
        assert_eq!(
            round_out(pr(0x900_1800, 0x10), 0x1000),
            pr(0x900_1000, 0x1000)
        );
        assert_eq!(round_out(pr(0x4000, 0x4000), 0x4000), pr(0x4000, 0x4000));
        // Rounding the end up past the last address stops there.
        let top = round_out(pr(u64::MAX - 0x1fff, 0x1000), 0x1_0000);
        assert_eq!(top.start(), Pa::new(u64::MAX - 0xffff));
        assert_eq!(top.end(), Pa::new(u64::MAX));
    }

    #[test]
    fn merging_joins_what_overlaps_or_touches() {
        // A 64K map of QEMU virt: UART, GICD, GICR (two regions that touch), out of order.
        let mut r = [
            pr(0x80a_0000, 0xf6_0000),
            pr(0x900_0000, 0x1_0000),
            pr(0x800_0000, 0x1_0000),
            pr(0x800_0000, 0x1_0000), // a duplicate
            pr(0x100_0000, 0x2000),
            pr(0x100_1000, 0x4000), // overlaps the one before
            pr(0x1000_0000, 0x1000),
            pr(0xa0_0000, 0x60_0000), // touches 0x100_0000
        ];
        let n = merge(&mut r);
        assert_eq!(
            r[..n],
            [
                span(0xa0_0000, 0x100_5000),
                span(0x800_0000, 0x801_0000),
                span(0x80a_0000, 0x901_0000),
                span(0x1000_0000, 0x1000_1000),
            ]
        );
        assert_eq!(merge(&mut []), 0);
        let mut one = [pr(0x1000, 0x1000)];
        assert_eq!(merge(&mut one), 1);
    }

    #[test]
    fn the_heap_is_a_quarter_of_free_ram_within_bounds() {
        // QEMU virt with -m 2G: [0x4810_0000, 0xc000_0000) free after the image and the DTB.
        assert_eq!(heap_size(0xc000_0000 - 0x4810_0000), 256 << 20);
        assert_eq!(heap_size(200 << 20), 50 << 20);
        assert_eq!(heap_size(0), 16 << 20, "at least 16 MiB");
        assert_eq!(heap_size(64 << 20), 16 << 20);
        assert_eq!(heap_size(4 << 30), 256 << 20, "at most 256 MiB");
        assert_eq!(heap_size(u64::MAX), 256 << 20);
        assert_eq!(heap_size((100 << 20) + 0x1_2344), 25 << 20, "whole 64 KiB");
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
