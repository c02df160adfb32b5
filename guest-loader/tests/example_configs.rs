//! The example systems in `configs/` parse and resolve (with synthesized kernels standing in
//! for the Debian ones, chosen by the page size in their file names).

mod common;

use guest_loader::config::parse_config;
use guest_loader::plan::plan_system;
use guest_loader::Granule;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn stand_ins(paths: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let f = common::files();
    paths
        .iter()
        .map(|p| {
            let key = if p.contains("initramfs") {
                "initrd.cpio"
            } else if p.contains("16k") {
                "k16.img"
            } else if p.contains("64k") {
                "k64.img"
            } else if p.contains("4k") {
                "k4.img"
            } else {
                "kany.img"
            };
            (p.to_string(), f[key].clone())
        })
        .collect()
}

#[test]
fn every_example_resolves_on_qemu_max() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = parse_config(&path.display().to_string(), &text).unwrap();
        let files = stand_ins(&cfg.referenced_files());
        plan_system(&cfg, &files, &common::host())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 3);
}

#[test]
fn demo_is_a_16k_guest_with_16k_stage2_on_a_4k_hyp() {
    let text = std::fs::read_to_string(configs().join("demo.toml")).unwrap();
    let cfg = parse_config("demo.toml", &text).unwrap();
    let files = stand_ins(&cfg.referenced_files());
    let plan = plan_system(&cfg, &files, &common::host()).unwrap();
    assert_eq!(plan.hyp.granule, Granule::K4);
    let vm = &plan.vms[0];
    assert_eq!(vm.page_size, Granule::K16);
    assert_eq!(
        vm.stage2_line(),
        "vm demo: stage-2 granule 16K, ipa 40 bits, start level 2, 16 root tables"
    );
    assert_eq!(
        vm.page_size_line(),
        "vm demo: guest page size 16K (arm64.pagesize=16k)"
    );
    // On cortex-a72 (no 16K) the demo is refused before boot, with the reason.
    let a72 = common::host_with("cortex-a72", 4, 1 << 30);
    let e = plan_system(&cfg, &files, &a72).unwrap_err().to_string();
    assert!(e.contains("ID_AA64MMFR0_EL1.TGran16 = 0b0000"), "{e}");
}

#[test]
fn empty_has_no_vms() {
    let text = std::fs::read_to_string(configs().join("empty.toml")).unwrap();
    let cfg = parse_config("empty.toml", &text).unwrap();
    assert!(cfg.vms.is_empty());
    let none = BTreeMap::new();
    let plan = plan_system(&cfg, &none, &common::host()).unwrap();
    assert!(plan.vms.is_empty());
}
