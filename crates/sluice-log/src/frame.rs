//! Record framing on disk.
//!
//! A frame is `[u32 length][u32 crc32c][i64 timestamp ms][u32 key length or
//! u32::MAX for no key][key][value]`, little-endian. `length` counts the
//! bytes after the length field (the checksum and the body); the checksum is
//! CRC-32C (Castagnoli) of the body, from the timestamp to the end of the value.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::Record;

/// Bytes of the length and checksum fields.
const HEADER: u64 = 8;
/// Bytes of the timestamp and key length fields.
const BODY_FIXED: usize = 12;
/// Key length marking a record without key.
const NO_KEY: u32 = u32::MAX;
/// How much a reader fetches from the file at once.
const READ_CHUNK: usize = 64 * 1024;

/// The largest record (key plus value) a frame can hold.
pub(crate) const MAX_RECORD_BYTES: u64 = u32::MAX as u64 - HEADER - BODY_FIXED as u64;

/// The bytes a record takes on disk.
pub(crate) fn frame_len(record: &Record) -> u64 {
    HEADER
        + BODY_FIXED as u64
        + record.key.as_ref().map_or(0, |k| k.len() as u64)
        + record.value.len() as u64
}

/// Appends the frame of `record` to `out` (callers check [`MAX_RECORD_BYTES`]).
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    let total = frame_len(record) as usize;
    out.reserve(total);
    out.extend_from_slice(&((total - 4) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    match &record.key {
        Some(key) => {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
        }
        None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    out.extend_from_slice(&record.value);
    let crc = crc32c::crc32c(&out[start + HEADER as usize..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded frame, borrowing the reader's buffer.
#[derive(Debug)]
pub(crate) struct FrameRef<'a> {
    /// Where the frame starts in the file.
    pub position: u64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

impl FrameRef<'_> {
    /// The record, copied out.
    pub fn to_record(&self) -> Record {
        Record {
            timestamp_ms: self.timestamp_ms,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// The file ends inside the frame (a torn write), or its length field is
    /// garbage pointing past the end.
    Short { position: u64, reason: String },
    /// The frame is complete but wrong (checksum, impossible lengths).
    Bad { position: u64, reason: String },
    /// Reading failed.
    Io(std::io::Error),
}

impl ScanError {
    /// Where the bad frame starts (0 for I/O errors).
    pub fn position(&self) -> u64 {
        match self {
            ScanError::Short { position, .. } | ScanError::Bad { position, .. } => *position,
            ScanError::Io(_) => 0,
        }
    }

    /// What is wrong.
    pub fn reason(&self) -> String {
        match self {
            ScanError::Short { reason, .. } | ScanError::Bad { reason, .. } => reason.clone(),
            ScanError::Io(error) => error.to_string(),
        }
    }
}

/// Reads frames one after another from `[start, end)` of a file.
pub(crate) struct FrameReader<'a> {
    file: &'a File,
    /// Position of the next frame.
    pos: u64,
    /// End of the readable bytes.
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
}

impl<'a> FrameReader<'a> {
    /// A reader of the frames in `[start, end)` of `file`.
    pub fn new(file: &'a File, start: u64, end: u64) -> Self {
        FrameReader {
            file,
            pos: start,
            end,
            buf: Vec::new(),
            buf_pos: start,
        }
    }

    /// Position of the next frame.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Makes `buf` hold the `n` bytes at `pos`; returns their offset in `buf`.
    fn fill(&mut self, n: u64) -> Result<usize, ScanError> {
        let buffered_end = self.buf_pos + self.buf.len() as u64;
        if self.pos >= self.buf_pos && self.pos + n <= buffered_end {
            return Ok((self.pos - self.buf_pos) as usize);
        }
        let want = n.max(READ_CHUNK as u64).min(self.end - self.pos) as usize;
        self.buf.resize(want, 0);
        self.buf_pos = self.pos;
        let mut filled = 0;
        while filled < want {
            match self
                .file
                .read_at(&mut self.buf[filled..], self.pos + filled as u64)
            {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ScanError::Io(e)),
            }
        }
        self.buf.truncate(filled);
        if (filled as u64) < n {
            return Err(ScanError::Short {
                position: self.pos,
                reason: format!("the file ends {} bytes into a {n}-byte frame", filled),
            });
        }
        Ok(0)
    }

    /// The next frame, or `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<FrameRef<'_>>, ScanError> {
        let position = self.pos;
        if position >= self.end {
            return Ok(None);
        }
        let left = self.end - position;
        if left < HEADER {
            return Err(ScanError::Short {
                position,
                reason: format!("only {left} bytes left, less than a frame header"),
            });
        }
        let at = self.fill(4)?;
        let length = u64::from(u32::from_le_bytes(le4(&self.buf[at..at + 4])));
        if length < 4 + BODY_FIXED as u64 {
            return Err(ScanError::Bad {
                position,
                reason: format!("frame length {length} is too small"),
            });
        }
        let total = 4 + length;
        if total > left {
            return Err(ScanError::Short {
                position,
                reason: format!("a {total}-byte frame runs past the end ({left} bytes left)"),
            });
        }
        let at = self.fill(total)?;
        let frame = &self.buf[at..at + total as usize];
        let crc = u32::from_le_bytes(le4(&frame[4..8]));
        let body = &frame[HEADER as usize..];
        if crc32c::crc32c(body) != crc {
            return Err(ScanError::Bad {
                position,
                reason: "checksum mismatch".into(),
            });
        }
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&body[..8]);
        let key_len = u32::from_le_bytes(le4(&body[8..12]));
        let rest = &body[BODY_FIXED..];
        let (key, value) = if key_len == NO_KEY {
            (None, rest)
        } else if key_len as usize <= rest.len() {
            let (key, value) = rest.split_at(key_len as usize);
            (Some(key), value)
        } else {
            return Err(ScanError::Bad {
                position,
                reason: format!("key length {key_len} runs past the frame"),
            });
        };
        self.pos += total;
        Ok(Some(FrameRef {
            position,
            timestamp_ms: i64::from_le_bytes(timestamp),
            key,
            value,
        }))
    }
}

/// The first four bytes of `bytes` (callers pass at least four).
fn le4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[..4]);
    out
}
