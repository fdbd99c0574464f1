//! The failover state machine (sans-IO): probe observations in, actions out.
//!
//! [`Machine::handle`]`(event, now)` returns the [`Action`]s to apply, in order;
//! [`Machine::next_deadline`] says when to call it again with [`Event::Tick`]. Time is the
//! daemon's monotonic clock passed in; nothing here reads a clock, sleeps, does I/O or draws a
//! random number. One task owns the machine; an executor applies its actions and reports the
//! results of `Promote`, `Repoint` and `Demote` back as [`Event::ActionDone`].
//!
//! # Rules (docs/ARCHITECTURE.md, "Failover rules")
//!
//! 1. Writer = the reachable, unfenced node not in recovery on the highest timeline. Two on
//!    the same timeline: keep the previous writer, fence the other, alert.
//! 2. Failover only when all hold: the writer failed `failover_after` consecutive probes (or
//!    answers in recovery); this instance is VRRP master (always, without `[vrrp]`); quorum:
//!    1 (this instance) + reachable nodes + peers heard within the master-down interval is more
//!    than half of (nodes + peers + 1); no reachable standby streams from the old writer.
//!    **Added guard, synchronous replication**: with `ANY k` over the n other unfenced nodes,
//!    at least n − k + 1 of them must be reachable standbys, or the one holding the last
//!    acknowledged commit may be out of sight (a double fault blocks instead of losing writes).
//! 3. Candidate = reachable standby on the writer's timeline, not `nofailover` nor disabled
//!    (`pglb node disable`), not recently failed, within `max_lag_on_failover_bytes` of the furthest known position (old writer's
//!    last `current_lsn` or the furthest standby); highest received LSN, then priority, then
//!    name. If a reachable standby that may not be promoted is further ahead: no failover.
//! 4. `Promote`; on success one `SetWriter` (writes were refused since the failover started).
//! 5. `Repoint` every other reachable standby; later, any standby not streaming from the writer
//!    for `REPOINT_AFTER_INTERVALS` probe intervals is re-pointed again (level-triggered).
//!    `SetSyncStandbys` on the new primary lists every other node: `ANY k (others)`. When no
//!    standby is left, commits on the primary wait until one reconnects (zero loss over
//!    availability); `synchronous_count = 0` opts out, and then pglb leaves the setting empty.
//! 6. A primary on an older timeline, and the replaced writer after a failover, are fenced
//!    (`needs-rejoin`) until `AdminCommand::Rejoined` or until they answer in recovery on the
//!    writer's timeline. Fences are durable: they are in the state file
//!    and restored at start (`Machine::restore`), and rule 1 would fence such a node again anyway.
//! 7. Readers = reachable unfenced standbys on the writer's timeline, `read_weight > 0`, not
//!    drained (`pglb node drain`), replay position within `max_read_lag_bytes` of the writer's
//!    current LSN and replay lag within `max_read_lag`; the writer if none qualifies.
//!
//! Maintenance mode (`machine/maintenance.rs`): while a pause is in force (the newest
//! [`Maintenance`] from the operator, a peer's report or the state file), rule 2 holds
//! ([`Blocked::Paused`]), rules 5 and 6 neither re-point nor rejoin, and a switchover is
//! refused; rules 1 and 7 (routing) go on.
//!
//! Node marks (`machine/marks.rs`): the newest [`NodeMark`] per node and kind, from the
//! operator, a peer's report or the state file. Drained: out of rule 7's readers. Disabled: out
//! of rule 3's candidates and refused as a switchover target.
//!
//! Debounce: the writer is down after `failover_after` failed probes, any other node after
//! [`STANDBY_DOWN_AFTER`]; a down node is up again after `up_after` good probes (the writer
//! being watched after one). A node silent for [`STALE_AFTER_INTERVALS`] probe intervals gets a
//! failure counted.
//!
//! # Phases and transitions
//!
//! ```text
//!  phase          event / condition                              actions                        next
//!  -------------  ---------------------------------------------  -----------------------------  -------------
//!  Starting       every node probed once, or detection_time      SetWriter(w), SetReaders       Steady
//!                 passed; rule 1 finds w                          (+ Fence of other primaries)
//!  Starting       same, no usable primary                         SetWriter(None), SetReaders    WriterLost{None}
//!  Steady         writer failed failover_after probes             Log (writes stay routed)       WriterLost{w}
//!  Steady         writer answers in recovery                      SetWriter(None)                WriterLost{w}
//!  Steady         other primary, same timeline                    Fence(SplitBrain), Alert       Steady
//!  Steady         other primary, older timeline                   Fence(OlderTimeline)           Steady
//!  Steady         other primary, newer timeline                   SetWriter(c), Fence(w), Alert  Steady
//!  Steady         standby off the writer for repoint_after        Repoint                        Steady
//!  Steady         Admin Switchover{to}, checks pass               SetWriter(None)                Switchover/CatchingUp
//!  Steady         Admin Switchover{to}, checks fail               Alert(SwitchoverRejected)      Steady
//!  WriterLost     rule 1 finds a primary (old one preferred)      SetWriter(c) if changed        Steady
//!  WriterLost     every guard holds, candidate c                  Alert(FailoverStarted),        Settling
//!                                                                 SetWriter(None), Repoint other
//!                                                                 reachable standbys → c
//!  Settling       c probed since, and each re-pointed standby     Persist(promoting), Promote(c) FailingOver
//!                 probed after its re-point was done (or
//!                 SETTLE_INTERVALS probe intervals passed);
//!                 every guard holds again, best candidate c'      (c' may differ from c)
//!  Settling       a guard holds back on the new positions         Alert(FailoverBlocked)         WriterLost
//!  Settling       rule 1 finds a primary                          SetWriter(c) if changed        Steady
//!  WriterLost     a guard holds back                              Log + Alert(FailoverBlocked)   WriterLost
//!                                                                 when the reason changes
//!  FailingOver    Promote done ok, or c probed as primary on a    SetWriter(c), Fence(old),      Steady
//!                 newer timeline                                  Repoint others,
//!                                                                 SetSyncStandbys, Alert
//!  FailingOver    Promote failed, or promote_timeout              Alert(PromoteFailed); c left   WriterLost
//!                                                                 out for promote_timeout
//!  Switchover     CatchingUp: target received ≥ old primary's     Demote(from → to)              Switchover/Demoting
//!                 current LSN probed after the block
//!  Switchover     Demoting: Demote done ok                        Promote(to)                    Switchover/Promoting
//!  Switchover     Promoting: Promote done ok (or probed)          SetWriter(to), Repoint others, Steady
//!                                                                 SetSyncStandbys, Alert
//!  Switchover     CatchingUp timeout, Demote failed               Alert, SetWriter(from)         Steady
//!  Switchover     Demoting: done ok but target unusable, not      Alert                          WriterLost{None}
//!                 master or no quorum; Demoting timeout,
//!                 Promote failed or timeout
//!  any but        Admin Switchover                                Alert(SwitchoverRejected)      same
//!  Steady
//!  any            Admin Maintenance or a peer's report naming a   Log, Persist                   same
//!                 newer pause or resume; a --for pause's end
//!  any            Admin Mark or a peer's report naming a newer    Log, Persist (+ SetReaders     same
//!                 node mark (drain, disable, their reverses)      when the readers change)
//! ```
//!
//! Node roles (as probed) have one handler each: primary seen, standby seen (which lifts a fence
//! when the node replicates on the writer's timeline), probe failed. In every phase but
//! Starting, the reader set is recomputed after each event and `SetReaders` emitted on change.

mod machine;
mod manual;
mod observation;
mod operator;
pub mod rules;
mod types;

pub use machine::Machine;
pub use manual::*;
pub use observation::*;
pub use operator::*;
pub use types::*;

#[cfg(test)]
mod tests;
