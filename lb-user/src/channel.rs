//! The agent channel (load balancer ↔ `pglb agent`): its messages, their text form, their HMAC-SHA256 and the epoch order.
//!
//! Two messages, each one UDP datagram of one line, authenticated with HMAC-SHA256 over a key
//! both sides read from a file (`[agent] key_file` on a load balancer, `key_file` in the agent's
//! config). The MAC covers every byte before ` mac=`:
//!
//! ```text
//! pglb-agent 1 subscribe agent=<name> nonce=<16 hex> seen=<timeline>.<seq>
//! pglb-agent 1 route lb=<instance> role=master|backup nonce=<16 hex> epoch=<timeline>.<seq>
//!     writer=<name>/<ip:port>|- readers=<name>/<id>/<weight>/<ip:port>,...|-
//! ```
//!
//! (one line each, then ` mac=<64 hex>`). A subscribe asks a load balancer for its routing and to
//! push changes to the sender for a while; a route answers with the nonce of the subscribe it
//! answers (a push carries the newest nonce the load balancer has from that agent). The agent
//! accepts only nonces it sent within its last few requests, so a recorded message replayed later
//! is refused, and the lease is counted from when the agent sent that nonce: freshness needs no
//! clock shared between hosts.
//!
//! **Epoch**: `(timeline, seq)`, ordered by timeline first. The timeline is the writer's (the
//! load balancer's own knowledge, never learned from agents): a load balancer that has not seen
//! a promotion can never outrank one that has. `seq` is a Lamport clock over every load balancer
//! and agent: a load balancer raises its `seq` to the `seen` of every subscribe, and takes the
//! next value for every change of what it publishes (writer, readers, VRRP role); so a change on
//! any load balancer gets a higher epoch than everything an agent accepted before, without any
//! coordination between the load balancers. The agent never goes back to a lower epoch.

use std::{fmt, fmt::Write as _, net::SocketAddrV4, path::Path};

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use thiserror::Error;

/// The protocol's first two words.
const MAGIC: &str = "pglb-agent 1";
/// Where the MAC starts.
const MAC_SEP: &str = " mac=";
/// The shortest key accepted, bytes (the file's whole content is the key).
pub const KEY_MIN_LEN: usize = 16;
/// The largest datagram either side sends or reads.
pub const MAX_DATAGRAM: usize = 8192;

/// The routing's version: ordered by `timeline`, then `seq` (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    /// The writer's timeline as the sending load balancer knows it.
    pub timeline: u32,
    /// The Lamport sequence.
    pub seq: u64,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.timeline, self.seq)
    }
}

/// A load balancer's VRRP role, as it says in its answers. Only a master's answers route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Backup,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

/// A PostgreSQL node as the route names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddrV4,
}

/// A reader: the node, its id (the load balancer's node id, the Maglev key) and weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reader {
    pub target: Target,
    pub id: u32,
    pub weight: u32,
}

/// Agent → load balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// The agent's name (logs only).
    pub agent: String,
    pub nonce: u64,
    /// The highest epoch the agent has accepted (the load balancers' Lamport input).
    pub seen: Epoch,
}

/// Load balancer → agent: its routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The load balancer's instance name.
    pub lb: String,
    pub role: Role,
    /// The nonce of the subscribe this answers (or the newest one from that agent, for a push).
    pub nonce: u64,
    pub epoch: Epoch,
    /// `None`: no writer (writes refused, a fenced or lost primary).
    pub writer: Option<Target>,
    pub readers: Vec<Reader>,
}

impl Route {
    /// Whether two routes send connections to the same places.
    pub fn same_routing(&self, other: &Route) -> bool {
        self.writer == other.writer && self.readers == other.readers
    }
}

/// Either message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Subscribe(Subscribe),
    Route(Route),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("not a pglb-agent 1 message")]
    NotAgentMessage,
    #[error("no mac")]
    NoMac,
    #[error("the mac does not match (wrong key, or the message was altered)")]
    BadMac,
    #[error("field {field} is missing or malformed")]
    Field { field: &'static str },
    #[error("unknown message kind {kind:?}")]
    Kind { kind: String },
}

/// The shared key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read the agent key file {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent key file {} is readable by group or others (mode {mode:o}): chmod 600 it", path.display())]
    Mode { path: std::path::PathBuf, mode: u32 },
    #[error("the agent key file {} holds {len} bytes; at least {KEY_MIN_LEN} are needed (e.g. `head -c 32 /dev/urandom | base64 > FILE`)", path.display())]
    TooShort { path: std::path::PathBuf, len: usize },
}

