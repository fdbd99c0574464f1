//! `pglb switchover --to NODE`: a planned, zero-loss change of the primary, run by the daemon.

use anyhow::Result;

use super::{ConfigArg, print_answer};

/// `pglb switchover --help` (on the subcommand in `cli/mod.rs`).
pub const LONG_ABOUT: &str = "Planned, zero-loss change of the primary to NODE.

Run on the load balancer that holds the VIP (the VRRP master acts). pglb checks that NODE is a \
healthy standby on the writer's timeline and may be promoted (not disabled), \
refuses new writes, waits until NODE has every WAL byte the primary wrote (within \
[failover] switchover_timeout), demotes the old primary ([failover] demote_command makes it a \
standby of NODE), promotes NODE, routes writes to it and re-points the other standbys. The \
answer says how long writes paused. Refused, with the reason, while paused, while a failover \
or another switchover runs, or for a NODE that is not a healthy standby. A target that does not \
catch up within switchover_timeout aborts the switchover and the old primary keeps the writes; \
a failure after the demotion is answered with its reason and logged.

The switchover goes to the event journal and the [hooks] command (`switchover`, or \
`switchover_failed`).

Exit status: 0 when done; 1 when refused or failed.

Examples:
  pglb switchover --to pg2
  pglb switchover --to pg2 --json";

#[derive(clap::Args)]
pub struct Args {
    /// The standby to promote.
    #[arg(long)]
    to: String,
    /// Print one JSON object: `message`, then `phase` and `nodes` as `pglb status --json` shows
    /// them afterwards; a refusal is `{"error": ...}` and exit status 1.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> Result<()> {
    print_answer(&args.config.config, &format!("switchover {}", args.to), args.json, &["phase", "nodes"])
}
