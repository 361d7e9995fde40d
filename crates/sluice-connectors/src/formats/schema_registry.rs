//! A client for a Confluent-compatible schema registry (the `avro-confluent`
//! format's writer schemas), and an in-memory registry with the same
//! interface for tests and embedded use.
//!
//! Only the REST calls the format needs are made, with Confluent's request and
//! response shapes:
//! - `GET /schemas/ids/{id}` → `{"schema": "...", "schemaType": "AVRO"}`
//!   (`schemaType` absent means Avro),
//! - `POST /subjects/{subject}/versions` with `{"schema": "..."}` → `{"id": N}`,
//! - `GET /subjects/{subject}/versions/latest` →
//!   `{"subject": "...", "version": N, "id": N, "schema": "..."}`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use sluice_core::{Result, SluiceError};

/// The content type Confluent's registry speaks.
pub const REGISTRY_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A schema as the registry returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// The registry's global schema id (the one in message headers).
    pub id: u32,
    /// The schema text (Avro schema JSON for Avro schemas).
    pub schema: String,
    /// `schemaType` (`AVRO`, `PROTOBUF`, `JSON`); `None` means Avro.
    pub schema_type: Option<String>,
}

impl RegisteredSchema {
    /// Whether this is an Avro schema (`schemaType` absent or `AVRO`).
    pub fn is_avro(&self) -> bool {
        self.schema_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("AVRO"))
    }
}

/// The registry operations the Avro formats use.
#[async_trait]
pub trait SchemaRegistry: Send + Sync {
    /// The schema with global id `id`, or `None` when the registry has none.
    async fn schema_by_id(&self, id: u32) -> Result<Option<RegisteredSchema>>;
    /// Registers `schema` (Avro JSON) under `subject`, returning its id
    /// (the existing id when the subject already has this schema).
    async fn register(&self, subject: &str, schema: &str) -> Result<u32>;
    /// The latest version of `subject`, or `None` when the subject does not exist.
    async fn latest(&self, subject: &str) -> Result<Option<RegisteredSchema>>;
}

/// How requests to the registry authenticate.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No authentication.
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::None => f.write_str("None"),
            RegistryAuth::Basic { user, .. } => {
                write!(f, "Basic {{ user: {user:?}, password: *** }}")
            }
            RegistryAuth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// An HTTP client for a Confluent-compatible schema registry, caching schemas
/// by id and registrations by subject and schema.
pub struct SchemaRegistryClient {
    urls: Vec<String>,
    auth: RegistryAuth,
    http: reqwest::Client,
    by_id: Mutex<HashMap<u32, RegisteredSchema>>,
    registered: Mutex<HashMap<(String, String), u32>>,
}

impl fmt::Debug for SchemaRegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistryClient")
            .field("urls", &self.urls)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct VersionResponse {
    id: u32,
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error_code: Option<i64>,
    message: Option<String>,
}

/// Percent-encodes one URL path segment (everything but RFC 3986 unreserved characters).
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of a register request: `{"schema": "<schema JSON as a string>"}`.
pub fn register_request_body(schema: &str) -> String {
    serde_json::json!({ "schema": schema }).to_string()
}

/// Parses a `GET /schemas/ids/{id}` response body.
pub fn parse_schema_response(
    id: u32,
    body: &[u8],
) -> std::result::Result<RegisteredSchema, String> {
    let parsed: SchemaResponse =
        serde_json::from_slice(body).map_err(|e| format!("unexpected response: {e}"))?;
    Ok(RegisteredSchema {
        id,
        schema: parsed.schema,
        schema_type: parsed.schema_type,
    })
}

/// Parses a `POST /subjects/{subject}/versions` response body (`{"id": N}`).
pub fn parse_register_response(body: &[u8]) -> std::result::Result<u32, String> {
    let parsed: IdResponse =
        serde_json::from_slice(body).map_err(|e| format!("unexpected response: {e}"))?;
    Ok(parsed.id)
}