impl Key {
    /// The key as given (at least [`KEY_MIN_LEN`] bytes in production; tests use any).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Key(bytes.into())
    }

    /// Reads the key from `path`: the whole file less one trailing newline. The file must not be
    /// readable by group or others.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read = |source| KeyError::Read { path: path.to_owned(), source };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode { path: path.to_owned(), mode });
        }
        let mut bytes = std::fs::read(path).map_err(read)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.len() < KEY_MIN_LEN {
            return Err(KeyError::TooShort { path: path.to_owned(), len: bytes.len() });
        }
        Ok(Key(bytes))
    }

    fn mac(&self, text: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("hmac takes a key of any length");
        mac.update(text.as_bytes());
        mac
    }
}

impl Message {
    /// The datagram: the message's line and its MAC.
    pub fn encode(&self, key: &Key) -> String {
        let mut text = String::from(MAGIC);
        match self {
            Message::Subscribe(s) => {
                let _ = write!(text, " subscribe agent={} nonce={:016x} seen={}", s.agent, s.nonce, s.seen);
            }
            Message::Route(r) => {
                let _ = write!(text, " route lb={} role={} nonce={:016x} epoch={} writer=", r.lb, r.role.as_str(), r.nonce, r.epoch);
                match &r.writer {
                    Some(w) => {
                        let _ = write!(text, "{}/{}", w.name, w.addr);
                    }
                    None => text.push('-'),
                }
                text.push_str(" readers=");
                if r.readers.is_empty() {
                    text.push('-');
                }
                for (i, rd) in r.readers.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    let _ = write!(text, "{sep}{}/{}/{}/{}", rd.target.name, rd.id, rd.weight, rd.target.addr);
                }
            }
        }
        let tag = key.mac(&text).finalize().into_bytes();
        text.push_str(MAC_SEP);
        for b in tag.iter() {
            let _ = write!(text, "{b:02x}");
        }
        text
    }

    /// Checks the MAC, then parses. A message whose MAC fails is not parsed at all.
    pub fn decode(datagram: &[u8], key: &Key) -> Result<Message, ProtoError> {
        let text = std::str::from_utf8(datagram).map_err(|_| ProtoError::NotAgentMessage)?;
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.starts_with(MAGIC) {
            return Err(ProtoError::NotAgentMessage);
        }
        let (body, hex) = text.rsplit_once(MAC_SEP).ok_or(ProtoError::NoMac)?;
        let tag = decode_hex(hex).ok_or(ProtoError::BadMac)?;
        key.mac(body).verify_slice(&tag).map_err(|_| ProtoError::BadMac)?;
        let mut words = body[MAGIC.len()..].split_ascii_whitespace();
        let kind = words.next().ok_or(ProtoError::Field { field: "kind" })?;
        let fields: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let get = |field: &'static str| fields.iter().find(|(k, _)| *k == field).map(|(_, v)| *v).ok_or(ProtoError::Field { field });
        let nonce = u64::from_str_radix(get("nonce")?, 16).map_err(|_| ProtoError::Field { field: "nonce" })?;
        match kind {
            "subscribe" => Ok(Message::Subscribe(Subscribe {
                agent: get("agent")?.to_owned(),
                nonce,
                seen: parse_epoch(get("seen")?).ok_or(ProtoError::Field { field: "seen" })?,
            })),
            "route" => {
                let role = match get("role")? {
                    "master" => Role::Master,
                    "backup" => Role::Backup,
                    _ => return Err(ProtoError::Field { field: "role" }),
                };
                let writer = match get("writer")? {
                    "-" => None,
                    w => Some(parse_target(w).ok_or(ProtoError::Field { field: "writer" })?),
                };
                let readers = match get("readers")? {
                    "-" => Vec::new(),
                    list => list.split(',').map(parse_reader).collect::<Option<Vec<_>>>().ok_or(ProtoError::Field { field: "readers" })?,
                };
                Ok(Message::Route(Route {
                    lb: get("lb")?.to_owned(),
                    role,
                    nonce,
                    epoch: parse_epoch(get("epoch")?).ok_or(ProtoError::Field { field: "epoch" })?,
                    writer,
                    readers,
                }))
            }
            other => Err(ProtoError::Kind { kind: other.to_owned() }),
        }
    }
}

fn parse_epoch(s: &str) -> Option<Epoch> {
    let (t, q) = s.split_once('.')?;
    Some(Epoch { timeline: t.parse().ok()?, seq: q.parse().ok()? })
}

