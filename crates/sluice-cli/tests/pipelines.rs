//! End-to-end tests: the `sluice` binary on SQL scripts, checked against the
//! files its sinks write.

mod common;

use common::{
    failed, materialize_changelog, nexmark_file_source, nexmark_query, ok, write_nexmark_events,
    Workspace,
};

const ALL_TYPES_DDL: &str = "
    id BIGINT, b BOOLEAN, ti TINYINT, si SMALLINT, i INT, bi BIGINT, f FLOAT, d DOUBLE,
    amount DECIMAL(10, 3), s STRING, raw BYTES, dt DATE, tm TIME, ts TIMESTAMP(3),
    ltz TIMESTAMP_LTZ(3), arr ARRAY<INT>, m MAP<STRING, INT>,
    r ROW<x INT, `inner` ROW<y STRING>>";

#[test]
fn every_type_round_trips_through_json() {
    let ws = Workspace::new();
    let full = r#"{"id":1,"b":true,"ti":-1,"si":300,"i":70000,"bi":9000000000,"f":1.5,"d":-2.25,"amount":12.345,"s":"h\u00e9llo \"q\"","raw":"AQID","dt":"2020-01-02","tm":"12:34:56","ts":"2020-01-02 03:04:05.678","ltz":"2020-01-02 03:04:05.678","arr":[1,2,null],"m":{"a":1},"r":{"x":7,"inner":{"y":"z"}}}"#;
    ws.write("in/data.json", &format!("{full}\n{{\"id\":2}}\n"));
    let out = ws.run(
        &format!(
            "CREATE TABLE src ({ALL_TYPES_DDL}) WITH ('connector' = 'filesystem', 'path' = '$DIR/in', 'format' = 'json');
             CREATE TABLE dst ({ALL_TYPES_DDL}) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
             INSERT INTO dst SELECT * FROM src;"
        ),
        &[],
    );
    ok(&out);
    let lines = ws.sink_lines("out");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let expected_full = r#"{"id":1,"b":true,"ti":-1,"si":300,"i":70000,"bi":9000000000,"f":1.5,"d":-2.25,"amount":12.345,"s":"héllo \"q\"","raw":"AQID","dt":"2020-01-02","tm":"12:34:56","ts":"2020-01-02 03:04:05.678","ltz":"2020-01-02 03:04:05.678","arr":[1,2,null],"m":{"a":1},"r":{"x":7,"inner":{"y":"z"}}}"#;
    assert_eq!(lines[0], expected_full);
    let expected_nulls = r#"{"id":2,"b":null,"ti":null,"si":null,"i":null,"bi":null,"f":null,"d":null,"amount":null,"s":null,"raw":null,"dt":null,"tm":null,"ts":null,"ltz":null,"arr":null,"m":null,"r":null}"#;
    assert_eq!(lines[1], expected_nulls);
}

#[test]
fn nested_row_fields_are_addressable() {
    let ws = Workspace::new();
    ws.write(
        "in.json",
        "{\"id\":1,\"person\":{\"name\":\"Ann\",\"address\":{\"city\":\"Oslo\"}}}\n{\"id\":2,\"person\":null}\n",
    );
    let out = ws.run(
        "CREATE TABLE people (id INT, person ROW<name STRING, address ROW<city STRING>>)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');
         CREATE TABLE out (id INT, name STRING, city STRING)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out SELECT id, person.name, person.address.city FROM people;",
        &[],
    );
    ok(&out);
    assert_eq!(
        ws.sink_lines("out"),
        vec![
            r#"{"id":1,"name":"Ann","city":"Oslo"}"#.to_string(),
            r#"{"id":2,"name":null,"city":null}"#.to_string()
        ]
    );
}

