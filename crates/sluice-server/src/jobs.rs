//! The jobs a server hosts: submitted SQL scripts planned and run in this
//! process under supervision (checkpoints, restarts), their state kept in
//! the metadata store so every job that was running resumes when the server
//! starts again.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_core::connector::ConnectorRegistry;
use sluice_runtime::supervisor::{run_supervised, take_savepoint, StartOptions};
use sluice_runtime::ProgressReport;
use sluice_sql::{JobPlan, PlanNode};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::live::{spawn_sampler, LiveFigures, NodeInfo, OperatorFigures, OperatorsView};
use crate::store::{JobEvent, JobRecord, MetadataStore};
use crate::tap::JobTap;

/// Status of a job the server is stopping with a savepoint to shut down;
/// it resumes on the next start.
const SUSPENDING: &str = "suspending";

/// How long a stop-with-savepoint may take.
const SAVEPOINT_TIMEOUT: Duration = Duration::from_secs(120);

/// A submission: `POST /api/v1/jobs`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitJob {
    /// The job's name: letters, digits, `-` and `_`, unique on this server.
    pub name: String,
    /// The SQL script (Flink SQL: `CREATE TABLE`, `SET`, `INSERT INTO`).
    pub sql: String,
    /// Subtasks per operator (default: the script's `parallelism.default`).
    pub parallelism: Option<u32>,
}

/// A job with what it is doing now.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// As stored.
    #[serde(flatten)]
    pub record: JobRecord,
    /// Live figures while it runs.
    pub metrics: Option<JobMetricsView>,
}

/// A running job's live figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobMetricsView {
    /// Seconds since this run started.
    pub uptime_seconds: f64,
    /// Rows its sources have read in this run.
    pub rows_read: u64,
    /// Rows written per sink table in this run.
    pub rows_written: BTreeMap<String, u64>,
    /// Mean rows read per second over this run.
    pub rows_per_second: f64,
}

/// A job with its plan and recent events: `GET /api/v1/jobs/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    /// The job.
    #[serde(flatten)]
    pub job: JobView,
    /// The operator graph (`sluice run --explain`).
    pub plan: Option<String>,
    /// The latest events, oldest first (starts, stops, errors with times).
    pub events: Vec<JobEvent>,
    /// Per-operator figures while it runs (see `GET .../operators`).
    pub operators: Vec<OperatorFigures>,
}

