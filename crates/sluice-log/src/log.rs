//! The log: a root directory of named streams, locked against other processes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{LogError, Result};
use crate::stream::{LogContext, Stream, StreamState};
use crate::sync::SyncShared;
use crate::{lock, sync_dir, validate_stream_name, FsyncPolicy, LogConfig, StreamInfo};

/// Prefix of stream directories being deleted.
const DELETED_PREFIX: &str = ".deleted-";

/// Logs opened with [`StreamLog::open_shared`], by canonical root.
static SHARED: Mutex<BTreeMap<PathBuf, Weak<LogInner>>> = Mutex::new(BTreeMap::new());

/// A set of named streams under a root directory. Cheap to clone; the
/// directory stays locked against other processes until every clone (and
/// every [`Stream`] handle) is dropped.
#[derive(Debug, Clone)]
pub struct StreamLog {
    inner: Arc<LogInner>,
}

#[derive(Debug)]
pub(crate) struct LogInner {
    context: LogContext,
    config: LogConfig,
    streams: Mutex<BTreeMap<String, Arc<StreamState>>>,
    /// Serializes retention runs.
    retention: Mutex<()>,
    /// The periodic sync thread, with [`FsyncPolicy::Interval`].
    syncer: Mutex<Option<JoinHandle<()>>>,
    /// Holds the exclusive lock on `<root>/.lock`.
    _lock: File,
}

impl Drop for LogInner {
    fn drop(&mut self) {
        if let Some(sync) = &self.context.sync {
            sync.close();
        }
        if let Some(thread) = lock(&self.syncer).take() {
            let _ = thread.join();
        }
    }
}

impl StreamLog {
    /// Opens (creating it if needed) the log in `root`, recovering every
    /// stream. Fails with [`LogError::Locked`] when another process (or
    /// another `open` in this one) has it open.
    pub fn open(root: &Path, config: LogConfig) -> Result<StreamLog> {
        let root = canonical_root(root)?;
        let lock_path = root.join(".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io(&lock_path, e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LogError::Locked(root)),
            Err(TryLockError::Error(e)) => return Err(LogError::io(&lock_path, e)),
        }
        let (sync, syncer) = match config.fsync {
            FsyncPolicy::EveryBatch => (None, None),
            FsyncPolicy::Interval(interval) => {
                let (sync, thread) = SyncShared::start(root.clone(), interval)?;
                (Some(sync), Some(thread))
            }
        };
        let context = LogContext {
            root: root.clone(),
            segment_bytes: config.segment_bytes,
            sync,
        };
        let inner = LogInner {
            streams: Mutex::new(BTreeMap::new()),
            retention: Mutex::new(()),
            syncer: Mutex::new(syncer),
            _lock: lock_file,
            context,
            config,
        };
        // From here on, dropping `inner` stops the sync thread.
        let streams = load_streams(&inner.context)?;
        *lock(&inner.streams) = streams;
        Ok(StreamLog {
            inner: Arc::new(inner),
        })
    }

