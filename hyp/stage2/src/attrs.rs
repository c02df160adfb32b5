//! Abstract memory attributes and the ONE place where they become descriptor bits.
//!
//! Callers speak [`Attrs`] (read/write/execute + [`MemType`]); [`encode`] turns them into the
//! lower and upper attribute bits of a block or page descriptor for a [`Regime`] and rejects
//! combinations the regime cannot or must not express (KVM `stage2_set_prot_attr`,
//! Hafnium `arch_mm_mode_to_stage2_attrs`). [`decode`] is its inverse.
//!
//! Descriptor layouts (Arm ARM D8.3 "Translation table descriptor formats"):
//! - Stage 1 (EL2, EL1): AttrIndx\[4:2\] (MAIR index), AP\[7:6\], SH\[9:8\], AF\[10\], nG\[11\],
//!   PXN\[53\], UXN/XN\[54\]. In the EL2 regime (one privilege level, E2H = 0) AP\[1\] (bit 6) is
//!   RES1 and bit 54 is XN (D8.4.1.2.1); Linux sets it too (`PTE_HYP` = `PTE_USER`).
//! - Stage 2: MemAttr\[5:2\], S2AP\[7:6\], SH\[9:8\], AF\[10\], XN\[54:53\] (D8.5.5). MemAttr
//!   0b1111 is Normal inner+outer write-back, 0b0001 Device-nGnRE (without FEAT_FWB).

use crate::geometry::{Regime, ATTR_IDX_DEVICE, ATTR_IDX_NORMAL};
use core::fmt;

/// Valid bit of every descriptor.
pub const DESC_VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3) when set with `DESC_VALID`; block when clear.
pub const DESC_TABLE_OR_PAGE: u64 = 1 << 1;
/// The type bits \[1:0\] of a descriptor.
pub const DESC_TYPE_MASK: u64 = DESC_VALID | DESC_TABLE_OR_PAGE;
/// Type bits of a table descriptor (levels 0-2).
pub const DESC_TABLE: u64 = DESC_VALID | DESC_TABLE_OR_PAGE;
/// Type bits of a page descriptor (level 3).
pub const DESC_PAGE: u64 = DESC_VALID | DESC_TABLE_OR_PAGE;
/// Type bits of a block descriptor (levels 0-2).
pub const DESC_BLOCK: u64 = DESC_VALID;
/// Access flag (AF), bit 10: set on every mapping we make (no access-flag faults).
pub const DESC_AF: u64 = 1 << 10;
/// One past the largest output address: 48 bits (no FEAT_LPA/LPA2, so no 52-bit outputs).
pub const OUTPUT_LIMIT: u64 = 1 << 48;
/// Output address bits \[47:12\] (narrowed per granule and level by the walker).
pub const DESC_OA_MASK: u64 = (OUTPUT_LIMIT - 1) & !0xfff;
/// Attribute bits this module owns: everything outside the address and the type bits.
pub const DESC_ATTR_MASK: u64 = !(DESC_OA_MASK | DESC_TYPE_MASK);

const SH_INNER: u64 = 0b11 << 8;
const S1_AP_RO: u64 = 1 << 7; // AP[2]
const S1_AP_EL0_OR_RES1: u64 = 1 << 6; // AP[1]
const S1_PXN: u64 = 1 << 53;
const S1_XN: u64 = 1 << 54; // UXN at EL1&0, XN at EL2
const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
/// With `HCR_EL2.FWB` set (FEAT_S2FWB), MemAttr 0b0110 forces Normal Write-Back whatever
/// stage 1 says (Arm ARM D8.5.5; KVM `MT_S2_FWB_NORMAL`); Device-nGnRE stays 0b0001.
const S2_FWB_MEMATTR_NORMAL_WB: u64 = 0b0110 << 2;
const S2_AP_R: u64 = 1 << 6;
const S2_AP_W: u64 = 1 << 7;
/// Stage-2 XN\[1\] (bit 54): not executable at EL1 or EL0.
pub const S2_XN: u64 = 1 << 54;

/// The memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Normal memory, inner and outer write-back, inner shareable.
    Normal,
    /// Device-nGnRE memory (MMIO).
    Device,
}

/// Abstract attributes of a mapping: permissions and memory type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable (at the regime's privileged level; at stage 2, by the guest).
    pub exec: bool,
    /// Memory type.
    pub mem: MemType,
}

