//! Typed addresses and one range type.
//!
//! Three address spaces meet in a hypervisor: a guest's intermediate physical addresses
//! ([`Ipa`], the input of stage 2), physical addresses ([`Pa`], the output of every regime and
//! what table memory is named by) and virtual addresses ([`Va`], the input of an EL2 or EL1
//! stage 1). Each is its own `#[repr(transparent)]` newtype over `u64` (Hafnium's `addr.h`,
//! vm-memory's `GuestAddress`), so the compiler refuses an IPA where a PA is meant and a
//! [`crate::PageTable`] takes input addresses of its regime only. Nothing converts one kind into
//! another implicitly: there is no `From<u64>` and no `From` between kinds. Where two kinds
//! really are equal, the conversion is named for the reason ([`Pa::identity_va`] and
//! [`Va::identity_pa`] for identity-mapped memory); elsewhere an address of one kind is found
//! from one of another by an offset (`pa_base + (ipa - ipa_base)`).
//!
//! Arithmetic takes `u64` offsets: `+`/`-` behave as `u64`'s do (overflow is a bug: it
//! panics in debug builds), `checked_*` return `None` on overflow, `wrapping_*` wrap. The
//! difference of two addresses of one kind is a `u64`. [`AddrRange`] is the one range type:
//! `start <= end` always holds, so no code that takes one checks it again.

use crate::Granule;
use core::fmt;
use core::ops::{Add, AddAssign, Range, Sub, SubAssign};

/// Something an address can be aligned to: a byte count (a power of two) or a [`Granule`].
pub trait Alignment: Copy {
    /// The alignment in bytes (a power of two).
    fn bytes(self) -> u64;
}

impl Alignment for u64 {
    #[inline(always)]
    fn bytes(self) -> u64 {
        self
    }
}

