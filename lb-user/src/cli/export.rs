//! `pglb export pgadmin`: a `servers.json` for pgAdmin 4's `setup.py load-servers` with the
//! VIP's write and read ports and every node ([`lb_user::pgadmin`]). Reads the config without
//! its secrets: no password is needed, and none is written.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};
use lb_user::{config::Config, pgadmin};

use super::ConfigArg;

#[derive(clap::Subcommand)]
pub enum Command {
    /// A servers.json for pgAdmin 4 (`setup.py load-servers FILE`, or Tools → Import/Export
    /// Servers): VIP write port, VIP read port, each node. No password is written.
    Pgadmin(PgadminArgs),
}

#[derive(clap::Args)]
pub struct PgadminArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Write here instead of to stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The role pgAdmin connects as (an administrator's; pglb's probe role is too weak to
    /// administer anything).
    #[arg(long, default_value = "postgres")]
    user: String,
    /// The database pgAdmin connects to first.
    #[arg(long, default_value = "postgres")]
    maintenance_db: String,
    /// The pgAdmin server group. Default: "pglb <instance name>".
    // The doc is the help text, shown as typed: `<instance name>` is no HTML tag there.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long)]
    group: Option<String>,
    /// libpq sslmode.
    #[arg(long, default_value = "prefer", value_parser = clap::builder::PossibleValuesParser::new(pgadmin::SSLMODES))]
    sslmode: String,
    /// A libpq passfile on the pgAdmin host, for ConnectionParameters.passfile (relative to the
    /// user's storage folder in pgAdmin's server mode). Default: none, pgAdmin asks.
    #[arg(long)]
    passfile: Option<String>,
}

pub fn run(command: Command) -> Result<()> {
    let Command::Pgadmin(args) = command;
    let path = &args.config.config;
    let text = fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let config = Config::parse(&text, path)?;
    let options = pgadmin::ExportOptions {
        group: args.group,
        username: args.user,
        maintenance_db: args.maintenance_db,
        sslmode: args.sslmode,
        passfile: args.passfile,
    };
    let doc = pgadmin::servers_json(&config, &options);
    let mut json = serde_json::to_string_pretty(&doc).context("serializing servers.json")?;
    json.push('\n');
    match args.output {
        Some(out) => {
            fs::write(&out, json).with_context(|| format!("cannot write {}", out.display()))?;
            let n = doc["Servers"].as_object().map_or(0, |s| s.len());
            println!("{}: {n} servers for pgAdmin (load with: setup.py load-servers {})", out.display(), out.display());
        }
        None => print!("{json}"),
    }
    Ok(())
}
