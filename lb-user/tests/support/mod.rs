//! Shared fixtures for lb-user's privileged tests (the data plane's packet fixtures and the
//! VRRP runners in network namespaces): root and program checks that fail rather than skip, a
//! readiness poll, a pin-directory guard, a `pglbt-` network namespace with a veth and static
//! neighbours, an independent packet builder whose checksums are computed from scratch (not with
//! lb-common's code), and the keepalived harness shared with the end-to-end tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// keepalived as a VRRP peer; the file is the end-to-end tests' (`pglb_tests::keepalived`), so
/// both packages drive keepalived the same way.
#[path = "../../../tests/keepalived.rs"]
pub mod keepalived;

/// Fails (never skips) when not root: these tests load BPF programs or create network
/// namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test loads BPF programs or creates network namespaces: run it as root (`sudo cargo xtask test`, as CI does)");
}

/// Fails (never skips) when `program` does not run with `args` (a version flag).
pub fn require_program(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs `{program}`, which does not run here ({}): `cargo xtask setup` installs it",
        match &out {
            Ok(o) => format!("`{program} {}` exited with {}", args.join(" "), o.status),
            Err(e) => e.to_string(),
        }
    );
}

/// Polls `check` every 5 ms until it holds; returns how long that took. Panics naming `what`
/// after `limit`, which is generous: the figure, not the limit, is what a caller measures.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A folder under the system's temporary folder, removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique `pglbt-<pid>-<n>` name.
pub fn unique(prefix: &str) -> String {
    format!("pglbt-{prefix}{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A pin directory under /sys/fs/bpf, removed (with everything pinned in it) on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new() -> Self {
        let dir = PathBuf::from("/sys/fs/bpf").join(unique("pin"));
        Self(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = lb_user::dataplane::remove(&self.0, None) {
            eprintln!("cleanup of {} failed: {e}", self.0.display());
        }
    }
}

/// Runs `ip` with `args`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("could not run ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x21];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x50];
pub const LB_ADDR: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 21);
pub const VIP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 100);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 50);
/// (id, address, MAC) of the backends that get static neighbour entries.
pub const BACKENDS: [(u32, Ipv4Addr, [u8; 6]); 3] = [
    (0, Ipv4Addr::new(172, 31, 0, 10), [0x02, 0, 0, 0, 0, 0x10]),
    (1, Ipv4Addr::new(172, 31, 0, 11), [0x02, 0, 0, 0, 0, 0x11]),
    (2, Ipv4Addr::new(172, 31, 0, 12), [0x02, 0, 0, 0, 0, 0x12]),
];
pub const IFACE: &str = "pglbt0";

/// A network namespace with `pglbt0` (LB_MAC, LB_ADDR/24, forwarding on, static neighbours for
/// the backends) and its veth peer `pglbt1`; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        let name = unique("ns");
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "add", IFACE, "type", "veth", "peer", "name", "pglbt1"]);
        ip(&["-n", n, "link", "set", IFACE, "address", &mac_str(LB_MAC)]);
        ip(&["-n", n, "link", "set", "pglbt1", "address", &mac_str(PEER_MAC)]);
        ip(&["-n", n, "addr", "add", &format!("{LB_ADDR}/24"), "dev", IFACE]);
        for dev in ["lo", IFACE, "pglbt1"] {
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        for (_, addr, mac) in BACKENDS {
            ip(&["-n", n, "neigh", "replace", &addr.to_string(), "lladdr", &mac_str(mac), "dev", IFACE, "nud", "permanent"]);
        }
        // bpf_fib_lookup answers only on interfaces with IPv4 forwarding enabled.
        let out = Command::new("ip")
            .args(["netns", "exec", n, "sysctl", "-qw", &format!("net.ipv4.conf.{IFACE}.forwarding=1")])
            .output()
            .expect("running sysctl in the test namespace");
        assert!(out.status.success(), "enabling forwarding in {n}: {}", String::from_utf8_lossy(&out.stderr));
        ns
    }

    /// Moves the calling thread into the namespace (only this thread; call it in a thread
    /// spawned for the purpose).
    pub fn enter(&self) {
        enter_netns(&self.name);
    }
}

