//! The PostgreSQL and partial-failure scenarios: each one's fault, one function per scenario
//! ([`super::scenario::Scenario::kind`] names it), and what is checked while the cluster
//! recovers from a failover ([`recover`]).
//!
//! | scenario | fault | expected |
//! |---|---|---|
//! | `primary-crash` | `kill -9` of pg1's postmaster; pg1 restarted once the failover is seen | failover; pg1 `needs-rejoin`, unrouted, rejoined by pglb itself |
//! | `primary-hang` | `SIGSTOP` of every process in `pgha-pg1` until the failover is seen | as `primary-crash` |
//! | `primary-host-down` | pg1's link down until the failover is seen | as `primary-crash` |
//! | `primary-isolated` | pg1 cut from lb1 and lb2 for 5 s, still streaming to the standbys | no failover |
//! | `primary-isolated-standbys` | pg1 cut from pg2 and pg3 for 5 s | no failover; writes wait (synchronous replication) |
//! | `standby-crash` | `kill -9` of pg3's postmaster | pg3 leaves the readers |
//! | `switchover` | `pglb switchover --to pg2` under load | no write lost |
//! | `lb-cut-from-primary` | lb1 (VIP holder) cut from pg1 only for 6 s | lb2 takes the VIP within 2 s; writes go on; no failover (lb2 keeps the VIP after the heal: no preemption of a healthy master) |
//! | `lb-partition` | lb1 and lb2 cut from each other (both VRRP masters), then `kill -9` of pg1 | one promotion target; exactly one primary |
//! | `lb-kill-then-failover` | `kill -9` of lb1's pglb, then `kill -9` of pg1, pg1 restarted, clients re-ARP | lb1's data plane opens no flow after its lease ran out; no write on pg1 |
//! | `restart-with-stale-primary` | pg1 crash and failover; both pglb killed; pg1 restarted without a rejoin while the writer is out of the load balancers' sight; both pglb restarted | pg1 never gets a write; writes resume once the writer is seen |
//! | `cascade` | `kill -9` of pg1's postmaster; once the failover is seen and the other standby streams from the winner, `kill -9` of the winner's postmaster (pg1 still down) | the last standby promoted (it alone could acknowledge the winner's commits); pg1 and the first winner restarted once it is, fenced and rejoined by pglb (writes wait for a synchronous standby until then); the write RTO is the second loss's |
//! | `switchover-probe-blip` | `pglb switchover --to pg2`; lb1 cut from pg2 for 1.5 s while pg1 is demoted | exactly one writer afterwards; no write lost |
//! | the trust drills ([`super::trust`]: `forged-report`, `forged-advert`, `lb-freeze`, `lb-restart-stale-view`, `state-write-fails`, `main-loop-hang`, `lb-return`) | see that module | see that module |
//! | `syn-flood` ([`super::flood`], not injected here) | two hping3 `-S --flood --rand-source` from `pgha-client` against VIP:3000 and VIP:3001 for 10 s, under pgbench with persistent connections and one idle session | no established flow broken; the idle session answers afterwards; 0 failed pgbench transactions; new connections succeed during the flood; flood end → first new connection ≤ 1 s on both ports |
//!
//! lb1 and lb2 are the VIP's home and its peer in the lab topology ([`home_and_peer`]). Each
//! fault function returns the fault's time (µs since the epoch) once the scenario's outcome is
//! reached (failover done, or the hold time over), and fills in what the scenario measures on
//! the way.

use std::{
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{
    Drill, HOLD_CUT, PRIMARY, REJOIN_LIMIT,
    lb as drill_lb,
    measure::Line,
    now_us, promotions,
    report::RunResult,
    plan::Recovery,
};
use crate::{
    lab::{
        fault::Cut,
        lb as lab_lb,
        pglb_json,
        postgres::wait_for,
        topology::{Host, VIP, home_and_peer, host, load_balancers},
    },
    sh,
};

/// How long a cut that must not cause a failover is held.
const HOLD: Duration = Duration::from_secs(5);

pub(super) fn kill_postmaster(d: &Drill, node: &str) -> Result<()> {
    let pid = d.postmaster_pid(node)?;
    // SAFETY: kill has no memory preconditions; pid is the node's postmaster.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        bail!("kill -9 {pid} ({node}'s postmaster): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn signal_all(pids: &[i32], sig: libc::c_int) {
    for pid in pids {
        // SAFETY: kill has no memory preconditions; these are one namespace's processes.
        unsafe {
            libc::kill(*pid, sig);
        }
    }
}

pub(super) fn kill_pglb(lb: &'static Host) -> Result<()> {
    let pid = drill_lb::pglb_pid(lb)?;
    // SAFETY: as above; the pid of pglb in the host's namespace.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        bail!("kill -9 {pid} (pglb on {}): {}", lb.name, std::io::Error::last_os_error());
    }
    wait_for(Duration::from_secs(5), &format!("pglb on {} to exit", lb.name), || Ok(!lab_lb::running(lb)))
}