impl Attrs {
    /// Text: normal memory, read + execute.
    pub const fn code() -> Attrs {
        Attrs::new(true, false, true, MemType::Normal)
    }
    /// Read-only data: normal memory, read only, never executable.
    pub const fn rodata() -> Attrs {
        Attrs::new(true, false, false, MemType::Normal)
    }
    /// Data, BSS, stacks, heap: normal memory, read + write, never executable.
    pub const fn data() -> Attrs {
        Attrs::new(true, true, false, MemType::Normal)
    }
    /// MMIO: Device-nGnRE, read + write, never executable.
    pub const fn device() -> Attrs {
        Attrs::new(true, true, false, MemType::Device)
    }
    /// Guest RAM at stage 2: normal memory, read + write + execute.
    pub const fn ram() -> Attrs {
        Attrs::new(true, true, true, MemType::Normal)
    }
    /// Any combination (checked by [`encode`]).
    pub const fn new(read: bool, write: bool, exec: bool, mem: MemType) -> Attrs {
        Attrs {
            read,
            write,
            exec,
            mem,
        }
    }
    /// The same attributes without write permission (e.g. for dirty tracking).
    pub const fn read_only(self) -> Attrs {
        Attrs {
            write: false,
            ..self
        }
    }
}

impl fmt::Display for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.read { 'r' } else { '-' };
        let w = if self.write { 'w' } else { '-' };
        let x = if self.exec { 'x' } else { '-' };
        let m = match self.mem {
            MemType::Normal => "normal",
            MemType::Device => "device",
        };
        write!(f, "{r}{w}{x} {m}")
    }
}

/// A combination of attributes a regime cannot or must not express.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrError {
    /// Writable and executable in the EL2 regime: hyp enforces W^X for itself.
    WriteExecEl2(Attrs),
    /// Executable device memory (speculative instruction fetch from MMIO).
    ExecDevice(Attrs),
    /// A mapping without read permission: stage 1 cannot express it; unmap instead.
    NoRead(Attrs),
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrError::WriteExecEl2(a) => write!(
                f,
                "attributes {a}: writable and executable violates hyp's W^X; map code read-only"
            ),
            AttrError::ExecDevice(a) => write!(
                f,
                "attributes {a}: device memory cannot be executable; drop exec"
            ),
            AttrError::NoRead(a) => write!(
                f,
                "attributes {a}: mappings must be readable; unmap the range instead"
            ),
        }
    }
}

/// Checks `attrs` for `regime` without encoding them.
pub fn check(regime: Regime, attrs: Attrs) -> Result<(), AttrError> {
    encode(regime, attrs).map(|_| ())
}

/// Turns `attrs` into the attribute bits of a block/page descriptor for `regime` (AF set,
/// valid and type bits and output address not included). Stage 2 without FEAT_S2FWB.
pub fn encode(regime: Regime, attrs: Attrs) -> Result<u64, AttrError> {
    encode_with(regime, false, attrs)
}

/// [`encode`], with `fwb` saying whether `HCR_EL2.FWB` is set (only stage 2 differs: Normal
/// memory is then MemAttr 0b0110, forced write-back, and needs no clean to PoC).
pub fn encode_with(regime: Regime, fwb: bool, attrs: Attrs) -> Result<u64, AttrError> {
    if !attrs.read {
        return Err(AttrError::NoRead(attrs));
    }
    if attrs.exec && attrs.mem == MemType::Device {
        return Err(AttrError::ExecDevice(attrs));
    }
    let mut bits = DESC_AF | SH_INNER;
    match regime {
        Regime::Stage2 => {
            bits |= match attrs.mem {
                MemType::Normal if fwb => S2_FWB_MEMATTR_NORMAL_WB,
                MemType::Normal => S2_MEMATTR_NORMAL_WB,
                MemType::Device => S2_MEMATTR_DEVICE_NGNRE,
            };
            bits |= S2_AP_R;
            if attrs.write {
                bits |= S2_AP_W;
            }
            if !attrs.exec {
                bits |= S2_XN;
            }
        }
        Regime::El2 => {
            if attrs.write && attrs.exec {
                return Err(AttrError::WriteExecEl2(attrs));
            }
            bits |= attr_index(attrs.mem) << 2;
            bits |= S1_AP_EL0_OR_RES1; // RES1 in the EL2 regime
            if !attrs.write {
                bits |= S1_AP_RO;
            }
            if !attrs.exec {
                bits |= S1_XN;
            }
        }
        Regime::El1 => {
            bits |= attr_index(attrs.mem) << 2;
            // EL1-only access (AP[1] = 0); never executable at EL0 (UXN).
            bits |= S1_XN;
            if !attrs.write {
                bits |= S1_AP_RO;
            }
            if !attrs.exec {
                bits |= S1_PXN;
            }
        }
    }
    Ok(bits)
}

const fn attr_index(mem: MemType) -> u64 {
    match mem {
        MemType::Normal => ATTR_IDX_NORMAL,
        MemType::Device => ATTR_IDX_DEVICE,
    }
}

