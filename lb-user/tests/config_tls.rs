//! Tier 1: `[probe]` and `[replication]` TLS keys (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`) and `[replication] passfile`, table-driven: each sslmode, what validation refuses,
//! and what loading the certificate files refuses (missing, not PEM, a key readable by others,
//! a key of another certificate).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use lb_user::config::{Config, ConfigError, SslMode};
use lb_user::pgtls::{PgTls, TlsFileError, Verify};
use openssl::{
    asn1::Asn1Time,
    bn::BigNum,
    ec::{EcGroup, EcKey},
    hash::MessageDigest,
    nid::Nid,
    pkey::{PKey, Private},
    x509::{X509, X509NameBuilder},
};
use toml::{Table, Value};

const BASE: &str = r#"
[instance]
name = "lb1"
[dataplane]
interface = "eth0"
address = "172.20.0.21/16"
vip = "172.20.0.100/16"
[[listener]]
port = 3000
pool = "write"
[[node]]
name = "pg1"
host = "172.20.0.10"
[[node]]
name = "pg2"
host = "172.20.0.11"
[probe]
user = "pglb"
password_env = "PGLB_TEST_PROBE"
[replication]
user = "replicator"
passfile = "/var/lib/postgresql/.pgpass"
"#;

fn parse_patched(patch: impl FnOnce(&mut Table)) -> Result<Config, ConfigError> {
    let mut table: Table = BASE.parse().expect("BASE is valid toml");
    patch(&mut table);
    Config::parse(&toml::to_string(&table).expect("serializes"), Path::new("test.toml"))
}

fn section<'a>(t: &'a mut Table, name: &str) -> &'a mut Table {
    t[name].as_table_mut().unwrap()
}

fn set(t: &mut Table, name: &str, pairs: &[(&str, &str)]) {
    for (k, v) in pairs {
        section(t, name).insert((*k).to_owned(), Value::String((*v).to_owned()));
    }
}

fn unset(t: &mut Table, name: &str, key: &str) {
    section(t, name).remove(key);
}

#[test]
fn each_sslmode_parses_with_its_libpq_name_and_the_default_is_disable() {
    let c = parse_patched(|_| {}).expect("valid");
    assert_eq!(c.probe.sslmode, SslMode::Disable, "the default keeps plain TCP, as before");
    assert_eq!(c.replication.sslmode, None, "absent: not written, libpq's own default applies");
    assert_eq!(c.replication.passfile.as_deref(), Some(Path::new("/var/lib/postgresql/.pgpass")));
    let probe_modes = [("disable", SslMode::Disable), ("prefer", SslMode::Prefer), ("require", SslMode::Require), ("verify-ca", SslMode::VerifyCa), ("verify-full", SslMode::VerifyFull)];
    for (text, mode) in probe_modes {
        let c = parse_patched(|t| {
            set(t, "probe", &[("sslmode", text)]);
            if text.starts_with("verify") {
                set(t, "probe", &[("sslrootcert", "/etc/pglb/ca.crt")]);
            }
        })
        .unwrap_or_else(|e| panic!("[probe] sslmode = {text:?}: {e}"));
        assert_eq!((c.probe.sslmode, c.probe.sslmode.as_str()), (mode, text));
    }
    for text in ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] {
        let c = parse_patched(|t| set(t, "replication", &[("sslmode", text)])).unwrap_or_else(|e| panic!("[replication] sslmode = {text:?}: {e}"));
        assert_eq!(c.replication.sslmode.map(SslMode::as_str), Some(text), "libpq implements all six in primary_conninfo");
        assert_eq!(text.parse::<SslMode>(), Ok(c.replication.sslmode.unwrap()), "the CLI's --sslmode parses the same names");
    }
    assert!("verify_full".parse::<SslMode>().is_err());
}

