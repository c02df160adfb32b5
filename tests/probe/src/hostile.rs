//! Tests of isolation against a hostile guest: the hostile guests (`hostile-*`) and the
//! victim that runs beside them.

use crate::rt::{self, ec, expect, fid, Rng, NOT_SUPPORTED, UART};
use crate::tests::{fail, pass, Env, Verdict};
use crate::{arch, line, say};
use core::arch::asm;
use stage2::{AddrRange, Pa};

/// Writes `bytes` straight to the UART's data register, without polling its flags (hyp's
/// virtual UART never fills): one exit per byte, as fast as a guest can flood.
fn flood(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut n = 0;
    for b in bytes {
        // SAFETY: the PL011 data register, emulated by hyp.
        unsafe { arch::write32(UART, u32::from(b)) };
        n += 1;
    }
    n
}

/// `hostile-uart-flood`: control bytes, escape, and bytes >= 0x80, never a newline (each used
/// to grow hyp's line buffer without bound), then one newline.
pub fn uart_flood(env: &Env) -> Verdict {
    let n = env.args.num("probe.bytes", 4 << 20);
    const MIX: [u8; 6] = [0x01, 0x1b, 0x80, 0xff, 0x07, 0x7f];
    let sent = flood((0..n).map(|i| MIX[(i % MIX.len() as u64) as usize]));
    flood(b"\n".iter().copied());
    pass(line!("wrote {sent} bytes without a newline"))
}

/// `hostile-giant-line`: one line of `probe.bytes` printable bytes, then a newline.
pub fn giant_line(env: &Env) -> Verdict {
    let n = env.args.num("probe.bytes", 4 << 20);
    let sent = flood((0..n).map(|i| b'a' + (i % 26) as u8));
    flood(b"\n".iter().copied());
    pass(line!("wrote a line of {sent} bytes"))
}