/// What one run of a job shares with the server while it runs.
struct RunningJob {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    started: Instant,
    rows_read: Arc<AtomicU64>,
    tap: Arc<JobTap>,
    data_dir: PathBuf,
    /// Per-operator figures, sampled by `sampler`.
    live: Arc<LiveFigures>,
    sampler: JoinHandle<()>,
    /// The plan it runs (its sources' bad-record counters).
    plan: Arc<JobPlan>,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

/// Hosts jobs.
pub struct JobManager {
    store: Arc<MetadataStore>,
    jobs_dir: PathBuf,
    connectors: ConnectorRegistry,
    running: Mutex<HashMap<String, RunningJob>>,
}

impl JobManager {
    /// A manager keeping job data under `jobs_dir` and planning with `connectors`.
    pub fn new(
        store: Arc<MetadataStore>,
        jobs_dir: PathBuf,
        connectors: ConnectorRegistry,
    ) -> Self {
        JobManager {
            store,
            jobs_dir,
            connectors,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningJob>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts every job that was running when the server last stopped.
    pub async fn resume_all(self: &Arc<Self>) {
        let jobs = match self.store.jobs() {
            Ok(jobs) => jobs,
            Err(error) => {
                warn!("cannot list jobs to resume: {error}");
                return;
            }
        };
        // `suspending`: the server died while stopping it for a shutdown.
        for job in jobs
            .into_iter()
            .filter(|job| job.status == "running" || job.status == SUSPENDING)
        {
            info!(job = %job.name, "resuming job");
            let start = StartOptions {
                fresh: false,
                from_savepoint: job.savepoint.clone(),
                ..StartOptions::default()
            };
            if let Err(error) = self.start(&job, start).await {
                self.fail(&job.name, &error.message);
            }
        }
    }

    /// Plans `sql` as the job `name` would run it.
    async fn plan(
        &self,
        name: &str,
        sql: &str,
        parallelism: Option<u32>,
        tap: &Arc<JobTap>,
    ) -> Result<JobPlan, ApiError> {
        let mut overrides = BTreeMap::new();
        overrides.insert("pipeline.name".to_string(), name.to_string());
        overrides.insert(
            "sluice.data-dir".to_string(),
            self.jobs_dir.join(name).display().to_string(),
        );
        if let Some(parallelism) = parallelism {
            overrides.insert("parallelism.default".to_string(), parallelism.to_string());
        }
        let registry = tap.wrap(&self.connectors);
        sluice_sql::plan_script(sql, name, &registry, &overrides)
            .await
            .map_err(|error| ApiError::bad_request("invalid_sql", error.to_string()))
    }

    /// Checks, stores and starts a new job.
    #[tracing::instrument(name = "job.submit", skip_all, fields(job = %request.name))]
    pub async fn submit(self: &Arc<Self>, request: SubmitJob) -> Result<JobView, ApiError> {
        validate_name(&request.name)?;
        if request.parallelism == Some(0) {
            return Err(ApiError::bad_request(
                "invalid_parallelism",
                "parallelism must be at least 1",
            ));
        }
        self.plan(
            &request.name,
            &request.sql,
            request.parallelism,
            &Arc::default(),
        )
        .await?;
        let inserted = self
            .store
            .insert_job(&request.name, &request.sql, request.parallelism)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !inserted {
            return Err(ApiError::conflict(
                "job_exists",
                format!(
                    "a job named '{}' exists; delete it first or pick another name",
                    request.name
                ),
            ));
        }
        let record = self.record(&request.name)?;
        self.start(
            &record,
            StartOptions {
                fresh: true,
                ..StartOptions::default()
            },
        )
        .await?;
        self.view(&request.name)
    }

    /// Starts a run of `record` in the background.
    async fn start(
        self: &Arc<Self>,
        record: &JobRecord,
        start: StartOptions,
    ) -> Result<(), ApiError> {
        if self.running().contains_key(&record.name) {
            return Err(ApiError::conflict(
                "job_running",
                format!("job '{}' is running", record.name),
            ));
        }
        let tap = Arc::new(JobTap::default());
        let plan = Arc::new(
            self.plan(&record.name, &record.sql, record.parallelism, &tap)
                .await?,
        );
        let nodes = JobGraph::of(&plan)
            .nodes
            .into_iter()
            .map(|node| NodeInfo {
                kind: node.kind,
                label: node.label,
            })
            .collect();
        let live = Arc::new(LiveFigures::new(start.metrics.clone(), nodes));
        let (stop, stop_signal) = watch::channel(false);
        let rows_read = Arc::new(AtomicU64::new(0));
        let name = record.name.clone();
        let manager = self.clone();
        let counter = rows_read.clone();
        let message = match &start.from_savepoint {
            Some(savepoint) => format!("started from savepoint {savepoint}"),
            None if start.fresh => "started".to_string(),
            None => "started (resuming from its latest checkpoint, if any)".to_string(),
        };
        let data_dir = plan.settings.data_dir.clone();
        let job_plan = plan.clone();
        let mut running = self.running();
        // Checked again under the lock: another request may have started
        // the job while this one was planning.
        if running.contains_key(&record.name) {
            return Err(ApiError::conflict(
                "job_running",
                format!("job '{}' is running", record.name),
            ));
        }
        self.set_state(&record.name, "running", "running", None)?;
        self.event(&record.name, "info", &message);
        let handle = tokio::spawn(
            async move {
                let progress = || -> Option<(Duration, ProgressReport)> {
                    let counter = counter.clone();
                    let report: ProgressReport =
                        Box::new(move |rows| counter.store(rows, Ordering::Relaxed));
                    Some((Duration::from_millis(500), report))
                };
                let outcome = run_supervised(&plan, &start, stop_signal, progress).await;
                manager.finished(&name, outcome.map(|_| ()).map_err(|e| e.to_string()));
            }
            .instrument(job_span(&record.name)),
        );
        running.insert(
            record.name.clone(),
            RunningJob {
                stop,
                handle,
                started: Instant::now(),
                rows_read,
                tap,
                data_dir,
                sampler: spawn_sampler(live.clone()),
                live,
                plan: job_plan,
            },
        );
        Ok(())
    }

    /// Records how a run ended.
    fn finished(&self, name: &str, outcome: Result<(), String>) {
        self.running().remove(name);
        let Ok(Some(record)) = self.store.job(name) else {
            return; // deleted meanwhile
        };
        match outcome {
            Err(error) => self.fail(name, &error),
            Ok(()) if record.desired == "stopped" => {
                let _ = self.store.set_status(name, "stopped");
                self.event(name, "info", "stopped");
            }
            Ok(()) if record.status == SUSPENDING => {
                // Stopped with a savepoint for a server shutdown: resumes on restart.
            }
            Ok(()) => {
                let _ = self.store.set_status(name, "finished");
                self.event(name, "info", "finished: its input ended");
            }
        }
    }

    fn fail(&self, name: &str, error: &str) {
        warn!(job = name, "job failed: {error}");
        let _ = self.store.set_status(name, "failed");
        self.event(name, "error", &format!("failed: {error}"));
    }

    fn event(&self, name: &str, level: &str, message: &str) {
        if let Err(error) = self.store.add_event(name, level, message) {
            warn!(job = name, "cannot record job event: {error}");
        }
    }

    fn set_state(
        &self,
        name: &str,
        desired: &str,
        status: &str,
        savepoint: Option<&str>,
    ) -> Result<(), ApiError> {
        self.store
            .set_state(name, desired, status, savepoint)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    fn record(&self, name: &str) -> Result<JobRecord, ApiError> {
        self.store
            .job(name)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::not_found("job_not_found", format!("no job named '{name}'")))
    }

    /// A job with its live figures.
    pub fn view(&self, name: &str) -> Result<JobView, ApiError> {
        let record = self.record(name)?;
        Ok(JobView {
            metrics: self.metrics(name),
            record,
        })
    }

    /// Every job.
    pub fn list(&self) -> Result<Vec<JobView>, ApiError> {
        let records = self
            .store
            .jobs()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(records
            .into_iter()
            .map(|record| JobView {
                metrics: self.metrics(&record.name),
                record,
            })
            .collect())
    }

    /// A job with its plan and events.
    pub async fn detail(&self, name: &str) -> Result<JobDetail, ApiError> {
        let job = self.view(name)?;
        let plan = self
            .plan(
                name,
                &job.record.sql,
                job.record.parallelism,
                &Arc::default(),
            )
            .await
            .ok()
            .map(|plan| plan.explain());
        let events = self
            .store
            .events(name, 50)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let operators = self
            .live(name)
            .map(|live| live.view().operators)
            .unwrap_or_default();
        Ok(JobDetail {
            job,
            plan,
            events,
            operators,
        })
    }

    /// Live figures of a running job.
    pub fn metrics(&self, name: &str) -> Option<JobMetricsView> {
        let running = self.running();
        let job = running.get(name)?;
        let uptime = job.started.elapsed().as_secs_f64();
        let rows_read = job.rows_read.load(Ordering::Relaxed);
        Some(JobMetricsView {
            uptime_seconds: uptime,
            rows_read,
            rows_written: job.tap.rows_written(),
            rows_per_second: if uptime > 0.0 {
                rows_read as f64 / uptime
            } else {
                0.0
            },
        })
    }

    /// Live figures of every running job.
    pub fn all_metrics(&self) -> Vec<(String, JobMetricsView)> {
        let names: Vec<String> = self.running().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|name| self.metrics(&name).map(|m| (name, m)))
            .collect()
    }

    /// The live feed of a running job's sinks.
    pub fn tap(&self, name: &str) -> Result<Arc<JobTap>, ApiError> {
        self.record(name)?;
        self.running()
            .get(name)
            .map(|job| job.tap.clone())
            .ok_or_else(|| {
                ApiError::conflict("job_not_running", format!("job '{name}' is not running"))
            })
    }

    /// Stops a job: drains it (`savepoint: None`), or takes a savepoint at
    /// `savepoint` and stops right after it, so `resume` goes on from there.
    #[tracing::instrument(name = "job.stop", skip_all, fields(job = %name, savepoint = savepoint.is_some()))]
    pub async fn stop(&self, name: &str, savepoint: Option<String>) -> Result<JobView, ApiError> {
        self.record(name)?;
        let (stop, data_dir) = {
            let running = self.running();
            let job = running.get(name).ok_or_else(|| {
                ApiError::conflict("job_not_running", format!("job '{name}' is not running"))
            })?;
            (job.stop.clone(), job.data_dir.clone())
        };
        match savepoint {
            Some(target) => {
                let target = if target.is_empty() {
                    data_dir
                        .join("savepoints")
                        .join(format!(
                            "savepoint-{}",
                            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
                        ))
                        .display()
                        .to_string()
                } else {
                    target
                };
                self.set_state(name, "stopped", "stopping", None)?;
                let taken = take_savepoint(&data_dir, &target, true, SAVEPOINT_TIMEOUT)
                    .await
                    .map_err(|e| {
                        ApiError::new(
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "savepoint_failed",
                            e.to_string(),
                        )
                    })?;
                self.set_state(name, "stopped", "stopped", Some(&taken.location))?;
                self.event(
                    name,
                    "info",
                    &format!("savepoint {} taken at {}", taken.checkpoint, taken.location),
                );
            }
            None => {
                self.set_state(name, "stopped", "stopping", None)?;
                let _ = stop.send(true);
            }
        }
        self.wait_stopped(name).await;
        self.view(name)
    }

    /// Waits until the run of `name` has ended.
    async fn wait_stopped(&self, name: &str) {
        loop {
            let finished = self
                .running()
                .get(name)
                .is_none_or(|job| job.handle.is_finished());
            if finished {
                // `finished` removes the entry right after the task ends.
                for _ in 0..100 {
                    if !self.running().contains_key(name) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a stopped, finished or failed job again: from its savepoint if
    /// it was stopped with one, else from its latest checkpoint.
    #[tracing::instrument(name = "job.resume", skip_all, fields(job = %name))]
    pub async fn resume(self: &Arc<Self>, name: &str) -> Result<JobView, ApiError> {
        let record = self.record(name)?;
        let start = StartOptions {
            fresh: false,
            from_savepoint: record.savepoint.clone(),
            ..StartOptions::default()
        };
        self.start(&record, start).await?;
        self.view(name)
    }

    /// Stops a job if it runs and deletes it with its data.
    #[tracing::instrument(name = "job.delete", skip_all, fields(job = %name))]
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        self.record(name)?;
        let stop = self.running().get(name).map(|job| job.stop.clone());
        if let Some(stop) = stop {
            self.set_state(name, "stopped", "stopping", None)?;
            let _ = stop.send(true);
            self.wait_stopped(name).await;
        }
        self.store
            .delete_job(name)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let dir = self.jobs_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ApiError::internal(format!("deleting '{}': {e}", dir.display())))?;
        }
        Ok(())
    }

    /// Server shutdown: stops every running job with a savepoint, leaving it
    /// marked running so the next start resumes it from there. A job whose
    /// savepoint fails is left to resume from its latest checkpoint.
    pub async fn shutdown(&self) {
        let jobs: Vec<(String, PathBuf)> = self
            .running()
            .iter()
            .map(|(name, job)| (name.clone(), job.data_dir.clone()))
            .collect();
        for (name, data_dir) in jobs {
            let _ = self.store.set_status(&name, SUSPENDING);
            let target = data_dir.join("savepoints").join(format!(
                "shutdown-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
            ));
            match take_savepoint(
                &data_dir,
                &target.display().to_string(),
                true,
                SAVEPOINT_TIMEOUT,
            )
            .await
            {
                Ok(taken) => {
                    let _ =
                        self.store
                            .set_state(&name, "running", "running", Some(&taken.location));
                    self.event(
                        &name,
                        "info",
                        &format!("server shutdown: savepoint {} taken", taken.checkpoint),
                    );
                    self.wait_stopped(&name).await;
                }
                Err(error) => {
                    // Without a savepoint, draining would end the job for
                    // good; abort it instead, as a crash would.
                    warn!(job = %name, "savepoint at shutdown failed ({error}); the job resumes from its latest checkpoint");
                    let _ = self.store.set_state(&name, "running", "running", None);
                    if let Some(job) = self.running().remove(&name) {
                        job.handle.abort();
                    }
                }
            }
        }
    }
}

/// The span of one run of a job: a root span (a child would keep the API
/// request that started the job open for as long as the job runs), linked to
/// the request's span.
fn job_span(name: &str) -> tracing::Span {
    let span = tracing::info_span!(parent: None, "job", job = %name);
    span.follows_from(tracing::Span::current());
    span
}

/// Job names become directory names and URL segments.
fn validate_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            format!("job name '{name}': use 1 to 100 letters, digits, '-' or '_'"),
        ))
    }
}

