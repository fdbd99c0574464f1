//! End to end: two VRRP runners in the network namespaces `pglbt-vrrp-a` and `pglbt-vrrp-b`,
//! joined by a veth pair, elect one master, move the VIP on a crash, preempt on restart and hand
//! over on a graceful stop; and the same against keepalived (VRRPv3) as the peer, in both
//! priority orders. Nothing is added to the root namespace; the namespaces (and keepalived) are
//! removed by guards even when an assertion fails. Needs root, `ip` and `keepalived`.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lb_user::vip::packet::DropReason;
use lb_user::vip::{VrrpCounters, VrrpParams, VrrpRunner, VrrpState, VrrpStatus};
use tokio::sync::{oneshot, watch};

const NS_A: &str = "pglbt-vrrp-a";
const NS_B: &str = "pglbt-vrrp-b";
const IFACE: &str = "vrrp0";
const ADDR_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// 10 cs: Master_Down_Interval is 341 ms for priority 150 and 361 ms for 100.
const ADVERT_CS: u16 = 10;

/// Both tests use the same namespace names, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `ip` with `args`, panicking with its stderr on failure.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("could not run ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The two namespaces and the veth between them; removed on drop.
struct Lab;

impl Lab {
    fn up() -> Lab {
        Lab::remove();
        let lab = Lab;
        ip(&["netns", "add", NS_A]);
        ip(&["netns", "add", NS_B]);
        // Created inside A, its peer moved straight into B: nothing touches the root namespace.
        ip(&["-n", NS_A, "link", "add", IFACE, "type", "veth", "peer", "name", IFACE, "netns", NS_B]);
        for (ns, addr) in [(NS_A, ADDR_A), (NS_B, ADDR_B)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", IFACE]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", IFACE, "up"]);
        }
        lab
    }

    fn remove() {
        for ns in [NS_A, NS_B] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }

    fn has_vip(ns: &str) -> bool {
        ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", IFACE]).contains(&format!("{VIP}/32"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Lab::remove();
    }
}

enum Stop {
    Graceful,
    Crash,
}

/// A runner on its own thread inside a namespace, with a current-thread runtime.
struct Node {
    status: watch::Receiver<VrrpStatus>,
    counters: Arc<VrrpCounters>,
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

fn enter_netns(name: &str) {
    let ns = File::open(format!("/run/netns/{name}")).unwrap_or_else(|e| panic!("open netns {name}: {e}"));
    // SAFETY: `ns` is an open network-namespace descriptor; setns changes only this thread's
    // namespace, and the thread was spawned for this runner alone.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {name}: {}", std::io::Error::last_os_error());
}

impl Node {
    fn start(ns: &'static str, own: Ipv4Addr, priority: u8) -> Node {
        Node::start_vrid(ns, own, priority, 42)
    }

    fn start_vrid(ns: &'static str, own: Ipv4Addr, priority: u8, vrid: u8) -> Node {
        Node::start_with(ns, Node::params(own, priority, vrid))
    }

    fn params(own: Ipv4Addr, priority: u8, vrid: u8) -> VrrpParams {
        let mut params = VrrpParams::new(IFACE, vrid, priority, VIP, own);
        params.advert_interval_cs = ADVERT_CS;
        params.garp_burst = 2;
        params
    }

    fn start_with(ns: &'static str, params: VrrpParams) -> Node {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<Stop>();
        let thread = std::thread::spawn(move || {
            enter_netns(ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime for a runner");
            rt.block_on(async move {
                let runner = VrrpRunner::open(params).await.unwrap_or_else(|e| panic!("open runner in {ns}: {e:?}"));
                let handle = runner.spawn();
                ready_tx.send((handle.status(), handle.counters())).expect("test thread waits for the runner");
                match stop_rx.await {
                    Ok(Stop::Crash) => handle.abort(),
                    Ok(Stop::Graceful) | Err(_) => handle.shutdown().await.expect("graceful shutdown"),
                }
            });
        });
        let (status, counters) =
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("runner in {ns} did not open: {e}"));
        Node { status, counters, stop: Some(stop_tx), thread: Some(thread) }
    }

