//! The `kafka` connector (Flink's option names), on librdkafka through
//! `rdkafka`.
//!
//! Source: the partitions of `topic` are spread over the source subtasks
//! (partition `i` of the sorted list goes to subtask `i % parallelism`); each
//! subtask reads its partitions from the startup offsets, or from the offsets
//! a checkpoint recorded (the checkpoint is the source of truth; offsets are
//! also committed to `properties.group.id`, when given, for monitoring tools).
//! `scan.bounded.mode = 'latest-offset'` stops at the end offsets seen at start.
//! Message values are decoded with the table's `format` (`json`, `csv`); the
//! "line" of a bad record is its offset.
//!
//! Sink: one producer per subtask, values encoded with `format`, keys with
//! `key.format` from `key.fields`; `sink.partitioner` picks partitions; with
//! `sink.delivery-guarantee = 'at-least-once'` (the default) every checkpoint
//! waits until all records sent so far are acknowledged.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_core::connector::{
    ConnectorFactory, JobContext, SinkConnector, SinkWriter, SourceConnector, SourceReader,
};
use sluice_core::dlq::{BadRecordPolicy, BAD_RECORD_OPTIONS};
use sluice_core::options::{OptionSpec, Options};
use sluice_core::table::TableDef;
use sluice_core::{ChangeBatch, Result, SluiceError};

use crate::formats::{concat, Format, LineChunk, RecordDecoder, RecordEncoder};
use crate::{project_schema, SOURCE_OPTIONS};

const KAFKA_OPTIONS: [OptionSpec; 15] = [
    OptionSpec::required("connector", "'kafka'"),
    OptionSpec::required("topic", "the topic to read or write"),
    OptionSpec::required(
        "properties.bootstrap.servers",
        "Kafka brokers, e.g. 'localhost:9092' (every other 'properties.*' key goes to librdkafka as is)",
    ),
    OptionSpec::optional("format", "value format: 'json' or 'csv'"),
    OptionSpec::optional("value.format", "same as 'format'"),
    OptionSpec::optional(
        "scan.startup.mode",
        "'group-offsets' (default; earliest without committed offsets), 'earliest-offset', 'latest-offset', 'timestamp', 'specific-offsets'",
    ),
    OptionSpec::optional(
        "scan.startup.timestamp-millis",
        "start at the first record at or after this epoch time (mode 'timestamp')",
    ),
    OptionSpec::optional(
        "scan.startup.specific-offsets",
        "'partition:0,offset:42;partition:1,offset:300' (mode 'specific-offsets'; other partitions start at the earliest offset)",
    ),
    OptionSpec::optional(
        "scan.bounded.mode",
        "'unbounded' (default) or 'latest-offset': stop at the end offsets seen when the job starts",
    ),
    OptionSpec::optional(
        "scan.topic-partition-discovery.interval",
        "accepted; partitions are listed when the job starts",
    ),
    OptionSpec::optional(
        "sink.delivery-guarantee",
        "'at-least-once' (default: every checkpoint waits for acknowledgements) or 'none'",
    ),
    OptionSpec::optional(
        "sink.partitioner",
        "'default' (by key hash, or sticky without key), 'fixed' (one partition per subtask), 'round-robin'",
    ),
    OptionSpec::optional("key.format", "format of the message key: 'json' or 'csv'"),
    OptionSpec::optional("key.fields", "columns written as the message key, separated by ';'"),
    OptionSpec::optional(
        "sink.transactional-id-prefix",
        "reserved for exactly-once delivery (not supported yet)",
    ),
];

/// How long metadata and offset requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

fn kafka_error(table: &str, what: &str, error: impl fmt::Display) -> SluiceError {
    SluiceError::Connector(format!("table `{table}`: kafka {what}: {error}"))
}

/// Creates `kafka` sources and sinks.
pub struct KafkaConnector;

/// What a source or sink of one table was configured with.
#[derive(Debug, Clone)]
struct KafkaTable {
    table: String,
    topic: String,
    /// librdkafka settings from `properties.*`.
    properties: BTreeMap<String, String>,
    format: Format,
    /// `properties.group.id` was given: offsets are committed to it.
    group: Option<String>,
}

