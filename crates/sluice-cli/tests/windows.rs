//! Event-time window aggregation over hand-made inputs whose results are
//! worked out by hand.

mod common;

use common::{failed, ok, Workspace};

/// Events as (key, value, time in seconds after 2020-01-01 00:00:00).
const EVENTS: [(&str, i64, &str); 8] = [
    ("a", 1, "01.000"),
    ("b", 2, "03.000"),
    ("a", 3, "09.999"),
    ("a", 4, "10.000"),
    ("a", 5, "07.000"), // out of order, within the 5 s bound
    ("b", 6, "25.000"),
    ("a", 7, "02.000"), // behind the watermark (20 s) when it arrives: late
    ("b", 8, "26.000"),
];

fn write_events(ws: &Workspace) {
    write_event_lines(ws, &EVENTS);
}

fn write_event_lines(ws: &Workspace, events: &[(&str, i64, &str)]) {
    let lines: String = events
        .iter()
        .map(|(k, v, t)| format!("{{\"k\":\"{k}\",\"v\":{v},\"ts\":\"2020-01-01 00:00:{t}\"}}\n"))
        .collect();
    ws.write("in.json", &lines);
}

const SOURCE: &str = "CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
    WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');";

/// Runs `query` into a JSON sink with one row per batch, so the watermark
/// advances between rows exactly as the data says.
fn run_window_query(
    ws: &Workspace,
    sink_columns: &str,
    query: &str,
    extra: &[&str],
) -> Vec<String> {
    let job = format!(
        "{SOURCE}
         CREATE TABLE out ({sink_columns}) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out {query};"
    );
    let mut args = vec!["--set", "sluice.batch.size=1"];
    args.extend_from_slice(extra);
    let output = ws.run(&job, &args);
    ok(&output);
    // The late row is counted and reported (once per source that reads it).
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 late records") || stderr.contains("2 late records"),
        "{stderr}"
    );
    // ... per operator kind.
    assert!(stderr.contains("were dropped: "), "{stderr}");
    ws.sink_lines("out")
}

#[test]
fn tumble_counts_per_key_and_drops_late_rows() {
    let ws = Workspace::new();
    write_events(&ws);
    let rows = run_window_query(
        &ws,
        "k STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT",
        "SELECT k, window_start, window_end, COUNT(*), SUM(v)
         FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY k, window_start, window_end",
        &[],
    );
    assert_eq!(
        rows,
        vec![
            r#"{"k":"a","window_start":"2020-01-01 00:00:00.000","window_end":"2020-01-01 00:00:10.000","n":3,"total":9}"#,
            r#"{"k":"a","window_start":"2020-01-01 00:00:10.000","window_end":"2020-01-01 00:00:20.000","n":1,"total":4}"#,
            r#"{"k":"b","window_start":"2020-01-01 00:00:00.000","window_end":"2020-01-01 00:00:10.000","n":1,"total":2}"#,
            r#"{"k":"b","window_start":"2020-01-01 00:00:20.000","window_end":"2020-01-01 00:00:30.000","n":2,"total":14}"#,
        ]
    );
}

#[test]
fn hop_windows_share_panes() {
    let ws = Workspace::new();
    write_events(&ws);
    let rows = run_window_query(
        &ws,
        "window_start TIMESTAMP(3), n BIGINT, top BIGINT, keys BIGINT",
        "SELECT window_start, COUNT(*), MAX(v), COUNT(DISTINCT k)
         FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
         GROUP BY window_start, window_end",
        &[],
    );
    // The late row (a, 7, 00:02) is dropped: its last window [0, 10) closed at 9.999.
    assert_eq!(
        rows,
        vec![
            r#"{"window_start":"2019-12-31 23:59:55.000","n":2,"top":2,"keys":2}"#,
            r#"{"window_start":"2020-01-01 00:00:00.000","n":4,"top":5,"keys":2}"#,
            r#"{"window_start":"2020-01-01 00:00:05.000","n":3,"top":5,"keys":1}"#,
            r#"{"window_start":"2020-01-01 00:00:10.000","n":1,"top":4,"keys":1}"#,
            r#"{"window_start":"2020-01-01 00:00:20.000","n":2,"top":8,"keys":1}"#,
            r#"{"window_start":"2020-01-01 00:00:25.000","n":2,"top":8,"keys":1}"#,
        ]
    );
}

