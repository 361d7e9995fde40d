//! The kafka sink: a producer per subtask, acknowledged at checkpoints; or,
//! exactly-once, records held until their checkpoint completes and then
//! written in one Kafka transaction per writer and checkpoint.
//!
//! Exactly-once: a writer keeps the records of a checkpoint interval and
//! hands them over as its pre-committed output, so they are stored in the
//! checkpoint. When the checkpoint completes (and again on recovery from it),
//! [`SinkConnector::commit`] opens the transactional producer
//! `<prefix>-<subtask>`, whose `init_transactions` fences and aborts any
//! transaction an earlier process left open, and then checks the marker: the
//! offset the group `<prefix>-<subtask>` committed for partition 0 of the
//! topic. Each pre-commit carries a sequence number (the wall-clock
//! millisecond, strictly increasing per writer), committed as that offset
//! inside the same transaction as the records; commits of one id happen in
//! checkpoint order, so a marker at or past the sequence means the records
//! are in the topic. Otherwise they are written, with the marker, in one
//! transaction.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use sluice_core::connector::{SinkConnector, SinkWriter};
use sluice_core::{ChangeBatch, Result, SluiceError};

use super::{kafka_error, KafkaTable, METADATA_TIMEOUT};
use crate::formats::{Format, RecordEncoder};

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
    pub(super) schema: SchemaRef,
    pub(super) key: Option<KeySpec>,
    pub(super) partitioner: Partitioner,
    pub(super) guarantee: Guarantee,
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

/// A record held for an exactly-once commit.
struct HeldRecord {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    partition: Option<i32>,
}

/// What an exactly-once writer pre-committed: its records of one checkpoint.
struct PendingRecords {
    subtask: u32,
    /// Wall-clock milliseconds at pre-commit, strictly increasing per writer.
    sequence: u64,
    records: Vec<HeldRecord>,
}

impl PendingRecords {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.subtask.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&(self.records.len() as u64).to_le_bytes());
        for record in &self.records {
            match &record.key {
                Some(key) => {
                    out.push(1);
                    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    out.extend_from_slice(key);
                }
                None => out.push(0),
            }
            out.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&record.value);
            out.extend_from_slice(&record.partition.unwrap_or(-1).to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut input = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = (input.get(..n)?, input.get(n..)?);
            input = rest;
            Some(head)
        };
        let subtask = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let sequence = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let mut records = Vec::new();
        for _ in 0..count {
            let key = match take(1)?[0] {
                0 => None,
                _ => {
                    let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                    Some(take(len)?.to_vec())
                }
            };
            let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let value = take(len)?.to_vec();
            let partition = i32::from_le_bytes(take(4)?.try_into().ok()?);
            records.push(HeldRecord {
                key,
                value,
                partition: (partition >= 0).then_some(partition),
            });
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

impl KafkaSink {
    /// Writes a writer's pre-committed records in one transaction, unless
    /// the transaction of their checkpoint committed already (see the module
    /// documentation).
    fn commit_exactly_once(&self, prefix: &str, pending: PendingRecords) -> Result<()> {
        let kafka = &self.kafka;
        let id = format!("{prefix}-{}", pending.subtask);
        let producer: ThreadedProducer<DeliveryErrors> = kafka
            .client_config()
            .set("transactional.id", &id)
            .create_with_context(DeliveryErrors::default())
            .map_err(|e| kafka.error("creating a transactional producer", e))?;
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(|e| kafka.error(&format!("initialising transactions of '{id}'"), e))?;
        let marker_consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", &id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| kafka.error("creating the commit marker consumer", e))?;
        let mut marker = TopicPartitionList::new();
        marker.add_partition(&kafka.topic, 0);
        let committed = marker_consumer
            .committed_offsets(marker, TRANSACTION_TIMEOUT)
            .map_err(|e| kafka.error("reading the commit marker", e))?;
        let done = committed.elements().iter().any(|element| {
            matches!(element.offset(), Offset::Offset(at) if at >= pending.sequence as i64)
        });
        if done {
            return Ok(());
        }
        producer
            .begin_transaction()
            .map_err(|e| kafka.error("beginning a transaction", e))?;
        for held in &pending.records {
            let mut record = BaseRecord::to(&kafka.topic).payload(&held.value);
            if let Some(key) = &held.key {
                record = record.key(key);
            }
            if let Some(partition) = held.partition {
                record = record.partition(partition);
            }
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
            .add_partition_offset(&kafka.topic, 0, Offset::Offset(pending.sequence as i64))
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
        self.commit_exactly_once(prefix, pending)
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
            guarantee: self.guarantee.clone(),
            held: Vec::new(),
            sequence: 0,
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
            if matches!(self.guarantee, Guarantee::ExactlyOnce(_)) {
                self.held.push(HeldRecord {
                    key: key.map(<[u8]>::to_vec),
                    value: value.to_vec(),
                    partition,
                });
                continue;
            }
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
    /// before the checkpoint completes. Exactly-once: the records held since
    /// the last barrier, committed when the checkpoint completes.
    async fn pre_commit(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
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
                let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
                self.sequence = now.max(self.sequence + 1);
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
                    value: b"{}".to_vec(),
                    partition: Some(1),
                },
                HeldRecord {
                    key: None,
                    value: Vec::new(),
                    partition: None,
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
        assert!(PendingRecords::decode(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn encoded_rows_split_into_values() {
        let rows: Vec<&[u8]> = rows_of(b"{\"a\":1}\n{\"a\":2}\n").collect();
        assert_eq!(rows, vec![&b"{\"a\":1}"[..], b"{\"a\":2}"]);
    }
}