impl KafkaTable {
    fn from_table(table: &TableDef) -> Result<Self> {
        let options = &table.options;
        let mut properties = BTreeMap::new();
        let mut plain = BTreeMap::new();
        for (key, value) in options.iter() {
            match key.strip_prefix("properties.") {
                Some(property) => {
                    properties.insert(property.to_string(), value.to_string());
                }
                None => {
                    let key = if key == "value.format" { "format" } else { key };
                    plain.insert(key.to_string(), value.to_string());
                }
            }
        }
        let plain = Options::new(options.owner(), plain);
        let format = Format::from_options(&plain)?;
        if format.accepts_updates() {
            return Err(SluiceError::Config(format!(
                "table `{}`: the kafka connector does not read or write changelog formats yet",
                table.name
            )));
        }
        let mut specs: Vec<OptionSpec> = KAFKA_OPTIONS
            .iter()
            .chain(BAD_RECORD_OPTIONS.iter())
            .chain(format.option_specs())
            .chain(SOURCE_OPTIONS.iter())
            .copied()
            .collect();
        // `properties.bootstrap.servers` was moved out with the other properties.
        specs.retain(|spec| !spec.key.starts_with("properties."));
        plain.validate(&specs)?;
        if !properties.contains_key("bootstrap.servers") {
            return Err(SluiceError::Config(format!(
                "table `{}`: missing option 'properties.bootstrap.servers'",
                table.name
            )));
        }
        Ok(KafkaTable {
            table: table.name.clone(),
            topic: options.require("topic")?.to_string(),
            group: properties.get("group.id").cloned(),
            properties,
            format,
        })
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    fn error(&self, what: &str, error: impl fmt::Display) -> SluiceError {
        kafka_error(&self.table, what, error)
    }
}

impl ConnectorFactory for KafkaConnector {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        let kafka = KafkaTable::from_table(table)?;
        let options = &table.options;
        let startup = Startup::from_options(options)?;
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
        kafka
            .format
            .decoder(schema.clone(), BadRecordPolicy::fail(&table.name), 1)?;
        let policy = BadRecordPolicy::from_options(
            &table.name,
            options,
            kafka.format.ignore_parse_errors(),
            &job.dead_letter_dir(),
        )?;
        Ok(Arc::new(KafkaSource {
            kafka,
            schema,
            startup,
            bounded,
            policy,
            batch_size: job.batch_size,
            default_group: format!("sluice-{}", job.job_name),
        }))
    }

