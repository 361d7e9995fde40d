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
use sluice_sql::JobPlan;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::error::ApiError;
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
}

/// What one run of a job shares with the server while it runs.
struct RunningJob {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    started: Instant,
    rows_read: Arc<AtomicU64>,
    tap: Arc<JobTap>,
    data_dir: PathBuf,
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
                from_savepoint: None,
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
        let plan = self
            .plan(&record.name, &record.sql, record.parallelism, &tap)
            .await?;
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
        self.set_state(&record.name, "running", "running", None)?;
        self.event(&record.name, "info", &message);
        let mut running = self.running();
        let handle = tokio::spawn(async move {
            let progress = || -> Option<(Duration, ProgressReport)> {
                let counter = counter.clone();
                let report: ProgressReport =
                    Box::new(move |rows| counter.store(rows, Ordering::Relaxed));
                Some((Duration::from_millis(500), report))
            };
            let outcome = run_supervised(&plan, &start, stop_signal, progress).await;
            manager.finished(&name, outcome.map(|_| ()).map_err(|e| e.to_string()));
        });
        running.insert(
            record.name.clone(),
            RunningJob {
                stop,
                handle,
                started: Instant::now(),
                rows_read,
                tap,
                data_dir,
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
        Ok(JobDetail { job, plan, events })
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
    pub async fn resume(self: &Arc<Self>, name: &str) -> Result<JobView, ApiError> {
        let record = self.record(name)?;
        let start = StartOptions {
            fresh: false,
            from_savepoint: record.savepoint.clone(),
        };
        self.start(&record, start).await?;
        self.view(name)
    }

    /// Stops a job if it runs and deletes it with its data.
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
