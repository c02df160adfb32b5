//! The guest device tree: one `create_*_node` function per node (cloud-hypervisor style),
//! written with `vm-fdt`.
//!
//! Bindings: `Documentation/devicetree/bindings/` in Linux — `arm/cpus.yaml`, `arm/psci.yaml`,
//! `interrupt-controller/arm,gic-v3.yaml`, `timer/arm,arch_timer.yaml`,
//! `serial/arm,pl011.yaml`, `clock/fixed-clock.yaml`, `chosen.yaml`, `arm/pmu.yaml`,
//! `pci/host-generic-pci.yaml` (and the PCI bus binding, IEEE 1275 PCI supplement).

use crate::layout::DTB_MAX_SIZE;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use platform::pmu::PMU_PPI;
use platform::virt::{
    gicr_region, pci_intx_spi, GICD_BASE, GICD_SIZE, PCI_ECAM_BASE, PCI_ECAM_SIZE, TIMER_PPIS,
    UART_BASE, UART_CLOCK_HZ, UART_SIZE, UART_SPI,
};
use platform::Mpidr;
use stage2::{AddrRange, Granule, Ipa};
use vm_fdt::FdtWriter;

/// Phandles of the nodes others refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Phandle {
    /// The GICv3 interrupt controller.
    Gic = 1,
    /// The PL011's 24 MHz clock.
    ApbClock = 2,
}

/// `interrupts` cell 0: SPI or PPI (GIC binding).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// `interrupts` cell 2: level-high (GICv3 has no CPU mask bits; QEMU writes the same).
const IRQ_LEVEL_HIGH: u32 = 4;

/// What the device tree describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtbInput<'a> {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM.
    pub ram: AddrRange<Ipa>,
    /// The final kernel command line (`/chosen/bootargs`).
    pub cmdline: &'a str,
    /// The initrd's place, if any.
    pub initrd: Option<AddrRange<Ipa>>,
    /// The VM's stage-2 granule (told to the guest in `/hypervisor`).
    pub stage2_granule: Granule,
    /// The VM's IPA size in bits (told to the guest in `/hypervisor`).
    pub ipa_bits: u32,
    /// Its PCI memory window (IPA = PA), when it owns PCI functions: then the tree has a PCIe
    /// host bridge whose bus holds them.
    pub pci_window: Option<AddrRange<Ipa>>,
    /// The guest gets the CPU's PMU (`platform::pmu::guest_pmu_version`): a `/pmu` node.
    pub pmu: bool,
}

/// The device tree could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// vm-fdt refused (a hypervisor bug, or a string with a NUL).
    Writer(String),
    /// The blob exceeds 2 MiB (booting.rst).
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// A vCPU index with no MPIDR affinity in hyp's numbering (`platform::mpidr`); configs
    /// allow far fewer vCPUs.
    NoAffinity {
        /// The vCPU.
        vcpu: u32,
    },
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtbError::Writer(e) => write!(f, "cannot write the guest device tree: {e}"),
            DtbError::TooLarge { size } => write!(
                f,
                "the guest device tree is {size} bytes, more than the 2M the boot protocol \
                 allows; shorten cmdline"
            ),
            DtbError::NoAffinity { vcpu } => {
                write!(f, "vCPU {vcpu} has no MPIDR affinity; use fewer vCPUs")
            }
        }
    }
}

impl From<vm_fdt::Error> for DtbError {
    fn from(e: vm_fdt::Error) -> Self {
        DtbError::Writer(e.to_string())
    }
}

type Result<T> = core::result::Result<T, DtbError>;

fn reg(base: u64, size: u64) -> [u64; 2] {
    [base, size]
}

/// Writes the guest's device tree blob.
pub fn guest_dtb(vm: &DtbInput<'_>) -> Result<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "hyp-virt")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", Phandle::Gic as u32)?;
    create_memory_node(&mut fdt, vm)?;
    create_cpu_nodes(&mut fdt, vm)?;
    create_psci_node(&mut fdt)?;
    create_gic_node(&mut fdt, vm)?;
    create_timer_node(&mut fdt)?;
    if vm.pmu {
        create_pmu_node(&mut fdt)?;
    }
    create_clock_node(&mut fdt)?;
    create_uart_node(&mut fdt)?;
    create_chosen_node(&mut fdt, vm)?;
    create_hypervisor_node(&mut fdt, vm)?;
    if let Some(w) = vm.pci_window {
        create_pcie_node(&mut fdt, w)?;
    }
    fdt.end_node(root)?;
    let blob = fdt.finish()?;
    if blob.len() as u64 > DTB_MAX_SIZE {
        return Err(DtbError::TooLarge { size: blob.len() });
    }
    Ok(blob)
}