#[test]
fn json_sources_read_only_the_row_fields_the_job_uses() {
    let ws = Workspace::new();
    // `age` is no INT in the first record: no query reads it, so it is skipped.
    ws.write(
        "in.json",
        concat!(
            r#"{"id":1,"person":{"name":"Ann","age":"n/a","address":{"city":"Oslo","zip":"0150"}},"tags":{"a":"x","b":"y"}}"#,
            "\n",
            r#"{"id":2,"person":{"name":"Bob","age":41,"address":{"city":"Bergen","zip":"5003"}},"tags":{"a":"z","b":null}}"#,
            "\n",
        ),
    );
    // Two queries share the source: one reads fields of `person`, the other
    // the whole `tags` ROW.
    let script = "CREATE TABLE people (id INT, person ROW<name STRING, age INT, address ROW<city STRING, zip STRING>>, tags ROW<a STRING, b STRING>)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');
         CREATE TABLE cities (id INT, name STRING, city STRING)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/cities', 'format' = 'json');
         CREATE TABLE tags (id INT, tags ROW<a STRING, b STRING>)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/tags', 'format' = 'json');
         INSERT INTO cities SELECT id, person.name, person.address.city FROM people
             WHERE person.address.zip LIKE '0%';
         INSERT INTO tags SELECT id, tags FROM people;";
    let explain = ok(&ws.run(script, &["--explain"]));
    assert!(
        explain.contains("[reads only person(address(city, zip), name)]"),
        "{explain}"
    );
    ok(&ws.run(script, &[]));
    assert_eq!(
        ws.sink_lines("cities"),
        vec![r#"{"id":1,"name":"Ann","city":"Oslo"}"#.to_string()]
    );
    assert_eq!(
        ws.sink_lines("tags"),
        vec![
            r#"{"id":1,"tags":{"a":"x","b":"y"}}"#.to_string(),
            r#"{"id":2,"tags":{"a":"z","b":null}}"#.to_string()
        ]
    );
}

#[test]
fn csv_in_and_out_with_filter_and_options() {
    let ws = Workspace::new();
    ws.write(
        "in.csv",
        "1;apple;2.5\n2;\"banana; ripe\";3\n# a comment\n3;NULL;4.25\n",
    );
    let out = ws.run(
        "CREATE TABLE fruit (id INT, name STRING, price DOUBLE) WITH (
             'connector' = 'filesystem', 'path' = '$DIR/in.csv', 'format' = 'csv',
             'csv.field-delimiter' = ';', 'csv.allow-comments' = 'true', 'csv.null-literal' = 'NULL');
         CREATE TABLE pricey (id INT, name STRING, price DOUBLE)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'csv');
         INSERT INTO pricey SELECT id, name, price FROM fruit WHERE price > 2.6;",
        &[],
    );
    ok(&out);
    assert_eq!(
        ws.sink_lines("out"),
        vec!["2,banana; ripe,3.0".to_string(), "3,,4.25".to_string()]
    );
}

const BAD_INPUT: &str =
    "{\"id\":1,\"v\":\"a\"}\n{\"id\":\"oops\",\"v\":\"b\"}\n{bad json\n{\"id\":4,\"v\":\"d\"}\n";

fn bad_input_job(errors: &str) -> String {
    format!(
        "CREATE TABLE src (id BIGINT, v STRING) WITH (
             'connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json' {errors});
         CREATE TABLE dst (id BIGINT, v STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO dst SELECT id, v FROM src;"
    )
}

#[test]
fn errors_fail_names_file_line_and_field() {
    let ws = Workspace::new();
    ws.write("in.json", BAD_INPUT);
    let stderr = failed(&ws.run(&bad_input_job(""), &[]));
    assert!(stderr.contains("in.json:2"), "{stderr}");
    assert!(stderr.contains("id"), "{stderr}");
}

#[test]
fn errors_skip_keeps_every_good_record() {
    let ws = Workspace::new();
    ws.write("in.json", BAD_INPUT);
    ok(&ws.run(&bad_input_job(", 'errors' = 'skip'"), &[]));
    assert_eq!(
        ws.sink_lines("out"),
        vec![
            r#"{"id":1,"v":"a"}"#.to_string(),
            r#"{"id":4,"v":"d"}"#.to_string()
        ]
    );
    // Flink's json.ignore-parse-errors means the same.
    let ws = Workspace::new();
    ws.write("in.json", BAD_INPUT);
    ok(&ws.run(&bad_input_job(", 'json.ignore-parse-errors' = 'true'"), &[]));
    assert_eq!(ws.sink_lines("out").len(), 2);
}

