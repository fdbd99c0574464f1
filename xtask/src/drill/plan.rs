//! What a scenario that runs under the drill's clients is made of: the function that injects
//! its fault ([`Inject`]) and what its recovery checks ([`Recovery`]). Below both the scenario
//! list (`super::scenario`, which names one of each per scenario) and the files that define the
//! faults (`super::failover`, `super::trust`), so that neither imports the other's list.

use std::path::Path;

use anyhow::Result;

use super::{Drill, report::RunResult};

/// Injects a scenario's fault while the drill's clients run (`wlog`: the writer's log); returns
/// the fault's time (µs since the epoch) once the scenario's outcome is reached, having recorded
/// what it measures in the run's result on the way.
pub(super) type Inject = fn(&Drill, &Path, &mut RunResult) -> Result<u128>;

/// A scenario that runs under the drill's clients: its fault and what is checked after it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fault {
    pub(super) inject: Inject,
    pub(super) recovery: Recovery,
    /// A trust drill (issue 18): the floor is watched around the fault
    /// ([`super::trust::watching_floor`]), and it measures the VIP itself.
    pub(super) trust: bool,
}

/// What a scenario's recovery checks ([`super::failover::recover`]), beyond the checks of every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recovery {
    /// Nothing more: no failover is expected.
    Nothing,
    /// The crashed standby (pg3) is started again.
    RestartStandby,
    /// When pg1 failed over: it answers nothing after the fault, the other standby follows the
    /// winner, pg1 is fenced when it returns and then rejoined by pglb itself.
    Failover {
        /// pg1 was killed and is started here (a restarted host); otherwise it is back already
        /// (a hung or unplugged host) or the fault itself restarted it.
        restart_pg1: bool,
        /// Both masters of a partition promoted the same node.
        one_promotion_target: bool,
    },
    /// Two primaries lost in a row (`cascade`): pg1 and the first failover's winner are
    /// started again, and pglb rejoins both under the last standby, promoted second.
    Cascade,
}

/// The common failover: pg1 back by itself or restarted by the fault, one master deciding.
pub(super) const FAILOVER: Recovery = Recovery::Failover { restart_pg1: false, one_promotion_target: false };
