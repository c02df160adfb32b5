//! Run-time translation-table geometry and granule-generic translation tables.
//!
//! Nothing here uses a compile-time page size: the granule, the number of levels, the start
//! level and the concatenated root tables are fields of one [`Geometry`] value computed at run
//! time, as the boot-time page size series for arm64 does with `pgtable-geometry`.
//!
//! # API summary
//! - [`Regime`] `{ Stage2, El2, El1 }`.
//! - `Geometry::new(regime: Regime, granule: Granule, input_bits: u32, cpu: &CpuFeatures)
//!   -> Result<Geometry, GeometryError>` and `Geometry::stage2(granule, ipa_bits, cpu)`.
//!   Accessors: `granule()`, `regime()`, `input_bits()`, `start_level()`, `levels()`,
//!   `root_tables()`, `root_entries()`, `block_size(level) -> Option<u64>`,
//!   `level_shift(level)`, `entry_size(level)`, `table_bytes()` (one table), `root_bytes()`.
//!   Registers: `tcr_el2(pa_bits) -> u64`, `tcr_el1(pa_bits)`, `vtcr_el2(pa_bits, vmid16)`,
//!   `t0sz()`, `sl0()`, `tg0()`; constants [`MAIR_EL2`], [`MAIR_EL1`], [`ATTR_IDX_NORMAL`],
//!   [`ATTR_IDX_DEVICE`]; [`tlbi_ipa_operand`] (IPA >> 12 for every granule).
//! - [`Attrs`] `{ read, write, exec, mem: MemType }` with `code()`, `rodata()`, `data()`,
//!   `device()`, `ram()`; [`attrs::encode`] is the only place attributes become bits.
//! - [`TableAlloc`]: `alloc(granule, count) -> Option<u64>` (contiguous, aligned to the total
//!   size, zeroed), `free(pa, granule, count)`, `table(&self, pa, granule) -> &[u64]`,
//!   `table_mut(&mut self, pa, granule) -> &mut [u64]`. [`VecAlloc`] backs it with a `Vec`.
//! - [`Maintenance`]: `op(&mut self, MaintOp)` (+ optional `store` hook); [`NoMaintenance`],
//!   [`Counter`], [`Recorder`] + [`check_bbm`].
//! - [`PageTable<A, M>`]: `new(geometry, alloc, maint) -> Result<Self, MapError>`,
//!   `with_vmid(geometry, vmid, alloc, maint)`, `root_pa()`, `vttbr()`,
//!   `map(range, out, attrs, MapOpts) -> Result<(), MapError>`, `unmap(range)`,
//!   `protect(range, attrs)`, `translate(addr) -> Option<(u64, Attrs, u32)>`,
//!   `walk(range, WalkFlags, &mut visitor)`, `table_bytes()`, `tables()`,
//!   `destroy(self) -> (A, M)`, `with_maintenance(self, m2) -> (PageTable<A, M2>, M)`.
//! - [`VmidAllocator`]: `for_cpu(&CpuFeatures)`, `alloc() -> Result<VmidGrant, VmidError>`,
//!   `free(Vmid)`.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod attrs;
pub mod cpu;
pub mod frames;
pub mod geometry;
pub mod granule;
pub mod maint;
pub mod table;
pub mod vmid;

pub use attrs::{AttrError, Attrs, MemType};
pub use cpu::{CpuFeatures, GranuleRefusal, IdRegs, Stage};
pub use frames::{TableAlloc, VecAlloc};
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
