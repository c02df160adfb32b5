//! vCPU index ↔ MPIDR affinity.
//!
//! vCPU `i` gets Aff0 = `i % 16` and Aff1 = `i / 16` (Aff2 = Aff3 = 0). Linux's GICv3 driver
//! builds SGI target lists from Aff0 and, without `GICD_TYPER.RSS`, can only name Aff0 values
//! 0..=15 (IHI 0069, `ICC_SGI1R_EL1.TargetList`), so at most 16 vCPUs share one Aff1 value.

use core::fmt;

/// The MPIDR_EL1 affinity fields: Aff0 \[7:0\], Aff1 \[15:8\], Aff2 \[23:16\], Aff3 \[39:32\].
pub const AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// `MPIDR_EL1` bit 31 is RES1 (Arm ARM D24.2.124).
const MPIDR_RES1: u64 = 1 << 31;

/// vCPUs per Aff1 cluster.
pub const CLUSTER_SIZE: usize = 16;

/// The affinity of one vCPU.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mpidr(u64);

impl Mpidr {
    /// The affinity of vCPU `index`, or `None` above 16 × 256 vCPUs.
    pub const fn from_vcpu(index: usize) -> Option<Mpidr> {
        if index >= CLUSTER_SIZE * 256 {
            return None;
        }
        let aff0 = (index % CLUSTER_SIZE) as u64;
        let aff1 = (index / CLUSTER_SIZE) as u64;
        Some(Mpidr(aff0 | (aff1 << 8)))
    }

    /// The affinity with these four fields.
    pub const fn from_fields(aff0: u8, aff1: u8, aff2: u8, aff3: u8) -> Mpidr {
        Mpidr(aff0 as u64 | (aff1 as u64) << 8 | (aff2 as u64) << 16 | (aff3 as u64) << 32)
    }

    /// Wraps an affinity value (fields outside [`AFFINITY_MASK`] are dropped).
    pub const fn from_affinity(value: u64) -> Mpidr {
        Mpidr(value & AFFINITY_MASK)
    }

    /// The vCPU index this affinity names, if it follows hyp's numbering (Aff2 = Aff3 = 0,
    /// Aff0 < 16). The caller still checks it against the VM's vCPU count.
    pub const fn vcpu(self) -> Option<usize> {
        let aff0 = self.aff(0);
        if self.aff(2) != 0 || self.aff(3) != 0 || aff0 as usize >= CLUSTER_SIZE {
            return None;
        }
        Some(self.aff(1) as usize * CLUSTER_SIZE + aff0 as usize)
    }

    /// Affinity level `level` (0..=3); other levels read as 0.
    pub const fn aff(self, level: u32) -> u8 {
        match level {
            0 => self.0 as u8,
            1 => (self.0 >> 8) as u8,
            2 => (self.0 >> 16) as u8,
            3 => (self.0 >> 32) as u8,
            _ => 0,
        }
    }

    /// The affinity fields only (the form PSCI and `GICD_IROUTER` use).
    pub const fn affinity(self) -> u64 {
        self.0
    }

    /// The value for `VMPIDR_EL2` (what the guest reads as `MPIDR_EL1`): the affinity with
    /// RES1 bit 31 set, U (bit 30) = 0 (part of a multiprocessor system) and MT (bit 24) = 0.
    pub const fn vmpidr(self) -> u64 {
        self.0 | MPIDR_RES1
    }

    /// The 32-bit `Aff3.Aff2.Aff1.Aff0` form used by `GICR_TYPER.Affinity_Value`.
    pub const fn packed32(self) -> u32 {
        (self.aff(3) as u32) << 24
            | (self.aff(2) as u32) << 16
            | (self.aff(1) as u32) << 8
            | self.aff(0) as u32
    }
}

impl fmt::Debug for Mpidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Mpidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.aff(3),
            self.aff(2),
            self.aff(1),
            self.aff(0)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_uses_aff0_below_16() {
        assert_eq!(Mpidr::from_vcpu(0).unwrap().affinity(), 0);
        assert_eq!(Mpidr::from_vcpu(15).unwrap().affinity(), 0x0f);
        assert_eq!(Mpidr::from_vcpu(16).unwrap().affinity(), 0x100);
        assert_eq!(Mpidr::from_vcpu(37).unwrap().affinity(), 0x205);
        assert_eq!(Mpidr::from_vcpu(4095).unwrap().affinity(), 0xff0f);
        assert_eq!(Mpidr::from_vcpu(4096), None);
    }

    #[test]
    fn round_trip_and_rejects() {
        for i in [0usize, 1, 15, 16, 17, 255, 4095] {
            assert_eq!(Mpidr::from_vcpu(i).unwrap().vcpu(), Some(i));
        }
        assert_eq!(Mpidr::from_affinity(0x10).vcpu(), None);
        assert_eq!(Mpidr::from_affinity(0x1_0000).vcpu(), None);
        assert_eq!(Mpidr::from_affinity(0x1_0000_0000).vcpu(), None);
        // Bit 31 and MT are not affinity: dropped.
        assert_eq!(Mpidr::from_affinity(0x8100_0003).vcpu(), Some(3));
    }

    #[test]
    fn register_forms() {
        let m = Mpidr::from_vcpu(18).unwrap();
        assert_eq!(m.vmpidr(), 0x8000_0102);
        assert_eq!(m.packed32(), 0x0000_0102);
        assert_eq!(Mpidr::from_affinity(0x07_0005_0403).packed32(), 0x0705_0403);
        assert_eq!(alloc::format!("{m}"), "0.0.1.2");
        assert_eq!(Mpidr::from_fields(4, 3, 2, 1).affinity(), 0x01_0002_0304);
        assert_eq!(Mpidr::from_fields(4, 3, 2, 1).packed32(), 0x0102_0304);
    }
}
