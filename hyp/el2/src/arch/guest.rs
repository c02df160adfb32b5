//! The world switch: one call runs a vCPU until its next exit (`guest.S`).

/// A vCPU's register state while hyp handles its exits, plus the host state `guest.S` keeps
/// across the guest's run. Layout shared with `guest.S` (offsets asserted below).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    /// x0..x30.
    pub x: [u64; 31],
    /// The guest's `SP_EL0`.
    pub sp_el0: u64,
    /// `ELR_EL2`: where the guest resumes.
    pub elr: u64,
    /// `SPSR_EL2`: the guest's PSTATE at resume.
    pub spsr: u64,
    /// `ESR_EL2` of the last exit.
    pub esr: u64,
    /// `FAR_EL2` of the last exit.
    pub far: u64,
    /// `HPFAR_EL2` of the last exit.
    pub hpfar: u64,
    host_sp: u64,
    host_x19_x30: [u64; 12],
    /// `FPSR`.
    pub fpsr: u64,
    /// `FPCR`.
    pub fpcr: u64,
    /// q0..q31.
    pub q: [u128; 32],
    host_d8_d15: [u64; 8],
}

const _: () = {
    assert!(core::mem::offset_of!(GuestRegs, sp_el0) == 248);
    assert!(core::mem::offset_of!(GuestRegs, hpfar) == 288);
    assert!(core::mem::offset_of!(GuestRegs, host_sp) == 296);
    assert!(core::mem::offset_of!(GuestRegs, host_x19_x30) == 304);
    assert!(core::mem::offset_of!(GuestRegs, fpsr) == 400);
    assert!(core::mem::offset_of!(GuestRegs, q) == 416);
    assert!(core::mem::offset_of!(GuestRegs, host_d8_d15) == 928);
};

impl GuestRegs {
    /// Register `n` as an instruction operand reads it (31 = XZR reads 0).
    pub fn get(&self, n: u8) -> u64 {
        self.x.get(n as usize).copied().unwrap_or(0)
    }

    /// Writes register `n` (31 = XZR: the value is discarded).
    pub fn set(&mut self, n: u8, v: u64) {
        if let Some(r) = self.x.get_mut(n as usize) {
            *r = v;
        }
    }
}

extern "C" {
    fn el2_guest_enter(ctx: *mut GuestRegs) -> u64;
}

/// The vector entry an exit came through (`source * 4 + type`, see `vectors.S`).
pub type ExitVector = u64;

/// Runs the guest with `regs` until its next exception to EL2 and returns the vector entry
/// it came through (8 sync, 9 IRQ, 10 FIQ, 11 SError from AArch64; 12-15 from AArch32).
///
/// # Safety
/// The EL1 stage-2 context must be live on this CPU: `HCR_EL2` with VM = 1, `VTTBR_EL2` and
/// `VTCR_EL2` describing tables that map only memory the guest may own, and the vGIC and
/// timer controls set, so that nothing the guest does can reach hyp's memory. `regs.spsr`
/// must name EL1 or EL0 (never EL2). Must be called with DAIF masked, on hyp's stack (SP_EL0).
pub unsafe fn enter(regs: &mut GuestRegs) -> ExitVector {
    // SAFETY: the caller guarantees the guest context; guest.S saves and restores every
    // callee-saved register and hyp's stack pointer around the guest's run.
    unsafe { el2_guest_enter(regs) }
}

/// Copies `len` bytes from `src` to `dst` 64 bytes per loop iteration with paired 128-bit
/// loads and stores (four instructions), the rest with `core::ptr::copy_nonoverlapping`.
/// For loading guest images: the generic `memcpy` moves 8 bytes per iteration, which costs
/// 8× the instructions on an emulated CPU.
///
/// # Safety
/// As `core::ptr::copy_nonoverlapping`: `src` valid for `len` bytes of reads, `dst` for `len`
/// bytes of writes, the two not overlapping; both normal memory (no alignment is required:
/// hyp's EL2 map is normal write-back memory, where unaligned SIMD accesses are allowed).
pub unsafe fn copy_bulk(dst: *mut u8, src: *const u8, len: usize) {
    let bulk = len & !63;
    if bulk > 0 {
        // SAFETY: [src, src + bulk) and [dst, dst + bulk) are within the caller's ranges;
        // q0-q3 are caller-saved and declared clobbered.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldp q0, q1, [{s}], #32",
                "ldp q2, q3, [{s}], #32",
                "stp q0, q1, [{d}], #32",
                "stp q2, q3, [{d}], #32",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                s = inout(reg) src => _,
                d = inout(reg) dst => _,
                n = inout(reg) bulk => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                options(nostack)
            );
        }
    }
    // SAFETY: the tail of the caller's ranges.
    unsafe { core::ptr::copy_nonoverlapping(src.add(bulk), dst.add(bulk), len - bulk) };
}

/// Writes zeros to `len` bytes at `dst`, 64 bytes per loop iteration with paired 128-bit
/// stores, the rest with `core::ptr::write_bytes` (for scrubbing guest RAM: the generic
/// `memset` stores 8 bytes per iteration).
///
/// # Safety
/// As `core::ptr::write_bytes`: `dst` valid for `len` bytes of writes, normal memory.
pub unsafe fn zero_bulk(dst: *mut u8, len: usize) {
    let bulk = len & !63;
    if bulk > 0 {
        // SAFETY: [dst, dst + bulk) is within the caller's range; v0 is caller-saved and
        // declared clobbered.
        unsafe {
            core::arch::asm!(
                "movi v0.16b, #0",
                "2:",
                "stp q0, q0, [{d}], #32",
                "stp q0, q0, [{d}], #32",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                d = inout(reg) dst => _,
                n = inout(reg) bulk => _,
                out("v0") _,
                options(nostack)
            );
        }
    }
    // SAFETY: the tail of the caller's range.
    unsafe { core::ptr::write_bytes(dst.add(bulk), 0, len - bulk) };
}
