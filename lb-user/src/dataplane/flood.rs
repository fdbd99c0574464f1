//! SYN flood detection from the data plane's own counters: half-open flows opened faster than
//! handshakes complete.
//!
//! Why the control plane needs it: a flood congests this load balancer's own interface, so its
//! probes of PostgreSQL time out although every node is healthy. Read as "the writer is gone",
//! that would lower this instance's VRRP priority and hand the VIP to the peer, which takes the
//! flood along (the attacker aims at the VIP) and has none of the established connections: each
//! one would be reset. While the meter says "flood", the failover machine keeps the VIP and the
//! writer's routing ([`crate::failover::Event::Flood`]).

use std::time::Duration;

/// Half-open flows per second (opened minus completed) above which the data plane is under a
/// SYN flood. Legitimate clients complete their handshakes: a connection storm of real clients
/// stays far below it, as they are counted when they complete.
pub const FLOOD_RATE: f64 = 1000.0;
/// How long the rate must stay below [`FLOOD_RATE`] before the flood counts as over.
pub const FLOOD_HOLD: Duration = Duration::from_secs(5);

/// The meter: fed the two counters at a steady pace, says when a flood starts and ends.
#[derive(Debug, Default)]
pub struct FloodMeter {
    last: Option<(Duration, u64, u64)>,
    active: bool,
    quiet_since: Option<Duration>,
    /// The last rate measured, half-open flows per second.
    pub rate: f64,
}

impl FloodMeter {
    /// One reading at `now` of the totals of half-open flows `opened` and handshakes
    /// `completed`. Returns `Some(active)` when the verdict changes.
    pub fn observe(&mut self, now: Duration, opened: u64, completed: u64) -> Option<bool> {
        let (then, o0, c0) = self.last.replace((now, opened, completed))?;
        let dt = now.saturating_sub(then).as_secs_f64();
        if dt <= 0.0 || opened < o0 || completed < c0 {
            // The same instant, or counters that went back (new maps): no rate from this pair.
            return None;
        }
        let half_open = (opened - o0).saturating_sub(completed - c0);
        self.rate = half_open as f64 / dt;
        if self.rate >= FLOOD_RATE {
            self.quiet_since = None;
            if !self.active {
                self.active = true;
                return Some(true);
            }
        } else if self.active {
            let since = *self.quiet_since.get_or_insert(now);
            if now.saturating_sub(since) >= FLOOD_HOLD {
                self.active = false;
                self.quiet_since = None;
                return Some(false);
            }
        }
        None
    }

    /// Whether a flood is on.
    pub fn active(&self) -> bool {
        self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_flood_starts_at_the_rate_and_ends_after_the_hold() {
        let mut m = FloodMeter::default();
        assert_eq!(m.observe(Duration::ZERO, 0, 0), None, "the first reading has no rate");
        // 200 ms, 100 opened, 90 completed: 50/s, a busy but honest load.
        assert_eq!(m.observe(200 * MS, 100, 90), None);
        assert!(!m.active());
        // 200 ms, 300 more opened, none completed: 1500/s.
        assert_eq!(m.observe(400 * MS, 400, 90), Some(true));
        assert_eq!(m.observe(600 * MS, 1000, 90), None, "still on, said once");
        // Quiet again: on for FLOOD_HOLD more, then off.
        let quiet_from = 800 * MS;
        assert_eq!(m.observe(quiet_from, 1000, 90), None);
        assert_eq!(m.observe(quiet_from + FLOOD_HOLD - MS, 1000, 90), None);
        assert!(m.active());
        assert_eq!(m.observe(quiet_from + FLOOD_HOLD, 1000, 90), Some(false));
        assert!(!m.active());
    }

    #[test]
    fn a_storm_of_completed_handshakes_is_no_flood() {
        let mut m = FloodMeter::default();
        m.observe(Duration::ZERO, 0, 0);
        // 5000 connections a second, every one completed.
        assert_eq!(m.observe(1000 * MS, 5000, 4990), None);
        assert!(!m.active());
    }

    #[test]
    fn counters_that_go_back_give_no_rate() {
        let mut m = FloodMeter::default();
        m.observe(Duration::ZERO, 10_000, 0);
        assert_eq!(m.observe(200 * MS, 5, 0), None, "new maps: counters restarted");
        assert!(!m.active());
        assert_eq!(m.observe(400 * MS, 1005, 0), Some(true), "measured from the new baseline");
    }
}
