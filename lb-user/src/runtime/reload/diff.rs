//! What a reload would change: the running parameters against the ones derived again from the
//! file ([`diff`]), key by key. Each key is one line of [`KEYS`] (or of [`node_changes`] for a
//! `[[node]]`'s own keys): its name as the config spells it, whether the daemon applies it
//! live, and the part of [`RunParams`] it lands in. A key missing here is not compared, so a
//! new config key needs its line.
//!
//! Live keys reach their owners without a restart (see `super`); a key marked [`Apply::Restart`]
//! belongs to something attached, bound or joined once at start (the interface, the VIP, VRRP,
//! the listeners, the sockets, the key files read into them), and a reload that changes one is
//! refused as a whole, naming it.

use super::super::params::{RunParams, VipSide, VrrpSide};

/// Whether a running daemon can take a key's new value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    Live,
    Restart,
}

/// One config key: its name, how it applies, and whether it differs between two parameter sets.
struct Key {
    name: &'static str,
    apply: Apply,
    changed: fn(&RunParams, &RunParams) -> bool,
}

/// `key!(name, Live|Restart, |p| projection)`: the key differs when its projection of the
/// running and the new parameters differ.
macro_rules! key {
    ($name:literal, $apply:ident, |$p:ident| $e:expr) => {
        Key {
            name: $name,
            apply: Apply::$apply,
            changed: |old, new| {
                let before = {
                    let $p = old;
                    $e
                };
                let after = {
                    let $p = new;
                    $e
                };
                before != after
            },
        }
    };
}

fn vrrp(p: &RunParams) -> Option<&VrrpSide> {
    match &p.vip {
        VipSide::Vrrp(v) => Some(v),
        VipSide::Static { .. } => None,
    }
}

/// Every key outside `[[node]]`, in the config's order.
const KEYS: &[Key] = &[
    key!("[instance] name", Restart, |p| &p.instance),
    key!("[instance] state_dir", Restart, |p| &p.state_dir),
    key!("[dataplane] interface", Restart, |p| &p.dataplane.interface),
    key!("[dataplane] address", Restart, |p| vrrp(p).map(|v| v.runner.own_address)),
    key!("[dataplane] vip", Restart, |p| (p.dataplane.vip, vrrp(p).map(|v| v.runner.vip_prefix_len))),
    key!("[dataplane] pin_path", Restart, |p| &p.dataplane.pin_dir),
    key!("[dataplane] xdp_mode", Restart, |p| p.dataplane.xdp_mode),
    key!("[dataplane] lease", Restart, |p| p.lease.period),
    key!("[dataplane] lease_grace", Restart, |p| p.lease.grace),
    key!("[dataplane] flow_idle_timeout", Live, |p| p.flows.idle),
    key!("[dataplane] half_open_timeout", Live, |p| p.flows.half_open),
    key!("[[listener]]", Restart, |p| &p.dataplane.listeners),
    key!("[probe] user", Live, |p| &p.probe.user),
    key!("[probe] password", Live, |p| &p.probe.password),
    key!("[probe] dbname", Live, |p| &p.probe.dbname),
    key!("[probe] interval", Live, |p| p.probe.interval),
    key!("[probe] timeout", Live, |p| p.probe.timeout),
    key!("[probe] connect_timeout", Live, |p| p.probe.connect_timeout),
    key!("[probe] sslmode, sslrootcert, sslcert, sslkey", Live, |p| &p.probe.tls),
    key!("[failover] failover_after", Live, |p| p.machine.failover_after),
    key!("[failover] up_after", Live, |p| p.machine.up_after),
    key!("[failover] max_lag_on_failover_bytes", Live, |p| p.machine.max_lag_on_failover_bytes),
    key!("[failover] max_read_lag_bytes", Live, |p| p.machine.max_read_lag_bytes),
    key!("[failover] max_read_lag", Live, |p| p.machine.max_read_lag),
    key!("[failover] promote_timeout", Live, |p| (p.machine.promote_timeout, p.sql.timeout)),
    key!("[failover] switchover_timeout", Live, |p| p.machine.switchover_timeout),
    key!("[failover] demote_command", Live, |p| &p.sql.demote_command),
    key!("[failover] rejoin_command", Live, |p| (&p.sql.rejoin_command, p.machine.rejoin)),
    key!("[failover] rejoin_backoff", Live, |p| p.machine.rejoin_backoff),
    key!("[failover] pause_alert_after", Live, |p| p.snapshot.pause_alert_after),
    key!("[replication] user, password, passfile, sslmode, sslrootcert, sslcert, sslkey", Live, |p| &p.sql.replication),
    key!("[replication] synchronous_count", Live, |p| p.machine.synchronous_count),
    key!("[vrrp]", Restart, |p| vrrp(p).is_some()),
    key!("[vrrp] vrid", Restart, |p| vrrp(p).map(|v| v.runner.vrid)),
    key!("[vrrp] priority", Restart, |p| vrrp(p).map(|v| v.priority)),
    key!("[vrrp] advert_interval", Restart, |p| vrrp(p).map(|v| v.runner.advert_interval_cs)),
    key!("[vrrp] preempt", Restart, |p| vrrp(p).map(|v| v.runner.preempt)),
    key!("[vrrp] preempt_delay", Restart, |p| vrrp(p).map(|v| v.runner.preempt_delay)),
    key!("[vrrp] peers", Restart, |p| vrrp(p).map(|v| &v.pglb_peers)),
    key!("[vrrp] key_file", Restart, |p| vrrp(p).and_then(|v| v.reports.as_ref()).map(|r| &r.key)),
    key!("[vrrp] keepalived_peers", Restart, |p| vrrp(p).map(|v| &v.keepalived_peers)),
    key!("[vrrp] max_peer_advert_interval", Restart, |p| vrrp(p).map(|v| v.runner.max_advert_interval_cs)),
    key!("[vrrp] unicast", Restart, |p| vrrp(p).map(|v| &v.runner.unicast_peers)),
    key!("[vrrp] track_weight", Restart, |p| vrrp(p).map(|v| v.track_weight)),
    key!("[vrrp] report_port", Restart, |p| vrrp(p).and_then(|v| v.reports.as_ref()).map(|r| r.port)),
    key!("[http] listen", Restart, |p| p.http.listen),
    key!("[http] allow", Live, |p| &p.http.access.allow),
    key!("[http] auth", Live, |p| p.http.access.scope),
    key!("[http] stats_user, stats_password, token_file", Live, |p| &p.http.access.credentials),
    key!("[agent]", Restart, |p| p.agent.is_some()),
    key!("[agent] listen_port", Restart, |p| p.agent.as_ref().map(|a| a.port)),
    key!("[agent] signing_key_file", Restart, |p| p.agent.as_ref().map(|a| a.signing.public())),
    key!("[[agent.client]]", Restart, |p| p.agent.as_ref().map(|a| &a.clients)),
    key!("[agent] subscriber_ttl", Restart, |p| p.agent.as_ref().map(|a| a.subscriber_ttl)),
    key!("[hooks]", Live, |p| p.hooks.is_some()),
    key!("[hooks] command", Live, |p| p.hooks.as_ref().map(|h| &h.command)),
    key!("[hooks] timeout", Live, |p| p.hooks.as_ref().map(|h| h.timeout)),
    key!("[hooks] max_concurrent", Live, |p| p.hooks.as_ref().map(|h| h.max_concurrent)),
];

