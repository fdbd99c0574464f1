//! Forwards the XDP program's own log records into the daemon's log.
//!
//! The program logs rare events only, never on its per-packet fast path: a refused flow-table
//! insert and NAT port exhaustion at warn, stale-writer resets at debug (lb-ebpf's `//!` doc).
//! aya-log-ebpf writes each record into the object's `AYA_LOGS` ring buffer; [`EbpfLogger`]
//! (aya-log) reads them and hands them to the `log` crate's global logger, which
//! `tracing_subscriber::fmt().init()` (its `tracing-log` feature) made a bridge into tracing: they
//! come out with the daemon's own lines, target `lb_ebpf`, prefixed `xdp:`.
//!
//! - Level: the program is loaded with its `AYA_LOG_LEVEL` set from `log::max_level()` (the
//!   subscriber's most verbose level, `PGLB_LOG`), so a record the daemon would discard is not
//!   even written: at the default `info`, stale-writer resets (debug) cost nothing.
//! - Polling: [`KernelLog::forward`] moves the reader into a tokio task that waits on the ring
//!   buffer's fd with `AsyncFd` and drains it whenever it is readable. Without an async runtime
//!   (tests), [`KernelLog::flush`] drains it on demand.
//! - Restart in place (SIGUSR2): the old process exits, its program keeps running behind the
//!   pinned link and keeps writing into its own ring buffer, which nobody reads for the moment.
//!   The ring buffer is not pinned: the next `pglb run` loads a fresh object with a fresh ring
//!   buffer and reads that one once its program has replaced the old one behind the link. The
//!   records the old program wrote in between are not lost either: [`ReplacedLog`] opens the old
//!   program's ring buffer by program id before the replacement and drains it once after.

use aya::{Ebpf, programs::links::FdLink};
use aya_log::EbpfLogger;
use tokio::{io::unix::AsyncFd, task::JoinHandle};

use super::DataplaneError;

/// The reader of this instance's `AYA_LOGS` ring buffer, records going to the global `log`
/// logger.
type Reader = EbpfLogger<&'static dyn log::Log>;

/// The `AYA_LOG_LEVEL` to load the program with: the most verbose level the `log` crate lets
/// through (`aya_log::Level` numbers the levels as `log` does: error 1 ... trace 5; 0 is off).
pub(super) fn program_level() -> u8 {
    match log::max_level().to_level() {
        None => 0,
        Some(log::Level::Error) => aya_log::Level::Error.into(),
        Some(log::Level::Warn) => aya_log::Level::Warn.into(),
        Some(log::Level::Info) => aya_log::Level::Info.into(),
        Some(log::Level::Debug) => aya_log::Level::Debug.into(),
        Some(log::Level::Trace) => aya_log::Level::Trace.into(),
    }
}

/// The program's log, read here or by a task.
pub(super) struct KernelLog {
    /// Read on demand by [`KernelLog::flush`] until [`KernelLog::forward`] hands it to a task.
    reader: Option<Reader>,
    /// Reads as records arrive; aborted when this is dropped.
    task: Option<JoinHandle<()>>,
}

impl KernelLog {
    /// Takes the `AYA_LOGS` map out of `ebpf`. Call it after the programs are loaded: they
    /// were loaded with the map's fd, which closes with the reader.
    pub(super) fn open(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let reader = EbpfLogger::init(ebpf).map_err(|source| DataplaneError::KernelLog { source: Box::new(source) })?;
        Ok(Self { reader: Some(reader), task: None })
    }

    /// Hands the reader to a task on the current tokio runtime that forwards records as they
    /// arrive. Outside a runtime the reader stays here (see [`KernelLog::flush`]).
    pub(super) fn forward(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no async runtime: the XDP program's log is read only when flushed");
            return;
        };
        let Some(reader) = self.reader.take() else { return };
        // SAFETY: the fd is the ring buffer map's, owned by the reader (an `OwnedFd` inside its
        // `MapData`), so it stays open and the same for as long as the AsyncFd owns the reader.
        match unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) } {
            Ok(fd) => self.task = Some(runtime.spawn(forward(fd))),
            Err(error) => {
                let (_, error) = error.into_parts();
                tracing::warn!(%error, "xdp log: cannot poll the ring buffer; the XDP program's log records are not forwarded");
            }
        }
    }

    /// Forwards every record the program wrote since the last flush, now. A no-op once a task
    /// forwards them.
    pub(super) fn flush(&mut self) {
        if let Some(reader) = &mut self.reader {
            reader.flush();
        }
    }
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Waits for the ring buffer to become readable and drains it, for as long as the data plane
/// lives.
async fn forward(mut fd: AsyncFd<Reader>) {
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(guard) => guard,
            Err(error) => {
                tracing::warn!(%error, "xdp log: waiting on the ring buffer failed; the XDP program's log records are no longer forwarded");
                return;
            }
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// The log of the program a restart is about to replace behind the pinned link.
pub(super) struct ReplacedLog {
    reader: Reader,
}

impl ReplacedLog {
    /// Opens the ring buffer of the program behind `link`, by the program's id; `None` (with a
    /// debug line) when that fails, e.g. when an older pglb without a log attached it. Call it
    /// before the replacement: the old program is unloaded with it, and only this reader keeps
    /// its ring buffer.
    pub(super) fn open(link: &FdLink) -> Option<Self> {
        let program_id = match link.info() {
            Ok(info) => info.program_id(),
            Err(error) => {
                tracing::debug!(%error, "the pinned XDP link's program is unknown; what it logged since the last daemon exited is not forwarded");
                return None;
            }
        };
        match EbpfLogger::init_from_id(program_id) {
            Ok(reader) => Some(Self { reader }),
            Err(error) => {
                tracing::debug!(%error, program_id, "the replaced XDP program's log cannot be opened; what it logged since the last daemon exited is not forwarded");
                None
            }
        }
    }

    /// Forwards what the old program logged while no daemon read its log, then closes it.
    pub(super) fn drain(mut self) {
        self.reader.flush();
    }
}
