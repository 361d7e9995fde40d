//! Runs one task: claims its ownership epoch, fences the previous owner's
//! transactional writers, restores the task's latest checkpoint and runs
//! its plan until it is stopped (with a final checkpoint) or revoked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::connector::{epoch_checkpoint, ConnectorRegistry};
use sluice_core::{Result, SluiceError};
use sluice_runtime::checkpoint::{load_for_recovery, CheckpointConfig, CheckpointFence};
use sluice_runtime::metrics::JobMetrics;
use sluice_sql::{JobPlan, PlanNode};
use sluice_state::{CheckpointStore, SnapshotKind};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::layout::TaskLayout;
use crate::split::task_plan;
use crate::status::TaskStatus;

/// What every task of this process needs to plan and run.
pub(crate) struct TaskContext {
    pub(crate) script: String,
    pub(crate) default_name: String,
    /// `SET` overrides, with parallelism 1.
    pub(crate) overrides: BTreeMap<String, String>,
    pub(crate) registry: ConnectorRegistry,
    pub(crate) layout: TaskLayout,
    /// This process, as named in ownership claims and status.
    pub(crate) member: String,
    /// Where this process keeps per-task control directories.
    pub(crate) control_root: PathBuf,
}

impl TaskContext {
    /// The directory stop requests reach task `task` through.
    pub(crate) fn control_dir(&self, task: usize) -> PathBuf {
        self.control_root.join(format!("task-{task}"))
    }

    pub(crate) async fn plan(&self) -> Result<JobPlan> {
        sluice_sql::plan_script(
            &self.script,
            &self.default_name,
            &self.registry,
            &self.overrides,
        )
        .await
    }
}

/// Fails a checkpoint once a newer epoch of the task was claimed.
struct EpochFence {
    store: CheckpointStore,
    epoch: u64,
    task: usize,
}

#[async_trait]
impl CheckpointFence for EpochFence {
    async fn check(&self) -> Result<()> {
        let latest = self.store.latest_epoch().await?;
        if latest != self.epoch {
            return Err(fenced(self.task, self.epoch, latest));
        }
        Ok(())
    }
}

fn fenced(task: usize, epoch: u64, latest: u64) -> SluiceError {
    SluiceError::State(format!(
        "scale-out: task {task} was taken over (ownership epoch {latest} replaced this \
         process's epoch {epoch}); it stops without writing"
    ))
}

