//! The signals `pglb run` answers, and how. An operator sends some by habit (keepalived,
//! HAProxy and repmgrd reload on SIGHUP): none of them may kill the daemon without a clean stop.
//!
//! | signal | what pglb does |
//! |---|---|
//! | SIGTERM, SIGINT, SIGQUIT, SIGUSR1, and every other signal whose default is to end the process (SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, SIGXFSZ, SIGPWR, SIGIO, SIGSTKFLT) | a clean stop: the lease expired, the VIP released with a priority-0 advert |
//! | SIGUSR2 | a restart in place: the VIP and the data plane stay for the next `pglb run` |
//! | SIGHUP | a live reload of the config file, as `pglb reload` (see `super::reload`) |
//!
//! SIGKILL cannot be caught: the data plane's lease runs out by itself and the next start
//! removes the VIP it left (see the runtime's module doc).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    Stop(&'static str),
    Restart,
    Reload,
}

/// Every signal handled, with its name and what it asks.
const HANDLED: [(i32, &str, Ask); 14] = [
    (libc::SIGTERM, "SIGTERM", Ask::Stop("SIGTERM")),
    (libc::SIGINT, "SIGINT", Ask::Stop("SIGINT")),
    (libc::SIGQUIT, "SIGQUIT", Ask::Stop("SIGQUIT")),
    (libc::SIGUSR1, "SIGUSR1", Ask::Stop("SIGUSR1")),
    (libc::SIGALRM, "SIGALRM", Ask::Stop("SIGALRM")),
    (libc::SIGVTALRM, "SIGVTALRM", Ask::Stop("SIGVTALRM")),
    (libc::SIGPROF, "SIGPROF", Ask::Stop("SIGPROF")),
    (libc::SIGXCPU, "SIGXCPU", Ask::Stop("SIGXCPU")),
    (libc::SIGXFSZ, "SIGXFSZ", Ask::Stop("SIGXFSZ")),
    (libc::SIGPWR, "SIGPWR", Ask::Stop("SIGPWR")),
    (libc::SIGIO, "SIGIO", Ask::Stop("SIGIO")),
    (libc::SIGSTKFLT, "SIGSTKFLT", Ask::Stop("SIGSTKFLT")),
    (libc::SIGUSR2, "SIGUSR2", Ask::Restart),
    (libc::SIGHUP, "SIGHUP", Ask::Reload),
];

/// The installed handlers.
pub struct Signals {
    installed: Vec<(Signal, Ask)>,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        let installed = HANDLED.iter().map(|&(raw, _, ask)| Ok((signal(SignalKind::from_raw(raw))?, ask))).collect::<std::io::Result<_>>()?;
        Ok(Signals { installed })
    }

    /// The next signal's ask. Polls each handler in place: nothing is allocated per call (the
    /// main loop asks at every turn).
    pub async fn next(&mut self) -> Ask {
        std::future::poll_fn(|cx| {
            for (s, ask) in &mut self.installed {
                if s.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*ask);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_that_ends_a_process_by_default_is_handled() {
        // signal(7): the signals whose default action is Term or Core and that can be caught,
        // less the ones the kernel sends for the process's own faults (SIGSEGV, SIGBUS, SIGILL,
        // SIGFPE, SIGSYS, SIGTRAP, SIGABRT: the process cannot go on after them) and SIGPIPE
        // (ignored by the Rust runtime: a closed socket is an error return).
        let must = [
            libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM, libc::SIGTERM,
            libc::SIGSTKFLT, libc::SIGXCPU, libc::SIGXFSZ, libc::SIGVTALRM, libc::SIGPROF, libc::SIGIO, libc::SIGPWR,
        ];
        for sig in must {
            assert!(HANDLED.iter().any(|(s, _, _)| *s == sig), "signal {sig} is not handled");
        }
        assert!(HANDLED.iter().any(|&(s, _, a)| s == libc::SIGHUP && a == Ask::Reload), "SIGHUP never stops the daemon");
    }
}
