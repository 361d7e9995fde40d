//! Taps on a hosted job's sinks: every batch a sink writes is counted (for
//! `/metrics` and throughput) and offered to live subscribers (the tail
//! endpoint), without changing what the sink does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sluice_core::connector::{
    ConnectorFactory, ConnectorRegistry, JobContext, SinkConnector, SinkWriter, SourceConnector,
};
use sluice_core::table::{MetadataSpec, TableDef};
use sluice_core::{ChangeBatch, Result};
use tokio::sync::broadcast;

/// Batches a tail subscriber may fall behind by before it misses some.
const TAIL_BUFFER: usize = 256;

/// What a job's sinks wrote: row counts per sink table and a live feed.
pub struct JobTap {
    rows: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    feed: broadcast::Sender<(String, ChangeBatch)>,
}

impl Default for JobTap {
    fn default() -> Self {
        JobTap {
            rows: Mutex::new(BTreeMap::new()),
            feed: broadcast::channel(TAIL_BUFFER).0,
        }
    }
}

impl fmt::Debug for JobTap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobTap").finish_non_exhaustive()
    }
}

impl JobTap {
    /// Rows written so far per sink table.
    pub fn rows_written(&self) -> BTreeMap<String, u64> {
        self.lock()
            .iter()
            .map(|(table, rows)| (table.clone(), rows.load(Ordering::Relaxed)))
            .collect()
    }

    /// A live feed of `(sink table, batch)`.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, ChangeBatch)> {
        self.feed.subscribe()
    }

    fn counter(&self, table: &str) -> Arc<AtomicU64> {
        self.lock().entry(table.to_string()).or_default().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<AtomicU64>>> {
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `registry` with every connector's sinks tapped into this tap.
    pub fn wrap(self: &Arc<Self>, registry: &ConnectorRegistry) -> ConnectorRegistry {
        let mut tapped = ConnectorRegistry::default();
        for name in registry.names() {
            if let Some(inner) = registry.get(name) {
                tapped.register(Arc::new(TappedFactory {
                    inner: inner.clone(),
                    tap: self.clone(),
                }));
            }
        }
        tapped
    }
}

struct TappedFactory {
    inner: Arc<dyn ConnectorFactory>,
    tap: Arc<JobTap>,
}

impl ConnectorFactory for TappedFactory {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        self.inner.create_source(table, projection, job)
    }

    fn metadata(&self) -> &'static [MetadataSpec] {
        self.inner.metadata()
    }

    fn create_sink(&self, table: &TableDef, job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        Ok(Arc::new(TappedSink {
            inner: self.inner.create_sink(table, job)?,
            table: table.name.clone(),
            tap: self.tap.clone(),
        }))
    }
}

#[derive(Debug)]
struct TappedSink {
    inner: Arc<dyn SinkConnector>,
    table: String,
    tap: Arc<JobTap>,
}

impl SinkConnector for TappedSink {
    fn accepts_updates(&self) -> bool {
        self.inner.accepts_updates()
    }

    fn open(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(TappedWriter {
            inner: self.inner.open(subtask, parallelism)?,
            table: self.table.clone(),
            rows: self.tap.counter(&self.table),
            tap: self.tap.clone(),
        }))
    }

    fn commit(&self, pending: &[u8]) -> Result<()> {
        self.inner.commit(pending)
    }

    fn uncommit(&self, pending: &[u8]) -> Result<()> {
        self.inner.uncommit(pending)
    }

    fn discard_uncommitted(&self, committed: &[Vec<u8>]) -> Result<()> {
        self.inner.discard_uncommitted(committed)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

struct TappedWriter {
    inner: Box<dyn SinkWriter>,
    table: String,
    rows: Arc<AtomicU64>,
    tap: Arc<JobTap>,
}

#[async_trait]
impl SinkWriter for TappedWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.inner.write(batch).await?;
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        if self.tap.feed.receiver_count() > 0 {
            // No subscriber keeping up is no reason to slow the job.
            let _ = self.tap.feed.send((self.table.clone(), batch.clone()));
        }
        Ok(())
    }

    async fn end_of_input(&mut self) -> Result<()> {
        self.inner.end_of_input().await
    }

    async fn finish(&mut self) -> Result<()> {
        self.inner.finish().await
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        self.inner.pre_commit(checkpoint).await
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.inner.snapshot()
    }

    fn restore(&mut self, states: &[Vec<u8>]) -> Result<()> {
        self.inner.restore(states)
    }
}
