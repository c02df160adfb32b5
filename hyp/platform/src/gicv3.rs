//! The GICv3 architecture (IHI 0069) as hyp's crates share it: the register frames and
//! offsets, and the fields of the registers hyp builds or decodes on both sides, the driver of
//! the physical GIC (`hyp/src/gic.rs`) and the model of the virtual one (`vdev::vgic`).
//!
//! Both see the single-security-state view's bit positions for `GICD_CTLR`'s `ARE` and group
//! 1 enable (bits 4 and 1), which are also the non-secure view's `ARE_NS` and `EnableGrp1A`.

/// Bytes of the distributor's frame (`GICD_*`).
pub const GICD_SIZE: u64 = 0x1_0000;
/// Bytes of one redistributor frame (RD_base, SGI_base).
pub const GICR_FRAME: u64 = 0x1_0000;
/// Bytes from one redistributor to the next: the RD_base and SGI_base frames (GICv3 without
/// virtual LPIs, `GICR_TYPER.VLPIS` = 0).
pub const GICR_STRIDE: u64 = 2 * GICR_FRAME;
/// Offset of the SGI_base frame in a redistributor.
pub const SGI_BASE: u64 = GICR_FRAME;
/// INTIDs 1020..=1023 are special (IHI 0069 §2.2.1): an acknowledge returning one of them
/// found nothing pending.
pub const SPECIAL_INTIDS: core::ops::Range<u32> = 1020..1024;

/// Distributor register offsets (IHI 0069 §12.9, Table 12-25).
pub mod gicd {
    /// `GICD_CTLR`.
    pub const CTLR: u64 = 0x0000;
    /// `GICD_TYPER`.
    pub const TYPER: u64 = 0x0004;
    /// `GICD_IIDR`.
    pub const IIDR: u64 = 0x0008;
    /// `GICD_IGROUPR<n>`: one bit per INTID.
    pub const IGROUPR: u64 = 0x0080;
    /// `GICD_ISENABLER<n>`: one bit per INTID.
    pub const ISENABLER: u64 = 0x0100;
    /// `GICD_ICENABLER<n>`: one bit per INTID.
    pub const ICENABLER: u64 = 0x0180;
    /// `GICD_ISPENDR<n>`: one bit per INTID.
    pub const ISPENDR: u64 = 0x0200;
    /// `GICD_ICPENDR<n>`: one bit per INTID.
    pub const ICPENDR: u64 = 0x0280;
    /// `GICD_ISACTIVER<n>`: one bit per INTID.
    pub const ISACTIVER: u64 = 0x0300;
    /// `GICD_ICACTIVER<n>`: one bit per INTID.
    pub const ICACTIVER: u64 = 0x0380;
    /// `GICD_IPRIORITYR<n>`: one byte per INTID.
    pub const IPRIORITYR: u64 = 0x0400;
    /// `GICD_ITARGETSR<n>` (legacy; RES0 with affinity routing).
    pub const ITARGETSR: u64 = 0x0800;
    /// `GICD_ICFGR<n>`: two bits per INTID.
    pub const ICFGR: u64 = 0x0c00;
    /// `GICD_IROUTER<n>`: 64 bits per INTID, from INTID 0 (INTIDs 0-31 reserved).
    pub const IROUTER: u64 = 0x6000;
    /// `GICD_PIDR2`.
    pub const PIDR2: u64 = 0xffe8;
}

/// Redistributor register offsets (IHI 0069 §12.10, §12.11): the RD_base frame, and the SGI_base
/// frame's registers as offsets from the redistributor (`SGI_BASE +` the distributor layout).
pub mod gicr {
    use super::{gicd, SGI_BASE};

    /// `GICR_CTLR`.
    pub const CTLR: u64 = 0x0000;
    /// `GICR_IIDR`.
    pub const IIDR: u64 = 0x0004;
    /// `GICR_TYPER` (64 bits).
    pub const TYPER: u64 = 0x0008;
    /// `GICR_WAKER`.
    pub const WAKER: u64 = 0x0014;
    /// `GICR_PROPBASER`.
    pub const PROPBASER: u64 = 0x0070;
    /// `GICR_PENDBASER`.
    pub const PENDBASER: u64 = 0x0078;
    /// `GICR_PIDR2`.
    pub const PIDR2: u64 = 0xffe8;
    /// `GICR_IGROUPR0` (SGIs and PPIs).
    pub const IGROUPR0: u64 = SGI_BASE + gicd::IGROUPR;
    /// `GICR_ISENABLER0`.
    pub const ISENABLER0: u64 = SGI_BASE + gicd::ISENABLER;
    /// `GICR_ICENABLER0`.
    pub const ICENABLER0: u64 = SGI_BASE + gicd::ICENABLER;
    /// `GICR_IPRIORITYR<n>` (n = 0..=7).
    pub const IPRIORITYR: u64 = SGI_BASE + gicd::IPRIORITYR;
    /// `GICR_ICFGR0` (SGIs, read-only edge).
    pub const ICFGR0: u64 = SGI_BASE + gicd::ICFGR;
    /// `GICR_ICFGR1` (PPIs).
    pub const ICFGR1: u64 = SGI_BASE + gicd::ICFGR + 4;
}

pub use fields::{GICD_CTLR, GICD_TYPER, GICR_TYPER, GICR_WAKER, ICC_IAR1_EL1, ICC_SGI1R_EL1};

/// The register fields. `register_bitfields!` generates helper items (value enums, masks)
/// without documentation; each register and field is documented here.
#[allow(missing_docs)]
mod fields {
    use tock_registers::register_bitfields;

