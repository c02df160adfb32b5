//! The bad-config corpus: every `tests/configs/bad/NAME.toml` (at the workspace root) must be
//! refused, and every line of `NAME.err` must appear in the errors.
//!
//! The kernels and initrds the configs name (`k4.img`, `k16.img`, `kany.img`, ...) are
//! synthesized by `common::files()`. A first line `# host: cpu=PROFILE smp=N mem=SIZE
//! hide=LIST smmu=qemu|none hide-smmu=LIST` overrides the default host (`max`, 4 CPUs, 1920M of
//! guest RAM, QEMU's SMMU). Errors are
//! reported for the file name `bad.toml`.

mod common;

use guest_loader::plan::plan_text;
use guest_loader::size::parse_size;
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/configs/bad")
}

fn host_for(text: &str) -> guest_loader::Host {
    let mut h = common::host();
    if let Some(spec) = text.lines().next().and_then(|l| l.strip_prefix("# host:")) {
        for kv in spec.split_whitespace() {
            let (k, v) = kv.split_once('=').expect("key=value");
            match k {
                "cpu" => h.cpu = guest_loader::CpuFeatures::profile(v).expect("profile"),
                "smp" => h.cpus = v.parse().expect("smp"),
                "mem" => h.guest_ram = parse_size(v).expect("mem"),
                "hide" => {
                    h.cpu = h
                        .cpu
                        .hide(stage2::cpu::parse_granule_list(v).expect("hide"))
                }
                "smmu" => h.smmu = guest_loader::SmmuFeatures::profile(v),
                "hide-smmu" => {
                    let mask = stage2::cpu::parse_granule_list(v).expect("hide-smmu");
                    let s = h.smmu.as_mut().expect("an SMMU to hide granules of");
                    for g in guest_loader::Granule::ALL {
                        if mask & g.bit() != 0 {
                            s.hide(g);
                        }
                    }
                }
                _ => panic!("unknown host key {k}"),
            }
        }
    }
    h
}

#[test]
fn every_bad_config_is_refused_with_its_error() {
    let files = common::files();
    let mut names: Vec<_> = std::fs::read_dir(corpus())
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "only {} bad configs", names.len());
    let mut failures = Vec::new();
    for path in &names {
        let text = std::fs::read_to_string(path).expect("read");
        let expected = std::fs::read_to_string(path.with_extension("err"))
            .unwrap_or_else(|_| panic!("{} has no .err file", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match plan_text("bad.toml", &text, &files, &host_for(&text)) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) => {
                let got = e.to_string();
                for want in expected.lines().filter(|l| !l.trim().is_empty()) {
                    if !got.contains(want) {
                        failures.push(format!("{name}: missing {want:?} in:\n{got}"));
                    }
                }
                // Every error names the file; errors in a [[vm]] name the VM.
                for err in &e.0 {
                    assert_eq!(err.file, "bad.toml");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
