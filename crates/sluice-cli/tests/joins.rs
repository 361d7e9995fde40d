//! Regular and interval joins (inner and outer) and aggregations over their
//! updating results, over hand-made inputs worked out by hand.

mod common;

use common::{failed, materialize_changelog, ok, Workspace};

const ORDERS: &str = r#"{"id":1,"cust":"a","ts":"2020-01-01 00:00:00.000"}
{"id":2,"cust":"b","ts":"2020-01-01 00:00:02.000"}
{"id":3,"cust":null,"ts":"2020-01-01 00:00:04.000"}
{"id":4,"cust":"a","ts":"2020-01-01 00:00:30.000"}
"#;

const CUSTOMERS: &str = r#"{"cust":"a","name":"Ann","ts":"2020-01-01 00:00:05.000"}
{"cust":"c","name":"Cid","ts":"2020-01-01 00:00:06.000"}
"#;

fn tables(ws: &Workspace, watermarks: bool) -> String {
    ws.write("orders.json", ORDERS);
    ws.write("customers.json", CUSTOMERS);
    let watermark = if watermarks {
        ", WATERMARK FOR ts AS ts - INTERVAL '1' SECOND"
    } else {
        ""
    };
    format!(
        "CREATE TABLE orders (id BIGINT, cust STRING, ts TIMESTAMP(3){watermark})
           WITH ('connector' = 'filesystem', 'path' = '$DIR/orders.json', 'format' = 'json');
         CREATE TABLE customers (cust STRING, name STRING, ts TIMESTAMP(3){watermark})
           WITH ('connector' = 'filesystem', 'path' = '$DIR/customers.json', 'format' = 'json');"
    )
}

/// Runs `query` into a debezium-json sink of `columns` and materialises it.
fn run_changelog(ws: &Workspace, tables: &str, columns: &str, query: &str, p: &str) -> Vec<String> {
    let out = format!(
        "out-{}",
        ws.path("").read_dir().map(|d| d.count()).unwrap_or(0)
    );
    let job = format!(
        "{tables}
         CREATE TABLE out ({columns}) WITH ('connector' = 'filesystem', 'path' = '$DIR/{out}', 'format' = 'debezium-json');
         INSERT INTO out {query};"
    );
    ok(&ws.run(&job, &["-p", p]));
    materialize_changelog(&ws.path(&out))
}

#[test]
fn outer_joins_materialise_to_the_sql_result() {
    let ws = Workspace::new();
    let tables = tables(&ws, false);
    let columns = "id BIGINT, cust STRING, name STRING";
    let join = |kind: &str| {
        format!("SELECT o.id, COALESCE(o.cust, c.cust), c.name FROM orders o {kind} JOIN customers c ON o.cust = c.cust")
    };
    for p in ["1", "2"] {
        assert_eq!(
            run_changelog(&ws, &tables, columns, &join("LEFT"), p),
            vec![
                r#"{"id":1,"cust":"a","name":"Ann"}"#,
                r#"{"id":2,"cust":"b","name":null}"#,
                r#"{"id":3,"cust":null,"name":null}"#,
                r#"{"id":4,"cust":"a","name":"Ann"}"#,
            ]
        );
        assert_eq!(
            run_changelog(&ws, &tables, columns, &join("RIGHT"), p),
            vec![
                r#"{"id":1,"cust":"a","name":"Ann"}"#,
                r#"{"id":4,"cust":"a","name":"Ann"}"#,
                r#"{"id":null,"cust":"c","name":"Cid"}"#,
            ]
        );
        assert_eq!(
            run_changelog(&ws, &tables, columns, &join("FULL"), p),
            vec![
                r#"{"id":1,"cust":"a","name":"Ann"}"#,
                r#"{"id":2,"cust":"b","name":null}"#,
                r#"{"id":3,"cust":null,"name":null}"#,
                r#"{"id":4,"cust":"a","name":"Ann"}"#,
                r#"{"id":null,"cust":"c","name":"Cid"}"#,
            ]
        );
    }
}

