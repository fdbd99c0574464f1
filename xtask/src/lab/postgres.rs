//! The lab's PostgreSQL 15 cluster: pg1 primary, pg2 and pg3 cloned from it through physical
//! slots, quorum synchronous replication, scram-sha-256 with generated passwords.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    net::ns_cmd,
    topology::{APP_DB, APP_USER, Host, INITIAL_PRIMARY, archive_dir, host, postgres_hosts, replication_passfile, secret_path},
};
use crate::{setup::PG_BIN, sh};

/// Roles with generated passwords: the superuser, replication, the application, the control plane.
pub const ROLES: &[&str] = &["postgres", "replicator", APP_USER, "pglb"];

/// Settings every node shares (copied to the standbys by pg_basebackup).
const BASE_CONF: &str = "
# --- pglb lab (cargo xtask lab up) ---
port = 5432
wal_level = replica
hot_standby = on
hot_standby_feedback = on
max_wal_senders = 10
max_replication_slots = 10
wal_log_hints = on
synchronous_commit = on
synchronous_standby_names = 'ANY 1 (pg1, pg2, pg3)'
recovery_target_timeline = 'latest'
wal_receiver_status_interval = 1s
# pg_rewind (pglb's rejoin of a former primary) reads the old primary's own WAL back to the last
# checkpoint before the fork; a shutdown checkpoint after the fork would otherwise have recycled
# it (pg_rewind: could not find previous WAL record). Production keeps it in a WAL archive too.
wal_keep_size = 256MB
# The WAL archive, shared by every node in /run/pglb-lab/archive (lab up creates it). Only the
# primary archives (archive_mode = on; docs/DECISIONS.md says why not 'always'): each finished
# segment, the timeline history and the old timeline's .partial at a promotion. The copy is
# atomic (temporary name, then mv) and never overwrites: a segment already archived with the
# same contents counts as done, different contents fail and the archiver retries.
archive_mode = on
archive_command = 'if [ -f /run/pglb-lab/archive/%f ]; then cmp -s %p /run/pglb-lab/archive/%f; else cp %p /run/pglb-lab/archive/.%f.tmp && mv /run/pglb-lab/archive/.%f.tmp /run/pglb-lab/archive/%f; fi'
# A standby, and a former primary that pglb node rejoin rewinds (pg_rewind
# --restore-target-wal reads this), fetch what pg_wal lacks from the archive.
restore_command = 'cp /run/pglb-lab/archive/%f %p'
# A hung primary must stop looking like a live upstream within a second (failover rule 2):
# the standbys' receivers ping an upstream silent for half of this and give it up after it.
wal_sender_timeout = 1s
wal_receiver_timeout = 1s
shared_buffers = 64MB
max_connections = 100
# The end-to-end tests hold a connection half-way through its authentication across a VIP
# takeover or a drain (tests/support.rs, HeldConnection): let it wait.
authentication_timeout = 10min
password_encryption = scram-sha-256
log_line_prefix = '%m [%p] %q%u@%d '
# Per-node settings live beside the data directory, so pg_basebackup does not copy them.
include_if_exists = '../node.conf'
";

/// The first matching line decides: pglb's role and the replication role log in over TLS only
/// (`hostssl`; the same roles without TLS meet `reject`), the others (the application, the
/// superuser pg_rewind uses) over either.
const HBA: &str = "
# pglb lab: OS-authenticated superuser on the local socket, scram-sha-256 for everything else
local     all          postgres                          peer
local     all          all                               scram-sha-256
hostssl   replication  replicator       172.20.0.0/16    scram-sha-256
hostssl   all          pglb,replicator  172.20.0.0/16    scram-sha-256
hostnossl all          pglb,replicator  172.20.0.0/16    reject
hostnossl replication  all              172.20.0.0/16    reject
host      all          all              172.20.0.0/16    scram-sha-256
";

pub fn data_dir(node: &Host) -> PathBuf {
    node.dir().join("data")
}

pub fn socket_dir(node: &Host) -> PathBuf {
    node.dir().join("sock")
}

pub fn log_file(node: &Host) -> PathBuf {
    node.dir().join("postgres.log")
}

