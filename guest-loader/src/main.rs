//! `guest-loader`: the host CLI around the library.
//!
//! ```text
//! guest-loader check  CONFIG [--cpu PROFILE] [--smp N] [--mem SIZE] [--granule G] [--hide-granules LIST]
//! guest-loader dtb    CONFIG --vm NAME -o FILE [same options as check]
//! guest-loader bundle CONFIG -o FILE [--inputs FILE]
//! guest-loader help [COMMAND] | --help | --version
//! ```
//!
//! Exit status: 0 success (and `--help`, `--version`); 1 the config is refused (every error is
//! printed); 2 usage or I/O error. The arguments are parsed with clap, which only the binary
//! uses (the `cli` feature, on by default; hyp depends on the library without it). On
//! `aarch64-unknown-none` this file builds to an empty stub so that the whole package builds
//! for hyp's target.
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std, no_main)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
mod cli {
    use clap::{Args, Parser, Subcommand};
    use guest_loader::bundle::make_bundle;
    use guest_loader::config::{parse_config, GranuleChoice, SystemConfig};
    use guest_loader::plan::{plan_system, Host, SystemPlan};
    use guest_loader::size::{format_size, parse_size};
    use guest_loader::CpuFeatures;
    use smmu::SmmuFeatures;
    use stage2::cpu::{parse_granule_list, PROFILES};
    use stage2::Granule;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// Exit status of a refused config.
    const REFUSED: i32 = 1;
    /// Exit status of a usage or I/O error (clap's own, too).
    const USAGE: i32 = 2;