    fn create_sink(&self, table: &TableDef, _job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        let kafka = KafkaTable::from_table(table)?;
        let options = &table.options;
        let schema = table.physical_schema();
        kafka.format.encoder(schema.clone())?;
        let flush_on_checkpoint = match options.get("sink.delivery-guarantee") {
            None | Some("at-least-once") => true,
            Some("none") => false,
            Some("exactly-once") => {
                return Err(SluiceError::Unsupported(format!(
                    "table `{}`: 'sink.delivery-guarantee' = 'exactly-once' (Kafka transactions) is not supported yet; use 'at-least-once'",
                    table.name
                )))
            }
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: 'sink.delivery-guarantee' must be 'none', 'at-least-once' or 'exactly-once', got '{other}'",
                    table.name
                )))
            }
        };
        let partitioner = match options.get("sink.partitioner") {
            None | Some("default") => Partitioner::Default,
            Some("fixed") => Partitioner::Fixed,
            Some("round-robin") => Partitioner::RoundRobin,
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: 'sink.partitioner' must be 'default', 'fixed' or 'round-robin', got '{other}'",
                    table.name
                )))
            }
        };
        let key = match options.get("key.fields") {
            None => None,
            Some(fields) => {
                let names: Vec<&str> = fields.split(';').map(str::trim).collect();
                let indices = names
                    .iter()
                    .map(|name| {
                        schema.index_of(name).map_err(|_| {
                            SluiceError::Config(format!(
                                "table `{}`: 'key.fields' names '{name}', which is not a column",
                                table.name
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let key_schema = Arc::new(schema.project(&indices)?);
                let format_name = options.get("key.format").unwrap_or("json");
                let key_format = Format::from_options(&Options::new(
                    options.owner(),
                    [("format".to_string(), format_name.to_string())].into(),
                ))?;
                key_format.encoder(key_schema.clone())?;
                Some(KeySpec {
                    indices,
                    schema: key_schema,
                    format: key_format,
                })
            }
        };
        Ok(Arc::new(KafkaSink {
            kafka,
            schema,
            key,
            partitioner,
            flush_on_checkpoint,
        }))
    }
}

/// Where a reader starts in partitions a checkpoint has no offset for.
#[derive(Debug, Clone)]
enum Startup {
    GroupOffsets,
    Earliest,
    Latest,
    Timestamp(i64),
    Specific(BTreeMap<i32, i64>),
}

impl Startup {
    fn from_options(options: &Options) -> Result<Self> {
        Ok(match options.get("scan.startup.mode") {
            None | Some("group-offsets") => Startup::GroupOffsets,
            Some("earliest-offset") => Startup::Earliest,
            Some("latest-offset") => Startup::Latest,
            Some("timestamp") => Startup::Timestamp(
                options
                    .parse::<i64>("scan.startup.timestamp-millis")?
                    .ok_or_else(|| {
                        SluiceError::Config(format!(
                            "{}: 'scan.startup.mode' = 'timestamp' needs 'scan.startup.timestamp-millis'",
                            options.owner()
                        ))
                    })?,
            ),
            Some("specific-offsets") => {
                let raw = options.require("scan.startup.specific-offsets")?;
                Startup::Specific(parse_specific_offsets(raw).ok_or_else(|| {
                    SluiceError::Config(format!(
                        "{}: 'scan.startup.specific-offsets' = '{raw}' is not like 'partition:0,offset:42;partition:1,offset:300'",
                        options.owner()
                    ))
                })?)
            }
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "{}: unknown 'scan.startup.mode' '{other}'; use 'group-offsets', 'earliest-offset', 'latest-offset', 'timestamp' or 'specific-offsets'",
                    options.owner()
                )))
            }
        })
    }
}

/// Parses `partition:0,offset:42;partition:1,offset:300`.
fn parse_specific_offsets(raw: &str) -> Option<BTreeMap<i32, i64>> {
    raw.split(';')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (partition, offset) = part.split_once(',')?;
            let partition = partition
                .trim()
                .strip_prefix("partition:")?
                .trim()
                .parse()
                .ok()?;
            let offset = offset.trim().strip_prefix("offset:")?.trim().parse().ok()?;
            Some((partition, offset))
        })
        .collect()
}

#[derive(Debug)]
struct KafkaSource {
    kafka: KafkaTable,
    schema: SchemaRef,
    startup: Startup,
    bounded: bool,
    policy: BadRecordPolicy,
    batch_size: usize,
    /// librdkafka needs a group id to consume; used when none is given.
    default_group: String,
}

/// Next offset to read per partition: a reader's checkpointed position.
type Offsets = BTreeMap<i32, i64>;

impl KafkaSource {
    fn consumer(&self) -> Result<StreamConsumer> {
        let mut config = self.kafka.client_config();
        if self.kafka.group.is_none() {
            config.set("group.id", &self.default_group);
        }
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        if config.get("auto.offset.reset").is_none() {
            config.set("auto.offset.reset", "earliest");
        }
        config
            .create()
            .map_err(|e| self.kafka.error("creating a consumer", e))
    }

