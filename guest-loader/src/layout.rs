//! Where a VM's kernel, initrd and device tree go in its RAM. The VM's platform (RAM base,
//! device addresses, interrupts, vCPU limit) is `platform::virt`, re-exported here as
//! [`RAM_BASE`]; this module places things inside the RAM.
//!
//! ```text
//!  RAM_BASE    ┌──────────────────────────────┐ guest RAM (`memory` bytes)
//!              │ kernel Image at a 2 MiB      │   kernel: RAM_BASE + text_offset,
//!              │ aligned base + text_offset,  │           image_size bytes reserved
//!              │ image_size bytes reserved    │
//!              │ ...free...                   │
//!              │ initrd (64 KiB aligned)      │   initrd: just below the DTB region
//!  end - 2 MiB ├──────────────────────────────┤ DTB: the last 2 MiB of RAM (8-byte aligned,
//!              │ device tree (≤ 2 MiB)        │      ≤ 2 MiB, alone in its 2 MiB block)
//!  end         └──────────────────────────────┘
//! ```
//!
//! Source: Linux `Documentation/arch/arm64/booting.rst` (Image placement, DTB and initrd
//! rules).

use crate::size::format_size;
use alloc::string::String;
use core::fmt;
use stage2::{AddrRange, Ipa};

pub use platform::virt::RAM_BASE;

/// The kernel's base must be 2 MiB aligned (booting.rst: "placed text_offset bytes from a 2MB
/// aligned base address").
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// Largest `text_offset` accepted; any real kernel uses 0 or 0x80000 (legacy).
pub const MAX_TEXT_OFFSET: u64 = KERNEL_ALIGN;
/// `text_offset` assumed when `image_size` is 0 (booting.rst, pre-3.17 kernels).
pub const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// booting.rst: the DTB "must not exceed 2 megabytes in size".
pub const DTB_MAX_SIZE: u64 = 2 << 20;
/// booting.rst: the DTB "must be placed on an 8-byte boundary".
pub const DTB_ALIGN: u64 = 8;
/// The DTB gets the last 2 MiB block of RAM to itself, so nothing else shares its 2 MiB
/// mapping (booting.rst).
pub const DTB_REGION: u64 = 2 << 20;
/// The initrd starts on a 64 KiB boundary (a page boundary for every granule).
pub const INITRD_ALIGN: u64 = 64 << 10;
/// booting.rst: the initrd must lie in a 1 GiB aligned window of up to 32 GiB that also
/// covers the kernel Image.
pub const INITRD_WINDOW: u64 = 32 << 30;
/// VM memory must be a multiple of this (2 MiB: a whole number of pages for every granule, and
/// room for the DTB's own 2 MiB block).
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// Linux arm64 `COMMAND_LINE_SIZE` (bytes, including the terminating NUL).
pub const CMDLINE_MAX: usize = 2048;

/// The `size` bytes of guest physical addresses from `start`, or `None` past the end of the
/// address space.
fn region(start: u64, size: u64) -> Option<AddrRange<Ipa>> {
    AddrRange::from_start_len(Ipa::new(start), size).ok()
}

/// Where everything goes in a VM's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// All of the VM's RAM.
    pub ram: AddrRange<Ipa>,
    /// The kernel: `image_size` bytes from the load address (RAM_BASE + text_offset). The
    /// entry point is `kernel.start()` (booting.rst: "branch to the kernel image's first
    /// instruction").
    pub kernel: AddrRange<Ipa>,
    /// The bytes of the Image file (≤ `kernel.len()`; the rest is BSS, zeroed by hyp).
    pub kernel_file: AddrRange<Ipa>,
    /// The initrd, if any.
    pub initrd: Option<AddrRange<Ipa>>,
    /// The 2 MiB block reserved for the device tree.
    pub dtb_region: AddrRange<Ipa>,
}

impl Layout {
    /// The IPA of the device tree (x0 at entry).
    pub fn dtb(&self) -> Ipa {
        self.dtb_region.start()
    }
}

/// The sizes to place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutRequest {
    /// VM memory in bytes.
    pub memory: u64,
    /// The Image header's `text_offset`.
    pub text_offset: u64,
    /// The Image's effective `image_size` (bytes to reserve).
    pub image_size: u64,
    /// Bytes of the (inflated) Image file.
    pub file_size: u64,
    /// Bytes of the initrd, if any.
    pub initrd_size: Option<u64>,
}

