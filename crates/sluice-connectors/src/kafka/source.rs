//! The kafka source: partitions spread over subtasks, offsets in checkpoints.
//!
//! Every partition belongs to one subtask by Flink's rule (a start index from
//! the topic name's hash, plus the partition number, modulo the parallelism),
//! so partitions found later keep the existing ones where they are. With
//! `scan.topic-partition-discovery.interval`, each reader lists the topics
//! (or the topics matching `topic-pattern`) at that interval and starts
//! reading its new partitions from their earliest offset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::UInt32Array;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::connector::{PartitionedSource, SourceConnector, SourceReader};
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::{ChangeBatch, Result, SluiceError};

use super::record::{assemble, take_rows, ColumnSource, KafkaRecord};
use super::upsert::UpsertState;
use super::{KafkaTable, Startup, Topics, METADATA_TIMEOUT};
use crate::formats::message::{Message, MessageContext, MessageDecoder};
use crate::formats::Format;

/// A format and the columns it decodes (the value's, or the key's).
#[derive(Debug, Clone)]
pub(super) struct Decoding {
    pub(super) format: Format,
    pub(super) schema: SchemaRef,
}

/// A configured kafka source: its topics, start and end, and record format.
#[derive(Debug)]
pub(super) struct KafkaSource {
    pub(super) kafka: KafkaTable,
    /// The columns the readers produce.
    pub(super) schema: SchemaRef,
    /// Where each of them comes from.
    pub(super) columns: Vec<ColumnSource>,
    pub(super) value: Decoding,
    pub(super) key: Option<Decoding>,
    /// `upsert-kafka`: records are upserts by key, tombstones delete.
    pub(super) upsert: bool,
    pub(super) startup: Startup,
    pub(super) bounded: bool,
    pub(super) discovery: Option<Duration>,
    pub(super) policy: BadRecordPolicy,
    pub(super) batch_size: usize,
    /// librdkafka needs a group id to consume; used when none is given.
    pub(super) default_group: String,
}

/// A topic's partition.
pub(super) type TopicPartition = (String, i32);
/// Next offset to read per topic and partition: a reader's checkpointed position.
pub(super) type Offsets = BTreeMap<String, BTreeMap<i32, i64>>;

fn offset_of(offsets: &Offsets, (topic, partition): &TopicPartition) -> Option<i64> {
    offsets.get(topic)?.get(partition).copied()
}

fn set_offset(offsets: &mut Offsets, topic: &str, partition: i32, offset: i64) {
    match offsets.get_mut(topic) {
        Some(partitions) => {
            partitions.insert(partition, offset);
        }
        None => {
            offsets.insert(topic.to_string(), BTreeMap::from([(partition, offset)]));
        }
    }
}

/// Java's `String.hashCode`, for Flink's partition assignment.
fn java_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(unit as i32)
    })
}

/// The subtask that reads a partition (Flink's `KafkaSourceEnumerator` rule).
pub(super) fn owner(topic: &str, partition: i32, parallelism: usize) -> usize {
    let parallelism = parallelism.max(1) as i64;
    let start = ((java_hash(topic).wrapping_mul(31) & 0x7FFF_FFFF) as i64) % parallelism;
    ((start + partition as i64) % parallelism) as usize
}