/// The operator graph of a job's plan: `GET /api/v1/jobs/{name}/graph`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobGraph {
    /// Subtasks per operator.
    pub parallelism: usize,
    /// Whether every source is bounded (the job ends by itself).
    pub bounded: bool,
    /// The operators; a node's inputs come before it.
    pub nodes: Vec<GraphNode>,
    /// Data flowing from one operator to another.
    pub edges: Vec<GraphEdge>,
}

/// One operator of a [`JobGraph`].
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphNode {
    /// Index in the plan; edges refer to it.
    pub id: usize,
    /// `source`, `project`, `filter`, `watermark`, `window_assign`,
    /// `window_aggregate`, `group_aggregate`, `join`, `top_n`,
    /// `over_aggregate`, `union` or `sink`.
    pub kind: String,
    /// A short label: the table of a source or sink, else what it computes.
    pub label: String,
    /// The node as `sluice run --explain` describes it.
    pub detail: String,
    /// The table a source reads or a sink writes.
    pub table: Option<String>,
    /// Subtasks running it.
    pub parallelism: usize,
    /// The columns of its output rows, in order.
    pub columns: Vec<String>,
    /// Records per second it emitted (a sink: received) over the last
    /// second; null while the job is not running.
    pub records_per_second: Option<f64>,
    /// Share of the last second (0 to 1) its busiest subtask waited on a
    /// full channel to the next task; null while the job is not running.
    pub backpressure: Option<f64>,
}

