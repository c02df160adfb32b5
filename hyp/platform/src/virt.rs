//! The VM's platform: QEMU's `virt` board layout (which Linux and the probe guest already
//! know), as hyp emulates it for every VM.
//!
//! ```text
//!  IPA
//!  0x0000_0000 ┌──────────────────────────────┐
//!              │ (unmapped)                   │
//!  0x0800_0000 ├──────────────────────────────┤ GICD_BASE  GICv3 distributor, 64 KiB
//!  0x0801_0000 ├──────────────────────────────┤
//!              │ (unmapped)                   │
//!  0x080A_0000 ├──────────────────────────────┤ GICR_BASE  redistributors, 128 KiB per vCPU
//!              │ RD_base + SGI_base per vCPU  │            (room for MAX_VCPUS = 123)
//!  0x0900_0000 ├──────────────────────────────┤ UART_BASE  PL011, 4 KiB, SPI 1 (INTID 33)
//!  0x0900_1000 ├──────────────────────────────┤
//!              │ (unmapped)                   │
//!  0x1000_0000 ├──────────────────────────────┤ PCI_MMIO_BASE  PCI memory window: a VM that
//!              │ PCI BARs (VMs with devices)  │            owns functions gets its slice,
//!              │                              │            PCI_MMIO_SLICE bytes, IPA = PA
//!  0x3EFF_0000 ├──────────────────────────────┤ PCI_MMIO_END
//!  0x3F00_0000 ├──────────────────────────────┤ PCI_ECAM_BASE  bus 0's configuration space,
//!              │                              │            1 MiB, emulated by hyp
//!  0x3F10_0000 ├──────────────────────────────┤
//!  0x4000_0000 ├──────────────────────────────┤ RAM_BASE   guest RAM (`memory` bytes; what
//!              │ guest RAM                    │            goes where inside it:
//!              │                              │            guest-loader's `layout`)
//!  end         └──────────────────────────────┘
//! ```
//!
//! Interrupts: the PL011 on SPI [`UART_SPI`] (INTID [`UART_INTID`]), level-triggered; the
//! generic timer's PPIs ([`TIMER_PPIS`], INTIDs 29, 30, 27, 26); the GIC maintenance interrupt
//! on PPI 9 (INTID [`MAINTENANCE_INTID`]). The EL1 virtual and physical timers (INTIDs
//! [`VTIMER_INTID`], [`PTIMER_INTID`]) and the maintenance interrupt have the same INTIDs on the
//! host (Arm BSA): hyp takes the host's timer PPIs and raises the guest's.
//!
//! Sources: QEMU `hw/arm/virt.c` (`base_memmap`, `a15irqmap`), the Arm Base System
//! Architecture (PPI assignments), IHI 0069 (GICv3 frames).

use crate::gicv3;

