//! pglb on the lab's load balancers: lb1 with `config/lab.toml`, lb2 with `config/lab-lb2.toml`.
//!
//! Each load balancer gets the layout docs/DEPLOY.md installs on a real host, under its own
//! root folder (`/run/pglb-lab/<lb>/root`): the config at `etc/pglb/pglb.toml` (0644), the
//! probe and replication passwords beside it (0600), the state under `var/lib/pglb/<lb>` (0750,
//! the unit's `StateDirectory`). `lab up` installs them as `vagrant/provision/lb.sh` does —
//! copy, `pglb check`, then start — and pglb runs with `--config <root>/etc/pglb/pglb.toml`.
//!
//! pglb is started with `nsenter --net` rather than `ip netns exec`: the latter mounts a fresh
//! sysfs, which hides the root bpffs at /sys/fs/bpf where pglb pins its maps and XDP link.
//!
//! Where the VIP lives: lb1 (priority 150) takes it at `lab up`. A load balancer that comes back
//! does not preempt a healthy master (issue 18: keepalived's `nopreempt` is pglb's default), so
//! after a drill or a test restarted lb1's pglb, lb2 keeps the VIP; [`bring_vip_home`] moves it
//! back to lb1 the way an operator would, with a graceful restart of lb2's pglb.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    net::{namespace_pids, ns_cmd},
    postgres::wait_for,
    topology::{APP_DB, APP_USER, Host, READ_PORT, VIP, WRITE_PORT, client_pgpass, host},
};
use crate::{setup::PG_BIN, sh};

/// The workspace root (xtask lives one level below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent folder").to_owned()
}

/// The pglb binary the lab runs: `PGLB_BIN` if set (the tests set it), else this workspace's
/// debug build, built now.
pub fn pglb_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PGLB_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.exists() {
            bail!("PGLB_BIN points at {}, which does not exist", bin.display());
        }
        return Ok(bin);
    }
    let mut build = sh::cmd("cargo", ["build", "-q", "-p", "lb-user", "--bin", "pglb"]);
    build.current_dir(workspace());
    sh::run_inherit(&mut build).context("building pglb for the lab")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    Ok(target.join("debug/pglb"))
}

/// The config file in the repository a load balancer host is installed from.
pub fn source_config(lb: &Host) -> PathBuf {
    let file = if lb.name == "lb1" { "lab.toml".to_owned() } else { format!("lab-{}.toml", lb.name) };
    workspace().join("config").join(file)
}

/// The load balancer's stand-in for `/`: its `etc/pglb` and `var/lib/pglb`.
pub fn root(lb: &Host) -> PathBuf {
    lb.dir().join("root")
}

/// The installed config pglb runs with: `<root>/etc/pglb/pglb.toml`.
pub fn config_path(lb: &Host) -> PathBuf {
    root(lb).join("etc/pglb/pglb.toml")
}

/// The secrets a load balancer needs, as (file in the lab's secrets folder, installed name).
const LB_SECRETS: [(&str, &str); 5] = [
    ("pglb.password", "pglb.password"),
    ("replicator.password", "replicator.password"),
    ("peer.key", "peer.key"),
    (super::agent::SIGNING_KEY, super::agent::SIGNING_KEY),
    (super::agent::CLIENT_KEY, super::agent::CLIENT_KEY),
];

/// Installs a load balancer as docs/DEPLOY.md does on a real host (vagrant/provision/lb.sh):
/// `etc/pglb` with the secrets (0600) and the config (0644, written aside, checked with
/// `pglb check`, then moved into place), and the state folder `var/lib/pglb` (0750). The config
/// must point at these files: a config naming anything outside the host's root is refused.
pub fn install(lb: &Host, pglb: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let root = root(lb);
    let etc = root.join("etc/pglb");
    let state = root.join("var/lib/pglb");
    for (dir, mode) in [(&etc, 0o755), (&state, 0o750)] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    for (from, file) in LB_SECRETS {
        let from = super::topology::secrets_dir().join(from);
        let to = etc.join(file);
        fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o600))?;
    }
    let source = source_config(lb);
    let text = fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
    check_layout(&text, &root).with_context(|| format!("{} does not follow the install layout", source.display()))?;
    let config = config_path(lb);
    let staged = config.with_extension("toml.new");
    fs::write(&staged, &text).with_context(|| format!("writing {}", staged.display()))?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o644))?;
    let staged_str = staged.to_str().context("a UTF-8 path")?;
    let mut check = sh::cmd(pglb.to_str().context("a UTF-8 path")?, ["check", "--config", staged_str]);
    check.env("PGLB_LOG", "warn");
    sh::run(&mut check).with_context(|| format!("pglb check --config {staged_str}"))?;
    fs::rename(&staged, &config).with_context(|| format!("moving {} into place", staged.display()))?;
    Ok(())
}