/// An edge of a [`JobGraph`]: `from` feeds `to`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEdge {
    /// The upstream node's id.
    pub from: usize,
    /// The downstream node's id.
    pub to: usize,
}

impl JobGraph {
    /// The graph of `plan`.
    pub fn of(plan: &JobPlan) -> JobGraph {
        let parallelism = plan.settings.parallelism;
        let nodes = plan
            .nodes
            .iter()
            .enumerate()
            .map(|(id, node)| graph_node(plan, id, node))
            .collect();
        let edges = plan
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(to, node)| {
                node.inputs()
                    .into_iter()
                    .map(move |from| GraphEdge { from, to })
            })
            .collect();
        JobGraph {
            parallelism,
            bounded: plan.is_bounded(),
            nodes,
            edges,
        }
    }
}

fn graph_node(plan: &JobPlan, id: usize, node: &PlanNode) -> GraphNode {
    let detail = node.describe();
    let (kind, table) = match node {
        PlanNode::Source { table, .. } => ("source", Some(table.clone())),
        PlanNode::Sink { table, .. } => ("sink", Some(table.clone())),
        PlanNode::Project { .. } => ("project", None),
        PlanNode::Filter { .. } => ("filter", None),
        PlanNode::Watermark { .. } => ("watermark", None),
        PlanNode::WindowAssign(_) => ("window_assign", None),
        PlanNode::WindowAggregate(_) => ("window_aggregate", None),
        PlanNode::GroupAggregate(_) => ("group_aggregate", None),
        PlanNode::Join(_) => ("join", None),
        PlanNode::TopN(_) => ("top_n", None),
        PlanNode::OverAggregate(_) => ("over_aggregate", None),
        PlanNode::Union { .. } => ("union", None),
    };
    // "Filter: amount >= 10" → "amount >= 10"; "InnerJoin on ..." → "on ...".
    let label = table.clone().unwrap_or_else(|| {
        let rest = match detail.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') => rest,
            _ => detail
                .split_once(' ')
                .map_or(detail.as_str(), |(_, rest)| rest),
        };
        without_column_indices(rest)
    });
    GraphNode {
        id,
        kind: kind.to_string(),
        label,
        detail,
        table,
        parallelism: plan.settings.parallelism,
        columns: plan
            .output_schema(id)
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .collect(),
        records_per_second: None,
        backpressure: None,
    }
}