fn pgpass(node: &Host) -> PathBuf {
    node.dir().join("pgpass")
}

/// The node's libpq passfile (owned by postgres): the replication role for streaming, and the
/// superuser for `pglb node rejoin`'s pg_rewind against whichever node is primary then.
fn write_pgpass(node: &Host) -> Result<()> {
    let contents = format!(
        "*:*:*:replicator:{}\n*:*:*:postgres:{}\n",
        read_secret("replicator")?,
        read_secret("postgres")?
    );
    write_private(&pgpass(node), &contents, true)
}

fn bin(tool: &str) -> String {
    format!("{PG_BIN}/{tool}")
}

/// Runs a PostgreSQL tool as the `postgres` user inside the node's namespace.
fn as_postgres(node: &Host, tool: &str, args: &[&str]) -> Command {
    let mut all = vec!["-u", "postgres", "--"];
    let tool = bin(tool);
    all.push(&tool);
    all.extend_from_slice(args);
    ns_cmd(&node.ns(), "runuser", all)
}

/// Runs SQL as the superuser over the node's Unix socket; returns unaligned, tuples-only output.
pub fn sql(node: &Host, query: &str) -> Result<String> {
    sql_with(node, "postgres", query, None)
}

/// Like [`sql`], on database `db`.
pub fn sql_on(node: &Host, db: &str, query: &str) -> Result<String> {
    sql_with(node, db, query, None)
}

/// Like [`sql`], with commits that do not wait for synchronous standbys (for building the
/// cluster before any standby exists).
fn sql_local_commit(node: &Host, query: &str) -> Result<String> {
    sql_with(node, "postgres", query, Some("-c synchronous_commit=local"))
}

fn sql_with(node: &Host, db: &str, query: &str, pgoptions: Option<&str>) -> Result<String> {
    let sock = socket_dir(node);
    let mut psql = as_postgres(
        node,
        "psql",
        &["-X", "-q", "-h", sock.to_str().unwrap(), "-p", "5432", "-U", "postgres", "-d", db,
          "-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-c", query],
    );
    // A hung server (drills SIGSTOP one) must not stall the caller.
    psql.env("PGCONNECT_TIMEOUT", "2");
    if let Some(options) = pgoptions {
        psql.env("PGOPTIONS", options);
    }
    let out = sh::output(&mut psql)
    .with_context(|| format!("running SQL on {}", node.name))?;
    Ok(out.trim().to_owned())
}

fn chown_postgres(path: &Path) -> Result<()> {
    sh::run(&mut sh::cmd("chown", ["-R", "postgres:postgres", path.to_str().unwrap()]))
}

fn write_private(path: &Path, contents: &str, owner_postgres: bool) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    if owner_postgres {
        chown_postgres(path)?;
    }
    Ok(())
}

/// Creates the node's folder (owned by postgres) with its socket folder.
fn node_dirs(node: &Host) -> Result<()> {
    let dir = node.dir();
    fs::create_dir_all(socket_dir(node)).with_context(|| format!("creating {}", dir.display()))?;
    chown_postgres(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Settings that differ per node, in `<node dir>/node.conf` (outside the data directory), with
/// the node's TLS: its server certificate is made here, signed by the lab CA.
fn write_node_conf(node: &Host) -> Result<()> {
    super::tls::make_server_cert(node)?;
    let conf = format!(
        "# written by cargo xtask lab up for {name}\nlisten_addresses = '{addr}'\nunix_socket_directories = '{sock}'\ncluster_name = '{name}'\n{tls}",
        name = node.name,
        addr = node.addr,
        sock = socket_dir(node).display(),
        tls = super::tls::node_conf(node),
    );
    write_private(&node.dir().join("node.conf"), &conf, true)
}

pub fn start(node: &Host) -> Result<()> {
    let data = data_dir(node);
    let log = log_file(node);
    sh::run(&mut as_postgres(
        node,
        "pg_ctl",
        &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"],
    ))
    .with_context(|| format!("starting PostgreSQL on {} (log: {})", node.name, log.display()))
}

/// Stops the node's server at once if it runs; quiet when there is nothing to stop.
pub fn stop_immediate(node: &Host) {
    let data = data_dir(node);
    if data.join("postmaster.pid").exists() {
        let _ = sh::capture(&mut as_postgres(
            node,
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "-t", "10", "stop"],
        ));
    }
}

pub fn create_secrets() -> Result<()> {
    let dir = super::topology::secrets_dir();
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    for role in ROLES {
        write_private(&secret_path(role), &random_password()?, false)?;
    }
    // The key the load balancers authenticate their peer reports with (`[vrrp] key_file`).
    write_private(&dir.join("peer.key"), &random_password()?, false)?;
    let app = read_secret(APP_USER)?;
    write_private(&super::topology::client_pgpass(), &format!("*:*:*:{APP_USER}:{app}\n"), false)?;
    Ok(())
}

pub fn read_secret(role: &str) -> Result<String> {
    let path = secret_path(role);
    Ok(fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is the lab up?)", path.display()))?
        .trim()
        .to_owned())
}

