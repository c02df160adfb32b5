//! The probe's own stage 1 at the granule `arm64.pagesize=` names, built with `stage2`'s EL1
//! regime (the same walker hyp uses for stage 2 and for itself), and the `mmu` test.

use crate::mem::{self, Frames};
use crate::rt::{self, ec, expect};
use crate::tests::{fail, pass, Env, Verdict};
use crate::{arch, line};
use core::sync::atomic::{AtomicU64, Ordering};
use stage2::{
    AddrRange, Attrs, CpuFeatures, Geometry, Granule, IdRegs, MapOpts, NoMaintenance, Pa,
    PageTable, Regime, Va,
};

/// The emulated devices of the guest's platform (QEMU virt layout), mapped as Device memory:
/// GICD, the redistributors (room for 8 vCPUs), the PL011.
fn devices() -> [AddrRange<Pa>; 3] {
    [
        rt::span(0x0800_0000, 0x1_0000),
        rt::span(0x080a_0000, 8 * 0x2_0000),
        rt::span(rt::UART, 0x1000),
    ]
}

/// MAIR_EL1, TCR_EL1 and TTBR0_EL1 of the probe's stage 1 once [`enable`] ran (0: not yet),
/// for the secondary vCPUs.
static REGS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// The probe's address space, kept for good once the MMU is on (its tables are in use).
static SPACE: spin::Mutex<Option<Space>> = spin::Mutex::new(None);

/// Turns the MMU on on this (secondary) vCPU with the tables [`enable`] built, if any.
pub fn enable_here() {
    let [mair, tcr, ttbr] = [0, 1, 2].map(|i| REGS[i].load(Ordering::Acquire));
    if ttbr != 0 {
        // SAFETY: the same tables, registers and identity map `enable` turned on on vCPU 0.
        unsafe { arch::enable_mmu(mair, tcr, ttbr) };
    }
}

/// Whether the MMU is on (the probe's stage 1 exists).
pub fn is_on() -> bool {
    REGS[2].load(Ordering::Acquire) != 0
}

/// The probe's address space once [`enable`] ran.
pub struct Space {
    /// Its geometry.
    pub geo: Geometry,
    /// Its tables.
    pub pt: PageTable<Frames, NoMaintenance, Va>,
}

/// The page size `arm64.pagesize=` names.
pub fn page_size(env: &Env) -> Option<Granule> {
    match env.args.get("arm64.pagesize")? {
        "4k" => Some(Granule::K4),
        "16k" => Some(Granule::K16),
        "64k" => Some(Granule::K64),
        _ => None,
    }
}

/// The CPU features as hyp shows them to the guest (the sanitized ID registers).
fn guest_cpu() -> CpuFeatures {
    CpuFeatures::from_id_regs(IdRegs {
        mmfr0: arch::id_aa64mmfr0(),
        mmfr1: 0,
        mmfr2: 0,
        ctr: 0,
        dfr0: 0,
    })
}

/// The guest's physical address size (`ID_AA64MMFR0_EL1.PARange` as hyp shows it).
pub fn guest_pa_bits() -> u32 {
    [32, 36, 40, 42, 44, 48, 52]
        .get((arch::id_aa64mmfr0() & 0xf) as usize)
        .copied()
        .unwrap_or(32)
}

/// The pages holding `r`, as the input of the probe's stage 1 (mapped to themselves: the
/// probe's stage 1 is the identity), or a FAIL line if they go past the last address.
fn identity_pages(r: AddrRange<Pa>, page: u64) -> Result<AddrRange<Va>, crate::tests::Line> {
    let end = r
        .end()
        .align_up(page)
        .ok_or_else(|| line!("{r} ends in the last page"))?;
    let pages = AddrRange::new(r.start().align_down(page), end).map_err(|e| line!("{e}"))?;
    Ok(pages.identity_va())
}

