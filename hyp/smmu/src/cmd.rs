//! Commands (IHI 0070 §4): 16 bytes each, opcode in bits \[7:0\].

/// The commands hyp issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `CMD_CFGI_STE` (0x03, §4.3.2): the SMMU re-reads one StreamID's STE (`Leaf` = 1: the
    /// STE only, not a level-1 descriptor).
    CfgiSte {
        /// The StreamID.
        sid: u32,
    },
    /// `CMD_CFGI_ALL` (0x04, §4.3.4): every cached configuration (`Range` = 31).
    CfgiAll,
    /// `CMD_TLBI_S12_VMALL` (0x28, §4.4.6): every TLB entry of one VMID.
    TlbiS12Vmall {
        /// The VM's VMID.
        vmid: u16,
    },
    /// `CMD_TLBI_S2_IPA` (0x2a, §4.4.7): stage-2 entries for one IPA. `leaf` = false also
    /// drops walk-cache entries of the tables above it (needed when tables are freed).
    TlbiS2Ipa {
        /// The VM's VMID.
        vmid: u16,
        /// The IPA (bits \[51:12\] are sent; the granule's page is invalidated).
        ipa: u64,
        /// Only the last level.
        leaf: bool,
    },
    /// `CMD_TLBI_NSNH_ALL` (0x30, §4.4.9): every non-secure, non-hyp entry of every VMID.
    TlbiNsnhAll,
    /// `CMD_SYNC` (0x46, §4.7.3) with `CS` = `SIG_NONE`: completes when every earlier command
    /// has completed; hyp polls `CMDQ_CONS` for it.
    Sync,
}

/// Opcodes.
mod op {
    pub const CFGI_STE: u64 = 0x03;
    pub const CFGI_ALL: u64 = 0x04;
    pub const TLBI_S12_VMALL: u64 = 0x28;
    pub const TLBI_S2_IPA: u64 = 0x2a;
    pub const TLBI_NSNH_ALL: u64 = 0x30;
    pub const SYNC: u64 = 0x46;
}

/// Word 0: `StreamID` \[63:32\] (`CFGI_STE`).
const W0_SID_SHIFT: u32 = 32;
/// Word 0: `VMID` \[47:32\] (`TLBI_S12_VMALL`, `TLBI_S2_IPA`).
const W0_VMID_SHIFT: u32 = 32;
/// Word 1: `Leaf` \[0\].
const W1_LEAF: u64 = 1;
/// Word 1: `Range` \[4:0\] of `CFGI_ALL`: 31 = every StreamID.
const W1_RANGE_ALL: u64 = 31;
/// Word 1: the IPA's bits \[51:12\] in place.
const W1_IPA_MASK: u64 = ((1 << 52) - 1) & !0xfff;

impl Command {
    /// The command's two 64-bit words, as the SMMU reads them from the queue.
    pub const fn encode(self) -> [u64; 2] {
        match self {
            Command::CfgiSte { sid } => [op::CFGI_STE | (sid as u64) << W0_SID_SHIFT, W1_LEAF],
            Command::CfgiAll => [op::CFGI_ALL, W1_RANGE_ALL],
            Command::TlbiS12Vmall { vmid } => {
                [op::TLBI_S12_VMALL | (vmid as u64) << W0_VMID_SHIFT, 0]
            }
            Command::TlbiS2Ipa { vmid, ipa, leaf } => [
                op::TLBI_S2_IPA | (vmid as u64) << W0_VMID_SHIFT,
                (ipa & W1_IPA_MASK) | if leaf { W1_LEAF } else { 0 },
            ],
            Command::TlbiNsnhAll => [op::TLBI_NSNH_ALL, 0],
            Command::Sync => [op::SYNC, 0],
        }
    }

    /// Reads a command back (the host model of the SMMU's command processor). `None` for an
    /// opcode hyp never sends, which the model reports as `CERROR_ILL`.
    pub const fn decode(words: [u64; 2]) -> Option<Command> {
        let [w0, w1] = words;
        Some(match w0 & 0xff {
            op::CFGI_STE => Command::CfgiSte {
                sid: (w0 >> W0_SID_SHIFT) as u32,
            },
            op::CFGI_ALL => Command::CfgiAll,
            op::TLBI_S12_VMALL => Command::TlbiS12Vmall {
                vmid: (w0 >> W0_VMID_SHIFT) as u16,
            },
            op::TLBI_S2_IPA => Command::TlbiS2Ipa {
                vmid: (w0 >> W0_VMID_SHIFT) as u16,
                ipa: w1 & W1_IPA_MASK,
                leaf: w1 & W1_LEAF != 0,
            },
            op::TLBI_NSNH_ALL => Command::TlbiNsnhAll,
            op::SYNC => Command::Sync,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden words from IHI 0070 §4 (opcode, field positions).
    #[test]
    fn encodings() {
        assert_eq!(
            Command::CfgiSte { sid: 0x0010 }.encode(),
            [0x0000_0010_0000_0003, 1]
        );
        assert_eq!(Command::CfgiAll.encode(), [0x04, 31]);
        assert_eq!(
            Command::TlbiS12Vmall { vmid: 0x1234 }.encode(),
            [0x0000_1234_0000_0028, 0]
        );
        assert_eq!(
            Command::TlbiS2Ipa {
                vmid: 5,
                ipa: 0x8_4567_8abc,
                leaf: false
            }
            .encode(),
            [0x0000_0005_0000_002a, 0x8_4567_8000]
        );
        assert_eq!(
            Command::TlbiS2Ipa {
                vmid: 5,
                ipa: 0x4000,
                leaf: true
            }
            .encode()[1],
            0x4001
        );
        assert_eq!(Command::TlbiNsnhAll.encode(), [0x30, 0]);
        assert_eq!(Command::Sync.encode(), [0x46, 0]);
    }

    #[test]
    fn decode_inverts_encode() {
        let cmds = [
            Command::CfgiSte { sid: 0xffff_ffff },
            Command::CfgiAll,
            Command::TlbiS12Vmall { vmid: 0xffff },
            Command::TlbiS2Ipa {
                vmid: 1,
                ipa: 0xf_ffff_ffff_f000,
                leaf: true,
            },
            Command::TlbiNsnhAll,
            Command::Sync,
        ];
        for c in cmds {
            assert_eq!(Command::decode(c.encode()), Some(c));
        }
        assert_eq!(Command::decode([0x01, 0]), None, "CMD_PREFETCH_CONFIG");
    }
}
