//! The kafka sink: a producer per subtask, acknowledged at checkpoints; or,
//! exactly-once, records held until their checkpoint completes and then
//! written in one Kafka transaction per writer and checkpoint.
//!
//! Exactly-once: a writer keeps the records of a checkpoint interval and
//! hands them over as its pre-committed output, so they are stored in the
//! checkpoint. When the checkpoint completes (and again on recovery from it),
//! [`SinkConnector::commit`] uses the transactional producer
//! `<prefix>-<subtask>`: initialised once per process (on the first commit,
//! or by [`SinkConnector::fence`] when a scale-out task starts), which
//! fences and aborts any transaction an earlier process left open, and
//! reused by later commits, so a newer process's producer fences this one.
//! It then checks the marker: the offset the group `<prefix>-<subtask>`
//! committed for partition 0 of the topic. Each pre-commit carries a
//! sequence number (the wall-clock millisecond, or a scale-out task's
//! checkpoint id; strictly increasing per writer), committed as that offset
//! inside the same transaction as the records; commits of one id happen in
//! checkpoint order, so a marker at or past the sequence means the records
//! are in the topic. Otherwise they are written, with the marker, in one
//! transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use sluice_core::connector::{SinkConnector, SinkWriter, EPOCH_CHECKPOINTS};
use sluice_core::{ChangeBatch, Result, SluiceError};

use super::{kafka_error, KafkaTable, METADATA_TIMEOUT};
use crate::formats::message::{MessageContext, MessageEncoder};
use crate::formats::Format;
use arrow::array::{Array, AsArray};
use rdkafka::message::{Header, OwnedHeaders};
use sluice_core::RowKind;

/// How records are spread over the topic's partitions (`sink.partitioner`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Partitioner {
    Default,
    Fixed,
    RoundRobin,
}

/// The columns written as message keys, and their format.
#[derive(Debug, Clone)]
pub(super) struct KeySpec {
    pub(super) indices: Vec<usize>,
    pub(super) schema: SchemaRef,
    pub(super) format: Format,
}

/// A configured kafka sink: its topic, value and key encoding, partitioning.
#[derive(Debug)]
pub(super) struct KafkaSink {
    pub(super) kafka: KafkaTable,
    pub(super) topic: String,
    pub(super) value: Format,
    /// The written columns the value holds, and their schema.
    pub(super) value_indices: Vec<usize>,
    pub(super) value_schema: SchemaRef,
    pub(super) key: Option<KeySpec>,
    /// Written metadata columns: (column, 'timestamp' | 'headers').
    pub(super) metadata: Vec<(usize, String)>,
    pub(super) partitioner: Partitioner,
    pub(super) guarantee: Guarantee,
    /// `upsert-kafka`: updates become values of their key, deletes tombstones.
    pub(super) upsert: bool,
    /// Exactly-once: the transactional producers commits use.
    pub(super) producers: TransactionalProducers,
}

/// `sink.delivery-guarantee`.
#[derive(Debug, Clone)]
pub(super) enum Guarantee {
    /// Records are sent as they come; checkpoints do not wait.
    None,
    /// Every checkpoint waits until the records sent before it are acknowledged.
    AtLeastOnce,
    /// Records are written in a transaction when their checkpoint completes;
    /// transactional ids start with this prefix.
    ExactlyOnce(String),
}

/// A record to send (or held for an exactly-once commit).
#[derive(Debug, Default)]
pub(super) struct HeldRecord {
    pub(super) key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub(super) value: Option<Vec<u8>>,
    pub(super) partition: Option<i32>,
    pub(super) timestamp: Option<i64>,
    pub(super) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl HeldRecord {
    fn to_record<'a>(&'a self, topic: &'a str) -> BaseRecord<'a, [u8], [u8]> {
        let mut record = BaseRecord::to(topic);
        if let Some(value) = &self.value {
            record = record.payload(value.as_slice());
        }
        if let Some(key) = &self.key {
            record = record.key(key.as_slice());
        }
        if let Some(partition) = self.partition {
            record = record.partition(partition);
        }
        if let Some(timestamp) = self.timestamp {
            record = record.timestamp(timestamp);
        }
        if !self.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
            for (key, value) in &self.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            record = record.headers(headers);
        }
        record
    }
}