/// `/memory@40000000`.
fn create_memory_node(fdt: &mut FdtWriter, vm: &DtbInput<'_>) -> Result<()> {
    let node = fdt.begin_node(&format!("memory@{:x}", vm.ram.start()))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &reg(vm.ram.start().get(), vm.ram.len()))?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/cpus/cpu@N`: one per vCPU, `reg` = MPIDR affinity, PSCI enable method.
fn create_cpu_nodes(fdt: &mut FdtWriter, vm: &DtbInput<'_>) -> Result<()> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for i in 0..vm.vcpus {
        let Some(mpidr) = Mpidr::from_vcpu(i as usize) else {
            return Err(DtbError::NoAffinity { vcpu: i });
        };
        // Aff1.Aff0 only (hyp's numbering leaves Aff2 and Aff3 zero): one address cell.
        let aff = mpidr.affinity() as u32;
        let cpu = fdt.begin_node(&format!("cpu@{aff:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,armv8")?;
        fdt.property_u32("reg", aff)?;
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;
    Ok(())
}

/// `/psci`: PSCI 1.0 through HVC (hyp implements it; SMC would go to firmware).
fn create_psci_node(fdt: &mut FdtWriter) -> Result<()> {
    let node = fdt.begin_node("psci")?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
    )?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/intc@8000000`: GICv3, distributor + one redistributor region for all vCPUs.
