//! The agent channel (load balancer ↔ `pglb agent`): its messages, their text form, how each is
//! authenticated, and the epoch order.
//!
//! Three messages, each one UDP datagram of one line:
//!
//! ```text
//! pglb-agent 2 subscribe agent=<name> nonce=<16 hex> seen=<timeline>.<seq> time=<µs> cookie=<32 hex>|- mac=<64 hex>
//! pglb-agent 2 cookie nonce=<16 hex> cookie=<32 hex>
//! pglb-agent 2 route lb=<instance> agent=<name> role=master|backup nonce=<16 hex> epoch=<timeline>.<seq>
//!     writer=<name>/<ip:port>|- readers=<name>/<id>/<weight>/<ip:port>,...|- sig=<128 hex>
//! ```
//!
//! **Who can say what.** A subscribe is authenticated with HMAC-SHA256 under the sending agent's
//! own key (`[[agent.client]]` on the load balancers, `key_file` on the agent): a load balancer
//! knows which agent asks, and one agent's key says nothing for another. A route is signed with
//! Ed25519 by the load balancers' signing key, of which agents hold only the public half: an
//! application host, whatever it holds, cannot make a route another agent believes. The MAC
//! and the signature cover every byte before ` mac=` / ` sig=`.
//!
//! **Freshness.** A route echoes the nonce of the subscribe it answers (a push carries the
//! newest one the load balancer has from that agent) and names the agent; the agent believes
//! only nonces it sent within its last few requests and counts the lease from when it sent
//! them. A subscribe carries `time`, the agent's clock in µs, strictly rising: a load balancer
//! accepts each agent's times only upwards, so a replayed subscribe is dropped unanswered. Its
//! `cookie` proves the sender receives at its source address (as a DTLS or QUIC retry): a
//! subscribe without a valid cookie for its source gets only a `cookie` message, which is
//! shorter than the subscribe, and creates no subscription. The cookie message carries no MAC:
//! the agent takes it only with a nonce it sent, and a false one costs a round trip.
//!
//! **Epoch**: `(timeline, seq)`, ordered by timeline first. The timeline is the writer's (the
//! load balancer's own knowledge, never learned from agents). `seq` orders one load balancer's
//! messages: it starts from the wall clock in ms and rises with every change of what it
//! publishes, and it is raised (saturating) to the `seen` of every subscribe, a Lamport clock.
//! Agents compare sequences only between messages of the same load balancer; what two load
//! balancers say is compared by timeline, and two masters that disagree on one timeline make
//! the agent fall back to the VIP ([`super::machine`]).

pub mod keys;

use std::{fmt, fmt::Write as _, net::SocketAddrV4};

use thiserror::Error;

pub use self::keys::{KEY_MIN_LEN, Key, KeyError, PublicKey, SigningKey};
use crate::key::decode_hex;

/// The protocol's first two words.
const MAGIC: &str = "pglb-agent 2";
/// Where the subscribe's MAC starts.
const MAC_SEP: &str = " mac=";
/// Where the route's signature starts.
const SIG_SEP: &str = " sig=";
/// The largest datagram either side sends or reads.
pub const MAX_DATAGRAM: usize = 8192;
/// A cookie's length, bytes.
pub const COOKIE_LEN: usize = 16;

/// Whether `name` can be an agent's name (`[[agent.client]] name`, the agent's `name`): 1-64 of
/// `A-Z a-z 0-9 . _ -`, so it reads as one word of a message.
pub fn is_agent_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The routing's version: ordered by `timeline`, then `seq` (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    /// The writer's timeline as the sending load balancer knows it.
    pub timeline: u32,
    /// The sending load balancer's sequence.
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

/// A load balancer's proof that the sender receives at its source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cookie(pub [u8; COOKIE_LEN]);

/// Agent → load balancer, MAC'd with the agent's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// The agent's name: which `[[agent.client]]` key checks the MAC.
    pub agent: String,
    pub nonce: u64,
    /// The highest epoch the agent has accepted (the load balancers' Lamport input).
    pub seen: Epoch,
    /// The agent's clock, µs since the Unix epoch, strictly rising from one subscribe to the next.
    pub time: u64,
    /// The cookie this load balancer gave for the agent's address, if any yet.
    pub cookie: Option<Cookie>,
}

/// Load balancer → agent, unauthenticated: "ask again with this cookie".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieReply {
    /// The nonce of the subscribe it answers.
    pub nonce: u64,
    pub cookie: Cookie,
}

/// Load balancer → agent, signed: its routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The load balancer's instance name.
    pub lb: String,
    /// The agent it is for.
    pub agent: String,
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

