//! Kafka helpers: the brokers `.ci/run` starts, and topics.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::time::Duration;

use rdkafka::ClientConfig;

/// The broker `.ci/run` starts and names in `var`; `None` (the test is
/// skipped) without it, except under CI, where that is an error.
fn broker_from_env(var: &str, name: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(brokers) => Some(brokers),
        Err(_) if std::env::var_os("SLUICE_CI").is_some() => {
            panic!("{var} is not set (.ci/run starts {name})")
        }
        Err(_) => {
            eprintln!("skipped: set {var} to a {name} broker to run");
            None
        }
    }
}

/// The noida-db broker (`SLUICE_TEST_KAFKA_BROKERS`): transactions, no
/// dependable consumer-group expiry.
pub fn brokers() -> Option<String> {
    broker_from_env("SLUICE_TEST_KAFKA_BROKERS", "noida-db")
}

/// The brokers the tests of non-transactional paths run against: noida-db
/// and, when `SLUICE_TEST_TANSU_BROKERS` names one, tansu (a second,
/// independent Kafka-protocol broker without transactions; `.ci/run` starts
/// both).
pub fn all_brokers() -> Vec<String> {
    brokers().into_iter().chain(tansu_brokers()).collect()
}

/// A new topic (a unique name) with `partitions`, keeping records forever
/// (the generated events carry old timestamps).
pub fn create_topic(brokers: &str, name: &str, partitions: i32) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let topic = format!("{name}-{}-{stamp}", std::process::id());
    create_topic_named(brokers, &topic, partitions);
    topic
}

/// Creates `topic` with `partitions`, keeping records forever.
pub fn create_topic_named(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let results = runtime
        .block_on(
            admin.create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
                    .set("retention.ms", "-1")],
                &AdminOptions::new(),
            ),
        )
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
}

/// The tansu broker (`SLUICE_TEST_TANSU_BROKERS`): consumer groups with
/// session expiry and cooperative rebalancing, no transaction isolation.
pub fn tansu_brokers() -> Option<String> {
    broker_from_env("SLUICE_TEST_TANSU_BROKERS", "tansu")
}

/// Values of `topic` (all partitions, read_committed) as (key, value) text.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<(Option<String>, Option<String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("read-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    // Assigned, not subscribed: no group join to wait for.
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let mut quiet = 0;
    while quiet < 10 {
        match consumer.poll(Duration::from_millis(300)) {
            Some(Ok(message)) => {
                quiet = 0;
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                records.push((text(message.key()), text(message.payload())));
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => quiet += 1,
        }
    }
    records
}
