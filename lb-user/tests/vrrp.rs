//! End to end: two VRRP runners in the network namespaces `pglbt-vrrp-a` and `pglbt-vrrp-b`,
//! joined by a veth pair, elect one master, move the VIP on a crash, preempt on restart and hand
//! over on a graceful stop; and the same against keepalived (VRRPv3) as the peer, in both
//! priority orders. Nothing is added to the root namespace; the namespaces (and keepalived) are
//! removed by guards even when an assertion fails. Needs root, `ip` and `keepalived`: without
//! them the tests fail (they never skip).
//!
//! What is checked is what the protocol promises, not how fast a busy machine delivers it: a
//! graceful handover is proven by the backup forgetting the leaving master (it does so only on a
//! priority-0 advert), stability by adverts counted rather than time slept. Takeover times are
//! printed; the waits around them are generous limits, not goals.

mod support;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lb_user::vip::packet::DropReason;
use lb_user::vip::{VrrpCounters, VrrpParams, VrrpRunner, VrrpState, VrrpStatus};
use support::keepalived::{Instance, Keepalived};
use support::{TempDir, enter_netns, require_program, require_root, wait_for};
use tokio::sync::{oneshot, watch};

const NS_A: &str = "pglbt-vrrp-a";
const NS_B: &str = "pglbt-vrrp-b";
const IFACE: &str = "vrrp0";
const ADDR_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// 10 cs: Master_Down_Interval is 341 ms for priority 150 and 361 ms for 100.
const ADVERT_CS: u16 = 10;
/// The limit of every wait: far above any VRRP timer here (the longest is 361 ms) and above
/// keepalived's start-up, so that only a fault, not a busy machine, reaches it.
const LIMIT: Duration = Duration::from_secs(10);
/// Adverts a state must survive to count as stable: more than Master_Down_Interval (3.6
/// adverts at priority 100), after which a backup that heard nothing would take over.
const STABLE_ADVERTS: u64 = 5;

