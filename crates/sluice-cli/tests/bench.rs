//! The `sluice bench nexmark` smoke run: every query of the suite over
//! 100,000 generated events, so the command cannot rot (no timing assertions).

mod common;

use common::{ok, Workspace};

/// Runs `sluice bench nexmark` with `args`; returns its table (stdout) and
/// its `--json` lines.
fn bench(ws: &Workspace, args: &[&str]) -> (String, Vec<serde_json::Value>) {
    let json = ws.path("bench.jsonl");
    let mut command = vec!["bench", "nexmark", "--json", json.to_str().expect("utf8")];
    command.extend_from_slice(args);
    let stdout = ok(&ws.sluice(&command));
    let lines = std::fs::read_to_string(&json)
        .expect("json output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    (stdout, lines)
}

#[test]
fn bench_runs_every_nexmark_query() {
    let ws = Workspace::new();
    let (stdout, lines) = bench(&ws, &["--events", "100000", "--queries", "all"]);
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["query"].as_str().expect("query"))
        .collect();
    let expected: Vec<String> = (0..=22).map(|i| format!("q{i}")).collect();
    assert_eq!(names, expected, "{stdout}");
    for line in &lines {
        assert_eq!(line["events"], 100_000, "{line}");
        assert!(
            line["events_per_second"].as_f64().expect("rate") > 0.0,
            "{line}"
        );
        assert!(line["cpu_seconds"].as_f64().expect("cpu") > 0.0, "{line}");
        assert!(line["peak_rss_mb"].as_f64().expect("rss") > 1.0, "{line}");
    }
    // The table has a row per query.
    assert!(stdout.contains("q22"), "{stdout}");
}

/// Latency runs report percentiles for q1 (from each event's creation) and
/// for q5 (from each window's close, through its latency variant).
#[test]
fn bench_latency_runs_report_percentiles_for_q1_and_q5() {
    let ws = Workspace::new();
    let (stdout, lines) = bench(
        &ws,
        &["--events", "40000", "--rate", "20000", "--queries", "q1,q5"],
    );
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in &lines {
        let latency = &line["latency_ms"];
        let [p50, p99, p999] = ["p50", "p99", "p999"].map(|q| {
            latency[q]
                .as_u64()
                .unwrap_or_else(|| panic!("no {q} latency: {line}"))
        });
        assert!(p50 <= p99 && p99 <= p999, "{line}");
    }
}

#[test]
fn bench_rejects_unknown_queries() {
    let ws = Workspace::new();
    let output = ws.sluice(&["bench", "nexmark", "--queries", "q0,q99"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown query 'q99'"));
}
