//! One granule-generic translation table type for every regime, with one walker.
//!
//! [`PageTable`] owns a root (concatenated for stage 2 where the geometry says so), a
//! [`TableAlloc`] and a [`Maintenance`]. Every traversal is the one walker
//! ([`PageTable::walk`], KVM's `kvm_pgtable_walk`) run with a visitor: map, unmap, protect,
//! translate, `for_each_leaf`, destroy, the prepare pass that counts the tables an operation
//! needs, the fill of a fresh subtree before it is published and the collection of a
//! detached subtree's tables; the one-entry fast paths are its cached descent. The modules:
//! - `walk`: the walker, its visits and flags, and the walk cache it owns;
//! - `ctx`: [`Ctx`], the state visitors work with, and the descriptor encodings;
//! - `map`, `unmap`, `protect`: the operations, each a visitor;
//! - `invalidate`: TLB maintenance (immediate and batched) and freeing tables after it;
//! - `reserve`: the prepare pass and the reserve of fresh tables it fills.
//!
//! Updates follow three rules:
//! - **Prepare, then commit** (Hafnium): every table an operation needs is allocated before the
//!   first descriptor changes, so an allocation failure leaves the tables bit-identical.
//! - **Break-before-make** (Arm ARM D8.16.1): a valid descriptor is never replaced by a valid
//!   one with another output address, size, memory type or table-ness; it is first made
//!   invalid, then `DSB`, TLBI, `DSB`, `ISB`, then written. Permission-only changes are
//!   written in place and invalidated at the end of the operation.
//! - **Batched invalidation**: invalidations that can wait go to a pending list flushed once
//!   per operation: stage 2 `TLBI IPAS2E1IS` per entry, `DSB ISH`, `TLBI VMALLE1IS`, or one
//!   `TLBI VMALLS12E1IS` above 512 entries. Replacing a table by a block flushes the VMID.
//!   Tables emptied by an unmap are freed only after that flush.
//!
//! Fast paths (the lazy-fault, block and per-page-unmap patterns) are the walker's cached
//! descent without its iteration: they descend to the range's entries, check every
//! condition of the one case they handle before their first store, and otherwise leave the
//! work to the general path, having changed nothing, so the rules above hold unchanged. A map
//! of a run of same-size leaves in one table over invalid entries is the cache maintenance
//! plus the descriptor stores (no prepare pass, no flush); an unmap of one valid leaf is one
//! store plus its invalidation (the general walk still runs, after the store, when the leaf's
//! table became empty).
//!
//! **Descriptor stores.** Walkers read live tables concurrently, so every store to a live
//! descriptor is one single-copy-atomic 64-bit store (Arm ARM B2.2.1) through
//! [`TableAlloc::write_entry`] (`Relaxed`) or, for a table descriptor that publishes a fresh
//! subtree, [`TableAlloc::publish_entry`] (`Release`: the subtree's fill is ordered before
//! it). Only fresh tables (`FreshTable`: from the reserve, not yet published) are written in
//! bulk. What orders the `Relaxed` stores is the break-before-make sequence itself: the
//! `DSB ISHST` after the invalid store makes it visible to every walker before the TLBI, and
//! the `DSB ISH` after the TLBI completes the invalidation before the new store; the compiler
//! cannot move a store across them because hyp's [`Maintenance`] runs each operation as an
//! `asm!` block that may access memory (no `nomem`), a compiler barrier. Guest data is
//! ordered before the leaf that maps it by the clean to PoC (which ends in `DSB`) or by the
//! caller when it skips it.

mod ctx;
mod invalidate;
mod map;
mod protect;
mod reserve;
mod unmap;
mod walk;

#[cfg(test)]
mod tests;

pub use ctx::Ctx;
pub use invalidate::MAX_TLBI_BY_ADDRESS;
pub use walk::{Visit, VisitKind, WalkFlags};

use crate::addr::{InputAddress, Ipa, Pa, RangeError};
use crate::attrs::{self, AttrError, Attrs, DESC_VALID};
use crate::frames::TableAlloc;
use crate::geometry::{Geometry, Regime};
use crate::maint::Maintenance;
use crate::Granule;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;

/// The last level of every geometry: the level of pages.
const LAST_LEVEL: u32 = 3;

