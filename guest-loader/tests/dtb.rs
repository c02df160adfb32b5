//! Generated device trees decoded by `dtc -I dtb -O dts` (Debian's device-tree-compiler)
//! and checked node by node, property by property.

mod common;

use guest_loader::plan::plan_text;
use std::collections::BTreeMap;
use std::process::Command;

type Nodes = BTreeMap<String, BTreeMap<String, String>>;

/// Decodes `dtb` with dtc and returns node path → (property → value as dtc prints it;
/// boolean properties map to "").
fn decode(dtb: &[u8]) -> Nodes {
    let dir = std::env::temp_dir().join(format!("gl-dtb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{:x}.dtb",
        dtb.len() ^ dtb.iter().map(|&b| b as usize).sum::<usize>()
    ));
    std::fs::write(&path, dtb).unwrap();
    let out = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts"])
        .arg(&path)
        .output()
        .expect("dtc must be installed (apt-get install device-tree-compiler)");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dtc failed: {stderr}");
    assert!(!stderr.contains("Warning"), "dtc warns: {stderr}");
    let dts = String::from_utf8(out.stdout).unwrap();
    let mut nodes = Nodes::new();
    let mut stack: Vec<String> = Vec::new();
    for line in dts.lines().map(str::trim) {
        if line.is_empty() || line == "/dts-v1/;" {
            continue;
        }
        if let Some(name) = line.strip_suffix(" {") {
            let path = match (stack.last(), name) {
                (None, "/") => "/".to_string(),
                (Some(p), n) if p == "/" => format!("/{n}"),
                (Some(p), n) => format!("{p}/{n}"),
                (None, n) => panic!("unexpected top node {n}"),
            };
            nodes.insert(path.clone(), BTreeMap::new());
            stack.push(path);
        } else if line == "};" {
            stack.pop().expect("balanced braces");
        } else {
            let line = line.strip_suffix(';').expect("property ends with ;");
            let (k, v) = line.split_once(" = ").unwrap_or((line, ""));
            let node = stack.last().expect("inside a node");
            nodes.get_mut(node).unwrap().insert(k.into(), v.into());
        }
    }
    assert!(stack.is_empty());
    nodes
}

fn expect(nodes: &Nodes, path: &str, props: &[(&str, &str)]) {
    let node = nodes
        .get(path)
        .unwrap_or_else(|| panic!("no node {path}; nodes: {:?}", nodes.keys()));
    let want: BTreeMap<String, String> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(node, &want, "node {path}");
}

