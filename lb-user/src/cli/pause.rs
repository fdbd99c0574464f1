//! `pglb pause` and `pglb resume`: maintenance mode. The daemon dates the command, keeps it in
//! its state file and passes it to its peers in the authenticated reports, so every load
//! balancer holds failover back until the newest resume (or the end of `--for`).

use std::time::Duration;

use anyhow::Result;
use lb_user::admin;

use super::{ConfigArg, print_answer};

/// `pglb pause --help` (on the subcommand in `cli/mod.rs`: a variant's doc comment would
/// replace an `Args` struct's own).
pub const PAUSE_LONG_ABOUT: &str = "Maintenance mode: hold automatic failover back on every load balancer.

While paused, pglb does not fail over, does not rejoin fenced nodes, does not re-point standbys \
and does not change synchronous_standby_names; a switchover is refused. Routing still follows \
the probes: a primary restarted on the same timeline gets writes again as soon as it answers.

The pause reaches the peer load balancers in their authenticated reports, is kept in each state \
file (it survives restarts) and shows in `pglb status`, /stats and /metrics (pglb_paused). A \
newer pause or resume, on either load balancer, replaces it. With --for it ends by itself on \
every instance at the same wall-clock time.

Examples:
  pglb pause --reason 'shared_buffers change' --for 15m
  pglb pause
  pglb resume";

/// `pglb resume --help`.
pub const RESUME_LONG_ABOUT: &str = "End maintenance mode on every load balancer: failover, rejoin and re-pointing act again. \
A writer lost during the pause is failed over from now on if every guard holds. Refused when no pause is in force.";

#[derive(clap::Args)]
pub struct PauseArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Why (shown in status and logs, sent to the peers; at most 100 bytes).
    #[arg(long)]
    reason: Option<String>,
    /// End the pause by itself after this long, e.g. `15m` (at most 7 days). Without it the
    /// pause lasts until `pglb resume`.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print one JSON object: `message` and the pause now in force (`paused`, `pause`), as
    /// `pglb status --json` shows them; a refusal is `{"error": ...}` and exit status 1.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print one JSON object: `message`, `paused` and `pause` (null once resumed); a refusal
    /// is `{"error": ...}` and exit status 1.
    #[arg(long)]
    json: bool,
}

pub fn pause(args: PauseArgs) -> Result<()> {
    let request = admin::pause_request(args.duration, args.reason.as_deref());
    print_answer(&args.config.config, &request, args.json, &["paused", "pause"])
}

pub fn resume(args: ResumeArgs) -> Result<()> {
    print_answer(&args.config.config, "resume", args.json, &["paused", "pause"])
}