/// First bytes of [`PendingRecords`] in the format with tombstones,
/// timestamps and headers (the first format had none).
const PENDING_MAGIC: [u8; 4] = [0xFF, b'S', b'K', 2];

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.push(0),
    }
}

/// What an exactly-once writer pre-committed: its records of one checkpoint.
pub(super) struct PendingRecords {
    pub(super) subtask: u32,
    /// Strictly increasing per writer: wall-clock milliseconds at
    /// pre-commit, or in scale-out the checkpoint id (which carries the
    /// owner's epoch, so it orders commits across processes).
    pub(super) sequence: u64,
    pub(super) records: Vec<HeldRecord>,
}

impl PendingRecords {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&PENDING_MAGIC);
        out.extend_from_slice(&self.subtask.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&(self.records.len() as u64).to_le_bytes());
        for record in &self.records {
            put_bytes(&mut out, record.key.as_deref());
            put_bytes(&mut out, record.value.as_deref());
            out.extend_from_slice(&record.partition.unwrap_or(-1).to_le_bytes());
            put_bytes(
                &mut out,
                record
                    .timestamp
                    .map(i64::to_le_bytes)
                    .as_ref()
                    .map(|t| &t[..]),
            );
            out.extend_from_slice(&(record.headers.len() as u32).to_le_bytes());
            for (name, value) in &record.headers {
                put_bytes(&mut out, Some(name.as_bytes()));
                put_bytes(&mut out, value.as_deref());
            }
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let (current, mut input) = match bytes.strip_prefix(&PENDING_MAGIC) {
            Some(rest) => (true, rest),
            None => (false, bytes),
        };
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = (input.get(..n)?, input.get(n..)?);
            input = rest;
            Some(head)
        };
        fn bytes_of<'a>(
            take: &mut impl FnMut(usize) -> Option<&'a [u8]>,
        ) -> Option<Option<Vec<u8>>> {
            match take(1)?[0] {
                0 => Some(None),
                _ => {
                    let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                    Some(Some(take(len)?.to_vec()))
                }
            }
        }
        let subtask = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let sequence = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let mut records = Vec::new();
        for _ in 0..count {
            let key = bytes_of(&mut take)?;
            let value = if current {
                bytes_of(&mut take)?
            } else {
                let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                Some(take(len)?.to_vec())
            };
            let partition = i32::from_le_bytes(take(4)?.try_into().ok()?);
            let mut record = HeldRecord {
                key,
                value,
                partition: (partition >= 0).then_some(partition),
                ..HeldRecord::default()
            };
            if current {
                record.timestamp = bytes_of(&mut take)?
                    .and_then(|t| t.try_into().ok())
                    .map(i64::from_le_bytes);
                let headers = u32::from_le_bytes(take(4)?.try_into().ok()?);
                for _ in 0..headers {
                    let name = String::from_utf8(bytes_of(&mut take)??).ok()?;
                    record.headers.push((name, bytes_of(&mut take)?));
                }
            }
            records.push(record);
        }
        Some(PendingRecords {
            subtask,
            sequence,
            records,
        })
    }
}

/// How long transactional requests may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes a writer's pre-committed records to `topic` in one transaction
/// of `<prefix>-<subtask>`, unless the transaction of their checkpoint
/// committed already (see the module documentation).
pub(super) fn commit_exactly_once(
    kafka: &KafkaTable,
    topic: &str,
    producers: &TransactionalProducers,
    prefix: &str,
    pending: PendingRecords,
) -> Result<()> {
    let id = format!("{prefix}-{}", pending.subtask);
    let producer = producers.get(kafka, &id)?;
    let outcome = commit_with(kafka, topic, &producer, &id, pending);
    if outcome.is_err() {
        // A failed or fenced producer is not reused.
        producers.forget(&id);
    }
    outcome
}