/// `primary-crash`: `kill -9` of pg1's postmaster; over once writes are acknowledged by a new
/// primary. pg1 stays down until [`recover`] starts it (a restarted host).
pub(super) fn primary_crash(d: &Drill, wlog: &Path, _r: &mut RunResult) -> Result<u128> {
    let at = now_us();
    kill_postmaster(d, PRIMARY)?;
    d.wait_failover(at, wlog)?;
    Ok(at)
}

/// `primary-hang`: every process in pg1's namespace stopped until the failover is seen, then
/// continued (a hung host that comes back by itself).
pub(super) fn primary_hang(d: &Drill, wlog: &Path, _r: &mut RunResult) -> Result<u128> {
    let pids = crate::lab::net::namespace_pids(&host(PRIMARY)?.ns())?;
    let at = now_us();
    signal_all(&pids, libc::SIGSTOP);
    let waited = d.wait_failover(at, wlog);
    signal_all(&pids, libc::SIGCONT);
    waited?;
    Ok(at)
}

/// `primary-host-down`: pg1's link down until the failover is seen, then up again.
pub(super) fn primary_host_down(d: &Drill, wlog: &Path, _r: &mut RunResult) -> Result<u128> {
    let ns = host(PRIMARY)?.ns();
    let at = now_us();
    sh::run(&mut sh::cmd("ip", ["-n", &ns, "link", "set", "eth0", "down"]))?;
    let waited = d.wait_failover(at, wlog);
    sh::run(&mut sh::cmd("ip", ["-n", &ns, "link", "set", "eth0", "up"]))?;
    waited?;
    Ok(at)
}

/// `primary-isolated`: pg1 cut from every load balancer for [`HOLD`], still streaming to the
/// standbys (rule 2 holds the failover back).
pub(super) fn primary_isolated(d: &Drill, wlog: &Path, _r: &mut RunResult) -> Result<u128> {
    isolate_pg1(d, wlog, &load_balancers().collect::<Vec<_>>())
}

/// `primary-isolated-standbys`: pg1 cut from both standbys for [`HOLD`], still reachable from
/// the load balancers (commits wait for a standby).
pub(super) fn primary_isolated_standbys(d: &Drill, wlog: &Path, _r: &mut RunResult) -> Result<u128> {
    isolate_pg1(d, wlog, &[host("pg2")?, host("pg3")?])
}

/// Cuts pg1 from `peers` for [`HOLD`], then waits for writes to flow again before the
/// measurement window closes.
fn isolate_pg1(d: &Drill, wlog: &Path, peers: &[&Host]) -> Result<u128> {
    let pg1 = host(PRIMARY)?;
    let at = now_us();
    let cuts: Vec<Cut> = peers.iter().map(|p| Cut::host_from_addr(&format!("iso_{}", p.name), pg1, p.addr)).collect::<Result<_>>()?;
    thread::sleep(HOLD);
    for c in cuts {
        c.heal()?;
    }
    d.wait_writes(now_us().saturating_sub(500_000).max(at), wlog, "writes to be acknowledged again after the cut")?;
    Ok(at)
}

/// `standby-crash`: `kill -9` of pg3's postmaster; over once pglb routes it nowhere. [`recover`]
/// starts it again.
pub(super) fn standby_crash(d: &Drill, _wlog: &Path, _r: &mut RunResult) -> Result<u128> {
    let at = now_us();
    kill_postmaster(d, "pg3")?;
    wait_for(Duration::from_secs(15), "pg3 to be taken out of the readers", || {
        Ok(d.status()?.iter().any(|s| s.node == "pg3" && s.routed == "-"))
    })?;
    thread::sleep(Duration::from_secs(1));
    Ok(at)
}

/// `switchover`: `pglb switchover --to pg2` on lb1 under load; records what it printed (the
/// write pause).
pub(super) fn switchover(d: &Drill, _wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, _) = home_and_peer();
    let at = now_us();
    let out = d.pglb_cmd(&["switchover", "--to", "pg2", "--config", &d.config_of(lb1)])?;
    r.switchover_output = Some(out.trim().to_owned());
    Ok(at)
}

