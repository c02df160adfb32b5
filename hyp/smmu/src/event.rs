//! Event records (IHI 0070 §7.3): 32 bytes, type in bits \[7:0\], StreamID in \[63:32\].

use core::fmt;

use platform::pci::Bdf;

/// The event types hyp names (IHI 0070 §7.3, Table 7-3). Others print as their number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// 0x01 `F_UUT`: unsupported upstream transaction.
    Uut,
    /// 0x02 `C_BAD_STREAMID`: the StreamID is beyond the stream table.
    BadStreamId,
    /// 0x03 `F_STE_FETCH`: the STE could not be read.
    SteFetch,
    /// 0x04 `C_BAD_STE`: the STE is invalid or malformed.
    BadSte,
    /// 0x06 `F_STREAM_DISABLED`.
    StreamDisabled,
    /// 0x07 `F_TRANSL_FORBIDDEN`.
    TranslForbidden,
    /// 0x0b `F_WALK_EABT`: an external abort walking the tables.
    WalkEabt,
    /// 0x10 `F_TRANSLATION`: no mapping.
    Translation,
    /// 0x11 `F_ADDR_SIZE`: an address beyond the configured size.
    AddrSize,
    /// 0x12 `F_ACCESS`: access flag fault.
    Access,
    /// 0x13 `F_PERMISSION`: the mapping forbids the access.
    Permission,
    /// 0x20 `F_TLB_CONFLICT`.
    TlbConflict,
    /// 0x21 `F_CFG_CONFLICT`.
    CfgConflict,
    /// Any other type.
    Other(u8),
}

impl EventType {
    /// From the record's type field.
    pub const fn from_code(code: u8) -> EventType {
        match code {
            0x01 => EventType::Uut,
            0x02 => EventType::BadStreamId,
            0x03 => EventType::SteFetch,
            0x04 => EventType::BadSte,
            0x06 => EventType::StreamDisabled,
            0x07 => EventType::TranslForbidden,
            0x0b => EventType::WalkEabt,
            0x10 => EventType::Translation,
            0x11 => EventType::AddrSize,
            0x12 => EventType::Access,
            0x13 => EventType::Permission,
            0x20 => EventType::TlbConflict,
            0x21 => EventType::CfgConflict,
            c => EventType::Other(c),
        }
    }

    /// Whether the record carries the faulting input address (the translation faults and
    /// `F_UUT`, `F_TRANSL_FORBIDDEN`, `F_WALK_EABT`).
    pub const fn has_address(self) -> bool {
        matches!(
            self,
            EventType::Uut
                | EventType::TranslForbidden
                | EventType::WalkEabt
                | EventType::Translation
                | EventType::AddrSize
                | EventType::Access
                | EventType::Permission
        )
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            EventType::Uut => "F_UUT",
            EventType::BadStreamId => "C_BAD_STREAMID",
            EventType::SteFetch => "F_STE_FETCH",
            EventType::BadSte => "C_BAD_STE",
            EventType::StreamDisabled => "F_STREAM_DISABLED",
            EventType::TranslForbidden => "F_TRANSL_FORBIDDEN",
            EventType::WalkEabt => "F_WALK_EABT",
            EventType::Translation => "F_TRANSLATION",
            EventType::AddrSize => "F_ADDR_SIZE",
            EventType::Access => "F_ACCESS",
            EventType::Permission => "F_PERMISSION",
            EventType::TlbConflict => "F_TLB_CONFLICT",
            EventType::CfgConflict => "F_CFG_CONFLICT",
            EventType::Other(c) => return write!(f, "{c:#04x}"),
        };
        f.write_str(name)
    }
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The type.
    pub kind: EventType,
    /// The StreamID (hyp's PCI functions: the requester ID).
    pub sid: u32,
    /// `InputAddr`: for a stream whose STE bypasses stage 1, as hyp's do, the IPA.
    pub input: u64,
    /// `RnW`: the transaction was a read.
    pub read: bool,
    /// `S2`: the fault was at stage 2.
    pub stage2: bool,
}

/// Word 1: `RnW` (bit 35 of the record).
const W1_RNW: u64 = 1 << 35;
/// Word 1: `S2` (bit 39 of the record).
const W1_S2: u64 = 1 << 39;

impl Event {
    /// Decodes a record.
    pub const fn decode(words: [u64; 4]) -> Event {
        let kind = EventType::from_code(words[0] as u8);
        Event {
            kind,
            sid: (words[0] >> 32) as u32,
            input: if kind.has_address() { words[2] } else { 0 },
            read: words[1] & W1_RNW != 0,
            stage2: words[1] & W1_S2 != 0,
        }
    }
}

/// The stable line's text after `vm <name>: `:
/// `smmu event <type> at IPA <addr> from <bdf>` (architecture.md's SMMU lines).
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "smmu event {} at IPA {:#x} from {}",
            self.kind,
            self.input,
            Bdf::from_rid(self.sid)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn translation_fault_line() {
        // F_TRANSLATION from 00:02.0 (requester ID 0x10), a DMA write to IPA 0x1_0000_0000.
        let e = Event::decode([0x10 | 0x10 << 32, W1_S2, 0x1_0000_0000, 0]);
        assert_eq!(
            e.to_string(),
            "smmu event F_TRANSLATION at IPA 0x100000000 from 00:02.0"
        );
        assert!(e.stage2 && !e.read);
    }

    #[test]
    fn configuration_errors_carry_no_address() {
        let e = Event::decode([0x04 | 0x0208 << 32, 0, 0xdead, 0]);
        assert_eq!(
            e.to_string(),
            "smmu event C_BAD_STE at IPA 0x0 from 02:01.0"
        );
        let o = Event::decode([0x7e, 0, 0, 0]);
        assert_eq!(o.kind, EventType::Other(0x7e));
        assert_eq!(o.to_string(), "smmu event 0x7e at IPA 0x0 from 00:00.0");
    }
}
