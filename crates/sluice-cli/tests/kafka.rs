//! The `kafka` connector against a real Kafka-protocol broker, found through
//! `SLUICE_TEST_KAFKA_BROKERS` (`.ci/run` starts noida-db; under `SLUICE_CI`
//! a missing broker fails the tests instead of skipping them).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::kafka::{all_brokers, brokers, create_topic, create_topic_named, read_topic};
use common::{
    kill_after, nexmark_file_source, nexmark_query, next_checkpoint, ok, read_part_files,
    write_nexmark_events, Service, Workspace,
};
use rdkafka::ClientConfig;

const EVENTS: usize = 40_000;

/// Physical columns of the nexmark-flink events.
const EVENT_COLUMNS: &str = "event_type INT,
    person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
    auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
    bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>";

/// Copies `$DIR/events` into `topic` with a Sluice job (the kafka sink).
fn produce_events(ws: &Workspace, brokers: &str, topic: &str, partitioner: &str) {
    let job = format!(
        "SET 'execution.checkpointing.interval' = '200ms';
         CREATE TABLE events_file ({EVENT_COLUMNS})
         WITH ('connector' = 'filesystem', 'path' = '$DIR/events', 'format' = 'json');
         CREATE TABLE events_kafka ({EVENT_COLUMNS})
         WITH ('connector' = 'kafka', 'topic' = '{topic}',
               'properties.bootstrap.servers' = '{brokers}', 'format' = 'json',
               'sink.partitioner' = '{partitioner}', 'key.fields' = 'event_type', 'key.format' = 'json');
         INSERT INTO events_kafka SELECT * FROM events_file;"
    );
    ok(&ws.run(&job, &[]));
}

/// The nexmark source table and views over `topic` (bounded at its end).
fn kafka_source(brokers: &str, topic: &str, startup: &str) -> String {
    nexmark_file_source("unused").replace(
        "'connector' = 'filesystem',\n    'path' = 'unused',",
        &format!(
            "'connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{brokers}',
             'properties.group.id' = 'sluice-test', {startup} 'scan.bounded.mode' = 'latest-offset',"
        ),
    )
}

/// Writes nexmark events (generator seed `seed`) into `$DIR/events` and a
/// new 3-partition topic named after `name`; returns the topic and `query`'s
/// rows over the file, the result every run over the topic must match.
fn events_topic(
    ws: &Workspace,
    brokers: &str,
    name: &str,
    seed: u32,
    query: &str,
) -> (String, Vec<String>) {
    write_nexmark_events(
        ws,
        EVENTS,
        &format!("'first-event.rate' = '1000', 'seed' = '{seed}'"),
    );
    let file = nexmark_file_source(&ws.path("events").display().to_string());
    let topic = create_topic(brokers, name, 3);
    produce_events(ws, brokers, &topic, "round-robin");
    let expected = run_query(ws, &file, query, &format!("{query}-file"), &[]);
    assert!(!expected.is_empty(), "{query} over the file wrote nothing");
    (topic, expected)
}

/// Runs `query` over `source` into `$DIR/<out>`; returns its rows.
fn run_query(ws: &Workspace, source: &str, query: &str, out: &str, args: &[&str]) -> Vec<String> {
    let sink = format!("'connector' = 'filesystem', 'path' = '$DIR/{out}', 'format' = 'json'");
    let job = format!("{source}\n{}", nexmark_query(query, &sink));
    ok(&ws.run(&job, args));
    read_part_files(&ws.path(out))
}