/// Why a table operation failed. The tables are unchanged whenever an error is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The table's input address kind is not the one its geometry's regime translates (an
    /// [`Ipa`] table with a stage-1 geometry, or a [`crate::Va`] table with a stage-2 one).
    WrongInputKind {
        /// The geometry's regime.
        regime: Regime,
        /// The table's input address kind.
        kind: &'static str,
    },
    /// The range reaches beyond the geometry's input size.
    OutOfRange {
        /// One past the last address asked for.
        end: u64,
        /// One past the last address the table can translate.
        limit: u64,
    },
    /// An address is not aligned to the granule.
    Misaligned {
        /// The address.
        addr: u64,
        /// The granule it must be aligned to.
        granule: Granule,
    },
    /// The output address range does not fit in 48 bits.
    OutputTooLarge {
        /// One past the last output address.
        end: u64,
    },
    /// The attributes cannot be expressed or are not allowed.
    Attrs(AttrError),
    /// The caller's range could not be made (so that `?` can build one on the way to an
    /// operation).
    Range(RangeError),
    /// The table allocator ran out of memory.
    NoMemory {
        /// Tables the operation needed.
        needed: usize,
        /// Tables that could be allocated.
        got: usize,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::WrongInputKind { regime, kind } => {
                write!(f, "{regime} tables do not translate {kind} addresses")
            }
            MapError::OutOfRange { end, limit } => write!(
                f,
                "range end {end:#018x} is beyond the table's input limit {limit:#018x}; \
                 use a larger input size"
            ),
            MapError::Misaligned { addr, granule } => write!(
                f,
                "address {addr:#018x} is not aligned to the {granule} granule"
            ),
            MapError::OutputTooLarge { end } => write!(
                f,
                "output range ends at {end:#018x}, beyond the 48-bit output address limit"
            ),
            MapError::Attrs(e) => write!(f, "{e}"),
            MapError::Range(e) => write!(f, "{e}"),
            MapError::NoMemory { needed, got } => write!(
                f,
                "out of table memory: needed {needed} tables, got {got}; tables unchanged"
            ),
        }
    }
}

impl From<RangeError> for MapError {
    fn from(e: RangeError) -> Self {
        MapError::Range(e)
    }
}

impl From<AttrError> for MapError {
    fn from(e: AttrError) -> Self {
        MapError::Attrs(e)
    }
}

/// Options of [`PageTable::map`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOpts {
    /// Map with pages only (no blocks), e.g. for dirty tracking at page granularity.
    pub pages_only: bool,
    /// Skip the cache maintenance of the mapped memory (the caller already did it, or the
    /// memory was never written through a cacheable alias).
    pub skip_cmo: bool,
}

impl MapOpts {
    /// Pages only.
    pub const PAGES: MapOpts = MapOpts {
        pages_only: true,
        skip_cmo: false,
    };
}

/// A translation table of any regime, with its own geometry.
///
/// `I` is the kind of address it translates: [`Ipa`] (the default) for a VM's stage 2,
/// [`crate::Va`] for an EL2 or EL1 stage 1; [`PageTable::new`] refuses a geometry of another
/// regime. Every operation takes ranges of that kind and outputs [`Pa`]s, so an IPA range
/// cannot be mapped into a stage-1 table, nor an IPA passed where a PA is meant:
///
/// ```compile_fail
/// # use stage2::*;
/// # let cpu = CpuFeatures::profile("max").unwrap();
/// let geo = Geometry::new(Regime::El2, Granule::K4, 48, &cpu).unwrap();
/// let mut el2: PageTable<VecAlloc, NoMaintenance, Va> =
///     PageTable::new(geo, VecAlloc::new(), NoMaintenance).unwrap();
/// let ipas = AddrRange::new(Ipa::new(0x4000_0000), Ipa::new(0x4000_1000)).unwrap();
/// el2.map(ipas, Pa::new(0x4000_0000), Attrs::data(), MapOpts::default()); // an IPA range
/// ```
///
/// ```compile_fail
/// # use stage2::*;
/// # let cpu = CpuFeatures::profile("max").unwrap();
/// let geo = Geometry::stage2(Granule::K4, 40, &cpu).unwrap();
/// let mut s2: PageTable<VecAlloc, NoMaintenance> =
///     PageTable::new(geo, VecAlloc::new(), NoMaintenance).unwrap();
/// let ipas = AddrRange::new(Ipa::new(0x4000_0000), Ipa::new(0x4000_1000)).unwrap();
/// s2.map(ipas, Ipa::new(0x8000_0000), Attrs::ram(), MapOpts::default()); // an IPA as the PA
/// ```
///
/// The same calls with the right kinds compile and run:
///
/// ```
/// # use stage2::*;
/// # let cpu = CpuFeatures::profile("max").unwrap();
/// let geo = Geometry::stage2(Granule::K4, 40, &cpu).unwrap();
/// let mut s2: PageTable<VecAlloc, NoMaintenance> =
///     PageTable::new(geo, VecAlloc::new(), NoMaintenance).unwrap();
/// let ipas = AddrRange::new(Ipa::new(0x4000_0000), Ipa::new(0x4000_1000)).unwrap();
/// s2.map(ipas, Pa::new(0x8000_0000), Attrs::ram(), MapOpts::default()).unwrap();
/// let (pa, _, level) = s2.translate(Ipa::new(0x4000_0123)).unwrap();
/// assert_eq!((pa, level), (Pa::new(0x8000_0123), 3));
/// s2.destroy();
/// ```
///
/// Not `Drop`: call [`PageTable::destroy`] to return every frame to the allocator.
#[derive(Debug)]
pub struct PageTable<A: TableAlloc, M: Maintenance, I: InputAddress = Ipa> {
    root: u64,
    ctx: Ctx<A, M>,
    input: PhantomData<I>,
}

