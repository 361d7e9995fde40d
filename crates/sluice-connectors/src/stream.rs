//! The `stream` connector: tables over streams of Sluice's embedded log
//! (`sluice-log`), the storage of `sluice serve`.
//!
//! Every log record's value is one message in the table's `format` (any
//! message format, as for Kafka). Source: the stream's partitions are spread
//! over the subtasks (partition `p` goes to subtask `p % parallelism`); each
//! reader starts at the earliest or latest offset, or where a checkpoint left
//! it (at any parallelism: positions are per partition), and with
//! `scan.bounded.mode = 'latest-offset'` stops at the end offsets seen when
//! it opened. A stream the source names that does not exist yet is created
//! with the log's default partition count. Bad records go through the
//! table's `errors` policy with `<stream>[<partition>]` and the offset as
//! their location. Sink: each write appends the batch, one append per
//! partition, and returns once the log made it durable (at-least-once).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::connector::{
    ConnectorFactory, JobContext, SinkConnector, SinkWriter, SourceConnector, SourceReader,
};
use sluice_core::dlq::{BadRecordPolicy, BAD_RECORD_OPTIONS};
use sluice_core::options::{OptionSpec, Options};
use sluice_core::table::{metadata_key, MetadataSpec, TableDef};
use sluice_core::{ChangeBatch, Result, SluiceError};
use sluice_log::{LogConfig, LogError, Record, StoredRecord, Stream, StreamLog};

use crate::formats::message::{Message, MessageContext, MessageDecoder, MessageEncoder};
use crate::formats::Format;
use crate::{project_schema, validate_options};

const STREAM_OPTIONS: [OptionSpec; 9] = [
    OptionSpec::required("connector", "'stream'"),
    OptionSpec::required("stream", "the stream to read or write"),
    OptionSpec::required(
        "format",
        "message format: 'json', 'csv', 'raw', 'debezium-json', 'avro', 'avro-confluent', 'protobuf'",
    ),
    OptionSpec::optional(
        "log.dir",
        "directory of the stream log (default: the connector's, 'sluice-data/streams' or the server's)",
    ),
    OptionSpec::optional(
        "scan.startup.mode",
        "'earliest-offset' (default) or 'latest-offset'",
    ),
    OptionSpec::optional(
        "scan.bounded.mode",
        "'unbounded' (default) or 'latest-offset': stop at the end offsets seen when the job starts",
    ),
    OptionSpec::optional(
        "sink.partitioner",
        "'round-robin' (default: each write goes to the next partition) or 'key' (by the hash of 'key.fields')",
    ),
    OptionSpec::optional(
        "key.fields",
        "columns (';'-separated) whose JSON encoding is the record key, for 'sink.partitioner' = 'key'",
    ),
    OptionSpec::optional(
        "sink.partitions",
        "partitions of the stream when the sink creates it (default 1)",
    ),
];

/// The metadata a `stream` table can read (`METADATA FROM '<key>'`).
const STREAM_METADATA: [MetadataSpec; 3] = [
    MetadataSpec {
        key: "partition",
        sql_type: "INT",
        writable: false,
    },
    MetadataSpec {
        key: "offset",
        sql_type: "BIGINT",
        writable: false,
    },
    MetadataSpec {
        key: "timestamp",
        sql_type: "TIMESTAMP_LTZ(3)",
        writable: false,
    },
];

/// How long a reader waits for new records before checking again.
const WAIT: Duration = Duration::from_millis(200);

/// Creates `stream` sources and sinks on the log in `default_dir` (or a
/// table's `log.dir`).
#[derive(Debug, Clone)]
pub struct StreamConnector {
    default_dir: PathBuf,
}

impl StreamConnector {
    /// A connector whose tables use the log in `default_dir` unless they
    /// name another with `log.dir`.
    pub fn new(default_dir: PathBuf) -> Self {
        StreamConnector { default_dir }
    }
}

impl ConnectorFactory for StreamConnector {
    fn name(&self) -> &'static str {
        "stream"
    }

    fn metadata(&self) -> &'static [MetadataSpec] {
        &STREAM_METADATA
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        Ok(Arc::new(StreamSource::new(
            table,
            projection,
            job,
            &self.default_dir,
        )?))
    }

    fn create_sink(&self, table: &TableDef, _job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        Ok(Arc::new(StreamSink::new(table, &self.default_dir)?))
    }
}

/// What a table of the connector names: its log, stream and format.
#[derive(Debug, Clone)]
struct StreamTable {
    table: String,
    dir: PathBuf,
    stream: String,
    format: Format,
}

