//! `sluice serve` as a real process, driven over HTTP: jobs reading a stream
//! that HTTP ingest appends to, the live tail, metrics, authentication,
//! rate limits, and restarts (SIGKILL and SIGTERM) that lose no acknowledged
//! event and duplicate no output.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::server::{event, start_server, Api, LISTENING, TOKEN};
use common::{read_part_files, Service, Workspace};
use futures::StreamExt;
use serde_json::{json, Value};

const JOB: &str = "big-clicks";

/// The sink rows events `0..n` must produce, each exactly once.
fn expected_output(n: u64) -> Vec<String> {
    let mut rows: Vec<String> = (0..n)
        .map(event)
        .filter(|e| e["amount"].as_u64().unwrap_or(0) >= 10)
        .map(|e| {
            format!(
                "{{\"user_name\":{},\"amount\":{}}}",
                e["user_name"], e["amount"]
            )
        })
        .collect();
    rows.sort();
    rows
}

fn job_sql(ws: &Workspace) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '300ms';
         CREATE TABLE clicks (user_name STRING, amount BIGINT)
           WITH ('connector' = 'stream', 'stream' = 'clicks', 'format' = 'json');
         CREATE TABLE big_clicks (user_name STRING, amount BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         INSERT INTO big_clicks SELECT user_name, amount FROM clicks WHERE amount >= 10;",
        ws.path("out").display()
    )
}

/// Waits until the committed sink output equals `expected`, then checks it
/// stays so (no late duplicates).
async fn wait_for_output(ws: &Workspace, expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = read_part_files(&ws.path("out"));
        if rows == expected {
            break;
        }
        assert!(
            rows.len() <= expected.len(),
            "more output than events: {} rows, expected {}",
            rows.len(),
            expected.len()
        );
        assert!(
            Instant::now() < deadline,
            "output has {} of {} rows",
            rows.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        read_part_files(&ws.path("out")),
        expected,
        "output changed after it was complete"
    );
}

/// The value of the sample `name{labels}` in a Prometheus exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_for_sample(api: &Api, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = api.metrics().await;
        if sample(&metrics, series) == Some(value) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads `rows` events of a job's live tail until `count` rows arrived.