#[test]
fn errors_dlq_writes_raw_record_and_reason() {
    let ws = Workspace::new();
    ws.write("in.json", BAD_INPUT);
    ok(&ws.run(
        &bad_input_job(", 'errors' = 'dlq', 'dlq.path' = '$DIR/dead.jsonl'"),
        &[],
    ));
    assert_eq!(ws.sink_lines("out").len(), 2);
    let dead = std::fs::read_to_string(ws.path("dead.jsonl")).expect("dead letter file");
    let letters: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(letters.len(), 2, "{dead}");
    assert_eq!(letters[0]["raw"], "{\"id\":\"oops\",\"v\":\"b\"}");
    assert_eq!(letters[0]["position"], 2);
    assert!(
        letters[0]["reason"].as_str().unwrap_or("").contains("id"),
        "{dead}"
    );
    assert_eq!(letters[1]["raw"], "{bad json");
    assert_eq!(letters[1]["position"], 3);
    assert!(
        letters[1]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("invalid JSON"),
        "{dead}"
    );
    assert!(letters[1]["source"]
        .as_str()
        .unwrap_or("")
        .ends_with("in.json"));
    assert_eq!(letters[1]["table"], "src");
}

#[test]
fn syntax_error_names_line_and_column() {
    let ws = Workspace::new();
    let stderr = failed(&ws.run(
        "CREATE TABLE t (a INT) WITH ('connector' = 'blackhole');\n\nINSERT INTO t SELEC a FROM t;",
        &[],
    ));
    assert!(stderr.contains("line 3:15"), "{stderr}");
}

#[test]
fn unknown_connector_lists_the_valid_ones() {
    let ws = Workspace::new();
    let stderr = failed(&ws.run(
        "CREATE TABLE t (a INT) WITH ('connector' = 'kafak');
         CREATE TABLE o (a INT) WITH ('connector' = 'print');
         INSERT INTO o SELECT a FROM t;",
        &[],
    ));
    assert!(stderr.contains("unknown connector 'kafak'"), "{stderr}");
    assert!(
        stderr.contains("blackhole, datagen, filesystem, kafka, nexmark, print, stdin"),
        "{stderr}"
    );
}

#[test]
fn unknown_option_lists_the_valid_ones() {
    let ws = Workspace::new();
    let stderr = failed(&ws.run(
        "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'pth' = '/x', 'format' = 'json');
         CREATE TABLE o (a INT) WITH ('connector' = 'print');
         INSERT INTO o SELECT a FROM t;",
        &[],
    ));
    assert!(stderr.contains("unknown option 'pth'"), "{stderr}");
    assert!(stderr.contains("path"), "{stderr}");
    assert!(stderr.contains("json.fail-on-missing-field"), "{stderr}");
}

#[test]
fn missing_input_file_is_reported() {
    let ws = Workspace::new();
    let stderr = failed(&ws.run(
        "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '$DIR/nope.json', 'format' = 'json');
         CREATE TABLE o (a INT) WITH ('connector' = 'print');
         INSERT INTO o SELECT a FROM t;",
        &[],
    ));
    assert!(stderr.contains("nope.json"), "{stderr}");
    assert!(stderr.contains("table `t`"), "{stderr}");
}

#[test]
fn missing_script_is_reported() {
    let ws = Workspace::new();
    let stderr = failed(&ws.sluice(&["run", "no-such-script.sql"]));
    assert!(
        stderr.contains("cannot read script 'no-such-script.sql'"),
        "{stderr}"
    );
}