/// `amount@1 >= 10` → `amount >= 10`: expressions name columns with their
/// input index, which readers do not need.
fn without_column_indices(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut previous = ' ';
    let mut quoted = false;
    while let Some(c) = chars.next() {
        quoted ^= c == '\'';
        let index_follows = chars.peek().is_some_and(char::is_ascii_digit);
        if c == '@' && !quoted && index_follows && (previous.is_alphanumeric() || previous == '_') {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            continue;
        }
        out.push(c);
        previous = c;
    }
    out
}

/// A script to check: `POST /api/v1/sql/validate`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidateSql {
    /// The SQL script.
    pub sql: String,
    /// Subtasks per operator, as it would be submitted with.
    pub parallelism: Option<u32>,
}

/// Whether a script plans, and where it does not.
#[derive(Debug, Serialize, ToSchema)]
pub struct SqlValidation {
    /// The script plans: it can be submitted.
    pub valid: bool,
    /// Why it does not.
    pub error: Option<SqlProblem>,
    /// The operator graph it plans to.
    pub graph: Option<JobGraph>,
}

/// A planner error with its position, when the message names one.
#[derive(Debug, Serialize, ToSchema)]
pub struct SqlProblem {
    /// The planner's message.
    pub message: String,
    /// 1-based line.
    pub line: Option<u32>,
    /// 1-based column.
    pub column: Option<u32>,
}

