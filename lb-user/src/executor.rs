//! Applies the failover machine's actions: map writes at once, SQL actions on their own tasks
//! (reporting back as [`Event::ActionDone`]), one log line per decision.

use std::{net::SocketAddrV4, path::PathBuf, time::Duration};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::{
    config::Config,
    state::StateFile,
    dataplane::Dataplane,
    failover::{Action, Alert, Event, Level, NodeId},
    probe::{ProbeSettings, connect, error_text},
};

/// What an SQL action needs to reach nodes and to write `primary_conninfo`.
#[derive(Clone)]
pub struct SqlContext {
    pub settings: ProbeSettings,
    pub nodes: Vec<(String, SocketAddrV4)>,
    pub replication_user: String,
    pub replication_password: String,
    /// How long one SQL action may take (promotion waits for the new timeline).
    pub timeout: Duration,
    /// A command run on demotion (switchover): see `[failover] demote_command`.
    pub demote_command: Option<String>,
    /// A command that rejoins a fenced former primary: see `[failover] rejoin_command`.
    pub rejoin_command: Option<String>,
    pub state_dir: PathBuf,
}

impl SqlContext {
    pub fn from_config(config: &Config) -> Self {
        SqlContext {
            settings: ProbeSettings::from_config(config),
            nodes: config.nodes.iter().map(|n| (n.name.clone(), n.addr())).collect(),
            replication_user: config.replication.user.clone(),
            replication_password: config.replication.password.expose().to_owned(),
            timeout: config.failover.promote_timeout,
            demote_command: config.failover.demote_command.clone(),
            rejoin_command: config.failover.rejoin_command.clone(),
            state_dir: config.state_dir(),
        }
    }

    fn name(&self, node: NodeId) -> &str {
        &self.nodes[node].0
    }

