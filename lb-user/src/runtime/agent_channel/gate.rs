//! Which subscribes a load balancer acts on, sans-IO: the agent is registered and its MAC
//! checks out, the subscribe is fresh, and the sender receives at its source address.
//!
//! 1. **Identity**: the `agent` field names a `[[agent.client]]`; its key checks the MAC.
//!    Unknown names and failed MACs are dropped and counted, unanswered.
//! 2. **Freshness**: each agent's `time` must rise (µs of the agent's clock, strictly rising in
//!    one agent run). A subscribe at or below the last accepted time of that agent is a replay:
//!    dropped, unanswered. The last time is forgotten [`REPLAY_MEMORY`] after it was accepted,
//!    so an agent whose clock stepped back is let in again then; a replay that old carries a
//!    cookie from an ended period (rule 3), so it still creates no subscription.
//! 3. **Return routability** (DTLS's and QUIC's retry): a subscribe must carry the cookie this
//!    load balancer gives for (agent, source address, period of [`COOKIE_PERIOD`]); the current
//!    or the previous period's counts. Without one it is answered with a `cookie` message only,
//!    never longer than the subscribe: a forged source address gets no more bytes than the
//!    forger sent, and no subscription.
//!
//! Cookies are an HMAC under a key derived from the signing key, which every load balancer
//! holds: a cookie from one load balancer is good at the others, and after a restart.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use crate::agent::channel::{COOKIE_LEN, Cookie, CookieReply, Key, ProtoError, Subscribe};

/// How long a cookie period lasts (a cookie is good for this to twice this).
pub const COOKIE_PERIOD: Duration = Duration::from_secs(60);
/// How long an agent's last accepted time is kept.
pub const REPLAY_MEMORY: Duration = Duration::from_secs(2 * 60);

/// Why a datagram was dropped unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// Not a subscribe of this protocol, or a field is malformed.
    Malformed,
    /// The agent is not a `[[agent.client]]`.
    UnknownAgent,
    /// The MAC does not check out with that agent's key.
    BadMac,
    /// Not newer than the agent's last accepted subscribe.
    Replay,
}

impl Dropped {
    pub const ALL: [Dropped; 4] = [Dropped::Malformed, Dropped::UnknownAgent, Dropped::BadMac, Dropped::Replay];

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Malformed => "malformed",
            Dropped::UnknownAgent => "unknown-agent",
            Dropped::BadMac => "bad-mac",
            Dropped::Replay => "replay",
        }
    }
}

/// What to do with a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A verified subscribe from a verified address: answer and subscribe it.
    Subscribe(Subscribe),
    /// Send this cookie message back to the source, nothing else.
    Cookie(String),
    Dropped(Dropped),
}

/// The admission state: registered agents, their last times, drop counts.
pub struct Gate {
    clients: HashMap<String, Key>,
    cookie_key: Key,
    /// Agent → (its last accepted time, when it was accepted).
    last: HashMap<String, (u64, Duration)>,
    dropped: HashMap<Dropped, u64>,
}

impl Gate {
    /// `clients`: agent name → its key; `cookie_key`: the load balancers' cookie key.
    pub fn new(clients: HashMap<String, Key>, cookie_key: Key) -> Self {
        Gate { clients, cookie_key, last: HashMap::new(), dropped: HashMap::new() }
    }