    /// Like [`StreamLog::open`], but one instance per directory in this
    /// process: a second call for the same directory (by canonical path)
    /// returns the log the first opened, with the first call's config.
    pub fn open_shared(root: &Path, config: LogConfig) -> Result<StreamLog> {
        let root = canonical_root(root)?;
        let mut shared = lock(&SHARED);
        if let Some(inner) = shared.get(&root).and_then(Weak::upgrade) {
            return Ok(StreamLog { inner });
        }
        // A log just dropped may still be closing (final sync) and hold the lock.
        let closing = shared.contains_key(&root);
        let mut attempts = 0;
        let log = loop {
            match StreamLog::open(&root, config.clone()) {
                Err(LogError::Locked(_)) if closing && attempts < 500 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        shared.retain(|_, weak| weak.strong_count() > 0);
        shared.insert(root, Arc::downgrade(&log.inner));
        Ok(log)
    }

    /// The log's directory (canonical).
    pub fn root(&self) -> &Path {
        &self.inner.context.root
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Creates a stream with `partitions` partitions, or returns it when it
    /// exists with that many (a different count is an error).
    pub fn create_stream(&self, name: &str, partitions: u32) -> Result<Stream> {
        validate_stream_name(name)?;
        let mut streams = lock(&self.inner.streams);
        if let Some(stream) = streams.get(name) {
            if stream.partitions() == partitions {
                return Ok(self.handle(stream));
            }
            return Err(LogError::PartitionMismatch {
                stream: name.to_string(),
                existing: stream.partitions(),
                requested: partitions,
            });
        }
        self.create_locked(&mut streams, name, partitions)
    }

    fn handle(&self, state: &Arc<StreamState>) -> Stream {
        Stream::new(Arc::clone(state), Arc::clone(&self.inner))
    }

    fn create_locked(
        &self,
        streams: &mut BTreeMap<String, Arc<StreamState>>,
        name: &str,
        partitions: u32,
    ) -> Result<Stream> {
        if partitions == 0 {
            return Err(LogError::InvalidPartitionCount {
                stream: name.to_string(),
                partitions,
            });
        }
        let dir = self.root().join(name);
        // Left over from a creation that did not finish.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        }
        let state = StreamState::create(&self.inner.context, name, partitions)?;
        streams.insert(name.to_string(), Arc::clone(&state));
        Ok(self.handle(&state))
    }

    /// The stream called `name`, if it exists.
    pub fn stream(&self, name: &str) -> Option<Stream> {
        lock(&self.inner.streams)
            .get(name)
            .map(|state| self.handle(state))
    }

    /// The stream called `name`, created with the configured default
    /// partition count when it does not exist.
    pub fn get_or_create(&self, name: &str) -> Result<Stream> {
        validate_stream_name(name)?;
        let mut streams = lock(&self.inner.streams);
        if let Some(stream) = streams.get(name) {
            return Ok(self.handle(stream));
        }
        self.create_locked(&mut streams, name, self.inner.config.default_partitions)
    }

    /// Every stream, sorted by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let streams: Vec<Arc<StreamState>> = lock(&self.inner.streams).values().cloned().collect();
        streams.iter().map(|s| s.info()).collect()
    }

    /// Deletes a stream and its files; false when there is none. Handles of
    /// it fail to append from then on.
    pub fn delete_stream(&self, name: &str) -> Result<bool> {
        let mut streams = lock(&self.inner.streams);
        let Some(stream) = streams.remove(name) else {
            return Ok(false);
        };
        stream.mark_deleted();
        let root = self.root();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tomb = root.join(format!("{DELETED_PREFIX}{name}-{nanos}"));
        let dir = root.join(name);
        std::fs::rename(&dir, &tomb).map_err(|e| LogError::io(&dir, e))?;
        sync_dir(root)?;
        if let Err(error) = std::fs::remove_dir_all(&tomb) {
            tracing::warn!(dir = %tomb.display(), %error, "stream log: could not remove a deleted stream's files; they go at the next open");
        }
        Ok(true)
    }

    /// Removes the oldest whole segments that the configured retention no
    /// longer keeps, per partition; never a partition's active segment. By
    /// size: while the partition holds more than `max_bytes`. By age: while
    /// the newest timestamp in the oldest segment is older than now minus
    /// `max_age`. Returns the bytes removed.
    pub fn enforce_retention(&self) -> Result<u64> {
        let retention = self.inner.config.retention;
        if retention.max_bytes.is_none() && retention.max_age.is_none() {
            return Ok(0);
        }
        let _running = lock(&self.inner.retention);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let streams: Vec<Arc<StreamState>> = lock(&self.inner.streams).values().cloned().collect();
        let mut bytes = 0;
        for stream in streams {
            bytes += stream.enforce_retention(&retention, now_ms)?;
        }
        Ok(bytes)
    }

    /// Syncs everything written so far now, releasing the appends waiting
    /// for it (with [`FsyncPolicy::Interval`]; with `EveryBatch` there is
    /// nothing to do).
    pub fn sync(&self) -> Result<()> {
        match &self.inner.context.sync {
            Some(sync) => sync.sync_now(),
            None => Ok(()),
        }
    }
}

/// Creates `root` if needed and returns its canonical path.
fn canonical_root(root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| LogError::io(root, e))?;
    std::fs::canonicalize(root).map_err(|e| LogError::io(root, e))
}

/// Opens every stream under the root; removes leftovers of deletions.
fn load_streams(context: &LogContext) -> Result<BTreeMap<String, Arc<StreamState>>> {
    let root = &context.root;
    let mut streams = BTreeMap::new();
    let entries = std::fs::read_dir(root).map_err(|e| LogError::io(root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(root, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with(DELETED_PREFIX) {
            if let Err(error) = std::fs::remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), %error, "stream log: could not remove a deleted stream's files");
            }
            continue;
        }
        if validate_stream_name(&name).is_err() {
            continue;
        }
        match StreamState::open(context, &name)? {
            Some(stream) => {
                streams.insert(name, stream);
            }
            None => {
                tracing::warn!(dir = %path.display(), "stream log: ignoring a stream directory without stream.json (an unfinished creation)");
            }
        }
    }
    Ok(streams)
}