/// Parses a `GET /subjects/{subject}/versions/latest` response body.
pub fn parse_version_response(body: &[u8]) -> std::result::Result<RegisteredSchema, String> {
    let parsed: VersionResponse =
        serde_json::from_slice(body).map_err(|e| format!("unexpected response: {e}"))?;
    Ok(RegisteredSchema {
        id: parsed.id,
        schema: parsed.schema,
        schema_type: parsed.schema_type,
    })
}

fn error_text(status: reqwest::StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(ErrorResponse {
            error_code,
            message: Some(message),
        }) => match error_code {
            Some(code) => format!("HTTP {status}: {message} (error code {code})"),
            None => format!("HTTP {status}: {message}"),
        },
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!(
                    "HTTP {status}: {}",
                    text.chars().take(300).collect::<String>()
                )
            }
        }
    }
}

impl SchemaRegistryClient {
    /// A client for the registry at `urls` (one URL, or several separated by
    /// commas, tried in order when one cannot be reached). Credentials in a URL
    /// (`http://user:password@host`) are used for basic authentication when
    /// `auth` is [`RegistryAuth::None`].
    pub fn new(urls: &str, auth: RegistryAuth) -> Result<Self> {
        let mut parsed = Vec::new();
        let mut auth = auth;
        for raw in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let mut url = reqwest::Url::parse(raw).map_err(|e| {
                SluiceError::Config(format!("invalid schema registry URL '{raw}': {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(SluiceError::Config(format!(
                    "invalid schema registry URL '{raw}': the scheme must be http or https"
                )));
            }
            if !url.username().is_empty() {
                if auth == RegistryAuth::None {
                    auth = RegistryAuth::Basic {
                        user: percent_decode(url.username()),
                        password: percent_decode(url.password().unwrap_or("")),
                    };
                }
                let _ = url.set_username("");
                let _ = url.set_password(None);
            }
            parsed.push(url.as_str().trim_end_matches('/').to_string());
        }
        if parsed.is_empty() {
            return Err(SluiceError::Config(
                "the schema registry URL is empty".to_string(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SluiceError::Config(format!("schema registry HTTP client: {e}")))?;
        Ok(SchemaRegistryClient {
            urls: parsed,
            auth,
            http,
            by_id: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
        })
    }

    /// The registry base URLs (without credentials).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Sends one request (built for each base URL in turn until one answers)
    /// and returns the status and body.
    async fn send(
        &self,
        what: &str,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>, String)> {
        let mut last_error = String::new();
        for base in &self.urls {
            let mut builder = request(base).header(
                reqwest::header::ACCEPT,
                "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json",
            );
            builder = match &self.auth {
                RegistryAuth::None => builder,
                RegistryAuth::Basic { user, password } => builder.basic_auth(user, Some(password)),
                RegistryAuth::Bearer(token) => builder.bearer_auth(token),
            };
            match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.map_err(|e| {
                        SluiceError::Connector(format!(
                            "schema registry {base}: {what}: reading the response failed: {e}"
                        ))
                    })?;
                    return Ok((status, body.to_vec(), base.clone()));
                }
                Err(e) => last_error = format!("schema registry {base}: {what} failed: {e}"),
            }
        }
        Err(SluiceError::Connector(last_error))
    }

