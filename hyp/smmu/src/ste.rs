//! Stream table entries (IHI 0070 §5.2): 64 bytes per StreamID.
//!
//! hyp writes two kinds. An assigned function's STE translates at stage 2 only
//! (`Config` = 0b110) through *its VM's own stage-2 tables*: the `S2T0SZ`, `S2SL0`, `S2IR0`,
//! `S2OR0`, `S2SH0`, `S2TG` and `S2PS` fields sit in STE bits \[178:160\] in exactly the layout of
//! `VTCR_EL2` bits \[18:0\], so they are copied from [`Geometry::vtcr_el2`] — the value the CPU
//! side loads — never computed a second way. Every other StreamID gets an abort STE.

use stage2::{Geometry, Pa};

/// The 64-byte entry as the SMMU reads it (little-endian 64-bit words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ste(pub [u64; 8]);

/// Word 0: `V`, the entry is valid.
const W0_V: u64 = 1;
/// Word 0: `Config` \[3:1\].
const W0_CONFIG_SHIFT: u32 = 1;
/// `Config` = 0b000: abort every transaction (no event).
const CONFIG_ABORT: u64 = 0b000;
/// `Config` = 0b110: stage 1 bypassed, stage 2 translates.
const CONFIG_S2_ONLY: u64 = 0b110;
/// Word 1: `S2FWB` (bit 89 of the STE): stage-2 attributes use the FEAT_S2FWB encoding.
const W1_S2FWB: u64 = 1 << 25;
/// Word 1: `SHCFG` \[109:108\] = 0b01: use the incoming shareability.
const W1_SHCFG_INCOMING: u64 = 0b01 << 44;
/// Word 2: `S2VMID` \[143:128\].
const W2_S2VMID_MASK: u64 = 0xffff;
/// Word 2: the VTCR-shaped block \[178:160\] starts at word bit 32.
const W2_VTCR_SHIFT: u32 = 32;
/// The `VTCR_EL2` bits the block takes: T0SZ, SL0, IRGN0, ORGN0, SH0, TG0, PS (\[18:0\]).
pub const VTCR_BLOCK_MASK: u64 = (1 << 19) - 1;
/// Word 2: `S2AA64` (bit 179): AArch64 stage-2 tables.
const W2_S2AA64: u64 = 1 << 51;
/// Word 2: `S2AFFD` (bit 181): access-flag faults disabled. Left 0: hyp's descriptors always
/// have AF set, so a descriptor without it is a bug the SMMU reports.
#[cfg(test)]
const W2_S2AFFD: u64 = 1 << 53;
/// Word 2: `S2HD`, `S2HA` (bits 183, 184): hardware dirty/access updates. Left 0: the CPU side
/// does not use them either, and the two walkers must agree on the descriptors.
#[cfg(test)]
const W2_S2HD_HA: u64 = 0b11 << 55;
/// Word 2: `S2S` (bit 185): stall on fault. Left 0 (terminate).
#[cfg(test)]
const W2_S2S: u64 = 1 << 57;
/// Word 2: `S2R` (bit 186): record faults in the event queue.
const W2_S2R: u64 = 1 << 58;
/// Word 3: `S2TTB` \[243:196\]: the table's physical address bits \[51:4\].
const W3_S2TTB_MASK: u64 = ((1 << 52) - 1) & !0xf;

impl Ste {
    /// An entry that aborts every transaction of its stream.
    pub const fn abort() -> Ste {
        Ste([W0_V | CONFIG_ABORT << W0_CONFIG_SHIFT, 0, 0, 0, 0, 0, 0, 0])
    }

    /// An entry that translates its stream through a VM's stage 2: `geometry` and `root` are
    /// the VM's (`PageTable::geometry`, `PageTable::root_pa`), `vmid` its VMID, `pa_bits` the
    /// output size (the smaller of the CPU's `PARange` and the SMMU's `OAS`, already checked
    /// with [`crate::SmmuFeatures::check`]). `S2FWB` follows `geometry.fwb()`: the SMMU then
    /// reads the same attribute encoding the CPU does.
    pub fn stage2(geometry: &Geometry, vmid: u16, root: Pa, pa_bits: u32, vmid16: bool) -> Ste {
        let vtcr = geometry.vtcr_el2(pa_bits, vmid16) & VTCR_BLOCK_MASK;
        let fwb = if geometry.fwb() { W1_S2FWB } else { 0 };
        Ste([
            W0_V | CONFIG_S2_ONLY << W0_CONFIG_SHIFT,
            W1_SHCFG_INCOMING | fwb,
            u64::from(vmid) & W2_S2VMID_MASK | vtcr << W2_VTCR_SHIFT | W2_S2AA64 | W2_S2R,
            root.get() & W3_S2TTB_MASK,
            0,
            0,
            0,
            0,
        ])
    }

    /// Whether `V` is set.
    pub const fn valid(&self) -> bool {
        self.0[0] & W0_V != 0
    }

    /// `Config`.
    pub const fn config(&self) -> u64 {
        (self.0[0] >> W0_CONFIG_SHIFT) & 0b111
    }

