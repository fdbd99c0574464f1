//! What the drills read from pglb's logs on the load balancers (decisions, promotions) and keep
//! of the lab's logs when a run ends in an error.

use std::{fs, path::PathBuf};

use super::{Scenario, now_us};
use crate::lab::{
    self,
    topology::{STATE_DIR, load_balancers},
};

/// Copies every lab host's pglb and PostgreSQL log, and the drill clients' logs, to a folder
/// that outlives `lab down`, for a run that ended in an error.
pub(super) fn keep_logs(scenario: Scenario) -> Option<PathBuf> {
    let dest = PathBuf::from(format!("/tmp/pglb-drill-{scenario}-{}", now_us() / 1_000_000));
    fs::create_dir_all(&dest).ok()?;
    for h in lab::topology::HOSTS {
        for name in ["postgres.log", "pglb.log"] {
            let src = h.dir().join(name);
            if src.exists() {
                let _ = fs::copy(&src, dest.join(format!("{}-{name}", h.name)));
            }
        }
    }
    for entry in fs::read_dir(PathBuf::from(STATE_DIR).join("drill")).ok()?.flatten() {
        let _ = fs::copy(entry.path(), dest.join(entry.file_name()));
    }
    Some(dest)
}

/// Each load balancer's pglb log with its length now: where a run's lines start.
pub(super) fn log_marks() -> Vec<(PathBuf, u64)> {
    load_balancers()
        .map(|lb| {
            let p = lab::lb::log_path(lb);
            let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect()
}

/// pglb's decision lines on every load balancer since the run started: routing, failover,
/// fencing, tracking, rejoin, alerts, switchover.
pub(super) fn decision_lines(logs: &[(PathBuf, u64)]) -> Vec<String> {
    let keys = ["route:", "failover", "promot", "fence", "alert", "switchover", "demote", "re-point", "blocked", "writer", "does not answer", "tracking", "rejoin", "vrrp: state", "lease"];
    let mut out = Vec::new();
    for (path, start) in logs {
        let name = path.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = fs::read(path).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(*start as usize..).unwrap_or_default()).into_owned();
        out.extend(new.lines().filter(|l| keys.iter().any(|k| l.contains(k))).map(|l| format!("{name}: {}", l.chars().take(280).collect::<String>())).take(40));
    }
    out
}

/// `lbN promoted pgM` for every promotion any load balancer started since the run began.
pub(super) fn promotions(logs: &[(PathBuf, u64)]) -> Vec<String> {
    log_matches(logs, "failover: promoting ", "promoted")
}

/// `lbN promoted pgM` for every promotion any load balancer made since the run began: its
/// `pg_promote` done (`action done: promote pgM`), not only decided. (Since issue 18 a decided
/// promotion waits for the state file to record it, and is not made while it cannot.)
pub(super) fn promotions_made(logs: &[(PathBuf, u64)]) -> Vec<String> {
    log_matches(logs, "action done: promote ", "promoted")
}

/// `lbN VERB WORD` for every line of each log since its start offset that contains `key`, WORD
/// the word after it.
fn log_matches(logs: &[(PathBuf, u64)], key: &str, verb: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (path, start) in logs {
        let name = path.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = fs::read(path).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(*start as usize..).unwrap_or_default()).into_owned();
        for l in new.lines() {
            if let Some(rest) = l.split(key).nth(1) {
                out.push(format!("{name} {verb} {}", rest.split_whitespace().next().unwrap_or("?")));
            }
        }
    }
    out
}
