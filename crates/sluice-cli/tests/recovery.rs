//! Checkpoints and recovery: jobs killed with SIGKILL at fixed moments (and
//! inside checkpoints, through failpoints) and restarted produce exactly the
//! output of an uninterrupted run; savepoints resume at another parallelism;
//! damaged checkpoint files are detected and skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    kill_after, nexmark_file_source, nexmark_query, next_checkpoint, ok, read_part_files,
    write_nexmark_events, Workspace,
};

/// Events in the test input: 150 s of event time at 1000 events/s.
const EVENTS: usize = 150_000;

/// Writes 150 s of generator events (1000/s) as JSON lines into `$DIR/events`.
fn generate_events(ws: &Workspace) {
    write_nexmark_events(ws, EVENTS, "'first-event.rate' = '1000', 'seed' = '11'");
}

/// Writes the script of `query` into `$DIR/<name>.sql`: the events file into
/// a file sink `$DIR/<name>-out`, checkpointing every 100 ms.
fn script(ws: &Workspace, query: &str, name: &str) -> PathBuf {
    let sink = format!("'connector' = 'filesystem', 'path' = '$DIR/{name}-out', 'format' = 'json'");
    let sql = format!(
        "SET 'pipeline.name' = '{name}';
         SET 'execution.checkpointing.interval' = '100ms';
         SET 'sluice.batch.size' = '2048';
         {}\n{}",
        nexmark_file_source(&ws.path("events").display().to_string()),
        nexmark_query(query, &sink)
    );
    ws.write(&format!("{name}.sql"), &ws.expand(&sql))
}

fn sluice(ws: &Workspace, args: &[&str], failpoint: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(args)
        .current_dir(ws.dir.path())
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(failpoint) = failpoint {
        command.env("SLUICE_FAILPOINT", failpoint);
    }
    command
}

/// Runs to the end; returns stderr.
fn run_to_end(ws: &Workspace, args: &[&str]) -> String {
    let output = sluice(ws, args, None).output().expect("run sluice");
    ok(&output);
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts a run and kills it with SIGKILL after `delay` (if still running).
/// Returns whether the job finished first.
fn run_and_kill(ws: &Workspace, args: &[&str], delay: Duration) -> bool {
    let child = sluice(ws, args, None)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    kill_after(child, delay)
}

/// Runs with a failpoint that aborts the process inside a checkpoint.
/// Returns whether the job finished before reaching it.
fn run_until_failpoint(ws: &Workspace, args: &[&str], failpoint: &str) -> bool {
    let output = sluice(ws, args, Some(failpoint))
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || stderr.contains("failpoint"),
        "unexpected failure: {stderr}"
    );
    output.status.success()
}

/// Whether the newest checkpoint in `dir` is a finished job's final one.
fn final_checkpoint_stored(dir: &Path) -> bool {
    let newest = next_checkpoint(dir) - 1;
    std::fs::read_to_string(dir.join(format!("chk-{newest:010}.manifest")))
        .map(|manifest| {
            let compact: String = manifest.split_whitespace().collect();
            compact.contains("\"kind\":\"final\"")
        })
        .unwrap_or(false)
}

/// A seeded sequence of kill delays (xorshift), in milliseconds.
fn kill_delays(seed: u64, count: usize, max_ms: u64) -> Vec<Duration> {
    let mut state = seed.max(1);
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Duration::from_millis(150 + state % max_ms)
        })
        .collect()
}

fn reference(ws: &Workspace, query: &str) -> Vec<String> {
    let name = format!("{query}-reference");
    let script = script(ws, query, &name);
    run_to_end(ws, &["run", script.to_str().expect("utf8")]);
    let lines = read_part_files(&ws.path(&format!("{name}-out")));
    assert!(
        !lines.is_empty(),
        "{query}: the reference run wrote nothing"
    );
    lines
}

