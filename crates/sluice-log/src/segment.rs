//! Segment files: `<base offset, 20 digits>.log`, each holding the frames of
//! consecutive offsets from its base, with a sparse in-memory index.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

use crate::error::{LogError, Result};
use crate::frame::{FrameReader, ScanError};
use crate::{lock_read, lock_write, StoredRecord};

/// Bytes between two sparse index entries.
const INDEX_INTERVAL: u64 = 4096;

/// The file name of the segment starting at `base`.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The base offset a segment file name encodes.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Offset → file position every [`INDEX_INTERVAL`] bytes, and the newest
/// timestamp, of a segment scanned (or written) so far.
#[derive(Debug, Default, Clone)]
struct SparseIndex {
    entries: Vec<(u64, u64)>,
    max_timestamp: Option<i64>,
}

impl SparseIndex {
    /// Notes the record `offset` at `position`.
    fn add(&mut self, offset: u64, position: u64, timestamp_ms: i64) {
        let due = self
            .entries
            .last()
            .is_none_or(|&(_, last)| position >= last + INDEX_INTERVAL);
        if due {
            self.entries.push((offset, position));
        }
        self.max_timestamp = Some(
            self.max_timestamp
                .map_or(timestamp_ms, |t| t.max(timestamp_ms)),
        );
    }

    /// The indexed record at or before `offset`: (offset, position).
    fn floor(&self, base: u64, offset: u64) -> (u64, u64) {
        let at = self.entries.partition_point(|&(o, _)| o <= offset);
        if at == 0 {
            (base, 0)
        } else {
            self.entries[at - 1]
        }
    }
}

/// What readers may see of a segment.
#[derive(Debug)]
struct SegmentMeta {
    /// Bytes of complete, published frames.
    size: u64,
    /// The offset after the segment's last record.
    next_offset: u64,
    /// `None` until the segment is scanned (older segments, after a restart).
    index: Option<SparseIndex>,
}

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub base: u64,
    meta: RwLock<SegmentMeta>,
    /// Read handle, opened on first use.
    file: OnceLock<File>,
    /// Removed by retention (its file may be gone).
    deleted: AtomicBool,
}

impl Segment {
    fn new(
        path: PathBuf,
        base: u64,
        size: u64,
        next_offset: u64,
        index: Option<SparseIndex>,
    ) -> Self {
        Segment {
            path,
            base,
            meta: RwLock::new(SegmentMeta {
                size,
                next_offset,
                index,
            }),
            file: OnceLock::new(),
            deleted: AtomicBool::new(false),
        }
    }

    /// Creates the empty segment file for `base` in `dir` and returns the
    /// segment with its append handle.
    pub fn create(dir: &Path, base: u64) -> Result<(Segment, File)> {
        let path = dir.join(segment_name(base));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let index = Some(SparseIndex::default());
        Ok((Segment::new(path, base, 0, base, index), file))
    }

    /// An older segment, known to end where the next one starts; scanned
    /// when first read.
    pub fn sealed(path: PathBuf, base: u64, next_offset: u64) -> Result<Segment> {
        let size = std::fs::metadata(&path)
            .map_err(|e| LogError::io(&path, e))?
            .len();
        Ok(Segment::new(path, base, size, next_offset, None))
    }

