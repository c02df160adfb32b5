//! A hostile driver for an assigned virtio-blk-pci disk: it sets the device up like a real
//! driver (PCI configuration through the VM's ECAM, virtio 1.x modern transport) and then aims
//! the device's DMA outside the VM's RAM. hyp's SMMU must stop every such access (the device
//! faults, hyp prints an `smmu event` line) while the same device's DMA into the VM's own RAM
//! works.

use alloc::boxed::Box;

use crate::rt;
use crate::tests::{fail, pass, Env, Verdict};
use crate::{arch, line};

/// The assigned function the probe drives: slot 1 or `probe.slot`.
const VIRTIO_VENDOR: u32 = 0x1af4;
/// A modern (virtio 1.x) block device: 0x1040 + device type 2.
const VIRTIO_BLK: u32 = 0x1042;
/// A modern virtio network card: 0x1040 + device type 1.
const VIRTIO_NET: u32 = 0x1041;

/// virtio PCI capability types (virtio 1.2 §4.1.4).
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_DEVICE: u8 = 4;

/// Common configuration offsets (virtio 1.2 §4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
}

/// Device status bits (virtio 1.2 §2.1).
mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 0x40;
}

const QSIZE: usize = 8;

/// One virtqueue and the request buffers, in the VM's RAM (the MMU is off: VA = IPA).
#[repr(C, align(4096))]
struct Ring {
    desc: [[u64; 2]; QSIZE],
    avail: [u16; 3 + QSIZE],
    _pad: [u8; 256],
    used: [u32; 2 + 2 * QSIZE],
    header: [u64; 2],
    data: [u8; 512],
    status: [u8; 4],
}

fn ecam_read(ecam: u64, off: u64) -> u32 {
    // SAFETY: the VM's ECAM window from its device tree; an aligned 32-bit read.
    unsafe { arch::read32(ecam + (off & !3)) >> (8 * (off & 3)) }
}

fn ecam_write(ecam: u64, off: u64, v: u32) {
    // SAFETY: as ecam_read; a 32-bit write to the assigned function's configuration space.
    unsafe { arch::write32(ecam + off, v) }
}

fn mmio(addr: u64, size: u32, write: bool, v: u64) -> u64 {
    // SAFETY: inside the BAR the probe placed in its PCI window (device memory at stage 2).
    unsafe { arch::access(addr, size, write, v) }
}

/// The ECAM base and the PCI memory window from the `pci-host-ecam-generic` node.
fn pci_node(dtb: usize) -> Option<(u64, u64)> {
    // SAFETY: hyp passes the VM's device tree in x0 (booting.rst).
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()?;
    let node = fdt.find_compatible(&["pci-host-ecam-generic"])?;
    let ecam = node.reg()?.next()?.starting_address as u64;
    let r = node.property("ranges")?.value;
    // (space, pci hi, pci lo, cpu hi, cpu lo, size hi, size lo)
    let cell = |i: usize| u64::from(u32::from_be_bytes(r[4 * i..4 * i + 4].try_into().unwrap()));
    (r.len() >= 28).then(|| (ecam, cell(3) << 32 | cell(4)))
}

/// Where the function's virtio structure of `kind` is: BAR index and offset (its capability
/// list, virtio 1.2 §4.1.4), plus the notify multiplier for the notify structure.
fn find_cap(ecam: u64, kind: u8) -> Option<(u32, u64, u32)> {
    let mut p = u64::from(ecam_read(ecam, 0x34) & 0xfc);
    for _ in 0..48 {
        if p == 0 {
            return None;
        }
        let id = ecam_read(ecam, p) & 0xff;
        let next = u64::from((ecam_read(ecam, p) >> 8) & 0xfc);
        if id == 0x09 && (ecam_read(ecam, p) >> 24) as u8 == kind {
            let bar = ecam_read(ecam, p + 4) & 0xff;
            let off = u64::from(ecam_read(ecam, p + 8));
            let mult = if kind == CAP_NOTIFY {
                ecam_read(ecam, p + 16)
            } else {
                0
            };
            return Some((bar, off, mult));
        }
        p = next;
    }
    None
}

/// Places every memory BAR of the function at `ecam` in `window`, naturally aligned (hyp turns
/// memory decoding on only once all of them hold addresses inside it); their addresses by BAR.
fn place_bars(ecam: u64, window: u64) -> [u64; 6] {
    let mut bar_at = [0u64; 6];
    let mut next = window;
    let mut i = 0;
    while i < 6 {
        let reg = 0x10 + 4 * i as u64;
        ecam_write(ecam, reg, u32::MAX);
        let lo = ecam_read(ecam, reg);
        if lo == 0 || lo & 1 != 0 {
            i += 1;
            continue;
        }
        let wide = (lo >> 1) & 3 == 2;
        let size = u64::from((!(lo & !0xf)).wrapping_add(1));
        next = next.next_multiple_of(size);
        bar_at[i] = next;
        ecam_write(ecam, reg, next as u32);
        if wide {
            ecam_write(ecam, reg + 4, (next >> 32) as u32);
        }
        next += size;
        i += if wide { 2 } else { 1 };
    }
    bar_at
}

