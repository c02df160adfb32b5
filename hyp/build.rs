//! Links hyp with its linker script (Image header first, W^X section alignment) and sets
//! `cfg(hyp_bare)` for the bare-metal aarch64 target.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").unwrap_or_default();
    // `hyp_bare`: building the real hypervisor (aarch64, no OS); anything else gets a stub.
    println!("cargo::rustc-check-cfg=cfg(hyp_bare)");
    if target.starts_with("aarch64-") && target.ends_with("-none") {
        println!("cargo:rustc-cfg=hyp_bare");
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    }
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
