//! A VM's view of PCI configuration space: only its own functions, with their BARs and
//! command register checked against what hyp gave it.
//!
//! The guest gets an ECAM window (PCIe base spec §7.2.2: offset = bus << 20 | device << 15 |
//! function << 12 | register) that hyp leaves unmapped at stage 2, so every access traps here.
//! - A function the VM does not own reads as absent (all ones) and ignores writes.
//! - An owned function's registers are forwarded to the physical function, except:
//!   - the BARs (0x10..0x28), which are emulated: sizing (all-ones writes) answers from the
//!     size hyp measured, and an address is programmed into the device only if the whole BAR
//!     lies inside the VM's MMIO window, naturally aligned ([`Effect::Map`] then tells hyp to
//!     map it into the VM's stage 2 as device memory, IPA = PA);
//!   - the command register (0x04), where I/O space is never enabled, memory decoding only
//!     while every memory BAR holds a valid address, and the bits PCI defines as reserved are
//!     dropped;
//!   - the expansion ROM BAR (0x30), which reads as absent;
//!   - the interrupt line (0x3c), a scratch register kept for the guest.
//!
//! The physical side is a [`ConfigSpace`], so this is tested on the host against a model
//! device.

use alloc::vec::Vec;
use core::ops::Range;

use crate::mmio::{check_aligned, AccessSize, MmioError};

pub use platform::pci::Bdf;

/// Where an ECAM access goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamAddr {
    /// The function.
    pub bdf: Bdf,
    /// The register offset in its 4 KiB configuration space.
    pub reg: u16,
}

impl EcamAddr {
    /// Decodes an offset into the ECAM window.
    pub const fn decode(offset: u64) -> EcamAddr {
        EcamAddr {
            bdf: Bdf::from_rid((offset >> 12) as u32),
            reg: (offset & 0xfff) as u16,
        }
    }
}

/// The physical configuration space, as hyp reaches it (32-bit accesses; narrower writes are
/// done by the caller as read-modify-write of the 32-bit register, except where noted).
pub trait ConfigSpace {
    /// Reads the 32-bit register at `reg` (4-aligned) of `bdf`.
    fn read32(&mut self, bdf: Bdf, reg: u16) -> u32;
    /// Writes the 32-bit register at `reg` (4-aligned) of `bdf`.
    fn write32(&mut self, bdf: Bdf, reg: u16, value: u32);
}

/// Command register bits (PCI local bus spec 3.0 §6.2.2).
pub mod command {
    /// I/O space decoding.
    pub const IO: u16 = 1 << 0;
    /// Memory space decoding.
    pub const MEMORY: u16 = 1 << 1;
    /// Bus mastering (DMA).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Parity error response.
    pub const PARITY: u16 = 1 << 6;
    /// SERR# enable.
    pub const SERR: u16 = 1 << 8;
    /// INTx emulation disabled.
    pub const INTX_DISABLE: u16 = 1 << 10;
    /// What a guest may set (memory subject to its BARs).
    pub const GUEST: u16 = MEMORY | BUS_MASTER | PARITY | SERR | INTX_DISABLE;
}

const REG_COMMAND: u16 = 0x04;
const REG_BAR0: u16 = 0x10;
const REG_BAR_END: u16 = 0x28;
const REG_ROM: u16 = 0x30;
const REG_INTERRUPT: u16 = 0x3c;

/// One memory BAR of a function, as measured by hyp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Register index 0..=5 (a 64-bit BAR also uses `index + 1`).
    pub index: usize,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// A 64-bit BAR.
    pub wide: bool,
    /// The low flag bits (type, prefetchable), read-only.
    pub flags: u32,
}

