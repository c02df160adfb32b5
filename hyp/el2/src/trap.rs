//! Exceptions taken to EL2: the trap frame the vectors save, the report printed for an
//! unexpected one, and the dispatcher (`el2_trap`, called from `arch/vectors.S`).

use core::fmt;
use platform::esr::Esr;

/// The registers saved by `arch/vectors.S`, in its layout (288 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// `SP_EL0` at the exception: hyp's own stack pointer for exceptions from hyp's code, the
    /// guest's SP_EL0 for exceptions from a lower EL (restored on return).
    pub sp: u64,
    /// `ELR_EL2`: where the exception was taken (restored on return).
    pub elr: u64,
    /// `SPSR_EL2` (restored on return).
    pub spsr: u64,
    /// `ESR_EL2`.
    pub esr: u64,
    /// `FAR_EL2`.
    pub far: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 288);

/// Where an exception came from (the vector table quarter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// EL2 using SP_EL0: hyp's own code (it runs on SP_EL0).
    CurrentSp0,
    /// EL2 using SP_EL2: an exception while handling an exception.
    CurrentSpx,
    /// EL1/EL0 in AArch64 (a guest).
    Lower64,
    /// EL1/EL0 in AArch32.
    Lower32,
}

/// The exception type (the entry within a quarter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Synchronous.
    Sync,
    /// IRQ.
    Irq,
    /// FIQ.
    Fiq,
    /// SError.
    SError,
}

/// The vector entry an exception went through: `kind = source * 4 + type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vector {
    /// Where from.
    pub source: Source,
    /// What type.
    pub kind: Kind,
}

impl Vector {
    /// Decodes the entry number the vectors pass (0..=15; higher bits are ignored).
    pub fn from_index(i: u64) -> Vector {
        let source = match (i >> 2) & 3 {
            0 => Source::CurrentSp0,
            1 => Source::CurrentSpx,
            2 => Source::Lower64,
            _ => Source::Lower32,
        };
        let kind = match i & 3 {
            0 => Kind::Sync,
            1 => Kind::Irq,
            2 => Kind::Fiq,
            _ => Kind::SError,
        };
        Vector { source, kind }
    }

    /// Whether the exception came from a guest.
    pub fn from_lower_el(&self) -> bool {
        matches!(self.source, Source::Lower64 | Source::Lower32)
    }
}

impl fmt::Display for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind {
            Kind::Sync => "synchronous",
            Kind::Irq => "IRQ",
            Kind::Fiq => "FIQ",
            Kind::SError => "SError",
        };
        let s = match self.source {
            Source::CurrentSp0 => "EL2",
            Source::CurrentSpx => "EL2 (exception stack)",
            Source::Lower64 => "lower EL (AArch64)",
            Source::Lower32 => "lower EL (AArch32)",
        };
        write!(f, "{k} exception from {s}")
    }
}

/// The report of an unexpected exception, written line by line through `line`.
///
/// ```text
/// hyp: unexpected synchronous exception from EL2 on cpu 0
/// hyp:   ESR_EL2 0x96000045: EC 0x25 data abort at EL2, IL 32-bit, ISS 0x45 (translation fault, level 1, write)
/// hyp:   ELR_EL2 0x0000000040201234  FAR_EL2 0x0000dead00000000  SPSR_EL2 0x00000000000003c9
/// hyp:   x0  0x...  x1  0x...  x2  0x...  x3  0x...
/// ...
/// hyp:   x28 0x...  x29 0x...  x30 0x...  sp_el0 0x...
/// ```
pub fn write_report(
    out: &mut dyn fmt::Write,
    vector: Vector,
    frame: &TrapFrame,
    cpu: usize,
) -> fmt::Result {
    let esr = Esr::new(frame.esr);
    writeln!(out, "hyp: unexpected {vector} on cpu {cpu}")?;
    writeln!(out, "hyp:   {esr}")?;
    writeln!(
        out,
        "hyp:   ELR_EL2 {:#018x}  FAR_EL2 {:#018x}  SPSR_EL2 {:#018x}",
        frame.elr, frame.far, frame.spsr
    )?;
    let mut regs = [0u64; 32];
    regs[..31].copy_from_slice(&frame.x);
    regs[31] = frame.sp;
    for row in 0..8 {
        out.write_str("hyp:  ")?;
        for col in 0..4 {
            let i = row * 4 + col;
            if i == 31 {
                write!(out, " sp_el0 {:#018x}", regs[i])?;
            } else {
                let name_pad = if i < 10 { " " } else { "" };
                write!(out, " x{i}{name_pad} {:#018x}", regs[i])?;
            }
        }
        out.write_str("\n")?;
    }
    Ok(())
}

/// Called by `arch/vectors.S` with the saved frame and the vector entry number. Guests'
/// exceptions never come here (`arch::guest` takes them through its own vectors while a vCPU
/// runs), so every exception that does is unexpected: reported, then hyp powers off.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[no_mangle]
extern "C" fn el2_trap(frame: &mut TrapFrame, index: u64) {
    crate::fatal::unexpected_exception(Vector::from_index(index), frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};

    #[test]
    fn vector_indices() {
        assert_eq!(
            Vector::from_index(4),
            Vector {
                source: Source::CurrentSpx,
                kind: Kind::Sync
            }
        );
        assert_eq!(
            Vector::from_index(9),
            Vector {
                source: Source::Lower64,
                kind: Kind::Irq
            }
        );
        assert_eq!(Vector::from_index(15).kind, Kind::SError);
        assert_eq!(Vector::from_index(15).source, Source::Lower32);
        assert!(Vector::from_index(8).from_lower_el());
        assert!(!Vector::from_index(7).from_lower_el());
        assert_eq!(
            Vector::from_index(0).to_string(),
            "synchronous exception from EL2"
        );
        assert_eq!(
            Vector::from_index(7).to_string(),
            "SError exception from EL2 (exception stack)"
        );
    }

    #[test]
    fn report_names_everything() {
        let mut f = TrapFrame::default();
        for (i, r) in f.x.iter_mut().enumerate() {
            *r = 0x1000 + i as u64;
        }
        f.sp = 0x4060_0000;
        f.elr = 0x4020_1234;
        f.far = 0xdead_0000_0000;
        f.spsr = 0x3c9;
        f.esr = 0x9600_0045;
        let mut s = String::new();
        write_report(&mut s, Vector::from_index(0), &f, 2).unwrap();
        let lines: alloc::vec::Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 11, "{s}");
        assert_eq!(
            lines[0],
            "hyp: unexpected synchronous exception from EL2 on cpu 2"
        );
        assert_eq!(
            lines[1],
            "hyp:   ESR_EL2 0x96000045: EC 0x25 data abort at EL2, IL 32-bit, ISS 0x45 \
             (translation fault, level 1, write)"
        );
        assert_eq!(
            lines[2],
            "hyp:   ELR_EL2 0x0000000040201234  FAR_EL2 0x0000dead00000000  SPSR_EL2 \
             0x00000000000003c9"
        );
        assert_eq!(
            lines[3],
            "hyp:   x0  0x0000000000001000 x1  0x0000000000001001 x2  0x0000000000001002 \
             x3  0x0000000000001003"
        );
        assert!(
            lines[10].ends_with(" sp_el0 0x0000000040600000"),
            "{}",
            lines[10]
        );
        assert!(
            lines[10].contains(" x30 0x000000000000101e"),
            "{}",
            lines[10]
        );
    }
}