/// Builds the identity map (RAM normal RWX, the devices Device-nGnRE) at `granule` with
/// `va_bits`-bit addresses and turns the MMU and caches on.
pub fn enable(env: &Env, granule: Granule, va_bits: u32) -> Result<(), crate::tests::Line> {
    let cpu = guest_cpu();
    let geo = Geometry::new(Regime::El1, granule, va_bits, &cpu)
        .map_err(|e| line!("no {granule:?} EL1 geometry for {va_bits} bits: {e}"))?;
    let frames = Frames::take_pool().ok_or_else(|| line!("the table pool is taken"))?;
    let mut pt =
        PageTable::new(geo, frames, NoMaintenance).map_err(|e| line!("root table: {e}"))?;
    let page = geo.page_size();
    let opts = MapOpts {
        skip_cmo: true,
        pages_only: true,
    };
    let ram = identity_pages(rt::ram(env.dtb), page)?;
    pt.map(ram, ram.start().identity_pa(), Attrs::ram(), opts)
        .map_err(|e| line!("map RAM {ram}: {e}"))?;
    for dev in devices() {
        let va = identity_pages(dev, page)?;
        pt.map(va, va.start().identity_pa(), Attrs::device(), opts)
            .map_err(|e| line!("map device {va}: {e}"))?;
    }
    let pa_bits = guest_pa_bits();
    let regs = [stage2::MAIR_EL1, geo.tcr_el1(pa_bits), pt.root_pa().get()];
    // SAFETY: the tables identity-map all the probe touches (its image, RAM, the devices), so
    // every address stays valid across the switch; the caches were off, and the tables were
    // written with the MMU off (Device memory: they are in memory, not in a cache).
    unsafe { arch::enable_mmu(regs[0], regs[1], regs[2]) };
    for (r, v) in REGS.iter().zip(regs) {
        r.store(v, Ordering::Release);
    }
    mem::mmu_is_on();
    *SPACE.lock() = Some(Space { geo, pt });
    Ok(())
}

/// Maps every address below `1 << ipa_bits` that is not RAM or a device yet as Device memory
/// (blocks where they fit), so that the probe can reach the whole IPA space: what is not the
/// VM's must then be refused by stage 2.
pub fn map_rest_as_device(env: &Env, ipa_bits: u32) -> Result<(), crate::tests::Line> {
    let mut guard = SPACE.lock();
    let sp = guard.as_mut().ok_or_else(|| line!("the MMU is off"))?;
    let page = sp.geo.page_size();
    let limit = Va::new((1u64 << ipa_bits).min(sp.geo.input_limit()));
    let [gicd, gicr, uart] = devices();
    let mut taken = [AddrRange::empty(Va::ZERO); 4];
    for (t, r) in taken.iter_mut().zip([rt::ram(env.dtb), gicd, gicr, uart]) {
        *t = identity_pages(r, page)?;
    }
    taken.sort_by_key(|r| r.start());
    let opts = MapOpts {
        skip_cmo: true,
        pages_only: false,
    };
    let mut from = Va::ZERO;
    for r in taken.into_iter().chain([AddrRange::empty(limit)]) {
        if r.start() > from {
            let gap = AddrRange::new(from, r.start()).map_err(|e| line!("{e}"))?;
            sp.pt
                .map(gap, gap.start().identity_pa(), Attrs::device(), opts)
                .map_err(|e| line!("map {gap} as device: {e}"))?;
        }
        from = from.max(r.end());
    }
    // Only invalid entries became valid (no break-before-make needed); make the new
    // descriptors visible to the table walker.
    arch::tlbi_vmalle1();
    Ok(())
}

/// `AT S1E1R` of `va`: the output address, or `None` when stage 1 faults.
fn at(va: u64) -> Option<u64> {
    let par = arch::at_s1e1r(va);
    if par & 1 != 0 {
        None
    } else {
        Some((par & 0x000f_ffff_ffff_f000) | (va & 0xfff))
    }
}

