//! The load-balancer drills: `lb-crash` (`kill -9` pglb on the VRRP master) and `lb-graceful`
//! (SIGTERM to it). Each measures, from the signal, when the peer holds the VIP, when the old
//! master lets it go, and when a new connection through VIP:3000 reaches PostgreSQL through the
//! new holder; [`restore`] restarts the stopped pglb, which comes back as backup (a returning
//! load balancer does not preempt a healthy master), and brings the VIP home to lb1 (the first
//! load balancer of the topology) with a graceful restart of lb2
//! ([`crate::lab::lb::bring_vip_home`]).
//!
//! Clients are threads moved into `pgha-client` with setns(2): a TCP connect to the VIP, the
//! PostgreSQL SSLRequest and the server's one-byte answer, and the client's ARP entry for the VIP
//! (from `/proc/thread-self/net/arp`) to tell which load balancer carried it.

use std::{
    fs::{self, File},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd as _,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::Scenario;
use crate::{
    lab::{
        lb::{bring_vip_home, holds_vip, holds_vip_alone, log_path, running, stable_binary, start, vip_picture},
        postgres::wait_for,
        topology::{Host, VIP, WRITE_PORT, home_lb, load_balancers, peer_of},
    },
    sh,
};

/// Which way the master is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbStop {
    /// `kill -9`: no priority-0 advert, the VIP stays on the dead master's interface.
    Crash,
    /// SIGTERM: pglb sends priority 0 and removes the VIP.
    Graceful,
}

impl LbStop {
    /// The scenario that runs this stop (its name in the output and the JSON).
    pub fn scenario(self) -> Scenario {
        match self {
            LbStop::Crash => Scenario::LbCrash,
            LbStop::Graceful => Scenario::LbGraceful,
        }
    }
}

impl serde::Serialize for LbStop {
    /// As its scenario's name: `"lb-crash"` or `"lb-graceful"`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.scenario())
    }
}

/// One run of `lb-crash` or `lb-graceful`; times are from the signal (milliseconds in JSON).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LbTakeover {
    #[serde(rename = "scenario")]
    pub stop: LbStop,
    /// The load balancer that was stopped (the master before) and the one that took over.
    pub from: &'static str,
    pub to: &'static str,
    /// When the new master held the VIP.
    #[serde(rename = "vip_taken_ms", serialize_with = "as_ms")]
    pub vip_taken: Duration,
    /// When the old master no longer had the VIP (None: still there at the end, as after a crash).
    #[serde(rename = "vip_released_ms", serialize_with = "as_opt_ms")]
    pub vip_released: Option<Duration>,
    /// First new connection through VIP:3000 that PostgreSQL answered via the new master.
    #[serde(rename = "first_connection_ms", serialize_with = "as_ms")]
    pub first_connection: Duration,
    /// Connection attempts before that one that failed, and that still went via the old master.
    pub failed_attempts: u32,
    pub via_old_master: u32,
}

impl LbTakeover {
    /// One line, for the drill's report.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} -> {}: VIP on {} after {:.0} ms, released by {} {}, first new connection via {} after {:.0} ms ({} failed attempts, {} via {})",
            self.stop.scenario(),
            self.from,
            self.to,
            self.to,
            ms(self.vip_taken),
            self.from,
            self.vip_released.map(|d| format!("after {:.0} ms", ms(d))).unwrap_or_else(|| "never (stale address after a crash)".into()),
            self.to,
            ms(self.first_connection),
            self.failed_attempts,
            self.via_old_master,
            self.from,
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms(*d))
}

fn as_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(ms(*d)),
        None => s.serialize_none(),
    }
}

/// The load balancer that holds the VIP now (lb1 or lb2), with the one that takes it over when
/// it stops ([`peer_of`]: lb2 or lb1).
pub fn master_and_backup() -> Result<(&'static Host, &'static Host)> {
    let mut holders = Vec::new();
    for lb in load_balancers() {
        if holds_vip(lb)? {
            holders.push(lb);
        }
    }
    match holders[..] {
        [master] => Ok((master, peer_of(master))),
        _ => bail!("expected exactly one load balancer with the VIP ({}); is the lab up?", vip_picture()),
    }
}

pub use crate::lab::lb::pglb_pid;

