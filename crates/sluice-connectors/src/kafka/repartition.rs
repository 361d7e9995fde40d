//! Scale-out's repartition topics: the internal Kafka topics that carry a
//! keyed shuffle between tasks running in different processes, as Kafka
//! Streams' repartition topics do.
//!
//! Each upstream task writes the rows of every batch to the partition their
//! key hashes to (one Arrow IPC message per batch and partition), and its
//! watermarks to every partition, all through the same exactly-once
//! transactions as the kafka sink (records held until their checkpoint
//! completes, idempotent commits, one transactional id per upstream task).
//! A downstream task reads one partition `read_committed`, and its watermark
//! is the minimum of the latest watermark of every upstream task.

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::Int8Array;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_core::connector::{SinkConnector, SinkWriter, SourceConnector, SourceReader};
use sluice_core::{ChangeBatch, Result, SluiceError};

use super::sink::{commit_exactly_once, HeldRecord, PendingRecords, TransactionalProducers};
use super::{KafkaTable, Topics, METADATA_TIMEOUT};

/// Header naming the upstream task a record comes from.
const FROM_HEADER: &str = "sluice.from";
/// Header of a watermark record (its value is empty).
const WATERMARK_HEADER: &str = "sluice.watermark";
/// Header with the row kinds of a changelog batch (one byte per row).
const KINDS_HEADER: &str = "sluice.kinds";

/// Splits a batch into the rows of each of `partitions` partitions.
pub type RowRouter =
    Arc<dyn Fn(&ChangeBatch, usize) -> Result<Vec<Option<ChangeBatch>>> + Send + Sync>;

/// A repartition topic: its name, partition count and cluster.
#[derive(Debug, Clone)]
pub struct RepartitionTopic {
    /// Topic name (`<job>-<operator>-repartition`).
    pub name: String,
    /// Partitions: one per task.
    pub partitions: usize,
    /// librdkafka settings to reach the cluster (the source table's).
    pub properties: BTreeMap<String, String>,
}

impl RepartitionTopic {
    fn kafka(&self) -> KafkaTable {
        KafkaTable {
            table: format!("repartition topic '{}'", self.name),
            topics: Topics::Names(vec![self.name.clone()]),
            properties: self.properties.clone(),
            group: None,
        }
    }