fn commit_with(
    kafka: &KafkaTable,
    topic: &str,
    producer: &ThreadedProducer<DeliveryErrors>,
    id: &str,
    pending: PendingRecords,
) -> Result<()> {
    let marker_consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", id)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| kafka.error("creating the commit marker consumer", e))?;
    let mut marker = TopicPartitionList::new();
    marker.add_partition(topic, 0);
    let committed = marker_consumer
        .committed_offsets(marker, TRANSACTION_TIMEOUT)
        .map_err(|e| kafka.error("reading the commit marker", e))?;
    let done = committed.elements().iter().any(
        |element| matches!(element.offset(), Offset::Offset(at) if at >= pending.sequence as i64),
    );
    if done {
        return Ok(());
    }
    producer
        .begin_transaction()
        .map_err(|e| kafka.error("beginning a transaction", e))?;
    for held in &pending.records {
        let mut record = held.to_record(topic);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(kafka.error("sending a record", error)),
            }
        }
    }
    let mut marker = TopicPartitionList::new();
    marker
        .add_partition_offset(topic, 0, Offset::Offset(pending.sequence as i64))
        .map_err(|e| kafka.error("writing the commit marker", e))?;
    let group = marker_consumer
        .group_metadata()
        .ok_or_else(|| kafka.error("writing the commit marker", "no group metadata"))?;
    producer
        .send_offsets_to_transaction(&marker, &group, TRANSACTION_TIMEOUT)
        .map_err(|e| kafka.error("writing the commit marker", e))?;
    producer
        .commit_transaction(TRANSACTION_TIMEOUT)
        .map_err(|e| kafka.error("committing a transaction", e))?;
    if let Some(error) = producer.context().first.lock().ok().and_then(|e| e.clone()) {
        return Err(kafka.error("delivering records", error));
    }
    Ok(())
}

/// Transactional producers by transactional id, initialised once: the
/// first use fences earlier producers of the id (and aborts what they left
/// open); later commits reuse it, so a newer owner of the id fences this one.
#[derive(Default)]
pub(super) struct TransactionalProducers {
    by_id: Mutex<HashMap<String, Arc<ThreadedProducer<DeliveryErrors>>>>,
}

impl std::fmt::Debug for TransactionalProducers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransactionalProducers")
    }
}

impl TransactionalProducers {
    /// The producer of `id`, created and initialised on first use.
    pub(super) fn get(
        &self,
        kafka: &KafkaTable,
        id: &str,
    ) -> Result<Arc<ThreadedProducer<DeliveryErrors>>> {
        if let Some(producer) = self.by_id.lock().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(producer);
        }
        let producer: ThreadedProducer<DeliveryErrors> = kafka
            .client_config()
            .set("transactional.id", id)
            .create_with_context(DeliveryErrors::default())
            .map_err(|e| kafka.error("creating a transactional producer", e))?;
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(|e| kafka.error(&format!("initialising transactions of '{id}'"), e))?;
        let producer = Arc::new(producer);
        if let Ok(mut by_id) = self.by_id.lock() {
            by_id.insert(id.to_string(), producer.clone());
        }
        Ok(producer)
    }

    /// Drops the producer of `id` (after a failure).
    pub(super) fn forget(&self, id: &str) {
        if let Ok(mut by_id) = self.by_id.lock() {
            by_id.remove(id);
        }
    }
}

/// Keeps the first delivery failure of a producer.
#[derive(Default)]
pub(super) struct DeliveryErrors {
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
    /// Exactly-once: writes the pre-committed records of a completed
    /// checkpoint (idempotent, so recovery may call it again).
    fn commit(&self, pending: &[u8]) -> Result<()> {
        let Guarantee::ExactlyOnce(prefix) = &self.guarantee else {
            return Ok(());
        };
        if pending.is_empty() {
            return Ok(());
        }
        let pending = PendingRecords::decode(pending).ok_or_else(|| {
            SluiceError::State(format!(
                "table `{}`: unreadable pre-committed kafka records",
                self.kafka.table
            ))
        })?;
        commit_exactly_once(&self.kafka, &self.topic, &self.producers, prefix, pending)
    }

    /// Initialises the transactional producer of `subtask` now, fencing
    /// the producers of earlier owners.
    fn fence(&self, subtask: usize) -> Result<()> {
        if let Guarantee::ExactlyOnce(prefix) = &self.guarantee {
            self.producers
                .get(&self.kafka, &format!("{prefix}-{subtask}"))?;
        }
        Ok(())
    }

