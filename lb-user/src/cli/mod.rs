//! The command line: one module per subcommand, each with its clap arguments and its `run`.
//! Shared here: the default config path, reading a config, the async runtime, logging, and
//! requests to a running daemon over its admin socket.

mod agent;
mod check;
mod debug;
mod events;
mod export;
mod failover;
mod map;
mod mark;
mod node;
mod pause;
mod reload;
mod run;
mod status;
mod switchover;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use lb_user::{admin, config::Config};
pub use lb_user::config::LogFormat;

/// Where `pglb` looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/pglb/pglb.toml";

#[derive(Parser)]
#[command(name = "pglb", version, about = "eBPF/XDP load balancer and failover controller for PostgreSQL")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: attach XDP, probe the nodes, fail over, own the VIP, serve metrics.
    Run(run::Args),
    /// Validate a config file (and read its secrets) without changing anything.
    Check(check::Args),
    /// The cluster as this instance sees it: node, role, state, timeline, lag, routed ports.
    Status(status::Args),
    /// Planned, zero-loss change of the primary to NODE.
    #[command(long_about = switchover::LONG_ABOUT)]
    Switchover(switchover::Args),
    /// Promote NODE by hand while automatic failover is held back (prints what it would lose).
    #[command(long_about = failover::LONG_ABOUT)]
    Failover(failover::Args),
    /// The event journal: failovers, switchovers, fences, rejoins, VRRP roles, SYN floods.
    Events(events::Args),
    /// Maintenance mode: no automatic failover, rejoin or re-point on any load balancer.
    #[command(long_about = pause::PAUSE_LONG_ABOUT)]
    Pause(pause::PauseArgs),
    /// End maintenance mode.
    #[command(long_about = pause::RESUME_LONG_ABOUT)]
    Resume(pause::ResumeArgs),
    /// Apply a changed config file to the running daemon (what can change live), or refuse it.
    #[command(long_about = reload::LONG_ABOUT)]
    Reload(reload::Args),
    /// The data plane's maps.
    Map {
        #[command(subcommand)]
        command: map::Command,
    },
    /// On an application host: rewrite connects to the VIP straight to the writer or a reader.
    Agent(agent::Args),
    /// Write the cluster in another tool's format (pgAdmin's servers.json).
    Export {
        #[command(subcommand)]
        command: export::Command,
    },
    /// Make or re-make a standby (on a PostgreSQL host); drain, undrain, disable or enable a
    /// node (on a load balancer).
    Node {
        #[command(subcommand)]
        command: node::Command,
    },
    /// Fault injection on a running daemon (drills, tests).
    Debug {
        #[command(subcommand)]
        command: debug::Command,
    },
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Check(args) => check::run(args),
        Command::Status(args) => status::run(args),
        Command::Switchover(args) => switchover::run(args),
        Command::Failover(args) => failover::run(args),
        Command::Events(args) => events::run(args),
        Command::Pause(args) => pause::pause(args),
        Command::Resume(args) => pause::resume(args),
        Command::Reload(args) => reload::run(args),
        Command::Map { command } => map::run(command),
        Command::Export { command } => export::run(command),
        Command::Node { command } => node::run(command),
        Command::Debug { command } => debug::run(command),
    }
}

/// The `--config` argument every daemon-facing subcommand takes.
#[derive(clap::Args)]
pub struct ConfigArg {
    /// The instance's config file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// Reads, validates and resolves the secrets of a config; the error keeps its causes.
pub fn load(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

/// Logs to stderr at `PGLB_LOG` (an `EnvFilter`, default `info`) in the default format.
pub fn init_logging() {
    init_logging_as(LogFormat::Text);
}

/// Logs to stderr at `PGLB_LOG` (an `EnvFilter`, default `info`) in `format`.
pub fn init_logging_as(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGLB_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")
}

/// Sends `request` to the daemon of the config's instance; its refusal is an error.
pub fn admin_request(config: &Path, request: &str) -> Result<String> {
    let config = load(config)?;
    let path = admin::socket_path(&config.instance.name);
    let reply = runtime()?.block_on(admin::request(&path, request))?;
    reply.map_err(anyhow::Error::msg)
}

/// Sends `request` and prints the daemon's answer: its text, or with `json` one object, the
/// answer as `message` beside the `fields` of `pglb status --json` read right after (the state
/// the command left); a refusal is `{"error": ...}` on stdout and the error returned (exit 1).
pub fn print_answer(config: &Path, request: &str, json: bool, fields: &[&str]) -> Result<()> {
    let reply = admin_request(config, request);
    if !json {
        println!("{}", reply?.trim_end());
        return Ok(());
    }
    let message = match reply {
        Ok(message) => message,
        Err(e) => {
            println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            return Err(e);
        }
    };
    let status: serde_json::Value = serde_json::from_str(&admin_request(config, "status json")?).context("the daemon's status reply is not JSON")?;
    let mut out = serde_json::Map::new();
    out.insert("message".into(), message.trim_end().into());
    for f in fields {
        out.insert((*f).into(), status.get(*f).cloned().unwrap_or(serde_json::Value::Null));
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