/// The keys that differ: those applied live, and those that need a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub live: Vec<String>,
    pub restart: Vec<String>,
}

impl Diff {
    fn add(&mut self, apply: Apply, key: String) {
        match apply {
            Apply::Live => self.live.push(key),
            Apply::Restart => self.restart.push(key),
        }
    }
}

/// Every key that differs between the running parameters and the new ones.
pub fn diff(old: &RunParams, new: &RunParams) -> Diff {
    let mut d = Diff::default();
    for k in KEYS {
        if (k.changed)(old, new) {
            d.add(k.apply, k.name.to_owned());
        }
    }
    for (apply, key) in node_changes(old, new) {
        d.add(apply, key);
    }
    d
}

/// The `[[node]]` keys that differ, by node name. A node's id is its place in the list, which
/// the data plane's backends, the state machine and the probes all key on: nodes added at the
/// end or removed from the end apply live (no other id moves); a node added or removed
/// elsewhere, renamed or moved needs a restart. (Whether a node may leave now, the writer say,
/// the running machine decides: `Machine::removal_blocker`.)
fn node_changes(old: &RunParams, new: &RunParams) -> Vec<(Apply, String)> {
    let (before, after) = (&old.machine.nodes, &new.machine.nodes);
    let kept = before.len().min(after.len());
    if before[..kept].iter().zip(&after[..kept]).any(|(b, a)| b.name != a.name) {
        let names = |n: &[crate::failover::NodeParams]| n.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        let (b, a) = (names(before), names(after));
        let added: Vec<&str> = a.iter().filter(|n| !b.contains(n)).map(String::as_str).collect();
        let removed: Vec<&str> = b.iter().filter(|n| !a.contains(n)).map(String::as_str).collect();
        let what = match (added.is_empty(), removed.is_empty()) {
            (true, true) => "reordered".to_owned(),
            _ => [("added", added), ("removed", removed)].iter().filter(|(_, n)| !n.is_empty()).map(|(w, n)| format!("{w} {}", n.join(", "))).collect::<Vec<_>>().join("; "),
        };
        return vec![(Apply::Restart, format!("[[node]] list ({what}, not at the end of the list)"))];
    }
    let mut out = Vec::new();
    for (b, a) in before.iter().zip(after) {
        let fields: [(&str, Apply, bool); 5] = [
            ("host", Apply::Restart, b.host != a.host),
            ("port", Apply::Restart, b.port != a.port),
            ("priority", Apply::Live, b.priority != a.priority),
            ("nofailover", Apply::Live, b.nofailover != a.nofailover),
            ("read_weight", Apply::Live, b.read_weight != a.read_weight),
        ];
        out.extend(fields.iter().filter(|f| f.2).map(|(key, apply, _)| (*apply, format!("[[node]] {} {key}", b.name))));
    }
    out.extend(after[kept..].iter().map(|n| (Apply::Live, format!("[[node]] {} (added)", n.name))));
    out.extend(before[kept..].iter().map(|n| (Apply::Live, format!("[[node]] {} (removed)", n.name))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::channel::{Key, SigningKey},
        config::Config,
        runtime::params::from_config,
    };

    const LAB: &str = include_str!("../../../../config/lab.toml");

    /// The lab's config with `edit` applied (a text replacement), as the daemon derives it.
    fn params(edit: (&str, &str)) -> RunParams {
        assert!(edit.0.is_empty() || LAB.contains(edit.0), "the lab config has {:?}", edit.0);
        let text = if edit.0.is_empty() { LAB.to_owned() } else { LAB.replacen(edit.0, edit.1, 1) };
        let mut config = Config::parse(&text, std::path::Path::new("lab.toml")).expect("valid");
        config.probe.password = crate::config::Secret::new("probe-secret");
        config.replication.password = crate::config::Secret::new("replication-secret");
        config.vrrp.as_mut().expect("[vrrp]").key = Some(Key::new(b"0123456789abcdef".to_vec()));
        let agent = config.agent.as_mut().expect("[agent]");
        agent.signing_key = Some(SigningKey::from_seed([7; 32]));
        for c in &mut agent.clients {
            c.key = Some(Key::new(b"fedcba9876543210".to_vec()));
        }
        from_config(&config).expect("the test config's TLS")
    }

    #[test]
    fn each_key_is_applied_live_or_refused_by_name() {
        let node = |name: &str| format!("[[node]]\nname = \"{name}\"");
        let pg2 = node("pg2");
        let cases: Vec<((&str, String), Apply, &str)> = vec![
            (("name = \"lb1\"", "name = \"lb9\"".into()), Apply::Restart, "[instance] name"),
            (("interface = \"eth0\"", "interface = \"eth1\"".into()), Apply::Restart, "[dataplane] interface"),
            (("vip = \"172.20.0.100/16\"", "vip = \"172.20.0.101/16\"".into()), Apply::Restart, "[dataplane] vip"),
            (("address = \"172.20.0.21/16\"", "address = \"172.20.0.23/16\"".into()), Apply::Restart, "[dataplane] address"),
            (("port = 3001", "port = 3005".into()), Apply::Restart, "[[listener]]"),
            (("vrid = 51", "vrid = 52".into()), Apply::Restart, "[vrrp] vrid"),
            (("priority = 150", "priority = 140".into()), Apply::Restart, "[vrrp] priority"),
            (("peers = [\"172.20.0.22\"]", "peers = [\"172.20.0.23\"]".into()), Apply::Restart, "[vrrp] peers"),
            (("listen = \"127.0.0.1:8404\"", "listen = \"127.0.0.1:8405\"".into()), Apply::Restart, "[http] listen"),
            (("listen_port = 3003", "listen_port = 3004".into()), Apply::Restart, "[agent] listen_port"),
            ((pg2.as_str(), format!("{pg2}\nread_weight = 300")), Apply::Live, "[[node]] pg2 read_weight"),
            ((pg2.as_str(), format!("{pg2}\npriority = 5")), Apply::Live, "[[node]] pg2 priority"),
            ((pg2.as_str(), format!("{pg2}\nnofailover = true")), Apply::Live, "[[node]] pg2 nofailover"),
            ((pg2.as_str(), format!("{pg2}\nport = 5433")), Apply::Restart, "[[node]] pg2 port"),
            (("host = \"172.20.0.12\"", "host = \"172.20.0.13\"".into()), Apply::Restart, "[[node]] pg3 host"),
            (("failover_after = 3", "failover_after = 5".into()), Apply::Live, "[failover] failover_after"),
            (("failover_after = 3", "failover_after = 3\nmax_read_lag_bytes = 1000".into()), Apply::Live, "[failover] max_read_lag_bytes"),
            (("failover_after = 3", "failover_after = 3\nmax_read_lag = \"2s\"".into()), Apply::Live, "[failover] max_read_lag"),
            (("failover_after = 3", "failover_after = 3\npause_alert_after = \"2h\"".into()), Apply::Live, "[failover] pause_alert_after"),
            (("synchronous_count = 1", "synchronous_count = 0".into()), Apply::Live, "[replication] synchronous_count"),
            (("user = \"pglb\"", "user = \"pglb\"\ninterval = \"500ms\"".into()), Apply::Live, "[probe] interval"),
            (("user = \"pglb\"", "user = \"pglb\"\ntimeout = \"120ms\"".into()), Apply::Live, "[probe] timeout"),
            (("user = \"pglb\"", "user = \"monitor\"".into()), Apply::Live, "[probe] user"),
            (("sslmode = \"verify-full\"\nsslrootcert = \"/run/pglb-lab/lb1", "sslmode = \"verify-ca\"\nsslrootcert = \"/run/pglb-lab/lb1".into()), Apply::Live, "[probe] sslmode, sslrootcert, sslcert, sslkey"),
            (("passfile = \"/run/pglb-lab/replication.pgpass\"", "passfile = \"/etc/pglb/replication.pgpass\"".into()), Apply::Live, "[replication] user, password, passfile, sslmode, sslrootcert, sslcert, sslkey"),
            (("listen = \"127.0.0.1:8404\"", "listen = \"127.0.0.1:8404\"\nauth = \"all\"\ntoken_file = \"/x\"".into()), Apply::Live, "[http] auth"),
            (("[hooks]\ncommand = '''", "[hooks]\ntimeout = \"3s\"\ncommand = '''".into()), Apply::Live, "[hooks] timeout"),
        ];
        let base = params(("", ""));
        for ((from, to), apply, key) in cases {
            let mut new = params((from, &to));
            if key == "[http] auth" {
                // The token file is read by `Config::load`; here its secret is given.
                new.http.access = crate::http::Access::new(Vec::new(), None, Some("0123456789abcdef0123"), crate::config::HttpAuthScope::All);
            }
            let d = diff(&base, &new);
            let (hit, other) = match apply {
                Apply::Live => (&d.live, &d.restart),
                Apply::Restart => (&d.restart, &d.live),
            };
            assert!(hit.iter().any(|k| k == key), "{key}: expected {apply:?}, got {d:?}");
            assert!(other.is_empty(), "{key}: nothing else changes, got {d:?}");
        }
    }

    #[test]
    fn the_same_file_changes_nothing() {
        assert_eq!(diff(&params(("", "")), &params(("", ""))), Diff::default());
    }

    #[test]
    fn nodes_added_or_removed_at_the_end_apply_live_and_elsewhere_need_a_restart() {
        let base = params(("", ""));
        let pg3 = "[[node]]\nname = \"pg3\"\nhost = \"172.20.0.12\"";
        let added = diff(&base, &params((pg3, &format!("{pg3}\n\n[[node]]\nname = \"pg4\"\nhost = \"172.20.0.13\""))));
        assert_eq!((added.live, added.restart), (vec!["[[node]] pg4 (added)".to_owned()], vec![]));
        let removed = diff(&base, &params((pg3, "")));
        assert_eq!((removed.live, removed.restart), (vec!["[[node]] pg3 (removed)".to_owned()], vec![]));
        let pg2 = "[[node]]\nname = \"pg2\"\nhost = \"172.20.0.11\"";
        let in_the_middle = diff(&base, &params((pg2, "")));
        assert_eq!(in_the_middle.restart, ["[[node]] list (removed pg2, not at the end of the list)"]);
        let inserted = diff(&base, &params((pg2, &format!("[[node]]\nname = \"pg4\"\nhost = \"172.20.0.13\"\n\n{pg2}"))));
        assert_eq!(inserted.restart, ["[[node]] list (added pg4, not at the end of the list)"]);
        let swapped = LAB.replacen("name = \"pg2\"", "name = \"tmp\"", 1).replacen("name = \"pg3\"", "name = \"pg2\"", 1).replacen("name = \"tmp\"", "name = \"pg3\"", 1);
        let moved = diff(&base, &params((LAB, &swapped)));
        assert_eq!(moved.restart, ["[[node]] list (reordered, not at the end of the list)"]);
    }

    #[test]
    fn a_new_key_file_content_is_a_change() {
        let base = params(("", ""));
        let mut new = params(("", ""));
        if let VipSide::Vrrp(v) = &mut new.vip {
            v.reports.as_mut().expect("reports").key = Key::new(b"another key of 16".to_vec());
        }
        assert_eq!(diff(&base, &new).restart, ["[vrrp] key_file"]);
    }
}