/// The lab config's own files (`state_dir`, `password_file`s, `key_file`) must be under the host's root, the
/// way the guide's config names `/etc/pglb/…` and `/var/lib/pglb/…`: otherwise the lab would
/// quietly test some other layout.
fn check_layout(config: &str, root: &Path) -> Result<()> {
    let root = root.to_str().context("a UTF-8 path")?;
    let mut seen = 0;
    for line in config.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim();
        if !(key == "state_dir" || key.ends_with("password_file") || key.ends_with("key_file")) {
            continue;
        }
        let value = value.trim().trim_matches('"');
        let want = if key == "state_dir" { format!("{root}/var/lib/pglb/") } else { format!("{root}/etc/pglb/") };
        if !value.starts_with(&want) {
            bail!("{key} = {value:?} is not under {want}");
        }
        seen += 1;
    }
    if seen < 4 {
        bail!("expected state_dir, the probe and replication password_file keys and the agent key files, found {seen} of them");
    }
    Ok(())
}

pub fn log_path(lb: &Host) -> PathBuf {
    lb.dir().join("pglb.log")
}

/// Starts `pglb run` inside the host's network namespace, detached, appending to its log.
pub fn start(lb: &Host, pglb: &Path) -> Result<u32> {
    fs::create_dir_all(lb.dir())?;
    let config = config_path(lb);
    super::net::spawn_detached(&lb.ns(), pglb, [OsStr::new("run"), OsStr::new("--config"), config.as_os_str()], &log_path(lb))
        .with_context(|| format!("starting pglb on {}", lb.name))
}

/// Succeeds when a new connection through the VIP on `port` runs a query.
pub fn vip_answers(port: u16) -> Result<bool> {
    let client = host("client")?;
    let mut psql = ns_cmd(&client.ns(), &format!("{PG_BIN}/psql"), [
        "-X", "-h", VIP, "-p", &port.to_string(), "-U", APP_USER, "-d", APP_DB, "-Atc", "SELECT 1",
    ]);
    psql.env("PGPASSFILE", client_pgpass()).env("PGCONNECT_TIMEOUT", "2");
    Ok(sh::capture(&mut psql)?.status.success())
}

/// Starts pglb on every load balancer, lb1 first, and waits until the VIP answers on both
/// ports. The VIP stays with the first instance that is ready (no preemption of a healthy
/// master, `[vrrp] preempt = false`), so lb1 (priority 150) is started and holds the VIP before
/// the others start, as an operator brings up such a pair.
pub fn start_all(pglb: &Path) -> Result<()> {
    link_binary(pglb)?;
    let lb1 = host("lb1")?;
    for lb in super::topology::HOSTS.iter().filter(|h| h.kind == super::topology::Kind::LoadBalancer) {
        install(lb, pglb).with_context(|| format!("installing pglb on {}", lb.name))?;
        start(lb, pglb)?;
        if lb.name == lb1.name {
            wait_for(Duration::from_secs(30), "lb1 (VRRP priority 150) to hold the VIP", || holds_vip(lb1))?;
        }
    }
    for port in [WRITE_PORT, READ_PORT] {
        wait_for(Duration::from_secs(30), &format!("the VIP to answer on {VIP}:{port}"), || vip_answers(port))
            .with_context(|| format!("pglb logs: {}", super::topology::STATE_DIR))?;
    }
    Ok(())
}

/// A stable path to the pglb binary the lab runs, for commands in the lab configs
/// (`[failover] demote_command` runs `pglb node rejoin` through it).
pub fn stable_binary() -> PathBuf {
    Path::new(super::topology::STATE_DIR).join("bin/pglb")
}

fn link_binary(pglb: &Path) -> Result<()> {
    let link = stable_binary();
    fs::create_dir_all(link.parent().expect("a folder"))?;
    let _ = fs::remove_file(&link);
    let target = fs::canonicalize(pglb).with_context(|| format!("resolving {}", pglb.display()))?;
    std::os::unix::fs::symlink(&target, &link).with_context(|| format!("linking {} to {}", link.display(), target.display()))
}

/// Whether the VIP is on the host's eth0.
pub fn holds_vip(lb: &Host) -> Result<bool> {
    let out = sh::output(&mut sh::cmd("ip", ["-n", &lb.ns(), "-4", "-o", "addr", "show", "dev", "eth0"]))?;
    Ok(out.contains(&format!("inet {VIP}/")))
}

/// Whether a pglb process runs in the host's namespace.
pub fn running(lb: &Host) -> bool {
    super::net::namespace_pids(&lb.ns())
        .unwrap_or_default()
        .iter()
        .any(|pid| fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("pglb") && c.contains("run")))
}

/// The pid of `pglb run` in a load balancer's namespace.
pub fn pglb_pid(lb: &Host) -> Result<i32> {
    let pids: Vec<i32> = namespace_pids(&lb.ns())?
        .into_iter()
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() > 1 && args[0].ends_with(b"pglb") && args[1] == b"run"
        })
        .collect();
    match pids.as_slice() {
        [pid] => Ok(*pid),
        other => bail!("expected one pglb on {}, found {other:?}", lb.name),
    }
}

