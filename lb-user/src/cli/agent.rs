//! `pglb agent`: zero-hop routing for an application host (see `lb_user::agent`), its keys, and
//! the cleanup a supervisor runs after it.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use lb_user::agent::{
    self,
    channel::{Key, SigningKey},
    config::AgentConfig,
};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The agent's config file (cgroup, VIP listeners, load balancers, keys, lease).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Write new keys: the load balancers' signing key pair, or one agent's own key.
    Keygen(KeygenArgs),
    /// Close the sockets a stopped or killed agent sent straight to a writer, and remove its pin
    /// (for a supervisor, e.g. systemd's ExecStopPost; harmless when there is nothing to do).
    Cleanup {
        /// The agent's config file (its pin_path, or name).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["signing_key", "client_key"])))]
struct KeygenArgs {
    /// Write the load balancers' Ed25519 signing key here (0600; copy it to every load balancer's
    /// [agent] signing_key_file) and its public key beside it (`.pub`, 0644; for the agents'
    /// lb_public_key_file).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Where the public key goes instead of beside the signing key.
    #[arg(long, requires = "signing_key")]
    public_key: Option<PathBuf>,
    /// Write one agent's own key here (32 random bytes as hex, 0600): its key_file, and the
    /// key_file of its [[agent.client]] on every load balancer.
    #[arg(long)]
    client_key: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Some(Command::Keygen(k)) => keygen(k),
        Some(Command::Cleanup { config }) => {
            let config = AgentConfig::load(&config)?;
            super::init_logging();
            match agent::cleanup(&config)? {
                Some(done) => agent::log_closed(&done, "agent cleanup: closed the sockets the last agent had sent to a writer, removed its pin"),
                None => tracing::info!(pin = %config.pin_path().display(), "agent cleanup: nothing pinned (the last agent stopped cleanly)"),
            }
            Ok(())
        }
        None => {
            let config = AgentConfig::load(&args.config.context("--config is required")?)?;
            super::init_logging();
            super::runtime()?.block_on(agent::run(config))?;
            Ok(())
        }
    }
}

fn keygen(k: KeygenArgs) -> Result<()> {
    if let Some(secret) = k.signing_key {
        let public = k.public_key.unwrap_or_else(|| secret.with_extension("pub"));
        let key = SigningKey::generate_files(&secret, &public)?;
        println!("wrote {} (0600, every load balancer's [agent] signing_key_file)", secret.display());
        println!("wrote {} (0644, every agent's lb_public_key_file): {key}", public.display());
    }
    if let Some(path) = k.client_key {
        Key::generate_file(&path)?;
        println!("wrote {} (0600: the agent's key_file, and its [[agent.client]] key_file on every load balancer)", path.display());
    }
    Ok(())
}
