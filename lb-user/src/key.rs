//! Shared secrets read from files: the HMAC-SHA256 keys that authenticate control messages
//! between pglb processes (the peer reports' `[vrrp] key_file`). A key file must be private to
//! its owner (mode 0600 or stricter) and hold at least [`KEY_MIN_LEN`] bytes; its whole content,
//! less one trailing newline, is the key.

use std::{fmt, path::Path};

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use thiserror::Error;

/// The shortest key accepted, bytes.
pub const KEY_MIN_LEN: usize = 16;
/// An HMAC-SHA256 tag, bytes.
pub const TAG_LEN: usize = 32;

/// A shared HMAC key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read the {what} key file {}", path.display())]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} key file {} is readable by group or others (mode {mode:o}): chmod 600 it", path.display())]
    Mode { what: &'static str, path: std::path::PathBuf, mode: u32 },
    #[error("the {what} key file {} holds {len} bytes; at least {KEY_MIN_LEN} are needed (e.g. `head -c 32 /dev/urandom | base64 > FILE`)", path.display())]
    TooShort { what: &'static str, path: std::path::PathBuf, len: usize },
}

impl Key {
    /// The key as given (tests use any length; files need [`KEY_MIN_LEN`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Key(bytes.into())
    }

    /// Reads the key from `path` (`what` names it in errors: "peer", "agent").
    pub fn from_file(path: &Path, what: &'static str) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read = |source| KeyError::Read { what, path: path.to_owned(), source };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode { what, path: path.to_owned(), mode });
        }
        let mut bytes = std::fs::read(path).map_err(read)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.len() < KEY_MIN_LEN {
            return Err(KeyError::TooShort { what, path: path.to_owned(), len: bytes.len() });
        }
        Ok(Key(bytes))
    }

    fn hmac(&self, text: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("hmac takes a key of any length");
        mac.update(text);
        mac
    }

    /// The tag of `text`, as lowercase hex.
    pub fn tag_hex(&self, text: &[u8]) -> String {
        use std::fmt::Write as _;
        let tag = self.hmac(text).finalize().into_bytes();
        let mut hex = String::with_capacity(2 * TAG_LEN);
        for b in tag.iter() {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    /// Whether `hex` is the tag of `text` (compared in constant time).
    pub fn verify_hex(&self, text: &[u8], hex: &str) -> bool {
        let Some(tag) = decode_hex(hex) else { return false };
        self.hmac(text).verify_slice(&tag).is_ok()
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
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
    }

    #[test]
    fn key_files_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt as _;
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