#[test]
fn bad_tls_settings_are_refused_with_their_variant() {
    type Patch = fn(&mut Table);
    type Want = fn(&ConfigError) -> bool;
    let cases: Vec<(&str, Patch, Want)> = vec![
        ("probe allow", |t| set(t, "probe", &[("sslmode", "allow")]), |e| matches!(e, ConfigError::SslModeAllow)),
        ("verify-ca without a root", |t| set(t, "probe", &[("sslmode", "verify-ca")]), |e| {
            matches!(e, ConfigError::SslRootCertMissing { section: "probe", mode: SslMode::VerifyCa })
        }),
        ("verify-full without a root", |t| set(t, "probe", &[("sslmode", "verify-full")]), |e| {
            matches!(e, ConfigError::SslRootCertMissing { section: "probe", mode: SslMode::VerifyFull })
        }),
        ("a certificate without its key", |t| set(t, "probe", &[("sslmode", "require"), ("sslcert", "/etc/pglb/c.crt")]), |e| {
            matches!(e, ConfigError::SslCertKeyIncomplete { section: "probe" })
        }),
        ("a key without its certificate", |t| set(t, "replication", &[("sslkey", "/k.key")]), |e| {
            matches!(e, ConfigError::SslCertKeyIncomplete { section: "replication" })
        }),
        ("a root with disable", |t| set(t, "probe", &[("sslrootcert", "/etc/pglb/ca.crt")]), |e| {
            matches!(e, ConfigError::SslFileWithoutTls { section: "probe", key: "sslrootcert" })
        }),
        ("a root with an explicit disable", |t| set(t, "replication", &[("sslmode", "disable"), ("sslrootcert", "/ca.crt")]), |e| {
            matches!(e, ConfigError::SslFileWithoutTls { section: "replication", key: "sslrootcert" })
        }),
        ("an empty root", |t| set(t, "probe", &[("sslmode", "require"), ("sslrootcert", "")]), |e| {
            matches!(e, ConfigError::EmptyValue { section: "probe", key: "sslrootcert" })
        }),
        ("a relative replication root", |t| set(t, "replication", &[("sslrootcert", "ca.crt")]), |e| {
            matches!(e, ConfigError::ReplicationPathRelative { key: "sslrootcert", .. })
        }),
        ("a relative passfile", |t| set(t, "replication", &[("passfile", "pgpass")]), |e| {
            matches!(e, ConfigError::ReplicationPathRelative { key: "passfile", .. })
        }),
        ("a passfile and a password", |t| set(t, "replication", &[("password_env", "X")]), |e| {
            matches!(e, ConfigError::ReplicationPasswordConflict { first: "passfile", second: "password_env" })
        }),
        ("no replication credential", |t| unset(t, "replication", "passfile"), |e| matches!(e, ConfigError::ReplicationPasswordMissing)),
        ("an unknown sslmode", |t| set(t, "probe", &[("sslmode", "verify_full")]), |e| matches!(e, ConfigError::Parse { .. })),
    ];
    for (name, patch, want) in cases {
        let err = parse_patched(patch).expect_err(name);
        assert!(want(&err), "{name}: {err:?}");
        let line = lb_user::error_chain(&err);
        assert!(!line.is_empty() && !line.contains('\n'), "{name}: {line:?}");
    }
    let err = parse_patched(|t| set(t, "probe", &[("sslmode", "allow")])).unwrap_err();
    assert!(err.to_string().contains("not supported"), "{err}");
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pglb-tls-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("write temp file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A self-signed certificate for `key`.
fn self_signed(cn: &str, key: &PKey<Private>) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// `BASE` with `[probe]`'s TLS keys, loaded as `pglb run` and `pglb check` do.
fn load(dir: &TempDir, probe: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut table: Table = BASE.parse().unwrap();
    set(&mut table, "probe", probe);
    set(&mut table, "probe", &[("password_file", &dir.write("pglb.password", b"pw\n", 0o600))]);
    unset(&mut table, "probe", "password_env");
    let path = dir.write("pglb.toml", toml::to_string(&table).unwrap().as_bytes(), 0o644);
    Config::load(Path::new(&path))
}

#[test]
fn certificate_files_are_read_once_at_load_and_checked() {
    let dir = TempDir::new("files");
    let ca_key = key();
    let ca = dir.write("ca.crt", &self_signed("pglb test ca", &ca_key).to_pem().unwrap(), 0o644);
    let client_key = key();
    let cert = dir.write("client.crt", &self_signed("pglb", &client_key).to_pem().unwrap(), 0o644);
    let private = dir.write("client.key", &client_key.private_key_to_pem_pkcs8().unwrap(), 0o600);
    let c = load(&dir, &[("sslmode", "verify-full"), ("sslrootcert", &ca), ("sslcert", &cert), ("sslkey", &private)]).expect("good files load");
    assert_eq!((c.probe.tls.roots.len(), c.probe.tls.client.is_some()), (1, true));
    let debug = format!("{c:?}");
    assert!(debug.contains("TlsFiles { roots: 1, client: true }") && !debug.contains("PRIVATE"), "Debug shows no key: {debug}");
    let tls = PgTls::new(c.probe.sslmode, &c.probe.tls).expect("the connector builds from what was loaded");
    assert_eq!(tls.verify(), Verify::ChainAndHost);
    let require = load(&dir, &[("sslmode", "require"), ("sslrootcert", &ca)]).expect("require with a root");
    assert_eq!(PgTls::new(require.probe.sslmode, &require.probe.tls).unwrap().verify(), Verify::Chain, "libpq's require + root file = verify-ca");

    let not_pem = dir.write("not.pem", b"not a certificate\n", 0o644);
    let open_key = dir.write("open.key", &client_key.private_key_to_pem_pkcs8().unwrap(), 0o644);
    let other_key = dir.write("other.key", &key().private_key_to_pem_pkcs8().unwrap(), 0o600);
    let missing = dir.0.join("missing.crt").to_str().unwrap().to_owned();
    type Want = fn(&TlsFileError) -> bool;
    type Keys<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Keys, Want)> = vec![
        ("a missing root", vec![("sslmode", "verify-ca"), ("sslrootcert", &missing)], |e| matches!(e, TlsFileError::Read { key: "sslrootcert", .. })),
        ("a root that is not PEM", vec![("sslmode", "verify-ca"), ("sslrootcert", &not_pem)], |e| matches!(e, TlsFileError::Pem { key: "sslrootcert", .. })),
        ("a missing certificate", vec![("sslmode", "require"), ("sslcert", &missing), ("sslkey", &private)], |e| matches!(e, TlsFileError::Read { key: "sslcert", .. })),
        ("a key readable by others", vec![("sslmode", "require"), ("sslcert", &cert), ("sslkey", &open_key)], |e| matches!(e, TlsFileError::KeyMode { mode: 0o644, .. })),
        ("the key of another certificate", vec![("sslmode", "require"), ("sslcert", &cert), ("sslkey", &other_key)], |e| matches!(e, TlsFileError::KeyMismatch { .. })),
    ];
    for (name, probe, want) in cases {
        let err = load(&dir, &probe).expect_err(name);
        let ConfigError::ProbeTls(e) = &err else { panic!("{name}: {err:?}") };
        assert!(want(e), "{name}: {e:?}");
        let line = lb_user::error_chain(&err);
        assert!(line.contains("[probe] ") && !line.contains('\n'), "{name}: {line:?}");
    }
    let private_not_pem = dir.write("bad.key", b"junk\n", 0o600);
    let err = load(&dir, &[("sslmode", "require"), ("sslcert", &cert), ("sslkey", &private_not_pem)]).expect_err("a key that is not PEM");
    assert!(matches!(err, ConfigError::ProbeTls(TlsFileError::Pem { key: "sslkey", .. })), "{err:?}");
}
