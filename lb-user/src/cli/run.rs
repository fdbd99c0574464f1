//! `pglb run`: the daemon.

use anyhow::Result;
use lb_user::daemon;

use super::{ConfigArg, init_logging, load, runtime};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> Result<()> {
    let config = load(&args.config.config)?;
    init_logging();
    runtime()?.block_on(daemon::run(config))?;
    Ok(())
}