/// Both tests use the same namespace names, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fails (never skips) unless the test can run: root, iproute2 and, for the interop test,
/// keepalived.
fn require_privileges(needs_keepalived: bool) {
    require_root();
    require_program("ip", &["-V"]);
    if needs_keepalived {
        require_program("keepalived", &["--version"]);
    }
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

    fn adverts_received(&self) -> u64 {
        self.counters.adverts_received.load(Ordering::Relaxed)
    }

    fn adverts_sent(&self) -> u64 {
        self.counters.adverts_sent.load(Ordering::Relaxed)
    }

    /// Whether `peer` is among the peers this node has heard. A peer that sent priority 0 (a
    /// master leaving gracefully) is forgotten at once; one that went silent is not.
    fn remembers(&self, peer: Ipv4Addr) -> bool {
        self.status.borrow().peers_heard.iter().any(|(p, _)| *p == peer)
    }

    /// Waits until this node has received `n` more adverts than now.
    fn wait_adverts_received(&self, n: u64, what: &str) {
        let from = self.adverts_received();
        wait_for(&format!("{what} ({n} adverts received)"), LIMIT, || self.adverts_received() >= from + n);
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

#[test]
fn two_runners_elect_take_over_preempt_and_hand_over() {
    require_privileges(false);
    let _serial = serial();
    let _lab = Lab::up();

    // B alone becomes master.
    let b = Node::start(NS_B, ADDR_B, 100);
    wait_for("b master alone", LIMIT, || b.state() == VrrpState::Master);
    wait_for("vip on b", LIMIT, || Lab::has_vip(NS_B));

    // A (150) starts, preempts, and B steps down and drops the VIP.
    let a = Node::start(NS_A, ADDR_A, 150);
    wait_for("a preempts", LIMIT, || a.state() == VrrpState::Master);
    wait_for("b steps down", LIMIT, || b.state() == VrrpState::Backup);
    wait_for("vip moves to a", LIMIT, || Lab::has_vip(NS_A) && !Lab::has_vip(NS_B));
    {
        let st = b.status.borrow();
        assert_eq!(st.master_address, Some(ADDR_A), "b knows who holds the vip");
        assert!(st.peers_heard.iter().any(|(p, _)| *p == ADDR_A), "b heard a: {:?}", st.peers_heard);
    }
    // Stable over more adverts than Master_Down_Interval: nobody changes state.
    let b_masters = b.counters.transitions_to(VrrpState::Master);
    b.wait_adverts_received(STABLE_ADVERTS, "b hearing a while a stays master");
    assert_eq!((a.state(), b.state()), (VrrpState::Master, VrrpState::Backup), "stable over {STABLE_ADVERTS} adverts");
    assert_eq!(b.counters.transitions_to(VrrpState::Master), b_masters, "b did not become master meanwhile");
    assert!(a.adverts_sent() >= STABLE_ADVERTS, "a advertises");
    for reason in DropReason::ALL {
        assert_eq!(b.counters.dropped(reason), 0, "b dropped a packet of a: {reason:?}");
        assert_eq!(a.counters.dropped(reason), 0, "a dropped a packet of b: {reason:?}");
    }
    wait_for("a's gratuitous ARP burst", LIMIT, || a.counters.garps_sent.load(Ordering::Relaxed) >= 4);

    // Crash A: B takes over when its Master_Down_Interval (361 ms) runs out, having heard no
    // priority 0 (so it still remembers A).
    a.stop(Stop::Crash);
    let crash_takeover = wait_for("b takes over after a crash", LIMIT, || b.state() == VrrpState::Master);
    eprintln!("crash takeover at 10 cs adverts: {crash_takeover:?} (Master_Down_Interval 361 ms after a's last advert)");
    assert!(b.remembers(ADDR_A), "a crashed runner sends no priority 0, yet b forgot a");
    wait_for("vip on b after crash", LIMIT, || Lab::has_vip(NS_B));

    // A restarts: removes its stale VIP, preempts; B drops the VIP.
    let a = Node::start(NS_A, ADDR_A, 150);
    wait_for("a preempts again", LIMIT, || a.state() == VrrpState::Master);
    wait_for("b steps down again", LIMIT, || b.state() == VrrpState::Backup);
    wait_for("vip only on a", LIMIT, || Lab::has_vip(NS_A) && !Lab::has_vip(NS_B));

    // Graceful stop of A: its priority 0 makes B forget A and take over after Skew_Time (61 ms)
    // instead of Master_Down_Interval (361 ms).
    let t0 = Instant::now();
    a.stop(Stop::Graceful);
    wait_for("b takes over after a graceful stop", LIMIT, || b.state() == VrrpState::Master);
    let handover = t0.elapsed();
    eprintln!("graceful handover at 10 cs adverts: {handover:?} (Skew_Time 61 ms)");
    assert!(!b.remembers(ADDR_A), "b took over without a's priority 0 (it still remembers a): a timeout, not a handover");
    wait_for("vip only on b after graceful stop", LIMIT, || Lab::has_vip(NS_B) && !Lab::has_vip(NS_A));

    b.stop(Stop::Graceful);
    assert!(!Lab::has_vip(NS_B), "graceful stop of the master removes the vip");
}

/// keepalived at `priority` in namespace A, files in `dir`.
fn keepalived(dir: &TempDir, priority: u8) -> Keepalived {
    let vip = format!("{VIP}/32");
    Keepalived::start(NS_A, &dir.0, &Instance { router_id: "pglbt_vrrp_a", interface: IFACE, vrid: 42, priority, vip: &vip })
}

#[test]
fn interoperates_with_keepalived_in_both_priority_orders() {
    require_privileges(true);
    let _serial = serial();
    let _lab = Lab::up();
    let dir = TempDir::new("vrrp-keepalived");

    // keepalived (150) in A is master; pglb (100) in B stays backup and accepts its adverts.
    let mut ka = keepalived(&dir, 150);
    wait_for("keepalived master with the vip", LIMIT, || Lab::has_vip(NS_A));
    let b = Node::start(NS_B, ADDR_B, 100);
    wait_for("pglb hears keepalived", LIMIT, || b.status.borrow().master_address == Some(ADDR_A));
    b.wait_adverts_received(STABLE_ADVERTS, "pglb hearing keepalived");
    assert_eq!(b.state(), VrrpState::Backup, "pglb must stay backup under keepalived at 150; keepalived log:\n{}", ka.log());
    assert_eq!(b.counters.transitions_to(VrrpState::Master), 0, "pglb never became master");
    assert!(!Lab::has_vip(NS_B), "backup pglb must not hold the vip");
    for reason in DropReason::ALL {
        assert_eq!(b.counters.dropped(reason), 0, "pglb dropped a keepalived advert: {reason:?}");
    }

    // keepalived stops gracefully: its priority 0 makes pglb forget it and take over after
    // Skew_Time.
    let t0 = Instant::now();
    ka.terminate();
    wait_for("pglb takes over from keepalived", LIMIT, || b.state() == VrrpState::Master);
    let handover = t0.elapsed();
    eprintln!("keepalived -> pglb graceful handover: {handover:?} (Skew_Time 61 ms)");
    assert!(!b.remembers(ADDR_A), "pglb took over without keepalived's priority 0 (a timeout, not a handover); keepalived log:\n{}", ka.log());
    wait_for("vip moves to pglb", LIMIT, || Lab::has_vip(NS_B) && !Lab::has_vip(NS_A));
    ka.stop();
    drop(ka);

    // keepalived (150) comes back and preempts pglb (100), which drops the VIP.
    let ka = keepalived(&dir, 150);
    wait_for("keepalived preempts pglb", LIMIT, || b.state() == VrrpState::Backup);
    wait_for("vip moves to keepalived", LIMIT, || Lab::has_vip(NS_A) && !Lab::has_vip(NS_B));
    b.stop(Stop::Graceful);

    // pglb at 200 preempts keepalived (150), which drops the VIP and stays backup.
    let b = Node::start(NS_B, ADDR_B, 200);
    wait_for("pglb preempts keepalived", LIMIT, || b.state() == VrrpState::Master);
    wait_for("vip moves to pglb", LIMIT, || Lab::has_vip(NS_B) && !Lab::has_vip(NS_A));
    // Stable over more of pglb's adverts than keepalived's Master_Down_Interval.
    let b_backups = b.counters.transitions_to(VrrpState::Backup);
    let from = b.adverts_sent();
    wait_for("pglb to advertise as master", LIMIT, || b.adverts_sent() >= from + STABLE_ADVERTS);
    assert_eq!(b.state(), VrrpState::Master, "keepalived must accept pglb at 200; keepalived log:\n{}", ka.log());
    assert_eq!(b.counters.transitions_to(VrrpState::Backup), b_backups, "pglb stepped down meanwhile; keepalived log:\n{}", ka.log());
    assert!(!Lab::has_vip(NS_A), "keepalived must stay backup without the vip; log:\n{}", ka.log());
    for reason in DropReason::ALL {
        assert_eq!(b.counters.dropped(reason), 0, "pglb dropped a keepalived advert: {reason:?}");
    }

    // pglb stops gracefully: keepalived takes the VIP after its Skew_Time (41 ms at 150) on
    // pglb's priority 0; the figure is printed, the wait is only a limit.
    let t0 = Instant::now();
    b.stop(Stop::Graceful);
    wait_for("keepalived takes over from pglb", LIMIT, || Lab::has_vip(NS_A));
    eprintln!("pglb -> keepalived graceful handover (vip seen on keepalived): {:?}", t0.elapsed());
    drop(ka);
}

#[test]
fn unicast_peers_elect_and_hand_over() {
    require_privileges(false);
    let _serial = serial();
    let _lab = Lab::up();
    let unicast = |own, peer, priority| VrrpParams { unicast_peers: vec![peer], ..Node::params(own, priority, 42) };
    let a = Node::start_with(NS_A, unicast(ADDR_A, ADDR_B, 150));
    let b = Node::start_with(NS_B, unicast(ADDR_B, ADDR_A, 100));
    wait_for("a master over unicast", LIMIT, || a.state() == VrrpState::Master);
    wait_for("b backup hearing a", LIMIT, || {
        b.state() == VrrpState::Backup && b.status.borrow().master_address == Some(ADDR_A)
    });
    wait_for("vip only on a", LIMIT, || Lab::has_vip(NS_A) && !Lab::has_vip(NS_B));
    b.wait_adverts_received(3, "b hearing a's unicast adverts");
    assert_eq!(b.counters.legacy_checksum.load(Ordering::Relaxed), 0, "unicast checksum uses the real destination");
    for reason in DropReason::ALL {
        assert_eq!(b.counters.dropped(reason), 0, "b dropped a unicast advert: {reason:?}");
    }
    let t0 = Instant::now();
    a.stop(Stop::Graceful);
    wait_for("b takes over over unicast", LIMIT, || b.state() == VrrpState::Master);
    eprintln!("unicast graceful handover: {:?} (Skew_Time 61 ms)", t0.elapsed());
    assert!(!b.remembers(ADDR_A), "b took over without a's unicast priority 0 (a timeout, not a handover)");
    wait_for("vip only on b", LIMIT, || Lab::has_vip(NS_B) && !Lab::has_vip(NS_A));
    b.stop(Stop::Graceful);
}
