//! The operator-facing events (a failover, a fence, a VRRP role change, ...): what one is
//! ([`Event`]), how a hook receives it (one JSON object on stdin, `PGLB_*` in the environment),
//! and the journal they are appended to, `<state_dir>/events.jsonl` (JSON lines, rotated once
//! to `events.jsonl.1` past [`JOURNAL_MAX_BYTES`]), which `pglb events` and `/stats` read back.
//!
//! The runtime emits events (`crate::runtime::hooks`); this module does no I/O beyond the
//! journal's files, and reads no clock: every call is given its time.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The journal's file in `state_dir`.
pub const JOURNAL_FILE: &str = "events.jsonl";
/// The rotated journal: the previous [`JOURNAL_FILE`], replaced at each rotation.
pub const JOURNAL_ROTATED: &str = "events.jsonl.1";
/// A journal file is rotated before it would grow past this: at most twice this on disk.
pub const JOURNAL_MAX_BYTES: u64 = 1024 * 1024;

/// What happened. The names are what `PGLB_EVENT` and the JSON's `event` carry.
///
/// `Pause` and `Resume` come with a maintenance record; `Drain`, `Undrain`, `Disable` and
/// `Enable` with a node mark (and `node`); `Reload` names an operator command not built yet:
/// nothing emits it today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    /// An automatic failover finished: `new_writer` is routed.
    Failover,
    /// A newer primary became the writer without this instance's failover (the peer's
    /// failover seen from a backup, or a promotion outside pglb).
    WriterChanged,
    /// A planned switchover finished.
    Switchover,
    /// A planned switchover was refused or aborted.
    SwitchoverFailed,
    /// `node` is fenced: never routed until it rejoins.
    Fence,
    /// `rejoin_command` for `node` succeeded.
    RejoinOk,
    /// `rejoin_command` for `node` failed; it stays fenced.
    RejoinFailed,
    /// This instance became VRRP master (it holds the VIP).
    VrrpMaster,
    /// This instance left VRRP master (it released the VIP).
    VrrpBackup,
    /// SYN flood defence on, and off.
    FloodOn,
    FloodOff,
    Pause,
    Resume,
    Drain,
    Undrain,
    Disable,
    Enable,
    Reload,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Failover => "failover",
            EventName::WriterChanged => "writer_changed",
            EventName::Switchover => "switchover",
            EventName::SwitchoverFailed => "switchover_failed",
            EventName::Fence => "fence",
            EventName::RejoinOk => "rejoin_ok",
            EventName::RejoinFailed => "rejoin_failed",
            EventName::VrrpMaster => "vrrp_master",
            EventName::VrrpBackup => "vrrp_backup",
            EventName::FloodOn => "flood_on",
            EventName::FloodOff => "flood_off",
            EventName::Pause => "pause",
            EventName::Resume => "resume",
            EventName::Drain => "drain",
            EventName::Undrain => "undrain",
            EventName::Disable => "disable",
            EventName::Enable => "enable",
            EventName::Reload => "reload",
        }
    }
}

/// One event, as a hook receives it on stdin and as the journal keeps it (one line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened: RFC 3339 in UTC, milliseconds.
    #[serde(with = "rfc3339_millis")]
    pub at: SystemTime,
    pub event: EventName,
    /// The load balancer that saw it (`[instance] name`).
    pub instance: String,
    /// The node it is about (fence, rejoin, drain, disable and their reverses), if any.
    pub node: Option<String>,
    /// The writer before and after (failover, switchover).
    pub old_writer: Option<String>,
    pub new_writer: Option<String>,
    /// The writer's timeline, when known.
    pub timeline: Option<u32>,
    /// One line for people, as the log and `/stats` say it.
    pub text: String,
    /// A failover an operator made with `pglb failover` (absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// With `manual`: the bytes of WAL the operator accepted to lose; absent when that was not
    /// known (no probe of the lost primary was known to the load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_loss_bytes: Option<u64>,
}

impl Event {
    /// An event with only its name and text; the builders below add the rest.
    pub fn new(at: SystemTime, event: EventName, instance: &str, text: impl Into<String>) -> Self {
        Event {
            at,
            event,
            instance: instance.to_owned(),
            node: None,
            old_writer: None,
            new_writer: None,
            timeline: None,
            text: text.into(),
            manual: false,
            accepted_loss_bytes: None,
        }
    }

    /// A failover made by an operator (`pglb failover`), losing `accepted_loss_bytes` of WAL
    /// (`None`: unknown).
    pub fn manual(mut self, accepted_loss_bytes: Option<u64>) -> Self {
        self.manual = true;
        self.accepted_loss_bytes = accepted_loss_bytes;
        self
    }

    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    pub fn writers(mut self, old: Option<String>, new: Option<String>) -> Self {
        self.old_writer = old;
        self.new_writer = new;
        self
    }

    pub fn timeline(mut self, timeline: Option<u32>) -> Self {
        self.timeline = timeline;
        self
    }

    /// The JSON object, on one line (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }

