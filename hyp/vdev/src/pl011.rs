//! A virtual PL011 UART (PrimeCell UART, DDI 0183 r1p5) as an MMIO state machine.
//!
//! Transmission is instantaneous: a byte written to `UARTDR` (with `UARTEN` and `TXE` set) goes
//! straight to the output line buffer, so the transmit FIFO is always empty (`TXFE` = 1,
//! `TXFF` = 0, `BUSY` = 0). Output reaches the caller's [`LineSink`] one line at a time as
//! `[<name>] <line>`.
//!
//! Interrupts (DDI 0183 §3.4, and what Linux's `amba-pl011.c` relies on):
//! - **TX** (`TXRIS`): the TRM asserts it when the transmit FIFO level falls to the trigger
//!   level and clears it when data is written above the level or by `UARTICR`. Our FIFO drains
//!   the moment a byte is written, so every transmitted byte passes through the trigger level:
//!   `TXRIS` is latched on each transmitted byte and cleared only by `UARTICR.TXIC`. Linux's
//!   interrupt-driven writes therefore always see the TX interrupt after they fill the FIFO,
//!   and once Linux has nothing left to send it masks `TXIM` (`pl011_stop_tx`), which silences
//!   `UARTMIS`/`irq_level` without a storm.
//! - **RX** (`RXRIS`): latched when a received byte brings the FIFO to the trigger level
//!   (`UARTIFLS.RXIFLSEL` of 32 entries, or 1 without FIFOs); cleared when reads bring it below
//!   the level, or by `UARTICR.RXIC`.
//! - **Receive timeout** (`RTRIS`): the TRM asserts it when the FIFO is not empty and no data
//!   arrived for 32 bit periods. We have no bit clock, so it is latched as soon as a byte is
//!   received (the timeout is modelled as zero); cleared when the FIFO becomes empty, or by
//!   `UARTICR.RTIC`. Linux treats RTIS and RXIS alike and drains the FIFO.
//! - Modem-status and error interrupts never fire (the virtual line has no errors and its
//!   modem lines are constant: CTS, DSR and DCD asserted).
//!
//! `irq_level()` is `(UARTRIS & UARTIMSC) != 0`, the `UARTINTR` output the vGIC samples for
//! the UART's SPI (level-triggered).

use crate::mmio::{check_aligned, AccessSize, MmioError};
use alloc::string::String;
use alloc::vec::Vec;
use platform::virt::UART_SIZE;

/// Depth of the receive FIFO with `UARTLCR_H.FEN` set (r1p5: 32 entries).
pub const FIFO_DEPTH: usize = 32;
/// Longest line passed to the sink (the prefix not counted); longer output is split.
pub const MAX_LINE: usize = 512;

pub use platform::pl011::{fr, int, reg};
use platform::pl011::{CR_RXE, CR_TXE, CR_UARTEN, LCR_H_FEN};