/// `pci-net`: the VM's PCI view of its assigned virtio-net-pci (slot `probe.slot`, 1): found
/// by its IDs, its BARs placed in the window, its device configuration (the MAC address) read
/// through them; every other slot of the bus reads as absent.
pub fn net(env: &Env) -> Verdict {
    let Some((ecam_base, window)) = pci_node(env.dtb) else {
        return fail(line!("no pci-host-ecam-generic node with a memory window"));
    };
    let slot = env.args.num("probe.slot", 1);
    let ecam = ecam_base + (slot << 15);
    let id = ecam_read(ecam, 0);
    if id & 0xffff != VIRTIO_VENDOR || id >> 16 != VIRTIO_NET {
        return fail(line!("00:{slot:02x}.0 is {id:#x}, not a modern virtio-net"));
    }
    let others = (0..32u64)
        .filter(|&s| s != slot)
        .filter(|&s| ecam_read(ecam_base + (s << 15), 0) != u32::MAX)
        .count();
    if others != 0 {
        return fail(line!("{others} other slots show a function"));
    }
    let Some((dbar, doff, _)) = find_cap(ecam, CAP_DEVICE) else {
        return fail(line!("no virtio device-configuration capability"));
    };
    let bar_at = place_bars(ecam, window);
    ecam_write(ecam, 4, 0x2); // memory decoding
    if ecam_read(ecam, 4) & 0x2 == 0 {
        return fail(line!(
            "memory decoding refused with every BAR in the window"
        ));
    }
    let cfg = bar_at[dbar as usize] + doff;
    let mac: [u8; 6] = core::array::from_fn(|i| mmio(cfg + i as u64, 1, false, 0) as u8);
    ecam_write(ecam, 4, 0);
    pass(line!(
        "virtio-net at 00:{slot:02x}.0, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, 31 other slots absent",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    ))
}

