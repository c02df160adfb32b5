//! Fixtures shared by the integration tests: synthesized kernels and a default host.
#![allow(dead_code)]

use guest_loader::image::synth::{gzip_stored, image};
use guest_loader::plan::Host;
use guest_loader::CpuFeatures;
use std::collections::BTreeMap;

/// 32 MiB image_size, 64 KiB file: like a kernel, without the bulk.
pub const IMAGE_SIZE: u64 = 32 << 20;

/// Every fixture file the configs may name.
pub fn files() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let k = |flags| image(0, IMAGE_SIZE, flags, 64 << 10);
    m.insert("k4.img".into(), k(0xa));
    m.insert("k16.img".into(), k(0xc));
    m.insert("k64.img".into(), k(0xe));
    m.insert("kany.img".into(), k(0x8));
    m.insert("k16.gz".into(), gzip_stored(&k(0xc)));
    let mut corrupt = gzip_stored(&k(0xc));
    let n = corrupt.len();
    corrupt[n - 8] ^= 0xff;
    m.insert("corrupt.gz".into(), corrupt);
    m.insert("big.img".into(), image(0, 384 << 20, 0xa, 64 << 10));
    m.insert("be.img".into(), image(0, IMAGE_SIZE, 0xb, 64 << 10));
    m.insert("huge.img".into(), image(0, u64::MAX, 0xa, 64 << 10));
    m.insert(
        "offset.img".into(),
        image(0x4000_0000, IMAGE_SIZE, 0xa, 64 << 10),
    );
    m.insert("trunc.img".into(), k(0xa)[..40].to_vec());
    let mut elf = k(0xa);
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[56..60].copy_from_slice(&[0; 4]);
    m.insert("vmlinux.elf".into(), elf);
    m.insert("initrd.cpio".into(), vec![0x30; 1 << 20]);
    m.insert("empty".into(), Vec::new());
    m
}

/// `-cpu max -smp 4 -m 2G` with 128 MiB kept for hyp.
pub fn host() -> Host {
    host_with("max", 4, (2 << 30) - (128 << 20))
}

/// A host from a QEMU CPU profile.
pub fn host_with(cpu: &str, cpus: u32, guest_ram: u64) -> Host {
    Host {
        cpu: CpuFeatures::profile(cpu).expect("known profile"),
        cpus,
        guest_ram,
        smmu: guest_loader::SmmuFeatures::profile("qemu"),
    }
}