    fn partitions(&self, consumer: &StreamConsumer) -> Result<Vec<i32>> {
        let metadata = consumer
            .fetch_metadata(Some(&self.kafka.topic), METADATA_TIMEOUT)
            .map_err(|e| self.kafka.error("reading topic metadata", e))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.kafka.topic)
            .ok_or_else(|| {
                self.kafka
                    .error("reading topic metadata", "topic not found")
            })?;
        if let Some(error) = topic.error() {
            return Err(self.kafka.error(
                &format!("reading topic '{}'", self.kafka.topic),
                RDKafkaErrorCode::from(error),
            ));
        }
        let mut partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
        partitions.sort_unstable();
        if partitions.is_empty() {
            return Err(self.kafka.error(
                &format!("reading topic '{}'", self.kafka.topic),
                "it has no partitions (does it exist?)",
            ));
        }
        Ok(partitions)
    }

    /// The startup offset of every partition without a checkpointed one.
    fn startup_offsets(&self, consumer: &StreamConsumer, partitions: &[i32]) -> Result<Offsets> {
        let topic = &self.kafka.topic;
        let mut offsets = Offsets::new();
        match &self.startup {
            Startup::GroupOffsets => {
                let mut list = TopicPartitionList::new();
                for &partition in partitions {
                    list.add_partition(topic, partition);
                }
                let committed = consumer
                    .committed_offsets(list, METADATA_TIMEOUT)
                    .map_err(|e| self.kafka.error("reading committed group offsets", e))?;
                for element in committed.elements() {
                    if let Offset::Offset(offset) = element.offset() {
                        offsets.insert(element.partition(), offset);
                    }
                }
            }
            Startup::Earliest => {}
            Startup::Latest => {
                for &partition in partitions {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                        .map_err(|e| self.kafka.error("reading end offsets", e))?;
                    offsets.insert(partition, high);
                }
            }
            Startup::Timestamp(millis) => {
                let mut list = TopicPartitionList::new();
                for &partition in partitions {
                    list.add_partition_offset(topic, partition, Offset::Offset(*millis))
                        .map_err(|e| self.kafka.error("looking up offsets by time", e))?;
                }
                let found = consumer
                    .offsets_for_times(list, METADATA_TIMEOUT)
                    .map_err(|e| self.kafka.error("looking up offsets by time", e))?;
                for element in found.elements() {
                    match element.offset() {
                        Offset::Offset(offset) => {
                            offsets.insert(element.partition(), offset);
                        }
                        // No record at or after the time: start at the end.
                        Offset::End => {
                            let (_, high) = consumer
                                .fetch_watermarks(topic, element.partition(), METADATA_TIMEOUT)
                                .map_err(|e| self.kafka.error("reading end offsets", e))?;
                            offsets.insert(element.partition(), high);
                        }
                        _ => {}
                    }
                }
            }
            Startup::Specific(specific) => offsets.extend(specific),
        }
        Ok(offsets)
    }
}

