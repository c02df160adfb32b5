//! The three arm64 translation granules.

use core::fmt;
use core::str::FromStr;

/// A translation granule (the page size of one translation regime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Granule {
    /// 4 KiB pages, 9 bits resolved per level.
    K4,
    /// 16 KiB pages, 11 bits resolved per level.
    K16,
    /// 64 KiB pages, 13 bits resolved per level.
    K64,
}

impl Granule {
    /// All granules, smallest first (the `auto` preference order).
    pub const ALL: [Granule; 3] = [Granule::K4, Granule::K16, Granule::K64];

    /// log2 of the page size: 12, 14 or 16.
    pub const fn shift(self) -> u32 {
        match self {
            Granule::K4 => 12,
            Granule::K16 => 14,
            Granule::K64 => 16,
        }
    }

    /// The page size in bytes.
    pub const fn size(self) -> u64 {
        1 << self.shift()
    }

    /// Address bits resolved by one level of table: `shift - 3` (8-byte descriptors).
    pub const fn bits_per_level(self) -> u32 {
        self.shift() - 3
    }

    /// Descriptors in one table (one granule of memory).
    pub const fn entries(self) -> usize {
        1 << self.bits_per_level()
    }

    /// The lowest-numbered level at which a block descriptor is allowed without FEAT_LPA/LPA2
    /// (Arm ARM D8.3: 4K blocks at L1 (1G) and L2 (2M); 16K and 64K blocks at L2 only).
    pub const fn min_block_level(self) -> u32 {
        match self {
            Granule::K4 => 1,
            Granule::K16 | Granule::K64 => 2,
        }
    }

    /// The lower-case name used in configs and on command lines: `4k`, `16k`, `64k`.
    pub const fn name(self) -> &'static str {
        match self {
            Granule::K4 => "4k",
            Granule::K16 => "16k",
            Granule::K64 => "64k",
        }
    }

    /// The upper-case label used in the stable output lines: `4K`, `16K`, `64K`.
    pub const fn label(self) -> &'static str {
        match self {
            Granule::K4 => "4K",
            Granule::K16 => "16K",
            Granule::K64 => "64K",
        }
    }

    /// The granule whose page size is `bytes`, if any.
    pub const fn from_size(bytes: u64) -> Option<Granule> {
        match bytes {
            0x1000 => Some(Granule::K4),
            0x4000 => Some(Granule::K16),
            0x1_0000 => Some(Granule::K64),
            _ => None,
        }
    }

    /// A bit for masks of granules (see [`crate::CpuFeatures::hide`]).
    pub const fn bit(self) -> u8 {
        match self {
            Granule::K4 => 1,
            Granule::K16 => 2,
            Granule::K64 => 4,
        }
    }
}

impl fmt::Display for Granule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The error of parsing a granule name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseGranuleError;

impl fmt::Display for ParseGranuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected one of 4k, 16k, 64k")
    }
}

impl FromStr for Granule {
    type Err = ParseGranuleError;

    /// Parses `4k`, `16k`, `64k` (case-insensitive; `4K`, `4096` are accepted too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            x if x.eq_ignore_ascii_case("4k") || x == "4096" => Ok(Granule::K4),
            x if x.eq_ignore_ascii_case("16k") || x == "16384" => Ok(Granule::K16),
            x if x.eq_ignore_ascii_case("64k") || x == "65536" => Ok(Granule::K64),
            _ => Err(ParseGranuleError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_levels() {
        assert_eq!(Granule::K4.size(), 4096);
        assert_eq!(Granule::K16.size(), 16384);
        assert_eq!(Granule::K64.size(), 65536);
        assert_eq!(Granule::K4.entries(), 512);
        assert_eq!(Granule::K16.entries(), 2048);
        assert_eq!(Granule::K64.entries(), 8192);
        for g in Granule::ALL {
            assert_eq!(Granule::from_size(g.size()), Some(g));
            assert_eq!(g.name().parse::<Granule>(), Ok(g));
            assert_eq!(g.label().parse::<Granule>(), Ok(g));
        }
        assert!("8k".parse::<Granule>().is_err());
        assert!("".parse::<Granule>().is_err());
    }
}
