//! The guest's view of the ID registers (`HCR_EL2.TID3` traps EL1 reads of them).
//!
//! The trapped space is op0 = 3, op1 = 0, CRn = 0, CRm = 1..=7, op2 = 0..=7: 56 encodings,
//! the AArch32 and AArch64 ID registers plus unallocated encodings, which the Arm ARM defines
//! as RAZ (D23.3.1, "Reserved encodings in the ID register space"). CRm = 0 (MIDR_EL1,
//! MPIDR_EL1, REVIDR_EL1) is not trapped by TID3: the guest reads `VPIDR_EL2`/`VMPIDR_EL2`
//! and the host REVIDR, so [`IdPolicy::sanitize`] answers `None` for it.
//!
//! Sanitizing is a whitelist: for each AArch64 register, only fields hyp knows to be safe to
//! pass through keep the host's value; every other field becomes 0, which for an unsigned
//! field means "not implemented". Signed fields (TGran4, TGran64, FP, AdvSIMD, DoubleLock,
//! where 0xF means absent) are handled one by one. The AArch32 registers pass through except
//! for the features hidden in AArch64 too (PMU, RAS, AMU, trace, virtualization, security).
//!
//! What is hidden, and why (hyp does not virtualize it, or it needs EL2 support we lack):
//! - EL2 (no nested virtualization: `ID_AA64PFR0.EL2`, `ID_AA64MMFR1.VH/VMIDBits/XNX/TWED/HCX`,
//!   `ID_AA64MMFR2.NV/FWB/EVT/IDS`, `ID_AA64MMFR0.TGran*_2` = 0b0001, FGT, ECV), AArch32 at EL1
//!   (`HCR_EL2.RW` = 1) and at EL0 (`ID_AA64PFR0.EL0` = 1), Secure EL2.
//! - SVE, SME, FPMR (`ID_AA64ZFR0/SMFR0/FPFR0` = 0): their state is not context-switched.
//! - MTE, RAS, MPAM, AMU, RME, GCS, THE, NMI, pointer authentication (keys are not managed by
//!   hyp, and `HCR_EL2.API/APK` policy is the run loop's), TME, LS64, XS, MOPS, the
//!   128-bit system registers, S1PIE/S1POE/TCR2/SCTLR2 (`ID_AA64MMFR3` = 0).
//! - Debug and trace: SPE, TRBE, BRBE, trace filters; `DebugVer` and the
//!   breakpoint/watchpoint counts are kept. The PMU is shown (`PMUVer`, capped at PMUv3p5)
//!   only when the guest gets it ([`platform::pmu::guest_pmu_version`]), else `PMUVer` = 0;
//!   its extensions (`PMSS`, `MTPMU`, `HPMN0`, `ID_AA64DFR1_EL1`) and the AArch32 `PerfMon`
//!   are hidden either way.
//! - FEAT_LPA2 (TGran4 = 0b0001, TGran16 = 0b0010) unless the VM's IPA space is 52 bits.
//! - PARange is capped at the VM's IPA size (guest PA = our IPA).
//! - Granules the VM may not use: TGran4/TGran64 = 0b1111, TGran16 = 0b0000.

use crate::exit::SysReg;
use stage2::Granule;

/// The trapped ID register encodings: op0 3, op1 0, CRn 0, CRm 1..=7, op2 0..=7.
pub const TRAPPED: [SysReg; 56] = {
    let mut regs = [SysReg::new(3, 0, 0, 1, 0); 56];
    let mut i = 0;
    while i < 56 {
        regs[i] = SysReg::new(3, 0, 0, 1 + (i / 8) as u8, (i % 8) as u8);
        i += 1;
    }
    regs
};

const fn id(crm: u8, op2: u8) -> SysReg {
    SysReg::new(3, 0, 0, crm, op2)
}

/// `ID_AA64PFR0_EL1`.
pub const ID_AA64PFR0_EL1: SysReg = id(4, 0);
/// `ID_AA64PFR1_EL1`.
pub const ID_AA64PFR1_EL1: SysReg = id(4, 1);
/// `ID_AA64ZFR0_EL1`.
pub const ID_AA64ZFR0_EL1: SysReg = id(4, 4);
/// `ID_AA64DFR0_EL1`.
pub const ID_AA64DFR0_EL1: SysReg = id(5, 0);
/// `ID_AA64ISAR0_EL1`.
pub const ID_AA64ISAR0_EL1: SysReg = id(6, 0);
/// `ID_AA64ISAR1_EL1`.
pub const ID_AA64ISAR1_EL1: SysReg = id(6, 1);
/// `ID_AA64ISAR2_EL1`.
pub const ID_AA64ISAR2_EL1: SysReg = id(6, 2);
/// `ID_AA64MMFR0_EL1`.
pub const ID_AA64MMFR0_EL1: SysReg = id(7, 0);
/// `ID_AA64MMFR1_EL1`.
pub const ID_AA64MMFR1_EL1: SysReg = id(7, 1);
/// `ID_AA64MMFR2_EL1`.
pub const ID_AA64MMFR2_EL1: SysReg = id(7, 2);