impl StreamTable {
    fn from_table(table: &TableDef, default_dir: &std::path::Path) -> Result<Self> {
        let options = &table.options;
        let format = Format::for_messages(options)?;
        validate_options(
            table,
            &[&STREAM_OPTIONS, &BAD_RECORD_OPTIONS, format.option_specs()],
        )?;
        let stream = options.require("stream")?.to_string();
        sluice_log::validate_stream_name(&stream)
            .map_err(|e| SluiceError::Config(format!("table `{}`: {e}", table.name)))?;
        let dir = options
            .get("log.dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_dir.to_path_buf());
        Ok(StreamTable {
            table: table.name.clone(),
            dir,
            stream,
            format,
        })
    }

    fn error(&self, error: LogError) -> SluiceError {
        SluiceError::Connector(format!(
            "table `{}`: stream '{}': {error}",
            self.table, self.stream
        ))
    }

    /// The process's instance of the log.
    fn open_log(&self) -> Result<StreamLog> {
        StreamLog::open_shared(&self.dir, LogConfig::default()).map_err(|e| self.error(e))
    }

    fn context(&self) -> MessageContext {
        MessageContext {
            table: self.table.clone(),
            topic: self.stream.clone(),
            is_key: false,
        }
    }
}

/// Metadata a source column reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetadataKey {
    Partition,
    Offset,
    Timestamp,
}

impl MetadataKey {
    fn parse(key: &str) -> Option<Self> {
        match key {
            "partition" => Some(MetadataKey::Partition),
            "offset" => Some(MetadataKey::Offset),
            "timestamp" => Some(MetadataKey::Timestamp),
            _ => None,
        }
    }

    /// The values for `records` of `partition`, as the log gives them.
    fn build(self, partition: u32, records: &[&StoredRecord]) -> ArrayRef {
        match self {
            MetadataKey::Partition => Arc::new(Int32Array::from_iter_values(
                records.iter().map(|_| partition as i32),
            )),
            MetadataKey::Offset => Arc::new(Int64Array::from_iter_values(
                records.iter().map(|r| r.offset as i64),
            )),
            MetadataKey::Timestamp => Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    records.iter().map(|r| r.record.timestamp_ms),
                )
                .with_timezone("UTC"),
            ),
        }
    }
}

/// Where an output column of the source comes from.
#[derive(Debug, Clone)]
enum ColumnSource {
    /// Column `usize` of the decoded value.
    Value(usize),
    /// Record metadata, cast to the declared type.
    Metadata(MetadataKey, DataType),
}

/// `scan.startup.mode`.
#[derive(Debug, Clone, Copy)]
enum Startup {
    Earliest,
    Latest,
}

/// A configured `stream` source.
#[derive(Debug)]
struct StreamSource {
    table: StreamTable,
    schema: SchemaRef,
    columns: Vec<ColumnSource>,
    value_schema: SchemaRef,
    startup: Startup,
    bounded: bool,
    policy: BadRecordPolicy,
    batch_size: usize,
}

impl StreamSource {
    fn new(
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
        default_dir: &std::path::Path,
    ) -> Result<Self> {
        let config = StreamTable::from_table(table, default_dir)?;
        let options = &table.options;
        let startup = match options.get("scan.startup.mode") {
            None | Some("earliest-offset") => Startup::Earliest,
            Some("latest-offset") => Startup::Latest,
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: 'scan.startup.mode' must be 'earliest-offset' or 'latest-offset', got '{other}'",
                    table.name
                )))
            }
        };
        let bounded = match options.get("scan.bounded.mode") {
            None | Some("unbounded") => false,
            Some("latest-offset") => true,
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: 'scan.bounded.mode' must be 'unbounded' or 'latest-offset', got '{other}'",
                    table.name
                )))
            }
        };
        let schema = project_schema(table, projection);
        let physical = table.physical_schema();
        let value_fields: Vec<_> = physical
            .fields()
            .iter()
            .filter(|f| metadata_key(f).is_none())
            .filter(|f| {
                config.format.decodes_all_columns() || schema.field_with_name(f.name()).is_ok()
            })
            .cloned()
            .collect();
        let value_schema = Arc::new(Schema::new(value_fields));
        config.format.check_message_schema(options, &value_schema)?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            columns.push(match metadata_key(field) {
                Some(key) => {
                    let parsed = MetadataKey::parse(key).ok_or_else(|| {
                        SluiceError::Config(format!(
                            "table `{}`: unknown stream metadata '{key}'",
                            table.name
                        ))
                    })?;
                    let given = parsed.build(0, &[]);
                    if !arrow::compute::can_cast_types(given.data_type(), field.data_type()) {
                        let spec = STREAM_METADATA.iter().find(|s| s.key == key);
                        return Err(SluiceError::Config(format!(
                            "table `{}`: metadata column `{}` ('{key}') is {}, but the stream gives {}",
                            table.name,
                            field.name(),
                            field.data_type(),
                            spec.map_or("another type", |s| s.sql_type)
                        )));
                    }
                    ColumnSource::Metadata(parsed, field.data_type().clone())
                }
                None => ColumnSource::Value(value_schema.index_of(field.name())?),
            });
        }
        let policy = BadRecordPolicy::from_options(
            &table.name,
            options,
            config.format.ignore_parse_errors(),
            &job.dead_letter_dir(),
        )?;
        // Fail at planning, not in the readers, on a format that cannot decode.
        config.format.message_decoder(
            value_schema.clone(),
            BadRecordPolicy::fail(&table.name),
            1,
            &config.context(),
            false,
        )?;
        Ok(StreamSource {
            table: config,
            schema,
            columns,
            value_schema,
            startup,
            bounded,
            policy,
            batch_size: job.batch_size.max(1),
        })
    }

    /// Merges the offsets of checkpointed positions of this stream.
    fn parse_positions(&self, positions: &[Vec<u8>]) -> Result<BTreeMap<u32, u64>> {
        let mut offsets = BTreeMap::new();
        for position in positions.iter().filter(|p| !p.is_empty()) {
            let parsed: Position = serde_json::from_slice(position).map_err(|e| {
                SluiceError::State(format!(
                    "table `{}`: unreadable stream source position: {e}",
                    self.table.table
                ))
            })?;
            match parsed.stream {
                Some(stream) if stream != self.table.stream => {
                    tracing::warn!(
                        table = %self.table.table,
                        checkpointed = %stream,
                        stream = %self.table.stream,
                        "the checkpoint read another stream; ignoring its offsets"
                    );
                }
                _ => offsets.extend(parsed.offsets),
            }
        }
        Ok(offsets)
    }
}