    register_bitfields! {u32,
        /// `GICD_CTLR` (IHI 0069 §12.9.4), the fields hyp uses.
        pub GICD_CTLR [
            /// Register Write Pending.
            RWP OFFSET(31) NUMBITS(1) [],
            /// Disable Security (single security state view).
            DS OFFSET(6) NUMBITS(1) [],
            /// Affinity routing (`ARE_NS` in the non-secure view).
            ARE OFFSET(4) NUMBITS(1) [],
            /// Group 1 interrupts enabled (`EnableGrp1A` in the non-secure view).
            EnableGrp1 OFFSET(1) NUMBITS(1) [],
            /// Group 0 interrupts enabled (single security state view).
            EnableGrp0 OFFSET(0) NUMBITS(1) []
        ],
        /// `GICD_TYPER` (IHI 0069 §12.9.38), the fields hyp uses.
        pub GICD_TYPER [
            /// 1 of N SPI routing is not supported.
            No1N OFFSET(25) NUMBITS(1) [],
            /// INTID bits supported, minus one.
            IDbits OFFSET(19) NUMBITS(5) [],
            /// SPIs: the largest INTID is 32 × (ITLinesNumber + 1) - 1.
            ITLinesNumber OFFSET(0) NUMBITS(5) []
        ],
        /// `GICR_WAKER` (IHI 0069 §12.11.44).
        pub GICR_WAKER [
            /// The redistributor's interface to the CPU is quiescent.
            ChildrenAsleep OFFSET(2) NUMBITS(1) [],
            /// The CPU is asleep: the redistributor does not forward interrupts to it.
            ProcessorSleep OFFSET(1) NUMBITS(1) []
        ]
    }

    register_bitfields! {u64,
        /// `GICR_TYPER` (IHI 0069 §12.11.39), the fields hyp uses.
        pub GICR_TYPER [
            /// The affinity of the CPU this redistributor serves, Aff3.Aff2.Aff1.Aff0.
            Affinity_Value OFFSET(32) NUMBITS(32) [],
            /// A unique number for this redistributor's CPU.
            Processor_Number OFFSET(8) NUMBITS(16) [],
            /// The last redistributor of its region.
            Last OFFSET(4) NUMBITS(1) []
        ],
        /// `ICC_SGI1R_EL1` (IHI 0069 §12.2.23): a group 1 SGI for the current security state,
        /// written by hyp to kick a CPU and trapped from guests.
        pub ICC_SGI1R_EL1 [
            /// Affinity level 3 of the targets.
            Aff3 OFFSET(48) NUMBITS(8) [],
            /// Range selector: the target list names Aff0 = RS × 16 + bit.
            RS OFFSET(44) NUMBITS(4) [],
            /// Interrupt Routing Mode: 1 targets every CPU but the sender.
            IRM OFFSET(40) NUMBITS(1) [],
            /// Affinity level 2 of the targets.
            Aff2 OFFSET(32) NUMBITS(8) [],
            /// The SGI.
            INTID OFFSET(24) NUMBITS(4) [],
            /// Affinity level 1 of the targets.
            Aff1 OFFSET(16) NUMBITS(8) [],
            /// One bit per target CPU's Aff0 (within the range RS selects).
            TargetList OFFSET(0) NUMBITS(16) []
        ],
        /// `ICC_IAR1_EL1` (IHI 0069 §12.2.13) and `ICC_EOIR1_EL1`, whose layout is the same.
        pub ICC_IAR1_EL1 [
            /// The INTID acknowledged (1020..=1023: none).
            INTID OFFSET(0) NUMBITS(24) []
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_offsets_follow_ihi_0069() {
        assert_eq!(GICR_STRIDE, 0x2_0000);
        assert_eq!(gicr::IGROUPR0, 0x1_0080);
        assert_eq!(gicr::ISENABLER0, 0x1_0100);
        assert_eq!(gicr::ICENABLER0, 0x1_0180);
        assert_eq!(gicr::IPRIORITYR, 0x1_0400);
        assert_eq!(gicr::ICFGR1, 0x1_0c04);
    }

    #[test]
    fn field_positions_follow_ihi_0069() {
        // Whole values with the bit positions of the IHI 0069 register descriptions.
        assert_eq!(
            (GICD_CTLR::RWP::SET + GICD_CTLR::ARE::SET).value,
            0x8000_0010
        );
        assert_eq!(
            (GICD_TYPER::No1N::SET + GICD_TYPER::IDbits.val(9)).value,
            0x0248_0000
        );
        assert_eq!(GICR_WAKER::ChildrenAsleep::SET.value, 0b100);
        assert_eq!(
            (GICR_TYPER::Affinity_Value.val(0x0102_0304) + GICR_TYPER::Last::SET).value,
            0x0102_0304_0000_0010
        );
        let sgi = ICC_SGI1R_EL1::Aff3.val(1)
            + ICC_SGI1R_EL1::Aff2.val(2)
            + ICC_SGI1R_EL1::Aff1.val(3)
            + ICC_SGI1R_EL1::INTID.val(15)
            + ICC_SGI1R_EL1::TargetList.val(1 << 4);
        assert_eq!(sgi.value, 0x0001_0002_0f03_0010);
        assert_eq!(ICC_SGI1R_EL1::IRM::SET.value, 1 << 40);
        assert_eq!(ICC_SGI1R_EL1::RS.val(0xf).value, 0xf << 44);
    }
}
