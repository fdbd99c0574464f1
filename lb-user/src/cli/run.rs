//! `pglb run`: the daemon.

use anyhow::Result;
use lb_user::runtime;

use super::{ConfigArg, LogFormat, init_logging_as, load};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// How log lines are written to stderr (journald stores either; `json` is one object per
    /// line for log shippers: timestamp, level, message and the event's fields). Overrides the
    /// config's `[log] format` (default `text`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

pub fn run(args: Args) -> Result<()> {
    let config = load(&args.config.config)?;
    init_logging_as(args.log_format.unwrap_or(config.log.format));
    // The daemon runs as a task on the runtime's workers, not on this thread (`block_on` polls
    // its future here): every wake of the main loop (a probe's answer, a datagram, a timer)
    // would otherwise cross threads through a futex, and idle CPU is mostly such wakes.
    let daemon = super::runtime()?.block_on(async { tokio::spawn(runtime::run(config)).await });
    match daemon {
        Ok(result) => Ok(result?),
        Err(e) => Err(anyhow::anyhow!("the daemon's task ended abnormally: {e}")),
    }
}
