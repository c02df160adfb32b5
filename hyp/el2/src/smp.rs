//! Secondary CPUs: started with PSCI CPU_ON, each on its own stack, sharing hyp's EL2 tables;
//! then they wait for work on a per-CPU mailbox.

use crate::dt::{CpuNode, MAX_CPUS};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Work for a CPU: a function and its argument.
pub type Work = fn(u64);

/// What a secondary loads before turning its MMU on: MAIR_EL2, TCR_EL2, TTBR0_EL2,
/// SCTLR_EL2 (read by `arch/entry.S`; SCTLR = 0 means "leave the MMU off").
#[no_mangle]
pub static SECONDARY_BOOT: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Assigns logical CPU indices: the boot CPU is 0, then the device tree's other CPUs in tree
/// order. Returns the (index, MPIDR) pairs of the secondaries, skipping any beyond
/// [`MAX_CPUS`] (counted in the second value).
pub fn assign_indices(
    boot_mpidr: u64,
    cpus: &[CpuNode],
) -> (crate::dt::List<(usize, u64), MAX_CPUS>, usize) {
    let mut out = crate::dt::List::default();
    let mut skipped = 0;
    let mut next = 1;
    for c in cpus.iter().filter(|c| c.mpidr != boot_mpidr) {
        // Index 0 is the boot CPU, so the list (MAX_CPUS long) fills at index MAX_CPUS - 1.
        if next < MAX_CPUS && out.push((next, c.mpidr)).is_ok() {
            next += 1;
        } else {
            skipped += 1;
        }
    }
    (out, skipped)
}

/// How many CPUs are online (the boot CPU counts).
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod runtime {
    use super::*;
    use crate::arch::{self, barrier, cache, sysreg};

    const NO_MPIDR: u64 = u64::MAX;
    /// Logical index -> MPIDR affinity; index 0 is the boot CPU.
    static MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NO_MPIDR) }; MAX_CPUS];

    struct Mailbox {
        work: AtomicUsize,
        arg: AtomicU64,
    }

    static MAILBOX: [Mailbox; MAX_CPUS] = [const {
        Mailbox {
            work: AtomicUsize::new(0),
            arg: AtomicU64::new(0),
        }
    }; MAX_CPUS];

    /// This CPU's logical index (0 for the boot CPU, and for any CPU not yet registered).
    pub fn current_cpu() -> usize {
        let me = sysreg::mpidr_affinity();
        MPIDR
            .iter()
            .position(|m| m.load(Ordering::Relaxed) == me)
            .unwrap_or(0)
    }

    /// The MPIDR affinity of the CPU with logical index `index`, if it was started.
    pub fn mpidr_of(index: usize) -> Option<u64> {
        MPIDR
            .get(index)
            .map(|m| m.load(Ordering::Acquire))
            .filter(|&m| m != NO_MPIDR)
    }

    /// Records the boot CPU as index 0. Call once, early.
    pub fn init_boot_cpu() {
        MPIDR[0].store(sysreg::mpidr_affinity(), Ordering::Release);
    }

    /// Publishes the EL2 translation registers the secondaries must load, cleaned to the
    /// point of coherency because they read them with their MMU and caches off.
    pub fn set_secondary_mmu(mair: u64, tcr: u64, ttbr0: u64, sctlr: u64) {
        for (slot, v) in SECONDARY_BOOT.iter().zip([mair, tcr, ttbr0, sctlr]) {
            slot.store(v, Ordering::Release);
        }
        cache::clean_to_poc(SECONDARY_BOOT.as_ptr() as u64, 32);
    }

    /// An error starting a CPU.
    #[derive(Clone, Copy, Debug)]
    pub enum StartError {
        /// PSCI CPU_ON returned an error.
        Psci(crate::psci::PsciError),
        /// CPU_ON succeeded but the CPU did not check in within a second.
        Timeout,
    }

    impl core::fmt::Display for StartError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                StartError::Psci(e) => write!(f, "PSCI CPU_ON failed: {e:?}"),
                StartError::Timeout => f.write_str("it did not come online within 1 s"),
            }
        }
    }

    /// Starts one CPU with PSCI CPU_ON and waits (up to 1 s) until it is online.
    pub fn start_cpu(index: usize, mpidr: u64) -> Result<(), StartError> {
        MPIDR[index].store(mpidr, Ordering::Release);
        cache::clean_to_poc(MPIDR.as_ptr() as u64, core::mem::size_of_val(&MPIDR) as u64);
        let before = online();
        crate::psci::cpu_on(mpidr, arch::secondary_entry_point(), index as u64)
            .map_err(StartError::Psci)?;
        let (t0, freq) = sysreg::counter();
        while online() == before {
            if sysreg::counter().0.wrapping_sub(t0) > freq {
                return Err(StartError::Timeout);
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// Gives `cpu` work to run; it runs `work(arg)` once, then waits again.
    /// Returns false if `cpu` is out of range or still has work pending.
    pub fn send_work(cpu: usize, work: Work, arg: u64) -> bool {
        let Some(mb) = MAILBOX.get(cpu) else {
            return false;
        };
        if mb.work.load(Ordering::Acquire) != 0 {
            return false;
        }
        mb.arg.store(arg, Ordering::Relaxed);
        mb.work.store(work as usize, Ordering::Release);
        barrier::dsb_ish();
        barrier::sev();
        true
    }

    /// Rust entry of a secondary CPU (from `arch/entry.S`), on its own stack with the MMU set
    /// up as the boot CPU's.
    #[no_mangle]
    extern "C" fn el2_secondary_main(index: usize) -> ! {
        // The boot CPU's Spectre decision (exit-path vectors, SSBS, firmware SSBD), before
        // this CPU can run a guest.
        arch::spectre::install_this_cpu();
        ONLINE.fetch_add(1, Ordering::AcqRel);
        barrier::sev();
        log::debug!(
            "hyp: cpu {index} (mpidr {:#x}) online",
            sysreg::mpidr_affinity()
        );
        let mb = &MAILBOX[index.min(MAX_CPUS - 1)];
        loop {
            let w = mb.work.load(Ordering::Acquire);
            if w == 0 {
                barrier::wfe();
                continue;
            }
            // SAFETY: only `send_work` stores non-zero values, and those are `Work` fn
            // pointers; fn pointers round-trip through usize.
            let f: Work = unsafe { core::mem::transmute::<usize, Work>(w) };
            f(mb.arg.load(Ordering::Relaxed));
            mb.work.store(0, Ordering::Release);
        }
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use runtime::{
    current_cpu, init_boot_cpu, mpidr_of, send_work, set_secondary_mmu, start_cpu, StartError,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(mpidr: u64) -> CpuNode {
        CpuNode { mpidr, psci: true }
    }

    #[test]
    fn boot_cpu_is_index_zero_and_others_follow_tree_order() {
        let cpus = [cpu(0), cpu(1), cpu(2), cpu(3)];
        let (l, skipped) = assign_indices(2, &cpus);
        assert_eq!(l.as_slice(), &[(1, 0), (2, 1), (3, 3)]);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn cpus_beyond_the_limit_are_counted() {
        let cpus: alloc::vec::Vec<CpuNode> = (0..20).map(cpu).collect();
        let (l, skipped) = assign_indices(0, &cpus);
        assert_eq!(l.len(), MAX_CPUS - 1);
        assert_eq!(skipped, 20 - MAX_CPUS);
        assert_eq!(
            l.as_slice().last(),
            Some(&(MAX_CPUS - 1, (MAX_CPUS - 1) as u64))
        );
    }
}
