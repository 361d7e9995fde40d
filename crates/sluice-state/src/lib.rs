//! Checkpoint and savepoint storage for Sluice.
//!
//! Operators encode their state with [`StateWriter`]; the checkpoint
//! coordinator stores the encoded chunks in a [`CheckpointStore`] (any
//! `object_store` backend: a local directory by default, S3 with the `s3`
//! feature) as content-addressed, immutable files, and then writes the
//! checkpoint's [`Manifest`] last. Unchanged chunks are not rewritten, so
//! state that did not change since the last checkpoint costs no I/O.

pub mod codec;
mod inline_scalar;
pub mod manifest;
pub mod spill;
pub mod store;

pub use codec::{StateReader, StateWriter};
pub use manifest::{ChunkRef, ComponentState, Manifest, Role, SnapshotKind, FORMAT_VERSION};
pub use spill::{SpillArea, SpillTable};
pub use store::{CheckpointStore, RestoredCheckpoint};
