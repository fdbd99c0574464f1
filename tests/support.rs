//! Helpers for the end-to-end tests: the xtask and pglb binaries, lab guards, SQL on lab hosts,
//! readiness polls, who holds the VIP, pglb's processes, clients in the lab's namespaces, and
//! keepalived (in [`keepalived`]).
//!
//! These tests run through `cargo xtask test`, which builds the workspace and passes the xtask
//! binary in `PGLB_XTASK` and pglb in `PGLB_BIN`; they need root and share one lab, so they run
//! one at a time.

pub mod keepalived;

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

pub use keepalived::process_gone;

/// The lab's state folder (kept in step with xtask's topology).
pub const STATE_DIR: &str = "/run/pglb-lab";

/// The xtask binary under test.
pub fn xtask_bin() -> PathBuf {
    let path = std::env::var_os("PGLB_XTASK")
        .expect("PGLB_XTASK is not set: run the end-to-end tests with `cargo xtask test`");
    PathBuf::from(path)
}

pub fn xtask(args: &[&str]) -> Command {
    let mut c = Command::new(xtask_bin());
    c.args(args).stdin(Stdio::null());
    c
}

/// Runs xtask and returns its output; panics when it cannot start.
pub fn run(args: &[&str]) -> Output {
    xtask(args).output().unwrap_or_else(|e| panic!("could not start xtask {args:?}: {e}"))
}

/// Runs xtask and panics with its output unless it succeeds; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "xtask {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running lab, torn down when dropped (also when the test panics).
pub struct Lab(());

impl Lab {
    /// Builds a new lab (`lab up --fresh`).
    pub fn up() -> Lab {
        assert_root();
        let lab = Lab(());
        ok(&["lab", "up", "--fresh"]);
        lab
    }

    /// Only the guard, for tests that run `lab up` themselves.
    pub fn guard() -> Lab {
        assert_root();
        Lab(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = run(&["lab", "down"]);
        if !out.status.success() {
            eprintln!("lab down failed in a test guard:\n{}{}", stdout(&out), stderr(&out));
        }
    }
}

pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the end-to-end tests need root (network namespaces, BPF, PostgreSQL): run `sudo cargo xtask test`");
}

/// SQL as the superuser on a PostgreSQL host over its Unix socket; unaligned tuples-only.
pub fn superuser_sql(node: &str, query: &str) -> String {
    let sock = format!("{STATE_DIR}/{node}/sock");
    ok(&["lab", "exec", node, "--", "runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql",
         "-X", "-h", &sock, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-c", query])
        .trim()
        .to_owned()
}

/// SQL as the application user on the `app` database of one node (bypassing the VIP).
pub fn app_sql(node: &str, query: &str) -> String {
    ok(&["lab", "psql", "--node", node, "--", "-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-c", query])
        .trim()
        .to_owned()
}

/// Polls `check` every 100 ms until it returns true or `limit` passes; panics naming `what`.
/// Returns how long it took, for callers that report it.
pub fn wait_until(limit: Duration, what: &str, check: impl FnMut() -> bool) -> Duration {
    poll_until(limit, Duration::from_millis(100), what, check)
}

/// [`wait_until`] polling every `every`: for waits whose duration is reported, where 100 ms
/// would be too coarse.
pub fn poll_until(limit: Duration, every: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(every);
    }
}

/// Network namespaces whose names start with the lab's prefix.
pub fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("pgha-"))
        .map(str::to_owned)
        .collect()
}

/// Command lines of processes that belong to the lab (they mention its state folder).
pub fn lab_processes() -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid,args"]).output().expect("running ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(STATE_DIR) || l.contains("postgres: pg"))
        .map(str::to_owned)
        .collect()
}

/// Asserts that nothing of the lab is left: no namespace, no process, no state folder.
pub fn assert_lab_gone() {
    assert_eq!(lab_namespaces(), Vec::<String>::new(), "lab namespaces left behind");
    assert_eq!(lab_processes(), Vec::<String>::new(), "lab processes left behind");
    assert!(!std::path::Path::new(STATE_DIR).exists(), "{STATE_DIR} left behind");
    assert!(!std::path::Path::new(AGENT_CGROUP).exists(), "{AGENT_CGROUP} left behind");
}

/// The cgroup of the client's workloads, where `pglb agent` rewrites connects (`lab up` makes it).
pub const AGENT_CGROUP: &str = "/sys/fs/cgroup/unified/pglb-lab-client";

// ----- the VIP, pglb's processes, clients -------------------------------------------------

