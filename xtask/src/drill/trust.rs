//! The trust drills (issue 18, "Trust only what can be proven"): forged control traffic, a
//! frozen, killed or hung control plane with a stale view, a state file that cannot be written,
//! and a load balancer that comes back under load. Each runs inside [`super::Drill::run_one`]
//! (writer and reader through the VIP, the common checks: acknowledged writes lost, split-brain
//! writes, exactly one primary at the end) and adds its own named checks
//! ([`RunResult::check`]), the writes' resumption after each step of the fault (limit
//! [`RESUME_LIMIT_MS`] wherever a healthy path exists) and new flows to a node below the floor
//! ([`FloorWatch`]).
//!
//! | scenario | fault | checks |
//! |---|---|---|
//! | `forged-report` | from 172.20.0.50, five `pglb-report 1 timeline=99 writer=-` with hping3 to lb1:3002 from lb2's address and port, and five to lb2 from lb1's; a genuine lb2 → lb1 report captured in `pgha-sw` and replayed five times to lb1 | each load balancer counts the forgeries as `malformed` or `bad_mac`, lb1 the replays as `replay` or `stale`; state.json's timeline unchanged on both; no peer shows timeline 99; no write gap over 2 s |
//! | `forged-advert` | raw VRRPv3 adverts at priority 254 from pgha-client every 100 ms: 1 s from a non-peer (172.20.0.50), 1 s from lb2's address with Max Adver Int 0, 5 s from lb2's address | lb1 holds the VIP throughout and lb2 never does; lb1's `pglb_vrrp_adverts_dropped_total` rises by `not_a_peer`, `bad_interval` and `unconfirmed` |
//! | `lb-freeze` | SIGSTOP of pglb on lb1 (the VIP holder); lb2 takes the VIP; `kill -9` of pg1, failover by lb2; pg1 restarted as it was (a primary on its old timeline); SIGCONT | lb2 took the VIP while lb1 was stopped; after SIGCONT lb1 opens 0 new flows to pg1, drops its stale VIP and does not take it back, and `pglb_loop_stalls_total` rose |
//! | `lb-restart-stale-view` | `kill -9` of pglb on lb1; failover by lb2; lb2 → lb1 UDP 3002 (peer reports) cut, and pg1 out of lb2's sight; pg1 restarted as it was; pglb on lb1 started again; the cuts healed after 6 s | while cut, lb1 holds no VIP, is not `ready` and opens 0 new flows to pg1; after the heal it becomes ready and stays backup |
//! | `state-write-fails` | lb1's state folder read-only (a read-only bind mount over itself), `kill -9` of pg1, held 6 s, then unmounted | lb1 makes no promotion while its writes fail, counts them (`pglb_state_write_errors_total`) and says `pglb_state_recorded 0`; writes stay refused or lb2 serves them; after the unmount exactly one promotion and writes within 2 s |
//! | `main-loop-hang` | `pglb debug stall-loop --for 5s` on lb1 (the VIP holder) | lb2 holds the VIP within 1 s; writes within 2 s; afterwards lb1 holds no VIP and `pglb_loop_stalls_total` rose |
//! | `lb-return` | SIGTERM to pglb on lb1 (the VIP moves to lb2); `pgbench -S -c 4 -T 20` through VIP:3000; pglb on lb1 started again 4 s in | pgbench: 0 failed transactions, no aborted client, no "Run was aborted"; lb1 comes back as backup (never holds the VIP) and ready; the drill clients see no error while it comes back |

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Drill, PRIMARY, addr_of,
    failover::{kill_pglb, kill_postmaster},
    flood::{Reaped, client_ns_cmd},
    flood_report::parse_pgbench,
    forge::{self, Advert, Udp},
    lb as drill_lb,
    logs::log_marks,
    measure::{self, read_client_log},
    metrics,
    now_us, promotions, promotions_made,
    report::{Resumed, RunResult},
    plan::Inject,
    watch::{Changes, FloorWatch, VipWatch, first, held_at, ms, throughout},
};
use crate::{
    lab::{
        fault::{Cut, ReadOnly, Stopped},
        lb as lab_lb,
        pglb_json,
        postgres::wait_for,
        topology::{APP_DB, APP_USER, Host, VIP, WRITE_PORT, client_pgpass, home_and_peer, host},
    },
    setup::PG_BIN,
    sh,
};

