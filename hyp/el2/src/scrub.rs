//! Scrubbing guest RAM off the boot path: a VM's RAM is split into [`CHUNK`]-byte chunks, and
//! each chunk is filled exactly once, by whichever CPU needs it first, before any stage-2
//! entry maps it.
//!
//! Filling a chunk writes its final initial contents: the bytes of the VM's images (kernel,
//! initrd, device tree) that fall in it, and zeros everywhere else ([`segments`]), so no byte
//! is written twice and no byte is left as hyp, firmware or an earlier user left it. A chunk
//! is filled on the VM's first stage-2 fault in it, or earlier by a CPU with nothing else to do
//! ([`Chunks::claim`]); hyp maps a chunk at stage 2 only after [`Chunks::ensure`] (or
//! [`Chunks::finish`]) says it is ready, so a guest can never read a byte of it before it was
//! filled.
//!
//! Each chunk's state is one atomic byte, dirty → filling → ready. Claiming is a
//! compare-and-swap from dirty, so exactly one CPU fills a chunk; ready is stored with
//! `Release` after the fill (and the caller's cache maintenance) and read with `Acquire`, so a
//! CPU that sees ready also sees the filled bytes. A CPU that needs a chunk another CPU is
//! filling waits for it (a fill is bounded: [`CHUNK`] bytes of stores, no locks).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Bytes per chunk: the smallest stage-2 block (a 4K granule's level-2 block), so that a chunk
/// is a whole number of pages of every granule.
pub const CHUNK: u64 = 2 << 20;

const DIRTY: u8 = 0;
const FILLING: u8 = 1;
const READY: u8 = 2;

/// The fill state of one VM's RAM.
pub struct Chunks {
    size: u64,
    state: Box<[AtomicU8]>,
    /// Where [`Chunks::claim`] looks first (every chunk below it was claimed once).
    cursor: AtomicUsize,
    /// Chunks not ready yet.
    left: AtomicUsize,
}

impl Chunks {
    /// `size` bytes of RAM, every chunk dirty (the last one may be shorter than [`CHUNK`]).
    pub fn new(size: u64) -> Chunks {
        let n = size.div_ceil(CHUNK) as usize;
        Chunks {
            size,
            state: (0..n).map(|_| AtomicU8::new(DIRTY)).collect(),
            cursor: AtomicUsize::new(0),
            left: AtomicUsize::new(n),
        }
    }

    /// The number of chunks.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether there is no RAM at all.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// The RAM offsets of chunk `i`.
    pub fn range(&self, i: usize) -> Range<u64> {
        let start = i as u64 * CHUNK;
        start..(start + CHUNK).min(self.size)
    }

    /// Whether every chunk is ready (nothing is left to fill).
    pub fn all_ready(&self) -> bool {
        self.left.load(Ordering::Acquire) == 0
    }

    /// Whether every chunk that overlaps `range` (RAM offsets) is ready.
    pub fn ready(&self, range: Range<u64>) -> bool {
        let end = range.end.min(self.size);
        range.start >= end
            || self.state[(range.start / CHUNK) as usize..end.div_ceil(CHUNK) as usize]
                .iter()
                .all(|s| s.load(Ordering::Acquire) == READY)
    }

    /// Makes every chunk that overlaps `range` (RAM offsets) ready: fills each dirty one with
    /// `fill(chunk range)` and waits for any another CPU is filling. Returns whether one of
    /// them was not ready when this call looked at it (its RAM was never mapped).
    pub fn ensure(&self, range: Range<u64>, mut fill: impl FnMut(Range<u64>)) -> bool {
        let end = range.end.min(self.size);
        if range.start >= end {
            return false;
        }
        let mut fresh = false;
        for i in (range.start / CHUNK) as usize..end.div_ceil(CHUNK) as usize {
            let s = &self.state[i];
            loop {
                match s.compare_exchange(DIRTY, FILLING, Ordering::Acquire, Ordering::Acquire) {
                    Ok(_) => {
                        fresh = true;
                        fill(self.range(i));
                        self.finish(i);
                        break;
                    }
                    Err(READY) => break,
                    Err(_) => {
                        fresh = true;
                        core::hint::spin_loop();
                    }
                }
            }
        }
        fresh
    }