/// Lists the partitions of the configured topics (or of the topics matching
/// the pattern). `strict`: a named topic that does not exist is an error.
fn list_partitions(
    kafka: &KafkaTable,
    consumer: &StreamConsumer,
    strict: bool,
) -> Result<Vec<TopicPartition>> {
    let mut found = Vec::new();
    match &kafka.topics {
        Topics::Names(names) => {
            for name in names {
                let metadata = consumer
                    .fetch_metadata(Some(name), METADATA_TIMEOUT)
                    .map_err(|e| kafka.error("reading topic metadata", e))?;
                let topic = metadata.topics().iter().find(|t| t.name() == name);
                let error = match topic {
                    None => Some("topic not found".to_string()),
                    Some(topic) => match topic.error() {
                        Some(error) => Some(RDKafkaErrorCode::from(error).to_string()),
                        None if topic.partitions().is_empty() => {
                            Some("it has no partitions (does it exist?)".to_string())
                        }
                        None => None,
                    },
                };
                match (error, topic) {
                    (Some(error), _) if strict => {
                        return Err(kafka.error(&format!("reading topic '{name}'"), error))
                    }
                    (None, Some(topic)) => {
                        found.extend(topic.partitions().iter().map(|p| (name.clone(), p.id())))
                    }
                    _ => {}
                }
            }
        }
        Topics::Pattern(pattern) => {
            let metadata = consumer
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map_err(|e| kafka.error("listing topics", e))?;
            for topic in metadata.topics() {
                if topic.error().is_none()
                    && !topic.name().starts_with("__")
                    && pattern.is_match(topic.name())
                {
                    found.extend(
                        topic
                            .partitions()
                            .iter()
                            .map(|p| (topic.name().to_string(), p.id())),
                    );
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

impl KafkaSource {
    fn consumer(&self) -> Result<StreamConsumer> {
        self.consumer_config()
            .create()
            .map_err(|e| self.kafka.error("creating a consumer", e))
    }

    fn consumer_config(&self) -> rdkafka::ClientConfig {
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
        // A partition found by discovery may not have a leader yet. librdkafka
        // retries such partitions quickly only a few times, then waits for
        // its periodic metadata refresh (5 minutes by default), so a new
        // topic's records could sit unread that long: refresh as often as
        // discovery runs (at least every 10 s) unless the table says otherwise.
        if let Some(interval) = self.discovery {
            if config.get("topic.metadata.refresh.interval.ms").is_none() {
                let millis = interval.as_millis().clamp(1_000, 10_000);
                config.set("topic.metadata.refresh.interval.ms", millis.to_string());
            }
        }
        config
    }

    /// The startup offset of every partition without a checkpointed one.
    fn startup_offsets(
        &self,
        consumer: &StreamConsumer,
        partitions: &[TopicPartition],
    ) -> Result<Offsets> {
        let mut offsets = Offsets::new();
        let list_of =
            |partitions: &[TopicPartition], offset: Option<i64>| -> Result<TopicPartitionList> {
                let mut list = TopicPartitionList::new();
                for (topic, partition) in partitions {
                    match offset {
                        None => {
                            list.add_partition(topic, *partition);
                        }
                        Some(offset) => list
                            .add_partition_offset(topic, *partition, Offset::Offset(offset))
                            .map_err(|e| self.kafka.error("looking up offsets", e))?,
                    }
                }
                Ok(list)
            };
        match &self.startup {
            Startup::GroupOffsets => {
                let committed = consumer
                    .committed_offsets(list_of(partitions, None)?, METADATA_TIMEOUT)
                    .map_err(|e| self.kafka.error("reading committed group offsets", e))?;
                for element in committed.elements() {
                    if let Offset::Offset(offset) = element.offset() {
                        set_offset(&mut offsets, element.topic(), element.partition(), offset);
                    }
                }
            }
            Startup::Earliest => {}
            Startup::Latest => {
                for (topic, partition) in partitions {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, *partition, METADATA_TIMEOUT)
                        .map_err(|e| self.kafka.error("reading end offsets", e))?;
                    set_offset(&mut offsets, topic, *partition, high);
                }
            }
            Startup::Timestamp(millis) => {
                let found = consumer
                    .offsets_for_times(list_of(partitions, Some(*millis))?, METADATA_TIMEOUT)
                    .map_err(|e| self.kafka.error("looking up offsets by time", e))?;
                for element in found.elements() {
                    match element.offset() {
                        Offset::Offset(offset) => {
                            set_offset(&mut offsets, element.topic(), element.partition(), offset);
                        }
                        // No record at or after the time: start at the end.
                        Offset::End => {
                            let (_, high) = consumer
                                .fetch_watermarks(
                                    element.topic(),
                                    element.partition(),
                                    METADATA_TIMEOUT,
                                )
                                .map_err(|e| self.kafka.error("reading end offsets", e))?;
                            set_offset(&mut offsets, element.topic(), element.partition(), high);
                        }
                        _ => {}
                    }
                }
            }
            Startup::Specific(specific) => {
                // Flink's specific offsets name partitions of the (first) topic.
                if let Some((topic, _)) = partitions.first() {
                    for (partition, offset) in specific {
                        set_offset(&mut offsets, topic, *partition, *offset);
                    }
                }
            }
        }
        Ok(offsets)
    }

    /// Reads checkpointed positions: `{"topic": {"partition": offset}}`, or
    /// the single-topic `{"partition": offset}` of earlier versions.
    fn parse_positions(&self, positions: &[Vec<u8>]) -> Result<(Offsets, Vec<Vec<u8>>)> {
        let mut resumed = Offsets::new();
        let mut upserts = Vec::new();
        for position in positions.iter().filter(|p| !p.is_empty()) {
            let unreadable = |e: serde_json::Error| {
                SluiceError::State(format!(
                    "table `{}`: unreadable kafka source position: {e}",
                    self.kafka.table
                ))
            };
            let value: serde_json::Value = serde_json::from_slice(position).map_err(unreadable)?;
            if let Some(object) = value.as_object().filter(|o| o.contains_key("offsets")) {
                let offsets: Offsets =
                    serde_json::from_value(object["offsets"].clone()).map_err(unreadable)?;
                for (topic, partitions) in offsets {
                    resumed.entry(topic).or_default().extend(partitions);
                }
                if let Some(state) = object.get("upsert").and_then(|s| s.as_str()) {
                    upserts.push(state.as_bytes().to_vec());
                }
            } else {
                let flat: BTreeMap<i32, i64> = serde_json::from_value(value).map_err(unreadable)?;
                let topic = self.kafka.topics.first_name().unwrap_or_default();
                resumed.entry(topic).or_default().extend(flat);
            }
        }
        Ok((resumed, upserts))
    }

    fn reader(
        &self,
        subtask: usize,
        parallelism: usize,
        known: &[TopicPartition],
        start: &dyn Fn(&TopicPartition) -> Option<i64>,
        upsert: Option<UpsertState>,
    ) -> Result<KafkaReader> {
        let consumer = self.consumer()?;
        let mine: Vec<TopicPartition> = known
            .iter()
            .filter(|(topic, partition)| owner(topic, *partition, parallelism) == subtask)
            .cloned()
            .collect();
        let mut next = Offsets::new();
        let mut list = TopicPartitionList::new();
        for tp in &mine {
            let offset = start(tp);
            let at = offset.map_or(Offset::Beginning, Offset::Offset);
            list.add_partition_offset(&tp.0, tp.1, at)
                .map_err(|e| self.kafka.error("assigning partitions", e))?;
            if let Some(offset) = offset {
                set_offset(&mut next, &tp.0, tp.1, offset);
            }
        }
        consumer
            .assign(&list)
            .map_err(|e| self.kafka.error("assigning partitions", e))?;
        let end = if self.bounded {
            let mut end = Offsets::new();
            for (topic, partition) in &mine {
                let (low, high) = consumer
                    .fetch_watermarks(topic, *partition, METADATA_TIMEOUT)
                    .map_err(|e| self.kafka.error("reading end offsets", e))?;
                set_offset(&mut end, topic, *partition, high);
                if offset_of(&next, &(topic.clone(), *partition)).is_none() {
                    set_offset(&mut next, topic, *partition, low);
                }
            }
            Some(end)
        } else {
            None
        };
        let context = |is_key: bool| MessageContext {
            table: self.kafka.table.clone(),
            topic: self.kafka.topics.first_name().unwrap_or_default(),
            is_key,
        };
        let origins = self.key.is_some()
            || self.upsert
            || self
                .columns
                .iter()
                .any(|c| matches!(c, ColumnSource::Metadata(_)));
        let value_decoder = self.value.format.message_decoder(
            self.value.schema.clone(),
            self.policy.clone(),
            self.batch_size,
            &context(false),
            origins,
        )?;
        let key_decoder = match &self.key {
            Some(key) => Some((
                key.format.message_decoder(
                    key.schema.clone(),
                    self.policy.clone(),
                    self.batch_size,
                    &context(true),
                    true,
                )?,
                key.schema.clone(),
            )),
            None => None,
        };
        let mut topics: Vec<String> = known.iter().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        Ok(KafkaReader {
            kafka: self.kafka.clone(),
            config: self.consumer_config(),
            consumer,
            schema: self.schema.clone(),
            columns: self.columns.clone(),
            value_decoder,
            key_decoder,
            needs_key_bytes: self.key.is_some()
                || self.upsert
                || self
                    .columns
                    .iter()
                    .any(|c| matches!(c, ColumnSource::Metadata(m) if m.key == "key")),
            needs_headers: self
                .columns
                .iter()
                .any(|c| matches!(c, ColumnSource::Metadata(m) if m.key == "headers")),
            topics,
            known: known.iter().cloned().collect(),
            assigned: mine,
            subtask,
            parallelism,
            emitted: next.clone(),
            next,
            end,
            batch_size: self.batch_size,
            discovery: self
                .discovery
                .filter(|_| !self.bounded)
                .map(|interval| (interval, Instant::now() + interval)),
            upsert,
            ready: Default::default(),
            receiving: Vec::new(),
            last_split: None,
        })
    }
}

impl SourceConnector for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }

    fn produces_updates(&self) -> bool {
        self.upsert || self.value.format.accepts_updates()
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
        self.open_partitions(parallelism, positions, None)
    }

    fn describe(&self) -> String {
        format!(
            "kafka {} ({}{})",
            self.kafka.topics,
            self.value.format.extension(),
            if self.bounded { ", bounded" } else { "" }
        )
    }

    fn partitioned(self: Arc<Self>) -> Option<Arc<dyn PartitionedSource>> {
        match &self.kafka.topics {
            Topics::Names(names) if names.len() == 1 && self.discovery.is_none() => {
                Some(Arc::new(KafkaPartitions(self)))
            }
            _ => None,
        }
    }
}

/// Scale-out's view of a single-topic kafka source: one task per partition.
#[derive(Debug)]
struct KafkaPartitions(Arc<KafkaSource>);

impl PartitionedSource for KafkaPartitions {
    fn topic(&self) -> String {
        self.0.kafka.topics.first_name().unwrap_or_default()
    }

    fn partitions(&self) -> Result<usize> {
        let consumer = self.0.consumer()?;
        Ok(list_partitions(&self.0.kafka, &consumer, true)?.len())
    }

    fn client_properties(&self) -> BTreeMap<String, String> {
        self.0.kafka.properties.clone()
    }

    fn pin(&self, partition: usize) -> Arc<dyn SourceConnector> {
        Arc::new(PinnedKafkaSource {
            source: self.0.clone(),
            partition: partition as i32,
        })
    }
}

/// A kafka source that reads one partition of its topic (a scale-out task).
#[derive(Debug)]
struct PinnedKafkaSource {
    source: Arc<KafkaSource>,
    partition: i32,
}

impl SourceConnector for PinnedKafkaSource {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
    }

    fn is_bounded(&self) -> bool {
        self.source.is_bounded()
    }

    fn produces_updates(&self) -> bool {
        self.source.produces_updates()
    }

    fn bad_records(&self) -> Option<&BadRecordPolicy> {
        self.source.bad_records()
    }

    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>> {
        self.open_at(parallelism, &[])
    }

    fn open_at(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        self.source
            .open_partitions(parallelism, positions, Some(self.partition))
    }

    fn describe(&self) -> String {
        format!("{} partition {}", self.source.describe(), self.partition)
    }
}

impl KafkaSource {
    /// Opens readers over every partition of the topics, or over `only`.
    fn open_partitions(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
        only: Option<i32>,
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        let (resumed, upserts) = self.parse_positions(positions)?;
        let metadata_consumer = self.consumer()?;
        let mut partitions = list_partitions(&self.kafka, &metadata_consumer, true)?;
        if let Some(only) = only {
            partitions.retain(|(_, partition)| *partition == only);
        }
        if partitions.is_empty() {
            return Err(self.kafka.error(
                "listing topics",
                format!("no topic matches {}", self.kafka.topics),
            ));
        }
        let startup = if resumed.is_empty() {
            self.startup_offsets(&metadata_consumer, &partitions)?
        } else {
            Offsets::new()
        };
        let start = |tp: &TopicPartition| offset_of(&resumed, tp).or(offset_of(&startup, tp));
        let mut readers: Vec<Box<dyn SourceReader>> = Vec::with_capacity(parallelism);
        for subtask in 0..parallelism {
            let upsert = if self.upsert {
                Some(UpsertState::restore(&upserts, &|topic, partition| {
                    owner(topic, partition, parallelism) == subtask
                })?)
            } else {
                None
            };
            readers.push(Box::new(self.reader(
                subtask,
                parallelism,
                &partitions,
                &start,
                upsert,
            )?));
        }
        Ok(readers)
    }
}

/// One subtask's partitions.
struct KafkaReader {
    kafka: KafkaTable,
    /// How the consumer was made (discovery makes a new one).
    config: rdkafka::ClientConfig,
    consumer: StreamConsumer,
    schema: SchemaRef,
    columns: Vec<ColumnSource>,
    value_decoder: Box<dyn MessageDecoder>,
    /// The key's decoder and columns, when the key holds columns.
    key_decoder: Option<(Box<dyn MessageDecoder>, SchemaRef)>,
    needs_key_bytes: bool,
    needs_headers: bool,
    /// Topic names, indexed by [`KafkaRecord::topic`].
    topics: Vec<String>,
    /// Every partition listed so far (of all subtasks).
    known: BTreeSet<TopicPartition>,
    /// This subtask's partitions.
    assigned: Vec<TopicPartition>,
    subtask: usize,
    parallelism: usize,
    /// Next offset to read, per partition read from so far (or resumed).
    next: Offsets,
    /// Bounded mode: where each partition ends.
    end: Option<Offsets>,
    batch_size: usize,
    /// Partition discovery: interval and next time.
    discovery: Option<(Duration, Instant)>,
    /// `upsert-kafka`: the last value of every key.
    upsert: Option<UpsertState>,
    /// Received runs of one partition's records, not decoded yet (decoding
    /// when a run is returned keeps `emitted` and the upsert state in step).
    ready: std::collections::VecDeque<Arc<Vec<KafkaRecord>>>,
    /// Records received for the batch being gathered. On `self`, not in a
    /// local, so a `next_batch` cancelled between two receives (the task
    /// selects it against checkpoint triggers and timers) loses none of them.
    receiving: Vec<KafkaRecord>,
    /// Next offset per partition after the rows returned so far: the
    /// checkpointed position (`next` runs ahead by the queued runs).
    emitted: Offsets,
    /// The split of the batch returned last.
    last_split: Option<u64>,
}

/// A partition's split id: the topic's number in the reader, and the partition.
fn split_id(topic: usize, partition: i32) -> u64 {
    ((topic as u64) << 32) | partition as u32 as u64
}

/// Wait for the first record of a batch before checking for the end again.
const FIRST_RECORD_WAIT: Duration = Duration::from_millis(200);
/// Wait for more records once a batch has some.
const MORE_RECORDS_WAIT: Duration = Duration::from_millis(5);

impl KafkaReader {
    /// Bounded mode: every partition has reached its end offset. Records the
    /// consumer skips (transaction markers, aborted records) never arrive, so
    /// once a poll came back empty (`idle`: nothing fetched is waiting), the
    /// consumer's position counts too; while records flow it does not, since
    /// it may run ahead of what was received.
    fn finished(&mut self, idle: bool) -> Result<bool> {
        let Some(end) = &self.end else {
            return Ok(false);
        };
        // `next` already counts records received but not returned yet
        // (gathered by a cancelled call, or queued): not done before they are.
        if !self.receiving.is_empty() || !self.ready.is_empty() {
            return Ok(false);
        }
        let mut behind: Vec<&TopicPartition> = self
            .assigned
            .iter()
            .filter(|tp| offset_of(&self.next, tp).unwrap_or(0) < offset_of(end, tp).unwrap_or(0))
            .collect();
        if behind.is_empty() {
            return Ok(true);
        }
        if !idle {
            return Ok(false);
        }
        let position = self
            .consumer
            .position()
            .map_err(|e| self.kafka.error("reading the consumer position", e))?;
        for element in position.elements() {
            if let Offset::Offset(offset) = element.offset() {
                let tp = (element.topic().to_string(), element.partition());
                if offset >= offset_of(end, &tp).unwrap_or(0) {
                    behind.retain(|p| **p != tp);
                }
            }
        }
        Ok(behind.is_empty())
    }

    /// Lists partitions when discovery is due, and starts reading this
    /// subtask's new ones from their earliest offset.
    fn discover(&mut self) -> Result<()> {
        let Some((interval, due)) = self.discovery else {
            return Ok(());
        };
        if Instant::now() < due {
            return Ok(());
        }
        self.discovery = Some((interval, Instant::now() + interval));
        let listed = match list_partitions(&self.kafka, &self.consumer, false) {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(table = %self.kafka.table, %error, "partition discovery failed; retrying later");
                return Ok(());
            }
        };
        let mut added = TopicPartitionList::new();
        for tp in listed {
            if !self.known.insert(tp.clone()) {
                continue;
            }
            if !self.topics.contains(&tp.0) {
                self.topics.push(tp.0.clone());
            }
            if owner(&tp.0, tp.1, self.parallelism) == self.subtask {
                added
                    .add_partition_offset(&tp.0, tp.1, Offset::Beginning)
                    .map_err(|e| self.kafka.error("assigning partitions", e))?;
                tracing::info!(table = %self.kafka.table, topic = %tp.0, partition = tp.1, "discovered a new partition");
                self.assigned.push(tp);
            }
        }
        if added.count() > 0 {
            // The whole assignment again: the partitions read so far go on
            // after their last received record.
            let mut all = added;
            for tp in &self.assigned {
                if let Some(offset) = offset_of(&self.next, tp) {
                    all.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset))
                        .map_err(|e| self.kafka.error("assigning partitions", e))?;
                } else if all.find_partition(&tp.0, tp.1).is_none() {
                    all.add_partition_offset(&tp.0, tp.1, Offset::Beginning)
                        .map_err(|e| self.kafka.error("assigning partitions", e))?;
                }
            }
            // A fresh consumer: librdkafka's long-lived one did not fetch
            // partitions of topics created after it started.
            let consumer: StreamConsumer = self
                .config
                .create()
                .map_err(|e| self.kafka.error("creating a consumer", e))?;
            consumer
                .assign(&all)
                .map_err(|e| self.kafka.error("assigning new partitions", e))?;
            self.consumer = consumer;
        }
        Ok(())
    }

    /// Queues received records as runs of one partition each.
    fn queue(&mut self, records: Vec<KafkaRecord>) {
        let mut run: Vec<KafkaRecord> = Vec::new();
        for record in records {
            if run.last().is_some_and(|last| {
                (last.topic, last.partition) != (record.topic, record.partition)
            }) {
                self.ready.push_back(Arc::new(std::mem::take(&mut run)));
            }
            run.push(record);
        }
        if !run.is_empty() {
            self.ready.push_back(Arc::new(run));
        }
    }

    /// Decodes the records of one partition.
    async fn decode_run(
        &mut self,
        source: &str,
        records: &[KafkaRecord],
    ) -> Result<Option<ChangeBatch>> {
        if let Some(upsert) = &mut self.upsert {
            return upsert
                .apply(
                    source,
                    records,
                    &mut self.value_decoder,
                    self.key_decoder.as_mut(),
                    &self.schema,
                    &self.columns,
                    &self.topics,
                )
                .await;
        }
        // Tombstones carry no row.
        let with_value: Vec<&KafkaRecord> = records.iter().filter(|r| r.value.is_some()).collect();
        let messages: Vec<Message<'_>> = with_value
            .iter()
            .map(|r| Message {
                position: r.offset as u64,
                payload: r.value.as_deref().unwrap_or_default(),
            })
            .collect();
        let Some(decoded) = self
            .value_decoder
            .decode_messages(source, &messages)
            .await?
        else {
            return Ok(None);
        };
        if self
            .columns
            .iter()
            .all(|c| matches!(c, ColumnSource::Value(_)))
            && self.columns.len() == decoded.batch.data.num_columns()
        {
            let data = arrow::array::RecordBatch::try_new(
                self.schema.clone(),
                decoded.batch.data.columns().to_vec(),
            )?;
            return Ok(Some(decoded.batch.with_data(data)));
        }
        let mut rows: Vec<&KafkaRecord> = decoded.origins.iter().map(|&i| with_value[i]).collect();
        let mut value = decoded.batch;
        let key = match self.key_decoder.as_mut() {
            None => None,
            Some((key_decoder, key_schema)) => {
                let (kept, key) = decode_keys(source, key_decoder, key_schema, &rows).await?;
                if kept.len() != rows.len() {
                    value = take_rows(&value, &kept)?;
                    rows = kept.iter().map(|&i| rows[i as usize]).collect();
                }
                Some(key)
            }
        };
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(assemble(
            &self.schema,
            &self.columns,
            &value,
            key.as_ref(),
            &rows,
            &self.topics,
        )?))
    }
}