    /// Creates the topic unless it exists; an existing topic must have the
    /// same number of partitions.
    pub async fn ensure_exists(&self) -> Result<()> {
        let kafka = self.kafka();
        let admin: AdminClient<DefaultClientContext> = kafka
            .client_config()
            .create()
            .map_err(|e| kafka.error("creating an admin client", e))?;
        let topic = NewTopic::new(
            &self.name,
            self.partitions as i32,
            TopicReplication::Fixed(-1),
        );
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .map_err(|e| kafka.error("creating the topic", e))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(kafka.error("creating the topic", code)),
            }
        }
        let consumer: StreamConsumer = kafka
            .client_config()
            .set("group.id", format!("{}-admin", self.name))
            .create()
            .map_err(|e| kafka.error("creating a consumer", e))?;
        for _ in 0..50 {
            let metadata = consumer
                .fetch_metadata(Some(&self.name), METADATA_TIMEOUT)
                .map_err(|e| kafka.error("reading topic metadata", e))?;
            let found = metadata
                .topics()
                .first()
                .map_or(0, |topic| topic.partitions().len());
            if found == self.partitions {
                return Ok(());
            }
            if found > 0 {
                return Err(kafka.error(
                    "checking the topic",
                    format!(
                        "it has {found} partitions, but the job's source has {}: delete it \
                         (the job's repartition topics are rebuilt from the checkpoints' \
                         sources) or restore the source's partition count",
                        self.partitions
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(kafka.error("creating the topic", "it did not appear within 5 s"))
    }
}

/// Writes one upstream task's rows and watermarks to a repartition topic.
pub struct RepartitionSink {
    topic: RepartitionTopic,
    kafka: KafkaTable,
    schema: SchemaRef,
    router: RowRouter,
    /// The upstream task (its transactional id's suffix).
    task: usize,
    /// Transactional ids are `<prefix>-<task>`.
    prefix: String,
    producers: TransactionalProducers,
}

impl std::fmt::Debug for RepartitionSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepartitionSink({})", self.topic.name)
    }
}

impl RepartitionSink {
    /// A sink for upstream task `task`. Its pre-commits are numbered by
    /// checkpoint id, so it is written through the task's sink wrapper,
    /// which numbers the final one inside the task's epoch.
    pub fn new(
        topic: RepartitionTopic,
        schema: SchemaRef,
        router: RowRouter,
        task: usize,
        prefix: String,
    ) -> Self {
        RepartitionSink {
            kafka: topic.kafka(),
            topic,
            schema,
            router,
            task,
            prefix,
            producers: TransactionalProducers::default(),
        }
    }
}

impl SinkConnector for RepartitionSink {
    fn accepts_updates(&self) -> bool {
        true
    }

    fn open(&self, _subtask: usize, _parallelism: usize) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(RepartitionWriter {
            topic: self.topic.clone(),
            schema: self.schema.clone(),
            router: self.router.clone(),
            task: self.task,
            held: Vec::new(),
            last_watermark: i64::MIN,
            sequence: 0,
        }))
    }

    fn commit(&self, pending: &[u8]) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let pending = PendingRecords::decode(pending).ok_or_else(|| {
            SluiceError::State(format!(
                "{}: unreadable pre-committed records",
                self.kafka.table
            ))
        })?;
        commit_exactly_once(
            &self.kafka,
            &self.topic.name,
            &self.producers,
            &self.prefix,
            pending,
        )
    }

    fn fence(&self, _subtask: usize) -> Result<()> {
        self.producers
            .get(&self.kafka, &format!("{}-{}", self.prefix, self.task))
            .map(|_| ())
    }

    fn describe(&self) -> String {
        format!(
            "repartition topic '{}' ({} partitions)",
            self.topic.name, self.topic.partitions
        )
    }
}

struct RepartitionWriter {
    topic: RepartitionTopic,
    schema: SchemaRef,
    router: RowRouter,
    task: usize,
    /// Records since the last checkpoint barrier.
    held: Vec<HeldRecord>,
    last_watermark: i64,
    sequence: u64,
}

impl RepartitionWriter {
    fn upstream_header(&self) -> (String, Option<Vec<u8>>) {
        (
            FROM_HEADER.to_string(),
            Some(self.task.to_string().into_bytes()),
        )
    }
}

/// One batch as an Arrow IPC stream.
fn encode_batch(schema: &SchemaRef, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema)?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

#[async_trait]
impl SinkWriter for RepartitionWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        let parts = (self.router)(batch, self.topic.partitions)?;
        for (partition, part) in parts.into_iter().enumerate() {
            let Some(part) = part else { continue };
            let mut headers = vec![self.upstream_header()];
            if let Some(kinds) = &part.kinds {
                let bytes = kinds.values().iter().map(|k| *k as u8).collect();
                headers.push((KINDS_HEADER.to_string(), Some(bytes)));
            }
            self.held.push(HeldRecord {
                key: None,
                value: Some(encode_batch(&self.schema, &part.data)?),
                partition: Some(partition as i32),
                timestamp: None,
                headers,
            });
        }
        Ok(())
    }

    async fn on_watermark(&mut self, watermark: i64) -> Result<()> {
        if watermark <= self.last_watermark {
            return Ok(());
        }
        self.last_watermark = watermark;
        for partition in 0..self.topic.partitions {
            self.held.push(HeldRecord {
                key: None,
                value: Some(Vec::new()),
                partition: Some(partition as i32),
                timestamp: None,
                headers: vec![
                    self.upstream_header(),
                    (
                        WATERMARK_HEADER.to_string(),
                        Some(watermark.to_string().into_bytes()),
                    ),
                ],
            });
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// The records held since the last barrier; the checkpoint id (which
    /// carries the task's epoch) orders the commits.
    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        let records = std::mem::take(&mut self.held);
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.sequence = checkpoint.max(self.sequence + 1);
        Ok(PendingRecords {
            subtask: self.task as u32,
            sequence: self.sequence,
            records,
        }
        .encode())
    }
}