/// `dma-outside`: drives the assigned disk at slot `probe.slot` (1): first a read of sector 0
/// into its own RAM (must work: DMA through the SMMU into RAM), then the same read aimed at
/// each address of `probe.targets` outside its RAM (the SMMU must fault it: the case checks
/// hyp's event line and the other VM's data).
pub fn outside(env: &Env) -> Verdict {
    let Some((ecam_base, window)) = pci_node(env.dtb) else {
        return fail(line!("no pci-host-ecam-generic node with a memory window"));
    };
    let slot = env.args.num("probe.slot", 1);
    let ecam = ecam_base + (slot << 15);
    let id = ecam_read(ecam, 0);
    if id & 0xffff != VIRTIO_VENDOR || id >> 16 != VIRTIO_BLK {
        return fail(line!("00:{slot:02x}.0 is {id:#x}, not a modern virtio-blk"));
    }
    let (Some((cbar, coff, _)), Some((nbar, noff, mult))) =
        (find_cap(ecam, CAP_COMMON), find_cap(ecam, CAP_NOTIFY))
    else {
        return fail(line!("no virtio common or notify capability"));
    };
    let bar_at = place_bars(ecam, window);
    ecam_write(ecam, 4, 0x6); // memory decoding, bus mastering
    let cfg = bar_at[cbar as usize] + coff;
    let set_status = |s: u32| mmio(cfg + common::DEVICE_STATUS, 1, true, u64::from(s));
    let get_status = || mmio(cfg + common::DEVICE_STATUS, 1, false, 0) as u32;
    set_status(0);
    set_status(status::ACKNOWLEDGE | status::DRIVER);
    // VIRTIO_F_VERSION_1 (32) and VIRTIO_F_ACCESS_PLATFORM (33): the device's DMA goes
    // through the platform's IOMMU, hyp's SMMU.
    mmio(cfg + common::DEVICE_FEATURE_SELECT, 4, true, 1);
    let high = mmio(cfg + common::DEVICE_FEATURE, 4, false, 0);
    if high & 0b11 != 0b11 {
        return fail(line!(
            "the device lacks VERSION_1 or ACCESS_PLATFORM (features[63:32] {high:#x})"
        ));
    }
    mmio(cfg + common::DRIVER_FEATURE_SELECT, 4, true, 0);
    mmio(cfg + common::DRIVER_FEATURE, 4, true, 0);
    mmio(cfg + common::DRIVER_FEATURE_SELECT, 4, true, 1);
    mmio(cfg + common::DRIVER_FEATURE, 4, true, 0b11);
    set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    if get_status() & status::FEATURES_OK == 0 {
        return fail(line!("the device refused the features"));
    }
    let mut ring = Box::new(Ring {
        desc: [[0; 2]; QSIZE],
        avail: [0; 3 + QSIZE],
        _pad: [0; 256],
        used: [0; 2 + 2 * QSIZE],
        header: [0; 2],
        data: [0; 512],
        status: [0xff; 4],
    });
    let r = &mut *ring as *mut Ring;
    mmio(cfg + common::QUEUE_SELECT, 2, true, 0);
    let qsize = mmio(cfg + common::QUEUE_SIZE, 2, false, 0).min(QSIZE as u64);
    mmio(cfg + common::QUEUE_SIZE, 2, true, qsize);
    // SAFETY: fields of the boxed ring, which lives until the end of the test.
    let (desc, avail, used) = unsafe {
        (
            core::ptr::addr_of!((*r).desc) as u64,
            core::ptr::addr_of!((*r).avail) as u64,
            core::ptr::addr_of!((*r).used) as u64,
        )
    };
    mmio(cfg + common::QUEUE_DESC, 8, true, desc);
    mmio(cfg + common::QUEUE_DRIVER, 8, true, avail);
    mmio(cfg + common::QUEUE_DEVICE, 8, true, used);
    let qnotify = mmio(cfg + common::QUEUE_NOTIFY_OFF, 2, false, 0);
    mmio(cfg + common::QUEUE_ENABLE, 2, true, 1);
    set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    let notify = bar_at[nbar as usize] + noff + qnotify * u64::from(mult);

    // A read of sector 0 into `buffer`; returns whether the device completed it (OK status).
    let mut round = 0u16;
    let mut request = |buffer: u64| -> bool {
        // SAFETY: the probe's own ring, shared with the device only through DMA.
        let rg = unsafe { &mut *r };
        rg.header = [0, 0]; // VIRTIO_BLK_T_IN, sector 0
        rg.status = [0xff; 4];
        let header = core::ptr::addr_of!(rg.header) as u64;
        let st = core::ptr::addr_of!(rg.status) as u64;
        // desc: addr, len | flags << 32 | next << 48 (NEXT = 1, WRITE = 2).
        rg.desc[0] = [header, 16 | 1 << 32 | 1 << 48];
        rg.desc[1] = [buffer, 512 | 3 << 32 | 2 << 48];
        rg.desc[2] = [st, 1 | 2 << 32];
        round += 1;
        rg.avail[2 + usize::from((round - 1) % qsize as u16)] = 0;
        // SAFETY: the avail index, written after the ring entry (device memory: ordered).
        unsafe { core::ptr::write_volatile(&mut rg.avail[1], round) };
        mmio(notify, 2, true, 0);
        let t0 = arch::counter();
        while rt::micros(t0, arch::counter()) < 500_000 {
            // SAFETY: the used index the device writes.
            let done = unsafe { core::ptr::read_volatile(&rg.used[0]) } >> 16;
            if done as u16 == round {
                // SAFETY: the status byte the device wrote.
                return unsafe { core::ptr::read_volatile(&rg.status[0]) } == 0;
            }
            if get_status() & status::NEEDS_RESET != 0 {
                return false;
            }
        }
        false
    };
    // SAFETY: the data field of the boxed ring.
    let own = unsafe { core::ptr::addr_of!((*r).data) as u64 };
    // Checked after the attack, which goes on either way (an SMMU that let the device reach
    // host memory directly must be seen doing it, by the other VMs' checks).
    let own_ok = request(own);
    // SAFETY: as above; the device wrote it by DMA.
    let first = unsafe { core::ptr::read_volatile(&(*r).data[0]) };
    let targets = env.args.get("probe.targets").unwrap_or("0x1000000000");
    let (mut n, mut completed) = (0, 0);
    for t in targets.split('+').filter(|t| !t.is_empty()) {
        let Some(addr) = rt::parse_num(t) else {
            return fail(line!("bad probe.targets item {t}"));
        };
        // Whether the device reports success is up to it (QEMU drops the faulted writes and
        // completes the request); what matters is that nothing outside this VM's RAM was
        // written: hyp's SMMU event line and the other VMs' data say so.
        if request(addr) {
            completed += 1;
        }
        n += 1;
        if get_status() & status::NEEDS_RESET != 0 {
            // The device gave up on the queue: start it again for the next target.
            break;
        }
    }
    set_status(0);
    ecam_write(ecam, 4, 0);
    if !own_ok {
        return fail(line!(
            "a read into its own RAM at {own:#x} did not complete"
        ));
    }
    pass(line!(
        "read into its RAM ok (first byte {first:#04x}), {n} DMA writes aimed outside its RAM \
         ({completed} reported done by the device)"
    ))
}
