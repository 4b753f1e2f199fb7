//! Rebuild the eBPF object when the linker changes (a new nightly LLVM needs a new
//! bpf-linker, see `cargo xtask setup`).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