/// Guest RAM starts here, as on QEMU `virt` (`VIRT_MEM`).
pub const RAM_BASE: u64 = 0x4000_0000;
/// GICv3 distributor (`VIRT_GIC_DIST`).
pub const GICD_BASE: u64 = 0x0800_0000;
/// Size of the distributor frame.
pub const GICD_SIZE: u64 = gicv3::GICD_SIZE;
/// First GICv3 redistributor (`VIRT_GIC_REDIST`).
pub const GICR_BASE: u64 = 0x080A_0000;
/// Each vCPU's redistributor: RD_base + SGI_base, 64 KiB each.
pub const GICR_STRIDE: u64 = gicv3::GICR_STRIDE;
/// End of the redistributor window (the UART follows).
pub const GICR_END: u64 = UART_BASE;
/// The most vCPUs one VM has: as many as there are redistributors below the UART,
/// (0x0900_0000 - 0x080A_0000) / 128 KiB.
pub const MAX_VCPUS: u32 = ((GICR_END - GICR_BASE) / GICR_STRIDE) as u32;
/// PL011 UART (`VIRT_UART`).
pub const UART_BASE: u64 = 0x0900_0000;
/// Size of the PL011 frame.
pub const UART_SIZE: u64 = 0x1000;
/// The PL011's interrupt: SPI 1 (the device tree's number).
pub const UART_SPI: u32 = 1;
/// The PL011's interrupt as an INTID.
pub const UART_INTID: u32 = spi_intid(UART_SPI);
/// The PL011's `uartclk`/`apb_pclk` frequency, as QEMU describes it (24 MHz).
pub const UART_CLOCK_HZ: u32 = 24_000_000;
/// The PCI memory window (`VIRT_PCIE_MMIO`): the host's, and each VM's slice of it at the
/// same addresses (BARs are programmed with host physical addresses, so IPA = PA there).
pub const PCI_MMIO_BASE: u64 = 0x1000_0000;
/// End of the PCI memory window (the PCI I/O window follows on QEMU `virt`).
pub const PCI_MMIO_END: u64 = 0x3eff_0000;
/// Each VM with PCI functions gets this much of the window, 64 MiB aligned (a 64K stage-2
/// granule maps it exactly).
pub const PCI_MMIO_SLICE: u64 = 0x0400_0000;
/// Slices in the window: the most VMs that can own PCI functions.
pub const PCI_MMIO_SLICES: u64 = (PCI_MMIO_END - PCI_MMIO_BASE) / PCI_MMIO_SLICE;
/// The `k`-th slice (VMs with functions, in config order).
pub const fn pci_mmio_slice(k: u64) -> (u64, u64) {
    (PCI_MMIO_BASE + k * PCI_MMIO_SLICE, PCI_MMIO_SLICE)
}
/// A VM's PCI configuration space (`VIRT_PCIE_ECAM`'s base): ECAM for bus 0 only.
pub const PCI_ECAM_BASE: u64 = 0x3f00_0000;
/// Bus 0's ECAM: 32 devices × 8 functions × 4 KiB.
pub const PCI_ECAM_SIZE: u64 = 0x10_0000;
/// Legacy INTx: QEMU `virt` wires pin `p` (0 = INTA) of slot `d` to SPI
/// `PCI_INTX_SPI_BASE + (d + p) % 4` (`create_pcie_irq_map`); VMs see the same SPIs.
pub const PCI_INTX_SPI_BASE: u32 = 3;
/// The SPI (device tree number) of INTx pin `pin` (0..=3) of slot `device`.
pub const fn pci_intx_spi(device: u32, pin: u32) -> u32 {
    PCI_INTX_SPI_BASE + (device + pin) % 4
}

/// The EL1 virtual timer's interrupt (Arm BSA: PPI 11, INTID 27).
pub const VTIMER_INTID: u32 = 27;
/// The EL1 physical timer's interrupt (Arm BSA: PPI 14, INTID 30; non-secure).
pub const PTIMER_INTID: u32 = 30;
/// The GIC maintenance interrupt (Arm BSA: PPI 9, INTID 25).
pub const MAINTENANCE_INTID: u32 = 25;
/// Generic timer PPIs (the device tree's numbers) in `arm,armv8-timer` order: secure
/// physical, non-secure physical, virtual, hypervisor (INTIDs 29, 30, 27, 26).
pub const TIMER_PPIS: [u32; 4] = [
    ppi_number(29),
    ppi_number(30),
    ppi_number(VTIMER_INTID),
    ppi_number(26),
];

/// The INTID of SPI `spi` (the device tree's SPI numbers start at INTID 32).
pub const fn spi_intid(spi: u32) -> u32 {
    spi + 32
}

/// The device tree's PPI number of a PPI's INTID (PPIs are INTIDs 16..=31).
pub const fn ppi_number(intid: u32) -> u32 {
    intid - 16
}

/// The redistributor region of a VM with `vcpus` vCPUs: (base, size).
pub const fn gicr_region(vcpus: u32) -> (u64, u64) {
    (GICR_BASE, vcpus as u64 * GICR_STRIDE)
}

const _: () = assert!(GICD_BASE + GICD_SIZE <= GICR_BASE);
const _: () = assert!(GICR_BASE + MAX_VCPUS as u64 * GICR_STRIDE <= UART_BASE);
const _: () = assert!(UART_BASE + UART_SIZE <= PCI_MMIO_BASE);
const _: () = assert!(PCI_MMIO_END <= PCI_ECAM_BASE && PCI_ECAM_BASE + PCI_ECAM_SIZE <= RAM_BASE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_qemu_virt() {
        assert_eq!(MAX_VCPUS, 123);
        assert_eq!(gicr_region(4), (0x080A_0000, 0x8_0000));
        assert_eq!(UART_INTID, 33);
        assert_eq!(TIMER_PPIS, [13, 14, 11, 10]);
        assert_eq!((VTIMER_INTID, MAINTENANCE_INTID), (27, 25));
        assert_eq!(PCI_MMIO_SLICES, 11);
        assert_eq!(pci_mmio_slice(10), (0x3800_0000, 0x0400_0000));
        // QEMU virt: slot 1 INTA is SPI 4, slot 3 INTD is SPI 5.
        assert_eq!((pci_intx_spi(1, 0), pci_intx_spi(3, 3)), (4, 5));
    }
}