/// Runs task `task` until it ends, is stopped, or another process takes
/// it over; restarts it after other failures.
pub(crate) async fn run_task(
    context: Arc<TaskContext>,
    task: usize,
    metrics: Arc<JobMetrics>,
    in_job: Arc<AtomicBool>,
) -> Result<()> {
    let store = CheckpointStore::open(&context.layout.task_checkpoints(task))?;
    let mut attempt: u32 = 0;
    loop {
        let mut claimed = None;
        let outcome = run_once(&context, task, &store, &metrics, &mut claimed, &in_job).await;
        in_job.store(false, Ordering::Relaxed);
        match outcome {
            Ok(()) => return Ok(()),
            Err(error) => {
                // Whatever failed (a failed checkpoint fence, a fenced Kafka
                // producer, ...), a newer epoch means another process owns
                // the task now: a restart here would take it back.
                if let Some(epoch) = claimed {
                    let latest = store.latest_epoch().await.unwrap_or(epoch);
                    if latest > epoch {
                        warn!(
                            task,
                            "task failed: {error}; not restarting: {}",
                            fenced(task, epoch, latest)
                        );
                        return Err(error);
                    }
                }
                attempt += 1;
                let delay = Duration::from_millis(500 * 2u64.pow(attempt.min(6)));
                warn!(
                    task,
                    "task failed: {error}; restarting in {delay:?} (restart {attempt})"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn run_once(
    context: &TaskContext,
    task: usize,
    store: &CheckpointStore,
    metrics: &Arc<JobMetrics>,
    claimed: &mut Option<u64>,
    in_job: &AtomicBool,
) -> Result<()> {
    let epoch = store.claim_epoch(&context.member).await?;
    *claimed = Some(epoch);
    let plan = task_plan(context.plan().await?, &context.layout, task, epoch)?;
    // Fence the previous owner's transactional writers before reading any
    // checkpoint: whatever it commits from now on fails.
    for sink in &plan.sinks {
        if let PlanNode::Sink { connector, .. } = &plan.nodes[*sink] {
            let connector = connector.clone();
            tokio::task::spawn_blocking(move || connector.fence(0))
                .await
                .map_err(|e| SluiceError::Runtime(format!("fencing: {e}")))??;
        }
    }
    // Claims and fencing can interleave between processes: go on only if
    // no newer claim came in meanwhile, so the newest claim fences last.
    let latest = store.latest_epoch().await?;
    if latest != epoch {
        return Err(fenced(task, epoch, latest));
    }
    let restored = match load_for_recovery(&plan, store).await? {
        Some(restored) if restored.manifest.kind == SnapshotKind::Final => {
            info!(
                task,
                "the task's input ended (its last checkpoint is final)"
            );
            return Ok(());
        }
        other => other,
    };
    let resumed_from = restored.as_ref().map(|r| r.manifest.checkpoint);
    info!(
        task,
        epoch,
        resumed_from = resumed_from.map(sluice_core::connector::checkpoint_label),
        "task started"
    );
    TaskStatus::started(task, &context.member, epoch)
        .write(store)
        .await?;
    let control_dir = context.control_dir(task);
    let _ = std::fs::remove_dir_all(&control_dir);
    std::fs::create_dir_all(&control_dir)
        .map_err(|e| SluiceError::io(format!("creating '{}'", control_dir.display()), e))?;
    let config = CheckpointConfig {
        store: store.clone(),
        settings: plan.settings.checkpoints.clone(),
        restored: restored.map(Arc::new),
        control_dir: Some(control_dir),
        first_checkpoint: epoch_checkpoint(epoch, 1),
        fence: Some(Arc::new(EpochFence {
            store: store.clone(),
            epoch,
            task,
        })),
    };
    // Tasks stop through their control directory (with a checkpoint), never by draining.
    let (_never, stop) = watch::channel(false);
    in_job.store(true, Ordering::Relaxed);
    sluice_runtime::run_job_checkpointed(&plan, stop, None, Some(&config), metrics).await?;
    info!(task, "task stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that lost its task (another claimed a newer epoch) fails
    /// its next checkpoint instead of writing it, and is not restarted.
    #[tokio::test]
    async fn a_newer_claim_fences_the_previous_owner() {
        let dir = std::env::temp_dir().join(format!("sluice-fence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::open(dir.to_str().unwrap()).unwrap();
        let first = store.claim_epoch("host:1").await.unwrap();
        let fence = EpochFence {
            store: store.clone(),
            epoch: first,
            task: 3,
        };
        fence.check().await.unwrap();
        let second = store.claim_epoch("host:2").await.unwrap();
        assert_eq!(second, first + 1);
        let error = fence.check().await.unwrap_err();
        assert!(
            error.to_string().contains("task 3 was taken over"),
            "{error}"
        );
        // Concurrent claims never share an epoch.
        let claims: Vec<u64> = futures_claims(&store).await;
        let mut unique = claims.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), claims.len(), "{claims:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn futures_claims(store: &CheckpointStore) -> Vec<u64> {
        let mut set = tokio::task::JoinSet::new();
        for owner in 0..8 {
            let store = store.clone();
            set.spawn(async move { store.claim_epoch(&format!("host:{owner}")).await });
        }
        let mut claims = Vec::new();
        while let Some(claim) = set.join_next().await {
            claims.push(claim.unwrap().unwrap());
        }
        claims
    }
}