/// A layout that cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The RAM region would run past the end of the 64-bit IPA space.
    RamOverflow {
        /// VM memory.
        memory: u64,
    },
    /// Kernel (image_size) + DTB block do not fit.
    KernelDoesNotFit {
        /// Bytes needed from RAM_BASE: text_offset + image_size rounded + 2 MiB DTB block.
        needed: u64,
        /// VM memory.
        memory: u64,
    },
    /// The initrd does not fit between the kernel and the DTB block.
    InitrdDoesNotFit {
        /// The initrd's size.
        initrd: u64,
        /// Free bytes between the kernel's end and the DTB block.
        free: u64,
        /// Memory that would be enough.
        needed_memory: u64,
    },
    /// The initrd would end outside the 32 GiB window that covers the kernel.
    InitrdOutsideWindow {
        /// Where the initrd would be.
        initrd: AddrRange<Ipa>,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::RamOverflow { memory } => write!(
                f,
                "{} of RAM from {RAM_BASE:#x} overflows the address space; use less memory",
                format_size(*memory)
            ),
            LayoutError::KernelDoesNotFit { needed, memory } => write!(
                f,
                "the kernel (image_size from its header) and the 2M device-tree block need {} \
                 but the VM has {}; set memory to at least {}",
                format_size(*needed),
                format_size(*memory),
                round_up_size(*needed)
            ),
            LayoutError::InitrdDoesNotFit {
                initrd,
                free,
                needed_memory,
            } => write!(
                f,
                "the initrd ({initrd} bytes) does not fit in the {free} bytes left between the \
                 kernel and the device tree; set memory to at least {}",
                round_up_size(*needed_memory)
            ),
            LayoutError::InitrdOutsideWindow { initrd } => write!(
                f,
                "the initrd at {initrd} would lie outside the 32G window that covers the kernel \
                 (booting.rst); use at most 32G of memory"
            ),
        }
    }
}

fn round_up_size(bytes: u64) -> String {
    // Round up to a whole MiB multiple of MEMORY_ALIGN for the hint.
    let r = bytes
        .checked_add(MEMORY_ALIGN - 1)
        .map_or(bytes, |b| b & !(MEMORY_ALIGN - 1));
    format_size(r)
}

const fn align_up(x: u64, a: u64) -> Option<u64> {
    match x.checked_add(a - 1) {
        Some(v) => Some(v & !(a - 1)),
        None => None,
    }
}

const fn align_down(x: u64, a: u64) -> u64 {
    x & !(a - 1)
}