/// `mmu`: builds the probe's stage 1 at `arm64.pagesize=` with the EL1 regime, turns the MMU
/// on and checks translation: `AT S1E1R` of RAM, device and unmapped addresses against the
/// table's own `translate`, data patterns through the MMU, and a translation fault of the
/// probe's own stage 1 for an unmapped address.
pub fn mmu(env: &Env) -> Verdict {
    let Some(granule) = page_size(env) else {
        return fail(line!("no arm64.pagesize= on the command line"));
    };
    let va_bits = crate::platform::hypervisor_node(env.dtb).map_or(40, |(_, ipa)| ipa as u32);
    if let Err(why) = enable(env, granule, va_bits) {
        return fail(why);
    }
    let mut guard = SPACE.lock();
    let Some(sp) = guard.as_mut() else {
        return fail(line!("no address space after enabling the MMU"));
    };
    if arch::sctlr_el1() & 1 == 0 {
        return fail(line!("SCTLR_EL1.M is clear after enabling the MMU"));
    }
    let page = sp.geo.page_size();
    let free = rt::free_ram(env.dtb);
    let checked = match at_agrees_with_the_table(sp, free) {
        Ok(n) => n,
        Err(why) => return fail(why),
    };
    if let Err(why) = data_through_the_mmu(free, page) {
        return fail(why);
    }
    let level = match own_translation_fault() {
        Ok(level) => level,
        Err(why) => return fail(why),
    };
    pass(line!(
        "{}K pages, {} levels from level {}, {checked} AT checks, data through the MMU, translation fault level {level}",
        page >> 10,
        sp.geo.levels(),
        sp.geo.start_level(),
    ))
}

/// `AT S1E1R` of mapped addresses (RAM: first, last and a middle word of the free RAM, the
/// devices) gives the identity, as the table's own `translate` does; of unmapped ones (the
/// gaps) a fault. Returns how many addresses were checked.
fn at_agrees_with_the_table(
    sp: &mut Space,
    free: AddrRange<Pa>,
) -> Result<u32, crate::tests::Line> {
    let (free0, free1) = (free.start().get(), free.end().get());
    let mut checked = 0;
    let mapped = [
        free0,
        free1 - 8,
        (free0 + free1) / 2,
        0x0800_0000,
        0x0900_0010,
    ];
    for va in mapped {
        let want = sp.pt.translate(Va::new(va)).map(|(pa, _, _)| pa.get());
        let got = at(va);
        if got != Some(va) || want != Some(va) {
            return Err(line!(
                "VA {va:#x}: AT gives {got:#x?}, the table {want:#x?}, identity expected"
            ));
        }
        checked += 1;
    }
    let unmapped = [
        0x1000_0000,
        0x0a00_0000,
        0x3fff_f000,
        free1 + (4 << 20),
        0xff_ffff_f000,
    ];
    for va in unmapped {
        if let Some(pa) = at(va) {
            return Err(line!(
                "VA {va:#x} is unmapped but AT translates it to {pa:#x}"
            ));
        }
        checked += 1;
    }
    Ok(checked)
}

/// Data through the MMU (cacheable now): a pattern over the first 4 pages of the free RAM,
/// read back.
fn data_through_the_mmu(free: AddrRange<Pa>, page: u64) -> Result<(), crate::tests::Line> {
    let end = free.end().min(free.start() + 4 * page);
    let words = rt::between(free.start(), end);
    for a in words.step_by(8).map(Pa::get) {
        // SAFETY: free RAM of the probe, identity mapped.
        unsafe { (a as *mut u64).write_volatile(a ^ 0x5a5a_5a5a) };
    }
    for a in words.step_by(8).map(Pa::get) {
        // SAFETY: as above.
        let v = unsafe { (a as *const u64).read_volatile() };
        if v != a ^ 0x5a5a_5a5a {
            return Err(line!("data at {a:#x}: {v:#x} read back"));
        }
    }
    Ok(())
}

/// The probe's own translation fault: a load from an unmapped VA must be a data abort from
/// EL1 with a translation fault DFSC (ESR_ELx.ISS.DFSC 0b0001LL). Returns its level (LL).
fn own_translation_fault() -> Result<u64, crate::tests::Line> {
    let o = expect(|| {
        // SAFETY: unmapped at stage 1; the handler skips the faulting load.
        unsafe {
            arch::read32(0x1000_0000);
        }
    });
    let dfsc = match o {
        rt::Outcome::Exception { esr, far } if esr >> 26 == ec::DABT_CUR && far == 0x1000_0000 => {
            esr & 0x3f
        }
        _ => return Err(line!("a load from unmapped VA 0x10000000 gave {o:?}")),
    };
    if !(0x04..=0x07).contains(&dfsc) {
        return Err(line!(
            "unmapped VA 0x10000000: DFSC {dfsc:#x} is not a translation fault"
        ));
    }
    Ok(dfsc & 3)
}
