//! The REST API under `/api/v1`, described by the OpenAPI document served at
//! `/api/v1/openapi.json`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use sluice_core::ChangeBatch;
use tokio::sync::broadcast::error::RecvError;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::ingest::IngestReceipt;
use crate::jobs::{
    CheckpointHistory, CheckpointView, DeadLetterFile, DeadLetters, GraphEdge, GraphNode,
    JobDetail, JobGraph, JobMetricsView, JobView, SqlProblem, SqlValidation, SubmitJob,
    ValidateSql,
};
use crate::live::{CheckpointFigures, LivePoint, OperatorFigures, OperatorsView};
use crate::store::{JobEvent, JobRecord};
use crate::AppState;

type AppResult<T> = Result<T, ApiError>;

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice API", description = "Jobs, streams and HTTP ingest of a Sluice server."),
    paths(health, list_jobs, submit_job, get_job, delete_job, stop_job, resume_job, tail_job,
          job_graph, job_operators, job_checkpoints, job_dead_letters, validate_sql,
          list_streams, create_stream, delete_stream, ingest_events),
    components(schemas(ErrorBody, ErrorDetail, Health, JobView, JobRecord, JobMetricsView, JobDetail,
        OperatorsView, OperatorFigures, LivePoint, CheckpointFigures,
                       JobEvent, SubmitJob, StopJob, StreamView, PartitionView, ConsumerView, CreateStream,
                       IngestReceipt, JobGraph, GraphNode, GraphEdge, ValidateSql, SqlValidation,
                       SqlProblem, CheckpointHistory, CheckpointView, DeadLetters, DeadLetterFile)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "jobs", description = "Submit, inspect, stop and resume jobs"),
         (name = "streams", description = "The embedded durable log and HTTP ingest"),
         (name = "sql", description = "Checking SQL scripts"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// The server is up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// Sluice's version.
    pub version: &'static str,
}

/// Liveness; needs no token.
#[utoipa::path(get, path = "/api/v1/health", security(()), responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> AppResult<T> {
    body.map(|Json(value)| value).map_err(|rejection| {
        ApiError::new(rejection.status(), "invalid_request", rejection.body_text())
    })
}

/// Every job.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    responses((status = 200, body = [JobView]), (status = 401, body = ErrorBody)))]
pub async fn list_jobs(State(state): State<Arc<AppState>>) -> AppResult<Json<Vec<JobView>>> {
    Ok(Json(state.jobs.list()?))
}

/// Checks a SQL script and starts it as a new job.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = SubmitJob,
    responses((status = 201, body = JobView), (status = 400, description = "invalid SQL or name", body = ErrorBody),
              (status = 409, description = "a job with that name exists", body = ErrorBody)))]
pub async fn submit_job(
    State(state): State<Arc<AppState>>,
    body: Result<Json<SubmitJob>, JsonRejection>,
) -> AppResult<(StatusCode, Json<JobView>)> {
    let request = json_body(body)?;
    Ok((StatusCode::CREATED, Json(state.jobs.submit(request).await?)))
}

/// A job: status, live figures, operator graph and recent events.
#[utoipa::path(get, path = "/api/v1/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = JobDetail), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> AppResult<Json<JobDetail>> {
    Ok(Json(state.jobs.detail(&name).await?))
}

/// Stops a job if it runs, and deletes it with its checkpoints.
#[utoipa::path(delete, path = "/api/v1/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> AppResult<StatusCode> {
    state.jobs.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How to stop a job.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct StopJob {
    /// Take a savepoint and stop right after it (resume goes on from there);
    /// without, the job drains and a later resume starts it over.
    pub savepoint: bool,
    /// Where to write the savepoint (default `<job dir>/savepoints/...`).
    pub target: Option<String>,
}

/// Stops a running job, with or without a savepoint.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/stop", tag = "jobs", request_body = StopJob,
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody),
              (status = 409, description = "the job is not running", body = ErrorBody)))]
pub async fn stop_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Option<Json<StopJob>>,
) -> AppResult<Json<JobView>> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let savepoint = request
        .savepoint
        .then(|| request.target.unwrap_or_default());
    Ok(Json(state.jobs.stop(&name, savepoint).await?))
}

/// Starts a stopped, finished or failed job again: from its savepoint when
/// it was stopped with one, else from its latest checkpoint.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/resume", tag = "jobs",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody),
              (status = 409, description = "the job is running", body = ErrorBody)))]
pub async fn resume_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> AppResult<Json<JobView>> {
    Ok(Json(state.jobs.resume(&name).await?))
}

/// Which sink to tail.
#[derive(Debug, Deserialize, IntoParams)]
pub struct TailParams {
    /// Only this sink table (default: every sink of the job).
    pub table: Option<String>,
}

/// Live output of a running job's sinks as Server-Sent Events: one `rows`
/// event per batch, `{"table": ..., "rows": [{"op": "+I", "row": {...}}]}`.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/tail", tag = "jobs",
    params(("name" = String, Path, description = "the job's name"), TailParams),
    responses((status = 200, description = "text/event-stream of `rows` events"),
              (status = 409, description = "the job is not running", body = ErrorBody)))]
