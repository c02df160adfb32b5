//! The host's PCIe configuration space: bus 0 of the ECAM window the host device tree's
//! `pci-host-ecam-generic` node describes. hyp alone touches it; a VM reaches its own
//! functions through `vdev::pci`'s filtered view ([`vdev::pci::PciView`]), which calls this.

use el2::dt::HalfOpen;
use el2::mmio::MmioRegion;
use log::warn;
use platform::pci::Bdf;
use spin::Once;
use stage2::{AddrRange, Pa};
use vdev::pci::ConfigSpace;

/// Bus 0's part of an ECAM window: 32 devices × 8 functions × 4 KiB.
const BUS0_SIZE: u64 = 1 << 20;

/// Bus 0's configuration space, as register accesses.
#[derive(Clone, Copy, Debug)]
pub struct HostEcam {
    regs: MmioRegion,
}

impl ConfigSpace for HostEcam {
    fn read32(&mut self, bdf: Bdf, reg: u16) -> u32 {
        self.regs
            .read32(bdf.ecam_offset() as usize + usize::from(reg & 0xffc))
    }

    fn write32(&mut self, bdf: Bdf, reg: u16, value: u32) {
        self.regs
            .write32(bdf.ecam_offset() as usize + usize::from(reg & 0xffc), value)
    }
}

static ECAM: Once<HostEcam> = Once::new();

/// Takes bus 0 of the host's ECAM window `regs` (the first MiB).
///
/// # Safety
/// `regs` must be the host's PCIe ECAM window from its device tree, its first MiB mapped
/// Device-nGnRE in hyp's identity map, and no other software may configure the bus.
pub unsafe fn init(regs: AddrRange<Pa>) {
    if regs.len() < BUS0_SIZE {
        warn!(
            "hyp: pci: ECAM window {} smaller than one bus: not used",
            HalfOpen(regs)
        );
        return;
    }
    // SAFETY: the caller's contract; bus 0's MiB lies inside the window (checked).
    let regs = unsafe { MmioRegion::of(bus0(regs)) };
    ECAM.call_once(|| HostEcam { regs });
}

/// Bus 0's configuration space, once [`init`] found it.
pub fn host() -> Option<HostEcam> {
    ECAM.get().copied()
}

/// The bytes of bus 0's window to map for hyp (`regs` is the whole ECAM window).
pub fn bus0(regs: AddrRange<Pa>) -> AddrRange<Pa> {
    AddrRange::from_start_len(regs.start(), regs.len().min(BUS0_SIZE))
        .expect("invariant: a prefix of a range fits where the range does")
}