#[test]
fn two_vcpu_16k_guest_with_initrd() {
    let files = common::files();
    let text = "[[vm]]\nname = \"web\"\nvcpus = 2\nmemory = \"256M\"\nkernel = \"k16.img\"\n\
                initrd = \"initrd.cpio\"\ncmdline = \"console=ttyAMA0\"\npage_size = \"16k\"\n";
    let plan = plan_text("t.toml", text, &files, &common::host()).unwrap();
    let vm = &plan.vms[0];
    let initrd = vm.layout.initrd.unwrap();
    let nodes = decode(&vm.dtb);
    let paths: Vec<&str> = nodes.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "/",
            "/apb-pclk",
            "/chosen",
            "/cpus",
            "/cpus/cpu@0",
            "/cpus/cpu@1",
            "/hypervisor",
            "/intc@8000000",
            "/memory@40000000",
            "/pl011@9000000",
            "/pmu",
            "/psci",
            "/timer"
        ]
    );
    expect(
        &nodes,
        "/",
        &[
            ("compatible", "\"linux,dummy-virt\""),
            ("model", "\"hyp-virt\""),
            ("#address-cells", "<0x02>"),
            ("#size-cells", "<0x02>"),
            ("interrupt-parent", "<0x01>"),
        ],
    );
    // The stage-2 geometry told to the guest: 16K stage 2 (page_size), 40-bit IPA.
    expect(
        &nodes,
        "/hypervisor",
        &[
            ("compatible", "\"hyp,hypervisor\""),
            ("hyp,stage2-granule", "<0x4000>"),
            ("hyp,ipa-bits", "<0x28>"),
        ],
    );
    expect(
        &nodes,
        "/memory@40000000",
        &[
            ("device_type", "\"memory\""),
            ("reg", "<0x00 0x40000000 0x00 0x10000000>"),
        ],
    );
    expect(
        &nodes,
        "/cpus",
        &[("#address-cells", "<0x01>"), ("#size-cells", "<0x00>")],
    );
    for i in 0..2 {
        expect(
            &nodes,
            &format!("/cpus/cpu@{i}"),
            &[
                ("device_type", "\"cpu\""),
                ("compatible", "\"arm,armv8\""),
                ("reg", &format!("<0x0{i}>")),
                ("enable-method", "\"psci\""),
            ],
        );
    }
    expect(
        &nodes,
        "/psci",
        &[
            ("compatible", "\"arm,psci-1.0\\0arm,psci-0.2\""),
            ("method", "\"hvc\""),
        ],
    );
    expect(
        &nodes,
        "/intc@8000000",
        &[
            ("compatible", "\"arm,gic-v3\""),
            ("interrupt-controller", ""),
            ("#interrupt-cells", "<0x03>"),
            ("#redistributor-regions", "<0x01>"),
            ("#address-cells", "<0x02>"),
            ("#size-cells", "<0x02>"),
            ("ranges", ""),
            // Distributor 64K; two redistributors of 128K from 0x080A0000.
            (
                "reg",
                "<0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x40000>",
            ),
            ("phandle", "<0x01>"),
        ],
    );
    expect(
        &nodes,
        "/timer",
        &[
            ("compatible", "\"arm,armv8-timer\""),
            (
                "interrupts",
                "<0x01 0x0d 0x04 0x01 0x0e 0x04 0x01 0x0b 0x04 0x01 0x0a 0x04>",
            ),
            ("always-on", ""),
        ],
    );
    // QEMU's max has PMUv3p5: the guest gets it, overflow interrupt PPI 7 (INTID 23).
    expect(
        &nodes,
        "/pmu",
        &[
            ("compatible", "\"arm,armv8-pmuv3\""),
            ("interrupts", "<0x01 0x07 0x04>"),
        ],
    );
    expect(
        &nodes,
        "/apb-pclk",
        &[
            ("compatible", "\"fixed-clock\""),
            ("#clock-cells", "<0x00>"),
            ("clock-frequency", "<0x16e3600>"),
            ("clock-output-names", "\"clk24mhz\""),
            ("phandle", "<0x02>"),
        ],
    );
    expect(
        &nodes,
        "/pl011@9000000",
        &[
            ("compatible", "\"arm,pl011\\0arm,primecell\""),
            ("reg", "<0x00 0x9000000 0x00 0x1000>"),
            ("interrupts", "<0x00 0x01 0x04>"),
            ("clocks", "<0x02 0x02>"),
            ("clock-names", "\"uartclk\\0apb_pclk\""),
        ],
    );
    expect(
        &nodes,
        "/chosen",
        &[
            ("bootargs", "\"console=ttyAMA0 arm64.pagesize=16k\""),
            ("stdout-path", "\"/pl011@9000000\""),
            (
                "linux,initrd-start",
                &format!("<0x00 {:#x}>", initrd.start()),
            ),
            ("linux,initrd-end", &format!("<0x00 {:#x}>", initrd.end())),
        ],
    );
}

#[test]
fn many_vcpus_use_two_affinity_levels_and_no_initrd() {
    let files = common::files();
    let text = "[[vm]]\nname = \"big\"\nvcpus = 18\nmemory = \"1G\"\nkernel = \"k4.img\"\n";
    let plan = plan_text(
        "t.toml",
        text,
        &files,
        &common::host_with("max", 18, 2 << 30),
    )
    .unwrap();
    let nodes = decode(&plan.vms[0].dtb);
    // vCPU 16 is Aff1 = 1, Aff0 = 0.
    assert_eq!(nodes["/cpus/cpu@100"]["reg"], "<0x100>");
    assert_eq!(nodes["/cpus/cpu@101"]["reg"], "<0x101>");
    assert_eq!(nodes["/cpus/cpu@f"]["reg"], "<0x0f>");
    assert_eq!(
        nodes.keys().filter(|k| k.starts_with("/cpus/cpu@")).count(),
        18
    );
    // 18 redistributors: 18 * 128K = 0x240000.
    assert!(nodes["/intc@8000000"]["reg"].ends_with("0x00 0x80a0000 0x00 0x240000>"));
    expect(
        &nodes,
        "/chosen",
        &[
            ("bootargs", "\"arm64.pagesize=4k\""),
            ("stdout-path", "\"/pl011@9000000\""),
        ],
    );
    expect(
        &nodes,
        "/memory@40000000",
        &[
            ("device_type", "\"memory\""),
            ("reg", "<0x00 0x40000000 0x00 0x40000000>"),
        ],
    );
}