impl SourceConnector for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }

    fn bad_records(&self) -> Option<&BadRecordPolicy> {
        Some(&self.policy)
    }

    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>> {
        self.open_at(parallelism, &[])
    }

    /// Resumes every partition at the offset a checkpointed reader recorded
    /// for it (at any parallelism: positions are per partition).
    fn open_at(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        let mut resumed = Offsets::new();
        for position in positions.iter().filter(|p| !p.is_empty()) {
            let offsets: Offsets = serde_json::from_slice(position).map_err(|e| {
                SluiceError::State(format!(
                    "table `{}`: unreadable kafka source position: {e}",
                    self.kafka.table
                ))
            })?;
            resumed.extend(offsets);
        }
        let mut readers: Vec<Box<dyn SourceReader>> = Vec::with_capacity(parallelism);
        let metadata_consumer = self.consumer()?;
        let partitions = self.partitions(&metadata_consumer)?;
        let startup = if resumed.is_empty() {
            self.startup_offsets(&metadata_consumer, &partitions)?
        } else {
            Offsets::new()
        };
        for subtask in 0..parallelism {
            let mine: Vec<i32> = partitions
                .iter()
                .enumerate()
                .filter(|(index, _)| index % parallelism == subtask)
                .map(|(_, partition)| *partition)
                .collect();
            let consumer = self.consumer()?;
            let mut next = Offsets::new();
            let mut list = TopicPartitionList::new();
            for &partition in &mine {
                let offset = resumed.get(&partition).or(startup.get(&partition)).copied();
                let start = match offset {
                    Some(offset) => Offset::Offset(offset),
                    None => Offset::Beginning,
                };
                list.add_partition_offset(&self.kafka.topic, partition, start)
                    .map_err(|e| self.kafka.error("assigning partitions", e))?;
                if let Some(offset) = offset {
                    next.insert(partition, offset);
                }
            }
            consumer
                .assign(&list)
                .map_err(|e| self.kafka.error("assigning partitions", e))?;
            let end = if self.bounded {
                let mut end = Offsets::new();
                for &partition in &mine {
                    let (low, high) = consumer
                        .fetch_watermarks(&self.kafka.topic, partition, METADATA_TIMEOUT)
                        .map_err(|e| self.kafka.error("reading end offsets", e))?;
                    end.insert(partition, high);
                    next.entry(partition).or_insert(low);
                }
                Some(end)
            } else {
                None
            };
            readers.push(Box::new(KafkaReader {
                kafka: self.kafka.clone(),
                consumer,
                decoder: self.kafka.format.decoder(
                    self.schema.clone(),
                    self.policy.clone(),
                    self.batch_size,
                )?,
                partitions: mine,
                next,
                end,
                batch_size: self.batch_size,
            }));
        }
        Ok(readers)
    }

    fn describe(&self) -> String {
        format!(
            "kafka topic '{}' ({}{})",
            self.kafka.topic,
            self.kafka.format.extension(),
            if self.bounded { ", bounded" } else { "" }
        )
    }
}

/// One subtask's partitions.
struct KafkaReader {
    kafka: KafkaTable,
    consumer: StreamConsumer,
    decoder: Box<dyn RecordDecoder>,
    partitions: Vec<i32>,
    /// Next offset to read, per partition read from so far (or resumed).
    next: Offsets,
    /// Bounded mode: where each partition ends.
    end: Option<Offsets>,
    batch_size: usize,
}

/// Wait for the first record of a batch before checking for the end again.
const FIRST_RECORD_WAIT: Duration = Duration::from_millis(200);
/// Wait for more records once a batch has some.
const MORE_RECORDS_WAIT: Duration = Duration::from_millis(5);

impl KafkaReader {
    /// Bounded mode: every partition has reached its end offset (records
    /// the consumer skips, like transaction markers, count as read).
    fn finished(&mut self) -> Result<bool> {
        let Some(end) = &self.end else {
            return Ok(false);
        };
        let mut behind: Vec<i32> = self
            .partitions
            .iter()
            .copied()
            .filter(|p| self.next.get(p).copied().unwrap_or(0) < end.get(p).copied().unwrap_or(0))
            .collect();
        if behind.is_empty() {
            return Ok(true);
        }
        let position = self
            .consumer
            .position()
            .map_err(|e| self.kafka.error("reading the consumer position", e))?;
        for element in position.elements() {
            if let Offset::Offset(offset) = element.offset() {
                if offset >= end.get(&element.partition()).copied().unwrap_or(0) {
                    behind.retain(|p| *p != element.partition());
                }
            }
        }
        Ok(behind.is_empty())
    }