/// PeriphID0-3 then PCellID0-3 of an Arm PL011 r1p5 (DDI 0183 §4.3): part 0x011, designer
/// 0x41 ('A'), revision 3, PrimeCell ID 0xB105F00D. Linux's AMBA bus matches on these.
pub const ID_REGS: [u8; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Where the UART's output lines go (the host console).
pub trait LineSink {
    /// One complete line, already prefixed with `[<name>] `, without a line terminator.
    fn line(&mut self, line: &str);
}

impl<F: FnMut(&str)> LineSink for F {
    fn line(&mut self, line: &str) {
        self(line)
    }
}

/// One virtual PL011.
#[derive(Clone, Debug)]
pub struct Pl011 {
    /// `[<name>] `, then the current line's bytes.
    out: Vec<u8>,
    prefix_len: usize,
    rx: [u8; FIFO_DEPTH],
    rx_head: usize,
    rx_len: usize,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    /// Latched raw interrupt bits (only TX, RX and RT are ever set).
    ris: u32,
    dmacr: u32,
    dropped: u64,
    tx_when_disabled: bool,
}

/// A C1 control character (U+0080..=U+009F), the 8-bit escape sequences.
fn is_c1_control(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

impl Pl011 {
    /// A PL011 in its reset state whose output lines are prefixed with `[<name>] `.
    pub fn new(name: &str) -> Self {
        let mut out = Vec::with_capacity(name.len() + 3 + MAX_LINE);
        out.push(b'[');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"] ");
        let prefix_len = out.len();
        Pl011 {
            out,
            prefix_len,
            rx: [0; FIFO_DEPTH],
            rx_head: 0,
            rx_len: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            // DDI 0183 Table 3-12: TXE and RXE set at reset, UARTEN clear.
            cr: CR_TXE | CR_RXE,
            // RXIFLSEL = TXIFLSEL = 1/2.
            ifls: 0x12,
            imsc: 0,
            ris: 0,
            dmacr: 0,
            dropped: 0,
            tx_when_disabled: false,
        }
    }

    fn fifo_depth(&self) -> usize {
        if self.lcr_h & LCR_H_FEN != 0 {
            FIFO_DEPTH
        } else {
            1
        }
    }

    fn level(sel: u32) -> usize {
        // 1/8, 1/4, 1/2, 3/4, 7/8 of the FIFO (reserved encodings treated as 1/2).
        match sel & 7 {
            0 => FIFO_DEPTH / 8,
            1 => FIFO_DEPTH / 4,
            3 => FIFO_DEPTH * 3 / 4,
            4 => FIFO_DEPTH * 7 / 8,
            _ => FIFO_DEPTH / 2,
        }
    }

    fn rx_trigger(&self) -> usize {
        if self.lcr_h & LCR_H_FEN != 0 {
            Self::level(self.ifls >> 3)
        } else {
            1
        }
    }

    /// The UART's interrupt output (`UARTINTR`): any unmasked raw interrupt.
    pub fn irq_level(&self) -> bool {
        self.ris & self.imsc != 0
    }

    /// Transmit even while `UARTEN` or `TXE` is clear. Real hardware (and QEMU 10) sends
    /// nothing then; Linux's `earlycon=pl011,...` writes without enabling the UART, relying on
    /// firmware to have done it, so a VM booted with `earlycon` wants this on.
    pub fn set_transmit_when_disabled(&mut self, on: bool) {
        self.tx_when_disabled = on;
    }

    /// Bytes written while the transmitter was disabled (`UARTEN` or `TXE` clear) and so not
    /// sent, as real hardware would not send them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Free entries in the receive FIFO.
    pub fn rx_space(&self) -> usize {
        self.fifo_depth().saturating_sub(self.rx_len)
    }

    /// Offers one received byte (host console input). Returns `false`, leaving the FIFO
    /// unchanged, when the receiver is disabled (`UARTEN` or `RXE` clear) or the FIFO is full:
    /// the caller keeps the byte and offers it again later (back-pressure instead of the
    /// overrun a real line would suffer).
    pub fn push_rx(&mut self, byte: u8) -> bool {
        if self.cr & (CR_UARTEN | CR_RXE) != (CR_UARTEN | CR_RXE) || self.rx_space() == 0 {
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % FIFO_DEPTH] = byte;
        self.rx_len += 1;
        if self.rx_len >= self.rx_trigger() {
            self.ris |= int::RX;
        }
        self.ris |= int::RT;
        true
    }

    fn pop_rx(&mut self) -> u8 {
        if self.rx_len == 0 {
            return 0;
        }
        let b = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % FIFO_DEPTH;
        self.rx_len -= 1;
        if self.rx_len < self.rx_trigger() {
            self.ris &= !int::RX;
        }
        if self.rx_len == 0 {
            self.ris &= !int::RT;
        }
        b
    }

    fn flush_rx(&mut self) {
        self.rx_head = 0;
        self.rx_len = 0;
        self.ris &= !(int::RX | int::RT);
    }

    fn flags(&self) -> u32 {
        let mut f = fr::TXFE | fr::CTS | fr::DSR | fr::DCD;
        if self.rx_len == 0 {
            f |= fr::RXFE;
        }
        if self.rx_len >= self.fifo_depth() {
            f |= fr::RXFF;
        }
        f
    }

    fn transmit(&mut self, byte: u8, sink: &mut impl LineSink) {
        if !self.tx_when_disabled && self.cr & (CR_UARTEN | CR_TXE) != (CR_UARTEN | CR_TXE) {
            self.dropped += 1;
            return;
        }
        self.ris |= int::TX;
        match byte {
            b'\n' => self.emit(sink),
            // Linux writes "\r\n"; a carriage return alone does not start a new host line.
            b'\r' => {}
            // Backspace / DEL from an interactive shell: drop the last character of the line.
            0x08 | 0x7f => {
                if self.out.len() > self.prefix_len {
                    self.out.pop();
                }
            }
            // Other control characters (escape sequences included) must not reach the host
            // terminal: they are shown as `?`.
            _ => {
                let shown = match byte {
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => byte,
                    _ => b'?',
                };
                self.out.push(shown);
                // Every byte that grows the line passes this bound: a guest can never make
                // the line longer than MAX_LINE, whatever it writes.
                if self.out.len() - self.prefix_len >= MAX_LINE {
                    self.emit(sink);
                }
            }
        }
    }

    fn emit(&mut self, sink: &mut impl LineSink) {
        match core::str::from_utf8(&self.out) {
            Ok(s) if !s.chars().any(is_c1_control) => sink.line(s),
            _ => {
                // Invalid UTF-8 becomes '?', and so do C1 controls: written as UTF-8
                // (U+009B is CSI, U+008F SS3, ...) many terminals act on them as on ESC.
                let mut s = String::with_capacity(self.out.len());
                for chunk in self.out.utf8_chunks() {
                    for c in chunk.valid().chars() {
                        s.push(if is_c1_control(c) { '?' } else { c });
                    }
                    if !chunk.invalid().is_empty() {
                        s.push('?');
                    }
                }
                sink.line(&s);
            }
        }
        self.out.truncate(self.prefix_len);
    }

    /// Sends any partial line (for example when the VM stops).
    pub fn flush(&mut self, sink: &mut impl LineSink) {
        if self.out.len() > self.prefix_len {
            self.emit(sink);
        }
    }

    fn check(offset: u64, size: AccessSize) -> Result<(), MmioError> {
        if offset >= UART_SIZE {
            return Err(MmioError::OutOfRange {
                offset,
                region: UART_SIZE,
            });
        }
        if size == AccessSize::B8 {
            return Err(MmioError::BadSize { offset, size });
        }
        check_aligned(offset, size)
    }

    /// An MMIO read of `size` at `offset` in the UART's region. Reading `UARTDR` pops the
    /// receive FIFO. Byte and halfword reads return the matching bytes of the 32-bit register
    /// (Linux uses 16-bit accesses unless the device tree says `reg-io-width = <4>`).
    pub fn read(&mut self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        Self::check(offset, size)?;
        let word = offset & !3;
        let v: u32 = match word {
            // Only a read that covers the data byte pops the FIFO.
            reg::DR if offset == reg::DR => self.pop_rx() as u32,
            reg::FR => self.flags(),
            reg::ILPR => self.ilpr,
            reg::IBRD => self.ibrd,
            reg::FBRD => self.fbrd,
            reg::LCR_H => self.lcr_h,
            reg::CR => self.cr,
            reg::IFLS => self.ifls,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris,
            reg::MIS => self.ris & self.imsc,
            reg::DMACR => self.dmacr,
            // Received bytes never carry errors: RSR reads 0; ICR is write-only.
            o if (reg::ID_BASE..UART_SIZE).contains(&o) => {
                ID_REGS[((o - reg::ID_BASE) / 4) as usize] as u32
            }
            // Reserved and test registers read as zero.
            _ => 0,
        };
        Ok((v as u64 >> ((offset & 3) * 8)) & size.mask())
    }

    /// An MMIO write of `size` at `offset`. A byte written to `UARTDR` is transmitted to
    /// `sink` (line by line). Writes to read-only and reserved registers, and sub-word writes
    /// that do not start at a register's first byte, are ignored.
    pub fn write(
        &mut self,
        offset: u64,
        size: AccessSize,
        value: u64,
        sink: &mut impl LineSink,
    ) -> Result<(), MmioError> {
        Self::check(offset, size)?;
        if offset & 3 != 0 {
            return Ok(());
        }
        let v = (value & size.mask()) as u32;
        match offset {
            reg::DR => self.transmit(v as u8, sink),
            reg::RSR_ECR => {}
            reg::ILPR => self.ilpr = v & 0xff,
            reg::IBRD => self.ibrd = v & 0xffff,
            reg::FBRD => self.fbrd = v & 0x3f,
            reg::LCR_H => {
                // As QEMU does: toggling FEN resets the FIFOs.
                if (self.lcr_h ^ v) & LCR_H_FEN != 0 {
                    self.flush_rx();
                }
                self.lcr_h = v & 0xff;
            }
            reg::CR => self.cr = v & 0xffff,
            reg::IFLS => self.ifls = v & 0x3f,
            reg::IMSC => self.imsc = v & int::ALL,
            reg::ICR => self.ris &= !v,
            reg::DMACR => self.dmacr = v & 7,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use std::string::ToString;

    struct Lines(Vec<String>);
    impl LineSink for Lines {
        fn line(&mut self, line: &str) {
            self.0.push(line.to_string());
        }
    }

    const W: AccessSize = AccessSize::B4;

    fn enabled() -> (Pl011, Lines) {
        let mut u = Pl011::new("vm0");
        let mut s = Lines(Vec::new());
        u.write(reg::CR, W, 0x301, &mut s).unwrap();
        (u, s)
    }

    fn put(u: &mut Pl011, s: &mut Lines, text: &[u8]) {
        for &b in text {
            u.write(reg::DR, W, b as u64, s).unwrap();
        }
    }

    #[test]
    fn amba_ids_and_reset_values() {
        let mut u = Pl011::new("x");
        let ids: Vec<u64> = (0..8).map(|i| u.read(0xfe0 + 4 * i, W).unwrap()).collect();
        assert_eq!(ids, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        assert_eq!(u.read(reg::CR, W).unwrap(), 0x300);
        assert_eq!(u.read(reg::IFLS, W).unwrap(), 0x12);
        let f = u.read(reg::FR, W).unwrap() as u32;
        assert_eq!(
            f & (fr::TXFE | fr::RXFE | fr::TXFF | fr::BUSY),
            fr::TXFE | fr::RXFE
        );
        assert!(!u.irq_level());
    }

    #[test]
    fn output_is_line_buffered_and_prefixed() {
        let (mut u, mut s) = enabled();
        put(&mut u, &mut s, b"Booting Linux\r\nsecond");
        assert_eq!(s.0, ["[vm0] Booting Linux"]);
        put(&mut u, &mut s, b" line\r\n\r\n");
        assert_eq!(s.0, ["[vm0] Booting Linux", "[vm0] second line", "[vm0] "]);
        put(&mut u, &mut s, b"partial");
        u.flush(&mut s);
        u.flush(&mut s);
        assert_eq!(s.0.last().unwrap(), "[vm0] partial");
        assert_eq!(s.0.len(), 4);
    }

    #[test]
    fn byte_writes_from_earlycon_and_16_bit_accesses() {
        let (mut u, mut s) = enabled();
        u.write(reg::DR, AccessSize::B1, b'a' as u64, &mut s)
            .unwrap();
        u.write(reg::DR, AccessSize::B2, 0xff00 | b'b' as u64, &mut s)
            .unwrap();
        u.write(reg::DR, AccessSize::B1, b'\n' as u64, &mut s)
            .unwrap();
        assert_eq!(s.0, ["[vm0] ab"]);
        assert_eq!(u.read(reg::FR, AccessSize::B2).unwrap() & 0x90, 0x90);
        assert_eq!(u.read(0xfe8, AccessSize::B1).unwrap(), 0x34);
        assert_eq!(
            u.read(reg::DR, AccessSize::B8),
            Err(MmioError::BadSize {
                offset: 0,
                size: AccessSize::B8
            })
        );
        assert_eq!(
            u.read(0x2, W),
            Err(MmioError::Unaligned { offset: 2, size: W })
        );
        assert!(matches!(
            u.read(0x1000, W),
            Err(MmioError::OutOfRange { .. })
        ));
    }

    #[test]
    fn long_lines_are_split_and_control_characters_filtered() {
        let (mut u, mut s) = enabled();
        let long = [b'x'; MAX_LINE + 10];
        put(&mut u, &mut s, &long);
        assert_eq!(s.0.len(), 1);
        assert_eq!(s.0[0].len(), 6 + MAX_LINE);
        put(&mut u, &mut s, b"\n\x1b[1mA\x08B\xc3\xa9\xff\n");
        assert_eq!(s.0[1], "[vm0] xxxxxxxxxx");
        assert_eq!(s.0[2], "[vm0] ?[1mB\u{e9}?");
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes minutes under miri")]
    fn no_byte_value_grows_the_line_past_its_bound() {
        // A hostile guest writing any byte (control bytes and bytes >= 0x80 included) in a
        // loop, never a newline: the line buffer stays bounded and every emitted line too.
        let (mut u, mut s) = enabled();
        let mut sent = 0usize;
        for round in 0..64 {
            for b in 0..=255u8 {
                if b == b'\n' {
                    continue;
                }
                for _ in 0..(round % 7 + 1) {
                    u.write(reg::DR, W, u64::from(b), &mut s).unwrap();
                    sent += 1;
                    assert!(u.out.len() <= u.prefix_len + MAX_LINE, "line buffer grew");
                }
            }
        }
        assert!(sent > 50 * MAX_LINE);
        assert!(s.0.len() > 40, "the flood was cut into lines");
        assert!(s.0.iter().all(|l| l.len() <= 6 + MAX_LINE));
    }

    #[test]
    fn nothing_sent_while_disabled() {
        let mut u = Pl011::new("vm0");
        let mut s = Lines(Vec::new());
        u.write(reg::DR, W, b'a' as u64, &mut s).unwrap();
        u.write(reg::DR, W, b'\n' as u64, &mut s).unwrap();
        assert!(s.0.is_empty());
        assert_eq!(u.dropped(), 2);
        assert_eq!(u.read(reg::RIS, W).unwrap() as u32 & int::TX, 0);
        // earlycon mode.
        u.set_transmit_when_disabled(true);
        u.write(reg::DR, AccessSize::B1, b'e' as u64, &mut s)
            .unwrap();
        u.write(reg::DR, AccessSize::B1, b'\n' as u64, &mut s)
            .unwrap();
        assert_eq!(s.0, ["[vm0] e"]);
        assert_eq!(u.dropped(), 2);
    }

    #[test]
    fn tx_interrupt_fires_after_writes_and_stops_when_masked() {
        let (mut u, mut s) = enabled();
        // Linux unmasks RX/RT at startup, TX only while it has data queued.
        u.write(reg::IMSC, W, (int::RX | int::RT | int::TX) as u64, &mut s)
            .unwrap();
        assert!(!u.irq_level(), "nothing transmitted yet");
        put(&mut u, &mut s, b"0123456789abcdef");
        assert!(u.irq_level());
        assert_eq!(u.read(reg::MIS, W).unwrap() as u32, int::TX);
        // pl011_stop_tx: mask TXIM. No further interrupt, however often Linux writes.
        u.write(reg::IMSC, W, (int::RX | int::RT) as u64, &mut s)
            .unwrap();
        assert!(!u.irq_level());
        put(&mut u, &mut s, b"more");
        assert!(!u.irq_level());
        assert_ne!(u.read(reg::RIS, W).unwrap() as u32 & int::TX, 0);
        // Unmasking again (more data queued) fires at once: the FIFO has drained.
        u.write(reg::IMSC, W, int::TX as u64, &mut s).unwrap();
        assert!(u.irq_level());
        // ICR clears it until the next byte.
        u.write(reg::ICR, W, int::TX as u64, &mut s).unwrap();
        assert!(!u.irq_level());
        put(&mut u, &mut s, b"z");
        assert!(u.irq_level());
    }

    #[test]
    fn rx_fifo_levels_and_interrupts() {
        let (mut u, mut s) = enabled();
        u.write(reg::LCR_H, W, 0x70, &mut s).unwrap(); // FEN, 8 bits
        u.write(reg::IMSC, W, int::RX as u64, &mut s).unwrap();
        // RX trigger at 1/2 = 16 entries; receive timeout fires at once.
        for i in 0..15u8 {
            assert!(u.push_rx(b'a' + i));
        }
        assert!(!u.irq_level());
        assert_eq!(u.read(reg::RIS, W).unwrap() as u32, int::RT);
        u.write(reg::IMSC, W, (int::RX | int::RT) as u64, &mut s)
            .unwrap();
        assert!(u.irq_level());
        assert!(u.push_rx(b'p'));
        assert_eq!(u.read(reg::MIS, W).unwrap() as u32, int::RX | int::RT);
        // Reading below the trigger clears RX; RT stays while data remains.
        assert_eq!(u.read(reg::DR, W).unwrap(), b'a' as u64);
        assert_eq!(u.read(reg::MIS, W).unwrap() as u32, int::RT);
        let mut got = Vec::new();
        while u.read(reg::FR, W).unwrap() as u32 & fr::RXFE == 0 {
            got.push(u.read(reg::DR, W).unwrap() as u8);
        }
        assert_eq!(got, b"bcdefghijklmnop");
        assert!(!u.irq_level());
        // Reading an empty FIFO returns 0 and changes nothing.
        assert_eq!(u.read(reg::DR, W).unwrap(), 0);
    }

    #[test]
    fn rx_full_fifo_applies_back_pressure() {
        let (mut u, mut s) = enabled();
        // Without FIFOs the holding register takes one byte.
        assert!(u.push_rx(b'1'));
        assert!(!u.push_rx(b'2'));
        assert_ne!(u.read(reg::FR, W).unwrap() as u32 & fr::RXFF, 0);
        assert_eq!(u.read(reg::DR, W).unwrap(), b'1' as u64);
        // FEN on: FIFO reset, 32 entries.
        u.write(reg::LCR_H, W, 0x10, &mut s).unwrap();
        assert_eq!(u.rx_space(), 32);
        for _ in 0..32 {
            assert!(u.push_rx(b'x'));
        }
        assert!(!u.push_rx(b'y'));
        assert_eq!(u.read(reg::RSR_ECR, W).unwrap(), 0);
    }

    #[test]
    fn receiver_disabled_refuses_input() {
        let mut u = Pl011::new("vm0");
        assert!(!u.push_rx(b'a'));
        let mut s = Lines(Vec::new());
        u.write(reg::CR, W, 0x101, &mut s).unwrap(); // UARTEN|TXE, no RXE
        assert!(!u.push_rx(b'a'));
    }

    #[test]
    fn icr_clears_rx_and_rt_latches() {
        let (mut u, mut s) = enabled();
        u.write(reg::IMSC, W, int::ALL as u64, &mut s).unwrap();
        assert!(u.push_rx(b'a'));
        assert!(u.irq_level());
        u.write(reg::ICR, W, (int::RX | int::RT) as u64, &mut s)
            .unwrap();
        assert!(!u.irq_level());
        assert_eq!(u.read(reg::DR, W).unwrap(), b'a' as u64);
    }

    #[test]
    fn mmio_sweep_never_panics() {
        let (mut u, mut s) = enabled();
        let sizes = [
            AccessSize::B1,
            AccessSize::B2,
            AccessSize::B4,
            AccessSize::B8,
        ];
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        for off in 0..UART_SIZE + 8 {
            for size in sizes {
                x = x.rotate_left(5) ^ off;
                let _ = u.read(off, size);
                let _ = u.write(off, size, x, &mut s);
                u.push_rx(x as u8);
            }
        }
        u.flush(&mut s);
        assert!(s
            .0
            .iter()
            .all(|l| l.starts_with("[vm0] ") && l.len() <= 6 + MAX_LINE));
    }

    #[test]
    fn registers_keep_their_width() {
        let (mut u, mut s) = enabled();
        for (r, v, want) in [
            (reg::IBRD, 0xffff_ffffu64, 0xffff),
            (reg::FBRD, 0xff, 0x3f),
            (reg::LCR_H, 0x1ff, 0xff),
            (reg::IFLS, 0xff, 0x3f),
            (reg::IMSC, 0xffff, 0x7ff),
            (reg::DMACR, 0xff, 7),
        ] {
            u.write(r, W, v, &mut s).unwrap();
            assert_eq!(u.read(r, W).unwrap(), want, "{r:#x}");
        }
        // RIS/MIS/FR/ID registers are read-only.
        u.write(reg::RIS, W, 0x7ff, &mut s).unwrap();
        u.write(reg::FR, W, 0, &mut s).unwrap();
        u.write(0xfe0, W, 0, &mut s).unwrap();
        assert_eq!(u.read(0xfe0, W).unwrap(), 0x11);
        assert_eq!(u.read(reg::RIS, W).unwrap(), 0);
    }

    /// Found by the `pl011` fuzz target: bytes that are valid UTF-8 for a C1 control
    /// (0xc2 0x8f is U+008F SS3, 0xc2 0x9b U+009B CSI) reached the host console as that
    /// control, which terminals take as the start of an escape sequence.
    #[test]
    fn c1_controls_in_utf8_do_not_reach_the_host() {
        let (mut u, mut s) = enabled();
        put(
            &mut u,
            &mut s,
            b"\xc2\x9b31mred\xc2\x8fx caf\xc3\xa9 \xc2\xa0\r\n",
        );
        assert_eq!(s.0, ["[vm0] ?31mred?x caf\u{e9} \u{a0}"]);
        assert!(!s.0[0].chars().any(|c| c.is_control()));
    }
}