    /// `primary_conninfo` for `node` streaming from `primary`.
    pub fn conninfo(&self, node: NodeId, primary: NodeId) -> String {
        let addr = self.nodes[primary].1;
        format!(
            "host={} port={} user={} password={} application_name={}",
            addr.ip(),
            addr.port(),
            quote_conninfo(&self.replication_user),
            quote_conninfo(&self.replication_password),
            self.name(node)
        )
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

/// Counts kept by the executor for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecutorCounts {
    pub failovers: u64,
    pub switchovers: u64,
    pub rejoins_ok: u64,
    pub rejoins_failed: u64,
    pub state_write_errors: u64,
}

/// Applies map and state-file actions now; spawns SQL and host-command actions. Returns the
/// last tracking verdict among `actions`, for the caller's VRRP priority.
pub fn apply(
    actions: Vec<Action>,
    dataplane: &mut Dataplane,
    weights: &[u32],
    ctx: &SqlContext,
    state: &StateFile,
    done: &mpsc::Sender<Event>,
    counts: &mut ExecutorCounts,
) -> Option<bool> {
    let mut track = None;
    for action in actions {
        match &action {
            Action::Persist(durable) => {
                if let Err(e) = state.store(durable) {
                    counts.state_write_errors += 1;
                    error!(error = %crate::error_chain(&e), "state: writing the state file failed: fences and the last timeline would not survive a restart");
                }
            }
            Action::Track { writer_reachable } => track = Some(*writer_reachable),
            Action::SetWriter { node } => {
                let id = node.map(|n| n as u32);
                match dataplane.set_writer(id) {
                    Ok(()) => {
                        info!(writer = ?node.map(|n| ctx.name(n)), "route: write port now goes to {}", node.map(|n| ctx.name(n)).unwrap_or("nobody (writes refused)"));
                        // Clients waiting on the old writer hear it now, not at their timeout.
                        match dataplane.reset_stale_write_flows(id) {
                            Ok(0) => {}
                            Ok(n) => info!(clients = n, "route: reset the write connections still pinned to the old writer"),
                            Err(e) => warn!(error = %crate::error_chain(&e), "route: resetting stale write connections failed (they are reset on their next packet)"),
                        }
                    }
                    Err(e) => error!(error = %crate::error_chain(&e), "route: setting the writer failed"),
                }
            }
            Action::SetReaders { nodes } => {
                let readers: Vec<(u32, u32)> = nodes.iter().map(|n| (*n as u32, weights[*n].max(1))).collect();
                let names: Vec<&str> = nodes.iter().map(|n| ctx.name(*n)).collect();
                match dataplane.set_readers(&readers) {
                    Ok(()) => info!(readers = ?names, "route: read port now goes to {}", if names.is_empty() { "nobody".to_owned() } else { names.join(", ") }),
                    Err(e) => error!(error = %crate::error_chain(&e), "route: setting the readers failed"),
                }
            }
            Action::Promote { .. }
            | Action::Repoint { .. }
            | Action::Demote { .. }
            | Action::Rejoin { .. }
            | Action::SetSyncStandbys { .. } => {
                let ctx = ctx.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let result = run_sql_action(&action, &ctx).await;
                    match &result {
                        Ok(()) => info!("action done: {}", describe(&action, &ctx)),
                        Err(e) => warn!(error = %e, "action failed: {}", describe(&action, &ctx)),
                    }
                    if !matches!(action, Action::SetSyncStandbys { .. }) {
                        let _ = done.send(Event::ActionDone { action, result }).await;
                    }
                });
            }
            Action::Fence { node, reason } => {
                warn!(node = ctx.name(*node), ?reason, "fence: {} is never routed to until it rejoins", ctx.name(*node));
            }
            Action::Alert(alert) => {
                match alert {
                    Alert::FailedOver { .. } => counts.failovers += 1,
                    Alert::SwitchoverDone { .. } => counts.switchovers += 1,
                    Alert::RejoinFailed { .. } => counts.rejoins_failed += 1,
                    Alert::RejoinDone { .. } => counts.rejoins_ok += 1,
                    _ => {}
                }
                warn!(alert = ?alert, "alert");
            }
            Action::Log { level, message } => match level {
                Level::Info => info!("{message}"),
                Level::Warn => warn!("{message}"),
                Level::Error => error!("{message}"),
            },
        }
    }
    track
}