#[test]
fn rows_behind_a_closed_window_still_count_in_the_later_windows_of_their_pane() {
    let ws = Workspace::new();
    // The row at 04 arrives once [-5, 5) has closed (watermark 6): too late
    // for that window, in time for [0, 10), whose earlier rows were already
    // merged ahead of its close. The row at 02 comes after [0, 10) closed.
    write_event_lines(
        &ws,
        &[
            ("a", 1, "01.000"),
            ("a", 2, "11.000"),
            ("a", 3, "04.000"),
            ("a", 4, "06.000"),
            ("a", 5, "30.000"),
            ("a", 6, "02.000"),
        ],
    );
    let rows = run_window_query(
        &ws,
        "window_start TIMESTAMP(3), n BIGINT, total BIGINT",
        "SELECT window_start, COUNT(*), SUM(v)
         FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
         GROUP BY window_start, window_end",
        &[],
    );
    assert_eq!(
        rows,
        vec![
            r#"{"window_start":"2019-12-31 23:59:55.000","n":1,"total":1}"#,
            r#"{"window_start":"2020-01-01 00:00:00.000","n":3,"total":8}"#,
            r#"{"window_start":"2020-01-01 00:00:05.000","n":2,"total":6}"#,
            r#"{"window_start":"2020-01-01 00:00:10.000","n":1,"total":2}"#,
            r#"{"window_start":"2020-01-01 00:00:25.000","n":1,"total":5}"#,
            r#"{"window_start":"2020-01-01 00:00:30.000","n":1,"total":5}"#,
        ]
    );
}

#[test]
fn cumulate_windows_grow_by_step() {
    let ws = Workspace::new();
    write_events(&ws);
    let rows = run_window_query(
        &ws,
        "window_end TIMESTAMP(3), n BIGINT, total BIGINT",
        "SELECT window_end, COUNT(*), SUM(v)
         FROM TABLE(CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
         WHERE k = 'a'
         GROUP BY window_start, window_end",
        &[],
    );
    // Rows of key a: 1@01, 3@09.999, 4@10, 5@07 (7@02 is late).
    assert_eq!(
        rows,
        vec![
            r#"{"window_end":"2020-01-01 00:00:05.000","n":1,"total":1}"#,
            r#"{"window_end":"2020-01-01 00:00:10.000","n":3,"total":9}"#,
            r#"{"window_end":"2020-01-01 00:00:15.000","n":1,"total":4}"#,
            r#"{"window_end":"2020-01-01 00:00:20.000","n":1,"total":4}"#,
        ]
    );
}

#[test]
fn end_of_input_fires_every_window_and_parallelism_agrees() {
    let ws = Workspace::new();
    write_events(&ws);
    let query = "SELECT k, window_start, COUNT(*), AVG(v)
         FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY k, window_start, window_end";
    let columns = "k STRING, window_start TIMESTAMP(3), n BIGINT, mean DOUBLE";
    // One batch: the whole file arrives before the first watermark, so nothing is late.
    let job = format!(
        "{SOURCE}
         CREATE TABLE out ({columns}) WITH ('connector' = 'filesystem', 'path' = '$DIR/OUT', 'format' = 'json');
         INSERT INTO out {query};"
    );
    ok(&ws.run(&job.replace("OUT", "p1"), &["-p", "1"]));
    ok(&ws.run(&job.replace("OUT", "p2"), &["-p", "2"]));
    let p1 = ws.sink_lines("p1");
    assert_eq!(p1.len(), 4);
    assert!(
        p1[0].contains(r#""k":"a","window_start":"2020-01-01 00:00:00.000","n":4,"mean":4.0"#),
        "{p1:?}"
    );
    assert_eq!(p1, ws.sink_lines("p2"));
}

#[test]
fn window_tvf_errors_are_clear() {
    let ws = Workspace::new();
    write_events(&ws);
    let missing_descriptor_column = ws.run(
        &format!(
            "{SOURCE} SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(nope), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;"
        ),
        &[],
    );
    assert!(failed(&missing_descriptor_column).contains("DESCRIPTOR column `nope`"));
    let not_a_timestamp = ws.run(
        &format!("{SOURCE} SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(v), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;"),
        &[],
    );
    assert!(failed(&not_a_timestamp).contains("must be a TIMESTAMP"));
    let bad_hop = ws.run(
        &format!("{SOURCE} SELECT COUNT(*) FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end;"),
        &[],
    );
    assert!(failed(&bad_hop).contains("multiple of its slide"));
    let without_window_columns = ws.run(
        &format!("{SOURCE} SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY k;"),
        &[],
    );
    assert!(failed(&without_window_columns).contains("window_start"));
}

#[test]
fn legacy_group_window_syntax_matches_the_tvf_form() {
    let ws = Workspace::new();
    write_events(&ws);
    let tvf = run_window_query(
        &ws,
        "k STRING, s TIMESTAMP(3), e TIMESTAMP(3), n BIGINT",
        "SELECT k, window_start, window_end, COUNT(*)
         FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
         GROUP BY k, window_start, window_end",
        &[],
    );
    let legacy_ws = Workspace::new();
    write_events(&legacy_ws);
    let legacy = run_window_query(
        &legacy_ws,
        "k STRING, s TIMESTAMP(3), e TIMESTAMP(3), n BIGINT",
        "SELECT k, HOP_START(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND),
                HOP_END(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND), COUNT(*)
         FROM t
         GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND), k",
        &[],
    );
    assert_eq!(tvf.len(), 8, "{tvf:?}");
    assert_eq!(tvf, legacy);
}

#[test]
fn session_windows_merge_per_key() {
    let ws = Workspace::new();
    write_events(&ws);
    let job = format!(
        "{SOURCE}
         CREATE TABLE out (k STRING, s TIMESTAMP(3), e TIMESTAMP(3), n BIGINT, total BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out
         SELECT k, window_start, window_end, COUNT(*), SUM(v)
         FROM TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '3' SECOND))
         GROUP BY k, window_start, window_end;"
    );
    // One batch, so no row is late: a has 1@01, 7@02 | 5@07, 3@09.999, 4@10; b has 2@03 | 6@25, 8@26.
    ok(&ws.run(&job, &["-p", "2"]));
    assert_eq!(
        ws.sink_lines("out"),
        vec![
            r#"{"k":"a","s":"2020-01-01 00:00:01.000","e":"2020-01-01 00:00:05.000","n":2,"total":8}"#,
            r#"{"k":"a","s":"2020-01-01 00:00:07.000","e":"2020-01-01 00:00:13.000","n":3,"total":12}"#,
            r#"{"k":"b","s":"2020-01-01 00:00:03.000","e":"2020-01-01 00:00:06.000","n":1,"total":2}"#,
            r#"{"k":"b","s":"2020-01-01 00:00:25.000","e":"2020-01-01 00:00:29.000","n":2,"total":14}"#,
        ]
    );
}

