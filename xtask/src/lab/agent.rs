//! `pglb agent` on the lab's client host (docs/AGENT.md): the cgroup its programs join, its
//! config installed as on an application host, and starting and stopping it.
//!
//! `lab up` generates the agent channel's keys with `pglb agent keygen` ([`create_keys`]: the
//! load balancers' Ed25519 signing key and the client's own key), creates the cgroup [`CGROUP`]
//! and installs the agent's config, its key and the load balancers' public key under the
//! client's root (`/run/pglb-lab/client/root/etc/pglb/`), but does not start the agent: the VIP
//! stays what every client uses unless it asks. `cargo xtask lab agent start` starts it in
//! pgha-client's namespace; `lab exec client --agent -- CMD` (and the drills' `--client agent`,
//! the bench's `agent` target) run their command inside the cgroup. `lab down` kills everything
//! in the cgroup and removes it.

use std::{ffi::OsStr, fs, os::unix::fs::PermissionsExt as _, path::{Path, PathBuf}, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{
    net::{namespace_pids, spawn_detached},
    postgres::wait_for,
    topology::{BPF_PIN_ROOT, HOSTS, Kind, READ_PORT, STATE_DIR, VIP, WRITE_PORT, host, secrets_dir},
};

/// The cgroup v2 directory of the client's workloads (cgroup v2 is mounted at
/// /sys/fs/cgroup/unified on this machine).
pub const CGROUP: &str = "/sys/fs/cgroup/unified/pglb-lab-client";
/// The UDP port of the load balancers' `[agent]` channel (config/lab*.toml).
pub const CHANNEL_PORT: u16 = 3003;
/// The agent's name, its `[[agent.client]]` on the load balancers (config/lab*.toml).
pub const NAME: &str = "client";
/// The keys in the lab's secrets folder: the load balancers' signing key and its public half,
/// and the client agent's own key (the load balancers install the first and the last).
pub const SIGNING_KEY: &str = "agent-signing.key";
pub const PUBLIC_KEY: &str = "agent-signing.pub";
pub const CLIENT_KEY: &str = "agent-client.key";

/// Generates the agent channel's keys into the secrets folder, as an operator does.
pub fn create_keys(pglb: &Path) -> Result<()> {
    let dir = secrets_dir();
    for file in [SIGNING_KEY, PUBLIC_KEY, CLIENT_KEY] {
        let _ = fs::remove_file(dir.join(file));
    }
    let pglb = pglb.to_str().context("a UTF-8 path")?;
    let (signing, client) = (dir.join(SIGNING_KEY), dir.join(CLIENT_KEY));
    for args in [["--signing-key", signing.to_str().context("a UTF-8 path")?], ["--client-key", client.to_str().context("a UTF-8 path")?]] {
        let mut keygen = crate::sh::cmd(pglb, ["agent", "keygen"].into_iter().chain(args));
        crate::sh::run(&mut keygen).with_context(|| format!("pglb agent keygen {}", args.join(" ")))?;
    }
    Ok(())
}

fn root() -> PathBuf {
    PathBuf::from(STATE_DIR).join("client/root")
}

pub fn config_path() -> PathBuf {
    root().join("etc/pglb/agent.toml")
}

pub fn log_path() -> PathBuf {
    PathBuf::from(STATE_DIR).join("client/agent.log")
}

/// The agent's config: the client's cgroup, the VIP's ports, both load balancers, its keys; its
/// pin under the lab's pin root, which `lab down` removes.
fn config_text(key: &Path, public: &Path) -> String {
    let lbs: Vec<String> = HOSTS
        .iter()
        .filter(|h| h.kind == Kind::LoadBalancer)
        .map(|h| format!("\"{}:{CHANNEL_PORT}\"", h.addr))
        .collect();
    format!(
        "# pglb agent on pgha-client, installed by `cargo xtask lab up` (docs/AGENT.md).\n\
         name = \"{NAME}\"\n\
         cgroup = \"{CGROUP}\"\n\
         vip = \"{VIP}\"\n\
         write_ports = [{WRITE_PORT}]\n\
         read_ports = [{READ_PORT}]\n\
         load_balancers = [{}]\n\
         key_file = \"{}\"\n\
         lb_public_key_file = \"{}\"\n\
         lease = \"1s\"\n\
         subscribe_interval = \"250ms\"\n\
         pin_path = \"{BPF_PIN_ROOT}/agent-{NAME}\"\n",
        lbs.join(", "),
        key.display(),
        public.display()
    )
}

/// Creates the cgroup and installs the agent's own key (0600), the load balancers' public key
/// (0644) and the config (0644); the agent validates the config when it starts.
pub fn install() -> Result<()> {
    let etc = root().join("etc/pglb");
    fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755))?;
    let (key, public) = (etc.join("agent.key"), etc.join(PUBLIC_KEY));
    for (from, to, mode) in [(CLIENT_KEY, &key, 0o600), (PUBLIC_KEY, &public, 0o644)] {
        fs::copy(secrets_dir().join(from), to).with_context(|| format!("installing {}", to.display()))?;
        fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    }
    fs::write(config_path(), config_text(&key, &public)).with_context(|| format!("writing {}", config_path().display()))?;
    fs::set_permissions(config_path(), fs::Permissions::from_mode(0o644))?;
    if !Path::new(CGROUP).exists() {
        fs::create_dir(CGROUP).with_context(|| format!("creating the client's cgroup {CGROUP} (cgroup v2 at /sys/fs/cgroup/unified?)"))?;
    }
    Ok(())
}

