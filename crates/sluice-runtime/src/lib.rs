//! The streaming runtime: turns a [`sluice_sql::JobPlan`] into tasks that move
//! Arrow batches from sources through operator chains to sinks over bounded
//! channels, with `parallelism` subtasks per operator on a multi-threaded tokio
//! runtime.

mod aggregate;
pub mod assign;
pub mod batching;
pub mod checkpoint;
mod compacted_keys;
pub mod executor;
pub mod group;
mod groups;
pub mod join;
mod keyed_state;
pub mod late;
pub mod metrics;
pub mod operators;
pub mod over;
mod row_codec;
mod rows;
pub mod session;
pub mod state;
pub mod supervisor;
pub mod temporal_join;
pub mod topn;
pub mod trace;
pub mod upsert;
mod value_compression;
pub mod watermark;
pub mod window;
pub mod window_join;

/// A hash map for per-key state and per-batch grouping: foldhash (randomly
/// seeded per map) instead of SipHash, several times cheaper on short byte keys;
/// hashbrown's map, whose `entry_ref` finds or inserts a borrowed key in one
/// lookup.
pub(crate) type FastHashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A set hashed like [`FastHashMap`].
pub(crate) type FastHashSet<K> = hashbrown::HashSet<K, foldhash::fast::RandomState>;

pub use executor::{
    run_job, run_job_checkpointed, run_job_reporting, JobSummary, ProgressReport, StopSignal,
};
