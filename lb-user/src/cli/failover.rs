//! `pglb failover --to NODE [--accept-data-loss] [--json]`: promote a standby by hand while
//! automatic failover is held back, run by the daemon (the VRRP master).

use anyhow::{Result, bail};
use lb_user::admin;

use super::{ConfigArg, load, runtime};

/// `pglb failover --help`: set on the subcommand in `cli/mod.rs` (a variant's doc comment would
/// replace a long about set here).
pub const LONG_ABOUT: &str = "Promote a standby by hand while automatic failover is held back.

When the primary is gone and pglb does not fail over by itself (the zero-loss guard, no \
quorum, a pause, no candidate within max_lag_on_failover_bytes), an operator can choose the \
standby to promote. pglb compares what the target has received with the furthest WAL position \
it knows (the lost primary's last probe, the other standbys' last positions) and prints the gap. \
It refuses without --accept-data-loss when the gap is not zero or not known (a standby out of \
sight, or no probe of the old primary since this load balancer started).

Once accepted, it is a failover like the automatic one: writes stay refused, the promotion is \
recorded in the state file and then sent, the new primary is routed, the old primary is fenced \
(needs-rejoin: never routed again until it is rewound, by rejoin_command or `pglb node rejoin`), \
the other standbys are re-pointed and synchronous_standby_names is set. The answer says what it \
did: the node promoted and its timeline, the node fenced, the bytes lost. The event goes to the \
journal and the [hooks] command as a failover with manual: true and accepted_loss_bytes.

Refused, with what to do instead: while the writer answers (use `pglb switchover`), before it \
has failed the probes that declare it down, while a standby still streams from it or a peer \
reaches it (it is alive), while another promotion or switchover runs, for a node that is not a \
reachable, unfenced standby on the newest timeline, has nofailover = true or is disabled \
(`pglb node disable`), and on a VRRP backup: only the master (the VIP holder) acts on \
failovers, and the answer names it.

Exit status: 0 when promoted; 1 when refused or failed (with --json the object is printed \
either way).

Examples:
  pglb failover --to pg2
  pglb failover --to pg2 --accept-data-loss
  pglb failover --to pg2 --accept-data-loss --json";

#[derive(clap::Args)]
pub struct Args {
    /// The standby to promote.
    #[arg(long)]
    to: String,
    /// Promote although the target lacks WAL the old primary or another standby had (the gap
    /// printed without this flag), or when the gap is not known.
    #[arg(long)]
    accept_data_loss: bool,
    /// Print the `pglb.failover/1` object (docs/JSON.md) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> Result<()> {
    let config = load(&args.config.config)?;
    let path = admin::socket_path(&config.instance.name);
    let request = admin::failover_request(&args.to, args.accept_data_loss, args.json);
    let reply = runtime()?.block_on(admin::request(&path, &request))?;
    match reply {
        Ok(text) => {
            println!("{}", text.trim_end());
            Ok(())
        }
        Err(text) if args.json => {
            println!("{}", text.trim_end());
            bail!("manual failover to {} not made (the JSON above says why)", args.to)
        }
        Err(text) => bail!("{text}"),
    }
}
