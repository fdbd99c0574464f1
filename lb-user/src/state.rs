//! The state file: what the failover machine must not forget across a restart ([`Durable`]:
//! fences, the last writer, the highest timeline, a promotion in flight, the newest pause or
//! resume, the node marks), kept as JSON in `<state_dir>/state.json`. A file written before a
//! field existed still loads (`maintenance` and `marks` are optional).
//!
//! Writes are atomic and durable: the new content goes to `state.json.tmp`, which is fsynced,
//! renamed over `state.json`, and the directory fsynced, so a crash leaves either the old file
//! or the new one, never a torn one. A file that exists but cannot be read or parsed stops the
//! daemon: starting without the fences it holds could route writes to a stale primary.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::failover::Durable;

/// The file name inside the state directory.
pub const FILE_NAME: &str = "state.json";
/// The format version written in every file; a file of another version is refused.
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the state file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the state file {} is not valid (move it away only if you know every fence in it is obsolete)", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the state file {} has version {found}, this pglb reads version {VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("cannot {op} the state file {}", path.display())]
    Write {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The file's layout: a version and the machine's durable state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File1 {
    version: u32,
    #[serde(flatten)]
    state: Durable,
}

/// The state file of one instance.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateFile { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Reads the state; `Ok(None)` when there is no file yet (a first start).
    pub fn load(&self) -> Result<Option<Durable>, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let file: File1 = serde_json::from_str(&text).map_err(|source| StateError::Parse { path: path.clone(), source })?;
        if file.version != VERSION {
            return Err(StateError::Version { path, found: file.version });
        }
        Ok(Some(file.state))
    }

    /// Writes `state` atomically (tmp file, fsync, rename, fsync of the directory), creating
    /// the directory (mode 0700) if needed.
    pub fn store(&self, state: &Durable) -> Result<(), StateError> {
        if !self.dir.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|source| StateError::CreateDir { path: self.dir.clone(), source })?;
        }
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut text = serde_json::to_string_pretty(&File1 { version: VERSION, state: state.clone() }).expect("the state serializes");
        text.push('\n');
        let write = |op: &'static str, p: &Path| {
            let p = p.to_owned();
            move |source| StateError::Write { op, path: p, source }
        };
        let mut f = File::create(&tmp).map_err(write("create", &tmp))?;
        f.write_all(text.as_bytes()).map_err(write("write", &tmp))?;
        f.sync_all().map_err(write("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(write("rename", &path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(write("fsync the directory of", &path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::{DurableFence, DurablePromotion, Maintenance, MarkKind, NodeMark};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pglb-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip_and_first_start() {
        let dir = scratch("rt");
        let f = StateFile::new(dir.join("lb1"));
        assert!(f.load().expect("no file is no error").is_none(), "a first start has no state");
        let state = Durable {
            writer: Some("pg2".into()),
            timeline: 3,
            fences: vec![DurableFence { node: "pg1".into(), reason: "replaced".into(), timeline: 2, writer: Some("pg2".into()) }],
            promoting: Some(DurablePromotion { node: "pg3".into(), from_timeline: 3 }),
            maintenance: Some(Maintenance {
                paused: true,
                at_ms: 1_796_000_000_000,
                by: "lb1".into(),
                reason: Some("shared_buffers".into()),
                until_ms: Some(1_796_000_600_000),
            }),
            marks: vec![
                NodeMark { node: "pg2".into(), kind: MarkKind::Drain, on: true, at_ms: 1_796_000_000_100, by: "lb2".into() },
                NodeMark { node: "pg3".into(), kind: MarkKind::Disable, on: false, at_ms: 1_796_000_000_200, by: "lb1".into() },
            ],
        };
        f.store(&state).expect("stores");
        assert_eq!(f.load().expect("loads"), Some(state.clone()), "what was stored comes back");
        assert!(!dir.join("lb1/state.json.tmp").exists(), "the temporary file is renamed away");
        let text = fs::read_to_string(f.path()).unwrap();
        assert!(text.contains("\"version\": 1"), "the file says its version: {text}");
        // Overwrite with less.
        f.store(&Durable::default()).expect("stores again");
        assert_eq!(f.load().expect("loads"), Some(Durable::default()));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A file written before maintenance mode has no `maintenance`: it loads, not paused.
    #[test]
    fn a_file_from_before_maintenance_mode_loads() {
        let dir = scratch("old");
        fs::create_dir_all(&dir).unwrap();
        let f = StateFile::new(&dir);
        let text = r#"{"version": 1, "writer": "pg1", "timeline": 2, "fences": [], "promoting": null}"#;
        fs::write(f.path(), text).unwrap();
        let want = Durable { writer: Some("pg1".into()), timeline: 2, ..Durable::default() };
        assert_eq!(f.load().expect("an old file loads"), Some(want));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_are_refused_not_ignored() {
        let dir = scratch("bad");
        fs::create_dir_all(&dir).unwrap();
        let f = StateFile::new(&dir);
        for (text, want) in [
            ("{", "not valid"),
            (r#"{"version": 1, "writer": null, "timeline": 1, "fences": [], "promoting": null, "extra": 1}"#, "not valid"),
            (r#"{"version": 2, "writer": null, "timeline": 1, "fences": [], "promoting": null}"#, "has version 2"),
        ] {
            fs::write(f.path(), text).unwrap();
            let e = f.load().expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