/// `line N:M`, `line N, column M` or `line N` in a planner message.
pub fn error_position(message: &str) -> (Option<u32>, Option<u32>) {
    let digits = |text: &str| -> Option<(u32, usize)> {
        let end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        text[..end].parse().ok().map(|n| (n, end))
    };
    for (index, _) in message.match_indices("line ") {
        let word_start = message[..index]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        if !word_start {
            continue;
        }
        let rest = &message[index + 5..];
        let Some((line, end)) = digits(rest) else {
            continue;
        };
        let after = &rest[end..];
        let column = after
            .strip_prefix(':')
            .or_else(|| after.strip_prefix(", column "))
            .and_then(digits)
            .map(|(column, _)| column);
        return (Some(line), column);
    }
    (None, None)
}

/// A job's checkpoints: `GET /api/v1/jobs/{name}/checkpoints`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointHistory {
    /// Time between checkpoints in milliseconds; null when they are off.
    pub interval_ms: Option<u64>,
    /// Where they are stored.
    pub location: String,
    /// The retained checkpoints, newest first.
    pub checkpoints: Vec<CheckpointView>,
}

/// One stored checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// Its number.
    pub id: u64,
    /// `checkpoint`, `savepoint` or `final`.
    pub kind: String,
    /// When it completed (RFC 3339).
    pub completed_at: String,
    /// Bytes of state it references.
    pub bytes: u64,
    /// The parallelism the job ran at.
    pub parallelism: usize,
}

/// Recently dead-lettered records: `GET /api/v1/jobs/{name}/dead-letters`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetters {
    /// The job's dead letter files that exist.
    pub files: Vec<DeadLetterFile>,
    /// The latest records (`time`, `table`, `source`, `position`, `reason`,
    /// `raw`), newest first.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
}

/// A dead letter file.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterFile {
    /// Its path.
    pub path: String,
    /// Its size.
    pub bytes: u64,
}

/// Checkpoint manifests read for the history.
const CHECKPOINT_HISTORY: usize = 20;

/// Bytes read from the end of each dead letter file.
const DEAD_LETTER_TAIL: u64 = 64 * 1024;

impl JobManager {
    /// The operator graph of a job's plan.
    pub async fn graph(&self, name: &str) -> Result<JobGraph, ApiError> {
        let record = self.record(name)?;
        let plan = self
            .plan(name, &record.sql, record.parallelism, &Arc::default())
            .await?;
        let mut graph = JobGraph::of(&plan);
        if let Some(live) = self.live(name) {
            for figures in live.view().operators {
                if let Some(node) = graph.nodes.get_mut(figures.id) {
                    node.records_per_second = match node.kind.as_str() {
                        "sink" => figures.records_in_per_second,
                        _ => figures.records_out_per_second,
                    };
                    node.backpressure = figures.backpressure;
                }
            }
        }
        Ok(graph)
    }

    /// The per-operator figures of a running job.
    fn live(&self, name: &str) -> Option<Arc<LiveFigures>> {
        self.running().get(name).map(|job| job.live.clone())
    }

    /// A job's per-operator figures: empty when it is not running.
    pub fn operators(&self, name: &str) -> Result<OperatorsView, ApiError> {
        self.record(name)?;
        Ok(self.live(name).map(|live| live.view()).unwrap_or_default())
    }

    /// The per-operator figures and plan of every running job.
    pub fn all_live(&self) -> Vec<(String, Arc<LiveFigures>, Arc<JobPlan>)> {
        self.running()
            .iter()
            .map(|(name, job)| (name.clone(), job.live.clone(), job.plan.clone()))
            .collect()
    }

