//! The error type used across Sluice's library crates.

use arrow::error::ArrowError;

/// Result alias with [`SluiceError`].
pub type Result<T, E = SluiceError> = std::result::Result<T, E>;

/// Every error a Sluice library can report. Messages name the table, option,
/// file/line or SQL clause involved so users can act on them.
#[derive(Debug, thiserror::Error)]
pub enum SluiceError {
    /// A SQL script failed to parse or plan.
    #[error("{0}")]
    Sql(String),
    /// A table's `WITH (...)` options or a `SET` key is invalid.
    #[error("{0}")]
    Config(String),
    /// A query uses a feature this version cannot run.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A record could not be decoded.
    #[error("{0}")]
    Format(String),
    /// A connector failed at run time.
    #[error("{0}")]
    Connector(String),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// An operator failed while running.
    #[error("{0}")]
    Runtime(String),
    /// Checkpoint or savepoint state could not be written, read or decoded.
    #[error("state: {0}")]
    State(String),
}

impl SluiceError {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SluiceError::Io {
            context: context.into(),
            source,
        }
    }
}