#[test]
fn unsupported_constructs_are_rejected_at_planning_time() {
    let ws = Workspace::new();
    let stderr = failed(&ws.run(
        "CREATE TABLE t (a INT) WITH ('connector' = 'datagen', 'number-of-rows' = '5');
         CREATE TABLE o (a INT) WITH ('connector' = 'print');
         INSERT INTO o SELECT a FROM t ORDER BY a LIMIT 3;",
        &[],
    ));
    assert!(stderr.contains("not supported"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn updating_query_into_append_only_sink_is_rejected() {
    let ws = Workspace::new();
    let stderr = failed(&ws.run(
        "CREATE TABLE t (a INT) WITH ('connector' = 'datagen', 'number-of-rows' = '5');
         CREATE TABLE o (a INT, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '$DIR/o', 'format' = 'json');
         INSERT INTO o SELECT a, COUNT(*) FROM t GROUP BY a;",
        &[],
    ));
    assert!(stderr.contains("sink `o`"), "{stderr}");
    assert!(stderr.contains("accepts only inserts"), "{stderr}");
    assert!(stderr.contains("GroupAggregate"), "{stderr}");
    assert!(stderr.contains("debezium-json"), "{stderr}");
}

#[test]
fn updating_aggregate_prints_row_kinds() {
    let ws = Workspace::new();
    ws.write("in.json", "{\"k\":\"a\"}\n{\"k\":\"b\"}\n{\"k\":\"a\"}\n");
    let run = |options: &[&str]| {
        ok(&ws.run(
            "CREATE TABLE t (k STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');
             SELECT k, COUNT(*) AS n FROM t GROUP BY k;",
            options,
        ))
    };
    // Batch by batch, every change shows.
    let out = run(&[
        "--set",
        "sluice.batch.size=1",
        "--set",
        "sluice.batch.held-rows=0",
    ]);
    assert_eq!(out, "+I[a, 1]\n+I[b, 1]\n-U[a, 1]\n+U[a, 2]\n");
    // Holding batches back while more are ready folds changes together
    // (how many depends on timing); the results are the same.
    let out = run(&["--set", "sluice.batch.size=1"]);
    let mut results = std::collections::BTreeSet::new();
    for line in out.lines() {
        let (kind, row) = line.split_at(2);
        match kind {
            "+I" | "+U" => assert!(results.insert(row.to_string()), "{out}"),
            "-U" | "-D" => assert!(results.remove(row), "{out}"),
            _ => panic!("unexpected line {line}"),
        }
    }
    let expected: std::collections::BTreeSet<String> =
        ["[a, 2]".to_string(), "[b, 1]".to_string()].into();
    assert_eq!(results, expected, "{out}");
}

/// An updating GROUP BY gives the same results whether it holds batches
/// back or not, over many small batches (q16's statistics per channel).
#[test]
fn held_rows_change_no_group_by_result() {
    let ws = Workspace::new();
    write_nexmark_events(&ws, 30_000, "'first-event.rate' = '1000', 'seed' = '3'");
    let source = nexmark_file_source(&ws.path("events").display().to_string());
    let run = |out: &str, held_rows: &str| {
        let sink = format!(
            "'connector' = 'filesystem', 'path' = '$DIR/{out}', 'format' = 'debezium-json'"
        );
        let job = format!("{source}\n{}", nexmark_query("q16", &sink));
        ok(&ws.run(
            &job,
            &[
                "--set",
                "sluice.batch.size=100",
                "--set",
                &format!("sluice.batch.held-rows={held_rows}"),
            ],
        ));
        materialize_changelog(&ws.path(out))
    };
    let batch_by_batch = run("one-by-one", "0");
    assert!(!batch_by_batch.is_empty());
    assert_eq!(run("held", "131072"), batch_by_batch);
}

/// Top-N emits each batch's net change to the first N: one row a batch,
/// every step shows; one batch for all rows, only the final ranking does (a
/// row that entered and left within the batch is never emitted).
#[test]
fn top_n_emits_the_net_change_of_each_batch() {
    let run = |options: &[&str]| {
        let ws = Workspace::new();
        ws.write(
            "in.json",
            "{\"g\":\"x\",\"v\":5}\n{\"g\":\"x\",\"v\":3}\n{\"g\":\"x\",\"v\":9}\n{\"g\":\"x\",\"v\":1}\n",
        );
        ok(&ws.run(
            "CREATE TABLE t (g STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');
             SELECT g, v, rn FROM (
                 SELECT g, v, ROW_NUMBER() OVER (PARTITION BY g ORDER BY v DESC) AS rn FROM t
             ) WHERE rn <= 2;",
            options,
        ))
    };
    assert_eq!(
        run(&["--set", "sluice.batch.size=1"]),
        "+I[x, 5, 1]\n+I[x, 3, 2]\n-U[x, 5, 1]\n-D[x, 3, 2]\n+I[x, 9, 1]\n+U[x, 5, 2]\n"
    );
    assert_eq!(run(&[]), "+I[x, 9, 1]\n+I[x, 5, 2]\n");
}

const GENERATED_BIDS: &str = "
    CREATE TABLE gen (
        event_type INT,
        bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>
    ) WITH ('connector' = 'nexmark', 'events.num' = '20000');
    CREATE TABLE out (auction BIGINT, price BIGINT, channel STRING, ts TIMESTAMP(3))
        WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
    INSERT INTO out SELECT bid.auction, bid.price, bid.channel, bid.`dateTime` FROM gen WHERE event_type = 2;";

#[test]
fn parallelism_two_produces_the_same_rows() {
    let single = Workspace::new();
    ok(&single.run(GENERATED_BIDS, &["--parallelism", "1"]));
    let double = Workspace::new();
    ok(&double.run(GENERATED_BIDS, &["--parallelism", "2"]));
    let rows = single.sink_lines("out");
    assert_eq!(rows.len(), 18_400);
    assert_eq!(rows, double.sink_lines("out"));
    // Two subtasks write their own part files.
    let parts = std::fs::read_dir(double.path("out")).expect("out").count();
    assert!(parts >= 2, "expected a part file per subtask, got {parts}");
}

#[test]
fn file_source_parallelism_two_produces_the_same_rows() {
    let ws = Workspace::new();
    let mut input = String::new();
    for i in 0..30_000 {
        input.push_str(&format!("{{\"k\":{i},\"v\":\"value-{}\"}}\n", i % 97));
    }
    ws.write("in.json", &input);
    let job = "CREATE TABLE src (k BIGINT, v STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');
               CREATE TABLE dst (k BIGINT, v STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/OUT', 'format' = 'json');
               INSERT INTO dst SELECT k, UPPER(v) FROM src WHERE MOD(k, 3) <> 0;";
    ok(&ws.run(
        &job.replace("OUT", "p1"),
        &["-p", "1", "--set", "sluice.batch.size=1000"],
    ));
    ok(&ws.run(
        &job.replace("OUT", "p2"),
        &["-p", "2", "--set", "sluice.batch.size=1000"],
    ));
    let p1 = ws.sink_lines("p1");
    assert_eq!(p1.len(), 20_000);
    assert_eq!(p1, ws.sink_lines("p2"));
}

#[test]
fn union_all_merges_inputs() {
    let ws = Workspace::new();
    ws.write("a.json", "{\"x\":1}\n{\"x\":2}\n");
    ws.write("b.csv", "10,ten\n20,twenty\n");
    ok(&ws.run(
        "CREATE TABLE a (x INT) WITH ('connector' = 'filesystem', 'path' = '$DIR/a.json', 'format' = 'json');
         CREATE TABLE b (y BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/b.csv', 'format' = 'csv');
         CREATE TABLE o (v BIGINT, tag STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO o SELECT x, 'a' FROM a UNION ALL SELECT y, name FROM b;",
        &["-p", "2"],
    ));
    assert_eq!(
        ws.sink_lines("out"),
        vec![
            r#"{"v":1,"tag":"a"}"#.to_string(),
            r#"{"v":10,"tag":"ten"}"#.to_string(),
            r#"{"v":2,"tag":"a"}"#.to_string(),
            r#"{"v":20,"tag":"twenty"}"#.to_string(),
        ]
    );
}

#[test]
fn flink_functions_and_expressions() {
    let ws = Workspace::new();
    ws.write(
        "in.json",
        "{\"url\":\"https://x.com/a/b/c?q=1\",\"ts\":\"2015-07-15 19:04:05.123\",\"n\":17,\"s\":\"2020-01-02 03:04:05\"}\n",
    );
    let out = ok(&ws.run(
        "CREATE TABLE t (url STRING, ts TIMESTAMP(3), n BIGINT, s STRING)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');
         CREATE TABLE o (a STRING, b STRING, c INT, d BIGINT, e BIGINT, f TIMESTAMP(3), g STRING, h STRING, i STRING, j STRING, k INT)
             WITH ('connector' = 'print');
         INSERT INTO o SELECT
             SPLIT_INDEX(url, '/', 3), DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm'), CHAR_LENGTH(url), MOD(n, 5), HOUR(ts),
             TO_TIMESTAMP(s), IF(n > 10, 'big', 'small'), REGEXP_EXTRACT(url, 'q=(\\d+)', 1),
             CASE WHEN n % 2 = 1 THEN 'odd' ELSE 'even' END, UPPER(CONCAT('x', CAST(n AS STRING))),
             TRY_CAST('12' AS INT)
         FROM t;",
        &[],
    ));
    assert_eq!(
        out.trim(),
        "+I[a, 2015-07-15 19:04, 23, 2, 19, 2020-01-02T03:04:05, big, 1, odd, X17, 12]"
    );
}

#[test]
fn stdin_source_and_bare_select_print_rows() {
    let ws = Workspace::new();
    let script = ws.write(
        "job.sql",
        "CREATE TABLE lines (name STRING, n INT) WITH ('connector' = 'stdin', 'format' = 'json');
         SELECT name, n * 2 AS doubled FROM lines WHERE n > 1;",
    );
    let output = ws.sluice_with_stdin(
        &["run", script.to_str().expect("utf8")],
        b"{\"name\":\"a\",\"n\":1}\n{\"name\":\"b\",\"n\":2}\n{\"name\":\"c\",\"n\":3}\n",
    );
    assert_eq!(ok(&output), "+I[b, 4]\n+I[c, 6]\n");
}

#[test]
fn explain_prints_the_operator_graph() {
    let ws = Workspace::new();
    let out = ok(&ws.run(GENERATED_BIDS, &["--explain"]));
    assert!(out.contains("Sink `out`: filesystem"), "{out}");
    assert!(out.contains("Filter: event_type"), "{out}");
    assert!(
        out.contains("Source `gen`: nexmark generator, 20000 events"),
        "{out}"
    );
    assert!(!ws.path("out").exists(), "--explain must not run the job");
}

/// Identical sub-plans run once, across statements too, but never ones that
/// call a volatile function: the two `RAND()` branches must differ.
#[test]
fn identical_sub_plans_run_once_unless_volatile() {
    let ws = Workspace::new();
    ws.write("in.json", "{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\",\"v\":-1}\n");
    let script = "CREATE TABLE t (k STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');
         CREATE TABLE random_out (k STRING, r DOUBLE) WITH ('connector' = 'filesystem', 'path' = '$DIR/random', 'format' = 'json');
         CREATE TABLE doubled_out (k STRING, d BIGINT) WITH ('connector' = 'filesystem', 'path' = '$DIR/doubled', 'format' = 'json');
         INSERT INTO random_out SELECT k, RAND() FROM t WHERE v > 0 UNION ALL SELECT k, RAND() FROM t WHERE v > 0;
         INSERT INTO doubled_out SELECT k, v * 2 FROM t WHERE v > 0 UNION ALL SELECT k, v * 2 FROM t WHERE v > 0;";
    let explain = ok(&ws.run(script, &["--explain"]));
    assert!(
        explain.contains("(shared, read once) Project: k, v@1 * 2"),
        "{explain}"
    );
    assert!(
        explain.contains("(shared, read once) Filter: v@1 > 0"),
        "{explain}"
    );
    assert!(
        !explain.contains("(shared, read once) Project: k, random()"),
        "{explain}"
    );
    ok(&ws.run(script, &[]));
    assert_eq!(
        ws.sink_lines("doubled"),
        vec![r#"{"k":"a","d":2}"#, r#"{"k":"a","d":2}"#]
    );
    let random = ws.sink_lines("random");
    assert_eq!(random.len(), 2);
    assert_ne!(
        random[0], random[1],
        "each RAND() branch draws its own values"
    );
}

#[test]
fn validate_accepts_good_and_rejects_bad_scripts() {
    let ws = Workspace::new();
    let good = ws.write("good.sql", &ws.expand(GENERATED_BIDS));
    assert!(ok(&ws.sluice(&["validate", good.to_str().expect("utf8")])).contains("OK"));
    let bad = ws.write(
        "bad.sql",
        "CREATE TABLE t (a INTEGR) WITH ('connector' = 'print');",
    );
    let stderr = failed(&ws.sluice(&["validate", bad.to_str().expect("utf8")]));
    assert!(stderr.contains("unknown data type 'INTEGR'"), "{stderr}");
    assert!(stderr.contains("line 1:19"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn sigterm_drains_and_publishes_sink_files() {
    let ws = Workspace::new();
    let script = ws.write(
        "job.sql",
        &ws.expand(
            "CREATE TABLE gen (event_type INT) WITH ('connector' = 'nexmark', 'events.per-second' = '5000');
             CREATE TABLE out (event_type INT) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'csv');
             INSERT INTO out SELECT event_type FROM gen;",
        ),
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", script.to_str().expect("utf8")])
        .current_dir(ws.dir.path())
        .env("SLUICE_LOG", "warn")
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    ok(&output);
    let rows = ws.sink_lines("out");
    assert!(rows.len() > 1000, "only {} rows", rows.len());
    let leftovers: Vec<_> = std::fs::read_dir(ws.path("out"))
        .expect("out")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
        .collect();
    assert!(leftovers.is_empty(), "in-progress files left behind");
}

#[test]
fn failing_sink_stops_the_job_with_an_error() {
    let ws = Workspace::new();
    // A file where the sink directory should be: the sink cannot create it.
    ws.write("blocked", "not a directory");
    let stderr = failed(&ws.run(
        "CREATE TABLE gen (event_type INT) WITH ('connector' = 'nexmark', 'events.num' = '100');
         CREATE TABLE out (event_type INT) WITH ('connector' = 'filesystem', 'path' = '$DIR/blocked/out', 'format' = 'csv');
         INSERT INTO out SELECT event_type FROM gen;",
        &[],
    ));
    assert!(stderr.contains("blocked/out"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn monitored_directory_picks_up_new_files_and_appended_lines() {
    use std::io::Write;
    let ws = Workspace::new();
    ws.write("in/a.json", "{\"n\":1}\n{\"n\":2}\n");
    let script = ws.write(
        "job.sql",
        &ws.expand(
            "CREATE TABLE src (n INT) WITH ('connector' = 'filesystem', 'path' = '$DIR/in', 'format' = 'json',
                                           'source.monitor-interval' = '50 ms');
             CREATE TABLE dst (n INT) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'csv');
             INSERT INTO dst SELECT n * 10 FROM src;",
        ),
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", script.to_str().expect("utf8")])
        .current_dir(ws.dir.path())
        .env("SLUICE_LOG", "warn")
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(600));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(ws.path("in/a.json"))
        .expect("open");
    // A line written in two parts is read once, whole.
    file.write_all(b"{\"n\":").expect("append");
    file.flush().expect("flush");
    std::thread::sleep(std::time::Duration::from_millis(200));
    file.write_all(b"3}\n").expect("append");
    ws.write("in/b.json", "{\"n\":4}\n");
    ws.write("in/.hidden.json", "{\"n\":99}\n");
    std::thread::sleep(std::time::Duration::from_millis(800));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    ok(&child.wait_with_output().expect("wait"));
    assert_eq!(ws.sink_lines("out"), vec!["10", "20", "30", "40"]);
}

#[test]
fn file_sink_rolls_part_files_by_size() {
    let ws = Workspace::new();
    ok(&ws.run(
        "CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'fields.id.kind' = 'sequence',
                                            'fields.id.start' = '1', 'fields.id.end' = '5000',
                                            'rows-per-second' = '10000000');
         CREATE TABLE dst (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'csv',
                                            'sink.rolling-policy.file-size' = '2kb');
         INSERT INTO dst SELECT id FROM gen;",
        &["--set", "sluice.batch.size=100"],
    ));
    let parts = std::fs::read_dir(ws.path("out")).expect("out").count();
    assert!(parts > 5, "expected rolled part files, got {parts}");
    let mut ids: Vec<i64> = ws
        .sink_lines("out")
        .iter()
        .map(|l| l.parse().expect("id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=5000).collect::<Vec<_>>());
}

#[test]
fn datagen_respects_field_options() {
    let ws = Workspace::new();
    ok(&ws.run(
        "CREATE TABLE gen (id INT, name STRING, score DOUBLE, tags ARRAY<INT>, nested ROW<a BOOLEAN>)
             WITH ('connector' = 'datagen', 'number-of-rows' = '200', 'rows-per-second' = '100000',
                   'fields.name.length' = '5', 'fields.score.min' = '1', 'fields.score.max' = '2',
                   'fields.id.min' = '10', 'fields.id.max' = '20', 'fields.tags.element-count' = '2');
         CREATE TABLE dst (id INT, name STRING, score DOUBLE, tags ARRAY<INT>, nested ROW<a BOOLEAN>)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO dst SELECT * FROM gen;",
        &["-p", "2"],
    ));
    let rows: Vec<serde_json::Value> = ws
        .sink_lines("out")
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 200);
    for row in rows {
        let id = row["id"].as_i64().expect("id");
        assert!((10..=20).contains(&id), "{row}");
        assert_eq!(row["name"].as_str().expect("name").len(), 5);
        let score = row["score"].as_f64().expect("score");
        assert!((1.0..=2.0).contains(&score), "{row}");
        assert_eq!(row["tags"].as_array().expect("tags").len(), 2);
        assert!(row["nested"]["a"].is_boolean(), "{row}");
    }
    let bad = ws.run(
        "CREATE TABLE gen (id INT) WITH ('connector' = 'datagen', 'fields.idd.min' = '1');
         CREATE TABLE dst (id INT) WITH ('connector' = 'blackhole');
         INSERT INTO dst SELECT id FROM gen;",
        &[],
    );
    assert!(failed(&bad).contains("unknown option 'fields.idd.min'"));
}

#[test]
fn iso_timestamp_standard_is_written() {
    let ws = Workspace::new();
    ws.write(
        "in.json",
        "{\"ts\":\"2020-01-02 03:04:05.678\",\"ltz\":\"2020-01-02T03:04:05.678Z\"}\n",
    );
    ok(&ws.run(
        "CREATE TABLE src (ts TIMESTAMP(3), ltz TIMESTAMP_LTZ(3)) WITH ('connector' = 'filesystem', 'path' = '$DIR/in.json', 'format' = 'json');
         CREATE TABLE dst (ts TIMESTAMP(3), ltz TIMESTAMP_LTZ(3)) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json',
                                                                     'json.timestamp-format.standard' = 'ISO-8601');
         INSERT INTO dst SELECT * FROM src;",
        &[],
    ));
    assert_eq!(
        ws.sink_lines("out"),
        vec![r#"{"ts":"2020-01-02T03:04:05.678","ltz":"2020-01-02T03:04:05.678Z"}"#.to_string()]
    );
}

#[test]
fn state_ttl_forgets_idle_keys() {
    use std::io::Write;
    let ws = Workspace::new();
    let script = ws.write(
        "job.sql",
        "SET 'table.exec.state.ttl' = '300 ms';
         CREATE TABLE t (k STRING) WITH ('connector' = 'stdin', 'format' = 'json');
         SELECT k, COUNT(*) AS n FROM t GROUP BY k;",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", script.to_str().expect("utf8")])
        .current_dir(ws.dir.path())
        .env("SLUICE_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    for _ in 0..2 {
        stdin.write_all(b"{\"k\":\"a\"}\n").expect("write");
        stdin.flush().expect("flush");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    // The key was idle longer than the TTL: it starts again from scratch.
    stdin.write_all(b"{\"k\":\"a\"}\n").expect("write");
    drop(stdin);
    let out = ok(&child.wait_with_output().expect("wait"));
    assert_eq!(out, "+I[a, 1]\n-U[a, 1]\n+U[a, 2]\n+I[a, 1]\n");
}

#[test]
fn functions_command_lists_flink_functions_and_connectors() {
    let ws = Workspace::new();
    let out = ok(&ws.sluice(&["functions"]));
    assert!(
        out.contains("DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm:ss')"),
        "{out}"
    );
    assert!(out.contains("SPLIT_INDEX"), "{out}");
    assert!(
        out.contains("Connectors: blackhole, datagen, filesystem, kafka, nexmark, print, stdin"),
        "{out}"
    );
}

/// As in Flink, an INSERT provides the columns a sink writes: not its
/// computed or `VIRTUAL` metadata columns. The `stream` connector's log
/// round-trips the rows with their metadata.
#[test]
fn inserts_skip_virtual_and_computed_columns() {
    let ws = Workspace::new();
    ok(&ws.run(
        "CREATE TABLE src (id BIGINT, userName STRING) WITH (
             'connector' = 'datagen', 'number-of-rows' = '4',
             'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '4');
         CREATE TABLE log (
             id BIGINT,
             userName STRING,
             doubled AS id * 2,
             `partition` INT METADATA VIRTUAL
         ) WITH ('connector' = 'stream', 'stream' = 'users', 'format' = 'json',
                 'log.dir' = '$DIR/streams', 'sink.partitions' = '2');
         INSERT INTO log SELECT id, userName FROM src;",
        &[],
    ));
    ok(&ws.run(
        "CREATE TABLE log (
             id BIGINT,
             doubled AS id * 2,
             `partition` INT METADATA VIRTUAL,
             `offset` BIGINT METADATA VIRTUAL
         ) WITH ('connector' = 'stream', 'stream' = 'users', 'format' = 'json',
                 'log.dir' = '$DIR/streams', 'scan.bounded.mode' = 'latest-offset');
         CREATE TABLE out (id BIGINT, doubled BIGINT, p INT, o BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out SELECT id, doubled, `partition`, `offset` FROM log;",
        &[],
    ));
    let rows = ws.sink_lines("out");
    assert_eq!(rows.len(), 4, "{rows:?}");
    let mut ids: Vec<i64> = Vec::new();
    for row in &rows {
        let value: serde_json::Value = serde_json::from_str(row).expect("json row");
        let id = value["id"].as_i64().expect("id");
        assert_eq!(value["doubled"].as_i64(), Some(id * 2), "{row}");
        assert!(matches!(value["p"].as_i64(), Some(0 | 1)), "{row}");
        assert!(value["o"].as_i64().is_some_and(|o| o >= 0), "{row}");
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3, 4]);
}
