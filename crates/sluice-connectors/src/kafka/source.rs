//! The kafka source: partitions spread over subtasks, offsets in checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::connector::{SourceConnector, SourceReader};
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::{ChangeBatch, Result, SluiceError};

use super::{KafkaTable, Startup, METADATA_TIMEOUT};
use crate::formats::{concat, LineChunk, RecordDecoder};

/// A configured kafka source: its topic, start and end, and record format.
#[derive(Debug)]
pub(super) struct KafkaSource {
    pub(super) kafka: KafkaTable,
    pub(super) schema: SchemaRef,
    pub(super) startup: Startup,
    pub(super) bounded: bool,
    pub(super) policy: BadRecordPolicy,
    pub(super) batch_size: usize,
    /// librdkafka needs a group id to consume; used when none is given.
    pub(super) default_group: String,
}

/// Next offset to read per partition: a reader's checkpointed position.
pub(super) type Offsets = BTreeMap<i32, i64>;

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
    /// Bounded mode: every partition has reached its end offset. Records the
    /// consumer skips (transaction markers, aborted records) never arrive, so
    /// once a poll came back empty (`idle`: nothing fetched is waiting), the
    /// consumer's position counts too; while records flow it does not, since
    /// it may run ahead of what was received.
    fn finished(&mut self, idle: bool) -> Result<bool> {
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
        if !idle {
            return Ok(false);
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
        let mut idle = false;
        loop {
            if self.finished(idle)? {
                return Ok(None);
            }
            if self.partitions.is_empty() {
                // More subtasks than partitions: this one idles.
                std::future::pending::<()>().await;
            }
            let mut records = Vec::new();
            let mut wait = FIRST_RECORD_WAIT;
            idle = true;
            while records.len() < self.batch_size {
                let message = match tokio::time::timeout(wait, self.consumer.recv()).await {
                    Err(_) => break,
                    Ok(message) => message.map_err(|e| self.kafka.error("reading", e))?,
                };
                wait = MORE_RECORDS_WAIT;
                idle = false;
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
