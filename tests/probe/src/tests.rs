//! The probe's tests, selected by `probe.test=<name>[,<name>...]`.
//!
//! | test | what it checks | parameters |
//! |---|---|---|
//! | `victim` | its console lines are timely and its RAM keeps its data while other VMs misbehave | `probe.lines` (100), `probe.gap_us` (20000), `probe.mem` (4M) |
//! | `ram-zero` | every byte of its free RAM reads zero before it writes any | |
//! | `hostile-uart-flood` | writes control and high bytes to the UART, never a newline | `probe.bytes` (4M) |
//! | `hostile-giant-line` | writes one enormous line | `probe.bytes` (4M) |
//! | `hostile-features` | every feature its ID registers hide is UNDEFINED, the emulated registers behave, set/way operations are harmless | |
//! | `hostile-hvc` | random HVC/SMC calls get SMCCC answers, never a crash | `probe.calls` (100000), `probe.seed` |
//! | `hostile-mmio` | random accesses to every emulated device get a value or an abort | `probe.accesses` (20000), `probe.seed` |
//! | `hostile-touch` | touches every page of its free RAM (a lazy VM's table budget) | `probe.stride` (4K) |
//! | `mmu` | its own stage 1 at `arm64.pagesize=` (stage2's EL1 regime), MMU on: AT S1E1R, data, a stage-1 fault; the tests after it run with the MMU on | |
//! | `memory` | every vCPU writes address- and round-derived patterns over its share of the free RAM (2 rounds sequential, 2 in random page order) and reads them back; mismatches are printed | |
//! | `faults` | last, on a lazy stage 2: touches all of its image, stacks, free RAM and DTB and prints how many distinct stage-2 granules that is (hyp's fault count must equal it) | |
//! | `isolation` | every 2 MiB of the IPA space and every stage-2 granule within 64 MiB of each edge of RAM and the devices, read and written: outside RAM and the devices each access must abort | |
//! | `secret` | fills its free RAM with a secret pattern, holds it while other VMs probe, and checks it is unchanged | `probe.hold_ms` (3000) |
//! | `hypervisor` | the `/hypervisor` node's stage-2 granule and IPA size (against `probe.s2`, `probe.ipa` when given) | `probe.s2`, `probe.ipa` |
//! | `timer-phys` | the EL1 physical timer alone fires PPI 30, wakes WFI, not before its deadline, once | |
//! | `timer-both` | both EL1 timers at once, in either order and at one deadline: each PPI once, not early | |
//! | `timer-pending` | PPI 30 disabled: pending in `GICR_ISPENDR0` when the timer fires, clear under IMASK, delivered once enabled | |
//! | `wfit` | WFIT (when `ID_AA64ISAR2_EL1.WFxT` shows it) returns at its 20 ms deadline | |
//! | `aarch32-el0` | `ID_AA64PFR0_EL1.EL0` = 1 and an ERET to AArch32 EL0 is an illegal exception return (MMU off) | |
//! | `cpu-restart` | 2 vCPUs, after `mmu`: vCPU 1 leaves an SGI active, CPU_OFF, CPU_ON: interrupt state reset, SGI taken again, counter monotonic, same CNTFRQ | |
//! | `counters` | 2 vCPUs, after `mmu`: 200 counter hand-offs between the vCPUs never see it lower | |
//! | `pmu-id` | `ID_AA64DFR0_EL1.PMUVer`, `PMCR_EL0.N` and the `/pmu` node as expected (PMUVer 0: PMU registers UNDEFINED, no node) | `probe.pmuver` (6), `probe.counters` (6) |
//! | `pmu-cycles` | the cycle counter is monotonic and 2x the loop takes 2x the cycles (10%) | |
//! | `pmu-instructions` | `INST_RETIRED` counts a 200,000-instruction loop to within 64 (needs QEMU `-icount`) | |
//! | `pmu-swinc` | `PMSWINC_EL0` increments a `SW_INCR` counter exactly | |
//! | `pmu-el2` | 2,000 HVC calls add no more cycles or instructions than the guest's own, even with the `NSH` filter set | |
//! | `pmu-overflow` | a counter overflow raises INTID 23 through the vGIC, level-sensitive | |
//! | `pmu-reset` | 2 vCPUs (MMU on, as `memory`): vCPU 1 restarted (CPU_ON) finds every PMU register it had set zeroed | |
//! | `dma-outside` | drives its assigned virtio-blk-pci disk (slot `probe.slot`): a read into its own RAM completes by DMA; the same read aimed at `probe.targets` (`+`-separated IPAs outside its RAM) never does | `probe.slot` (1), `probe.targets` (0x1000000000) |
//! | `pci-net` | its assigned virtio-net-pci (slot `probe.slot`) is found by its IDs, its BARs placed in the PCI window and its MAC read through them; every other slot reads as absent | `probe.slot` (1) |
//! | `smccc` | prints the SMCCC_ARCH_FEATURES answers for the three Spectre workarounds (the test asserts them per CPU model) | |

