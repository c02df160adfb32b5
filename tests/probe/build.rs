//! Links the probe with its linker script (Image header first) and sets `cfg(probe_bare)` for
//! the bare-metal aarch64 target; anything else builds a stub.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo::rustc-check-cfg=cfg(probe_bare)");
    if target.starts_with("aarch64-") && target.ends_with("-none") {
        println!("cargo:rustc-cfg=probe_bare");
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    }
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
