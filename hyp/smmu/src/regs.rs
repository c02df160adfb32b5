//! SMMUv3 register offsets and fields (Arm IHI 0070, "SMMU architecture version 3", §6.3).
//!
//! Only what hyp programs or reads. Offsets are from the SMMU's base; the event queue's
//! producer and consumer live in the second 64 KiB page (§6.1: "Page 1").

/// Register offsets (IHI 0070 §6.3, Table 6-1).
pub mod offset {
    /// `SMMU_IDR0`..`SMMU_IDR5`: `IDR0 + 4 * n`.
    pub const IDR0: u64 = 0x00;
    /// `SMMU_CR0`: enables.
    pub const CR0: u64 = 0x20;
    /// `SMMU_CR0ACK`: the enables the SMMU has acted on.
    pub const CR0ACK: u64 = 0x24;
    /// `SMMU_CR1`: table and queue memory attributes.
    pub const CR1: u64 = 0x28;
    /// `SMMU_CR2`.
    pub const CR2: u64 = 0x2c;
    /// `SMMU_GBPA`: what happens to transactions while the SMMU is disabled.
    pub const GBPA: u64 = 0x44;
    /// `SMMU_IRQ_CTRL`.
    pub const IRQ_CTRL: u64 = 0x50;
    /// `SMMU_IRQ_CTRLACK`.
    pub const IRQ_CTRLACK: u64 = 0x54;
    /// `SMMU_GERROR`: global errors (toggle bits).
    pub const GERROR: u64 = 0x60;
    /// `SMMU_GERRORN`: global errors acknowledged.
    pub const GERRORN: u64 = 0x64;
    /// `SMMU_STRTAB_BASE` (64 bits).
    pub const STRTAB_BASE: u64 = 0x80;
    /// `SMMU_STRTAB_BASE_CFG`.
    pub const STRTAB_BASE_CFG: u64 = 0x88;
    /// `SMMU_CMDQ_BASE` (64 bits).
    pub const CMDQ_BASE: u64 = 0x90;
    /// `SMMU_CMDQ_PROD`.
    pub const CMDQ_PROD: u64 = 0x98;
    /// `SMMU_CMDQ_CONS`.
    pub const CMDQ_CONS: u64 = 0x9c;
    /// `SMMU_EVENTQ_BASE` (64 bits).
    pub const EVENTQ_BASE: u64 = 0xa0;
    /// `SMMU_EVENTQ_PROD` (page 1).
    pub const EVENTQ_PROD: u64 = 0x1_00a8;
    /// `SMMU_EVENTQ_CONS` (page 1).
    pub const EVENTQ_CONS: u64 = 0x1_00ac;
    /// The register frame: two 64 KiB pages.
    pub const FRAME_SIZE: u64 = 0x2_0000;
}

pub use fields::{
    CMDQ_CONS, CR0, CR1, GBPA, GERROR, IDR0, IDR1, IDR3, IDR5, IRQ_CTRL, QUEUE_BASE,
    STRTAB_BASE_CFG,
};

/// The register fields. `register_bitfields!` generates helper items (value enums, masks)
/// without documentation; each register and field is documented here.
#[allow(missing_docs)]
mod fields {
    use tock_registers::register_bitfields;

