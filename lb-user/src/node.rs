//! `pglb node clone|rejoin`: run on a PostgreSQL host to make, or re-make, a streaming standby.
//!
//! `clone` takes a base backup from the primary through a physical slot named after the node;
//! `rejoin` rewinds a former primary (pg_rewind, which needs `wal_log_hints=on`) onto the new
//! primary's timeline. Both finish the same way: `standby.signal`, `primary_conninfo` with the
//! node's `application_name`, `primary_slot_name`, and the server started.
//!
//! When the former primary's configuration has a `restore_command` (a WAL archive), `rejoin`
//! passes `--restore-target-wal`: pg_rewind then fetches the old primary's own WAL that a
//! checkpoint since the fork recycled from the archive, and the restarted standby replays what
//! the new primary no longer keeps from there too. Without a `restore_command` the flag would
//! make pg_rewind refuse to start, so it is left out and only `pg_wal` is read.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use thiserror::Error;

use crate::config::SslMode;

/// Where the PostgreSQL 15 binaries are on Debian/Ubuntu.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("{tool} failed ({status}): {stderr}")]
    Tool { tool: String, status: String, stderr: String },
    #[error("cannot run {tool}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not empty: `pglb node clone` only fills an empty data directory (remove it first)")]
    NotEmpty { path: PathBuf },
    #[error("{path} holds no PostgreSQL data directory (no PG_VERSION): use `pglb node clone` instead")]
    NoDataDir { path: PathBuf },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {what} {value:?}: {why}")]
    Invalid { what: &'static str, value: String, why: &'static str },
    #[error("another `pglb node clone` or `rejoin` is working on {}: not starting a second one (lock {})", data_dir.display(), lock.display())]
    Busy { data_dir: PathBuf, lock: PathBuf },
}

/// An exclusive lock on a data directory for the length of a clone or rejoin: two load
/// balancers that both think they are VRRP master may run the same `rejoin_command` at once,
/// and two pg_rewinds of one directory would corrupt it. The lock is a file beside the data
/// directory (`.<name>.pglb-lock`), held with `flock` until dropped.
struct DataDirLock {
    _file: fs::File,
}

impl DataDirLock {
    fn take(data_dir: &Path) -> Result<Self, NodeError> {
        use std::os::fd::AsRawFd as _;
        let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        let lock = data_dir.parent().unwrap_or(Path::new("/")).join(format!(".{name}.pglb-lock"));
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock).map_err(io("open", &lock))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(NodeError::Busy { data_dir: data_dir.to_owned(), lock });
        }
        Ok(DataDirLock { _file: file })
    }
}

/// Everything `clone` and `rejoin` need to know about the node and its upstream.
#[derive(Clone, Debug)]
pub struct StandbySpec {
    /// This node's name: its `application_name` and its slot name on the primary.
    pub name: String,
    pub data_dir: PathBuf,
    /// The primary's address and port.
    pub primary_host: String,
    pub primary_port: u16,
    /// The replication role and a libpq passfile holding its password (0600, owned by the
    /// OS user that runs PostgreSQL).
    pub replication_user: String,
    pub passfile: PathBuf,
    /// The OS user PostgreSQL runs as; tools run as this user when pglb runs as root.
    pub os_user: String,
    pub pg_bin: PathBuf,
    /// Server log for `pg_ctl start`.
    pub log_file: PathBuf,
    /// TLS to the primary: of the standby's stream and of the tools' connections.
    pub tls: StandbyTls,
}

/// TLS to the primary with libpq's meanings: written into `primary_conninfo`, and handed to
/// pg_basebackup, pg_rewind and psql as `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`.
/// Unset values are left to libpq's defaults (`sslmode=prefer`).
#[derive(Clone, Debug, Default)]
pub struct StandbyTls {
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

impl StandbyTls {
    /// The files as (libpq keyword, environment variable, path).
    fn files(&self) -> [(&'static str, &'static str, &Option<PathBuf>); 3] {
        [("sslrootcert", "PGSSLROOTCERT", &self.sslrootcert), ("sslcert", "PGSSLCERT", &self.sslcert), ("sslkey", "PGSSLKEY", &self.sslkey)]
    }