pub async fn tail_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(params): Query<TailParams>,
) -> AppResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let receiver = state.jobs.tap(&name)?.subscribe();
    let events = futures::stream::unfold(
        (receiver, params.table),
        |(mut receiver, table)| async move {
            loop {
                let event = match receiver.recv().await {
                    Ok((sink, _)) if table.as_ref().is_some_and(|t| t != &sink) => continue,
                    Ok((sink, batch)) => Event::default()
                        .event("rows")
                        .data(rows_json(&sink, &batch)),
                    Err(RecvError::Lagged(missed)) => Event::default()
                        .event("lagged")
                        .data(format!("{{\"missed_batches\":{missed}}}")),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (receiver, table)));
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// A batch as `{"table", "rows": [{"op", "row"}]}`.
fn rows_json(table: &str, batch: &ChangeBatch) -> String {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    let rows: Vec<serde_json::Value> = match writer.write(&batch.data).and_then(|_| writer.finish())
    {
        Ok(()) => serde_json::from_slice(&writer.into_inner()).unwrap_or_default(),
        Err(error) => {
            return serde_json::json!({"table": table, "error": error.to_string()}).to_string()
        }
    };
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| serde_json::json!({"op": batch.kind(i).short_string(), "row": row}))
        .collect();
    serde_json::json!({"table": table, "rows": rows}).to_string()
}

/// The operator graph of a job's plan: nodes (sources, operators, sinks)
/// and the edges between them. While the job runs, each node carries its
/// records per second and backpressure over the last second.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/graph", tag = "jobs",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = JobGraph), (status = 404, body = ErrorBody),
              (status = 400, description = "the job's SQL no longer plans", body = ErrorBody)))]
pub async fn job_graph(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> AppResult<Json<JobGraph>> {
    Ok(Json(state.jobs.graph(&name).await?))
}

/// Per-operator figures of a running job (summed over subtasks): records
/// in and out with rates, bytes, batches, backpressure, watermark and
/// event-time lag, processing-time quantiles and state size; a five-minute
/// history of job-wide figures; checkpoint figures. Empty when it is not running.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/operators", tag = "jobs",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = OperatorsView), (status = 404, body = ErrorBody)))]
pub async fn job_operators(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> AppResult<Json<OperatorsView>> {
    Ok(Json(state.jobs.operators(&name)?))
}

/// The job's retained checkpoints, newest first.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/checkpoints", tag = "jobs",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = CheckpointHistory), (status = 404, body = ErrorBody)))]
pub async fn job_checkpoints(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> AppResult<Json<CheckpointHistory>> {
    Ok(Json(state.jobs.checkpoints(&name).await?))
}

/// How many dead letters to return.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeadLetterParams {
    /// At most this many records (default 50, at most 500).
    pub limit: Option<usize>,
}

/// The latest records the job's sources or windows dead-lettered
/// (`'errors' = 'dlq'`, `table.exec.late-data` = `dlq`), newest first.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/dead-letters", tag = "jobs",
    params(("name" = String, Path, description = "the job's name"), DeadLetterParams),
    responses((status = 200, body = DeadLetters), (status = 404, body = ErrorBody)))]
pub async fn job_dead_letters(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(params): Query<DeadLetterParams>,
) -> AppResult<Json<DeadLetters>> {
    let limit = params.limit.unwrap_or(50).min(500);
    Ok(Json(state.jobs.dead_letters(&name, limit).await?))
}

/// Plans a script without running it: whether it is valid, the planner's
/// error with its line and column, or the operator graph it plans to.
#[utoipa::path(post, path = "/api/v1/sql/validate", tag = "sql", request_body = ValidateSql,
    responses((status = 200, body = SqlValidation), (status = 400, body = ErrorBody)))]
pub async fn validate_sql(
    State(state): State<Arc<AppState>>,
    body: Result<Json<ValidateSql>, JsonRejection>,
) -> AppResult<Json<SqlValidation>> {
    let request = json_body(body)?;
    Ok(Json(state.jobs.validate(request).await))
}

/// A stream of the embedded log.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamView {
    /// Its name.
    pub name: String,
    /// Its partitions.
    pub partitions: Vec<PartitionView>,
    /// Events appended by HTTP ingest since the server started.
    pub ingested_events: u64,
    /// Jobs that read it, with how far their latest checkpoint got.
    pub consumers: Vec<ConsumerView>,
}

/// A job reading a stream, as of its latest checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumerView {
    /// The job.
    pub job: String,
    /// Next offset to read per partition, as committed by the checkpoint.
    pub committed_offsets: std::collections::BTreeMap<u32, u64>,
    /// Records appended beyond the committed offsets, over all partitions
    /// (partitions without a committed offset count from their start).
    pub lag: u64,
}

