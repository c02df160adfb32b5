//! What an SMMU can do, decoded once from `SMMU_IDR0..5`, and the check of a VM's stage-2
//! geometry against it.

use core::fmt;

use stage2::{Geometry, Granule};
use tock_registers::LocalRegisterCopy;

use crate::regs::{IDR0, IDR1, IDR3, IDR5};

/// The SMMU's abilities that decide whether it can walk a VM's stage 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuFeatures {
    /// `IDR0.S2P`: stage-2 translation.
    pub stage2: bool,
    /// `IDR0.TTF` includes AArch64 tables.
    pub aarch64_tables: bool,
    /// `IDR0.VMID16`.
    pub vmid16: bool,
    /// `IDR0.COHACC`: the SMMU's table and queue accesses are coherent with the CPUs' caches.
    pub coherent: bool,
    /// `IDR0.HTTU`: 0 none, 1 access flag, 2 access and dirty flag updates.
    pub httu: u8,
    /// `IDR0.ST_LEVEL` says two-level stream tables work.
    pub two_level_streams: bool,
    /// `IDR1.SIDSIZE`: StreamID bits.
    pub sid_bits: u32,
    /// `IDR1.CMDQS`: log2 of the command queue's maximum size.
    pub cmdq_log2: u32,
    /// `IDR1.EVENTQS`: log2 of the event queue's maximum size.
    pub eventq_log2: u32,
    /// `IDR3.FWB`: `STE.S2FWB` exists.
    pub fwb: bool,
    /// `IDR3.RIL`: range invalidation.
    pub range_invalidation: bool,
    /// `IDR5.OAS` in bits (52 capped to 48: hyp's tables have no LPA formats).
    pub oas_bits: u32,
    /// `IDR5.GRAN4K`, `GRAN16K`, `GRAN64K`, in [`Granule::ALL`] order; a granule hidden with
    /// `hyp.hide-smmu-granules=` reads as absent.
    granules: [bool; 3],
    /// Which granules were hidden (for the refusal's wording).
    hidden: [bool; 3],
}

/// The `IDR5` field that names each granule, in [`Granule::ALL`] order.
const GRAN_FIELDS: [&str; 3] = ["SMMU_IDR5.GRAN4K", "SMMU_IDR5.GRAN16K", "SMMU_IDR5.GRAN64K"];

fn index(granule: Granule) -> usize {
    match granule {
        Granule::K4 => 0,
        Granule::K16 => 1,
        Granule::K64 => 2,
    }
}

/// The SMMUs `guest-loader check --smmu` knows: QEMU 10.0.2's `arm-smmuv3` on `-M
/// virt,iommu=smmuv3` (`SMMU_IDR0..5` as hyp read them: stage 1 and 2, AArch64 tables,
/// coherent, 16-bit VMIDs, 16 StreamID bits, RIL, no FWB, 4K/16K/64K, OAS 44 bits).
pub const PROFILES: [&str; 1] = ["qemu"];

impl SmmuFeatures {
    /// A named SMMU (see [`PROFILES`]).
    pub fn profile(name: &str) -> Option<SmmuFeatures> {
        match name {
            "qemu" => Some(SmmuFeatures::from_idr([
                0x0d44_101b,
                0x0273_0010,
                0,
                0x1414,
                0,
                0x74,
            ])),
            _ => None,
        }
    }

    /// Decodes `SMMU_IDR0..5` (IHI 0070 §6.3.1-§6.3.6).
    pub fn from_idr(idr: [u32; 6]) -> SmmuFeatures {
        let idr0 = LocalRegisterCopy::<u32, IDR0::Register>::new(idr[0]);
        let idr1 = LocalRegisterCopy::<u32, IDR1::Register>::new(idr[1]);
        let idr3 = LocalRegisterCopy::<u32, IDR3::Register>::new(idr[3]);
        let idr5 = LocalRegisterCopy::<u32, IDR5::Register>::new(idr[5]);
        let oas_bits = match idr5.read(IDR5::OAS) {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            // 5 is 48 bits; 6 (52) is used as 48: no LPA descriptors. 7 is reserved: the
            // smallest size is the safe reading.
            5 | 6 => 48,
            _ => 32,
        };
        SmmuFeatures {
            stage2: idr0.is_set(IDR0::S2P),
            aarch64_tables: idr0.read(IDR0::TTF) & 0b10 != 0,
            vmid16: idr0.is_set(IDR0::VMID16),
            coherent: idr0.is_set(IDR0::COHACC),
            httu: idr0.read(IDR0::HTTU) as u8,
            two_level_streams: idr0.read(IDR0::ST_LEVEL) == 1,
            sid_bits: idr1.read(IDR1::SIDSIZE),
            cmdq_log2: idr1.read(IDR1::CMDQS),
            eventq_log2: idr1.read(IDR1::EVENTQS),
            fwb: idr3.is_set(IDR3::FWB),
            range_invalidation: idr3.is_set(IDR3::RIL),
            oas_bits,
            granules: [
                idr5.is_set(IDR5::GRAN4K),
                idr5.is_set(IDR5::GRAN16K),
                idr5.is_set(IDR5::GRAN64K),
            ],
            hidden: [false; 3],
        }
    }

