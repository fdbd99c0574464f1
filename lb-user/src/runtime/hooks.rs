//! The events task: every operator-facing event the loop emits ([`Emitter::emit`]) is appended
//! to the journal (`crate::journal`) and handed to the `[hooks]` command, off the main loop.
//!
//! The loop only `try_send`s into a bounded queue: a full queue drops the event (counted as
//! `dropped`, logged), so a slow hook never blocks or delays a failover. The task takes events
//! in order, appends each to the journal (off the async threads), then starts the hook when one
//! of `max_concurrent` slots is free: `/bin/sh -c command` in its own process group, the event
//! as one JSON line on stdin and `PGLB_*` in its environment. A run that outlives `timeout` is
//! killed with its whole process group. Every run's result is counted (`/metrics`,
//! `pglb_hook_runs_total{result}`) and a failure is logged.

use std::{
    process::{ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{io::AsyncWriteExt as _, process::Command, sync::{Semaphore, mpsc, watch}, task::JoinSet};
use tracing::{debug, warn};

use crate::journal::{Event, Journal};

/// Events waiting for the task; past this they are dropped.
pub const QUEUE: usize = 256;

/// The `[hooks]` command and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookParams {
    pub command: String,
    pub timeout: Duration,
    pub max_concurrent: usize,
}

/// How one hook run ended, and the label `/metrics` counts it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookResult {
    Ok,
    /// Exited non-zero, or was killed by a signal.
    Failed,
    /// Outlived the timeout: its process group was killed.
    Timeout,
    /// `/bin/sh` could not be started.
    SpawnError,
    /// Never run: the queue was full.
    Dropped,
}

impl HookResult {
    pub const ALL: [HookResult; 5] = [HookResult::Ok, HookResult::Failed, HookResult::Timeout, HookResult::SpawnError, HookResult::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Ok => "ok",
            HookResult::Failed => "failed",
            HookResult::Timeout => "timeout",
            HookResult::SpawnError => "spawn_error",
            HookResult::Dropped => "dropped",
        }
    }
}

/// Hook runs by result, and failed journal appends; written by the task and the emitter, read
/// by the snapshots.
#[derive(Debug, Default)]
pub struct HookCounts {
    runs: [AtomicU64; 5],
    journal_errors: AtomicU64,
}

impl HookCounts {
    fn add(&self, r: HookResult) {
        self.runs[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn runs(&self, r: HookResult) -> u64 {
        self.runs[r as usize].load(Ordering::Relaxed)
    }

    pub fn journal_errors(&self) -> u64 {
        self.journal_errors.load(Ordering::Relaxed)
    }
}

/// The loop's end of the queue.
pub struct Emitter {
    tx: mpsc::Sender<Event>,
    counts: Arc<HookCounts>,
}

impl Emitter {
    /// Hands `event` to the task without waiting; a full queue drops it (counted).
    pub fn emit(&self, event: Event) {
        if let Err(e) = self.tx.try_send(event) {
            self.counts.add(HookResult::Dropped);
            let event = match &e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            warn!(event = event.event.as_str(), "events: the queue is full (hooks too slow): this event is neither journaled nor passed to the hook");
        }
    }
}

/// The queue's two ends: the loop's [`Emitter`] and the task's receiver.
pub fn channel(counts: Arc<HookCounts>) -> (Emitter, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Emitter { tx, counts }, rx)
}

/// The events task: journal, then hook, for every event in order, until the queue closes (its
/// runs then finish). Runs still going when the task is stopped (dropped) are killed: their
/// `sh` with them (`kill_on_drop`). The hook is the one in force when an event is taken (a
/// reload sends a new one; runs already started finish with theirs, outside the new slots).
pub async fn serve(mut rx: mpsc::Receiver<Event>, journal: Journal, mut hooks: watch::Receiver<Option<HookParams>>, counts: Arc<HookCounts>) {
    let slots_for = |hook: &Option<HookParams>| Arc::new(Semaphore::new(hook.as_ref().map_or(1, |h| h.max_concurrent.max(1))));
    let mut hook = hooks.borrow_and_update().clone();
    let mut slots = slots_for(&hook);
    let mut runs = JoinSet::new();
    while let Some(event) = rx.recv().await {
        while runs.try_join_next().is_some() {}
        if hooks.has_changed().unwrap_or(false) {
            hook = hooks.borrow_and_update().clone();
            slots = slots_for(&hook);
        }
        let j = journal.clone();
        let line = event.clone();
        match tokio::task::spawn_blocking(move || j.append(&line)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                counts.journal_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %crate::error_chain(&e), "events: journal append failed");
            }
            Err(e) => warn!(error = %e, "events: journal append task failed"),
        }
        let Some(h) = &hook else { continue };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let (h, counts) = (h.clone(), Arc::clone(&counts));
        runs.spawn(async move {
            let result = run_hook(&h, &event).await;
            counts.add(result);
            drop(slot);
        });
    }
    // The queue closed (the loop is gone): the runs started finish.
    while runs.join_next().await.is_some() {}
}

