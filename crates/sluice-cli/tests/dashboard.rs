//! The web dashboard `sluice serve` embeds: its files and the endpoints it
//! uses, over HTTP; then the dashboard itself in headless Chromium
//! (`tests/dashboard/dashboard.test.mjs`, on playwright-core) against a
//! server with a running job fed with events while the browser looks.
//!
//! The browser test needs `chromium` (or `SLUICE_TEST_CHROMIUM`), `node`
//! (or `SLUICE_TEST_NODE`) and `npm ci` run in `tests/dashboard`; without
//! them it is skipped, except under CI (`SLUICE_CI`), where `.ci/run`
//! installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{start_server, Api, TOKEN};
use common::Workspace;
use serde_json::{json, Value};

const JOB: &str = "big-clicks";
const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);

fn job_sql(ws: &Workspace) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1s';
         CREATE TABLE clicks (user_name STRING, amount BIGINT)
           WITH ('connector' = 'stream', 'stream' = 'clicks', 'format' = 'json', 'errors' = 'dlq');
         CREATE TABLE big_clicks (user_name STRING, amount BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         INSERT INTO big_clicks SELECT user_name, amount FROM clicks WHERE amount >= 10;",
        ws.path("out").display()
    )
}

/// Submits the job and waits until it has read `events` posted events.
async fn start_job(ws: &Workspace, url: &str) {
    let (status, job) = Api::at(url)
        .json(
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": JOB, "sql": job_sql(ws)})),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    Api::at(url).ingest(0..100).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, job) = Api::at(url)
            .json(reqwest::Method::GET, &format!("/api/v1/jobs/{JOB}"), None)
            .await;
        if job["metrics"]["rows_read"].as_u64() >= Some(100) {
            break;
        }
        assert!(Instant::now() < deadline, "the job read nothing: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_files_and_endpoints() {
    let ws = Workspace::new();
    let server = start_server(&ws, &[]);
    let url = server.url.clone();

    // The page and its files need no token.
    let index = reqwest::get(format!("{url}/")).await.expect("index");
    assert_eq!(index.status().as_u16(), 200);
    assert!(index.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(index.headers().contains_key("content-security-policy"));
    let html = index.text().await.expect("html");
    assert!(html.contains("/assets/app.js"), "{html}");
    for (path, content_type) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let response = reqwest::get(format!("{url}{path}")).await.expect("asset");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let header = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(header.starts_with(content_type), "{path}: {header}");
    }
    let missing = reqwest::get(format!("{url}/assets/nope.js"))
        .await
        .expect("missing");
    assert_eq!(missing.status().as_u16(), 404);
    // The API behind it still needs one.
    let anonymous = reqwest::get(format!("{url}/api/v1/jobs/{JOB}/graph"))
        .await
        .expect("graph");
    assert_eq!(anonymous.status().as_u16(), 401);

    // Validation: errors with their line (and column when the parser names one).
    let (status, answer) = Api::at(&url).json(reqwest::Method::POST,
        "/api/v1/sql/validate",
        Some(json!({"sql": "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');\nSELEC a FROM t;"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &answer["valid"],
            &answer["error"]["line"],
            &answer["error"]["column"]
        ),
        (&json!(false), &json!(2), &json!(1)),
        "{answer}"
    );
    let (_, answer) = Api::at(&url)
        .json(
            reqwest::Method::POST,
            "/api/v1/sql/validate",
            Some(json!({"sql": job_sql(&ws)})),
        )
        .await;
    assert_eq!(answer["valid"], json!(true), "{answer}");
    let kinds: Vec<&str> = answer["graph"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"source"), "{answer}");
    assert_eq!(kinds.last(), Some(&"sink"), "{answer}");

    // A running job's graph, checkpoints and dead letters.
    start_job(&ws, &url).await;
    let (status, graph) = Api::at(&url)
        .json(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{JOB}/graph"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{graph}");
    let nodes = graph["nodes"].as_array().cloned().unwrap_or_default();
    let labels: Vec<&str> = nodes.iter().filter_map(|n| n["label"].as_str()).collect();
    assert!(
        labels.contains(&"clicks") && labels.contains(&"big_clicks"),
        "{graph}"
    );
    assert!(labels.contains(&"amount >= 10"), "{graph}");
    // Live figures appear from the second sample on (tests/server.rs checks them).
    for node in &nodes {
        let rate = &node["records_per_second"];
        let pressure = &node["backpressure"];
        assert!(rate.is_null() || rate.as_f64() >= Some(0.0), "{node}");
        assert!(
            pressure.is_null() || pressure.as_f64().is_some_and(|b| (0.0..=1.0).contains(&b)),
            "{node}"
        );
    }
    assert_eq!(
        graph["edges"].as_array().map(Vec::len),
        Some(nodes.len() - 1),
        "{graph}"
    );

    let bad = reqwest::Client::new()
        .post(format!("{url}/api/v1/streams/clicks/events"))
        .bearer_auth(TOKEN)
        .body("{\"user_name\": \"x\", \"amount\": \"lots\"}")
        .send()
        .await
        .expect("ingest");
    assert_eq!(bad.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (letters, history) = loop {
        let (_, letters) = Api::at(&url)
            .json(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{JOB}/dead-letters"),
                None,
            )
            .await;
        let (_, history) = Api::at(&url)
            .json(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{JOB}/checkpoints"),
                None,
            )
            .await;
        let has_letter = letters["records"].as_array().is_some_and(|r| !r.is_empty());
        let has_checkpoint = history["checkpoints"]
            .as_array()
            .is_some_and(|c| !c.is_empty());
        if has_letter && has_checkpoint {
            break (letters, history);
        }
        assert!(Instant::now() < deadline, "{letters}\n{history}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        letters["records"][0]["raw"], "{\"amount\":\"lots\",\"user_name\":\"x\"}",
        "{letters}"
    );
    assert_eq!(history["interval_ms"], 1000, "{history}");
    assert_eq!(history["checkpoints"][0]["kind"], "checkpoint", "{history}");

    let openapi: Value = reqwest::get(format!("{url}/api/v1/openapi.json"))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("openapi JSON");
    for path in [
        "/api/v1/jobs/{name}/graph",
        "/api/v1/jobs/{name}/checkpoints",
        "/api/v1/jobs/{name}/dead-letters",
        "/api/v1/sql/validate",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

/// The browser, Node and playwright-core, or why the browser test cannot run.
struct BrowserSetup {
    chromium: PathBuf,
    node: PathBuf,
    script_dir: PathBuf,
}

fn find_program(variable: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{variable}={} does not exist", path.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("'{name}' is not on PATH (or set {variable})"))
}

fn browser_setup() -> Option<BrowserSetup> {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    let found = find_program("SLUICE_TEST_CHROMIUM", "chromium").and_then(|chromium| {
        let node = find_program("SLUICE_TEST_NODE", "node")?;
        if !script_dir
            .join("node_modules/playwright-core/package.json")
            .is_file()
        {
            return Err(format!(
                "playwright-core is not installed: run `npm ci` in {}",
                script_dir.display()
            ));
        }
        Ok(BrowserSetup {
            chromium,
            node,
            script_dir: script_dir.clone(),
        })
    });
    match found {
        Ok(setup) => Some(setup),
        Err(reason) if std::env::var_os("SLUICE_CI").is_some() => {
            panic!("the dashboard browser test is required under CI: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the dashboard browser test: {reason}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let Some(setup) = browser_setup() else {
        return;
    };
    let ws = Workspace::new();
    let server = start_server(&ws, &[]);
    let url = server.url.clone();
    start_job(&ws, &url).await;

    // Events keep arriving while the browser looks, so the charts move.
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (url, feeding) = (url.clone(), feeding.clone());
        tokio::spawn(async move {
            let mut next = 100;
            while feeding.load(Ordering::Relaxed) {
                Api::at(&url).ingest(next..next + 40).await;
                next += 40;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut command = Command::new(&setup.node);
    command
        .arg("dashboard.test.mjs")
        .current_dir(&setup.script_dir)
        .env("SLUICE_DASHBOARD_URL", format!("{url}/"))
        .env("SLUICE_DASHBOARD_TOKEN", TOKEN)
        .env("SLUICE_DASHBOARD_JOB", JOB)
        .env("SLUICE_DASHBOARD_SOURCE", "clicks")
        .env("SLUICE_DASHBOARD_SINK", "big_clicks")
        .env("SLUICE_DASHBOARD_SCREENSHOT", &screenshot)
        .env("SLUICE_TEST_CHROMIUM", &setup.chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || run_with_timeout(command, BROWSER_TIMEOUT))
        .await
        .expect("browser test thread");
    feeding.store(false, Ordering::Relaxed);
    feeder.await.expect("event feeder");
    let (status, stdout, stderr) = output;
    assert!(
        status == Some(0),
        "the browser test failed ({status:?}):\n{stdout}\n{stderr}"
    );
    let png = std::fs::read(&screenshot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("dashboard screenshots: {}", screenshot.display());
}

/// Runs `command` and returns its exit code (None if killed after
/// `timeout`), stdout and stderr.
fn run_with_timeout(mut command: Command, timeout: Duration) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut child = command.spawn().expect("start node");
    let mut pipes = (child.stdout.take(), child.stderr.take());
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(pipes.0.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(pipes.1.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}