#[test]
fn group_by_over_an_outer_join_takes_retractions_back() {
    let ws = Workspace::new();
    let tables = tables(&ws, false);
    let rows = run_changelog(
        &ws,
        &tables,
        "name STRING, orders BIGINT, first_order BIGINT",
        "SELECT c.name, COUNT(*), MIN(o.id) FROM orders o LEFT JOIN customers c ON o.cust = c.cust GROUP BY c.name",
        "1",
    );
    assert_eq!(
        rows,
        vec![
            r#"{"name":"Ann","orders":2,"first_order":1}"#,
            r#"{"name":null,"orders":2,"first_order":2}"#,
        ]
    );
}

#[test]
fn updating_join_into_an_append_only_sink_is_rejected() {
    let ws = Workspace::new();
    let job = format!(
        "{}
         CREATE TABLE out (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out SELECT o.id, c.name FROM orders o LEFT JOIN customers c ON o.cust = c.cust;",
        tables(&ws, false)
    );
    let error = failed(&ws.run(&job, &[]));
    assert!(error.contains("LeftOuterJoin"), "{error}");
    assert!(error.contains("accepts only inserts"), "{error}");
}

/// An interval left join is append-only: an order without a customer event
/// within 10 s after it is emitted NULL-padded once the watermark passes that
/// bound, and state is freed by the watermark.
#[test]
fn interval_left_join_pads_unmatched_rows_when_they_expire() {
    let ws = Workspace::new();
    let tables = tables(&ws, true);
    let query = "SELECT o.id, o.cust, c.name FROM orders o LEFT JOIN customers c
        ON o.cust = c.cust AND c.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND";
    let job = format!(
        "{tables}
         CREATE TABLE out (id BIGINT, cust STRING, name STRING) WITH ('connector' = 'filesystem', 'path' = '$DIR/out', 'format' = 'json');
         INSERT INTO out {query};"
    );
    let explain = ok(&ws.sluice(&[
        "run",
        "--explain",
        &ws.write("job.sql", &ws.expand(&job)).to_string_lossy(),
    ]));
    assert!(explain.contains("LeftOuterJoin"), "{explain}");
    assert!(
        explain.contains("left and right rows freed by watermark"),
        "{explain}"
    );
    assert!(!explain.contains("(updating)"), "{explain}");
    for p in ["1", "2"] {
        ok(&ws.run(
            &job.replace("$DIR/out'", &format!("$DIR/out{p}'")),
            &["-p", p],
        ));
        assert_eq!(
            ws.sink_lines(&format!("out{p}")),
            vec![
                r#"{"id":1,"cust":"a","name":"Ann"}"#,
                r#"{"id":2,"cust":"b","name":null}"#,
                r#"{"id":3,"cust":null,"name":null}"#,
                r#"{"id":4,"cust":"a","name":null}"#,
            ]
        );
    }
}

/// Event-time temporal join: each order takes the rate valid at its time
/// (the latest version not after it); orders before a currency's first rate
/// find none.
#[test]
fn temporal_join_picks_the_version_valid_at_the_event_time() {
    let ws = Workspace::new();
    ws.write(
        "rates.json",
        r#"{"cur":"EUR","rate":1.1,"ts":"2020-01-01 00:00:00.000"}
{"cur":"USD","rate":1.0,"ts":"2020-01-01 00:00:05.000"}
{"cur":"EUR","rate":1.2,"ts":"2020-01-01 00:00:10.000"}
"#,
    );
    ws.write(
        "orders.json",
        r#"{"id":1,"cur":"EUR","ts":"2020-01-01 00:00:02.000"}
{"id":3,"cur":"USD","ts":"2020-01-01 00:00:03.000"}
{"id":4,"cur":"USD","ts":"2020-01-01 00:00:07.000"}
{"id":5,"cur":"GBP","ts":"2020-01-01 00:00:08.000"}
{"id":2,"cur":"EUR","ts":"2020-01-01 00:00:12.000"}
"#,
    );
    let tables = "CREATE TABLE orders (id BIGINT, cur STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
           WITH ('connector' = 'filesystem', 'path' = '$DIR/orders.json', 'format' = 'json');
         CREATE TABLE rates (cur STRING, rate DOUBLE, ts TIMESTAMP(3), PRIMARY KEY (cur) NOT ENFORCED,
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
           WITH ('connector' = 'filesystem', 'path' = '$DIR/rates.json', 'format' = 'json');";
    for (kind, expected) in [
        ("", vec![(1, "1.1"), (2, "1.2"), (4, "1.0")]),
        (
            "LEFT",
            vec![(1, "1.1"), (2, "1.2"), (3, "null"), (4, "1.0"), (5, "null")],
        ),
    ] {
        for p in ["1", "2"] {
            let out = format!("out{kind}{p}");
            let job = format!(
                "{tables}
                 CREATE TABLE out (id BIGINT, rate DOUBLE) WITH ('connector' = 'filesystem', 'path' = '$DIR/{out}', 'format' = 'json');
                 INSERT INTO out SELECT o.id, r.rate FROM orders o {kind} JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur;"
            );
            ok(&ws.run(&job, &["-p", p]));
            let expected: Vec<String> = expected
                .iter()
                .map(|(id, rate)| format!(r#"{{"id":{id},"rate":{rate}}}"#))
                .collect();
            assert_eq!(
                ws.sink_lines(&out),
                expected,
                "{kind} JOIN at parallelism {p}"
            );
        }
    }
}

/// A debezium-json changelog written by one job is read back by another as
/// an updating source: its retractions flow through a GROUP BY.
#[test]
fn debezium_json_changelog_round_trips() {
    let ws = Workspace::new();
    let tables = tables(&ws, false);
    let counts = run_changelog(
        &ws,
        &tables,
        "cust STRING, n BIGINT",
        "SELECT cust, COUNT(*) FROM orders GROUP BY cust",
        "1",
    );
    assert_eq!(
        counts,
        vec![
            r#"{"cust":"a","n":2}"#,
            r#"{"cust":"b","n":1}"#,
            r#"{"cust":null,"n":1}"#
        ]
    );
    // The first changelog directory run_changelog wrote.
    let changes = std::fs::read_dir(ws.path(""))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("out-"))
        .expect("changelog directory");
    let source = format!(
        "CREATE TABLE changes (cust STRING, n BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '$DIR/{changes}', 'format' = 'debezium-json');"
    );
    let histogram = run_changelog(
        &ws,
        &source,
        "n BIGINT, custs BIGINT",
        "SELECT n, COUNT(*) FROM changes GROUP BY n",
        "2",
    );
    assert_eq!(
        histogram,
        vec![r#"{"n":1,"custs":2}"#, r#"{"n":2,"custs":1}"#]
    );
    let job = format!(
        "{source}
         CREATE TABLE out (cust STRING, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '$DIR/plain', 'format' = 'json');
         INSERT INTO out SELECT * FROM changes;"
    );
    let error = failed(&ws.run(&job, &[]));
    assert!(error.contains("accepts only inserts"), "{error}");
}

/// An append-only sink with a PRIMARY KEY takes an updating query in upsert
/// mode: it receives the final row of each key when the input ends.
#[test]
fn primary_key_sinks_receive_the_final_row_per_key() {
    let ws = Workspace::new();
    let tables = tables(&ws, false);
    for p in ["1", "2"] {
        let job = format!(
            "{tables}
             CREATE TABLE counts (cust STRING, n BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
               WITH ('connector' = 'filesystem', 'path' = '$DIR/counts{p}', 'format' = 'json');
             CREATE TABLE named (id BIGINT, name STRING, PRIMARY KEY (id) NOT ENFORCED)
               WITH ('connector' = 'filesystem', 'path' = '$DIR/named{p}', 'format' = 'csv');
             INSERT INTO counts SELECT cust, COUNT(*) FROM orders GROUP BY cust;
             INSERT INTO named SELECT o.id, c.name FROM orders o LEFT JOIN customers c ON o.cust = c.cust;"
        );
        ok(&ws.run(&job, &["-p", p]));
        assert_eq!(
            ws.sink_lines(&format!("counts{p}")),
            vec![
                r#"{"cust":"a","n":2}"#,
                r#"{"cust":"b","n":1}"#,
                r#"{"cust":null,"n":1}"#
            ]
        );
        assert_eq!(
            ws.sink_lines(&format!("named{p}")),
            vec!["1,Ann", "2,", "3,", "4,Ann"]
        );
    }
}
