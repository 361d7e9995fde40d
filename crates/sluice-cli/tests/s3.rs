//! Checkpoints on an S3-compatible object store: a job killed inside a
//! checkpoint resumes from the checkpoint it stored in the bucket.
//!
//! Needs an S3 endpoint in `SLUICE_TEST_S3_ENDPOINT` (`.ci/run` starts a
//! moto server); without one the test is skipped, except under CI
//! (`SLUICE_CI` set), where that is an error.

mod common;

use std::process::{Command, Stdio};

use common::{create_bucket, nexmark_file_source, ok, read_part_files, Workspace};

fn sluice(
    ws: &Workspace,
    endpoint: &str,
    args: &[&str],
    failpoint: Option<&str>,
) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(args)
        .current_dir(ws.dir.path())
        .env("SLUICE_LOG", "info")
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(failpoint) = failpoint {
        command.env("SLUICE_FAILPOINT", failpoint);
    }
    command.output().expect("run sluice")
}

#[test]
fn checkpoints_on_s3_survive_a_crash() {
    let Ok(endpoint) = std::env::var("SLUICE_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("SLUICE_CI").is_none(),
            "SLUICE_TEST_S3_ENDPOINT must be set in CI"
        );
        eprintln!("skipped: SLUICE_TEST_S3_ENDPOINT is not set");
        return;
    };
    let bucket = format!("sluice-test-{}", std::process::id());
    create_bucket(&endpoint, &bucket);
    let ws = Workspace::new();
    let events: String = (0..30_000)
        .map(|i| {
            format!(
                "{{\"event_type\":2,\"bid\":{{\"auction\":{},\"bidder\":{},\"price\":{},\"channel\":\"c\",\"url\":\"u\",\"dateTime\":\"2015-07-15 00:{:02}:{:02}.{:03}\",\"extra\":\"\"}}}}\n",
                i % 7,
                i % 13,
                (i * 37) % 1000,
                (i / 1000) / 60,
                (i / 1000) % 60,
                i % 1000
            )
        })
        .collect();
    ws.write("events/bids.json", &events);
    let query = format!(
        "SET 'pipeline.name' = 's3-job';
         SET 'execution.checkpointing.interval' = '100ms';
         SET 'execution.checkpointing.dir' = 's3://{bucket}/checkpoints';
         SET 'sluice.batch.size' = '1000';
         {}
         CREATE TABLE out (auction BIGINT, num BIGINT, top BIGINT, window_end TIMESTAMP(3))
             WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out
         SELECT auction, COUNT(*), MAX(price), window_end
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND))
         GROUP BY auction, window_start, window_end;",
        nexmark_file_source(&ws.path("events").display().to_string())
    );
    let script = ws.write("job.sql", &ws.expand(&query));
    let script = script.to_str().expect("utf8");
    // Die inside checkpoint 2 (the job may take only three), after its manifest reached the bucket.
    let first = sluice(&ws, &endpoint, &["run", script], Some("before-commit:2"));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("failpoint before-commit:2"), "{stderr}");
    let second = sluice(&ws, &endpoint, &["run", script], None);
    let stderr = ok(&second);
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(
        log.contains(&format!(
            "resuming from checkpoint 2 in s3://{bucket}/checkpoints"
        )),
        "{stderr}{log}"
    );
    let got = read_part_files(&ws.path("out"));
    // Reference: the same job without checkpoints.
    let reference = ws.run(
        &query
            .replace("100ms", "off")
            .replace("'$DIR/out'", "'$DIR/reference'"),
        &[],
    );
    ok(&reference);
    let expected = read_part_files(&ws.path("reference"));
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}
