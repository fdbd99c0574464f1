use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Build the lb-ebpf object with nightly + bpf-linker and leave it in OUT_DIR, where
/// `lb_user::EBPF_OBJECT` embeds it.
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?;
    let root_dir = PathBuf::from(manifest_dir).join("../lb-ebpf");
    let root_dir = root_dir
        .canonicalize()
        .with_context(|| format!("finding the lb-ebpf crate at {}", root_dir.display()))?;
    let root_dir = root_dir.to_str().ok_or_else(|| anyhow!("lb-ebpf path is not UTF-8"))?;
    let package = Package { name: "lb-ebpf", root_dir, ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the eBPF object failed (it needs nightly's rust-src and bpf-linker: run `cargo xtask setup`)",
    )
}
