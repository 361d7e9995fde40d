//! Keyed state beyond `state.memory-budget` spills to disk: joins (window
//! joins' open windows too), GROUP BY and Top-N produce the same output with a tiny budget as without one,
//! with checkpoints of spilled state on, and after SIGKILLs and restarts.
//! The same holds for idle keys compacted in memory (`state.compact-idle-keys`),
//! their values compressed (`state.compress-idle-keys`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    kill_after, materialize_changelog, nexmark_file_source, nexmark_query, ok, read_part_files,
    write_nexmark_events, Workspace,
};

/// A budget far below the state of these queries over the test input.
const TINY_BUDGET: &str = "32kb";

/// Writes the script of `query` into `$DIR/<name>.sql`, sinking into
/// `$DIR/<name>-out` (as a changelog for updating queries), checkpointing
/// every 100 ms, with `budget` as the memory budget and `settings` (more
/// `SET` statements).
fn script(ws: &Workspace, query: &str, name: &str, budget: &str, settings: &str) -> PathBuf {
    let format = if updating(query) {
        "debezium-json"
    } else {
        "json"
    };
    let sink =
        format!("'connector' = 'filesystem', 'path' = '$DIR/{name}-out', 'format' = '{format}'");
    let sql = format!(
        "SET 'pipeline.name' = '{name}';
         SET 'execution.checkpointing.interval' = '100ms';
         SET 'state.memory-budget' = '{budget}';
         SET 'sluice.batch.size' = '1024';
         {settings}
         {}\n{}",
        nexmark_file_source(&ws.path("events").display().to_string()),
        nexmark_query(query, &sink)
    );
    ws.write(&format!("{name}.sql"), &ws.expand(&sql))
}

/// Queries whose result is a changelog.
fn updating(query: &str) -> bool {
    matches!(query, "q4" | "q9" | "q17" | "q18")
}

fn sluice(ws: &Workspace, script: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["run", script.to_str().expect("utf8"), "-p", "2"])
        .current_dir(ws.dir.path())
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null());
    command
}

/// Runs to the end; returns the output rows and stderr.
fn run(
    ws: &Workspace,
    query: &str,
    name: &str,
    budget: &str,
    settings: &str,
) -> (Vec<String>, String) {
    let script = script(ws, query, name, budget, settings);
    let output = sluice(ws, &script).output().expect("run sluice");
    ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (rows(ws, query, name), stderr)
}

fn rows(ws: &Workspace, query: &str, name: &str) -> Vec<String> {
    let dir = ws.path(&format!("{name}-out"));
    if updating(query) {
        materialize_changelog(&dir)
    } else {
        read_part_files(&dir)
    }
}

#[test]
fn spilled_state_gives_the_same_output_and_recovers_after_kills() {
    let ws = Workspace::new();
    write_nexmark_events(&ws, 100_000, "'first-event.rate' = '1000', 'seed' = '3'");
    // q5's window join holds a few small windows at a time: its budget is smaller.
    for (query, budget) in [
        ("q3", TINY_BUDGET),
        ("q4", TINY_BUDGET),
        ("q9", TINY_BUDGET),
        ("q20", TINY_BUDGET),
        ("q5", "1kb"),
    ] {
        let (expected, stderr) = run(&ws, query, &format!("{query}-memory"), "unlimited", "");
        assert!(!expected.is_empty(), "{query} wrote nothing");
        assert!(!stderr.contains("spilled"), "{query}: {stderr}");
        let (got, stderr) = run(&ws, query, &format!("{query}-spill"), budget, "");
        assert!(
            stderr.contains("spilled") && stderr.contains("MB to disk"),
            "{query} did not spill: {stderr}"
        );
        assert_eq!(
            got.len(),
            expected.len(),
            "{query}: row count with spilling"
        );
        assert_eq!(got, expected, "{query}: rows differ with spilling");
        assert!(
            !ws.path(&format!("sluice-data/{query}-spill/spill"))
                .exists(),
            "{query}: the spill directory outlived the job"
        );

        // Killed while spilling (a previous run's spill files are wiped),
        // restarted from checkpoints of spilled state.
        // (q5 is over within the kill delays, and a finished job reruns.)
        if matches!(query, "q20" | "q4") {
            let name = format!("{query}-spill-crash");
            let script = script(&ws, query, &name, budget, "");
            run_with_kills(&ws, &script, &[700, 1300]);
            assert_eq!(
                rows(&ws, query, &name),
                expected,
                "{query}: rows differ after kills with spilled state"
            );
        }
    }
}

/// Kills the job at each of `delays`, then runs it to the end from its
/// checkpoints.
fn run_with_kills(ws: &Workspace, script: &Path, delays: &[u64]) {
    for &delay in delays {
        let child = sluice(ws, script)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        kill_after(child, Duration::from_millis(delay));
    }
    let output = sluice(ws, script).output().expect("run sluice");
    ok(&output);
}

#[test]
fn compacted_idle_keys_give_the_same_output_and_recover_after_kills() {
    let ws = Workspace::new();
    write_nexmark_events(&ws, 200_000, "'first-event.rate' = '1000', 'seed' = '5'");
    // GROUP BY (q17, aggregating batch by batch, so that keys go idle
    // within the run), Top-N (q18) and a regular join (q20). (Unit tests
    // cover compacted keys spilling to disk.)
    let compacting = "SET 'sluice.batch.held-rows' = '0';";
    let off = "SET 'sluice.batch.held-rows' = '0'; SET 'state.compact-idle-keys' = 'false';";
    for query in ["q17", "q18", "q20"] {
        let (expected, stderr) = run(&ws, query, &format!("{query}-live"), "unlimited", off);
        assert!(!expected.is_empty(), "{query} wrote nothing");
        assert!(!stderr.contains("compacted"), "{query}: {stderr}");
        let name = format!("{query}-compacted");
        let (got, stderr) = run(&ws, query, &name, "unlimited", compacting);
        assert!(
            stderr.contains("idle keys were compacted in memory"),
            "{query} compacted no key: {stderr}"
        );
        // q20 keeps each auction's bids, kilobytes a key: compressed.
        if query == "q20" {
            assert!(
                !stderr.contains(" 0 of them compressed"),
                "{query} compressed no value: {stderr}"
            );
        }
        assert_eq!(got, expected, "{query}: rows differ with compaction");
        let name = format!("{query}-compacted-crash");
        let script = script(&ws, query, &name, "unlimited", compacting);
        run_with_kills(&ws, &script, &[900, 1600]);
        assert_eq!(
            rows(&ws, query, &name),
            expected,
            "{query}: rows differ after kills with compacted state"
        );
    }
}