    /// `GET /schemas/ids/{id}`; `None` on 404.
    pub async fn schema_by_id(&self, id: u32) -> Result<Option<RegisteredSchema>> {
        if let Some(found) = self.by_id.lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(Some(found));
        }
        let what = format!("fetching schema id {id}");
        let (status, body, base) = self
            .send(&what, |base| {
                self.http.get(format!("{base}/schemas/ids/{id}"))
            })
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(SluiceError::Connector(format!(
                "schema registry {base}: {what} failed: {}",
                error_text(status, &body)
            )));
        }
        let found = parse_schema_response(id, &body)
            .map_err(|e| SluiceError::Connector(format!("schema registry {base}: {what}: {e}")))?;
        if let Ok(mut cache) = self.by_id.lock() {
            cache.insert(id, found.clone());
        }
        Ok(Some(found))
    }

    /// `POST /subjects/{subject}/versions` with `{"schema": ...}`; returns the id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(id) = self
            .registered
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
        {
            return Ok(id);
        }
        let what = format!("registering a schema under subject '{subject}'");
        let body = register_request_body(schema);
        let (status, response, base) = self
            .send(&what, |base| {
                self.http
                    .post(format!(
                        "{base}/subjects/{}/versions",
                        encode_path_segment(subject)
                    ))
                    .header(reqwest::header::CONTENT_TYPE, REGISTRY_CONTENT_TYPE)
                    .body(body.clone())
            })
            .await?;
        if !status.is_success() {
            return Err(SluiceError::Connector(format!(
                "schema registry {base}: {what} failed: {}",
                error_text(status, &response)
            )));
        }
        let id = parse_register_response(&response)
            .map_err(|e| SluiceError::Connector(format!("schema registry {base}: {what}: {e}")))?;
        if let Ok(mut cache) = self.registered.lock() {
            cache.insert(key, id);
        }
        if let Ok(mut cache) = self.by_id.lock() {
            cache.entry(id).or_insert_with(|| RegisteredSchema {
                id,
                schema: schema.to_string(),
                schema_type: None,
            });
        }
        Ok(id)
    }

    /// `GET /subjects/{subject}/versions/latest`; `None` on 404.
    pub async fn latest(&self, subject: &str) -> Result<Option<RegisteredSchema>> {
        let what = format!("fetching the latest schema of subject '{subject}'");
        let (status, body, base) = self
            .send(&what, |base| {
                self.http.get(format!(
                    "{base}/subjects/{}/versions/latest",
                    encode_path_segment(subject)
                ))
            })
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(SluiceError::Connector(format!(
                "schema registry {base}: {what} failed: {}",
                error_text(status, &body)
            )));
        }
        let found = parse_version_response(&body)
            .map_err(|e| SluiceError::Connector(format!("schema registry {base}: {what}: {e}")))?;
        Ok(Some(found))
    }
}

#[async_trait]
impl SchemaRegistry for SchemaRegistryClient {
    async fn schema_by_id(&self, id: u32) -> Result<Option<RegisteredSchema>> {
        SchemaRegistryClient::schema_by_id(self, id).await
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        SchemaRegistryClient::register(self, subject, schema).await
    }

    async fn latest(&self, subject: &str) -> Result<Option<RegisteredSchema>> {
        SchemaRegistryClient::latest(self, subject).await
    }
}

#[derive(Debug, Default)]
struct MemoryState {
    /// Schema text and type by id (id = index + 1).
    schemas: Vec<(String, Option<String>)>,
    /// Ids registered under each subject, oldest first.
    subjects: HashMap<String, Vec<u32>>,
}

/// A schema registry held in memory, with the same ids-and-subjects model as
/// Confluent's (ids start at 1; registering an identical schema again returns
/// its id). For tests and for jobs that need no shared registry.
#[derive(Debug, Default, Clone)]
pub struct InMemorySchemaRegistry {
    state: Arc<Mutex<MemoryState>>,
}

