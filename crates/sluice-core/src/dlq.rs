//! Bad-record handling: the `'errors' = 'fail' | 'skip' | 'dlq'` policy every source
//! takes, and the dead letter file that keeps rejected records with their reason.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::options::{OptionSpec, Options};
use crate::{Result, SluiceError};

/// Options every source accepts for bad records.
pub const BAD_RECORD_OPTIONS: [OptionSpec; 2] = [
    OptionSpec::optional(
        "errors",
        "what to do with a record that cannot be decoded: 'fail' (default), 'skip' or 'dlq'",
    ),
    OptionSpec::optional(
        "dlq.path",
        "dead letter file (JSON lines) for 'errors' = 'dlq'; default <data dir>/dlq/<table>.jsonl",
    ),
];

/// What a source does with a record it cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    /// Stop the job with an error naming the record's location and the field.
    Fail,
    /// Drop the record and count it.
    Skip,
    /// Write the raw record and the reason to the dead letter file.
    DeadLetter,
}

/// One rejected record as written to the dead letter file.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    /// When it was rejected (RFC 3339, UTC).
    pub time: String,
    /// The table whose source rejected it.
    pub table: &'a str,
    /// Where it came from: a file path, `stdin`, a topic.
    pub source: &'a str,
    /// Line number (1-based) or offset within `source`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Why it was rejected (`parse`, `late`, ...), with detail.
    pub reason: &'a str,
    /// The raw record, lossily decoded as UTF-8.
    pub raw: String,
}

/// An append-only JSON-lines dead letter file shared by a table's source subtasks.
#[derive(Debug)]
pub struct DeadLetterQueue {
    path: PathBuf,
    writer: Mutex<BufWriter<File>>,
}

impl DeadLetterQueue {
    /// Opens (appending) or creates the dead letter file and its directory.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                SluiceError::io(
                    format!("creating dead letter directory {}", parent.display()),
                    e,
                )
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                SluiceError::io(format!("opening dead letter file {}", path.display()), e)
            })?;
        Ok(DeadLetterQueue {
            path: path.to_path_buf(),
            writer: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Where records go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and flushes it, so nothing is lost if the job dies.
    pub fn write(&self, letter: &DeadLetter<'_>) -> Result<()> {
        let mut line = serde_json::to_vec(letter)
            .map_err(|e| SluiceError::Runtime(format!("encoding dead letter: {e}")))?;
        line.push(b'\n');
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| SluiceError::Runtime("dead letter writer poisoned".into()))?;
        writer
            .write_all(&line)
            .and_then(|_| writer.flush())
            .map_err(|e| SluiceError::io(format!("writing {}", self.path.display()), e))
    }
}

/// Counts of records a source did not emit.
#[derive(Debug, Default)]
pub struct BadRecordCounters {
    /// Records dropped under `'errors' = 'skip'`.
    pub skipped: AtomicU64,
    /// Records written to the dead letter file.
    pub dead_lettered: AtomicU64,
}

/// A table's bad-record policy: mode, dead letter file and counters.
#[derive(Debug, Clone)]
pub struct BadRecordPolicy {
    table: String,
    mode: ErrorMode,
    dlq: Option<Arc<DeadLetterQueue>>,
    counters: Arc<BadRecordCounters>,
    /// Set on a [`BadRecordPolicy::holding`] copy: rejections wait here until
    /// [`BadRecordPolicy::release`].
    held: Option<Arc<Mutex<Vec<HeldRejection>>>>,
}

/// A rejection kept back by a holding policy.
#[derive(Debug)]
struct HeldRejection {
    source: String,
    position: u64,
    raw: Vec<u8>,
    reason: String,
}