/// A reader's checkpointed position.
#[derive(Debug, Serialize, Deserialize)]
struct Position {
    /// The stream read (absent in hand-written positions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    /// Next offset to read, per partition.
    offsets: BTreeMap<u32, u64>,
}

impl SourceConnector for StreamSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }

    fn produces_updates(&self) -> bool {
        self.table.format.accepts_updates()
    }

    fn bad_records(&self) -> Option<&BadRecordPolicy> {
        Some(&self.policy)
    }

    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>> {
        self.open_at(parallelism, &[])
    }

    /// Resumes every partition at the offset a checkpointed reader recorded
    /// for it (at any parallelism); partitions without one start at their
    /// earliest offset, and all of them at the startup mode's without a
    /// checkpoint.
    fn open_at(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        let resumed = self.parse_positions(positions)?;
        let log = self.table.open_log()?;
        let stream = log
            .get_or_create(&self.table.stream)
            .map_err(|e| self.table.error(e))?;
        let parallelism = parallelism.max(1);
        let origins = self
            .columns
            .iter()
            .any(|c| matches!(c, ColumnSource::Metadata(..)));
        let mut readers: Vec<Box<dyn SourceReader>> = Vec::with_capacity(parallelism);
        for subtask in 0..parallelism {
            let partitions: Vec<u32> = (0..stream.partitions())
                .filter(|p| *p as usize % parallelism == subtask)
                .collect();
            let next: BTreeMap<u32, u64> = partitions
                .iter()
                .map(|&p| {
                    let start = match (resumed.get(&p), self.startup) {
                        (Some(&offset), _) => offset,
                        (None, _) if !resumed.is_empty() => stream.start_offset(p),
                        (None, Startup::Earliest) => stream.start_offset(p),
                        (None, Startup::Latest) => stream.end_offset(p),
                    };
                    (p, start)
                })
                .collect();
            let end = self.bounded.then(|| {
                partitions
                    .iter()
                    .map(|&p| (p, stream.end_offset(p)))
                    .collect()
            });
            let decoder = self.table.format.message_decoder(
                self.value_schema.clone(),
                self.policy.clone(),
                self.batch_size,
                &self.table.context(),
                origins,
            )?;
            readers.push(Box::new(StreamReader {
                table: self.table.clone(),
                stream: stream.clone(),
                schema: self.schema.clone(),
                columns: self.columns.clone(),
                decoder,
                partitions,
                next,
                end,
                batch_size: self.batch_size,
                cursor: 0,
                last_split: None,
            }));
        }
        Ok(readers)
    }

    fn describe(&self) -> String {
        format!(
            "stream '{}' in {} ({}{})",
            self.table.stream,
            self.table.dir.display(),
            self.table.format.extension(),
            if self.bounded { ", bounded" } else { "" }
        )
    }
}

/// One subtask's partitions of a stream.
struct StreamReader {
    table: StreamTable,
    /// The stream (the handle keeps the log open).
    stream: Stream,
    schema: SchemaRef,
    columns: Vec<ColumnSource>,
    decoder: Box<dyn MessageDecoder>,
    /// This subtask's partitions.
    partitions: Vec<u32>,
    /// Next offset per partition after the rows returned so far.
    next: BTreeMap<u32, u64>,
    /// Bounded mode: where each partition ends.
    end: Option<BTreeMap<u32, u64>>,
    batch_size: usize,
    /// The partition to read first next time (round-robin).
    cursor: usize,
    last_split: Option<u64>,
}

impl StreamReader {
    /// The bounded end of `partition` (`u64::MAX` when unbounded).
    fn limit(&self, partition: u32) -> u64 {
        self.end
            .as_ref()
            .map_or(u64::MAX, |end| end.get(&partition).copied().unwrap_or(0))
    }

    fn next_of(&self, partition: u32) -> u64 {
        self.next.get(&partition).copied().unwrap_or(0)
    }

    /// The partitions with records left to read (all, when unbounded).
    fn open_partitions(&self) -> Vec<u32> {
        self.partitions
            .iter()
            .copied()
            .filter(|&p| self.next_of(p) < self.limit(p))
            .collect()
    }