impl InMemorySchemaRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `schema` of `schema_type` (`None` = Avro) under `subject`,
    /// returning its id.
    pub fn add(&self, subject: &str, schema: &str, schema_type: Option<&str>) -> u32 {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let existing = state
            .schemas
            .iter()
            .position(|(text, kind)| text == schema && kind.as_deref() == schema_type);
        let id = match existing {
            Some(index) => index as u32 + 1,
            None => {
                state
                    .schemas
                    .push((schema.to_string(), schema_type.map(str::to_string)));
                state.schemas.len() as u32
            }
        };
        let versions = state.subjects.entry(subject.to_string()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[async_trait]
impl SchemaRegistry for InMemorySchemaRegistry {
    async fn schema_by_id(&self, id: u32) -> Result<Option<RegisteredSchema>> {
        let state = self.lock();
        Ok(id
            .checked_sub(1)
            .and_then(|index| state.schemas.get(index as usize))
            .map(|(schema, schema_type)| RegisteredSchema {
                id,
                schema: schema.clone(),
                schema_type: schema_type.clone(),
            }))
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        Ok(self.add(subject, schema, None))
    }

    async fn latest(&self, subject: &str) -> Result<Option<RegisteredSchema>> {
        let state = self.lock();
        let Some(id) = state.subjects.get(subject).and_then(|v| v.last().copied()) else {
            return Ok(None);
        };
        Ok(state
            .schemas
            .get(id as usize - 1)
            .map(|(schema, schema_type)| RegisteredSchema {
                id,
                schema: schema.clone(),
                schema_type: schema_type.clone(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_shapes_are_confluents() {
        let body = register_request_body(r#"{"type":"record","name":"r","fields":[]}"#);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"schema": "{\"type\":\"record\",\"name\":\"r\",\"fields\":[]}"})
        );
        assert_eq!(parse_register_response(br#"{"id": 42}"#).unwrap(), 42);
        let found = parse_schema_response(7, br#"{"schema": "\"string\""}"#).unwrap();
        assert_eq!(found.schema, "\"string\"");
        assert!(found.is_avro());
        let proto =
            parse_schema_response(7, br#"{"schema": "syntax", "schemaType": "PROTOBUF"}"#).unwrap();
        assert!(!proto.is_avro());
        let latest = parse_version_response(
            br#"{"subject": "t-value", "version": 3, "id": 9, "schema": "\"int\""}"#,
        )
        .unwrap();
        assert_eq!((latest.id, latest.schema.as_str()), (9, "\"int\""));
        assert!(parse_register_response(b"not json").is_err());
    }

    #[test]
    fn subjects_are_path_encoded() {
        assert_eq!(encode_path_segment("orders-value"), "orders-value");
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(percent_decode("p%40ss%3A"), "p@ss:");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn urls_carry_credentials() {
        let client =
            SchemaRegistryClient::new("http://user:p%40ss@localhost:8081/", RegistryAuth::None)
                .unwrap();
        assert_eq!(client.urls(), &["http://localhost:8081".to_string()]);
        assert_eq!(
            client.auth,
            RegistryAuth::Basic {
                user: "user".into(),
                password: "p@ss".into()
            }
        );
        assert!(SchemaRegistryClient::new("localhost:8081", RegistryAuth::None).is_err());
        assert!(SchemaRegistryClient::new(" ", RegistryAuth::None).is_err());
        let two = SchemaRegistryClient::new("http://a:1, http://b:2", RegistryAuth::None).unwrap();
        assert_eq!(two.urls().len(), 2);
    }

    #[tokio::test]
    async fn in_memory_registry_assigns_ids_like_confluent() {
        let registry = InMemorySchemaRegistry::new();
        let a = registry.register("t-value", "\"int\"").await.unwrap();
        let again = registry.register("t-value", "\"int\"").await.unwrap();
        let b = registry.register("t-value", "\"long\"").await.unwrap();
        assert_eq!((a, again, b), (1, 1, 2));
        assert_eq!(registry.latest("t-value").await.unwrap().unwrap().id, 2);
        assert!(registry.latest("other").await.unwrap().is_none());
        assert!(registry.schema_by_id(0).await.unwrap().is_none());
        assert!(registry.schema_by_id(3).await.unwrap().is_none());
        assert_eq!(
            registry.schema_by_id(1).await.unwrap().unwrap().schema,
            "\"int\""
        );
    }
}