    /// hyp's guest loader: checks a system config, writes a VM's device tree, packs the bundle.
    ///
    /// CONFIG is a TOML system config (README, "Configs"); paths in it are relative to its
    /// directory. The bundle is what QEMU loads for hyp as its initrd (-initrd).
    #[derive(Parser)]
    #[command(name = "guest-loader", version, arg_required_else_help = true)]
    #[command(
        after_help = "Exit status: 0 success; 1 the config is refused (every error is \
                            printed); 2 usage or I/O error."
    )]
    struct Cli {
        #[command(subcommand)]
        cmd: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Prints the resolved plan of CONFIG, or every error
        ///
        /// The plan: hyp's granule, and per VM its vCPUs, page size decision, stage-2
        /// geometry, memory layout and final command line. A refused config exits with 1.
        Check {
            /// The system config (TOML)
            config: PathBuf,
            #[command(flatten)]
            host: HostArgs,
        },
        /// Writes the device tree one VM of CONFIG boots with
        ///
        /// The config is resolved as `check` does; a refused config exits with 1.
        Dtb {
            /// The system config (TOML)
            config: PathBuf,
            /// The VM's name
            #[arg(long, value_name = "NAME")]
            vm: String,
            /// Where to write the DTB
            #[arg(short, long = "output", value_name = "FILE")]
            out: PathBuf,
            #[command(flatten)]
            host: HostArgs,
        },
        /// Packs CONFIG and every file it names into a boot bundle
        ///
        /// A cpio "newc" archive: system.toml (the config with its paths rewritten to
        /// files/<name>), then each file once; reproducible.
        Bundle {
            /// The system config (TOML)
            config: PathBuf,
            /// Where to write the bundle
            #[arg(short, long = "output", value_name = "FILE")]
            out: PathBuf,
            /// Also writes the config's path and every file's path to FILE, one per line
            #[arg(long, value_name = "FILE")]
            inputs: Option<PathBuf>,
        },
        /// Prints the QEMU arguments that attach CONFIG's PCI devices, one per line
        ///
        /// Nothing for a config without [[vm.pci]]; otherwise the SMMUv3 (-M iommu=smmuv3),
        /// no default network card, and each device at its slot of the root bus with its
        /// backing file (absolute path) or a user-mode network.
        QemuArgs {
            /// The system config (TOML)
            config: PathBuf,
        },
    }

    /// The host the plan is resolved against (QEMU's `-cpu`, `-smp`, `-m`) and hyp's options.
    #[derive(Args)]
    struct HostArgs {
        /// The CPU's features, as this QEMU -cpu model has them
        #[arg(long, value_name = "PROFILE", default_value = "max",
              value_parser = clap::builder::PossibleValuesParser::new(PROFILES))]
        cpu: String,
        /// Physical CPUs
        #[arg(long, value_name = "N", default_value_t = 4,
              value_parser = clap::value_parser!(u32).range(1..))]
        smp: u32,
        /// Host RAM (K/M/G suffixes or bytes)
        #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = parse_mem)]
        mem: u64,
        /// Overrides [hypervisor] granule: 4k, 16k, 64k or auto
        #[arg(long, value_name = "G", value_parser = parse_granule)]
        granule: Option<GranuleChoice>,
        /// Treats these granules as absent (e.g. 4k,64k), as hyp.hide-granules= does
        #[arg(long, value_name = "LIST", default_value = "", hide_default_value = true,
              value_parser = parse_hide)]
        hide_granules: u8,
        /// The SMMUv3 in front of the PCIe bus: qemu (what ./run attaches when a config
        /// assigns devices) or none
        #[arg(long, value_name = "PROFILE", default_value = "qemu",
              value_parser = clap::builder::PossibleValuesParser::new(["qemu", "none"]))]
        smmu: String,
        /// Treats these stage-2 granules as absent at the SMMU, as hyp.hide-smmu-granules= does
        #[arg(long, value_name = "LIST", default_value = "", hide_default_value = true,
              value_parser = parse_hide)]
        hide_smmu_granules: u8,
    }

    fn parse_mem(s: &str) -> Result<u64, String> {
        parse_size(s).map_err(|e| e.to_string())
    }

    fn parse_granule(s: &str) -> Result<GranuleChoice, String> {
        match s {
            "auto" => Ok(GranuleChoice::Auto),
            s => s
                .parse()
                .map(GranuleChoice::Fixed)
                .map_err(|e| format!("{e} or auto")),
        }
    }

    fn parse_hide(s: &str) -> Result<u8, String> {
        parse_granule_list(s).map_err(|e| e.to_string())
    }

    /// A config, as read and parsed, with every file it names.
    struct Loaded {
        name: String,
        text: String,
        cfg: SystemConfig,
        files: BTreeMap<String, Vec<u8>>,
    }

    /// Reads and parses CONFIG: its name for messages, its text and the config; an error is
    /// the exit status, its message printed.
    fn read_config(config: &Path) -> Result<(String, String, SystemConfig), i32> {
        let name = config.display().to_string();
        let text = std::fs::read_to_string(config).map_err(|e| {
            eprintln!("guest-loader: cannot read {name}: {e}");
            USAGE
        })?;
        let cfg = parse_config(&name, &text).map_err(|e| {
            eprintln!("{e}");
            REFUSED
        })?;
        Ok((name, text, cfg))
    }

    /// Reads and parses CONFIG and reads the files it names (relative to its directory); an
    /// error is the exit status, its message printed.
    fn load(config: &Path) -> Result<Loaded, i32> {
        let (name, text, cfg) = read_config(config)?;
        let dir = config.parent().unwrap_or(Path::new(""));
        let mut files = BTreeMap::new();
        for p in cfg.referenced_files() {
            match std::fs::read(dir.join(p)) {
                Ok(d) => {
                    files.insert(p.to_string(), d);
                }
                // A missing file is the config's error: the plan or the bundle names it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("warning: {}: {e}", dir.join(p).display()),
            }
        }
        // Disks are attached by QEMU, not packed into the bundle: only their existence is
        // checked here (hyp cannot see them).
        let missing: Vec<String> = cfg
            .vms
            .iter()
            .flat_map(|vm| {
                vm.pci
                    .iter()
                    .zip(&vm.pos.pci)
                    .map(move |(d, pos)| (vm, d, pos))
            })
            .filter_map(|(vm, d, pos)| {
                let f = d.file.as_ref()?;
                (!dir.join(f).is_file()).then(|| {
                    guest_loader::config::ConfigError {
                        file: name.clone(),
                        pos: Some(*pos),
                        vm: Some(vm.name.clone()),
                        key: Some("pci.file".into()),
                        kind: guest_loader::config::ErrorKind::MissingFile { path: f.clone() },
                    }
                    .to_string()
                })
            })
            .collect();
        if !missing.is_empty() {
            eprintln!("{}", missing.join("\n"));
            return Err(REFUSED);
        }
        Ok(Loaded {
            name,
            text,
            cfg,
            files,
        })
    }

    fn write(path: &Path, data: &[u8]) -> Result<(), i32> {
        std::fs::write(path, data).map_err(|e| {
            eprintln!("guest-loader: cannot write {}: {e}", path.display());
            USAGE
        })
    }

    fn plural(n: usize) -> &'static str {
        if n == 1 {
            ""
        } else {
            "s"
        }
    }

    fn bundle(config: &Path, out: &Path, inputs: Option<&Path>) -> Result<(), i32> {
        let l = load(config)?;
        let b = make_bundle(&l.name, &l.text, &l.files).map_err(|e| {
            eprintln!("{e}");
            REFUSED
        })?;
        write(out, &b)?;
        if let Some(inputs) = inputs {
            let dir = config.parent().unwrap_or(Path::new(""));
            let mut list = format!("{}\n", config.display());
            for p in l.files.keys() {
                list += &format!("{}\n", dir.join(p).display());
            }
            write(inputs, list.as_bytes())?;
        }
        let (vms, files) = (l.cfg.vms.len(), l.files.len());
        println!(
            "bundle {}: {} bytes, {vms} VM{}, {files} file{}",
            out.display(),
            b.len(),
            plural(vms),
            plural(files)
        );
        Ok(())
    }

    /// The host of `a`, for a system whose config and files take `inputs` bytes (the bundle
    /// hyp keeps in its reserve).
    fn host(a: &HostArgs, inputs: u64) -> Host {
        let cpu = CpuFeatures::profile(&a.cpu).expect("clap checked the profile");
        let smmu = SmmuFeatures::profile(&a.smmu).map(|mut s| {
            for g in Granule::ALL {
                if a.hide_smmu_granules & g.bit() != 0 {
                    s.hide(g);
                }
            }
            s
        });
        Host {
            smmu,
            cpu: cpu.hide(a.hide_granules),
            cpus: a.smp,
            guest_ram: a
                .mem
                .saturating_sub(guest_loader::layout::hyp_reserve(a.mem, inputs)),
        }
    }

    /// Resolves a loaded config against the host of `a`.
    fn plan<'a>(l: &'a mut Loaded, a: &HostArgs) -> Result<(SystemPlan<'a>, Host), i32> {
        if let Some(g) = a.granule {
            l.cfg.granule = g;
        }
        let inputs = l.text.len() as u64 + l.files.values().map(|f| f.len() as u64).sum::<u64>();
        let host = host(a, inputs);
        match plan_system(&l.cfg, &l.files, &host) {
            Ok(p) => Ok((p, host)),
            Err(e) => {
                eprintln!("{e}");
                Err(REFUSED)
            }
        }
    }

    fn check(config: &Path, a: &HostArgs) -> Result<(), i32> {
        let mut l = load(config)?;
        let (plan, host) = plan(&mut l, a)?;
        println!(
            "host: cpu {}, {} cpus, {} RAM ({} for guests)",
            a.cpu,
            a.smp,
            format_size(a.mem),
            format_size(host.guest_ram)
        );
        print!("{}", plan.report());
        println!("ok: {} VM{}", plan.vms.len(), plural(plan.vms.len()));
        Ok(())
    }

    fn dtb(config: &Path, a: &HostArgs, want: &str, out: &Path) -> Result<(), i32> {
        let mut l = load(config)?;
        let name = l.name.clone();
        let (plan, _) = plan(&mut l, a)?;
        let Some(vm) = plan.vms.iter().find(|v| v.name == want) else {
            let names: Vec<&str> = plan.vms.iter().map(|v| v.name.as_str()).collect();
            let has = if names.is_empty() {
                "no VMs".into()
            } else {
                names.join(", ")
            };
            eprintln!("{name}: no VM named \"{want}\"; the config has: {has}");
            return Err(REFUSED);
        };
        write(out, &vm.dtb)
    }

    /// QEMU's virtio devices bypass the IOMMU unless they offer VIRTIO_F_ACCESS_PLATFORM
    /// (`iommu_platform=on`): without it their DMA would reach host physical memory at the
    /// guest's addresses, never through the SMMU. Modern only (`disable-legacy=on`): no I/O BAR.
    const VIRTIO_DMA: &str = "iommu_platform=on,disable-legacy=on";

    fn qemu_args(config: &Path) -> Result<(), i32> {
        // Only the config is read (not the kernels it names): `run` calls this on every boot.
        let (_, _, cfg) = read_config(config)?;
        let dir = config.parent().unwrap_or(Path::new(""));
        let devices: Vec<_> = cfg.vms.iter().flat_map(|vm| vm.pci.iter()).collect();
        if devices.is_empty() {
            return Ok(());
        }
        let mut args: Vec<String> = ["-M", "iommu=smmuv3", "-nic", "none"]
            .map(String::from)
            .into();
        for (i, d) in devices.iter().enumerate() {
            let Some(bdf) = guest_loader::pci::place(i) else {
                break;
            };
            let id = format!("pci{}", bdf.device);
            let addr = format!("addr={:#x}", bdf.device);
            match &d.file {
                Some(f) => {
                    let path = std::fs::canonicalize(dir.join(f)).map_err(|e| {
                        eprintln!("guest-loader: {}: {e}", dir.join(f).display());
                        REFUSED
                    })?;
                    let ro = if d.readonly { ",readonly=on" } else { "" };
                    args.push("-drive".into());
                    // QEMU's option syntax: a comma inside a value is written twice.
                    let file = path.display().to_string().replace(',', ",,");
                    args.push(format!("if=none,format=raw,file={file},id={id}{ro}"));
                    args.push("-device".into());
                    args.push(format!("{},{addr},drive={id},{VIRTIO_DMA}", d.model));
                }
                None => {
                    args.push("-netdev".into());
                    args.push(format!("user,id={id}"));
                    args.push("-device".into());
                    args.push(format!("{},{addr},netdev={id},{VIRTIO_DMA}", d.model));
                }
            }
        }
        for a in args {
            println!("{a}");
        }
        Ok(())
    }

    /// Runs the command line; the process's exit status.
    pub fn main() -> i32 {
        // clap prints --help and --version (exit 0) and usage errors (exit 2) itself.
        let cli = Cli::parse();
        let done = match &cli.cmd {
            Command::Check { config, host } => check(config, host),
            Command::Dtb {
                config,
                vm,
                out,
                host,
            } => dtb(config, host, vm, out),
            Command::QemuArgs { config } => qemu_args(config),
            Command::Bundle {
                config,
                out,
                inputs,
            } => bundle(config, out, inputs.as_deref()),
        };
        done.err().unwrap_or(0)
    }
}
