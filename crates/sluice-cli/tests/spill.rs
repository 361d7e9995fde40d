//! Keyed state beyond `state.memory-budget` spills to disk: joins (window
//! joins' open windows too), GROUP BY and Top-N produce the same output with a tiny budget as without one,
//! with checkpoints of spilled state on, and after SIGKILLs and restarts.

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
/// every 100 ms, with `budget` as the memory budget.
fn script(ws: &Workspace, query: &str, name: &str, budget: &str) -> PathBuf {
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
         {}\n{}",
        nexmark_file_source(&ws.path("events").display().to_string()),
        nexmark_query(query, &sink)
    );
    ws.write(&format!("{name}.sql"), &ws.expand(&sql))
}

/// Queries whose result is a changelog.
fn updating(query: &str) -> bool {
    matches!(query, "q4" | "q9")
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
fn run(ws: &Workspace, query: &str, name: &str, budget: &str) -> (Vec<String>, String) {
    let script = script(ws, query, name, budget);
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
        let (expected, stderr) = run(&ws, query, &format!("{query}-memory"), "unlimited");
        assert!(!expected.is_empty(), "{query} wrote nothing");
        assert!(!stderr.contains("spilled"), "{query}: {stderr}");
        let (got, stderr) = run(&ws, query, &format!("{query}-spill"), budget);
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
            let script = script(&ws, query, &name, budget);
            for delay in [700, 1300] {
                let child = sluice(&ws, &script)
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn");
                kill_after(child, Duration::from_millis(delay));
            }
            let output = sluice(&ws, &script).output().expect("run sluice");
            ok(&output);
            assert_eq!(
                rows(&ws, query, &name),
                expected,
                "{query}: rows differ after kills with spilled state"
            );
        }
    }
}
