//! TLS to PostgreSQL for pglb's own connections (the probes and the executor's SQL actions):
//! the certificate files `[probe]` names, read once by `Config::load` ([`read_files`]), and the
//! one connector ([`PgTls`]) built from them by `runtime::params`, through which every
//! connection goes (`crate::probe::connect` and the probe sessions).
//!
//! The `sslmode`s keep libpq's meanings, with OpenSSL doing what it does for libpq:
//!
//! | sslmode | TLS | certificate chain | host name (or IP) in the certificate |
//! |---|---|---|---|
//! | `disable` (default) | never | – | – |
//! | `prefer` | if the server offers it, else plain | not checked | not checked |
//! | `require` | always | checked against `sslrootcert` when one is set (libpq's rule), else not | not checked |
//! | `verify-ca` | always | checked against `sslrootcert` | not checked |
//! | `verify-full` | always | checked against `sslrootcert` | checked (an IP host against the certificate's IP SANs) |
//!
//! Only the configured `sslrootcert` is trusted (never the system's store, nor libpq's
//! `~/.postgresql/root.crt`). `allow` is refused by the config's validation: tokio-postgres has
//! no plain-first mode. A `prefer` handshake that fails is a failed connection (libpq would try
//! again in plain text).

use std::{fmt, path::Path};

use openssl::{
    pkey::{PKey, Private},
    ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion},
    x509::{X509, store::X509StoreBuilder},
};
use postgres_openssl::MakeTlsConnector;
use serde::Deserialize;
use thiserror::Error;
use tokio_postgres::config::SslMode as PgSslMode;

/// libpq's `sslmode` values (`[probe]` and `[replication]`; the config reads them as these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    #[default]
    Disable,
    /// Accepted by serde so that validation can refuse it in `[probe]` with its own message;
    /// written as is into `primary_conninfo` (`[replication]`), where libpq implements it.
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The libpq keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<SslMode, String> {
        let all = [SslMode::Disable, SslMode::Allow, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull];
        all.into_iter().find(|m| m.as_str() == s).ok_or_else(|| format!("{s:?} is not an sslmode (disable, allow, prefer, require, verify-ca, verify-full)"))
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stream of every connection pglb opens to PostgreSQL (plain or TLS, as negotiated).
pub type PgStream = postgres_openssl::TlsStream<tokio_postgres::Socket>;

/// A certificate file that cannot be used.
#[derive(Debug, Error)]
pub enum TlsFileError {
    #[error("cannot read [probe] {key} {}", path.display())]
    Read {
        key: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[probe] {key} {} holds no PEM {what}: {message}", path.display())]
    Pem { key: &'static str, path: std::path::PathBuf, what: &'static str, message: String },
    #[error("[probe] sslkey {} is readable by group or others (mode {mode:o}): chmod 600 it", path.display())]
    KeyMode { path: std::path::PathBuf, mode: u32 },
    #[error("[probe] sslkey {} does not belong to sslcert {}: {message}", key.display(), cert.display())]
    KeyMismatch { cert: std::path::PathBuf, key: std::path::PathBuf, message: String },
}

/// Building the connector failed (OpenSSL refused a setting; not expected with parsed files).
#[derive(Debug, Error)]
#[error("setting up TLS to PostgreSQL: {0}")]
pub struct TlsError(#[from] openssl::error::ErrorStack);

/// The certificates `[probe]` names, parsed: the trusted roots (`sslrootcert`) and the client
/// certificate chain with its key (`sslcert`, `sslkey`). Its `Debug` shows no key.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub roots: Vec<X509>,
    pub client: Option<(Vec<X509>, PKey<Private>)>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles").field("roots", &self.roots.len()).field("client", &self.client.is_some()).finish()
    }
}

/// Reads and parses the files: each must exist and be readable PEM; the key must be private
/// to its owner (mode 0600 or stricter) and belong to the certificate.
pub fn read_files(rootcert: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<TlsFiles, TlsFileError> {
    let mut files = TlsFiles::default();
    if let Some(path) = rootcert {
        files.roots = read_certs("sslrootcert", path)?;
    }
    if let (Some(cert), Some(key)) = (cert, key) {
        let chain = read_certs("sslcert", cert)?;
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(key).map_err(|source| TlsFileError::Read { key: "sslkey", path: key.to_owned(), source })?.permissions(),
        ) & 0o777;
        if mode & 0o077 != 0 {
            return Err(TlsFileError::KeyMode { path: key.to_owned(), mode });
        }
        let pem = read("sslkey", key)?;
        let private = PKey::private_key_from_pem(&pem)
            .map_err(|e| TlsFileError::Pem { key: "sslkey", path: key.to_owned(), what: "private key", message: e.to_string() })?;
        let matches = chain[0].public_key().map(|public| public.public_eq(&private)).unwrap_or(false);
        if !matches {
            return Err(TlsFileError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned(), message: "the public keys differ".to_owned() });
        }
        files.client = Some((chain, private));
    }
    Ok(files)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read { key, path: path.to_owned(), source })
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<X509>, TlsFileError> {
    let pem = read(key, path)?;
    let bad = |message: String| TlsFileError::Pem { key, path: path.to_owned(), what: "certificate", message };
    let certs = X509::stack_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("the file is empty".to_owned()));
    }
    Ok(certs)
}