    /// Plans `sql` without running it.
    pub async fn validate(&self, request: ValidateSql) -> SqlValidation {
        if request.parallelism == Some(0) {
            return SqlValidation {
                valid: false,
                error: Some(SqlProblem {
                    message: "parallelism must be at least 1".into(),
                    line: None,
                    column: None,
                }),
                graph: None,
            };
        }
        match self
            .plan(
                "validate",
                &request.sql,
                request.parallelism,
                &Arc::default(),
            )
            .await
        {
            Ok(plan) => SqlValidation {
                valid: true,
                error: None,
                graph: Some(JobGraph::of(&plan)),
            },
            Err(error) => {
                let (line, column) = error_position(&error.message);
                SqlValidation {
                    valid: false,
                    error: Some(SqlProblem {
                        message: error.message,
                        line,
                        column,
                    }),
                    graph: None,
                }
            }
        }
    }

    /// The latest retained checkpoints of a job.
    pub async fn checkpoints(&self, name: &str) -> Result<CheckpointHistory, ApiError> {
        let record = self.record(name)?;
        let plan = self
            .plan(name, &record.sql, record.parallelism, &Arc::default())
            .await?;
        let settings = &plan.settings.checkpoints;
        let mut history = CheckpointHistory {
            interval_ms: settings
                .interval
                .map(|i| u64::try_from(i.as_millis()).unwrap_or(u64::MAX)),
            location: settings.location.clone(),
            checkpoints: Vec::new(),
        };
        let internal = |e: sluice_core::SluiceError| ApiError::internal(e.to_string());
        let Some(store) = existing_store(&settings.location).map_err(internal)? else {
            return Ok(history);
        };
        let ids = store.checkpoints().await.map_err(internal)?;
        for id in ids.into_iter().rev().take(CHECKPOINT_HISTORY) {
            // A checkpoint retention deleted meanwhile, or a damaged one, is left out.
            let Ok(manifest) = store.read_manifest(id).await else {
                continue;
            };
            let kind = match manifest.kind {
                sluice_state::SnapshotKind::Checkpoint => "checkpoint",
                sluice_state::SnapshotKind::Savepoint => "savepoint",
                sluice_state::SnapshotKind::Final => "final",
            };
            history.checkpoints.push(CheckpointView {
                id,
                kind: kind.to_string(),
                completed_at: chrono::DateTime::from_timestamp_millis(manifest.created_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                bytes: manifest.total_bytes(),
                parallelism: manifest.parallelism,
            });
        }
        Ok(history)
    }

    /// The latest records of a job's dead letter files: the default
    /// directory (`<job dir>/dlq`), tables' `dlq.path` and late rows'
    /// `table.exec.late-data.dlq-path`.
    pub async fn dead_letters(&self, name: &str, limit: usize) -> Result<DeadLetters, ApiError> {
        let record = self.record(name)?;
        let plan = self
            .plan(name, &record.sql, record.parallelism, &Arc::default())
            .await?;
        let mut paths: Vec<PathBuf> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(plan.settings.data_dir.join("dlq")) {
            paths.extend(entries.flatten().map(|entry| entry.path()));
        }
        paths.extend(plan.settings.late_data_dlq.clone());
        if let Ok(statements) = sluice_sql::parse_script(&record.sql) {
            for statement in statements {
                if let sluice_sql::script::StatementKind::CreateTable(table) = statement.kind {
                    paths.extend(table.options.get("dlq.path").map(PathBuf::from));
                }
            }
        }
        paths.sort();
        paths.dedup();
        tokio::task::spawn_blocking(move || read_dead_letters(&paths, limit))
            .await
            .map_err(|e| ApiError::internal(format!("reading dead letters: {e}")))
    }
}

/// The last records of each file in `paths` (those that exist), newest first.
fn read_dead_letters(paths: &[PathBuf], limit: usize) -> DeadLetters {
    use std::io::{Read, Seek, SeekFrom};
    let mut letters = DeadLetters {
        files: Vec::new(),
        records: Vec::new(),
    };
    for path in paths {
        let Ok(mut file) = std::fs::File::open(path) else {
            continue;
        };
        let bytes = match file.metadata() {
            Ok(metadata) if metadata.is_file() => metadata.len(),
            _ => continue,
        };
        letters.files.push(DeadLetterFile {
            path: path.display().to_string(),
            bytes,
        });
        let start = bytes.saturating_sub(DEAD_LETTER_TAIL);
        let mut tail = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut tail).is_err() {
            continue;
        }
        let text = String::from_utf8_lossy(&tail);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // cut mid-record
        }
        letters.records.extend(
            lines
                .iter()
                .rev()
                .take(limit)
                .filter_map(|line| serde_json::from_str(line).ok()),
        );
    }
    let time = |v: &serde_json::Value| v["time"].as_str().unwrap_or_default().to_string();
    letters.records.sort_by_key(|b| std::cmp::Reverse(time(b)));
    letters.records.truncate(limit);
    letters
}