/// Measures the memory BARs of `bdf` on the physical function, with decoding off (restored
/// after): write all ones, read back the size mask (PCI spec §6.2.5.1). I/O BARs are left out:
/// hyp gives guests no I/O space, so they read as unimplemented (0) and the guest uses the
/// memory BARs (a transitional virtio device then runs as a modern one).
pub fn measure_bars(cs: &mut impl ConfigSpace, bdf: Bdf) -> Vec<Bar> {
    let cmd = cs.read32(bdf, REG_COMMAND);
    cs.write32(
        bdf,
        REG_COMMAND,
        cmd & !u32::from(command::MEMORY | command::IO),
    );
    let mut bars = Vec::new();
    let mut i = 0;
    while i < 6 {
        let reg = REG_BAR0 + 4 * i as u16;
        let orig = cs.read32(bdf, reg);
        cs.write32(bdf, reg, u32::MAX);
        let lo = cs.read32(bdf, reg);
        cs.write32(bdf, reg, orig);
        if lo == 0 {
            i += 1;
            continue;
        }
        if lo & 1 != 0 {
            i += 1;
            continue;
        }
        let wide = (lo >> 1) & 3 == 2;
        let mut mask = u64::from(lo & !0xf);
        if wide && i < 5 {
            let hreg = reg + 4;
            let horig = cs.read32(bdf, hreg);
            cs.write32(bdf, hreg, u32::MAX);
            mask |= u64::from(cs.read32(bdf, hreg)) << 32;
            cs.write32(bdf, hreg, horig);
        } else {
            mask |= 0xffff_ffff_0000_0000;
        }
        let size = (!mask).wrapping_add(1);
        if size != 0 && size.is_power_of_two() {
            bars.push(Bar {
                index: i,
                size,
                wide,
                flags: lo & 0xf,
            });
        }
        i += if wide { 2 } else { 1 };
    }
    cs.write32(bdf, REG_COMMAND, cmd);
    bars
}

/// What a guest write asks hyp to do at stage 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// Map this range (IPA = PA) as device memory: a BAR got a valid address.
    Map(Range<u64>),
    /// Unmap this range: the BAR no longer holds a valid address.
    Unmap(Range<u64>),
    /// The BAR moved: unmap `from`, then map `to`.
    Move {
        /// The old range.
        from: Range<u64>,
        /// The new range.
        to: Range<u64>,
    },
}

/// An owned function.
#[derive(Clone, Debug)]
struct Function {
    bdf: Bdf,
    bars: Vec<Bar>,
    /// Each register's guest-visible value (address bits, or the size mask while sizing).
    regs: [u32; 6],
    /// Whether each BAR's address was validated and programmed.
    valid: [bool; 6],
    interrupt_line: u8,
}

/// A VM's PCI configuration space.
#[derive(Clone, Debug)]
pub struct PciView {
    functions: Vec<Function>,
    window: Range<u64>,
}

impl PciView {
    /// The view of `functions` (with BARs as [`measure_bars`] found them) for a VM whose BARs
    /// must lie inside `window`. Their BARs start unprogrammed (zero) and their command
    /// registers with everything off: the device is quiesced until the guest sets it up.
    pub fn new(
        functions: &[(Bdf, Vec<Bar>)],
        window: Range<u64>,
        cs: &mut impl ConfigSpace,
    ) -> PciView {
        let functions = functions
            .iter()
            .map(|(bdf, bars)| {
                cs.write32(*bdf, REG_COMMAND, 0);
                let mut regs = [0u32; 6];
                for b in bars {
                    regs[b.index] = b.flags;
                    cs.write32(*bdf, REG_BAR0 + 4 * b.index as u16, b.flags);
                    if b.wide {
                        cs.write32(*bdf, REG_BAR0 + 4 * b.index as u16 + 4, 0);
                    }
                }
                Function {
                    bdf: *bdf,
                    bars: bars.clone(),
                    regs,
                    valid: [false; 6],
                    interrupt_line: 0,
                }
            })
            .collect();
        PciView { functions, window }
    }

    fn find(&mut self, bdf: Bdf) -> Option<&mut Function> {
        self.functions.iter_mut().find(|f| f.bdf == bdf)
    }

    /// Where an access of `size` at `offset` goes: the function, its 32-bit register and the
    /// access's bit shift inside it (configuration space takes 8-, 16- and 32-bit accesses,
    /// naturally aligned).
    fn place(offset: u64, size: AccessSize) -> Result<(Bdf, u16, u32), MmioError> {
        check_aligned(offset, size)?;
        if size == AccessSize::B8 {
            return Err(MmioError::BadSize { offset, size });
        }
        let a = EcamAddr::decode(offset);
        Ok((a.bdf, a.reg & !3, 8 * u32::from(a.reg & 3)))
    }

