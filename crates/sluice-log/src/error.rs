//! The log's error type.

use std::path::{Path, PathBuf};

/// Everything the stream log can fail with. Messages name the file, stream
/// or partition involved.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation on `path` failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record in `path` at byte `position` does not decode.
    #[error("corrupt stream log file {} at byte {position}: {reason}", .path.display())]
    Corrupt {
        /// The segment or metadata file.
        path: PathBuf,
        /// Byte position of the bad frame.
        position: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A stream name outside `[A-Za-z0-9._-]{1,200}` (or starting with `.`).
    #[error("invalid stream name '{0}': use 1 to 200 characters of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'")]
    InvalidName(String),
    /// A partition count of zero.
    #[error("stream '{stream}': a stream needs at least one partition, got {partitions}")]
    InvalidPartitionCount {
        /// The stream.
        stream: String,
        /// The count asked for.
        partitions: u32,
    },
    /// A partition number past the stream's partitions.
    #[error("stream '{stream}' has no partition {partition} (it has {partitions})")]
    NoSuchPartition {
        /// The stream.
        stream: String,
        /// The partition asked for.
        partition: u32,
        /// How many the stream has.
        partitions: u32,
    },
    /// `create_stream` of an existing stream with another partition count.
    #[error("stream '{stream}' exists with {existing} partitions, not {requested}")]
    PartitionMismatch {
        /// The stream.
        stream: String,
        /// Its partition count.
        existing: u32,
        /// The count asked for.
        requested: u32,
    },
    /// A record too large for a frame.
    #[error(
        "stream '{stream}': a record of {bytes} bytes exceeds the {max} bytes a record can hold"
    )]
    RecordTooLarge {
        /// The stream.
        stream: String,
        /// Key plus value bytes of the record.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Another process holds the log directory.
    #[error("the stream log in {} is in use by another process", .0.display())]
    Locked(PathBuf),
    /// The stream was deleted while this handle was held.
    #[error("stream '{0}' was deleted")]
    StreamDeleted(String),
    /// The log is closing (its last handle was dropped).
    #[error("the stream log in {} is closed", .0.display())]
    Closed(PathBuf),
    /// An earlier write or sync failed: the partition (or, for a failed
    /// periodic sync, the log) refuses writes until it is reopened.
    #[error("the stream log cannot write after an earlier failure: {0}")]
    Failed(String),
}

impl LogError {
    /// Wraps an I/O error on `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