/// One run of the hook for `event`.
pub async fn run_hook(h: &HookParams, event: &Event) -> HookResult {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(&h.command).envs(event.env()).stdin(Stdio::piped()).stdout(Stdio::null()).process_group(0).kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(event = event.event.as_str(), error = %e, "hook: cannot start /bin/sh");
            return HookResult::SpawnError;
        }
    };
    let pid = child.id();
    let mut line = event.to_json();
    line.push('\n');
    let stdin = child.stdin.take();
    let finished = tokio::time::timeout(h.timeout, async {
        if let Some(mut stdin) = stdin {
            // A hook may ignore its stdin and exit first: a broken pipe is not its failure.
            let _ = stdin.write_all(line.as_bytes()).await;
        }
        child.wait().await
    })
    .await;
    match finished {
        Ok(Ok(status)) if status.success() => {
            debug!(event = event.event.as_str(), "hook: done");
            HookResult::Ok
        }
        Ok(Ok(status)) => {
            warn!(event = event.event.as_str(), status = %describe(status), "hook: failed");
            HookResult::Failed
        }
        Ok(Err(e)) => {
            warn!(event = event.event.as_str(), error = %e, "hook: waiting for it failed");
            HookResult::Failed
        }
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) with a negative pid signals the process group the hook leads
                // (`process_group(0)` made its pid the group id); it touches no memory of ours.
                unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            }
            let _ = child.wait().await;
            warn!(event = event.event.as_str(), timeout_ms = h.timeout.as_millis() as u64, "hook: timed out, its process group killed");
            HookResult::Timeout
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::SystemTime};

    use super::*;
    use crate::journal::{self, EventName};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pglb-hooks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir
    }

    fn event() -> Event {
        Event::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000), EventName::Switchover, "lb1", "switchover done: pg1 -> pg2")
            .writers(Some("pg1".into()), Some("pg2".into()))
            .timeline(Some(3))
    }

    fn hook(command: String, timeout: Duration) -> HookParams {
        HookParams { command, timeout, max_concurrent: 2 }
    }

    #[tokio::test]
    async fn hook_gets_the_json_on_stdin_and_the_env() {
        let dir = temp_dir("env");
        let out = dir.join("out");
        let cmd = format!("cat > {0}; echo \"$PGLB_EVENT|$PGLB_NODE|$PGLB_OLD_WRITER|$PGLB_NEW_WRITER|$PGLB_TIMELINE\" >> {0}", out.display());
        assert_eq!(run_hook(&hook(cmd, Duration::from_secs(10)), &event()).await, HookResult::Ok);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text, format!("{}\nswitchover||pg1|pg2|3\n", event().to_json()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn hook_failures_and_timeouts_are_told_apart() {
        let quick = Duration::from_secs(10);
        assert_eq!(run_hook(&hook("exit 3".into(), quick), &event()).await, HookResult::Failed);
        assert_eq!(run_hook(&hook("kill -9 $$".into(), quick), &event()).await, HookResult::Failed);
        // A hook that ignores its stdin is fine.
        assert_eq!(run_hook(&hook("true".into(), quick), &event()).await, HookResult::Ok);
        // A timeout kills the whole group: the background sleep's child too.
        let dir = temp_dir("timeout");
        let pidfile = dir.join("pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let started = std::time::Instant::now();
        assert_eq!(run_hook(&hook(cmd, Duration::from_millis(300)), &event()).await, HookResult::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5), "the timeout bounds the run");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "the group's sleep is gone: {stat}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn events_task_journals_runs_hooks_and_counts() {
        let dir = temp_dir("task");
        let out = dir.join("out");
        let counts = Arc::new(HookCounts::default());
        let (emitter, rx) = channel(Arc::clone(&counts));
        let cmd = format!("read -r line; case \"$PGLB_EVENT\" in fence) exit 1;; esac; echo \"$PGLB_EVENT\" >> {}", out.display());
        let hooks = watch::channel(Some(hook(cmd, Duration::from_secs(10)))).1;
        let task = tokio::spawn(serve(rx, Journal::new(&dir), hooks, Arc::clone(&counts)));
        emitter.emit(event());
        emitter.emit(Event::new(SystemTime::UNIX_EPOCH, EventName::Fence, "lb1", "pg1 fenced").node("pg1"));
        drop(emitter);
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("the task ends with its queue").expect("no panic");
        assert_eq!((counts.runs(HookResult::Ok), counts.runs(HookResult::Failed)), (1, 1));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "switchover\n");
        let read = journal::read(&dir).unwrap();
        assert_eq!(read.events.iter().map(|e| e.event).collect::<Vec<_>>(), [EventName::Switchover, EventName::Fence]);
        assert_eq!(counts.journal_errors(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_reloaded_hook_runs_from_the_next_event() {
        let dir = temp_dir("reload");
        let (old, new) = (dir.join("old"), dir.join("new"));
        let counts = Arc::new(HookCounts::default());
        let (emitter, rx) = channel(Arc::clone(&counts));
        let line = |out: &std::path::Path| format!("cat >/dev/null; echo \"$PGLB_EVENT\" >> {}", out.display());
        let (tx, hooks) = watch::channel(Some(hook(line(&old), Duration::from_secs(10))));
        let task = tokio::spawn(serve(rx, Journal::new(&dir), hooks, Arc::clone(&counts)));
        emitter.emit(event());
        tokio::time::timeout(Duration::from_secs(10), async {
            while counts.runs(HookResult::Ok) < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the first run ends");
        tx.send_replace(Some(hook(line(&new), Duration::from_secs(10))));
        emitter.emit(Event::new(SystemTime::UNIX_EPOCH, EventName::Reload, "lb1", "reloaded"));
        drop(emitter);
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("the task ends with its queue").expect("no panic");
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "switchover\n");
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "reload\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let counts = Arc::new(HookCounts::default());
        let (emitter, _rx) = channel(Arc::clone(&counts)); // nobody takes events
        for _ in 0..QUEUE + 3 {
            emitter.emit(event());
        }
        assert_eq!(counts.runs(HookResult::Dropped), 3);
    }
}
