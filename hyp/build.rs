//! Links hyp with its linker script (Image header first, W^X section alignment) when building
//! for the bare-metal target (`all(target_arch = "aarch64", target_os = "none")`, as the
//! crates' `cfg`s spell it).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let cfg = |k: &str| std::env::var(k).unwrap_or_default();
    // The target's cfg values, which cargo passes to build scripts.
    if cfg("CARGO_CFG_TARGET_ARCH") == "aarch64" && cfg("CARGO_CFG_TARGET_OS") == "none" {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    }
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