/// What an agent may receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToAgent {
    Route(Route),
    Cookie(CookieReply),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("not a pglb-agent 2 message")]
    NotAgentMessage,
    #[error("no mac")]
    NoMac,
    #[error("no signature")]
    NoSignature,
    #[error("the mac does not match (wrong key, or the message was altered)")]
    BadMac,
    #[error("the signature does not verify (not the load balancers' key, or the message was altered)")]
    BadSignature,
    #[error("agent {agent:?} is not registered ([[agent.client]])")]
    UnknownAgent { agent: String },
    #[error("field {field} is missing or malformed")]
    Field { field: &'static str },
    #[error("unexpected message kind {kind:?}")]
    Kind { kind: String },
}

impl Subscribe {
    /// The datagram: the line and its MAC under the agent's key.
    pub fn encode(&self, key: &Key) -> String {
        let mut text = format!("{MAGIC} subscribe agent={} nonce={:016x} seen={} time={} cookie=", self.agent, self.nonce, self.seen, self.time);
        match &self.cookie {
            Some(c) => push_hex(&mut text, &c.0),
            None => text.push('-'),
        }
        let tag = key.tag(&[text.as_bytes()]);
        text.push_str(MAC_SEP);
        push_hex(&mut text, &tag);
        text
    }

    /// Finds the agent's key with `key_of` (by the `agent` field), checks the MAC, then parses.
    /// A message whose MAC fails is not parsed further.
    pub fn decode<'k>(datagram: &[u8], key_of: impl FnOnce(&str) -> Option<&'k Key>) -> Result<Subscribe, ProtoError> {
        let (kind, body, tag) = split(datagram, MAC_SEP, ProtoError::NoMac)?;
        if kind != "subscribe" {
            return Err(ProtoError::Kind { kind: kind.to_owned() });
        }
        let fields = Fields::new(body);
        let agent = fields.get("agent")?;
        let key = key_of(agent).ok_or_else(|| ProtoError::UnknownAgent { agent: agent.to_owned() })?;
        let tag = decode_hex(tag).ok_or(ProtoError::BadMac)?;
        if !key.verify(&[body.as_bytes()], &tag) {
            return Err(ProtoError::BadMac);
        }
        let cookie = match fields.get("cookie")? {
            "-" => None,
            hex => Some(Cookie(decode_hex(hex).and_then(|b| b.try_into().ok()).ok_or(ProtoError::Field { field: "cookie" })?)),
        };
        Ok(Subscribe {
            agent: agent.to_owned(),
            nonce: fields.nonce()?,
            seen: parse_epoch(fields.get("seen")?).ok_or(ProtoError::Field { field: "seen" })?,
            time: fields.get("time")?.parse().map_err(|_| ProtoError::Field { field: "time" })?,
            cookie,
        })
    }
}

impl CookieReply {
    pub fn encode(&self) -> String {
        let mut text = format!("{MAGIC} cookie nonce={:016x} cookie=", self.nonce);
        push_hex(&mut text, &self.cookie.0);
        text
    }
}

impl Route {
    /// The datagram: the line and its Ed25519 signature.
    pub fn encode(&self, key: &SigningKey) -> String {
        let mut text = format!("{MAGIC} route lb={} agent={} role={} nonce={:016x} epoch={} writer=", self.lb, self.agent, self.role.as_str(), self.nonce, self.epoch);
        match &self.writer {
            Some(w) => {
                let _ = write!(text, "{}/{}", w.name, w.addr);
            }
            None => text.push('-'),
        }
        text.push_str(" readers=");
        if self.readers.is_empty() {
            text.push('-');
        }
        for (i, rd) in self.readers.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(text, "{sep}{}/{}/{}/{}", rd.target.name, rd.id, rd.weight, rd.target.addr);
        }
        let sig = key.sign(text.as_bytes());
        text.push_str(SIG_SEP);
        push_hex(&mut text, &sig);
        text
    }

    fn parse(fields: &Fields<'_>) -> Result<Route, ProtoError> {
        let role = match fields.get("role")? {
            "master" => Role::Master,
            "backup" => Role::Backup,
            _ => return Err(ProtoError::Field { field: "role" }),
        };
        let writer = match fields.get("writer")? {
            "-" => None,
            w => Some(parse_target(w).ok_or(ProtoError::Field { field: "writer" })?),
        };
        let readers = match fields.get("readers")? {
            "-" => Vec::new(),
            list => list.split(',').map(parse_reader).collect::<Option<Vec<_>>>().ok_or(ProtoError::Field { field: "readers" })?,
        };
        Ok(Route {
            lb: fields.get("lb")?.to_owned(),
            agent: fields.get("agent")?.to_owned(),
            role,
            nonce: fields.nonce()?,
            epoch: parse_epoch(fields.get("epoch")?).ok_or(ProtoError::Field { field: "epoch" })?,
            writer,
            readers,
        })
    }
}