impl Alignment for Granule {
    #[inline(always)]
    fn bytes(self) -> u64 {
        self.size()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// What the three address kinds share (implemented by [`Ipa`], [`Pa`] and [`Va`] only), so
/// that [`AddrRange`] works with any of them.
pub trait Address:
    sealed::Sealed + Copy + Ord + fmt::Debug + fmt::Display + fmt::LowerHex + 'static
{
    /// The kind's short name, as [`fmt::Debug`] prints it: `Ipa`, `Pa` or `Va`.
    const KIND: &'static str;

    /// The address of this kind at `raw`.
    fn from_raw(raw: u64) -> Self;

    /// The address as a number.
    fn raw(self) -> u64;
}

/// The address kind a translation regime takes as input: [`Ipa`] for stage 2, [`Va`] for an
/// EL2 or EL1 stage 1. A [`crate::PageTable`] is typed by it, so a caller cannot map an IPA
/// range into a stage-1 table (or a VA range into a VM's stage 2).
pub trait InputAddress: Address {
    /// Whether tables of `regime` translate addresses of this kind.
    fn translated_by(regime: crate::Regime) -> bool;
}

macro_rules! address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Address 0.
            pub const ZERO: $name = $name(0);

            /// The address `raw`.
            #[inline(always)]
            pub const fn new(raw: u64) -> $name {
                $name(raw)
            }

            /// The address as a number.
            #[inline(always)]
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + offset`, or `None` on overflow.
            #[inline(always)]
            pub const fn checked_add(self, offset: u64) -> Option<$name> {
                match self.0.checked_add(offset) {
                    Some(a) => Some($name(a)),
                    None => None,
                }
            }

            /// `self - offset`, or `None` below 0.
            #[inline(always)]
            pub const fn checked_sub(self, offset: u64) -> Option<$name> {
                match self.0.checked_sub(offset) {
                    Some(a) => Some($name(a)),
                    None => None,
                }
            }

            /// `self + offset`, wrapping at 2^64.
            #[inline(always)]
            pub const fn wrapping_add(self, offset: u64) -> $name {
                $name(self.0.wrapping_add(offset))
            }

            /// `self - offset`, wrapping at 0.
            #[inline(always)]
            pub const fn wrapping_sub(self, offset: u64) -> $name {
                $name(self.0.wrapping_sub(offset))
            }

            /// `self - base` in bytes, or `None` if `self` is below `base`.
            #[inline(always)]
            pub const fn checked_offset_from(self, base: $name) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// The address rounded down to a multiple of `align` (a power of two).
            #[inline(always)]
            pub fn align_down(self, align: impl Alignment) -> $name {
                let a = align.bytes();
                debug_assert!(a.is_power_of_two(), "alignment {a:#x} is not a power of two");
                $name(self.0 & !(a - 1))
            }

            /// The address rounded up to a multiple of `align` (a power of two), or `None`
            /// when that is beyond 2^64 - 1.
            #[inline(always)]
            pub fn align_up(self, align: impl Alignment) -> Option<$name> {
                let a = align.bytes();
                debug_assert!(a.is_power_of_two(), "alignment {a:#x} is not a power of two");
                match self.0.checked_add(a - 1) {
                    Some(x) => Some($name(x & !(a - 1))),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `align` (a power of two).
            #[inline(always)]
            pub fn is_aligned(self, align: impl Alignment) -> bool {
                let a = align.bytes();
                debug_assert!(a.is_power_of_two(), "alignment {a:#x} is not a power of two");
                self.0 & (a - 1) == 0
            }
        }

        impl sealed::Sealed for $name {}

        impl Address for $name {
            const KIND: &'static str = stringify!($name);

            #[inline(always)]
            fn from_raw(raw: u64) -> $name {
                $name(raw)
            }

            #[inline(always)]
            fn raw(self) -> u64 {
                self.0
            }
        }

        /// `Kind(0x...)`.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        /// `0x...` (as `{:#x}` of the number).
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        /// The number in hex, with the formatter's flags (`{:#018x}`, `{:x}`).
        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl Add<u64> for $name {
            type Output = $name;
            #[inline(always)]
            fn add(self, offset: u64) -> $name {
                $name(self.0 + offset)
            }
        }

        impl AddAssign<u64> for $name {
            #[inline(always)]
            fn add_assign(&mut self, offset: u64) {
                self.0 += offset;
            }
        }

        impl Sub<u64> for $name {
            type Output = $name;
            #[inline(always)]
            fn sub(self, offset: u64) -> $name {
                $name(self.0 - offset)
            }
        }

        impl SubAssign<u64> for $name {
            #[inline(always)]
            fn sub_assign(&mut self, offset: u64) {
                self.0 -= offset;
            }
        }

        /// The distance in bytes between two addresses of one kind.
        impl Sub<$name> for $name {
            type Output = u64;
            #[inline(always)]
            fn sub(self, base: $name) -> u64 {
                self.0 - base.0
            }
        }
    };
}

address! {
    /// A guest's intermediate physical address: what the guest calls physical, the input of
    /// its VM's stage 2.
    Ipa
}

address! {
    /// A physical address: the output of every translation regime, and the name of table
    /// memory ([`crate::TableAlloc`]).
    Pa
}

address! {
    /// A virtual address: the input of an EL2 or EL1 stage-1 table.
    Va
}

impl Pa {
    /// The virtual address of this physical address in memory that is identity-mapped (hyp's
    /// own EL2 map of RAM and devices, a guest's identity stage 1 of its RAM).
    #[inline(always)]
    pub const fn identity_va(self) -> Va {
        Va(self.0)
    }
}

impl Ipa {
    /// The physical address at the same address, for a stage-2 region a VM sees at IPA = PA:
    /// its slice of the PCI memory window, whose BARs the device decodes at host physical
    /// addresses.
    #[inline(always)]
    pub const fn identity_pa(self) -> Pa {
        Pa(self.0)
    }
}

impl Va {
    /// The physical address of this virtual address in memory that is identity-mapped (the
    /// inverse of [`Pa::identity_va`]).
    #[inline(always)]
    pub const fn identity_pa(self) -> Pa {
        Pa(self.0)
    }
}

impl InputAddress for Ipa {
    #[inline(always)]
    fn translated_by(regime: crate::Regime) -> bool {
        regime == crate::Regime::Stage2
    }
}

impl InputAddress for Va {
    #[inline(always)]
    fn translated_by(regime: crate::Regime) -> bool {
        regime != crate::Regime::Stage2
    }
}

/// Why an [`AddrRange`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// The end is below the start.
    Backwards {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// `start + len` is beyond 2^64 - 1.
    Overflow {
        /// Start.
        start: u64,
        /// Length.
        len: u64,
    },
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RangeError::Backwards { start, end } => {
                write!(f, "range {start:#018x}..{end:#018x} ends before it starts")
            }
            RangeError::Overflow { start, len } => write!(
                f,
                "range of {len:#x} bytes from {start:#018x} goes beyond the last address"
            ),
        }
    }
}