    /// Records a transaction committed cannot be taken back.
    fn uncommit(&self, _pending: &[u8]) -> Result<()> {
        if matches!(self.guarantee, Guarantee::ExactlyOnce(_)) {
            tracing::warn!(
                table = %self.kafka.table,
                "recovering past an unusable checkpoint: records its kafka transactions committed stay in the topic and are written again"
            );
        }
        Ok(())
    }

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
                    .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
                    .map_err(|e| self.kafka.error("reading topic metadata", e))?;
                metadata
                    .topics()
                    .first()
                    .map_or(0, |topic| topic.partitions().len() as i32)
                    .max(1)
            }
        };
        let context = |is_key: bool| MessageContext {
            table: self.kafka.table.clone(),
            topic: self.topic.clone(),
            is_key,
        };
        Ok(Box::new(KafkaWriter {
            kafka: self.kafka.clone(),
            topic: self.topic.clone(),
            encoder: self
                .value
                .message_encoder(self.value_schema.clone(), &context(false))?,
            value_indices: self.value_indices.clone(),
            metadata: self.metadata.clone(),
            upsert: self.upsert,
            key: match &self.key {
                Some(key) => Some((
                    key.clone(),
                    key.format
                        .message_encoder(key.schema.clone(), &context(true))?,
                )),
                None => None,
            },
            producer,
            partitioner: self.partitioner,
            partitions,
            subtask: subtask as i32,
            sent: 0,
            guarantee: self.guarantee.clone(),
            held: Vec::new(),
            sequence: 0,
        }))
    }

    fn accepts_updates(&self) -> bool {
        self.upsert || self.value.accepts_updates()
    }

    fn describe(&self) -> String {
        format!(
            "{}kafka topic '{}' ({})",
            if self.upsert { "upsert-" } else { "" },
            self.topic,
            self.value.extension()
        )
    }
}