    fn state(&self) -> VrrpState {
        self.status.borrow().state
    }

    fn stop(mut self, how: Stop) {
        let _ = self.stop.take().expect("stopped once").send(how);
        self.thread.take().expect("joined once").join().expect("runner thread panicked");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Graceful);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `cond` every 5 ms; returns how long it took, or panics with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn privileged(needs_keepalived: bool) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let has_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    let has_keepalived =
        !needs_keepalived || Command::new("keepalived").arg("--version").output().is_ok_and(|o| o.status.success());
    if root && has_ip && has_keepalived {
        return true;
    }
    let why = format!(
        "needs root, iproute2 and keepalived (`cargo xtask setup` installs them) \
         (root: {root}, ip: {has_ip}, keepalived: {has_keepalived})"
    );
    assert!(std::env::var_os("CI").is_none(), "vrrp netns test cannot run in CI: {why}");
    eprintln!("skipping the vrrp netns test outside CI: {why}");
    false
}

#[test]
fn two_runners_elect_take_over_preempt_and_hand_over() {
    if !privileged(false) {
        return;
    }
    let _serial = serial();
    let _lab = Lab::up();

    // B alone becomes master.
    let b = Node::start(NS_B, ADDR_B, 100);
    wait_for("b master alone", Duration::from_secs(3), || b.state() == VrrpState::Master);
    wait_for("vip on b", Duration::from_secs(1), || Lab::has_vip(NS_B));

    // A (150) starts, preempts, and B steps down and drops the VIP.
    let a = Node::start(NS_A, ADDR_A, 150);
    wait_for("a preempts", Duration::from_secs(3), || a.state() == VrrpState::Master);
    wait_for("b steps down", Duration::from_secs(1), || b.state() == VrrpState::Backup);
    wait_for("vip moves to a", Duration::from_secs(1), || Lab::has_vip(NS_A) && !Lab::has_vip(NS_B));
    {
        let st = b.status.borrow();
        assert_eq!(st.master_address, Some(ADDR_A), "b knows who holds the vip");
        assert!(st.peers_heard.iter().any(|(p, _)| *p == ADDR_A), "b heard a: {:?}", st.peers_heard);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((a.state(), b.state()), (VrrpState::Master, VrrpState::Backup), "stable after 5 adverts");
    assert!(a.counters.adverts_sent.load(Ordering::Relaxed) >= 5, "a advertises");
    assert!(b.counters.adverts_received.load(Ordering::Relaxed) >= 5, "b receives a's adverts");
    for reason in DropReason::ALL {
        assert_eq!(b.counters.dropped(reason), 0, "b dropped a packet of a: {reason:?}");
        assert_eq!(a.counters.dropped(reason), 0, "a dropped a packet of b: {reason:?}");
    }
    assert!(a.counters.garps_sent.load(Ordering::Relaxed) >= 4, "a sent its garp burst");

    // Crash A: B takes over within Master_Down_Interval (361 ms) plus scheduling slack.
    a.stop(Stop::Crash);
    let crash_takeover = wait_for("b takes over after a crash", Duration::from_secs(2), || b.state() == VrrpState::Master);
    wait_for("vip on b after crash", Duration::from_secs(1), || Lab::has_vip(NS_B));
    assert!(crash_takeover < Duration::from_millis(800), "crash takeover took {crash_takeover:?}");
    eprintln!("crash takeover at 10 cs adverts: {crash_takeover:?}");

    // A restarts: removes its stale VIP, preempts; B drops the VIP.
    let a = Node::start(NS_A, ADDR_A, 150);
    wait_for("a preempts again", Duration::from_secs(3), || a.state() == VrrpState::Master);
    wait_for("b steps down again", Duration::from_secs(1), || b.state() == VrrpState::Backup);
    wait_for("vip only on a", Duration::from_secs(1), || Lab::has_vip(NS_A) && !Lab::has_vip(NS_B));

    // Graceful stop of A: priority 0 makes B take over after Skew_Time (61 ms), well before
    // Master_Down_Interval (361 ms).
    let t0 = Instant::now();
    a.stop(Stop::Graceful);
    wait_for("b takes over after a graceful stop", Duration::from_secs(2), || b.state() == VrrpState::Master);
    let handover = t0.elapsed();
    assert!(handover < Duration::from_millis(300), "graceful handover took {handover:?}");
    eprintln!("graceful handover at 10 cs adverts: {handover:?}");
    wait_for("vip only on b after graceful stop", Duration::from_secs(1), || Lab::has_vip(NS_B) && !Lab::has_vip(NS_A));

    b.stop(Stop::Graceful);
    assert!(!Lab::has_vip(NS_B), "graceful stop of the master removes the vip");
}

/// keepalived's VRRP subsystem in a namespace, as a VRRPv3 peer; stopped (SIGTERM, so it sends
/// priority 0) and its files removed on drop.
struct Keepalived {
    child: Option<Child>,
    dir: PathBuf,
}

impl Keepalived {
    fn start(ns: &str, priority: u8) -> Keepalived {
        let dir = std::env::temp_dir().join(format!("pglbt-vrrp-keepalived-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let conf = dir.join("keepalived.conf");
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id pglbt_{ns}\n  vrrp_version 3\n}}\n\
                 vrrp_instance pglbt {{\n  state BACKUP\n  interface {IFACE}\n  virtual_router_id 42\n  \
                 priority {priority}\n  advert_int 0.1\n  virtual_ipaddress {{\n    {VIP}/32\n  }}\n}}\n"
            ),
        )
        .expect("write keepalived.conf");
        let log = File::create(dir.join("keepalived.log")).expect("create keepalived.log");
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "keepalived", "--dont-fork", "--log-console", "--vrrp"])
            .args(["--use-file", &path("keepalived.conf")])
            .args(["--pid", &path("keepalived.pid"), "--vrrp_pid", &path("vrrp.pid"), "--checkers_pid", &path("checkers.pid")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn keepalived");
        Keepalived { child: Some(child), dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }

    /// SIGTERM (graceful: keepalived sends priority 0 and removes the VIP), without waiting.
    fn terminate(&self) {
        let Some(child) = &self.child else { return };
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory preconditions; `pid` is our own child (ip netns exec
        // executes keepalived in place), not yet reaped, so it cannot be a recycled pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    /// [`terminate`](Keepalived::terminate), then waits for it to exit (killing it after 5 s).
    fn stop(&mut self) {
        self.terminate();
        let Some(mut child) = self.child.take() else { return };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Last resort: the VRRP child first (it would survive its parent), then the parent.
        if let Ok(vrrp_pid) = std::fs::read_to_string(self.dir.join("vrrp.pid"))
            && let Ok(vrrp_pid) = vrrp_pid.trim().parse::<libc::pid_t>()
        {
            // SAFETY: as above; the pid comes from keepalived's own pid file for this run.
            unsafe { libc::kill(vrrp_pid, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn interoperates_with_keepalived_in_both_priority_orders() {
    if !privileged(true) {
        return;
    }
    let _serial = serial();
    let _lab = Lab::up();

    // keepalived (150) in A is master; pglb (100) in B stays backup and accepts its adverts.
    let mut ka = Keepalived::start(NS_A, 150);
    wait_for("keepalived master with the vip", Duration::from_secs(5), || Lab::has_vip(NS_A));
    let b = Node::start(NS_B, ADDR_B, 100);
    wait_for("pglb hears keepalived", Duration::from_secs(2), || b.status.borrow().master_address == Some(ADDR_A));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.state(), VrrpState::Backup, "pglb must stay backup under keepalived at 150; keepalived log:\n{}", ka.log());
    assert_eq!(b.counters.transitions_to(VrrpState::Master), 0, "pglb never became master");
    assert!(!Lab::has_vip(NS_B), "backup pglb must not hold the vip");
    assert!(b.counters.adverts_received.load(Ordering::Relaxed) >= 5, "pglb accepts keepalived's adverts");
    for reason in DropReason::ALL {
        assert_eq!(b.counters.dropped(reason), 0, "pglb dropped a keepalived advert: {reason:?}");
    }

    // keepalived stops gracefully: pglb takes over after Skew_Time.
    let t0 = Instant::now();
    ka.terminate();
    wait_for("pglb takes over from keepalived", Duration::from_secs(2), || b.state() == VrrpState::Master);
    let handover = t0.elapsed();
    wait_for("vip moves to pglb", Duration::from_secs(1), || Lab::has_vip(NS_B) && !Lab::has_vip(NS_A));
    eprintln!("keepalived -> pglb graceful handover: {handover:?}");
    assert!(handover < Duration::from_millis(300), "graceful handover from keepalived took {handover:?}");
    ka.stop();
    drop(ka);

    // keepalived (150) comes back and preempts pglb (100), which drops the VIP.
    let ka = Keepalived::start(NS_A, 150);
    wait_for("keepalived preempts pglb", Duration::from_secs(5), || b.state() == VrrpState::Backup);
    wait_for("vip moves to keepalived", Duration::from_secs(1), || Lab::has_vip(NS_A) && !Lab::has_vip(NS_B));
    b.stop(Stop::Graceful);

    // pglb at 200 preempts keepalived (150), which drops the VIP and stays backup.
    let b = Node::start(NS_B, ADDR_B, 200);
    wait_for("pglb preempts keepalived", Duration::from_secs(3), || b.state() == VrrpState::Master);
    wait_for("vip moves to pglb", Duration::from_secs(2), || Lab::has_vip(NS_B) && !Lab::has_vip(NS_A));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.state(), VrrpState::Master, "keepalived must accept pglb at 200; keepalived log:\n{}", ka.log());
    assert!(!Lab::has_vip(NS_A), "keepalived must stay backup without the vip; log:\n{}", ka.log());
    for reason in DropReason::ALL {
        assert_eq!(b.counters.dropped(reason), 0, "pglb dropped a keepalived advert: {reason:?}");
    }

    // pglb stops gracefully: keepalived takes the VIP.
    let t0 = Instant::now();
    b.stop(Stop::Graceful);
    wait_for("keepalived takes over from pglb", Duration::from_secs(2), || Lab::has_vip(NS_A));
    eprintln!("pglb -> keepalived graceful handover (vip seen on keepalived): {:?}", t0.elapsed());
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "keepalived should take over after skew time on pglb's priority 0, took {:?}; log:\n{}",
        t0.elapsed(),
        ka.log()
    );
    drop(ka);
}

#[test]
fn unicast_peers_elect_and_hand_over() {
    if !privileged(false) {
        return;
    }
    let _serial = serial();
    let _lab = Lab::up();
    let unicast = |own, peer, priority| VrrpParams { unicast_peers: vec![peer], ..Node::params(own, priority, 42) };
    let a = Node::start_with(NS_A, unicast(ADDR_A, ADDR_B, 150));
    let b = Node::start_with(NS_B, unicast(ADDR_B, ADDR_A, 100));
    wait_for("a master over unicast", Duration::from_secs(3), || a.state() == VrrpState::Master);
    wait_for("b backup hearing a", Duration::from_secs(2), || {
        b.state() == VrrpState::Backup && b.status.borrow().master_address == Some(ADDR_A)
    });
    wait_for("vip only on a", Duration::from_secs(1), || Lab::has_vip(NS_A) && !Lab::has_vip(NS_B));
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.counters.adverts_received.load(Ordering::Relaxed) >= 3, "b receives unicast adverts");
    assert_eq!(b.counters.legacy_checksum.load(Ordering::Relaxed), 0, "unicast checksum uses the real destination");
    for reason in DropReason::ALL {
        assert_eq!(b.counters.dropped(reason), 0, "b dropped a unicast advert: {reason:?}");
    }
    let t0 = Instant::now();
    a.stop(Stop::Graceful);
    wait_for("b takes over over unicast", Duration::from_secs(2), || b.state() == VrrpState::Master);
    assert!(t0.elapsed() < Duration::from_millis(300), "unicast graceful handover took {:?}", t0.elapsed());
    wait_for("vip only on b", Duration::from_secs(1), || Lab::has_vip(NS_B) && !Lab::has_vip(NS_A));
    b.stop(Stop::Graceful);
}
