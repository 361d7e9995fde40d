//! Runs a job under supervision: with checkpoints, resuming after a crash
//! from its latest checkpoint (or from a savepoint), and restarting it
//! in-process after a failure as its restart strategy says. Used by
//! `sluice run` and by the jobs `sluice serve` hosts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::{Result, SluiceError};
use sluice_sql::JobPlan;
use sluice_state::{CheckpointStore, RestoredCheckpoint, SnapshotKind};
use tracing::{info, warn};

use crate::checkpoint::{load_for_recovery, request_savepoint, CheckpointConfig, SavepointRequest};
use crate::metrics::JobMetrics;
use crate::{run_job_checkpointed, JobSummary, ProgressReport, StopSignal};

/// How a run starts.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Ignore (and delete) the job's checkpoints.
    pub fresh: bool,
    /// Resume from this savepoint directory instead.
    pub from_savepoint: Option<String>,
    /// Where the job records its live figures (kept across restarts).
    pub metrics: Arc<JobMetrics>,
}

/// The directory savepoint requests reach a running job through.
pub fn control_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("control")
}

/// Runs `plan` to completion, with checkpoints and restarts as configured.
/// `progress` is asked once per (re)start for a progress callback.
pub async fn run_supervised(
    plan: &JobPlan,
    start: &StartOptions,
    stop: StopSignal,
    progress: impl Fn() -> Option<(Duration, ProgressReport)>,
) -> Result<JobSummary> {
    let settings = &plan.settings.checkpoints;
    if settings.interval.is_none() && start.from_savepoint.is_none() {
        return run_job_checkpointed(plan, stop, progress(), None, &start.metrics).await;
    }
    let store = CheckpointStore::open(&settings.location)?;
    if start.fresh {
        store.clear().await?;
    }
    let mut restored = match &start.from_savepoint {
        Some(savepoint) => {
            let restored = CheckpointStore::open(savepoint)?
                .load_latest()
                .await?
                .ok_or_else(|| {
                    SluiceError::State(format!("no savepoint found in '{savepoint}'"))
                })?;
            info!(
                "resuming from savepoint {} in {savepoint} (taken at parallelism {})",
                restored.manifest.checkpoint, restored.manifest.parallelism
            );
            Some(restored)
        }
        None if start.fresh => None,
        None => latest_unfinished(plan, &store).await?,
    };
    let mut attempt = 0;
    loop {
        let first_checkpoint = store.checkpoints().await?.last().map_or(1, |id| id + 1);
        let config = CheckpointConfig {
            store: store.clone(),
            settings: settings.clone(),
            restored: restored.take().map(Arc::new),
            control_dir: Some(control_dir(&plan.settings.data_dir)),
            first_checkpoint,
            fence: None,
        };
        match run_job_checkpointed(
            plan,
            stop.clone(),
            progress(),
            Some(&config),
            &start.metrics,
        )
        .await
        {
            Ok(summary) => return Ok(summary),
            Err(error) => {
                attempt += 1;
                let Some(delay) = settings.restart.delay(attempt) else {
                    return Err(error);
                };
                restored = latest_unfinished(plan, &store).await?;
                warn!(
                    "job failed: {error}; restarting in {delay:?} from {} (restart {attempt})",
                    restored
                        .as_ref()
                        .map(|r| format!("checkpoint {}", r.manifest.checkpoint))
                        .unwrap_or_else(|| "the beginning".into())
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The latest intact checkpoint, unless the job it belongs to finished.
async fn latest_unfinished(
    plan: &JobPlan,
    store: &CheckpointStore,
) -> Result<Option<RestoredCheckpoint>> {
    match load_for_recovery(plan, store).await? {
        Some(restored) if restored.manifest.kind == SnapshotKind::Final => {
            info!(
                "the previous run finished (checkpoint {} is final): starting over",
                restored.manifest.checkpoint
            );
            Ok(None)
        }
        Some(restored) => {
            info!(
                "resuming from checkpoint {} in {}",
                restored.manifest.checkpoint,
                store.location()
            );
            Ok(Some(restored))
        }
        None => Ok(None),
    }
}

/// A savepoint a running job took.
#[derive(Debug, Clone)]
pub struct SavepointTaken {
    /// Where it was written.
    pub location: String,
    /// Its checkpoint number.
    pub checkpoint: u64,
}

/// Asks the job running in `data_dir` for a savepoint at `target` (and to
/// stop right after it, with `stop`), waiting up to `timeout`.
pub async fn take_savepoint(
    data_dir: &Path,
    target: &str,
    stop: bool,
    timeout: Duration,
) -> Result<SavepointTaken> {
    let request = SavepointRequest {
        target: absolute(target),
        stop,
    };
    let response = request_savepoint(&control_dir(data_dir), &request, timeout).await?;
    match (response.savepoint, response.error) {
        (Some(location), _) => Ok(SavepointTaken {
            location,
            checkpoint: response.checkpoint.unwrap_or_default(),
        }),
        (None, Some(error)) => Err(SluiceError::State(format!("savepoint failed: {error}"))),
        (None, None) => Err(SluiceError::State("savepoint failed".into())),
    }
}

/// Paths are taken relative to where the request is made, not to where the
/// job runs.
fn absolute(location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    std::path::absolute(location)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| location.to_string())
}
