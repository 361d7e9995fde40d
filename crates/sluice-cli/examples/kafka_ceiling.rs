//! The throughput ceiling for Kafka → Kafka on a broker: a plain librdkafka
//! consumer → producer loop (no decoding, no engine), to compare Sluice's
//! Kafka pipelines with. Reads `<input topic>` from its start to the end
//! offsets seen at start and copies every record to `<output topic>`.
//!
//! ```sh
//! cargo run --release -p sluice-cli --example kafka_ceiling -- 127.0.0.1:9092 input output
//! ```

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, input, output] = args.as_slice() else {
        anyhow::bail!("usage: kafka_ceiling BROKERS INPUT_TOPIC OUTPUT_TOPIC");
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kafka-ceiling")
        .set("enable.auto.commit", "false")
        .set("receive.message.max.bytes", "1000000000")
        .create()?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(input), Duration::from_secs(30))?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for partition in metadata.topics()[0].partitions() {
        let (low, high) =
            consumer.fetch_watermarks(input, partition.id(), Duration::from_secs(30))?;
        remaining += high - low;
        assignment.add_partition_offset(input, partition.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let total = remaining;
    let started = Instant::now();
    while remaining > 0 {
        let Some(message) = consumer.poll(Duration::from_secs(5)) else {
            anyhow::bail!("no record for 5 s with {remaining} to go");
        };
        let message = message?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(output);
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        remaining -= 1;
    }
    producer.flush(Duration::from_secs(120))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "copied {total} records in {seconds:.2} s: {:.0} records/s",
        total as f64 / seconds
    );
    Ok(())
}