/// Writes must be acknowledged again this soon after each step of a fault that leaves a healthy
/// path (the "writes resumed within 2 s").
pub const RESUME_LIMIT_MS: f64 = 2000.0;
/// lb2 must hold the VIP this soon after lb1's main loop stops turning (its Master_Down_Interval
/// is ≈ 0.36 s).
const TAKEOVER_LIMIT_MS: f64 = 1000.0;
/// The UDP port pglb's peer reports use (`[vrrp] report_port`, its default in the lab configs).
const REPORT_PORT: u16 = 3002;
/// How long writes must flow without a failure before the next step of a fault.
const SETTLED: Duration = Duration::from_millis(500);
/// What a check of "the VIP did not move back" watches after the fault.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a returning lb1 may take to drop a stale VIP it finds on its interface.
const STALE_VIP_LIMIT_MS: f64 = 2000.0;
/// How long `lb-restart-stale-view` keeps lb2's reports from lb1.
const REPORT_CUT: Duration = Duration::from_secs(6);
/// How long `state-write-fails` keeps lb1's state folder read-only after the kill.
const READ_ONLY_HOLD: Duration = Duration::from_secs(6);
/// How long `main-loop-hang` stalls lb1's main loop.
const STALL: Duration = Duration::from_secs(5);
/// `lb-return`'s pgbench, and when lb1's pglb starts again.
const PGBENCH_SECONDS: u64 = 20;
const RETURN_AFTER: Duration = Duration::from_secs(4);
/// How many forged reports, replays and adverts of each kind are sent.
const FORGED_REPORTS: u32 = 5;
const ADVERTS_PER_SECOND: u32 = 10;

/// Runs one trust drill's fault (`inject`, one of the functions below) with the floor watched
/// throughout ([`FloorWatch`]), and records the check of new flows to a node below the floor;
/// returns the fault's time (µs since the epoch).
pub fn watching_floor(d: &Drill, wlog: &Path, r: &mut RunResult, inject: Inject) -> Result<u128> {
    thread::scope(|s| {
        let floor = FloorWatch::start(s, d);
        let at = inject(d, wlog, r);
        let f = floor.finish()?;
        if !f.nodes_below.is_empty() {
            let total: u64 = f.new_flows.values().sum();
            let detail = format!("{:?} below timeline {} over {} sampling intervals: new flows {:?}", f.nodes_below, f.floor, f.intervals_below, f.new_flows);
            if f.intervals_below == 0 {
                r.check("0 new flows to a node below the floor", false, format!("could not be evaluated: {detail} (below the floor in no two consecutive samples)"));
            } else {
                r.check("0 new flows to a node below the floor", total == 0, detail);
            }
        }
        r.below_floor = Some(f);
        at
    })
}

/// Records fault step → writes acknowledged again, for requests sent in `[from, until)`.
fn resumed(r: &mut RunResult, wlog: &Path, after: &str, from: u128, until: u128) -> Result<()> {
    let got = measure::resumed_ms(&read_client_log(wlog)?, from, until);
    r.check(
        &format!("writes acknowledged again within {RESUME_LIMIT_MS:.0} ms after {after}"),
        got.is_some_and(|m| m <= RESUME_LIMIT_MS),
        got.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "no write sent after it was acknowledged".into()),
    );
    r.resumed.push(Resumed { after: after.to_owned(), ms: got, limit_ms: RESUME_LIMIT_MS });
    Ok(())
}

/// Waits until writes sent after `from` flow cleanly again: one acknowledged after the last
/// failure, and nothing failed for [`SETTLED`] since. The next step of a fault starts only
/// then, so each step's resumption is measured on its own.
fn wait_writes_settled(wlog: &Path, from: u128, what: &str) -> Result<()> {
    wait_for(Duration::from_secs(30), what, || {
        let lines = read_client_log(wlog)?;
        let last_err = lines.iter().filter(|l| !l.ok && l.sent_us >= from).map(|l| l.sent_us).max().unwrap_or(from);
        let acked = lines.iter().any(|l| l.ok && l.sent_us > last_err);
        Ok(acked && now_us().saturating_sub(last_err) >= SETTLED.as_micros())
    })
}

/// The timeline in a load balancer's state file (read while pglb runs; the file is replaced
/// atomically).
fn state_timeline(lb: &Host) -> Result<u64> {
    let path = state_dir(lb).join("state.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    v["timeline"].as_u64().with_context(|| format!("no \"timeline\" in {}", path.display()))
}

/// `<root>/var/lib/pglb/<name>`: `[instance] state_dir` of the lab configs.
fn state_dir(lb: &Host) -> PathBuf {
    lab_lb::root(lb).join("var/lib/pglb").join(lb.name)
}

fn counter(lb: &Host, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    metrics::fetch(lb)?.counter(name, labels)
}

/// The rise of a counter summed over `reasons` between two scrapes.
fn rise(before: &metrics::Metrics, after: &metrics::Metrics, name: &str, reasons: &[&str]) -> Result<f64> {
    let sum = |m: &metrics::Metrics| -> Result<f64> { reasons.iter().map(|r| m.counter(name, &[("reason", r)])).sum() };
    Ok(sum(after)? - sum(before)?)
}

