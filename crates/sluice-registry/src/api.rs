//! The HTTP API: Confluent's paths, JSON shapes, status codes and error codes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::compat::CompatibilityLevel;
use crate::error::RegistryError;
use crate::schema::{SchemaRequest, SchemaType, StoredSchema};
use crate::store::{Registry, SubjectVersion, VersionSpec};

/// The content type of every response, as Confluent's.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type ApiResult = Result<Response, RegistryError>;
type Params = Query<HashMap<String, String>>;

/// The registry's routes, ready to serve or to nest under a prefix.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_versions))
        .route("/schemas/ids/{id}/subjects", get(schema_subjects))
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_version),
        )
        .route("/mode", get(mode))
        .fallback(|| async { RegistryError::NotFound })
        .method_not_allowed_fallback(|| async { RegistryError::MethodNotAllowed })
        .with_state(registry)
}

/// A JSON response with the registry's content type.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    text_response(status, body.to_string())
}

fn text_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

fn ok(body: Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, &body))
}

/// Runs a store operation off the async workers (SQLite blocks).
async fn blocking<T: Send + 'static>(
    registry: &Registry,
    operation: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || operation(&registry))
        .await
        .map_err(|error| RegistryError::Internal(error.to_string()))?
}

/// A boolean query parameter; Confluent's clients send `true`/`false` in
/// any case (the Python client sends `True`/`False`).
fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// Applies `offset` and `limit` (negative: no limit) to a list.
fn page<T>(items: Vec<T>, params: &HashMap<String, String>) -> Vec<T> {
    let offset = params
        .get("offset")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = params
        .get("limit")
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|limit| *limit >= 0)
        .map(|limit| limit as usize)
        .unwrap_or(usize::MAX);
    items.into_iter().skip(offset).take(limit).collect()
}

fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, RegistryError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let media_type = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let accepted = media_type == "application/json"
            || media_type == "application/octet-stream"
            || (media_type.starts_with("application/") && media_type.ends_with("+json"));
        if !accepted {
            return Err(RegistryError::UnsupportedMediaType);
        }
    }
    serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            RegistryError::UnprocessableEntity(error.to_string())
        } else {
            RegistryError::BadRequest(error.to_string())
        }
    })
}

fn schema_request(headers: &HeaderMap, body: &Bytes) -> Result<SchemaRequest, RegistryError> {
    parse_body(headers, body)
}

fn parse_id(text: &str) -> Result<i64, RegistryError> {
    text.parse::<i64>().map_err(|_| RegistryError::NotFound)
}

/// `schemaType` and `references` as Confluent writes them: left out for
/// AVRO and for no references.
fn add_schema_fields(object: &mut Map<String, Value>, schema: &StoredSchema) {
    if schema.schema_type != SchemaType::Avro {
        object.insert("schemaType".into(), json!(schema.schema_type.as_str()));
    }
    if !schema.references.is_empty() {
        object.insert("references".into(), json!(schema.references));
    }
}

fn subject_version_json(found: &SubjectVersion) -> Value {
    let mut object = Map::new();
    object.insert("subject".into(), json!(found.subject));
    object.insert("version".into(), json!(found.version));
    object.insert("id".into(), json!(found.schema.id));
    add_schema_fields(&mut object, &found.schema);
    object.insert("schema".into(), json!(found.schema.schema));
    Value::Object(object)
}

async fn root() -> ApiResult {
    ok(json!({}))
}

async fn list_subjects(State(registry): State<Registry>, Query(params): Params) -> ApiResult {
    let deleted = flag(&params, "deleted");
    let prefix = params.get("subjectPrefix").cloned();
    let subjects = blocking(&registry, move |r| r.subjects(deleted, prefix.as_deref())).await?;
    ok(json!(page(subjects, &params)))
}

async fn list_versions(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let deleted = flag(&params, "deleted");
    let versions = blocking(&registry, move |r| r.versions(&subject, deleted)).await?;
    ok(json!(page(versions, &params)))
}

async fn get_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let version = VersionSpec::parse(&version)?;
    let deleted = flag(&params, "deleted");
    let found = blocking(&registry, move |r| {
        r.subject_version(&subject, version, deleted)
    })
    .await?;
    ok(subject_version_json(&found))
}

async fn get_version_schema(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let version = VersionSpec::parse(&version)?;
    let deleted = flag(&params, "deleted");
    let found = blocking(&registry, move |r| {
        r.subject_version(&subject, version, deleted)
    })
    .await?;
    Ok(text_response(StatusCode::OK, found.schema.schema))
}

async fn referenced_by(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let version = VersionSpec::parse(&version)?;
    let ids = blocking(&registry, move |r| r.referenced_by(&subject, version)).await?;
    ok(json!(ids))
}

async fn register(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let request = schema_request(&headers, &body)?;
    let id = blocking(&registry, move |r| r.register(&subject, &request)).await?;
    ok(json!({ "id": id }))
}

async fn lookup(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let request = schema_request(&headers, &body)?;
    let deleted = flag(&params, "deleted");
    let found = blocking(&registry, move |r| r.lookup(&subject, &request, deleted)).await?;
    ok(subject_version_json(&found))
}

