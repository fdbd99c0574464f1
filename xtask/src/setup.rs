//! `cargo xtask setup`: installs what building, the lab and the tests need, idempotently.
//!
//! Each step checks first and acts only when something is missing, so a second run finds
//! everything in place and returns in seconds.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::sh;

/// Debian packages the project uses (build, lab, tests, comparisons, troubleshooting).
const APT_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "iputils-ping",
    "ethtool",
    "procps",
    "util-linux",
    "postgresql-15",
    "postgresql-client-15",
    "haproxy",
    "keepalived",
    "tcpdump",
    "curl",
    // The lab's test CAs and PostgreSQL server certificates (xtask/src/lab/tls.rs); libssl-dev
    // for the openssl crate pglb's TLS to PostgreSQL is built on (pkg-config finds it).
    "openssl",
    "libssl-dev",
    "pkg-config",
    // Faults in the lab: bridge-family nftables in the switch namespace cut paths between hosts
    // (the kernel has no tc `gact` action for `tc ... action drop`).
    "nftables",
    // SYN floods against the VIP (the syn-flood drill).
    "hping3",
    // promtool: `cargo xtask test` checks config/prometheus and runs the alert rules' unit tests.
    // (On a systemd host the package also enables a Prometheus server on :9090.)
    "prometheus",
    // A headless browser: the e2e test of the /stats page renders it and takes a screenshot
    // (fonts-liberation: chromium only recommends it, and setup installs no recommends).
    "chromium",
    "fonts-liberation",
];

/// Where the LLVM folder for bpf-linker lives; bpf-linker finds libLLVM through it at run time,
/// so it must stay.
pub const LLVM_PREFIX: &str = "/usr/local/lib/pglb-llvm";

/// The bpf-linker release that fits the pinned aya crates and nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cargo-deb release `cargo xtask package` builds the Debian package with (Rust >= 1.85).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// The PostgreSQL 15 server binaries the lab runs.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub fn setup() -> Result<()> {
    sh::require_root("setup")?;
    let started = Instant::now();
    let mut done = Vec::new();

    if let Some(installed) = apt_packages()? {
        done.push(format!("installed apt packages: {}", installed.join(" ")));
    }
    check_nightly()?;
    if rust_src()? {
        done.push("added nightly's rust-src".to_owned());
    }
    if bpf_linker()? {
        done.push(format!("built bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM"));
    }
    if cargo_deb()? {
        done.push(format!("installed cargo-deb {CARGO_DEB_VERSION}"));
    }
    if bpffs()? {
        done.push("mounted bpffs at /sys/fs/bpf".to_owned());
    }
    for tool in ["pg_ctl", "initdb", "pg_basebackup", "pg_rewind", "pgbench", "psql"] {
        let path = Path::new(PG_BIN).join(tool);
        if !path.exists() {
            bail!("{} is missing after installing postgresql-15: check `apt-cache policy postgresql-15`", path.display());
        }
    }
    if !promtool_works() {
        bail!("promtool does not run after installing prometheus: check `apt-cache policy prometheus`");
    }

    let secs = started.elapsed().as_secs_f64();
    if done.is_empty() {
        println!("setup: everything already in place (apt packages, chromium, promtool, nightly rust-src, bpf-linker, cargo-deb, bpffs) [{secs:.1}s]");
    } else {
        for line in &done {
            println!("setup: {line}");
        }
        println!("setup: done [{secs:.1}s]");
    }
    Ok(())
}

/// True when everything `setup` would install is already there (no side effects).
pub fn is_complete() -> bool {
    let apt_ok = missing_apt_packages().map(|m| m.is_empty()).unwrap_or(false);
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    apt_ok && linker_ok && promtool_works() && cargo_deb_installed() && rust_src_installed().unwrap_or(false) && bpffs_mounted()
}