/// New flows a load balancer's data plane has opened to pg1 (`pglb map dump --json`).
fn pg1_flows(d: &Drill, lb: &Host) -> Result<u64> {
    let addr = format!("{}:5432", addr_of(PRIMARY));
    Ok(pglb_json::backend_new_flows(&d.map_dump(lb)?)?.get(&addr).copied().unwrap_or(0))
}

/// Makes pgha-client ask for the VIP's MAC again (a broadcast ARP request every host with the
/// address may answer), so a load balancer that wrongly answers would attract its connections.
fn flush_client_arp() -> Result<()> {
    sh::run(&mut sh::cmd("ip", ["-n", &host("client")?.ns(), "neigh", "flush", "to", VIP]))
}

/// Whether pg1 runs as a primary on a timeline older than another running primary's.
fn pg1_stale(d: &Drill) -> bool {
    let p = d.primaries();
    let newest = p.iter().map(|(_, tl)| *tl).max().unwrap_or(0);
    p.iter().any(|(n, tl)| n == PRIMARY && *tl < newest)
}

/// Restarts pg1 as it was (no rejoin) and waits until it runs as a primary on its old timeline.
fn restart_pg1_as_it_was(d: &Drill) -> Result<()> {
    d.start_node(PRIMARY)?;
    wait_for(Duration::from_secs(20), "pg1 to run again as a primary on its old timeline", || Ok(pg1_stale(d)))
}

/// Waits (up to 30 s) until pglb has rejoined pg1 (it answers as a standby), so that the floor
/// watch covers the whole time pg1 is below the floor; not rejoining is the recovery's finding.
fn wait_pg1_rejoined(d: &Drill) {
    let _ = wait_for(Duration::from_secs(30), "pg1 to be rejoined by pglb", || Ok(d.view(PRIMARY).is_some_and(|v| v.in_recovery)));
}

/// After lb1 came back at `back`: it dropped any stale VIP within [`STALE_VIP_LIMIT_MS`] and did
/// not hold it again until `end`, while lb2 held it from `since` to `end`.
fn check_lb1_stays_backup(r: &mut RunResult, vip: &std::collections::BTreeMap<&str, Changes>, since: u128, back: u128, end: u128, what: &str) {
    let (lb1, lb2) = home_and_peer();
    let (c1, c2) = (&vip[lb1.name], &vip[lb2.name]);
    let released = first(c1, false, back);
    let again = released.and_then(|t| first(c1, true, t)).filter(|t| *t <= end);
    let stale = if !held_at(c1, back) {
        "lb1 held no VIP when it came back".to_owned()
    } else {
        released.map(|t| format!("lb1 released its stale VIP {:.0} ms after it came back", ms(back, t))).unwrap_or_else(|| "lb1 never released its stale VIP".into())
    };
    let detail = format!(
        "{stale}, {} it again until {:.0} ms after its return; lb2 held it {}",
        if again.is_some() { "took" } else { "did not take" },
        ms(back, end),
        if throughout(c2, true, since, end) { "throughout".to_owned() } else { format!("not throughout (changes {:?})", rel(c2, since)) },
    );
    let ok = released.is_some_and(|t| ms(back, t) <= STALE_VIP_LIMIT_MS) && again.is_none() && throughout(c2, true, since, end);
    r.check(&format!("{what}: lb1 comes back as backup, lb2 keeps the VIP"), ok, detail);
}

/// Changes relative to `t0`, in ms, for messages.
fn rel(c: &[(u128, bool)], t0: u128) -> Vec<(i64, bool)> {
    c.iter().map(|(t, h)| ((*t as i128 - t0 as i128) as i64 / 1000, *h)).collect()
}

/// Waits until lb2 holds the VIP; returns when (µs), or records a failed check.
fn wait_lb2_takes(r: &mut RunResult, what: &str) -> Option<u128> {
    let (_, lb2) = home_and_peer();
    let moved = wait_for(Duration::from_secs(10), "lb2 to take the VIP", || lab_lb::holds_vip(lb2));
    let at = now_us();
    match moved {
        Ok(()) => Some(at),
        Err(e) => {
            r.check(what, false, format!("{e:#}"));
            None
        }
    }
}

