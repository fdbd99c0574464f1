//! `pglb switchover --to NODE`: a planned, zero-loss change of the primary, run by the daemon.

use anyhow::Result;

use super::{ConfigArg, admin_request};

#[derive(clap::Args)]
pub struct Args {
    /// The standby to promote.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> Result<()> {
    println!("{}", admin_request(&args.config.config, &format!("switchover {}", args.to))?.trim_end());
    Ok(())
}
