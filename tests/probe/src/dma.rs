//! A hostile driver for an assigned virtio-blk-pci disk: it sets the device up like a real
//! driver (PCI configuration through the VM's ECAM, virtio 1.x modern transport) and then aims
//! the device's DMA outside the VM's RAM. hyp's SMMU must stop every such access (the device
//! faults, hyp prints an `smmu event` line) while the same device's DMA into the VM's own RAM
//! works.

use alloc::boxed::Box;

use crate::rt;
use crate::tests::{fail, pass, Env, Line, Verdict};
use crate::{arch, line};
use stage2::{AddrRange, Pa};

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

/// The VM's PCI host bridge, from its `pci-host-ecam-generic` node.
struct PciHost {
    /// The ECAM's base (bus 0: function 00:s.0 at `ecam + (s << 15)`).
    ecam: u64,
    /// The memory window: the CPU address and size of its (first) `ranges` entry.
    window: AddrRange<Pa>,
}

fn pci_node(dtb: usize) -> Option<PciHost> {
    // SAFETY: hyp passes the VM's device tree in x0 (booting.rst).
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()?;
    let node = fdt.find_compatible(&["pci-host-ecam-generic"])?;
    let ecam = node.reg()?.next()?.starting_address as u64;
    let r = node.property("ranges")?.value;
    // (space, pci hi, pci lo, cpu hi, cpu lo, size hi, size lo)
    if r.len() < 28 {
        return None;
    }
    let cell = |i: usize| u64::from(u32::from_be_bytes(r[4 * i..4 * i + 4].try_into().unwrap()));
    let window =
        AddrRange::from_start_len(Pa::new(cell(3) << 32 | cell(4)), cell(5) << 32 | cell(6));
    Some(PciHost {
        ecam,
        window: window.ok()?,
    })
}

/// The assigned function the probe drives: slot `probe.slot` (1) of the VM's PCI bus.
struct Function {
    host: PciHost,
    slot: u64,
    /// Its configuration space in the ECAM.
    ecam: u64,
}

