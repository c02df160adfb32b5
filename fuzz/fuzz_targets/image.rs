//! Any bytes as a kernel file (plain or gzip): header decoding and bounded inflation.
#![no_main]

use guest_loader::image::{load_kernel, ImageHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ImageHeader::parse(data);
    match load_kernel(data, 16 << 20) {
        Ok(k) => assert!(k.data.len() as u64 <= k.header.image_size.max(64)),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