/// Runs `lb-crash` or `lb-graceful` once against the current VRRP master. The lab must be up with
/// both load balancers running; afterwards the stopped one is down: call [`restore`].
pub fn lb_drill(stop: LbStop) -> Result<LbTakeover> {
    let (old, new) = master_and_backup()?;
    let pid = pglb_pid(old)?;
    let new_mac = mac_of(new)?;
    let limit = Duration::from_secs(10);
    let epoch = Instant::now();
    let sig = match stop {
        LbStop::Crash => libc::SIGKILL,
        LbStop::Graceful => libc::SIGTERM,
    };
    // SAFETY: kill(2) has no memory preconditions; the pid was just read from the namespace.
    if unsafe { libc::kill(pid, sig) } != 0 {
        bail!("signalling pglb {pid} on {}: {}", old.name, std::io::Error::last_os_error());
    }
    let client = thread::spawn(move || connect_via(WRITE_PORT, &new_mac, epoch, limit));
    let mut vip_taken = None;
    let mut vip_released = None;
    while epoch.elapsed() < limit && (vip_taken.is_none() || (stop == LbStop::Graceful && vip_released.is_none())) {
        let t = epoch.elapsed();
        if vip_taken.is_none() && holds_vip(new)? {
            vip_taken = Some(t);
        }
        if vip_released.is_none() && !holds_vip(old)? {
            vip_released = Some(t);
        }
        thread::sleep(Duration::from_millis(1));
    }
    let client = client.join().map_err(|_| anyhow::anyhow!("the drill client thread panicked"))??;
    let Some(vip_taken) = vip_taken else {
        bail!("{} did not take the VIP within {limit:?} after {} of pglb on {}; see {}", new.name, stop.scenario(), old.name, log_path(new).display());
    };
    let Some(first_connection) = client.first else {
        bail!("no new connection through {VIP}:{WRITE_PORT} via {} within {limit:?} ({} attempts failed)", new.name, client.failed);
    };
    Ok(LbTakeover {
        stop,
        from: old.name,
        to: new.name,
        vip_taken,
        vip_released,
        first_connection,
        failed_attempts: client.failed,
        via_old_master: client.via_old,
    })
}

/// Starts pglb again on the load balancer a drill stopped (as `lab up` does, appending to its log),
/// brings the VIP home to lb1 ([`bring_vip_home`]: the restarted lb1 comes back as backup) and
/// waits until lb1 holds it alone; returns how long that took from the start.
pub fn restore(lb: &Host) -> Result<Duration> {
    let pglb = stable_binary();
    let started = Instant::now();
    start(lb, &pglb)?;
    wait_for(Duration::from_secs(10), &format!("pglb on {} to run", lb.name), || Ok(running(lb)))?;
    bring_vip_home(&pglb).with_context(|| format!("bringing the VIP home after restarting pglb on {}", lb.name))?;
    let home = home_lb();
    wait_for(Duration::from_secs(30), &format!("{} (priority 150) to hold the VIP alone again", home.name), || holds_vip_alone(home))
        .with_context(|| format!("pglb log: {}", log_path(lb).display()))?;
    Ok(started.elapsed())
}

fn mac_of(lb: &Host) -> Result<String> {
    let out = sh::output(&mut sh::cmd("ip", ["-n", &lb.ns(), "-o", "link", "show", "eth0"]))?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no ethernet address on {}'s eth0: {out}", lb.name))
}

struct ClientSeen {
    first: Option<Duration>,
    failed: u32,
    via_old: u32,
}

/// From a thread in pgha-client: new connections to VIP:`port` until PostgreSQL answers one
/// while the client's ARP entry for the VIP is `via_mac`.
fn connect_via(port: u16, via_mac: &str, epoch: Instant, limit: Duration) -> Result<ClientSeen> {
    let ns = File::open("/run/netns/pgha-client").context("opening /run/netns/pgha-client (is the lab up?)")?;
    // SAFETY: setns with a valid namespace fd changes only this thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("entering pgha-client: {}", std::io::Error::last_os_error());
    }
    let vip: Ipv4Addr = VIP.parse().expect("the lab's VIP parses");
    let mut seen = ClientSeen { first: None, failed: 0, via_old: 0 };
    while epoch.elapsed() < limit {
        let answered = pg_answers(SocketAddrV4::new(vip, port), Duration::from_millis(200));
        match (answered, arp_entry(VIP)) {
            (true, Some(mac)) if mac.eq_ignore_ascii_case(via_mac) => {
                seen.first = Some(epoch.elapsed());
                break;
            }
            (true, _) => seen.via_old += 1,
            (false, _) => {
                seen.failed += 1;
                thread::sleep(Duration::from_millis(5));
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    Ok(seen)
}

/// TCP connect, PostgreSQL SSLRequest, and its one-byte answer.
fn pg_answers(addr: SocketAddrV4, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout) else { return false };
    let _ = s.set_read_timeout(Some(timeout));
    if s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    s.read_exact(&mut b).is_ok() && matches!(b[0], b'N' | b'S')
}

/// The complete ARP entry for `ip` in the calling thread's network namespace.
fn arp_entry(ip: &str) -> Option<String> {
    let arp = fs::read_to_string(Path::new("/proc/thread-self/net/arp")).ok()?;
    arp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[0] == ip && f[2] != "0x0").then(|| f[3].to_owned())
    })
}
