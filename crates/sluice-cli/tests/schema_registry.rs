//! `sluice schema-registry` as a real process: it serves Confluent's REST API
//! and stops cleanly on SIGTERM; Confluent's own Python client
//! (`crates/sluice-registry/tests/confluent_client.py`) registers, serializes
//! and deserializes against it.
//!
//! The Python test needs an interpreter with confluent-kafka installed, named
//! by `SLUICE_TEST_PYTHON` (`.ci/run` sets one up); without it the test is
//! skipped, except under CI (`SLUICE_CI` set), where that is an error.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Service;

const LISTENING: &str = "schema registry listening on ";

/// Starts `sluice schema-registry` on a free port.
fn start_registry(data_dir: &Path) -> Service {
    let data_dir = data_dir.to_str().expect("utf8");
    Service::start(
        &[
            "schema-registry",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
        ],
        &[("SLUICE_LOG", "info")],
        LISTENING,
    )
}

/// SIGTERM, then the exit status and the rest of stderr.
fn terminate(registry: Service) -> (std::process::ExitStatus, String) {
    registry.signal(libc::SIGTERM, Duration::from_secs(20))
}

/// A plain HTTP/1.1 request; returns the status code and body.
fn http(url: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn schema_registry_serves_persists_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let registry = start_registry(&data_dir);
    assert_eq!(
        http(&registry.url, "GET", "/subjects", None),
        (200, "[]".into())
    );
    let schema = serde_json::json!({"schema": r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#});
    let (status, body) = http(
        &registry.url,
        "POST",
        "/subjects/r-value/versions",
        Some(&schema.to_string()),
    );
    assert_eq!((status, body.as_str()), (200, r#"{"id":1}"#));
    let (status, body) = http(&registry.url, "GET", "/subjects/nope/versions", None);
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON error body"),
        serde_json::json!({"error_code": 40401, "message": "Subject 'nope' not found."})
    );
    let (status, stderr) = terminate(registry);
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(data_dir.join("schema-registry.db").exists());

    // A new process on the same data directory has the schema.
    let registry = start_registry(&data_dir);
    let (status, body) = http(
        &registry.url,
        "GET",
        "/subjects/r-value/versions/latest",
        None,
    );
    assert_eq!(status, 200, "{body}");
    let version: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(version["id"], serde_json::json!(1));
    let (status, _) = terminate(registry);
    assert!(status.success());
}

#[test]
fn confluent_python_client_works_against_the_registry() {
    let Some(python) = std::env::var_os("SLUICE_TEST_PYTHON") else {
        assert!(
            std::env::var_os("SLUICE_CI").is_none(),
            "SLUICE_TEST_PYTHON must name a Python with confluent-kafka under CI"
        );
        eprintln!(
            "skipping: set SLUICE_TEST_PYTHON to a Python interpreter with confluent-kafka[avro]==2.16.1"
        );
        return;
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sluice-registry/tests/confluent_client.py");
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = start_registry(dir.path());
    let output = Command::new(&python)
        .arg(&script)
        .arg(&registry.url)
        .stdin(Stdio::null())
        .output()
        .expect("run the Python client script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "confluent_client.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("confluent client interop: all checks passed"),
        "{stdout}\n{stderr}"
    );
    let (status, log) = terminate(registry);
    assert!(status.success(), "exit status {status}; stderr:\n{log}");
}
