//! `cargo xtask package`: the Debian package of pglb, built by cargo-deb from lb-user's
//! `[package.metadata.deb]` (release build; build.rs embeds the XDP object), and the checks
//! `cargo xtask test` runs on it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{lab, sh};

/// Where the package installs each file, as `dpkg-deb --contents` lists them.
pub const BINARY: &str = "./usr/bin/pglb";
pub const CONFIG: &str = "./etc/pglb/pglb.toml";
pub const UNIT: &str = "./usr/lib/systemd/system/pglb.service";

/// `cargo xtask package`: builds the package and prints its path.
pub fn package() -> Result<()> {
    let deb = build()?;
    println!("{}", deb.display());
    Ok(())
}

/// Runs `cargo deb -p lb-user` and returns the `.deb` it wrote.
pub fn build() -> Result<PathBuf> {
    if !crate::setup::cargo_deb_installed() {
        bail!("cargo-deb is missing: run `cargo xtask setup` (or `cargo install cargo-deb --locked`)");
    }
    let mut cmd = sh::cmd("cargo", ["deb", "-p", "lb-user", "--locked"]);
    cmd.current_dir(lab::lb::workspace());
    // `pglb_build_info` names the commit built, when this is a git checkout.
    let mut rev = sh::cmd("git", ["rev-parse", "HEAD"]);
    rev.current_dir(lab::lb::workspace());
    if let Ok(commit) = sh::output(&mut rev) {
        cmd.env("PGLB_GIT_COMMIT", commit.trim());
    }
    // cargo-deb prints the path of the package it wrote as its last line on stdout.
    let out = sh::output(&mut cmd).context("building the Debian package (cargo deb)")?;
    let path = out
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .with_context(|| format!("cargo deb printed no .deb path: {out}"))?;
    let deb = PathBuf::from(path);
    ensure!(deb.is_file(), "cargo deb named {} but it is not there", deb.display());
    Ok(deb)
}

/// The paths `dpkg-deb --contents` lists (the last column of each line).
pub fn contents(deb: &Path) -> Result<Vec<String>> {
    let out = sh::output(&mut sh::cmd("dpkg-deb", [Path::new("--contents"), deb]))?;
    Ok(parse_contents(&out))
}

fn parse_contents(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(str::to_owned)
        .collect()
}

/// Fails unless the listing holds the binary, the config and the unit.
pub fn check_contents(paths: &[String]) -> Result<()> {
    let missing: Vec<&str> = [BINARY, CONFIG, UNIT]
        .into_iter()
        .filter(|want| !paths.iter().any(|p| p == want))
        .collect();
    ensure!(missing.is_empty(), "the package lacks {}; it holds: {}", missing.join(", "), paths.join(" "));
    Ok(())
}

/// Fails unless the package marks the config as a conffile.
pub fn check_conffiles(deb: &Path, scratch: &Path) -> Result<()> {
    let control = scratch.join("DEBIAN");
    sh::run(&mut sh::cmd("dpkg-deb", [Path::new("--control"), deb, &control]))?;
    let conffiles = fs::read_to_string(control.join("conffiles")).context("the package has no conffiles")?;
    ensure!(
        conffiles.lines().any(|l| l.trim() == "/etc/pglb/pglb.toml"),
        "/etc/pglb/pglb.toml is not a conffile (conffiles: {conffiles:?})"
    );
    Ok(())
}

/// Extracts the package into `root` (`dpkg-deb -x`).
pub fn extract(deb: &Path, root: &Path) -> Result<()> {
    sh::run(&mut sh::cmd("dpkg-deb", [Path::new("-x"), deb, root]))
}

/// `systemd-analyze verify` on the extracted unit. Its ExecStart names /usr/bin/pglb, which is
/// checked to exist, so the check runs with `--root` at the extracted tree: the unit and the
/// binary it starts both come from the package. Under `--root` the targets the unit depends on
/// (sysinit.target, network-online.target, ...) are looked up in the tree too, so the host's
/// unit files are copied in first, never over the package's own (`cp -n`).
pub fn verify_unit(root: &Path) -> Result<String> {
    let unit = root.join(UNIT.trim_start_matches("./"));
    let units = unit.parent().expect("the unit has a folder");
    sh::run(sh::cmd("cp", ["-an", "/usr/lib/systemd/system/."]).arg(units))
        .context("copying the host's unit files into the scratch root")?;
    let mut cmd = sh::cmd("systemd-analyze", ["verify", "--man=no"]);
    cmd.arg(format!("--root={}", root.display())).arg(&unit);
    let out = sh::capture(&mut cmd)?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "`{}` failed ({}): {}", sh::display(&cmd), out.status, text.trim());
    // Any complaint about pglb.service itself is a failure too (verify exits 0 on some warnings).
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("pglb.service")).collect();
    ensure!(about_unit.is_empty(), "systemd-analyze verify complains about the unit: {}", about_unit.join(" | "));
    Ok(text)
}

