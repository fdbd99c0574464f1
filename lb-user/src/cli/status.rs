//! `pglb status`: the running daemon's view of the cluster.

use anyhow::Result;

use super::{ConfigArg, admin_request};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> Result<()> {
    print!("{}", admin_request(&args.config.config, "status")?);
    Ok(())
}