#[test]
fn late_rows_go_to_the_dead_letter_file_when_asked() {
    let ws = Workspace::new();
    write_events(&ws);
    run_window_query(
        &ws,
        "k STRING, n BIGINT",
        "SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY k, window_start, window_end",
        &[
            "--set",
            "table.exec.late-data=dlq",
            "--set",
            "table.exec.late-data.dlq-path=late.jsonl",
        ],
    );
    let dead = std::fs::read_to_string(ws.path("late.jsonl")).expect("late dead letters");
    let letters: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(letters.len(), 1, "{dead}");
    let reason = letters[0]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("late: event time 2020-01-01 00:00:02.000"),
        "{reason}"
    );
    assert!(
        reason.contains("watermark 2020-01-01 00:00:20.000"),
        "{reason}"
    );
    assert!(
        letters[0]["raw"].as_str().expect("raw").contains("\"v\":7"),
        "{dead}"
    );
}

/// Event-time OVER aggregates: rows are taken in time order once the
/// watermark passes them (the out-of-order `a` row at 7 s sorts before 9.999 s),
/// the late row is dropped, and ROWS / RANGE frames are worked out by hand.
#[test]
fn over_aggregates_follow_event_time_order() {
    let ws = Workspace::new();
    write_events(&ws);
    let rows = run_window_query(
        &ws,
        "k STRING, v BIGINT, s BIGINT",
        "SELECT k, v, SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t",
        &[],
    );
    let expected = [
        ("a", 1, 1),
        ("a", 3, 8),
        ("a", 4, 7),
        ("a", 5, 6),
        ("b", 2, 2),
        ("b", 6, 8),
        ("b", 8, 14),
    ];
    let expected: Vec<String> = expected
        .iter()
        .map(|(k, v, s)| format!(r#"{{"k":"{k}","v":{v},"s":{s}}}"#))
        .collect();
    assert_eq!(rows, expected);

    let ws = Workspace::new();
    write_events(&ws);
    let rows = run_window_query(
        &ws,
        "k STRING, v BIGINT, s BIGINT, n BIGINT",
        "SELECT k, v, SUM(v) OVER w, COUNT(*) OVER w FROM t
         WINDOW w AS (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW)",
        &[],
    );
    let expected = [
        ("a", 1, 1, 1),
        ("a", 3, 8, 2),
        ("a", 4, 12, 3),
        ("a", 5, 5, 1),
        ("b", 2, 2, 1),
        ("b", 6, 6, 1),
        ("b", 8, 14, 2),
    ];
    let expected: Vec<String> = expected
        .iter()
        .map(|(k, v, s, n)| format!(r#"{{"k":"{k}","v":{v},"s":{s},"n":{n}}}"#))
        .collect();
    assert_eq!(rows, expected);
}

const TUMBLE_10S: &str = "TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))";

fn at(seconds: u32) -> String {
    format!("2020-01-01 00:00:{seconds:02}.000")
}

/// Window Top-N over a window TVF: the two largest values per window,
/// emitted once per window; the late row is dropped.
#[test]
fn window_top_n_ranks_each_window_once() {
    let ws = Workspace::new();
    write_events(&ws);
    let rows = run_window_query(
        &ws,
        "k STRING, v BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), rn BIGINT",
        &format!(
            "SELECT k, v, window_start, window_end, rn FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY v DESC) AS rn
               FROM {TUMBLE_10S})
             WHERE rn <= 2"
        ),
        &[],
    );
    let expected = [
        ("a", 3, 0, 2),
        ("a", 4, 10, 1),
        ("a", 5, 0, 1),
        ("b", 6, 20, 2),
        ("b", 8, 20, 1),
    ];
    let expected: Vec<String> = expected
        .iter()
        .map(|(k, v, start, rn)| {
            format!(
                r#"{{"k":"{k}","v":{v},"window_start":"{}","window_end":"{}","rn":{rn}}}"#,
                at(*start),
                at(start + 10)
            )
        })
        .collect();
    assert_eq!(rows, expected);
}

/// Window join: rows of the same key in the same window, from two window
/// TVFs; state is freed when the window closes, and the result is append-only.
#[test]
fn window_join_pairs_rows_of_the_same_window() {
    let ws = Workspace::new();
    write_events(&ws);
    let rows = run_window_query(
        &ws,
        "k STRING, smaller BIGINT, larger BIGINT, window_start TIMESTAMP(3)",
        &format!(
            "SELECT l.k, l.v, r.v, l.window_start
             FROM (SELECT * FROM {TUMBLE_10S}) l
             JOIN (SELECT * FROM {TUMBLE_10S}) r
             ON l.window_start = r.window_start AND l.window_end = r.window_end AND l.k = r.k AND l.v < r.v"
        ),
        &[],
    );
    let expected = [
        ("a", 1, 3, 0),
        ("a", 1, 5, 0),
        ("a", 3, 5, 0),
        ("b", 6, 8, 20),
    ];
    let expected: Vec<String> = expected
        .iter()
        .map(|(k, small, large, start)| {
            format!(
                r#"{{"k":"{k}","smaller":{small},"larger":{large},"window_start":"{}"}}"#,
                at(*start)
            )
        })
        .collect();
    assert_eq!(rows, expected);
}

/// Outer window join: each window's rows are joined when it closes; rows
/// without a partner in their window come out once, padded with NULLs (the
/// result stays append-only), and a row of a window that already closed is late.
#[test]
fn full_outer_window_join_pads_unmatched_rows_when_the_window_closes() {
    let ws = Workspace::new();
    write_events(&ws);
    let query = format!(
        "SELECT l.v, r.v, COALESCE(l.window_start, r.window_start)
         FROM (SELECT * FROM {TUMBLE_10S} WHERE k = 'a') l
         FULL JOIN (SELECT * FROM {TUMBLE_10S} WHERE k = 'b') r
         ON l.window_start = r.window_start AND l.window_end = r.window_end AND l.v < r.v"
    );
    let explain = ws.run(
        &format!(
            "{SOURCE} CREATE TABLE out (l BIGINT, r BIGINT, window_start TIMESTAMP(3))
             WITH ('connector' = 'blackhole'); INSERT INTO out {query};"
        ),
        &["--explain"],
    );
    let explain = ok(&explain);
    assert!(
        explain.contains("WindowFullOuterJoin") && explain.contains("when the watermark closes it"),
        "{explain}"
    );
    let rows = run_window_query(
        &ws,
        "l BIGINT, r BIGINT, window_start TIMESTAMP(3)",
        &query,
        &[],
    );
    // [0, 10): a 1, 3, 5 and b 2 (1 < 2 pairs); [10, 20): a 4 alone;
    // [20, 30): b 6 and 8 alone. a 7 (at 2 s) arrives after [0, 10) closed.
    let row = |l: Option<i64>, r: Option<i64>, start: u32| {
        let value = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
        format!(
            r#"{{"l":{},"r":{},"window_start":"{}"}}"#,
            value(l),
            value(r),
            at(start)
        )
    };
    let mut expected = vec![
        row(Some(1), Some(2), 0),
        row(Some(3), None, 0),
        row(Some(5), None, 0),
        row(Some(4), None, 10),
        row(None, Some(6), 20),
        row(None, Some(8), 20),
    ];
    expected.sort();
    assert_eq!(rows, expected);
}

/// An input without data holds the watermark back, so windows fed by a union
/// with it never fire while the job runs, unless the idle input is marked
/// idle after 'scan.watermark.idle-timeout'.
#[cfg(unix)]
#[test]
fn idle_inputs_stop_holding_back_the_watermark() {
    use std::io::BufRead;
    for (timeout, fires_while_running) in [
        ("'scan.watermark.idle-timeout' = '100 ms',", true),
        ("", false),
    ] {
        let ws = Workspace::new();
        ws.write(
            "a/1.json",
            "{\"ts\":\"2020-01-01 00:00:01.000\"}\n{\"ts\":\"2020-01-01 00:00:02.000\"}\n{\"ts\":\"2020-01-01 00:00:12.000\"}\n",
        );
        std::fs::create_dir_all(ws.path("b")).expect("mkdir");
        let script = ws.write(
            "job.sql",
            &ws.expand(&format!(
                "CREATE TABLE a (ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'filesystem',
                   'path' = '$DIR/a', 'format' = 'json', 'source.monitor-interval' = '50 ms');
                 CREATE TABLE b (ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'filesystem',
                   'path' = '$DIR/b', 'format' = 'json', {timeout} 'source.monitor-interval' = '50 ms');
                 CREATE VIEW u AS SELECT ts FROM a UNION ALL SELECT ts FROM b;
                 SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE u, DESCRIPTOR(ts), INTERVAL '10' SECOND))
                 GROUP BY window_start, window_end;"
            )),
        );
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", script.to_str().expect("utf8")])
            .current_dir(ws.dir.path())
            .env("SLUICE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                let _ = lines.send(line);
            }
        });
        let early = received.recv_timeout(std::time::Duration::from_millis(1500));
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(child.wait().expect("wait").success());
        match early {
            Ok(line) => {
                assert!(
                    fires_while_running,
                    "window fired without an idle timeout: {line}"
                );
                assert!(line.starts_with("+I[") && line.ends_with(", 2]"), "{line}");
            }
            Err(_) => assert!(
                !fires_while_running,
                "the window did not fire while running"
            ),
        }
    }
}