#[test]
fn hypervisor_node_tells_the_stage2_granule_not_the_page_size() {
    let files = common::files();
    let text =
        "[[vm]]\nname = \"s\"\nmemory = \"64M\"\nkernel = \"k16.img\"\npage_size = \"16k\"\n\
                [vm.stage2]\ngranule = \"64k\"\nipa_bits = 36\n";
    let plan = plan_text("t.toml", text, &files, &common::host()).unwrap();
    let nodes = decode(&plan.vms[0].dtb);
    expect(
        &nodes,
        "/hypervisor",
        &[
            ("compatible", "\"hyp,hypervisor\""),
            ("hyp,stage2-granule", "<0x10000>"),
            ("hyp,ipa-bits", "<0x24>"),
        ],
    );
}

#[test]
fn pcie_host_bridge_for_a_vm_with_devices() {
    use guest_loader::fdt::{guest_dtb, DtbInput};
    use stage2::{AddrRange, Ipa};
    let dtb = guest_dtb(&DtbInput {
        vcpus: 1,
        ram: AddrRange::from_start_len(Ipa::new(0x4000_0000), 256 << 20).unwrap(),
        cmdline: "console=ttyAMA0",
        initrd: None,
        stage2_granule: guest_loader::Granule::K16,
        ipa_bits: 40,
        pci_window: Some(AddrRange::from_start_len(Ipa::new(0x1400_0000), 0x400_0000).unwrap()),
        pmu: false,
    })
    .unwrap();
    let nodes = decode(&dtb);
    // dtc prints each cell as 0x%02x.
    let cells = |c: &[u32]| {
        let v: Vec<String> = c.iter().map(|x| format!("{x:#04x}")).collect();
        format!("<{}>", v.join(" "))
    };
    let mut map = Vec::new();
    for slot in 0..4u32 {
        for pin in 0..4u32 {
            // QEMU virt: INTx pin of a slot on SPI 3 + (slot + pin) % 4, level-high.
            map.extend([
                slot << 11,
                0,
                0,
                pin + 1,
                1,
                0,
                0,
                0,
                3 + (slot + pin) % 4,
                4,
            ]);
        }
    }
    let node = &nodes["/pcie@3f000000"];
    assert_eq!(node["compatible"], "\"pci-host-ecam-generic\"");
    assert_eq!(node["device_type"], "\"pci\"");
    assert_eq!(node["reg"], "<0x00 0x3f000000 0x00 0x100000>");
    assert_eq!(node["bus-range"], "<0x00 0x00>");
    assert_eq!(
        node["ranges"],
        "<0x2000000 0x00 0x14000000 0x00 0x14000000 0x00 0x4000000>"
    );
    assert_eq!(node["interrupt-map-mask"], "<0x1800 0x00 0x00 0x07>");
    assert_eq!(node["interrupt-map"], cells(&map));
}

#[test]
fn pmu_node_only_where_the_guest_gets_the_pmu() {
    let files = common::files();
    let text = "[[vm]]\nname = \"p\"\nmemory = \"64M\"\nkernel = \"k4.img\"\n";
    // cortex-a72 (PMUv3) and neoverse-n1 (PMUv3p1): no PMUv3p5, no PMU for the guest.
    for (cpu, pmu) in [("max", true), ("cortex-a72", false), ("neoverse-n1", false)] {
        let plan = plan_text("t.toml", text, &files, &common::host_with(cpu, 4, 1 << 30)).unwrap();
        let nodes = decode(&plan.vms[0].dtb);
        assert_eq!(nodes.contains_key("/pmu"), pmu, "{cpu}");
    }
}
