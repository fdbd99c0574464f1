//! The drills by name: [`Scenario`], what `cargo xtask drill` takes, parsed by clap (a misspelt
//! name is refused with the list of valid ones). Its declaration order is the order `all` runs
//! the scenarios in and `--help` lists them in: the PostgreSQL and partial-failure scenarios,
//! the trust drills, the VIP takeovers, the SYN flood last. [`Scenario::kind`] says how each
//! runs, one arm per scenario: the function that injects its fault and what its recovery
//! checks, or the takeover or flood drill it is.

use std::{fmt, path::Path};

use anyhow::{Result, bail};
use clap::ValueEnum as _;

use super::{
    ClientMode, Drill, failover,
    lb::LbStop,
    plan::{FAILOVER, Fault, Inject, Recovery},
    report::RunResult,
    trust,
};

/// A drill scenario (docs/DRILLS.md describes each in full). Declared in the order `all` runs
/// them; the names are the variants in kebab-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// kill -9 of pg1's postmaster: failover; pg1 fenced, then rejoined by pglb
    PrimaryCrash,
    /// SIGSTOP of every process on pg1 until the failover: as primary-crash
    PrimaryHang,
    /// pg1's link down until the failover: as primary-crash
    PrimaryHostDown,
    /// pg1 cut from the load balancers for 5 s, still streaming: no failover
    PrimaryIsolated,
    /// pg1 cut from the standbys for 5 s: no failover, writes wait for the cut
    PrimaryIsolatedStandbys,
    /// kill -9 of pg3's postmaster: pg3 leaves the readers
    StandbyCrash,
    /// pglb switchover --to pg2 under load: no write lost
    Switchover,
    /// lb1 cut from pg1 for 6 s: lb2 takes the VIP within 2 s, no failover
    LbCutFromPrimary,
    /// lb1 and lb2 cut from each other, then kill -9 of pg1: one promotion target
    LbPartition,
    /// kill -9 of lb1's pglb, then of pg1: lb1's data plane opens no flow
    LbKillThenFailover,
    /// failover, both pglb killed, pg1 back without a rejoin: it never gets a write
    RestartWithStalePrimary,
    /// switchover with lb1 cut from pg2 for 1.5 s: exactly one writer after
    SwitchoverProbeBlip,
    /// kill -9 of pg1, then of the new primary before pg1 is back: the last standby promoted
    Cascade,
    /// trust: forged and replayed peer reports are dropped and counted
    ForgedReport,
    /// trust: forged VRRP adverts at priority 254 move nothing
    ForgedAdvert,
    /// trust: lb1's pglb stopped across a failover wakes humble
    LbFreeze,
    /// trust: lb1 restarted beside a stale primary, its peer's reports cut
    LbRestartStaleView,
    /// trust: lb1's state folder read-only: no promotion without its record
    StateWriteFails,
    /// trust: lb1's main loop blocked for 5 s: lb2 takes the VIP
    MainLoopHang,
    /// trust: lb1 back under pgbench stays backup, no client sees an error
    LbReturn,
    /// kill -9 of pglb on the VRRP master: VIP takeover times
    LbCrash,
    /// SIGTERM to pglb on the VRRP master: VIP takeover times
    LbGraceful,
    /// SYN flood against VIP:3000 and VIP:3001 for 10 s under load
    SynFlood,
    /// every scenario above, in this order, --runs times each
    All,
}

/// How a scenario runs.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    /// A fault while the drill's writer and reader run ([`Drill::run_one`]).
    Fault(Fault),
    /// A VIP takeover ([`super::lb`]).
    Takeover(LbStop),
    /// The SYN flood ([`super::flood`]).
    SynFlood,
}

