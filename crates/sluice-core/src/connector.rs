//! The connector interface: factories that turn a `CREATE TABLE` into sources and
//! sinks, and the reader/writer traits the runtime drives.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use crate::dlq::BadRecordPolicy;
use crate::table::TableDef;
use crate::{ChangeBatch, Result, SluiceError};

/// Job-wide settings that connectors need when they are created.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's name (`SET 'pipeline.name'`).
    pub job_name: String,
    /// The job's data directory (dead letter files, later checkpoints).
    pub data_dir: PathBuf,
    /// Target rows per batch.
    pub batch_size: usize,
}

impl JobContext {
    /// Directory for dead letter files of tables that name none.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.data_dir.join("dlq")
    }
}

/// Creates sources and sinks for one `'connector' = '...'` name.
pub trait ConnectorFactory: Send + Sync {
    /// The connector name users write in `WITH ('connector' = ...)`.
    fn name(&self) -> &'static str;

    /// A source that reads `table`, producing the physical columns in `projection`
    /// (indices into the table's physical schema).
    fn create_source(
        &self,
        table: &TableDef,
        _projection: &[usize],
        _job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        Err(SluiceError::Config(format!(
            "table `{}`: connector '{}' cannot be read from (it is a sink only)",
            table.name,
            self.name()
        )))
    }

    /// A sink that writes `table`'s physical columns.
    fn create_sink(&self, table: &TableDef, _job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        Err(SluiceError::Config(format!(
            "table `{}`: connector '{}' cannot be written to (it is a source only)",
            table.name,
            self.name()
        )))
    }
}

/// A configured source, able to open its parallel readers.
pub trait SourceConnector: Send + Sync + Debug {
    /// Schema of the batches the readers produce.
    fn schema(&self) -> SchemaRef;
    /// Whether the input ends by itself.
    fn is_bounded(&self) -> bool;
    /// Whether the batches carry updates and deletes (a changelog source).
    fn produces_updates(&self) -> bool {
        false
    }
    /// The bad-record policy, for counters in the job summary.
    fn bad_records(&self) -> Option<&BadRecordPolicy> {
        None
    }
    /// Opens `parallelism` readers; reader `i` runs in subtask `i`.
    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>>;
    /// One line for `--explain`.
    fn describe(&self) -> String;
}

/// One subtask's share of a source.
#[async_trait]
pub trait SourceReader: Send {
    /// The next batch, or `None` when this reader's input is exhausted.
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>>;
}

/// A configured sink, able to open a writer per subtask.
pub trait SinkConnector: Send + Sync + Debug {
    /// Whether the sink accepts updating (`-U`/`+U`/`-D`) input.
    fn accepts_updates(&self) -> bool {
        false
    }
    /// Opens the writer of subtask `subtask` of `parallelism`.
    fn open(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter>>;
    /// One line for `--explain`.
    fn describe(&self) -> String;
}

/// One subtask's writer.
#[async_trait]
pub trait SinkWriter: Send {
    /// Writes a batch.
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()>;
    /// Flushes and closes at the end of input or on shutdown.
    async fn finish(&mut self) -> Result<()>;
}

/// All connectors known to a Sluice binary, by name.
#[derive(Default, Clone)]
pub struct ConnectorRegistry {
    factories: BTreeMap<&'static str, Arc<dyn ConnectorFactory>>,
}

impl ConnectorRegistry {
    /// Adds (or replaces) a connector.
    pub fn register(&mut self, factory: Arc<dyn ConnectorFactory>) {
        self.factories.insert(factory.name(), factory);
    }

    /// Names of all connectors, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// The factory for `table`'s `connector` option; the error lists valid names.
    pub fn for_table(&self, table: &TableDef) -> Result<&Arc<dyn ConnectorFactory>> {
        let name = table.connector().ok_or_else(|| {
            SluiceError::Config(format!(
                "table `{}`: missing option 'connector' (available connectors: {})",
                table.name,
                self.names().join(", ")
            ))
        })?;
        self.factories.get(name).ok_or_else(|| {
            SluiceError::Config(format!(
                "table `{}`: unknown connector '{name}'; available connectors: {}",
                table.name,
                self.names().join(", ")
            ))
        })
    }
}