    /// Decodes records of one partition, in runs of consecutive offsets.
    fn decode(&mut self, records: Vec<(i32, i64, Vec<u8>)>) -> Result<Option<ChangeBatch>> {
        let mut batches = Vec::new();
        let mut chunk: Option<(i32, i64, LineChunk)> = None;
        for (partition, offset, mut value) in records {
            // Records are lines for the decoders: a JSON value's newlines are
            // whitespace.
            for byte in value.iter_mut().filter(|b| **b == b'\n') {
                *byte = b' ';
            }
            let continues =
                matches!(&chunk, Some((p, last, _)) if *p == partition && *last + 1 == offset);
            if !continues {
                if let Some((_, _, done)) = chunk.take() {
                    batches.extend(self.decoder.decode(&done)?);
                }
                chunk = Some((
                    partition,
                    offset,
                    LineChunk {
                        source: Arc::from(format!("{}[{partition}]", self.kafka.topic)),
                        first_line: offset as u64,
                        data: Vec::new(),
                        line_count: 0,
                        start_offset: offset as u64,
                        end_offset: offset as u64,
                    },
                ));
            }
            if let Some((_, last, lines)) = &mut chunk {
                *last = offset;
                lines.data.extend_from_slice(&value);
                lines.data.push(b'\n');
                lines.line_count += 1;
                lines.end_offset = offset as u64 + 1;
            }
        }
        if let Some((_, _, done)) = chunk {
            batches.extend(self.decoder.decode(&done)?);
        }
        let Some(first) = batches.first() else {
            return Ok(None);
        };
        let schema = first.data.schema();
        let data: Vec<_> = batches.into_iter().map(|b| b.data).collect();
        Ok(concat(&schema, data)?.map(ChangeBatch::inserts))
    }
}

#[async_trait]
impl SourceReader for KafkaReader {
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        loop {
            if self.finished()? {
                return Ok(None);
            }
            if self.partitions.is_empty() {
                // More subtasks than partitions: this one idles.
                std::future::pending::<()>().await;
            }
            let mut records = Vec::new();
            let mut wait = FIRST_RECORD_WAIT;
            while records.len() < self.batch_size {
                let message = match tokio::time::timeout(wait, self.consumer.recv()).await {
                    Err(_) => break,
                    Ok(message) => message.map_err(|e| self.kafka.error("reading", e))?,
                };
                wait = MORE_RECORDS_WAIT;
                let (partition, offset) = (message.partition(), message.offset());
                self.next.insert(partition, offset + 1);
                if let Some(value) = message.payload() {
                    records.push((partition, offset, value.to_vec()));
                }
            }
            if records.is_empty() {
                continue;
            }
            if let Some(batch) = self.decode(records)? {
                return Ok(Some(batch));
            }
        }
    }

    /// The next offset of every partition read so far; also committed to the
    /// consumer group (when one is configured) for monitoring.
    fn position(&self) -> Result<Vec<u8>> {
        if self.kafka.group.is_some() && !self.next.is_empty() {
            let mut list = TopicPartitionList::new();
            for (partition, offset) in &self.next {
                list.add_partition_offset(&self.kafka.topic, *partition, Offset::Offset(*offset))
                    .map_err(|e| self.kafka.error("committing offsets", e))?;
            }
            if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
                tracing::warn!(table = %self.kafka.table, %error, "could not commit offsets to the consumer group");
            }
        }
        serde_json::to_vec(&self.next).map_err(|e| SluiceError::State(e.to_string()))
    }
}

#[derive(Debug, Clone, Copy)]
enum Partitioner {
    Default,
    Fixed,
    RoundRobin,
}

/// The columns written as message keys, and their format.
#[derive(Debug, Clone)]
struct KeySpec {
    indices: Vec<usize>,
    schema: SchemaRef,
    format: Format,
}

#[derive(Debug)]
struct KafkaSink {
    kafka: KafkaTable,
    schema: SchemaRef,
    key: Option<KeySpec>,
    partitioner: Partitioner,
    flush_on_checkpoint: bool,
}

/// Keeps the first delivery failure of a producer.
#[derive(Default)]
struct DeliveryErrors {
    first: Mutex<Option<String>>,
}

impl ClientContext for DeliveryErrors {}

