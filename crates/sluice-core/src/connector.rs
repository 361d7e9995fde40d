//! The connector interface: factories that turn a `CREATE TABLE` into sources and
//! sinks, and the reader/writer traits the runtime drives.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use crate::dlq::BadRecordPolicy;
use crate::table::{MetadataSpec, TableDef};
use crate::{ChangeBatch, Result, SluiceError};

/// Scale-out numbers a task's checkpoints `(epoch << 42) | n`: ids from
/// here on carry their owner's epoch, so they order commits across the
/// processes a task moves between (sinks use them as commit sequence numbers).
pub const EPOCH_CHECKPOINTS: u64 = 1 << EPOCH_SHIFT;
const EPOCH_SHIFT: u32 = 42;

/// Checkpoint `n` of ownership epoch `epoch` (scale-out's numbering).
pub fn epoch_checkpoint(epoch: u64, n: u64) -> u64 {
    (epoch << EPOCH_SHIFT) | (n & (EPOCH_CHECKPOINTS - 1))
}

/// The last checkpoint id of `epoch`: where a task numbers its final
/// pre-commit, above all its other checkpoints and below the next epoch's.
pub fn epoch_final_checkpoint(epoch: u64) -> u64 {
    epoch_checkpoint(epoch, EPOCH_CHECKPOINTS - 1)
}

/// A checkpoint id for people: `epoch:n` for scale-out's ids, else the number.
pub fn checkpoint_label(id: u64) -> String {
    if (EPOCH_CHECKPOINTS..u64::MAX).contains(&id) {
        format!("{}:{}", id >> EPOCH_SHIFT, id & (EPOCH_CHECKPOINTS - 1))
    } else {
        id.to_string()
    }
}

/// Job-wide settings that connectors need when they are created.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's name (`SET 'pipeline.name'`).
    pub job_name: String,
    /// The job's data directory (dead letter files, checkpoints).
    pub data_dir: PathBuf,
    /// Target rows per batch.
    pub batch_size: usize,
    /// Checkpoints are on: transactional sinks hold output back until the
    /// checkpoint that covers it completes.
    pub exactly_once: bool,
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

    /// Whether `table`'s source finds the fields of ROW columns by name and
    /// skips the others (JSON): then the planner may hand `create_source` a
    /// table whose ROW types hold only the fields the job reads.
    fn reads_row_fields_by_name(&self, _table: &TableDef) -> bool {
        false
    }

    /// The metadata columns tables of this connector may declare
    /// (`METADATA FROM '<key>'`).
    fn metadata(&self) -> &'static [MetadataSpec] {
        &[]
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
    /// Opens `parallelism` readers that resume after the positions the readers
    /// of a checkpointed run reported ([`SourceReader::position`]), which may
    /// have run at another parallelism. No positions: like [`SourceConnector::open`].
    fn open_at(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        if positions.is_empty() {
            return self.open(parallelism);
        }
        Err(SluiceError::Config(format!(
            "{} cannot resume from a checkpoint",
            self.describe()
        )))
    }
    /// One line for `--explain`.
    fn describe(&self) -> String;
    /// Scale-out: this source as partition-level tasks (a Kafka topic's
    /// partitions), or `None` when it cannot be split that way.
    fn partitioned(self: Arc<Self>) -> Option<Arc<dyn PartitionedSource>> {
        None
    }
}

/// A source whose input is a fixed set of partitions that separate
/// processes can read independently (scale-out's tasks).
pub trait PartitionedSource: Send + Sync + Debug {
    /// The topic whose partitions are the tasks.
    fn topic(&self) -> String;
    /// How many partitions the topic has.
    fn partitions(&self) -> Result<usize>;
    /// Client settings (brokers, security) to reach the topic's cluster.
    fn client_properties(&self) -> BTreeMap<String, String>;
    /// The source restricted to one partition.
    fn pin(&self, partition: usize) -> Arc<dyn SourceConnector>;
}

