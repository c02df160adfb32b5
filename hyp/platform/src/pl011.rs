//! The PL011 UART's registers (Arm PrimeCell UART (PL011) TRM, DDI 0183 r1p5): one register
//! map for the guests' virtual PL011 (`vdev::pl011`), hyp's console (`el2::console`) and the
//! host UART's receive path (`hyp/src/gic.rs`). Offsets are from the UART's base; the frame is
//! [`crate::virt::UART_SIZE`] bytes.

/// Register offsets (DDI 0183 Table 3-1).
pub mod reg {
    /// Data register.
    pub const DR: u64 = 0x000;
    /// Receive status / error clear.
    pub const RSR_ECR: u64 = 0x004;
    /// Flag register.
    pub const FR: u64 = 0x018;
    /// IrDA low-power counter.
    pub const ILPR: u64 = 0x020;
    /// Integer baud rate divisor.
    pub const IBRD: u64 = 0x024;
    /// Fractional baud rate divisor.
    pub const FBRD: u64 = 0x028;
    /// Line control.
    pub const LCR_H: u64 = 0x02c;
    /// Control.
    pub const CR: u64 = 0x030;
    /// Interrupt FIFO level select.
    pub const IFLS: u64 = 0x034;
    /// Interrupt mask set/clear.
    pub const IMSC: u64 = 0x038;
    /// Raw interrupt status.
    pub const RIS: u64 = 0x03c;
    /// Masked interrupt status.
    pub const MIS: u64 = 0x040;
    /// Interrupt clear.
    pub const ICR: u64 = 0x044;
    /// DMA control.
    pub const DMACR: u64 = 0x048;
    /// First of the PeriphID0-3 / PCellID0-3 registers.
    pub const ID_BASE: u64 = 0xfe0;
}

/// `UARTFR` bits.
pub mod fr {
    /// Clear to send.
    pub const CTS: u32 = 1 << 0;
    /// Data set ready.
    pub const DSR: u32 = 1 << 1;
    /// Data carrier detect.
    pub const DCD: u32 = 1 << 2;
    /// UART busy transmitting.
    pub const BUSY: u32 = 1 << 3;
    /// Receive FIFO empty.
    pub const RXFE: u32 = 1 << 4;
    /// Transmit FIFO full.
    pub const TXFF: u32 = 1 << 5;
    /// Receive FIFO full.
    pub const RXFF: u32 = 1 << 6;
    /// Transmit FIFO empty.
    pub const TXFE: u32 = 1 << 7;
}

/// Interrupt bits of `UARTIMSC`/`UARTRIS`/`UARTMIS`/`UARTICR`.
pub mod int {
    /// Receive interrupt.
    pub const RX: u32 = 1 << 4;
    /// Transmit interrupt.
    pub const TX: u32 = 1 << 5;
    /// Receive timeout interrupt.
    pub const RT: u32 = 1 << 6;
    /// All 11 interrupt bits.
    pub const ALL: u32 = 0x7ff;
}

/// `UARTCR.UARTEN`: the UART is enabled.
pub const CR_UARTEN: u32 = 1 << 0;
/// `UARTCR.TXE`: transmit enabled.
pub const CR_TXE: u32 = 1 << 8;
/// `UARTCR.RXE`: receive enabled.
pub const CR_RXE: u32 = 1 << 9;
/// `UARTLCR_H.FEN`: FIFOs enabled.
pub const LCR_H_FEN: u32 = 1 << 4;
/// `UARTLCR_H.WLEN` = 0b11: 8-bit words.
pub const LCR_H_WLEN8: u32 = 0b11 << 5;
