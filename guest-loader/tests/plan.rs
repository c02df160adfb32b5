//! Resolution rules: granules, fallbacks, Image headers, command line, layout, host limits.

mod common;

use common::{files, host, host_with, IMAGE_SIZE};
use guest_loader::config::{ErrorKind, GranuleChoice, Mapping, PageSize};
use guest_loader::layout::{DTB_REGION, RAM_BASE};
use guest_loader::plan::{plan_text, Refusal, Source, SystemPlan};
use guest_loader::Granule;
use guest_loader::{Errors, Host};
use stage2::Ipa;

fn vm(extra: &str) -> String {
    format!("[[vm]]\nname = \"t\"\nmemory = \"256M\"\n{extra}\n")
}

fn ok(text: &str, h: &Host) -> SystemPlan<'static> {
    let f = Box::leak(Box::new(files()));
    match plan_text("t.toml", text, f, h) {
        Ok(p) => p,
        Err(e) => panic!("refused:\n{e}\n--- config:\n{text}"),
    }
}

fn err(text: &str, h: &Host) -> Errors {
    let f = files();
    match plan_text("t.toml", text, &f, h) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn sixteen_k_guest_on_max() {
    let p = ok(
        &vm("kernel = \"k16.img\"\npage_size = \"16k\"\ncmdline = \"console=ttyAMA0\"\n[vm.stage2]\ngranule = \"16k\""),
        &host(),
    );
    assert_eq!(p.hyp.granule, Granule::K4);
    assert_eq!(p.hyp.requested, GranuleChoice::Auto);
    let v = &p.vms[0];
    assert_eq!(v.page_size, Granule::K16);
    assert_eq!(v.stage2_granule, Granule::K16);
    assert_eq!(v.ipa_bits, 40);
    assert_eq!(v.geometry.start_level(), 2);
    assert_eq!(v.geometry.root_tables(), 16);
    assert_eq!(v.mapping, Mapping::Eager);
    assert_eq!(v.cmdline, "console=ttyAMA0 arm64.pagesize=16k");
    assert_eq!(v.advertised_granules, Granule::K16.bit());
    assert_eq!(
        v.stage2_line(),
        "vm t: stage-2 granule 16K, ipa 40 bits, start level 2, 16 root tables"
    );
    assert_eq!(
        v.page_size_line(),
        "vm t: guest page size 16K (arm64.pagesize=16k)"
    );
    assert_eq!(v.decision.chosen, Some((Granule::K16, Source::PageSize)));
    assert!(v.decision.refused.is_empty());
}

#[test]
fn stage2_geometry_per_granule_and_ipa() {
    for (g, bits, level, tables) in [
        ("4k", 40, 1, 2),
        ("4k", 32, 2, 4),
        ("16k", 48, 1, 2),
        ("64k", 40, 2, 1),
        ("4k", 48, 0, 1),
    ] {
        let p = ok(
            &vm(&format!(
                "kernel = \"k4.img\"\n[vm.stage2]\ngranule = \"{g}\"\nipa_bits = {bits}"
            )),
            &host(),
        );
        let v = &p.vms[0];
        assert_eq!(
            (v.geometry.start_level(), v.geometry.root_tables()),
            (level, tables),
            "{g} {bits}"
        );
        assert_eq!(v.page_size, Granule::K4);
    }
}

#[test]
fn page_size_kernel_follows_the_header() {
    let p = ok(&vm("kernel = \"k16.img\"\npage_size = \"kernel\""), &host());
    let v = &p.vms[0];
    assert_eq!(v.page_size, Granule::K16);
    assert_eq!(v.stage2_granule, Granule::K16);
    assert_eq!(
        v.decision.chosen,
        Some((Granule::K16, Source::KernelHeader))
    );
    // `kernel` advertises every granule the CPU has.
    assert_eq!(v.advertised_granules, 0b111);
    // Unspecified header: the first the CPU supports (4K on max; 64K when 4K and 16K hidden).
    let p = ok(&vm("kernel = \"kany.img\""), &host());
    assert_eq!(p.vms[0].page_size, Granule::K4);
    assert_eq!(
        p.vms[0].decision.chosen,
        Some((Granule::K4, Source::KernelAuto))
    );
    let mut h = host();
    h.cpu = h.cpu.hide(Granule::K4.bit() | Granule::K16.bit());
    let p = ok(&vm("kernel = \"kany.img\""), &h);
    assert_eq!(p.vms[0].page_size, Granule::K64);
    assert_eq!(p.vms[0].advertised_granules, Granule::K64.bit());
    assert_eq!(p.hyp.granule, Granule::K64);
}

#[test]
fn kernel_auto_skips_a_granule_stage2_lacks() {
    // TGran4_2 = 1: 4K at stage 1 only; 16K (TGran16 = 1) everywhere.
    let h = Host {
        cpu: guest_loader::CpuFeatures::from_mmfr0((1 << 40) | (1 << 20) | 5),
        cpus: 4,
        guest_ram: 1 << 30,
        smmu: None,
    };
    let p = ok(&vm("kernel = \"kany.img\""), &h);
    let v = &p.vms[0];
    assert_eq!(v.page_size, Granule::K16);
    assert_eq!(v.stage2_granule, Granule::K16);
    assert_eq!(v.decision.chosen, Some((Granule::K16, Source::KernelAuto)));
    assert!(matches!(v.decision.refused[0].refusal, Refusal::Stage2(_)));
}

#[test]
fn unspecified_header_takes_any_page_size() {
    for g in ["4k", "16k", "64k"] {
        let p = ok(
            &vm(&format!("kernel = \"kany.img\"\npage_size = \"{g}\"")),
            &host(),
        );
        assert_eq!(p.vms[0].page_size.name(), g);
        assert!(p.vms[0].cmdline.ends_with(&format!("arm64.pagesize={g}")));
    }
}

#[test]
fn fixed_kernel_cannot_run_another_page_size() {
    let e = err(&vm("kernel = \"k4.img\"\npage_size = \"16k\""), &host());
    let s = e.to_string();
    assert!(
        s.contains("t.toml:5:13: vm \"t\": page_size: no usable page size: 16K (page_size) refused: the kernel is built for 4K pages only (Image header flags 0xa, page-size field 1)"),
        "{s}"
    );
    match &e.0[0].kind {
        ErrorKind::NoPageSize(d) => {
            assert_eq!(d.header, Some(Granule::K4));
            assert!(matches!(
                d.refused[0].refusal,
                Refusal::KernelHeader {
                    header: Granule::K4,
                    flags: 0xa
                }
            ));
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn cortex_a72_refuses_16k_or_falls_back() {
    let a72 = host_with("cortex-a72", 4, 1 << 30);
    let e = err(&vm("kernel = \"kany.img\"\npage_size = \"16k\""), &a72);
    assert!(
        e.to_string()
            .contains("16K granule not supported at stage 1: ID_AA64MMFR0_EL1.TGran16 = 0b0000"),
        "{e}"
    );
    let p = ok(
        &vm("kernel = \"kany.img\"\npage_size = \"16k\"\nfallback = [\"64k\", \"4k\"]"),
        &a72,
    );
    let v = &p.vms[0];
    assert_eq!(v.page_size, Granule::K64);
    assert_eq!(v.decision.chosen, Some((Granule::K64, Source::Fallback(0))));
    assert!(v.decision.fell_back());
    assert_eq!(v.decision.refused.len(), 1);
    assert!(
        v.decision.to_string().contains("TGran16 = 0b0000"),
        "{}",
        v.decision
    );
    assert!(
        v.decision.to_string().ends_with("64K from fallback[0]"),
        "{}",
        v.decision
    );
    assert_eq!(v.cmdline, "arm64.pagesize=64k");
    // A 16K-only kernel with a 4K fallback on a72: the fallback is refused by the header.
    let e = err(
        &vm("kernel = \"k16.img\"\npage_size = \"16k\"\nfallback = [\"4k\"]"),
        &a72,
    );
    let s = e.to_string();
    assert!(
        s.contains("16K (page_size) refused: 16K granule not supported"),
        "{s}"
    );
    assert!(
        s.contains("4K (fallback[0]) refused: the kernel is built for 16K pages"),
        "{s}"
    );
}

#[test]
fn stage2_following_page_size_must_be_supported_at_stage2() {
    // TGran16 = 1 (stage 1 yes), TGran16_2 = 1 (stage 2 no).
    let cpu = guest_loader::CpuFeatures::from_mmfr0((1 << 20) | (1 << 32) | 5);
    let h = Host {
        cpu,
        cpus: 4,
        guest_ram: 1 << 30,
        smmu: None,
    };
    let e = err(&vm("kernel = \"kany.img\"\npage_size = \"16k\""), &h);
    assert!(
        e.to_string().contains(
            "stage2.granule follows page_size, but 16K granule not supported at stage 2: ID_AA64MMFR0_EL1.TGran16_2 = 0b0001"
        ),
        "{e}"
    );
    // With an explicit 4K stage 2 the 16K guest is fine.
    let p = ok(
        &vm("kernel = \"kany.img\"\npage_size = \"16k\"\n[vm.stage2]\ngranule = \"4k\""),
        &h,
    );
    assert_eq!(
        (p.vms[0].page_size, p.vms[0].stage2_granule),
        (Granule::K16, Granule::K4)
    );
    // An explicit stage-2 granule the CPU lacks is an error of its own.
    let e = err(
        &vm("kernel = \"kany.img\"\npage_size = \"4k\"\n[vm.stage2]\ngranule = \"16k\""),
        &h,
    );
    assert!(matches!(e.0[0].kind, ErrorKind::Stage2Granule(_)), "{e}");
    assert_eq!(e.0[0].key.as_deref(), Some("stage2.granule"));
}

#[test]
fn hyp_granule_falls_back_to_auto_with_the_reason() {
    let a72 = host_with("cortex-a72", 4, 1 << 30);
    let p = ok("[hypervisor]\ngranule = \"16k\"\n", &a72);
    assert_eq!(p.hyp.granule, Granule::K4);
    assert!(p
        .hyp
        .refused
        .unwrap()
        .to_string()
        .contains("TGran16 = 0b0000"));
    assert!(p.report().starts_with(
        "system: hyp el2 granule 4K (granule = \"16k\"); 16K granule not supported at stage 1"
    ));
    let p = ok("[hypervisor]\ngranule = \"64k\"\n", &host());
    assert_eq!(p.hyp.granule, Granule::K64);
    assert!(p.hyp.refused.is_none());
    // Nothing left at all.
    let mut h = host();
    h.cpu = h.cpu.hide(0b111);
    let e = err("[hypervisor]\ngranule = \"auto\"\n", &h);
    assert!(matches!(e.0[0].kind, ErrorKind::NoHypGranule));
}

#[test]
fn empty_system() {
    let p = ok("[hypervisor]\ngranule = \"auto\"\n", &host());
    assert!(p.vms.is_empty());
    assert!(p.report().contains("system: no VMs"));
}

#[test]
fn cmdline_pagesize_conflict() {
    let e = err(
        &vm("kernel = \"k16.img\"\ncmdline = \"arm64.pagesize=4k\""),
        &host(),
    );
    assert!(matches!(e.0[0].kind, ErrorKind::Cmdline(_)), "{e}");
    assert_eq!(e.0[0].key.as_deref(), Some("cmdline"));
    let p = ok(
        &vm("kernel = \"k16.img\"\ncmdline = \"quiet arm64.pagesize=16k\""),
        &host(),
    );
    assert_eq!(p.vms[0].cmdline, "quiet arm64.pagesize=16k");
}

#[test]
fn layout_and_load_items() {
    let p = ok(
        &vm("kernel = \"k16.gz\"\ninitrd = \"initrd.cpio\"\npage_size = \"16k\""),
        &host(),
    );
    let v = &p.vms[0];
    assert!(v.kernel_gzip);
    assert_eq!(v.layout.kernel.start(), Ipa::new(RAM_BASE));
    assert_eq!(v.layout.kernel.len(), IMAGE_SIZE);
    assert_eq!(v.layout.kernel_file.len(), 64 << 10);
    let ram_end = Ipa::new(RAM_BASE + (256 << 20));
    assert_eq!(v.layout.dtb(), ram_end - DTB_REGION);
    let initrd = v.layout.initrd.unwrap();
    assert_eq!(initrd.len(), 1 << 20);
    assert!(initrd.end() <= v.layout.dtb());
    assert!(initrd.start() >= v.layout.kernel.end());
    let items = v.load_items();
    let what: Vec<_> = items
        .iter()
        .map(|i| (i.what, i.ipa, i.data.len()))
        .collect();
    assert_eq!(
        what,
        [
            ("kernel", Ipa::new(RAM_BASE), 64 << 10),
            ("initrd", initrd.start(), 1 << 20),
            ("dtb", v.layout.dtb(), v.dtb.len())
        ]
    );
    assert_eq!(&v.dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
}

#[test]
fn host_limits_span_vms() {
    let two = format!(
        "{}{}",
        vm("kernel = \"k4.img\"\nvcpus = 3"),
        "[[vm]]\nname = \"u\"\nmemory = \"256M\"\nkernel = \"k4.img\"\nvcpus = 2\n"
    );
    let e = err(&two, &host());
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(
        e.to_string()
            .contains("vm \"u\": vcpus: 2 vCPUs asked but only 1 of the 4 physical CPUs are left"),
        "{e}"
    );
    let p = ok(&two, &host_with("max", 5, 1 << 30));
    assert_eq!(p.vms[0].cpus, 0..3);
    assert_eq!(p.vms[1].cpus, 3..5);
    let e = err(&two, &host_with("max", 8, 384 << 20));
    assert!(
        e.to_string().contains(
            // The first VM's 256M and its 524K of stage-2 tables are taken.
            "vm \"u\": memory: 256M asked (plus 524K of stage-2 tables) but only 130548K of the \
             384M of guest RAM is left"
        ),
        "{e}"
    );
}

#[test]
fn ipa_beyond_parange() {
    let a64fx = host_with("a64fx", 4, 1 << 30);
    let e = err(
        &vm("kernel = \"k4.img\"\n[vm.stage2]\nipa_bits = 44"),
        &a64fx,
    );
    assert!(
        e.to_string().contains("stage2.ipa_bits: 44 bits is beyond the CPU's physical address size: ID_AA64MMFR0_EL1.PARange = 0b0010 (40 bits)"),
        "{e}"
    );
    // 52 bits on max: PARange allows it, the geometry (no LPA2) does not.
    let e = err(
        &vm("kernel = \"k4.img\"\n[vm.stage2]\ngranule = \"4k\"\nipa_bits = 52"),
        &host(),
    );
    assert!(matches!(e.0[0].kind, ErrorKind::Geometry { .. }), "{e}");
}

#[test]
fn many_vms_resolve_independently() {
    let mut text = String::from("[hypervisor]\ngranule = \"16k\"\n");
    for (i, k) in ["k4.img", "k16.img", "k64.img", "kany.img"]
        .iter()
        .enumerate()
    {
        text.push_str(&format!(
            "[[vm]]\nname = \"vm{i}\"\nmemory = \"64M\"\nkernel = \"{k}\"\n"
        ));
    }
    let p = ok(&text, &host());
    let sizes: Vec<_> = p.vms.iter().map(|v| v.page_size).collect();
    assert_eq!(
        sizes,
        [Granule::K4, Granule::K16, Granule::K64, Granule::K4]
    );
    assert_eq!(p.hyp.granule, Granule::K16);
    assert_eq!(p.vms[3].cpus, 3..4);
}

#[test]
fn requested_page_size_is_reported() {
    let p = ok(&vm("kernel = \"k64.img\"\npage_size = \"64k\""), &host());
    assert_eq!(p.vms[0].decision.requested, PageSize::Fixed(Granule::K64));
    let r = p.report();
    for line in [
        "vm t: 1 vCPU on cpus 0..=0, memory 256M",
        "vm t: guest page size 64K (arm64.pagesize=64k)",
        "vm t: page size decision: 64K from page_size",
        "vm t: stage-2 granule 64K, ipa 40 bits, start level 2, 1 root table",
        "vm t: cmdline \"arm64.pagesize=64k\"",
    ] {
        assert!(r.lines().any(|l| l == line), "missing {line:?} in\n{r}");
    }
}

#[test]
fn pci_functions_are_placed_on_the_root_bus_in_config_order() {
    let text = "[[vm]]\nname = \"a\"\nmemory = \"256M\"\nkernel = \"k4.img\"\n\
                [[vm.pci]]\ndevice = \"virtio-blk-pci\"\nfile = \"d.img\"\nreadonly = true\n\
                [[vm]]\nname = \"b\"\nmemory = \"256M\"\nkernel = \"k4.img\"\n\
                [[vm.pci]]\ndevice = \"virtio-net-pci\"\n\
                [[vm.pci]]\ndevice = \"virtio-blk-pci\"\nfile = \"e.img\"\n";
    let p = ok(text, &host());
    let places: Vec<(String, u32)> = p
        .vms
        .iter()
        .flat_map(|v| v.pci.iter().map(|(b, _)| (b.to_string(), b.rid())))
        .collect();
    assert_eq!(
        places,
        [
            ("00:01.0".to_string(), 0x08),
            ("00:02.0".to_string(), 0x10),
            ("00:03.0".to_string(), 0x18)
        ]
    );
    let windows: Vec<_> = p
        .vms
        .iter()
        .map(|v| v.pci_window.map(|w| (w.start().get(), w.len())))
        .collect();
    assert_eq!(
        windows,
        [
            Some((0x1000_0000, 0x400_0000)),
            Some((0x1400_0000, 0x400_0000))
        ]
    );
    let report = p.report();
    for line in [
        "vm a: pci 00:01.0 (stream 0x8) virtio-blk-pci \"d.img\" (read-only)",
        "vm b: pci 00:02.0 (stream 0x10) virtio-net-pci",
        "vm b: pci 00:03.0 (stream 0x18) virtio-blk-pci \"e.img\" (read-write)",
    ] {
        assert!(report.lines().any(|l| l == line), "{line}\n{report}");
    }
    // A VM without [[vm.pci]] owns none, and its plan prints none.
    let q = ok(&vm("kernel = \"k4.img\""), &host());
    assert!(q.vms[0].pci.is_empty() && !q.report().contains(": pci "));
    assert_eq!(q.vms[0].pci_window, None);
}

#[test]
fn a_vm_with_devices_falls_back_to_a_granule_the_smmu_walks() {
    let mut h = host();
    h.smmu.as_mut().unwrap().hide(Granule::K16);
    let text = vm(
        "kernel = \"kany.img\"\npage_size = \"16k\"\nfallback = [\"4k\"]\n\
                   [[vm.pci]]\ndevice = \"virtio-blk-pci\"\nfile = \"d.img\"",
    );
    let v = &ok(&text, &h).vms[0];
    assert_eq!((v.page_size, v.stage2_granule), (Granule::K4, Granule::K4));
    assert!(v
        .decision
        .to_string()
        .contains("SMMU_IDR5.GRAN16K = 0, hidden by hyp.hide-smmu-granules"));
    // Without devices the SMMU does not matter: 16K is kept.
    let plain = vm("kernel = \"kany.img\"\npage_size = \"16k\"\nfallback = [\"4k\"]");
    assert_eq!(ok(&plain, &h).vms[0].stage2_granule, Granule::K16);
}

#[test]
fn a_shared_stage_2_uses_the_encoding_the_smmu_reads() {
    // A CPU with FEAT_S2FWB (ID_AA64MMFR2_EL1.FWB = 1): stage 2 normally uses its encoding.
    let max = guest_loader::CpuFeatures::profile("max").unwrap().id_regs();
    let mut h = host();
    h.cpu = guest_loader::CpuFeatures::from_id_regs(stage2::IdRegs {
        mmfr2: 1 << 40,
        ..max
    });
    let with = vm("kernel = \"k4.img\"\n[[vm.pci]]\ndevice = \"virtio-net-pci\"");
    let without = vm("kernel = \"k4.img\"");
    assert!(ok(&without, &h).vms[0].geometry.fwb());
    // QEMU's SMMU has no STE.S2FWB (SMMU_IDR3.FWB = 0).
    assert!(!ok(&with, &h).vms[0].geometry.fwb());
}
