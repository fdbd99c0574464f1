//! `pglb debug …`: fault injection for drills and tests, on a running daemon.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;

use super::{ConfigArg, admin_request};

#[derive(Subcommand)]
pub enum Command {
    /// Block the daemon's main loop for a while, as a hung call would: no lease renewal, no
    /// VRRP advert, no peer report meanwhile (probes, HTTP and the XDP program go on). The
    /// daemon then wakes humble. At most 60s.
    StallLoop {
        #[command(flatten)]
        config: ConfigArg,
        /// How long, e.g. `5s`.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::StallLoop { config, duration } => {
            if duration.is_zero() {
                bail!("--for must be more than 0");
            }
            let reply = admin_request(&config.config, &format!("stall-loop {}", duration.as_millis()))?;
            println!("{}", reply.trim());
            Ok(())
        }
    }
}
