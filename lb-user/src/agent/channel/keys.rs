//! The agent channel's key files: each agent's own HMAC key (`Key`, which it shares with the
//! load balancers, one key per agent), the load balancers' Ed25519 signing key (`SigningKey`,
//! on the load balancers only) and its public half (`PublicKey`, on the agents), and
//! `pglb agent keygen`'s writing of them.
//!
//! Secret files must not be readable by group or others. An Ed25519 file holds 64 hex digits
//! (the 32-byte seed, or the 32-byte public key) and a newline.

use std::{
    fmt,
    path::Path,
};

use ed25519_dalek::{Signer as _, Verifier as _};

pub use crate::key::{KEY_MIN_LEN, Key, KeyError, random_bytes};
use crate::key::{decode_hex, hex, read_private, write_new};

/// An Ed25519 signature's length, bytes.
pub const SIGNATURE_LEN: usize = 64;

/// What the agent channel's secret files are called in errors.
const WHAT: &str = "agent";

/// 32 bytes from a file of 64 hex digits.
fn read_hex32(path: &Path, bytes: Vec<u8>, what: &'static str) -> Result<[u8; 32], KeyError> {
    let bad = || KeyError::Format { path: path.to_owned(), what };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?.trim();
    let decoded = decode_hex(text).ok_or_else(bad)?;
    decoded.try_into().map_err(|_| bad())
}

/// The load balancers' Ed25519 signing key: routes are signed with it. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<redacted>, public {})", self.public())
    }
}

impl SigningKey {
    /// From the 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Reads the seed (64 hex digits) from a private file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = read_private(path, WHAT)?;
        Ok(Self::from_seed(read_hex32(path, bytes, "signing key")?))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// An HMAC key derived from the seed for `label` (every holder of the signing key derives the
    /// same one; nobody else can).
    pub fn derive(&self, label: &str) -> Key {
        Key::new(Key::new(self.0.to_bytes().to_vec()).tag(&[label.as_bytes()]).to_vec())
    }

    pub(super) fn sign(&self, text: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(text).to_bytes()
    }

    /// Writes a new key pair: the seed to `secret` (0600) and the public key to `public` (0644).
    /// Neither file may exist.
    pub fn generate_files(secret: &Path, public: &Path) -> Result<PublicKey, KeyError> {
        if public.exists() {
            return Err(KeyError::Exists { path: public.to_owned() });
        }
        let mut seed = [0u8; 32];
        random_bytes(&mut seed)?;
        let key = Self::from_seed(seed);
        write_new(secret, &format!("{}\n", hex(&seed)), 0o600)?;
        write_new(public, &format!("{}\n", key.public()), 0o644)?;
        Ok(key.public())
    }
}

/// The public half of the load balancers' signing key: agents verify routes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(self.0.as_bytes()))
    }
}

impl PublicKey {
    /// Reads the public key (64 hex digits); the file may be world-readable.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read { what: WHAT, path: path.to_owned(), source })?;
        let raw = read_hex32(path, bytes, "public key")?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::Format { path: path.to_owned(), what: "public key" })?;
        Ok(PublicKey(key))
    }

    pub(super) fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(signature) else { return false };
        self.0.verify(text, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(what: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("pglb-keys-{what}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn keygen_writes_a_private_seed_and_a_public_key_that_match() {
        let dir = Dir::new("keygen");
        let (secret, public) = (dir.0.join("agent-signing.key"), dir.0.join("agent-signing.pub"));
        let made = SigningKey::generate_files(&secret, &public).expect("keygen");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&secret), mode(&public)), (0o600, 0o644), "secret private, public readable");
        let signing = SigningKey::from_file(&secret).expect("the seed reads back");
        let read = PublicKey::from_file(&public).expect("the public key reads back");
        assert_eq!((signing.public(), read), (made, made), "one pair");
        let sig = signing.sign(b"text");
        assert!(read.verify(b"text", &sig) && !read.verify(b"texT", &sig), "verifies its own signature only");
        assert!(matches!(SigningKey::generate_files(&secret, &dir.0.join("other.pub")), Err(KeyError::Exists { .. })), "never overwrites");
        assert!(format!("{signing:?}").contains("redacted") && !format!("{signing:?}").contains(&std::fs::read_to_string(&secret).unwrap().trim().to_owned()));

        let client = dir.0.join("app1.key");
        Key::generate_file(&client).expect("client keygen");
        assert_eq!(mode(&client), 0o600);
        assert!(Key::from_file(&client, "agent").is_ok(), "a generated client key is accepted");
    }

    #[test]
    fn malformed_ed25519_files_are_refused_with_their_path() {
        let dir = Dir::new("malformed");
        let path = dir.0.join("k");
        for text in ["", "zz", &"ab".repeat(31), &"ab".repeat(33)] {
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, text).unwrap();
            chmod(&path, 0o600);
            assert!(matches!(SigningKey::from_file(&path), Err(KeyError::Format { what: "signing key", .. })), "{text:?}");
            assert!(matches!(PublicKey::from_file(&path), Err(KeyError::Format { what: "public key", .. })), "{text:?}");
        }
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        chmod(&path, 0o640);
        assert!(matches!(SigningKey::from_file(&path), Err(KeyError::Mode { .. })), "a group-readable signing key is refused");
    }
}