/// Decodes the keys of `rows`' records. Returns the rows to keep (a key that
/// does not decode drops its row; the policy has it) and the key columns of
/// those rows (NULL for records without a key).
pub(super) async fn decode_keys(
    source: &str,
    decoder: &mut Box<dyn MessageDecoder>,
    schema: &SchemaRef,
    rows: &[&KafkaRecord],
) -> Result<(Vec<u32>, arrow::array::RecordBatch)> {
    // Distinct records in row order (a changelog row pair shares its record).
    let mut keyed: Vec<usize> = Vec::new();
    for (row, record) in rows.iter().enumerate() {
        let first = row == 0 || !std::ptr::eq(*record, rows[row - 1]);
        if first && record.key.is_some() {
            keyed.push(row);
        }
    }
    let messages: Vec<Message<'_>> = keyed
        .iter()
        .map(|&row| Message {
            position: rows[row].offset as u64,
            payload: rows[row].key.as_deref().unwrap_or_default(),
        })
        .collect();
    let decoded = decoder.decode_messages(source, &messages).await?;
    // Key row of each distinct keyed record.
    let mut key_row_of: BTreeMap<usize, u32> = BTreeMap::new();
    let key_batch = match decoded {
        Some(decoded) => {
            for (key_row, &message) in decoded.origins.iter().enumerate() {
                key_row_of.insert(keyed[message], key_row as u32);
            }
            Some(decoded.batch.data)
        }
        None => None,
    };
    let mut kept = Vec::with_capacity(rows.len());
    let mut indices: Vec<Option<u32>> = Vec::with_capacity(rows.len());
    let mut current: Option<Option<u32>> = None;
    for (row, record) in rows.iter().enumerate() {
        if row == 0 || !std::ptr::eq(*record, rows[row - 1]) {
            current = match (&record.key, key_row_of.get(&row)) {
                (None, _) => Some(None),
                (Some(_), Some(&key_row)) => Some(Some(key_row)),
                (Some(_), None) => None,
            };
        }
        if let Some(key_row) = current {
            kept.push(row as u32);
            indices.push(key_row);
        }
    }
    let schema = schema.clone();
    let key = match key_batch {
        Some(batch) => arrow::compute::take_record_batch(&batch, &UInt32Array::from(indices))?,
        None => arrow::array::RecordBatch::new_empty(schema.clone()),
    };
    if key.num_rows() != kept.len() {
        // No key decoded at all: every kept row has a NULL key.
        let columns = schema
            .fields()
            .iter()
            .map(|f| arrow::array::new_null_array(f.data_type(), kept.len()))
            .collect();
        return Ok((kept, arrow::array::RecordBatch::try_new(schema, columns)?));
    }
    Ok((kept, key))
}

