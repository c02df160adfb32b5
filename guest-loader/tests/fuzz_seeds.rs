//! The fuzz targets' seeds (fuzz/seeds, made by tools/fuzz-seeds) are valid inputs, so the
//! fuzzers start past the formats' magic and checks: the bundle parses and plans on the host
//! the bundle target uses, every Image seed loads, and the config made for the config
//! target's synthesized files plans.

use guest_loader::image::load_kernel;
use guest_loader::image::synth::{gzip_stored, image};
use guest_loader::plan::{plan_text, Host};
use guest_loader::{Bundle, CpuFeatures};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn host() -> Host {
    Host {
        cpu: CpuFeatures::profile("max").unwrap(),
        cpus: 4,
        guest_ram: 1 << 30,
        smmu: guest_loader::SmmuFeatures::profile("qemu"),
    }
}

#[test]
fn the_bundle_seed_parses_and_plans() {
    for (name, data) in seeds("bundle") {
        let b = Bundle::parse(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(b.files().count() >= 2, "{name}: config and kernel");
        let plan = b.plan(&host()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(plan.vms.len(), 1, "{name}");
    }
}

#[test]
fn every_image_seed_loads() {
    for (name, data) in seeds("image") {
        load_kernel(&data, 16 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The files the config fuzz target provides (fuzz/fuzz_targets/config.rs).
fn config_target_files() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (name, flags) in [("k4", 0xa), ("k16", 0xc), ("k64", 0xe), ("kany", 0x8)] {
        m.insert(name.to_string(), image(0, 8 << 20, flags, 4096));
        m.insert(format!("{name}.img"), image(0, 8 << 20, flags, 4096));
    }
    m.insert("initrd.cpio".into(), vec![7; 70_000]);
    m.insert("gz".into(), gzip_stored(&image(0, 8 << 20, 0xc, 4096)));
    m
}

#[test]
fn the_config_seed_for_the_fuzz_files_plans() {
    let seeds = seeds("config");
    let (_, text) = seeds.iter().find(|(n, _)| n == "fuzz-files.toml").unwrap();
    let text = std::str::from_utf8(text).unwrap();
    let files = config_target_files();
    let plan =
        plan_text("fuzz-files.toml", text, &files, &host()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.vms.len(), 2);
}
