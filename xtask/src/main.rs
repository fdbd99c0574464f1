//! `cargo xtask`: setup, the network-namespace lab, tests, drills and benchmarks.
//! Orchestration only: no product logic lives here.

mod bench;
mod drill;
mod lab;
mod package;
mod run;
mod setup;
mod sh;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "pglb's developer and operator tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install prerequisites on Debian/Ubuntu (idempotent; needs root).
    Setup,
    /// Build, bring up the lab, print how to connect, follow the logs; Ctrl-C tears it down.
    Run,
    /// Build and run every test tier (unit, datapath fixtures, namespace end-to-end).
    Test {
        /// Only run test names containing this text (passed to every test binary).
        filter: Option<String>,
    },
    /// Failover drills on the lab (docs/DRILLS.md): one scenario, or all of them in the order
    /// listed.
    Drill {
        /// The scenario to run.
        #[arg(value_enum)]
        scenario: drill::Scenario,
        /// How many runs (each from a healthy cluster, returned to healthy after).
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// How the drill clients connect: through the VIP, or through `pglb agent` (zero-hop).
        #[arg(long, value_enum, default_value = "vip")]
        client: drill::ClientMode,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// pgbench direct, routed through lb1 (the one-arm limit), through pglb and through HAProxy,
    /// alternated over rounds; throughput ÷ direct and ÷ routed hop paired by round (median and
    /// range), failed transactions per run; plus XDP ns/packet.
    Bench {
        /// Rounds over which the targets alternate.
        #[arg(long, default_value_t = bench::DEFAULT_ROUNDS)]
        rounds: usize,
        /// Only this workload (repeatable): select_only, select_only_connect, tpcb_like.
        #[arg(long = "workload")]
        workloads: Vec<String>,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Build the Debian package of pglb (cargo-deb, release build) and print its path.
    Package,
    /// The network-namespace lab (docs/ARCHITECTURE.md, "The lab").
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build the namespaces, the bridge and the PostgreSQL cluster.
    Up {
        /// Tear down a running lab first and build a new one.
        #[arg(long)]
        fresh: bool,
        /// On failure, leave the half-built lab for inspection instead of tearing it down.
        #[arg(long)]
        keep_on_failure: bool,
    },
    /// Stop every lab process and remove every namespace, BPF pin and the state folder.
    Down,
    /// Each host with its address, PostgreSQL role, timeline, replication state and lag.
    Status,
    /// psql in pgha-client as the application user, through the VIP.
    Psql {
        /// VIP port: 3000 writes (primary), 3001 reads (standbys).
        #[arg(long, default_value_t = lab::topology::WRITE_PORT)]
        port: u16,
        /// Connect straight to this PostgreSQL host (pg1, pg2, pg3) instead of the VIP.
        #[arg(long, conflicts_with = "port")]
        node: Option<String>,
        /// Arguments passed to psql (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a command in a lab host: pg1 pg2 pg3 haproxy lb1 lb2 client (or sw, the switch).
    Exec {
        host: String,
        /// Run it in the client's cgroup, where `pglb agent` rewrites connects to the VIP.
        #[arg(long)]
        agent: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// `pglb agent` on the client host (docs/AGENT.md): the zero-hop path for its cgroup.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Start `pglb agent` on the client host and wait for its first route.
    Start,
    /// Stop it: connections from the client's cgroup take the VIP again.
    Stop,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup().map(|()| ExitCode::SUCCESS),
        Command::Run => run::run().map(|()| ExitCode::SUCCESS),
        Command::Test { filter } => test::test(filter.as_deref()),
        Command::Drill { scenario, runs, json, client } => drill::drill(scenario, runs, json.as_deref(), client).map(|()| ExitCode::SUCCESS),
        Command::Package => package::package().map(|()| ExitCode::SUCCESS),
        Command::Bench { rounds, workloads, json } => bench::bench(rounds, &workloads, json.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Lab { command } => match command {
            LabCommand::Up { fresh, keep_on_failure } => lab::up(fresh, keep_on_failure).map(|()| ExitCode::SUCCESS),
            LabCommand::Down => lab::down().map(|()| ExitCode::SUCCESS),
            LabCommand::Status => lab::status().map(|()| ExitCode::SUCCESS),
            LabCommand::Psql { port, node, args } => lab::psql(port, node.as_deref(), &args),
            LabCommand::Exec { host, agent, command } => lab::exec(&host, agent, &command),
            LabCommand::Agent { command } => lab::agent_command(matches!(command, AgentCommand::Start)).map(|()| ExitCode::SUCCESS),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, error::ErrorKind};

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn drill_takes_a_scenario_by_name_and_refuses_a_misspelt_one() {
        let cli = Cli::try_parse_from(["xtask", "drill", "lb-partition", "--runs", "3", "--client", "agent"]).unwrap();
        assert!(matches!(cli.command, Command::Drill { scenario: drill::Scenario::LbPartition, runs: 3, client: drill::ClientMode::Agent, json: None }));
        let err = Cli::try_parse_from(["xtask", "drill", "primary-crsh"]).err().expect("a misspelt scenario is refused");
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(text.contains("primary-crash, primary-hang") && text.contains("syn-flood, all"), "the valid names are listed: {text}");
    }
}
