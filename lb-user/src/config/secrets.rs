//! The secrets a config names: passwords (from a file or an environment variable), the peer
//! key, the agent channel's keys and `[probe]`'s certificate files, read by
//! [`Config::resolve_secrets`] once the config is valid. A password is a [`Secret`], which no
//! log shows.

use std::fmt;
use std::path::PathBuf;

use super::{Config, ConfigError};

/// A password. Its `Debug` never shows the value; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The password itself: hand it to the driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("Secret(<unset>)") } else { f.write_str("Secret(<redacted>)") }
    }
}

impl Config {
    /// Reads every password from its file or environment variable (`env` looks a variable up;
    /// [`Config::load`] passes the process environment).
    pub fn resolve_secrets(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.probe.password = read_secret("probe", &self.probe.password_file, &self.probe.password_env, &env)?;
        let p = &self.probe;
        self.probe.tls = crate::pgtls::read_files(p.sslrootcert.as_deref(), p.sslcert.as_deref(), p.sslkey.as_deref())?;
        let r = &self.replication;
        // With a passfile the load balancer never holds the replication password.
        if r.passfile.is_none() {
            self.replication.password = read_secret("replication", &r.password_file, &r.password_env, &env)?;
        }
        let h = &self.http;
        if h.stats_password_file.is_some() || h.stats_password_env.is_some() {
            self.http.stats_password = Some(read_secret("http", &h.stats_password_file, &h.stats_password_env, &env)?);
        }
        if let Some(path) = &self.http.token_file {
            self.http.token = Some(read_token(path)?);
        }
        if let Some(a) = &mut self.agent {
            a.signing_key = Some(crate::agent::channel::SigningKey::from_file(&a.signing_key_file)?);
            for c in &mut a.clients {
                c.key = Some(crate::key::Key::from_file(&c.key_file, "agent")?);
            }
        }
        if let Some(v) = &mut self.vrrp
            && let Some(f) = &v.key_file
        {
            v.key = Some(crate::key::Key::from_file(f, "peer")?);
        }
        Ok(())
    }
}

/// A section names exactly one password source, and not an empty one (the validation checks
/// this before any secret is read).
pub(super) fn check_password_source(
    section: &'static str,
    file: &Option<PathBuf>,
    env: &Option<String>,
) -> Result<(), ConfigError> {
    match (file, env) {
        (None, None) => Err(ConfigError::MissingPassword { section }),
        (Some(_), Some(_)) => Err(ConfigError::ConflictingPassword { section }),
        (Some(f), None) if f.as_os_str().is_empty() => {
            Err(ConfigError::EmptyValue { section, key: "password_file" })
        }
        (None, Some(v)) if v.is_empty() => Err(ConfigError::EmptyValue { section, key: "password_env" }),
        _ => Ok(()),
    }
}

fn read_secret(
    section: &'static str,
    file: &Option<PathBuf>,
    env: &Option<String>,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    check_password_source(section, file, env)?;
    let raw = match (file, env) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|source| ConfigError::PasswordFileUnreadable { section, path: path.clone(), source })?,
        (None, Some(var)) => lookup(var).ok_or_else(|| ConfigError::PasswordEnvMissing { section, var: var.clone() })?,
        (None, None) => unreachable!("check_password_source rejects a missing source"),
    };
    let value = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    if value.is_empty() {
        return Err(ConfigError::PasswordEmpty { section });
    }
    Ok(Secret::new(value))
}

/// `[http] token_file`: one line of a bearer token's characters (RFC 6750), 16 or more of them.
fn read_token(path: &std::path::Path) -> Result<Secret, ConfigError> {
    let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFileUnreadable { path: path.to_owned(), source })?;
    let token = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    let ok = token.len() >= 16 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if !ok {
        return Err(ConfigError::TokenInvalid { path: path.to_owned() });
    }
    Ok(Secret::new(token))
}
