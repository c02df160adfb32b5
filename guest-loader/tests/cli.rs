//! The `guest-loader` binary: outputs and exit codes of `check`, `dtb` and `bundle`, its help
//! and its version.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("gl-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(d.join("guests")).unwrap();
    for (name, data) in common::files() {
        std::fs::write(d.join("guests").join(name), data).unwrap();
    }
    std::fs::write(
        d.join("sys.toml"),
        "[hypervisor]\ngranule = \"16k\"\n\n[[vm]]\nname = \"web\"\nvcpus = 2\nmemory = \"256M\"\n\
         kernel = \"guests/k16.img\"\ninitrd = \"guests/initrd.cpio\"\ncmdline = \"console=ttyAMA0\"\n\
         page_size = \"16k\"\nfallback = [\"4k\"]\n",
    )
    .unwrap();
    Dir(d)
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guest-loader"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_prints_the_plan() {
    let d = setup("check");
    let out = run(&d.0, &["check", "sys.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for line in [
        "host: cpu max, 4 cpus, 2G RAM (1710M for guests)",
        "system: hyp el2 granule 16K (granule = \"16k\")",
        "vm web: 2 vCPUs on cpus 0..=1, memory 256M",
        "vm web: guest page size 16K (arm64.pagesize=16k)",
        "vm web: stage-2 granule 16K, ipa 40 bits, start level 2, 16 root tables",
        "vm web: cmdline \"console=ttyAMA0 arm64.pagesize=16k\"",
        "ok: 1 VM",
    ] {
        assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
    }
    assert!(s.contains("vm web: kernel 0x40000000..0x42000000"), "{s}");
}