fn random_password() -> Result<String> {
    let mut bytes = [0u8; 18];
    let mut f = fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// initdb, configuration, start, roles and database on the initial primary.
fn init_primary(node: &Host) -> Result<()> {
    node_dirs(node)?;
    let pwfile = node.dir().join("initdb.pw");
    write_private(&pwfile, &read_secret("postgres")?, true)?;
    let data = data_dir(node);
    sh::run(&mut as_postgres(
        node,
        "initdb",
        &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth-local=peer", "--auth-host=scram-sha-256",
          &format!("--pwfile={}", pwfile.display()), "--encoding=UTF8", "--locale=C.UTF-8"],
    ))
    .context("initdb on pg1")?;
    fs::remove_file(&pwfile)?;
    write_pgpass(node)?;
    let conf_path = data.join("postgresql.conf");
    let mut conf = fs::read_to_string(&conf_path)?;
    conf.push_str(BASE_CONF);
    fs::write(&conf_path, conf)?;
    fs::write(data.join("pg_hba.conf"), HBA)?;
    chown_postgres(&data)?;
    write_node_conf(node)?;
    start(node)?;

    let (repl, app, pglb) = (read_secret("replicator")?, read_secret(APP_USER)?, read_secret("pglb")?);
    // Commits here must not wait for standbys that do not exist yet.
    sql_local_commit(node, &format!(
        "CREATE ROLE replicator WITH LOGIN REPLICATION PASSWORD '{repl}';
         CREATE ROLE {APP_USER} WITH LOGIN PASSWORD '{app}';
         CREATE ROLE pglb WITH LOGIN REPLICATION PASSWORD '{pglb}';
         GRANT pg_monitor TO pglb;
         GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO pglb;
         GRANT EXECUTE ON FUNCTION pg_reload_conf() TO pglb;
         GRANT ALTER SYSTEM ON PARAMETER primary_conninfo, primary_slot_name, synchronous_standby_names TO pglb;"
    ))
    .context("creating the lab roles on pg1")?;
    sql_local_commit(node, &format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"))
        .context("creating the app database on pg1")?;
    Ok(())
}

/// Makes `node` a streaming standby of `primary` with `pglb node clone` (pg_basebackup through
/// the slot named after the node, standby.signal, primary_conninfo, start).
fn clone_standby(node: &Host, primary: &Host, pglb: &Path) -> Result<()> {
    node_dirs(node)?;
    let pass = pgpass(node);
    write_pgpass(node)?;
    write_node_conf(node)?;
    let data = data_dir(node);
    let log = log_file(node);
    let mut clone = ns_cmd(&node.ns(), pglb.to_str().unwrap(), [
        "node", "clone", "--from", primary.addr, "--name", node.name,
        "--data-dir", data.to_str().unwrap(), "--passfile", pass.to_str().unwrap(),
        "--log-file", log.to_str().unwrap(), "--pg-bin", PG_BIN,
        "--sslmode", "verify-full", "--sslrootcert", super::tls::ca_cert().to_str().unwrap(),
    ]);
    clone.env("PGLB_LOG", "warn");
    sh::run(&mut clone).with_context(|| format!("pglb node clone of {} from {}", node.name, primary.name))
}

/// Builds the whole cluster and waits until both standbys stream with `sync_state = quorum`.
pub fn create_cluster(pglb: &Path) -> Result<()> {
    let primary = host(INITIAL_PRIMARY)?;
    let archive = archive_dir();
    fs::create_dir_all(&archive).with_context(|| format!("creating the WAL archive {}", archive.display()))?;
    chown_postgres(&archive)?;
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o700))?;
    // `[replication] passfile` of the lab configs: one path every node's walreceiver reads (on
    // real hosts, the same path on each database host).
    write_private(&replication_passfile(), &format!("*:*:*:replicator:{}\n", read_secret("replicator")?), true)?;
    init_primary(primary)?;
    for node in postgres_hosts().filter(|h| h.name != primary.name) {
        clone_standby(node, primary, pglb)?;
    }
    wait_for(Duration::from_secs(60), "both standbys streaming with sync_state = quorum", || {
        let rows = sql(primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'quorum'")?;
        Ok(rows == "2")
    })
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut last_err = None;
    while start.elapsed() < limit {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => last_err = None,
            Err(e) => last_err = Some(e),
        }
        thread::sleep(Duration::from_millis(100));
    }
    match last_err {
        Some(e) => bail!("timed out after {limit:?} waiting for {what}; last error: {e:#}"),
        None => bail!("timed out after {limit:?} waiting for {what}"),
    }
}

