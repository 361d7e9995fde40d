//! The kafka sink: a producer per subtask, acknowledged at checkpoints.

use std::sync::Mutex;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use sluice_core::connector::{SinkConnector, SinkWriter};
use sluice_core::{ChangeBatch, Result};

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
    pub(super) flush_on_checkpoint: bool,
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
    fn encoded_rows_split_into_values() {
        let rows: Vec<&[u8]> = rows_of(b"{\"a\":1}\n{\"a\":2}\n").collect();
        assert_eq!(rows, vec![&b"{\"a\":1}"[..], b"{\"a\":2}"]);
    }
}
