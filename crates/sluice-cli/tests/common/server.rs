//! A `sluice serve` process for tests, and an authenticated client for its API.

use serde_json::{json, Value};

use super::{Service, Workspace};

pub const LISTENING: &str = "sluice server listening on ";
pub const TOKEN: &str = "test-admin-token";
pub fn start_server(ws: &Workspace, settings: &[&str]) -> Service {
    let data_dir = ws.path("server");
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().expect("utf8"),
    ];
    for setting in settings {
        args.extend(["--set", setting]);
    }
    Service::start(
        &args,
        &[("SLUICE_ADMIN_TOKEN", TOKEN), ("SLUICE_LOG", "info")],
        LISTENING,
    )
}

/// An authenticated API client for one server process.
pub struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    pub fn new(server: &Service) -> Api {
        Api::at(&server.url)
    }

    /// A client for the server at `url`.
    pub fn at(url: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            url: url.to_string(),
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts events `range` as NDJSON; panics unless all were accepted.
    pub async fn ingest(&self, range: std::ops::Range<u64>) {
        let body: String = range.clone().map(|i| format!("{}\n", event(i))).collect();
        let response = self
            .request(
                reqwest::Method::POST,
                "/api/v1/streams/clicks/events?key=user_name",
            )
            .body(body)
            .send()
            .await
            .expect("ingest");
        assert_eq!(
            response.status().as_u16(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let receipt: Value = response.json().await.expect("receipt");
        assert_eq!(receipt["accepted"], json!(range.end - range.start));
    }

    pub async fn metrics(&self) -> String {
        let response = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.expect("metrics body")
    }
}

/// Test event `i`: seven users, amounts 0..20.
pub fn event(i: u64) -> Value {
    json!({"user_name": format!("u{}", i % 7), "amount": i % 20})
}
