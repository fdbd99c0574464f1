//! keepalived's VRRP subsystem as pglb's peer in a network namespace, stopped by a guard.
//!
//! The one keepalived harness of the repository: `pglb_tests::keepalived` for the lab's interop
//! test (tests/vip.rs), and lb-user's `tests/support` includes this file by path for the
//! two-namespace interop test (lb-user/tests/vrrp.rs). It uses only std and libc, so it compiles
//! in both packages.

use std::{
    fs::{self, OpenOptions},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// How long [`Keepalived::stop`] waits for keepalived to exit after SIGTERM before SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// The one VRRP instance of a keepalived.conf.
pub struct Instance<'a> {
    /// keepalived's `router_id` (shows in its log).
    pub router_id: &'a str,
    pub interface: &'a str,
    pub vrid: u8,
    pub priority: u8,
    /// The `virtual_ipaddress` line, e.g. `192.0.2.100/32` or `172.20.0.100/16 dev eth0`.
    pub vip: &'a str,
}

impl Instance<'_> {
    /// keepalived.conf: VRRPv3, starting as backup, adverts every 100 ms (`advert_int 0.1`),
    /// multicast to 224.0.0.18 like pglb without `unicast`.
    pub fn conf(&self) -> String {
        let Instance { router_id, interface, vrid, priority, vip } = self;
        format!(
            "global_defs {{\n  router_id {router_id}\n  vrrp_version 3\n}}\n\
             vrrp_instance pglb_test {{\n  state BACKUP\n  interface {interface}\n  virtual_router_id {vrid}\n  \
             priority {priority}\n  advert_int 0.1\n  virtual_ipaddress {{\n    {vip}\n  }}\n}}\n"
        )
    }
}

/// `keepalived --vrrp` in the foreground inside a network namespace (entered with `nsenter
/// --net`), with its files in one folder: keepalived.conf, keepalived.log (appended to by every
/// start) and the pid files. Stopped on drop; the folder is the caller's to remove.
pub struct Keepalived {
    child: Option<Child>,
    dir: PathBuf,
}

impl Keepalived {
    /// Writes `dir/keepalived.conf` for `instance` and starts keepalived in `/run/netns/NETNS`.
    pub fn start(netns: &str, dir: &Path, instance: &Instance) -> Keepalived {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        fs::write(dir.join("keepalived.conf"), instance.conf()).unwrap_or_else(|e| panic!("writing {}: {e}", path("keepalived.conf")));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("keepalived.log"))
            .unwrap_or_else(|e| panic!("opening {}: {e}", path("keepalived.log")));
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--use-file", &path("keepalived.conf")])
            .args(["--pid", &path("keepalived.pid"), "--vrrp_pid", &path("vrrp.pid"), "--checkers_pid", &path("checkers.pid")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the keepalived log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting keepalived in {netns} (installed by `cargo xtask setup`): {e}"));
        Keepalived { child: Some(child), dir: dir.to_owned() }
    }

    /// Everything keepalived logged in this folder so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }

    /// SIGTERM, without waiting: keepalived sends priority 0 and removes the VIP at once, then
    /// takes about a second to exit.
    pub fn terminate(&self) {
        let Some(child) = &self.child else { return };
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill has no memory preconditions; `pid` is our own child (nsenter executes
        // keepalived in place), not yet reaped, so it cannot be a recycled pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    /// [`terminate`](Keepalived::terminate), then waits for keepalived and its VRRP child to
    /// exit; SIGKILL to both after [`STOP_LIMIT`].
    pub fn stop(&mut self) {
        let vrrp_pid = fs::read_to_string(self.dir.join("vrrp.pid")).ok().and_then(|p| p.trim().parse::<libc::pid_t>().ok());
        self.terminate();
        let Some(mut child) = self.child.take() else { return };
        let start = Instant::now();
        while start.elapsed() < STOP_LIMIT {
            if child.try_wait().ok().flatten().is_some() && vrrp_pid.is_none_or(process_gone) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(pid) = vrrp_pid {
            // SAFETY: kill has no memory preconditions; the pid comes from this run's pid file
            // and the process was still there a moment ago.
            unsafe { libc::kill(pid, libc::SIGKILL) };
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

/// Whether a process has exited: no /proc entry, or a zombie waiting for its parent.
pub fn process_gone(pid: libc::pid_t) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the first field after the command name, which is in parentheses.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