/// `lb-cut-from-primary`: lb1 (the VIP holder) cut from pg1 only for [`HOLD_CUT`]; lb2 must take
/// the VIP within 2 s and writes go on through it. Recovery is measured up to the heal.
pub(super) fn lb_cut_from_primary(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let at = now_us();
    let cut = Cut::host_from_addr("lb1_pg1", lb1, host(PRIMARY)?.addr)?;
    let moved = wait_for(Duration::from_secs(10), "lb2 to take the VIP from lb1", || Ok(lab_lb::holds_vip(lb2)? && !lab_lb::holds_vip(lb1)?));
    r.vip_moved_ms = moved.is_ok().then(|| (now_us() - at) as f64 / 1000.0);
    if let Err(e) = moved {
        r.failures.push(format!("{e:#}"));
    } else if r.vip_moved_ms.is_some_and(|m| m > 2000.0) {
        r.failures.push(format!("the VIP moved after {:.0} ms (goal: within 2 s)", r.vip_moved_ms.unwrap_or_default()));
    }
    d.wait_writes(at, wlog, "writes through lb2 after the VIP moved")?;
    thread::sleep(HOLD_CUT.saturating_sub(Duration::from_micros((now_us() - at) as u64)));
    // Recovery is measured up to the heal: lb1 taking the VIP back later is another move, not
    // this fault's.
    r.healed_at_us = Some(now_us());
    cut.heal()?;
    // lb1 reaches pg1 again and stays backup: a healthy master (lb2) is not preempted; the drill
    // brings the VIP home before the next run.
    wait_for(Duration::from_secs(15), "exactly one load balancer to hold the VIP once lb1 reaches pg1 again", || {
        Ok(lab_lb::holds_vip(lb1)? != lab_lb::holds_vip(lb2)?)
    })?;
    Ok(at)
}

/// `lb-partition`: lb1 and lb2 cut from each other until both are VRRP masters, then `kill -9`
/// of pg1; the cut heals 2 s after the kill. pg1 stays down until [`recover`] starts it.
pub(super) fn lb_partition(d: &Drill, wlog: &Path, _r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let cut = Cut::between("lb1_lb2", lb1, lb2)?;
    wait_for(Duration::from_secs(10), "both load balancers to be VRRP master (both hold the VIP)", || {
        Ok(lab_lb::holds_vip(lb1)? && lab_lb::holds_vip(lb2)?)
    })?;
    thread::sleep(Duration::from_millis(500));
    let at = now_us();
    kill_postmaster(d, PRIMARY)?;
    let waited = d.wait_failover(at, wlog);
    thread::sleep(Duration::from_secs(2));
    cut.heal()?;
    waited?;
    wait_for(Duration::from_secs(15), "lb1 alone to hold the VIP once they hear each other", || {
        Ok(lab_lb::holds_vip(lb1)? && !lab_lb::holds_vip(lb2)?)
    })?;
    Ok(at)
}

/// `lb-kill-then-failover`: `kill -9` of lb1's pglb; once lb2 holds the VIP and lb1's lease ran
/// out, `kill -9` of pg1, which comes back (a restarted host) while clients look the VIP up
/// again: lb1's data plane, still holding the old writer, must open no flow. lb1's pglb is
/// started again at the end (it comes back as backup).
pub(super) fn lb_kill_then_failover(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    kill_pglb(lb1)?;
    wait_for(Duration::from_secs(10), "lb2 to take the VIP", || lab_lb::holds_vip(lb2))?;
    wait_for(Duration::from_secs(10), "lb1's lease to run out", || pglb_json::lease_expired(&d.map_dump(lb1)?))?;
    let flows_before = d.reason_count(lb1, "tx_new_flow")?;
    let at = now_us();
    kill_postmaster(d, PRIMARY)?;
    d.wait_failover(at, wlog)?;
    // The old primary comes back (a restarted host) while lb1's data plane still holds the old
    // writer: clients that look the VIP up again must never get there.
    d.start_node(PRIMARY)?;
    let client = host("client")?;
    for _ in 0..15 {
        sh::run(&mut sh::cmd("ip", ["-n", &client.ns(), "neigh", "flush", "to", VIP]))?;
        thread::sleep(Duration::from_millis(200));
    }
    r.old_lb_new_flows = Some(d.reason_count(lb1, "tx_new_flow")? - flows_before);
    if r.old_lb_new_flows != Some(0) {
        r.failures.push(format!("lb1's data plane opened {} flows after its lease ran out", r.old_lb_new_flows.unwrap_or_default()));
    }
    // lb1 comes back as backup (lb2, a healthy master, keeps the VIP); the drill brings the VIP
    // home once the cluster is healthy again. Recovery is measured up to here.
    r.healed_at_us = Some(now_us());
    lab_lb::start(lb1, &lab_lb::stable_binary()).context("restarting pglb on lb1")?;
    wait_for(Duration::from_secs(10), "pglb on lb1 to run again", || Ok(lab_lb::running(lb1)))?;
    Ok(at)
}