fn describe(action: &Action, ctx: &SqlContext) -> String {
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

async fn sql_on(ctx: &SqlContext, node: NodeId, statements: &[String]) -> Result<(), String> {
    let pg = ctx.settings.pg_config(ctx.nodes[node].1, ctx.settings.connect_timeout.max(Duration::from_secs(2)));
    let work = async {
        let client = connect(&pg, Duration::from_secs(3)).await.map_err(|e| e.to_string())?;
        for s in statements {
            client.batch_execute(s).await.map_err(|e| format!("{}: {}", s.split_whitespace().take(3).collect::<Vec<_>>().join(" "), error_text(&e)))?;
        }
        Ok(())
    };
    tokio::time::timeout(ctx.timeout, work)
        .await
        .map_err(|_| format!("no answer within {:?}", ctx.timeout))?
}

/// How long the promotion keeps trying to connect to its target (a probe blip, a target that
/// restarts its walreceiver) before it reports the failure. Nothing was sent to the server
/// before a connection exists, so trying again cannot promote twice.
const PROMOTE_CONNECT_RETRY: Duration = Duration::from_secs(5);

async fn promote(ctx: &SqlContext, node: NodeId) -> Result<(), String> {
    let pg = ctx.settings.pg_config(ctx.nodes[node].1, Duration::from_secs(2));
    let work = async {
        let started = tokio::time::Instant::now();
        let client = loop {
            match connect(&pg, Duration::from_secs(2)).await {
                Ok(c) => break c,
                Err(e) if started.elapsed() >= PROMOTE_CONNECT_RETRY => return Err(e.to_string()),
                Err(e) => {
                    warn!(node = ctx.name(node), error = %e, "promote: cannot connect yet; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // Another load balancer (a second VRRP master during a split) may have promoted it
        // already: a node out of recovery was promoted past the timeline it was chosen on.
        let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await.map_err(|e| format!("pg_is_in_recovery: {}", error_text(&e)))?;
        let in_recovery: bool = row.get(0);
        if !in_recovery {
            info!(node = ctx.name(node), "promote: already a primary (promoted by a peer?): counts as done");
            return Ok(());
        }
        let wait_s = ctx.timeout.as_secs().clamp(1, 3600) as i32;
        let row = client
            .query_one("SELECT pg_promote(true, $1)", &[&wait_s])
            .await
            .map_err(|e| format!("pg_promote: {}", error_text(&e)))?;
        let promoted: bool = row.get(0);
        if promoted { Ok(()) } else { Err(format!("pg_promote returned false within {wait_s}s")) }
    };
    tokio::time::timeout(ctx.timeout + Duration::from_secs(1), work)
        .await
        .map_err(|_| format!("no answer within {:?}", ctx.timeout))?
}

fn ensure_slot_sql(slot: &str) -> String {
    format!(
        "SELECT pg_create_physical_replication_slot({s}) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {s})",
        s = sql_literal(slot)
    )
}

async fn run_sql_action(action: &Action, ctx: &SqlContext) -> Result<(), String> {
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
        Action::Demote { node, primary } => demote(ctx, *node, *primary).await,
        Action::Rejoin { node, primary } => rejoin(ctx, *node, *primary).await,
        other => Err(format!("not an SQL action: {other:?}")),
    }
}

/// Runs `[failover] demote_command` with `{node}`, `{host}`, `{primary}` and `{primary_host}`
/// filled in; PostgreSQL cannot demote itself, so a host-side command does it.
async fn demote(ctx: &SqlContext, node: NodeId, primary: NodeId) -> Result<(), String> {
    sql_on(ctx, primary, &[ensure_slot_sql(ctx.name(node))]).await?;
    let Some(template) = &ctx.demote_command else {
        return Err("no [failover] demote_command is configured: pglb cannot restart the old primary as a standby".into());
    };
    host_command("demote", template, ctx, node, primary).await
}

/// Runs `[failover] rejoin_command` (the same placeholders) after ensuring the node's slot on
/// the writer: the former primary is rewound and restarted as a standby.
async fn rejoin(ctx: &SqlContext, node: NodeId, primary: NodeId) -> Result<(), String> {
    let Some(template) = &ctx.rejoin_command else {
        return Err("no [failover] rejoin_command is configured".into());
    };
    sql_on(ctx, primary, &[ensure_slot_sql(ctx.name(node))]).await?;
    host_command("rejoin", template, ctx, node, primary).await
}

/// Fills in a host command's placeholders.
pub fn fill_command(template: &str, ctx: &SqlContext, node: NodeId, primary: NodeId) -> String {
    template
        .replace("{node}", ctx.name(node))
        .replace("{host}", &ctx.nodes[node].1.ip().to_string())
        .replace("{primary}", ctx.name(primary))
        .replace("{primary_host}", &ctx.nodes[primary].1.ip().to_string())
}

/// Runs a host command through `/bin/sh -c` with a 120 s limit; its stderr is the error.
async fn host_command(what: &str, template: &str, ctx: &SqlContext, node: NodeId, primary: NodeId) -> Result<(), String> {
    let command = fill_command(template, ctx, node, primary);
    info!(%command, "{what}: running the {what} command");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("/bin/sh").arg("-c").arg(&command).stdin(std::process::Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .map_err(|_| format!("the {what} command did not finish within 120s"))?
    .map_err(|e| format!("cannot run the {what} command: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.trim().lines().last().unwrap_or("").to_owned();
        Err(format!("the {what} command failed ({}): {last}", out.status))
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
}
