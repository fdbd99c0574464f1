use which::which;

/// Rebuild the eBPF object when bpf-linker changes (it is not a cargo dependency).
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found on PATH: run `cargo xtask setup` (it builds bpf-linker against nightly's LLVM)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().expect("bpf-linker path is not UTF-8"));
}