    /// A guest read at `offset` in the ECAM window.
    pub fn read(
        &mut self,
        cs: &mut impl ConfigSpace,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let (bdf, reg, shift) = Self::place(offset, size)?;
        let Some(f) = self.find(bdf) else {
            return Ok(size.mask());
        };
        let word = match reg {
            REG_BAR0..REG_BAR_END => f.regs[usize::from((reg - REG_BAR0) / 4)],
            REG_ROM => 0,
            REG_INTERRUPT => (cs.read32(f.bdf, reg) & 0xffff_ff00) | u32::from(f.interrupt_line),
            _ => cs.read32(f.bdf, reg),
        };
        Ok((u64::from(word) >> shift) & size.mask())
    }

    /// A guest write at `offset` in the ECAM window.
    pub fn write(
        &mut self,
        cs: &mut impl ConfigSpace,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<Effect, MmioError> {
        let (bdf, reg, shift) = Self::place(offset, size)?;
        let mask = (size.mask() as u32) << shift;
        let bits = ((value as u32) << shift) & mask;
        let window = self.window.clone();
        let Some(f) = self.find(bdf) else {
            return Ok(Effect::None);
        };
        Ok(match reg {
            REG_COMMAND => {
                // Status (the upper half) is write-1-to-clear: pass only what the guest wrote
                // there, never bits merged from a read.
                let old = cs.read32(f.bdf, reg) & 0xffff;
                let cmd = ((old & !mask) | bits) as u16;
                f.set_command(cs, cmd, bits & !0xffff & mask);
                Effect::None
            }
            REG_BAR0..REG_BAR_END => {
                let i = usize::from((reg - REG_BAR0) / 4);
                let merged = (f.regs[i] & !mask) | bits;
                f.write_bar(cs, i, merged, &window)
            }
            REG_ROM => Effect::None,
            REG_INTERRUPT => {
                if mask & 0xff != 0 {
                    f.interrupt_line = bits as u8;
                }
                Effect::None
            }
            // The rest of the header (0x00..0x10, 0x28..0x3c) is read-only or harmless;
            // capabilities and device-specific registers (0x40..) belong to the device. A
            // narrow write is a read-modify-write of the 32-bit register.
            _ => {
                let old = if mask == u32::MAX {
                    0
                } else {
                    cs.read32(f.bdf, reg)
                };
                cs.write32(f.bdf, reg, (old & !mask) | bits);
                Effect::None
            }
        })
    }

    /// Quiesces every function (bus mastering and decoding off), e.g. when the VM stops.
    pub fn quiesce(&mut self, cs: &mut impl ConfigSpace) {
        for f in &self.functions {
            cs.write32(f.bdf, REG_COMMAND, 0);
        }
    }
}

impl Function {
    fn bar_at(&self, i: usize) -> Option<(Bar, bool)> {
        self.bars.iter().find_map(|b| {
            if b.index == i {
                Some((*b, false))
            } else if b.wide && b.index + 1 == i {
                Some((*b, true))
            } else {
                None
            }
        })
    }

    fn address(&self, b: &Bar) -> u64 {
        let lo = u64::from(self.regs[b.index] & !0xf);
        let hi = if b.wide {
            u64::from(self.regs[b.index + 1]) << 32
        } else {
            0
        };
        hi | lo
    }

    fn set_command(&mut self, cs: &mut impl ConfigSpace, cmd: u16, status_w1c: u32) {
        let mut allowed = cmd & command::GUEST;
        let all_valid = self.bars.iter().all(|b| self.valid[b.index]);
        if !all_valid {
            allowed &= !command::MEMORY;
        }
        cs.write32(self.bdf, REG_COMMAND, status_w1c | u32::from(allowed));
    }

