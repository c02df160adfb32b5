//! PCI functions assigned to VMs (`[[vm.pci]]`): the models hyp knows, and where each one sits
//! on the host's PCIe root bus.
//!
//! `run` attaches each assigned function to QEMU's root bus at the slot given here
//! (`-device <model>,addr=<slot>`), in config order across VMs from slot 1 (slot 0 is the host
//! bridge). A function's StreamID at the SMMU is its requester ID, `bus << 8 | slot << 3 |
//! function` (QEMU virt's IORT/`iommu-map` is the identity on segment 0).

use alloc::string::String;
use core::fmt;
pub use platform::pci::Bdf;

/// The device models a VM may be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciModel {
    /// `virtio-blk-pci`: a disk backed by a file.
    VirtioBlk,
    /// `virtio-net-pci`: a network card (QEMU's user-mode network).
    VirtioNet,
}

impl PciModel {
    /// Every model, as written in configs.
    pub const ALL: [PciModel; 2] = [PciModel::VirtioBlk, PciModel::VirtioNet];

    /// The QEMU device model name, which is also the config's `device` value.
    pub const fn name(self) -> &'static str {
        match self {
            PciModel::VirtioBlk => "virtio-blk-pci",
            PciModel::VirtioNet => "virtio-net-pci",
        }
    }

    /// The model named `s`.
    pub fn from_name(s: &str) -> Option<PciModel> {
        PciModel::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether the model is backed by a file (`file` required) or takes none.
    pub const fn needs_file(self) -> bool {
        matches!(self, PciModel::VirtioBlk)
    }
}

impl fmt::Display for PciModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One validated `[[vm.pci]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    /// The model.
    pub model: PciModel,
    /// Its backing file as written (relative to the config), for models that take one.
    pub file: Option<String>,
    /// The device may not write its file.
    pub readonly: bool,
}

/// Functions on the root bus hyp can assign: slots 1..=31 (slot 0 is the host bridge), one
/// function each.
pub const MAX_PCI_DEVICES: usize = 31;

/// Where the `index`-th assigned function of the whole system (config order, across VMs)
/// sits, or `None` beyond [`MAX_PCI_DEVICES`].
pub fn place(index: usize) -> Option<Bdf> {
    (index < MAX_PCI_DEVICES).then(|| Bdf {
        bus: 0,
        device: index as u8 + 1,
        function: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn models_round_trip_by_name() {
        for m in PciModel::ALL {
            assert_eq!(PciModel::from_name(m.name()), Some(m));
        }
        assert_eq!(PciModel::from_name("e1000"), None);
        assert!(PciModel::VirtioBlk.needs_file() && !PciModel::VirtioNet.needs_file());
    }

    #[test]
    fn placement_fills_root_bus_slots_from_one() {
        let first = place(0).unwrap();
        assert_eq!(first.to_string(), "00:01.0");
        assert_eq!(first.rid(), 0x08);
        let last = place(MAX_PCI_DEVICES - 1).unwrap();
        assert_eq!((last.to_string(), last.rid()), ("00:1f.0".into(), 0xf8));
        assert_eq!(place(MAX_PCI_DEVICES), None);
    }
}