    /// Reads up to a batch of `partition`'s records from its next offset
    /// (a future that does not borrow the reader, whose decoder is not `Sync`).
    fn read(
        &self,
        partition: u32,
    ) -> impl std::future::Future<Output = Result<Vec<StoredRecord>>> + Send {
        let from = self.next_of(partition);
        let limit = self.limit(partition);
        let max = (limit - from).min(self.batch_size as u64) as usize;
        let stream = self.stream.clone();
        let table = self.table.clone();
        async move {
            let mut records =
                tokio::task::spawn_blocking(move || stream.read(partition, from, max))
                    .await
                    .map_err(|e| SluiceError::Runtime(format!("stream read task: {e}")))?
                    .map_err(|e| table.error(e))?;
            records.retain(|r| r.offset < limit);
            Ok(records)
        }
    }

    /// Decodes the records of one partition into output rows.
    async fn decode(
        &mut self,
        partition: u32,
        records: &[StoredRecord],
    ) -> Result<Option<ChangeBatch>> {
        let source = format!("{}[{partition}]", self.table.stream);
        let messages: Vec<Message<'_>> = records
            .iter()
            .map(|r| Message {
                position: r.offset,
                payload: &r.record.value,
            })
            .collect();
        let Some(decoded) = self.decoder.decode_messages(&source, &messages).await? else {
            return Ok(None);
        };
        let rows = decoded.batch.num_rows();
        if rows == 0 {
            return Ok(None);
        }
        let origins: Vec<&StoredRecord> = decoded.origins.iter().map(|&i| &records[i]).collect();
        let arrays = self
            .columns
            .iter()
            .map(|column| match column {
                ColumnSource::Value(index) => Ok(decoded.batch.data.column(*index).clone()),
                ColumnSource::Metadata(key, data_type) => {
                    let array = key.build(partition, &origins);
                    if array.data_type() == data_type {
                        Ok(array)
                    } else {
                        Ok(arrow::compute::cast(&array, data_type)?)
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        Ok(Some(decoded.batch.with_data(data)))
    }

    /// Waits until one of `partitions` has a record past its next offset,
    /// or [`WAIT`] passes (a future that does not borrow the reader).
    fn wait(&self, partitions: &[u32]) -> impl std::future::Future<Output = ()> + Send {
        let stream = self.stream.clone();
        let targets: Vec<(u32, u64)> = partitions.iter().map(|&p| (p, self.next_of(p))).collect();
        async move {
            if targets.is_empty() {
                return std::future::pending().await;
            }
            let waits = targets
                .iter()
                .map(|&(p, next)| Box::pin(stream.wait_for(p, next, WAIT)));
            futures::future::select_all(waits).await;
        }
    }
}

#[async_trait]
impl SourceReader for StreamReader {
    /// The next batch of one partition's records (partitions take turns);
    /// waits for records when every partition is read up, and ends in
    /// bounded mode once each reached its end offset. Offsets move only
    /// when a batch is returned, so a cancelled call loses nothing.
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        loop {
            if self.stream.is_deleted() {
                return Err(self
                    .table
                    .error(LogError::StreamDeleted(self.table.stream.clone())));
            }
            let open = self.open_partitions();
            if open.is_empty() && self.end.is_some() {
                return Ok(None);
            }
            for _ in 0..self.partitions.len() {
                let partition = self.partitions[self.cursor % self.partitions.len()];
                self.cursor = (self.cursor + 1) % self.partitions.len();
                let from = self.next_of(partition);
                if from >= self.limit(partition) || self.stream.end_offset(partition) <= from {
                    continue;
                }
                let records = self.read(partition).await?;
                let Some(last) = records.last().map(|r| r.offset) else {
                    // Retention removed the records from `from` on: skip the gap.
                    let start = self
                        .stream
                        .start_offset(partition)
                        .min(self.limit(partition));
                    if start > from {
                        self.next.insert(partition, start);
                    }
                    continue;
                };
                let batch = self.decode(partition, &records).await?;
                self.next.insert(partition, last + 1);
                if let Some(batch) = batch {
                    self.last_split = Some(u64::from(partition));
                    return Ok(Some(batch));
                }
            }
            let open = self.open_partitions();
            if open.is_empty() && self.end.is_some() {
                return Ok(None);
            }
            if open
                .iter()
                .all(|&p| self.stream.end_offset(p) <= self.next_of(p))
            {
                self.wait(&open).await;
            }
        }
    }

    fn batch_split(&self) -> Option<u64> {
        self.last_split
    }

    fn splits(&self) -> Vec<u64> {
        self.partitions.iter().map(|&p| u64::from(p)).collect()
    }

    /// `{"stream": name, "offsets": {"<partition>": next offset}}`.
    fn position(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&Position {
            stream: Some(self.table.stream.clone()),
            offsets: self.next.clone(),
        })
        .map_err(|e| SluiceError::State(e.to_string()))
    }
}

/// `sink.partitioner`.
#[derive(Debug, Clone)]
enum Partitioner {
    /// Each write goes to the next partition, starting at the subtask's.
    RoundRobin,
    /// By `partition_for_key` of the JSON-encoded key columns.
    Key {
        indices: Vec<usize>,
        schema: SchemaRef,
        format: Format,
    },
}

/// A configured `stream` sink.
#[derive(Debug)]
struct StreamSink {
    table: StreamTable,
    value_schema: SchemaRef,
    partitioner: Partitioner,
    /// Partitions of the stream when the sink creates it.
    partitions: u32,
}

impl StreamSink {
    fn new(table: &TableDef, default_dir: &std::path::Path) -> Result<Self> {
        let config = StreamTable::from_table(table, default_dir)?;
        let options = &table.options;
        let written = table.written_schema();
        if let Some(field) = written.fields().iter().find(|f| metadata_key(f).is_some()) {
            return Err(SluiceError::Config(format!(
                "table `{}`: metadata column `{}` cannot be written; declare it VIRTUAL",
                table.name,
                field.name()
            )));
        }
        config.format.check_message_schema(options, &written)?;
        let key_fields: Vec<&str> = options
            .get("key.fields")
            .map(|f| {
                f.split(';')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let partitioner = match options.get("sink.partitioner") {
            None | Some("round-robin") => {
                if !key_fields.is_empty() {
                    return Err(SluiceError::Config(format!(
                        "table `{}`: 'key.fields' is for 'sink.partitioner' = 'key'",
                        table.name
                    )));
                }
                Partitioner::RoundRobin
            }
            Some("key") => {
                if key_fields.is_empty() {
                    return Err(SluiceError::Config(format!(
                        "table `{}`: 'sink.partitioner' = 'key' needs 'key.fields' (the key columns, ';'-separated)",
                        table.name
                    )));
                }
                let mut indices = Vec::new();
                for name in &key_fields {
                    indices.push(written.index_of(name).map_err(|_| {
                        SluiceError::Config(format!(
                            "table `{}`: 'key.fields' names `{name}`, which is not a written column",
                            table.name
                        ))
                    })?);
                }
                let json = Options::new(
                    format!("table `{}` (key)", table.name),
                    BTreeMap::from([("format".to_string(), "json".to_string())]),
                );
                Partitioner::Key {
                    schema: Arc::new(written.project(&indices)?),
                    indices,
                    format: Format::for_messages(&json)?,
                }
            }
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: 'sink.partitioner' must be 'round-robin' or 'key', got '{other}'",
                    table.name
                )))
            }
        };
        let partitions = options.parse::<u32>("sink.partitions")?.unwrap_or(1);
        if partitions == 0 {
            return Err(SluiceError::Config(format!(
                "table `{}`: 'sink.partitions' must be at least 1",
                table.name
            )));
        }
        Ok(StreamSink {
            table: config,
            value_schema: written,
            partitioner,
            partitions,
        })
    }