/// With 'table.exec.emit.allow-lateness', a window keeps its state after it
/// fires: the late row updates its result with a retraction (-U/+U).
#[test]
fn allowed_lateness_updates_fired_windows() {
    let ws = Workspace::new();
    write_events(&ws);
    let job = format!(
        "{SOURCE}
         CREATE TABLE out (k STRING, window_start TIMESTAMP(3), n BIGINT, total BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'debezium-json');
         INSERT INTO out SELECT k, window_start, COUNT(*), SUM(v)
           FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))
           GROUP BY k, window_start, window_end;"
    );
    let output = ws.run(
        &job,
        &[
            "--set",
            "sluice.batch.size=1",
            "--set",
            "table.exec.emit.allow-lateness=30 s",
        ],
    );
    ok(&output);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("late records"));
    let row = |k: &str, start: u32, n: i64, total: i64| {
        format!(
            r#"{{"k":"{k}","window_start":"{}","n":{n},"total":{total}}}"#,
            at(start)
        )
    };
    assert_eq!(
        common::materialize_changelog(&ws.path("out")),
        vec![
            row("a", 0, 4, 16),
            row("a", 10, 1, 4),
            row("b", 0, 1, 2),
            row("b", 20, 2, 14)
        ]
    );
    let changelog = common::read_part_files(&ws.path("out"));
    let retracted = format!(
        r#"{{"before":{},"after":null,"op":"d"}}"#,
        row("a", 0, 3, 9)
    );
    assert!(changelog.contains(&retracted), "{changelog:?}");
}