impl ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            if let Ok(mut first) = self.first.lock() {
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

impl SinkConnector for KafkaSink {
    fn open(&self, subtask: usize, _parallelism: usize) -> Result<Box<dyn SinkWriter>> {
        let producer: ThreadedProducer<DeliveryErrors> = self
            .kafka
            .client_config()
            .create_with_context(DeliveryErrors::default())
            .map_err(|e| self.kafka.error("creating a producer", e))?;
        let partitions = match self.partitioner {
            Partitioner::Default => 0,
            _ => {
                let metadata = producer
                    .client()
                    .fetch_metadata(Some(&self.kafka.topic), METADATA_TIMEOUT)
                    .map_err(|e| self.kafka.error("reading topic metadata", e))?;
                metadata
                    .topics()
                    .first()
                    .map_or(0, |topic| topic.partitions().len() as i32)
                    .max(1)
            }
        };
        Ok(Box::new(KafkaWriter {
            kafka: self.kafka.clone(),
            encoder: self.kafka.format.encoder(self.schema.clone())?,
            key: match &self.key {
                Some(key) => Some((key.clone(), key.format.encoder(key.schema.clone())?)),
                None => None,
            },
            producer,
            partitioner: self.partitioner,
            partitions,
            subtask: subtask as i32,
            sent: 0,
            flush_on_checkpoint: self.flush_on_checkpoint,
        }))
    }

    fn describe(&self) -> String {
        format!(
            "kafka topic '{}' ({})",
            self.kafka.topic,
            self.kafka.format.extension()
        )
    }
}

struct KafkaWriter {
    kafka: KafkaTable,
    encoder: Box<dyn RecordEncoder>,
    key: Option<(KeySpec, Box<dyn RecordEncoder>)>,
    producer: ThreadedProducer<DeliveryErrors>,
    partitioner: Partitioner,
    partitions: i32,
    subtask: i32,
    sent: u64,
    flush_on_checkpoint: bool,
}

impl KafkaWriter {
    fn check_deliveries(&self) -> Result<()> {
        let first = self
            .producer
            .context()
            .first
            .lock()
            .ok()
            .and_then(|e| e.clone());
        match first {
            Some(error) => Err(self.kafka.error("delivering records", error)),
            None => Ok(()),
        }
    }

    async fn flush(&mut self) -> Result<()> {
        let producer = self.producer.clone();
        let table = self.kafka.table.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(120)))
            .await
            .map_err(|e| kafka_error(&table, "flushing", e))?
            .map_err(|e| kafka_error(&table, "flushing", e))?;
        self.check_deliveries()
    }
}

/// Splits an encoder's output into one value per row.
fn rows_of(encoded: &[u8]) -> impl Iterator<Item = &[u8]> {
    encoded
        .strip_suffix(b"\n")
        .unwrap_or(encoded)
        .split(|b| *b == b'\n')
}

#[async_trait]
impl SinkWriter for KafkaWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.check_deliveries()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut values = Vec::new();
        self.encoder.encode(batch, &mut values)?;
        let mut keys = Vec::new();
        if let Some((spec, encoder)) = &mut self.key {
            let projected = ChangeBatch {
                data: batch.data.project(&spec.indices)?,
                kinds: batch.kinds.clone(),
            };
            encoder.encode(&projected, &mut keys)?;
        }
        let mut key_rows = rows_of(&keys);
        for value in rows_of(&values) {
            let key = if self.key.is_some() {
                key_rows.next()
            } else {
                None
            };
            let partition = match self.partitioner {
                Partitioner::Default => None,
                Partitioner::Fixed => Some(self.subtask % self.partitions),
                Partitioner::RoundRobin => Some((self.sent % self.partitions as u64) as i32),
            };
            self.sent += 1;
            let mut record = BaseRecord::to(&self.kafka.topic).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => return Err(self.kafka.error("sending a record", error)),
                }
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.flush().await
    }

    /// At-least-once: every record sent before the barrier is acknowledged
    /// before the checkpoint completes.
    async fn pre_commit(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        if self.flush_on_checkpoint {
            self.flush().await?;
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_offsets_parse_like_flink() {
        assert_eq!(
            parse_specific_offsets("partition:0,offset:42;partition:1,offset:300"),
            Some([(0, 42), (1, 300)].into())
        );
        assert_eq!(parse_specific_offsets("0:42"), None);
    }

    #[test]
    fn encoded_rows_split_into_values() {
        let rows: Vec<&[u8]> = rows_of(b"{\"a\":1}\n{\"a\":2}\n").collect();
        assert_eq!(rows, vec![&b"{\"a\":1}"[..], b"{\"a\":2}"]);
    }
}