/// Offsets of one stream a job's latest checkpoint committed, by partition.
pub type CommittedOffsets = BTreeMap<u32, u64>;

impl JobManager {
    /// For every stream, the offsets each job's latest checkpoint has
    /// committed (the `stream` source records them as its position):
    /// stream → job → partition → next offset to read.
    pub async fn committed_stream_offsets(
        &self,
    ) -> BTreeMap<String, BTreeMap<String, CommittedOffsets>> {
        let mut by_stream: BTreeMap<String, BTreeMap<String, CommittedOffsets>> = BTreeMap::new();
        let Ok(records) = self.store.jobs() else {
            return by_stream;
        };
        for record in records {
            let Ok(plan) = self
                .plan(
                    &record.name,
                    &record.sql,
                    record.parallelism,
                    &Arc::default(),
                )
                .await
            else {
                continue;
            };
            for (stream, offsets) in
                latest_stream_positions(&plan.settings.checkpoints.location).await
            {
                let job = by_stream
                    .entry(stream)
                    .or_default()
                    .entry(record.name.clone())
                    .or_default();
                for (partition, offset) in offsets {
                    let slot = job.entry(partition).or_default();
                    *slot = (*slot).max(offset);
                }
            }
        }
        by_stream
    }
}

/// The checkpoint store at `location`, unless it is a local directory that
/// does not exist (opening it would create it, for a job that never ran).
fn existing_store(location: &str) -> sluice_core::Result<Option<sluice_state::CheckpointStore>> {
    let local = match location.split_once("://") {
        Some(("file", path)) => Some(path),
        Some(_) => None,
        None => Some(location),
    };
    if local.is_some_and(|path| !std::path::Path::new(path).exists()) {
        return Ok(None);
    }
    sluice_state::CheckpointStore::open(location).map(Some)
}

/// The `stream` source positions in the latest checkpoint at `location`
/// (nothing for a job that never checkpointed).
async fn latest_stream_positions(location: &str) -> Vec<(String, CommittedOffsets)> {
    let Ok(Some(store)) = existing_store(location) else {
        return Vec::new();
    };
    let Some(latest) = store
        .checkpoints()
        .await
        .ok()
        .and_then(|ids| ids.last().copied())
    else {
        return Vec::new();
    };
    let Ok(manifest) = store.read_manifest(latest).await else {
        return Vec::new();
    };
    let mut positions = Vec::new();
    for component in &manifest.components {
        if component.role != sluice_state::Role::Source {
            continue;
        }
        let Some(chunk) = component.chunks.first() else {
            continue;
        };
        let Ok(bytes) = store.read_chunk(chunk).await else {
            continue;
        };
        positions.extend(stream_position(&bytes));
    }
    positions
}

/// A `stream` source position: `{"stream": name, "offsets": {"<partition>": next}}`.
fn stream_position(bytes: &[u8]) -> Option<(String, CommittedOffsets)> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let stream = value.get("stream")?.as_str()?.to_string();
    let offsets = value
        .get("offsets")?
        .as_object()?
        .iter()
        .filter_map(|(partition, offset)| Some((partition.parse().ok()?, offset.as_u64()?)))
        .collect();
    Some((stream, offsets))
}

#[cfg(test)]
mod dashboard_tests {
    use super::*;

    #[test]
    fn labels_leave_out_column_indices() {
        assert_eq!(
            without_column_indices("amount@1 >= 10 AND a_b@12 = 'x@3'"),
            "amount >= 10 AND a_b = 'x@3'"
        );
        assert_eq!(without_column_indices("me @ 5"), "me @ 5");
    }

    #[test]
    fn planner_messages_give_their_position() {
        assert_eq!(
            error_position("SQL syntax error: line 2:14: Expected: ..."),
            (Some(2), Some(14))
        );
        assert_eq!(
            error_position("statement at line 3: unknown sink table `x`"),
            (Some(3), None)
        );
        assert_eq!(
            error_position("no such column (statement at line 4)"),
            (Some(4), None)
        );
        assert_eq!(error_position("the timeline 7 is not a line"), (None, None));
    }
}