fn parse_target(s: &str) -> Option<Target> {
    let (name, addr) = s.split_once('/')?;
    Some(Target { name: name.to_owned(), addr: addr.parse().ok()? })
}

fn parse_reader(s: &str) -> Option<Reader> {
    let mut parts = s.splitn(4, '/');
    let name = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    let weight = parts.next()?.parse().ok()?;
    let addr = parts.next()?.parse().ok()?;
    Some(Reader { target: Target { name: name.to_owned(), addr }, id, weight })
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

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123".to_vec())
    }

    fn route() -> Route {
        Route {
            lb: "lb1".into(),
            role: Role::Master,
            nonce: 0xdead_beef_0000_0001,
            epoch: Epoch { timeline: 3, seq: 17 },
            writer: Some(Target { name: "pg1".into(), addr: "172.20.0.10:5432".parse().unwrap() }),
            readers: vec![
                Reader { target: Target { name: "pg2".into(), addr: "172.20.0.11:5432".parse().unwrap() }, id: 1, weight: 1 },
                Reader { target: Target { name: "pg3".into(), addr: "172.20.0.12:5433".parse().unwrap() }, id: 2, weight: 3 },
            ],
        }
    }

    #[test]
    fn messages_round_trip() {
        let sub = Message::Subscribe(Subscribe { agent: "app1".into(), nonce: 7, seen: Epoch { timeline: 2, seq: 9 } });
        let none = Message::Route(Route { writer: None, readers: vec![], role: Role::Backup, ..route() });
        for msg in [sub, Message::Route(route()), none] {
            let wire = msg.encode(&key());
            assert_eq!(Message::decode(wire.as_bytes(), &key()), Ok(msg.clone()), "round trip of {wire}");
        }
    }

    #[test]
    fn the_wire_form_is_one_readable_line() {
        let wire = Message::Route(route()).encode(&key());
        let (body, mac) = wire.rsplit_once(" mac=").expect("a mac");
        assert_eq!(
            body,
            "pglb-agent 1 route lb=lb1 role=master nonce=deadbeef00000001 epoch=3.17 writer=pg1/172.20.0.10:5432 readers=pg2/1/1/172.20.0.11:5432,pg3/2/3/172.20.0.12:5433"
        );
        assert_eq!(mac.len(), 64, "hex of a sha-256 tag");
    }

    #[test]
    fn altered_or_foreign_messages_are_refused() {
        let wire = Message::Route(route()).encode(&key());
        let table: Vec<(&str, String, Key, ProtoError)> = vec![
            ("another key", wire.clone(), Key::new(b"another key, 16+ bytes".to_vec()), ProtoError::BadMac),
            ("writer changed", wire.replace("pg1/172.20.0.10", "pg1/172.20.0.66"), key(), ProtoError::BadMac),
            ("epoch raised", wire.replace("epoch=3.17", "epoch=9.17"), key(), ProtoError::BadMac),
            ("role changed", wire.replace("role=master", "role=backup"), key(), ProtoError::BadMac),
            ("mac cut", wire[..wire.len() - 2].to_owned(), key(), ProtoError::BadMac),
            ("mac not hex", format!("{}zz", &wire[..wire.len() - 2]), key(), ProtoError::BadMac),
            ("no mac", wire.rsplit_once(" mac=").unwrap().0.to_owned(), key(), ProtoError::NoMac),
            ("not ours", "pglb-report 1 timeline=3 writer=pg1".to_owned(), key(), ProtoError::NotAgentMessage),
        ];
        for (what, text, k, want) in table {
            assert_eq!(Message::decode(text.as_bytes(), &k), Err(want), "{what}");
        }
    }

    #[test]
    fn epochs_order_by_timeline_then_sequence() {
        let e = |timeline, seq| Epoch { timeline, seq };
        assert!(e(3, 1) > e(2, 99), "a newer timeline wins over any sequence");
        assert!(e(3, 2) > e(3, 1), "within a timeline, the later change wins");
        assert_eq!(e(3, 2).max(e(3, 2)), e(3, 2), "equal");
        assert_eq!(e(4, 5).to_string(), "4.5");
    }

    #[test]
    fn key_files_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("pglb-agent-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Key::from_file(&path), Err(KeyError::Mode { mode: 0o644, .. })), "world-readable refused");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = Key::from_file(&path).expect("a private key file");
        assert_eq!(k.0, b"0123456789abcdef0123", "the trailing newline is not part of the key");
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(Key::from_file(&path), Err(KeyError::TooShort { len: 5, .. })), "short key refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
