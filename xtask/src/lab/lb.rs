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
//! Where the VIP lives: its home, lb1 (the first load balancer of the topology, priority 150),
//! takes it at `lab up`. A load balancer that comes back does not preempt a healthy master
//! (issue 18: keepalived's `nopreempt` is pglb's default), so after a drill or a test restarted
//! lb1's pglb, lb2 keeps the VIP; [`bring_vip_home`] moves it back to lb1 the way an operator
//! would, with a graceful restart of lb2's pglb.

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
    topology::{APP_DB, APP_USER, Host, READ_PORT, VIP, WRITE_PORT, client_pgpass, home_lb, host, load_balancers},
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

/// The config file in the repository a load balancer host is installed from: `lab.toml` for the
/// VIP's home, `lab-<name>.toml` for the others.
pub fn source_config(lb: &Host) -> PathBuf {
    let file = if lb.name == home_lb().name { "lab.toml".to_owned() } else { format!("lab-{}.toml", lb.name) };
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
/// (The replication password stays on the database hosts: `[replication] passfile`.)
const LB_SECRETS: [(&str, &str); 4] = [
    ("pglb.password", "pglb.password"),
    ("peer.key", "peer.key"),
    (super::agent::SIGNING_KEY, super::agent::SIGNING_KEY),
    (super::agent::CLIENT_KEY, super::agent::CLIENT_KEY),
];

/// The CA certificate `[probe] sslrootcert` names, in `etc/pglb`.
pub const PG_CA: &str = "pg-ca.crt";

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
    // `[probe] sslrootcert`: the lab CA the nodes' certificates chain to.
    let ca = etc.join(PG_CA);
    fs::copy(super::tls::ca_cert(), &ca).with_context(|| format!("copying the lab CA to {}", ca.display()))?;
    fs::set_permissions(&ca, fs::Permissions::from_mode(0o644))?;
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
        bail!("expected state_dir, the probe's password_file and the agent key files, found {seen} of them");
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

/// Starts pglb on every load balancer, the VIP's home (lb1) first, and waits until the VIP
/// answers on both ports. The VIP stays with the first instance that is ready (no preemption of
/// a healthy master, `[vrrp] preempt = false`), so the home (priority 150) is started and holds
/// the VIP before the others start, as an operator brings up such a pair.
pub fn start_all(pglb: &Path) -> Result<()> {
    link_binary(pglb)?;
    let home = home_lb();
    for lb in load_balancers() {
        install(lb, pglb).with_context(|| format!("installing pglb on {}", lb.name))?;
        start(lb, pglb)?;
        if lb.name == home.name {
            wait_for(Duration::from_secs(30), &format!("{} (the highest VRRP priority) to hold the VIP", home.name), || holds_vip(home))?;
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

/// Whether `lb` holds the VIP and no other load balancer does.
pub fn holds_vip_alone(lb: &Host) -> Result<bool> {
    if !holds_vip(lb)? {
        return Ok(false);
    }
    for other in load_balancers().filter(|o| o.name != lb.name) {
        if holds_vip(other)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Which load balancers run pglb and which hold the VIP, for messages: `lb1 runs, holds the
/// VIP; lb2 runs`.
pub fn vip_picture() -> String {
    let each = load_balancers().map(|lb| {
        let runs = if running(lb) { "runs" } else { "does not run" };
        let vip = match holds_vip(lb) {
            Ok(true) => ", holds the VIP",
            Ok(false) => "",
            Err(_) => ", VIP unknown",
        };
        format!("{} {runs}{vip}", lb.name)
    });
    each.collect::<Vec<_>>().join("; ")
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

/// Moves the VIP back to its home (lb1) when another load balancer (lb2) holds it and every pglb
/// runs: that holder's pglb gets SIGTERM (its priority-0 advert hands the VIP to the home within
/// the home's Skew_Time), and is started again once the home holds the VIP alone; it comes back
/// as backup. Waits first for the home to say it is ready (a returning instance does not take
/// the VIP before it has re-decided), and at the end for the restarted one to follow the home
/// again (ready, its status names the home as the VIP holder). A no-op when the home already
/// holds the VIP alone; returns how long it took.
///
/// The cluster must be otherwise healthy: a graceful restart of the holder is what an operator
/// would do to move the VIP home, not a repair.
pub fn bring_vip_home(pglb: &Path) -> Result<Duration> {
    let home = home_lb();
    let started = std::time::Instant::now();
    if holds_vip_alone(home)? {
        return Ok(Duration::ZERO);
    }
    let away = vip_away_from(home)?;
    wait_for(HOME_STEP, &format!("pglb on {} to be ready (re-decided since its start)", home.name), || Ok(ready(home).unwrap_or(Some(false)) != Some(false)))
        .with_context(|| format!("{}'s log: {}", home.name, log_path(home).display()))?;
    let pid = pglb_pid(away)?;
    // SAFETY: kill(2) has no memory preconditions; the pid was just read from the holder's namespace.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        bail!("SIGTERM to pglb on {} (pid {pid}): {}", away.name, std::io::Error::last_os_error());
    }
    wait_for(HOME_STEP, &format!("pglb on {} to stop after SIGTERM", away.name), || Ok(!running(away)))?;
    wait_for(HOME_STEP, &format!("{} to take the VIP on {}'s priority-0 advert", home.name, away.name), || holds_vip_alone(home))
        .with_context(|| format!("{}'s log: {}", home.name, log_path(home).display()))?;
    start(away, pglb)?;
    // Ready too: it has the home's authenticated reports, so it believes the home's adverts, a
    // priority-0 one included (a graceful stop of the home right after hands over at once).
    let follows = format!("the restarted pglb on {} to follow {} (ready, its status names {} as the VIP holder)", away.name, home.name, home.name);
    wait_for(HOME_STEP, &follows, || {
        let Ok(v) = status_json(away) else { return Ok(false) };
        Ok(v["vip_held"] == false && v["vrrp_state"] == "backup" && v["vip_master"] == home.addr && v["ready"] != false)
    })
    .with_context(|| format!("{}'s log: {}", away.name, log_path(away).display()))?;
    if !holds_vip_alone(home)? {
        bail!("the VIP moved again while pglb on {} restarted ({})", away.name, vip_picture());
    }
    Ok(started.elapsed())
}

/// A load balancer other than `home` that holds the VIP, when pglb runs on every load balancer:
/// the state [`bring_vip_home`] starts from. (The home may still hold a stale VIP of its own
/// that its restarted pglb is about to remove.)
fn vip_away_from(home: &Host) -> Result<&'static Host> {
    let away = load_balancers().filter(|lb| lb.name != home.name).find(|lb| holds_vip(lb).unwrap_or(false));
    match away {
        Some(away) if load_balancers().all(running) => Ok(away),
        _ => bail!(
            "cannot bring the VIP home: expected pglb running on every load balancer and the VIP on one other than {} ({})",
            home.name,
            vip_picture()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `priority` in the `[vrrp]` section of a lab config (the `[[node]]` sections have one too).
    fn vrrp_priority(config: &str) -> Option<u32> {
        let mut section = "";
        for line in config.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[vrrp]"
                && let Some(("priority", value)) = line.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
            {
                return value.parse().ok();
            }
        }
        None
    }

    #[test]
    fn vrrp_priorities_fall_in_topology_order() {
        // What makes the first load balancer the VIP's home and `peer_of` the one that takes over.
        let priorities: Vec<(&str, u32)> = load_balancers()
            .map(|lb| {
                let path = source_config(lb);
                let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                (lb.name, vrrp_priority(&text).unwrap_or_else(|| panic!("no [vrrp] priority in {}", path.display())))
            })
            .collect();
        assert_eq!(priorities.first(), Some(&("lb1", 150)));
        assert!(priorities.windows(2).all(|w| w[0].1 > w[1].1), "{priorities:?}");
    }
}
