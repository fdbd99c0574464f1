//! `pglb run`: the daemon.

use anyhow::Result;
use lb_user::runtime;

use super::{ConfigArg, init_logging, load};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> Result<()> {
    let config = load(&args.config.config)?;
    init_logging();
    super::runtime()?.block_on(runtime::run(config))?;
    Ok(())
}
