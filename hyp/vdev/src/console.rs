//! A VM's console output queue: complete lines waiting for the physical UART, bounded, with
//! counted drops.
//!
//! Each VM's virtual UART hands its lines (`[<name>] text`, see [`crate::pl011`]) to the VM's
//! own [`OutQueue`]; hyp writes queued lines to the one physical UART round robin by VM, outside
//! every VM's locks. A VM that writes faster than the physical UART drains loses lines, never
//! memory or another VM's time: when a line does not fit, its bytes are counted, and the next
//! line that does fit is preceded by the marker `[<name>] ... (N bytes dropped)`.
//!
//! The queue holds bytes in a ring of fixed capacity allocated once; pushing and popping never
//! allocate.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use core::fmt::Write;

/// Bytes of queued output per VM (lines and their terminators).
pub const QUEUE_BYTES: usize = 16 * 1024;

/// The longest line [`OutQueue::pop`] can return: a `[<name>] ` prefix of a 32-character name,
/// then a line of [`crate::pl011::MAX_LINE`] bytes, or the drop marker.
pub const LINE_BYTES: usize = 3 + 32 + crate::pl011::MAX_LINE;

/// One VM's queued console lines.
#[derive(Debug)]
pub struct OutQueue {
    ring: Box<[u8]>,
    head: usize,
    len: usize,
    /// `[<name>] `, for the drop marker.
    prefix: String,
    /// Guest bytes (line text and its newline) dropped since the last marker.
    dropped: u64,
    /// Every byte ever dropped, for the VM's exit report.
    dropped_total: u64,
}

/// A tiny `fmt::Write` over a fixed buffer (for the marker line).
struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let b = s.as_bytes();
        let end = self.len.checked_add(b.len()).ok_or(core::fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

impl OutQueue {
    /// An empty queue of `capacity` bytes for the VM called `name` (at most 32 characters).
    pub fn new(name: &str, capacity: usize) -> Self {
        let mut prefix = String::with_capacity(name.len() + 3);
        prefix.push('[');
        prefix.push_str(&name[..name.len().min(32)]);
        prefix.push_str("] ");
        OutQueue {
            ring: vec![0; capacity.max(LINE_BYTES + 1)].into_boxed_slice(),
            head: 0,
            len: 0,
            prefix,
            dropped: 0,
            dropped_total: 0,
        }
    }

    /// Whether nothing waits to be written (no line and no drop marker).
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.dropped == 0
    }

    /// Guest bytes dropped so far because the queue was full.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    fn free(&self) -> usize {
        self.ring.len() - self.len
    }

    fn put(&mut self, bytes: &[u8]) {
        let cap = self.ring.len();
        for &b in bytes {
            let i = (self.head + self.len) % cap;
            self.ring[i] = b;
            self.len += 1;
        }
    }

    /// Formats the drop marker into `out`; returns its length.
    fn marker(&self, out: &mut [u8]) -> usize {
        let mut w = Buf { buf: out, len: 0 };
        // `out` is LINE_BYTES long, the marker at most 35 + 37 bytes: this cannot fail.
        let _ = write!(w, "{}... ({} bytes dropped)", self.prefix, self.dropped);
        w.len
    }

    /// Queues one complete line (`[<name>] text`, no terminator, at most [`LINE_BYTES`]).
    /// When it does not fit it is dropped and counted; a pending drop marker goes first.
    pub fn push(&mut self, line: &str) {
        let line = &line.as_bytes()[..line.len().min(LINE_BYTES)];
        let guest_bytes = line.len().saturating_sub(self.prefix.len()) as u64 + 1;
        if self.dropped > 0 {
            let mut m = [0u8; LINE_BYTES];
            let n = self.marker(&mut m);
            if self.free() < n + 1 + line.len() + 1 {
                self.dropped += guest_bytes;
                self.dropped_total += guest_bytes;
                return;
            }
            self.put(&m[..n]);
            self.put(b"\n");
            self.dropped = 0;
        }
        if self.free() < line.len() + 1 {
            self.dropped += guest_bytes;
            self.dropped_total += guest_bytes;
            return;
        }
        self.put(line);
        self.put(b"\n");
    }

    /// Takes the oldest line into `out` (without its terminator) and returns its length;
    /// `None` when the queue is empty. When only a drop count is left, the marker is returned.
    pub fn pop(&mut self, out: &mut [u8; LINE_BYTES]) -> Option<usize> {
        if self.len == 0 {
            if self.dropped == 0 {
                return None;
            }
            let n = self.marker(out);
            self.dropped = 0;
            return Some(n);
        }
        let cap = self.ring.len();
        let mut n = 0;
        loop {
            let b = self.ring[self.head];
            self.head = (self.head + 1) % cap;
            self.len -= 1;
            if b == b'\n' || self.len == 0 {
                break;
            }
            if n < LINE_BYTES {
                out[n] = b;
                n += 1;
            }
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn drain(q: &mut OutQueue) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; LINE_BYTES];
        while let Some(n) = q.pop(&mut buf) {
            out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn lines_come_out_in_order() {
        let mut q = OutQueue::new("a", 4096);
        assert!(q.is_empty());
        q.push("[a] one");
        q.push("[a] two");
        assert!(!q.is_empty());
        assert_eq!(drain(&mut q), ["[a] one", "[a] two"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_drops_counts_and_marks() {
        let mut q = OutQueue::new("flood", LINE_BYTES + 1);
        let line = format!("[flood] {}", "x".repeat(300));
        q.push(&line); // fits
        q.push(&line); // dropped: 301 guest bytes
        q.push(&line); // dropped
        assert_eq!(q.dropped_total(), 602);
        let out = drain(&mut q);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], line);
        assert_eq!(out[1], "[flood] ... (602 bytes dropped)");
        // Room again: the next line comes through after nothing else.
        q.push("[flood] back");
        assert_eq!(drain(&mut q), ["[flood] back"]);
    }

    #[test]
    fn marker_precedes_the_next_line_that_fits() {
        let mut q = OutQueue::new("v", LINE_BYTES + 1);
        let big = format!("[v] {}", "y".repeat(400));
        q.push(&big);
        q.push(&big); // dropped, 401 bytes
        let mut buf = [0u8; LINE_BYTES];
        assert_eq!(q.pop(&mut buf), Some(big.len()));
        q.push("[v] small");
        assert_eq!(drain(&mut q), ["[v] ... (401 bytes dropped)", "[v] small"]);
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes minutes under miri")]
    fn memory_stays_bounded_under_any_flood() {
        let mut q = OutQueue::new("f", QUEUE_BYTES);
        let cap = q.ring.len();
        for i in 0..100_000 {
            let line = format!("[f] {}", "z".repeat(i % 600));
            q.push(&line);
            assert!(q.len <= cap);
            if i % 97 == 0 {
                let mut buf = [0u8; LINE_BYTES];
                q.pop(&mut buf);
            }
        }
        assert_eq!(q.ring.len(), cap, "never reallocated");
        let total: u64 = q.dropped_total();
        assert!(total > 1_000_000);
        let out = drain(&mut q);
        assert!(out.iter().all(|l| l.len() <= LINE_BYTES));
    }
}