    /// Opens the last segment of a partition: scans it, cuts off a torn or
    /// corrupt tail (with a warning naming file and position), and returns
    /// the segment with its append handle.
    pub fn recover(path: PathBuf, base: u64) -> Result<(Segment, File)> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
        let mut index = SparseIndex::default();
        let mut next_offset = base;
        let mut reader = FrameReader::new(&file, 0, len);
        let valid = loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    index.add(next_offset, frame.position, frame.timestamp_ms);
                    next_offset += 1;
                }
                Ok(None) => break len,
                Err(ScanError::Io(e)) => return Err(LogError::io(&path, e)),
                Err(error) => {
                    tracing::warn!(
                        file = %path.display(),
                        position = error.position(),
                        reason = %error.reason(),
                        dropped_bytes = len - error.position(),
                        "stream log: cutting off a torn or corrupt tail"
                    );
                    break error.position();
                }
            }
        };
        if valid < len {
            file.set_len(valid).map_err(|e| LogError::io(&path, e))?;
            file.sync_all().map_err(|e| LogError::io(&path, e))?;
        }
        let segment = Segment::new(path, base, valid, next_offset, Some(index));
        Ok((segment, file))
    }

    /// Published bytes.
    pub fn size(&self) -> u64 {
        lock_read(&self.meta).size
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> u64 {
        lock_read(&self.meta).next_offset
    }

    /// Makes records appended at `positions` (file position, timestamp), the
    /// first with offset `first`, visible; the segment now holds `size` bytes.
    pub fn publish(&self, first: u64, positions: &[(u64, i64)], size: u64) {
        let mut meta = lock_write(&self.meta);
        let index = meta.index.get_or_insert_with(SparseIndex::default);
        for (i, &(position, timestamp)) in positions.iter().enumerate() {
            index.add(first + i as u64, position, timestamp);
        }
        meta.size = size;
        meta.next_offset = first + positions.len() as u64;
    }

    /// Marks the segment removed by retention.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// The read handle, or `None` when retention removed the file.
    fn file(&self) -> Result<Option<&File>> {
        if let Some(file) = self.file.get() {
            return Ok(Some(file));
        }
        match File::open(&self.path) {
            Ok(file) => {
                let _ = self.file.set(file);
                Ok(self.file.get())
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && self.deleted.load(Ordering::Acquire) =>
            {
                Ok(None)
            }
            Err(e) => Err(LogError::io(&self.path, e)),
        }
    }

    fn corrupt(&self, error: ScanError) -> LogError {
        match error {
            ScanError::Io(e) => LogError::io(&self.path, e),
            other => LogError::Corrupt {
                path: self.path.clone(),
                position: other.position(),
                reason: other.reason(),
            },
        }
    }

    /// Scans an unindexed (older) segment once, checking every frame and
    /// that it holds exactly the offsets up to the next segment's base.
    fn ensure_index(&self) -> Result<()> {
        let (size, next_offset) = {
            let meta = lock_read(&self.meta);
            if meta.index.is_some() {
                return Ok(());
            }
            (meta.size, meta.next_offset)
        };
        let Some(file) = self.file()? else {
            return Ok(());
        };
        let mut index = SparseIndex::default();
        let mut offset = self.base;
        let mut reader = FrameReader::new(file, 0, size);
        while let Some(frame) = reader.next_frame().map_err(|e| self.corrupt(e))? {
            index.add(offset, frame.position, frame.timestamp_ms);
            offset += 1;
        }
        if offset != next_offset {
            return Err(LogError::Corrupt {
                path: self.path.clone(),
                position: size,
                reason: format!(
                    "the segment holds offsets {}..{offset}, but the next segment starts at {next_offset}",
                    self.base
                ),
            });
        }
        lock_write(&self.meta).index = Some(index);
        Ok(())
    }

    /// The newest record timestamp (`None` for an empty segment).
    pub fn max_timestamp(&self) -> Result<Option<i64>> {
        self.ensure_index()?;
        Ok(lock_read(&self.meta)
            .index
            .as_ref()
            .and_then(|index| index.max_timestamp))
    }

    /// Appends to `out` the records with offset `>= from`, until `out` holds
    /// `max` records or the segment ends.
    pub fn read(&self, from: u64, max: usize, out: &mut Vec<StoredRecord>) -> Result<()> {
        self.ensure_index()?;
        let (size, next_offset, (mut offset, position)) = {
            let meta = lock_read(&self.meta);
            let floor = meta
                .index
                .as_ref()
                .map_or((self.base, 0), |index| index.floor(self.base, from));
            (meta.size, meta.next_offset, floor)
        };
        if from >= next_offset || out.len() >= max {
            return Ok(());
        }
        let Some(file) = self.file()? else {
            return Ok(());
        };
        let mut reader = FrameReader::new(file, position, size);
        while out.len() < max && offset < next_offset {
            let Some(frame) = reader.next_frame().map_err(|e| self.corrupt(e))? else {
                return Err(LogError::Corrupt {
                    path: self.path.clone(),
                    position: reader.position(),
                    reason: format!("the segment ends before offset {offset}"),
                });
            };
            if offset >= from {
                out.push(StoredRecord {
                    offset,
                    record: frame.to_record(),
                });
            }
            offset += 1;
        }
        Ok(())
    }
}