    register_bitfields! {u32,
        /// `SMMU_IDR0` (IHI 0070 §6.3.1), the fields hyp checks.
        pub IDR0 [
            /// Multi-level stream table: 0b00 linear only, 0b01 two-level too.
            ST_LEVEL OFFSET(27) NUMBITS(2) [],
            /// 16-bit VMIDs.
            VMID16 OFFSET(18) NUMBITS(1) [],
            /// Hardware translation table flag updates: 0 none, 1 access flag, 2 access + dirty.
            HTTU OFFSET(6) NUMBITS(2) [],
            /// Coherent access to tables and queues.
            COHACC OFFSET(4) NUMBITS(1) [],
            /// Translation table formats: 0b10 AArch64, 0b11 AArch32 and AArch64.
            TTF OFFSET(2) NUMBITS(2) [],
            /// Stage-1 translation.
            S1P OFFSET(1) NUMBITS(1) [],
            /// Stage-2 translation.
            S2P OFFSET(0) NUMBITS(1) []
        ],
        /// `SMMU_IDR1` (IHI 0070 §6.3.2).
        pub IDR1 [
            /// log2 of the command queue's maximum entries.
            CMDQS OFFSET(21) NUMBITS(5) [],
            /// log2 of the event queue's maximum entries.
            EVENTQS OFFSET(16) NUMBITS(5) [],
            /// StreamID bits.
            SIDSIZE OFFSET(0) NUMBITS(6) []
        ],
        /// `SMMU_IDR3` (IHI 0070 §6.3.4).
        pub IDR3 [
            /// Range invalidation (`TLBI_*` with `NUM`/`SCALE`).
            RIL OFFSET(10) NUMBITS(1) [],
            /// `STE.S2FWB`: the stage-2 FEAT_S2FWB attribute encoding.
            FWB OFFSET(8) NUMBITS(1) []
        ],
        /// `SMMU_IDR5` (IHI 0070 §6.3.6).
        pub IDR5 [
            /// 64 KiB granule.
            GRAN64K OFFSET(6) NUMBITS(1) [],
            /// 16 KiB granule.
            GRAN16K OFFSET(5) NUMBITS(1) [],
            /// 4 KiB granule.
            GRAN4K OFFSET(4) NUMBITS(1) [],
            /// Output address size: 0 32, 1 36, 2 40, 3 42, 4 44, 5 48, 6 52 bits.
            OAS OFFSET(0) NUMBITS(3) []
        ],
        /// `SMMU_CR0` / `SMMU_CR0ACK` (IHI 0070 §6.3.9).
        pub CR0 [
            /// Command queue processing.
            CMDQEN OFFSET(3) NUMBITS(1) [],
            /// Event queue writes.
            EVENTQEN OFFSET(2) NUMBITS(1) [],
            /// Translation (else `GBPA` applies).
            SMMUEN OFFSET(0) NUMBITS(1) []
        ],
        /// `SMMU_CR1` (IHI 0070 §6.3.11): attributes of the SMMU's own table/queue accesses.
        pub CR1 [
            /// Queue accesses' shareability: 0b11 inner shareable.
            QUEUE_SH OFFSET(10) NUMBITS(2) [],
            /// Queue accesses' outer cacheability: 0b01 write-back.
            QUEUE_OC OFFSET(8) NUMBITS(2) [],
            /// Queue accesses' inner cacheability.
            QUEUE_IC OFFSET(6) NUMBITS(2) [],
            /// Table accesses' shareability.
            TABLE_SH OFFSET(4) NUMBITS(2) [],
            /// Table accesses' outer cacheability.
            TABLE_OC OFFSET(2) NUMBITS(2) [],
            /// Table accesses' inner cacheability.
            TABLE_IC OFFSET(0) NUMBITS(2) []
        ],
        /// `SMMU_GBPA` (IHI 0070 §6.3.14).
        pub GBPA [
            /// Write 1 with the new value; reads 1 until the SMMU has applied it.
            UPDATE OFFSET(31) NUMBITS(1) [],
            /// Abort incoming transactions while `CR0.SMMUEN` = 0.
            ABORT OFFSET(20) NUMBITS(1) []
        ],
        /// `SMMU_IRQ_CTRL` (IHI 0070 §6.3.16).
        pub IRQ_CTRL [
            /// Event queue interrupt.
            EVENTQ_IRQEN OFFSET(2) NUMBITS(1) [],
            /// Global error interrupt.
            GERROR_IRQEN OFFSET(0) NUMBITS(1) []
        ],
        /// `SMMU_GERROR` / `SMMU_GERRORN` (IHI 0070 §6.3.18): an error is active while the
        /// two registers' bits differ.
        pub GERROR [
            /// The SMMU entered service failure mode.
            SFM_ERR OFFSET(8) NUMBITS(1) [],
            /// An event record could not be written (queue memory abort).
            EVENTQ_ABT_ERR OFFSET(2) NUMBITS(1) [],
            /// A command could not be processed: `CMDQ_CONS.ERR` says why.
            CMDQ_ERR OFFSET(0) NUMBITS(1) []
        ],
        /// `SMMU_STRTAB_BASE_CFG` (IHI 0070 §6.3.25).
        pub STRTAB_BASE_CFG [
            /// 0b00 linear, 0b01 two-level.
            FMT OFFSET(16) NUMBITS(2) [Linear = 0, TwoLevel = 1],
            /// Two-level split point.
            SPLIT OFFSET(6) NUMBITS(5) [],
            /// log2 of the number of StreamIDs the table covers.
            LOG2SIZE OFFSET(0) NUMBITS(6) []
        ],
        /// `SMMU_CMDQ_CONS` (IHI 0070 §6.3.28); the index and wrap bits are [`crate::queue`]'s.
        pub CMDQ_CONS [
            /// Why the command at `RD` failed: 0 none, 1 illegal, 2 abort, 3 ATC timeout.
            ERR OFFSET(24) NUMBITS(7) []
        ]
    }

    register_bitfields! {u64,
        /// `SMMU_CMDQ_BASE` / `SMMU_EVENTQ_BASE` (IHI 0070 §6.3.26, §6.3.29).
        pub QUEUE_BASE [
            /// Read- (command queue) or write-allocate (event queue) hint.
            ALLOCATE OFFSET(62) NUMBITS(1) [],
            /// The queue's physical address bits [51:5].
            ADDR OFFSET(5) NUMBITS(47) [],
            /// log2 of the number of entries.
            LOG2SIZE OFFSET(0) NUMBITS(5) []
        ]
    }
}
