//! An embedded, durable, partitioned log for `sluice serve`.
//!
//! A [`StreamLog`] is a root directory of named streams; each [`Stream`] has
//! a fixed number of partitions; each partition is a sequence of segment
//! files `<base offset, 20 digits>.log` holding checksummed record frames
//! (see `frame.rs` for the layout). Offsets are per partition and dense from
//! 0. On open, the last segment of every partition is scanned and a torn or
//! corrupt tail is cut off (with a warning naming the file and position);
//! older segments are checked when first read, and a bad frame there makes
//! reads fail with [`LogError::Corrupt`]. Layout:
//!
//! ```text
//! <root>/.lock                          exclusive lock of the process using the log
//! <root>/<stream>/stream.json           {"partitions":N}
//! <root>/<stream>/<partition>/<base>.log
//! ```

mod error;
mod frame;
mod log;
mod partition;
mod segment;
mod stream;
mod sync;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde::Serialize;

pub use error::{LogError, Result};
pub use log::StreamLog;
pub use stream::Stream;

/// How the log is opened.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// When appended records are synced to disk.
    pub fsync: FsyncPolicy,
    /// Roll to a new segment file once the active one would exceed this size.
    pub segment_bytes: u64,
    /// What [`StreamLog::enforce_retention`] removes.
    pub retention: Retention,
    /// Partitions of streams made by [`StreamLog::get_or_create`].
    pub default_partitions: u32,
}

impl Default for LogConfig {
    /// Sync every append, 64 MiB segments, keep everything, one partition.
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::EveryBatch,
            segment_bytes: 64 * 1024 * 1024,
            retention: Retention::default(),
            default_partitions: 1,
        }
    }
}

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is written and `fdatasync`ed before it returns.
    EveryBatch,
    /// Group commit: appends are written at once and return after the next
    /// periodic sync (every this long) that covers them.
    Interval(Duration),
}

/// How much of each partition to keep (both limits apply; `None` = no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Bytes per partition.
    pub max_bytes: Option<u64>,
    /// Age of the newest record of a segment, by record timestamp.
    pub max_age: Option<Duration>,
}

/// A record to append. Keys and values are owned byte vectors (`Vec<u8>`):
/// the log copies them into its frame buffer, and reads hand out new ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the epoch (the writer's choice, e.g. append time).
    pub timestamp_ms: i64,
    /// Optional key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Vec<u8>,
}

impl Record {
    /// A record without key.
    pub fn new(timestamp_ms: i64, value: impl Into<Vec<u8>>) -> Self {
        Record {
            timestamp_ms,
            key: None,
            value: value.into(),
        }
    }

    /// The same record with `key`.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// A record read back, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Offset within its partition.
    pub offset: u64,
    /// The record.
    pub record: Record,
}

/// A stream's partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// One entry per partition, in order.
    pub partitions: Vec<PartitionInfo>,
}

/// Offsets and size of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset of the next record appended.
    pub end_offset: u64,
    /// Bytes of its segment files.
    pub bytes: u64,
}

/// Checks a stream name: 1 to 200 characters of `[A-Za-z0-9._-]`, not
/// starting with `.` (reserved for the log's own files).
pub fn validate_stream_name(name: &str) -> Result<()> {
    let valid = (1..=200).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(LogError::InvalidName(name.to_string()))
    }
}

/// Syncs a directory, so new or renamed entries in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every
/// critical section either completes or leaves a recorded failure).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn lock_read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn lock_write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
