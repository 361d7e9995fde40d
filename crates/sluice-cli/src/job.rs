//! `sluice run`: runs a job with checkpoints, resumes it after a crash from
//! its latest checkpoint (or from a savepoint), and restarts it in-process
//! after a failure as its restart strategy says.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sluice_runtime::checkpoint::{human_bytes, load_for_recovery, CheckpointConfig};
use sluice_runtime::{run_job_checkpointed, JobSummary, ProgressReport, StopSignal};
use sluice_sql::JobPlan;
use sluice_state::{CheckpointStore, RestoredCheckpoint, SnapshotKind};
use tracing::{info, warn};

/// How a run starts.
pub struct StartOptions {
    /// Ignore (and delete) the job's checkpoints.
    pub fresh: bool,
    /// Resume from this savepoint directory instead.
    pub from_savepoint: Option<String>,
}

/// The directory `sluice savepoint` / `sluice stop` talk to a running job through.
pub fn control_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("control")
}

/// Runs `plan` to completion, with checkpoints and restarts as configured.
pub async fn run(
    plan: &JobPlan,
    start: &StartOptions,
    stop: StopSignal,
    progress: impl Fn() -> Option<(Duration, ProgressReport)>,
) -> Result<JobSummary> {
    let settings = &plan.settings.checkpoints;
    if settings.interval.is_none() && start.from_savepoint.is_none() {
        return sluice_runtime::run_job_reporting(plan, stop, progress())
            .await
            .context("job failed");
    }
    let store = CheckpointStore::open(&settings.location)?;
    if start.fresh {
        store.clear().await.context("deleting old checkpoints")?;
    }
    let mut restored = match &start.from_savepoint {
        Some(savepoint) => {
            let restored = CheckpointStore::open(savepoint)?
                .load_latest()
                .await?
                .with_context(|| format!("no savepoint found in '{savepoint}'"))?;
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
        };
        match run_job_checkpointed(plan, stop.clone(), progress(), Some(&config)).await {
            Ok(summary) => return Ok(summary),
            Err(error) => {
                attempt += 1;
                let Some(delay) = settings.restart.delay(attempt) else {
                    return Err(anyhow::Error::new(error).context("job failed"));
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

/// Asks a running job for a savepoint (and to stop, with `stop`).
pub async fn savepoint(data_dir: &Path, target: &str, stop: bool) -> Result<()> {
    let target = absolute(target);
    let request = sluice_runtime::checkpoint::SavepointRequest {
        target: target.clone(),
        stop,
    };
    let response = sluice_runtime::checkpoint::request_savepoint(
        &control_dir(data_dir),
        &request,
        Duration::from_secs(300),
    )
    .await?;
    match (response.savepoint, response.error) {
        (Some(path), _) => {
            println!(
                "savepoint {} written to {path}",
                response.checkpoint.unwrap_or_default()
            );
            Ok(())
        }
        (None, Some(error)) => bail!("savepoint failed: {error}"),
        (None, None) => bail!("savepoint failed"),
    }
}

/// Paths given on the command line are taken relative to where it runs, not
/// to where the job runs.
fn absolute(location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    std::path::absolute(location)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| location.to_string())
}

/// Logs what checkpointing did.
pub fn report_checkpoints(summary: &JobSummary) {
    if let Some(checkpoint) = summary.resumed_from {
        info!("resumed from checkpoint {checkpoint}");
    }
    let Some(stats) = &summary.checkpoints else {
        return;
    };
    let per_operator: Vec<String> = stats
        .last_bytes_by_operator
        .iter()
        .map(|(operator, bytes)| format!("{operator} {}", human_bytes(*bytes)))
        .collect();
    info!(
        "checkpoints: {} completed, {} abandoned; last {} of state ({}), slowest {:.1?}",
        stats.completed,
        stats.abandoned,
        human_bytes(stats.last_bytes),
        if per_operator.is_empty() {
            "no operator state".to_string()
        } else {
            per_operator.join(", ")
        },
        stats.max_duration
    );
}