/// `forged-report`: forged version-1 reports both ways and a replayed genuine one are dropped,
/// counted by reason, and believed nowhere (no state file or status shows timeline 99).
pub(super) fn forged_report(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let client = host("client")?;
    let timelines = [state_timeline(lb1)?, state_timeline(lb2)?];
    let before = [metrics::fetch(lb1)?, metrics::fetch(lb2)?];
    // What each load balancer shows of its peer while the forgeries arrive: a forged timeline
    // believed even for one report interval shows here (a genuine report replaces it 100 ms on).
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (at, sent, replayed, shown) = thread::scope(|s| -> Result<_> {
        let shown = s.spawn(|| {
            let mut seen: Vec<(&'static str, u64)> = Vec::new();
            let mut samples = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for lb in [lb1, lb2] {
                    if let Ok(p) = lab_lb::status_json(lb).and_then(|v| pglb_json::peer_timelines(&v.to_string())) {
                        samples += 1;
                        seen.extend(p.values().filter(|t| **t == 99).map(|t| (lb.name, *t)));
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            (samples, seen)
        });
        let attack = || -> Result<_> {
            let at = now_us();
            // The attack, both ways: a version-1 report of timeline 99 with no writer.
            let forged = b"pglb-report 1 timeline=99 writer=-";
            let mut sent = Vec::new();
            for (to, from) in [(lb1, lb2), (lb2, lb1)] {
                let u = Udp { src: from.addr, sport: REPORT_PORT, dst: to.addr, dport: REPORT_PORT, payload: forged };
                sent.push(forge::send_udp(client, &d.dir, &format!("forged-report-to-{}", to.name), &u, FORGED_REPORTS)?);
            }
            // A genuine report lb2 sent lb1, captured on the wire and replayed.
            let genuine = forge::capture_udp(lb2, lb1, REPORT_PORT, &d.dir, Duration::from_secs(5))?;
            println!("  captured lb2 -> lb1 report: {:?}", String::from_utf8_lossy(&genuine.payload).chars().take(160).collect::<String>());
            let u = Udp { src: lb2.addr, sport: genuine.sport, dst: lb1.addr, dport: REPORT_PORT, payload: &genuine.payload };
            let replayed = forge::send_udp(client, &d.dir, "replayed-report-to-lb1", &u, FORGED_REPORTS)?;
            // Ten report intervals for anything believed to show.
            thread::sleep(Duration::from_secs(1));
            Ok((at, sent, replayed))
        };
        let outcome = attack();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let shown = shown.join().map_err(|_| anyhow::anyhow!("the status sampler panicked"))?;
        let (at, sent, replayed) = outcome?;
        Ok((at, sent, replayed, shown))
    })?;
    let after = [metrics::fetch(lb1)?, metrics::fetch(lb2)?];
    for (i, lb) in [lb1, lb2].into_iter().enumerate() {
        let got = rise(&before[i], &after[i], "pglb_peer_reports_dropped_total", &["malformed", "bad_mac"]);
        r.check_with(
            &format!("{} drops the forged version-1 reports (malformed or bad_mac)", lb.name),
            got.map(|n| (n >= sent[i] as f64, format!("{n} counted for {} sent", sent[i]))),
        );
    }
    let got = rise(&before[0], &after[0], "pglb_peer_reports_dropped_total", &["replay", "stale"]);
    r.check_with("lb1 drops the replayed genuine report (replay or stale)", got.map(|n| (n >= replayed as f64, format!("{n} counted for {replayed} replayed"))));
    for (i, lb) in [lb1, lb2].into_iter().enumerate() {
        let now = state_timeline(lb);
        r.check_with(
            &format!("{}'s state.json timeline unchanged", lb.name),
            now.map(|t| (t == timelines[i], format!("{} before, {t} after", timelines[i]))),
        );
    }
    let (samples, seen) = shown;
    r.check(
        "no load balancer shows a peer on the forged timeline 99 during the attack",
        samples >= 10 && seen.is_empty(),
        format!("{samples} status samples of lb1 and lb2; timeline 99 shown in {} ({:?})", seen.len(), seen.iter().take(4).collect::<Vec<_>>()),
    );
    r.write_gap_limit_ms = Some(RESUME_LIMIT_MS);
    resumed(r, wlog, "the forged reports", at, now_us())?;
    Ok(at)
}

/// `forged-advert`: VRRP adverts at priority 254 from a non-peer, with interval 0, and in lb2's
/// name without its reports' confirmation move nothing and are counted by reason.
pub(super) fn forged_advert(_d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let client = host("client")?;
    let vip: std::net::Ipv4Addr = VIP.parse()?;
    let lb2_addr: std::net::Ipv4Addr = lb2.addr.parse()?;
    let spoof = Advert { src: lb2_addr, vrid: 51, priority: 254, max_advert_int_cs: 10, addresses: vec![vip] };
    let every = Duration::from_millis(100);
    let before = metrics::fetch(lb1)?;
    let watch = VipWatch::start()?;
    let at = now_us();
    let attacks = [
        ("not_a_peer", Advert { src: client.addr.parse()?, ..spoof.clone() }, ADVERTS_PER_SECOND),
        ("bad_interval", Advert { max_advert_int_cs: 0, ..spoof.clone() }, ADVERTS_PER_SECOND),
        ("unconfirmed", spoof, 5 * ADVERTS_PER_SECOND),
    ];
    let mut sent = Vec::new();
    for (reason, advert, count) in &attacks {
        sent.push((*reason, forge::send_adverts(client, advert, *count, every)?));
    }
    thread::sleep(Duration::from_secs(1));
    let end = now_us();
    let vip_seen = watch.finish()?;
    let after = metrics::fetch(lb1)?;
    r.check(
        "lb1 keeps the VIP throughout, lb2 never takes it",
        throughout(&vip_seen[lb1.name], true, at, end) && throughout(&vip_seen[lb2.name], false, at, end),
        format!("over {:.0} ms: lb1 {:?}, lb2 {:?} (ms, held)", ms(at, end), rel(&vip_seen[lb1.name], at), rel(&vip_seen[lb2.name], at)),
    );
    for (reason, n) in sent {
        let got = rise(&before, &after, "pglb_vrrp_adverts_dropped_total", &[reason]);
        r.check_with(&format!("lb1 counts the forged adverts as {reason}"), got.map(|g| (g >= f64::from(n), format!("{g} counted for {n} sent"))));
    }
    r.write_gap_limit_ms = Some(RESUME_LIMIT_MS);
    resumed(r, wlog, "the forged adverts", at, end)?;
    Ok(at)
}

/// `lb-freeze`: lb1 frozen while lb2 takes the VIP and fails over; resumed beside pg1 as it was,
/// lb1 wakes humble (no new flow to pg1, its stale VIP dropped, backup).
pub(super) fn lb_freeze(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let stalls = counter(lb1, "pglb_loop_stalls_total", &[]);
    let watch = VipWatch::start()?;
    let at = now_us();
    let frozen = Stopped::stop(drill_lb::pglb_pid(lb1)?, "pglb on lb1")?;
    let Some(taken) = wait_lb2_takes(r, "lb2 takes the VIP while lb1 is stopped") else { return Ok(at) };
    r.vip_moved_ms = Some(ms(at, taken));
    wait_writes_settled(wlog, at, "writes to flow through lb2 while lb1 is stopped")?;
    let killed = now_us();
    kill_postmaster(d, PRIMARY)?;
    d.wait_failover(killed, wlog)?;
    restart_pg1_as_it_was(d)?;
    let stale = pg1_stale(d);
    let flows = pg1_flows(d, lb1)?;
    let cont = now_us();
    frozen.resume()?;
    r.check("pg1 is a primary on its old timeline when lb1 resumes", stale, if stale { "yes" } else { "no: it was rejoined before SIGCONT" });
    // Clients ask for the VIP again and again: a resumed lb1 that answered would get them.
    let settle = Instant::now();
    while settle.elapsed() < SETTLE {
        flush_client_arp()?;
        thread::sleep(Duration::from_millis(200));
    }
    let end = now_us();
    let vip = watch.finish()?;
    // The sampler's time, not the poll's.
    let taken = first(&vip[lb2.name], true, at).unwrap_or(taken);
    r.vip_moved_ms = Some(ms(at, taken));
    r.check_with("lb1 opens 0 new flows to pg1 after SIGCONT", pg1_flows(d, lb1).map(|n| (n == flows, format!("{} new flows to pg1 on lb1 in {:.0} ms", n - flows, ms(cont, end)))));
    check_lb1_stays_backup(r, &vip, taken, cont, end, "after SIGCONT");
    check_stalls_rose(r, lb1, stalls);
    resumed(r, wlog, "lb1 stopped", at, killed)?;
    resumed(r, wlog, "pg1 killed", killed, cont)?;
    wait_pg1_rejoined(d);
    Ok(at)
}

/// `pglb_loop_stalls_total` on lb1 rose above `before` (waiting up to 5 s for the scrape).
fn check_stalls_rose(r: &mut RunResult, lb1: &Host, before: Result<f64>) {
    let outcome = before.map(|b| {
        let mut now = b;
        let _ = wait_for(Duration::from_secs(5), "pglb_loop_stalls_total on lb1 to rise", || {
            now = counter(lb1, "pglb_loop_stalls_total", &[])?;
            Ok(now > b)
        });
        (now > b, format!("{b} before, {now} after"))
    });
    r.check_with("lb1's pglb_loop_stalls_total rose", outcome);
}

/// `lb-restart-stale-view`: lb1 restarted after a failover it did not see, beside pg1 as it was
/// and without lb2's reports: holds no VIP, is not ready and opens no flow to pg1 until it hears
/// lb2, then stays backup.
pub(super) fn lb_restart_stale_view(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let at = now_us();
    kill_pglb(lb1)?;
    let Some(taken) = wait_lb2_takes(r, "lb2 takes the VIP after lb1's pglb was killed") else { return Ok(at) };
    r.vip_moved_ms = Some(ms(at, taken));
    wait_writes_settled(wlog, at, "writes to flow through lb2 after lb1's pglb was killed")?;
    let killed = now_us();
    kill_postmaster(d, PRIMARY)?;
    d.wait_failover(killed, wlog)?;
    let cut = Cut::udp_to_port("lb2_reports_to_lb1", lb1, lb2.addr, REPORT_PORT)?;
    // pg1 out of lb2's sight while the reports are cut, so that lb2 (the master) does not
    // rejoin it at once: lb1 starts beside a primary on the old timeline, its state file's
    // last writer.
    let hidden = Cut::host_from_addr("lb2_pg1", lb2, host(PRIMARY)?.addr)?;
    restart_pg1_as_it_was(d)?;
    let watch = VipWatch::start()?;
    let flows = pg1_flows(d, lb1)?;
    let started = now_us();
    lab_lb::start(lb1, &lab_lb::stable_binary())?;
    let mut ready: Vec<Result<bool>> = Vec::new();
    let t = Instant::now();
    while t.elapsed() < REPORT_CUT {
        ready.push(lab_lb::status_json(lb1).and_then(|v| pglb_json::status_ready(&v.to_string())));
        flush_client_arp()?;
        thread::sleep(Duration::from_millis(250));
    }
    let flows_cut = pg1_flows(d, lb1);
    let stale = pg1_stale(d);
    let healed = now_us();
    cut.heal()?;
    hidden.heal()?;
    r.check("pg1 is a primary on its old timeline until the cut heals", stale, if stale { "yes" } else { "no: it was rejoined during the cut" });
    let became_ready = wait_for(Duration::from_secs(10), "lb1 to be ready once lb2's reports reach it", || {
        Ok(lab_lb::status_json(lb1).and_then(|v| pglb_json::status_ready(&v.to_string())).unwrap_or(false))
    });
    let ready_at = now_us();
    thread::sleep(SETTLE);
    let end = now_us();
    let vip = watch.finish()?;

    let c1 = &vip[lb1.name];
    let released = first(c1, false, started);
    let held_again = released.and_then(|t| first(c1, true, t)).filter(|t| *t <= healed);
    r.check(
        "while lb2's reports are cut lb1 holds no VIP",
        released.is_some_and(|t| ms(started, t) <= STALE_VIP_LIMIT_MS) && held_again.is_none(),
        format!("lb1 {:?} (ms from its start, held)", rel(c1, started)),
    );
    let answered: Vec<bool> = ready.iter().filter_map(|x| x.as_ref().ok().copied()).collect();
    let errors: Vec<String> = ready.iter().filter_map(|x| x.as_ref().err().map(|e| format!("{e:#}"))).take(1).collect();
    r.check(
        "while lb2's reports are cut lb1 is not ready",
        answered.len() >= 5 && answered.iter().all(|b| !b),
        format!("{} of {} status samples answered, ready in {}{}", answered.len(), ready.len(), answered.iter().filter(|b| **b).count(), errors.first().map(|e| format!("; first error: {e}")).unwrap_or_default()),
    );
    r.check_with("while lb2's reports are cut lb1 opens 0 new flows to pg1", flows_cut.map(|n| (n == flows, format!("{} new flows", n - flows))));
    r.check(
        "lb1 is ready within 10 s of the heal",
        became_ready.is_ok(),
        if became_ready.is_ok() { format!("after {:.0} ms", ms(healed, ready_at)) } else { "not within 10 s".into() },
    );
    check_lb1_stays_backup(r, &vip, taken.max(started), started, end, "after its restart");
    resumed(r, wlog, "lb1's pglb killed", at, killed)?;
    resumed(r, wlog, "pg1 killed", killed, started)?;
    wait_pg1_rejoined(d);
    Ok(at)
}

/// `state-write-fails`: lb1's state folder read-only across pg1's crash: lb1 promotes nothing it
/// cannot record and says so in its metrics; once writable, exactly one promotion.
pub(super) fn state_write_fails(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let logs = log_marks();
    let errors = counter(lb1, "pglb_state_write_errors_total", &[]);
    let ro = ReadOnly::mount(&state_dir(lb1))?;
    let at = now_us();
    kill_postmaster(d, PRIMARY)?;
    let mut recorded: Vec<Result<f64>> = Vec::new();
    let mut promoted: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let t = Instant::now();
    while t.elapsed() < READ_ONLY_HOLD {
        recorded.push(metrics::fetch(lb1).and_then(|m| m.gauge("pglb_state_recorded", &[])));
        promoted.extend(d.primaries().into_iter().map(|(n, _)| n).filter(|n| n != PRIMARY));
        thread::sleep(Duration::from_millis(250));
    }
    let decided = promotions(&logs);
    let during = promotions_made(&logs);
    let errors_after = counter(lb1, "pglb_state_write_errors_total", &[]);
    let unmounted = now_us();
    ro.release()?;
    let resumed_ok = wait_for(Duration::from_secs(30), "writes acknowledged by a new primary after the unmount", || {
        Ok(read_client_log(wlog)?.iter().any(|l| l.ok && l.sent_us > unmounted && l.node != addr_of(PRIMARY)))
    });
    thread::sleep(Duration::from_secs(1));
    let all = promotions_made(&logs);

    let by = |lb: &Host, p: &str| p.starts_with(&format!("{} ", lb.name));
    let lb1_during: Vec<&String> = during.iter().filter(|p| by(lb1, p)).collect();
    let lb2_promoted = during.iter().any(|p| by(lb2, p));
    r.check(
        "lb1 makes no promotion while its state cannot be written",
        lb1_during.is_empty() && (promoted.is_empty() || lb2_promoted),
        format!("promotions made while read-only: {during:?} (decided: {decided:?}); primaries seen then besides pg1: {promoted:?}"),
    );
    r.check_with(
        "lb1 counts its failed state writes",
        errors.and_then(|b| errors_after.map(|a| (a > b, format!("pglb_state_write_errors_total {b} before, {a} after")))),
    );
    let values: Vec<f64> = recorded.iter().filter_map(|x| x.as_ref().ok().copied()).collect();
    let last = recorded.last().map(|x| x.as_ref().map(|v| *v).map_err(|e| anyhow::anyhow!("{e:#}")));
    r.check_with(
        "lb1 says pglb_state_recorded 0 while its writes fail",
        match last {
            Some(Ok(v)) => Ok((v == 0.0, format!("last sample {v}; samples {values:?}"))),
            Some(Err(e)) => Err(e),
            None => Err(anyhow::anyhow!("no sample")),
        },
    );
    let served: Vec<String> = read_client_log(wlog)?.iter().filter(|l| l.ok && l.seq > 0 && l.sent_us > at && l.sent_us < unmounted && l.node != addr_of(PRIMARY)).map(|l| l.node.clone()).collect();
    r.check(
        "while read-only, writes stay refused or lb2 serves them",
        served.is_empty() || lb2_promoted,
        format!("{} writes acknowledged by another node while read-only; lb2 promoted: {lb2_promoted}", served.len()),
    );
    r.check("exactly one promotion once the state folder is writable again", all.len() == 1 && resumed_ok.is_ok(), format!("promotions {all:?}; writes {}", if resumed_ok.is_ok() { "resumed" } else { "did not resume" }));
    resumed(r, wlog, "the unmount", unmounted, now_us())?;
    // pg1 back as it was: fenced, never routed to (the floor watch and the fence check).
    restart_pg1_as_it_was(d)?;
    wait_pg1_rejoined(d);
    Ok(at)
}

/// `main-loop-hang`: lb1's main loop blocked (its other threads and XDP run on): lb2 takes the
/// VIP within 1 s and lb1 comes back as backup.
pub(super) fn main_loop_hang(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    let stalls = counter(lb1, "pglb_loop_stalls_total", &[]);
    let watch = VipWatch::start()?;
    let log = d.dir.join("stall-loop.log");
    let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let config = d.config_of(lb1);
    let secs = format!("{}s", STALL.as_secs());
    let mut cmd = sh::cmd(d.pglb.to_str().context("a UTF-8 path")?, ["debug", "stall-loop", "--for", &secs, "--config", &config]);
    cmd.stdin(std::process::Stdio::null()).stdout(out.try_clone()?).stderr(out).env("PGLB_LOG", "warn");
    let at = now_us();
    let mut stall = Reaped::spawn(&mut cmd, "pglb debug stall-loop on lb1")?;
    let stall_end = at + STALL.as_micros();
    let taken = wait_lb2_takes(r, "lb2 takes the VIP while lb1's main loop stalls");
    let status = stall.wait_until(STALL + Duration::from_secs(10))?;
    if !status.success() {
        r.check("pglb debug stall-loop stalls lb1's main loop", false, format!("it exited {status}: {}", fs::read_to_string(&log).unwrap_or_default().trim()));
    }
    if taken.is_none() {
        return Ok(at);
    }
    wait_for(STALL + Duration::from_secs(5), "the stall to end", || Ok(now_us() > stall_end))?;
    thread::sleep(SETTLE);
    let end = now_us();
    let vip = watch.finish()?;
    // The sampler's time, not the poll's.
    let taken = first(&vip[lb2.name], true, at).unwrap_or(end);
    r.vip_moved_ms = Some(ms(at, taken));
    r.check("lb2 holds the VIP within 1 s of the stall", ms(at, taken) <= TAKEOVER_LIMIT_MS, format!("after {:.0} ms", ms(at, taken)));
    check_lb1_stays_backup(r, &vip, taken, stall_end, end, "after the stall");
    check_stalls_rose(r, lb1, stalls);
    r.write_gap_limit_ms = Some(RESUME_LIMIT_MS);
    resumed(r, wlog, "the stall", at, end)?;
    Ok(at)
}

/// Creates pgbench's tables on pg1 once (`pgbench -i -s 1`), for `pgbench -S`.
fn pgbench_tables(d: &Drill) -> Result<()> {
    if d.sql(PRIMARY, "app", "SELECT to_regclass('pgbench_accounts') IS NOT NULL")? == "t" {
        return Ok(());
    }
    let mut c = crate::lab::net::ns_cmd(&host("client")?.ns(), &format!("{PG_BIN}/pgbench"), ["-h", addr_of(PRIMARY), "-U", APP_USER, "-i", "-s", "1", "-q", APP_DB]);
    c.env("PGPASSFILE", client_pgpass());
    sh::run(&mut c).context("pgbench -i on pg1")
}

/// `lb-return`: lb1 stopped gracefully and started again under pgbench: it comes back as
/// backup, and no client (pgbench or the drill writer) sees an error.
pub(super) fn lb_return(d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
    let (lb1, lb2) = home_and_peer();
    pgbench_tables(d)?;
    let watch = VipWatch::start()?;
    let pid = drill_lb::pglb_pid(lb1)?;
    let at = now_us();
    // SAFETY: kill(2) has no memory preconditions; the pid was just read from lb1's namespace.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        bail!("SIGTERM to pglb on lb1: {}", std::io::Error::last_os_error());
    }
    wait_for(Duration::from_secs(10), "pglb on lb1 to stop", || Ok(!lab_lb::running(lb1)))?;
    wait_for(Duration::from_secs(10), "lb2 alone to hold the VIP", || Ok(lab_lb::holds_vip(lb2)? && !lab_lb::holds_vip(lb1)?))?;
    let taken = now_us();
    r.vip_moved_ms = Some(ms(at, taken));
    let log = d.dir.join("lb-return-pgbench.log");
    let (secs, port) = (PGBENCH_SECONDS.to_string(), WRITE_PORT.to_string());
    let pgbench = format!("{PG_BIN}/pgbench");
    let mut cmd = client_ns_cmd(&pgbench, &["-h", VIP, "-p", &port, "-U", APP_USER, "-n", "-S", "-c", "4", "-j", "2", "-T", &secs, APP_DB], &log)?;
    cmd.env("PGPASSFILE", client_pgpass()).env("PGCONNECT_TIMEOUT", "5");
    let mut bench = Reaped::spawn(&mut cmd, "pgbench -S through VIP:3000")?;
    thread::sleep(RETURN_AFTER);
    let back = now_us();
    lab_lb::start(lb1, &lab_lb::stable_binary())?;
    let status = bench.wait_until(Duration::from_secs(PGBENCH_SECONDS + 20)).context("pgbench ran past its -T")?;
    let became_ready = wait_for(Duration::from_secs(10), "lb1 to be ready after its return", || {
        Ok(lab_lb::status_json(lb1).and_then(|v| pglb_json::status_ready(&v.to_string())).unwrap_or(false))
    });
    let end = now_us();
    let vip = watch.finish()?;
    let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let outcome = parse_pgbench(&text);
    let aborted_run = text.contains("Run was aborted");
    r.check_with(
        "pgbench through lb1's return: 0 failed transactions, no aborted client",
        outcome.map(|o| {
            (o.failed == 0 && o.aborted_clients == 0 && !aborted_run && o.transactions > 0 && status.success(), format!(
                "{} transactions, {} failed, {} clients aborted{}, exit {status}",
                o.transactions,
                o.failed,
                o.aborted_clients,
                if aborted_run { ", \"Run was aborted\"" } else { "" }
            ))
        }),
    );
    check_lb1_stays_backup(r, &vip, taken, back, end, "after its restart");
    r.check("lb1 is ready again within 10 s after pgbench", became_ready.is_ok(), became_ready.map(|()| "ready".to_owned()).unwrap_or_else(|e| format!("{e:#}")));
    let errors = read_client_log(wlog)?.iter().filter(|l| !l.ok && l.sent_us >= back).count();
    r.check("the drill writer sees no error while lb1 comes back", errors == 0, format!("{errors} failed writes"));
    r.write_gap_limit_ms = Some(RESUME_LIMIT_MS);
    resumed(r, wlog, "SIGTERM to lb1", at, back)?;
    Ok(at)
}
