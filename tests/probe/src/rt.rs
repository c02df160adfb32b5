//! The probe's runtime: console, command line, exception bookkeeping, PSCI, a PRNG.

use crate::arch;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use stage2::{AddrRange, Pa};

/// The guest's PL011 (QEMU virt layout, as hyp's device tree says).
pub const UART: u64 = 0x0900_0000;
const UART_DR: u64 = UART;
const UART_FR: u64 = UART + 0x18;
const FR_TXFF: u32 = 1 << 5;

/// PSCI and SMCCC function IDs (DEN 0022, DEN 0028).
pub mod fid {
    /// PSCI_VERSION.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// SMCCC_VERSION.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// SMCCC_ARCH_WORKAROUND_1.
    pub const WORKAROUND_1: u32 = 0x8000_8000;
    /// SMCCC_ARCH_WORKAROUND_2.
    pub const WORKAROUND_2: u32 = 0x8000_7fff;
    /// SMCCC_ARCH_WORKAROUND_3.
    pub const WORKAROUND_3: u32 = 0x8000_3fff;
}

/// SMCCC's NOT_SUPPORTED.
pub const NOT_SUPPORTED: i64 = -1;

fn putc(c: u8) {
    // SAFETY: the PL011's data and flag registers, 4-byte aligned MMIO hyp emulates.
    unsafe {
        while arch::read32(UART_FR) & FR_TXFF != 0 {}
        arch::write32(UART_DR, u32::from(c));
    }
}

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                putc(b'\r');
            }
            putc(b);
        }
        Ok(())
    }
}

/// Prints to the UART.
pub fn print(args: fmt::Arguments<'_>) {
    let _ = Uart.write_fmt(args);
}

/// `println!` for the probe.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::rt::print(format_args!("{}\n", format_args!($($t)*))) };
}

/// Powers the VM off (PSCI SYSTEM_OFF); never returns.
pub fn system_off() -> ! {
    arch::smccc(false, [u64::from(fid::SYSTEM_OFF), 0, 0, 0, 0, 0, 0, 0]);
    loop {
        core::hint::spin_loop();
    }
}

/// The words of `/chosen/bootargs` (at most 512 bytes kept).
pub struct Args {
    buf: [u8; 512],
    len: usize,
}

impl Args {
    /// Reads `/chosen/bootargs` from the device tree at `dtb`.
    pub fn from_dtb(dtb: usize) -> Args {
        let mut a = Args {
            buf: [0; 512],
            len: 0,
        };
        // SAFETY: hyp passes the address of the VM's device tree in x0 (booting.rst).
        let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) };
        if let Some(b) = fdt.ok().and_then(|f| f.chosen().bootargs()) {
            let n = b.len().min(a.buf.len());
            a.buf[..n].copy_from_slice(&b.as_bytes()[..n]);
            a.len = n;
        }
        a
    }

    /// The whole command line.
    pub fn all(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// The value of `key=value`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.all()
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }

    /// A number (decimal, `0x` hex, or with a K/M suffix) for `key`, or `default`.
    pub fn num(&self, key: &str, default: u64) -> u64 {
        self.get(key).and_then(parse_num).unwrap_or(default)
    }
}

/// Parses a decimal, `0x` hex, or K/M-suffixed number.
pub fn parse_num(s: &str) -> Option<u64> {
    let (digits, mul) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    let v = match digits.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => digits.parse().ok()?,
    };
    v.checked_mul(mul)
}

/// Exception classes (ESR_ELx.EC) the probe counts.
pub mod ec {
    /// Unknown reason: an UNDEFINED instruction.
    pub const UNKNOWN: u64 = 0x00;
    /// Data abort from the current EL.
    pub const DABT_CUR: u64 = 0x25;
}

/// Synchronous exceptions taken, by exception class (64 classes).
static BY_CLASS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
/// A test expects exceptions now (see [`expect`]).
static EXPECTING: AtomicBool = AtomicBool::new(false);
static LAST_ESR: AtomicU64 = AtomicU64::new(0);
static LAST_FAR: AtomicU64 = AtomicU64::new(0);

/// Exceptions of class `ec` taken so far.
pub fn taken(ec: u64) -> u64 {
    BY_CLASS[(ec & 63) as usize].load(Ordering::Relaxed)
}

/// Every synchronous exception taken so far.
pub fn taken_all() -> u64 {
    BY_CLASS.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

/// What happened to an operation run by [`expect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It completed without an exception.
    Done,
    /// It took this synchronous exception (ESR_EL1, FAR_EL1); the probe skipped the
    /// instruction.
    Exception { esr: u64, far: u64 },
}

impl Outcome {
    /// The exception class, if it took one.
    pub fn class(self) -> Option<u64> {
        match self {
            Outcome::Done => None,
            Outcome::Exception { esr, .. } => Some(esr >> 26),
        }
    }
}

/// Runs `op`, which may take synchronous exceptions (each one skips the faulting
/// instruction), and says whether it took one (the last one).
pub fn expect(op: impl FnOnce()) -> Outcome {
    let before = taken_all();
    EXPECTING.store(true, Ordering::Relaxed);
    op();
    EXPECTING.store(false, Ordering::Relaxed);
    if taken_all() == before {
        Outcome::Done
    } else {
        Outcome::Exception {
            esr: LAST_ESR.load(Ordering::Relaxed),
            far: LAST_FAR.load(Ordering::Relaxed),
        }
    }
}

