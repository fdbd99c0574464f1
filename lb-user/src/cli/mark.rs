//! `pglb node drain|undrain|disable|enable NODE`: the operator's marks on one node, taken by
//! the daemon, passed to its peers in the authenticated reports and kept in the state file.
//! `drain --wait` then follows the node's open read connections in the daemon's status.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use lb_user::failover::MarkKind;
use serde_json::Value;

use super::{ConfigArg, admin_request};

/// How often `drain --wait` reads the daemon's status.
const WAIT_POLL: Duration = Duration::from_millis(500);

#[derive(clap::Args)]
pub struct MarkArgs {
    /// The node's name, as in its `[[node]] name`.
    node: String,
    #[command(flatten)]
    config: ConfigArg,
    /// Print one JSON object: `message` and the node as `pglb status --json` shows it after the
    /// command (`node`, `drained`, `disabled`, `open_read_flows`); a refusal is
    /// `{"error": ...}` and exit status 1.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct DrainArgs {
    #[command(flatten)]
    mark: MarkArgs,
    /// Then wait until no read connection to the node is open on this load balancer's data
    /// plane (run it on the one that holds the VIP). A node already drained is not refused
    /// then: the command only waits.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits at most, e.g. `5m`; past it the command fails (the drain stays).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "wait")]
    timeout: Duration,
}

/// One node's row of the daemon's `pglb.status/1` object.
struct NodeState {
    drained: bool,
    disabled: bool,
    open_read_flows: u64,
    vip_held: bool,
    vip_master: Option<String>,
}

fn node_state(args: &MarkArgs) -> Result<NodeState> {
    let text = admin_request(&args.config.config, "status json")?;
    let status: Value = serde_json::from_str(&text).context("the daemon's status reply is not JSON")?;
    let nodes = status.get("nodes").and_then(Value::as_array).context("the daemon's status has no nodes")?;
    let Some(row) = nodes.iter().find(|n| n.get("name").and_then(Value::as_str) == Some(args.node.as_str())) else {
        let names: Vec<&str> = nodes.iter().filter_map(|n| n.get("name").and_then(Value::as_str)).collect();
        bail!("unknown node `{}`: the nodes are {}", args.node, names.join(", "));
    };
    let flag = |v: &Value, k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    Ok(NodeState {
        drained: flag(row, "drained"),
        disabled: flag(row, "disabled"),
        open_read_flows: row.get("open_read_flows").and_then(Value::as_u64).unwrap_or(0),
        vip_held: flag(&status, "vip_held"),
        vip_master: status.get("vip_master").and_then(Value::as_str).map(str::to_owned),
    })
}

/// Sends the mark to the daemon; its refusal is the error.
fn request(args: &MarkArgs, kind: MarkKind, on: bool) -> Result<String> {
    let reply = admin_request(&args.config.config, &format!("mark {} {} {}", args.node, kind.as_str(), if on { "on" } else { "off" }))?;
    Ok(reply.trim_end().to_owned())
}

fn print(args: &MarkArgs, message: &str) -> Result<()> {
    if !args.json {
        println!("{message}");
        return Ok(());
    }
    let s = node_state(args)?;
    let json = serde_json::json!({
        "node": args.node,
        "drained": s.drained,
        "disabled": s.disabled,
        "open_read_flows": s.open_read_flows,
        "message": message,
    });
    println!("{json}");
    Ok(())
}

/// With `--json`, a refusal is printed as `{"error": ...}` too (and still fails the command).
fn refusal_as_json(json: bool, result: Result<()>) -> Result<()> {
    if json && let Err(e) = &result {
        println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
    }
    result
}

/// `pglb node undrain|disable|enable`.
pub fn mark(args: MarkArgs, kind: MarkKind, on: bool) -> Result<()> {
    let result = request(&args, kind, on).and_then(|message| print(&args, &message));
    refusal_as_json(args.json, result)
}

/// `pglb node drain [--wait [--timeout D]]`.
pub fn drain(args: DrainArgs) -> Result<()> {
    let json = args.mark.json;
    refusal_as_json(json, drain_and_wait(args))
}

fn drain_and_wait(args: DrainArgs) -> Result<()> {
    let mut message = if args.wait && node_state(&args.mark)?.drained {
        format!("{} is already drained: waiting for its open read connections", args.mark.node)
    } else {
        request(&args.mark, MarkKind::Drain, true)?
    };
    if args.wait {
        if !args.mark.json {
            println!("{message}");
        }
        let waited = wait(&args.mark, args.timeout)?;
        message = if args.mark.json { format!("{message}\n{waited}") } else { waited };
    }
    print(&args.mark, &message)
}

/// Polls the status until the node has no open read connection, or fails at `timeout`.
fn wait(args: &MarkArgs, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    let mut said = None;
    loop {
        let s = node_state(args)?;
        if !s.vip_held {
            let holder = s.vip_master.map_or_else(|| "another load balancer".to_owned(), |m| format!("the one at {m}"));
            bail!(
                "--wait: this load balancer does not hold the VIP ({holder} does), so the connections do not go through it; run `pglb node drain {} --wait` there",
                args.node
            );
        }
        if !s.drained {
            bail!("--wait: {} is no longer drained (`pglb node undrain` on this or the peer load balancer)", args.node);
        }
        if s.open_read_flows == 0 {
            return Ok(format!("{}: no read connection open any more (waited {:.1} s)", args.node, start.elapsed().as_secs_f64()));
        }
        if start.elapsed() >= timeout {
            bail!(
                "--wait: {} still has {} open read connection(s) after {:?}; they go on and the drain stays. Wait longer (--timeout) or end them from the clients",
                args.node,
                s.open_read_flows,
                timeout
            );
        }
        if said != Some(s.open_read_flows) && !args.json {
            println!("{}: {} open read connection(s)", args.node, s.open_read_flows);
        }
        said = Some(s.open_read_flows);
        std::thread::sleep(WAIT_POLL);
    }
}