    /// Treats `granule` as absent (`hyp.hide-smmu-granules=`): rehearses an SMMU that cannot
    /// walk it, e.g. one built for 16K-only hosts.
    pub fn hide(&mut self, granule: Granule) {
        let i = index(granule);
        self.hidden[i] = self.granules[i];
        self.granules[i] = false;
    }

    /// Whether the SMMU walks stage-2 tables of `granule`.
    pub fn supports(&self, granule: Granule) -> bool {
        self.granules[index(granule)]
    }

    /// The largest stage-2 input size the SMMU takes: its IAS, which for an SMMU without
    /// AArch32 tables is its OAS (IHI 0070 §3.4).
    pub fn ias_bits(&self) -> u32 {
        self.oas_bits
    }

    /// Checks that the SMMU can walk `geometry`'s tables as they are, for a VM whose tables
    /// and RAM lie below `2^pa_bits`. Every refusal names the register field that refused.
    pub fn check(&self, geometry: &Geometry, pa_bits: u32) -> Result<(), Refusal> {
        if !self.stage2 {
            return Err(Refusal::NoStage2);
        }
        if !self.aarch64_tables {
            return Err(Refusal::NoAarch64Tables);
        }
        let granule = geometry.granule();
        if !self.supports(granule) {
            return Err(Refusal::Granule {
                granule,
                field: GRAN_FIELDS[index(granule)],
                hidden: self.hidden[index(granule)],
            });
        }
        if geometry.input_bits() > self.ias_bits() {
            return Err(Refusal::InputSize {
                ipa_bits: geometry.input_bits(),
                oas_bits: self.oas_bits,
            });
        }
        if pa_bits > self.oas_bits {
            return Err(Refusal::OutputSize {
                pa_bits,
                oas_bits: self.oas_bits,
            });
        }
        if geometry.fwb() && !self.fwb {
            return Err(Refusal::Fwb);
        }
        Ok(())
    }

    /// The first granule of `candidates` the SMMU walks, in order (the VM's choice, then its
    /// `fallback` list).
    pub fn pick(&self, candidates: &[Granule]) -> Option<Granule> {
        candidates.iter().copied().find(|&g| self.supports(g))
    }
}

