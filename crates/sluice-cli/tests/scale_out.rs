//! Scale-out: several `sluice run --scale-out` processes share one job
//! (Kafka → windowed aggregation behind a repartition topic → Kafka
//! exactly-once) while one is killed with SIGKILL, another joins and one
//! stops gracefully; the committed output must equal a single uninterrupted
//! run's, exactly. (Fencing of a process that lost its tasks is tested in
//! `sluice-scale-out`; see docs/scale-out.md for why not here.)
//!
//! Brokers (`.ci/run` starts both): the data and transactions on noida-db
//! (`SLUICE_TEST_KAFKA_BROKERS`), the consumer group that assigns tasks on
//! tansu (`SLUICE_TEST_TANSU_BROKERS`), set with
//! `scale-out.group.bootstrap.servers`: noida-db does not expire the members
//! of dead processes, and tansu does not isolate aborted transactions. With
//! `SLUICE_TEST_S3_ENDPOINT` (moto) the tasks checkpoint to S3.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{brokers, create_topic, read_topic, tansu_brokers};
use common::{create_bucket, ok, read_part_files, Workspace};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 6;
const EVENTS: u64 = 36_000;
/// 2023-11-14T22:13:20Z.
const BASE_MS: i64 = 1_700_000_000_000;
/// The auction of the last event of every partition, far ahead in event
/// time: it closes every window before it.
const CLOSING_AUCTION: i64 = 999;

/// One `sluice run --scale-out` process, logging to a file.
struct Member {
    child: Child,
    log: PathBuf,
}

