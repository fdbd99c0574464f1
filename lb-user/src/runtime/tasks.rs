//! The daemon's long-lived tasks, owned in one place (mini-redis's `shutdown`): each is spawned
//! with a name into one set, ends when the daemon's stop signal fires, and is waited for at the
//! stop. A task that ends by itself while the daemon runs is a fault: the main loop logs it and
//! stops the daemon (systemd restarts it) rather than living on without that part.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    time::Duration,
};

use tokio::{
    sync::watch,
    task::{AbortHandle, Id, JoinSet},
};
use tracing::{error, warn};

/// How a task ended by itself.
#[derive(Debug)]
pub struct Ended {
    pub name: &'static str,
    /// The panic, if it panicked.
    pub panic: Option<String>,
}

/// The set of tasks and their stop signal.
pub struct Tasks {
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    /// Tasks stopped on purpose ([`Tasks::retire`]): their end is no fault.
    retired: HashSet<Id>,
    stop: watch::Sender<bool>,
}

impl Tasks {
    pub fn new() -> Self {
        Tasks { set: JoinSet::new(), names: HashMap::new(), retired: HashSet::new(), stop: watch::channel(false).0 }
    }

    /// Runs `work` as the task `name` until it ends or the stop signal fires; the handle
    /// retires it earlier ([`Tasks::retire`]).
    pub fn spawn(&mut self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let mut stop = self.stop.subscribe();
        let handle = self.set.spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                () = work => {}
            }
        });
        self.names.insert(handle.id(), name);
        handle
    }

    /// Stops one task on purpose (the probe of a node a reload removed): its end is not
    /// reported by [`Tasks::ended`].
    pub fn retire(&mut self, task: &AbortHandle) {
        self.retired.insert(task.id());
        task.abort();
    }

    /// The next task that ended by itself; pending while none has (or none is left).
    pub async fn ended(&mut self) -> Ended {
        loop {
            let (id, panic) = match self.set.join_next_with_id().await {
                Some(Ok((id, ()))) => (id, None),
                Some(Err(e)) => (e.id(), Some(e.to_string())),
                None => return std::future::pending().await,
            };
            let name = self.names.remove(&id).unwrap_or("a task");
            if !self.retired.remove(&id) {
                return Ended { name, panic };
            }
        }
    }

    /// Signals every task to stop and waits for them, at most `limit`; what is left is aborted.
    pub async fn stop(mut self, limit: Duration) {
        self.stop.send_replace(true);
        let drained = tokio::time::timeout(limit, async {
            while let Some(r) = self.set.join_next().await {
                if let Err(e) = r {
                    error!(error = %e, "a task failed while stopping");
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(left = self.set.len(), limit_ms = limit.as_millis() as u64, "tasks did not stop in time: aborted");
            self.set.abort_all();
        }
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_stop_together_and_one_that_ends_by_itself_is_reported() {
        let mut tasks = Tasks::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<&str>(4);
        for name in ["probe pg1", "http"] {
            let tx = tx.clone();
            tasks.spawn(name, async move {
                std::future::pending::<()>().await;
                let _ = tx.send(name).await;
            });
        }
        let retired = tasks.spawn("probe pg9", std::future::pending());
        tasks.retire(&retired);
        tasks.spawn("sampler", async {});
        let ended = tokio::time::timeout(Duration::from_secs(5), tasks.ended()).await.expect("the short task is reported");
        assert_eq!(ended.name, "sampler");
        assert!(ended.panic.is_none());
        tasks.spawn("admin", async { panic!("boom") });
        let ended = tokio::time::timeout(Duration::from_secs(5), tasks.ended()).await.expect("the panic is reported");
        assert_eq!(ended.name, "admin");
        assert!(ended.panic.is_some_and(|p| p.contains("panicked")));
        tokio::time::timeout(Duration::from_secs(5), tasks.stop(Duration::from_secs(2))).await.expect("stops in time");
        drop(tx);
        assert_eq!(rx.recv().await, None, "the pending tasks were stopped, not completed");
    }
}