/// Reads one partition of a repartition topic (one downstream task).
#[derive(Debug)]
pub struct RepartitionSource {
    topic: RepartitionTopic,
    schema: SchemaRef,
    partition: usize,
    /// Upstream tasks whose watermarks combine.
    upstreams: usize,
}

impl RepartitionSource {
    /// A source over `partition` of `topic`, written by `upstreams` tasks.
    pub fn new(
        topic: RepartitionTopic,
        schema: SchemaRef,
        partition: usize,
        upstreams: usize,
    ) -> Self {
        RepartitionSource {
            topic,
            schema,
            partition,
            upstreams,
        }
    }
}

/// A reader's checkpointed position.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RepartitionPosition {
    /// Next offset to read.
    offset: i64,
    /// Latest watermark per upstream task.
    watermarks: Vec<Option<i64>>,
}

impl SourceConnector for RepartitionSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn produces_updates(&self) -> bool {
        true
    }

    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>> {
        self.open_at(parallelism, &[])
    }

    fn open_at(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        if parallelism != 1 {
            // A task plan runs at parallelism 1.
            return Err(SluiceError::Config(format!(
                "{}: one partition is read by one subtask",
                self.describe()
            )));
        }
        let kafka = self.topic.kafka();
        let mut position = RepartitionPosition {
            offset: 0,
            watermarks: vec![None; self.upstreams],
        };
        if let Some(bytes) = positions.iter().find(|p| !p.is_empty()) {
            position = serde_json::from_slice(bytes).map_err(|e| {
                SluiceError::State(format!("{}: unreadable position: {e}", kafka.table))
            })?;
            position.watermarks.resize(self.upstreams, None);
        }
        let consumer: StreamConsumer = kafka
            .client_config()
            .set("group.id", format!("{}-reader", self.topic.name))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| kafka.error("creating a consumer", e))?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &self.topic.name,
            self.partition as i32,
            Offset::Offset(position.offset),
        )
        .map_err(|e| kafka.error("assigning the partition", e))?;
        consumer
            .assign(&list)
            .map_err(|e| kafka.error("assigning the partition", e))?;
        Ok(vec![Box::new(RepartitionReader {
            kafka,
            consumer,
            schema: self.schema.clone(),
            queued: VecDeque::new(),
            position,
            emitted_watermark: None,
            advanced: None,
        })])
    }

    fn describe(&self) -> String {
        format!(
            "repartition topic '{}' partition {}",
            self.topic.name, self.partition
        )
    }
}

/// The watermark of a partition: the least of its upstream tasks' latest
/// watermarks, once every upstream task has sent one.
fn combined_watermark(upstreams: &[Option<i64>]) -> Option<i64> {
    upstreams
        .iter()
        .try_fold(i64::MAX, |least, watermark| watermark.map(|w| least.min(w)))
}

/// What a received record holds, with the offset after it.
enum Received {
    Rows(ChangeBatch, i64),
    Watermark {
        from: usize,
        watermark: i64,
        next: i64,
    },
}

struct RepartitionReader {
    kafka: KafkaTable,
    consumer: StreamConsumer,
    schema: SchemaRef,
    /// Received but not returned yet (kept here, so a cancelled
    /// `next_batch` loses nothing).
    queued: VecDeque<Received>,
    /// As of the records returned so far.
    position: RepartitionPosition,
    /// The combined watermark last reported.
    emitted_watermark: Option<i64>,
    /// A combined watermark not yet asked for.
    advanced: Option<i64>,
}

