//! One partition: a directory of segment files, the active one open for
//! appends.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::error::{LogError, Result};
use crate::frame::{encode, frame_len};
use crate::segment::{parse_segment_name, Segment};
use crate::{
    lock, lock_read, lock_write, sync_dir, PartitionInfo, Record, Retention, StoredRecord,
};

/// The append side of a partition.
#[derive(Debug)]
struct Writer {
    /// The active segment and its append handle.
    segment: Arc<Segment>,
    file: Arc<File>,
    size: u64,
    next_offset: u64,
    /// A write or sync failed in a way that leaves the file in doubt.
    failed: Option<String>,
}

/// A partition of a stream.
#[derive(Debug)]
pub(crate) struct Partition {
    pub id: u32,
    dir: PathBuf,
    /// Oldest first; the last one is the active segment.
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// The end offset, for waiting readers.
    end: watch::Sender<u64>,
}

/// What an append wrote: its offsets and, when not synced yet, the file to sync.
pub(crate) struct Appended {
    pub offsets: Range<u64>,
    pub unsynced: Option<(PathBuf, Arc<File>)>,
}

impl Partition {
    fn assemble(id: u32, dir: PathBuf, segments: Vec<Arc<Segment>>, writer: Writer) -> Self {
        let end = writer.next_offset;
        Partition {
            id,
            dir,
            segments: RwLock::new(segments),
            writer: Mutex::new(writer),
            end: watch::Sender::new(end),
        }
    }