    /// Each path must be absolute and plain enough to sit unquoted in `primary_conninfo`.
    fn check(&self) -> Result<(), NodeError> {
        for (key, _, path) in self.files() {
            let Some(path) = path else { continue };
            let text = path.to_string_lossy();
            if !path.is_absolute() || text.chars().any(|c| c.is_whitespace() || c == '\'' || c == '\\') {
                return Err(NodeError::Invalid { what: key, value: text.into_owned(), why: "an absolute path without spaces, quotes or backslashes" });
            }
        }
        Ok(())
    }

    fn conninfo_words(&self) -> Vec<String> {
        let mode = self.sslmode.map(|m| format!("sslmode={m}"));
        let files = self.files().into_iter().filter_map(|(key, _, path)| path.as_ref().map(|p| format!("{key}={}", p.display())));
        mode.into_iter().chain(files).collect()
    }

    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let mode = self.sslmode.map(|m| ("PGSSLMODE", m.as_str().into()));
        let files = self.files().into_iter().filter_map(|(_, var, path)| path.as_ref().map(|p| (var, p.clone().into_os_string())));
        mode.into_iter().chain(files).collect()
    }
}

fn check_name(name: &str) -> Result<(), NodeError> {
    let ok = !name.is_empty() && name.len() <= 63 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NodeError::Invalid { what: "node name", value: name.to_owned(), why: "a slot name needs 1-63 of a-z, 0-9, _" })
    }
}

impl StandbySpec {
    /// The `primary_conninfo` this node streams with: a passfile, never a password.
    pub fn conninfo(&self) -> String {
        let mut words = vec![
            format!("host={}", self.primary_host),
            format!("port={}", self.primary_port),
            format!("user={}", self.replication_user),
            format!("passfile={}", self.passfile.display()),
        ];
        words.extend(self.tls.conninfo_words());
        words.push(format!("application_name={}", self.name));
        words.join(" ")
    }

    fn tool(&self, tool: &str) -> Command {
        let path = self.pg_bin.join(tool);
        // SAFETY: geteuid has no preconditions.
        let mut c = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", &self.os_user, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.envs(self.tls.env());
        c
    }
}