/// Places the kernel at RAM_BASE (2 MiB aligned) + text_offset, the DTB in the last 2 MiB of
/// RAM, and the initrd just below the DTB block, 64 KiB aligned; checks that nothing overlaps
/// and that everything is inside RAM.
pub fn place(req: &LayoutRequest) -> Result<Layout, LayoutError> {
    let ram =
        region(RAM_BASE, req.memory).ok_or(LayoutError::RamOverflow { memory: req.memory })?;
    let ram_end = ram.end().get();
    let kernel_base = RAM_BASE; // 2 MiB aligned by construction
    let too_big = LayoutError::KernelDoesNotFit {
        needed: u64::MAX,
        memory: req.memory,
    };
    let kernel_start = kernel_base
        .checked_add(req.text_offset)
        .ok_or(too_big.clone())?;
    let kernel_end = kernel_start
        .checked_add(req.image_size)
        .ok_or(too_big.clone())?;
    let kernel_end_aligned = align_up(kernel_end, INITRD_ALIGN).ok_or(too_big.clone())?;
    let needed = (kernel_end_aligned - RAM_BASE)
        .checked_add(DTB_REGION)
        .ok_or(too_big.clone())?;
    if needed > req.memory || req.memory < DTB_REGION {
        return Err(LayoutError::KernelDoesNotFit {
            needed,
            memory: req.memory,
        });
    }
    // Inside RAM: the kernel and the DTB block fit (checked above).
    let dtb_region = region(ram_end - DTB_REGION, DTB_REGION).ok_or(too_big.clone())?;
    let initrd = match req.initrd_size {
        None => None,
        Some(len) => {
            let dtb_start = dtb_region.start().get();
            let free = dtb_start - kernel_end_aligned;
            let start = dtb_start
                .checked_sub(len)
                .map(|s| align_down(s, INITRD_ALIGN));
            match start.and_then(|s| region(s, len)) {
                Some(r) if r.start().get() >= kernel_end_aligned => Some(r),
                _ => {
                    return Err(LayoutError::InitrdDoesNotFit {
                        initrd: len,
                        free,
                        needed_memory: needed.saturating_add(len).saturating_add(INITRD_ALIGN),
                    })
                }
            }
        }
    };
    if let Some(r) = initrd {
        let window_start = align_down(kernel_start, 1 << 30);
        if r.end().get() > window_start.saturating_add(INITRD_WINDOW) {
            return Err(LayoutError::InitrdOutsideWindow { initrd: r });
        }
    }
    let layout = Layout {
        ram,
        kernel: region(kernel_start, req.image_size).ok_or(too_big.clone())?,
        kernel_file: region(kernel_start, req.file_size.min(req.image_size))
            .ok_or(too_big.clone())?,
        initrd,
        dtb_region,
    };
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(memory: u64, image_size: u64, initrd: Option<u64>) -> LayoutRequest {
        LayoutRequest {
            memory,
            text_offset: 0,
            image_size,
            file_size: image_size / 2,
            initrd_size: initrd,
        }
    }

    #[test]
    fn places_everything_inside_ram_without_overlap() {
        let l = place(&req(512 << 20, 50 << 20, Some(10_000_123))).unwrap();
        assert_eq!(l.kernel.start(), Ipa::new(RAM_BASE));
        assert_eq!(l.kernel.len(), 50 << 20);
        assert_eq!(l.dtb(), Ipa::new(RAM_BASE + (510 << 20)));
        assert!(l.dtb().is_aligned(DTB_ALIGN));
        let i = l.initrd.unwrap();
        assert!(i.start().is_aligned(INITRD_ALIGN));
        assert!(i.end() <= l.dtb_region.start());
        assert!(!i.overlaps(&l.kernel));
        assert!(!l.dtb_region.overlaps(&l.kernel));
        for r in [l.kernel, i, l.dtb_region] {
            assert!(l.ram.contains_range(&r), "{r}");
        }
        assert_eq!(l.kernel.to_string(), "0x40000000..0x43200000");
    }

    #[test]
    fn text_offset_is_added_to_a_2m_base() {
        let mut r = req(64 << 20, 8 << 20, None);
        r.text_offset = LEGACY_TEXT_OFFSET;
        let l = place(&r).unwrap();
        assert_eq!(l.kernel.start(), Ipa::new(RAM_BASE + 0x8_0000));
        assert!((l.kernel.start() - r.text_offset).is_aligned(KERNEL_ALIGN));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        // image_size (not file size) counts.
        let e = place(&req(32 << 20, 31 << 20, None)).unwrap_err();
        assert!(matches!(e, LayoutError::KernelDoesNotFit { .. }), "{e}");
        assert!(e.to_string().contains("at least 34M"), "{e}");
        // Exactly fits: kernel 30M + DTB 2M in 32M.
        assert!(place(&req(32 << 20, 30 << 20, None)).is_ok());
        let e = place(&req(64 << 20, 30 << 20, Some(40 << 20))).unwrap_err();
        assert!(matches!(e, LayoutError::InitrdDoesNotFit { .. }), "{e}");
        let e = place(&req(64 << 30, 30 << 20, Some(1 << 20))).unwrap_err();
        assert!(matches!(e, LayoutError::InitrdOutsideWindow { .. }), "{e}");
        let e = place(&req(u64::MAX - (1 << 20), 1, None)).unwrap_err();
        assert!(matches!(e, LayoutError::RamOverflow { .. }), "{e}");
        let mut r = req(64 << 20, u64::MAX, None);
        r.text_offset = 0x8_0000;
        assert!(place(&r).is_err());
    }

    use alloc::string::ToString;
}

/// Host RAM hyp keeps for itself before guests get any, as `check` estimates it for a host of
/// `host_ram` bytes and a boot bundle of `bundle_bytes`. It mirrors what hyp does at boot
/// (hyp/src/boot.rs, hyp/src/vm/mod.rs): its image, stacks and guard pages (16 MiB), its heap
/// (a quarter of the RAM left, between 16 MiB and 256 MiB), the bundle read into RAM, and
/// 64 MiB kept back (the alignment of VMs' RAM, `hyp.stress` frames; each VM's stage-2 tables
/// are planned with the VM). hyp itself plans with the RAM it really has left, so a config
/// that passes `check` with this estimate also fits at boot.
pub const fn hyp_reserve(host_ram: u64, bundle_bytes: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let image = 16 * MIB;
    let rest = host_ram.saturating_sub(image);
    let heap = {
        let q = rest / 4;
        if q < 16 * MIB {
            16 * MIB
        } else if q > 256 * MIB {
            256 * MIB
        } else {
            q
        }
    };
    let bundle = bundle_bytes.div_ceil(MIB) * MIB;
    image + heap + bundle + 64 * MIB
}

#[cfg(test)]
mod reserve_tests {
    use super::hyp_reserve;

    #[test]
    fn reserve_follows_hyp_boot() {
        const M: u64 = 1 << 20;
        // 2 GiB: heap capped at 256M; a 45M bundle rounds up to 45M.
        assert_eq!(hyp_reserve(2048 * M, 45 * M - 5), (16 + 256 + 45 + 64) * M);
        // 256 MiB: heap is a quarter of what is left after the image.
        assert_eq!(hyp_reserve(256 * M, 0), (16 + 60 + 64) * M);
        // Tiny hosts: heap floor of 16M, never an underflow.
        assert_eq!(hyp_reserve(8 * M, 1), (16 + 16 + 1 + 64) * M);
    }
}