/// Runs the packaged binary's `pglb check` on the packaged config. The example config names
/// secret files in /etc/pglb that the package does not ship (secrets are the operator's: the
/// probe's password file and the peer key); this creates them inside `root` (0600, as `pglb check`
/// demands of a key) and checks a copy of the config whose only change is those paths pointing
/// into `root`. Everything else `pglb check` reads is the package's own.
pub fn check_config(root: &Path) -> Result<String> {
    let config = root.join(CONFIG.trim_start_matches("./"));
    let text = fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    let (checked, secrets) = with_secrets_in(&text, root)?;
    for secret in &secrets {
        fs::create_dir_all(secret.parent().expect("an absolute path"))?;
        fs::write(secret, "scratch-secret-of-32-bytes-long\n").with_context(|| format!("writing {}", secret.display()))?;
        fs::set_permissions(secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    }
    let copy = root.join("etc/pglb/pglb.check.toml");
    fs::write(&copy, checked).with_context(|| format!("writing {}", copy.display()))?;
    let binary = root.join(BINARY.trim_start_matches("./"));
    let mut cmd = sh::cmd(binary.as_os_str().to_str().context("a UTF-8 scratch path")?, ["check", "--config"]);
    cmd.arg(&copy).env_remove("PGLB_PROBE_PASSWORD").env_remove("PGLB_REPLICATION_PASSWORD");
    sh::output(&mut cmd)
}

/// The keys naming a secret file that `with_secrets_in` moves.
const SECRET_KEYS: [&str; 2] = ["password_file", "key_file"];

/// `text` with every uncommented `password_file = "/abs/path"` and `key_file = "/abs/path"` moved
/// under `root`, and the moved paths.
fn with_secrets_in(text: &str, root: &Path) -> Result<(String, Vec<PathBuf>)> {
    let mut secrets = Vec::new();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        let value = SECRET_KEYS.iter().find_map(|key| {
            let path = trimmed.strip_prefix(key)?.trim_start().strip_prefix('=')?.trim().trim_matches('"');
            Some((*key, path))
        });
        match value {
            Some((key, path)) if path.starts_with('/') => {
                let moved = root.join(path.trim_start_matches('/'));
                out.push_str(&format!("{key} = \"{}\"\n", moved.display()));
                secrets.push(moved);
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    ensure!(!secrets.is_empty(), "the packaged config names no password_file or key_file: the check substitutes nothing and that is unexpected");
    Ok((out, secrets))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn contents_lists_paths_and_finds_missing_files() {
        let listing = "\
drwxr-xr-x 0/0               0 2026-01-01 00:00 ./
-rwxr-xr-x 0/0         9000000 2026-01-01 00:00 ./usr/bin/pglb
-rw-r----- 0/0            9000 2026-01-01 00:00 ./etc/pglb/pglb.toml
-rw-r--r-- 0/0            3000 2026-01-01 00:00 ./usr/lib/systemd/system/pglb.service
";
        let paths = parse_contents(listing);
        assert_eq!(paths[1], BINARY);
        check_contents(&paths).unwrap();
        let err = check_contents(&paths[..2]).unwrap_err().to_string();
        assert!(err.contains("pglb.toml") && err.contains("pglb.service"), "{err}");
    }

    #[test]
    fn only_secret_files_move_into_the_scratch_root() {
        let text = "[probe]\nuser = \"pglb\"\npassword_file = \"/etc/pglb/pglb.password\"\n# password_file = \"/x\"\n[replication]\n  password_file=\"/etc/pglb/r.password\"\n[vrrp]\nkey_file = \"/etc/pglb/peer.key\"\n# key_file = \"/y\"\n";
        let (out, secrets) = with_secrets_in(text, Path::new("/tmp/root")).unwrap();
        assert_eq!(
            secrets,
            [
                Path::new("/tmp/root/etc/pglb/pglb.password"),
                Path::new("/tmp/root/etc/pglb/r.password"),
                Path::new("/tmp/root/etc/pglb/peer.key")
            ]
        );
        assert_eq!(out, "[probe]\nuser = \"pglb\"\npassword_file = \"/tmp/root/etc/pglb/pglb.password\"\n# password_file = \"/x\"\n[replication]\npassword_file = \"/tmp/root/etc/pglb/r.password\"\n[vrrp]\nkey_file = \"/tmp/root/etc/pglb/peer.key\"\n# key_file = \"/y\"\n");
        assert!(with_secrets_in("[probe]\n", Path::new("/r")).is_err());
    }
}
