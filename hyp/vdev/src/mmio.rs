//! Types shared by the MMIO device models: access sizes and access errors.
//!
//! Every device model takes `(offset, size, value)` where `offset` is relative to the start of
//! its MMIO region, and answers with a value or an [`MmioError`]. The run loop turns an error
//! into an external abort injected into the guest (and a `warn!`); it never stops hyp.

use core::fmt;

/// The size of a single MMIO access, as the data-abort syndrome (`ISS.SAS`) encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessSize {
    /// 8 bits (`SAS` = 0b00).
    B1,
    /// 16 bits (`SAS` = 0b01).
    B2,
    /// 32 bits (`SAS` = 0b10).
    B4,
    /// 64 bits (`SAS` = 0b11).
    B8,
}

impl AccessSize {
    /// The size for `ISS.SAS` (bits \[1:0\] of `sas`; higher bits ignored).
    pub const fn from_sas(sas: u64) -> Self {
        match sas & 3 {
            0 => AccessSize::B1,
            1 => AccessSize::B2,
            2 => AccessSize::B4,
            _ => AccessSize::B8,
        }
    }

    /// The size of an access of `bytes` bytes, if it is 1, 2, 4 or 8.
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            1 => Some(AccessSize::B1),
            2 => Some(AccessSize::B2),
            4 => Some(AccessSize::B4),
            8 => Some(AccessSize::B8),
            _ => None,
        }
    }

    /// The number of bytes accessed.
    pub const fn bytes(self) -> u64 {
        match self {
            AccessSize::B1 => 1,
            AccessSize::B2 => 2,
            AccessSize::B4 => 4,
            AccessSize::B8 => 8,
        }
    }

    /// The number of bits accessed.
    pub const fn bits(self) -> u32 {
        (self.bytes() * 8) as u32
    }

    /// A mask of the low `bits()` bits.
    pub const fn mask(self) -> u64 {
        match self {
            AccessSize::B8 => u64::MAX,
            s => (1u64 << s.bits()) - 1,
        }
    }
}

impl fmt::Display for AccessSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-bit", self.bits())
    }
}

/// Why a device model refused an MMIO access. The run loop injects an external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The register at `offset` does not support accesses of this size.
    BadSize {
        /// Offset of the access inside the device's region.
        offset: u64,
        /// The size used.
        size: AccessSize,
    },
    /// The access is not naturally aligned to its size.
    Unaligned {
        /// Offset of the access inside the device's region.
        offset: u64,
        /// The size used.
        size: AccessSize,
    },
    /// The offset lies outside the device's region.
    OutOfRange {
        /// Offset of the access inside the device's region.
        offset: u64,
        /// The size of the region.
        region: u64,
    },
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MmioError::BadSize { offset, size } => write!(
                f,
                "{size} access at offset {offset:#x} is not supported by this register; \
                 use the register's architected access size"
            ),
            MmioError::Unaligned { offset, size } => write!(
                f,
                "{size} access at offset {offset:#x} is not naturally aligned; \
                 align the address to the access size"
            ),
            MmioError::OutOfRange { offset, region } => write!(
                f,
                "offset {offset:#x} is outside the device's {region:#x}-byte region; \
                 check the guest device tree's reg property"
            ),
        }
    }
}

/// Checks natural alignment of an access; used by every device.
pub(crate) fn check_aligned(offset: u64, size: AccessSize) -> Result<(), MmioError> {
    if !offset.is_multiple_of(size.bytes()) {
        Err(MmioError::Unaligned { offset, size })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for (sas, bytes, mask) in [
            (0, 1, 0xff),
            (1, 2, 0xffff),
            (2, 4, 0xffff_ffff),
            (3, 8, u64::MAX),
        ] {
            let s = AccessSize::from_sas(sas);
            assert_eq!(s.bytes(), bytes);
            assert_eq!(s.mask(), mask);
            assert_eq!(AccessSize::from_bytes(bytes), Some(s));
        }
        assert_eq!(AccessSize::from_bytes(3), None);
        assert_eq!(AccessSize::from_bytes(16), None);
    }

    #[test]
    fn alignment() {
        assert!(check_aligned(0x10, AccessSize::B8).is_ok());
        assert_eq!(
            check_aligned(0x12, AccessSize::B4),
            Err(MmioError::Unaligned {
                offset: 0x12,
                size: AccessSize::B4
            })
        );
        assert!(check_aligned(0x13, AccessSize::B1).is_ok());
    }
}