async fn tail_rows(api: &Api, count: usize) -> tokio::task::JoinHandle<Vec<Value>> {
    let response = api
        .request(reqwest::Method::GET, &format!("/api/v1/jobs/{JOB}/tail"))
        .send()
        .await
        .expect("tail");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let mut rows = Vec::new();
        while rows.len() < count {
            let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
                .await
                .expect("tail went quiet")
                .expect("tail ended")
                .expect("tail chunk");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    let batch: Value = serde_json::from_str(data).expect("tail event JSON");
                    assert_eq!(batch["table"], "big_clicks");
                    rows.extend(batch["rows"].as_array().cloned().unwrap_or_default());
                }
            }
        }
        rows
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_read_ingested_events_across_restarts() {
    let ws = Workspace::new();
    let server = start_server(&ws, &[]);
    let api = Api::new(&server);

    // Authentication is on by default.
    let anonymous = reqwest::get(format!("{}/api/v1/jobs", server.url))
        .await
        .expect("get");
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let error: Value = anonymous.json().await.expect("error body");
    assert_eq!(error["error"]["code"], "unauthorized");

    // The OpenAPI document parses and lists the routes.
    let openapi: Value = reqwest::get(format!("{}/api/v1/openapi.json", server.url))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("openapi JSON");
    assert!(openapi["openapi"]
        .as_str()
        .unwrap_or_default()
        .starts_with("3."));
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{name}/stop",
        "/api/v1/streams/{name}/events",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }

    // Bad SQL is refused with the planner's message.
    let (status, error) = api
        .json(
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "broken", "sql": "INSERT INTO nowhere SELECT 1"})),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_sql")),
        "{error}"
    );

    let (status, job) = api
        .json(
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": JOB, "sql": job_sql(&ws)})),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "running");
    let (status, _) = api
        .json(
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": JOB, "sql": job_sql(&ws)})),
        )
        .await;
    assert_eq!(status, 409);

    // Events go in; the tail and the sink show the job's output.
    let tail = tail_rows(&api, 100).await;
    api.ingest(0..100).await;
    let array: Vec<Value> = (100..200).map(event).collect();
    let response = api
        .request(reqwest::Method::POST, "/api/v1/streams/clicks/events")
        .json(&array)
        .send()
        .await
        .expect("ingest array");
    assert_eq!(response.status().as_u16(), 200);
    let tailed = tail.await.expect("tail task");
    assert_eq!(tailed.len(), 100);
    assert!(tailed
        .iter()
        .all(|r| r["op"] == "+I" && r["row"]["amount"].as_u64() >= Some(10)));
    wait_for_output(&ws, &expected_output(200)).await;
    let metrics = wait_for_sample(
        &api,
        &format!("sluice_job_source_records_total{{job_name=\"{JOB}\"}}"),
        200.0,
    )
    .await;
    assert_eq!(
        sample(&metrics, "sluice_ingest_events_total{stream=\"clicks\"}"),
        Some(200.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("sluice_job_sink_records_total{{job_name=\"{JOB}\",table=\"big_clicks\"}}")
        ),
        Some(100.0)
    );
    check_with_promtool(&metrics);
    check_grafana_dashboard(&metrics);
    check_operator_figures(&api, &metrics).await;

    // SIGKILL right after events are acknowledged: none of them is lost.
    api.ingest(200..300).await;
    drop(server);
    let server = start_server(&ws, &[]);
    let api = Api::new(&server);
    let (_, job) = api
        .json(reqwest::Method::GET, &format!("/api/v1/jobs/{JOB}"), None)
        .await;
    assert_eq!(job["status"], "running", "{job}");
    api.ingest(300..400).await;
    wait_for_output(&ws, &expected_output(400)).await;

    // SIGTERM: the job stops with a savepoint and resumes from it.
    api.ingest(400..450).await;
    let (status, stderr) = server.signal(libc::SIGTERM, Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    let server = start_server(&ws, &[]);
    let api = Api::new(&server);
    api.ingest(450..500).await;
    wait_for_output(&ws, &expected_output(500)).await;
    let (_, detail) = api
        .json(reqwest::Method::GET, &format!("/api/v1/jobs/{JOB}"), None)
        .await;
    let events: Vec<&str> = detail["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        events
            .iter()
            .any(|m| m.starts_with("server shutdown: savepoint")),
        "{events:?}"
    );
    assert!(
        detail["plan"]
            .as_str()
            .unwrap_or_default()
            .contains("big_clicks"),
        "{detail}"
    );

    // Stop with a savepoint, resume, delete.
    let (status, job) = api
        .json(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{JOB}/stop"),
            Some(json!({"savepoint": true})),
        )
        .await;
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("stopped")),
        "{job}"
    );
    assert!(job["savepoint"].is_string(), "{job}");
    api.ingest(500..520).await;
    // The stopped job's latest checkpoint covers the first 500 events.
    let (_, streams) = api
        .json(reqwest::Method::GET, "/api/v1/streams", None)
        .await;
    assert_eq!(
        streams[0]["consumers"][0]["lag"].as_u64(),
        Some(20),
        "{streams}"
    );
    let (status, job) = api
        .json(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{JOB}/resume"),
            None,
        )
        .await;
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("running")),
        "{job}"
    );
    wait_for_output(&ws, &expected_output(520)).await;
    let (status, streams) = api
        .json(reqwest::Method::GET, "/api/v1/streams", None)
        .await;
    assert_eq!(status, 200);
    let offsets: u64 = streams[0]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["end_offset"].as_u64())
        .sum();
    assert_eq!(
        (streams[0]["name"].as_str(), offsets),
        (Some("clicks"), 520)
    );
    // Once a checkpoint covers everything, the job's committed lag is 0.
    wait_for_sample(
        &api,
        &format!("sluice_stream_consumer_lag_records{{stream=\"clicks\",job_name=\"{JOB}\"}}"),
        0.0,
    )
    .await;
    let (_, streams) = api
        .json(reqwest::Method::GET, "/api/v1/streams", None)
        .await;
    let consumer = &streams[0]["consumers"][0];
    assert_eq!(
        (consumer["job"].as_str(), consumer["lag"].as_u64()),
        (Some(JOB), Some(0)),
        "{streams}"
    );
    let (status, _) = api
        .json(
            reqwest::Method::DELETE,
            &format!("/api/v1/jobs/{JOB}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, error) = api
        .json(reqwest::Method::GET, &format!("/api/v1/jobs/{JOB}"), None)
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("job_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_limits_answer_with_json_errors() {
    let ws = Workspace::new();
    let server = start_server(
        &ws,
        &["ingest.rate_limit=50", "ingest.max_request_bytes=4000"],
    );
    let api = Api::new(&server);
    let post = |body: String| {
        api.request(reqwest::Method::POST, "/api/v1/streams/limited/events")
            .body(body)
            .send()
    };
    let ndjson = |n: u64| -> String { (0..n).map(|i| format!("{}\n", event(i))).collect() };

    assert_eq!(post(ndjson(50)).await.expect("post").status().as_u16(), 200);
    let throttled = post(ndjson(5)).await.expect("post");
    assert_eq!(throttled.status().as_u16(), 429);
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry_after >= 1);
    let error: Value = throttled.json().await.expect("error JSON");
    assert_eq!(error["error"]["code"], "rate_limited");

    let too_big = post("x".repeat(5000)).await.expect("post");
    assert_eq!(too_big.status().as_u16(), 413);
    let error: Value = too_big.json().await.expect("error JSON");
    assert_eq!(error["error"]["code"], "request_too_large");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bad = post("{\"a\":1}\n{\"a\":\n".into()).await.expect("post");
    assert_eq!(bad.status().as_u16(), 400);
    let error: Value = bad.json().await.expect("error JSON");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("line 2:"),
        "{error}"
    );

    let metrics = api.metrics().await;
    let counts: BTreeMap<&str, Option<f64>> = [
        "sluice_ingest_events_total",
        "sluice_ingest_throttled_total",
        "sluice_ingest_rejected_total",
    ]
    .into_iter()
    .map(|name| {
        (
            name,
            sample(&metrics, &format!("{name}{{stream=\"limited\"}}")),
        )
    })
    .collect();
    assert_eq!(counts["sluice_ingest_events_total"], Some(50.0));
    assert_eq!(counts["sluice_ingest_throttled_total"], Some(1.0));
    assert_eq!(counts["sluice_ingest_rejected_total"], Some(1.0));
}

