//! The state file, written off the daemon's main loop: one write at a time, the newest state
//! handed out first (states handed out meanwhile are coalesced), each within [`WRITE_LIMIT`].
//! Every outcome goes back to the failover machine as [`Event::Persisted`]: a promotion waits
//! for the write that records it, and a failed write is tried again (the machine decides when).
//! A write that hangs (a dead disk) is reported failed at the limit and waited for before the
//! next one starts, so hung writes never pile up threads.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::{
    failover::{Durable, Event},
    state::StateFile,
};

/// How long one write may take before it counts as failed.
pub const WRITE_LIMIT: Duration = Duration::from_secs(1);

/// Hands states to the writing task.
pub struct Recorder {
    latest: watch::Sender<Option<Durable>>,
}

impl Recorder {
    /// The recorder and its writing task (for the daemon's task set), on `file`, reporting on
    /// `done`; the task ends when the recorder is dropped.
    pub fn new(file: StateFile, done: mpsc::Sender<Event>) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (latest, rx) = watch::channel(None);
        (Recorder { latest }, write_loop(file, rx, done))
    }

    /// Writes `state` (after the write in progress, if any).
    pub fn record(&self, state: Durable) {
        self.latest.send_replace(Some(state));
    }
}

async fn write_loop(file: StateFile, mut rx: watch::Receiver<Option<Durable>>, done: mpsc::Sender<Event>) {
    while rx.changed().await.is_ok() {
        let Some(state) = rx.borrow_and_update().clone() else { continue };
        let (f, s) = (file.clone(), state.clone());
        let mut job = tokio::task::spawn_blocking(move || f.store(&s));
        let (result, hung) = match tokio::time::timeout(WRITE_LIMIT, &mut job).await {
            Ok(Ok(r)) => (r.map_err(|e| crate::error_chain(&e)), false),
            Ok(Err(e)) => (Err(format!("the write task failed: {e}")), false),
            Err(_) => (Err(format!("{}: no answer from the disk within {WRITE_LIMIT:?}", file.path().display())), true),
        };
        if done.send(Event::Persisted { state, result }).await.is_err() {
            return;
        }
        if hung {
            let _ = job.await;
        }
    }
}