    /// `S2VMID`.
    pub const fn vmid(&self) -> u16 {
        (self.0[2] & W2_S2VMID_MASK) as u16
    }

    /// The VTCR-shaped block (`S2T0SZ` .. `S2PS`), in `VTCR_EL2` bit positions.
    pub const fn vtcr_block(&self) -> u64 {
        (self.0[2] >> W2_VTCR_SHIFT) & VTCR_BLOCK_MASK
    }

    /// `S2TTB`.
    pub const fn s2ttb(&self) -> u64 {
        self.0[3] & W3_S2TTB_MASK
    }

    /// `S2FWB`.
    pub const fn s2fwb(&self) -> bool {
        self.0[1] & W1_S2FWB != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stage2::{CpuFeatures, Granule, IdRegs};

    fn cpu(fwb: bool) -> CpuFeatures {
        let max = CpuFeatures::profile("max").unwrap().id_regs();
        CpuFeatures::from_id_regs(IdRegs {
            // ID_AA64MMFR2_EL1.FWB [43:40].
            mmfr2: if fwb { 1 << 40 } else { 0 },
            ..max
        })
    }

    fn ste(g: Granule, ipa: u32, pa: u32) -> Ste {
        let geo = Geometry::stage2(g, ipa, &cpu(false)).unwrap();
        Ste::stage2(&geo, 0x2a, Pa::new(0x4123_4000), pa, true)
    }

    /// Golden words, computed by hand from IHI 0070 §5.2 and Arm ARM D19.2.175 (VTCR_EL2):
    /// T0SZ = 64 - ipa; SL0 from the start level; IRGN0 = ORGN0 = 0b01; SH0 = 0b11;
    /// TG 0b00 4K, 0b10 16K, 0b01 64K; PS 0b010 40 bits, 0b100 44 bits.
    #[test]
    fn stage2_entries_match_hand_computed_words() {
        let common = 0x2a | 1 << 51 | 1 << 58;
        // 4K, 40 bits: 3 levels from L1 with 2 concatenated roots (SL0 = 0b01), PS 44.
        let t = ste(Granule::K4, 40, 44);
        assert_eq!(t.0[0], 0b1101);
        assert_eq!(t.0[1], 1 << 44);
        assert_eq!(t.0[2], common | 0x4_3558 << 32);
        assert_eq!(t.0[3], 0x4123_4000);
        assert_eq!(&t.0[4..], &[0; 4]);
        // 16K, 40 bits: 2 levels from L2 with 16 roots (SL0 = 0b01), TG 0b10.
        assert_eq!(ste(Granule::K16, 40, 44).0[2], common | 0x4_b558 << 32);
        // 64K, 40 bits: 2 levels from L2 (SL0 = 0b01), TG 0b01, PS 40.
        assert_eq!(ste(Granule::K64, 40, 40).0[2], common | 0x2_7558 << 32);
        // 4K, 36 bits: 3 levels from L1 with one root (SL0 = 0b01), T0SZ 28.
        assert_eq!(ste(Granule::K4, 36, 44).0[2], common | 0x4_355c << 32);
        // 16K, 36 bits: 2 levels from L2 with one root (SL0 = 0b01), T0SZ 28.
        assert_eq!(ste(Granule::K16, 36, 44).0[2], common | 0x4_b55c << 32);
        // 64K, 44 bits: 2 levels from L2 with 4 concatenated roots (SL0 = 0b01), T0SZ 20.
        assert_eq!(ste(Granule::K64, 44, 44).0[2], common | 0x4_7554 << 32);
    }

    #[test]
    fn fields_come_from_the_cpu_sides_vtcr() {
        for g in Granule::ALL {
            for ipa in [32, 36, 40, 42, 44] {
                for fwb in [false, true] {
                    let geo = Geometry::stage2(g, ipa, &cpu(fwb)).unwrap();
                    let t = Ste::stage2(&geo, 7, Pa::new(0x8000_0000), 44, false);
                    assert_eq!(t.vtcr_block(), geo.vtcr_el2(44, false) & VTCR_BLOCK_MASK);
                    assert_eq!((t.valid(), t.config(), t.vmid()), (true, 0b110, 7));
                    assert_eq!(t.s2ttb(), 0x8000_0000);
                    assert_eq!(t.s2fwb(), fwb, "S2FWB must follow the tables' encoding");
                    let plain = Ste::stage2(&geo.without_fwb(), 7, Pa::new(0x8000_0000), 44, false);
                    assert!(!plain.s2fwb());
                    // Never hardware flag updates, stalls or AF-fault suppression.
                    assert_eq!(t.0[2] & (W2_S2HD_HA | W2_S2S | W2_S2AFFD), 0);
                }
            }
        }
    }

    #[test]
    fn abort_entry_is_valid_and_translates_nothing() {
        let a = Ste::abort();
        assert!(a.valid());
        assert_eq!(a.config(), CONFIG_ABORT);
        assert_eq!(&a.0[1..], &[0; 7]);
    }
}
