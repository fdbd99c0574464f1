//! `cargo xtask drill syn-flood`: a SYN flood from random source addresses against VIP:3000
//! and VIP:3001 while established flows and new legitimate connections go through lb1.
//!
//! One run, from a healthy cluster:
//!
//! 1. pgbench starts in pgha-client through VIP:3000 with persistent connections (an INSERT
//!    per transaction into `drill_flood`, `-P 1`), for longer than the flood;
//! 2. the idle session (the drill client's `idle` mode) connects to VIP:3000 and then sends
//!    nothing;
//! 3. two connect-probes (`connect-probe` mode) open a NEW connection to VIP:3000 and to
//!    VIP:3001 every 100 ms (1 s limit, `SELECT 1`, close), from a second before the flood;
//! 4. two hping3 in pgha-client (`-S --flood --rand-source`, one per port) flood for [`FLOOD`]
//!    and are stopped with SIGINT;
//! 5. the probes go on until a connection sent after the flood succeeded on both ports (at
//!    most [`AFTER_LIMIT`]); the idle session then asks `SELECT pg_backend_pid()` on its
//!    connection; pgbench ends on its own.
//!
//! Measured: established flows broken (pgbench clients aborted, the idle session), pgbench's
//! failed transactions, each port's success rate and connect latency during the flood, flood
//! end → first new connection, the SYNs sent (hping3's own count, and pgha-client's eth0 tx
//! packets over the window, which include the legitimate traffic), and lb1's data-plane reason
//! counters that changed ([`flood_report`]). Every child process is killed on every error path
//! ([`Reaped`]).
//!
//! hping3 runs at nice 19: it still takes every idle cycle, but PostgreSQL, pgbench and the
//! probes on this one-kernel lab are not starved of CPU by the flood's user-space loop, so the
//! figures measure the load balancer and not the scheduler. The rate it reached is reported.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Drill, PRIMARY, Scenario,
    flood_report::{self, HpingSent, IdleOutcome, PortFigures, SynFlood, first_after, read_probe_log},
    now_us,
};
use crate::{
    lab::{
        net::ns_cmd,
        pglb_json,
        postgres::wait_for,
        topology::{APP_DB, APP_USER, Host, READ_PORT, VIP, WRITE_PORT, client_pgpass, home_lb, host},
    },
    setup::PG_BIN,
    sh,
};

/// How long the SYN flood lasts.
pub const FLOOD: Duration = Duration::from_secs(10);
/// After the flood, how long the probes may take to get a new connection through.
pub const AFTER_LIMIT: Duration = Duration::from_secs(10);
/// pgbench runs this long before the idle session and the probes start.
const PGBENCH_LEAD: Duration = Duration::from_secs(2);
/// The probes run this long before the flood (the "before" connect latency).
const BASELINE: Duration = Duration::from_secs(1);
/// pgbench goes on this long after the flood.
const PGBENCH_TAIL: Duration = Duration::from_secs(3);
/// pgbench must have exited this long after its `-T` ran out, or a connection of it hangs.
const PGBENCH_EXIT_LIMIT: Duration = Duration::from_secs(20);
/// The longest a probe attempt lives (1 s connect + 1 s `SELECT 1`) plus a margin: the probes
/// run at least this long after the flood, so every attempt sent during it has its line.
const PROBE_SETTLE: Duration = Duration::from_millis(2500);
/// How long the idle session may take to connect, and to answer after the flood (its own
/// statement limit is 5 s).
const IDLE_CONNECT_LIMIT: Duration = Duration::from_secs(5);
const IDLE_ANSWER_LIMIT: Duration = Duration::from_secs(7);
/// How long hping3 may take to exit after SIGINT.
const HPING_STOP_LIMIT: Duration = Duration::from_secs(5);
/// pgbench's persistent clients and threads.
const PGBENCH_CLIENTS: usize = 4;
const PGBENCH_THREADS: usize = 2;
/// The client host's interface the flood leaves through.
const CLIENT_IF: &str = "eth0";

/// A child process that is killed (SIGKILL) and reaped when dropped if it still runs, so no
/// flood, pgbench or client outlives an error.
pub(super) struct Reaped {
    child: Child,
    what: String,
}

impl Reaped {
    pub(super) fn spawn(cmd: &mut Command, what: &str) -> Result<Reaped> {
        let child = cmd.spawn().with_context(|| format!("starting {what}: `{}`", sh::display(cmd)))?;
        Ok(Reaped { child, what: what.to_owned() })
    }

