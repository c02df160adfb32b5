//! Run-time translation-table geometry and granule-generic translation tables.
//!
//! Nothing here uses a compile-time page size: the granule, the number of levels, the start
//! level and the concatenated root tables are fields of one [`Geometry`] value computed at run
//! time, as the boot-time page size series for arm64 does with `pgtable-geometry`. One table
//! type, [`PageTable`], serves every regime (a VM's stage 2, hyp's own EL2 stage 1, an EL1
//! stage 1) with one walker ([`PageTable::walk`]): map, unmap, protect, translate, destroy,
//! the prepare pass, the fill of a fresh subtree and the collection of a detached one are
//! visitors of it, and the one-entry fast paths are its cached descent without the iteration.
//!
//! `no_std` + `alloc`, `forbid(unsafe_code)`: table memory is reached through [`TableAlloc`]
//! and every barrier/TLBI/cache operation goes through [`Maintenance`]; the `unsafe` lives in
//! their implementations in hyp.
//!
//! # The crate at a glance
//! - Addresses: [`Ipa`], [`Pa`] and [`Va`] ([`addr`]), and one range type, [`AddrRange`].
//!   A [`PageTable`] is typed by its input kind ([`Ipa`] for stage 2, [`Va`] for stage 1),
//!   outputs [`Pa`]s, and names its table memory by [`Pa`].
//! - Geometry: [`Granule`], [`Regime`] and [`Geometry`] (levels, root tables, the
//!   `TCR_EL2`/`TCR_EL1`/`VTCR_EL2` fields, [`Geometry::table_budget`]), checked against the
//!   CPU's [`CpuFeatures`]; [`tlbi_ipa_operand`] and [`tlbi_va_operand`] encode TLBI operands.
//! - Attributes: [`Attrs`] and [`MemType`]; [`attrs`] is the only place they become
//!   descriptor bits (FEAT_S2FWB encoding included, see [`Geometry::fwb`]).
//! - Tables: [`PageTable`] ([`PageTable::map`], [`PageTable::unmap`], [`PageTable::protect`],
//!   [`PageTable::translate`], [`PageTable::for_each_leaf`], [`PageTable::walk`]), with
//!   [`MapOpts`], [`WalkFlags`], [`Visit`] and [`MapError`].
//! - Seams to the hardware: [`TableAlloc`] (table memory; [`VecAlloc`] and [`StoreAudit`] on
//!   the host) and [`Maintenance`] (every [`MaintOp`]; [`NoMaintenance`], [`Counter`],
//!   [`Recorder`] and [`check_bbm`] on the host).
//! - VMIDs: [`VmidAllocator`].
//!
//! # Rules the implementation follows
//! - Prepare, then commit: every table a map/unmap/protect needs is allocated before the
//!   first descriptor changes; on [`MapError::NoMemory`] the tables are bit-identical.
//! - Break-before-make (Arm ARM D8.16.1) for any change of output address, size, memory type
//!   or table-ness; stage-2 invalidation is `TLBI IPAS2E1IS` per entry, `DSB ISH`,
//!   `TLBI VMALLE1IS`, or one `TLBI VMALLS12E1IS` above 512 entries; replacing a table by a
//!   block flushes the VMID. Tables emptied by unmap are freed after the flush.
//! - Live descriptors are written with one single-copy-atomic 64-bit store each (Arm ARM
//!   B2.2.1; `AtomicU64`), a table descriptor that publishes a subtree with `Release`; only
//!   tables no walker can reach yet are filled in bulk.
//! - Stage 2 cleans mapped cacheable memory to PoC unless FEAT_FWB and invalidates the
//!   I-cache before an executable mapping unless `CTR_EL0.DIC`.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod addr;
pub mod attrs;
pub mod cpu;
pub mod frames;
pub mod geometry;
pub mod granule;
pub mod maint;
pub mod table;
pub mod vmid;

pub use addr::{AddrRange, Address, Alignment, InputAddress, Ipa, Pa, RangeError, Va};
pub use attrs::{AttrError, Attrs, MemType};
pub use cpu::{CpuFeatures, GranuleRefusal, IdRegs, Stage};
pub use frames::{AuditViolation, LiveStore, StoreAudit, TableAlloc, VecAlloc};
pub use geometry::{
    tlbi_ipa_operand, tlbi_va_operand, Geometry, GeometryError, Regime, ATTR_IDX_DEVICE,
    ATTR_IDX_NORMAL, MAIR_EL1, MAIR_EL2,
};
pub use granule::Granule;
pub use maint::{
    check_bbm, BbmChecker, BbmViolation, Counter, Event, MaintOp, Maintenance, NoMaintenance,
    Recorder,
};
pub use table::{Ctx, MapError, MapOpts, PageTable, Visit, VisitKind, WalkFlags};
pub use vmid::{Vmid, VmidAllocator, VmidError, VmidGrant};
