//! `pglb agent`: zero-hop routing for an application host (see `lb_user::agent`).

use std::path::PathBuf;

use anyhow::Result;
use lb_user::agent::{self, config::AgentConfig};

#[derive(clap::Args)]
pub struct Args {
    /// The agent's config file (cgroup, VIP listeners, load balancers, key, lease).
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let config = AgentConfig::load(&args.config)?;
    super::init_logging();
    super::runtime()?.block_on(agent::run(config))?;
    Ok(())
}