/// The lab's VIP (config/lab.toml, kept in step with xtask's topology).
pub const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 100);

/// The network namespace of a lab host: `lb1` → `pgha-lb1`.
pub fn netns(host: &str) -> String {
    format!("pgha-{host}")
}

/// Whether a lab host has the VIP on its eth0 (`ip -n pgha-HOST addr`).
pub fn holds_vip(host: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &netns(host), "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap_or_else(|e| panic!("running ip addr in {}: {e}", netns(host)));
    assert!(out.status.success(), "ip addr in {} failed: {}", netns(host), stderr(&out));
    stdout(&out).contains(&format!("inet {VIP}/"))
}

/// The pglb binary under test.
pub fn pglb_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("PGLB_BIN").expect("PGLB_BIN is not set: run the end-to-end tests with `cargo xtask test`"))
}

/// The config a load balancer runs with, as the lab installed it in docs/DEPLOY.md's layout
/// (from config/lab.toml for lb1, config/lab-HOST.toml else).
/// `pglb ARGS --config <host's config>` with its log at `warn`: its output, whatever the exit.
pub fn pglb_on(host: &str, args: &[&str]) -> Output {
    Command::new(pglb_bin())
        .args(args)
        .arg("--config")
        .arg(lb_config(host))
        .env("PGLB_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("running pglb {args:?}: {e}"))
}

pub fn lb_config(host: &str) -> PathBuf {
    lb_root(host).join("etc/pglb/pglb.toml")
}

/// A load balancer's stand-in for `/`: `etc/pglb` and `var/lib/pglb` as on a real host.
pub fn lb_root(host: &str) -> PathBuf {
    Path::new(STATE_DIR).join(host).join("root")
}

/// pglb's log on a load balancer (everything so far).
pub fn pglb_log(host: &str) -> String {
    fs::read_to_string(format!("{STATE_DIR}/{host}/pglb.log")).unwrap_or_default()
}

/// Pids of `pglb run` processes in a lab host's namespace.
pub fn pglb_pids(host: &str) -> Vec<i32> {
    let out = Command::new("ip").args(["netns", "pids", &netns(host)]).output().expect("running ip netns pids");
    stdout(&out)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() > 1 && args[0].ends_with(b"pglb") && args[1] == b"run"
        })
        .collect()
}

/// The one `pglb run` on a lab host; panics unless there is exactly one.
pub fn pglb_pid(host: &str) -> i32 {
    let pids = pglb_pids(host);
    assert_eq!(pids.len(), 1, "expected one pglb on {host}, found {pids:?}");
    pids[0]
}

/// Sends `sig` to `pid`; panics when that fails.
pub fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the pid was just read from the lab namespace.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Waits until `pid` has exited.
pub fn wait_gone(pid: i32, limit: Duration, what: &str) {
    wait_until(limit, what, || process_gone(pid));
}

/// Starts pglb on a load balancer the way `cargo xtask lab up` does: `nsenter --net` (not `ip
/// netns exec`, which hides /sys/fs/bpf), detached in its own session by `setsid -f` (so it is
/// not the test's child, and `lab down` stops it), appending to its log.
pub fn start_pglb(host: &str) {
    start_pglb_with(host, &[]);
}

/// [`start_pglb`] with more arguments to `pglb run` (`--log-format json`).
pub fn start_pglb_with(host: &str, extra: &[&str]) {
    let log_path = format!("{STATE_DIR}/{host}/pglb.log");
    let log = OpenOptions::new().create(true).append(true).open(&log_path).unwrap_or_else(|e| panic!("opening {log_path}: {e}"));
    let status = Command::new("setsid")
        .arg("-f")
        .arg("nsenter")
        .arg(format!("--net=/run/netns/{}", netns(host)))
        .arg(pglb_bin())
        .args(["run", "--config"])
        .arg(lb_config(host))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating the log handle"))
        .stderr(log)
        .status()
        .unwrap_or_else(|e| panic!("starting pglb on {host}: {e}"));
    assert!(status.success(), "setsid -f nsenter pglb on {host} failed: {status}");
}

/// Moves the calling thread into a lab host's network namespace (only this thread: call it in
/// a thread spawned for the purpose).
pub fn enter_netns(host: &str) {
    let path = format!("/run/netns/{}", netns(host));
    let ns = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: setns with a valid namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {path}: {}", std::io::Error::last_os_error());
}

/// Whether a new connection through VIP:`port` runs `SELECT 1` (`lab psql` from pgha-client).
pub fn vip_answers(port: u16) -> bool {
    run(&["lab", "psql", "--port", &port.to_string(), "--", "-Atc", "SELECT 1"]).status.success()
}

