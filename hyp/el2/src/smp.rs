//! Secondary CPUs: started with PSCI CPU_ON, each on its own stack, sharing hyp's EL2 tables;
//! then they wait for work on their [`Mailbox`], the one way to hand a CPU something to run.

use crate::dt::{CpuNode, MAX_CPUS};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::mutex::SpinMutex;

/// Work for a CPU: a function and its argument.
pub type Work = fn(u64);

/// A CPU's mailbox: at most one work item, posted by any CPU and taken by the CPU it belongs
/// to. How the owner waits for it (`WFE` before hyp's idle loop runs, `WFI` and the kick SGI
/// after) is the owner's business; `smp::post` (bare-metal only) wakes `WFE` waiters, hyp's
/// `cpus::dispatch` sends the SGI.
pub struct Mailbox {
    item: SpinMutex<Option<(Work, u64)>>,
}

impl Mailbox {
    /// An empty mailbox.
    pub const fn new() -> Self {
        Mailbox {
            item: SpinMutex::new(None),
        }
    }

    /// Leaves `work(arg)` for the owner; `false` (and nothing changes) while an earlier item
    /// is still waiting.
    pub fn put(&self, work: Work, arg: u64) -> bool {
        let mut item = self.item.lock();
        if item.is_some() {
            return false;
        }
        *item = Some((work, arg));
        true
    }

    /// Takes the waiting item, if any (the owner runs it after this returns, so the next one
    /// can be posted meanwhile).
    pub fn take(&self) -> Option<(Work, u64)> {
        self.item.lock().take()
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Every CPU's mailbox, by logical index.
static MAILBOX: [Mailbox; MAX_CPUS] = [const { Mailbox::new() }; MAX_CPUS];

/// The mailbox of the CPU with logical index `cpu`.
pub fn mailbox(cpu: usize) -> Option<&'static Mailbox> {
    MAILBOX.get(cpu)
}

/// What a secondary loads before turning its MMU on: MAIR_EL2, TCR_EL2, TTBR0_EL2,
/// SCTLR_EL2 (read by `arch/entry.S`; SCTLR = 0 means "leave the MMU off").
#[no_mangle]
pub static SECONDARY_BOOT: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Which logical CPUs are online (index 0, the boot CPU, from the start).
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

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

/// How many CPUs are online from index 0 on without a gap (the boot CPU counts): hyp uses
/// CPUs `0..online()`; a CPU that came online after one that did not is left unused.
pub fn online() -> usize {
    online_prefix(|i| i == 0 || ONLINE[i].load(Ordering::Acquire))
}

/// The length of the run of online CPUs starting at index 0.
fn online_prefix(is_online: impl Fn(usize) -> bool) -> usize {
    (0..MAX_CPUS).take_while(|&i| is_online(i)).count()
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod runtime {
    use super::*;
    use crate::arch::{self, barrier, cache, sysreg};

    const NO_MPIDR: u64 = u64::MAX;
    /// Logical index -> MPIDR affinity; index 0 is the boot CPU.
    static MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NO_MPIDR) }; MAX_CPUS];

    /// How long one CPU waits for another to answer: to come online after CPU_ON, or to
    /// enter hyp's idle loop.
    pub const ANSWER_TIMEOUT_MS: u64 = 1000;

    /// Spins until `done()` holds, for at most [`ANSWER_TIMEOUT_MS`]; whether it holds.
    pub fn wait_for_answer(mut done: impl FnMut() -> bool) -> bool {
        let (t0, freq) = sysreg::counter();
        let limit = freq * ANSWER_TIMEOUT_MS / 1000;
        while !done() {
            if sysreg::counter().0.wrapping_sub(t0) > limit {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }

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

    /// Starts CPU `index` (`mpidr`) with PSCI CPU_ON and returns without waiting for it:
    /// [`wait_online`] does. Work already in its mailbox is the first thing it runs.
    pub fn power_on(index: usize, mpidr: u64) -> Result<(), StartError> {
        MPIDR[index].store(mpidr, Ordering::Release);
        cache::clean_to_poc(MPIDR.as_ptr() as u64, core::mem::size_of_val(&MPIDR) as u64);
        crate::psci::cpu_on(mpidr, arch::secondary_entry_point(), index as u64)
            .map_err(StartError::Psci)
    }

    /// Waits (up to [`ANSWER_TIMEOUT_MS`]) until CPU `index`, powered on, is online.
    pub fn wait_online(index: usize) -> Result<(), StartError> {
        if index < MAX_CPUS && wait_for_answer(|| ONLINE[index].load(Ordering::Acquire)) {
            Ok(())
        } else {
            Err(StartError::Timeout)
        }
    }

    /// Posts `work(arg)` to `cpu`'s [`Mailbox`] and wakes it from `WFE`. Returns false if
    /// `cpu` is out of range or still has an item waiting.
    pub fn post(cpu: usize, work: Work, arg: u64) -> bool {
        if !mailbox(cpu).is_some_and(|mb| mb.put(work, arg)) {
            return false;
        }
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
        ONLINE[index.min(MAX_CPUS - 1)].store(true, Ordering::Release);
        barrier::sev();
        log::debug!(
            "hyp: cpu {index} (mpidr {:#x}) online",
            sysreg::mpidr_affinity()
        );
        let mb = &MAILBOX[index.min(MAX_CPUS - 1)];
        loop {
            match mb.take() {
                Some((work, arg)) => work(arg),
                None => barrier::wfe(),
            }
        }
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use runtime::{
    current_cpu, init_boot_cpu, mpidr_of, post, power_on, set_secondary_mmu, wait_for_answer,
    wait_online, StartError, ANSWER_TIMEOUT_MS,
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

    fn record(arg: u64) {
        LAST.store(arg, Ordering::Relaxed);
    }
    static LAST: AtomicU64 = AtomicU64::new(0);

    #[test]
    fn a_mailbox_holds_one_item_until_its_owner_takes_it() {
        let mb = Mailbox::new();
        assert!(mb.take().is_none());
        assert!(mb.put(record, 7));
        assert!(
            !mb.put(record, 8),
            "a second item waits for the first to be taken"
        );
        let (work, arg) = mb.take().unwrap();
        assert!(mb.take().is_none());
        // Taken: the next item can be posted while the owner runs this one.
        assert!(mb.put(record, 9));
        work(arg);
        assert_eq!(LAST.load(Ordering::Relaxed), 7);
        assert_eq!(mb.take().map(|(_, a)| a), Some(9));
        assert!(mailbox(MAX_CPUS - 1).is_some());
        assert!(mailbox(MAX_CPUS).is_none());
    }

    #[test]
    fn online_counts_only_the_run_from_the_boot_cpu() {
        assert_eq!(online_prefix(|i| i < 4), 4);
        // CPU 2 never came online: CPU 3 is not used, so 0..online() has no gap.
        assert_eq!(online_prefix(|i| i != 2 && i < 4), 2);
        assert_eq!(online_prefix(|_| true), MAX_CPUS);
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
