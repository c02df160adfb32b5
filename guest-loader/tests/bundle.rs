//! Boot bundles: built from a config and its files, read back, resolved to the same plan.

mod common;

use guest_loader::bundle::{make_bundle, Bundle, CONFIG_NAME};
use guest_loader::plan::plan_text;
use std::process::Command;

const CONFIG: &str = r#"# the demo, in short
[hypervisor]
granule = "4k"

[[vm]]
name = "a"
vcpus = 2
memory = "256M"
kernel = "../guests/k16.img"   # comments survive
initrd = "initrd.cpio"
page_size = "16k"

[[vm]]
name = "b"
memory = "128M"
kernel = 'k16.img'
initrd = "initrd.cpio"
"#;

fn sources() -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut f = common::files();
    let k16 = f["k16.img"].clone();
    f.insert("../guests/k16.img".into(), k16);
    f
}

#[test]
fn bundle_round_trip_gives_the_same_plan() {
    let files = sources();
    let bytes = make_bundle("demo.toml", CONFIG, &files).unwrap();
    let bundle = Bundle::parse(&bytes).unwrap();
    let names: Vec<&str> = bundle.files().map(|(n, _)| n).collect();
    // Two VMs share the initrd: stored once; two different kernel paths with one base name
    // get distinct entries.
    assert_eq!(
        names,
        [
            CONFIG_NAME,
            "files/k16.img",
            "files/initrd.cpio",
            "files/2-k16.img"
        ]
    );
    let cfg = bundle.config();
    assert!(
        cfg.contains("kernel = \"files/k16.img\"   # comments survive"),
        "{cfg}"
    );
    assert!(cfg.contains("kernel = \"files/2-k16.img\""), "{cfg}");
    assert!(cfg.starts_with("# the demo, in short\n"));
    let host = common::host();
    let from_bundle = bundle.plan(&host).unwrap();
    let direct = plan_text("demo.toml", CONFIG, &files, &host).unwrap();
    assert_eq!(from_bundle.hyp, direct.hyp);
    assert_eq!(from_bundle.vms.len(), 2);
    for (a, b) in from_bundle.vms.iter().zip(&direct.vms) {
        assert_eq!(a.dtb, b.dtb);
        assert_eq!(a.layout, b.layout);
        assert_eq!(a.kernel, b.kernel);
        assert_eq!(a.initrd, b.initrd);
        assert_eq!(a.cmdline, b.cmdline);
        assert_eq!(a.geometry, b.geometry);
    }
    assert_eq!(bundle.file("files/k16.img"), Some(&files["k16.img"][..]));
}

#[test]
fn bundle_refuses_missing_files() {
    let mut files = sources();
    files.remove("initrd.cpio");
    let e = make_bundle("demo.toml", CONFIG, &files).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert!(
        e.to_string()
            .contains("demo.toml:10:10: vm \"a\": initrd: file \"initrd.cpio\" not found"),
        "{e}"
    );
}

#[test]
fn cpio_tool_reads_our_bundles() {
    let files = sources();
    let bytes = make_bundle("demo.toml", CONFIG, &files).unwrap();
    let dir = std::env::temp_dir().join(format!("gl-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("b.cpio");
    std::fs::write(&path, &bytes).unwrap();
    let out = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(out) = out else {
        panic!("cpio is not installed (apt-get install cpio)");
    };
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "system.toml\nfiles/k16.img\nfiles/initrd.cpio\nfiles/2-k16.img\n"
    );
}

#[test]
fn bundles_written_by_cpio_parse() {
    // `find . | cpio -o -H newc` style: "." directory entry, "./" prefixes.
    let dir = std::env::temp_dir().join(format!("gl-cpio-{}", std::process::id()));
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("files")).unwrap();
    std::fs::write(
        root.join("system.toml"),
        "[hypervisor]\ngranule = \"auto\"\n",
    )
    .unwrap();
    std::fs::write(root.join("files/x"), b"12345").unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && printf '.\\n./system.toml\\n./files\\n./files/x\\n' | cpio -o -H newc --quiet")
        .arg("sh")
        .arg(&root)
        .output()
        .expect("sh and cpio");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = Bundle::parse(&out.stdout).unwrap();
    assert_eq!(b.config(), "[hypervisor]\ngranule = \"auto\"\n");
    assert_eq!(b.file("files/x"), Some(&b"12345"[..]));
    assert!(b.plan(&common::host()).unwrap().vms.is_empty());
}