impl BadRecordPolicy {
    /// Reads `errors` / `dlq.path` (and the format's own ignore-parse-errors flag,
    /// which maps onto `skip`). `default_dlq_dir` is used when `dlq.path` is absent.
    pub fn from_options(
        table: &str,
        options: &Options,
        ignore_parse_errors: bool,
        default_dlq_dir: &Path,
    ) -> Result<Self> {
        let mode = match options
            .get("errors")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None if ignore_parse_errors => ErrorMode::Skip,
            None | Some("fail") => ErrorMode::Fail,
            Some("skip") => ErrorMode::Skip,
            Some("dlq") => ErrorMode::DeadLetter,
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "{}: option 'errors' must be 'fail', 'skip' or 'dlq', got '{other}'",
                    options.owner()
                )))
            }
        };
        let dlq = if mode == ErrorMode::DeadLetter {
            let path = options
                .get("dlq.path")
                .map(PathBuf::from)
                .unwrap_or_else(|| default_dlq_dir.join(format!("{table}.jsonl")));
            Some(Arc::new(DeadLetterQueue::open(&path)?))
        } else {
            None
        };
        Ok(BadRecordPolicy {
            table: table.to_string(),
            mode,
            dlq,
            counters: Arc::default(),
            held: None,
        })
    }

    /// A policy that fails on the first bad record.
    pub fn fail(table: &str) -> Self {
        BadRecordPolicy {
            table: table.to_string(),
            mode: ErrorMode::Fail,
            dlq: None,
            counters: Arc::default(),
            held: None,
        }
    }

    /// A copy that keeps its rejections back until [`release`](Self::release)
    /// (`fail` still fails at once). A source that decodes ahead of what it
    /// emits uses one per decoder, so records of a chunk that a checkpoint
    /// does not cover reach the dead letter file only once, when emitted.
    pub fn holding(&self) -> Self {
        BadRecordPolicy {
            held: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// Applies the rejections a holding copy kept back, in order.
    pub fn release(&self) -> Result<()> {
        let Some(held) = &self.held else {
            return Ok(());
        };
        let rejections = std::mem::take(
            &mut *held
                .lock()
                .map_err(|_| SluiceError::Runtime("held rejections poisoned".into()))?,
        );
        for rejection in rejections {
            self.apply(
                &rejection.source,
                rejection.position,
                &rejection.raw,
                &rejection.reason,
            )?;
        }
        Ok(())
    }

    /// The configured mode.
    pub fn mode(&self) -> ErrorMode {
        self.mode
    }

    /// The counters, shared by all clones of this policy.
    pub fn counters(&self) -> &Arc<BadRecordCounters> {
        &self.counters
    }

    /// The dead letter file, in `dlq` mode.
    pub fn dead_letter_path(&self) -> Option<&Path> {
        self.dlq.as_deref().map(DeadLetterQueue::path)
    }

    /// Applies the policy to one bad record: returns an error in `fail` mode,
    /// otherwise counts it (and writes it to the dead letter file in `dlq` mode).
    /// A holding copy keeps the record until [`release`](Self::release).
    pub fn reject(&self, source: &str, position: u64, raw: &[u8], reason: &str) -> Result<()> {
        match &self.held {
            Some(held) if self.mode != ErrorMode::Fail => {
                held.lock()
                    .map_err(|_| SluiceError::Runtime("held rejections poisoned".into()))?
                    .push(HeldRejection {
                        source: source.to_string(),
                        position,
                        raw: raw.to_vec(),
                        reason: reason.to_string(),
                    });
                Ok(())
            }
            _ => self.apply(source, position, raw, reason),
        }
    }

    fn apply(&self, source: &str, position: u64, raw: &[u8], reason: &str) -> Result<()> {
        match self.mode {
            ErrorMode::Fail => Err(SluiceError::Format(format!(
                "table `{}`: bad record at {source}:{position}: {reason} (set 'errors' = 'skip' or 'dlq' to keep going)",
                self.table
            ))),
            ErrorMode::Skip => {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            ErrorMode::DeadLetter => {
                if let Some(dlq) = &self.dlq {
                    dlq.write(&DeadLetter {
                        time: chrono::Utc::now().to_rfc3339(),
                        table: &self.table,
                        source,
                        position: Some(position),
                        reason,
                        raw: String::from_utf8_lossy(raw).into_owned(),
                    })?;
                }
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        let values: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::new("table `t`", values)
    }

    /// A `dlq` policy writing to a fresh file: (its directory, the file, the policy).
    fn dead_letter_policy(tag: &str) -> (PathBuf, PathBuf, BadRecordPolicy) {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let path = dir.join("bad.jsonl");
        let policy = BadRecordPolicy::from_options(
            "t",
            &opts(&[("errors", "dlq"), ("dlq.path", path.to_str().unwrap())]),
            false,
            &dir,
        )
        .unwrap();
        (dir, path, policy)
    }

    #[test]
    fn dlq_mode_writes_raw_record_and_reason() {
        let (dir, path, policy) = dead_letter_policy("sluice-dlq-test");
        policy
            .reject("in.json", 7, b"{oops", "parse: expected value")
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let letter: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(letter["raw"], "{oops");
        assert_eq!(letter["position"], 7);
        assert_eq!(letter["reason"], "parse: expected value");
        assert_eq!(policy.counters().dead_lettered.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_holding_policy_writes_only_when_released() {
        let (dir, path, policy) = dead_letter_policy("sluice-dlq-hold");
        let holding = policy.holding();
        holding.reject("in.json", 3, b"{a", "first").unwrap();
        holding.reject("in.json", 9, b"{b", "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert_eq!(policy.counters().dead_lettered.load(Ordering::Relaxed), 0);
        holding.release().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let positions: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["position"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(positions, [3, 9]);
        assert_eq!(policy.counters().dead_lettered.load(Ordering::Relaxed), 2);
        // Released once: a second release writes nothing more.
        holding.release().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        // `fail` does not wait.
        assert!(BadRecordPolicy::fail("t")
            .holding()
            .reject("in.json", 1, b"x", "bad")
            .is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn fail_mode_names_location() {
        let policy = BadRecordPolicy::fail("t");
        let err = policy
            .reject("in.json", 3, b"x", "bad field 'a'")
            .unwrap_err();
        assert!(err.to_string().contains("in.json:3"), "{err}");
    }

    #[test]
    fn ignore_parse_errors_maps_to_skip() {
        let policy =
            BadRecordPolicy::from_options("t", &opts(&[]), true, Path::new("/tmp")).unwrap();
        assert_eq!(policy.mode(), ErrorMode::Skip);
        let bad = BadRecordPolicy::from_options(
            "t",
            &opts(&[("errors", "maybe")]),
            false,
            Path::new("/tmp"),
        );
        assert!(bad.is_err());
    }
}
