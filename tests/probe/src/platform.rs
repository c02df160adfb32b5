//! What the VM's device tree tells about its platform: the `/hypervisor` node.

use crate::rt;
use crate::tests::{fail, pass, Env, Verdict};
use crate::{arch, line};

/// `/hypervisor`'s `hyp,stage2-granule` (bytes) and `hyp,ipa-bits`, after checking its
/// `compatible`; the error says what is missing.
pub fn hypervisor_node(dtb: usize) -> Result<(u64, u64), &'static str> {
    // SAFETY: hyp passes the VM's device tree in x0 (booting.rst).
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }
        .map_err(|_| "the device tree does not parse")?;
    let node = fdt.find_node("/hypervisor").ok_or("no /hypervisor node")?;
    if !node
        .compatible()
        .is_some_and(|c| c.all().any(|s| s == "hyp,hypervisor"))
    {
        return Err("/hypervisor is not compatible with \"hyp,hypervisor\"");
    }
    let prop = |name: &str| {
        node.property(name)
            .and_then(|p| p.as_usize())
            .map(|v| v as u64)
    };
    match (prop("hyp,stage2-granule"), prop("hyp,ipa-bits")) {
        (Some(g), Some(i)) => Ok((g, i)),
        _ => Err("/hypervisor lacks hyp,stage2-granule or hyp,ipa-bits"),
    }
}

/// The stage-2 granule in bytes, from `/hypervisor`.
pub fn stage2_granule(dtb: usize) -> Option<u64> {
    hypervisor_node(dtb).ok().map(|(g, _)| g)
}

/// `hypervisor`: the `/hypervisor` node tells the stage-2 geometry hyp really maps the VM
/// with: `hyp,stage2-granule` is a granule, `hyp,ipa-bits` covers the VM's RAM and is what the
/// guest's `ID_AA64MMFR0_EL1.PARange` allows; with `probe.s2=` / `probe.ipa=` (what the
/// config says) both must be equal to them.
pub fn hypervisor(env: &Env) -> Verdict {
    // SAFETY: hyp passes the VM's device tree in x0 (booting.rst).
    let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(env.dtb as *const u8) }) else {
        return fail(line!("the device tree does not parse"));
    };
    let Some(node) = fdt.find_node("/hypervisor") else {
        return fail(line!("no /hypervisor node"));
    };
    if !node
        .compatible()
        .is_some_and(|c| c.all().any(|s| s == "hyp,hypervisor"))
    {
        return fail(line!(
            "/hypervisor is not compatible with \"hyp,hypervisor\""
        ));
    }
    let prop = |name: &str| {
        node.property(name)
            .and_then(|p| p.as_usize())
            .map(|v| v as u64)
    };
    let (Some(granule), Some(ipa)) = (prop("hyp,stage2-granule"), prop("hyp,ipa-bits")) else {
        return fail(line!(
            "/hypervisor lacks hyp,stage2-granule or hyp,ipa-bits"
        ));
    };
    if !matches!(granule, 0x1000 | 0x4000 | 0x1_0000) {
        return fail(line!("hyp,stage2-granule = {granule:#x} is not a granule"));
    }
    let ram_end = rt::ram(env.dtb).end();
    if ipa >= 64 || ram_end.get() > 1 << ipa {
        return fail(line!(
            "hyp,ipa-bits = {ipa} does not cover RAM ending at {ram_end:#x}"
        ));
    }
    let parange = arch::id_aa64mmfr0() & 0xf;
    let pa_bits = [32, 36, 40, 42, 44, 48, 52]
        .get(parange as usize)
        .copied()
        .unwrap_or(0);
    if pa_bits > ipa {
        return fail(line!(
            "PARange says {pa_bits} bits, more than hyp,ipa-bits = {ipa}"
        ));
    }
    if let Some(want) = env.args.get("probe.s2") {
        let want = rt::parse_num(want).unwrap_or(0);
        if want != granule {
            return fail(line!(
                "hyp,stage2-granule = {granule:#x}, the config says {want:#x}"
            ));
        }
    }
    let want_ipa = env.args.num("probe.ipa", ipa);
    if want_ipa != ipa {
        return fail(line!("hyp,ipa-bits = {ipa}, the config says {want_ipa}"));
    }
    pass(line!("stage-2 granule {}K, ipa {ipa} bits", granule >> 10))
}