/// The name of the test running (for an unexpected exception's FAIL line).
static RUNNING: AtomicU64 = AtomicU64::new(0);
static RUNNING_LEN: AtomicU64 = AtomicU64::new(0);

/// Records which test runs (`name` must be `'static`).
pub fn set_running(name: &'static str) {
    RUNNING.store(name.as_ptr() as u64, Ordering::Relaxed);
    RUNNING_LEN.store(name.len() as u64, Ordering::Relaxed);
}

fn running() -> &'static str {
    let p = RUNNING.load(Ordering::Relaxed) as *const u8;
    let n = RUNNING_LEN.load(Ordering::Relaxed) as usize;
    if p.is_null() {
        return "boot";
    }
    // SAFETY: `set_running` stored a `&'static str`'s pointer and length.
    core::str::from_utf8(unsafe { core::slice::from_raw_parts(p, n) }).unwrap_or("?")
}

/// The synchronous exception handler (called by the vector stub): counts the exception; an
/// expected one resumes after the faulting instruction, anything else fails the running test.
#[no_mangle]
extern "C" fn probe_sync_exception(esr: u64, elr: u64, far: u64) -> u64 {
    let class = (esr >> 26) & 63;
    // A load and a store, not an exclusive pair: with the MMU off RAM is Device memory, where
    // exclusives are not architecturally guaranteed; the probe's VMs have one vCPU.
    let c = &BY_CLASS[class as usize];
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    LAST_ESR.store(esr, Ordering::Relaxed);
    LAST_FAR.store(far, Ordering::Relaxed);
    if !EXPECTING.load(Ordering::Relaxed) {
        say!(
            "PROBE {}: FAIL unexpected exception ESR_EL1 {esr:#x} (class {class:#x}) at pc {elr:#x}, FAR {far:#x}",
            running()
        );
        system_off();
    }
    // Every instruction the tests run is 4 bytes (A64).
    elr + 4
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("PROBE {}: FAIL panic: {info}", running());
    system_off()
}

/// xorshift64*: a small, seedable PRNG.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Microseconds between two counter values.
pub fn micros(from: u64, to: u64) -> u64 {
    to.wrapping_sub(from).saturating_mul(1_000_000) / arch::counter_hz()
}

/// Busy-waits `us` microseconds on the virtual counter.
pub fn delay_us(us: u64) {
    let t0 = arch::counter();
    let ticks = us.saturating_mul(arch::counter_hz()) / 1_000_000;
    while arch::counter().wrapping_sub(t0) < ticks {
        core::hint::spin_loop();
    }
}

/// The `len` bytes from `base` of the probe's physical address space (the VM's IPAs: with the
/// MMU off and in its identity stage 1, the addresses it uses). For the probe's fixed layouts:
/// a range past the last address is a bug (a panic, which fails the running test).
pub fn span(base: u64, len: u64) -> AddrRange<Pa> {
    AddrRange::from_start_len(Pa::new(base), len).expect("a range within the address space")
}

/// `start..end`, or the empty range at `start` if `end` is below it.
pub fn between(start: Pa, end: Pa) -> AddrRange<Pa> {
    AddrRange::new(start, end).unwrap_or(AddrRange::empty(start))
}

/// The VM's RAM from the device tree's `/memory` node.
pub fn ram(dtb: usize) -> AddrRange<Pa> {
    // SAFETY: as in `Args::from_dtb`.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) };
    fdt.ok()
        .and_then(|f| {
            let r = f.memory().regions().next()?;
            let base = Pa::new(r.starting_address as u64);
            AddrRange::from_start_len(base, r.size.unwrap_or(0) as u64).ok()
        })
        .unwrap_or(AddrRange::empty(Pa::new(0x4000_0000)))
}

/// The probe's own image end (code, data, stacks), from the linker script.
pub fn image_end() -> u64 {
    extern "C" {
        static __image_end: u8;
    }
    core::ptr::addr_of!(__image_end) as u64
}

/// RAM the probe may use freely: from its image's end to the 2 MiB block that holds the
/// device tree (hyp's layout puts the DTB in the last 2 MiB of RAM).
pub fn free_ram(dtb: usize) -> AddrRange<Pa> {
    let ram = ram(dtb);
    let start = image_end().max(ram.start().get());
    let end = ram
        .end()
        .get()
        .saturating_sub(2 << 20)
        .min(dtb as u64 & !((2 << 20) - 1));
    between(Pa::new(start), Pa::new(end))
}

/// The end of the probe's BSS (linker script symbol): its image from the start of RAM up to
/// here is code and data.
pub fn bss_end() -> Pa {
    extern "C" {
        static __bss_end: u8;
    }
    Pa::new(core::ptr::addr_of!(__bss_end) as u64)
}

/// The start of the vCPUs' stacks (linker script symbol).
pub fn stacks_start() -> Pa {
    extern "C" {
        static __stacks_start: u8;
    }
    Pa::new(core::ptr::addr_of!(__stacks_start) as u64)
}

/// The device tree's `totalsize` (its header's second big-endian word).
pub fn dtb_size(dtb: usize) -> u64 {
    // SAFETY: the device tree's header, 4-aligned (booting.rst: 8-byte aligned).
    let be = unsafe { crate::arch::read32(dtb as u64 + 4) };
    u64::from(u32::from_be(be))
}