/// `restart-with-stale-primary`: pg1 crashes and fails over; both pglb are killed; with the new
/// writer out of both load balancers' sight, pg1 is started as it was (a primary on its old
/// timeline) and both pglb again: their state files must keep pg1 fenced and unrouted.
pub(super) fn restart_with_stale_primary(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let at = now_us();
    kill_postmaster(d, PRIMARY)?;
    d.wait_failover(at, wlog)?;
    let winner = d.writer().context("no writer after the failover")?;
    let winner_host = host(&winner)?;
    kill_pglb(lb1)?;
    kill_pglb(lb2)?;
    // The writer out of sight of both load balancers while they restart, and the old primary
    // back as a primary on its old timeline.
    let cuts = [
        Cut::host_from_addr("lb1_winner", lb1, winner_host.addr)?,
        Cut::host_from_addr("lb2_winner", lb2, winner_host.addr)?,
    ];
    d.start_node(PRIMARY)?;
    let pglb = lab_lb::stable_binary();
    lab_lb::start(lb1, &pglb)?;
    lab_lb::start(lb2, &pglb)?;
    wait_for(Duration::from_secs(10), "lb1 to hold the VIP again", || Ok(lab_lb::holds_vip(lb1)? && lab_lb::running(lb1)))?;
    thread::sleep(Duration::from_secs(3));
    let rows = d.status_of(lb1)?;
    let pg1_row = rows.iter().find(|s| s.node == PRIMARY).context("pg1 in pglb status")?;
    if pg1_row.routed != "-" || pg1_row.state != "needs-rejoin" {
        r.failures.push(format!("after the restart pg1 is {} and routed {} (expected needs-rejoin, unrouted)", pg1_row.state, pg1_row.routed));
    }
    for c in cuts {
        c.heal()?;
    }
    d.wait_writes(now_us(), wlog, &format!("writes through {winner} once it is in sight again"))?;
    Ok(at)
}

/// `cascade`: `kill -9` of pg1's postmaster, the failover, then, once the other standby streams
/// from the winner and with pg1 still down (inside the healing window), `kill -9` of the
/// winner's postmaster. Over once the last standby acknowledges writes; the fault's time is the
/// second kill's (issue 22: two primary losses in a row).
pub(super) fn cascade(d: &Drill, wlog: &Path, _r: &mut RunResult) -> Result<u128> {
    let first_at = now_us();
    kill_postmaster(d, PRIMARY)?;
    d.wait_failover(first_at, wlog)?;
    let first = d.writer().context("no writer after the first failover")?;
    let last = ["pg2", "pg3"].into_iter().find(|n| *n != first).context("the first winner is not a standby of the lab")?;
    wait_for(Duration::from_secs(10), &format!("{last} to stream from {first}"), || Ok(d.streaming_from(&first).iter().any(|n| n == last)))?;
    let at = now_us();
    println!("drill: cascade: pg1 -> {first} in {:.0} ms; now kill -9 of {first}, {last} the last standby", (at - first_at) as f64 / 1000.0);
    kill_postmaster(d, &first)?;
    // Both crashed hosts come back once pglb has promoted the last standby (sooner, the first
    // winner would answer again as the writer before any failover): with synchronous commit,
    // writes on it wait for a standby, and pglb rejoins both under it.
    wait_for(super::RECOVERY_LIMIT, &format!("pglb to route writes to {last}"), || Ok(d.writer().as_deref() == Some(last)))?;
    println!("drill: cascade: {last} promoted {:.0} ms after the second kill; pg1 and {first} restarted", (now_us() - at) as f64 / 1000.0);
    d.start_node(PRIMARY)?;
    d.start_node(&first)?;
    wait_for(super::RECOVERY_LIMIT, &format!("writes acknowledged by {last}, the last standby"), || {
        Ok(super::measure::read_client_log(wlog)?.iter().any(|l| l.ok && l.sent_us > at && l.node == super::addr_of(last)))
    })?;
    Ok(at)
}