#[test]
fn queries_over_kafka_match_the_same_queries_over_the_file() {
    let Some(brokers) = brokers() else { return };
    let ws = Workspace::new();
    write_nexmark_events(&ws, EVENTS, "'first-event.rate' = '1000', 'seed' = '5'");
    let file = nexmark_file_source(&ws.path("events").display().to_string());

    // One partition: event time stays in order, so a windowed query gives
    // exactly the file's result.
    let ordered = create_topic(&brokers, "events-ordered", 1);
    produce_events(&ws, &brokers, &ordered, "default");
    let source = kafka_source(
        &brokers,
        &ordered,
        "'scan.startup.mode' = 'earliest-offset',",
    );
    for query in ["q5", "q7"] {
        let expected = run_query(&ws, &file, query, &format!("{query}-file"), &[]);
        assert!(!expected.is_empty(), "{query} wrote nothing");
        let got = run_query(&ws, &source, query, &format!("{query}-kafka"), &[]);
        assert_eq!(got, expected, "{query} over kafka");
    }
    // The JSON values are decoded only as far as the queries read them.
    let explain = ok(&ws.run(
        &format!(
            "{source}\n{}",
            nexmark_query("q1", "'connector' = 'blackhole'")
        ),
        &["--explain"],
    ));
    assert!(
        explain.contains("[reads only person(dateTime), auction(dateTime), bid(auction, bidder, "),
        "{explain}"
    );

    // Three partitions read by two subtasks: a stateless query.
    let spread = create_topic(&brokers, "events-spread", 3);
    produce_events(&ws, &brokers, &spread, "round-robin");
    let expected = run_query(&ws, &file, "q1", "q1-file", &[]);
    let source = kafka_source(
        &brokers,
        &spread,
        "'scan.startup.mode' = 'earliest-offset',",
    );
    let got = run_query(&ws, &source, "q1", "q1-kafka", &["-p", "2"]);
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected, "q1 over three partitions");

    // Specific offsets: the first 1000 records of the one partition are skipped.
    let source = kafka_source(
        &brokers,
        &ordered,
        "'scan.startup.mode' = 'specific-offsets', 'scan.startup.specific-offsets' = 'partition:0,offset:1000',",
    );
    let q0 = run_query(&ws, &file, "q0", "q0-file", &[]);
    let skipped = run_query(&ws, &source, "q0", "q0-kafka", &[]);
    assert!(
        skipped.len() < q0.len() && skipped.len() >= q0.len() - 1000,
        "{} of {}",
        skipped.len(),
        q0.len()
    );
}

#[test]
fn a_killed_kafka_job_resumes_from_its_checkpointed_offsets() {
    let Some(brokers) = brokers() else { return };
    let ws = Workspace::new();
    let (topic, expected) = events_topic(&ws, &brokers, "events-resume", 9, "q2");

    let sink = "'connector' = 'filesystem', 'path' = '$DIR/q2-kafka', 'format' = 'json'";
    let job = format!(
        "SET 'pipeline.name' = 'kafka-resume';
         SET 'execution.checkpointing.interval' = '100ms';
         SET 'sluice.batch.size' = '500';
         {}\n{}",
        kafka_source(&brokers, &topic, "'scan.startup.mode' = 'earliest-offset',"),
        nexmark_query("q2", sink)
    );
    let script = ws.write("resume.sql", &ws.expand(&job));
    let run = |failpoint: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["run", script.to_str().expect("utf8"), "-p", "2"])
            .current_dir(ws.dir.path())
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(failpoint) = failpoint {
            command.env("SLUICE_FAILPOINT", failpoint);
        }
        command.output().expect("run")
    };
    // Two runs die as `kill -9` would, at checkpoints rather than after fixed
    // delays, so that they die mid-input however fast the machine: the first
    // right after committing its third checkpoint, the second between the
    // pre-commit and the commit of its second.
    let checkpoints = ws.path("sluice-data/kafka-resume/checkpoints");
    let first = run(Some("after-commit:3".into()));
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("failpoint"),
        "the first run ended before its third checkpoint"
    );
    let second = run(Some(format!(
        "before-commit:{}",
        next_checkpoint(&checkpoints) + 1
    )));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("failpoint"),
        "the second run ended before its second checkpoint"
    );
    let output = run(None);
    ok(&output);
    assert!(String::from_utf8_lossy(&output.stderr).contains("resuming from checkpoint"));
    assert_eq!(
        read_part_files(&ws.path("q2-kafka")),
        expected,
        "rows after kills and resumes"
    );
}