/// Moves the calling thread into the network namespace `/run/netns/NAME` (only this thread;
/// call it in a thread spawned for the purpose).
pub fn enter_netns(name: &str) {
    let f = File::open(format!("/run/netns/{name}")).unwrap_or_else(|e| panic!("opening the namespace handle of {name}: {e}"));
    // SAFETY: a valid namespace fd; affects only the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {name}: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

pub fn mac_str(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// RFC 1071 checksum, written independently of lb-common: big-endian words, end-around carry.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { (chunk[0] as u32) << 8 | chunk[1] as u32 } else { (chunk[0] as u32) << 8 };
        sum += word;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// An Ethernet + IPv4 + TCP packet description; `build` serialises it with correct checksums.
#[derive(Clone, Debug)]
pub struct Tcp {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub ip_id: u16,
    pub frag: u16,
    pub ttl: u8,
    pub ip_opts: Vec<u8>,
    pub tcp_opts: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Tcp {
    pub fn new(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Self {
        Self {
            eth_dst: LB_MAC,
            eth_src: CLIENT_MAC,
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            seq: 1000,
            ack: if flags & ACK != 0 { 5000 } else { 0 },
            flags,
            window: 64240,
            ip_id: 0x1234,
            frag: 0x4000,
            ttl: 63,
            ip_opts: Vec::new(),
            tcp_opts: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn build(&self) -> Vec<u8> {
        assert!(self.ip_opts.len().is_multiple_of(4) && self.tcp_opts.len().is_multiple_of(4), "options must be 32-bit aligned");
        let ihl = 5 + self.ip_opts.len() / 4;
        let doff = 5 + self.tcp_opts.len() / 4;
        let tcp_len = doff * 4 + self.payload.len();
        let tot_len = ihl * 4 + tcp_len;
        let mut p = Vec::with_capacity(14 + tot_len);
        p.extend_from_slice(&self.eth_dst);
        p.extend_from_slice(&self.eth_src);
        p.extend_from_slice(&[0x08, 0x00]);
        let ip_start = p.len();
        p.push(0x40 | ihl as u8);
        p.push(0);
        p.extend_from_slice(&(tot_len as u16).to_be_bytes());
        p.extend_from_slice(&self.ip_id.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.push(self.ttl);
        p.push(6);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&self.ip_opts);
        let c = inet_checksum(&p[ip_start..ip_start + ihl * 4]);
        p[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
        let tcp_start = p.len();
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ack.to_be_bytes());
        p.push((doff as u8) << 4);
        p.push(self.flags);
        p.extend_from_slice(&self.window.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&self.tcp_opts);
        p.extend_from_slice(&self.payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        pseudo.extend_from_slice(&p[tcp_start..]);
        let c = inet_checksum(&pseudo);
        p[tcp_start + 16..tcp_start + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The RST the data plane sends back to this packet's sender (RFC 9293 rules).
    pub fn expected_rst(&self) -> Vec<u8> {
        let payload_len = self.payload.len() as u32;
        let (seq, ack, flags) = if self.flags & ACK != 0 {
            (self.ack, 0, RST)
        } else {
            let len = payload_len + u32::from(self.flags & SYN != 0) + u32::from(self.flags & FIN != 0);
            (0, self.seq.wrapping_add(len), RST | ACK)
        };
        Tcp {
            eth_dst: self.eth_src,
            eth_src: self.eth_dst,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            seq,
            ack,
            flags,
            window: 0,
            ip_id: 0,
            frag: 0x4000,
            ttl: 64,
            ip_opts: Vec::new(),
            tcp_opts: Vec::new(),
            payload: Vec::new(),
        }
        .build()
    }
}

/// Verifies the IPv4 header and TCP checksums of a frame from scratch.
pub fn assert_checksums_valid(what: &str, frame: &[u8]) {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    assert_eq!(inet_checksum(&frame[14..14 + ihl]), 0, "{what}: IPv4 header checksum invalid");
    let tot = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let seg = &frame[14 + ihl..14 + tot];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&frame[26..34]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(seg);
    assert_eq!(inet_checksum(&pseudo), 0, "{what}: TCP checksum invalid");
}

/// An `AF_PACKET` socket that receives every frame of one interface (in the calling thread's
/// network namespace).
pub struct PacketCapture {
    fd: std::os::fd::OwnedFd,
}

impl PacketCapture {
    pub fn open(interface: &str) -> Self {
        use std::os::fd::FromRawFd;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket() has no memory preconditions; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
        assert!(raw >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let name = std::ffi::CString::new(interface).expect("interface name");
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "{interface} exists");
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is a valid sockaddr_ll of the given size.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_ll).cast(), size_of::<libc::sockaddr_ll>() as u32) };
        assert_eq!(rc, 0, "binding to {interface}: {}", std::io::Error::last_os_error());
        PacketCapture { fd }
    }

    /// The first frame for which `want` holds, within `limit`.
    pub fn next_matching(&self, limit: std::time::Duration, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let end = std::time::Instant::now() + limit;
        let mut buf = vec![0u8; 2048];
        while std::time::Instant::now() < end {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if rc <= 0 {
                continue;
            }
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && want(&buf[..n as usize]) {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }
}