    /// The stream, created with `sink.partitions` when it does not exist.
    fn stream(&self, log: &StreamLog) -> Result<Stream> {
        if let Some(stream) = log.stream(&self.table.stream) {
            return Ok(stream);
        }
        match log.create_stream(&self.table.stream, self.partitions) {
            Ok(stream) => Ok(stream),
            // Created meanwhile (by a source, say) with another count.
            Err(LogError::PartitionMismatch { .. }) => {
                log.stream(&self.table.stream).ok_or_else(|| {
                    self.table
                        .error(LogError::StreamDeleted(self.table.stream.clone()))
                })
            }
            Err(error) => Err(self.table.error(error)),
        }
    }
}

impl SinkConnector for StreamSink {
    fn accepts_updates(&self) -> bool {
        self.table.format.accepts_updates()
    }

    fn open(&self, subtask: usize, _parallelism: usize) -> Result<Box<dyn SinkWriter>> {
        let log = self.table.open_log()?;
        let stream = self.stream(&log)?;
        let context = self.table.context();
        let key = match &self.partitioner {
            Partitioner::RoundRobin => None,
            Partitioner::Key {
                indices,
                schema,
                format,
            } => Some((
                indices.clone(),
                format.message_encoder(
                    schema.clone(),
                    &MessageContext {
                        is_key: true,
                        ..context.clone()
                    },
                )?,
            )),
        };
        Ok(Box::new(StreamWriter {
            table: self.table.clone(),
            encoder: self
                .table
                .format
                .message_encoder(self.value_schema.clone(), &context)?,
            key,
            next_partition: subtask as u64 % u64::from(stream.partitions()),
            stream,
        }))
    }

    fn describe(&self) -> String {
        format!(
            "stream '{}' in {} ({})",
            self.table.stream,
            self.table.dir.display(),
            self.table.format.extension()
        )
    }
}

struct StreamWriter {
    table: StreamTable,
    /// The stream (the handle keeps the log open).
    stream: Stream,
    encoder: Box<dyn MessageEncoder>,
    /// `sink.partitioner = 'key'`: the key columns and their encoder.
    key: Option<(Vec<usize>, Box<dyn MessageEncoder>)>,
    /// Round-robin: the partition of the next write.
    next_partition: u64,
}