#[test]
fn exactly_once_kafka_output_survives_kills_between_pre_commit_and_commit() {
    let Some(brokers) = brokers() else { return };
    let ws = Workspace::new();
    let (input, expected) = events_topic(&ws, &brokers, "events-eo", 13, "q2");

    let output = create_topic(&brokers, "q2-eo", 2);
    let sink = format!(
        "'connector' = 'kafka', 'topic' = '{output}', 'properties.bootstrap.servers' = '{brokers}',
         'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once', 'sink.partitioner' = 'round-robin'"
    );
    let job = format!(
        "SET 'pipeline.name' = 'kafka-eo';
         SET 'execution.checkpointing.interval' = '100ms';
         SET 'sluice.batch.size' = '500';
         {}\n{}",
        kafka_source(&brokers, &input, "'scan.startup.mode' = 'earliest-offset',"),
        nexmark_query("q2", &sink)
    );
    let script = ws.write("eo.sql", &ws.expand(&job));
    let run = |failpoint: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["run", script.to_str().expect("utf8"), "-p", "2"])
            .current_dir(ws.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(failpoint) = failpoint {
            command.env("SLUICE_FAILPOINT", failpoint);
        }
        command
    };
    let checkpoints = ws.path("sluice-data/kafka-eo/checkpoints");
    // A job that finished is complete (run again, it would start over): on
    // a fast machine a run can finish before its kill, and the rounds stop.
    let mut finished = false;
    for (delay, failpoint) in [(700, "before-commit"), (1200, "after-commit")] {
        if kill_after(
            run(None).spawn().expect("spawn"),
            Duration::from_millis(delay),
        ) {
            finished = true;
            break;
        }
        // Aborted after a checkpoint's manifest, before its transactions
        // commit (recovery writes them), or right after (recovery must not
        // write them again); at the run's first checkpoint, long before the
        // input ends.
        let next = next_checkpoint(&checkpoints);
        let status = run(Some(format!("{failpoint}:{next}")))
            .status()
            .expect("run");
        if status.success() {
            finished = true;
            break;
        }
    }
    if !finished {
        ok(&run(None).stderr(Stdio::piped()).output().expect("run"));
    }

    // A read_committed consumer sees every row once; reaching the end also
    // shows no partition is held back by an open transaction.
    let readback = format!(
        "CREATE TABLE out_topic (auction BIGINT, price BIGINT) WITH (
             'connector' = 'kafka', 'topic' = '{output}', 'properties.bootstrap.servers' = '{brokers}',
             'properties.isolation.level' = 'read_committed', 'scan.startup.mode' = 'earliest-offset',
             'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
         CREATE TABLE readback (auction BIGINT, price BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '$DIR/readback', 'format' = 'json');
         INSERT INTO readback SELECT * FROM out_topic;"
    );
    ok(&ws.run(&readback, &[]));
    let got = read_part_files(&ws.path("readback"));
    assert_eq!(got.len(), expected.len(), "row count read back");
    assert_eq!(got, expected, "rows read back with read_committed");
}

#[test]
fn a_bounded_kafka_job_checkpointing_every_few_milliseconds_reads_every_record() {
    let Some(brokers) = brokers() else { return };
    let ws = Workspace::new();
    let (topic, expected) = events_topic(&ws, &brokers, "events-frequent", 21, "q1");

    // A checkpoint trigger that interrupts the gathering of the last records
    // must not end the job before they are returned (it once did: the reader
    // saw its partitions at their end offsets and finished, dropping them).
    let source = format!(
        "SET 'execution.checkpointing.interval' = '5ms';
         SET 'sluice.batch.size' = '500';
         {}",
        kafka_source(&brokers, &topic, "'scan.startup.mode' = 'earliest-offset',")
    );
    for attempt in 0..6 {
        let out = format!("q1-kafka-{attempt}");
        let got = run_query(&ws, &source, "q1", &out, &["-p", "2"]);
        assert_eq!(got.len(), expected.len(), "rows of run {attempt}");
        assert_eq!(got, expected, "run {attempt}");
    }
}

/// A test record: key, value (`None`: a tombstone) and headers.
type TestRecord<'a> = (Option<&'a str>, Option<&'a str>, &'a [(&'a str, &'a str)]);