impl<A: TableAlloc, M: Maintenance, I: InputAddress> PageTable<A, M, I> {
    /// Allocates an empty root (all concatenated root tables, contiguous and aligned to their
    /// total size) for `geometry`, whose regime must translate addresses of kind `I`.
    pub fn new(geometry: Geometry, mut alloc: A, maint: M) -> Result<Self, MapError> {
        if !I::translated_by(geometry.regime()) {
            return Err(MapError::WrongInputKind {
                regime: geometry.regime(),
                kind: I::KIND,
            });
        }
        let n = geometry.root_tables() as usize;
        let root = alloc
            .alloc(geometry.granule(), n)
            .ok_or(MapError::NoMemory { needed: n, got: 0 })?
            .get();
        Ok(PageTable {
            root,
            ctx: Ctx::new(geometry, alloc, maint, n),
            input: PhantomData,
        })
    }

    /// Like [`PageTable::new`], tagged with a VMID (stage 2).
    pub fn with_vmid(geometry: Geometry, vmid: u16, alloc: A, maint: M) -> Result<Self, MapError> {
        let mut t = Self::new(geometry, alloc, maint)?;
        t.ctx.vmid = vmid;
        Ok(t)
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.ctx.geo
    }

    /// The physical address of the root (the first concatenated table).
    pub fn root_pa(&self) -> Pa {
        Pa::new(self.root)
    }

    /// The VMID TLB maintenance uses (stage 2).
    pub fn vmid(&self) -> u16 {
        self.ctx.vmid
    }

    /// Sets the VMID (before the table is first used by a VM).
    pub fn set_vmid(&mut self, vmid: u16) {
        self.ctx.vmid = vmid;
    }

    /// `VTTBR_EL2`: VMID\[63:48\] and the root address (BADDR, aligned to the root's size).
    pub fn vttbr(&self) -> u64 {
        ((self.ctx.vmid as u64) << 48) | self.root
    }

    /// Tables in use, root tables included.
    pub fn tables(&self) -> usize {
        self.ctx.tables
    }

    /// Bytes of tables in use, root included (frames held in reserve not included).
    pub fn table_bytes(&self) -> u64 {
        self.ctx.tables as u64 * self.ctx.geo.table_bytes()
    }

    /// Frames held in reserve for the next operations (at most a handful).
    pub fn reserved_tables(&self) -> usize {
        self.ctx.reserve.len()
    }

    /// Returns the reserved frames to the allocator.
    pub fn release_reserve(&mut self) {
        self.ctx.trim_reserve(0);
    }

    /// The allocator.
    pub fn allocator(&self) -> &A {
        &self.ctx.alloc
    }

    /// The allocator, mutably (e.g. for failure injection in tests). Freeing or reusing a
    /// frame the table still uses through it corrupts the table.
    pub fn allocator_mut(&mut self) -> &mut A {
        &mut self.ctx.alloc
    }

    /// The maintenance sink.
    pub fn maintenance(&self) -> &M {
        &self.ctx.maint
    }

    /// The maintenance sink, mutably (e.g. to clear a recorder).
    pub fn maintenance_mut(&mut self) -> &mut M {
        &mut self.ctx.maint
    }