use crate::rt::{self, Args};
use crate::{arch, dma, hostile, isolation, memtest, mmu, platform, pmu, say, timers};

/// What a test reports: PASS with its figures, or FAIL with why, each a short line.
pub struct Verdict {
    pass: bool,
    text: Line,
}

/// A PASS with `figures`.
pub fn pass(figures: Line) -> Verdict {
    Verdict {
        pass: true,
        text: figures,
    }
}

/// A FAIL because of `why`.
pub fn fail(why: Line) -> Verdict {
    Verdict {
        pass: false,
        text: why,
    }
}

/// A line of text for a verdict.
pub struct Line(alloc::string::String);

impl Line {
    /// An empty line.
    pub fn new() -> Line {
        Line(alloc::string::String::new())
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.push_str(s);
        Ok(())
    }
}

/// `format!` into a [`Line`].
#[macro_export]
macro_rules! line {
    ($($t:tt)*) => {{
        let mut l = $crate::tests::Line::new();
        let _ = core::fmt::Write::write_fmt(&mut l, format_args!($($t)*));
        l
    }};
}

/// Everything a test may need.
pub struct Env {
    /// The command line.
    pub args: Args,
    /// The device tree's address.
    pub dtb: usize,
}

type Test = fn(&Env) -> Verdict;

const TESTS: &[(&str, Test)] = &[
    ("victim", hostile::victim),
    ("ram-zero", hostile::ram_zero),
    ("hostile-uart-flood", hostile::uart_flood),
    ("hostile-giant-line", hostile::giant_line),
    ("hostile-features", hostile::features),
    ("hostile-hvc", hostile::hvc),
    ("hostile-mmio", hostile::mmio),
    ("hostile-touch", hostile::touch),
    ("smccc", hostile::smccc),
    ("hypervisor", platform::hypervisor),
    ("mmu", mmu::mmu),
    ("memory", memtest::memory),
    ("faults", memtest::faults),
    ("isolation", isolation::isolation),
    ("secret", isolation::secret),
    ("timer-phys", timers::phys),
    ("timer-both", timers::both),
    ("timer-pending", timers::pending),
    ("wfit", timers::wfit),
    ("aarch32-el0", timers::aarch32_el0),
    ("cpu-restart", timers::restart),
    ("counters", timers::counters),
    ("pmu-id", pmu::id),
    ("pmu-cycles", pmu::cycles),
    ("pmu-instructions", pmu::instructions),
    ("pmu-swinc", pmu::swinc),
    ("pmu-el2", pmu::el2),
    ("pmu-overflow", pmu::overflow),
    ("pmu-reset", pmu::reset),
    ("dma-outside", dma::outside),
    ("pci-net", dma::net),
];

/// The probe's Rust entry (vCPU 0, from `arch`'s boot code).
#[no_mangle]
extern "C" fn probe_main(dtb: usize) -> ! {
    let env = Env {
        args: Args::from_dtb(dtb),
        dtb,
    };
    let list = env.args.get("probe.test").unwrap_or("");
    if list.is_empty() {
        say!(
            "PROBE: FAIL no probe.test= on the command line ({})",
            env.args.all()
        );
        rt::system_off();
    }
    let t0 = arch::counter();
    for name in list.split(',') {
        match TESTS.iter().find(|(n, _)| *n == name) {
            Some(&(n, test)) => {
                rt::set_running(n);
                let v = test(&env);
                let word = if v.pass { "PASS" } else { "FAIL" };
                say!("PROBE {n}: {word} {}", v.text.as_str());
            }
            None => say!("PROBE {name}: FAIL no such test"),
        }
    }
    say!(
        "PROBE done in {} ms",
        rt::micros(t0, arch::counter()) / 1000
    );
    rt::system_off()
}