async fn delete_subject(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let permanent = flag(&params, "permanent");
    let versions = blocking(&registry, move |r| r.delete_subject(&subject, permanent)).await?;
    ok(json!(versions))
}

async fn delete_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let version = VersionSpec::parse(&version)?;
    let permanent = flag(&params, "permanent");
    let deleted = blocking(&registry, move |r| {
        r.delete_version(&subject, version, permanent)
    })
    .await?;
    ok(json!(deleted))
}

async fn schema_types() -> ApiResult {
    ok(json!(["JSON", "PROTOBUF", "AVRO"]))
}

async fn schema_by_id(State(registry): State<Registry>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let schema = blocking(&registry, move |r| r.schema_by_id(id)).await?;
    let mut object = Map::new();
    object.insert("schema".into(), json!(schema.schema));
    add_schema_fields(&mut object, &schema);
    ok(Value::Object(object))
}

async fn raw_schema_by_id(State(registry): State<Registry>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let schema = blocking(&registry, move |r| r.schema_by_id(id)).await?;
    Ok(text_response(StatusCode::OK, schema.schema))
}

async fn schema_versions(
    State(registry): State<Registry>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let id = parse_id(&id)?;
    let deleted = flag(&params, "deleted");
    let subject = params.get("subject").cloned();
    let versions = blocking(&registry, move |r| r.schema_versions(id, deleted)).await?;
    let versions: Vec<Value> = versions
        .into_iter()
        .filter(|(s, _)| subject.as_ref().is_none_or(|wanted| wanted == s))
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    ok(json!(page(versions, &params)))
}

async fn schema_subjects(
    State(registry): State<Registry>,
    Path(id): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let id = parse_id(&id)?;
    let deleted = flag(&params, "deleted");
    let subject = params.get("subject").cloned();
    let subjects = blocking(&registry, move |r| r.schema_subjects(id, deleted)).await?;
    let subjects: Vec<String> = subjects
        .into_iter()
        .filter(|s| subject.as_ref().is_none_or(|wanted| wanted == s))
        .collect();
    ok(json!(page(subjects, &params)))
}

/// `{"compatibility": "FULL"}` (also accepts `compatibilityLevel`).
fn level_from_body(headers: &HeaderMap, body: &Bytes) -> Result<CompatibilityLevel, RegistryError> {
    let value: Value = parse_body(headers, body)?;
    let text = value
        .get("compatibility")
        .or_else(|| value.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .ok_or(RegistryError::InvalidCompatibilityLevel)?;
    CompatibilityLevel::parse(text)
}

async fn get_global_config(State(registry): State<Registry>) -> ApiResult {
    let level = blocking(&registry, |r| r.global_compatibility()).await?;
    ok(json!({ "compatibilityLevel": level.as_str() }))
}

async fn put_global_config(
    State(registry): State<Registry>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let level = level_from_body(&headers, &body)?;
    blocking(&registry, move |r| r.set_global_compatibility(level)).await?;
    ok(json!({ "compatibility": level.as_str() }))
}

async fn delete_global_config(State(registry): State<Registry>) -> ApiResult {
    let previous = blocking(&registry, |r| r.delete_global_compatibility()).await?;
    ok(json!({ "compatibilityLevel": previous.as_str() }))
}

async fn get_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let default_to_global = flag(&params, "defaultToGlobal");
    let level = blocking(&registry, move |r| {
        match r.subject_compatibility(&subject)? {
            Some(level) => Ok(level),
            None if default_to_global => r.global_compatibility(),
            None => Err(RegistryError::SubjectCompatibilityNotConfigured(subject)),
        }
    })
    .await?;
    ok(json!({ "compatibilityLevel": level.as_str() }))
}

async fn put_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let level = level_from_body(&headers, &body)?;
    blocking(&registry, move |r| {
        r.set_subject_compatibility(&subject, level)
    })
    .await?;
    ok(json!({ "compatibility": level.as_str() }))
}

async fn delete_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> ApiResult {
    let previous = blocking(&registry, move |r| r.delete_subject_compatibility(&subject)).await?;
    ok(json!({ "compatibilityLevel": previous.as_str() }))
}

fn compatibility_response(messages: Vec<String>, params: &HashMap<String, String>) -> ApiResult {
    let mut object = Map::new();
    object.insert("is_compatible".into(), json!(messages.is_empty()));
    if flag(params, "verbose") {
        object.insert("messages".into(), json!(messages));
    }
    ok(Value::Object(object))
}

async fn compatibility_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let version = VersionSpec::parse(&version)?;
    let request = schema_request(&headers, &body)?;
    let messages = blocking(&registry, move |r| {
        r.test_compatibility(&subject, Some(version), &request)
    })
    .await?;
    compatibility_response(messages, &params)
}

async fn compatibility_all(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let request = schema_request(&headers, &body)?;
    let messages = blocking(&registry, move |r| {
        r.test_compatibility(&subject, None, &request)
    })
    .await?;
    compatibility_response(messages, &params)
}

async fn mode() -> ApiResult {
    ok(json!({ "mode": "READWRITE" }))
}