impl RepartitionReader {
    fn decode(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Result<Received> {
        let next = message.offset() + 1;
        let mut from = None;
        let mut watermark = None;
        let mut kinds = None;
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                let text = || std::str::from_utf8(header.value.unwrap_or_default()).ok();
                match header.key {
                    FROM_HEADER => from = text().and_then(|t| t.parse::<usize>().ok()),
                    WATERMARK_HEADER => watermark = text().and_then(|t| t.parse::<i64>().ok()),
                    KINDS_HEADER => kinds = header.value.map(<[u8]>::to_vec),
                    _ => {}
                }
            }
        }
        let bad = |what: &str| {
            self.kafka.error(
                &format!("reading offset {}", message.offset()),
                format!("{what} (was the topic written by another job?)"),
            )
        };
        if let Some(watermark) = watermark {
            let from = from.ok_or_else(|| bad("a watermark without its upstream task"))?;
            return Ok(Received::Watermark {
                from,
                watermark,
                next,
            });
        }
        let payload = message.payload().unwrap_or_default();
        let mut reader = StreamReader::try_new(Cursor::new(payload), None)
            .map_err(|e| bad(&format!("not an Arrow IPC batch: {e}")))?;
        let data = match reader.next() {
            Some(batch) => batch.map_err(|e| bad(&format!("not an Arrow IPC batch: {e}")))?,
            None => RecordBatch::new_empty(self.schema.clone()),
        };
        if data.schema().fields() != self.schema.fields() {
            return Err(bad("its rows do not have the job's schema"));
        }
        let kinds = match kinds {
            Some(kinds) if kinds.len() == data.num_rows() => Some(Int8Array::from(
                kinds.into_iter().map(|k| k as i8).collect::<Vec<_>>(),
            )),
            Some(_) => return Err(bad("row kinds do not match its rows")),
            None => None,
        };
        Ok(Received::Rows(ChangeBatch { data, kinds }, next))
    }

    /// Takes a watermark record into the per-upstream watermarks.
    fn take_watermark(&mut self, from: usize, watermark: i64) {
        if let Some(slot) = self.position.watermarks.get_mut(from) {
            *slot = Some(slot.map_or(watermark, |w| w.max(watermark)));
        }
        if let Some(combined) = combined_watermark(&self.position.watermarks) {
            if self.emitted_watermark.is_none_or(|e| combined > e) {
                self.emitted_watermark = Some(combined);
                self.advanced = Some(combined);
            }
        }
    }

    fn empty(&self) -> ChangeBatch {
        ChangeBatch::inserts(RecordBatch::new_empty(self.schema.clone()))
    }
}

#[async_trait]
impl SourceReader for RepartitionReader {
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        loop {
            match self.queued.pop_front() {
                Some(Received::Rows(batch, next)) => {
                    self.position.offset = next;
                    // Watermarks right behind the rows go out with them.
                    while let Some(Received::Watermark { .. }) = self.queued.front() {
                        if let Some(Received::Watermark {
                            from,
                            watermark,
                            next,
                        }) = self.queued.pop_front()
                        {
                            self.position.offset = next;
                            self.take_watermark(from, watermark);
                        }
                    }
                    return Ok(Some(batch));
                }
                Some(Received::Watermark {
                    from,
                    watermark,
                    next,
                }) => {
                    self.position.offset = next;
                    self.take_watermark(from, watermark);
                    if self.advanced.is_some() {
                        return Ok(Some(self.empty()));
                    }
                    continue;
                }
                None => {}
            }
            if self.emitted_watermark == Some(i64::MAX) && self.advanced.is_none() {
                // Every upstream task's input ended.
                return Ok(None);
            }
            let message = self
                .consumer
                .recv()
                .await
                .map_err(|e| self.kafka.error("reading", e))?;
            let received = self.decode(&message)?;
            self.queued.push_back(received);
        }
    }

    fn position(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.position)
            .map_err(|e| SluiceError::State(format!("{}: position: {e}", self.kafka.table)))
    }

    fn watermark(&mut self) -> Option<i64> {
        self.advanced.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn a_partition_waits_for_every_upstream_watermark() {
        assert_eq!(combined_watermark(&[Some(5), None, Some(3)]), None);
        assert_eq!(combined_watermark(&[Some(5), Some(9), Some(3)]), Some(3));
        assert_eq!(combined_watermark(&[]), Some(i64::MAX));
    }

    #[test]
    fn batches_cross_as_arrow_ipc() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let bytes = encode_batch(&schema, &batch).unwrap();
        let mut reader = StreamReader::try_new(Cursor::new(bytes), None).unwrap();
        assert_eq!(reader.next().unwrap().unwrap(), batch);
    }
}