/// One row of `lab status` for a PostgreSQL node.
pub struct NodeStatus {
    pub role: String,
    pub timeline: String,
    pub replication: String,
    pub lag: String,
}

/// Reads role, timeline and replication state; `None` fields become "-".
pub fn node_status(node: &Host, primary_lag: &[(String, String)]) -> NodeStatus {
    let q = "SELECT pg_is_in_recovery(),
                    CASE WHEN pg_is_in_recovery()
                         THEN coalesce((SELECT received_tli::text FROM pg_stat_wal_receiver),
                                       (SELECT timeline_id::text FROM pg_control_checkpoint()))
                         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text END,
                    coalesce((SELECT status || ' from ' || sender_host FROM pg_stat_wal_receiver), ''),
                    coalesce((SELECT string_agg(application_name || ' ' || sync_state, ', ' ORDER BY application_name)
                              FROM pg_stat_replication WHERE state = 'streaming'), '')";
    match sql(node, q) {
        Ok(row) => {
            let f: Vec<&str> = row.split('|').collect();
            let standby = f.first() == Some(&"t");
            let replication = if standby {
                f.get(2).filter(|s| !s.is_empty()).map(|s| s.to_string()).unwrap_or_else(|| "not streaming".into())
            } else if f.get(3).is_some_and(|s| !s.is_empty()) {
                format!("sync to {}", f[3])
            } else {
                "no standby streaming".into()
            };
            let lag = primary_lag
                .iter()
                .find(|(name, _)| name == node.name)
                .map(|(_, lag)| lag.clone())
                .unwrap_or_default();
            NodeStatus {
                role: if standby { "standby" } else { "primary" }.into(),
                timeline: f.get(1).unwrap_or(&"-").to_string(),
                replication,
                lag,
            }
        }
        Err(_) => NodeStatus {
            role: if data_dir(node).exists() { "down" } else { "absent" }.into(),
            timeline: "-".into(),
            replication: "-".into(),
            lag: String::new(),
        },
    }
}

/// Per-standby lag as the primary sees it: (application_name, "N B, S s").
pub fn standby_lag(primary: &Host) -> Vec<(String, String)> {
    let q = "SELECT application_name,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
                    coalesce(round(extract(epoch FROM replay_lag)::numeric, 3), 0)
             FROM pg_stat_replication";
    sql(primary, q)
        .map(|rows| {
            rows.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split('|').collect();
                    (f.len() == 3).then(|| (f[0].to_owned(), format!("{} B, {} s", f[1], f[2])))
                })
                .collect()
        })
        .unwrap_or_default()
}