/// `pglb status --json` of a load balancer's daemon (schema `pglb.status/1`, docs/JSON.md).
pub fn status_json(lb: &Host) -> Result<Value> {
    let config = config_path(lb);
    let mut c = sh::cmd(stable_binary().to_str().context("a UTF-8 path")?, ["status", "--json", "--config"]);
    c.arg(&config).env("PGLB_LOG", "warn");
    let text = sh::output(&mut c).with_context(|| format!("pglb status --json on {}", lb.name))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("pglb status --json on {} printed no JSON: {text:?}", lb.name))?;
    if v["schema"] != "pglb.status/1" {
        bail!("pglb status --json on {} printed schema {}, expected \"pglb.status/1\"", lb.name, v["schema"]);
    }
    Ok(v)
}

/// Whether a load balancer's pglb says it has re-decided since its start or its last stall
/// (`"ready"` of `pglb status --json`); `None` when its status does not have the field (a pglb
/// from before issue 18: every instance counts as ready there).
pub fn ready(lb: &Host) -> Result<Option<bool>> {
    let v = status_json(lb)?;
    match &v["ready"] {
        Value::Bool(b) => Ok(Some(*b)),
        Value::Null => Ok(None),
        other => bail!("\"ready\" in pglb status --json on {} is {other}, not a bool", lb.name),
    }
}

/// The longest [`bring_vip_home`] waits for each step.
const HOME_STEP: Duration = Duration::from_secs(30);

/// Moves the VIP back to lb1 when lb2 holds it and both pglb run: lb2's pglb gets SIGTERM (its
/// priority-0 advert hands the VIP to lb1 within lb1's Skew_Time), and is started again once
/// lb1 holds the VIP alone; it comes back as backup. Waits first for lb1 to say it is ready (a
/// returning instance does not take the VIP before it has re-decided), and at the end for lb2
/// to follow lb1 again (ready, its status names lb1 as the VIP holder). A no-op when lb1 already holds
/// the VIP alone; returns how long it took.
///
/// The cluster must be otherwise healthy: a graceful restart of lb2 is what an operator would
/// do to move the VIP home, not a repair.
pub fn bring_vip_home(pglb: &Path) -> Result<Duration> {
    let (lb1, lb2) = (host("lb1")?, host("lb2")?);
    let started = std::time::Instant::now();
    if holds_vip(lb1)? && !holds_vip(lb2)? {
        return Ok(Duration::ZERO);
    }
    if !running(lb1) || !running(lb2) || !holds_vip(lb2)? {
        bail!(
            "cannot bring the VIP home: expected pglb running on lb1 and lb2 with the VIP on lb2 (lb1 runs: {}, lb2 runs: {}, lb2 holds the VIP: {})",
            running(lb1),
            running(lb2),
            holds_vip(lb2)?
        );
    }
    wait_for(HOME_STEP, "pglb on lb1 to be ready (re-decided since its start)", || Ok(ready(lb1).unwrap_or(Some(false)) != Some(false)))
        .with_context(|| format!("lb1's log: {}", log_path(lb1).display()))?;
    let pid = pglb_pid(lb2)?;
    // SAFETY: kill(2) has no memory preconditions; the pid was just read from lb2's namespace.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        bail!("SIGTERM to pglb on lb2 (pid {pid}): {}", std::io::Error::last_os_error());
    }
    wait_for(HOME_STEP, "pglb on lb2 to stop after SIGTERM", || Ok(!running(lb2)))?;
    wait_for(HOME_STEP, "lb1 to take the VIP on lb2's priority-0 advert", || Ok(holds_vip(lb1)? && !holds_vip(lb2)?))
        .with_context(|| format!("lb1's log: {}", log_path(lb1).display()))?;
    start(lb2, pglb)?;
    // Ready too: it has lb1's authenticated reports, so it believes lb1's adverts, a priority-0
    // one included (a graceful stop of lb1 right after hands over at once).
    wait_for(HOME_STEP, "the restarted pglb on lb2 to follow lb1 (ready, its status names lb1 as the VIP holder)", || {
        let Ok(v) = status_json(lb2) else { return Ok(false) };
        Ok(v["vip_held"] == false && v["vrrp_state"] == "backup" && v["vip_master"] == lb1.addr && v["ready"] != false)
    })
    .with_context(|| format!("lb2's log: {}", log_path(lb2).display()))?;
    if !holds_vip(lb1)? || holds_vip(lb2)? {
        bail!("the VIP moved again while pglb on lb2 restarted (lb1 holds it: {}, lb2: {})", holds_vip(lb1)?, holds_vip(lb2)?);
    }
    Ok(started.elapsed())
}