struct KafkaWriter {
    kafka: KafkaTable,
    topic: String,
    encoder: Box<dyn MessageEncoder>,
    /// Columns of the written rows the value holds.
    value_indices: Vec<usize>,
    metadata: Vec<(usize, String)>,
    upsert: bool,
    key: Option<(KeySpec, Box<dyn MessageEncoder>)>,
    producer: ThreadedProducer<DeliveryErrors>,
    partitioner: Partitioner,
    partitions: i32,
    subtask: i32,
    sent: u64,
    guarantee: Guarantee,
    /// Exactly-once: records since the last checkpoint barrier.
    held: Vec<HeldRecord>,
    /// Exactly-once: the sequence number of the last pre-commit.
    sequence: u64,
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

impl KafkaWriter {
    /// The records of `batch`: values, keys, and written metadata. With
    /// `upsert`, `-U` rows are dropped and `-D` rows become tombstones.
    async fn records(&mut self, batch: &ChangeBatch) -> Result<Vec<HeldRecord>> {
        let batch = if self.upsert {
            let keep: arrow::array::BooleanArray = (0..batch.num_rows())
                .map(|row| Some(batch.kind(row) != RowKind::UpdateBefore))
                .collect();
            batch.filter(&keep)?
        } else {
            batch.clone()
        };
        let rows = batch.num_rows();
        let deleted: Vec<bool> = (0..rows)
            .map(|row| self.upsert && batch.kind(row) == RowKind::Delete)
            .collect();
        let as_inserts = |data: arrow::array::RecordBatch| {
            if self.upsert {
                ChangeBatch::inserts(data)
            } else {
                ChangeBatch {
                    data,
                    kinds: batch.kinds.clone(),
                }
            }
        };
        let mut values = Vec::with_capacity(rows);
        let valued = if deleted.iter().any(|d| *d) {
            let mask: arrow::array::BooleanArray = deleted.iter().map(|d| Some(!d)).collect();
            arrow::compute::filter_record_batch(&batch.data, &mask)?
        } else {
            batch.data.clone()
        };
        self.encoder
            .encode_messages(
                &as_inserts(valued.project(&self.value_indices)?),
                &mut values,
            )
            .await?;
        let mut keys = Vec::new();
        if let Some((spec, encoder)) = &mut self.key {
            let projected = ChangeBatch::inserts(batch.data.project(&spec.indices)?);
            encoder.encode_messages(&projected, &mut keys).await?;
        }
        let mut values = values.into_iter();
        let mut keys = keys.into_iter();
        let mut records = Vec::with_capacity(rows);
        for (row, deleted) in deleted.into_iter().enumerate() {
            let mut record = HeldRecord {
                value: if deleted { None } else { values.next() },
                key: keys.next(),
                ..HeldRecord::default()
            };
            for (column, key) in &self.metadata {
                let array = batch.data.column(*column);
                if array.is_null(row) {
                    continue;
                }
                if key == "timestamp" {
                    let millis = arrow::compute::cast(
                        &array.slice(row, 1),
                        &arrow::datatypes::DataType::Timestamp(
                            arrow::datatypes::TimeUnit::Millisecond,
                            None,
                        ),
                    )?;
                    record.timestamp = Some(
                        millis
                            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                            .value(0),
                    );
                } else if let Some(map) = array.as_map_opt() {
                    let entries = map.value(row);
                    let names =
                        arrow::compute::cast(entries.column(0), &arrow::datatypes::DataType::Utf8)?;
                    let values = arrow::compute::cast(
                        entries.column(1),
                        &arrow::datatypes::DataType::Binary,
                    )?;
                    let (names, values) = (names.as_string::<i32>(), values.as_binary::<i32>());
                    for entry in 0..names.len() {
                        record.headers.push((
                            names.value(entry).to_string(),
                            (!values.is_null(entry)).then(|| values.value(entry).to_vec()),
                        ));
                    }
                }
            }
            records.push(record);
        }
        Ok(records)
    }
}

#[async_trait]
impl SinkWriter for KafkaWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.check_deliveries()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for mut held in self.records(batch).await? {
            held.partition = match self.partitioner {
                Partitioner::Default => None,
                Partitioner::Fixed => Some(self.subtask % self.partitions),
                Partitioner::RoundRobin => Some((self.sent % self.partitions as u64) as i32),
            };
            self.sent += 1;
            if matches!(self.guarantee, Guarantee::ExactlyOnce(_)) {
                self.held.push(held);
                continue;
            }
            let mut record = held.to_record(&self.topic);
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
    /// before the checkpoint completes. Exactly-once: the records held since
    /// the last barrier, committed when the checkpoint completes.
    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        match self.guarantee {
            Guarantee::None => Ok(Vec::new()),
            Guarantee::AtLeastOnce => {
                self.flush().await?;
                Ok(Vec::new())
            }
            Guarantee::ExactlyOnce(_) => {
                let records = std::mem::take(&mut self.held);
                if records.is_empty() {
                    return Ok(Vec::new());
                }
                self.sequence = if (EPOCH_CHECKPOINTS..u64::MAX).contains(&checkpoint) {
                    // Scale-out: the checkpoint id orders commits across processes.
                    checkpoint
                } else {
                    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
                    now.max(self.sequence + 1)
                };
                Ok(PendingRecords {
                    subtask: self.subtask as u32,
                    sequence: self.sequence,
                    records,
                }
                .encode())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_records_round_trip() {
        let pending = PendingRecords {
            subtask: 3,
            sequence: 42,
            records: vec![
                HeldRecord {
                    key: Some(b"k".to_vec()),
                    value: Some(b"{}".to_vec()),
                    partition: Some(1),
                    timestamp: Some(1_700_000_000_000),
                    headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
                },
                HeldRecord {
                    key: Some(b"gone".to_vec()),
                    value: None,
                    ..HeldRecord::default()
                },
            ],
        };
        let bytes = pending.encode();
        let back = PendingRecords::decode(&bytes).unwrap();
        assert_eq!((back.subtask, back.sequence), (3, 42));
        assert_eq!(back.records.len(), 2);
        assert_eq!(back.records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(back.records[0].partition, Some(1));
        assert_eq!(back.records[1].partition, None);
        assert_eq!(back.records[0].timestamp, Some(1_700_000_000_000));
        assert_eq!(back.records[0].headers.len(), 2);
        assert_eq!(back.records[1].value, None);
        assert!(PendingRecords::decode(&bytes[..bytes.len() - 1]).is_none());
    }
}