    /// A hook's environment: each variable set, empty when the event does not say.
    pub fn env(&self) -> [(&'static str, String); 8] {
        let or_empty = |v: &Option<String>| v.clone().unwrap_or_default();
        [
            ("PGLB_EVENT", self.event.as_str().to_owned()),
            ("PGLB_INSTANCE", self.instance.clone()),
            ("PGLB_NODE", or_empty(&self.node)),
            ("PGLB_OLD_WRITER", or_empty(&self.old_writer)),
            ("PGLB_NEW_WRITER", or_empty(&self.new_writer)),
            ("PGLB_TIMELINE", self.timeline.map(|t| t.to_string()).unwrap_or_default()),
            ("PGLB_MANUAL", if self.manual { "true".to_owned() } else { String::new() }),
            ("PGLB_ACCEPTED_LOSS_BYTES", self.accepted_loss_bytes.map(|b| b.to_string()).unwrap_or_default()),
        ]
    }
}

mod rfc3339_millis {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(D::Error::custom)
    }
}

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("cannot read the event journal {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot append to the event journal {}", path.display())]
    Append {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot rotate the event journal {} to {}", from.display(), to.display())]
    Rotate {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The journal's writing end: appends lines, rotating first when one would pass the bound.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
    max_bytes: u64,
}

impl Journal {
    /// The journal in `dir` (`state_dir`), with [`JOURNAL_MAX_BYTES`] per file.
    pub fn new(dir: &Path) -> Self {
        Journal::with_max_bytes(dir, JOURNAL_MAX_BYTES)
    }

    pub fn with_max_bytes(dir: &Path, max_bytes: u64) -> Self {
        Journal { dir: dir.to_owned(), max_bytes }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    /// Appends `event` as one line. The file would pass the bound: it becomes the rotated file
    /// (the older one is replaced) and the line starts a new file.
    pub fn append(&self, event: &Event) -> Result<(), JournalError> {
        let path = self.path();
        let mut line = event.to_json();
        line.push('\n');
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(source) => return Err(JournalError::Append { path, source }),
        };
        if size > 0 && size + line.len() as u64 > self.max_bytes {
            let to = self.dir.join(JOURNAL_ROTATED);
            fs::rename(&path, &to).map_err(|source| JournalError::Rotate { from: path.clone(), to, source })?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(|source| JournalError::Append { path: path.clone(), source })?;
        // One write of the whole line: lines from one writer never interleave.
        file.write_all(line.as_bytes()).map_err(|source| JournalError::Append { path, source })
    }
}

/// What the journal's files hold, oldest first.
#[derive(Debug, Default)]
pub struct Read {
    pub events: Vec<Event>,
    /// Lines that are not an event (a torn last line after a crash, a foreign line).
    pub skipped: usize,
}

/// Reads the rotated file, then the current one, from `dir`; a missing file is empty.
pub fn read(dir: &Path) -> Result<Read, JournalError> {
    let mut out = Read::default();
    for name in [JOURNAL_ROTATED, JOURNAL_FILE] {
        let path = dir.join(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(JournalError::Read { path, source }),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Event>(line) {
                Ok(e) => out.events.push(e),
                Err(_) => out.skipped += 1,
            }
        }
    }
    Ok(out)
}

/// The events at or after `since` (all without it), in the journal's order.
pub fn since(events: &[Event], since: Option<SystemTime>) -> impl Iterator<Item = &Event> {
    events.iter().filter(move |e| since.is_none_or(|t| e.at >= t))
}

/// One event as a line of `pglb events`: time, instance, event name, text.
pub fn render_line(e: &Event) -> String {
    format!("{}  {}  {:<17}  {}", humantime::format_rfc3339_millis(e.at), e.instance, e.event.as_str(), e.text)
}

/// `--since`: RFC 3339 (`2026-12-07T21:00:00Z`) or a duration before `now` (`10m`, `2h 30m`).
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, SinceError> {
    let text = text.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let ago: Duration = humantime::parse_duration(text).map_err(|_| SinceError { text: text.to_owned() })?;
    Ok(now.checked_sub(ago).filter(|t| *t >= SystemTime::UNIX_EPOCH).unwrap_or(SystemTime::UNIX_EPOCH))
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{text:?} is neither an RFC 3339 time (2026-12-07T21:00:00Z) nor a duration ago (10m, 2h)")]
pub struct SinceError {
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + s * 1000 + 250)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pglb-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("a temp dir");
        dir
    }

    fn failover() -> Event {
        Event::new(at(0), EventName::Failover, "lb1", "failover: pg1 -> pg2, the new writer is routed")
            .writers(Some("pg1".into()), Some("pg2".into()))
            .timeline(Some(2))
    }

    #[test]
    fn a_manual_failover_says_so_and_what_it_lost() {
        let e = failover().manual(Some(1280));
        assert!(e.to_json().ends_with(r#""timeline":2,"text":"failover: pg1 -> pg2, the new writer is routed","manual":true,"accepted_loss_bytes":1280}"#), "{}", e.to_json());
        let env = e.env();
        assert_eq!(&env[6..], [("PGLB_MANUAL", "true".to_owned()), ("PGLB_ACCEPTED_LOSS_BYTES", "1280".to_owned())]);
        let back: Event = serde_json::from_str(&e.to_json()).expect("it reads back");
        assert_eq!(back, e);
        assert_eq!(&failover().env()[6..], [("PGLB_MANUAL", String::new()), ("PGLB_ACCEPTED_LOSS_BYTES", String::new())]);
    }

    #[test]
    fn hook_json_and_env_say_the_same_event() {
        let e = failover();
        assert_eq!(
            e.to_json(),
            r#"{"at":"2027-01-15T08:00:00.250Z","event":"failover","instance":"lb1","node":null,"old_writer":"pg1","new_writer":"pg2","timeline":2,"text":"failover: pg1 -> pg2, the new writer is routed"}"#
        );
        let env = e.env();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str()).expect(k);
        assert_eq!(
            [get("PGLB_EVENT"), get("PGLB_INSTANCE"), get("PGLB_NODE"), get("PGLB_OLD_WRITER"), get("PGLB_NEW_WRITER"), get("PGLB_TIMELINE")],
            ["failover", "lb1", "", "pg1", "pg2", "2"]
        );
        let fence = Event::new(at(1), EventName::Fence, "lb2", "pg1 fenced").node("pg1");
        assert_eq!(fence.env()[0].1, "fence");
        assert_eq!(fence.env()[2].1, "pg1");
        assert_eq!(fence.env()[5].1, "", "no timeline: empty, not absent");
        // Every name round-trips through the JSON as its `as_str`.
        for name in [EventName::RejoinFailed, EventName::VrrpBackup, EventName::FloodOff, EventName::WriterChanged, EventName::Reload] {
            let json = Event::new(at(2), name, "lb1", "x").to_json();
            assert!(json.contains(&format!("\"event\":\"{}\"", name.as_str())), "{json}");
            assert_eq!(serde_json::from_str::<Event>(&json).expect("reads back").event, name);
        }
        assert_eq!(serde_json::from_str::<Event>(&e.to_json()).expect("reads back"), e);
    }

    #[test]
    fn journal_rotates_once_past_its_bound_and_reads_back_in_order() {
        let dir = temp_dir("rotate");
        let events: Vec<Event> = (0..8).map(|i| Event::new(at(i), EventName::Fence, "lb1", format!("fence {i}")).node("pg1")).collect();
        let line = events[0].to_json().len() as u64 + 1; // every line has this length
        let journal = Journal::with_max_bytes(&dir, line * 3);
        for e in &events {
            journal.append(e).expect("append");
        }
        // Three lines fill a file: the 4th and the 7th rotate, the second rotation replaces the
        // first rotated file (events 0-2).
        let lines = |name: &str| fs::read_to_string(dir.join(name)).unwrap().lines().count();
        assert_eq!((lines(JOURNAL_ROTATED), lines(JOURNAL_FILE)), (3, 2));
        assert!(!dir.join("events.jsonl.2").exists(), "one rotated file only");
        let read = read(&dir).expect("read");
        assert_eq!(read.skipped, 0);
        let texts: Vec<&str> = read.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["fence 3", "fence 4", "fence 5", "fence 6", "fence 7"], "the newest, oldest first");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn journal_reader_skips_torn_lines_and_missing_files() {
        let dir = temp_dir("torn");
        assert!(read(&dir).expect("no journal yet").events.is_empty());
        let journal = Journal::new(&dir);
        journal.append(&failover()).unwrap();
        let mut f = OpenOptions::new().append(true).open(journal.path()).unwrap();
        f.write_all(b"{\"at\":\"2027-01-15T08:00:01Z\",\"ev").unwrap();
        let read = read(&dir).expect("read");
        assert_eq!((read.events.len(), read.skipped), (1, 1));
        assert_eq!(read.events[0], failover());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_after_since_render_one_line_each() {
        let events: Vec<Event> = (0..3).map(|i| Event::new(at(i * 60), EventName::VrrpMaster, "lb2", format!("became master {i}"))).collect();
        let kept: Vec<&str> = since(&events, Some(at(60))).map(|e| e.text.as_str()).collect();
        assert_eq!(kept, ["became master 1", "became master 2"], "at or after");
        assert_eq!(since(&events, None).count(), 3);
        assert_eq!(render_line(&failover()), "2027-01-15T08:00:00.250Z  lb1  failover           failover: pg1 -> pg2, the new writer is routed");
    }

    #[test]
    fn since_is_a_time_or_a_duration_ago() {
        let now = at(3600);
        assert_eq!(parse_since("10m", now), Ok(now - Duration::from_secs(600)));
        assert_eq!(parse_since("1h 30s", now), Ok(now - Duration::from_secs(3630)));
        assert_eq!(parse_since("2027-01-15T08:00:00Z", now), Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)));
        assert_eq!(parse_since("2027-01-15T08:00:00.250Z", now), Ok(at(0)));
        assert_eq!(parse_since("100000d", now), Ok(SystemTime::UNIX_EPOCH), "before the epoch: everything");
        let err = parse_since("yesterday", now).unwrap_err();
        assert_eq!(err.to_string(), "\"yesterday\" is neither an RFC 3339 time (2026-12-07T21:00:00Z) nor a duration ago (10m, 2h)");
    }
}