/// One subtask's share of a source.
#[async_trait]
pub trait SourceReader: Send {
    /// The next batch, or `None` when this reader's input is exhausted.
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>>;
    /// Where this reader stands: everything returned by `next_batch` so far is
    /// covered, so a reader opened with [`SourceConnector::open_at`] on it
    /// goes on after it. Empty for sources that cannot be replayed.
    fn position(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// The split (e.g. Kafka partition) every row of the last batch came
    /// from, for per-split watermarks; `None` when the reader has no splits
    /// or the batch mixes them.
    fn batch_split(&self) -> Option<u64> {
        None
    }
    /// The splits this reader reads when it starts (each holds the
    /// watermark back until it has data or goes idle).
    fn splits(&self) -> Vec<u64> {
        Vec::new()
    }
    /// A watermark carried by the input itself (scale-out's repartition
    /// topics), when it advanced since the last call. Asked after every
    /// batch; rows returned before it are at or above it.
    fn watermark(&mut self) -> Option<i64> {
        None
    }
    /// Whether the operators after this reader gather batches before
    /// processing them (`deep`): then a reader that decodes ahead may go
    /// further ahead, so they find more input ready. Ignored by default.
    fn read_ahead(&mut self, deep: bool) {
        let _ = deep;
    }
}

/// A configured sink, able to open a writer per subtask.
pub trait SinkConnector: Send + Sync + Debug {
    /// Whether the sink accepts updating (`-U`/`+U`/`-D`) input.
    fn accepts_updates(&self) -> bool {
        false
    }
    /// Opens the writer of subtask `subtask` of `parallelism`.
    fn open(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter>>;
    /// Publishes what a writer pre-committed ([`SinkWriter::pre_commit`]).
    /// Called once its checkpoint is complete, and again after a crash when
    /// recovering from that checkpoint, so it must be idempotent.
    fn commit(&self, pending: &[u8]) -> Result<()> {
        let _ = pending;
        Ok(())
    }
    /// On recovery past an unusable checkpoint: takes back what that
    /// checkpoint published, since the replay writes it again.
    fn uncommit(&self, pending: &[u8]) -> Result<()> {
        let _ = pending;
        Ok(())
    }
    /// On recovery: discards output of this sink that no completed
    /// checkpoint covers (`committed` lists what the restored checkpoint's
    /// writers pre-committed, already published).
    fn discard_uncommitted(&self, committed: &[Vec<u8>]) -> Result<()> {
        let _ = committed;
        Ok(())
    }
    /// Scale-out: before a task restores, fences earlier owners of subtask
    /// `subtask`'s output (a Kafka transactional id), so a process that lost
    /// the task can no longer commit for it.
    fn fence(&self, subtask: usize) -> Result<()> {
        let _ = subtask;
        Ok(())
    }
    /// One line for `--explain`.
    fn describe(&self) -> String;
}

/// One subtask's writer.
#[async_trait]
pub trait SinkWriter: Send {
    /// Writes a batch.
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()>;
    /// The input ended: writes anything held back until then. Followed by
    /// [`SinkWriter::finish`], or with checkpoints by a final
    /// [`SinkWriter::pre_commit`].
    async fn end_of_input(&mut self) -> Result<()> {
        Ok(())
    }
    /// Flushes and closes at the end of input or on shutdown.
    async fn finish(&mut self) -> Result<()>;
    /// The event-time watermark reached this sink (scale-out's repartition
    /// topics carry it on to the next stage).
    async fn on_watermark(&mut self, watermark: i64) -> Result<()> {
        let _ = watermark;
        Ok(())
    }
    /// Checkpoint barrier: flushes what was written so far and returns what
    /// [`SinkConnector::commit`] needs to publish it once the checkpoint
    /// completes (empty for sinks that write through: at-least-once).
    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        let _ = checkpoint;
        Ok(Vec::new())
    }
    /// State the writer keeps across checkpoints besides its pending output
    /// (e.g. an upsert materializer's rows); restored with [`SinkWriter::restore`].
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restores state written by [`SinkWriter::snapshot`] by every subtask
    /// of a checkpointed run (the writer keeps what belongs to it).
    fn restore(&mut self, states: &[Vec<u8>]) -> Result<()> {
        let _ = states;
        Ok(())
    }
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

    /// The connector named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ConnectorFactory>> {
        self.factories.get(name)
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
        let factory = self.factories.get(name).ok_or_else(|| {
            SluiceError::Config(format!(
                "table `{}`: unknown connector '{name}'; available connectors: {}",
                table.name,
                self.names().join(", ")
            ))
        })?;
        let offered = factory.metadata();
        for (column, key, _) in table.metadata_columns() {
            if !offered.iter().any(|spec| spec.key == key) {
                let available = if offered.is_empty() {
                    format!("connector '{name}' has no metadata columns")
                } else {
                    format!(
                        "connector '{name}' offers only {}",
                        offered
                            .iter()
                            .map(|spec| format!("'{}' ({})", spec.key, spec.sql_type))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(SluiceError::Config(format!(
                    "table `{}`: column `{column}` reads METADATA FROM '{key}', but {available}",
                    table.name
                )));
            }
        }
        Ok(factory)
    }
}
