//! `isolation`: the whole IPA space, probed. Every 2 MiB up to the VM's `hyp,ipa-bits`, and
//! every stage-2 granule within 64 MiB of each edge of RAM and of each emulated device, is
//! read and written; outside RAM and the devices each access must end in an abort delivered
//! to the guest, never in data and never in a hyp crash.

use crate::rt::{self, expect, Outcome};
use crate::tests::{fail, pass, Env, Verdict};
use crate::{line, mmu, platform};
use stage2::{AddrRange, Pa};

/// How far around each edge every granule is probed.
const EDGE: u64 = 64 << 20;
/// The stride of the whole-space sweep.
const SWEEP: u64 = 2 << 20;

/// RAM and the emulated devices: what may answer with data.
struct Map {
    /// RAM, the GIC's distributor and redistributors (empty at 0 when the device tree does
    /// not name them), the PL011.
    regions: [AddrRange<Pa>; 4],
}

impl Map {
    fn new(dtb: usize) -> Map {
        let none = AddrRange::empty(Pa::ZERO);
        let mut regions = [rt::ram(dtb), none, none, rt::span(rt::UART, 0x1000)];
        // SAFETY: hyp passes the VM's device tree in x0.
        if let Ok(fdt) = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
            if let Some(gic) = fdt.find_compatible(&["arm,gic-v3"]) {
                for (i, r) in gic.reg().into_iter().flatten().take(2).enumerate() {
                    regions[1 + i] =
                        rt::span(r.starting_address as u64, r.size.unwrap_or(0) as u64);
                }
            }
        }
        Map { regions }
    }

    fn answers(&self, a: u64) -> bool {
        self.regions.iter().any(|r| r.contains(Pa::new(a)))
    }
}

/// Tallies of the probes.
struct Tally {
    probes: u64,
    /// Aborts by exception class (0x25: data abort from EL1).
    aborts: [u64; 64],
    /// Data aborts that were not hyp's synchronous external abort (DFSC 0b010000): the
    /// probe's own stage 1 faulted, so the access never reached stage 2.
    not_hyp: u64,
    first_not_hyp: Option<(u64, u64)>,
    /// Accesses outside RAM and the devices that completed with no abort.
    leaked: u64,
    first_leak: Option<(u64, u64)>,
}

impl Tally {
    fn probe(&mut self, a: u64) {
        for write in [false, true] {
            let mut got = 0;
            // SAFETY: `a` is mapped Device at stage 1 and lies outside RAM and the devices:
            // hyp must abort it; the handler skips the access.
            let o = expect(|| unsafe {
                got = crate::arch::access(a, 8, write, 0x5ec2_e75e_c2e7_5ec2);
            });
            self.probes += 1;
            match o {
                Outcome::Exception { esr, .. } => {
                    self.aborts[((esr >> 26) & 63) as usize] += 1;
                    if esr & 0x3f != 0b01_0000 {
                        self.not_hyp += 1;
                        self.first_not_hyp.get_or_insert((a, esr));
                    }
                }
                Outcome::Done => {
                    self.leaked += 1;
                    self.first_leak.get_or_insert((a, got));
                }
            }
        }
    }
}

/// The test.
pub fn isolation(env: &Env) -> Verdict {
    let (granule, ipa) = match platform::hypervisor_node(env.dtb) {
        Ok(v) => v,
        Err(why) => return fail(line!("{why}")),
    };
    let Some(page) = mmu::page_size(env) else {
        return fail(line!("no arm64.pagesize= on the command line"));
    };
    if !mmu::is_on() {
        if let Err(why) = mmu::enable(env, page, ipa as u32) {
            return fail(why);
        }
    }
    if let Err(why) = mmu::map_rest_as_device(env, ipa as u32) {
        return fail(why);
    }
    let map = Map::new(env.dtb);
    // A guest's physical addresses stop at its PARange (hyp shows the largest one that fits
    // in the VM's IPA size): beyond it stage 1 itself faults (address size), so no IPA there
    // can ever reach stage 2.
    let pa_bits = crate::mmu::guest_pa_bits().min(ipa as u32);
    let limit = 1u64 << pa_bits;
    let mut t = Tally {
        probes: 0,
        aborts: [0; 64],
        not_hyp: 0,
        first_not_hyp: None,
        leaked: 0,
        first_leak: None,
    };
    // Every 2 MiB of the IPA space.
    let mut a = 0;
    while a < limit {
        if !map.answers(a) {
            t.probe(a);
        }
        a += SWEEP;
    }
    // Every stage-2 granule within 64 MiB of each edge of RAM and of each device.
    let mut edges = 0;
    for r in &map.regions {
        for edge in [r.start().get(), r.end().get()] {
            let from = edge.saturating_sub(EDGE);
            let to = (edge + EDGE).min(limit);
            let mut a = from & !(granule - 1);
            while a < to {
                if !map.answers(a) {
                    t.probe(a);
                    edges += 1;
                }
                a += granule;
            }
        }
    }
    if let Some((a, v)) = t.first_leak {
        return fail(line!(
            "{} of {} accesses outside RAM and the devices completed, the first at {a:#x} (read {v:#x})",
            t.leaked,
            t.probes
        ));
    }
    if let Some((a, esr)) = t.first_not_hyp {
        return fail(line!(
            "{} aborts were not hyp's external abort, the first at {a:#x} (ESR_EL1 {esr:#x})",
            t.not_hyp
        ));
    }
    let dabt = t.aborts[rt::ec::DABT_CUR as usize];
    let other: u64 = t.aborts.iter().sum::<u64>() - dabt;
    if other != 0 {
        return fail(line!("{other} aborts of another class than a data abort"));
    }
    pass(line!(
        "{} addresses ({edges} near edges) read and written up to {pa_bits} bits (ipa {ipa}): {dabt} data aborts, 0 accesses outside RAM and the devices completed",
        t.probes / 2
    ))
}

/// The word the `secret` test fills its RAM with.
pub const SECRET: u64 = 0x5ec2_e75e_c2e7_5ec2;

/// `secret`: fills all of its free RAM with [`SECRET`] and keeps running for `probe.hold_ms`
/// (default 3000) so that other VMs probe while it is resident; they must never see it.
pub fn secret(env: &Env) -> Verdict {
    let free = rt::free_ram(env.dtb);
    for a in free.step_by(8).map(Pa::get) {
        // SAFETY: the probe's free RAM, 8-aligned.
        unsafe { (a as *mut u64).write_volatile(SECRET ^ (a & 0xff)) };
    }
    rt::delay_us(env.args.num("probe.hold_ms", 3000) * 1000);
    // Still all there: nothing else (another VM, a device's DMA) wrote into it meanwhile.
    let (mut changed, mut first) = (0u64, 0u64);
    for a in free.step_by(8).map(Pa::get) {
        // SAFETY: as above.
        if unsafe { (a as *const u64).read_volatile() } != SECRET ^ (a & 0xff) {
            if changed == 0 {
                first = a;
            }
            changed += 1;
        }
    }
    if changed > 0 {
        return fail(line!(
            "{changed} words of its secret changed while held, the first at {first:#x}"
        ));
    }
    pass(line!("{} bytes of secret held", free.len()))
}