    /// Its exit status if it has exited.
    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().with_context(|| format!("checking on {}", self.what))
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        // SAFETY: kill(2) has no memory preconditions; the pid is our own unreaped child's.
        if unsafe { libc::kill(self.child.id() as i32, sig) } != 0 {
            bail!("signalling {} ({}): {}", self.what, self.child.id(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `limit` for it to exit.
    pub(super) fn wait_until(&mut self, limit: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if start.elapsed() > limit {
                bail!("{} did not exit within {limit:?}", self.what);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A command in pgha-client with its stdout and stderr in `log` (created empty).
pub(super) fn client_ns_cmd(program: &str, args: &[&str], log: &Path) -> Result<Command> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut c = ns_cmd(&host("client")?.ns(), program, args);
    c.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    Ok(c)
}

/// The two hping3 SYN floods, one per VIP port.
struct Flood {
    procs: Vec<(u16, Reaped, PathBuf)>,
}

impl Flood {
    fn start(dir: &Path, run: u32) -> Result<Flood> {
        let mut procs = Vec::new();
        for port in [WRITE_PORT, READ_PORT] {
            let log = dir.join(format!("syn-flood-{run}-hping3-{port}.log"));
            let p = port.to_string();
            let mut cmd = client_ns_cmd("nice", &["-n", "19", "hping3", "-S", "-p", &p, "--flood", "--rand-source", VIP], &log)?;
            procs.push((port, Reaped::spawn(&mut cmd, &format!("hping3 against VIP:{port}"))?, log));
        }
        Ok(Flood { procs })
    }

    /// Fails with hping3's output if one of them has already exited (it could not flood).
    fn ensure_running(&mut self) -> Result<()> {
        for (port, p, log) in &mut self.procs {
            if let Some(status) = p.exited()? {
                let out = fs::read_to_string(&*log).unwrap_or_default();
                bail!("hping3 against VIP:{port} exited during the flood ({status}), so the flood did not happen as planned; its output:\n{}", out.trim());
            }
        }
        Ok(())
    }

    /// SIGINT to both, then what each said it sent.
    fn stop(mut self) -> Result<Vec<HpingSent>> {
        self.ensure_running()?;
        for (_, p, _) in &self.procs {
            p.signal(libc::SIGINT)?;
        }
        let mut sent = Vec::new();
        for (port, p, log) in &mut self.procs {
            p.wait_until(HPING_STOP_LIMIT)?;
            let out = fs::read_to_string(&*log).with_context(|| format!("reading {}", log.display()))?;
            let transmitted = flood_report::hping_transmitted(&out);
            if transmitted.is_none() {
                println!("drill: hping3 against VIP:{port} printed no \"packets transmitted\" line; its output: {}", out.trim());
            }
            sent.push(HpingSent { port: *port, transmitted });
        }
        Ok(sent)
    }
}

/// pgbench through VIP:3000 with persistent connections, its output in a file.
struct Pgbench {
    proc: Reaped,
    log: PathBuf,
    started: Instant,
    seconds: u64,
}

impl Pgbench {
    fn start(d: &Drill, run: u32) -> Result<Pgbench> {
        let script = d.dir.join("syn-flood.sql");
        fs::write(&script, "INSERT INTO drill_flood (client) VALUES (:client_id);\n").with_context(|| format!("writing {}", script.display()))?;
        let log = d.dir.join(format!("syn-flood-{run}-pgbench.log"));
        let seconds = (PGBENCH_LEAD + BASELINE + FLOOD + PGBENCH_TAIL).as_secs();
        let (c, j, t, port) = (PGBENCH_CLIENTS.to_string(), PGBENCH_THREADS.to_string(), seconds.to_string(), WRITE_PORT.to_string());
        let pgbench = format!("{PG_BIN}/pgbench");
        let mut cmd = client_ns_cmd(
            &pgbench,
            &["-h", VIP, "-p", &port, "-U", APP_USER, "-n", "-c", &c, "-j", &j, "-T", &t, "-P", "1", "-f", script.to_str().unwrap(), APP_DB],
            &log,
        )?;
        cmd.env("PGPASSFILE", client_pgpass()).env("PGCONNECT_TIMEOUT", "5");
        Ok(Pgbench { proc: Reaped::spawn(&mut cmd, "pgbench through VIP:3000")?, log, started: Instant::now(), seconds })
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if pgbench has exited already (it could not connect, or broke before the flood).
    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.proc.exited()? {
            bail!("pgbench exited before the flood ({status}); its output:\n{}", self.output().trim());
        }
        Ok(())
    }

    /// Fails if pgbench ended cleanly before the flood did: its `-T` was too short to cover
    /// the flood, so its figures would not say what the flood did to established flows. (An
    /// exit with aborted clients is a result, read by [`Pgbench::finish`].)
    fn ensure_outlasted(&mut self) -> Result<()> {
        if self.proc.exited()?.is_some_and(|s| s.success()) {
            bail!("pgbench's -T {} ran out before the flood ended (the steps before the flood took longer than planned); rerun", self.seconds);
        }
        Ok(())
    }

    /// Waits for pgbench to end and reads its figures. Exit 2 (some clients aborted) is a
    /// result; exit 1 (it could not start) and a hang are errors.
    fn finish(mut self) -> Result<flood_report::PgbenchOutcome> {
        let limit = Duration::from_secs(self.seconds).saturating_sub(self.started.elapsed()) + PGBENCH_EXIT_LIMIT;
        let status = self.proc.wait_until(limit).with_context(|| format!("pgbench ran past its -T {}: a connection of it hangs", self.seconds))?;
        let text = self.output();
        if !status.success() && status.code() != Some(2) {
            bail!("pgbench failed ({status}):\n{}", text.trim());
        }
        flood_report::parse_pgbench(&text).with_context(|| format!("pgbench exited with {status}"))
    }
}

/// One connection to VIP:3000 that stays silent through the flood.
struct IdleSession {
    proc: Reaped,
    log: PathBuf,
    pid: String,
}

impl IdleSession {
    fn open(d: &Drill, run: u32) -> Result<IdleSession> {
        let log = d.dir.join(format!("syn-flood-{run}-idle.log"));
        let mut cmd = d.client_command("idle", WRITE_PORT, 0, &log)?;
        cmd.stdin(Stdio::piped());
        let proc = Reaped::spawn(&mut cmd, "the idle session (drill client)")?;
        wait_for(IDLE_CONNECT_LIMIT, "the idle session to connect through VIP:3000", || Ok(!read_lines(&log)?.is_empty()))?;
        let first = read_lines(&log)?.remove(0);
        let Some(pid) = first.strip_prefix("ready ") else {
            bail!("the idle session could not connect through VIP:3000: {first}");
        };
        Ok(IdleSession { pid: pid.to_owned(), proc, log })
    }

    /// Asks the backend pid on the same connection; it must answer, from the same backend.
    fn ask(mut self) -> Result<IdleOutcome> {
        let stdin = self.proc.child.stdin.as_mut().context("the idle session's stdin is piped")?;
        if let Err(e) = stdin.write_all(b"query\n").and_then(|()| stdin.flush()) {
            return Ok(IdleOutcome { answered: false, detail: format!("the idle client is gone ({e})") });
        }
        let answered = wait_for(IDLE_ANSWER_LIMIT, "the idle session's answer", || Ok(read_lines(&self.log)?.len() >= 2));
        let lines = read_lines(&self.log)?;
        Ok(match (answered, lines.get(1).map(String::as_str)) {
            (Ok(()), Some(l)) if l == format!("ok {}", self.pid) => IdleOutcome { answered: true, detail: format!("backend {} answered", self.pid) },
            (Ok(()), Some(l)) => IdleOutcome { answered: false, detail: format!("connection of backend {}: {l}", self.pid) },
            _ => IdleOutcome { answered: false, detail: format!("no answer within {IDLE_ANSWER_LIMIT:?}") },
        })
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    Ok(fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.lines().map(str::to_owned).collect())
}

/// pgha-client's interface transmit counter.
fn client_tx_packets() -> Result<u64> {
    let path = format!("/sys/class/net/{CLIENT_IF}/statistics/tx_packets");
    let out = sh::output(&mut ns_cmd(&host("client")?.ns(), "cat", [path.as_str()])).context("reading pgha-client's tx packet counter")?;
    out.trim().parse().with_context(|| format!("{path} in pgha-client holds {out:?}, not a count"))
}

/// Every data-plane reason counter of `lb`, by name.
fn reasons(d: &Drill, lb: &Host) -> Result<std::collections::BTreeMap<String, u64>> {
    pglb_json::reasons(&d.map_dump(lb)?).with_context(|| format!("reading {}'s reason counters", lb.name))
}

/// The table pgbench inserts into, emptied for the run.
fn prepare_table(d: &Drill) -> Result<()> {
    d.sql(PRIMARY, "app", "CREATE TABLE IF NOT EXISTS drill_flood (client int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
          ALTER TABLE drill_flood OWNER TO app; TRUNCATE drill_flood")
        .map(drop)
        .context("preparing the drill_flood table")
}

/// The connect-probes: one drill client per VIP port.
fn start_probes(d: &Drill, run: u32) -> Result<Vec<(u16, Reaped, PathBuf)>> {
    [WRITE_PORT, READ_PORT]
        .into_iter()
        .map(|port| {
            let log = d.dir.join(format!("syn-flood-{run}-probe-{port}.log"));
            let mut cmd = d.client_command("connect-probe", port, 0, &log)?;
            cmd.stdin(Stdio::null());
            Ok((port, Reaped::spawn(&mut cmd, &format!("the connect-probe to VIP:{port}"))?, log))
        })
        .collect()
}

/// After the flood: probes until an attempt sent after `end_us` succeeded on every port (at
/// most [`AFTER_LIMIT`], at least [`PROBE_SETTLE`]); then stops them. Returns each port's
/// attempts. A port with no success in time is a finding, not an error.
fn probe_after(probes: Vec<(u16, Reaped, PathBuf)>, end: Instant, end_us: u128) -> Result<Vec<(u16, Vec<flood_report::Probe>)>> {
    loop {
        let mut all_through = true;
        for (_, _, log) in &probes {
            all_through &= first_after(&read_probe_log(log)?, end_us).is_some();
        }
        if (all_through && end.elapsed() >= PROBE_SETTLE) || end.elapsed() >= AFTER_LIMIT {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut out = Vec::new();
    for (port, mut p, log) in probes {
        if let Some(status) = p.exited()? {
            bail!("the connect-probe to VIP:{port} exited ({status}) before the drill stopped it");
        }
        drop(p);
        out.push((port, read_probe_log(&log)?));
    }
    Ok(out)
}

/// Runs `syn-flood` once. The cluster must be healthy (lb1, the VIP's home, holds the VIP).
pub fn flood_drill(d: &Drill, run: u32) -> Result<SynFlood> {
    let lb1 = home_lb();
    prepare_table(d)?;
    let reasons_before = reasons(d, lb1)?;
    let mut pgbench = Pgbench::start(d, run)?;
    thread::sleep(PGBENCH_LEAD);
    pgbench.ensure_running()?;
    let idle = IdleSession::open(d, run)?;
    let probes = start_probes(d, run)?;
    thread::sleep(BASELINE);

    let tx_before = client_tx_packets()?;
    let (start, start_us) = (Instant::now(), now_us());
    let mut flood = Flood::start(&d.dir, run)?;
    thread::sleep(FLOOD);
    flood.ensure_running()?;
    let (end, end_us) = (Instant::now(), now_us());
    let hping3 = flood.stop()?;
    pgbench.ensure_outlasted()?;
    let tx_after = client_tx_packets()?;
    let tx_window = start.elapsed().as_secs_f64();

    let probed = probe_after(probes, end, end_us)?;
    let idle_session = idle.ask()?;
    let pgbench = pgbench.finish()?;
    let reason_deltas = flood_report::reason_deltas(&reasons_before, &reasons(d, lb1)?);

    let flood_s = (end - start).as_secs_f64();
    let sent: Option<u64> = hping3.iter().map(|h| h.transmitted).sum();
    let mut r = SynFlood {
        scenario: Scenario::SynFlood.to_string(),
        run,
        flood_s,
        client_tx_packets: tx_after.saturating_sub(tx_before),
        client_tx_packets_per_s: tx_after.saturating_sub(tx_before) as f64 / tx_window,
        hping3_syns_per_s: sent.map(|n| n as f64 / flood_s),
        hping3,
        established_total: PGBENCH_CLIENTS + 1,
        established_broken: pgbench.aborted_clients + usize::from(!idle_session.answered),
        idle_session,
        pgbench,
        ports: probed.iter().map(|(port, p)| flood_report::port_figures(*port, p, start_us, end_us)).collect::<Vec<PortFigures>>(),
        reasons: reason_deltas,
        failures: Vec::new(),
    };
    r.check();
    Ok(r)
}
