//! How `pglb run` leaves: a restart in place (SIGUSR2) or a stop that hands the VIP over.

use std::time::Duration;

use tracing::{error, info};

use super::{Exit, Runtime, VipOwner, executor::Executor};
use crate::vip::VrrpState;

/// Restart exit (SIGUSR2): the last VRRP adverts announce this interval, so an RFC 9568 backup
/// (pglb or keepalived) declares us down only after 3 × it + skew (~7 s) instead of ~0.36 s.
/// The next `pglb run` wakes humble (new flows refused until it has decided, ~0.5 s) and becomes
/// master again; meanwhile the pinned XDP program keeps forwarding every established flow.
const RESTART_HOLD: Duration = Duration::from_secs(2);

/// How long a stopping instance waits between its last report and its priority-0 advert.
const REPORT_BEFORE_LEAVING: Duration = Duration::from_millis(20);

impl Runtime {
    /// Leaves: a restart keeps the VIP and extends the lease over the restart (the next run
    /// expires it at once and renews it once it has decided); a stop hands the VIP over and
    /// lets the lease run out. Returns the executor, whose actions in flight stop with the
    /// daemon's tasks.
    pub(super) async fn stop(mut self, exit: Exit) -> Executor {
        let (lease, grace) = (self.p.lease.period, self.p.lease.grace);
        match exit {
            Exit::Restart => {
                if let Err(e) = self.dataplane.renew_lease(RESTART_HOLD * 3 + lease + Duration::from_secs(2), grace) {
                    error!(error = %crate::error_chain(&e), "restart: extending the lease over the restart failed: the data plane may refuse new flows until the next start");
                }
                if let VipOwner::Vrrp(runner) = self.vip {
                    runner.restart_hold(RESTART_HOLD);
                }
                info!(hold_s = RESTART_HOLD.as_secs() * 3, "exiting for a restart (SIGUSR2): the VIP stays here and XDP keeps forwarding; backups hold off for the window");
            }
            Exit::Stop(why) => {
                info!(why, "shutting down: releasing the VIP and the lease; the XDP program and maps stay pinned for the next start");
                if let Err(e) = self.dataplane.expire_lease(grace) {
                    error!(error = %crate::error_chain(&e), "letting the lease run out failed");
                }
                // A last report saying priority 0, so the peers believe the priority-0 advert
                // that follows and take over after their skew time.
                let body = self.machine.report();
                let now = self.since.elapsed();
                if let Some(link) = &mut self.reports {
                    link.send(VrrpState::Initialize, 0, false, &body, now);
                    // The report and the advert reach a peer's loop on two sockets, and it
                    // takes whichever is ready first: an advert read before the report is not
                    // vouched for and waits out a whole down interval. A moment between them
                    // lets the report be read first.
                    tokio::time::sleep(REPORT_BEFORE_LEAVING).await;
                }
                match self.vip {
                    VipOwner::Vrrp(runner) => runner.shutdown().await,
                    VipOwner::Static(held) => {
                        if let Err(e) = held.release().await {
                            error!(error = %crate::error_chain(&e), "releasing the VIP failed");
                        }
                    }
                }
            }
        }
        self.executor
    }
}
