//! A named stream: its partitions, and appending, reading and waiting.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::frame::{frame_len, MAX_RECORD_BYTES};
use crate::log::LogInner;
use crate::partition::Partition;
use crate::sync::SyncShared;
use crate::{sync_dir, Record, StoredRecord, StreamInfo};

/// File name of a stream's metadata.
const META_FILE: &str = "stream.json";

/// `<root>/<name>/stream.json`.
#[derive(Debug, Serialize, Deserialize)]
struct StreamMeta {
    partitions: u32,
}

/// What every stream of a log shares.
#[derive(Debug, Clone)]
pub(crate) struct LogContext {
    pub root: PathBuf,
    pub segment_bytes: u64,
    /// Group commit, with [`crate::FsyncPolicy::Interval`].
    pub sync: Option<Arc<SyncShared>>,
}

/// A stream of a [`crate::StreamLog`]: cheap to clone. A handle keeps its
/// log open (directory lock, sync thread) while it lives; appends fail once
/// the stream is deleted.
#[derive(Clone)]
pub struct Stream {
    inner: Arc<StreamState>,
    _log: Arc<LogInner>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.inner.name)
            .field("partitions", &self.inner.partitions.len())
            .finish()
    }
}

/// A stream's partitions, as the log keeps them.
#[derive(Debug)]
pub(crate) struct StreamState {
    name: String,
    partitions: Vec<Arc<Partition>>,
    context: LogContext,
    deleted: AtomicBool,
}

impl StreamState {
    /// Creates the directory, partitions and metadata of a new stream.
    pub fn create(context: &LogContext, name: &str, partitions: u32) -> Result<Arc<Self>> {
        let dir = context.root.join(name);
        let created = (0..partitions)
            .map(|p| Partition::create(dir.join(p.to_string()), p).map(Arc::new))
            .collect::<Result<Vec<_>>>()
            .and_then(|parts| {
                write_meta(&dir, partitions)?;
                sync_dir(&context.root)?;
                Ok(parts)
            });
        match created {
            Ok(parts) => Ok(StreamState::assemble(context, name, parts)),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(error)
            }
        }
    }

    /// Opens the stream in `<root>/<name>`; `None` when it has no metadata
    /// (a creation that did not finish).
    pub fn open(context: &LogContext, name: &str) -> Result<Option<Arc<Self>>> {
        let dir = context.root.join(name);
        let Some(count) = read_meta(&dir)? else {
            return Ok(None);
        };
        let parts = (0..count)
            .map(|p| Partition::open(dir.join(p.to_string()), p).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(StreamState::assemble(context, name, parts)))
    }

    fn assemble(context: &LogContext, name: &str, partitions: Vec<Arc<Partition>>) -> Arc<Self> {
        Arc::new(StreamState {
            name: name.to_string(),
            partitions,
            context: context.clone(),
            deleted: AtomicBool::new(false),
        })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Marks the stream deleted: appends through any handle fail.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Offsets and sizes of every partition.
    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            name: self.name.clone(),
            partitions: self.partitions.iter().map(|p| p.info()).collect(),
        }
    }

    /// Applies `retention` to every partition; returns the bytes removed.
    pub fn enforce_retention(&self, retention: &crate::Retention, now_ms: i64) -> Result<u64> {
        let mut bytes = 0;
        for partition in &self.partitions {
            bytes += partition.enforce_retention(retention, now_ms)?;
        }
        Ok(bytes)
    }
}