/// `switchover-probe-blip`: `pglb switchover --to pg2` on lb1, and lb1 cut from pg2 for 1.5 s
/// while it demotes pg1: the switchover must wait the blip out rather than leave no writer.
pub(super) fn switchover_probe_blip(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, _) = home_and_peer();
    let log = lab_lb::log_path(lb1);
    let start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let pglb = d.pglb.clone();
    let config = d.config_of(lb1);
    let at = now_us();
    let switchover = thread::spawn(move || {
        let mut c = sh::cmd(pglb.to_str().unwrap(), ["switchover", "--to", "pg2", "--config", &config]);
        c.env("PGLB_LOG", "warn");
        match sh::output(&mut c) {
            Ok(o) => o.trim().to_owned(),
            Err(e) => format!("{e:#}"),
        }
    });
    wait_for(Duration::from_secs(15), "lb1 to run the demote command", || {
        let text = std::fs::read(&log).unwrap_or_default();
        Ok(String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default()).contains("demote: running the demote command"))
    })?;
    let cut = Cut::host_from_addr("lb1_pg2", lb1, host("pg2")?.addr)?;
    thread::sleep(Duration::from_millis(1500));
    cut.heal()?;
    let out = switchover.join().map_err(|_| anyhow::anyhow!("the switchover thread panicked"))?;
    r.switchover_output = Some(out);
    d.wait_writes(now_us(), wlog, "writes to be acknowledged after the blip")?;
    Ok(at)
}

/// What a scenario checks while the cluster comes back ([`Recovery`]): after a failover the
/// other standby follows the winner, the old primary is fenced and then rejoined by pglb
/// itself; a crashed standby is restarted.
#[expect(clippy::too_many_arguments, reason = "the run's facts, passed through")]
pub fn recover(
    d: &Drill,
    recovery: Recovery,
    run: i32,
    fault_at: u128,
    winner: &str,
    logs: &[(PathBuf, u64)],
    run_lines: &[Line],
    r: &mut RunResult,
) -> Result<()> {
    r.promotions = promotions(logs);
    match recovery {
        Recovery::Failover { restart_pg1, one_promotion_target } if r.failover => {
            let other = ["pg2", "pg3"].into_iter().find(|n| *n != winner).expect("two standbys");
            let follows = wait_for(Duration::from_secs(20), &format!("{other} to stream from {winner}"), || {
                Ok(d.streaming_from(winner).iter().any(|n| n == other))
            });
            r.standbys_follow = Some(follows.is_ok());
            // A killed pg1 comes back (a restarted host); a hung or unplugged one is back
            // already. (pglb may be rewinding it by now: start_node leaves a running one alone.)
            if restart_pg1 {
                d.start_node(PRIMARY)?;
            }
            r.fenced_ok = Some(d.old_primary_fenced(run, winner, logs, run_lines, fault_at)?);
            if r.fenced_ok == Some(false) {
                r.failures.push("the returning old primary was not fenced".into());
            }
            // pglb rejoins it by itself (rejoin_command): no operator step.
            let back = wait_for(REJOIN_LIMIT, "pg1 to stream from the new primary, rejoined by pglb", || {
                Ok(d.streaming_from(winner).iter().any(|n| n == PRIMARY))
            });
            match back {
                Ok(()) => r.rejoin_ms = Some((now_us() - fault_at) as f64 / 1000.0),
                Err(e) => r.failures.push(format!("{e:#}")),
            }
            if one_promotion_target {
                check_one_promotion_target(r);
            }
        }
        Recovery::Cascade if r.failover => {
            if r.promotions.len() < 2 {
                r.failures.push(format!("two promotions expected, the logs show {:?}", r.promotions));
            }
            let first = ["pg2", "pg3"].into_iter().find(|n| *n != winner).expect("two standbys");
            let back = wait_for(REJOIN_LIMIT, &format!("pg1 and {first} to stream from {winner}, rejoined by pglb"), || {
                let streaming = d.streaming_from(winner);
                Ok([PRIMARY, first].iter().all(|n| streaming.iter().any(|s| s == n)))
            });
            match back {
                Ok(()) => r.rejoin_ms = Some((now_us() - fault_at) as f64 / 1000.0),
                Err(e) => r.failures.push(format!("{e:#}")),
            }
        }
        Recovery::RestartStandby => d.start_node("pg3")?,
        Recovery::Failover { .. } | Recovery::Cascade | Recovery::Nothing => {}
    }
    Ok(())
}

/// Both masters of a partition promoted the same node, if they promoted at all.
fn check_one_promotion_target(r: &mut RunResult) {
    let mut targets: Vec<&str> = r.promotions.iter().filter_map(|p| p.rsplit(' ').next()).collect();
    targets.sort_unstable();
    targets.dedup();
    if targets.len() != 1 {
        r.failures.push(format!("the two masters promoted {} different nodes: {:?}", targets.len(), r.promotions));
    }
}