    /// Creates the directory of a new partition with an empty first segment.
    pub fn create(dir: PathBuf, id: u32) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let (segment, file) = Segment::create(&dir, 0)?;
        sync_dir(&dir)?;
        let segment = Arc::new(segment);
        let writer = Writer {
            segment: Arc::clone(&segment),
            file: Arc::new(file),
            size: 0,
            next_offset: 0,
            failed: None,
        };
        Ok(Partition::assemble(id, dir, vec![segment], writer))
    }

    /// Opens an existing partition directory, recovering its last segment.
    pub fn open(dir: PathBuf, id: u32) -> Result<Self> {
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| LogError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io(&dir, e))?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let Some(&last) = bases.last() else {
            return Partition::create(dir, id);
        };
        let mut segments = Vec::with_capacity(bases.len());
        for pair in bases.windows(2) {
            let path = dir.join(crate::segment::segment_name(pair[0]));
            segments.push(Arc::new(Segment::sealed(path, pair[0], pair[1])?));
        }
        let (active, file) = Segment::recover(dir.join(crate::segment::segment_name(last)), last)?;
        let active = Arc::new(active);
        segments.push(Arc::clone(&active));
        let writer = Writer {
            size: active.size(),
            next_offset: active.next_offset(),
            segment: active,
            file: Arc::new(file),
            failed: None,
        };
        Ok(Partition::assemble(id, dir, segments, writer))
    }

    /// The first offset still stored.
    pub fn start_offset(&self) -> u64 {
        lock_read(&self.segments).first().map_or(0, |s| s.base)
    }

    /// The offset the next record gets.
    pub fn end_offset(&self) -> u64 {
        *self.end.borrow()
    }

    /// A receiver of end offset changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Offsets and bytes.
    pub fn info(&self) -> PartitionInfo {
        let segments = lock_read(&self.segments);
        PartitionInfo {
            partition: self.id,
            start_offset: segments.first().map_or(0, |s| s.base),
            end_offset: self.end_offset(),
            bytes: segments.iter().map(|s| s.size()).sum(),
        }
    }

    /// Writes `records` (blocking), rolling to new segments at
    /// `segment_bytes`. With `sync`, the data is on disk before it returns;
    /// otherwise the caller syncs the returned file.
    pub fn append(&self, records: &[Record], segment_bytes: u64, sync: bool) -> Result<Appended> {
        let mut writer = lock(&self.writer);
        if let Some(failure) = &writer.failed {
            return Err(LogError::Failed(failure.clone()));
        }
        let first = writer.next_offset;
        let mut buf = Vec::new();
        let mut positions = Vec::new();
        for record in records {
            let len = frame_len(record);
            let pending = writer.size + buf.len() as u64;
            if pending > 0 && pending + len > segment_bytes {
                self.write(&mut writer, &buf, &positions, true)?;
                buf.clear();
                positions.clear();
                self.roll(&mut writer)?;
            }
            positions.push((writer.size + buf.len() as u64, record.timestamp_ms));
            encode(record, &mut buf);
        }
        self.write(&mut writer, &buf, &positions, sync)?;
        let unsynced = (!sync).then(|| (writer.segment.path.clone(), Arc::clone(&writer.file)));
        Ok(Appended {
            offsets: first..writer.next_offset,
            unsynced,
        })
    }

    /// Writes frames to the active segment, syncs them when asked, and
    /// publishes them to readers.
    fn write(
        &self,
        writer: &mut Writer,
        buf: &[u8],
        positions: &[(u64, i64)],
        sync: bool,
    ) -> Result<()> {
        let path = writer.segment.path.clone();
        if !buf.is_empty() {
            if let Err(error) = (&*writer.file).write_all(buf) {
                // Cut the partial frame off, so later appends stay readable.
                if let Err(cut) = writer.file.set_len(writer.size) {
                    writer.failed = Some(format!(
                        "{}: a write failed ({error}) and its partial data could not be removed ({cut})",
                        path.display()
                    ));
                }
                return Err(LogError::io(&path, error));
            }
        }
        if sync {
            if let Err(error) = writer.file.sync_data() {
                writer.failed = Some(format!("{}: sync failed: {error}", path.display()));
                return Err(LogError::io(&path, error));
            }
        }
        if positions.is_empty() {
            return Ok(());
        }
        let first = writer.next_offset;
        writer.size += buf.len() as u64;
        writer.next_offset += positions.len() as u64;
        writer.segment.publish(first, positions, writer.size);
        self.end.send_replace(writer.next_offset);
        Ok(())
    }

    /// Starts a new segment at the next offset (the old one is synced).
    fn roll(&self, writer: &mut Writer) -> Result<()> {
        let (segment, file) = Segment::create(&self.dir, writer.next_offset)?;
        sync_dir(&self.dir)?;
        let segment = Arc::new(segment);
        lock_write(&self.segments).push(Arc::clone(&segment));
        writer.segment = segment;
        writer.file = Arc::new(file);
        writer.size = 0;
        Ok(())
    }

    /// Up to `max` records from offset `from` (or the start offset, when
    /// retention removed `from`).
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let segments: Vec<Arc<Segment>> = {
            let all = lock_read(&self.segments);
            let at = all.partition_point(|s| s.base <= from).saturating_sub(1);
            all[at..].to_vec()
        };
        let Some(first) = segments.first() else {
            return Ok(out);
        };
        let from = from.max(first.base);
        for segment in &segments {
            segment.read(from, max, &mut out)?;
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Removes whole segments before the active one that `retention` no
    /// longer keeps; returns the bytes removed.
    pub fn enforce_retention(&self, retention: &Retention, now_ms: i64) -> Result<u64> {
        let segments = lock_read(&self.segments).clone();
        let Some((_active, sealed)) = segments.split_last() else {
            return Ok(0);
        };
        let mut remaining: u64 = segments.iter().map(|s| s.size()).sum();
        let oldest_kept = retention
            .max_age
            .map(|age| now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
        let mut remove = 0;
        for segment in sealed {
            let over_size = retention.max_bytes.is_some_and(|max| remaining > max);
            let expired = match oldest_kept {
                None => false,
                Some(limit) => match segment.max_timestamp() {
                    Ok(newest) => newest.is_none_or(|t| t < limit),
                    Err(error) => {
                        tracing::warn!(%error, "stream log: cannot read a segment's timestamps; keeping it");
                        false
                    }
                },
            };
            if !over_size && !expired {
                break;
            }
            remaining -= segment.size();
            remove += 1;
        }
        if remove == 0 {
            return Ok(0);
        }
        let removed: Vec<Arc<Segment>> = {
            let mut all = lock_write(&self.segments);
            let still_first = all
                .iter()
                .zip(&segments[..remove])
                .all(|(a, b)| Arc::ptr_eq(a, b));
            if !still_first || all.len() <= remove {
                return Ok(0);
            }
            all.drain(..remove).collect()
        };
        let mut bytes = 0;
        for segment in &removed {
            segment.mark_deleted();
            bytes += segment.size();
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(&segment.path, e)),
            }
        }
        sync_dir(&self.dir)?;
        Ok(bytes)
    }
}
