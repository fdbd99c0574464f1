//! End-to-end tests in the lab: who owns the VIP 172.20.0.100 between lb1 (VRRP priority 150)
//! and lb2 (100), advert interval 100 ms, adverts to 224.0.0.18 (the lab sets no `unicast`).
//!
//! - `takeover_after_crash_preemption_and_graceful_stop`: lb1 master with the VIP, lb2 backup
//!   without; `kill -9` pglb on lb1 → lb2 takes the VIP and new connections through VIP:3000 and
//!   :3001 reach PostgreSQL via lb2 (measured from the kill); lb1 restarted → it preempts without
//!   both holding the VIP for longer than one advert interval; SIGTERM to lb1 → lb2 takes over
//!   within one advert interval plus its skew time (measured). `PGLB_VIP_ROUNDS` (default 2)
//!   repeats the whole cycle; every round prints one `round` line and the test ends with a summary
//!   (docs/DRILLS.md quotes it).
//! - `interoperates_with_keepalived_in_both_priority_orders`: pglb on lb2 is replaced by Debian's
//!   keepalived (`vrrp_version 3`, vrid 51, `advert_int 0.1`, multicast like pglb) at priority 100,
//!   then 200: one master in both orders, and each takes over when the other stops.
//!
//! Who holds the VIP is sampled about every millisecond by one thread per namespace that tries to
//! bind a UDP socket to the VIP (which succeeds only while the address is local); clients are
//! threads in `pgha-client` that open TCP connections to the VIP, send PostgreSQL's SSLRequest and
//! wait for the server's one-byte answer, and read `/proc/thread-self/net/arp` to see which load
//! balancer's MAC address they used. Everything runs inside the lab's namespaces; the lab (and
//! keepalived, and any pglb started here) is removed by guards even when an assertion fails.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use pglb_tests::{Lab, STATE_DIR, ok, run, stdout, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 100);
const LB1_ADDR: &str = "172.20.0.21";
const LB2_ADDR: &str = "172.20.0.22";
const WRITE_PORT: u16 = 3000;
const READ_PORT: u16 = 3001;
/// The lab's advert interval (config/lab.toml).
const ADVERT: Duration = Duration::from_millis(100);
/// Skew_Time of lb2 (priority 100) at 10 cs: (256 − 100) × 10 / 256 cs.
const SKEW_LB2: Duration = Duration::from_micros(60_938);
/// How long a sampler sleeps between two looks.
const SAMPLE_EVERY: Duration = Duration::from_micros(500);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

fn pglb_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("PGLB_BIN").expect("PGLB_BIN is not set: run the end-to-end tests with `cargo xtask test`"))
}

fn rounds() -> usize {
    std::env::var("PGLB_VIP_ROUNDS").ok().map(|r| r.parse().expect("PGLB_VIP_ROUNDS is a number")).unwrap_or(2)
}

// ---------------------------------------------------------------------------------------------
// Namespaces, processes

/// Moves the calling thread into a lab host's network namespace.
fn enter_netns(host: &str) {
    let path = format!("/run/netns/pgha-{host}");
    let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns with a valid namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {path}: {}", std::io::Error::last_os_error());
}

/// Pids of `pglb run` processes in a lab host's namespace.
fn pglb_pids(host: &str) -> Vec<i32> {
    let out = Command::new("ip").args(["netns", "pids", &format!("pgha-{host}")]).output().expect("running ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() > 1 && args[0].ends_with(b"pglb") && args[1] == b"run"
        })
        .collect()
}

fn the_pglb_pid(host: &str) -> i32 {
    let pids = pglb_pids(host);
    assert_eq!(pids.len(), 1, "expected one pglb on {host}, found {pids:?}");
    pids[0]
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the pid was just read from the lab namespace.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

fn wait_gone(pid: i32, limit: Duration, what: &str) {
    wait_until(limit, what, || !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|t| t.trim_start().starts_with('Z')))
}

