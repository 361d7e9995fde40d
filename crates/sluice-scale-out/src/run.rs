//! One process's part of a scale-out job: joins the group, runs the tasks
//! it is assigned, stops the ones a rebalance moves elsewhere, and when
//! stopped hands every task over with a final checkpoint and leaves.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_connectors::kafka::repartition::RepartitionTopic;
use sluice_core::connector::ConnectorRegistry;
use sluice_core::{Result, SluiceError};
use sluice_runtime::checkpoint::{request_savepoint, SavepointRequest};
use sluice_runtime::metrics::JobMetrics;
use sluice_runtime::StopSignal;
use sluice_sql::JobPlan;
use sluice_state::CheckpointStore;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn, Instrument};

use crate::layout::TaskLayout;
use crate::membership::{Membership, MembershipEvent};
use crate::split::task_plan;
use crate::status::LAYOUT_FILE;
use crate::task::{run_task, TaskContext};

/// How long a stopping task may take to write its final checkpoint.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// A job to run in scale-out mode.
pub struct ScaleOutJob {
    /// The SQL script.
    pub script: String,
    /// The job's name when the script sets none.
    pub default_name: String,
    /// `SET` overrides from the command line.
    pub overrides: BTreeMap<String, String>,
    /// Connectors.
    pub registry: ConnectorRegistry,
}

impl ScaleOutJob {
    /// The overrides tasks plan with: scale-out mode, one subtask per operator.
    fn task_overrides(&self) -> BTreeMap<String, String> {
        let mut overrides = self.overrides.clone();
        overrides.insert("execution.mode".into(), "scale-out".into());
        overrides.insert("parallelism.default".into(), "1".into());
        overrides
    }

    async fn plan(&self) -> Result<JobPlan> {
        sluice_sql::plan_script(
            &self.script,
            &self.default_name,
            &self.registry,
            &self.task_overrides(),
        )
        .await
    }

    /// The job's plan and how it divides into tasks.
    pub async fn layout(&self) -> Result<(JobPlan, TaskLayout)> {
        let plan = self.plan().await?;
        if plan.settings.checkpoints.interval.is_none() {
            return Err(SluiceError::Config(
                "scale-out needs checkpoints (tasks move between processes through them): \
                 set 'execution.checkpointing.interval'"
                    .into(),
            ));
        }
        let layout = TaskLayout::of(&plan)?;
        Ok((plan, layout))
    }

    /// `--explain`: the plan task 0 runs, and the tasks and topics.
    pub async fn explain(&self) -> Result<String> {
        let (plan, layout) = self.layout().await?;
        let task = task_plan(plan, &layout, 0, 1)?;
        Ok(format!(
            "{}{}",
            layout.explain(),
            task.explain().replacen("Job", "Task 0 of job", 1)
        ))
    }
}

/// This process: `host:pid`.
fn member_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{}:{}", host.trim(), std::process::id())
}

/// Creates the job's internal topics (repartition topics on the source
/// cluster, the tasks topic on the group's) unless they exist.
async fn create_topics(layout: &TaskLayout) -> Result<()> {
    for cut in &layout.cuts {
        RepartitionTopic {
            name: cut.topic.clone(),
            partitions: layout.tasks,
            properties: layout.properties.clone(),
        }
        .ensure_exists()
        .await?;
    }
    RepartitionTopic {
        name: layout.tasks_topic.clone(),
        partitions: layout.tasks,
        properties: layout.group_properties.clone(),
    }
    .ensure_exists()
    .await
}