#[test]
fn check_refuses_with_exit_1_and_every_error() {
    let d = setup("refuse");
    // cortex-a72 has no 16K: hyp falls back to 4K, the VM is refused (its 16K-only kernel
    // cannot take the 4K fallback), and with --smp 1 the vCPUs do not fit either.
    let out = run(
        &d.0,
        &["check", "sys.toml", "--cpu", "cortex-a72", "--smp", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert_eq!(
        e.lines().filter(|l| l.starts_with("error: ")).count(),
        2,
        "{e}"
    );
    assert!(
        e.contains("sys.toml:6:9: vm \"web\": vcpus: 2 vCPUs asked but only 1"),
        "{e}"
    );
    assert!(e.contains("TGran16 = 0b0000"), "{e}");
    assert!(
        e.contains("4K (fallback[0]) refused: the kernel is built for 16K pages"),
        "{e}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let d = setup("usage");
    for args in [
        &[][..],
        &["frobnicate"],
        &["--frobnicate"],
        &["check"],
        &["check", "sys.toml", "--cpu", "pentium"],
        &["check", "sys.toml", "--cpu"],
        &["check", "sys.toml", "--smp", "0"],
        &["check", "sys.toml", "--mem", "lots"],
        &["check", "sys.toml", "--granule", "8k"],
        &["check", "sys.toml", "--hide-granules", "4k,2k"],
        &["check", "sys.toml", "other.toml"],
        &["check", "no-such.toml"],
        &["dtb", "sys.toml", "-o", "x.dtb"],
        &["dtb", "sys.toml", "--vm", "web"],
        &["bundle", "sys.toml"],
        &["bundle", "sys.toml", "-o", "no-such-dir/b.bundle"],
        &["help", "frobnicate"],
    ] {
        let out = run(&d.0, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
    // An unknown command or option names itself; a bad value says what is expected.
    let e = text(&run(&d.0, &["frobnicate"]).stderr);
    assert!(e.contains("'frobnicate'"), "{e}");
    let e = text(&run(&d.0, &["check", "sys.toml", "--cpu", "pentium"]).stderr);
    assert!(e.contains("'pentium'") && e.contains("cortex-a72"), "{e}");
    let e = text(&run(&d.0, &["check", "sys.toml", "--granule", "8k"]).stderr);
    assert!(e.contains("expected one of 4k, 16k, 64k or auto"), "{e}");
    let e = text(&run(&d.0, &["check", "sys.toml", "--mem", "lots"]).stderr);
    assert!(e.contains("\"lots\" is not a size"), "{e}");
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    let d = setup("help");
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["check", "--help"],
        &["dtb", "-h"],
        &["help", "bundle"],
        &["bundle", "sys.toml", "--help"],
    ] {
        let out = run(&d.0, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let s = text(&out.stdout);
        assert!(s.contains("Usage: guest-loader"), "{args:?}: {s}");
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
    // The top-level help lists every command; each command's help lists its options.
    let s = text(&run(&d.0, &["--help"]).stdout);
    for w in [
        "check",
        "dtb",
        "bundle",
        "Exit status: 0 success; 1 the config is refused",
    ] {
        assert!(s.contains(w), "missing {w:?} in\n{s}");
    }
    let s = text(&run(&d.0, &["check", "--help"]).stdout);
    for w in [
        "--cpu <PROFILE>",
        "[default: max]",
        "--smp <N>",
        "--mem <SIZE>",
        "--granule <G>",
    ] {
        assert!(s.contains(w), "missing {w:?} in\n{s}");
    }
    let s = text(&run(&d.0, &["dtb", "--help"]).stdout);
    for w in [
        "--vm <NAME>",
        "-o, --output <FILE>",
        "--hide-granules <LIST>",
    ] {
        assert!(s.contains(w), "missing {w:?} in\n{s}");
    }
    // No command: the help, as a usage error.
    let out = run(&d.0, &[]);
    assert!(text(&out.stderr).contains("Usage: guest-loader <COMMAND>"));

    for args in [&["--version"][..], &["-V"]] {
        let out = run(&d.0, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(
            text(&out.stdout),
            format!("guest-loader {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn options_go_anywhere_after_the_command() {
    let d = setup("order");
    let a = run(
        &d.0,
        &["check", "--cpu", "neoverse-n1", "--smp=2", "sys.toml"],
    );
    let b = run(
        &d.0,
        &["check", "sys.toml", "--smp", "2", "--cpu=neoverse-n1"],
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    assert!(text(&a.stdout).starts_with("host: cpu neoverse-n1, 2 cpus, 2G RAM"));
    let out = run(
        &d.0,
        &["dtb", "--output", "w.dtb", "sys.toml", "--vm", "web"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(d.0.join("w.dtb").exists());
}

#[test]
fn dtb_and_bundle_write_files() {
    let d = setup("out");
    let out = run(&d.0, &["dtb", "sys.toml", "--vm", "web", "-o", "web.dtb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dtb = std::fs::read(d.0.join("web.dtb")).unwrap();
    assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
    let out = run(&d.0, &["dtb", "sys.toml", "--vm", "nope", "-o", "n.dtb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no VM named \"nope\"; the config has: web"));

    let out = run(
        &d.0,
        &[
            "bundle",
            "sys.toml",
            "-o",
            "sys.bundle",
            "--inputs",
            "sys.inputs",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("bundle sys.bundle: "));
    // --inputs: the config, then every file it names, relative to where the config is.
    assert_eq!(
        std::fs::read_to_string(d.0.join("sys.inputs")).unwrap(),
        "sys.toml\nguests/initrd.cpio\nguests/k16.img\n"
    );
    let bytes = std::fs::read(d.0.join("sys.bundle")).unwrap();
    let b = guest_loader::Bundle::parse(&bytes).unwrap();
    assert!(b.config().contains("kernel = \"files/k16.img\""));
    let plan = b.plan(&common::host()).unwrap();
    assert_eq!(plan.vms[0].dtb, dtb);

    // A bundle of a config with a missing file fails with 1.
    std::fs::write(
        d.0.join("missing.toml"),
        "[[vm]]\nname = \"m\"\nmemory = \"64M\"\nkernel = \"guests/none\"\n",
    )
    .unwrap();
    let out = run(&d.0, &["bundle", "missing.toml", "-o", "m.bundle"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr)
        .contains("missing.toml:4:10: vm \"m\": kernel: file \"guests/none\" not found"));
}

#[test]
fn granule_and_hide_options() {
    let d = setup("opts");
    let out = run(&d.0, &["check", "sys.toml", "--granule", "64k"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("system: hyp el2 granule 64K (granule = \"64k\")"));
    let out = run(&d.0, &["check", "sys.toml", "--hide-granules", "16k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("hidden by hyp.hide-granules"));
    let out = run(&d.0, &["check", "sys.toml", "--mem", "256M"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("of guest RAM is left"));
}

#[test]
fn check_refuses_a_missing_pci_disk_by_its_line() {
    let d = setup("pci");
    let base = std::fs::read_to_string(d.0.join("sys.toml")).unwrap();
    let with = format!("{base}[[vm.pci]]\ndevice = \"virtio-blk-pci\"\nfile = \"data.img\"\n");
    std::fs::write(d.0.join("pci.toml"), &with).unwrap();
    let out = run(&d.0, &["check", "pci.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let line = with
        .lines()
        .position(|l| l.starts_with("file = \"data.img\""))
        .unwrap()
        + 1;
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "pci.toml:{line}:8: vm \"web\": pci.file: file \"data.img\" not found; paths are \
             relative to the config file"
        )
    );
    std::fs::write(d.0.join("data.img"), [0u8; 512]).unwrap();
    let out = run(&d.0, &["check", "pci.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout)
        .contains("vm web: pci 00:01.0 (stream 0x8) virtio-blk-pci \"data.img\" (read-write)"));
}

#[test]
fn qemu_args_attach_each_device_at_its_slot() {
    let d = setup("qemu-args");
    let out = run(&d.0, &["qemu-args", "sys.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "no devices, no arguments");
    let base = std::fs::read_to_string(d.0.join("sys.toml")).unwrap();
    let with = format!(
        "{base}[[vm.pci]]\ndevice = \"virtio-blk-pci\"\nfile = \"a,b.img\"\nreadonly = true\n\
         [[vm.pci]]\ndevice = \"virtio-net-pci\"\n"
    );
    std::fs::write(d.0.join("pci.toml"), with).unwrap();
    std::fs::write(d.0.join("a,b.img"), [0u8; 512]).unwrap();
    let out = run(&d.0, &["qemu-args", "pci.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let disk = std::fs::canonicalize(d.0.join("a,b.img")).unwrap();
    let disk = disk.display().to_string().replace(',', ",,");
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        [
            "-M",
            "iommu=smmuv3",
            "-nic",
            "none",
            "-drive",
            &format!("if=none,format=raw,file={disk},id=pci1,readonly=on"),
            "-device",
            "virtio-blk-pci,addr=0x1,drive=pci1,iommu_platform=on,disable-legacy=on",
            "-netdev",
            "user,id=pci2",
            "-device",
            "virtio-net-pci,addr=0x2,netdev=pci2,iommu_platform=on,disable-legacy=on",
        ]
    );
}