/// Pids of `pglb agent` processes on the client host.
pub fn pids() -> Vec<i32> {
    let Ok(client) = host("client") else { return Vec::new() };
    namespace_pids(&client.ns())
        .unwrap_or_default()
        .into_iter()
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() > 1 && args[0].ends_with(b"pglb") && args[1] == b"agent"
        })
        .collect()
}

/// Whether the agent has a route: its log's last route line is newer than its last lease loss
/// or conflict.
fn has_route(log: &str) -> bool {
    let route = log.rfind("agent: route:");
    let lost = log.rfind("lease lost").max(log.rfind("masters disagree"));
    match (route, lost) {
        (Some(_), None) => true,
        (Some(r), Some(l)) => r > l,
        (None, _) => false,
    }
}

/// Starts `pglb agent` in pgha-client (detached, in its own session, appending to its log) and
/// waits until it has a route from the VRRP master. A running agent is left as it is.
pub fn start(pglb: &Path) -> Result<()> {
    if !pids().is_empty() {
        println!("lab: the agent already runs on the client host");
        return Ok(());
    }
    if !config_path().exists() {
        bail!("{} is missing: is the lab up (`cargo xtask lab up`)?", config_path().display());
    }
    let client = host("client")?;
    let offset = fs::metadata(log_path()).map(|m| m.len() as usize).unwrap_or(0);
    let config = config_path();
    spawn_detached(&client.ns(), pglb, [OsStr::new("agent"), OsStr::new("--config"), config.as_os_str()], &log_path())
        .context("starting pglb agent on the client host")?;
    wait_for(Duration::from_secs(15), "the agent's first route from the VRRP master", || {
        let text = fs::read_to_string(log_path()).unwrap_or_default();
        let new = text.get(offset..).unwrap_or_default();
        if pids().is_empty() {
            bail!("pglb agent exited:\n{new}");
        }
        Ok(has_route(new))
    })
    .with_context(|| format!("agent log: {}", log_path().display()))?;
    println!("lab: pglb agent runs on the client host (cgroup {CGROUP}, log {})", log_path().display());
    Ok(())
}

/// Stops the agent (SIGTERM) and waits for it to exit; its program detaches with it, and it
/// closes the sessions it sent straight to a writer.
pub fn stop() -> Result<()> {
    let pids = pids();
    for pid in &pids {
        // SAFETY: kill(2) with a pid just read from the client's namespace.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    wait_for(Duration::from_secs(10), "pglb agent to exit", || Ok(self::pids().is_empty()))?;
    if !pids.is_empty() {
        println!("lab: pglb agent stopped");
    }
    Ok(())
}

/// `program args…` in `ns`, started inside the client's cgroup: the shell joins the cgroup,
/// then execs `ip netns exec` (cgroup membership survives the exec and the namespace change).
pub fn in_cgroup<I, S>(ns: &str, program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new("sh");
    c.args(["-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"", CGROUP, "ip", "netns", "exec", ns, program]);
    c.args(args);
    c
}

/// `pglb agent` running on the client host for as long as this lives (the bench's agent runs,
/// `drill --client agent`): started by [`Running::start`], stopped when dropped.
pub struct Running(());

impl Running {
    pub fn start(pglb: &Path) -> Result<Running> {
        start(pglb).context("starting pglb agent on the client host")?;
        Ok(Running(()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = stop() {
            eprintln!("stopping pglb agent: {e:#}");
        }
    }
}

/// Kills whatever is left in the cgroup and removes it (`lab down`).
pub fn remove_cgroup() -> Result<()> {
    let dir = Path::new(CGROUP);
    if !dir.exists() {
        return Ok(());
    }
    let procs = || -> Vec<i32> {
        fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
    };
    for pid in procs() {
        // SAFETY: kill(2) with a pid the cgroup lists; at worst the process is gone.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_for(Duration::from_secs(10), "the client cgroup's processes to exit", || Ok(procs().is_empty()))?;
    fs::remove_dir(dir).with_context(|| format!("removing the client cgroup {CGROUP}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_counts_until_a_later_lease_loss() {
        assert!(!has_route(""));
        assert!(has_route("x agent: route: writes to pg1 epoch=1.1\n"));
        assert!(!has_route("agent: route: writes to pg1\nagent: lease lost after 1s\n"));
        assert!(has_route("agent: route: a\nagent: lease lost\nagent: route: b\n"));
        assert!(!has_route("agent: route: a\nagent: masters disagree: no route\n"));
    }

    #[test]
    fn the_config_names_both_load_balancers_and_the_cgroup() {
        let text = config_text(Path::new("/k"), Path::new("/p"));
        assert!(text.contains("load_balancers = [\"172.20.0.21:3003\", \"172.20.0.22:3003\"]"), "{text}");
        assert!(text.contains(&format!("cgroup = \"{CGROUP}\"")), "{text}");
        assert!(text.contains("write_ports = [3000]") && text.contains("read_ports = [3001]"), "{text}");
        assert!(text.contains("key_file = \"/k\"") && text.contains("lb_public_key_file = \"/p\""), "{text}");
        assert!(text.contains("pin_path = \"/sys/fs/bpf/pglb/agent-client\""), "under the pin root lab down removes: {text}");
    }
}