/// The addresses `start..end` of one kind (`end` excluded); `start <= end` always holds. The
/// default is the empty range at address 0 (for fixed-size arrays filled later).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AddrRange<A> {
    start: A,
    end: A,
}

impl<A: Address> AddrRange<A> {
    /// `start..end`, or an error if `end < start`.
    #[inline(always)]
    pub fn new(start: A, end: A) -> Result<Self, RangeError> {
        if end < start {
            return Err(RangeError::Backwards {
                start: start.raw(),
                end: end.raw(),
            });
        }
        Ok(AddrRange { start, end })
    }

    /// The `len` bytes from `start`, or an error if they go beyond 2^64 - 1.
    #[inline(always)]
    pub fn from_start_len(start: A, len: u64) -> Result<Self, RangeError> {
        match start.raw().checked_add(len) {
            Some(end) => Ok(AddrRange {
                start,
                end: A::from_raw(end),
            }),
            None => Err(RangeError::Overflow {
                start: start.raw(),
                len,
            }),
        }
    }

    /// The empty range at `at`.
    #[inline(always)]
    pub fn empty(at: A) -> Self {
        AddrRange { start: at, end: at }
    }

    /// The first address.
    #[inline(always)]
    pub fn start(&self) -> A {
        self.start
    }

    /// One past the last address.
    #[inline(always)]
    pub fn end(&self) -> A {
        self.end
    }

    /// The size in bytes.
    #[inline(always)]
    pub fn len(&self) -> u64 {
        self.end.raw() - self.start.raw()
    }

    /// Whether the range holds no address.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether `addr` lies in the range.
    #[inline(always)]
    pub fn contains(&self, addr: A) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether every address of `other` lies in the range (an empty `other` lies in any range
    /// that holds or ends at its position).
    #[inline(always)]
    pub fn contains_range(&self, other: &Self) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two ranges share an address (an empty range shares none).
    #[inline(always)]
    pub fn overlaps(&self, other: &Self) -> bool {
        self.start < other.end && other.start < self.end && !self.is_empty() && !other.is_empty()
    }

    /// Whether both ends are multiples of `align` (a power of two).
    #[inline(always)]
    pub fn is_aligned(&self, align: impl Alignment) -> bool {
        let a = align.bytes();
        (self.start.raw() | self.end.raw()) & (a - 1) == 0
    }

    /// The addresses `start`, `start + step`, ... below `end` (nothing when `step` is 0).
    pub fn step_by(&self, step: u64) -> StepBy<A> {
        StepBy {
            next: self.start.raw(),
            end: if step == 0 {
                self.start.raw()
            } else {
                self.end.raw()
            },
            step,
            kind: core::marker::PhantomData,
        }
    }

    /// The range as numbers, for arithmetic that leaves the type system (the walker's
    /// internals, registers).
    #[inline(always)]
    pub fn raw(&self) -> Range<u64> {
        self.start.raw()..self.end.raw()
    }
}

impl AddrRange<Pa> {
    /// The virtual addresses of these physical ones in identity-mapped memory
    /// ([`Pa::identity_va`]).
    #[inline(always)]
    pub fn identity_va(&self) -> AddrRange<Va> {
        AddrRange {
            start: self.start.identity_va(),
            end: self.end.identity_va(),
        }
    }
}

impl AddrRange<Va> {
    /// The physical addresses of these virtual ones in identity-mapped memory
    /// ([`Va::identity_pa`]).
    #[inline(always)]
    pub fn identity_pa(&self) -> AddrRange<Pa> {
        AddrRange {
            start: self.start.identity_pa(),
            end: self.end.identity_pa(),
        }
    }
}

impl<A: Address> TryFrom<Range<A>> for AddrRange<A> {
    type Error = RangeError;

    /// `start..end`, refused if backwards.
    #[inline(always)]
    fn try_from(r: Range<A>) -> Result<Self, RangeError> {
        AddrRange::new(r.start, r.end)
    }
}

impl<A: Address> TryFrom<(A, u64)> for AddrRange<A> {
    type Error = RangeError;

