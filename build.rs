//! Links the release binary with its functions in the order of `benches/symbol-order.txt`.
//!
//! Why: the kernel maps a binary's code in blocks around each page it first runs, so code spread
//! over the whole text segment makes most of the 23 MB resident although a fraction of it runs.
//! The file lists the functions a serving podbridge runs (start-up, watches, the common Docker
//! requests), found by `benches/symbol_order.sh`; lld puts them together at the front of the
//! text. Functions the file does not name keep their place, names it lists that no longer
//! exist are skipped: a stale file costs memory, never a build.

use std::path::Path;

const ORDER_FILE: &str = "benches/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=PODBRIDGE_SYMBOL_ORDER");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    // Only rust-lld, the default linker of this target since Rust 1.90, takes the option.
    let target = std::env::var("TARGET").unwrap_or_default();
    let wanted = std::env::var("PODBRIDGE_SYMBOL_ORDER").as_deref() != Ok("0");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(ORDER_FILE);
    if release && wanted && target == "x86_64-unknown-linux-gnu" && file.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            file.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
