//! `pglb`: the control-plane binary. Parses the command line and hands off to the library.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use lb_user::{admin, config::Config, daemon, dataplane, node};

/// Where `pglb` looks for its config when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/pglb/pglb.toml";

#[derive(Parser)]
#[command(name = "pglb", version, about = "eBPF/XDP load balancer and failover controller for PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: attach XDP, probe the nodes, fail over, own the VIP, serve metrics.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file (and read its secrets) without changing anything.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The cluster as this instance sees it: node, role, state, timeline, lag, routed ports.
    Status {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Planned, zero-loss change of the primary to NODE.
    Switchover {
        #[arg(long)]
        to: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The data plane's maps.
    Map {
        #[command(subcommand)]
        command: MapCommand,
    },
    /// On a PostgreSQL host: make or re-make a standby.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Subcommand)]
enum MapCommand {
    /// Backends, writer, reader table, live flows and counters, read from the pinned maps.
    Dump {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Detach XDP and remove every pinned map of this instance (the daemon must be stopped).
    Remove {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct StandbyArgs {
    /// This node's name: its application_name and its slot name on the primary.
    #[arg(long)]
    name: String,
    /// The data directory to fill (clone) or rewind (rejoin).
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 5432)]
    primary_port: u16,
    /// The replication role that streams WAL.
    #[arg(long, default_value = "replicator")]
    replication_user: String,
    /// A libpq passfile with the passwords (0600, owned by --os-user).
    #[arg(long)]
    passfile: PathBuf,
    /// The OS user PostgreSQL runs as.
    #[arg(long, default_value = "postgres")]
    os_user: String,
    #[arg(long, default_value = node::DEFAULT_PG_BIN)]
    pg_bin: PathBuf,
    /// Server log for `pg_ctl start`. Default: DATA_DIR/../postgres.log.
    #[arg(long)]
    log_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Make an empty data directory a streaming standby of the primary (pg_basebackup + slot).
    Clone {
        /// The primary's address.
        #[arg(long)]
        from: String,
        #[command(flatten)]
        args: StandbyArgs,
    },
    /// Bring a former primary back as a standby of the new primary (pg_rewind).
    Rejoin {
        /// The new primary's address.
        #[arg(long)]
        primary: String,
        /// The role pg_rewind connects as (a superuser, or one with pg_rewind's grants).
        #[arg(long, default_value = "postgres")]
        rewind_user: String,
        #[command(flatten)]
        args: StandbyArgs,
    },
}

fn load(path: &PathBuf) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn standby_spec(args: StandbyArgs, primary_host: String) -> node::StandbySpec {
    let log_file = args.log_file.unwrap_or_else(|| {
        args.data_dir.parent().map(|p| p.join("postgres.log")).unwrap_or_else(|| PathBuf::from("postgres.log"))
    });
    node::StandbySpec {
        name: args.name,
        data_dir: args.data_dir,
        primary_host,
        primary_port: args.primary_port,
        replication_user: args.replication_user,
        passfile: args.passfile,
        os_user: args.os_user,
        pg_bin: args.pg_bin,
        log_file,
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGLB_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn admin_request(config: &PathBuf, request: &str) -> Result<String> {
    let config = load(config)?;
    let path = admin::socket_path(&config.instance.name);
    match runtime()?.block_on(admin::request(&path, request)) {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => bail!("{e}"),
        Err(e) => bail!("{e}"),
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = load(&config)?;
            init_logging();
            runtime()?.block_on(daemon::run(config))?;
        }
        Command::Check { config: path } => {
            let config = load(&path)?;
            println!(
                "{}: valid (instance {}, {} nodes, {} listeners, vrrp {})",
                path.display(),
                config.instance.name,
                config.nodes.len(),
                config.listeners.len(),
                if config.vrrp.is_some() { "on" } else { "off: this instance holds the VIP alone" }
            );
        }
        Command::Status { config } => print!("{}", admin_request(&config, "status")?),
        Command::Switchover { to, config } => println!("{}", admin_request(&config, &format!("switchover {to}"))?.trim_end()),
        Command::Map { command: MapCommand::Dump { config } } => {
            let config = load(&config)?;
            let dump = dataplane::dump(&config.pin_path())
                .context("reading the pinned maps: is `pglb run` running (or has it run) with this config?")?;
            print!("{dump}");
        }
        Command::Map { command: MapCommand::Remove { config } } => {
            let config = load(&config)?;
            if std::os::unix::net::UnixStream::connect(admin::socket_path(&config.instance.name)).is_ok() {
                bail!("pglb instance {} is running: stop it before removing its maps", config.instance.name);
            }
            dataplane::remove(&config.pin_path(), Some(&config.dataplane.interface))?;
            println!("removed the XDP program and the maps pinned under {}", config.pin_path().display());
        }
        Command::Node { command } => {
            init_logging();
            match command {
                NodeCommand::Clone { from, args } => {
                    let spec = standby_spec(args, from);
                    node::clone(&spec)?;
                    println!("{}: streaming from {} through slot {}", spec.name, spec.primary_host, spec.name);
                }
                NodeCommand::Rejoin { primary, rewind_user, args } => {
                    let spec = standby_spec(args, primary);
                    let source = format!("host={} port={} user={rewind_user} dbname=postgres", spec.primary_host, spec.primary_port);
                    node::rejoin(&spec, &source)?;
                    println!("{}: rewound and streaming from {} through slot {}", spec.name, spec.primary_host, spec.name);
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