/// Kills `query` at `parallelism` at the seeded moments (before
/// `max_kill_ms`, plus 150 ms) and inside checkpoints, restarting each time,
/// and compares with `expected`.
fn crash_and_recover(
    ws: &Workspace,
    query: &str,
    parallelism: &str,
    (seed, max_kill_ms): (u64, u64),
    expected: &[String],
) {
    let name = format!("{query}-p{parallelism}-crash");
    let script = script(ws, query, &name);
    let script = script.to_str().expect("utf8");
    let args = ["run", script, "-p", parallelism];
    // A job that finished is complete: run again, it would start over. On a
    // fast machine the input can end before a kill (or the kill lands after
    // the final checkpoint); the rounds stop there.
    let checkpoints = ws.path(&format!("sluice-data/{name}/checkpoints"));
    let mut finished = false;
    for (round, delay) in kill_delays(seed, 3, max_kill_ms).into_iter().enumerate() {
        if run_and_kill(ws, &args, delay) || final_checkpoint_stored(&checkpoints) {
            finished = true;
            break;
        }
        // Inside a checkpoint: after its state files, before its manifest;
        // and after its manifest, before the sinks commit.
        let failpoint = if round % 2 == 0 {
            "before-manifest"
        } else {
            "before-commit"
        };
        let next = next_checkpoint(&checkpoints);
        if run_until_failpoint(ws, &args, &format!("{failpoint}:{}", next + 1))
            || final_checkpoint_stored(&checkpoints)
        {
            finished = true;
            break;
        }
    }
    let stderr = if finished {
        String::new()
    } else {
        run_to_end(ws, &args)
    };
    let got = read_part_files(&ws.path(&format!("{name}-out")));
    assert_eq!(
        got.len(),
        expected.len(),
        "{query} p{parallelism}: row count differs after recovery\n{stderr}"
    );
    assert_eq!(
        got, expected,
        "{query} p{parallelism}: rows differ after recovery"
    );
    let leftovers: Vec<_> = std::fs::read_dir(ws.path(&format!("{name}-out")))
        .expect("sink dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "in-progress files left: {leftovers:?}"
    );
}

#[test]
fn killed_jobs_recover_with_exactly_the_uninterrupted_output() {
    let ws = Workspace::new();
    generate_events(&ws);
    for (query, seed) in [("q5", 5), ("q7", 7), ("q8", 8)] {
        let started = Instant::now();
        let expected = reference(&ws, query);
        // Kills land in the first 60% of an uninterrupted run's time (at
        // most 1.35 s), so a first run dies mid-input however fast the machine.
        let max_kill_ms = (started.elapsed().as_millis() as u64 * 6 / 10).clamp(100, 1350) - 50;
        for parallelism in ["1", "2"] {
            crash_and_recover(
                &ws,
                query,
                parallelism,
                (seed * 10 + parallelism.len() as u64, max_kill_ms),
                &expected,
            );
        }
    }
}