/// pglb processes this test started; reaped (and killed if still running) on drop. The lab
/// guard's `lab down` would kill them too; this only avoids zombies in the test process.
#[derive(Default)]
struct Started(Vec<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Started {
    /// Starts pglb on a load balancer the way `cargo xtask lab up` does: `nsenter --net` (not
    /// `ip netns exec`, which hides /sys/fs/bpf), in its own session, appending to its log.
    fn start_pglb(&mut self, host: &str) {
        let config = match host {
            "lb1" => workspace().join("config/lab.toml"),
            other => workspace().join(format!("config/lab-{other}.toml")),
        };
        let log_path = format!("{STATE_DIR}/{host}/pglb.log");
        let log = OpenOptions::new().create(true).append(true).open(&log_path).unwrap_or_else(|e| panic!("open {log_path}: {e}"));
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/pgha-{host}"))
            .arg(pglb_bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // SAFETY: setsid() in the child before exec touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        self.0.push(cmd.spawn().unwrap_or_else(|e| panic!("starting pglb on {host}: {e}")));
    }

    /// Reaps children that exited (after a signal), so they leave no zombie.
    fn reap(&mut self) {
        for child in &mut self.0 {
            let _ = child.try_wait();
        }
    }
}

fn pglb_log(host: &str) -> String {
    let log = fs::read_to_string(format!("{STATE_DIR}/{host}/pglb.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn mac_of(host: &str) -> String {
    let out = Command::new("ip").args(["-n", &format!("pgha-{host}"), "-o", "link", "show", "eth0"]).output().expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether in {text:?}"))
        .to_owned()
}

/// The MAC a host's neighbour table has for the VIP, if any.
fn neigh_of_vip(host: &str) -> Option<String> {
    let out = Command::new("ip").args(["-n", &format!("pgha-{host}"), "neigh", "show", &VIP.to_string()]).output().expect("ip neigh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).map(str::to_owned)
}

fn holds_vip(host: &str) -> bool {
    let out = Command::new("ip").args(["-n", &format!("pgha-{host}"), "-4", "-o", "addr", "show", "dev", "eth0"]).output().expect("ip addr");
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
}

fn status_of(host: &str) -> String {
    let config = match host {
        "lb1" => workspace().join("config/lab.toml"),
        other => workspace().join(format!("config/lab-{other}.toml")),
    };
    let out = Command::new(pglb_bin()).arg("status").arg("--config").arg(config).output().expect("pglb status");
    format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr))
}

// ---------------------------------------------------------------------------------------------
// Samplers and clients

/// Samples whether a host holds the VIP, recording each change with its time since `epoch`.
struct VipSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(Duration, bool)>>>,
}

impl VipSampler {
    fn start(host: &'static str, epoch: Instant) -> VipSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            enter_netns(host);
            let mut changes = Vec::new();
            let mut last = None;
            while !flag.load(Ordering::Relaxed) {
                let held = UdpSocket::bind(SocketAddrV4::new(VIP, 0)).is_ok();
                if last != Some(held) {
                    changes.push((epoch.elapsed(), held));
                    last = Some(held);
                }
                thread::sleep(SAMPLE_EVERY);
            }
            changes
        });
        VipSampler { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> Vec<(Duration, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("joined once").join().expect("sampler thread panicked")
    }
}

impl Drop for VipSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// First time at or after `from` when the host holds the VIP (and keeps holding it until the end
/// of the changes or a later release).
fn first_held_after(changes: &[(Duration, bool)], from: Duration) -> Option<Duration> {
    let mut held_at_from = false;
    for (t, held) in changes {
        if *t <= from {
            held_at_from = *held;
        } else if *held {
            return Some(*t);
        }
    }
    held_at_from.then_some(from)
}

/// Intervals (start, end) after `from` when both hosts held the VIP; `end` is `until` for an
/// interval still open.
fn overlaps(a: &[(Duration, bool)], b: &[(Duration, bool)], from: Duration, until: Duration) -> Vec<(Duration, Duration)> {
    let at = |changes: &[(Duration, bool)], t: Duration| changes.iter().take_while(|(c, _)| *c <= t).last().is_some_and(|(_, h)| *h);
    let mut times: Vec<Duration> = a.iter().chain(b).map(|(t, _)| *t).filter(|t| *t > from && *t < until).collect();
    times.push(from);
    times.sort();
    let mut out: Vec<(Duration, Duration)> = Vec::new();
    let mut open: Option<Duration> = None;
    for t in times {
        let both = at(a, t) && at(b, t);
        match (both, open) {
            (true, None) => open = Some(t),
            (false, Some(s)) => {
                out.push((s, t));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(s) = open {
        out.push((s, until));
    }
    out
}

/// One PostgreSQL round trip through the VIP: TCP connect, SSLRequest, the server's one-byte
/// answer (`N` or `S`). Proves the data plane reached a live backend.
fn pg_round_trip(port: u16, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::V4(SocketAddrV4::new(VIP, port)), timeout) else { return false };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).is_err() {
        return false;
    }
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).is_ok() && matches!(answer[0], b'N' | b'S')
}

/// The MAC this thread's namespace has for the VIP (from /proc/thread-self/net/arp).
fn arp_of_vip_here() -> Option<String> {
    let arp = fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    arp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[0] == VIP.to_string() && f[2] != "0x0").then(|| f[3].to_owned())
    })
}