/// Every series the Grafana dashboard in `deploy/grafana/` queries is one
/// the server exports.
fn check_grafana_dashboard(metrics: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/sluice.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    // Histograms are queried by their `_bucket`, `_sum` and `_count` series.
    let mut exported = std::collections::BTreeSet::new();
    for line in metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut words = line.split_whitespace();
        let (Some(name), kind) = (words.next(), words.next()) else {
            continue;
        };
        if kind == Some("histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
        exported.insert(name.to_string());
    }
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("sluice_") || word.starts_with("process_") {
                    assert!(
                        exported.contains(word),
                        "the dashboard queries {word}, which /metrics lacks"
                    );
                    queried += 1;
                }
            }
        }
    }
    assert!(queried >= 10, "the dashboard queries only {queried} series");
}

/// The sum of every sample of `family` whose labels include all of `labels`.
fn family_sum(metrics: &str, family: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Per-operator figures after 200 events of which 100 pass the filter:
/// in `/metrics` and in `GET /jobs/{name}/operators` (sampled each second).
async fn check_operator_figures(api: &Api, metrics: &str) {
    let job = format!("job_name=\"{JOB}\"");
    let sum =
        |family, kind: &str| family_sum(metrics, family, &[&job, &format!("operator=\"{kind}\"")]);
    assert_eq!(sum("sluice_operator_records_out_total", "source"), 200.0);
    assert_eq!(sum("sluice_operator_records_in_total", "sink"), 100.0);
    assert_eq!(sum("sluice_operator_records_in_total", "filter"), 200.0);
    assert_eq!(sum("sluice_operator_records_out_total", "filter"), 100.0);
    assert!(sum("sluice_operator_batches_in_total", "sink") >= 1.0);
    assert!(sum("sluice_operator_output_bytes_total", "source") > 0.0);
    assert!(sum("sluice_operator_processing_seconds_count", "filter") >= 1.0);
    assert!(family_sum(metrics, "sluice_checkpoints_completed_total", &[&job]) >= 1.0);

    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let (status, view) = api
            .json(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{JOB}/operators"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{view}");
        let source_out = view["operators"]
            .as_array()
            .and_then(|ops| ops.iter().find(|o| o["kind"] == "source"))
            .map(|o| o["records_out"].clone());
        if source_out == Some(json!(200)) && !view["history"].as_array().is_none_or(Vec::is_empty) {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "operator figures never caught up: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let operators = view["operators"].as_array().expect("operators");
    let (_, graph) = api
        .json(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{JOB}/graph"),
            None,
        )
        .await;
    assert_eq!(
        operators.len(),
        graph["nodes"].as_array().map_or(0, Vec::len)
    );
    let sink = operators
        .iter()
        .find(|o| o["kind"] == "sink")
        .expect("sink");
    assert_eq!(sink["records_in"], 100, "{view}");
    for node in graph["nodes"].as_array().expect("nodes") {
        assert!(node["records_per_second"].is_number(), "{node}");
        assert!(
            node["backpressure"]
                .as_f64()
                .is_some_and(|b| (0.0..=1.0).contains(&b)),
            "{node}"
        );
    }
    assert!(
        view["checkpoints"]["completed"].as_u64() >= Some(1),
        "{view}"
    );
}

/// `promtool check metrics` on the exposition, when promtool is installed
/// (`.ci/run` installs it; under CI its absence is an error).
fn check_with_promtool(metrics: &str) {
    use std::io::Write;
    let promtool = std::env::var("SLUICE_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) if std::env::var_os("SLUICE_CI").is_none() => {
            eprintln!("skipping promtool check: cannot run '{promtool}': {error}");
            return;
        }
        Err(error) => panic!("promtool is required under CI: {error}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write metrics");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_with_the_configured_certificate() {
    let ws = Workspace::new();
    let (cert, key) = (ws.path("cert.pem"), ws.path("key.pem"));
    let openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // A leaf certificate: webpki refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let cert_setting = format!("tls.cert={}", cert.display());
    let key_setting = format!("tls.key={}", key.display());
    let server = start_server(&ws, &[&cert_setting, &key_setting]);
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let pem = std::fs::read(&cert).expect("cert");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("certificate"))
        .build()
        .expect("client");
    let response = client
        .get(format!("{}/api/v1/jobs", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(response.status().as_u16(), 200);

    // Plain HTTP to the TLS port gets no API answer; an untrusted
    // certificate is refused by the client.
    let plain = server.url.replacen("https://", "http://", 1);
    let answer = reqwest::get(format!("{plain}/api/v1/health")).await;
    assert!(answer.map(|r| !r.status().is_success()).unwrap_or(true));
    assert!(reqwest::get(format!("{}/api/v1/health", server.url))
        .await
        .is_err());

    // A key without a certificate is a configuration error at start.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--set", &key_setting])
        .output()
        .expect("sluice serve");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("tls.cert"));
}

/// A minimal OTLP/HTTP collector: answers `200` to every request and hands
/// over the body of each `POST /v1/traces`.
fn start_trace_collector() -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind collector");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (bodies, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for connection in listener.incoming().map_while(Result::ok) {
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(connection.try_clone().expect("clone"));
                let mut writer = connection;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if request_line.starts_with("POST /v1/traces") {
                        let _ = bodies.send(body);
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, ingest requests, job lifecycle
/// operations and sampled batches (operators, sink writes) are exported as
/// spans over OTLP/HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_otlp() {
    let (collector, bodies) = start_trace_collector();
    let ws = Workspace::new();
    let data_dir = ws.path("server");
    let server = Service::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().expect("utf8"),
        ],
        &[
            ("SLUICE_ADMIN_TOKEN", TOKEN),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "sluice-under-test"),
            ("SLUICE_TRACE_BATCH_INTERVAL", "50ms"),
        ],
        LISTENING,
    );
    let api = Api::new(&server);
    let (status, _) = api
        .json(
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": JOB, "sql": job_sql(&ws)})),
        )
        .await;
    assert_eq!(status, 201);
    // A second job at parallelism 2: its aggregation runs in other tasks,
    // behind a hash shuffle, which sampled batches' spans must cross.
    let totals = "CREATE TABLE clicks (user_name STRING, amount BIGINT)
           WITH ('connector' = 'stream', 'stream' = 'clicks', 'format' = 'json');
         CREATE TABLE totals (user_name STRING, total BIGINT) WITH ('connector' = 'blackhole');
         INSERT INTO totals SELECT user_name, SUM(amount) FROM clicks GROUP BY user_name;";
    let (status, body) = api
        .json(
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "totals", "sql": totals, "parallelism": 2})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Half of these pass the first job's filter, so its sampled batch reaches the sink.
    api.ingest(0..200).await;
    // Sampled batches: a root `batch` span with its operators and the sink write.
    let wanted: [&[u8]; 6] = [
        b"sluice-under-test",
        b"ingest",
        b"job.submit",
        b"operator",
        b"sink.write",
        b"GroupAggregate",
    ];
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wanted
        .iter()
        .all(|w| seen.windows(w.len()).any(|x| x == *w))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let body = bodies.recv_timeout(left).unwrap_or_else(|_| {
            let missing: Vec<String> = wanted
                .iter()
                .filter(|w| !seen.windows(w.len()).any(|x| x == **w))
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            panic!(
                "no OTLP export with {missing:?} in {} bytes of spans",
                seen.len()
            )
        });
        seen.extend(body);
    }
}
