//! Criterion micro-benchmarks of the hot paths (`cargo bench -p sluice-cli`):
//!
//! - `json_decode`: nexmark-flink JSON lines into Arrow, only the columns a
//!   bid query reads;
//! - `pipeline/*`: in-process jobs over the built-in Nexmark generator into a
//!   blackhole sink. `generator_projection` is the source and a projection
//!   alone; the window aggregation, interval join and hash shuffle (the same
//!   window aggregation at parallelism 2) cost what they add to it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_connectors::formats::json::{JsonDecoder, JsonOptions};
use sluice_connectors::formats::{LineChunk, RecordDecoder};
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::options::Options;

/// Events per pipeline run.
const EVENTS: u64 = 200_000;
/// Lines per JSON decode run.
const LINES: usize = 8192;

const SOURCE: &str = include_str!("../../../benchmarks/nexmark/queries/_source.sql");

fn bid_schema() -> Arc<Schema> {
    let bid = Fields::from(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("bidder", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new(
            "dateTime",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("extra", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Int32, true),
        Field::new("bid", DataType::Struct(bid), true),
    ]))
}

fn json_decode(c: &mut Criterion) {
    let data = common::bid_lines(LINES);
    let chunk = LineChunk::whole("bench", 1, data);
    let options = Options::new(
        "bench",
        [(
            "json.timestamp-format.standard".to_string(),
            "SQL".to_string(),
        )]
        .into(),
    );
    let json = JsonOptions::from_options(&options).expect("json options");
    let mut decoder = JsonDecoder::new(bid_schema(), json, BadRecordPolicy::fail("bench"), LINES)
        .expect("decoder");
    let mut group = c.benchmark_group("json_decode");
    group.throughput(Throughput::Bytes(chunk.data.len() as u64));
    group.bench_function("nexmark_bids_8k_lines", |b| {
        b.iter(|| {
            let batch = decoder.decode(&chunk).expect("decode").expect("rows");
            assert_eq!(batch.num_rows(), LINES);
        })
    });
    group.finish();
}

/// The Nexmark source table over the generator, and its views.
fn generator_source() -> String {
    let at = SOURCE.find("CREATE VIEW").expect("views");
    let table = SOURCE[..at].trim_end();
    let table = table.strip_suffix(';').unwrap_or(table);
    let columns = &table[..table.rfind("WITH (").expect("WITH")];
    format!(
        "{columns}WITH ('connector' = 'nexmark', 'events.num' = '{EVENTS}');\n{}",
        &SOURCE[at..]
    )
}

fn job(parallelism: usize, sink_columns: &str, query: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = 'off';
         SET 'parallelism.default' = '{parallelism}';
         {}
         CREATE TABLE sink ({sink_columns}) WITH ('connector' = 'blackhole');
         INSERT INTO sink {query};",
        generator_source()
    )
}

fn pipelines(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let registry = sluice_connectors::builtin_connectors();
    let window = "SELECT auction, COUNT(*), MAX(price), window_start
        FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
        GROUP BY auction, window_start, window_end";
    let window_columns = "auction BIGINT, bids BIGINT, top BIGINT, window_start TIMESTAMP(3)";
    let jobs = [
        (
            "generator_projection",
            job(
                1,
                "auction BIGINT, price BIGINT",
                "SELECT auction, price FROM bid",
            ),
        ),
        ("window_aggregation", job(1, window_columns, window)),
        (
            "interval_join",
            job(
                1,
                "auction BIGINT, price BIGINT, category BIGINT",
                "SELECT B.auction, B.price, A.category FROM auction A, bid B
                 WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires",
            ),
        ),
        (
            "shuffle_window_aggregation_p2",
            job(2, window_columns, window),
        ),
    ];
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    for (name, script) in jobs {
        let plan = runtime
            .block_on(sluice_sql::plan_script(
                &script,
                name,
                &registry,
                &BTreeMap::new(),
            ))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        group.bench_function(name, |b| {
            b.iter(|| {
                let (_stop_sender, stop) = tokio::sync::watch::channel(false);
                runtime
                    .block_on(sluice_runtime::run_job(&plan, stop))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, json_decode, pipelines);
criterion_main!(benches);
