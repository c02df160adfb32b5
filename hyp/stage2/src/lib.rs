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
//! # API (final signatures)
//! - [`Regime`] `{ Stage2, El2, El1 }`.
//! - `Geometry::new(regime: Regime, granule: Granule, input_bits: u32, cpu: &CpuFeatures)
//!   -> Result<Geometry, GeometryError>`; `Geometry::stage2(granule, ipa_bits, cpu)`.
//!   `input_bits` is 32..=48 (52 is refused: no LPA/LPA2); stage 2 also checks `PARange` and
//!   `TGran*_2`, stage 1 checks `TGran*`. `Geometry` is `Copy`. Accessors: `granule()`,
//!   `regime()`, `input_bits()`, `input_limit()`, `start_level()`, `levels()`,
//!   `root_tables()`, `root_entries()`, `root_bytes()`, `block_size(level) -> Option<u64>`,
//!   `level_shift(level) -> u32`, `entry_size(level) -> u64`, `table_bytes()` (one table),
//!   `page_size()`, `fwb()`, `dic()`.
//!   Registers: `tcr_el2(pa_bits) -> u64`, `tcr_el1(pa_bits) -> u64`,
//!   `vtcr_el2(pa_bits, vmid16: bool) -> u64`, `t0sz()`, `sl0()`, `tg0()`; PS is capped at
//!   48 bits. Constants [`MAIR_EL2`] (= [`MAIR_EL1`] = `0xff04`), [`ATTR_IDX_DEVICE`] (0,
//!   Device-nGnRE), [`ATTR_IDX_NORMAL`] (1, Normal WB RAWA). [`tlbi_ipa_operand`] (IPA >> 12
//!   for every granule) and [`tlbi_va_operand`].
//! - [`Attrs`] `{ read, write, exec, mem: MemType }` with `code()`, `rodata()`, `data()`,
//!   `device()`, `ram()`, `read_only()`; [`attrs::encode`] / [`attrs::encode_with`]
//!   (`fwb: bool`) are the only place attributes become descriptor bits (refuses W+X at
//!   EL2, executable device memory, no-read); [`attrs::decode`] reads them back.
//!   **FEAT_S2FWB:** when `Geometry::fwb()` is true (the CPU has FWB) stage-2 tables use the
//!   FWB encoding and skip the clean to PoC, so hyp must set `HCR_EL2.FWB`.
//! - [`TableAlloc`]: `alloc(&mut self, granule, count) -> Option<u64>` (contiguous, aligned
//!   to `count * granule.size()`, zeroed), `free(&mut self, pa, granule, count)`,
//!   `table(&self, pa, granule) -> &[AtomicU64]` (live tables: single-copy-atomic accesses
//!   only), `fresh_table(&mut self, pa, granule) -> &mut [AtomicU64]` (tables not yet
//!   published, filled in bulk through `get_mut`), and provided
//!   `read_entry(&self, entry_pa, granule) -> u64` (`Relaxed` load),
//!   `write_entry(&mut self, entry_pa, granule, value)` (`Relaxed` store) and
//!   `publish_entry(..)` (`Release` store of a table descriptor); override them for speed,
//!   each must stay one 64-bit access. Implemented for `&mut T`. [`VecAlloc`] is the host one
//!   (`new()`, `with_pool(bytes)`, `fail_after(Option<u64>)`, `live_allocs()`,
//!   `live_bytes()`, `total_allocs()`, `total_frees()`, `bad_frees`); [`StoreAudit`] wraps one
//!   for tests and catches bulk or bypassing writes to live tables and table descriptors
//!   published without `Release` (`new(inner, geometry)`, `check()`, `take_stores()`).
//! - [`Maintenance`]: `op(&mut self, MaintOp)` plus a provided no-op
//!   `store(&mut self, entry_pa, input, level, old, new)` hook. [`NoMaintenance`] (tables no
//!   walker sees yet), [`Counter`], [`Recorder`] (+ [`BbmChecker`] / [`check_bbm`]).
//! - [`PageTable<A, M>`]: `new(geometry, alloc, maint) -> Result<Self, MapError>`,
//!   `with_vmid(geometry, vmid: u16, alloc, maint)`, `set_vmid(u16)`, `vmid()`,
//!   `root_pa() -> u64`, `vttbr() -> u64`, `geometry() -> &Geometry`,
//!   `map(&mut self, range: Range<u64>, out: u64, attrs: Attrs, opts: MapOpts) -> Result<(), MapError>`
//!   (`MapOpts { pages_only, skip_cmo }`, `MapOpts::PAGES`), `unmap(range) -> Result<(), MapError>`,
//!   `protect(range, attrs) -> Result<(), MapError>`,
//!   `translate(&mut self, addr) -> Option<(u64, Attrs, u32)>` (output, attributes, level),
//!   `walk<E: From<MapError>>(range, WalkFlags, &mut impl FnMut(&mut Ctx<A, M>, &mut Visit) -> Result<(), E>)`,
//!   `tables()`, `table_bytes()` (root included), `reserved_tables()`, `release_reserve()`,
//!   `allocator()`, `allocator_mut()`, `maintenance()`, `maintenance_mut()`,
//!   `read_entry(entry_pa)`, `with_maintenance(self, m2) -> (PageTable<A, M2>, M)`,
//!   `destroy(self) -> (A, M)` (frees every frame; not `Drop`).
//! - [`VmidAllocator`]: `new(bits)`, `for_cpu(&CpuFeatures)`,
//!   `alloc(&mut impl Maintenance) -> Result<VmidGrant { vmid: Vmid, flushed: bool }, VmidError>`
//!   (on rollover it issues the `TLBI ALLE1IS` sequence itself before returning),
//!   `free(Vmid) -> Result<(), VmidError>`; never VMID 0, never two live VMs with one VMID,
//!   never a freed VMID before a flush.
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
