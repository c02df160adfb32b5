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
const _: () = assert!(UART_BASE + UART_SIZE <= RAM_BASE);

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
    }
}