/// Copies what the reader needs out of a received message.
fn record_of(
    message: &rdkafka::message::BorrowedMessage<'_>,
    topic: usize,
    key: bool,
    headers: bool,
) -> KafkaRecord {
    let (timestamp, timestamp_type) = match message.timestamp() {
        rdkafka::Timestamp::NotAvailable => (None, "NoTimestampType"),
        rdkafka::Timestamp::CreateTime(t) => (Some(t), "CreateTime"),
        rdkafka::Timestamp::LogAppendTime(t) => (Some(t), "LogAppendTime"),
    };
    KafkaRecord {
        topic,
        partition: message.partition(),
        offset: message.offset(),
        timestamp,
        timestamp_type,
        key: if key {
            message.key().map(<[u8]>::to_vec)
        } else {
            None
        },
        value: message.payload().map(<[u8]>::to_vec),
        headers: match (headers, message.headers()) {
            (true, Some(list)) => list
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect(),
            _ => Vec::new(),
        },
        leader_epoch: None,
    }
}

#[async_trait]
impl SourceReader for KafkaReader {
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        let mut idle = false;
        loop {
            while let Some(run) = self.ready.front() {
                let (Some(first), Some(last)) = (run.first(), run.last()) else {
                    self.ready.pop_front();
                    continue;
                };
                let (topic, partition, next) = (first.topic, first.partition, last.offset + 1);
                let source = format!("{}[{partition}]", self.topics[topic]);
                // The run leaves the queue only once decoded: a call cancelled
                // while a decoder awaits (a schema registry lookup) keeps it.
                let run = Arc::clone(run);
                let batch = self.decode_run(&source, &run).await?;
                self.ready.pop_front();
                let name = self.topics[topic].clone();
                set_offset(&mut self.emitted, &name, partition, next);
                if let Some(batch) = batch {
                    self.last_split = Some(split_id(topic, partition));
                    return Ok(Some(batch));
                }
            }
            if self.finished(idle)? {
                return Ok(None);
            }
            self.discover()?;
            if self.assigned.is_empty() && self.discovery.is_none() {
                // More subtasks than partitions: this one idles.
                std::future::pending::<()>().await;
            }
            // Gathered by an earlier, cancelled call: go on with them.
            idle = self.receiving.is_empty();
            let mut wait = if idle {
                FIRST_RECORD_WAIT
            } else {
                MORE_RECORDS_WAIT
            };
            while self.receiving.len() < self.batch_size {
                let message = match tokio::time::timeout(wait, self.consumer.recv()).await {
                    Err(_) => break,
                    Ok(message) => message.map_err(|e| self.kafka.error("reading", e))?,
                };
                wait = MORE_RECORDS_WAIT;
                idle = false;
                let topic = match self.topics.iter().position(|t| t == message.topic()) {
                    Some(index) => index,
                    None => {
                        self.topics.push(message.topic().to_string());
                        self.topics.len() - 1
                    }
                };
                set_offset(
                    &mut self.next,
                    message.topic(),
                    message.partition(),
                    message.offset() + 1,
                );
                let record = record_of(&message, topic, self.needs_key_bytes, self.needs_headers);
                self.receiving.push(record);
            }
            if self.receiving.is_empty() {
                continue;
            }
            let records = std::mem::take(&mut self.receiving);
            self.queue(records);
        }
    }

    fn batch_split(&self) -> Option<u64> {
        self.last_split
    }

    fn splits(&self) -> Vec<u64> {
        self.assigned
            .iter()
            .filter_map(|(topic, partition)| {
                let index = self.topics.iter().position(|t| t == topic)?;
                Some(split_id(index, *partition))
            })
            .collect()
    }

    /// The next offset of every partition read so far (and, for
    /// `upsert-kafka`, the last value of every key); offsets are also
    /// committed to the consumer group (when one is configured) for monitoring.
    fn position(&self) -> Result<Vec<u8>> {
        if self.kafka.group.is_some() && !self.emitted.is_empty() {
            let mut list = TopicPartitionList::new();
            for (topic, partitions) in &self.emitted {
                for (partition, offset) in partitions {
                    list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                        .map_err(|e| self.kafka.error("committing offsets", e))?;
                }
            }
            if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
                tracing::warn!(table = %self.kafka.table, %error, "could not commit offsets to the consumer group");
            }
        }
        let mut position = serde_json::json!({ "offsets": self.emitted });
        if let Some(upsert) = &self.upsert {
            position["upsert"] = serde_json::Value::String(upsert.snapshot()?);
        }
        serde_json::to_vec(&position).map_err(|e| SluiceError::State(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_spread_like_flink() {
        // Java: "orders".hashCode() == -1008770331.
        assert_eq!(java_hash("orders"), -1008770331);
        let owners: Vec<usize> = (0..6).map(|p| owner("orders", p, 3)).collect();
        let mut counts = [0; 3];
        for o in &owners {
            counts[*o] += 1;
        }
        assert_eq!(counts, [2, 2, 2]);
        // Consecutive partitions go to consecutive subtasks.
        assert_eq!((owners[0] + 1) % 3, owners[1]);
    }
}