/// The committed lag of each job that read `info`'s stream.
pub fn consumer_lag(
    info: &sluice_log::StreamInfo,
    jobs: std::collections::BTreeMap<String, crate::jobs::CommittedOffsets>,
) -> Vec<ConsumerView> {
    jobs.into_iter()
        .map(|(job, committed_offsets)| {
            let lag = info
                .partitions
                .iter()
                .map(|p| {
                    let read = committed_offsets
                        .get(&p.partition)
                        .copied()
                        .unwrap_or(p.start_offset)
                        .max(p.start_offset);
                    p.end_offset.saturating_sub(read)
                })
                .sum();
            ConsumerView {
                job,
                committed_offsets,
                lag,
            }
        })
        .collect()
}

/// One partition of a stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionView {
    /// Partition number.
    pub partition: u32,
    /// Oldest offset still kept.
    pub start_offset: u64,
    /// Next offset to be written.
    pub end_offset: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// The streams of the embedded log.
#[utoipa::path(get, path = "/api/v1/streams", tag = "streams", responses((status = 200, body = [StreamView])))]
pub async fn list_streams(State(state): State<Arc<AppState>>) -> Json<Vec<StreamView>> {
    let mut committed = state.jobs.committed_stream_offsets().await;
    let streams = state
        .log
        .streams()
        .into_iter()
        .map(|info| StreamView {
            consumers: consumer_lag(&info, committed.remove(&info.name).unwrap_or_default()),
            ingested_events: state
                .ingest
                .counters(&info.name)
                .events
                .load(std::sync::atomic::Ordering::Relaxed),
            partitions: info
                .partitions
                .iter()
                .map(|p| PartitionView {
                    partition: p.partition,
                    start_offset: p.start_offset,
                    end_offset: p.end_offset,
                    bytes: p.bytes,
                })
                .collect(),
            name: info.name,
        })
        .collect();
    Json(streams)
}

/// A stream to create.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateStream {
    /// Partitions (default: the server's `streams.partitions`).
    pub partitions: Option<u32>,
}

/// Creates a stream (ingest also creates streams on first use).
#[utoipa::path(put, path = "/api/v1/streams/{name}", tag = "streams", request_body = CreateStream,
    params(("name" = String, Path, description = "the stream's name")),
    responses((status = 201, description = "created (or already there with these partitions)"),
              (status = 400, body = ErrorBody)))]
pub async fn create_stream(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Json<CreateStream>, JsonRejection>,
) -> AppResult<StatusCode> {
    let partitions = json_body(body)?
        .partitions
        .unwrap_or(state.config.streams.partitions);
    state
        .log
        .create_stream(&name, partitions)
        .map_err(|e| ApiError::bad_request("invalid_stream", e.to_string()))?;
    Ok(StatusCode::CREATED)
}

/// Deletes a stream and its data.
#[utoipa::path(delete, path = "/api/v1/streams/{name}", tag = "streams",
    params(("name" = String, Path, description = "the stream's name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_stream(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> AppResult<StatusCode> {
    match state.log.delete_stream(&name) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(
            "stream_not_found",
            format!("no stream named '{name}'"),
        )),
        Err(error) => Err(ApiError::internal(error.to_string())),
    }
}

/// How to partition ingested events.
#[derive(Debug, Deserialize, IntoParams)]
pub struct IngestParams {
    /// Partition by this field's value (default: round robin per request).
    pub key: Option<String>,
}

/// Appends events (a JSON object, a JSON array of objects, or NDJSON) to a
/// stream, creating it on first use; answers once they are durable.
#[utoipa::path(post, path = "/api/v1/streams/{name}/events", tag = "streams",
    params(("name" = String, Path, description = "the stream's name"), IngestParams),
    request_body(content = String, description = "JSON object, JSON array or NDJSON",
                 content_type = "application/json"),
    responses((status = 200, body = IngestReceipt),
              (status = 400, description = "invalid events (the line or element is named)", body = ErrorBody),
              (status = 413, description = "the request is over the size limit", body = ErrorBody),
              (status = 429, description = "over the stream's rate limit; see Retry-After", body = ErrorBody)))]
#[tracing::instrument(name = "ingest", skip_all, fields(stream = %name, events = tracing::field::Empty))]
pub async fn ingest_events(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(params): Query<IngestParams>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<IngestReceipt>> {
    let body = body.map_err(|rejection| {
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(
            rejection.status(),
            code,
            format!(
                "{} (the limit is {} bytes: ingest.max_request_bytes)",
                rejection.body_text(),
                state.config.ingest.max_request_bytes
            ),
        )
    })?;
    let stream = state
        .log
        .get_or_create(&name)
        .map_err(|e| ApiError::bad_request("invalid_stream", e.to_string()))?;
    let receipt = state
        .ingest
        .append(&stream, &body, params.key.as_deref())
        .await?;
    tracing::Span::current().record("events", receipt.accepted);
    Ok(Json(receipt))
}

/// Unknown `/api` routes answer JSON too.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such API route")
}
