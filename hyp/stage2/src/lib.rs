//! Run-time translation-table geometry and granule-generic translation tables.
//!
//! Nothing here uses a compile-time page size: the granule, the number of levels, the start
//! level and the concatenated root tables are fields of one [`Geometry`] value computed at run
//! time, as the boot-time page size series for arm64 does with `pgtable-geometry`.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cpu;
pub mod granule;

pub use cpu::{CpuFeatures, GranuleRefusal, Stage};
pub use granule::Granule;
