//! `pglb reload`: the running daemon reads its config file again and applies what can change
//! live, or refuses the file (the running config stays). The daemon decides and answers; this
//! only finds its admin socket and prints the answer.

use anyhow::{Result, anyhow};
use lb_user::{admin, config::Config};

use super::{ConfigArg, runtime};

/// `pglb reload --help` (set on the subcommand in `cli/mod.rs`: there a one-line doc comment
/// would replace it).
pub const LONG_ABOUT: &str = "Reload the config file of the running daemon, without dropping flows or the VIP.

The daemon reads the file it was started with again (the same checks as `pglb check`, secrets \
included), compares it key by key with the config it runs, and then:

  applies it      when every changed key can change live; prints the keys that changed
  refuses it      when a key changed that only a restart applies; prints the key(s), exit 1
  refuses it      when the file does not validate; prints the error, exit 1
  refuses it      when a node to remove cannot leave now (the writer: switch over first)

A refused file changes nothing. SIGHUP does the same, its outcome only in the log; `systemctl \
reload pglb` runs this command (the unit's ExecReload), so a refusal fails the reload.

Live: [[node]] read_weight, priority, nofailover, and nodes added at the end of the list or \
removed from its end; [probe] user, password, dbname, interval, \
timeout, connect_timeout; every [failover] key; [replication] user, password, \
synchronous_count; [http] allow, auth, stats_user, stats_password, token_file; [hooks]; \
[dataplane] flow_idle_timeout, half_open_timeout.

Restart only: [instance]; [dataplane] interface, address, vip, pin_path, xdp_mode, lease, \
lease_grace; [[listener]]; [[node]] host, port, and adding or removing nodes elsewhere than \
at the end, or reordering them; \
[vrrp]; [http] listen; [agent].

Every reload is logged, kept in the event journal as `reload` (`pglb events`), passed to the \
[hooks] command, and counted in /metrics: pglb_config_reloads_total{result=\"ok|invalid|needs_restart|refused\"}, \
pglb_config_last_reload_success_timestamp_seconds, pglb_config_last_reload_successful.

Examples:
  pglb reload
  pglb reload --json
  systemctl reload pglb";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// One JSON object: `result` (ok, invalid, needs_restart, refused), `changed` or `keys` or
    /// `error`, and `message` (the line printed without --json).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let instance = instance_name(&args.config.config)?;
    let request = if args.json { "reload json" } else { "reload" };
    let reply = runtime()?.block_on(admin::request(&admin::socket_path(&instance), request))?;
    match reply {
        Ok(text) => {
            println!("{}", text.trim_end());
            Ok(())
        }
        Err(text) if args.json => {
            println!("{text}");
            Err(anyhow!("the daemon refused the reload"))
        }
        Err(text) => Err(anyhow!(text)),
    }
}

/// The instance whose daemon to ask. A file that does not validate still names it: the daemon
/// then refuses the file with the error (and counts the refusal), rather than this command
/// failing before it asks.
fn instance_name(path: &std::path::Path) -> Result<String> {
    let error = match Config::load(path) {
        Ok(config) => return Ok(config.instance.name),
        Err(e) => e,
    };
    let name = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("instance")?.get("name")?.as_str().map(str::to_owned));
    name.ok_or_else(|| anyhow::Error::from(error).context("the config does not name its instance, so no daemon can be asked"))
}