    /// The same table with another maintenance sink, e.g. once hyp's EL2 tables become live
    /// (built with [`crate::NoMaintenance`] while the MMU is off).
    pub fn with_maintenance<M2: Maintenance>(self, maint: M2) -> (PageTable<A, M2, I>, M) {
        let (ctx, old) = self.ctx.with_maintenance(maint);
        (
            PageTable {
                root: self.root,
                ctx,
                input: PhantomData,
            },
            old,
        )
    }

    /// Reads one descriptor by its physical address (for dumps and tests).
    pub fn read_entry(&self, entry_pa: Pa) -> u64 {
        self.ctx.read(entry_pa.get())
    }

    /// Checks a range an operation was asked for (forwards, as every [`crate::AddrRange`] is):
    /// inside the input space, aligned to the granule.
    #[inline(always)]
    fn check_range(&self, range: &Range<u64>) -> Result<(), MapError> {
        let mask = self.ctx.size(LAST_LEVEL) - 1;
        let limit = self.ctx.geo.input_limit();
        if range.end > limit || (range.start | range.end) & mask != 0 {
            return Err(self.range_error(range));
        }
        Ok(())
    }

    #[cold]
    fn range_error(&self, range: &Range<u64>) -> MapError {
        let g = self.ctx.geo.granule();
        let limit = self.ctx.geo.input_limit();
        if range.end > limit {
            MapError::OutOfRange {
                end: range.end,
                limit,
            }
        } else if range.start & (g.size() - 1) != 0 {
            MapError::Misaligned {
                addr: range.start,
                granule: g,
            }
        } else {
            MapError::Misaligned {
                addr: range.end,
                granule: g,
            }
        }
    }

    /// Translates one input address: (output address, attributes, level of the leaf).
    pub fn translate(&mut self, addr: I) -> Option<(Pa, Attrs, u32)> {
        let addr = addr.raw();
        let geo = self.ctx.geo;
        if addr >= geo.input_limit() {
            return None;
        }
        let page = addr & !(geo.page_size() - 1);
        let mut found = None;
        let _: Result<(), MapError> = self.walk_in(
            page..page + geo.page_size(),
            WalkFlags::LEAF,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                if v.old & DESC_VALID != 0 {
                    let size = c.size(v.level);
                    let oa = Pa::new(c.leaf_oa(v.old, v.level) + (addr & (size - 1)));
                    found = Some((oa, attrs::decode(c.geo.regime(), v.old), v.level));
                }
                Ok(())
            },
        );
        found
    }

    /// Calls `f(input, output, size)` for every valid leaf (block or page) of the whole
    /// input space, in address order: a visitor of the one walker (for audits: every leaf of a
    /// VM's stage 2 must lie in that VM's memory).
    pub fn for_each_leaf(&mut self, mut f: impl FnMut(I, Pa, u64)) {
        let limit = self.ctx.geo.input_limit();
        let _: Result<(), MapError> = self.walk_in(
            0..limit,
            WalkFlags::LEAF,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                if v.old & DESC_VALID != 0 {
                    let size = c.size(v.level);
                    let input = I::from_raw(v.addr & !(size - 1));
                    f(input, Pa::new(c.leaf_oa(v.old, v.level)), size);
                }
                Ok(())
            },
        );
    }

    /// Frees every table (root included) and the reserve, and returns the allocator and the
    /// maintenance sink. For stage 2 the VMID is flushed first.
    pub fn destroy(mut self) -> (A, M) {
        let limit = self.ctx.geo.input_limit();
        let mut tables = Vec::new();
        // Every table below the root, each after the tables below it.
        let _: Result<(), MapError> = self.walk_in(
            0..limit,
            WalkFlags::TABLE_POST,
            &mut |c: &mut Ctx<A, M>, v: &mut Visit| {
                tables.push(c.table_pa(v.entry));
                Ok(())
            },
        );
        if self.ctx.geo.regime() == Regime::Stage2 {
            self.ctx.invalidate_all_now();
        }
        for t in tables {
            self.ctx.free_table(t);
        }
        self.release_reserve();
        let g = self.ctx.geo.granule();
        let n = self.ctx.geo.root_tables() as usize;
        self.ctx.alloc.free(Pa::new(self.root), g, n);
        self.ctx.tables -= n;
        (self.ctx.alloc, self.ctx.maint)
    }
}