/// The assigned function, checked to be the modern virtio device `device` (`name` in the FAIL
/// line when it is not).
fn assigned(env: &Env, device: u32, name: &str) -> Result<Function, Verdict> {
    let Some(host) = pci_node(env.dtb) else {
        return Err(fail(line!(
            "no pci-host-ecam-generic node with a memory window"
        )));
    };
    let slot = env.args.num("probe.slot", 1);
    let ecam = host.ecam + (slot << 15);
    let id = ecam_read(ecam, 0);
    if id & 0xffff != VIRTIO_VENDOR || id >> 16 != device {
        return Err(fail(line!(
            "00:{slot:02x}.0 is {id:#x}, not a modern {name}"
        )));
    }
    Ok(Function { host, slot, ecam })
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
    let f = match assigned(env, VIRTIO_NET, "virtio-net") {
        Ok(f) => f,
        Err(v) => return v,
    };
    let (slot, ecam) = (f.slot, f.ecam);
    let others = (0..32u64)
        .filter(|&s| s != slot)
        .filter(|&s| ecam_read(f.host.ecam + (s << 15), 0) != u32::MAX)
        .count();
    if others != 0 {
        return fail(line!("{others} other slots show a function"));
    }
    let Some((dbar, doff, _)) = find_cap(ecam, CAP_DEVICE) else {
        return fail(line!("no virtio device-configuration capability"));
    };
    let bar_at = place_bars(ecam, f.host.window.start().get());
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

/// A virtio 1.x PCI device's common configuration structure (virtio 1.2 §4.1.4.3), at `cfg`
/// in one of its BARs.
#[derive(Clone, Copy)]
struct Common {
    cfg: u64,
}

impl Common {
    fn read(self, off: u64, size: u32) -> u64 {
        mmio(self.cfg + off, size, false, 0)
    }

    fn write(self, off: u64, size: u32, v: u64) {
        mmio(self.cfg + off, size, true, v);
    }

    fn set_status(self, s: u32) {
        self.write(common::DEVICE_STATUS, 1, u64::from(s));
    }

    fn status(self) -> u32 {
        self.read(common::DEVICE_STATUS, 1) as u32
    }

    /// Resets the device and negotiates VIRTIO_F_VERSION_1 (32) and VIRTIO_F_ACCESS_PLATFORM
    /// (33): the device's DMA goes through the platform's IOMMU, hyp's SMMU (virtio 1.2
    /// §3.1.1, up to FEATURES_OK).
    fn negotiate(self) -> Result<(), Line> {
        self.set_status(0);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        self.write(common::DEVICE_FEATURE_SELECT, 4, 1);
        let high = self.read(common::DEVICE_FEATURE, 4);
        if high & 0b11 != 0b11 {
            return Err(line!(
                "the device lacks VERSION_1 or ACCESS_PLATFORM (features[63:32] {high:#x})"
            ));
        }
        self.write(common::DRIVER_FEATURE_SELECT, 4, 0);
        self.write(common::DRIVER_FEATURE, 4, 0);
        self.write(common::DRIVER_FEATURE_SELECT, 4, 1);
        self.write(common::DRIVER_FEATURE, 4, 0b11);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        if self.status() & status::FEATURES_OK == 0 {
            return Err(line!("the device refused the features"));
        }
        Ok(())
    }
}

/// The disk's request queue 0, live (DRIVER_OK), with its ring and buffers in the probe's RAM.
struct BlkQueue {
    dev: Common,
    /// Shared with the device through DMA only.
    ring: Box<Ring>,
    size: u64,
    /// The queue's notification address (virtio 1.2 §4.1.4.4).
    notify: u64,
    /// Requests made so far (the avail index).
    round: u16,
}

impl BlkQueue {
    /// Sets queue 0 up on `dev` (after [`Common::negotiate`]) and sets DRIVER_OK; `notify_base`
    /// and `mult` are the notify structure's address and `notify_off_multiplier`.
    fn start(dev: Common, notify_base: u64, mult: u32) -> BlkQueue {
        let ring = Box::new(Ring {
            desc: [[0; 2]; QSIZE],
            avail: [0; 3 + QSIZE],
            _pad: [0; 256],
            used: [0; 2 + 2 * QSIZE],
            header: [0; 2],
            data: [0; 512],
            status: [0xff; 4],
        });
        dev.write(common::QUEUE_SELECT, 2, 0);
        let size = dev.read(common::QUEUE_SIZE, 2).min(QSIZE as u64);
        dev.write(common::QUEUE_SIZE, 2, size);
        dev.write(common::QUEUE_DESC, 8, core::ptr::addr_of!(ring.desc) as u64);
        dev.write(
            common::QUEUE_DRIVER,
            8,
            core::ptr::addr_of!(ring.avail) as u64,
        );
        dev.write(
            common::QUEUE_DEVICE,
            8,
            core::ptr::addr_of!(ring.used) as u64,
        );
        let qnotify = dev.read(common::QUEUE_NOTIFY_OFF, 2);
        dev.write(common::QUEUE_ENABLE, 2, 1);
        dev.set_status(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        BlkQueue {
            dev,
            ring,
            size,
            notify: notify_base + qnotify * u64::from(mult),
            round: 0,
        }
    }

    /// The address of the ring's own data buffer (in the VM's RAM).
    fn own_buffer(&self) -> u64 {
        core::ptr::addr_of!(self.ring.data) as u64
    }

    /// The first byte of the ring's own data buffer, as the device's DMA left it.
    fn first_byte(&self) -> u8 {
        // SAFETY: a byte of the boxed ring, which the device may have written by DMA.
        unsafe { core::ptr::read_volatile(&self.ring.data[0]) }
    }

    /// A read of sector 0 into `buffer`; returns whether the device completed it (OK status)
    /// within 500 ms.
    fn read_sector0(&mut self, buffer: u64) -> bool {
        let rg = &mut *self.ring;
        rg.header = [0, 0]; // VIRTIO_BLK_T_IN, sector 0
        rg.status = [0xff; 4];
        let header = core::ptr::addr_of!(rg.header) as u64;
        let st = core::ptr::addr_of!(rg.status) as u64;
        // desc: addr, len | flags << 32 | next << 48 (NEXT = 1, WRITE = 2).
        rg.desc[0] = [header, 16 | 1 << 32 | 1 << 48];
        rg.desc[1] = [buffer, 512 | 3 << 32 | 2 << 48];
        rg.desc[2] = [st, 1 | 2 << 32];
        self.round += 1;
        let round = self.round;
        rg.avail[2 + usize::from((round - 1) % self.size as u16)] = 0;
        // SAFETY: the avail index, written after the ring entry (device memory: ordered).
        unsafe { core::ptr::write_volatile(&mut rg.avail[1], round) };
        mmio(self.notify, 2, true, 0);
        let t0 = arch::counter();
        while rt::micros(t0, arch::counter()) < 500_000 {
            // SAFETY: the used index the device writes.
            let done = unsafe { core::ptr::read_volatile(&rg.used[0]) } >> 16;
            if done as u16 == round {
                // SAFETY: the status byte the device wrote.
                return unsafe { core::ptr::read_volatile(&rg.status[0]) } == 0;
            }
            if self.dev.status() & status::NEEDS_RESET != 0 {
                return false;
            }
        }
        false
    }
}

/// The same read aimed at each address of `probe.targets` (`+`-separated; default 64 GiB, far
/// outside any VM's RAM), until the device asks for a reset. Returns how many were made and
/// how many the device reported done.
fn aim_outside(env: &Env, q: &mut BlkQueue) -> Result<(u32, u32), Line> {
    let targets = env.args.get("probe.targets").unwrap_or("0x1000000000");
    let (mut n, mut completed) = (0, 0);
    for t in targets.split('+').filter(|t| !t.is_empty()) {
        let Some(addr) = rt::parse_num(t) else {
            return Err(line!("bad probe.targets item {t}"));
        };
        // Whether the device reports success is up to it (QEMU drops the faulted writes and
        // completes the request); what matters is that nothing outside this VM's RAM was
        // written: hyp's SMMU event line and the other VMs' data say so.
        if q.read_sector0(addr) {
            completed += 1;
        }
        n += 1;
        if q.dev.status() & status::NEEDS_RESET != 0 {
            // The device gave up on the queue: start it again for the next target.
            break;
        }
    }
    Ok((n, completed))
}

/// `dma-outside`: drives the assigned disk at slot `probe.slot` (1): first a read of sector 0
/// into its own RAM (must work: DMA through the SMMU into RAM), then the same read aimed at
/// each address of `probe.targets` outside its RAM (the SMMU must fault it: the case checks
/// hyp's event line and the other VM's data).
pub fn outside(env: &Env) -> Verdict {
    let f = match assigned(env, VIRTIO_BLK, "virtio-blk") {
        Ok(f) => f,
        Err(v) => return v,
    };
    let (Some((cbar, coff, _)), Some((nbar, noff, mult))) =
        (find_cap(f.ecam, CAP_COMMON), find_cap(f.ecam, CAP_NOTIFY))
    else {
        return fail(line!("no virtio common or notify capability"));
    };
    let bar_at = place_bars(f.ecam, f.host.window.start().get());
    ecam_write(f.ecam, 4, 0x6); // memory decoding, bus mastering
    let dev = Common {
        cfg: bar_at[cbar as usize] + coff,
    };
    if let Err(why) = dev.negotiate() {
        return fail(why);
    }
    let mut q = BlkQueue::start(dev, bar_at[nbar as usize] + noff, mult);
    let own = q.own_buffer();
    // Checked after the attack, which goes on either way (an SMMU that let the device reach
    // host memory directly must be seen doing it, by the other VMs' checks).
    let own_ok = q.read_sector0(own);
    let first = q.first_byte();
    let (n, completed) = match aim_outside(env, &mut q) {
        Ok(counts) => counts,
        Err(why) => return fail(why),
    };
    dev.set_status(0);
    ecam_write(f.ecam, 4, 0);
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