/// What a client in pgha-client saw on one port from `epoch` on.
#[derive(Debug, Default)]
struct ClientLog {
    attempts: u32,
    failures: u32,
    /// Successes whose ARP entry pointed at the old holder (`not_via`).
    via_old: u32,
    /// First success through the new holder (the client's ARP entry has its MAC).
    first_via_new: Option<Duration>,
}

/// Opens new connections through VIP:`port` from pgha-client until one succeeds with the VIP's
/// ARP entry on `via_mac`, or `limit` passes.
fn client_until_via(port: u16, via_mac: String, epoch: Instant, limit: Duration) -> JoinHandle<ClientLog> {
    thread::spawn(move || {
        enter_netns("client");
        let mut log = ClientLog::default();
        while epoch.elapsed() < limit {
            log.attempts += 1;
            let ok = pg_round_trip(port, Duration::from_millis(200));
            let mac = arp_of_vip_here();
            match (ok, mac) {
                (true, Some(m)) if m.eq_ignore_ascii_case(&via_mac) => {
                    log.first_via_new = Some(epoch.elapsed());
                    break;
                }
                (true, _) => log.via_old += 1,
                (false, _) => {
                    log.failures += 1;
                    thread::sleep(Duration::from_millis(5));
                }
            }
            thread::sleep(Duration::from_millis(2));
        }
        log
    })
}

fn psql_vip(port: u16, sql: &str) -> String {
    ok(&["lab", "psql", "--port", &port.to_string(), "--", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]).trim().to_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return format!("{name}: no samples");
    }
    format!("{name}: n={} min={:.0} ms median={:.0} ms max={:.0} ms", s.len(), s[0], s[s.len() / 2], s[s.len() - 1])
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Waits until lb1 holds the VIP, lb2 does not, and both ports answer through it.
fn wait_lb1_master(what: &str) {
    wait_until(Duration::from_secs(10), &format!("{what}: lb1 holds the VIP and lb2 not"), || holds_vip("lb1") && !holds_vip("lb2"));
    for port in [WRITE_PORT, READ_PORT] {
        wait_until(Duration::from_secs(10), &format!("{what}: VIP:{port} answers"), || {
            run(&["lab", "psql", "--port", &port.to_string(), "--", "-Atc", "SELECT 1"]).status.success()
        });
    }
}

