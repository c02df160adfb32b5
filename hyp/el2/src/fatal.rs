//! The two ways hyp ends: `power_off_ok` and `fatal` (aarch64 only). Both print a final marker line the
//! runner maps to its exit status (QEMU itself exits 0 after PSCI SYSTEM_OFF either way):
//!
//! - [`OK_MARKER`]: `hyp: powering off (ok)`
//! - [`FAIL_MARKER`]: `hyp: fatal, powering off`

/// The last line of a successful run.
pub const OK_MARKER: &str = "hyp: powering off (ok)";
/// The last line of a failed run (fatal error, unexpected exception, panic).
pub const FAIL_MARKER: &str = "hyp: fatal, powering off";

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod runtime {
    use super::*;
    use crate::console::{self, RawConsole};
    use crate::trap::{write_report, TrapFrame, Vector};
    use core::fmt::{self, Write};
    use core::sync::atomic::{AtomicUsize, Ordering};

    const NOBODY: usize = usize::MAX;
    static OWNER: AtomicUsize = AtomicUsize::new(NOBODY);

    /// Makes this CPU the one that reports and powers off. A nested failure on the same CPU
    /// (a fault while reporting) powers off at once; another CPU failing meanwhile waits.
    fn enter() {
        let me = crate::smp::current_cpu();
        match OWNER.compare_exchange(NOBODY, me, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(owner) if owner == me => crate::psci::system_off(),
            Err(_) => loop {
                crate::arch::barrier::wfe();
            },
        }
    }

    fn finish(g: Option<spin::mutex::TicketMutexGuard<'static, ()>>) -> ! {
        let _ = writeln!(RawConsole, "{FAIL_MARKER}");
        drop(g);
        crate::psci::system_off()
    }

    /// Prints `hyp: error: <what>`, the failure marker, and powers off.
    pub fn fatal(what: fmt::Arguments<'_>) -> ! {
        enter();
        let g = console::lock_for_fatal();
        let _ = writeln!(RawConsole, "hyp: error: {what}");
        finish(g)
    }

    /// Reports an exception hyp did not expect (decoded ESR, ELR, FAR, registers) and powers
    /// off.
    pub fn unexpected_exception(vector: Vector, frame: &TrapFrame) -> ! {
        enter();
        let g = console::lock_for_fatal();
        let _ = write_report(&mut RawConsole, vector, frame, crate::smp::current_cpu());
        finish(g)
    }

    /// Reports a panic (message and location) and powers off. For hyp's `#[panic_handler]`.
    pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        enter();
        let g = console::lock_for_fatal();
        let cpu = crate::smp::current_cpu();
        match info.location() {
            Some(l) => {
                let _ = writeln!(
                    RawConsole,
                    "hyp: panic on cpu {cpu} at {}:{}:{}: {}",
                    l.file(),
                    l.line(),
                    l.column(),
                    info.message()
                );
            }
            None => {
                let _ = writeln!(RawConsole, "hyp: panic on cpu {cpu}: {}", info.message());
            }
        }
        finish(g)
    }

    /// Prints the success marker and powers off.
    pub fn power_off_ok() -> ! {
        console::print(format_args!("{OK_MARKER}\n"));
        crate::psci::system_off()
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use runtime::{fatal, panic, power_off_ok, unexpected_exception};

/// `fatal!("...", args)`: prints `hyp: error: ...`, the failure marker, and powers off.
#[macro_export]
macro_rules! fatal {
    ($($t:tt)*) => { $crate::fatal::fatal(format_args!($($t)*)) };
}
