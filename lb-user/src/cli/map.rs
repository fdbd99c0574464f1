//! `pglb map dump|remove`: the pinned maps of an instance, read or removed without the daemon.

use anyhow::{Context as _, Result, bail};
use lb_user::{admin, dataplane};

use super::{ConfigArg, load};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Backends, writer, reader table, live flows, counters and the lease, from the pinned maps.
    Dump(DumpArgs),
    /// Detach XDP and remove every pinned map of this instance (the daemon must be stopped).
    Remove(ConfigArg),
}

#[derive(clap::Args)]
pub struct DumpArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// One JSON object (schema `pglb.map-dump/1`, docs/JSON.md) instead of the text.
    #[arg(long)]
    json: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Dump(args) => {
            let config = load(&args.config.config)?;
            let dump = dataplane::dump(&config.pin_path())
                .context("reading the pinned maps: is `pglb run` running (or has it run) with this config?")?;
            if args.json {
                print!("{}", dump.to_json());
            } else {
                print!("{dump}");
            }
        }
        Command::Remove(args) => {
            let config = load(&args.config)?;
            if std::os::unix::net::UnixStream::connect(admin::socket_path(&config.instance.name)).is_ok() {
                bail!("pglb instance {} is running: stop it before removing its maps", config.instance.name);
            }
            dataplane::remove(&config.pin_path(), Some(&config.dataplane.interface))?;
            println!("removed the XDP program and the maps pinned under {}", config.pin_path().display());
        }
    }
    Ok(())
}
