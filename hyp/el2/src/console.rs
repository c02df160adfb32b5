//! The PL011 console behind a spin lock, and the `log` facade on top of it.
//!
//! PL011 registers: `platform::pl011` (the map the guests' virtual PL011 uses too). QEMU
//! transmits nothing until CR has UARTEN and TXE.
//!
//! Every line hyp prints ends with "\r\n" (the host terminal is in raw mode under
//! `-nographic`). Log records are printed verbatim: callers write the stable lines themselves,
//! e.g. `info!("hyp: 4 cpus online")`.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::mutex::{TicketMutex, TicketMutexGuard};

use platform::pl011::{fr, reg, CR_RXE, CR_TXE, CR_UARTEN, LCR_H_FEN, LCR_H_WLEN8};

/// The UART's base address; 0 until [`init`].
static BASE: AtomicUsize = AtomicUsize::new(0);
/// Serialises whole lines from different CPUs. A ticket lock: CPUs waiting for it are served
/// in arrival order, so no CPU can be starved by others that print often.
static LOCK: TicketMutex<()> = TicketMutex::new(());

/// Holding the console: lines written with [`Held::line`] come out whole.
pub struct Held {
    _guard: TicketMutexGuard<'static, ()>,
}

impl Held {
    /// Writes `text` and a line end.
    pub fn line(&self, text: &str) {
        let _ = RawConsole.write_str(text);
        let _ = RawConsole.write_str("\n");
    }
}

/// Takes the console if no other CPU holds it (never waits).
pub fn try_hold() -> Option<Held> {
    LOCK.try_lock().map(|g| Held { _guard: g })
}

/// Takes the console, waiting (in turn) while other CPUs print.
pub fn hold() -> Held {
    Held {
        _guard: LOCK.lock(),
    }
}

fn at(base: usize, offset: u64) -> *mut u32 {
    (base + offset as usize) as *mut u32
}

/// Programs the PL011 at `base` for 8N1 with FIFOs, TX and RX enabled.
///
/// # Safety
/// `base` must be the physical (= virtual, identity mapped or MMU off) address of a PL011
/// that nothing else drives.
pub unsafe fn init(base: usize) {
    // SAFETY: the caller guarantees `base` is a PL011; these are its documented registers,
    // accessed with 32-bit volatile accesses as the TRM requires.
    unsafe {
        at(base, reg::CR).write_volatile(0);
        while at(base, reg::FR).read_volatile() & fr::BUSY != 0 {}
        at(base, reg::LCR_H).write_volatile(LCR_H_WLEN8 | LCR_H_FEN);
        at(base, reg::IMSC).write_volatile(0);
        at(base, reg::CR).write_volatile(CR_UARTEN | CR_TXE | CR_RXE);
    }
    BASE.store(base, Ordering::Release);
}

/// The console's base address, if [`init`] ran.
pub fn base() -> Option<usize> {
    match BASE.load(Ordering::Acquire) {
        0 => None,
        b => Some(b),
    }
}

fn putc(base: usize, c: u8) {
    // SAFETY: `base` came from `init`, whose caller guaranteed it is a PL011.
    unsafe {
        while at(base, reg::FR).read_volatile() & fr::TXFF != 0 {}
        at(base, reg::DR).write_volatile(c as u32);
    }
}

/// Writes to the UART without taking the lock (use [`print`] instead, except on the way
/// to power-off when the lock may be held by the CPU that faulted).
#[derive(Clone, Copy, Debug)]
pub struct RawConsole;

impl Write for RawConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(b) = base() {
            for c in s.bytes() {
                if c == b'\n' {
                    putc(b, b'\r');
                }
                putc(b, c);
            }
        }
        Ok(())
    }
}

/// Prints `args` with the console lock held.
pub fn print(args: fmt::Arguments<'_>) {
    let _g = LOCK.lock();
    let _ = RawConsole.write_fmt(args);
}

/// Takes the console lock if it can within a bounded number of tries (for the fatal path:
/// a CPU that faulted while printing must not deadlock the report). Returns whether it got it;
/// the caller then prints with [`RawConsole`] either way.
pub fn lock_for_fatal() -> Option<TicketMutexGuard<'static, ()>> {
    for _ in 0..1_000_000 {
        if let Some(g) = LOCK.try_lock() {
            return Some(g);
        }
        core::hint::spin_loop();
    }
    None
}

/// The `log` backend: prints each record's message verbatim followed by a newline.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            print(format_args!("{}\n", record.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the console as the `log` backend at `level`.
pub fn init_logger(level: log::LevelFilter) {
    // A second call (there is none) would keep the first logger; that is fine.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
