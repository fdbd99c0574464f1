//! pglb as systemd's `Type=notify` unit sees it (config/systemd/pglb.service), without systemd:
//! the test plays the service manager. It binds the notification socket, starts pglb on lb2 with
//! `NOTIFY_SOCKET` and `WATCHDOG_USEC` as systemd sets them, and checks the protocol: `READY=1`
//! only once the XDP program is attached, `WATCHDOG=1` at least three times per watchdog
//! interval from the run loop (a stopped loop sends none, which is what makes systemd restart a
//! hung daemon), `STOPPING=1` on SIGTERM.

use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pglb_tests::{Lab, STATE_DIR, lb_config, netns, pglb_bin, pglb_log, pglb_pid, pglb_pids, signal, start_pglb, wait_gone, wait_until};

/// The watchdog interval the test announces (`WatchdogSec=` in microseconds, as systemd does).
const WATCHDOG: Duration = Duration::from_millis(1500);

/// The service manager's end of the notification socket.
struct Manager {
    socket: UnixDatagram,
    path: String,
}

impl Manager {
    fn bind() -> Manager {
        let path = format!("{STATE_DIR}/notify-test.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {path}: {e}"));
        Manager { socket, path }
    }

    /// The next notification (its `KEY=value` lines), or `None` after `limit`.
    fn next(&self, limit: Duration) -> Option<(Instant, Vec<String>)> {
        self.socket.set_read_timeout(Some(limit)).expect("setting a read timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some((Instant::now(), String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned).collect())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("receiving a notification: {e}"),
        }
    }

    /// Every notification that arrives within `window`.
    fn collect(&self, window: Duration) -> Vec<(Instant, Vec<String>)> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            match self.next(left) {
                Some(m) => got.push(m),
                None => break,
            }
        }
        got
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn xdp_attached(host: &str) -> bool {
    let out = Command::new("ip").args(["-n", &netns(host), "link", "show", "dev", "eth0"]).output().expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

fn watchdog_pings(messages: &[(Instant, Vec<String>)]) -> Vec<Instant> {
    messages.iter().filter(|(_, lines)| lines.iter().any(|l| l == "WATCHDOG=1")).map(|(at, _)| *at).collect()
}

#[test]
fn service_notify_ready_watchdog_and_stopping() {
    let _lab = Lab::up();
    // lb2 is the backup: restarting it leaves the VIP where it is.
    let old = pglb_pid("lb2");
    signal(old, libc::SIGTERM);
    wait_gone(old, Duration::from_secs(10), "lb2's pglb to stop");
    // A stopped pglb leaves its XDP link and maps pinned for the next start; removing the pins
    // detaches the program, as on a host that boots: READY=1 must then wait for the attach.
    std::fs::remove_dir_all("/sys/fs/bpf/pglb/lb2").expect("removing lb2's pins");
    wait_until(Duration::from_secs(10), "lb2's XDP program to be detached", || !xdp_attached("lb2"));

    let manager = Manager::bind();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(format!("{STATE_DIR}/lb2/pglb.log"))
        .expect("lb2's log");
    let started = Instant::now();
    let status = Command::new("setsid")
        .arg("-f")
        .arg("nsenter")
        .arg(format!("--net=/run/netns/{}", netns("lb2")))
        .arg(pglb_bin())
        .args(["run", "--config"])
        .arg(lb_config("lb2"))
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .status()
        .expect("starting pglb on lb2");
    assert!(status.success(), "setsid -f nsenter pglb: {status}");

    // READY=1, with a status line, and only once the data plane is attached.
    let (ready_at, ready) = loop {
        let (at, lines) = manager.next(Duration::from_secs(30)).expect("READY=1 within 30 s of the start");
        if lines.iter().any(|l| l == "READY=1") {
            break (at, lines);
        }
        assert!(
            lines.iter().all(|l| l != "STOPPING=1"),
            "pglb stopped before it was ready: {lines:?}\n{}",
            pglb_log("lb2")
        );
    };
    assert!(xdp_attached("lb2"), "READY=1 came before the XDP program was attached");
    assert!(
        ready.iter().any(|l| l.starts_with("STATUS=") && l.contains("data plane attached")),
        "READY=1 carries a status line: {ready:?}"
    );
    println!("READY=1 {} ms after the start", (ready_at - started).as_millis());
    let pid = pglb_pid("lb2");
    assert!(pglb_log("lb2").contains("systemd watchdog on"), "pglb logs that the watchdog is on");

    // WATCHDOG=1: at least three per interval, never a gap of a whole interval.
    let window = 3 * WATCHDOG;
    let pings = watchdog_pings(&manager.collect(window));
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let max_gap = gaps.iter().max().copied().unwrap_or(window);
    println!("{} WATCHDOG=1 in {} ms, largest gap {} ms", pings.len(), window.as_millis(), max_gap.as_millis());
    assert!(pings.len() >= 8, "{} WATCHDOG=1 in {window:?}, want ≥ 8 (3 per {WATCHDOG:?})", pings.len());
    assert!(max_gap < WATCHDOG / 2, "a {max_gap:?} gap between WATCHDOG=1 (the interval is {WATCHDOG:?})");

    // A loop that does not turn sends nothing: systemd would restart it after WatchdogSec.
    signal(pid, libc::SIGSTOP);
    let while_stopped = watchdog_pings(&manager.collect(WATCHDOG + Duration::from_millis(500)));
    signal(pid, libc::SIGCONT);
    assert!(while_stopped.is_empty(), "{} WATCHDOG=1 from a stopped pglb", while_stopped.len());
    let resumed = manager.collect(WATCHDOG);
    assert!(!watchdog_pings(&resumed).is_empty(), "WATCHDOG=1 again once the loop runs: {resumed:?}");

    // SIGTERM (systemctl stop): STOPPING=1, then the process exits.
    signal(pid, libc::SIGTERM);
    let stopping = loop {
        let (_, lines) = manager.next(Duration::from_secs(10)).expect("STOPPING=1 within 10 s of SIGTERM");
        if lines.iter().any(|l| l == "STOPPING=1") {
            break lines;
        }
    };
    assert!(stopping.iter().any(|l| l.starts_with("STATUS=")), "STOPPING=1 carries a status line: {stopping:?}");
    wait_gone(pid, Duration::from_secs(10), "lb2's pglb to exit after SIGTERM");
    assert!(pglb_pids("lb2").is_empty());

    // Back to the lab's own pglb on lb2 (the guard tears everything down after).
    start_pglb("lb2");
    wait_until(Duration::from_secs(30), "lb2's pglb to attach again", || xdp_attached("lb2"));
}