/// Waits until a job has completed a checkpoint (so it is running).
fn wait_for_checkpoint(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while next_checkpoint(dir) < 2 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stop_with_savepoint_resumes_at_another_parallelism() {
    let ws = Workspace::new();
    generate_events(&ws);
    for (query, first, second) in [("q5", "1", "2"), ("q8", "2", "1")] {
        let expected = reference(&ws, query);
        let name = format!("{query}-savepoint");
        let script = script(&ws, query, &name);
        let script = script.to_str().expect("utf8");
        let mut child = sluice(&ws, &["run", script, "-p", first], None)
            .spawn()
            .expect("spawn");
        wait_for_checkpoint(&ws.path(&format!("sluice-data/{name}/checkpoints")));
        let savepoint = ws.path(&format!("{name}-sp"));
        let stop = ws.sluice(&[
            "stop",
            &name,
            "--savepoint",
            savepoint.to_str().expect("utf8"),
        ]);
        let said = ok(&stop);
        assert!(said.contains("savepoint"), "{said}");
        let status = child.wait().expect("job exits after stop");
        assert!(status.success(), "stopped job exit status {status}");
        let stderr = run_to_end(
            &ws,
            &[
                "run",
                script,
                "-p",
                second,
                "--from-savepoint",
                savepoint.to_str().expect("utf8"),
            ],
        );
        assert!(stderr.contains("resuming from savepoint"), "{stderr}");
        let got = read_part_files(&ws.path(&format!("{name}-out")));
        assert_eq!(got, expected, "{query}: savepoint p{first} -> p{second}");
    }
}

/// The operator state chunks (hash, size) a checkpoint's manifest lists.
fn operator_chunks(dir: &Path, checkpoint: u64) -> Vec<(String, u64)> {
    let manifest = std::fs::read_to_string(dir.join(format!("chk-{checkpoint:010}.manifest")))
        .expect("manifest");
    let json = manifest.split_once('\n').expect("checksum line").1;
    let manifest: serde_json::Value = serde_json::from_str(json).expect("manifest json");
    manifest["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter(|c| c["role"] == "operator")
        .flat_map(|c| c["chunks"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["hash"].as_str().expect("hash").to_string(),
                c["size"].as_u64().expect("size"),
            )
        })
        .collect()
}

/// Flips a byte in (or truncates) a state chunk only the newest checkpoint
/// has (chunks are shared between checkpoints when unchanged).
fn damage_newest_checkpoint(dir: &Path, truncate: bool) {
    let newest = next_checkpoint(dir) - 1;
    let previous = operator_chunks(dir, newest - 1);
    let (hash, _) = operator_chunks(dir, newest)
        .into_iter()
        .filter(|chunk| !previous.contains(chunk))
        .max_by_key(|(_, size)| *size)
        .expect("a chunk of the newest checkpoint alone");
    let path = dir.join(format!("shared/{hash}.chunk"));
    let mut bytes = std::fs::read(&path).expect("chunk");
    if truncate {
        bytes.truncate(bytes.len() / 2);
    } else {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
    }
    std::fs::write(&path, bytes).expect("damage chunk");
}

#[test]
fn damaged_checkpoints_are_detected_and_skipped() {
    let ws = Workspace::new();
    // Enough input that even a fast run lasts past checkpoint 6 (100 ms each).
    write_nexmark_events(
        &ws,
        4 * EVENTS,
        "'first-event.rate' = '1000', 'seed' = '11'",
    );
    let expected = reference(&ws, "q7");
    for truncate in [false, true] {
        let name = format!("q7-damaged-{truncate}");
        let script = script(&ws, "q7", &name);
        let script = script.to_str().expect("utf8");
        let checkpoints = ws.path(&format!("sluice-data/{name}/checkpoints"));
        // Die in checkpoint 6 after its manifest: before its output is
        // published, or after (then falling back to checkpoint 5 must take
        // that output back, since the replay writes it again).
        let failpoint = if truncate {
            "after-commit:6"
        } else {
            "before-commit:6"
        };
        run_until_failpoint(&ws, &["run", script], failpoint);
        assert_eq!(
            next_checkpoint(&checkpoints),
            7,
            "the job did not reach checkpoint 6"
        );
        damage_newest_checkpoint(&checkpoints, truncate);
        let stderr = run_to_end(&ws, &["run", script]);
        assert!(
            stderr.contains("checkpoint 6 is unusable")
                && stderr.contains("resuming from checkpoint 5"),
            "{stderr}"
        );
        let got = read_part_files(&ws.path(&format!("{name}-out")));
        assert_eq!(got, expected, "damaged checkpoint ({truncate})");
    }
}

#[test]
fn fresh_starts_over_and_finished_jobs_rerun() {
    let ws = Workspace::new();
    generate_events(&ws);
    let name = "q7-rerun";
    let script = script(&ws, "q7", name);
    let script = script.to_str().expect("utf8");
    run_to_end(&ws, &["run", script]);
    let once = read_part_files(&ws.path(&format!("{name}-out")));
    // A finished job runs again from the start (its last checkpoint is final).
    let stderr = run_to_end(&ws, &["run", script]);
    assert!(stderr.contains("starting over"), "{stderr}");
    // A job killed in its first checkpoint (nothing committed) and rerun
    // with --fresh starts from the beginning.
    let next = next_checkpoint(&ws.path(&format!("sluice-data/{name}/checkpoints")));
    run_until_failpoint(&ws, &["run", script], &format!("before-commit:{next}"));
    let stderr = run_to_end(&ws, &["run", script, "--fresh"]);
    assert!(!stderr.contains("resuming"), "{stderr}");
    let all = read_part_files(&ws.path(&format!("{name}-out")));
    assert_eq!(all.len(), once.len() * 3);
}

/// Checkpoints that time out (here: almost all of them) lose no output: what
/// their sinks pre-committed is committed with the next checkpoint that
/// completes, or the final one.
#[test]
fn abandoned_checkpoints_lose_no_output() {
    let ws = Workspace::new();
    generate_events(&ws);
    let expected = reference(&ws, "q5");
    let name = "q5-abandoned";
    let script = script(&ws, "q5", name);
    let sql = std::fs::read_to_string(&script).expect("script");
    std::fs::write(
        &script,
        format!("SET 'execution.checkpointing.timeout' = '3ms';\n{sql}"),
    )
    .expect("write script");
    let stderr = run_to_end(&ws, &["run", script.to_str().expect("utf8"), "-p", "2"]);
    assert!(
        stderr.contains("abandoned"),
        "no checkpoint timed out, so the test shows nothing:\n{stderr}"
    );
    let got = read_part_files(&ws.path(&format!("{name}-out")));
    assert_eq!(got, expected, "output differs when checkpoints time out");
}