impl StreamWriter {
    /// The batch's records grouped by partition.
    async fn records(&mut self, batch: &ChangeBatch) -> Result<BTreeMap<u32, Vec<Record>>> {
        let mut values = Vec::with_capacity(batch.num_rows());
        self.encoder.encode_messages(batch, &mut values).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut grouped: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        match &mut self.key {
            None => {
                let partitions = u64::from(self.stream.partitions());
                let partition = (self.next_partition % partitions) as u32;
                self.next_partition = (self.next_partition + 1) % partitions;
                let records = values.into_iter().map(|v| Record::new(now, v)).collect();
                grouped.insert(partition, records);
            }
            Some((indices, encoder)) => {
                let mut keys = Vec::with_capacity(batch.num_rows());
                let projected = ChangeBatch::inserts(batch.data.project(indices)?);
                encoder.encode_messages(&projected, &mut keys).await?;
                if keys.len() != values.len() {
                    return Err(SluiceError::Runtime(format!(
                        "table `{}`: {} keys for {} values",
                        self.table.table,
                        keys.len(),
                        values.len()
                    )));
                }
                for (key, value) in keys.into_iter().zip(values) {
                    let partition = self.stream.partition_for_key(&key);
                    grouped
                        .entry(partition)
                        .or_default()
                        .push(Record::new(now, value).with_key(key));
                }
            }
        }
        Ok(grouped)
    }
}

