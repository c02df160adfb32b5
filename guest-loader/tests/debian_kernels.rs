//! Real Debian 6.12 kernels, once `run` has downloaded them to `build/guests/` (outside git):
//! `cargo test -p guest-loader --test debian_kernels -- --ignored`. Ignored by default because
//! the files are not in the repository; when run, a missing file is a failure.

use guest_loader::image::{load_kernel, MAX_IMAGE_SIZE};
use guest_loader::Granule;
use std::path::PathBuf;

fn kernel(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("GUEST_KERNELS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/guests"),
        PathBuf::from,
    );
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
#[ignore = "needs the Debian kernels in build/guests (or $GUEST_KERNELS)"]
fn debian_4k_and_16k_headers() {
    for (name, flags, page) in [
        ("vmlinuz-4k", 0xa, Granule::K4),
        ("vmlinuz-16k", 0xc, Granule::K16),
    ] {
        let file = kernel(name);
        let k = load_kernel(&file, MAX_IMAGE_SIZE).unwrap();
        let h = k.header;
        assert_eq!(h.flags, flags, "{name}");
        assert_eq!(h.page_size, Some(page), "{name}");
        assert_eq!(h.text_offset, 0, "{name}");
        assert!(h.anywhere && !h.legacy && !h.big_endian, "{name}");
        assert!(h.image_size >= file.len() as u64, "{name}");
    }
}