/// promtool (package `prometheus`) answers `--version`.
fn promtool_works() -> bool {
    Command::new("promtool")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether `cargo deb` runs (`cargo xtask package` needs it).
pub fn cargo_deb_installed() -> bool {
    Command::new("cargo").args(["deb", "--version"]).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Installs cargo-deb (the Debian package builder of `cargo xtask package`) unless it runs.
fn cargo_deb() -> Result<bool> {
    if cargo_deb_installed() {
        return Ok(false);
    }
    println!("setup: building cargo-deb {CARGO_DEB_VERSION} (a few minutes)");
    sh::run_inherit(&mut sh::cmd("cargo", ["install", "cargo-deb", "--version", CARGO_DEB_VERSION, "--locked"]))
        .context("cargo install cargo-deb failed (see the output above)")?;
    Ok(true)
}

fn missing_apt_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for pkg in APT_PACKAGES {
        let out = sh::capture(&mut sh::cmd("dpkg-query", ["-W", "-f=${Status}", pkg]))
            .context("dpkg-query is missing: setup supports Debian and Ubuntu only")?;
        if !String::from_utf8_lossy(&out.stdout).contains("install ok installed") {
            missing.push(*pkg);
        }
    }
    Ok(missing)
}

fn apt_packages() -> Result<Option<Vec<&'static str>>> {
    let missing = missing_apt_packages()?;
    if missing.is_empty() {
        return Ok(None);
    }
    println!("setup: installing {}", missing.join(" "));
    sh::run_inherit(&mut sh::cmd("apt-get", ["update", "-q"]))
        .context("apt-get update failed: check the machine's apt sources and network")?;
    let mut install = sh::cmd("apt-get", ["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
    sh::run_inherit(&mut install).with_context(|| {
        format!("apt-get install failed for {}: install them by hand and rerun setup", missing.join(" "))
    })?;
    Ok(Some(missing))
}

fn check_nightly() -> Result<()> {
    let list = sh::output(&mut sh::cmd("rustup", ["toolchain", "list"]))
        .context("rustup is missing: install Rust with rustup (https://rustup.rs)")?;
    if !list.lines().any(|l| l.starts_with("nightly")) {
        bail!("the nightly Rust toolchain is missing (the eBPF crate builds with it): run `rustup toolchain install nightly`");
    }
    Ok(())
}

fn rust_src_installed() -> Result<bool> {
    let installed = sh::output(&mut sh::cmd(
        "rustup",
        ["component", "list", "--toolchain", "nightly", "--installed"],
    ))?;
    Ok(installed.lines().any(|l| l.starts_with("rust-src")))
}

fn rust_src() -> Result<bool> {
    if rust_src_installed()? {
        return Ok(false);
    }
    sh::run_inherit(&mut sh::cmd("rustup", ["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("could not add rust-src to nightly: run `rustup component add rust-src --toolchain nightly`")?;
    Ok(true)
}

/// Builds bpf-linker against nightly's own libLLVM, through a folder of symlinks that must stay.
fn bpf_linker() -> Result<bool> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if works {
        return Ok(false);
    }
    let sysroot = sh::output(&mut sh::cmd("rustc", ["+nightly", "--print", "sysroot"]))
        .context("could not ask nightly rustc for its sysroot")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}: is the nightly toolchain complete?", lib_dir.display()))?;
    // "libLLVM.so.22.1-rust-1.97.0-nightly" -> major 22
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM major version from {llvm}"))?
        .to_owned();
    let prefix_lib = Path::new(LLVM_PREFIX).join("lib");
    fs::create_dir_all(&prefix_lib).with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so".to_owned(), llvm.clone()] {
        let link = prefix_lib.join(&name);
        let _ = fs::remove_file(&link);
        symlink(lib_dir.join(&llvm), &link)
            .with_context(|| format!("linking {} to nightly's {llvm}", link.display()))?;
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} (a few minutes)");
    let mut install = sh::cmd(
        "cargo",
        [
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ],
    );
    install.env("LLVM_PREFIX", LLVM_PREFIX);
    sh::run_inherit(&mut install).context("cargo install bpf-linker failed (see the output above)")?;
    Ok(true)
}

fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_dev, path, kind) = (f.next(), f.next(), f.next());
            path == Some("/sys/fs/bpf") && kind == Some("bpf")
        }))
        .unwrap_or(false)
}

fn bpffs() -> Result<bool> {
    if bpffs_mounted() {
        return Ok(false);
    }
    sh::run(&mut sh::cmd("mount", ["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("could not mount bpffs at /sys/fs/bpf: does the kernel have CONFIG_BPF_SYSCALL?")?;
    Ok(true)
}