    fn write_bar(
        &mut self,
        cs: &mut impl ConfigSpace,
        i: usize,
        value: u32,
        window: &Range<u64>,
    ) -> Effect {
        let Some((b, high)) = self.bar_at(i) else {
            // No BAR here: reads stay 0 (PCI spec: unimplemented BARs are hardwired to 0).
            return Effect::None;
        };
        let was = self.valid[b.index].then(|| {
            let a = self.address(&b);
            a..a + b.size
        });
        // The size mask is what the hardware would answer: address bits below the size are 0.
        let size_mask = (!(b.size - 1)) as u32;
        self.regs[i] = if high {
            value & ((!(b.size - 1)) >> 32) as u32
        } else {
            (value & size_mask & !0xf) | b.flags
        };
        let addr = self.address(&b);
        let end = addr.checked_add(b.size);
        let ok = addr != 0
            && end.is_some_and(|e| addr >= window.start && e <= window.end)
            && addr.is_multiple_of(b.size);
        self.valid[b.index] = ok;
        let bdf = self.bdf;
        let reg = REG_BAR0 + 4 * b.index as u16;
        if ok {
            cs.write32(bdf, reg, (addr as u32 & !0xf) | b.flags);
            if b.wide {
                cs.write32(bdf, reg + 4, (addr >> 32) as u32);
            }
        } else {
            // An invalid address never reaches the device; decoding goes off with it.
            let cmd = cs.read32(bdf, REG_COMMAND) & 0xffff;
            cs.write32(bdf, REG_COMMAND, cmd & !u32::from(command::MEMORY));
        }
        match (was, ok) {
            (Some(old), true) if old.start == addr => Effect::None,
            (Some(old), true) => Effect::Move {
                from: old,
                to: addr..addr + b.size,
            },
            (Some(old), false) => Effect::Unmap(old),
            (None, true) => Effect::Map(addr..addr + b.size),
            (None, false) => Effect::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A model function at 00:01.0: BAR0 a 4 KiB 32-bit memory BAR, BAR1 unimplemented,
    /// BAR2+3 a 16 KiB 64-bit prefetchable BAR, BAR4 an I/O BAR when `io`.
    struct Model {
        regs: [u32; 1024],
        sizes: [u64; 6],
        writes: Vec<(u16, u32)>,
    }

    const DEV: Bdf = Bdf {
        bus: 0,
        device: 1,
        function: 0,
    };

    impl Model {
        fn new(io: bool) -> Model {
            let mut regs = [0u32; 1024];
            regs[0] = 0x1001_1af4; // virtio-blk (transitional ID)
            regs[1] = 0x0010_0000; // status: capabilities list
            regs[4] = 0x0; // BAR0: 32-bit memory
            regs[6] = 0xc; // BAR2: 64-bit prefetchable
            if io {
                regs[8] = 0x1;
            }
            regs[15] = 0x0000_0100; // interrupt pin A
            Model {
                regs,
                sizes: [0x1000, 0, 0x4000, 0, if io { 0x20 } else { 0 }, 0],
                writes: Vec::new(),
            }
        }
    }

    impl ConfigSpace for Model {
        fn read32(&mut self, bdf: Bdf, reg: u16) -> u32 {
            assert_eq!(bdf, DEV, "only the owned function is ever touched");
            self.regs[usize::from(reg / 4)]
        }
        fn write32(&mut self, bdf: Bdf, reg: u16, value: u32) {
            assert_eq!(bdf, DEV, "only the owned function is ever touched");
            self.writes.push((reg, value));
            let i = usize::from(reg / 4);
            if (4..10).contains(&i) {
                let b = i - 4;
                let flags = self.regs[i] & 0xf;
                // A 64-bit BAR's upper half has no flags and takes the size's upper bits.
                let upper = b > 0 && self.regs[i - 1] & 0x6 == 0x4 && self.sizes[b] == 0;
                self.regs[i] = if upper {
                    value & (!(self.sizes[b - 1] - 1) >> 32) as u32
                } else if self.sizes[b] == 0 {
                    0
                } else if flags & 1 != 0 {
                    (value & !(self.sizes[b] as u32 - 1)) | flags
                } else {
                    (value & !(self.sizes[b] as u32 - 1) & !0xf) | flags
                };
            } else if i == 1 {
                self.regs[1] = (self.regs[1] & 0xffff_0000) | (value & 0xffff);
            } else {
                self.regs[i] = value;
            }
        }
    }

    const WINDOW: Range<u64> = 0x1000_0000..0x1100_0000;

    fn view() -> (PciView, Model) {
        let mut m = Model::new(false);
        let bars = measure_bars(&mut m, DEV);
        assert_eq!(
            bars,
            vec![
                Bar {
                    index: 0,
                    size: 0x1000,
                    wide: false,
                    flags: 0
                },
                Bar {
                    index: 2,
                    size: 0x4000,
                    wide: true,
                    flags: 0xc
                }
            ]
        );
        let v = PciView::new(&[(DEV, bars)], WINDOW, &mut m);
        (v, m)
    }

    fn at(bdf: Bdf, reg: u64) -> u64 {
        bdf.ecam_offset() | reg
    }

    #[test]
    fn io_bars_are_hidden() {
        let mut m = Model::new(true);
        let bars = measure_bars(&mut m, DEV);
        assert_eq!(bars.iter().map(|b| b.index).collect::<Vec<_>>(), [0, 2]);
        let mut v = PciView::new(&[(DEV, bars)], WINDOW, &mut m);
        v.write(&mut m, at(DEV, 0x20), AccessSize::B4, 0xffff_ffff)
            .unwrap();
        assert_eq!(v.read(&mut m, at(DEV, 0x20), AccessSize::B4), Ok(0));
        v.write(&mut m, at(DEV, 4), AccessSize::B2, 0x1).unwrap();
        assert_eq!(m.regs[1] & 1, 0, "I/O decoding is never enabled");
    }

    #[test]
    fn other_functions_are_absent() {
        let (mut v, mut m) = view();
        let other = Bdf {
            bus: 0,
            device: 2,
            function: 0,
        };
        assert_eq!(
            v.read(&mut m, at(other, 0), AccessSize::B4),
            Ok(0xffff_ffff)
        );
        assert_eq!(v.read(&mut m, at(other, 2), AccessSize::B2), Ok(0xffff));
        let before = m.writes.len();
        assert_eq!(
            v.write(&mut m, at(other, 4), AccessSize::B4, 0x7),
            Ok(Effect::None)
        );
        assert_eq!(m.writes.len(), before, "nothing reaches any device");
        assert_eq!(v.read(&mut m, at(DEV, 0), AccessSize::B2), Ok(0x1af4));
        assert_eq!(v.read(&mut m, at(DEV, 2), AccessSize::B2), Ok(0x1001));
    }

    #[test]
    fn bar_sizing_and_placement_inside_the_window() {
        let (mut v, mut m) = view();
        // Sizing BAR0: all ones, read back the mask, as Linux does.
        v.write(&mut m, at(DEV, 0x10), AccessSize::B4, 0xffff_ffff)
            .unwrap();
        assert_eq!(
            v.read(&mut m, at(DEV, 0x10), AccessSize::B4),
            Ok(0xffff_f000)
        );
        // Sizing the 64-bit BAR2: both halves.
        v.write(&mut m, at(DEV, 0x18), AccessSize::B4, 0xffff_ffff)
            .unwrap();
        v.write(&mut m, at(DEV, 0x1c), AccessSize::B4, 0xffff_ffff)
            .unwrap();
        assert_eq!(
            v.read(&mut m, at(DEV, 0x18), AccessSize::B4),
            Ok(0xffff_c00c)
        );
        assert_eq!(
            v.read(&mut m, at(DEV, 0x1c), AccessSize::B4),
            Ok(0xffff_ffff)
        );
        // Placing BAR0 inside the window maps it.
        assert_eq!(
            v.write(&mut m, at(DEV, 0x10), AccessSize::B4, 0x1000_0000),
            Ok(Effect::Map(0x1000_0000..0x1000_1000))
        );
        assert_eq!(m.regs[4], 0x1000_0000, "programmed into the device");
        // Memory decoding waits for every BAR.
        v.write(&mut m, at(DEV, 4), AccessSize::B2, 0x6).unwrap();
        assert_eq!(
            m.regs[1] & 0xffff,
            0x4,
            "bus master only: BAR2 is not placed"
        );
        v.write(&mut m, at(DEV, 0x1c), AccessSize::B4, 0).unwrap();
        assert_eq!(
            v.write(&mut m, at(DEV, 0x18), AccessSize::B4, 0x1000_4000),
            Ok(Effect::Map(0x1000_4000..0x1000_8000))
        );
        v.write(&mut m, at(DEV, 4), AccessSize::B2, 0x7).unwrap();
        assert_eq!(m.regs[1] & 0xffff, 0x6, "memory and bus master; never I/O");
        // Moving BAR0 within the window.
        assert_eq!(
            v.write(&mut m, at(DEV, 0x10), AccessSize::B4, 0x1000_2000),
            Ok(Effect::Move {
                from: 0x1000_0000..0x1000_1000,
                to: 0x1000_2000..0x1000_3000
            })
        );
    }

    #[test]
    fn a_bar_outside_the_window_never_reaches_the_device() {
        let (mut v, mut m) = view();
        v.write(&mut m, at(DEV, 0x10), AccessSize::B4, 0x1000_0000)
            .unwrap();
        v.write(&mut m, at(DEV, 0x1c), AccessSize::B4, 0).unwrap();
        v.write(&mut m, at(DEV, 0x18), AccessSize::B4, 0x1000_4000)
            .unwrap();
        v.write(&mut m, at(DEV, 4), AccessSize::B2, 0x6).unwrap();
        assert_eq!(m.regs[1] & 0xffff, 0x6);
        // Another VM's (or hyp's) address: refused, decoding off, the old range unmapped.
        for bad in [0x0900_0000u32, 0x1100_0000, 0x0fff_f000, 0xffff_f000] {
            let eff = v.write(&mut m, at(DEV, 0x10), AccessSize::B4, u64::from(bad));
            assert_ne!(m.regs[4] & !0xf, bad & !0xfff, "{bad:#x} programmed");
            assert_eq!(m.regs[1] & 0x2, 0, "decoding left on with {bad:#x}");
            if bad == 0x0900_0000 {
                assert_eq!(eff, Ok(Effect::Unmap(0x1000_0000..0x1000_1000)));
            }
            // The guest cannot turn decoding back on while the BAR is invalid.
            v.write(&mut m, at(DEV, 4), AccessSize::B2, 0x6).unwrap();
            assert_eq!(m.regs[1] & 0x2, 0);
        }
        // The upper half of a 64-bit BAR beyond the window.
        v.write(&mut m, at(DEV, 0x10), AccessSize::B4, 0x1000_0000)
            .unwrap();
        assert!(matches!(
            v.write(&mut m, at(DEV, 0x1c), AccessSize::B4, 1),
            Ok(Effect::Unmap(_))
        ));
        assert_eq!(m.regs[7], 0, "the high half was not programmed");
    }

    #[test]
    fn rom_interrupt_line_and_narrow_accesses() {
        let (mut v, mut m) = view();
        m.regs[12] = 0xfffe_0001;
        assert_eq!(v.read(&mut m, at(DEV, 0x30), AccessSize::B4), Ok(0));
        v.write(&mut m, at(DEV, 0x3c), AccessSize::B1, 0x25)
            .unwrap();
        assert_eq!(v.read(&mut m, at(DEV, 0x3c), AccessSize::B2), Ok(0x0125));
        assert_eq!(
            m.regs[15] & 0xff,
            0,
            "the line is the guest's scratch, not the device's"
        );
        // A byte write to device-specific space keeps the other bytes.
        m.regs[0x44 / 4] = 0x1122_3344;
        v.write(&mut m, at(DEV, 0x45), AccessSize::B1, 0xaa)
            .unwrap();
        assert_eq!(m.regs[0x44 / 4], 0x1122_aa44);
        assert_eq!(v.read(&mut m, at(DEV, 0x46), AccessSize::B1), Ok(0x22));
        assert!(v.read(&mut m, at(DEV, 0x44), AccessSize::B8).is_err());
        assert!(v.read(&mut m, at(DEV, 0x45), AccessSize::B2).is_err());
    }

    #[test]
    fn status_bits_are_cleared_only_as_written() {
        let (mut v, mut m) = view();
        m.regs[1] = 0xf910_0000; // error bits set in status
        v.write(&mut m, at(DEV, 4), AccessSize::B2, 0x4).unwrap();
        let (_, w) = *m.writes.last().unwrap();
        assert_eq!(w, 0x4, "no status bit is written back by a command write");
        v.write(&mut m, at(DEV, 6), AccessSize::B2, 0x8000).unwrap();
        let (_, w) = *m.writes.last().unwrap();
        assert_eq!(w >> 16, 0x8000, "a status write clears what it names");
    }

    #[test]
    fn quiesce_turns_everything_off() {
        let (mut v, mut m) = view();
        v.write(&mut m, at(DEV, 4), AccessSize::B2, 0x4).unwrap();
        v.quiesce(&mut m);
        assert_eq!(m.regs[1] & 0xffff, 0);
    }
}
