//! The virtual PL011 driven by a guest's access sequence (any offset, size and value), with
//! the run loop's calls in between: host input (`push_rx`), `flush`, and the earlycon switch.
//! Checks what every access must keep: errors exactly for accesses outside the region, of
//! 64 bits or unaligned; read values within the access size; the interrupt line equal to
//! UARTMIS; the receive FIFO within its depth; host lines prefixed, bounded and free of
//! control characters.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use platform::virt::UART_SIZE;
use vdev::pl011::{Pl011, MAX_LINE};
use vdev::{AccessSize, MmioError};

const PREFIX: &str = "[fz] ";
const MIS: u64 = 0x40;

#[derive(Arbitrary, Debug)]
enum Op {
    Read { offset: u16, sas: u8 },
    Write { offset: u16, sas: u8, value: u64 },
    PushRx { byte: u8 },
    Flush,
    TransmitWhenDisabled { on: bool },
}

fn expect_error(offset: u64, size: AccessSize) -> bool {
    offset >= UART_SIZE || size == AccessSize::B8 || offset % size.bytes() != 0
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut uart = Pl011::new("fz");
    let mut lines: Vec<String> = Vec::new();
    let mut sink = |l: &str| lines.push(l.to_string());
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Read { offset, sas } => {
                let (offset, size) = (u64::from(offset), AccessSize::from_sas(sas.into()));
                match uart.read(offset, size) {
                    Ok(v) => {
                        assert!(!expect_error(offset, size), "{size} read at {offset:#x}");
                        assert!(v <= size.mask(), "{size} read at {offset:#x} gave {v:#x}");
                    }
                    Err(e) => check_error(e, offset, size),
                }
            }
            Op::Write { offset, sas, value } => {
                let (offset, size) = (u64::from(offset), AccessSize::from_sas(sas.into()));
                match uart.write(offset, size, value, &mut sink) {
                    Ok(()) => assert!(!expect_error(offset, size)),
                    Err(e) => check_error(e, offset, size),
                }
            }
            Op::PushRx { byte } => {
                let space = uart.rx_space();
                let took = uart.push_rx(byte);
                assert_eq!(uart.rx_space(), if took { space - 1 } else { space });
            }
            Op::Flush => uart.flush(&mut sink),
            Op::TransmitWhenDisabled { on } => uart.set_transmit_when_disabled(on),
        }
        let mis = uart.read(MIS, AccessSize::B4).expect("UARTMIS is readable");
        assert_eq!(uart.irq_level(), mis != 0);
        assert!(uart.rx_space() <= 32);
    }
    uart.flush(&mut sink);
    for l in &lines {
        let body = l
            .strip_prefix(PREFIX)
            .expect("every line carries the VM's prefix");
        // At most MAX_LINE bytes (an invalid UTF-8 sequence becomes one '?').
        assert!(body.len() <= MAX_LINE, "line of {} bytes", body.len());
        assert!(
            !body.chars().any(|c| c.is_control() && c != '\t'),
            "control character reached the host: {body:?}"
        );
    }
});

fn check_error(e: MmioError, offset: u64, size: AccessSize) {
    assert!(
        expect_error(offset, size),
        "{size} access at {offset:#x} refused: {e}"
    );
    match e {
        MmioError::OutOfRange { offset: o, region } => {
            assert_eq!((o, region), (offset, UART_SIZE));
            assert!(offset >= UART_SIZE);
        }
        MmioError::BadSize { .. } => assert_eq!(size, AccessSize::B8),
        MmioError::Unaligned { .. } => assert_ne!(offset % size.bytes(), 0),
    }
}