    /// How many datagrams were dropped for `why`.
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped.get(&why).copied().unwrap_or(0)
    }

    /// Rules 1-3 for one datagram from `from` at `now` (this process's monotonic time); `unix`
    /// is the wall clock (since the Unix epoch), which numbers the cookie periods alike on every
    /// load balancer.
    pub fn admit(&mut self, datagram: &[u8], from: SocketAddr, now: Duration, unix: Duration) -> Admission {
        let sub = match Subscribe::decode(datagram, |agent| self.clients.get(agent)) {
            Ok(sub) => sub,
            Err(ProtoError::UnknownAgent { .. }) => return self.drop(Dropped::UnknownAgent),
            Err(ProtoError::BadMac | ProtoError::NoMac) => return self.drop(Dropped::BadMac),
            Err(_) => return self.drop(Dropped::Malformed),
        };
        if let Some(&(time, at)) = self.last.get(&sub.agent)
            && now.saturating_sub(at) < REPLAY_MEMORY
            && sub.time <= time
        {
            return self.drop(Dropped::Replay);
        }
        self.last.insert(sub.agent.clone(), (sub.time, now));
        let period = unix.as_secs() / COOKIE_PERIOD.as_secs();
        let valid = |p: u64| sub.cookie == Some(self.cookie(&sub.agent, from, p));
        if valid(period) || (period > 0 && valid(period - 1)) {
            return Admission::Subscribe(sub);
        }
        let reply = CookieReply { nonce: sub.nonce, cookie: self.cookie(&sub.agent, from, period) }.encode();
        if reply.len() > datagram.len() {
            // Cannot happen with the message formats (a test checks); never amplify anyway.
            return self.drop(Dropped::Malformed);
        }
        Admission::Cookie(reply)
    }

    fn cookie(&self, agent: &str, from: SocketAddr, period: u64) -> Cookie {
        let tag = self.cookie_key.tag(&[b"pglb-agent cookie ", agent.as_bytes(), b" ", from.to_string().as_bytes(), b" ", &period.to_le_bytes()]);
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&tag[..COOKIE_LEN]);
        Cookie(cookie)
    }

    fn drop(&mut self, why: Dropped) -> Admission {
        *self.dropped.entry(why).or_default() += 1;
        Admission::Dropped(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::channel::{Epoch, ToAgent};

    const AGENT: &str = "10.0.0.5:40000";
    const FORGED: &str = "10.0.0.99:40000";

    fn key() -> Key {
        Key::new(b"app1's own key, 16+ bytes".to_vec())
    }

    fn gate() -> Gate {
        Gate::new(HashMap::from([("app1".to_owned(), key())]), Key::new(b"cookie key".to_vec()))
    }

    fn sub(time: u64, cookie: Option<Cookie>) -> Subscribe {
        Subscribe { agent: "app1".into(), nonce: time, seen: Epoch::default(), time, cookie }
    }

    fn at(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The cookie `g` gives `from` (by asking without one).
    fn cookie_for(g: &mut Gate, from: &str, time: u64, now: Duration) -> Cookie {
        match g.admit(sub(time, None).encode(&key()).as_bytes(), from.parse().unwrap(), now, now) {
            Admission::Cookie(reply) => match ToAgent::decode(reply.as_bytes(), &crate::agent::channel::SigningKey::from_seed([1; 32]).public()) {
                Ok(ToAgent::Cookie(c)) => c.cookie,
                other => panic!("not a cookie: {other:?}"),
            },
            other => panic!("expected a cookie, got {other:?}"),
        }
    }

    #[test]
    fn a_first_subscribe_gets_a_cookie_no_longer_than_itself_and_the_next_is_admitted() {
        let mut g = gate();
        let first = sub(1, None).encode(&key());
        let Admission::Cookie(reply) = g.admit(first.as_bytes(), AGENT.parse().unwrap(), at(10), at(10)) else { panic!("a cookie first") };
        assert!(reply.len() < first.len(), "{} bytes answer {} bytes", reply.len(), first.len());
        let cookie = cookie_for(&mut g, AGENT, 2, at(10));
        let with = sub(3, Some(cookie));
        assert_eq!(g.admit(with.encode(&key()).as_bytes(), AGENT.parse().unwrap(), at(11), at(11)), Admission::Subscribe(with));
    }

    /// Issue 18: a recorded subscribe replayed from a forged source address used to be answered
    /// with the routing and subscribed for `subscriber_ttl` (a reflector).
    #[test]
    fn a_replayed_subscribe_gets_no_answer_from_any_address() {
        let mut g = gate();
        let cookie = cookie_for(&mut g, AGENT, 1, at(10));
        let wire = sub(2, Some(cookie)).encode(&key());
        assert!(matches!(g.admit(wire.as_bytes(), AGENT.parse().unwrap(), at(10), at(10)), Admission::Subscribe(_)), "the original");
        for (what, from, now) in [("forged source", FORGED, at(11)), ("same source", AGENT, at(11)), ("a minute later", FORGED, at(70))] {
            assert_eq!(g.admit(wire.as_bytes(), from.parse().unwrap(), now, now), Admission::Dropped(Dropped::Replay), "{what}");
        }
        assert_eq!(g.dropped(Dropped::Replay), 3);
    }

    #[test]
    fn a_fresh_subscribe_from_another_address_gets_only_a_cookie() {
        let mut g = gate();
        let cookie = cookie_for(&mut g, AGENT, 1, at(10));
        // An attacker who saw the cookie and races a fresh-looking copy from elsewhere.
        let wire = sub(5, Some(cookie)).encode(&key());
        match g.admit(wire.as_bytes(), FORGED.parse().unwrap(), at(10), at(10)) {
            Admission::Cookie(reply) => assert!(reply.len() < wire.len(), "never more bytes than received"),
            other => panic!("the cookie is bound to the address: {other:?}"),
        }
    }

    #[test]
    fn cookies_last_one_to_two_periods() {
        let mut g = gate();
        let cookie = cookie_for(&mut g, AGENT, 1, at(59));
        let table = [(2, at(60), true), (3, at(119), true), (4, at(120), false)];
        for (time, now, admitted) in table {
            let got = g.admit(sub(time, Some(cookie)).encode(&key()).as_bytes(), AGENT.parse().unwrap(), now, now);
            assert_eq!(matches!(got, Admission::Subscribe(_)), admitted, "at {now:?}: {got:?}");
        }
    }

    #[test]
    fn a_cookie_from_one_load_balancer_is_good_at_another() {
        let (mut lb1, mut lb2) = (gate(), gate());
        let cookie = cookie_for(&mut lb1, AGENT, 1, at(10));
        let with = sub(2, Some(cookie));
        // lb2 started at another moment: its monotonic clock differs, the wall clock does not.
        let got = lb2.admit(with.encode(&key()).as_bytes(), AGENT.parse().unwrap(), at(500), at(10));
        assert_eq!(got, Admission::Subscribe(with), "cookie periods follow the wall clock");
    }

    #[test]
    fn unknown_agents_bad_macs_and_junk_are_dropped_and_counted() {
        let from: SocketAddr = AGENT.parse().unwrap();
        let stranger = Subscribe { agent: "app9".into(), ..sub(1, None) };
        let table: [(&str, Vec<u8>, Dropped); 4] = [
            ("unknown agent", stranger.encode(&key()).into_bytes(), Dropped::UnknownAgent),
            ("another agent's key", sub(1, None).encode(&Key::new(b"app2's key, 16+ bytes".to_vec())).into_bytes(), Dropped::BadMac),
            ("no mac", b"pglb-agent 2 subscribe agent=app1 nonce=1 seen=0.0 time=1 cookie=-".to_vec(), Dropped::BadMac),
            ("junk", b"\x00\x01 hello".to_vec(), Dropped::Malformed),
        ];
        for (what, datagram, why) in table {
            let mut g = gate();
            assert_eq!(g.admit(&datagram, from, at(1), at(1)), Admission::Dropped(why), "{what}");
            assert_eq!(g.dropped(why), 1, "{what} counted");
        }
    }

    #[test]
    fn an_agent_whose_clock_stepped_back_is_let_in_after_the_replay_memory() {
        let mut g = gate();
        let from: SocketAddr = AGENT.parse().unwrap();
        assert!(matches!(g.admit(sub(1_000, None).encode(&key()).as_bytes(), from, at(1), at(1)), Admission::Cookie(_)));
        assert_eq!(g.admit(sub(10, None).encode(&key()).as_bytes(), from, at(100), at(100)), Admission::Dropped(Dropped::Replay), "below the last time");
        assert!(matches!(g.admit(sub(11, None).encode(&key()).as_bytes(), from, at(121), at(121)), Admission::Cookie(_)), "forgotten after REPLAY_MEMORY");
    }
}