/// One PostgreSQL round trip: TCP connect, SSLRequest, the server's one-byte answer (`N` or
/// `S`), each step within `timeout`. Proves the data plane reached a live backend.
pub fn pg_answers(addr: SocketAddrV4, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout) else { return false };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).is_err() {
        return false;
    }
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).is_ok() && matches!(answer[0], b'N' | b'S')
}

/// The MAC of the complete ARP entry for `ip` in the calling thread's network namespace.
pub fn arp_entry_here(ip: Ipv4Addr) -> Option<String> {
    let arp = fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    arp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[0] == ip.to_string() && f[2] != "0x0").then(|| f[3].to_owned())
    })
}

/// What a client in pgha-client saw while connecting until answered.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub attempts: u32,
    pub failures: u32,
    /// Answers whose ARP entry for the VIP was not `via_mac` (the old holder).
    pub via_old: u32,
    /// The first answer with the ARP entry on `via_mac`, from `epoch`.
    pub first_via_new: Option<Duration>,
}

/// How long one connection attempt of [`connect_until_via`] may take.
pub const ATTEMPT_LIMIT: Duration = Duration::from_millis(200);

/// A thread in pgha-client that opens new connections to VIP:`port` (one [`pg_answers`] round
/// trip each) until one is answered while the client's ARP entry for the VIP is `via_mac`, or
/// until `limit` after `epoch`.
pub fn connect_until_via(port: u16, via_mac: String, epoch: Instant, limit: Duration) -> JoinHandle<ClientLog> {
    thread::spawn(move || {
        enter_netns("client");
        let mut log = ClientLog::default();
        while epoch.elapsed() < limit {
            log.attempts += 1;
            let answered = pg_answers(SocketAddrV4::new(VIP, port), ATTEMPT_LIMIT);
            match (answered, arp_entry_here(VIP)) {
                (true, Some(mac)) if mac.eq_ignore_ascii_case(&via_mac) => {
                    log.first_via_new = Some(epoch.elapsed());
                    break;
                }
                (true, _) => log.via_old += 1,
                (false, _) => {
                    log.failures += 1;
                    thread::sleep(Duration::from_millis(5));
                }
            }
            // Pacing, so that the attempts do not starve the machine being measured.
            thread::sleep(Duration::from_millis(2));
        }
        log
    })
}

/// A client in pgha-client that opens a new connection to VIP:`port` every few ms (one
/// [`pg_answers`] round trip each, [`ATTEMPT_LIMIT`] per attempt) until [`ClientLoop::stop`]:
/// while nothing moves the VIP, none of them fails.
pub struct ClientLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<ClientLog>,
}

impl ClientLoop {
    pub fn start(port: u16) -> ClientLoop {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            enter_netns("client");
            let mut log = ClientLog::default();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                log.attempts += 1;
                if !pg_answers(SocketAddrV4::new(VIP, port), ATTEMPT_LIMIT) {
                    log.failures += 1;
                }
                thread::sleep(Duration::from_millis(5));
            }
            log
        });
        ClientLoop { stop, thread }
    }

    /// Stops the loop; what it saw (`attempts`, `failures`).
    pub fn stop(self) -> ClientLog {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("client loop thread")
    }
}

/// A connection through VIP:`port` from pgha-client held open: it opens with the startup
/// message of the role `app`, whose answer (an authentication request: the connection reached a
/// backend) is read whole; [`HeldConnection::still_open`] later sends a password message on the
/// same connection and reads the server's answer (its refusal). A connection a load balancer
/// reset in between fails there. (Not the SSLRequest: the lab's PostgreSQL accepts TLS, and its
/// 'S' asks for a TLS handshake next. The backend waits for the password up to the lab's
/// `authentication_timeout`, 10 min.)
pub struct HeldConnection(TcpStream);