#[test]
fn takeover_after_crash_preemption_and_graceful_stop() {
    let _lab = Lab::up();
    let mut started = Started::default();
    let lb1_mac = mac_of("lb1");
    let lb2_mac = mac_of("lb2");
    eprintln!("lb1 eth0 {lb1_mac}, lb2 eth0 {lb2_mac}");

    // Steady state: lb1 (150) master with the VIP, lb2 (100) backup without it.
    wait_lb1_master("after lab up");
    wait_until(Duration::from_secs(5), "pglb status on lb2 to name lb1 as the VIP holder", || {
        status_of("lb2").contains(&format!("VIP {VIP} held by {LB1_ADDR} | vrrp backup"))
    });
    let st1 = status_of("lb1");
    assert!(st1.contains(&format!("VIP {VIP} held here | vrrp master")), "pglb status on lb1:\n{st1}");
    assert_eq!(psql_vip(WRITE_PORT, "SELECT pg_is_in_recovery()"), "f", "VIP:3000 reaches the primary");

    let mut crash_vip = Vec::new();
    let mut crash_conn = Vec::new();
    let mut graceful_vip = Vec::new();
    let mut graceful_release = Vec::new();
    let mut preempt_overlap = Vec::new();

    for round in 1..=rounds() {
        // --- kill -9 pglb on lb1 ------------------------------------------------------------
        let pid = the_pglb_pid("lb1");
        let epoch = Instant::now();
        let s1 = VipSampler::start("lb1", epoch);
        let s2 = VipSampler::start("lb2", epoch);
        thread::sleep(Duration::from_millis(20));
        let limit = Duration::from_secs(5);
        let t_kill = epoch.elapsed();
        signal(pid, libc::SIGKILL);
        let clients: Vec<_> = [WRITE_PORT, READ_PORT].map(|p| (p, client_until_via(p, lb2_mac.clone(), epoch, limit))).into();
        let logs: Vec<(u16, ClientLog)> = clients.into_iter().map(|(p, h)| (p, h.join().expect("client thread"))).collect();
        wait_gone(pid, Duration::from_secs(5), "the killed pglb to exit");
        started.reap();
        thread::sleep(Duration::from_millis(300));
        let (c1, c2) = (s1.finish(), s2.finish());
        let lb2_at = first_held_after(&c2, t_kill)
            .unwrap_or_else(|| panic!("round {round}: lb2 never took the VIP after the crash; lb2 changes {c2:?}\nlb2 log:\n{}", pglb_log("lb2")));
        let vip_ms = ms(lb2_at - t_kill);
        let lb1_still = c1.last().is_some_and(|(_, h)| *h);
        let mut conn_ms = 0f64;
        for (port, log) in &logs {
            let first = log.first_via_new.unwrap_or_else(|| {
                panic!("round {round}: no new connection through VIP:{port} via lb2 within {limit:?} after the crash: {log:?}\nclient ARP for VIP: {:?}\nlb2 log:\n{}", neigh_of_vip("client"), pglb_log("lb2"))
            });
            conn_ms = conn_ms.max(ms(first - t_kill));
            eprintln!("round {round}: crash: VIP:{port} first new connection via lb2 after {:.0} ms ({} attempts, {} failed, {} answered via lb1's orphaned data plane)", ms(first - t_kill), log.attempts, log.failures, log.via_old);
        }
        eprintln!("round {round}: crash: lb2 holds the VIP {vip_ms:.0} ms after kill -9; lb1 still has it on eth0: {lb1_still}");
        assert!(lb1_still, "round {round}: a killed pglb leaves the VIP on lb1 (crash semantics); lb1 changes {c1:?}");
        assert!(vip_ms < 1000.0, "round {round}: lb2 took the VIP {vip_ms:.0} ms after the crash (goal ≤ 1 s)");
        assert!(conn_ms < 1000.0, "round {round}: first new connection via lb2 {conn_ms:.0} ms after the crash (goal ≤ 1 s)");
        crash_vip.push(vip_ms);
        crash_conn.push(conn_ms);

        // What clients and backends see while both have the address: ARP for the VIP points at lb2.
        assert!(holds_vip("lb1") && holds_vip("lb2"), "after a crash both hold the address (lb1 stale, lb2 master)");
        for host in ["client", "pg1", "pg2", "pg3"] {
            if let Some(mac) = neigh_of_vip(host) {
                assert!(mac.eq_ignore_ascii_case(&lb2_mac), "round {round}: {host}'s ARP entry for the VIP is {mac}, not lb2's {lb2_mac}: lb1's stale address still attracts traffic");
            }
        }
        for _ in 0..5 {
            assert_eq!(psql_vip(WRITE_PORT, "SELECT pg_is_in_recovery()"), "f", "round {round}: after the crash VIP:3000 reaches the primary via lb2");
            assert_eq!(psql_vip(READ_PORT, "SELECT 1"), "1", "round {round}: after the crash VIP:3001 answers via lb2");
        }
        assert_eq!(neigh_of_vip("client").map(|m| m.to_lowercase()), Some(lb2_mac.to_lowercase()), "round {round}: client's ARP for the VIP after the crash");
        wait_until(Duration::from_secs(5), "pglb status on lb2 to say it holds the VIP", || status_of("lb2").contains(&format!("VIP {VIP} held here | vrrp master")));

        // --- lb1 back: preempts, no window with both holding longer than one advert --------------
        let epoch = Instant::now();
        let s1 = VipSampler::start("lb1", epoch);
        let s2 = VipSampler::start("lb2", epoch);
        thread::sleep(Duration::from_millis(20));
        started.start_pglb("lb1");
        wait_until(Duration::from_secs(20), "lb1 to preempt after its restart", || holds_vip("lb1") && !holds_vip("lb2"));
        thread::sleep(Duration::from_millis(200));
        let end = epoch.elapsed();
        let (c1, c2) = (s1.finish(), s2.finish());
        // The restarted pglb first removes its stale address; from then on any overlap is a handover.
        let cleared = c1.iter().find(|(_, h)| !*h).map(|(t, _)| *t).unwrap_or_else(|| panic!("round {round}: the restarted lb1 never removed its stale VIP; lb1 changes {c1:?}"));
        let both = overlaps(&c1, &c2, cleared, end);
        let worst = both.iter().map(|(s, e)| *e - *s).max().unwrap_or_default();
        let lb1_at = first_held_after(&c1, cleared).expect("lb1 holds the VIP again");
        let lb2_off = c2.iter().find(|(t, h)| !*h && *t >= cleared).map(|(t, _)| *t);
        eprintln!("round {round}: preempt: lb1 removed its stale VIP at +{:.0} ms, took it at +{:.0} ms, lb2 released at {:?}; both held: {:?} (worst {:.1} ms)",
            ms(cleared), ms(lb1_at), lb2_off.map(ms), both.iter().map(|(s, e)| (ms(*s), ms(*e))).collect::<Vec<_>>(), ms(worst));
        assert!(worst <= ADVERT, "round {round}: both held the VIP for {worst:?} during lb1's preemption (more than one advert interval); lb1 {c1:?} lb2 {c2:?}");
        preempt_overlap.push(ms(worst));
        wait_lb1_master(&format!("round {round}: after lb1's preemption"));
        wait_until(Duration::from_secs(5), "client ARP for the VIP back on lb1", || {
            run(&["lab", "psql", "--port", "3000", "--", "-Atc", "SELECT 1"]).status.success()
                && neigh_of_vip("client").is_some_and(|m| m.eq_ignore_ascii_case(&lb1_mac))
        });

        // --- graceful stop of the master: lb2 within one advert interval + skew ----------------
        thread::sleep(Duration::from_millis(500)); // lb2 learns lb1's advert interval and master
        let pid = the_pglb_pid("lb1");
        let epoch = Instant::now();
        let s1 = VipSampler::start("lb1", epoch);
        let s2 = VipSampler::start("lb2", epoch);
        thread::sleep(Duration::from_millis(20));
        let t_term = epoch.elapsed();
        signal(pid, libc::SIGTERM);
        let clients: Vec<_> = [WRITE_PORT].map(|p| (p, client_until_via(p, lb2_mac.clone(), epoch, Duration::from_secs(5)))).into();
        let logs: Vec<(u16, ClientLog)> = clients.into_iter().map(|(p, h)| (p, h.join().expect("client thread"))).collect();
        wait_gone(pid, Duration::from_secs(5), "the stopped pglb to exit");
        started.reap();
        thread::sleep(Duration::from_millis(200));
        let (c1, c2) = (s1.finish(), s2.finish());
        let lb2_at = first_held_after(&c2, t_term).unwrap_or_else(|| panic!("round {round}: lb2 never took the VIP after SIGTERM to lb1; {c2:?}\nlb2 log:\n{}", pglb_log("lb2")));
        let lb1_off = c1.iter().find(|(t, h)| !*h && *t >= t_term).map(|(t, _)| *t).unwrap_or_else(|| panic!("round {round}: a gracefully stopped lb1 keeps the VIP; {c1:?}"));
        let take = lb2_at - t_term;
        let both = overlaps(&c1, &c2, t_term, epoch.elapsed());
        eprintln!("round {round}: graceful: lb1 released the VIP {:.1} ms after SIGTERM, lb2 holds it {:.1} ms after; both held: {:?}; first new VIP:3000 connection via lb2 {:?} ms",
            ms(lb1_off - t_term), ms(take), both, logs[0].1.first_via_new.map(|f| ms(f - t_term).round()));
        assert!(take < ADVERT + SKEW_LB2 + Duration::from_millis(40), "round {round}: graceful takeover took {take:?} (one advert interval + skew is {:?})", ADVERT + SKEW_LB2);
        assert!(logs[0].1.first_via_new.is_some(), "round {round}: no new connection via lb2 after the graceful stop: {:?}", logs[0].1);
        graceful_vip.push(ms(take));
        graceful_release.push(ms(lb1_off - t_term));
        eprintln!("round {round}: crash {vip_ms:.0} ms (VIP) / {conn_ms:.0} ms (new connections on 3000 and 3001); graceful {:.1} ms; preemption overlap {:.1} ms", ms(take), ms(worst));

        // lb1 back for the next round (or the end): a clean preemption, no stale address this time.
        let epoch = Instant::now();
        let s1 = VipSampler::start("lb1", epoch);
        let s2 = VipSampler::start("lb2", epoch);
        started.start_pglb("lb1");
        wait_until(Duration::from_secs(20), "lb1 to preempt after a graceful restart", || holds_vip("lb1") && !holds_vip("lb2"));
        thread::sleep(Duration::from_millis(100));
        let (c1, c2) = (s1.finish(), s2.finish());
        let both = overlaps(&c1, &c2, Duration::ZERO, epoch.elapsed());
        let worst = both.iter().map(|(s, e)| *e - *s).max().unwrap_or_default();
        eprintln!("round {round}: clean preemption: both held {worst:?}");
        assert!(worst <= ADVERT, "round {round}: both held the VIP for {worst:?} in a clean preemption; lb1 {c1:?} lb2 {c2:?}");
        preempt_overlap.push(ms(worst));
        wait_lb1_master(&format!("round {round}: end"));
    }
    eprintln!("SUMMARY {}", summary("crash: lb2 holds the VIP", &crash_vip));
    eprintln!("SUMMARY {}", summary("crash: first new connection via lb2 (3000 and 3001)", &crash_conn));
    eprintln!("SUMMARY {}", summary("graceful: lb2 holds the VIP", &graceful_vip));
    eprintln!("SUMMARY {}", summary("graceful: lb1 releases the VIP", &graceful_release));
    eprintln!("SUMMARY preemption: both held the VIP at most {:.1} ms", preempt_overlap.iter().copied().fold(0f64, f64::max));
}

