//! Any bytes as a boot bundle: the cpio parser, then the plan of what it holds.
#![no_main]

use guest_loader::plan::Host;
use guest_loader::{Bundle, CpuFeatures};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Bundle::parse(data) else {
        return;
    };
    for (name, bytes) in b.files() {
        assert_eq!(b.file(name), Some(bytes));
    }
    let host = Host {
        cpu: CpuFeatures::profile("max").unwrap(),
        cpus: 4,
        guest_ram: 1 << 30,
        smmu: guest_loader::SmmuFeatures::profile("qemu"),
    };
    let _ = b.plan(&host);
});