/// Reads the abstract attributes back from a block/page descriptor of `regime` (either
/// stage-2 encoding: MemAttr\[2\] set means Normal with and without FEAT_S2FWB).
pub fn decode(regime: Regime, desc: u64) -> Attrs {
    match regime {
        Regime::Stage2 => Attrs {
            read: desc & S2_AP_R != 0,
            write: desc & S2_AP_W != 0,
            exec: desc & S2_XN == 0,
            mem: if (desc >> 2) & 0b0100 != 0 {
                MemType::Normal
            } else {
                MemType::Device
            },
        },
        Regime::El2 | Regime::El1 => {
            let exec_bit = if regime == Regime::El2 { S1_XN } else { S1_PXN };
            Attrs {
                read: true,
                write: desc & S1_AP_RO == 0,
                exec: desc & exec_bit == 0,
                mem: if (desc >> 2) & 0b111 == ATTR_IDX_NORMAL {
                    MemType::Normal
                } else {
                    MemType::Device
                },
            }
        }
    }
}

/// Whether replacing a leaf's attributes `old` by `new` (same output address and size) may
/// skip break-before-make: only permission changes may (Arm ARM D8.16.1; a change of memory
/// type or shareability needs BBM).
pub const fn attrs_change_needs_bbm(old: u64, new: u64) -> bool {
    const NEEDS: u64 = (0b1111 << 2) | (0b11 << 8);
    (old ^ new) & NEEDS != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const REGIMES: [Regime; 3] = [Regime::Stage2, Regime::El2, Regime::El1];

    #[test]
    fn round_trip_every_valid_combination() {
        for regime in REGIMES {
            for bits in 0..16u8 {
                let a = Attrs::new(
                    bits & 1 != 0,
                    bits & 2 != 0,
                    bits & 4 != 0,
                    if bits & 8 != 0 {
                        MemType::Device
                    } else {
                        MemType::Normal
                    },
                );
                match encode(regime, a) {
                    Ok(d) => {
                        assert_eq!(decode(regime, d), a, "{regime} {a}");
                        assert_eq!(d & DESC_AF, DESC_AF);
                        assert_eq!(d & (DESC_OA_MASK | 3), 0);
                    }
                    Err(e) => assert!(
                        !a.read
                            || (a.exec && a.mem == MemType::Device)
                            || (regime == Regime::El2 && a.write && a.exec),
                        "{regime} {a}: {e}"
                    ),
                }
            }
        }
    }

    #[test]
    fn invalid_combinations_are_refused() {
        let e = encode(Regime::El2, Attrs::ram()).unwrap_err();
        assert!(e.to_string().contains("W^X"), "{e}");
        assert!(encode(Regime::Stage2, Attrs::ram()).is_ok());
        let dx = Attrs::new(true, false, true, MemType::Device);
        for r in REGIMES {
            assert_eq!(encode(r, dx), Err(AttrError::ExecDevice(dx)));
        }
        let wo = Attrs::new(false, true, false, MemType::Normal);
        assert_eq!(encode(Regime::Stage2, wo), Err(AttrError::NoRead(wo)));
    }

    #[test]
    fn stage2_fwb_bits() {
        let ram = encode_with(Regime::Stage2, true, Attrs::ram()).unwrap();
        assert_eq!((ram >> 2) & 0b1111, 0b0110);
        assert_eq!(decode(Regime::Stage2, ram), Attrs::ram());
        let dev = encode_with(Regime::Stage2, true, Attrs::device()).unwrap();
        assert_eq!(dev, encode(Regime::Stage2, Attrs::device()).unwrap());
        assert_eq!(decode(Regime::Stage2, dev), Attrs::device());
        // Stage 1 ignores FWB.
        assert_eq!(
            encode_with(Regime::El2, true, Attrs::code()),
            encode(Regime::El2, Attrs::code())
        );
    }

    #[test]
    fn stage2_bits() {
        // Normal RWX: MemAttr 0b1111, S2AP 0b11, SH inner, AF, XN clear.
        assert_eq!(encode(Regime::Stage2, Attrs::ram()).unwrap(), 0x7fc);
        // Device RW: MemAttr 0b0001, S2AP 0b11, SH inner, AF, XN[1].
        assert_eq!(
            encode(Regime::Stage2, Attrs::device()).unwrap(),
            (1 << 54) | 0x7c4
        );
        // EL2 code: AttrIndx 1, AP[2:1] = 0b11 (RO, RES1), SH inner, AF, XN clear.
        assert_eq!(encode(Regime::El2, Attrs::code()).unwrap(), 0x7c4);
        assert_eq!(
            encode(Regime::El2, Attrs::data()).unwrap(),
            (1 << 54) | 0x744
        );
        assert!(attrs_change_needs_bbm(
            encode(Regime::Stage2, Attrs::ram()).unwrap(),
            encode(Regime::Stage2, Attrs::device()).unwrap()
        ));
        assert!(!attrs_change_needs_bbm(
            encode(Regime::Stage2, Attrs::ram()).unwrap(),
            encode(Regime::Stage2, Attrs::ram().read_only()).unwrap()
        ));
    }
}
