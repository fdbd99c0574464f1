//! Maintenance mode (`pglb pause`, `pglb resume`): which pause or resume is the newest (from
//! the operator here, a peer's report or the state file), whether a pause is in force, and the
//! end of a `--for` pause. The wall clock comes in as [`Event::WallClock`]; the machine keeps
//! its offset to the monotonic `now` and reads no clock.
//!
//! While a pause is in force: no failover (the guard `not_paused`, [`Blocked::Paused`]), no
//! rejoin, no re-point, no `SetSyncStandbys`, no switchover (refused: resume first). Routing
//! still follows the probes: a primary that answers again on the writer's timeline is routed
//! again at once.

use super::*;

impl Machine {
    /// The wall clock at `now`, in milliseconds since the epoch, once it is known.
    pub(super) fn wall_ms(&self, now: Duration) -> Option<u64> {
        self.wall_offset.map(|o| (o + now).as_millis() as u64)
    }

    /// The pause in force now, if any.
    pub(super) fn paused(&self) -> Option<&Maintenance> {
        let wall = self.wall_ms(self.now);
        self.maintenance.as_ref().filter(|m| m.in_force(wall))
    }

    /// The runtime's wall clock: the offset to the monotonic clock. A clock that stepped is
    /// followed from its next reading on.
    pub(super) fn on_wall_clock(&mut self, unix: Duration, now: Duration) {
        self.wall_offset = Some(unix.saturating_sub(now));
    }

    /// A pause or resume, from the operator (`peer` = `None`) or a peer's report: taken when it
    /// is newer than the one known here; an older one from the operator is refused in the log
    /// (the runtime dates commands on the wall clock, so that needs a clock that went back).
    pub(super) fn on_maintenance(&mut self, m: &Maintenance, peer: Option<std::net::Ipv4Addr>, out: &mut Vec<Action>) {
        if self.maintenance.as_ref().is_some_and(|c| !m.newer_than(c)) {
            if peer.is_none() && self.maintenance.as_ref() != Some(m) {
                let msg = format!("maintenance: the command dated {} is older than the one in force; ignored", rfc3339_ms(m.at_ms));
                log(out, Level::Warn, msg);
            }
            return;
        }
        let from = peer.map_or_else(String::new, |p| format!(" (learned from peer {p})"));
        let msg = if m.paused {
            let reason = m.reason.as_deref().map_or_else(String::new, |r| format!(", reason: {r}"));
            let until = m.until_ms.map_or_else(|| "until `pglb resume`".to_owned(), |u| format!("until {} or `pglb resume`", rfc3339_ms(u)));
            format!(
                "maintenance: paused on {} at {}{reason}{from}: no automatic failover, rejoin, re-point or change of synchronous_standby_names {until}; routing still follows the probes",
                m.by,
                rfc3339_ms(m.at_ms)
            )
        } else {
            format!("maintenance: resumed on {} at {}{from}: failover, rejoin and re-pointing act again", m.by, rfc3339_ms(m.at_ms))
        };
        log(out, Level::Warn, msg);
        self.maintenance = Some(m.clone());
    }

    /// A `--for` pause whose end has come ends here, as it does on every instance: it becomes
    /// a resume dated at its end, by the instance that paused (the same record everywhere, so
    /// none is newer than another's).
    pub(super) fn expire_pause(&mut self, now: Duration, out: &mut Vec<Action>) {
        let Some(wall) = self.wall_ms(now) else { return };
        let Some(m) = self.maintenance.as_ref().filter(|m| m.paused) else { return };
        let Some(until) = m.until_ms.filter(|&u| wall >= u) else { return };
        let ended = Maintenance { paused: false, at_ms: until, by: m.by.clone(), reason: None, until_ms: None };
        let msg = format!("maintenance: the pause taken on {} ended by itself at {} (--for): failover, rejoin and re-pointing act again", m.by, rfc3339_ms(until));
        log(out, Level::Warn, msg);
        self.maintenance = Some(ended);
    }

    /// When a `--for` pause ends, on the monotonic clock.
    pub(super) fn pause_deadline(&self) -> Option<Duration> {
        let m = self.maintenance.as_ref().filter(|m| m.paused)?;
        let until = Duration::from_millis(m.until_ms?);
        Some(until.saturating_sub(self.wall_offset?))
    }
}