fn create_gic_node(fdt: &mut FdtWriter, vm: &DtbInput<'_>) -> Result<()> {
    let (gicr, gicr_size) = gicr_region(vm.vcpus);
    let node = fdt.begin_node(&format!("intc@{GICD_BASE:x}"))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_u32("#redistributor-regions", 1)?;
    // As QEMU writes it: room for child nodes (an ITS) with 64-bit addresses.
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_array_u64("reg", &[GICD_BASE, GICD_SIZE, gicr, gicr_size])?;
    fdt.property_phandle(Phandle::Gic as u32)?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/timer`: the generic timer's four PPIs (secure phys, non-secure phys, virtual, hyp).
fn create_timer_node(fdt: &mut FdtWriter) -> Result<()> {
    let node = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    let mut cells = Vec::with_capacity(12);
    for ppi in TIMER_PPIS {
        cells.extend_from_slice(&[GIC_PPI, ppi, IRQ_LEVEL_HIGH]);
    }
    fdt.property_array_u32("interrupts", &cells)?;
    fdt.property_null("always-on")?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/pmu`: the PMUv3 every vCPU has (its own CPU's, passed through), with its overflow
/// interrupt on PPI 7 (INTID 23), level-high; as for the timer, GICv3 PPIs take no CPU mask.
fn create_pmu_node(fdt: &mut FdtWriter) -> Result<()> {
    let node = fdt.begin_node("pmu")?;
    fdt.property_string("compatible", "arm,armv8-pmuv3")?;
    fdt.property_array_u32("interrupts", &[GIC_PPI, PMU_PPI, IRQ_LEVEL_HIGH])?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/apb-pclk`: the fixed 24 MHz clock the PL011 binding requires.
fn create_clock_node(fdt: &mut FdtWriter) -> Result<()> {
    let node = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(Phandle::ApbClock as u32)?;
    fdt.end_node(node)?;
    Ok(())
}

/// The UART node's path (for `stdout-path`).
pub fn uart_path() -> String {
    format!("/pl011@{UART_BASE:x}")
}

/// `/pl011@9000000`: the PL011 with SPI 1 and its `uartclk`/`apb_pclk` clocks.
fn create_uart_node(fdt: &mut FdtWriter) -> Result<()> {
    let node = fdt.begin_node(&format!("pl011@{UART_BASE:x}"))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl011".into(), "arm,primecell".into()],
    )?;
    fdt.property_array_u64("reg", &reg(UART_BASE, UART_SIZE))?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, UART_SPI, IRQ_LEVEL_HIGH])?;
    fdt.property_array_u32(
        "clocks",
        &[Phandle::ApbClock as u32, Phandle::ApbClock as u32],
    )?;
    fdt.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/chosen`: bootargs, stdout-path, initrd.
fn create_chosen_node(fdt: &mut FdtWriter, vm: &DtbInput<'_>) -> Result<()> {
    let node = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", vm.cmdline)?;
    fdt.property_string("stdout-path", &uart_path())?;
    if let Some(initrd) = vm.initrd {
        fdt.property_u64("linux,initrd-start", initrd.start().get())?;
        fdt.property_u64("linux,initrd-end", initrd.end().get())?;
    }
    fdt.end_node(node)?;
    Ok(())
}

/// `/hypervisor`: what the hypervisor really maps the guest with, so that a guest can align
/// what it shares with the hypervisor to the stage-2 granule (a page-size-bound driver one
/// level down): `compatible = "hyp,hypervisor"`, `hyp,stage2-granule = <bytes>` and
/// `hyp,ipa-bits = <bits>` (u32 cells).
fn create_hypervisor_node(fdt: &mut FdtWriter, vm: &DtbInput<'_>) -> Result<()> {
    let node = fdt.begin_node("hypervisor")?;
    fdt.property_string("compatible", "hyp,hypervisor")?;
    // Granule sizes are 4K, 16K or 64K: they fit a u32 cell.
    fdt.property_u32("hyp,stage2-granule", vm.stage2_granule.size() as u32)?;
    fdt.property_u32("hyp,ipa-bits", vm.ipa_bits)?;
    fdt.end_node(node)?;
    Ok(())
}

/// `/pcie@3f000000`: a generic ECAM host bridge for bus 0, whose configuration space hyp
/// emulates (only the VM's own functions appear), one 32-bit memory window (the VM's slice,
/// IPA = PA: BARs hold host addresses), and legacy INTx on the SPIs QEMU `virt` wires them to.
fn create_pcie_node(fdt: &mut FdtWriter, window: AddrRange<Ipa>) -> Result<()> {
    let node = fdt.begin_node(&format!("pcie@{PCI_ECAM_BASE:x}"))?;
    fdt.property_string("compatible", "pci-host-ecam-generic")?;
    fdt.property_string("device_type", "pci")?;
    fdt.property_u32("#address-cells", 3)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.property_array_u32("bus-range", &[0, 0])?;
    fdt.property_u32("linux,pci-domain", 0)?;
    fdt.property_null("dma-coherent")?;
    fdt.property_array_u64("reg", &[PCI_ECAM_BASE, PCI_ECAM_SIZE])?;
    // ranges: (PCI address: space code 0b10 = 32-bit memory, 64-bit address) (CPU address)
    // (size).
    let hi = |v: u64| (v >> 32) as u32;
    let lo = |v: u64| v as u32;
    let (start, size) = (window.start().get(), window.len());
    fdt.property_array_u32(
        "ranges",
        &[
            0x0200_0000,
            hi(start),
            lo(start),
            hi(start),
            lo(start),
            hi(size),
            lo(size),
        ],
    )?;
    // INTx: the interrupt-map repeats every 4 slots (the swizzle QEMU's virt uses).
    fdt.property_array_u32("interrupt-map-mask", &[0x1800, 0, 0, 7])?;
    let mut map = Vec::with_capacity(4 * 4 * 10);
    for slot in 0..4u32 {
        for pin in 0..4u32 {
            map.extend_from_slice(&[
                slot << 11,
                0,
                0,
                pin + 1,
                Phandle::Gic as u32,
                0,
                0,
                GIC_SPI,
                pci_intx_spi(slot, pin),
                IRQ_LEVEL_HIGH,
            ]);
        }
    }
    fdt.property_array_u32("interrupt-map", &map)?;
    fdt.end_node(node)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_header_and_size() {
        let dtb = guest_dtb(&DtbInput {
            vcpus: 2,
            ram: AddrRange::from_start_len(Ipa::new(0x4000_0000), 512 << 20).unwrap(),
            cmdline: "console=ttyAMA0 arm64.pagesize=16k",
            initrd: None,
            stage2_granule: Granule::K4,
            ipa_bits: 40,
            pci_window: None,
            pmu: true,
        })
        .unwrap();
        assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
        let total = u32::from_be_bytes([dtb[4], dtb[5], dtb[6], dtb[7]]) as usize;
        assert_eq!(total, dtb.len());
    }

    #[test]
    fn nul_in_bootargs_is_an_error_not_a_panic() {
        let e = guest_dtb(&DtbInput {
            vcpus: 1,
            ram: AddrRange::from_start_len(Ipa::new(0x4000_0000), 64 << 20).unwrap(),
            cmdline: "a\0b",
            initrd: None,
            stage2_granule: Granule::K4,
            ipa_bits: 40,
            pci_window: None,
            pmu: true,
        });
        assert!(matches!(e, Err(DtbError::Writer(_))));
    }
}
