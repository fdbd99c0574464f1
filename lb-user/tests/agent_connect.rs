//! The agent's `connect4` program, socket destroy and the closing of rewritten sockets when the
//! agent is gone, for real: a scratch cgroup v2 directory
//! and a private network namespace (this test thread's, `unshare(CLONE_NEWNET)`) with loopback
//! listeners standing in for the VIP and two PostgreSQL nodes. A child process in the cgroup
//! connects to the "VIP" with bash's `/dev/tcp` and prints which listener answered.
//!
//! `BPF_PROG_TEST_RUN` does not run `cgroup_sock_addr` programs, so this is the program's
//! fixture. The cgroup is removed by a guard, even on panic; the namespace goes with the thread.
//! Needs root and cgroup v2 at /sys/fs/cgroup/unified (or /sys/fs/cgroup); fails without them.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use lb_common::agent::{AGENT_R_NO_ROUTE, AGENT_R_READ, AGENT_R_WRITE};
use lb_user::{
    agent::{
        bpf::{self, AgentProgram},
        destroy::{Destroyed, destroy_connected_to},
        channel::{Epoch, Reader, Role, Route, Target},
        monotonic,
    },
};
use support::{require_root, unique, wait_for};

const VIP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);
const PG1: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 10), 5432);
const PG2: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 5432);

/// A scratch cgroup, removed on drop (its processes have exited by then).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new() -> Self {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
            .expect("this test needs cgroup v2 mounted at /sys/fs/cgroup/unified or /sys/fs/cgroup");
        // One per test: tests run in parallel, and a program attached to a shared cgroup would
        // rewrite the other test's connects.
        let path = root.join(unique("agent-cg"));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Cgroup(path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// An agent pin directory under /sys/fs/bpf, removed with its pin on drop (even on panic).
struct AgentPin(PathBuf);

impl AgentPin {
    fn new() -> Self {
        AgentPin(PathBuf::from("/sys/fs/bpf").join(unique("agent")))
    }
}

impl Drop for AgentPin {
    fn drop(&mut self) {
        if let Err(e) = bpf::unpin(&self.0) {
            eprintln!("cleanup of {} failed: {e}", self.0.display());
        }
    }
}

/// Moves this thread into a fresh network namespace with loopback up.
fn private_netns() {
    // SAFETY: unshare affects only the calling thread (a test thread of its own).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    let up = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("running ip");
    assert!(up.success(), "ip link set lo up");
}

/// A listener that answers every connection with `name` and closes it.
fn listener(addr: SocketAddrV4, name: &'static str) {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(name.as_bytes());
        }
    });
}

/// A listener that keeps every connection open (a session); counts them.
fn holding_listener(addr: SocketAddrV4) -> Arc<Mutex<Vec<TcpStream>>> {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    held
}

/// `bash -c script` started in `cgroup`.
fn in_cgroup(cgroup: &Cgroup, script: &str) -> Command {
    let procs = std::ffi::CString::new(cgroup.0.join("cgroup.procs").to_str().unwrap()).unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script]);
    // SAFETY: only async-signal-safe calls (open, write, close) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let rc = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if rc != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Connects from a child process placed in `cgroup`; returns what the server said.
