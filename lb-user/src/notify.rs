//! The service manager's notifications (systemd `Type=notify`, through the `sd-notify` crate):
//! `READY=1` once the data plane is attached and the VIP machinery runs, `WATCHDOG=1` from the
//! run loop's lease tick (a loop that stops turning stops them, and systemd restarts the daemon),
//! `STOPPING=1` on the way out. Outside systemd (`$NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

use tracing::{info, warn};

/// `READY=1`, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)], "READY=1");
}

/// `WATCHDOG=1`: the run loop is turning.
pub fn watchdog() {
    send(&[sd_notify::NotifyState::Watchdog], "WATCHDOG=1");
}

/// `STOPPING=1`, with a status line.
pub fn stopping(status: &str) {
    send(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status(status)], "STOPPING=1");
}

fn send(state: &[sd_notify::NotifyState], what: &str) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "systemd: sending {what} failed");
    }
}

/// The run loop's lease tick (`lease / 5`), shortened when systemd's watchdog (`WatchdogSec=`)
/// wants pings more often: at least three pings per watchdog interval, so a busy moment does not
/// get a turning loop killed.
pub fn loop_tick(lease_tick: Duration) -> Duration {
    let Some(watchdog) = sd_notify::watchdog_enabled() else { return lease_tick };
    let tick = tick_for(lease_tick, Some(watchdog));
    info!(watchdog_ms = watchdog.as_millis() as u64, tick_ms = tick.as_millis() as u64, "systemd watchdog on: WATCHDOG=1 every lease tick");
    tick
}

fn tick_for(lease_tick: Duration, watchdog: Option<Duration>) -> Duration {
    match watchdog {
        Some(w) if !w.is_zero() => lease_tick.min(w / 3),
        _ => lease_tick,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::tick_for;

    #[test]
    fn the_lease_tick_is_kept_unless_the_watchdog_needs_more_pings() {
        let ms = Duration::from_millis;
        assert_eq!(tick_for(ms(200), None), ms(200));
        assert_eq!(tick_for(ms(200), Some(ms(5000))), ms(200));
        // lease = 60s: a 12s tick would miss a 5s watchdog.
        assert_eq!(tick_for(ms(12_000), Some(ms(5000))).as_millis(), 1666);
        assert_eq!(tick_for(ms(200), Some(Duration::ZERO)), ms(200));
    }
}