/// The startup message (protocol 3.0) of the role `app` on the database `app`.
fn startup_message() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for kv in ["user", "app", "database", "app"] {
        body.extend_from_slice(kv.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// Reads one backend message: its type byte and its body.
fn read_message(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    s.read_exact(&mut body)?;
    Ok((head[0], body))
}

impl HeldConnection {
    pub fn open(port: u16) -> HeldConnection {
        let s = thread::spawn(move || {
            enter_netns("client");
            let mut s = TcpStream::connect_timeout(&SocketAddr::V4(SocketAddrV4::new(VIP, port)), Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("connecting to {VIP}:{port} from pgha-client: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(2))).expect("a read timeout");
            s.write_all(&startup_message()).expect("sending the startup message");
            let (kind, _) = read_message(&mut s).expect("the server's answer to the startup message");
            assert_eq!(kind, b'R', "the lab's PostgreSQL asks `app` to authenticate");
            s
        })
        .join()
        .expect("opening a held connection");
        HeldConnection(s)
    }

    /// Sends a password message that is no valid SASL answer and reads the server's reply:
    /// `E` (its refusal) when the connection survived.
    pub fn still_open(mut self) -> Result<(), String> {
        let body = b"not-a-mechanism\0";
        let mut msg = vec![b'p'];
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(body);
        self.0.write_all(&msg).map_err(|e| format!("sending the password message: {e}"))?;
        let (kind, _) = read_message(&mut self.0).map_err(|e| format!("reading the answer to the password message: {e}"))?;
        if kind == b'E' { Ok(()) } else { Err(format!("the server answered {:?}, not an error response", kind as char)) }
    }
}

/// `pglb status --json` of a load balancer (schema `pglb.status/1`, docs/JSON.md), or what it
/// printed when it failed.
pub fn pglb_status(host: &str) -> Result<Value, String> {
    let out = Command::new(pglb_bin()).args(["status", "--json", "--config"]).arg(lb_config(host)).output().expect("pglb status --json");
    let text = stdout(&out);
    if !out.status.success() {
        return Err(format!("{text}{}", stderr(&out)));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["schema"] == "pglb.status/1" => Ok(v),
        _ => Err(format!("not a pglb.status/1 object: {text}")),
    }
}

/// Moves the VIP back to lb1 when lb2 holds it and both pglb run, as the drills do (the twin
/// of xtask's `lab::lb::bring_vip_home`): a returning lb1 does not preempt a healthy master
/// (issue 18), so after a test restarted lb1's pglb, lb2 keeps the VIP. Waits for lb1 to be
/// ready (`"ready"` of its status, when it has the field), sends SIGTERM to lb2's pglb (its
/// priority-0 advert hands the VIP to lb1), and starts it again once lb1 holds the VIP alone;
/// lb2 comes back as backup, and the helper returns once it is ready. A no-op when lb1 already
/// holds the VIP alone.
pub fn bring_vip_home() {
    if holds_vip("lb1") && !holds_vip("lb2") {
        return;
    }
    let limit = Duration::from_secs(30);
    assert!(
        pglb_pids("lb1").len() == 1 && pglb_pids("lb2").len() == 1 && holds_vip("lb2"),
        "bringing the VIP home needs pglb on lb1 and lb2 with the VIP on lb2 (lb1 {:?}, lb2 {:?}, lb2 holds it: {})",
        pglb_pids("lb1"),
        pglb_pids("lb2"),
        holds_vip("lb2")
    );
    wait_until(limit, "pglb on lb1 to be ready before the VIP comes home", || pglb_status("lb1").is_ok_and(|v| v["ready"] != false));
    let pid = pglb_pid("lb2");
    signal(pid, libc::SIGTERM);
    wait_gone(pid, limit, "pglb on lb2 to stop after SIGTERM");
    wait_until(limit, "lb1 to take the VIP on lb2's priority-0 advert", || holds_vip("lb1") && !holds_vip("lb2"));
    start_pglb("lb2");
    // Ready too: it has lb1's authenticated reports, so it believes lb1's adverts, a priority-0
    // one included (a graceful stop of lb1 right after hands over at once).
    wait_until(limit, "the restarted pglb on lb2 to follow lb1 (ready, backup, VIP held by lb1)", || {
        pglb_status("lb2").is_ok_and(|v| v["vip_held"] == false && v["vrrp_state"] == "backup" && v["vip_master"] == "172.20.0.21" && v["ready"] != false)
    });
    assert!(holds_vip("lb1") && !holds_vip("lb2"), "the VIP moved again while pglb on lb2 restarted");
}

// ----- drills ------------------------------------------------------------------------------

/// Runs `xtask drill SCENARIO --runs 1 --json …` with the drill client `drill_client` (the
/// test binary's `env!("CARGO_BIN_EXE_drill_client")`); returns the run's JSON object.
pub fn drill(scenario: &str, drill_client: &str) -> Value {
    drill_with(scenario, &[], drill_client)
}

/// [`drill`] with more arguments for `cargo xtask drill` (e.g. `--client agent`).
pub fn drill_with(scenario: &str, extra: &[&str], drill_client: &str) -> Value {
    let json = std::env::temp_dir().join(format!("pglb-drill-{scenario}-{}.json", std::process::id()));
    let mut args = vec!["drill", scenario, "--runs", "1", "--json", json.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = xtask(&args)
        .env("PGLB_DRILL_CLIENT", drill_client)
        .output()
        .expect("running xtask drill");
    println!("{}", stdout(&out));
    let text = fs::read_to_string(&json).unwrap_or_else(|e| panic!("reading {} ({}):\n{}{}", json.display(), e, stdout(&out), stderr(&out)));
    let _ = fs::remove_file(&json);
    assert!(out.status.success(), "xtask drill {scenario} failed ({}):\n{}{}", out.status, stdout(&out), stderr(&out));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the drill's JSON does not parse ({e}):\n{text}"));
    let runs = doc["failover"].as_array().unwrap_or_else(|| panic!("no failover runs in {text}"));
    assert_eq!(runs.len(), 1, "one run expected in {text}");
    runs[0].clone()
}

pub fn num(run: &Value, key: &str) -> f64 {
    run[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in the drill result:\n{run:#}"))
}

/// Every acknowledged write is on the winner, nothing was acknowledged off the winner's
/// history, exactly one primary is left once the faults healed, every check passed, and each
/// pglb idled under 2 % of a CPU after the run.
pub fn assert_no_loss(run: &Value) {
    assert!(num(run, "acked_writes") > 100.0, "the writer hardly wrote: {run:#}");
    assert_eq!(num(run, "acked_lost"), 0.0, "acknowledged writes lost: {run:#}");
    assert_eq!(num(run, "split_brain_writes"), 0.0, "split-brain writes: {run:#}");
    assert_eq!(num(run, "primaries_at_end"), 1.0, "exactly one primary once the faults healed: {run:#}");
    assert_eq!(run["failures"].as_array().map(Vec::len), Some(0), "failed checks: {run:#}");
    let cpu = run["cpu"].as_array().unwrap_or_else(|| panic!("no cpu figures: {run:#}"));
    assert_eq!(cpu.len(), 2, "both load balancers' CPU: {run:#}");
    for c in cpu {
        let idle = c["idle_pct"].as_f64().unwrap_or_else(|| panic!("no idle CPU for {}: {run:#}", c["lb"]));
        assert!(idle < 2.0, "pglb on {} used {idle:.2}% of a CPU idle after the drill (a busy loop?): {run:#}", c["lb"]);
    }
}

/// A failover scenario: a new writer, the remaining standby following it, the old primary
/// fenced when it came back (needs-rejoin, unrouted, no flows), rejoined by pglb itself, and
/// switched back to pg1 with the pause reported.
///
/// `rto_limit_ms` is a generous bound on the write RTO, well above the goal (2 s, judged from the
/// figures `cargo xtask drill` prints and docs/DRILLS.md quotes): it catches a failover that
/// stalled, not one that was slow on a busy machine. The RTO is printed.
pub fn assert_failover(run: &Value, rto_limit_ms: f64) {
    assert_no_loss(run);
    assert_eq!(run["failover"], true, "no failover: {run:#}");
    assert_ne!(run["winner"], "pg1", "pg1 still won: {run:#}");
    let rto = num(run, "write_rto_ms");
    eprintln!("write RTO {rto:.0} ms (bound {rto_limit_ms:.0} ms)");
    assert!(rto <= rto_limit_ms, "write RTO {rto} ms above {rto_limit_ms} ms: {run:#}");
    assert_eq!(run["standbys_follow"], true, "the other standby did not follow the new primary: {run:#}");
    assert_eq!(run["fenced_ok"], true, "the returning old primary was not fenced (needs-rejoin, unrouted, no flows): {run:#}");
    assert!(num(run, "rejoin_ms") > 0.0, "the old primary was not rejoined by pglb: {run:#}");
    let back = run["switchback_output"].as_str().unwrap_or_default();
    assert!(back.contains("switchover done") && back.contains("writes paused for"), "switching back to pg1 after the rejoin: {back}");
    assert_switchback_lost_nothing(run);
}

/// `pglb switchover --to pg1` ran with the writer inserting: pg1 has every acknowledged row,
/// the run's own included.
pub fn assert_switchback_lost_nothing(run: &Value) {
    assert!(num(run, "switchback_acked") > 50.0, "the writer hardly wrote during the switch back: {run:#}");
    assert_eq!(num(run, "switchback_lost"), 0.0, "acknowledged writes lost in the switch back to pg1: {run:#}");
    assert_eq!(num(run, "lost_after_switchback"), 0.0, "the run's acknowledged writes missing on pg1 after the switch back: {run:#}");
}