impl Stream {
    /// A handle on `state` that keeps `log` open.
    pub(crate) fn new(state: Arc<StreamState>, log: Arc<LogInner>) -> Self {
        Stream {
            inner: state,
            _log: log,
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    /// Whether the stream was deleted from its log.
    pub fn is_deleted(&self) -> bool {
        self.inner.deleted.load(Ordering::Acquire)
    }

    /// The partition of a record key: xxHash64 (seed 0) of the key bytes,
    /// modulo the partition count. Stable across versions and processes.
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        partition_for_key(key, self.partitions())
    }

    fn partition(&self, partition: u32) -> Result<&Arc<Partition>> {
        self.inner
            .partitions
            .get(partition as usize)
            .ok_or_else(|| LogError::NoSuchPartition {
                stream: self.inner.name.clone(),
                partition,
                partitions: self.partitions(),
            })
    }

    /// Appends `records` to `partition` and returns their offsets, once they
    /// are durable by the log's [`crate::FsyncPolicy`]: `EveryBatch` writes
    /// and syncs before returning; `Interval` writes at once (readers see
    /// the records) and returns after the next periodic sync. Appends to one
    /// partition are serialized, to different partitions run in parallel.
    /// When an append fails after rolling a segment, the records before the
    /// roll may be stored.
    pub async fn append(&self, partition: u32, records: Vec<Record>) -> Result<Range<u64>> {
        let part = Arc::clone(self.partition(partition)?);
        if self.is_deleted() {
            return Err(LogError::StreamDeleted(self.inner.name.clone()));
        }
        let context = &self.inner.context;
        if records.is_empty() {
            let end = part.end_offset();
            return Ok(end..end);
        }
        if let Some(record) = records.iter().find(|r| frame_len(r) > MAX_RECORD_BYTES) {
            return Err(LogError::RecordTooLarge {
                stream: self.inner.name.clone(),
                bytes: record.key.as_ref().map_or(0, |k| k.len() as u64)
                    + record.value.len() as u64,
                max: MAX_RECORD_BYTES,
            });
        }
        let segment_bytes = context.segment_bytes;
        let sync_now = context.sync.is_none();
        let appended =
            tokio::task::spawn_blocking(move || part.append(&records, segment_bytes, sync_now))
                .await
                .map_err(|e| LogError::Failed(format!("the append task ended: {e}")))??;
        if let (Some(sync), Some((path, file))) = (&context.sync, &appended.unsynced) {
            let target = sync.register(path, file)?;
            sync.wait(target).await?;
        }
        Ok(appended.offsets)
    }

    /// Up to `max_records` records of `partition` with offsets from `from`
    /// (from the start offset when retention removed `from`: the gap shows
    /// in the offsets). Returns what is written, durable or not yet.
    pub fn read(&self, partition: u32, from: u64, max_records: usize) -> Result<Vec<StoredRecord>> {
        self.partition(partition)?.read(from, max_records)
    }

    /// Waits until `partition` holds a record at `offset` (its end offset is
    /// past it), at most `timeout`. False on timeout or a bad partition.
    pub async fn wait_for(&self, partition: u32, offset: u64, timeout: Duration) -> bool {
        let Ok(part) = self.partition(partition) else {
            return false;
        };
        let mut end = part.subscribe();
        let reached = tokio::time::timeout(timeout, end.wait_for(|end| *end > offset))
            .await
            .is_ok_and(|seen| seen.is_ok());
        reached
    }

    /// The first offset still stored in `partition` (0 for a bad partition).
    pub fn start_offset(&self, partition: u32) -> u64 {
        self.partition(partition).map_or(0, |p| p.start_offset())
    }

    /// The offset the next record of `partition` gets (0 for a bad partition).
    pub fn end_offset(&self, partition: u32) -> u64 {
        self.partition(partition).map_or(0, |p| p.end_offset())
    }

    /// Offsets and sizes of every partition.
    pub fn info(&self) -> StreamInfo {
        self.inner.info()
    }
}

/// xxHash64 (seed 0) of `key` modulo `partitions` (at least 1).
pub(crate) fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (twox_hash::XxHash64::oneshot(0, key) % u64::from(partitions.max(1))) as u32
}

/// Writes `stream.json` atomically (temporary file, sync, rename).
fn write_meta(dir: &Path, partitions: u32) -> Result<()> {
    let path = dir.join(META_FILE);
    let temporary = dir.join(format!("{META_FILE}.tmp"));
    let text = serde_json::to_vec(&StreamMeta { partitions })
        .map_err(|e| LogError::Failed(format!("encoding stream metadata: {e}")))?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()
    };
    write().map_err(|e| LogError::io(&temporary, e))?;
    std::fs::rename(&temporary, &path).map_err(|e| LogError::io(&path, e))?;
    sync_dir(dir)
}

/// Reads the partition count from `stream.json`, `None` when it is missing.
fn read_meta(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join(META_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    let meta: StreamMeta = serde_json::from_slice(&text).map_err(|e| LogError::Corrupt {
        path: path.clone(),
        position: 0,
        reason: format!("not a stream description: {e}"),
    })?;
    if meta.partitions == 0 {
        return Err(LogError::Corrupt {
            path,
            position: 0,
            reason: "a stream needs at least one partition".into(),
        });
    }
    Ok(Some(meta.partitions))
}
