//! Who may ask the HTTP endpoints: the networks allowed (`[http] allow`, 403 from elsewhere)
//! and the credentials (`[http] stats_user` with its password for basic auth, `token_file` for
//! a bearer token, either accepted), asked for on `/stats` only or on every endpoint
//! (`[http] auth`). Pure: the server passes the peer address and the request's header.

use std::net::{IpAddr, Ipv4Addr};

use crate::config::{HttpAuthScope, Ipv4Cidr};

/// The access rules of the HTTP endpoints.
#[derive(Clone, Default)]
pub struct Access {
    /// Empty: every network.
    pub allow: Vec<Ipv4Cidr>,
    /// The expected `Authorization` values: `Basic …` and/or `Bearer …`.
    pub credentials: Vec<String>,
    pub scope: HttpAuthScope,
}

/// What the rules say about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// 403: the peer's network is not allowed.
    Forbidden,
    /// 401: credentials are needed and were not given or are wrong.
    Unauthorized,
}

impl Access {
    /// `user:password` for basic auth, `token` for a bearer token; `None` for neither.
    pub fn new(allow: Vec<Ipv4Cidr>, basic: Option<(&str, &str)>, token: Option<&str>, scope: HttpAuthScope) -> Self {
        let mut credentials = Vec::new();
        if let Some((user, password)) = basic {
            credentials.push(format!("Basic {}", super::base64(format!("{user}:{password}").as_bytes())));
        }
        if let Some(t) = token {
            credentials.push(format!("Bearer {t}"));
        }
        Access { allow, credentials, scope }
    }

    /// Whether a peer's address is in an allowed network (an IPv4-mapped IPv6 peer counts as
    /// its IPv4 address; another IPv6 peer is allowed only without an allow-list).
    pub fn peer_allowed(&self, peer: IpAddr) -> bool {
        if self.allow.is_empty() {
            return true;
        }
        let v4: Option<Ipv4Addr> = match peer {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        v4.is_some_and(|a| self.allow.iter().any(|c| c.contains(a)))
    }

    /// The verdict for a request from `peer` to `path` with this `Authorization` header.
    pub fn decide(&self, peer: IpAddr, path: &str, authorization: Option<&str>) -> Decision {
        if !self.peer_allowed(peer) {
            return Decision::Forbidden;
        }
        let needed = !self.credentials.is_empty() && (self.scope == HttpAuthScope::All || path == "/stats");
        let given = authorization.is_some_and(|a| self.credentials.iter().any(|c| same(c.as_bytes(), a.as_bytes())));
        if needed && !given { Decision::Unauthorized } else { Decision::Allowed }
    }

    /// The `WWW-Authenticate` challenges of a 401, one header line each.
    pub fn challenges(&self) -> String {
        self.credentials
            .iter()
            .map(|c| if c.starts_with("Basic ") { "WWW-Authenticate: Basic realm=\"pglb\"\r\n" } else { "WWW-Authenticate: Bearer realm=\"pglb\"\r\n" })
            .collect()
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn the_allow_list_refuses_other_networks() {
        let a = Access { allow: vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()], ..Access::default() };
        for (peer, want) in [("10.1.2.3", true), ("127.0.0.1", true), ("127.0.0.2", false), ("192.168.0.1", false), ("::ffff:10.0.0.1", true), ("::1", false)] {
            assert_eq!(a.peer_allowed(ip(peer)), want, "{peer}");
        }
        assert_eq!(a.decide(ip("192.168.0.1"), "/metrics", None), Decision::Forbidden);
        assert!(Access::default().peer_allowed(ip("::1")), "no allow-list: every network");
    }

    #[test]
    fn credentials_on_stats_or_everywhere() {
        let peer = ip("127.0.0.1");
        let basic = format!("Basic {}", super::super::base64(b"admin:secret"));
        let stats = Access::new(Vec::new(), Some(("admin", "secret")), Some("t0ken"), HttpAuthScope::Stats);
        assert_eq!(stats.decide(peer, "/stats", None), Decision::Unauthorized);
        assert_eq!(stats.decide(peer, "/stats", Some("Bearer wrong")), Decision::Unauthorized);
        assert_eq!(stats.decide(peer, "/stats", Some(&basic)), Decision::Allowed);
        assert_eq!(stats.decide(peer, "/stats", Some("Bearer t0ken")), Decision::Allowed);
        assert_eq!(stats.decide(peer, "/primary", None), Decision::Allowed, "scope stats: health checks need nothing");
        let all = Access { scope: HttpAuthScope::All, ..stats.clone() };
        assert_eq!(all.decide(peer, "/primary", None), Decision::Unauthorized);
        assert_eq!(all.decide(peer, "/metrics", Some("Bearer t0ken")), Decision::Allowed);
        assert_eq!(all.challenges(), "WWW-Authenticate: Basic realm=\"pglb\"\r\nWWW-Authenticate: Bearer realm=\"pglb\"\r\n");
        let none = Access { scope: HttpAuthScope::All, ..Access::default() };
        assert_eq!(none.decide(peer, "/stats", None), Decision::Allowed, "no credentials configured: nothing to ask");
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