impl Scenario {
    /// How the scenario runs, one arm each; `None` for `all`, which is a list of the others
    /// ([`Scenario::expand`]).
    pub(super) fn kind(self) -> Option<Kind> {
        use Recovery::{Nothing, RestartStandby};
        let fault = |inject: Inject, recovery| Kind::Fault(Fault { inject, recovery, trust: false });
        let trust_fault = |inject: Inject, recovery| Kind::Fault(Fault { inject, recovery, trust: true });
        let crashed_pg1 = |one_promotion_target| Recovery::Failover { restart_pg1: true, one_promotion_target };
        Some(match self {
            Scenario::PrimaryCrash => fault(failover::primary_crash, crashed_pg1(false)),
            Scenario::PrimaryHang => fault(failover::primary_hang, FAILOVER),
            Scenario::PrimaryHostDown => fault(failover::primary_host_down, FAILOVER),
            Scenario::PrimaryIsolated => fault(failover::primary_isolated, Nothing),
            Scenario::PrimaryIsolatedStandbys => fault(failover::primary_isolated_standbys, Nothing),
            Scenario::StandbyCrash => fault(failover::standby_crash, RestartStandby),
            Scenario::Switchover => fault(failover::switchover, Nothing),
            Scenario::LbCutFromPrimary => fault(failover::lb_cut_from_primary, Nothing),
            Scenario::LbPartition => fault(failover::lb_partition, crashed_pg1(true)),
            Scenario::LbKillThenFailover => fault(failover::lb_kill_then_failover, FAILOVER),
            Scenario::RestartWithStalePrimary => fault(failover::restart_with_stale_primary, FAILOVER),
            Scenario::SwitchoverProbeBlip => fault(failover::switchover_probe_blip, Nothing),
            Scenario::Cascade => fault(failover::cascade, Recovery::Cascade),
            Scenario::ForgedReport => trust_fault(trust::forged_report, Nothing),
            Scenario::ForgedAdvert => trust_fault(trust::forged_advert, Nothing),
            Scenario::LbFreeze => trust_fault(trust::lb_freeze, FAILOVER),
            Scenario::LbRestartStaleView => trust_fault(trust::lb_restart_stale_view, FAILOVER),
            Scenario::StateWriteFails => trust_fault(trust::state_write_fails, FAILOVER),
            Scenario::MainLoopHang => trust_fault(trust::main_loop_hang, Nothing),
            Scenario::LbReturn => trust_fault(trust::lb_return, Nothing),
            Scenario::LbCrash => Kind::Takeover(LbStop::Crash),
            Scenario::LbGraceful => Kind::Takeover(LbStop::Graceful),
            Scenario::SynFlood => Kind::SynFlood,
            Scenario::All => return None,
        })
    }

    /// The scenarios the command runs, in order, each with how it runs: `all` is every other
    /// scenario in declaration order. With `--client agent`, `all` leaves out and a single
    /// scenario refuses those that measure the VIP itself: through the agent they would measure
    /// nothing of it.
    pub(super) fn expand(self, client: ClientMode) -> Result<Vec<(Scenario, Kind)>> {
        let fits = |k: &Kind| client == ClientMode::Vip || !k.measures_vip();
        match self.kind() {
            None => Ok(Scenario::value_variants().iter().filter_map(|s| Some((*s, s.kind()?))).filter(|(_, k)| fits(k)).collect()),
            Some(k) if fits(&k) => Ok(vec![(self, k)]),
            Some(_) => bail!("`{self}` measures the VIP and its data plane: run it with `--client vip` (the default)"),
        }
    }
}

impl Fault {
    /// Injects the fault, with the floor watched around a trust drill's.
    pub(super) fn run(&self, d: &Drill, wlog: &Path, r: &mut RunResult) -> Result<u128> {
        if self.trust { trust::watching_floor(d, wlog, r, self.inject) } else { (self.inject)(d, wlog, r) }
    }
}

impl Recovery {
    /// Whether pg1 must acknowledge no write and answer no read as a primary after the fault.
    pub(super) fn old_primary_must_stay_silent(self) -> bool {
        matches!(self, Recovery::Failover { .. } | Recovery::Cascade)
    }
}