impl Member {
    fn start(
        ws: &Workspace,
        script: &str,
        name: &str,
        env: &[(String, String)],
        extra: &[&str],
    ) -> Member {
        let log = ws.path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["run", script, "--scale-out"])
            .args(extra)
            .current_dir(ws.dir.path())
            .env("SLUICE_LOG", "info")
            .env("SLUICE_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        Member {
            child: command.spawn().expect("start sluice"),
            log,
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling a child process we own.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Waits for the exit status (killing the process after `timeout`).
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logs(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| format!("--- {}\n{}", m.log.display(), m.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Event `i`: partition `i % 6`, event time rising by 10 ms every six
/// events, so every partition's timestamps only grow (nothing is late).
fn event(i: u64) -> (i32, String) {
    let ts = BASE_MS + (i / PARTITIONS as u64) as i64 * 10;
    let time = chrono::DateTime::from_timestamp_millis(ts)
        .expect("time")
        .format("%Y-%m-%d %H:%M:%S%.3f");
    let value = format!(
        r#"{{"auction":{},"bidder":{i},"price":{},"ts":"{time}"}}"#,
        i % 17,
        (i * 7) % 1000
    );
    ((i % PARTITIONS as u64) as i32, value)
}

fn closing_event(partition: i32) -> String {
    let time = chrono::DateTime::from_timestamp_millis(BASE_MS + 86_400_000)
        .expect("time")
        .format("%Y-%m-%d %H:%M:%S%.3f");
    format!(r#"{{"auction":{CLOSING_AUCTION},"bidder":{partition},"price":0,"ts":"{time}"}}"#)
}

/// Writes the events over about `duration`, then each partition's closing event.
fn produce(brokers: &str, topic: &str, duration: Duration) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let rounds = 24;
    let per_round = EVENTS / rounds;
    for round in 0..rounds {
        for i in round * per_round..(round + 1) * per_round {
            let (partition, value) = event(i);
            let key = i.to_string();
            producer
                .send(
                    BaseRecord::to(topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&value),
                )
                .expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        std::thread::sleep(duration / rounds as u32);
    }
    for partition in 0..PARTITIONS {
        let value = closing_event(partition);
        producer
            .send(
                BaseRecord::<(), String>::to(topic)
                    .partition(partition)
                    .payload(&value),
            )
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn tables(brokers: &str, input: &str, sink: &str) -> String {
    format!(
        "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3),
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'kafka', 'topic' = '{input}', 'properties.bootstrap.servers' = '{brokers}',
               'format' = 'json', 'scan.startup.mode' = 'earliest-offset');
         CREATE TABLE results (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
           bids BIGINT, revenue BIGINT)
         WITH ({sink});
         INSERT INTO results
         SELECT auction, window_start, window_end, COUNT(*), SUM(price)
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY auction, window_start, window_end;"
    )
}

/// Rows of the reference or the scale-out output, sorted, without the
/// window the closing events opened.
fn comparable(rows: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut rows: Vec<String> = rows
        .into_iter()
        .filter(|row| !row.contains(&format!(r#""auction":{CLOSING_AUCTION},"#)))
        .collect();
    rows.sort();
    rows
}

#[test]
fn processes_share_a_job_and_fail_over_exactly_once() {
    let (Some(brokers), Some(tansu)) = (brokers(), tansu_brokers()) else {
        return;
    };
    let ws = Workspace::new();
    let input = create_topic(&brokers, "scale-out-bids", PARTITIONS);
    let output = create_topic(&brokers, "scale-out-results", 2);
    let job = format!("so-{}", input.rsplit('-').next().unwrap_or("job"));
    let mut env: Vec<(String, String)> = Vec::new();
    let checkpoints = match std::env::var("SLUICE_TEST_S3_ENDPOINT") {
        Ok(endpoint) => {
            let bucket = format!("scale-out-{}", std::process::id());
            create_bucket(&endpoint, &bucket);
            for (key, value) in [
                ("AWS_ENDPOINT", endpoint.as_str()),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ] {
                env.push((key.into(), value.into()));
            }
            format!("s3://{bucket}/{job}")
        }
        Err(_) => ws.path("shared-checkpoints").display().to_string(),
    };
    let script = ws.write(
        "job.sql",
        &format!(
            "SET 'pipeline.name' = '{job}';
             SET 'execution.checkpointing.interval' = '500ms';
             SET 'execution.checkpointing.dir' = '{checkpoints}';
             SET 'scale-out.group.bootstrap.servers' = '{tansu}';
             SET 'scale-out.session-timeout' = '6s';
             {}",
            tables(
                &brokers,
                &input,
                &format!(
                    "'connector' = 'kafka', 'topic' = '{output}', \
                     'properties.bootstrap.servers' = '{brokers}', 'format' = 'json', \
                     'sink.delivery-guarantee' = 'exactly-once', \
                     'sink.transactional-id-prefix' = '{job}-results'"
                )
            )
        ),
    );
    let script = script.to_str().expect("utf8").to_string();

    // --explain shows the repartition topic the planner inserts.
    let explain = ok(&ws.sluice(&["run", &script, "--scale-out", "--explain"]));
    assert!(
        explain.contains(&format!("repartition topic '{job}-window-aggregate-")),
        "{explain}"
    );

    let mut first = Member::start(&ws, &script, "first", &env, &[]);
    // The process to be killed checkpoints every 3 s (see below).
    let slow_checkpoints = ["--set", "execution.checkpointing.interval=3s"];
    let second = Member::start(&ws, &script, "second", &env, &slow_checkpoints);
    let mut third = Member::start(&ws, &script, "third", &env, &[]);
    std::thread::sleep(Duration::from_secs(3));
    let producing = {
        let (brokers, input) = (brokers.clone(), input.clone());
        std::thread::spawn(move || produce(&brokers, &input, Duration::from_secs(20)))
    };
    // SIGKILL between two of its checkpoints' commits, so that no
    // Kafka transaction of it is left open: noida-db does not abort the
    // open transaction of a killed producer for every partition when its
    // next owner fences the transactional id, and read_committed readers
    // then stall (Kafka does). Its tasks still lose the rows read since.
    std::thread::sleep(Duration::from_secs(3));
    let completed = |member: &Member| member.log().matches("complete in").count();
    let seen = completed(&second);
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed(&second) == seen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Between two rounds of its tasks' checkpoints (3 s apart).
    std::thread::sleep(Duration::from_millis(1200));
    second.signal(libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(5));
    let mut fourth = Member::start(&ws, &script, "fourth", &env, &[]);
    std::thread::sleep(Duration::from_secs(6));
    first.signal(libc::SIGTERM);
    let stopped = first.wait(Duration::from_secs(90));
    assert!(
        stopped.is_some_and(|status| status.success()),
        "the gracefully stopped process exited with {stopped:?}\n{}",
        logs(&[&first])
    );
    producing.join().expect("producer");

    // The reference: one embedded process over the same (now complete) input.
    let reference_job = format!(
        "SET 'execution.checkpointing.interval' = 'off';
         {}",
        tables(
            &brokers,
            &input,
            "'connector' = 'filesystem', 'path' = '$DIR/reference', 'format' = 'json'"
        )
        .replace(
            "'scan.startup.mode' = 'earliest-offset'",
            "'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset'"
        )
    );
    ok(&ws.run(&reference_job, &[]));
    let expected = comparable(read_part_files(&ws.path("reference")));
    assert_eq!(
        expected.len(),
        (EVENTS / PARTITIONS as u64 * 10 / 10_000) as usize * 17,
        "reference rows"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut committed = Vec::new();
    while Instant::now() < deadline {
        committed = comparable(
            read_topic(&brokers, &output)
                .into_iter()
                .filter_map(|(_, value)| value),
        );
        if committed.len() >= expected.len() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // Late duplicates would show up after a further checkpoint or two.
    std::thread::sleep(Duration::from_secs(3));
    let committed_again = comparable(
        read_topic(&brokers, &output)
            .into_iter()
            .filter_map(|(_, value)| value),
    );
    assert_eq!(committed_again.len(), committed.len());
    let status_output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["status", "--job", &job, "--checkpoints", &checkpoints])
        .current_dir(ws.dir.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("sluice status");
    if committed != expected {
        let missing: Vec<&String> = expected.iter().filter(|r| !committed.contains(r)).collect();
        let extra: Vec<&String> = committed.iter().filter(|r| !expected.contains(r)).collect();
        panic!(
            "scale-out output differs from the single process's: {} rows vs {}; missing \
             {:?}; extra {:?}\n{}\n{}{}",
            committed.len(),
            expected.len(),
            &missing[..missing.len().min(5)],
            &extra[..extra.len().min(5)],
            logs(&[&first, &second, &third, &fourth]),
            String::from_utf8_lossy(&status_output.stdout),
            String::from_utf8_lossy(&status_output.stderr)
        );
    }

    // The killed process's tasks were restored elsewhere from its checkpoints.
    let survivors = format!("{}{}", third.log(), fourth.log());
    assert!(
        survivors.contains("resumed_from"),
        "{}",
        logs(&[&third, &fourth])
    );
    // `sluice status` names the live owners of all six tasks.
    let status = ok(&status_output);
    assert!(status.contains("6 task(s)"), "{status}");
    let owners = [third.child.id(), fourth.child.id()];
    for task in 0..PARTITIONS {
        let line = status
            .lines()
            .find(|line| line.starts_with(&format!("{task} ")))
            .unwrap_or_else(|| panic!("no line for task {task}: {status}"));
        assert!(
            owners.iter().any(|pid| line.contains(&format!(":{pid} "))),
            "task {task} is not owned by a live process: {status}"
        );
    }
    third.signal(libc::SIGTERM);
    fourth.signal(libc::SIGTERM);
    assert!(third.wait(Duration::from_secs(90)).is_some());
    assert!(fourth.wait(Duration::from_secs(90)).is_some());
}
