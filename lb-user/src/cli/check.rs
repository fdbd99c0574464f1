//! `pglb check`: validate a config (and read its secrets) without changing anything.

use anyhow::Result;

use super::{ConfigArg, load};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> Result<()> {
    let path = &args.config.config;
    let config = load(path)?;
    println!(
        "{}: valid (instance {}, {} nodes, {} listeners, probe sslmode {}, vrrp {})",
        path.display(),
        config.instance.name,
        config.nodes.len(),
        config.listeners.len(),
        config.probe.sslmode,
        if config.vrrp.is_some() { "on" } else { "off: this instance holds the VIP alone" }
    );
    Ok(())
}