    /// Claims a dirty chunk for a CPU with nothing else to do: returns its index (fill
    /// [`Chunks::range`] of it, then call [`Chunks::finish`]), or `None` when none is dirty.
    pub fn claim(&self) -> Option<usize> {
        let mut i = self.cursor.load(Ordering::Relaxed);
        while i < self.state.len() {
            if self.state[i]
                .compare_exchange(DIRTY, FILLING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.cursor.fetch_max(i + 1, Ordering::Relaxed);
                return Some(i);
            }
            i += 1;
        }
        self.cursor.fetch_max(i, Ordering::Relaxed);
        None
    }

    /// Marks chunk `i`, claimed and filled by this CPU, ready.
    pub fn finish(&self, i: usize) {
        let was = self.state[i].swap(READY, Ordering::Release);
        debug_assert_eq!(was, FILLING, "chunk {i} finished without being claimed");
        self.left.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One part of a chunk's initial contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// These RAM offsets start as zeros.
    Zero(Range<u64>),
    /// These RAM offsets hold `images[image]` from byte `from` on.
    Image {
        /// The index into the images passed to [`segments`].
        image: usize,
        /// The RAM offsets.
        dst: Range<u64>,
        /// The offset into the image.
        from: u64,
    },
}

/// The initial contents of RAM offsets `chunk`: the parts of `images` (RAM offset and length
/// of each, sorted by offset and not overlapping) inside it and zeros between them, in
/// address order, covering `chunk` exactly once.
pub fn segments(chunk: Range<u64>, images: &[(u64, u64)]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = chunk.start;
    for (image, &(off, len)) in images.iter().enumerate() {
        let s = off.max(at);
        let e = off.saturating_add(len).min(chunk.end);
        if s >= e {
            continue;
        }
        if s > at {
            out.push(Segment::Zero(at..s));
        }
        out.push(Segment::Image {
            image,
            dst: s..e,
            from: s - off,
        });
        at = e;
    }
    if at < chunk.end {
        out.push(Segment::Zero(at..chunk.end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Plays `segments` into a byte array: images' bytes are their index + 1, zeros 0.
    fn paint(chunk: Range<u64>, images: &[(u64, u64)]) -> Vec<u8> {
        let mut b = alloc::vec![0xa5u8; (chunk.end - chunk.start) as usize];
        let mut covered = alloc::vec![0u32; b.len()];
        for seg in segments(chunk.clone(), images) {
            let (r, v) = match seg {
                Segment::Zero(r) => (r, 0),
                Segment::Image { image, dst, from } => {
                    assert_eq!(from, dst.start - images[image].0);
                    (dst, image as u8 + 1)
                }
            };
            for a in r {
                let i = (a - chunk.start) as usize;
                b[i] = v;
                covered[i] += 1;
            }
        }
        assert!(covered.iter().all(|&c| c == 1), "{chunk:?} {images:?}");
        b
    }

    #[test]
    fn a_chunk_is_its_images_and_zeros_around_them_each_byte_once() {
        let images = [(10, 5), (15, 3), (40, 100)];
        let b = paint(0..64, &images);
        let mut want = alloc::vec![0u8; 64];
        want[10..15].fill(1);
        want[15..18].fill(2);
        want[40..64].fill(3);
        assert_eq!(b, want);
        // The next chunk starts inside the third image.
        let b = paint(64..128, &images);
        assert_eq!(b, alloc::vec![3u8; 64]);
        assert_eq!(
            segments(64..128, &images),
            [Segment::Image {
                image: 2,
                dst: 64..128,
                from: 24
            }]
        );
        // No image: all zeros.
        assert_eq!(segments(0..64, &[]), [Segment::Zero(0..64)]);
        assert_eq!(segments(0..64, &[(100, 4)]), [Segment::Zero(0..64)]);
    }

    #[test]
    fn every_image_layout_covers_each_byte_once() {
        // Every placement of two short images around the edges of a 16-byte chunk.
        for a in 0..24u64 {
            for la in 0..6 {
                for b in a + la..28 {
                    for lb in 0..6 {
                        let images = [(a, la), (b, lb)];
                        let got = paint(8..24, &images);
                        for (i, &v) in got.iter().enumerate() {
                            let x = 8 + i as u64;
                            let want = if (a..a + la).contains(&x) {
                                1
                            } else if (b..b + lb).contains(&x) {
                                2
                            } else {
                                0
                            };
                            assert_eq!(v, want, "{images:?} at {x}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn chunks_cover_ram_and_the_last_may_be_short() {
        let c = Chunks::new(3 * CHUNK + 4096);
        assert_eq!(c.len(), 4);
        assert_eq!(c.range(0), 0..CHUNK);
        assert_eq!(c.range(3), 3 * CHUNK..3 * CHUNK + 4096);
        assert!(Chunks::new(0).is_empty());
        assert!(Chunks::new(0).all_ready());
    }

    #[test]
    fn ensure_fills_each_overlapping_chunk_once_and_says_if_any_was_fresh() {
        let c = Chunks::new(4 * CHUNK);
        let mut filled = Vec::new();
        assert!(c.ensure(CHUNK - 1..CHUNK + 1, |r| filled.push(r)));
        assert_eq!(filled, [0..CHUNK, CHUNK..2 * CHUNK]);
        assert!(!c.ensure(0..2 * CHUNK, |r| panic!("{r:?} filled twice")));
        assert!(!c.ensure(5 * CHUNK..6 * CHUNK, |r| panic!("{r:?} is beyond RAM")));
        assert!(!c.all_ready());
        assert!(c.ready(0..2 * CHUNK) && !c.ready(0..2 * CHUNK + 1));
        assert_eq!(c.claim(), Some(2));
        assert!(!c.ready(2 * CHUNK..3 * CHUNK), "claimed is not ready");
        // Chunk 3 is filled here; chunk 2 is being filled "by another CPU", which ensure
        // waits for.
        std::thread::scope(|t| {
            t.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                c.finish(2);
            });
            assert!(c.ensure(2 * CHUNK..4 * CHUNK, |r| {
                assert_eq!(r, 3 * CHUNK..4 * CHUNK);
            }));
            assert!(c.ready(2 * CHUNK..4 * CHUNK));
        });
        assert!(c.all_ready());
        assert_eq!(c.claim(), None);
    }

    /// CPUs racing for chunks through both paths, started together: every chunk is filled
    /// exactly once, and a CPU that `ensure` returned to always sees its chunk filled.
    #[test]
    fn racing_cpus_fill_every_chunk_exactly_once() {
        for _ in 0..20 {
            race(4096);
        }
    }

    fn race(n: usize) {
        let c = Chunks::new(n as u64 * CHUNK);
        let fills: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (c, fills, start) = (&c, &fills, &start);
                s.spawn(move || {
                    start.wait();
                    if t < 2 {
                        for k in 0..n {
                            let i = if t == 0 { k } else { n - 1 - k };
                            c.ensure(c.range(i), |r| {
                                fills[(r.start / CHUNK) as usize].fetch_add(1, Ordering::Relaxed);
                            });
                            assert_eq!(fills[i].load(Ordering::Relaxed), 1);
                        }
                    } else {
                        while let Some(j) = c.claim() {
                            fills[j].fetch_add(1, Ordering::Relaxed);
                            c.finish(j);
                        }
                    }
                });
            }
        });
        let twice = fills
            .iter()
            .filter(|f| f.load(Ordering::Relaxed) != 1)
            .count();
        assert_eq!(twice, 0, "chunks not filled exactly once");
        assert!(c.all_ready());
    }
}