/// Produces `(key, value, headers)` records to `partition` of `topic` with
/// record timestamps `1_700_000_000_000 + i`; waits for every delivery.
fn produce_records(brokers: &str, topic: &str, partition: i32, records: &[TestRecord<'_>]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let watermarks: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let end = || {
        watermarks
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map(|(_, high)| high)
            .unwrap_or(-1)
    };
    // A partition that was just created may not take records yet: wait
    // until it reports its offsets, and check that the records landed.
    let mut before = end();
    for _ in 0..50 {
        if before >= 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        before = end();
    }
    for _attempt in 0..5 {
        send_records(&producer, topic, partition, records);
        producer.flush(Duration::from_secs(30)).expect("flush");
        let target = before + records.len() as i64;
        for _ in 0..25 {
            if end() >= target {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Some landed (a broker may report the end offset late): done.
        // None landed: the partition was not ready, send again.
        if end() > before {
            return;
        }
    }
    panic!("could not write to {topic}[{partition}]");
}

fn send_records(
    producer: &rdkafka::producer::BaseProducer,
    topic: &str,
    partition: i32,
    records: &[TestRecord<'_>],
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::BaseRecord;
    for (i, (key, value, headers)) in records.iter().enumerate() {
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic)
            .partition(partition)
            .timestamp(1_700_000_000_000 + i as i64);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        let mut owned = OwnedHeaders::new();
        for (name, value) in *headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(*value),
            });
        }
        record = record.headers(owned);
        producer.send(record).expect("send");
    }
}

/// Metadata columns, key columns from the key (`EXCEPT_KEY`), and a bad
/// value among good ones going to the dead letter queue with its offset.
#[test]
fn kafka_metadata_and_key_columns_are_read() {
    for brokers in all_brokers() {
        kafka_metadata_and_key_columns_are_read_on(&brokers);
    }
}

