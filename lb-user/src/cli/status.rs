//! `pglb status`: the running daemon's view of the cluster, as the table or (`--json`) as the
//! `pglb.status/1` object (docs/JSON.md), both rendered by the daemon from its snapshot
//! ([`lb_user::status::render_table`], [`lb_user::status::render_json`]).

use anyhow::{Context as _, Result};

use super::{ConfigArg, admin_request};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// One JSON object (schema `pglb.status/1`, docs/JSON.md) instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.json {
        let text = admin_request(&args.config.config, "status json")?;
        // Checked before anything is printed: a reply that is not the schema's object is an
        // error, not output.
        let value: serde_json::Value = serde_json::from_str(&text).context("the daemon's status reply is not JSON")?;
        let schema = value.get("schema").and_then(serde_json::Value::as_str);
        anyhow::ensure!(schema == Some(lb_user::status::STATUS_SCHEMA), "the daemon answered schema {schema:?}, expected {:?}", lb_user::status::STATUS_SCHEMA);
        print!("{text}");
    } else {
        print!("{}", admin_request(&args.config.config, "status")?);
    }
    Ok(())
}