/// Runs this process's share of `job` until `stop` turns true, then hands
/// its tasks over (each with a final checkpoint) and leaves the group.
pub async fn run_scale_out(job: ScaleOutJob, mut stop: StopSignal) -> Result<()> {
    let (plan, layout) = job.layout().await?;
    create_topics(&layout).await?;
    let body = serde_json::to_vec_pretty(&layout)
        .map_err(|e| SluiceError::State(format!("scale-out layout: {e}")))?;
    CheckpointStore::open(&layout.checkpoints)?
        .put_file(LAYOUT_FILE, body)
        .await?;
    let member = member_name();
    info!(
        job = %layout.job,
        tasks = layout.tasks,
        group = %layout.group_id,
        %member,
        "joining the job's consumer group"
    );
    let context = Arc::new(TaskContext {
        overrides: job.task_overrides(),
        script: job.script,
        default_name: job.default_name,
        registry: job.registry,
        member: member.clone(),
        control_root: control_root(&plan.settings.data_dir, &member),
        layout,
    });
    drop(plan);
    let (events_sender, mut events) = mpsc::unbounded_channel();
    let membership = Membership::join(&context.layout, &member, events_sender)?;
    let mut running: HashMap<usize, RunningTask> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            event = events.recv() => match event {
                Some(MembershipEvent::Assigned(tasks)) => {
                    for task in tasks {
                        if running.get(&task).is_some_and(|t| !t.handle.is_finished()) {
                            continue;
                        }
                        let metrics = Arc::new(JobMetrics::default());
                        let span = tracing::info_span!("task", task);
                        let in_job = Arc::new(AtomicBool::new(false));
                        let handle = tokio::spawn(
                            run_task(context.clone(), task, metrics, in_job.clone())
                                .instrument(span),
                        );
                        running.insert(task, RunningTask { handle, in_job });
                    }
                }
                Some(MembershipEvent::Revoked { tasks, done, .. }) => {
                    // Stopped at once, so the rebalance is not held up: the
                    // next owner resumes from the last checkpoint (fenced,
                    // so this process writes nothing more for them).
                    for task in tasks {
                        if let Some(running) = running.remove(&task) {
                            running.handle.abort();
                        }
                    }
                    let _ = done.send(());
                }
                None => break,
            },
        }
    }
    info!("stopping: handing over this process's tasks");
    let all: Vec<usize> = running.keys().copied().collect();
    let handing_over = hand_over(&context, &mut running, &all);
    tokio::pin!(handing_over);
    loop {
        tokio::select! {
            _ = &mut handing_over => break,
            // Rebalances meanwhile are not held up (the tasks are stopping).
            event = events.recv() => match event {
                Some(MembershipEvent::Revoked { done, .. }) => {
                    let _ = done.send(());
                }
                Some(MembershipEvent::Assigned(_)) => {}
                None => {}
            },
        }
    }
    membership.leave();
    while !membership.is_gone() {
        if let Ok(Some(MembershipEvent::Revoked { done, .. })) =
            tokio::time::timeout(Duration::from_millis(100), events.recv()).await
        {
            let _ = done.send(());
        }
    }
    drop(membership);
    info!("left the job's consumer group");
    Ok(())
}

/// Where this process's tasks receive stop requests.
fn control_root(data_dir: &std::path::Path, member: &str) -> PathBuf {
    data_dir
        .join("scale-out")
        .join(member.replace([':', '/'], "-"))
}

/// A task this process runs.
struct RunningTask {
    handle: JoinHandle<Result<()>>,
    /// Its job is running (not restoring, nor waiting to restart).
    in_job: Arc<AtomicBool>,
}

/// Stops `tasks`, each with a final checkpoint that commits its output, so
/// their next owners have nothing to replay.
async fn hand_over(
    context: &Arc<TaskContext>,
    running: &mut HashMap<usize, RunningTask>,
    tasks: &[usize],
) {
    let mut stopping = JoinSet::new();
    for task in tasks {
        let Some(RunningTask { mut handle, in_job }) = running.remove(task) else {
            continue;
        };
        if handle.is_finished() {
            continue;
        }
        if !in_job.load(Ordering::Relaxed) {
            // No job to checkpoint (it is restoring or waiting to restart).
            handle.abort();
            continue;
        }
        let control_dir = context.control_dir(*task);
        let task = *task;
        stopping.spawn(async move {
            let request = SavepointRequest {
                target: String::new(),
                stop: true,
            };
            match request_savepoint(&control_dir, &request, HANDOVER_TIMEOUT).await {
                Ok(response) => match response.error {
                    None => info!(task, "task handed over after a final checkpoint"),
                    Some(error) => warn!(task, "final checkpoint failed: {error}"),
                },
                Err(error) => warn!(task, "no final checkpoint: {error}"),
            }
            if tokio::time::timeout(Duration::from_secs(10), &mut handle)
                .await
                .is_err()
            {
                handle.abort();
            }
        });
    }
    while stopping.join_next().await.is_some() {}
}
