//! Any text as a system config: parse, validate and resolve against synthesized kernels on
//! two CPU profiles. Errors are fine; panics are not.
#![no_main]

use guest_loader::image::synth::{gzip_stored, image};
use guest_loader::plan::{plan_text, Host};
use guest_loader::CpuFeatures;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn files() -> &'static BTreeMap<String, Vec<u8>> {
    static FILES: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut m = BTreeMap::new();
        // The names of the bad-config corpus (tests/configs/bad), short and long.
        for (name, flags) in [("k4", 0xa), ("k16", 0xc), ("k64", 0xe), ("kany", 0x8)] {
            m.insert(name.to_string(), image(0, 8 << 20, flags, 4096));
            m.insert(format!("{name}.img"), image(0, 8 << 20, flags, 4096));
        }
        m.insert("initrd.cpio".into(), vec![7; 70_000]);
        m.insert("gz".into(), gzip_stored(&image(0, 8 << 20, 0xc, 4096)));
        m.insert("i".into(), vec![7; 70_000]);
        m.insert("e".into(), Vec::new());
        m
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (cpu, cpus) in [("max", 4), ("cortex-a72", 2)] {
        let host = Host {
            cpu: CpuFeatures::profile(cpu).unwrap(),
            cpus,
            guest_ram: 1 << 30,
            smmu: guest_loader::SmmuFeatures::profile("qemu"),
        };
        if let Err(e) = plan_text("f.toml", text, files(), &host) {
            let _ = e.to_string();
        }
    }
});
