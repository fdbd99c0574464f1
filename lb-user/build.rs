use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Build the lb-ebpf objects with nightly + bpf-linker and leave them in OUT_DIR, where
/// `lb_user::EBPF_OBJECT` and `AGENT_OBJECT` embed them.
///
/// aya-build relays everything the nested `cargo build` writes on stderr as `cargo:warning`
/// lines; on a first build that is every "Compiling …" of core and the eBPF crates, ~65 lines of
/// `warning: lb-user@0.1.0: …`. The nested cargo runs quiet instead (`CARGO_TERM_QUIET`): its
/// compiler diagnostics still come through (they travel in its JSON messages, which aya-build
/// relays), and so does a failure; a success prints the one line below.
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?;
    let root_dir = PathBuf::from(manifest_dir).join("../lb-ebpf");
    let root_dir = root_dir
        .canonicalize()
        .with_context(|| format!("finding the lb-ebpf crate at {}", root_dir.display()))?;
    let root_dir = root_dir.to_str().ok_or_else(|| anyhow!("lb-ebpf path is not UTF-8"))?;
    // SAFETY: a build script is single-threaded here; the variable is read by the nested cargo
    // aya-build spawns (it inherits this process's environment).
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let started = std::time::Instant::now();
    let package = Package { name: "lb-ebpf", root_dir, ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the eBPF object failed (it needs nightly's rust-src and bpf-linker: run `cargo xtask setup`)",
    )?;
    println!("cargo:warning=eBPF objects (lb-ebpf: XDP data plane, agent connect4) built with nightly and bpf-linker in {} s", started.elapsed().as_secs());
    Ok(())
}