const NAMES: [(u8, u8, &str); 42] = [
    (1, 0, "ID_PFR0_EL1"),
    (1, 1, "ID_PFR1_EL1"),
    (1, 2, "ID_DFR0_EL1"),
    (1, 3, "ID_AFR0_EL1"),
    (1, 4, "ID_MMFR0_EL1"),
    (1, 5, "ID_MMFR1_EL1"),
    (1, 6, "ID_MMFR2_EL1"),
    (1, 7, "ID_MMFR3_EL1"),
    (2, 0, "ID_ISAR0_EL1"),
    (2, 1, "ID_ISAR1_EL1"),
    (2, 2, "ID_ISAR2_EL1"),
    (2, 3, "ID_ISAR3_EL1"),
    (2, 4, "ID_ISAR4_EL1"),
    (2, 5, "ID_ISAR5_EL1"),
    (2, 6, "ID_MMFR4_EL1"),
    (2, 7, "ID_ISAR6_EL1"),
    (3, 0, "MVFR0_EL1"),
    (3, 1, "MVFR1_EL1"),
    (3, 2, "MVFR2_EL1"),
    (3, 4, "ID_PFR2_EL1"),
    (3, 5, "ID_DFR1_EL1"),
    (3, 6, "ID_MMFR5_EL1"),
    (4, 0, "ID_AA64PFR0_EL1"),
    (4, 1, "ID_AA64PFR1_EL1"),
    (4, 2, "ID_AA64PFR2_EL1"),
    (4, 4, "ID_AA64ZFR0_EL1"),
    (4, 5, "ID_AA64SMFR0_EL1"),
    (4, 7, "ID_AA64FPFR0_EL1"),
    (5, 0, "ID_AA64DFR0_EL1"),
    (5, 1, "ID_AA64DFR1_EL1"),
    (5, 2, "ID_AA64DFR2_EL1"),
    (5, 4, "ID_AA64AFR0_EL1"),
    (5, 5, "ID_AA64AFR1_EL1"),
    (6, 0, "ID_AA64ISAR0_EL1"),
    (6, 1, "ID_AA64ISAR1_EL1"),
    (6, 2, "ID_AA64ISAR2_EL1"),
    (6, 3, "ID_AA64ISAR3_EL1"),
    (7, 0, "ID_AA64MMFR0_EL1"),
    (7, 1, "ID_AA64MMFR1_EL1"),
    (7, 2, "ID_AA64MMFR2_EL1"),
    (7, 3, "ID_AA64MMFR3_EL1"),
    (7, 4, "ID_AA64MMFR4_EL1"),
];

/// The architectural name of an allocated ID register in the trapped space.
pub fn name(reg: SysReg) -> Option<&'static str> {
    if !is_trapped(reg) {
        return None;
    }
    NAMES
        .iter()
        .find(|(crm, op2, _)| *crm == reg.crm() && *op2 == reg.op2())
        .map(|(_, _, n)| *n)
}

/// Whether `reg` is in the TID3-trapped ID space (op0 3, op1 0, CRn 0, CRm 1..=7).
pub fn is_trapped(reg: SysReg) -> bool {
    reg.op0() == 3 && reg.op1() == 0 && reg.crn() == 0 && (1..=7).contains(&reg.crm())
}

