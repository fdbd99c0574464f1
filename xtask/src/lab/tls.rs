//! The lab's TLS: a test CA, a server certificate per PostgreSQL node (its address as an IP
//! subjectAltName, so `sslmode=verify-full` works with IP hosts) and a second, unrelated CA that
//! tests use as the wrong one. Made with the openssl CLI under `/run/pglb-lab/tls`.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::topology::{Host, STATE_DIR};
use crate::sh;

/// The folder of the CAs (0755: the standbys' PostgreSQL reads the CA certificate).
pub fn dir() -> PathBuf {
    PathBuf::from(STATE_DIR).join("tls")
}

/// The lab CA's certificate: `sslrootcert` of the probes (installed on each load balancer) and
/// of the standbys' `primary_conninfo`.
pub fn ca_cert() -> PathBuf {
    dir().join("ca.crt")
}

/// A node's server certificate and key, beside its data directory (owned by postgres, 0600).
pub fn server_cert(node: &Host) -> PathBuf {
    node.dir().join("server.crt")
}

pub fn server_key(node: &Host) -> PathBuf {
    node.dir().join("server.key")
}

fn openssl(args: &[&str]) -> Result<()> {
    sh::run(&mut sh::cmd("openssl", args.iter().copied())).context("openssl (installed by `cargo xtask setup`)")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}

/// A self-signed CA, valid for a year: `<name>.crt` and `<name>.key` in [`dir`].
fn make_ca(name: &str, subject: &str) -> Result<()> {
    let (crt, key) = (dir().join(format!("{name}.crt")), dir().join(format!("{name}.key")));
    openssl(&[
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "365",
        "-subj", subject, "-keyout", path_str(&key), "-out", path_str(&crt),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ])
    .with_context(|| format!("making the {name} CA"))?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
    fs::set_permissions(&crt, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// A server certificate for `node` signed by the lab CA: CN and DNS name the node's name, IP its
/// address. The node's folder must exist.
pub fn make_server_cert(node: &Host) -> Result<()> {
    let (crt, key) = (server_cert(node), server_key(node));
    let csr = node.dir().join("server.csr");
    let ext = node.dir().join("server.ext");
    openssl(&[
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", &format!("/CN={}", node.name), "-keyout", path_str(&key), "-out", path_str(&csr),
    ])
    .with_context(|| format!("making {}'s key and request", node.name))?;
    fs::write(&ext, format!("subjectAltName = IP:{}, DNS:{}\nextendedKeyUsage = serverAuth\n", node.addr, node.name))?;
    let ca_key = dir().join("ca.key");
    openssl(&[
        "x509", "-req", "-in", path_str(&csr), "-CA", path_str(&ca_cert()), "-CAkey", path_str(&ca_key), "-CAcreateserial",
        "-days", "365", "-sha256", "-extfile", path_str(&ext), "-out", path_str(&crt),
    ])
    .with_context(|| format!("signing {}'s certificate", node.name))?;
    fs::remove_file(&csr)?;
    fs::remove_file(&ext)?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
    sh::run(&mut sh::cmd("chown", ["postgres:postgres", path_str(&key), path_str(&crt)]))
}

/// The two CAs, before any node is made: `ca` signs the nodes' certificates; `wrong-ca` signs
/// nothing (tests/tls.rs: a client trusting only it must refuse every node).
pub fn create_cas() -> Result<()> {
    fs::create_dir_all(dir())?;
    fs::set_permissions(dir(), fs::Permissions::from_mode(0o755))?;
    make_ca("ca", "/CN=pglb lab CA")?;
    make_ca("wrong-ca", "/CN=pglb lab wrong CA")
}

/// The TLS lines of a node's `node.conf`.
pub fn node_conf(node: &Host) -> String {
    format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
        server_cert(node).display(),
        server_key(node).display(),
        ca_cert().display()
    )
}