/// Writes `x`'s pattern word for `addr` (address- and seed-derived).
fn pattern(addr: u64, seed: u64) -> u64 {
    (addr ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_0000_0000_a5a5
}

/// `victim`: fills `probe.mem` bytes of its RAM with a pattern, prints `probe.lines` lines
/// (timing each one: the guest time from its first byte to its newline), waits
/// `probe.gap_us` between lines, then checks every word of the pattern.
pub fn victim(env: &Env) -> Verdict {
    let free = rt::free_ram(env.dtb);
    let len = env.args.num("probe.mem", 4 << 20).min(free.len()) & !7;
    let data = rt::span(free.start().get(), len);
    let lines = env.args.num("probe.lines", 100);
    let gap = env.args.num("probe.gap_us", 20_000);
    let seed = arch::counter() | 1;
    for a in data.step_by(8).map(Pa::get) {
        // SAFETY: the probe's free RAM (after its image, before the DTB block), 8-aligned.
        unsafe { (a as *mut u64).write_volatile(pattern(a, seed)) };
    }
    let mut longest = 0;
    for i in 0..lines {
        let t0 = arch::counter();
        say!("victim line {i} of {lines}: the quick brown fox jumps over the lazy dog");
        longest = longest.max(rt::micros(t0, arch::counter()));
        rt::delay_us(gap);
    }
    for a in data.step_by(8).map(Pa::get) {
        // SAFETY: as above.
        let got = unsafe { (a as *const u64).read_volatile() };
        let want = pattern(a, seed);
        if got != want {
            return fail(line!(
                "data at {a:#x}: expected {want:#018x}, found {got:#018x}"
            ));
        }
    }
    pass(line!(
        "lines {lines}, longest line {longest} us, data {len} bytes intact"
    ))
}

/// `ram-zero`: the free RAM reads as zero before the probe writes it (hyp scrubs VM RAM).
pub fn ram_zero(env: &Env) -> Verdict {
    let free = rt::free_ram(env.dtb);
    for a in free.step_by(8).map(Pa::get) {
        // SAFETY: the probe's free RAM, 8-aligned, never written before this test.
        let v = unsafe { (a as *const u64).read_volatile() };
        if v != 0 {
            return fail(line!("RAM at {a:#x} holds {v:#018x} before any write"));
        }
    }
    pass(line!("{} bytes of RAM read as zero", free.len()))
}

/// One hidden or emulated feature and what the guest must see.
struct Probe {
    name: &'static str,
    /// `true`: the operation is UNDEFINED (class 0); `false`: it completes.
    undefined: bool,
    op: fn() -> u64,
    /// For an operation that completes: the value it must return.
    want: Option<u64>,
}

macro_rules! insn {
    ($($t:tt)*) => {{
        let v: u64;
        // SAFETY: a single system instruction the test expects to trap (the exception
        // handler skips it) or to be emulated; x0 is the result.
        unsafe { asm!($($t)*, out("x0") v, options(nostack)) };
        v
    }};
}

const FEATURES: &[Probe] = &[
    // SVE: enabled at EL1 (CPACR_EL1.ZEN = 0b11), then RDVL x0, #1; trapped by CPTR_EL2.TZ.
    Probe {
        name: "SVE RDVL",
        undefined: true,
        op: || {
            // SAFETY: CPACR_EL1 is the probe's own; ZEN (bits 17:16) and SMEN (25:24) only
            // enable instructions the test expects to trap.
            unsafe {
                asm!("mrs {t}, cpacr_el1", "orr {t}, {t}, #(3 << 16)", "msr cpacr_el1, {t}", "isb",
                    t = out(reg) _, options(nostack))
            };
            insn!("mov x0, #0", ".inst 0x04bf5020")
        },
        want: None,
    },
    // SME: CPACR_EL1.SMEN = 0b11, then RDSVL x0, #1; trapped by CPTR_EL2.TSM.
    Probe {
        name: "SME RDSVL",
        undefined: true,
        op: || {
            // SAFETY: as for SVE.
            unsafe {
                asm!("mrs {t}, cpacr_el1", "orr {t}, {t}, #(3 << 24)", "msr cpacr_el1, {t}", "isb",
                    t = out(reg) _, options(nostack))
            };
            insn!("mov x0, #0", ".inst 0x04bf5820")
        },
        want: None,
    },
    Probe {
        name: "RAS ERRIDR_EL1",
        undefined: true,
        op: || insn!("mrs x0, S3_0_C5_C3_0"),
        want: None,
    },
    Probe {
        name: "RAS ERXSTATUS_EL1",
        undefined: true,
        op: || insn!("mrs x0, S3_0_C5_C4_2"),
        want: None,
    },
    Probe {
        name: "RAS ERXSTATUS_EL1 write",
        undefined: true,
        op: || insn!("mov x0, #-1", "msr S3_0_C5_C4_2, x0"),
        want: None,
    },
    Probe {
        name: "PMU PMCR_EL0",
        undefined: true,
        op: || insn!("mrs x0, S3_3_C9_C12_0"),
        want: None,
    },
    Probe {
        name: "PMU PMCCNTR_EL0",
        undefined: true,
        op: || insn!("mrs x0, S3_3_C9_C13_0"),
        want: None,
    },
    // PAuth: SCTLR_EL1.EnIA on (else PACIA is a no-op), then PACIA x0, x1; HCR_EL2.API = 0.
    Probe {
        name: "PAuth PACIA",
        undefined: true,
        op: || {
            // SAFETY: SCTLR_EL1.EnIA (bit 31) enables an instruction the test expects to trap;
            // the probe itself signs nothing.
            unsafe {
                asm!("mrs {t}, sctlr_el1", "orr {t}, {t}, #(1 << 31)", "msr sctlr_el1, {t}", "isb",
                    t = out(reg) _, options(nostack))
            };
            insn!("mov x0, #0x1000", "mov x1, #7", ".inst 0xdac10020")
        },
        want: None,
    },
    Probe {
        name: "PAuth APIAKeyLo_EL1",
        undefined: true,
        op: || insn!("mrs x0, S3_0_C2_C1_0"),
        want: None,
    },
    Probe {
        name: "MTE GCR_EL1",
        undefined: true,
        op: || insn!("mrs x0, S3_0_C1_C0_6"),
        want: None,
    },
    Probe {
        name: "LOR LORC_EL1",
        undefined: true,
        op: || insn!("mrs x0, S3_0_C10_C4_3"),
        want: None,
    },
    Probe {
        name: "trace TRFCR_EL1",
        undefined: true,
        op: || insn!("mrs x0, S3_0_C1_C2_1"),
        want: None,
    },
    Probe {
        name: "trace TRCPRGCTLR",
        undefined: true,
        op: || insn!("mrs x0, S2_1_C0_C1_0"),
        want: None,
    },
    Probe {
        name: "SPE PMSIDR_EL1",
        undefined: true,
        op: || insn!("mrs x0, S3_0_C9_C9_7"),
        want: None,
    },
    Probe {
        name: "AMU AMCR_EL0",
        undefined: true,
        op: || insn!("mrs x0, S3_3_C13_C2_0"),
        want: None,
    },
    Probe {
        name: "IMPLEMENTATION DEFINED S3_0_C15_C0_0",
        undefined: true,
        op: || insn!("mrs x0, S3_0_C15_C0_0"),
        want: None,
    },
    // Emulated: ACTLR_EL1 is RAZ/WI.
    Probe {
        name: "ACTLR_EL1 write then read",
        undefined: false,
        op: || insn!("mov x0, #-1", "msr actlr_el1, x0", "mrs x0, actlr_el1"),
        want: Some(0),
    },
    // Emulated: the OS lock, per vCPU (OSLSR_EL1: OSLM = 0b10, OSLK).
    Probe {
        name: "OS lock set",
        undefined: false,
        op: || {
            insn!(
                "mov x0, #1",
                "msr oslar_el1, x0",
                "isb",
                "mrs x0, oslsr_el1"
            )
        },
        want: Some(0b1010),
    },
    Probe {
        name: "OS lock clear",
        undefined: false,
        op: || insn!("msr oslar_el1, xzr", "isb", "mrs x0, oslsr_el1"),
        want: Some(0b1000),
    },
    Probe {
        name: "MDRAR_EL1",
        undefined: false,
        op: || insn!("mrs x0, mdrar_el1"),
        want: Some(0),
    },
    // Set/way maintenance: trapped and turned into maintenance of the VM's own memory.
    Probe {
        name: "DC CISW/CSW/ISW",
        undefined: false,
        op: || {
            insn!(
                "mov x0, #0",
                "dc cisw, x0",
                "dc csw, x0",
                "dc isw, x0",
                "mov x0, #(1 << 1)",
                "dc cisw, x0",
                "mov x0, #0"
            )
        },
        want: Some(0),
    },
];

/// `hostile-features`: every feature the guest's ID registers hide is UNDEFINED; the
/// registers hyp emulates behave as documented; FP/SIMD state is the guest's own.
pub fn features(_env: &Env) -> Verdict {
    let (mut undef, mut emulated) = (0, 0);
    // The PMU is hidden only where the guest does not get it (PMUVer 0; hyp passes PMUv3p5
    // and later through, `pmu-*` tests it).
    // SAFETY: reading an ID register has no effect on memory.
    let dfr0: u64 = unsafe {
        let v;
        asm!("mrs {}, id_aa64dfr0_el1", out(reg) v, options(nomem, nostack));
        v
    };
    let pmu_shown = (dfr0 >> 8) & 0xf != 0;
    for p in FEATURES {
        if pmu_shown && p.name.starts_with("PMU ") {
            continue;
        }
        let mut got = 0;
        let outcome = expect(|| got = (p.op)());
        match (p.undefined, outcome.class(), p.want) {
            (true, Some(ec::UNKNOWN), _) => undef += 1,
            (false, None, Some(w)) if got == w => emulated += 1,
            (true, _, _) => {
                return fail(line!(
                    "{} is hidden but executed: {outcome:?}, x0 {got:#x}",
                    p.name
                ))
            }
            (false, _, w) => {
                return fail(line!(
                    "{}: expected {w:#x?} without an exception, got {outcome:?}, x0 {got:#x}",
                    p.name
                ))
            }
        }
    }
    // FP/SIMD is the guest's: a value survives an exit (an HVC).
    let v: u64;
    // SAFETY: d0/x-registers only; PSCI_VERSION changes nothing.
    unsafe {
        asm!(
            "fmov d0, {pat}",
            "hvc #0",
            "fmov {v}, d0",
            pat = in(reg) 0x1234_5678_9abc_def0u64,
            v = out(reg) v,
            inout("x0") u64::from(fid::PSCI_VERSION) => _,
            out("x1") _, out("x2") _, out("x3") _, out("v0") _,
            options(nostack)
        )
    };
    if v != 0x1234_5678_9abc_def0 {
        return fail(line!("FP register d0 changed across an exit: {v:#x}"));
    }
    pass(line!(
        "{undef} hidden features UNDEFINED, {emulated} emulated registers as documented, FP kept"
    ))
}

/// Whether a function ID would change the VM's power state or park the vCPU: the random
/// calls leave those out (PSCI CPU_SUSPEND, CPU_OFF, SYSTEM_OFF/RESET/RESET2/SUSPEND,
/// CPU_FREEZE, CPU_DEFAULT_SUSPEND, in both calling conventions).
fn stops(f: u32) -> bool {
    matches!(
        f & !0x4000_0000,
        0x8400_0001
            | 0x8400_0002
            | 0x8400_0008
            | 0x8400_0009
            | 0x8400_000b
            | 0x8400_000c
            | 0x8400_000e
            | 0x8400_0012
    )
}

/// Whether hyp implements `f` (PSCI 1.1 and the SMCCC arch calls); every other ID must
/// answer NOT_SUPPORTED.
fn known(f: u32) -> bool {
    let base = f & !0x4000_0000;
    (0x8400_0000..=0x8400_001f).contains(&base)
        || matches!(
            f,
            0x8000_0000 | 0x8000_0001 | 0x8000_8000 | 0x8000_7fff | 0x8000_3fff
        )
}

/// `hostile-hvc`: `probe.calls` random SMCCC calls through HVC and SMC, with random function
/// IDs (half anywhere, half in the PSCI and SMCCC ranges) and arguments.
pub fn hvc(env: &Env) -> Verdict {
    let calls = env.args.num("probe.calls", 100_000);
    let mut rng = Rng::new(env.args.num("probe.seed", arch::counter()));
    let (mut unsupported, mut answered, mut imm) = (0u64, 0u64, 0u64);
    for i in 0..calls {
        let r = rng.next();
        let f = match r & 3 {
            0 | 1 => (r >> 32) as u32,
            2 => 0x8400_0000 | (r >> 32) as u32 & 0x4000_003f,
            _ => 0x8000_0000 | (r >> 32) as u32 & 0xffff,
        };
        if stops(f) {
            continue;
        }
        let mut args = [u64::from(f), 0, 0, 0, 0, 0, 0, 0];
        for a in args.iter_mut().skip(1) {
            *a = rng.next();
        }
        if i % 1000 == 999 {
            // An HVC with a non-zero immediate is no SMCCC call: hyp answers NOT_SUPPORTED
            // and does not act on the function ID (a PSCI call among them would be served).
            let ret = arch::hvc_imm(r as u32, u64::from(f)) as i64;
            if ret != NOT_SUPPORTED {
                return fail(line!(
                    "HVC #imm (non-zero) with function {f:#010x} answered {ret:#x}, not NOT_SUPPORTED"
                ));
            }
            imm += 1;
            continue;
        }
        let ret = arch::smccc(r & 4 != 0, args)[0] as i64;
        if known(f) {
            answered += 1;
        } else if ret == NOT_SUPPORTED {
            unsupported += 1;
        } else {
            return fail(line!(
                "unknown function {f:#010x} answered {ret:#x}, not NOT_SUPPORTED"
            ));
        }
    }
    pass(line!(
        "{calls} calls: {unsupported} NOT_SUPPORTED, {answered} PSCI/SMCCC answered, {imm} with a non-zero HVC immediate"
    ))
}

/// The emulated devices of a 1-vCPU VM (QEMU virt layout): GICD, the one GICR frame pair,
/// the PL011.
fn devices() -> [(&'static str, AddrRange<Pa>); 3] {
    [
        ("GICD", rt::span(0x0800_0000, 0x1_0000)),
        ("GICR", rt::span(0x080a_0000, 0x2_0000)),
        ("UART", rt::span(UART, 0x1000)),
    ]
}

/// `hostile-mmio`: `probe.accesses` random reads and writes of every size at random offsets
/// of every emulated device, plus accesses hyp cannot decode (LDP) and just past each device.
pub fn mmio(env: &Env) -> Verdict {
    let n = env.args.num("probe.accesses", 20_000);
    let mut rng = Rng::new(env.args.num("probe.seed", arch::counter()));
    let before = rt::taken(ec::DABT_CUR);
    let devices = devices();
    for _ in 0..n {
        let (_, dev) = devices[rng.below(3) as usize];
        let base = dev.start().get();
        let width = 1u32 << rng.below(4);
        let off = rng.below(dev.len()) & !(u64::from(width) - 1);
        let write = rng.next() & 1 == 1;
        let value = rng.next();
        // Never the UART's control register: the probe's own console must stay on.
        if base == UART && off & !3 == 0x30 {
            continue;
        }
        // SAFETY: an emulated device's MMIO (or an abort the handler skips).
        let o = expect(|| unsafe {
            arch::access(base + off, width, write, value);
        });
        if let Some(c) = o.class() {
            if c != ec::DABT_CUR {
                return fail(line!("access to {:#x}: unexpected {o:?}", base + off));
            }
        }
    }
    let mut undecodable = 0;
    for (name, dev) in devices {
        let (start, end) = (dev.start().get(), dev.end().get());
        for addr in [start, end, end + 0x1000] {
            // SAFETY: an LDP hyp cannot emulate, or an address past the device: an abort.
            let o = expect(|| unsafe {
                arch::ldp(addr);
            });
            if o.class() != Some(ec::DABT_CUR) {
                return fail(line!(
                    "LDP at {addr:#x} ({name}): expected a data abort, got {o:?}"
                ));
            }
            undecodable += 1;
        }
    }
    let aborts = rt::taken(ec::DABT_CUR) - before;
    pass(line!(
        "{n} random accesses and {undecodable} undecodable ones: {aborts} data aborts, hyp alive"
    ))
}

/// `hostile-touch`: writes one word in every `probe.stride` bytes of its free RAM.
pub fn touch(env: &Env) -> Verdict {
    let stride = env.args.num("probe.stride", 4096).max(8) & !7;
    let mut n = 0u64;
    for a in rt::free_ram(env.dtb).step_by(stride).map(Pa::get) {
        // SAFETY: the probe's free RAM.
        unsafe { (a as *mut u64).write_volatile(a) };
        n += 1;
    }
    pass(line!("touched {n} words {stride} bytes apart"))
}

/// `smccc`: the answers to SMCCC_ARCH_FEATURES for the three Spectre workarounds.
pub fn smccc(_env: &Env) -> Verdict {
    let q = |id: u32| {
        arch::smccc(
            false,
            [
                u64::from(fid::SMCCC_ARCH_FEATURES),
                u64::from(id),
                0,
                0,
                0,
                0,
                0,
                0,
            ],
        )[0] as i64
    };
    let version = arch::smccc(false, [u64::from(fid::SMCCC_VERSION), 0, 0, 0, 0, 0, 0, 0])[0];
    let (w1, w2, w3) = (
        q(fid::WORKAROUND_1),
        q(fid::WORKAROUND_2),
        q(fid::WORKAROUND_3),
    );
    if version as i64 == NOT_SUPPORTED {
        return fail(line!("SMCCC_VERSION is NOT_SUPPORTED"));
    }
    say!("probe: SMCCC version {:#x}", version);
    pass(line!(
        "workaround_1 {w1} workaround_2 {w2} workaround_3 {w3}"
    ))
}
