//! Secrets in files, shared by every authenticated channel between pglb processes: the HMAC-SHA256
//! keys (the peer reports' `[vrrp] key_file`, each agent's own key) and the file handling the
//! agent channel's Ed25519 keys use too ([`crate::agent::channel::keys`]).
//!
//! A secret file must be private to its owner (mode 0600 or stricter); an HMAC key file holds at
//! least [`KEY_MIN_LEN`] bytes, and its whole content, less one trailing newline, is the key. Key
//! files are written new, never over an existing one.

use std::{
    fmt,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use thiserror::Error;

/// The shortest HMAC key accepted, bytes.
pub const KEY_MIN_LEN: usize = 16;
/// An HMAC-SHA256 tag, bytes.
pub const TAG_LEN: usize = 32;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read the {what} key file {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} key file {} is readable by group or others (mode {mode:o}): chmod 600 it", path.display())]
    Mode { what: &'static str, path: PathBuf, mode: u32 },
    #[error("the {what} key file {} holds {len} bytes; at least {KEY_MIN_LEN} are needed (`pglb agent keygen --client-key FILE`, or `head -c 32 /dev/urandom | base64 > FILE`, writes one)", path.display())]
    TooShort { what: &'static str, path: PathBuf, len: usize },
    #[error("the key file {} must hold 64 hex digits, an Ed25519 {what} as `pglb agent keygen` writes it", path.display())]
    Format { path: PathBuf, what: &'static str },
    #[error("{} already exists: move it away first (keygen never overwrites a key)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write the key file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read random bytes from the kernel (getrandom)")]
    Random(#[source] std::io::Error),
}

/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), KeyError> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a writable buffer of `rest.len()` bytes.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(KeyError::Random(e));
            }
            continue;
        }
        filled += got as usize;
    }
    Ok(())
}

/// Reads a file that must be private (mode `& 0o077 == 0`), less one trailing newline; `what`
/// names it in errors ("peer", "agent").
pub fn read_private(path: &Path, what: &'static str) -> Result<Vec<u8>, KeyError> {
    let read = |source| KeyError::Read { what, path: path.to_owned(), source };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode { what, path: path.to_owned(), mode });
    }
    let mut bytes = std::fs::read(path).map_err(read)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Ok(bytes)
}

/// Writes `text` to a new file `path` with `mode` (never over an existing file).
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), KeyError> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists { KeyError::Exists { path: path.to_owned() } } else { KeyError::Write { path: path.to_owned(), source } }
    })?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|source| KeyError::Write { path: path.to_owned(), source })
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an even-length hex string.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// An HMAC-SHA256 key. Its `Debug` never shows it; equality tells a reload whether the file's
/// key changed.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// The key as given (at least [`KEY_MIN_LEN`] bytes from a file; tests use any).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Key(bytes.into())
    }

    /// Reads the key from a private file (`what` names it in errors: "peer", "agent").
    pub fn from_file(path: &Path, what: &'static str) -> Result<Self, KeyError> {
        let bytes = read_private(path, what)?;
        if bytes.len() < KEY_MIN_LEN {
            return Err(KeyError::TooShort { what, path: path.to_owned(), len: bytes.len() });
        }
        Ok(Key(bytes))
    }

    /// Writes a new random key (32 bytes as 64 hex digits) to `path`, mode 0600.
    pub fn generate_file(path: &Path) -> Result<(), KeyError> {
        let mut seed = [0u8; 32];
        random_bytes(&mut seed)?;
        write_new(path, &format!("{}\n", hex(&seed)), 0o600)
    }

    /// HMAC-SHA256 over `parts`, one after the other.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        self.mac(parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC of `parts` (compared in constant time).
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.mac(parts).verify_slice(tag).is_ok()
    }

    /// The tag of `text`, as lowercase hex.
    pub fn tag_hex(&self, text: &[u8]) -> String {
        hex(&self.tag(&[text]))
    }

    /// Whether `hex` is the tag of `text` (compared in constant time).
    pub fn verify_hex(&self, text: &[u8], hex: &str) -> bool {
        decode_hex(hex).is_some_and(|tag| self.verify(&[text], &tag))
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("hmac takes a key of any length");
        for p in parts {
            mac.update(p);
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_verify_only_with_the_same_key_and_text() {
        let k = Key::new(b"0123456789abcdef".to_vec());
        let tag = k.tag_hex(b"hello");
        assert_eq!(tag.len(), 2 * TAG_LEN);
        assert!(k.verify_hex(b"hello", &tag));
        assert!(!k.verify_hex(b"hellO", &tag), "altered text");
        assert!(!Key::new(b"another key 16+b".to_vec()).verify_hex(b"hello", &tag), "another key");
        assert!(!k.verify_hex(b"hello", &tag[..62]), "cut tag");
        assert!(!k.verify_hex(b"hello", "zz"), "not hex");
        assert_eq!(k.tag(&[b"hel", b"lo"]), k.tag(&[b"hello"]), "parts are one text");
    }

    #[test]
    fn key_files_must_be_private_and_long_enough() {
        let dir = std::env::temp_dir().join(format!("pglb-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Key::from_file(&path, "peer").expect_err("group-readable");
        assert!(matches!(e, KeyError::Mode { mode: 0o640, .. }), "{e}");
        assert!(e.to_string().starts_with("the peer key file"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = Key::from_file(&path, "peer").expect("a private key file");
        assert_eq!(k.0, b"0123456789abcdef0123", "the trailing newline is not part of the key");
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(Key::from_file(&path, "peer"), Err(KeyError::TooShort { len: 5, .. })));
        assert!(matches!(Key::from_file(&dir.join("absent"), "peer"), Err(KeyError::Read { .. })));
        let generated = dir.join("new.key");
        Key::generate_file(&generated).expect("keygen");
        assert_eq!(std::fs::metadata(&generated).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(Key::from_file(&generated, "agent").is_ok(), "a generated key is accepted");
        assert!(matches!(Key::generate_file(&generated), Err(KeyError::Exists { .. })), "never overwrites");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