    /// `(start, len)`, refused on overflow.
    #[inline(always)]
    fn try_from((start, len): (A, u64)) -> Result<Self, RangeError> {
        AddrRange::from_start_len(start, len)
    }
}

/// `Kind(0x...)..Kind(0x...)`.
impl<A: Address> fmt::Debug for AddrRange<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}..{:?}", self.start, self.end)
    }
}

/// `0x.....0x...` (`{:#x}..{:#x}`: the start, then one past the end).
impl<A: Address> fmt::Display for AddrRange<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// The iterator of [`AddrRange::step_by`].
#[derive(Clone, Debug)]
pub struct StepBy<A> {
    next: u64,
    end: u64,
    step: u64,
    kind: core::marker::PhantomData<A>,
}

impl<A: Address> Iterator for StepBy<A> {
    type Item = A;

    #[inline]
    fn next(&mut self) -> Option<A> {
        if self.next >= self.end {
            return None;
        }
        let a = self.next;
        // At the top of the address space the next step would overflow: stop there.
        self.next = a.checked_add(self.step).unwrap_or(self.end);
        Some(A::from_raw(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    #[test]
    fn arithmetic_checks_and_wraps() {
        let top = Pa::new(u64::MAX - 0xfff);
        assert_eq!(top.checked_add(0xfff), Some(Pa::new(u64::MAX)));
        assert_eq!(top.checked_add(0x1000), None);
        assert_eq!(top.wrapping_add(0x1000), Pa::ZERO);
        assert_eq!(Ipa::new(0x1000).checked_sub(0x1001), None);
        assert_eq!(Ipa::ZERO.wrapping_sub(1), Ipa::new(u64::MAX));
        assert_eq!(Ipa::new(0x5000) - Ipa::new(0x1000), 0x4000);
        assert_eq!(Va::new(0x1000).checked_offset_from(Va::new(0x2000)), None);
        assert_eq!(
            Va::new(0x3000).checked_offset_from(Va::new(0x2000)),
            Some(0x1000)
        );
        let mut a = Pa::new(0x1000);
        a += 0x10;
        a -= 0x8;
        assert_eq!(a + 8 - 0x10, Pa::new(0x1000));
    }

    #[test]
    fn alignment_by_size_and_granule() {
        let a = Ipa::new(0x1_2345);
        assert_eq!(a.align_down(Granule::K4), Ipa::new(0x1_2000));
        assert_eq!(a.align_up(Granule::K16), Some(Ipa::new(0x1_4000)));
        assert_eq!(a.align_up(0x10_0000u64), Some(Ipa::new(0x10_0000)));
        assert_eq!(
            Ipa::new(0x4000).align_up(Granule::K16),
            Some(Ipa::new(0x4000))
        );
        assert!(Ipa::new(0x1_0000).is_aligned(Granule::K64));
        assert!(!Ipa::new(0x1_4000).is_aligned(Granule::K64));
        assert!(Ipa::ZERO.is_aligned(1u64 << 63));
        // Rounding up past the last address is refused, not wrapped to 0.
        assert_eq!(Pa::new(u64::MAX - 5).align_up(Granule::K4), None);
        assert_eq!(
            Pa::new(u64::MAX).align_down(Granule::K64),
            Pa::new(u64::MAX - 0xffff)
        );
    }

    #[test]
    fn formatting() {
        let a = Pa::new(0x4000_0000);
        assert_eq!(format!("{a}"), "0x40000000");
        assert_eq!(format!("{a:?}"), "Pa(0x40000000)");
        assert_eq!(format!("{a:#018x}"), "0x0000000040000000");
        assert_eq!(format!("{:x}", Va::new(0xab)), "ab");
        let r = AddrRange::new(Ipa::new(0x1000), Ipa::new(0x3000)).unwrap();
        assert_eq!(format!("{r}"), "0x1000..0x3000");
        assert_eq!(format!("{r:?}"), "Ipa(0x1000)..Ipa(0x3000)");
    }

    #[test]
    fn ranges_refuse_backwards_and_overflow() {
        assert_eq!(
            AddrRange::new(Pa::new(0x2000), Pa::new(0x1000)),
            Err(RangeError::Backwards {
                start: 0x2000,
                end: 0x1000
            })
        );
        assert_eq!(
            AddrRange::from_start_len(Pa::new(u64::MAX), 2),
            Err(RangeError::Overflow {
                start: u64::MAX,
                len: 2
            })
        );
        // The end is exclusive, so the last byte of the address space is out of reach.
        let last = AddrRange::from_start_len(Pa::new(u64::MAX - 0xfff), 0xfff).unwrap();
        assert_eq!(last.end(), Pa::new(u64::MAX));
        assert_eq!(last.len(), 0xfff);
        assert!(AddrRange::from_start_len(Pa::new(u64::MAX - 0xfff), 0x1000).is_err());
        assert_eq!(
            AddrRange::try_from(Va::new(8)..Va::new(4)).map_err(|e| format!("{e}")),
            Err("range 0x0000000000000008..0x0000000000000004 ends before it starts".into())
        );
        assert_eq!(
            AddrRange::try_from((Va::new(8), 4)),
            AddrRange::new(Va::new(8), Va::new(12))
        );
    }

    #[test]
    fn empty_ranges_hold_and_overlap_nothing() {
        let e = AddrRange::empty(Ipa::new(0x2000));
        let r = AddrRange::new(Ipa::new(0x1000), Ipa::new(0x3000)).unwrap();
        assert!(e.is_empty());
        assert_eq!(e.len(), 0);
        assert!(!e.contains(Ipa::new(0x2000)));
        assert!(!e.overlaps(&r) && !r.overlaps(&e));
        assert!(r.contains_range(&e));
        assert_eq!(e.step_by(0x1000).count(), 0);
        assert_eq!(AddrRange::<Pa>::default(), AddrRange::empty(Pa::ZERO));
    }

    #[test]
    fn contains_and_overlaps_at_the_edges() {
        let r = AddrRange::new(Ipa::new(0x1000), Ipa::new(0x3000)).unwrap();
        assert!(r.contains(Ipa::new(0x1000)) && r.contains(Ipa::new(0x2fff)));
        assert!(!r.contains(Ipa::new(0x3000)) && !r.contains(Ipa::new(0xfff)));
        let before = AddrRange::new(Ipa::new(0), Ipa::new(0x1000)).unwrap();
        let inside = AddrRange::new(Ipa::new(0x2fff), Ipa::new(0x5000)).unwrap();
        assert!(
            !r.overlaps(&before) && !before.overlaps(&r),
            "touching is not overlapping"
        );
        assert!(r.overlaps(&inside) && inside.overlaps(&r));
        assert!(!r.contains_range(&inside));
        assert!(r.is_aligned(Granule::K4) && !r.is_aligned(Granule::K16));
        assert_eq!(r.raw(), 0x1000..0x3000);
    }

    #[test]
    fn stepping_stops_at_the_end_and_at_the_top() {
        let r = AddrRange::new(Pa::new(0x1000), Pa::new(0x3800)).unwrap();
        let v: Vec<Pa> = r.step_by(0x1000).collect();
        assert_eq!(v, [Pa::new(0x1000), Pa::new(0x2000), Pa::new(0x3000)]);
        assert_eq!(r.step_by(0).count(), 0);
        let top = AddrRange::new(Pa::new(u64::MAX - 0x1fff), Pa::new(u64::MAX)).unwrap();
        assert_eq!(top.step_by(0x1000).count(), 2);
        assert_eq!(top.step_by(u64::MAX).count(), 1);
    }

    #[test]
    fn input_kinds_follow_the_regime() {
        use crate::Regime;
        assert!(Ipa::translated_by(Regime::Stage2));
        assert!(!Ipa::translated_by(Regime::El2) && !Ipa::translated_by(Regime::El1));
        assert!(Va::translated_by(Regime::El2) && Va::translated_by(Regime::El1));
        assert!(!Va::translated_by(Regime::Stage2));
        assert_eq!(Pa::new(0x8000).identity_va().identity_pa(), Pa::new(0x8000));
        let r = AddrRange::new(Pa::new(0x1000), Pa::new(0x3000)).unwrap();
        assert_eq!(r.identity_va().raw(), 0x1000..0x3000);
        assert_eq!(r.identity_va().identity_pa(), r);
    }
}
