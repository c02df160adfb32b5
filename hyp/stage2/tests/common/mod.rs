//! Shorthands the integration tests share: their addresses are numbers, the API's typed.
#![allow(dead_code)]

use stage2::{AddrRange, Address, Attrs, Pa};

/// The input range `r` of the table's kind (stage 2: [`stage2::Ipa`], stage 1:
/// [`stage2::Va`]).
pub fn rng<A: Address>(r: core::ops::Range<u64>) -> AddrRange<A> {
    AddrRange::new(A::from_raw(r.start), A::from_raw(r.end)).expect("a forwards range")
}

/// The input address `a` of the table's kind.
pub fn at<A: Address>(a: u64) -> A {
    A::from_raw(a)
}

/// A translation with its output address as a number.
pub fn raw_t((pa, attrs, level): (Pa, Attrs, u32)) -> (u64, Attrs, u32) {
    (pa.get(), attrs, level)
}
