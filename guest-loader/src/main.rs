//! `guest-loader`: the host CLI around the library.
//!
//! ```text
//! guest-loader check  CONFIG [--cpu PROFILE] [--smp N] [--mem SIZE] [--granule G] [--hide-granules LIST]
//! guest-loader dtb    CONFIG --vm NAME -o FILE [same options as check]
//! guest-loader bundle CONFIG -o FILE
//! ```
//!
//! Exit status: 0 success; 1 the config is refused (every error is printed); 2 usage or I/O
//! error. On `aarch64-unknown-none` this file builds to an empty stub so that the whole package
//! builds for hyp's target.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_os = "none"))]
fn main() {
    std::process::exit(cli::main(std::env::args().skip(1).collect()));
}

#[cfg(not(target_os = "none"))]
mod cli {
    use guest_loader::bundle::make_bundle;
    use guest_loader::config::parse_config;
    use guest_loader::plan::{plan_system, Host};
    use guest_loader::size::{format_size, parse_size};
    use guest_loader::CpuFeatures;
    use stage2::cpu::{parse_granule_list, PROFILES};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    const USAGE: &str = "usage:
  guest-loader check  CONFIG [--cpu PROFILE] [--smp N] [--mem SIZE] [--granule G] [--hide-granules LIST]
  guest-loader dtb    CONFIG --vm NAME -o FILE [check's options]
  guest-loader bundle CONFIG -o FILE
defaults: --cpu max --smp 4 --mem 2G (QEMU's -cpu, -smp, -m); profiles: max, cortex-a57,
cortex-a72, neoverse-n1, a64fx; --granule overrides [hypervisor] granule (4k|16k|64k|auto);
--hide-granules treats granules as absent (e.g. 4k,64k), as hyp.hide-granules= does";

    struct Args {
        cmd: String,
        config: PathBuf,
        cpu: String,
        smp: u32,
        mem: u64,
        granule: Option<String>,
        hide: u8,
        vm: Option<String>,
        out: Option<PathBuf>,
    }

    fn parse_args(argv: Vec<String>) -> Result<Args, String> {
        let mut it = argv.into_iter();
        let cmd = it.next().ok_or("missing command")?;
        if !["check", "dtb", "bundle"].contains(&cmd.as_str()) {
            return Err(format!("unknown command `{cmd}`"));
        }
        let mut a = Args {
            cmd,
            config: PathBuf::new(),
            cpu: "max".into(),
            smp: 4,
            mem: 2 << 30,
            granule: None,
            hide: 0,
            vm: None,
            out: None,
        };
        let mut config = None;
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--cpu" => a.cpu = value("--cpu")?,
                "--smp" => {
                    let v = value("--smp")?;
                    a.smp = v
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("--smp {v}: expected a number of CPUs ≥ 1"))?;
                }
                "--mem" => {
                    let v = value("--mem")?;
                    a.mem = parse_size(&v).map_err(|e| format!("--mem: {e}"))?;
                }
                "--granule" => a.granule = Some(value("--granule")?),
                "--hide-granules" => {
                    let v = value("--hide-granules")?;
                    a.hide = parse_granule_list(&v).map_err(|e| format!("--hide-granules: {e}"))?;
                }
                "--vm" => a.vm = Some(value("--vm")?),
                "-o" | "--output" => a.out = Some(value("-o")?.into()),
                "-h" | "--help" => return Err(String::new()),
                s if s.starts_with('-') => return Err(format!("unknown option `{s}`")),
                s if config.is_none() => config = Some(PathBuf::from(s)),
                s => return Err(format!("unexpected argument `{s}`")),
            }
        }
        a.config = config.ok_or("missing CONFIG")?;
        if a.cmd != "check" && a.out.is_none() {
            return Err(format!("{} needs -o FILE", a.cmd));
        }
        if a.cmd == "dtb" && a.vm.is_none() {
            return Err("dtb needs --vm NAME".into());
        }
        Ok(a)
    }

    /// Reads every file the config names, relative to the config's directory.
    fn load_files(dir: &Path, paths: &[&str]) -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        for p in paths {
            match std::fs::read(dir.join(p)) {
                Ok(d) => {
                    m.insert((*p).to_string(), d);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("warning: {}: {e}", dir.join(p).display()),
            }
        }
        m
    }

    pub fn main(argv: Vec<String>) -> i32 {
        let a = match parse_args(argv) {
            Ok(a) => a,
            Err(e) => {
                if !e.is_empty() {
                    eprintln!("guest-loader: {e}");
                }
                eprintln!("{USAGE}");
                return 2;
            }
        };
        let name = a.config.display().to_string();
        let text = match std::fs::read_to_string(&a.config) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("guest-loader: cannot read {name}: {e}");
                return 2;
            }
        };
        let dir = a.config.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut cfg = match parse_config(&name, &text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        };
        let files = load_files(&dir, &cfg.referenced_files());
        if a.cmd == "bundle" {
            let out = a.out.as_deref().unwrap_or(Path::new("bundle"));
            return match make_bundle(&name, &text, &files) {
                Ok(b) => match std::fs::write(out, &b) {
                    Ok(()) => {
                        println!(
                            "bundle {}: {} bytes, {} VM{}, {} file{}",
                            out.display(),
                            b.len(),
                            cfg.vms.len(),
                            if cfg.vms.len() == 1 { "" } else { "s" },
                            files.len(),
                            if files.len() == 1 { "" } else { "s" }
                        );
                        0
                    }
                    Err(e) => {
                        eprintln!("guest-loader: cannot write {}: {e}", out.display());
                        2
                    }
                },
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            };
        }
        let Some(cpu) = CpuFeatures::profile(&a.cpu) else {
            eprintln!(
                "guest-loader: unknown CPU profile `{}`; one of {}",
                a.cpu,
                PROFILES.join(", ")
            );
            return 2;
        };
        if let Some(g) = &a.granule {
            cfg.granule = match g.as_str() {
                "auto" => guest_loader::config::GranuleChoice::Auto,
                s => match s.parse() {
                    Ok(g) => guest_loader::config::GranuleChoice::Fixed(g),
                    Err(e) => {
                        eprintln!("guest-loader: --granule {s}: {e} or auto");
                        return 2;
                    }
                },
            };
        }
        let host = Host {
            cpu: cpu.hide(a.hide),
            cpus: a.smp,
            guest_ram: a.mem.saturating_sub(guest_loader::layout::hyp_reserve(
                a.mem,
                text.len() as u64 + files.values().map(|f| f.len() as u64).sum::<u64>(),
            )),
        };
        let plan = match plan_system(&cfg, &files, &host) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        };
        match a.cmd.as_str() {
            "check" => {
                println!(
                    "host: cpu {}, {} cpus, {} RAM ({} for guests)",
                    a.cpu,
                    a.smp,
                    format_size(a.mem),
                    format_size(host.guest_ram)
                );
                print!("{}", plan.report());
                println!(
                    "ok: {} VM{}",
                    plan.vms.len(),
                    if plan.vms.len() == 1 { "" } else { "s" }
                );
                0
            }
            _ => {
                let want = a.vm.as_deref().unwrap_or_default();
                let Some(vm) = plan.vms.iter().find(|v| v.name == want) else {
                    let names: Vec<&str> = plan.vms.iter().map(|v| v.name.as_str()).collect();
                    eprintln!(
                        "{name}: no VM named \"{want}\"; the config has: {}",
                        if names.is_empty() {
                            "no VMs".into()
                        } else {
                            names.join(", ")
                        }
                    );
                    return 1;
                };
                let out = a.out.as_deref().unwrap_or(Path::new("vm.dtb"));
                match std::fs::write(out, &vm.dtb) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("guest-loader: cannot write {}: {e}", out.display());
                        2
                    }
                }
            }
        }
    }
}
