//! `pglb events`: the event journal (`<state_dir>/events.jsonl` and its rotated `.1`), read from
//! the files the config names: the daemon need not run. Lines as text, or (`--json`) the
//! journal's own JSON lines, the same objects a hook reads on stdin.

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use lb_user::{config::Config, journal};

use super::ConfigArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Only events at or after T: an RFC 3339 time (2026-12-07T21:00:00Z) or a duration ago
    /// (10m, 2h, 3d).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// One JSON object per line, as the journal holds them (and a hook reads them).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let path = &args.config.config;
    // Parsed and validated, its secrets not read: the journal needs only `state_dir`.
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the config {}", path.display()))?;
    let config = Config::parse(&text, path)?;
    let since = args.since.as_deref().map(|t| journal::parse_since(t, SystemTime::now())).transpose()?;
    let dir = config.state_dir();
    let read = journal::read(&dir)?;
    if read.skipped > 0 {
        eprintln!("pglb events: skipped {} lines of the journal in {} that are not events", read.skipped, dir.display());
    }
    for e in journal::since(&read.events, since) {
        if args.json {
            println!("{}", e.to_json());
        } else {
            println!("{}", journal::render_line(e));
        }
    }
    Ok(())
}