/// A HOP pane that gets a row after one of its windows fired keeps what it
/// had: the later windows count both rows.
#[test]
fn hop_panes_keep_rows_that_arrive_after_an_earlier_window_fired() {
    let ws = Workspace::new();
    ws.write(
        "in.json",
        &[("x", "01"), ("y", "12"), ("z", "03")]
            .iter()
            .map(|(k, t)| {
                format!("{{\"k\":\"{k}\",\"v\":1,\"ts\":\"2020-01-01 00:00:{t}.000\"}}\n")
            })
            .collect::<String>(),
    );
    let job = format!(
        "{SOURCE}
         CREATE TABLE out (window_start TIMESTAMP(3), n BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out SELECT window_start, COUNT(*)
           FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
           GROUP BY window_start, window_end;"
    );
    ok(&ws.run(&job, &["--set", "sluice.batch.size=1"]));
    let row = |start: i64, n: i64| {
        let start = if start < 0 {
            "2019-12-31 23:59:55.000".to_string()
        } else {
            at(start as u32)
        };
        format!(r#"{{"window_start":"{start}","n":{n}}}"#)
    };
    // [-5, 5) fired with x alone before z arrived; [0, 10) has x and z.
    assert_eq!(
        ws.sink_lines("out"),
        vec![row(-5, 1), row(0, 2), row(5, 1), row(10, 1)]
    );
}

/// Nexmark q5's shape: the keys with the most rows per hopping window. Both
/// sides count the same windows, so that aggregation runs once and feeds
/// both (sub-plan reuse); turned off, the job runs it twice and agrees.
#[test]
fn identical_window_aggregations_run_once_and_feed_both_readers() {
    let ws = Workspace::new();
    write_events(&ws);
    let counts = "SELECT k, COUNT(*) AS n, window_start, window_end
        FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
        GROUP BY k, window_start, window_end";
    let query = format!(
        "SELECT w.k, w.n, w.window_start
         FROM ({counts}) w
         JOIN (SELECT MAX(c.n) AS top, c.window_start, c.window_end
               FROM ({}) c GROUP BY c.window_start, c.window_end) m
         ON w.window_start = m.window_start AND w.window_end = m.window_end AND w.n >= m.top",
        counts.replace("SELECT k, ", "SELECT ")
    );
    let job = ws.write(
        "job.sql",
        &ws.expand(&format!(
            "{SOURCE}
             CREATE TABLE out (k STRING, n BIGINT, window_start TIMESTAMP(3)) WITH ('connector' = 'blackhole');
             INSERT INTO out {query};"
        )),
    );
    let job = job.to_string_lossy();
    let shared = "(shared, read once) WindowAggregate HOP";
    let explain = ok(&ws.sluice(&["run", "--explain", &job]));
    assert!(explain.contains(shared), "{explain}");
    let explain = ok(&ws.sluice(&[
        "run",
        "--explain",
        "--set",
        "table.optimizer.reuse-sub-plan-enabled=false",
        &job,
    ]));
    assert!(!explain.contains(shared), "{explain}");

    let window = |start: i64| match start {
        -5 => "2019-12-31 23:59:55.000".to_string(),
        start => at(start as u32),
    };
    let mut expected: Vec<String> = [
        ("a", 1, -5),
        ("a", 1, 10),
        ("a", 3, 0),
        ("a", 3, 5),
        ("b", 1, -5),
        ("b", 2, 20),
        ("b", 2, 25),
    ]
    .iter()
    .map(|(k, n, start)| {
        format!(
            r#"{{"k":"{k}","n":{n},"window_start":"{}"}}"#,
            window(*start)
        )
    })
    .collect();
    expected.sort();
    for reuse in ["true", "false"] {
        let ws = Workspace::new();
        write_events(&ws);
        let setting = format!("table.optimizer.reuse-sub-plan-enabled={reuse}");
        let rows = run_window_query(
            &ws,
            "k STRING, n BIGINT, window_start TIMESTAMP(3)",
            &query,
            &["--set", &setting],
        );
        assert_eq!(rows, expected, "reuse {reuse}");
    }
}