#[async_trait]
impl SinkWriter for StreamWriter {
    /// Appends the batch (one append per partition, in parallel) and
    /// returns once the log made it durable.
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let grouped = self.records(batch).await?;
        let appends = grouped
            .into_iter()
            .filter(|(_, records)| !records.is_empty())
            .map(|(partition, records)| self.stream.append(partition, records));
        futures::future::try_join_all(appends)
            .await
            .map_err(|e| self.table.error(e))?;
        Ok(())
    }

    /// Writes are durable when `write` returns: nothing to flush.
    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::{Field, Int64Type, TimeUnit};
    use sluice_core::table::{metadata_column, TableColumn};

    fn job(dir: &std::path::Path, batch_size: usize) -> JobContext {
        JobContext {
            job_name: "test".into(),
            data_dir: dir.to_path_buf(),
            batch_size,
            exactly_once: false,
        }
    }

    fn table(dir: &std::path::Path, metadata: bool, options: &[(&str, &str)]) -> TableDef {
        let mut columns = vec![
            TableColumn::Physical(Field::new("id", DataType::Int64, true)),
            TableColumn::Physical(Field::new("url", DataType::Utf8, true)),
        ];
        if metadata {
            columns.extend([
                TableColumn::Physical(metadata_column(
                    Field::new("partition", DataType::Int32, true),
                    "partition",
                    true,
                )),
                TableColumn::Physical(metadata_column(
                    Field::new("offset", DataType::Int64, true),
                    "offset",
                    true,
                )),
                TableColumn::Physical(metadata_column(
                    Field::new(
                        "ts",
                        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                        true,
                    ),
                    "timestamp",
                    true,
                )),
            ]);
        }
        let mut values: BTreeMap<String, String> = [
            ("connector", "stream"),
            ("stream", "clicks"),
            ("format", "json"),
        ]
        .iter()
        .chain(options)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        values.insert("log.dir".into(), dir.join("log").display().to_string());
        TableDef {
            name: "t".into(),
            columns,
            watermark: None,
            primary_key: Vec::new(),
            options: Options::new("table `t`", values),
        }
    }

    fn source(table: &TableDef, dir: &std::path::Path, batch_size: usize) -> StreamSource {
        let projection: Vec<usize> = (0..table.physical_schema().fields().len()).collect();
        StreamSource::new(
            table,
            &projection,
            &job(dir, batch_size),
            &dir.join("unused"),
        )
        .unwrap()
    }

    fn log(dir: &std::path::Path) -> StreamLog {
        StreamLog::open_shared(&dir.join("log"), LogConfig::default()).unwrap()
    }

    fn json(id: i64) -> Record {
        Record::new(
            1_700_000_000_000 + id,
            format!(r#"{{"id":{id},"url":"u{id}"}}"#),
        )
    }

    /// Appends ids `ids` to `partition` of `clicks`.
    async fn append(dir: &std::path::Path, partition: u32, ids: std::ops::Range<i64>) {
        let stream = log(dir).stream("clicks").unwrap();
        stream
            .append(partition, ids.map(json).collect())
            .await
            .unwrap();
    }

    fn ids(batch: &ChangeBatch) -> Vec<i64> {
        let column = batch.data.column_by_name("id").unwrap();
        column.as_primitive::<Int64Type>().values().to_vec()
    }

    /// Reads a bounded reader to its end.
    async fn drain(reader: &mut Box<dyn SourceReader>) -> Vec<ChangeBatch> {
        let mut batches = Vec::new();
        while let Some(batch) = tokio::time::timeout(Duration::from_secs(30), reader.next_batch())
            .await
            .unwrap()
            .unwrap()
        {
            batches.push(batch);
        }
        batches
    }

    fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
        ids.sort_unstable();
        ids
    }

    #[tokio::test]
    async fn source_reads_from_earliest_with_metadata_and_ends_when_bounded() {
        let dir = tempfile::tempdir().unwrap();
        log(dir.path()).create_stream("clicks", 2).unwrap();
        append(dir.path(), 0, 0..3).await;
        append(dir.path(), 1, 3..5).await;
        let table = table(dir.path(), true, &[("scan.bounded.mode", "latest-offset")]);
        let source = source(&table, dir.path(), 100);
        assert!(source.is_bounded());
        let mut readers = source.open(1).unwrap();
        assert_eq!(readers[0].splits(), vec![0, 1]);
        // Appended after the start: beyond the bounded end.
        append(dir.path(), 0, 100..101).await;
        let batches = drain(&mut readers[0]).await;
        assert_eq!(batches.len(), 2);
        let mut seen = Vec::new();
        for batch in &batches {
            let partition = batch.data.column_by_name("partition").unwrap();
            let partition = partition.as_primitive::<arrow::datatypes::Int32Type>();
            let offsets = batch.data.column_by_name("offset").unwrap();
            let offsets = offsets.as_primitive::<Int64Type>();
            let ts = batch.data.column_by_name("ts").unwrap();
            let ts = ts.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            for (row, id) in ids(batch).into_iter().enumerate() {
                let expected_partition = if id < 3 { 0 } else { 1 };
                assert_eq!(partition.value(row), expected_partition);
                assert_eq!(offsets.value(row), if id < 3 { id } else { id - 3 });
                assert_eq!(ts.value(row), 1_700_000_000_000 + id);
                seen.push(id);
            }
        }
        assert_eq!(sorted(seen), vec![0, 1, 2, 3, 4]);
        let urls = batches[0].data.column_by_name("url").unwrap();
        let urls: &StringArray = urls.as_string();
        assert!(urls.value(0).starts_with('u'));
    }

    #[tokio::test]
    async fn source_from_latest_reads_only_new_records() {
        let dir = tempfile::tempdir().unwrap();
        log(dir.path()).create_stream("clicks", 1).unwrap();
        append(dir.path(), 0, 0..3).await;
        let bounded = table(
            dir.path(),
            false,
            &[
                ("scan.startup.mode", "latest-offset"),
                ("scan.bounded.mode", "latest-offset"),
            ],
        );
        let mut readers = source(&bounded, dir.path(), 100).open(1).unwrap();
        assert!(drain(&mut readers[0]).await.is_empty());

        let unbounded = table(dir.path(), false, &[("scan.startup.mode", "latest-offset")]);
        let mut readers = source(&unbounded, dir.path(), 100).open(1).unwrap();
        let waiting =
            tokio::time::timeout(Duration::from_millis(300), readers[0].next_batch()).await;
        assert!(waiting.is_err(), "no new records yet");
        append(dir.path(), 0, 3..5).await;
        let batch = tokio::time::timeout(Duration::from_secs(30), readers[0].next_batch())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ids(&batch), vec![3, 4]);
        let position: serde_json::Value =
            serde_json::from_slice(&readers[0].position().unwrap()).unwrap();
        assert_eq!(position["offsets"]["0"], 5);
        assert_eq!(position["stream"], "clicks");
    }

    #[tokio::test]
    async fn a_missing_stream_is_created_by_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let table = table(dir.path(), false, &[("scan.bounded.mode", "latest-offset")]);
        let mut readers = source(&table, dir.path(), 100).open(2).unwrap();
        assert_eq!(log(dir.path()).stream("clicks").unwrap().partitions(), 1);
        assert_eq!(readers[1].splits(), Vec::<u64>::new());
        assert!(drain(&mut readers[0]).await.is_empty());
        assert!(drain(&mut readers[1]).await.is_empty());
    }

    #[tokio::test]
    async fn positions_resume_after_the_last_emitted_record_at_any_parallelism() {
        let dir = tempfile::tempdir().unwrap();
        log(dir.path()).create_stream("clicks", 3).unwrap();
        for partition in 0..3u32 {
            let base = i64::from(partition) * 100;
            append(dir.path(), partition, base..base + 10).await;
        }
        let table = table(dir.path(), false, &[("scan.bounded.mode", "latest-offset")]);
        let source = source(&table, dir.path(), 4);
        let mut readers = source.open(2).unwrap();
        let mut emitted = Vec::new();
        for reader in &mut readers {
            for _ in 0..2 {
                let batch = reader.next_batch().await.unwrap().unwrap();
                let split = reader.batch_split().unwrap();
                assert!(ids(&batch).iter().all(|id| *id / 100 == split as i64));
                emitted.extend(ids(&batch));
            }
        }
        let positions: Vec<Vec<u8>> = readers.iter().map(|r| r.position().unwrap()).collect();
        let all: Vec<i64> = (0..3).flat_map(|p| p * 100..p * 100 + 10).collect();
        for parallelism in [1, 3] {
            let mut rest = Vec::new();
            for mut reader in source.open_at(parallelism, &positions).unwrap() {
                for batch in drain(&mut reader).await {
                    rest.extend(ids(&batch));
                }
            }
            let mut together = emitted.clone();
            together.extend(&rest);
            assert_eq!(sorted(together), all, "parallelism {parallelism}");
        }
    }

    #[tokio::test]
    async fn bad_records_fail_or_go_to_the_dead_letter_file() {
        let dir = tempfile::tempdir().unwrap();
        let stream = log(dir.path()).create_stream("clicks", 1).unwrap();
        stream
            .append(0, vec![json(0), Record::new(0, "not json"), json(2)])
            .await
            .unwrap();
        let failing = table(dir.path(), false, &[("scan.bounded.mode", "latest-offset")]);
        let mut readers = source(&failing, dir.path(), 100).open(1).unwrap();
        let error = readers[0].next_batch().await.unwrap_err().to_string();
        assert!(error.contains("clicks[0]:1"), "{error}");

        let dlq = dir.path().join("bad.jsonl");
        let dead_lettering = table(
            dir.path(),
            true,
            &[
                ("scan.bounded.mode", "latest-offset"),
                ("errors", "dlq"),
                ("dlq.path", dlq.to_str().unwrap()),
            ],
        );
        let mut readers = source(&dead_lettering, dir.path(), 100).open(1).unwrap();
        let batches = drain(&mut readers[0]).await;
        let offsets: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let column = b.data.column_by_name("offset").unwrap();
                column.as_primitive::<Int64Type>().values().to_vec()
            })
            .collect();
        assert_eq!(offsets, vec![0, 2]);
        let letter: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&dlq).unwrap().trim()).unwrap();
        assert_eq!(letter["source"], "clicks[0]");
        assert_eq!(letter["position"], 1);
        assert_eq!(letter["raw"], "not json");
    }

    fn batch(ids: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("url", DataType::Utf8, true),
        ]));
        let urls: Vec<String> = ids.iter().map(|id| format!("u{id}")).collect();
        ChangeBatch::inserts(
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(ids.to_vec())),
                    Arc::new(StringArray::from(urls)),
                ],
            )
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn sink_writes_what_the_source_reads() {
        let dir = tempfile::tempdir().unwrap();
        let out = table(dir.path(), false, &[("sink.partitions", "3")]);
        let sink = StreamSink::new(&out, &dir.path().join("unused")).unwrap();
        assert!(!sink.accepts_updates());
        let mut writer = sink.open(1, 2).unwrap();
        writer.write(&batch(&[1, 2, 3])).await.unwrap();
        writer.write(&batch(&[4, 5])).await.unwrap();
        writer.write(&batch(&[])).await.unwrap();
        assert!(writer.pre_commit(1).await.unwrap().is_empty());
        writer.finish().await.unwrap();
        let stream = log(dir.path()).stream("clicks").unwrap();
        assert_eq!(stream.partitions(), 3);
        // Round-robin from the subtask's partition, a batch per append.
        assert_eq!(stream.end_offset(1), 3);
        assert_eq!(stream.end_offset(2), 2);
        let input = table(dir.path(), false, &[("scan.bounded.mode", "latest-offset")]);
        let mut rows = Vec::new();
        for mut reader in source(&input, dir.path(), 100).open(2).unwrap() {
            for batch in drain(&mut reader).await {
                rows.extend(ids(&batch));
            }
        }
        assert_eq!(sorted(rows), vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn key_partitioning_keeps_equal_keys_together() {
        let dir = tempfile::tempdir().unwrap();
        let out = table(
            dir.path(),
            false,
            &[
                ("sink.partitions", "4"),
                ("sink.partitioner", "key"),
                ("key.fields", "id"),
            ],
        );
        let sink = StreamSink::new(&out, &dir.path().join("unused")).unwrap();
        let mut writer = sink.open(0, 1).unwrap();
        for _ in 0..3 {
            writer
                .write(&batch(&(0..20).collect::<Vec<_>>()))
                .await
                .unwrap();
        }
        let stream = log(dir.path()).stream("clicks").unwrap();
        let mut partition_of = BTreeMap::new();
        let mut used = std::collections::BTreeSet::new();
        for partition in 0..4 {
            for stored in stream.read(partition, 0, 1000).unwrap() {
                let key = stored.record.key.unwrap();
                assert_eq!(stream.partition_for_key(&key), partition);
                let value: serde_json::Value =
                    serde_json::from_slice(&stored.record.value).unwrap();
                let id = value["id"].as_i64().unwrap();
                assert_eq!(key, format!(r#"{{"id":{id}}}"#).into_bytes());
                assert_eq!(*partition_of.entry(id).or_insert(partition), partition);
                used.insert(partition);
            }
        }
        assert_eq!(partition_of.len(), 20);
        assert!(used.len() > 1);
    }

    #[test]
    fn options_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let job = job(dir.path(), 10);
        let connector = StreamConnector::new(dir.path().to_path_buf());
        let mut bad = table(dir.path(), false, &[("stream", "no/slash")]);
        let error = connector.create_source(&bad, &[0], &job).unwrap_err();
        assert!(error.to_string().contains("invalid stream name"), "{error}");
        bad = table(dir.path(), false, &[("scan.startup.mode", "group-offsets")]);
        assert!(connector.create_source(&bad, &[0], &job).is_err());
        bad = table(dir.path(), false, &[("sink.partitioner", "key")]);
        let error = connector.create_sink(&bad, &job).unwrap_err();
        assert!(error.to_string().contains("key.fields"), "{error}");
        bad = table(dir.path(), false, &[("topic", "x")]);
        assert!(connector.create_sink(&bad, &job).is_err());
        let with_metadata = table(dir.path(), true, &[]);
        // Virtual metadata columns are not written.
        assert!(connector.create_sink(&with_metadata, &job).is_ok());
    }
}
