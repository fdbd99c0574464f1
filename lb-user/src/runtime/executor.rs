//! Carries out the failover machine's actions that talk to PostgreSQL or run a host command —
//! promote, re-point, `synchronous_standby_names`, demote, rejoin — each on its own task, and
//! reports every result except `SetSyncStandbys`'s back as an [`Event::ActionDone`]. Map writes,
//! the state file and VRRP tracking are the runtime's own (see the module above).
//!
//! The executor owns its tasks: the main loop reaps them ([`Executor::panicked`], so a panic is
//! logged rather than lost), and they stop with the daemon's own tasks ([`Executor::stop`]).

use std::{collections::HashMap, future::Future, net::SocketAddrV4, path::PathBuf, time::Duration};

use thiserror::Error;
use tokio::{
    sync::mpsc,
    task::{Id, JoinSet},
};
use tracing::{error, info, warn};

use crate::{
    config::SslMode,
    failover::{Action, Event, NodeId, ProbeFailure},
    probe::{ProbeSettings, connect, error_text},
};

/// Why an action failed. Each carries what was attempted; the machine gets it as one line.
#[derive(Debug, Error)]
pub enum ActionError {
    #[error("cannot connect to {node}")]
    Connect {
        node: String,
        #[source]
        source: ProbeFailure,
    },
    #[error("`{statement}` on {node} failed: {message}")]
    Sql { node: String, statement: String, message: String },
    #[error("pg_promote on {node} returned false within {wait_s}s")]
    PromoteFalse { node: String, wait_s: i32 },
    #[error("{what} on {node}: no answer within {limit:?}")]
    Timeout { what: &'static str, node: String, limit: Duration },
    #[error("no [failover] {key} is configured")]
    NotConfigured { key: &'static str },
    #[error("cannot run the {what} command")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} command did not finish within {limit:?}")]
    CommandTimeout { what: &'static str, limit: Duration },
    #[error("the {what} command failed ({status}): {last_line}")]
    CommandFailed { what: &'static str, status: std::process::ExitStatus, last_line: String },
    #[error("not an action for the executor: {action}")]
    NotMine { action: String },
}

/// What the actions need to reach nodes, to write `primary_conninfo` and to run commands.
#[derive(Clone)]
pub struct SqlContext {
    pub settings: ProbeSettings,
    pub nodes: Vec<(String, SocketAddrV4)>,
    /// What `primary_conninfo` says besides the upstream and the node's name.
    pub replication: ReplicationLogin,
    /// How long one SQL action may take (promotion waits for the new timeline).
    pub timeout: Duration,
    /// `[failover] demote_command` (switchover).
    pub demote_command: Option<String>,
    /// `[failover] rejoin_command` (a fenced former primary).
    pub rejoin_command: Option<String>,
}

/// `[replication]`: the role, its credential and the TLS settings a standby streams with.
#[derive(Clone, PartialEq)]
pub struct ReplicationLogin {
    pub user: String,
    pub credential: Credential,
    /// `None`: left out, libpq's default (`prefer`) applies.
    pub sslmode: Option<SslMode>,
    /// Paths on the database hosts.
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

/// How the standby's walreceiver authenticates.
#[derive(Clone, PartialEq)]
pub enum Credential {
    /// `passfile=`: a libpq passfile on the database host; no password in `primary_conninfo`.
    Passfile(PathBuf),
    /// `password=`: the password inline (visible in `postgresql.auto.conf`).
    Password(String),
}

/// How long a host command (demote, rejoin) may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// How long the promotion keeps trying to connect to its target (a probe blip, a target that
/// restarts its walreceiver) before it reports the failure. Nothing was sent to the server
/// before a connection exists, so trying again cannot promote twice.
const PROMOTE_CONNECT_RETRY: Duration = Duration::from_secs(5);

impl SqlContext {
    pub fn name(&self, node: NodeId) -> &str {
        &self.nodes[node].0
    }

    /// `primary_conninfo` for `node` streaming from `primary`.
    pub fn conninfo(&self, node: NodeId, primary: NodeId) -> String {
        let addr = self.nodes[primary].1;
        let r = &self.replication;
        let mut words = vec![format!("host={}", addr.ip()), format!("port={}", addr.port()), format!("user={}", quote_conninfo(&r.user))];
        words.push(match &r.credential {
            Credential::Passfile(path) => format!("passfile={}", quote_conninfo(&path.to_string_lossy())),
            Credential::Password(password) => format!("password={}", quote_conninfo(password)),
        });
        if let Some(mode) = r.sslmode {
            words.push(format!("sslmode={mode}"));
        }
        for (key, path) in [("sslrootcert", &r.sslrootcert), ("sslcert", &r.sslcert), ("sslkey", &r.sslkey)] {
            if let Some(path) = path {
                words.push(format!("{key}={}", quote_conninfo(&path.to_string_lossy())));
            }
        }
        words.push(format!("application_name={}", self.name(node)));
        words.join(" ")
    }
}

/// Quotes a libpq conninfo value when it needs it.
fn quote_conninfo(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c)) {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Quotes an SQL string literal.
fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Runs actions on their own tasks and reports their results on `done`.
pub struct Executor {
    ctx: SqlContext,
    done: mpsc::Sender<Event>,
    /// The actions running, and each one's line (see [`describe`]) for the log.
    running: JoinSet<()>,
    described: HashMap<Id, String>,
}

/// An action whose task panicked: its result never reaches the machine.
#[derive(Debug)]
pub struct Panicked {
    pub action: String,
    pub panic: String,
}

impl Executor {
    pub fn new(ctx: SqlContext, done: mpsc::Sender<Event>) -> Self {
        Executor { ctx, done, running: JoinSet::new(), described: HashMap::new() }
    }

    pub fn ctx(&self) -> &SqlContext {
        &self.ctx
    }

    /// New credentials, commands or timeout from a reload: for the actions started from now on
    /// (those running finish with theirs).
    pub fn set_ctx(&mut self, ctx: SqlContext) {
        self.ctx = ctx;
    }

    /// Starts `action`; its result comes back as [`Event::ActionDone`] (the error as one line).
    pub fn spawn(&mut self, action: Action) {
        let ctx = self.ctx.clone();
        let done = self.done.clone();
        let line = describe(&action, &ctx);
        self.own(line, async move {
            let result = run(&action, &ctx).await;
            match &result {
                Ok(()) => info!("action done: {}", describe(&action, &ctx)),
                Err(e) => warn!(error = %crate::error_chain(e), "action failed: {}", describe(&action, &ctx)),
            }
            if !matches!(action, Action::SetSyncStandbys { .. }) {
                let result = result.map_err(|e| crate::error_chain(&e));
                let _ = done.send(Event::ActionDone { action, result }).await;
            }
        });
    }

    /// Runs `work` as one of the executor's tasks, named by `line` in the log.
    fn own(&mut self, line: String, work: impl Future<Output = ()> + Send + 'static) {
        let handle = self.running.spawn(work);
        self.described.insert(handle.id(), line);
    }

    /// The next action whose task panicked; those that ended well are reaped on the way.
    /// Pending while none is running. Cancel-safe: the main loop waits for it among its inputs.
    pub async fn panicked(&mut self) -> Panicked {
        loop {
            let (id, panic) = match self.running.join_next_with_id().await {
                Some(Ok((id, ()))) => (id, None),
                Some(Err(e)) => (e.id(), e.is_panic().then(|| e.to_string())),
                None => return std::future::pending().await,
            };
            let action = self.described.remove(&id).unwrap_or_default();
            if let Some(panic) = panic {
                return Panicked { action, panic };
            }
        }
    }

    /// Waits at most `limit` for the actions still running, then aborts what is left. The main
    /// loop has ended, so their results reach no machine; the wait only spares a short action
    /// (a re-point) from being cut off half-way. A restored machine or a peer decides afresh.
    pub async fn stop(mut self, limit: Duration) {
        if self.running.is_empty() {
            return;
        }
        info!(actions = ?self.described.values().collect::<Vec<_>>(), limit_ms = limit.as_millis() as u64, "stopping: waiting for the actions still running");
        let drained = tokio::time::timeout(limit, async {
            while let Some(joined) = self.running.join_next_with_id().await {
                match joined {
                    Ok((id, ())) => {
                        self.described.remove(&id);
                    }
                    Err(e) => error!(action = self.described.remove(&e.id()).unwrap_or_default(), error = %e, "an action's task failed while stopping"),
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(actions = ?self.described.values().collect::<Vec<_>>(), "actions still running at the stop: aborted");
            self.running.abort_all();
        }
    }
}

/// One line naming the action with node names.
pub fn describe(action: &Action, ctx: &SqlContext) -> String {
    match action {
        Action::Promote { node } => format!("promote {}", ctx.name(*node)),
        Action::Repoint { node, primary } => format!("re-point {} to {}", ctx.name(*node), ctx.name(*primary)),
        Action::Demote { node, primary } => format!("demote {} to a standby of {}", ctx.name(*node), ctx.name(*primary)),
        Action::Rejoin { node, primary } => format!("rejoin {} as a standby of {}", ctx.name(*node), ctx.name(*primary)),
        Action::SetSyncStandbys { on, count, names } => {
            format!("synchronous_standby_names on {} = ANY {count} ({})", ctx.name(*on), names.join(", "))
        }
        other => format!("{other:?}"),
    }
}

async fn run(action: &Action, ctx: &SqlContext) -> Result<(), ActionError> {
    match action {
        Action::Promote { node } => promote(ctx, *node).await,
        Action::Repoint { node, primary } => {
            sql_on(ctx, *primary, &[ensure_slot_sql(ctx.name(*node))]).await?;
            sql_on(
                ctx,
                *node,
                &[
                    format!("ALTER SYSTEM SET primary_conninfo = {}", sql_literal(&ctx.conninfo(*node, *primary))),
                    format!("ALTER SYSTEM SET primary_slot_name = {}", sql_literal(ctx.name(*node))),
                    "SELECT pg_reload_conf()".to_owned(),
                ],
            )
            .await
        }
        Action::SetSyncStandbys { on, count, names } => {
            let value = if *count == 0 || names.is_empty() {
                String::new()
            } else {
                let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
                format!("ANY {count} ({})", quoted.join(", "))
            };
            sql_on(
                ctx,
                *on,
                &[format!("ALTER SYSTEM SET synchronous_standby_names = {}", sql_literal(&value)), "SELECT pg_reload_conf()".to_owned()],
            )
            .await
        }
        Action::Demote { node, primary } => {
            sql_on(ctx, *primary, &[ensure_slot_sql(ctx.name(*node))]).await?;
            let template = ctx.demote_command.as_deref().ok_or(ActionError::NotConfigured { key: "demote_command" })?;
            host_command("demote", template, ctx, *node, *primary).await
        }
        Action::Rejoin { node, primary } => {
            let template = ctx.rejoin_command.as_deref().ok_or(ActionError::NotConfigured { key: "rejoin_command" })?;
            sql_on(ctx, *primary, &[ensure_slot_sql(ctx.name(*node))]).await?;
            host_command("rejoin", template, ctx, *node, *primary).await
        }
        other => Err(ActionError::NotMine { action: format!("{other:?}") }),
    }
}

async fn sql_on(ctx: &SqlContext, node: NodeId, statements: &[String]) -> Result<(), ActionError> {
    let name = ctx.name(node).to_owned();
    let pg = ctx.settings.pg_config(ctx.nodes[node].1, ctx.settings.connect_timeout.max(Duration::from_secs(2)));
    let work = async {
        let client = connect(&pg, &ctx.settings.tls, Duration::from_secs(3)).await.map_err(|source| ActionError::Connect { node: name.clone(), source })?;
        for s in statements {
            client.batch_execute(s).await.map_err(|e| ActionError::Sql {
                node: name.clone(),
                statement: s.split_whitespace().take(4).collect::<Vec<_>>().join(" "),
                message: error_text(&e),
            })?;
        }
        Ok(())
    };
    tokio::time::timeout(ctx.timeout, work).await.map_err(|_| ActionError::Timeout { what: "SQL", node: name.clone(), limit: ctx.timeout })?
}

/// `pg_promote(wait => true)`; a node already out of recovery counts as promoted (another load
/// balancer, a second VRRP master during a split, got there first: it was promoted past the
/// timeline it was chosen on).
async fn promote(ctx: &SqlContext, node: NodeId) -> Result<(), ActionError> {
    let name = ctx.name(node).to_owned();
    let pg = ctx.settings.pg_config(ctx.nodes[node].1, Duration::from_secs(2));
    let work = async {
        let started = tokio::time::Instant::now();
        let client = loop {
            match connect(&pg, &ctx.settings.tls, Duration::from_secs(2)).await {
                Ok(c) => break c,
                Err(source) if started.elapsed() >= PROMOTE_CONNECT_RETRY => return Err(ActionError::Connect { node: name.clone(), source }),
                Err(e) => {
                    warn!(node = %name, error = %e, "promote: cannot connect yet; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let sql_err = |statement: &str, e: tokio_postgres::Error| ActionError::Sql { node: name.clone(), statement: statement.to_owned(), message: error_text(&e) };
        let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await.map_err(|e| sql_err("pg_is_in_recovery()", e))?;
        let in_recovery: bool = row.get(0);
        if !in_recovery {
            info!(node = %name, "promote: already a primary (promoted by a peer?): counts as done");
            return Ok(());
        }
        let wait_s = ctx.timeout.as_secs().clamp(1, 3600) as i32;
        let row = client.query_one("SELECT pg_promote(true, $1)", &[&wait_s]).await.map_err(|e| sql_err("pg_promote", e))?;
        let promoted: bool = row.get(0);
        if promoted { Ok(()) } else { Err(ActionError::PromoteFalse { node: name.clone(), wait_s }) }
    };
    let limit = ctx.timeout + PROMOTE_CONNECT_RETRY + Duration::from_secs(1);
    tokio::time::timeout(limit, work).await.map_err(|_| ActionError::Timeout { what: "promotion", node: name.clone(), limit })?
}

fn ensure_slot_sql(slot: &str) -> String {
    format!(
        "SELECT pg_create_physical_replication_slot({s}) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {s})",
        s = sql_literal(slot)
    )
}

/// Fills in a host command's placeholders.
pub fn fill_command(template: &str, ctx: &SqlContext, node: NodeId, primary: NodeId) -> String {
    template
        .replace("{node}", ctx.name(node))
        .replace("{host}", &ctx.nodes[node].1.ip().to_string())
        .replace("{primary}", ctx.name(primary))
        .replace("{primary_host}", &ctx.nodes[primary].1.ip().to_string())
}

/// Runs a host command through `/bin/sh -c` within [`COMMAND_LIMIT`]; the last line of its
/// stderr explains a failure.
async fn host_command(what: &'static str, template: &str, ctx: &SqlContext, node: NodeId, primary: NodeId) -> Result<(), ActionError> {
    let command = fill_command(template, ctx, node, primary);
    info!(%command, "{what}: running the {what} command");
    let out = tokio::time::timeout(
        COMMAND_LIMIT,
        tokio::process::Command::new("/bin/sh").arg("-c").arg(&command).stdin(std::process::Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .map_err(|_| ActionError::CommandTimeout { what, limit: COMMAND_LIMIT })?
    .map_err(|source| ActionError::Spawn { what, source })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last_line = stderr.trim().lines().last().unwrap_or("").to_owned();
        Err(ActionError::CommandFailed { what, status: out.status, last_line })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_conninfo("replicator"), "replicator");
        assert_eq!(quote_conninfo("a b'c"), "'a b\\'c'");
        assert_eq!(quote_conninfo(""), "''");
        assert_eq!(sql_literal("it's"), "'it''s'");
        assert_eq!(
            ensure_slot_sql("pg2"),
            "SELECT pg_create_physical_replication_slot('pg2') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pg2')"
        );
    }

    fn context() -> SqlContext {
        let settings = ProbeSettings {
            user: "pglb".into(),
            password: String::new(),
            dbname: "postgres".into(),
            application_name: "pglb".into(),
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(150),
            connect_timeout: Duration::from_millis(150),
            tls: crate::pgtls::PgTls::disabled().expect("a plain connector"),
        };
        SqlContext {
            settings,
            nodes: vec![("pg1".into(), "172.20.0.10:5432".parse().unwrap()), ("pg2".into(), "172.20.0.11:5432".parse().unwrap())],
            replication: ReplicationLogin {
                user: "replicator".into(),
                credential: Credential::Password("it's".into()),
                sslmode: None,
                sslrootcert: None,
                sslcert: None,
                sslkey: None,
            },
            timeout: Duration::from_secs(1),
            demote_command: None,
            rejoin_command: None,
        }
    }

    fn executor() -> Executor {
        Executor::new(context(), mpsc::channel(1).0)
    }

    #[test]
    fn primary_conninfo_names_a_passfile_and_the_tls_settings() {
        let mut ctx = context();
        assert_eq!(ctx.conninfo(1, 0), "host=172.20.0.10 port=5432 user=replicator password='it\\'s' application_name=pg2");
        ctx.replication.credential = Credential::Passfile("/var/lib/postgresql/.pgpass".into());
        ctx.replication.sslmode = Some(SslMode::VerifyFull);
        ctx.replication.sslrootcert = Some("/etc/postgresql/ca.crt".into());
        ctx.replication.sslcert = Some("/etc/postgresql/replicator.crt".into());
        ctx.replication.sslkey = Some("/etc/postgresql/my key".into());
        assert_eq!(
            ctx.conninfo(0, 1),
            "host=172.20.0.11 port=5432 user=replicator passfile=/var/lib/postgresql/.pgpass sslmode=verify-full \
             sslrootcert=/etc/postgresql/ca.crt sslcert=/etc/postgresql/replicator.crt sslkey='/etc/postgresql/my key' application_name=pg1"
        );
        assert!(!ctx.conninfo(0, 1).contains("password="));
    }

    #[tokio::test]
    async fn a_panicking_action_is_reported_and_a_stop_is_bounded() {
        let mut ex = executor();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&finished);
        ex.own("quick".into(), async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        ex.own("boom".into(), async { panic!("boom") });
        let p = tokio::time::timeout(Duration::from_secs(5), ex.panicked()).await.expect("the panic is reported");
        assert_eq!(p.action, "boom");
        assert!(p.panic.contains("panicked"), "{p:?}");
        ex.own("hangs".into(), std::future::pending());
        let started = tokio::time::Instant::now();
        ex.stop(Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "the stop is bounded");
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst), "a short action finishes before the stop returns");
    }

    #[test]
    fn errors_are_one_line_with_their_cause() {
        let e = ActionError::Connect { node: "pg2".into(), source: ProbeFailure::Timeout };
        assert_eq!(crate::error_chain(&e), "cannot connect to pg2: timed out");
        let e = ActionError::NotConfigured { key: "rejoin_command" };
        assert_eq!(e.to_string(), "no [failover] rejoin_command is configured");
    }
}
