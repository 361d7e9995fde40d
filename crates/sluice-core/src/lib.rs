//! Core types shared by every Sluice crate: change batches, the messages that flow
//! between operators, table definitions, connector traits, options and errors.

pub mod changelog;
pub mod connector;
pub mod dlq;
pub mod error;
pub mod options;
pub mod table;

pub use changelog::{Barrier, ChangeBatch, Message, RowKind};
pub use error::{Result, SluiceError};