// ---------------------------------------------------------------------------------------------
// keepalived

/// Debian's keepalived (VRRP only) in pgha-lb2 as lb2's VRRP speaker; files under
/// /run/pglb-lab/lb2/keepalived (removed by `lab down`); stopped on drop.
struct Keepalived {
    child: Option<Child>,
    dir: PathBuf,
}

impl Keepalived {
    fn start(priority: u8) -> Keepalived {
        let dir = PathBuf::from(format!("{STATE_DIR}/lb2/keepalived"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        fs::write(
            dir.join("keepalived.conf"),
            format!(
                "global_defs {{\n  router_id pglb_lab_lb2\n  vrrp_version 3\n}}\n\
                 vrrp_instance pglb_lab {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n  \
                 advert_int 0.1\n  virtual_ipaddress {{\n    {VIP}/16 dev eth0\n  }}\n}}\n"
            ),
        )
        .expect("write keepalived.conf");
        let log = OpenOptions::new().create(true).append(true).open(dir.join("keepalived.log")).expect("open keepalived.log");
        let child = Command::new("nsenter")
            .arg("--net=/run/netns/pgha-lb2")
            .args(["keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--use-file", &path("keepalived.conf")])
            .args(["--pid", &path("keepalived.pid"), "--vrrp_pid", &path("vrrp.pid"), "--checkers_pid", &path("checkers.pid")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn keepalived in pgha-lb2");
        Keepalived { child: Some(child), dir }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }

    /// SIGTERM to keepalived: it sends priority 0 and removes the VIP at once, then takes about
    /// a second to exit.
    fn terminate(&self) {
        if let Some(child) = &self.child {
            // SAFETY: our own, not yet reaped child (nsenter executes keepalived in place).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
    }

    /// [`terminate`](Keepalived::terminate), then waits for it (and its VRRP child) to exit;
    /// SIGKILL after 5 s.
    fn stop(&mut self) {
        let vrrp_pid = fs::read_to_string(self.dir.join("vrrp.pid")).ok().and_then(|p| p.trim().parse::<i32>().ok());
        self.terminate();
        let Some(mut child) = self.child.take() else { return };
        let start = Instant::now();
        let child_gone = |p: Option<i32>| p.is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists() || is_zombie(p));
        while start.elapsed() < Duration::from_secs(5) {
            if child.try_wait().ok().flatten().is_some() && child_gone(vrrp_pid) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(p) = vrrp_pid {
            // SAFETY: the pid comes from this run's pid file and the process still exists.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Measures from `t0` until `host` holds the VIP (polling `ip addr`).
fn time_until_holds(host: &str, t0: Instant, limit: Duration, ka: &Keepalived) -> Duration {
    while t0.elapsed() < limit {
        if holds_vip(host) {
            return t0.elapsed();
        }
        thread::sleep(Duration::from_millis(2));
    }
    panic!("{host} did not take the VIP within {limit:?}\nkeepalived log:\n{}\nlb1 pglb log:\n{}", ka.log(), pglb_log("lb1"));
}

#[test]
fn interoperates_with_keepalived_in_both_priority_orders() {
    let _lab = Lab::up();
    let mut started = Started::default();
    wait_lb1_master("after lab up");

    // lb2's pglb makes way for keepalived.
    let pid = the_pglb_pid("lb2");
    signal(pid, libc::SIGTERM);
    wait_gone(pid, Duration::from_secs(5), "pglb on lb2 to stop");
    assert!(holds_vip("lb1") && !holds_vip("lb2"), "lb1 keeps the VIP while lb2's pglb (backup) stops");

    // Order 1: pglb 150 on lb1, keepalived 100 on lb2 → pglb master, keepalived backup.
    let mut ka = Keepalived::start(100);
    wait_until(Duration::from_secs(5), "keepalived to enter BACKUP", || ka.log().contains("Entering BACKUP STATE"));
    thread::sleep(Duration::from_millis(1500));
    assert!(holds_vip("lb1") && !holds_vip("lb2"), "pglb (150) stays master over keepalived (100)\nkeepalived log:\n{}", ka.log());
    assert!(!ka.log().contains("Entering MASTER STATE"), "keepalived (100) must not become master under pglb (150):\n{}", ka.log());
    let st = status_of("lb1");
    assert!(st.contains("held here | vrrp master"), "pglb status on lb1:\n{st}");
    assert_eq!(psql_vip(WRITE_PORT, "SELECT pg_is_in_recovery()"), "f");

    // pglb stops gracefully → keepalived takes over.
    let pid = the_pglb_pid("lb1");
    let t0 = Instant::now();
    signal(pid, libc::SIGTERM);
    let took = time_until_holds("lb2", t0, Duration::from_secs(3), &ka);
    wait_gone(pid, Duration::from_secs(5), "pglb on lb1 to stop");
    assert!(!holds_vip("lb1"), "a gracefully stopped pglb removes the VIP");
    eprintln!("keepalived (100) takes over from a gracefully stopped pglb (150) in {:.0} ms", ms(took));
    assert!(took < Duration::from_millis(500), "keepalived took over after {took:?}");

    // pglb back at 150 → preempts keepalived (100).
    started.start_pglb("lb1");
    let t0 = Instant::now();
    wait_until(Duration::from_secs(20), "pglb (150) to preempt keepalived (100)", || holds_vip("lb1") && !holds_vip("lb2"));
    eprintln!("pglb (150) preempted keepalived (100) {:.0} ms after its start", ms(t0.elapsed()));
    wait_until(Duration::from_secs(5), "keepalived back to BACKUP", || ka.log().matches("Entering BACKUP STATE").count() >= 2);
    wait_lb1_master("pglb master over keepalived");
    ka.stop();
    thread::sleep(Duration::from_millis(500));
    assert!(holds_vip("lb1") && !holds_vip("lb2"), "a stopping keepalived backup leaves pglb master");

    // Order 2: keepalived 200 on lb2 → keepalived master, pglb (150) backup.
    let mut ka = Keepalived::start(200);
    let t0 = Instant::now();
    let took = time_until_holds("lb2", t0, Duration::from_secs(5), &ka);
    wait_until(Duration::from_secs(3), "pglb (150) to give the VIP to keepalived (200)", || !holds_vip("lb1"));
    eprintln!("keepalived (200) preempted pglb (150) {:.0} ms after its start", ms(took));
    thread::sleep(Duration::from_millis(1000));
    assert!(holds_vip("lb2") && !holds_vip("lb1"), "one master: keepalived (200)\nkeepalived log:\n{}", ka.log());
    let st = status_of("lb1");
    assert!(st.contains(&format!("VIP {VIP} held by {LB2_ADDR} | vrrp backup")), "pglb status on lb1 names keepalived's lb2 as the holder:\n{st}");

    // keepalived stops gracefully (priority 0) → pglb takes over.
    let t0 = Instant::now();
    ka.terminate();
    let took = time_until_holds("lb1", t0, Duration::from_secs(3), &ka);
    ka.stop();
    let stop_took = t0.elapsed();
    wait_until(Duration::from_secs(3), "keepalived to remove the VIP on lb2", || holds_vip("lb1") && !holds_vip("lb2"));
    eprintln!("pglb (150) holds the VIP {:.0} ms after SIGTERM to keepalived (200) (keepalived needed {:.0} ms to exit)", ms(took), ms(stop_took));
    assert!(took < Duration::from_millis(500), "pglb took over from keepalived after {took:?}");
    wait_lb1_master("pglb master after keepalived stopped");
    assert!(ka.log().contains("Entering MASTER STATE"), "keepalived (200) was master:\n{}", ka.log());
    let st = status_of("lb1");
    assert!(st.contains("held here | vrrp master"), "pglb status on lb1:\n{st}");
}