fn connect_from(cgroup: &Cgroup, port: u16) -> String {
    let out = in_cgroup(cgroup, &format!("exec 3<>/dev/tcp/{VIP}/{port} && timeout 2 cat <&3")).output().expect("running bash");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A session from the cgroup to VIP:3000 that reads until its socket fails (at most 30 s).
fn session(cgroup: &Cgroup) -> Child {
    in_cgroup(cgroup, &format!("exec 3<>/dev/tcp/{VIP}/3000 && timeout 30 cat <&3"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a session")
}

/// Waits for the session to end; returns what it printed on stderr.
fn ended(mut child: Child, what: &str) -> String {
    wait_for(what, Duration::from_secs(5), || child.try_wait().expect("waiting").is_some());
    let out = child.wait_with_output().expect("the session's output");
    assert!(!out.status.success(), "{what}: the session must fail, not end normally");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn route(writer: Option<SocketAddrV4>, readers: &[SocketAddrV4], seq: u64) -> Route {
    Route {
        lb: "lb1".into(),
        agent: "test".into(),
        role: Role::Master,
        nonce: 0,
        epoch: Epoch { timeline: 1, seq },
        writer: writer.map(|addr| Target { name: "w".into(), addr }),
        readers: readers.iter().enumerate().map(|(i, &addr)| Reader { target: Target { name: format!("r{i}"), addr }, id: i as u32 + 1, weight: 1 }).collect(),
    }
}

#[test]
fn agent_connect4_rewrites_the_vip_and_falls_back_without_a_route() {
    require_root();
    let cgroup = Cgroup::new();
    private_netns();
    listener(SocketAddrV4::new(VIP, 3000), "vip-write");
    listener(SocketAddrV4::new(VIP, 3001), "vip-read");
    listener(PG1, "pg1");
    listener(PG2, "pg2");

    let mut prog = AgentProgram::load().expect("loading the connect4 program (verifier log in the error)");
    prog.set_listeners(VIP, &[3000], &[3001]).expect("listeners");
    prog.attach(&cgroup.0).expect("attaching to the scratch cgroup");
    assert_eq!(connect_from(&cgroup, 3000), "vip-write", "no route yet: the VIP");

    let lease = monotonic() + Duration::from_secs(60);
    prog.apply(&route(Some(PG1), &[PG2], 1), lease.as_nanos() as u64).expect("route");
    assert_eq!(connect_from(&cgroup, 3000), "pg1", "write port to the writer");
    assert_eq!(connect_from(&cgroup, 3001), "pg2", "read port to the only reader");

    prog.apply(&route(Some(PG2), &[PG1, PG2], 2), lease.as_nanos() as u64).expect("route");
    assert_eq!(connect_from(&cgroup, 3000), "pg2", "a new writer, at the next connect");
    let mut seen: Vec<String> = (0..12).map(|_| connect_from(&cgroup, 3001)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["pg1", "pg2"], "reads spread over both readers (12 connects)");

    prog.apply(&route(None, &[], 3), lease.as_nanos() as u64).expect("route");
    assert_eq!(connect_from(&cgroup, 3000), "vip-write", "no writer: left to the VIP");
    assert_eq!(connect_from(&cgroup, 3001), "vip-read", "no reader: left to the VIP");

    prog.apply(&route(Some(PG1), &[PG2], 4), (monotonic() + Duration::from_millis(300)).as_nanos() as u64).expect("route");
    assert_eq!(connect_from(&cgroup, 3000), "pg1", "within the lease");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(connect_from(&cgroup, 3000), "vip-write", "the lease ran out in the kernel: the VIP (a hung agent)");

    prog.renew(lease.as_nanos() as u64).expect("renew");
    assert_eq!(connect_from(&cgroup, 3000), "pg1", "renewed");
    prog.clear().expect("clear");
    assert_eq!(connect_from(&cgroup, 3000), "vip-write", "cleared: the VIP");

    let c = prog.counters().expect("counters");
    assert!(c[AGENT_R_WRITE as usize] >= 3 && c[AGENT_R_READ as usize] >= 13 && c[AGENT_R_NO_ROUTE as usize] >= 3, "counters {c:?}");

    drop(prog);
    assert_eq!(connect_from(&cgroup, 3000), "vip-write", "unloaded: nothing rewrites");
}

#[test]
fn agent_socket_destroy_closes_connections_to_the_old_writer() {
    require_root();
    private_netns();
    let l = TcpListener::bind(PG1).expect("binding pg1");
    let other = TcpListener::bind(PG2).expect("binding pg2");
    let mut to_old = TcpStream::connect(PG1).expect("connecting to pg1");
    let mut to_new = TcpStream::connect(PG2).expect("connecting to pg2");
    let (_server_side, _) = l.accept().expect("accept");
    let (_server_side2, _) = other.accept().expect("accept");

    let done = destroy_connected_to(PG1).expect("sock_diag destroy (CONFIG_INET_DIAG_DESTROY)");
    assert_eq!((done.found, done.destroyed, done.first_errno), (1, 1, None), "exactly the one client socket to pg1");
    to_old.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let err = to_old.read(&mut [0u8; 1]).expect_err("a destroyed socket fails");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "the owner sees ECONNABORTED: {err}");
    to_new.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let still = to_new.read(&mut [0u8; 1]).expect_err("no data on the other connection");
    assert_eq!(still.kind(), std::io::ErrorKind::WouldBlock, "the connection to pg2 is untouched: {still}");
}

/// Issue 18: sessions the agent sent straight to a writer outlived it. Now a stopping agent
/// closes them ([`AgentProgram::destroy_rewritten`]), and after a killed one (its program and
/// maps gone with its file descriptors, here by dropping them) the pinned record lets the next
/// start or `pglb agent cleanup` ([`bpf::cleanup_pinned`]) close them. Sockets the agent did not
/// rewrite are left alone.
#[test]
fn agent_sockets_sent_to_the_writer_are_closed_when_the_agent_stops_or_dies() {
    require_root();
    let cgroup = Cgroup::new();
    let pins = AgentPin::new();
    private_netns();
    let held = holding_listener(PG1);
    let lease = monotonic() + Duration::from_secs(60);
    let load = || {
        let mut prog = AgentProgram::load().expect("loading the connect4 program");
        prog.set_listeners(VIP, &[3000], &[3001]).expect("listeners");
        prog.pin_rewritten(&pins.0).expect("pinning agent_rewritten under /sys/fs/bpf");
        prog.attach(&cgroup.0).expect("attaching to the scratch cgroup");
        prog.apply(&route(Some(PG1), &[], 1), lease.as_nanos() as u64).expect("route");
        prog
    };
    let mut direct = TcpStream::connect(PG1).expect("a connection to pg1 the agent did not make");
    let sessions = |n: usize| wait_for("the sessions to reach pg1", Duration::from_secs(5), || held.lock().unwrap().len() == n);

    // A clean stop.
    let prog = load();
    let first = session(&cgroup);
    sessions(2);
    let done = prog.destroy_rewritten().expect("closing the rewritten sockets");
    assert_eq!(done, Destroyed { found: 1, destroyed: 1, first_errno: None }, "exactly the session the program sent to pg1");
    let err = ended(first, "the session after a clean stop");
    assert!(err.contains("Software caused connection abort"), "ECONNABORTED from the destroy: {err}");
    bpf::unpin(&pins.0).expect("unpin");
    drop(prog);

    // Killed: the process's program and maps are gone, the pinned record is not.
    let prog = load();
    let mut second = session(&cgroup);
    sessions(3);
    drop(prog);
    assert!(pins.0.join(bpf::REWRITTEN_PIN).exists(), "the record outlives the agent");
    std::thread::sleep(Duration::from_millis(300));
    assert!(second.try_wait().expect("waiting").is_none(), "with nothing run after the death, the session stays: the window docs/AGENT.md states");
    let done = bpf::cleanup_pinned(&pins.0).expect("cleanup").expect("a pinned record");
    assert_eq!(done, Destroyed { found: 1, destroyed: 1, first_errno: None }, "the killed agent's session to pg1");
    let err = ended(second, "the session after the cleanup");
    assert!(err.contains("Software caused connection abort"), "{err}");
    assert!(!pins.0.join(bpf::REWRITTEN_PIN).exists(), "the pin is removed");
    assert_eq!(bpf::cleanup_pinned(&pins.0).expect("a second cleanup"), None, "nothing left to do");
    let elsewhere = std::env::temp_dir().join("pglb-agent-not-bpffs");
    assert!(
        matches!(bpf::cleanup_pinned(&elsewhere), Err(bpf::AgentBpfError::NotBpffs { .. })),
        "a pin path off bpffs is an error, not \"nothing pinned\""
    );

    direct.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let still = direct.read(&mut [0u8; 1]).expect_err("no data on the direct connection");
    assert_eq!(still.kind(), std::io::ErrorKind::WouldBlock, "a connection the agent did not rewrite is untouched: {still}");
}