impl Kind {
    /// Whether the scenario measures the VIP and the load balancers' data plane itself (the
    /// trust drills, the takeovers and the flood), rather than what clients see of a failover.
    pub(super) fn measures_vip(&self) -> bool {
        match self {
            Kind::Fault(f) => f.trust,
            Kind::Takeover(_) | Kind::SynFlood => true,
        }
    }
}

impl fmt::Display for Scenario {
    /// The name on the command line, which is also the name in the output and the JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_possible_value().expect("no scenario is skipped on the command line").get_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(scenarios: &[(Scenario, Kind)]) -> Vec<String> {
        scenarios.iter().map(|(s, _)| s.to_string()).collect()
    }

    #[test]
    fn every_scenario_parses_from_its_name_and_back() {
        let all: Vec<String> = Scenario::value_variants().iter().map(Scenario::to_string).collect();
        // The names the command took as strings before the enum, in `all`'s order.
        assert_eq!(all, [
            "primary-crash", "primary-hang", "primary-host-down", "primary-isolated", "primary-isolated-standbys", "standby-crash",
            "switchover", "lb-cut-from-primary", "lb-partition", "lb-kill-then-failover", "restart-with-stale-primary",
            "switchover-probe-blip", "cascade", "forged-report", "forged-advert", "lb-freeze", "lb-restart-stale-view", "state-write-fails",
            "main-loop-hang", "lb-return", "lb-crash", "lb-graceful", "syn-flood", "all",
        ]);
        for s in Scenario::value_variants() {
            assert_eq!(Scenario::from_str(&s.to_string(), false), Ok(*s));
        }
        assert!(Scenario::from_str("primary-crsh", false).is_err());
        assert!(Scenario::from_str("PrimaryCrash", false).is_err());
    }

    #[test]
    fn all_runs_every_scenario_but_itself_in_declaration_order() {
        let all = Scenario::All.expand(ClientMode::Vip).unwrap();
        let want: Vec<String> = Scenario::value_variants().iter().filter(|s| **s != Scenario::All).map(Scenario::to_string).collect();
        assert_eq!(names(&all), want);
        // The documented order: failover scenarios, trust drills, takeovers, the flood last.
        let family = |k: &Kind| match k {
            Kind::Fault(f) => usize::from(f.trust),
            Kind::Takeover(_) => 2,
            Kind::SynFlood => 3,
        };
        let families: Vec<usize> = all.iter().map(|(_, k)| family(k)).collect();
        assert!(families.is_sorted(), "{families:?}");
        assert_eq!(families.iter().filter(|f| **f == 1).count(), 7, "seven trust drills");
    }

    #[test]
    fn one_scenario_runs_alone() {
        assert_eq!(names(&Scenario::LbPartition.expand(ClientMode::Vip).unwrap()), ["lb-partition"]);
        assert_eq!(names(&Scenario::SynFlood.expand(ClientMode::Vip).unwrap()), ["syn-flood"]);
    }

    #[test]
    fn the_agent_runs_only_what_does_not_measure_the_vip() {
        let all = Scenario::All.expand(ClientMode::Agent).unwrap();
        assert_eq!(names(&all), names(&Scenario::All.expand(ClientMode::Vip).unwrap()[..13]));
        assert_eq!(names(&Scenario::PrimaryCrash.expand(ClientMode::Agent).unwrap()), ["primary-crash"]);
        for refused in [Scenario::ForgedReport, Scenario::LbReturn, Scenario::LbCrash, Scenario::LbGraceful, Scenario::SynFlood] {
            let err = refused.expand(ClientMode::Agent).expect_err("measures the VIP").to_string();
            assert!(err.contains(&format!("`{refused}` measures the VIP")), "{err}");
        }
    }

    #[test]
    fn a_takeover_scenario_is_named_by_its_stop() {
        let mut takeovers = 0;
        for s in Scenario::value_variants() {
            if let Some(Kind::Takeover(stop)) = s.kind() {
                assert_eq!(stop.scenario(), *s);
                takeovers += 1;
            }
        }
        assert_eq!(takeovers, 2, "lb-crash and lb-graceful");
    }
}