/// Why an SMMU cannot walk a VM's stage 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `SMMU_IDR0.S2P` = 0.
    NoStage2,
    /// `SMMU_IDR0.TTF` has no AArch64 format.
    NoAarch64Tables,
    /// The granule's `SMMU_IDR5.GRAN*` bit is 0 (or was hidden).
    Granule {
        /// The VM's stage-2 granule.
        granule: Granule,
        /// The field, e.g. `SMMU_IDR5.GRAN16K`.
        field: &'static str,
        /// Hidden with `hyp.hide-smmu-granules=` rather than absent.
        hidden: bool,
    },
    /// The VM's IPA size exceeds what the SMMU translates.
    InputSize {
        /// The VM's IPA bits.
        ipa_bits: u32,
        /// `SMMU_IDR5.OAS` in bits.
        oas_bits: u32,
    },
    /// The VM's RAM or tables lie above the SMMU's output size.
    OutputSize {
        /// The physical address bits the VM's memory needs.
        pa_bits: u32,
        /// `SMMU_IDR5.OAS` in bits.
        oas_bits: u32,
    },
    /// The tables use the FEAT_S2FWB attribute encoding, which the SMMU cannot read.
    Fwb,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::NoStage2 => f.write_str("the SMMU has no stage 2 (SMMU_IDR0.S2P = 0)"),
            Refusal::NoAarch64Tables => {
                f.write_str("the SMMU walks no AArch64 tables (SMMU_IDR0.TTF)")
            }
            Refusal::Granule {
                granule,
                field,
                hidden,
            } => write!(
                f,
                "the SMMU cannot walk a {} stage 2 ({field} = 0{})",
                granule.label(),
                if hidden {
                    ", hidden by hyp.hide-smmu-granules"
                } else {
                    ""
                }
            ),
            Refusal::InputSize { ipa_bits, oas_bits } => write!(
                f,
                "ipa_bits {ipa_bits} exceeds the SMMU's input size ({oas_bits} bits, SMMU_IDR5.OAS)"
            ),
            Refusal::OutputSize { pa_bits, oas_bits } => write!(
                f,
                "the VM's memory needs {pa_bits} physical address bits; the SMMU outputs {oas_bits} (SMMU_IDR5.OAS)"
            ),
            Refusal::Fwb => f.write_str(
                "the stage-2 tables use the FEAT_S2FWB encoding and the SMMU lacks STE.S2FWB (SMMU_IDR3.FWB = 0)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stage2::CpuFeatures;
    use std::string::ToString;

    /// QEMU 10's `arm-smmuv3` with `stage=2` (hw/arm/smmuv3.c `smmuv3_init_id_regs`, read
    /// back through the registers): S2P, AArch64 tables, COHACC, VMID16, two-level streams,
    /// SIDSIZE 16, RIL, 4K/16K/64K, OAS 44.
    pub(crate) const QEMU_STAGE2: [u32; 6] = [
        (1 << 27) | (1 << 18) | (1 << 4) | (0b10 << 2) | 1,
        (8 << 21) | (8 << 16) | 16,
        0,
        1 << 10,
        0,
        (1 << 6) | (1 << 5) | (1 << 4) | 4,
    ];

    #[test]
    fn qemu_profile_is_what_hyp_read() {
        let q = SmmuFeatures::profile("qemu").unwrap();
        assert!(q.stage2 && q.aarch64_tables && q.coherent && q.vmid16 && !q.fwb);
        assert_eq!((q.oas_bits, q.sid_bits), (44, 16));
        assert!(Granule::ALL.iter().all(|&g| q.supports(g)));
        assert_eq!(SmmuFeatures::profile("none"), None);
    }

    #[test]
    fn decodes_every_field_hyp_reads() {
        let f = SmmuFeatures::from_idr(QEMU_STAGE2);
        assert!(f.stage2 && f.aarch64_tables && f.vmid16 && f.coherent && f.two_level_streams);
        assert_eq!((f.sid_bits, f.cmdq_log2, f.eventq_log2), (16, 8, 8));
        assert!(f.range_invalidation && !f.fwb);
        assert_eq!((f.oas_bits, f.httu), (44, 0));
        assert!(Granule::ALL.iter().all(|&g| f.supports(g)));
        let none = SmmuFeatures::from_idr([0; 6]);
        assert!(!none.stage2 && !none.aarch64_tables && none.oas_bits == 32);
        assert!(Granule::ALL.iter().all(|&g| !none.supports(g)));
    }

    #[test]
    fn oas_encodings() {
        let bits: [u32; 8] = [32, 36, 40, 42, 44, 48, 48, 32];
        for (enc, want) in bits.iter().enumerate() {
            let mut idr = QEMU_STAGE2;
            idr[5] = (idr[5] & !7) | enc as u32;
            assert_eq!(SmmuFeatures::from_idr(idr).oas_bits, *want, "OAS {enc}");
        }
    }

    fn geometry(g: Granule, ipa: u32) -> Geometry {
        Geometry::stage2(g, ipa, &CpuFeatures::profile("max").unwrap()).unwrap()
    }

    #[test]
    fn hidden_granule_is_refused_naming_its_field() {
        let mut f = SmmuFeatures::from_idr(QEMU_STAGE2);
        f.hide(Granule::K16);
        let err = f.check(&geometry(Granule::K16, 40), 40).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the SMMU cannot walk a 16K stage 2 (SMMU_IDR5.GRAN16K = 0, hidden by hyp.hide-smmu-granules)"
        );
        assert!(f.check(&geometry(Granule::K4, 40), 40).is_ok());
        assert_eq!(
            f.pick(&[Granule::K16, Granule::K64, Granule::K4]),
            Some(Granule::K64)
        );
        assert_eq!(f.pick(&[Granule::K16]), None);
    }

    #[test]
    fn sizes_and_capabilities_are_checked() {
        let f = SmmuFeatures::from_idr(QEMU_STAGE2);
        assert!(f.check(&geometry(Granule::K64, 44), 44).is_ok());
        assert_eq!(
            f.check(&geometry(Granule::K64, 48), 40),
            Err(Refusal::InputSize {
                ipa_bits: 48,
                oas_bits: 44
            })
        );
        assert_eq!(
            f.check(&geometry(Granule::K4, 40), 48),
            Err(Refusal::OutputSize {
                pa_bits: 48,
                oas_bits: 44
            })
        );
        let mut idr = QEMU_STAGE2;
        idr[0] &= !1;
        let no_s2 = SmmuFeatures::from_idr(idr);
        assert_eq!(
            no_s2.check(&geometry(Granule::K4, 40), 40),
            Err(Refusal::NoStage2)
        );
        idr = QEMU_STAGE2;
        idr[5] &= !(1 << 4);
        let err = SmmuFeatures::from_idr(idr)
            .check(&geometry(Granule::K4, 40), 40)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the SMMU cannot walk a 4K stage 2 (SMMU_IDR5.GRAN4K = 0)"
        );
    }
}
