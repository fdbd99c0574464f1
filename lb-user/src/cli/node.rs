//! `pglb node clone|rejoin`: on a PostgreSQL host, make or re-make a streaming standby. And
//! `pglb node drain|undrain|disable|enable`: the running daemon's marks on a node
//! ([`super::mark`]).

use std::path::PathBuf;

use anyhow::Result;
use lb_user::{failover::MarkKind, node};

use super::{
    init_logging,
    mark::{self, DrainArgs, MarkArgs},
};

#[derive(clap::Args)]
pub struct StandbyArgs {
    /// This node's name: its application_name and its slot name on the primary.
    #[arg(long)]
    name: String,
    /// The data directory to fill (clone) or rewind (rejoin).
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 5432)]
    primary_port: u16,
    /// The replication role that streams WAL.
    #[arg(long, default_value = "replicator")]
    replication_user: String,
    /// A libpq passfile with the passwords (0600, owned by --os-user).
    #[arg(long)]
    passfile: PathBuf,
    /// The OS user PostgreSQL runs as.
    #[arg(long, default_value = "postgres")]
    os_user: String,
    #[arg(long, default_value = node::DEFAULT_PG_BIN)]
    pg_bin: PathBuf,
    /// Server log for `pg_ctl start`. Default: DATA_DIR/../postgres.log.
    #[arg(long)]
    log_file: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Make an empty data directory a streaming standby of the primary (pg_basebackup + slot).
    Clone {
        /// The primary's address.
        #[arg(long)]
        from: String,
        #[command(flatten)]
        args: StandbyArgs,
    },
    /// Bring a former primary back as a standby of the new primary (pg_rewind; with
    /// --restore-target-wal when the node's configuration has a restore_command).
    Rejoin {
        /// The new primary's address.
        #[arg(long)]
        primary: String,
        /// The role pg_rewind connects as (a superuser, or one with pg_rewind's grants).
        #[arg(long, default_value = "postgres")]
        rewind_user: String,
        #[command(flatten)]
        args: StandbyArgs,
    },
    /// Send no new read connection to NODE; open ones go on (--wait waits for them).
    #[command(long_about = "Send no new connection on the read ports to NODE; connections already open go on \
until they close (the data plane keeps each connection's backend). With --wait, then wait until none is \
open on this load balancer (run it on the one that holds the VIP), at most --timeout.

The drain reaches the peer load balancers in their authenticated reports, is kept in each state file \
(it survives restarts) and shows in `pglb status` (`drained`), /stats and /metrics (pglb_node_drained). \
It goes to the event journal and the [hooks] command as `drain`.

Draining the writer is refused: move the writer first with `pglb switchover --to <standby>`. Drain \
concerns the node as a standby: a drained node may still be promoted by a failover (`pglb node disable` \
prevents that), and as the writer it gets the writes, and the reads when no standby qualifies.

Examples:
  pglb node drain pg2
  pglb node drain pg2 --wait --timeout 5m")]
    Drain(DrainArgs),
    /// Let NODE take new read connections again (when it qualifies as a reader).
    #[command(long_about = "End a drain: NODE takes new connections on the read ports again as soon as it \
qualifies as a reader (an up standby on the writer's timeline within the read-lag limits). On every load \
balancer, like the drain. Refused when NODE is not drained.")]
    Undrain(MarkArgs),
    /// Never promote NODE: not a failover candidate, not a switchover target.
    #[command(long_about = "Never promote NODE: it is no failover candidate and a switchover to it is refused, \
like Patroni's `nofailover` tag or pglb's `[[node]] nofailover`, at runtime. It still serves reads. A \
standby further ahead that is disabled holds failover back (the candidate would lose its commits), as \
with nofailover.

On every load balancer (authenticated reports), kept in each state file, shown in `pglb status` \
(`disabled`), /stats and /metrics (pglb_node_disabled), journaled and passed to the [hooks] command as \
`disable`. Refused while a switchover to NODE runs.")]
    Disable(MarkArgs),
    /// Let NODE be promoted again (failover candidate, switchover target).
    #[command(long_about = "End `pglb node disable`: NODE may be a failover candidate and a switchover target \
again, on every load balancer. Refused when NODE is not disabled.")]
    Enable(MarkArgs),
}

fn standby_spec(args: StandbyArgs, primary_host: String) -> node::StandbySpec {
    let log_file = args.log_file.unwrap_or_else(|| {
        args.data_dir.parent().map(|p| p.join("postgres.log")).unwrap_or_else(|| PathBuf::from("postgres.log"))
    });
    node::StandbySpec {
        name: args.name,
        data_dir: args.data_dir,
        primary_host,
        primary_port: args.primary_port,
        replication_user: args.replication_user,
        passfile: args.passfile,
        os_user: args.os_user,
        pg_bin: args.pg_bin,
        log_file,
    }
}

pub fn run(command: Command) -> Result<()> {
    init_logging();
    match command {
        Command::Drain(args) => return mark::drain(args),
        Command::Undrain(args) => return mark::mark(args, MarkKind::Drain, false),
        Command::Disable(args) => return mark::mark(args, MarkKind::Disable, true),
        Command::Enable(args) => return mark::mark(args, MarkKind::Disable, false),
        Command::Clone { from, args } => {
            let spec = standby_spec(args, from);
            node::clone(&spec)?;
            println!("{}: streaming from {} through slot {}", spec.name, spec.primary_host, spec.name);
        }
        Command::Rejoin { primary, rewind_user, args } => {
            let spec = standby_spec(args, primary);
            let source = format!("host={} port={} user={rewind_user} dbname=postgres", spec.primary_host, spec.primary_port);
            node::rejoin(&spec, &source)?;
            println!("{}: rewound and streaming from {} through slot {}", spec.name, spec.primary_host, spec.name);
        }
    }
    Ok(())
}
