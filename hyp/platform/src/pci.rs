//! PCI function addresses.

use core::fmt;

/// A function's place on a PCI bus: bus, device (slot), function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus.
    pub bus: u8,
    /// Device (slot), 0..=31.
    pub device: u8,
    /// Function, 0..=7.
    pub function: u8,
}

impl Bdf {
    /// The requester ID `bus << 8 | device << 3 | function`: the function's StreamID at an
    /// SMMU whose `iommu-map` is the identity (QEMU `virt`), and its ECAM index.
    pub const fn rid(self) -> u32 {
        (self.bus as u32) << 8 | (self.device as u32 & 0x1f) << 3 | (self.function as u32 & 7)
    }

    /// The function with requester ID `rid` (its low 16 bits).
    pub const fn from_rid(rid: u32) -> Bdf {
        Bdf {
            bus: (rid >> 8) as u8,
            device: ((rid >> 3) & 0x1f) as u8,
            function: (rid & 7) as u8,
        }
    }

    /// The offset of its configuration space in an ECAM window (PCIe base spec §7.2.2).
    pub const fn ecam_offset(self) -> u64 {
        (self.rid() as u64) << 12
    }
}

/// `bb:dd.f`, as Linux and QEMU print it.
impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn rid_ecam_and_text() {
        let b = Bdf {
            bus: 2,
            device: 0x1f,
            function: 7,
        };
        assert_eq!((b.rid(), b.ecam_offset()), (0x2ff, 0x2f_f000));
        assert_eq!(Bdf::from_rid(0x2ff), b);
        assert_eq!(b.to_string(), "02:1f.7");
        assert_eq!(Bdf::from_rid(0x8).to_string(), "00:01.0");
    }
}
