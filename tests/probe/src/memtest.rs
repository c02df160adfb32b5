//! `memory`: every vCPU writes address- and round-derived patterns over its share of the free
//! RAM, in sequential and in random order, and reads them back.

use crate::rt::{self, Rng};
use crate::tests::{fail, pass, Env, Verdict};
use crate::{line, mmu, say, smp};
use core::sync::atomic::{AtomicU64, Ordering};
use stage2::{AddrRange, Pa};

/// Rounds: two sequential, two in random page order.
const ROUNDS: u64 = 4;

/// Per vCPU: bytes verified, mismatches, and the first mismatch (address, expected, actual).
struct Tally {
    verified: AtomicU64,
    mismatches: AtomicU64,
    first: [AtomicU64; 3],
}

static TALLY: [Tally; smp::MAX_VCPUS] = [const {
    Tally {
        verified: AtomicU64::new(0),
        mismatches: AtomicU64::new(0),
        first: [const { AtomicU64::new(0) }; 3],
    }
}; smp::MAX_VCPUS];

/// The free RAM in whole pages, as its start and end: set before the vCPUs start.
static RANGE: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// The page size the random order moves by.
static PAGE: AtomicU64 = AtomicU64::new(4096);

fn pattern(addr: u64, round: u64) -> u64 {
    (addr.rotate_left(17) ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}

/// One vCPU's share: the free RAM split in `n` page-aligned slices.
fn share(vcpu: usize, n: usize) -> AddrRange<Pa> {
    let (s, e) = (
        RANGE[0].load(Ordering::Acquire),
        RANGE[1].load(Ordering::Acquire),
    );
    let page = PAGE.load(Ordering::Acquire);
    let pages = (e - s) / page;
    let per = pages / n as u64;
    let start = s + per * vcpu as u64 * page;
    let end = if vcpu + 1 == n { e } else { start + per * page };
    rt::between(Pa::new(start), Pa::new(end))
}

fn check(t: &Tally, page: AddrRange<Pa>, round: u64) {
    for a in page.step_by(8).map(Pa::get) {
        // SAFETY: this vCPU's share of the free RAM, identity mapped, 8-aligned.
        let got = unsafe { (a as *const u64).read_volatile() };
        let want = pattern(a, round);
        if got != want && t.mismatches.fetch_add(1, Ordering::Relaxed) == 0 {
            t.first[0].store(a, Ordering::Relaxed);
            t.first[1].store(want, Ordering::Relaxed);
            t.first[2].store(got, Ordering::Relaxed);
        }
    }
    t.verified.fetch_add(page.len(), Ordering::Relaxed);
}

fn fill(page: AddrRange<Pa>, round: u64) {
    for a in page.step_by(8).map(Pa::get) {
        // SAFETY: as in `check`.
        unsafe { (a as *mut u64).write_volatile(pattern(a, round)) };
    }
}

/// What every vCPU runs.
fn worker(vcpu: usize, n: usize) {
    let t = &TALLY[vcpu];
    let share = share(vcpu, n);
    let start = share.start().get();
    let page = PAGE.load(Ordering::Acquire);
    let pages = share.len() / page;
    for round in 0..ROUNDS {
        if round < 2 {
            fill(share, round);
            check(t, share, round);
        } else {
            // Random page order: a random start and a random step coprime with the page count
            // visit every page once, scattered; the check walks another order.
            let mut rng = Rng::new(round ^ (vcpu as u64) << 32 ^ start);
            let step = pick_coprime(&mut rng, pages);
            let first = rng.below(pages.max(1));
            for i in 0..pages {
                let p = (first + i * step) % pages;
                fill(rt::span(start + p * page, page), round);
            }
            let first = rng.below(pages.max(1));
            for i in 0..pages {
                let p = (first + i * step) % pages;
                check(t, rt::span(start + p * page, page), round);
            }
        }
    }
}

/// A random step coprime with `n` (so `first + i * step` visits every page once).
fn pick_coprime(rng: &mut Rng, n: u64) -> u64 {
    if n <= 1 {
        return 1;
    }
    loop {
        let s = 1 + rng.below(n - 1);
        if gcd(s, n) == 1 {
            return s;
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `memory`: the test (turns the MMU on at `arm64.pagesize=` first if `mmu` did not).
pub fn memory(env: &Env) -> Verdict {
    if !mmu::is_on() {
        let Some(g) = mmu::page_size(env) else {
            return fail(line!("no arm64.pagesize= on the command line"));
        };
        let ipa = crate::platform::hypervisor_node(env.dtb).map_or(40, |(_, i)| i as u32);
        if let Err(why) = mmu::enable(env, g, ipa) {
            return fail(why);
        }
    }
    let page = mmu::page_size(env).map_or(4096, |g| g.size());
    let free = rt::free_ram(env.dtb);
    let start = (free.start().get() + page - 1) & !(page - 1);
    let end = free.end().get() & !(page - 1);
    let pages = rt::between(Pa::new(start), Pa::new(end));
    RANGE[0].store(pages.start().get(), Ordering::Release);
    RANGE[1].store(pages.end().get(), Ordering::Release);
    PAGE.store(page, Ordering::Release);
    for t in &TALLY {
        t.verified.store(0, Ordering::Relaxed);
        t.mismatches.store(0, Ordering::Relaxed);
    }
    let t0 = crate::arch::counter();
    let n = match smp::run_on_all(env.dtb, worker) {
        Ok(n) => n,
        Err(why) => return fail(why),
    };
    let us = rt::micros(t0, crate::arch::counter()).max(1);
    let verified: u64 = TALLY
        .iter()
        .map(|t| t.verified.load(Ordering::Acquire))
        .sum();
    let mismatches: u64 = TALLY
        .iter()
        .map(|t| t.mismatches.load(Ordering::Acquire))
        .sum();
    for (i, t) in TALLY.iter().enumerate().take(n) {
        if t.mismatches.load(Ordering::Acquire) > 0 {
            let [a, w, g] = [0, 1, 2].map(|k| t.first[k].load(Ordering::Acquire));
            say!("probe: vCPU {i}: mismatch at {a:#x}: expected {w:#018x}, actual {g:#018x}");
        }
    }
    if mismatches > 0 {
        return fail(line!(
            "{mismatches} mismatches in {verified} bytes verified (first above)"
        ));
    }
    pass(line!(
        "{n} vCPUs, {} MiB of RAM x {ROUNDS} rounds (2 sequential, 2 random), {verified} bytes verified, 0 mismatches, {} MB/s",
        pages.len() >> 20,
        verified / us
    ))
}

/// `faults` (last, on a lazy stage 2 without `hyp.stress`): touches the whole of every region
/// the probe uses (its image up to the BSS end, the stacks of the vCPUs that ran, the free
/// RAM, the device tree) and prints how many distinct stage-2 granules that is, which must be
/// exactly the stage-2 faults hyp counts for the VM (`probe.s2=`: the stage-2 granule, as
/// `/hypervisor` says it).
pub fn faults(env: &Env) -> Verdict {
    let Some(s2) = crate::platform::stage2_granule(env.dtb) else {
        return fail(line!("no /hypervisor hyp,stage2-granule"));
    };
    let vcpus = smp::started().max(1) as u64;
    let stacks = rt::stacks_start().get();
    let regions = [
        rt::between(rt::ram(env.dtb).start(), rt::bss_end()),
        rt::span(stacks, vcpus * smp::STACK_BYTES),
        rt::free_ram(env.dtb),
        rt::span(env.dtb as u64, rt::dtb_size(env.dtb)),
    ];
    // Touch every granule of every region (reads: the tables are all there is to fault in).
    let t0 = crate::arch::counter();
    let mut sum = 0u64;
    for r in &regions {
        let (s, e) = (r.start().get(), r.end().get());
        let mut a = s & !(s2 - 1);
        while a < e {
            // SAFETY: inside the probe's RAM (image, stacks, free RAM, DTB), identity mapped.
            sum = sum.wrapping_add(unsafe { (a.max(s) as *const u8).read_volatile() } as u64);
            a += s2;
        }
    }
    // Distinct granules: the regions are disjoint and in address order, but may share a
    // granule at their edges.
    let mut count = 0u64;
    let mut last = None;
    for r in &regions {
        if r.is_empty() {
            continue;
        }
        let (s, e) = (r.start().get(), r.end().get());
        let (first, end) = (s / s2, (e - 1) / s2);
        let first = match last {
            Some(l) if l >= first => l + 1,
            _ => first,
        };
        if end >= first {
            count += end - first + 1;
        }
        last = Some(end.max(last.unwrap_or(0)));
    }
    let us = rt::micros(t0, crate::arch::counter()).max(1);
    core::hint::black_box(sum);
    pass(line!(
        "touched {count} stage-2 granules of {}K in {us} us",
        s2 >> 10
    ))
}