fn kafka_metadata_and_key_columns_are_read_on(brokers: &str) {
    let brokers = brokers.to_string();
    let ws = Workspace::new();
    let topic = create_topic(&brokers, "meta", 2);
    produce_records(
        &brokers,
        &topic,
        1,
        &[
            (
                Some(r#"{"id":1}"#),
                Some(r#"{"name":"a"}"#),
                &[("trace", "t1")],
            ),
            (Some(r#"{"id":2}"#), Some("not json"), &[]),
            (
                None,
                Some(r#"{"name":"c"}"#),
                &[("trace", "t3"), ("x", "y")],
            ),
            (Some(r#"{"id":4}"#), None, &[]),
        ],
    );
    let job = format!(
        "CREATE TABLE input (
            id BIGINT,
            name STRING,
            `partition` INT METADATA VIRTUAL,
            `off` BIGINT METADATA FROM 'offset' VIRTUAL,
            ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
            headers MAP<STRING, BYTES> METADATA,
            `topic` STRING METADATA VIRTUAL
         ) WITH ('connector' = 'kafka', 'topic' = '{topic}',
               'properties.bootstrap.servers' = '{brokers}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset', 'format' = 'json',
               'key.format' = 'json', 'key.fields' = 'id', 'value.fields-include' = 'EXCEPT_KEY',
               'errors' = 'dlq', 'dlq.path' = '$DIR/dlq.jsonl');
         CREATE TABLE out (id BIGINT, name STRING, p INT, o BIGINT, ts STRING, trace STRING, same_topic BOOLEAN)
         WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out SELECT id, name, `partition`, `off`, CAST(ts AS STRING),
             CAST(headers['trace'] AS STRING), `topic` = '{topic}' FROM input;"
    );
    ok(&ws.run(&job, &[]));
    let rows = read_part_files(&ws.path("out"));
    assert_eq!(
        rows,
        vec![
            r#"{"id":1,"name":"a","p":1,"o":0,"ts":"2023-11-14T22:13:20Z","trace":"t1","same_topic":true}"#.to_string(),
            r#"{"id":null,"name":"c","p":1,"o":2,"ts":"2023-11-14T22:13:20.002Z","trace":"t3","same_topic":true}"#.to_string(),
        ]
    );
    let dlq = std::fs::read_to_string(ws.path("dlq.jsonl")).expect("dead letters");
    assert_eq!(dlq.lines().count(), 1, "{dlq}");
    assert!(
        dlq.contains(r#""position":1"#) && dlq.contains("not json"),
        "{dlq}"
    );
}

/// `raw` values and metadata that only some connectors offer.
#[test]
fn kafka_raw_format_and_metadata_errors() {
    for brokers in all_brokers() {
        kafka_raw_format_and_metadata_errors_on(&brokers);
    }
}

fn kafka_raw_format_and_metadata_errors_on(brokers: &str) {
    let brokers = brokers.to_string();
    let ws = Workspace::new();
    let topic = create_topic(&brokers, "raw", 1);
    produce_records(
        &brokers,
        &topic,
        0,
        &[(None, Some("line one"), &[]), (None, Some("line two"), &[])],
    );
    let source = format!(
        "CREATE TABLE input (line STRING, k BYTES METADATA FROM 'key' VIRTUAL)
         WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{brokers}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'raw');"
    );
    let job = format!(
        "{source}
         CREATE TABLE out (line STRING, no_key BOOLEAN) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out SELECT UPPER(line), k IS NULL FROM input;"
    );
    ok(&ws.run(&job, &[]));
    assert_eq!(
        read_part_files(&ws.path("out")),
        vec![
            r#"{"line":"LINE ONE","no_key":true}"#.to_string(),
            r#"{"line":"LINE TWO","no_key":true}"#.to_string()
        ]
    );
    let bad = ws.run(
        "CREATE TABLE f (x STRING, o BIGINT METADATA FROM 'offset')
         WITH ('connector' = 'filesystem', 'path' = '$DIR/none', 'format' = 'json');
         CREATE TABLE out (x STRING) WITH ('connector' = 'print');
         INSERT INTO out SELECT x FROM f;",
        &[],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("column `o` reads METADATA FROM 'offset'")
            && stderr.contains("no metadata columns"),
        "{stderr}"
    );
    let bad = ws.run(
        &format!(
            "{}\nCREATE TABLE out (line INT) WITH ('connector' = 'print');\nINSERT INTO out SELECT line FROM input;",
            source.replace("line STRING", "line INT")
        ),
        &[],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains("one STRING or BYTES column"), "{stderr}");
}

/// `topic-pattern` reads every matching topic, including one created while
/// the job runs (partition discovery).
#[test]
fn kafka_topic_pattern_discovers_new_topics() {
    // noida-db only: on tansu a topic created while the job runs is found
    // but its record is sometimes not read (under investigation).
    if let Some(brokers) = brokers() {
        kafka_topic_pattern_discovers_new_topics_on(&brokers);
    }
}

fn kafka_topic_pattern_discovers_new_topics_on(brokers: &str) {
    let brokers = brokers.to_string();
    let ws = Workspace::new();
    let first = create_topic(&brokers, "pattern-a", 1);
    produce_records(
        &brokers,
        &first,
        0,
        &[(None, Some(r#"{"v":"first"}"#), &[])],
    );
    let job = ws.write(
        "pattern.sql",
        &ws.expand(&format!(
            "SET 'execution.checkpointing.interval' = '200ms';
             CREATE TABLE input (v STRING, t STRING METADATA FROM 'topic' VIRTUAL)
             WITH ('connector' = 'kafka', 'topic-pattern' = 'pattern-.*-{}', 'properties.bootstrap.servers' = '{brokers}',
                   'scan.startup.mode' = 'earliest-offset', 'scan.topic-partition-discovery.interval' = '300ms', 'format' = 'json');
             CREATE TABLE out (v STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
             INSERT INTO out SELECT v FROM input;",
            first.rsplit('-').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("-")
        )),
    );
    let log = std::fs::File::create(ws.path("job.log")).expect("job log");
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", job.to_str().expect("utf8")])
        .env("SLUICE_LOG", "info")
        .current_dir(ws.dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(2));
    // Same pid-stamp suffix pattern: a second topic created later.
    let suffix: Vec<&str> = first.rsplit('-').take(2).collect();
    let second = format!("pattern-b-{}-{}", suffix[1], suffix[0]);
    create_topic_named(&brokers, &second, 2);
    produce_records(
        &brokers,
        &second,
        1,
        &[(None, Some(r#"{"v":"second"}"#), &[])],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let mut rows = Vec::new();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        rows = read_part_files(&ws.path("out"));
        if rows.len() >= 2 {
            break;
        }
    }
    kill_after(child, Duration::ZERO);
    if rows.len() < 2 {
        let log = std::fs::read_to_string(ws.path("job.log")).unwrap_or_default();
        eprintln!("the job's log:\n{log}");
    }
    assert_eq!(
        rows,
        vec![
            r#"{"v":"first"}"#.to_string(),
            r#"{"v":"second"}"#.to_string()
        ]
    );
}

/// `upsert-kafka`: an updating result is written as values by key with
/// tombstones for deletes, and read back as the same changelog.
#[test]
fn upsert_kafka_writes_tombstones_and_reads_them_back() {
    for brokers in all_brokers() {
        upsert_kafka_writes_tombstones_and_reads_them_back_on(&brokers);
    }
}

fn upsert_kafka_writes_tombstones_and_reads_them_back_on(brokers: &str) {
    let brokers = brokers.to_string();
    let ws = Workspace::new();
    let topic = create_topic(&brokers, "upsert", 2);
    ws.write(
        "changes.json",
        &[
            r#"{"before":null,"after":{"id":1,"name":"a"},"op":"c"}"#,
            r#"{"before":null,"after":{"id":2,"name":"b"},"op":"c"}"#,
            r#"{"before":{"id":1,"name":"a"},"after":{"id":1,"name":"a2"},"op":"u"}"#,
            r#"{"before":{"id":2,"name":"b"},"after":null,"op":"d"}"#,
            r#"{"before":null,"after":{"id":3,"name":"c"},"op":"c"}"#,
        ]
        .join("\n"),
    );
    let table = |name: &str| {
        format!(
            "CREATE TABLE {name} (id BIGINT, name STRING, PRIMARY KEY (id) NOT ENFORCED)
             WITH ('connector' = 'upsert-kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{brokers}',
                   'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');"
        )
    };
    ok(&ws.run(
        &format!(
            "CREATE TABLE changes (id BIGINT, name STRING)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/changes.json', 'format' = 'debezium-json');
             {}
             INSERT INTO upserts SELECT * FROM changes;",
            table("upserts")
        ),
        &[],
    ));
    let mut records = read_topic(&brokers, &topic);
    records.sort();
    assert_eq!(
        records,
        vec![
            (
                Some(r#"{"id":1}"#.into()),
                Some(r#"{"id":1,"name":"a"}"#.into())
            ),
            (
                Some(r#"{"id":1}"#.into()),
                Some(r#"{"id":1,"name":"a2"}"#.into())
            ),
            (Some(r#"{"id":2}"#.into()), None),
            (
                Some(r#"{"id":2}"#.into()),
                Some(r#"{"id":2,"name":"b"}"#.into())
            ),
            (
                Some(r#"{"id":3}"#.into()),
                Some(r#"{"id":3,"name":"c"}"#.into())
            ),
        ]
    );
    ok(&ws.run(
        &format!(
            "{}
             CREATE TABLE out (id BIGINT, name STRING)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'debezium-json');
             INSERT INTO out SELECT * FROM upserts_in;",
            table("upserts_in")
        ),
        &[],
    ));
    assert_eq!(
        common::materialize_changelog(&ws.path("out")),
        vec![
            r#"{"id":1,"name":"a2"}"#.to_string(),
            r#"{"id":3,"name":"c"}"#.to_string()
        ]
    );
}

/// `sluice schema-registry` on a free port.
struct Registry {
    url: String,
    /// Killed when the registry is dropped.
    _service: Service,
}

impl Registry {
    fn start(ws: &Workspace) -> Registry {
        let data_dir = ws.path("registry");
        let service = Service::start(
            &[
                "schema-registry",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir.to_str().expect("utf8"),
            ],
            &[],
            "schema registry listening on ",
        );
        Registry {
            url: service.url.clone(),
            _service: service,
        }
    }

    /// `GET path` on the registry; the response body.
    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let address = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }
}

/// Rows written to Kafka in `avro`, `avro-confluent` (values and keys in a
/// schema registry) and `protobuf` read back unchanged.
#[test]
fn avro_and_protobuf_round_trip_through_kafka() {
    for brokers in all_brokers() {
        avro_and_protobuf_round_trip_through_kafka_on(&brokers);
    }
}

fn avro_and_protobuf_round_trip_through_kafka_on(brokers: &str) {
    let brokers = brokers.to_string();
    let ws = Workspace::new();
    let registry = Registry::start(&ws);
    let rows = [
        r#"{"id":1,"name":"alpha","score":1.5,"tags":["x","y"],"nested":{"a":7,"b":"n1"}}"#,
        r#"{"id":2,"name":"beta","score":-2.25,"tags":[],"nested":{"a":-1,"b":"n2"}}"#,
        r#"{"id":3,"name":"gamma","score":0.0,"tags":["z"],"nested":{"a":0,"b":""}}"#,
    ];
    ws.write("rows.json", &rows.join("\n"));
    ws.write(
        "row.proto",
        "syntax = \"proto3\";
         package test;
         message Nested { int32 a = 1; string b = 2; }
         message Row {
           int64 id = 1; string name = 2; double score = 3;
           repeated string tags = 4; Nested nested = 5;
         }",
    );
    let columns =
        "id BIGINT, name STRING, score DOUBLE, tags ARRAY<STRING>, nested ROW<a INT, b STRING>";
    let url = &registry.url;
    for (name, format) in [
        ("avro", "'format' = 'avro'".to_string()),
        (
            "avro-confluent",
            format!(
                "'format' = 'avro-confluent', 'avro-confluent.url' = '{url}',
                 'key.format' = 'avro-confluent', 'key.avro-confluent.url' = '{url}', 'key.fields' = 'id'"
            ),
        ),
        (
            "protobuf",
            "'format' = 'protobuf', 'protobuf.message-class-name' = 'test.Row',
             'protobuf.descriptor-file' = '$DIR/row.proto', 'protobuf.read-default-values' = 'true'"
                .to_string(),
        ),
    ] {
        let topic = create_topic(&brokers, name, 2);
        let kafka = format!(
            "WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{brokers}',
                   'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', {format})"
        );
        ok(&ws.run(
            &format!(
                "CREATE TABLE rows_file ({columns}) WITH ('connector' = 'filesystem', 'path' = '$DIR/rows.json', 'format' = 'json');
                 CREATE TABLE rows_kafka ({columns}) {kafka};
                 INSERT INTO rows_kafka SELECT * FROM rows_file;"
            ),
            &[],
        ));
        ok(&ws.run(
            &format!(
                "CREATE TABLE rows_kafka ({columns}) {kafka};
                 CREATE TABLE back ({columns}) WITH ('connector' = 'filesystem', 'path' = '$DIR/{name}-back', 'format' = 'json');
                 INSERT INTO back SELECT * FROM rows_kafka;"
            ),
            &[],
        ));
        let mut back = read_part_files(&ws.path(&format!("{name}-back")));
        back.sort();
        assert_eq!(back, rows.map(str::to_string), "{name} round trip");
        if name == "avro-confluent" {
            let subjects = registry.get("/subjects");
            assert!(
                subjects.contains(&format!("\"{topic}-value\""))
                    && subjects.contains(&format!("\"{topic}-key\"")),
                "subjects: {subjects}"
            );
        }
    }
}

/// Watermarks per partition: a partition far ahead in event time does not
/// make another partition's records late (both read by one subtask).
#[test]
fn kafka_watermarks_are_per_partition() {
    for brokers in all_brokers() {
        kafka_watermarks_are_per_partition_on(&brokers);
    }
}

fn kafka_watermarks_are_per_partition_on(brokers: &str) {
    let brokers = brokers.to_string();
    let ws = Workspace::new();
    let topic = create_topic(&brokers, "watermarks", 2);
    let events = |start_seconds: u32| -> Vec<String> {
        (0..10)
            .map(|i| {
                let millis = start_seconds * 1000 + i * 100;
                format!(
                    r#"{{"id":{i},"ts":"1970-01-01 00:{:02}:{:02}.{:03}"}}"#,
                    millis / 60_000,
                    millis / 1000 % 60,
                    millis % 1000
                )
            })
            .collect()
    };
    let (ahead, behind) = (events(100), events(1));
    let records = |values: &[String]| -> Vec<String> { values.to_vec() };
    for (partition, values) in [(0, records(&ahead)), (1, records(&behind))] {
        let list: Vec<TestRecord<'_>> = values
            .iter()
            .map(|v| (None, Some(v.as_str()), &[][..]))
            .collect();
        produce_records(&brokers, &topic, partition, &list);
    }
    let job = format!(
        "CREATE TABLE events (id INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{brokers}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
         CREATE TABLE out (window_start TIMESTAMP(3), n BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY window_start, window_end;"
    );
    let output = ws.run(&job, &[]);
    ok(&output);
    let mut rows = read_part_files(&ws.path("out"));
    rows.sort();
    assert_eq!(
        rows,
        vec![
            r#"{"window_start":"1970-01-01 00:00:00.000","n":10}"#.to_string(),
            r#"{"window_start":"1970-01-01 00:01:40.000","n":10}"#.to_string()
        ],
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