fn run(mut cmd: Command, tool: &str) -> Result<String, NodeError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NodeError::Spawn { tool: tool.to_owned(), source })?;
    if !out.status.success() {
        return Err(NodeError::Tool {
            tool: tool.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NodeError + 'a {
    move |source| NodeError::Io { action, path: path.to_owned(), source }
}

/// Writes standby.signal and the upstream settings into postgresql.auto.conf, replacing any
/// earlier `primary_conninfo`/`primary_slot_name` lines.
pub fn write_standby_settings(spec: &StandbySpec) -> Result<(), NodeError> {
    let auto = spec.data_dir.join("postgresql.auto.conf");
    let old = fs::read_to_string(&auto).unwrap_or_default();
    let mut conf: String = old
        .lines()
        .filter(|l| !l.trim_start().starts_with("primary_conninfo") && !l.trim_start().starts_with("primary_slot_name"))
        .map(|l| format!("{l}\n"))
        .collect();
    conf.push_str(&format!("primary_conninfo = '{}'\nprimary_slot_name = '{}'\n", spec.conninfo(), spec.name));
    fs::write(&auto, conf).map_err(io("write", &auto))?;
    let signal = spec.data_dir.join("standby.signal");
    fs::write(&signal, "").map_err(io("write", &signal))?;
    run(chown(&spec.os_user, &[&auto, &signal]), "chown")?;
    Ok(())
}

fn chown(user: &str, paths: &[&Path]) -> Command {
    let mut c = Command::new("chown");
    c.arg(format!("{user}:{user}")).args(paths);
    c
}

fn start(spec: &StandbySpec) -> Result<(), NodeError> {
    let mut c = spec.tool("pg_ctl");
    c.arg("-D").arg(&spec.data_dir).arg("-l").arg(&spec.log_file).args(["-w", "-t", "60", "start"]);
    run(c, "pg_ctl start").map(drop)
}

/// `pglb node clone`: base backup through slot `name` (created on the primary), then start.
pub fn clone(spec: &StandbySpec) -> Result<(), NodeError> {
    check_name(&spec.name)?;
    spec.tls.check()?;
    if let Some(parent) = spec.data_dir.parent() {
        fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    let _lock = DataDirLock::take(&spec.data_dir)?;
    if spec.data_dir.exists() && fs::read_dir(&spec.data_dir).map_err(io("read", &spec.data_dir))?.next().is_some() {
        return Err(NodeError::NotEmpty { path: spec.data_dir.clone() });
    }
    let mut c = spec.tool("pg_basebackup");
    c.args(["-h", &spec.primary_host, "-p", &spec.primary_port.to_string(), "-U", &spec.replication_user, "-w"])
        .arg("-D")
        .arg(&spec.data_dir)
        .args(["-X", "stream", "-c", "fast", "-C", "-S", &spec.name])
        .env("PGPASSFILE", &spec.passfile);
    run(c, "pg_basebackup")?;
    write_standby_settings(spec)?;
    start(spec)
}

/// `pglb node rejoin`: stop the server if it runs, rewind it onto the primary's timeline with
/// `source_conninfo` (a superuser or a role with pg_rewind's grants), make it a standby, start.
pub fn rejoin(spec: &StandbySpec, source_conninfo: &str) -> Result<(), NodeError> {
    check_name(&spec.name)?;
    spec.tls.check()?;
    if !spec.data_dir.join("PG_VERSION").exists() {
        return Err(NodeError::NoDataDir { path: spec.data_dir.clone() });
    }
    let _lock = DataDirLock::take(&spec.data_dir)?;
    if spec.data_dir.join("postmaster.pid").exists() {
        let mut stop = spec.tool("pg_ctl");
        stop.arg("-D").arg(&spec.data_dir).args(["-m", "fast", "-w", "-t", "60", "stop"]);
        // A stale postmaster.pid of a crashed server makes pg_ctl say "no server running".
        if let Err(e) = run(stop, "pg_ctl stop") {
            tracing::warn!(error = %crate::error_chain(&e), "pg_ctl stop failed; continuing (the server may have crashed)");
        }
    }
    // pg_rewind reads the source's timeline from its control file, which a promoted primary
    // or a standby updates only at its next checkpoint (restartpoint): without one, a source
    // that just switched timeline looks diverged at the switch and the rewind asks for WAL
    // long recycled. So checkpoint the source first (this also lets a switchover's clean
    // demotion see "no rewind required").
    let mut checkpoint = spec.tool("psql");
    checkpoint.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source_conninfo, "-c", "CHECKPOINT"]).env("PGPASSFILE", &spec.passfile);
    if let Err(e) = run(checkpoint, "psql (CHECKPOINT on the source)") {
        tracing::warn!(error = %crate::error_chain(&e), "CHECKPOINT on the rewind source failed; rewinding anyway");
    }
    let mut rewind = spec.tool("pg_rewind");
    rewind
        .arg("--target-pgdata")
        .arg(&spec.data_dir)
        .arg(format!("--source-server={source_conninfo}"))
        .arg("--progress")
        .env("PGPASSFILE", &spec.passfile);
    if target_restore_command(spec)?.is_some() {
        tracing::info!(data_dir = %spec.data_dir.display(), "the target has a restore_command: pg_rewind --restore-target-wal (WAL recycled since the fork comes from the archive)");
        rewind.arg("--restore-target-wal");
    } else {
        tracing::info!(data_dir = %spec.data_dir.display(), "the target has no restore_command: pg_rewind reads pg_wal only (set one to rewind after WAL was recycled)");
    }
    // A node that never diverged has nothing to rewind: pg_rewind says so and exits 0.
    run(rewind, "pg_rewind")?;
    ensure_slot(spec, source_conninfo)?;
    write_standby_settings(spec)?;
    start(spec)
}

/// The `restore_command` of the data directory's configuration (`postgres -C`, the way
/// pg_rewind reads it for `--restore-target-wal`), `None` when unset or empty.
fn target_restore_command(spec: &StandbySpec) -> Result<Option<String>, NodeError> {
    let mut c = spec.tool("postgres");
    c.arg("-D").arg(&spec.data_dir).args(["-C", "restore_command"]);
    let value = run(c, "postgres -C restore_command")?;
    Ok(restore_command_value(&value))
}

/// `postgres -C restore_command` prints the value and a newline; an empty line means unset.
fn restore_command_value(output: &str) -> Option<String> {
    let value = output.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Creates the node's physical slot on the primary unless it is there: a promoted standby
/// has no slot for its old primary, and streaming through a missing slot fails.
fn ensure_slot(spec: &StandbySpec, source_conninfo: &str) -> Result<(), NodeError> {
    let slot = &spec.name; // checked by check_name: plain a-z, 0-9, _
    let mut psql = spec.tool("psql");
    psql.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", source_conninfo, "-c"])
        .arg(format!(
            "SELECT pg_create_physical_replication_slot('{slot}') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
        ))
        .env("PGPASSFILE", &spec.passfile);
    run(psql, "psql (creating the replication slot on the primary)").map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> StandbySpec {
        StandbySpec {
            name: "pg2".into(),
            data_dir: dir.to_owned(),
            primary_host: "172.20.0.10".into(),
            primary_port: 5432,
            replication_user: "replicator".into(),
            passfile: "/run/pglb-lab/pg2/pgpass".into(),
            os_user: "root".into(),
            pg_bin: DEFAULT_PG_BIN.into(),
            log_file: dir.join("log"),
            tls: StandbyTls::default(),
        }
    }

    #[test]
    fn standby_settings_replace_old_upstream() {
        let dir = std::env::temp_dir().join(format!("pglb-node-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("postgresql.auto.conf"), "# keep\nprimary_conninfo = 'host=old'\nwork_mem = '8MB'\nprimary_slot_name = 'x'\n").unwrap();
        write_standby_settings(&spec(&dir)).expect("writes settings");
        let conf = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert_eq!(
            conf,
            "# keep\nwork_mem = '8MB'\nprimary_conninfo = 'host=172.20.0.10 port=5432 user=replicator passfile=/run/pglb-lab/pg2/pgpass application_name=pg2'\nprimary_slot_name = 'pg2'\n"
        );
        assert!(dir.join("standby.signal").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_settings_go_into_primary_conninfo_and_the_tools_environment() {
        let mut s = spec(Path::new("/nonexistent/pglb"));
        s.tls = StandbyTls {
            sslmode: Some(SslMode::VerifyFull),
            sslrootcert: Some("/run/pglb-lab/tls/ca.crt".into()),
            sslcert: None,
            sslkey: None,
        };
        assert_eq!(
            s.conninfo(),
            "host=172.20.0.10 port=5432 user=replicator passfile=/run/pglb-lab/pg2/pgpass sslmode=verify-full sslrootcert=/run/pglb-lab/tls/ca.crt application_name=pg2"
        );
        let env: Vec<(String, String)> = s.tool("psql").get_envs().map(|(k, v)| (k.to_string_lossy().into(), v.unwrap().to_string_lossy().into())).collect();
        assert_eq!(env, [("PGSSLMODE".to_owned(), "verify-full".to_owned()), ("PGSSLROOTCERT".to_owned(), "/run/pglb-lab/tls/ca.crt".to_owned())]);
        s.tls.sslkey = Some("relative/key".into());
        assert!(matches!(clone(&s), Err(NodeError::Invalid { what: "sslkey", .. })));
    }

    #[test]
    fn restore_target_wal_only_with_a_restore_command() {
        assert_eq!(restore_command_value("\n"), None);
        assert_eq!(restore_command_value(""), None);
        assert_eq!(
            restore_command_value("cp /run/pglb-lab/archive/%f %p\n").as_deref(),
            Some("cp /run/pglb-lab/archive/%f %p")
        );
    }

    #[test]
    fn bad_names_and_missing_data_dirs_are_refused() {
        let mut s = spec(Path::new("/nonexistent/pglb"));
        s.name = "Bad-Name".into();
        assert!(matches!(clone(&s), Err(NodeError::Invalid { .. })));
        s.name = "pg2".into();
        assert!(matches!(rejoin(&s, "host=x"), Err(NodeError::NoDataDir { .. })));
    }

    #[test]
    fn a_second_rejoin_of_the_same_directory_is_refused() {
        let dir = std::env::temp_dir().join(format!("pglb-node-lock-{}", std::process::id()));
        let data = dir.join("data");
        fs::create_dir_all(&data).unwrap();
        let held = DataDirLock::take(&data).expect("first lock");
        let e = DataDirLock::take(&data).err().expect("the second is refused");
        assert!(e.to_string().contains("another `pglb node clone` or `rejoin` is working on"), "{e}");
        drop(held);
        DataDirLock::take(&data).expect("free again after the first is dropped");
        fs::remove_dir_all(&dir).unwrap();
    }
}