impl ToAgent {
    /// A route (its signature checked with the load balancers' public key first) or a cookie.
    pub fn decode(datagram: &[u8], lb_key: &PublicKey) -> Result<ToAgent, ProtoError> {
        if kind_of(datagram) == Some("cookie") {
            let text = line(datagram)?;
            let fields = Fields::new(text);
            let cookie = decode_hex(fields.get("cookie")?).and_then(|b| b.try_into().ok()).ok_or(ProtoError::Field { field: "cookie" })?;
            return Ok(ToAgent::Cookie(CookieReply { nonce: fields.nonce()?, cookie: Cookie(cookie) }));
        }
        let (kind, body, sig) = split(datagram, SIG_SEP, ProtoError::NoSignature)?;
        if kind != "route" {
            return Err(ProtoError::Kind { kind: kind.to_owned() });
        }
        let sig = decode_hex(sig).ok_or(ProtoError::BadSignature)?;
        if !lb_key.verify(body.as_bytes(), &sig) {
            return Err(ProtoError::BadSignature);
        }
        Ok(ToAgent::Route(Route::parse(&Fields::new(body))?))
    }
}

/// The datagram as one line of this protocol.
fn line(datagram: &[u8]) -> Result<&str, ProtoError> {
    let text = std::str::from_utf8(datagram).map_err(|_| ProtoError::NotAgentMessage)?;
    let text = text.trim_end_matches(['\n', '\r']);
    if !text.starts_with(MAGIC) || text.as_bytes().get(MAGIC.len()) != Some(&b' ') {
        return Err(ProtoError::NotAgentMessage);
    }
    Ok(text)
}

/// The message's kind (the word after the magic), if it is one of ours.
fn kind_of(datagram: &[u8]) -> Option<&str> {
    line(datagram).ok()?[MAGIC.len()..].split_ascii_whitespace().next()
}

/// (kind, the authenticated body, the tag's hex) of a message authenticated after `sep`.
fn split<'a>(datagram: &'a [u8], sep: &str, missing: ProtoError) -> Result<(&'a str, &'a str, &'a str), ProtoError> {
    let text = line(datagram)?;
    let (body, tag) = text.rsplit_once(sep).ok_or(missing)?;
    let kind = body[MAGIC.len()..].split_ascii_whitespace().next().ok_or(ProtoError::Field { field: "kind" })?;
    Ok((kind, body, tag))
}