/// The fields of the ID registers hyp sanitizes or reads (Arm ARM D24.2, "ID_AA64*_EL1",
/// and G8.2 for the AArch32 `ID_PFR0`..`ID_DFR0`), named as the Arm ARM names them. aarch64-cpu
/// defines only a few fields of a few of these registers, so they are all here, once.
pub mod fields {
    #![allow(missing_docs)] // register_bitfields! generates undocumented helper items.
    tock_registers::register_bitfields! {u64,
        /// `ID_PFR0_EL1` (AArch32).
        pub ID_PFR0 [
            RAS OFFSET(28) NUMBITS(4) [],
            AMU OFFSET(20) NUMBITS(4) []
        ],
        /// `ID_PFR1_EL1` (AArch32).
        pub ID_PFR1 [
            Virt_frac OFFSET(24) NUMBITS(4) [],
            Sec_frac OFFSET(20) NUMBITS(4) [],
            Virtualization OFFSET(12) NUMBITS(4) [],
            Security OFFSET(4) NUMBITS(4) []
        ],
        /// `ID_DFR0_EL1` (AArch32).
        pub ID_DFR0 [
            TraceFilt OFFSET(28) NUMBITS(4) [],
            PerfMon OFFSET(24) NUMBITS(4) [],
            MMapTrc OFFSET(16) NUMBITS(4) [],
            CopTrc OFFSET(12) NUMBITS(4) []
        ],
        /// `ID_PFR2_EL1` (AArch32).
        pub ID_PFR2 [
            RAS_frac OFFSET(8) NUMBITS(4) [],
            SSBS OFFSET(4) NUMBITS(4) [],
            CSV3 OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64PFR0_EL1`.
        pub PFR0 [
            CSV3 OFFSET(60) NUMBITS(4) [],
            CSV2 OFFSET(56) NUMBITS(4) [],
            DIT OFFSET(48) NUMBITS(4) [],
            AMU OFFSET(44) NUMBITS(4) [],
            SVE OFFSET(32) NUMBITS(4) [],
            RAS OFFSET(28) NUMBITS(4) [],
            GIC OFFSET(24) NUMBITS(4) [],
            AdvSIMD OFFSET(20) NUMBITS(4) [],
            FP OFFSET(16) NUMBITS(4) [],
            EL3 OFFSET(12) NUMBITS(4) [],
            EL2 OFFSET(8) NUMBITS(4) [],
            EL1 OFFSET(4) NUMBITS(4) [],
            EL0 OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64PFR1_EL1`.
        pub PFR1 [
            CSV2_frac OFFSET(32) NUMBITS(4) [],
            SME OFFSET(24) NUMBITS(4) [],
            SSBS OFFSET(4) NUMBITS(4) [],
            BT OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64DFR0_EL1`.
        pub DFR0 [
            TraceFilt OFFSET(40) NUMBITS(4) [],
            DoubleLock OFFSET(36) NUMBITS(4) [],
            PMSVer OFFSET(32) NUMBITS(4) [],
            CTX_CMPs OFFSET(28) NUMBITS(4) [],
            WRPs OFFSET(20) NUMBITS(4) [],
            BRPs OFFSET(12) NUMBITS(4) [],
            PMUVer OFFSET(8) NUMBITS(4) [],
            DebugVer OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64ISAR0_EL1`.
        pub ISAR0 [
            TME OFFSET(24) NUMBITS(4) [],
            /// Bits \[3:0\], RES0.
            RES0 OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64ISAR1_EL1`.
        pub ISAR1 [
            I8MM OFFSET(52) NUMBITS(4) [],
            DGH OFFSET(48) NUMBITS(4) [],
            BF16 OFFSET(44) NUMBITS(4) [],
            SPECRES OFFSET(40) NUMBITS(4) [],
            SB OFFSET(36) NUMBITS(4) [],
            FRINTTS OFFSET(32) NUMBITS(4) [],
            LRCPC OFFSET(20) NUMBITS(4) [],
            FCMA OFFSET(16) NUMBITS(4) [],
            JSCVT OFFSET(12) NUMBITS(4) [],
            DPB OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64ISAR2_EL1`.
        pub ISAR2 [
            CSSC OFFSET(52) NUMBITS(4) [],
            RPRFM OFFSET(48) NUMBITS(4) [],
            CLRBHB OFFSET(28) NUMBITS(4) [],
            BC OFFSET(20) NUMBITS(4) [],
            RPRES OFFSET(4) NUMBITS(4) [],
            WFxT OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64MMFR0_EL1`.
        pub MMFR0 [
            FGT OFFSET(56) NUMBITS(4) [],
            TGran4_2 OFFSET(40) NUMBITS(4) [],
            TGran64_2 OFFSET(36) NUMBITS(4) [],
            TGran16_2 OFFSET(32) NUMBITS(4) [],
            TGran4 OFFSET(28) NUMBITS(4) [],
            TGran64 OFFSET(24) NUMBITS(4) [],
            TGran16 OFFSET(20) NUMBITS(4) [],
            BigEndEL0 OFFSET(16) NUMBITS(4) [],
            BigEnd OFFSET(8) NUMBITS(4) [],
            ASIDBits OFFSET(4) NUMBITS(4) [],
            PARange OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64MMFR1_EL1`.
        pub MMFR1 [
            ECBHB OFFSET(60) NUMBITS(4) [],
            nTLBPA OFFSET(48) NUMBITS(4) [],
            AFP OFFSET(44) NUMBITS(4) [],
            HCX OFFSET(40) NUMBITS(4) [],
            ETS OFFSET(36) NUMBITS(4) [],
            PAN OFFSET(20) NUMBITS(4) [],
            LO OFFSET(16) NUMBITS(4) [],
            HPDS OFFSET(12) NUMBITS(4) [],
            HAFDBS OFFSET(0) NUMBITS(4) []
        ],
        /// `ID_AA64MMFR2_EL1`.
        pub MMFR2 [
            E0PD OFFSET(60) NUMBITS(4) [],
            TTL OFFSET(48) NUMBITS(4) [],
            AT OFFSET(32) NUMBITS(4) [],
            ST OFFSET(28) NUMBITS(4) [],
            CCIDX OFFSET(20) NUMBITS(4) [],
            VARange OFFSET(16) NUMBITS(4) [],
            UAO OFFSET(4) NUMBITS(4) [],
            CnP OFFSET(0) NUMBITS(4) []
        ]
    }
}

use fields::{
    DFR0, ID_DFR0, ID_PFR0, ID_PFR1, ID_PFR2, ISAR0, ISAR1, ISAR2, MMFR0, MMFR1, MMFR2, PFR0, PFR1,
};
use tock_registers::fields::Field;
use tock_registers::RegisterLongName;

/// The host value restricted to `fields`.
fn keep<R: RegisterLongName>(host: u64, fields: &[Field<u64, R>]) -> u64 {
    fields
        .iter()
        .fold(0, |acc, f| acc | (host & (f.mask << f.shift)))
}

/// The host value with `fields` cleared.
fn clear<R: RegisterLongName>(host: u64, fields: &[Field<u64, R>]) -> u64 {
    fields
        .iter()
        .fold(host, |acc, f| acc & !(f.mask << f.shift))
}

/// `v` with `field` set to `value`.
fn set<R: RegisterLongName>(v: u64, field: Field<u64, R>, value: u64) -> u64 {
    (v & !(field.mask << field.shift)) | field.val(value).value
}

/// `ID_AA64MMFR0_EL1.PARange` encodings and their sizes (Arm ARM D24.2.81).
const PA_RANGES: [(u64, u32); 7] = [
    (0, 32),
    (1, 36),
    (2, 40),
    (3, 42),
    (4, 44),
    (5, 48),
    (6, 52),
];

/// The AArch32 ID registers (CRm = 1..=3, used only by AArch32 EL0 tasks): passed through,
/// minus what is hidden in AArch64 too; the unallocated encodings (CRm 3, op2 3 and 7) read
/// as zero.
fn aarch32(crm: u8, op2: u8, host: u64) -> u64 {
    match (crm, op2) {
        (1, 0) => clear(host, &[ID_PFR0::RAS, ID_PFR0::AMU]),
        (1, 1) => clear(
            host,
            &[
                ID_PFR1::Security,
                ID_PFR1::Virtualization,
                ID_PFR1::Sec_frac,
                ID_PFR1::Virt_frac,
            ],
        ),
        (1, 2) => clear(
            host,
            &[
                ID_DFR0::CopTrc,
                ID_DFR0::MMapTrc,
                ID_DFR0::PerfMon,
                ID_DFR0::TraceFilt,
            ],
        ),
        // ID_AFR0 (IMPLEMENTATION DEFINED).
        (1, 3) => 0,
        (1, 4..=7) | (2, 0..=7) | (3, 0..=2) | (3, 6) => host,
        // ID_PFR2: RAS_frac hidden.
        (3, 4) => keep(host, &[ID_PFR2::CSV3, ID_PFR2::SSBS]),
        // ID_DFR1: MTPMU, HPMN0 (PMU).
        (3, 5) => 0,
        _ => 0,
    }
}

/// `ID_AA64PFR<op2>_EL1` and the other CRm = 4 registers.
fn pfr(op2: u8, host: u64) -> u64 {
    match op2 {
        0 => {
            // EL0 and EL1 AArch64 only (EL0 = 1: hyp emulates trapped instructions
            // without AArch32 condition codes or IT state; a vCPU found in AArch32 EL0 gets
            // the illegal exception return a CPU without it makes, `exit::aarch32_el0`);
            // EL2 absent; EL3 at most AArch64 (the SMC conduit traps
            // with HCR_EL2.TSC); GIC system registers at most v3.0; RAS, SVE, SEL2, MPAM,
            // AMU, RME hidden.
            let mut v = keep(
                host,
                &[PFR0::FP, PFR0::AdvSIMD, PFR0::DIT, PFR0::CSV2, PFR0::CSV3],
            );
            v = set(v, PFR0::EL0, 1);
            v = set(v, PFR0::EL1, 1);
            v = set(v, PFR0::EL3, PFR0::EL3.read(host).min(1));
            set(v, PFR0::GIC, PFR0::GIC.read(host).min(1))
        }
        1 => keep(host, &[PFR1::BT, PFR1::SSBS, PFR1::CSV2_frac]),
        // PFR2 (MTE extensions, FPMR), ZFR0 (SVE), SMFR0 (SME), FPFR0 (FP8): hidden.
        _ => 0,
    }
}

/// `ID_AA64DFR<op2>_EL1` and the other CRm = 5 registers: SPE, TRBE, BRBE, trace hidden; the
/// PMU as the guest gets it; `ID_AA64DFR1_EL1`, `ID_AA64DFR2_EL1` and the auxiliary
/// registers read as zero.
fn dfr(op2: u8, host: u64) -> u64 {
    if op2 != 0 {
        return 0;
    }
    let v = keep(
        host,
        &[
            DFR0::DebugVer,
            DFR0::BRPs,
            DFR0::WRPs,
            DFR0::CTX_CMPs,
            DFR0::DoubleLock,
        ],
    );
    let pmu = platform::pmu::guest_pmu_version(host).unwrap_or(0);
    set(v, DFR0::PMUVer, u64::from(pmu))
}

/// `ID_AA64ISAR<op2>_EL1` (CRm = 6).
fn isar(op2: u8, host: u64) -> u64 {
    match op2 {
        0 => clear(host, &[ISAR0::RES0, ISAR0::TME]),
        // Pointer authentication (APA, API, GPA, GPI), XS and LS64 hidden.
        1 => keep(
            host,
            &[
                ISAR1::DPB,
                ISAR1::JSCVT,
                ISAR1::FCMA,
                ISAR1::LRCPC,
                ISAR1::FRINTTS,
                ISAR1::SB,
                ISAR1::SPECRES,
                ISAR1::BF16,
                ISAR1::DGH,
                ISAR1::I8MM,
            ],
        ),
        // MOPS, PAC3, 128-bit system registers hidden. WFxT kept: a trapped WFIT sleeps
        // until its deadline (HCR_EL2.TWI; the run loop waits with WFIT itself), WFET is
        // not trapped.
        2 => keep(
            host,
            &[
                ISAR2::WFxT,
                ISAR2::RPRES,
                ISAR2::BC,
                ISAR2::CLRBHB,
                ISAR2::RPRFM,
                ISAR2::CSSC,
            ],
        ),
        // ISAR3 and the unallocated encodings.
        _ => 0,
    }
}

/// What a VM may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdPolicy {
    /// The guest granules this VM may use, as a mask of [`Granule::bit`]. With
    /// `page_size = "16k"` this is just 16K, so the kernel picks the configured size.
    pub granules: u8,
    /// The VM's IPA size in bits (what the guest sees as its PA size).
    pub ipa_bits: u32,
}

impl IdPolicy {
    fn allows(&self, g: Granule) -> bool {
        self.granules & g.bit() != 0
    }

    /// The `PARange` encoding for the VM's IPA size: the largest not above it (32 bits at
    /// least, the smallest encoding).
    pub fn pa_range(&self) -> u64 {
        PA_RANGES
            .iter()
            .rev()
            .find(|(_, bits)| *bits <= self.ipa_bits)
            .map_or(0, |(enc, _)| *enc)
    }

    /// The value the guest reads for the trapped ID register `reg`, given the host's value;
    /// `None` when `reg` is not in the trapped space. Unallocated encodings read as zero.
    pub fn sanitize(&self, reg: SysReg, host: u64) -> Option<u64> {
        if !is_trapped(reg) {
            return None;
        }
        let op2 = reg.op2();
        Some(match reg.crm() {
            1..=3 => aarch32(reg.crm(), op2, host),
            4 => pfr(op2, host),
            5 => dfr(op2, host),
            6 => isar(op2, host),
            7 => self.mmfr(op2, host),
            _ => 0,
        })
    }

    /// `ID_AA64MMFR<op2>_EL1` (CRm = 7).
    fn mmfr(&self, op2: u8, host: u64) -> u64 {
        match op2 {
            0 => self.mmfr0(host),
            1 => keep(
                host,
                &[
                    MMFR1::HAFDBS,
                    MMFR1::HPDS,
                    MMFR1::LO,
                    MMFR1::PAN,
                    MMFR1::ETS,
                    MMFR1::AFP,
                    MMFR1::nTLBPA,
                    MMFR1::ECBHB,
                ],
            ),
            2 => keep(
                host,
                &[
                    MMFR2::CnP,
                    MMFR2::UAO,
                    MMFR2::VARange,
                    MMFR2::CCIDX,
                    MMFR2::ST,
                    MMFR2::AT,
                    MMFR2::TTL,
                    MMFR2::E0PD,
                ],
            ),
            // MMFR3 (S1PIE, S1POE, TCR2, SCTLR2, ...), MMFR4 and the unallocated encodings.
            _ => 0,
        }
    }

    fn mmfr0(&self, host: u64) -> u64 {
        let pa_range = MMFR0::PARange.read(host).min(self.pa_range());
        // FEAT_LPA2 only matters with 52-bit addresses; without them it just changes the
        // guest's descriptor format and adds a level, so it is hidden.
        let lpa2 = pa_range >= 6;
        let mut v = keep(host, &[MMFR0::ASIDBits, MMFR0::BigEnd, MMFR0::BigEndEL0]) | pa_range;

        // TGran4 (signed: 0 yes, 1 yes with 52-bit, 0xF no).
        let t4 = match (self.allows(Granule::K4), MMFR0::TGran4.read(host)) {
            (false, _) => 0xf,
            (true, 1) if !lpa2 => 0,
            (true, t) => t,
        };
        v = set(v, MMFR0::TGran4, t4);
        // TGran64 (signed: 0 yes, 0xF no).
        let t64 = if self.allows(Granule::K64) {
            MMFR0::TGran64.read(host)
        } else {
            0xf
        };
        v = set(v, MMFR0::TGran64, t64);
        // TGran16 (unsigned: 0 no, 1 yes, 2 yes with 52-bit).
        let t16 = match (self.allows(Granule::K16), MMFR0::TGran16.read(host)) {
            (false, _) => 0,
            (true, 2) if !lpa2 => 1,
            (true, t) => t,
        };
        v = set(v, MMFR0::TGran16, t16);
        // TGranN_2: 0b0001 "not supported at stage 2" — the guest has no EL2.
        v = set(v, MMFR0::TGran16_2, 1);
        v = set(v, MMFR0::TGran64_2, 1);
        set(v, MMFR0::TGran4_2, 1)
    }
}

/// A VM's ID register values, computed once at VM creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestIdRegs {
    values: [u64; 56],
}

impl GuestIdRegs {
    /// Builds the table from the policy and the host's values; `host(reg)` is called once per
    /// [`TRAPPED`] encoding (reading an unallocated encoding at EL2 returns 0).
    pub fn new(policy: &IdPolicy, mut host: impl FnMut(SysReg) -> u64) -> Self {
        let mut values = [0; 56];
        for (v, reg) in values.iter_mut().zip(TRAPPED) {
            *v = policy.sanitize(reg, host(reg)).unwrap_or(0);
        }
        GuestIdRegs { values }
    }

    /// The value for a trapped read of `reg`, or `None` if it is not a trapped ID register
    /// (the run loop then treats the access as an unknown system register).
    pub fn read(&self, reg: SysReg) -> Option<u64> {
        if !is_trapped(reg) {
            return None;
        }
        let index = (reg.crm() as usize - 1) * 8 + reg.op2() as usize;
        self.values.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 4-bit field at `shift` (the Arm ARM's bit positions, independent of `fields`).
    fn field(v: u64, shift: u32) -> u64 {
        (v >> shift) & 0xf
    }

    /// `-cpu max` on QEMU 10.0.2 (the values hyp read there).
    const MAX_MMFR0: u64 = 0x2100_0323_1020_1126;

    fn policy(granules: &[Granule], ipa_bits: u32) -> IdPolicy {
        IdPolicy {
            granules: granules.iter().fold(0, |m, g| m | g.bit()),
            ipa_bits,
        }
    }

    fn mmfr0(p: &IdPolicy, host: u64) -> stage2::CpuFeatures {
        stage2::CpuFeatures::from_mmfr0(p.sanitize(ID_AA64MMFR0_EL1, host).unwrap())
    }

    #[test]
    fn only_the_allowed_granule_is_advertised() {
        use stage2::Stage;
        for g in Granule::ALL {
            let f = mmfr0(&policy(&[g], 40), MAX_MMFR0);
            for other in Granule::ALL {
                assert_eq!(
                    f.check(Stage::One, other).is_ok(),
                    other == g,
                    "allowed {g}, checking {other}"
                );
                // The guest has no stage 2 at all.
                assert!(f.check(Stage::Two, other).is_err());
            }
            // A Linux kernel with arm64.pagesize= picks from what it sees: only `g`.
            assert_eq!(f.auto(Stage::One), Some(g));
        }
        let all = mmfr0(&policy(&Granule::ALL, 40), MAX_MMFR0);
        for g in Granule::ALL {
            assert!(all.check(stage2::Stage::One, g).is_ok());
        }
    }

    #[test]
    fn parange_is_capped_and_lpa2_hidden_below_52_bits() {
        let p = policy(&Granule::ALL, 40);
        let v = p.sanitize(ID_AA64MMFR0_EL1, MAX_MMFR0).unwrap();
        assert_eq!(v & 0xf, 2, "40 bits");
        assert_eq!(field(v, 28), 0, "TGran4 without LPA2");
        assert_eq!(field(v, 20), 1, "TGran16 without LPA2");
        assert_eq!(field(v, 24), 0, "TGran64");
        assert_eq!((field(v, 32), field(v, 36), field(v, 40)), (1, 1, 1));
        // ECV [63:60] and FGT [59:56] hidden; ASIDBits kept.
        assert_eq!(v >> 56, 0);
        assert_eq!(field(v, 4), 2);
        // 52-bit IPA keeps LPA2.
        let v = policy(&Granule::ALL, 52)
            .sanitize(ID_AA64MMFR0_EL1, MAX_MMFR0)
            .unwrap();
        assert_eq!((v & 0xf, field(v, 28), field(v, 20)), (6, 1, 2));
        // Never above the host: a64fx has 40 bits.
        let v = policy(&Granule::ALL, 48)
            .sanitize(ID_AA64MMFR0_EL1, 0x1122)
            .unwrap();
        assert_eq!(v & 0xf, 2);
        // Odd IPA sizes round down to an encoding; below 32 is still 32.
        assert_eq!(policy(&[], 39).pa_range(), 1);
        assert_eq!(policy(&[], 47).pa_range(), 4);
        assert_eq!(policy(&[], 20).pa_range(), 0);
    }

    #[test]
    fn absent_host_granules_stay_absent() {
        // cortex-a72: no 16K. Allowing it cannot create it.
        let f = mmfr0(&policy(&[Granule::K16], 40), 0x1124);
        assert!(f.check(stage2::Stage::One, Granule::K16).is_err());
        let v = policy(&[Granule::K4], 40)
            .sanitize(ID_AA64MMFR0_EL1, 0xf000_0000)
            .unwrap();
        assert_eq!(field(v, 28), 0xf);
    }

    #[test]
    fn pfr0_hides_sve_ras_el2_and_caps_gic() {
        // EL0=1 EL1=2 EL2=2 EL3=2 FP=1 AdvSIMD=1 GIC=3 RAS=2 SVE=1 SEL2=1 MPAM=1 AMU=1
        // DIT=1 RME=1 CSV2=2 CSV3=1.
        let host = 0x1211_1111_2311_2221;
        let v = policy(&Granule::ALL, 40)
            .sanitize(ID_AA64PFR0_EL1, host)
            .unwrap();
        assert_eq!(v, 0x1201_0000_0111_1011);
    }

    #[test]
    fn el0_is_aarch64_only_and_wfxt_kept() {
        let p = policy(&Granule::ALL, 40);
        // A host with AArch32 at EL0 (EL0 = 2) and EL1 (EL1 = 2).
        let v = p.sanitize(ID_AA64PFR0_EL1, 0x22).unwrap();
        assert_eq!(field(v, 0), 1, "EL0: AArch64 only");
        assert_eq!(field(v, 4), 1, "EL1: AArch64 only");
        // WFxT = 2 (WFIT and WFET) kept; MOPS (bits 19:16) hidden.
        let v = p.sanitize(ID_AA64ISAR2_EL1, 0x1_0002).unwrap();
        assert_eq!(v, 2);
    }

    #[test]
    fn dfr0_caps_pmu_and_keeps_debug() {
        // DebugVer=9, TraceVer=1, PMUVer=8, BRPs=5, PMSS=1, WRPs=3, CTX_CMPs=1, PMSVer=3,
        // SEBEP=0, DoubleLock=0xF, TraceFilt=1, TraceBuffer=1, MTPMU=1, BRBE=1.
        let host = 0x0011_11f3_1031_5819;
        let p = policy(&Granule::ALL, 40);
        let v = p.sanitize(ID_AA64DFR0_EL1, host).unwrap();
        assert_eq!(v, 0x0000_00f0_1030_5609);
        assert_eq!(field(v, 8), 6, "PMUVer capped at PMUv3p5");
        assert_eq!(field(v, 0), 9, "DebugVer");
        // PMUv3p5 as QEMU's max has it: shown as is.
        let v = p.sanitize(ID_AA64DFR0_EL1, 0x1030_5609).unwrap();
        assert_eq!(field(v, 8), 6);
        // PMUv3 (cortex-a72), PMUv3p1 (neoverse-n1), IMPLEMENTATION DEFINED: hidden.
        for pmuver in [1, 4, 5, 0xf] {
            let v = p
                .sanitize(ID_AA64DFR0_EL1, 0x1030_5009 | pmuver << 8)
                .unwrap();
            assert_eq!(field(v, 8), 0, "host PMUVer {pmuver}");
        }
    }

    #[test]
    fn sve_sme_and_pointer_auth_hidden() {
        let p = policy(&Granule::ALL, 40);
        assert_eq!(p.sanitize(ID_AA64ZFR0_EL1, u64::MAX), Some(0));
        assert_eq!(p.sanitize(id(4, 5), u64::MAX), Some(0));
        // ISAR1: APA [7:4], API [11:8], GPA [27:24], GPI [31:28] cleared.
        let v = p.sanitize(ID_AA64ISAR1_EL1, u64::MAX).unwrap();
        for s in [4, 8, 24, 28, 56, 60] {
            assert_eq!(field(v, s), 0, "shift {s}");
        }
        assert_eq!(field(v, 0), 0xf);
        // MTE [11:8] and SME [27:24] in PFR1.
        let v = p.sanitize(ID_AA64PFR1_EL1, 0x0000_0001_0f00_0f21).unwrap();
        assert_eq!(v, 0x0000_0001_0000_0021);
        // NV hidden, VARange kept.
        let v = p.sanitize(ID_AA64MMFR2_EL1, 0x0f00_0010_0f01_0000).unwrap();
        assert_eq!(field(v, 24), 0);
        assert_eq!(field(v, 16), 1);
        // VH, VMIDBits hidden, PAN and HAFDBS kept.
        let v = p.sanitize(ID_AA64MMFR1_EL1, 0x0031_2122).unwrap();
        assert_eq!(v, 0x0031_2002);
    }

    #[test]
    fn every_trapped_encoding_has_a_value() {
        let p = policy(&[Granule::K4], 40);
        let regs = GuestIdRegs::new(&p, |_| u64::MAX);
        let mut named = 0;
        for reg in TRAPPED {
            assert!(regs.read(reg).is_some(), "{reg}");
            if name(reg).is_some() {
                named += 1;
            } else {
                assert_eq!(regs.read(reg), Some(0), "unallocated {reg} must be RAZ");
            }
        }
        assert_eq!(named, NAMES.len());
        // Outside the trapped space.
        assert_eq!(regs.read(SysReg::new(3, 0, 0, 0, 0)), None);
        assert_eq!(regs.read(SysReg::new(3, 0, 1, 0, 0)), None);
        assert_eq!(regs.read(SysReg::new(3, 3, 0, 1, 0)), None);
        assert_eq!(p.sanitize(SysReg::new(3, 0, 0, 0, 5), 1), None);
        // The table agrees with sanitize().
        let host = |r: SysReg| 0x1111_1111_1111_1111u64.wrapping_mul(r.raw() as u64);
        let regs = GuestIdRegs::new(&p, host);
        for reg in TRAPPED {
            assert_eq!(regs.read(reg), p.sanitize(reg, host(reg)));
        }
        assert_eq!(TRAPPED[0], SysReg::new(3, 0, 0, 1, 0));
        assert_eq!(TRAPPED[55], SysReg::new(3, 0, 0, 7, 7));
    }

    #[test]
    fn aarch32_registers_hide_pmu_and_virtualization() {
        let p = policy(&Granule::ALL, 40);
        // ID_DFR0 PerfMon [27:24].
        assert_eq!(field(p.sanitize(id(1, 2), u64::MAX).unwrap(), 24), 0);
        // ID_PFR1 Virtualization [15:12].
        assert_eq!(field(p.sanitize(id(1, 1), u64::MAX).unwrap(), 12), 0);
        // MVFR0 passes through.
        assert_eq!(p.sanitize(id(3, 0), 0x1011_0222), Some(0x1011_0222));
    }
}