/// What a TLS connection checks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    Nothing,
    Chain,
    ChainAndHost,
}

/// What `mode` with or without a root certificate checks (libpq's table, module doc).
pub fn verify_of(mode: SslMode, has_roots: bool) -> Verify {
    match mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => Verify::Nothing,
        SslMode::Require if has_roots => Verify::Chain,
        SslMode::Require => Verify::Nothing,
        SslMode::VerifyCa => Verify::Chain,
        SslMode::VerifyFull => Verify::ChainAndHost,
    }
}

/// The connector every pglb connection to PostgreSQL goes through, built once. Two are equal
/// when they negotiate, check and present the same: the mode, what is verified, and the
/// certificates' bytes (a reload compares them: `runtime/reload`).
#[derive(Clone)]
pub struct PgTls {
    mode: PgSslMode,
    verify: Verify,
    connector: MakeTlsConnector,
    /// The DER of the trusted roots, then of the client chain.
    certificates: Vec<Vec<u8>>,
}

impl PartialEq for PgTls {
    fn eq(&self, other: &PgTls) -> bool {
        (self.mode, self.verify, &self.certificates) == (other.mode, other.verify, &other.certificates)
    }
}

impl PgTls {
    /// The connector for `mode` with `files` (validated by the config: `allow` never comes here,
    /// `verify-*` always has roots).
    pub fn new(mode: SslMode, files: &TlsFiles) -> Result<PgTls, TlsError> {
        let verify = verify_of(mode, !files.roots.is_empty());
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        // libpq's ssl_min_protocol_version default.
        builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        // Only the configured roots: a store of our own replaces the system's default paths.
        let mut store = X509StoreBuilder::new()?;
        for root in &files.roots {
            store.add_cert(root.clone())?;
        }
        builder.set_cert_store(store.build());
        builder.set_verify(if verify == Verify::Nothing { SslVerifyMode::NONE } else { SslVerifyMode::PEER });
        if let Some((chain, key)) = &files.client {
            builder.set_certificate(&chain[0])?;
            for extra in &chain[1..] {
                builder.add_extra_chain_cert(extra.clone())?;
            }
            builder.set_private_key(key)?;
            builder.check_private_key()?;
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let check_host = verify == Verify::ChainAndHost;
        connector.set_callback(move |config, _host| {
            config.set_verify_hostname(check_host);
            Ok(())
        });
        let mode = match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer | SslMode::Allow => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        };
        let chain = files.client.iter().flat_map(|(chain, _)| chain);
        let certificates = files.roots.iter().chain(chain).map(|c| c.to_der()).collect::<Result<_, _>>()?;
        Ok(PgTls { mode, verify, connector, certificates })
    }

    /// Plain connections only (`sslmode = "disable"`, no files).
    pub fn disabled() -> Result<PgTls, TlsError> {
        PgTls::new(SslMode::Disable, &TlsFiles::default())
    }

    /// Sets the `sslmode` tokio-postgres negotiates with on `pg`.
    pub fn configure(&self, pg: &mut tokio_postgres::Config) {
        pg.ssl_mode(self.mode);
    }

    /// The connector to pass to `tokio_postgres::Config::connect`.
    pub fn connector(&self) -> MakeTlsConnector {
        self.connector.clone()
    }

    /// What a connection checks of the server's certificate.
    pub fn verify(&self) -> Verify {
        self.verify
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_with_a_root_certificate_checks_the_chain_as_libpq_does() {
        use SslMode::*;
        let table = [
            (Disable, false, Verify::Nothing),
            (Prefer, true, Verify::Nothing),
            (Require, false, Verify::Nothing),
            (Require, true, Verify::Chain),
            (VerifyCa, true, Verify::Chain),
            (VerifyFull, true, Verify::ChainAndHost),
        ];
        for (mode, roots, want) in table {
            assert_eq!(verify_of(mode, roots), want, "{mode:?} with roots: {roots}");
        }
    }

    #[test]
    fn modes_map_onto_what_tokio_postgres_negotiates() {
        let plain = PgTls::disabled().expect("a connector");
        let mut pg = tokio_postgres::Config::new();
        plain.configure(&mut pg);
        assert_eq!(pg.get_ssl_mode(), PgSslMode::Disable);
        let prefer = PgTls::new(SslMode::Prefer, &TlsFiles::default()).expect("a connector");
        prefer.configure(&mut pg);
        assert_eq!((pg.get_ssl_mode(), prefer.verify()), (PgSslMode::Prefer, Verify::Nothing));
        let require = PgTls::new(SslMode::Require, &TlsFiles::default()).expect("a connector");
        require.configure(&mut pg);
        assert_eq!((pg.get_ssl_mode(), require.verify()), (PgSslMode::Require, Verify::Nothing));
    }
}