/// A message's `key=value` words.
struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    fn new(body: &'a str) -> Self {
        Fields(body[MAGIC.len()..].split_ascii_whitespace().filter_map(|w| w.split_once('=')).collect())
    }

    fn get(&self, field: &'static str) -> Result<&'a str, ProtoError> {
        self.0.iter().find(|(k, _)| *k == field).map(|(_, v)| *v).ok_or(ProtoError::Field { field })
    }

    fn nonce(&self) -> Result<u64, ProtoError> {
        u64::from_str_radix(self.get("nonce")?, 16).map_err(|_| ProtoError::Field { field: "nonce" })
    }
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(text, "{b:02x}");
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


#[cfg(test)]
mod tests {
    use super::*;

    fn agent_key() -> Key {
        Key::new(b"0123456789abcdef0123".to_vec())
    }

    fn signing() -> SigningKey {
        SigningKey::from_seed([7; 32])
    }

    fn route() -> Route {
        Route {
            lb: "lb1".into(),
            agent: "app1".into(),
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

    fn subscribe(cookie: Option<Cookie>) -> Subscribe {
        Subscribe { agent: "app1".into(), nonce: 7, seen: Epoch { timeline: 2, seq: 9 }, time: 1_700_000_000_000_123, cookie }
    }

    #[test]
    fn messages_round_trip() {
        let key = agent_key();
        for sub in [subscribe(None), subscribe(Some(Cookie([0xab; COOKIE_LEN])))] {
            let wire = sub.encode(&key);
            assert_eq!(Subscribe::decode(wire.as_bytes(), |a| (a == "app1").then_some(&key)), Ok(sub.clone()), "round trip of {wire}");
        }
        let none = Route { writer: None, readers: vec![], role: Role::Backup, ..route() };
        for r in [route(), none] {
            let wire = r.encode(&signing());
            assert_eq!(ToAgent::decode(wire.as_bytes(), &signing().public()), Ok(ToAgent::Route(r.clone())), "round trip of {wire}");
        }
        let cookie = CookieReply { nonce: 9, cookie: Cookie([1; COOKIE_LEN]) };
        assert_eq!(ToAgent::decode(cookie.encode().as_bytes(), &signing().public()), Ok(ToAgent::Cookie(cookie)));
    }

    #[test]
    fn the_wire_form_is_one_readable_line() {
        let wire = route().encode(&signing());
        let (body, sig) = wire.rsplit_once(" sig=").expect("a signature");
        assert_eq!(
            body,
            "pglb-agent 2 route lb=lb1 agent=app1 role=master nonce=deadbeef00000001 epoch=3.17 writer=pg1/172.20.0.10:5432 readers=pg2/1/1/172.20.0.11:5432,pg3/2/3/172.20.0.12:5433"
        );
        assert_eq!(sig.len(), 128, "hex of an ed25519 signature");
        let wire = subscribe(None).encode(&agent_key());
        let (body, mac) = wire.rsplit_once(" mac=").expect("a mac");
        assert_eq!(body, "pglb-agent 2 subscribe agent=app1 nonce=0000000000000007 seen=2.9 time=1700000000000123 cookie=-");
        assert_eq!(mac.len(), 64, "hex of a sha-256 tag");
    }

    /// Issue 18: an application host holding every key an agent has (its own HMAC key and the
    /// load balancers' public key) cannot make a route that an agent believes.
    #[test]
    fn an_agent_cannot_forge_a_route() {
        let public = signing().public();
        let other_lb_key = SigningKey::from_seed([8; 32]);
        let evil = Route { writer: Some(Target { name: "evil".into(), addr: "172.20.0.66:5432".parse().unwrap() }), ..route() };
        let forged_with_own_key = evil.encode(&other_lb_key);
        assert_eq!(ToAgent::decode(forged_with_own_key.as_bytes(), &public), Err(ProtoError::BadSignature), "signed by another key");
        let genuine = route().encode(&signing());
        let altered = genuine.replace("pg1/172.20.0.10", "pg1/172.20.0.66");
        assert_eq!(ToAgent::decode(altered.as_bytes(), &public), Err(ProtoError::BadSignature), "a genuine route with its writer changed");
        let (body, _) = genuine.rsplit_once(" sig=").expect("a signature");
        let hmac_route = format!("{body} mac={}", "00".repeat(32));
        assert_eq!(ToAgent::decode(hmac_route.as_bytes(), &public), Err(ProtoError::NoSignature), "a route with a mac instead of a signature");
    }

    #[test]
    fn altered_or_foreign_messages_are_refused() {
        let key = agent_key();
        let wire = subscribe(None).encode(&key);
        let other = Key::new(b"another key, 16+ bytes".to_vec());
        let table: Vec<(&str, String, Option<&Key>, ProtoError)> = vec![
            ("another agent's key", wire.clone(), Some(&other), ProtoError::BadMac),
            ("unknown agent", wire.clone(), None, ProtoError::UnknownAgent { agent: "app1".into() }),
            ("seen raised", wire.replace("seen=2.9", "seen=2.99"), Some(&key), ProtoError::BadMac),
            ("time changed", wire.replace("time=1700000000000123", "time=1700000000000124"), Some(&key), ProtoError::BadMac),
            ("mac cut", wire[..wire.len() - 2].to_owned(), Some(&key), ProtoError::BadMac),
            ("mac not hex", format!("{}zz", &wire[..wire.len() - 2]), Some(&key), ProtoError::BadMac),
            ("no mac", wire.rsplit_once(" mac=").unwrap().0.to_owned(), Some(&key), ProtoError::NoMac),
            ("version 1", wire.replace("pglb-agent 2", "pglb-agent 1"), Some(&key), ProtoError::NotAgentMessage),
            ("not ours", "pglb-report 1 timeline=3 writer=pg1".to_owned(), Some(&key), ProtoError::NotAgentMessage),
            ("a route sent to a load balancer", route().encode(&signing()), Some(&key), ProtoError::NoMac),
        ];
        for (what, text, k, want) in table {
            assert_eq!(Subscribe::decode(text.as_bytes(), |_| k), Err(want), "{what}");
        }
    }

    #[test]
    fn epochs_order_by_timeline_then_sequence() {
        let e = |timeline, seq| Epoch { timeline, seq };
        assert!(e(3, 1) > e(2, 99), "a newer timeline wins over any sequence");
        assert!(e(3, 2) > e(3, 1), "within a timeline, the later change wins");
        assert_eq!(e(4, 5).to_string(), "4.5");
    }

    #[test]
    fn a_cookie_reply_is_shorter_than_any_subscribe() {
        let shortest = Subscribe { agent: "a".into(), nonce: 0, seen: Epoch::default(), time: 0, cookie: None }.encode(&agent_key());
        let reply = CookieReply { nonce: u64::MAX, cookie: Cookie([0xff; COOKIE_LEN]) }.encode();
        assert!(reply.len() < shortest.len(), "{} bytes answer {} bytes", reply.len(), shortest.len());
    }
}
