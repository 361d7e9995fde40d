//! Who owns which task: each owner writes `status.json` beside the task's
//! checkpoints; `sluice status` reads them with the job's layout, the
//! latest checkpoint of each task (its source offsets) and the brokers'
//! end offsets (lag).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};
use sluice_core::{Result, SluiceError};
use sluice_state::{CheckpointStore, Role};

use crate::layout::TaskLayout;

/// The file a job's layout is kept in, under its checkpoint root.
pub(crate) const LAYOUT_FILE: &str = "scale-out.json";
const STATUS_FILE: &str = "status.json";

/// A task's owner, as it last wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task.
    pub task: usize,
    /// The owning process (`host:pid`).
    pub owner: String,
    /// Its ownership epoch.
    pub epoch: u64,
    /// When it took the task (Unix ms).
    pub since_ms: i64,
}

impl TaskStatus {
    pub(crate) fn started(task: usize, owner: &str, epoch: u64) -> Self {
        TaskStatus {
            task,
            owner: owner.to_string(),
            epoch,
            since_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    pub(crate) async fn write(&self, store: &CheckpointStore) -> Result<()> {
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| SluiceError::State(format!("task status: {e}")))?;
        store.put_file(STATUS_FILE, body).await
    }

    async fn read(store: &CheckpointStore) -> Result<Option<Self>> {
        Ok(store
            .get_file(STATUS_FILE)
            .await?
            .and_then(|body| serde_json::from_slice(&body).ok()))
    }
}

/// What a checkpoint's sources recorded.
#[derive(Default)]
struct Positions {
    /// Kafka sources: `(topic, partition) -> next offset`.
    offsets: BTreeMap<(String, i32), i64>,
    /// Repartition sources: the latest watermark of each upstream task.
    upstream_watermarks: Vec<Vec<Option<i64>>>,
}

async fn checkpointed_positions(store: &CheckpointStore, checkpoint: u64) -> Result<Positions> {
    /// A kafka source's position.
    #[derive(Deserialize)]
    struct KafkaPosition {
        offsets: BTreeMap<String, BTreeMap<String, i64>>,
    }
    /// A repartition source's position.
    #[derive(Deserialize)]
    struct RepartitionPosition {
        watermarks: Vec<Option<i64>>,
    }
    let restored = store.load(checkpoint).await?;
    let mut positions = Positions::default();
    for component in &restored.manifest.components {
        if component.role != Role::Source {
            continue;
        }
        for chunk in &component.chunks {
            let Ok(body) = restored.chunk(chunk) else {
                continue;
            };
            if let Ok(KafkaPosition { offsets }) = serde_json::from_slice(body) {
                for (topic, partitions) in offsets {
                    for (partition, offset) in partitions {
                        if let Ok(partition) = partition.parse() {
                            positions.offsets.insert((topic.clone(), partition), offset);
                        }
                    }
                }
            } else if let Ok(RepartitionPosition { watermarks }) = serde_json::from_slice(body) {
                positions.upstream_watermarks.push(watermarks);
            }
        }
    }
    Ok(positions)
}

/// Upstream watermarks as `[t0 t1 ...]` in event time, `-` for none yet:
/// the least one holds the task's windows back.
fn watermarks_text(watermarks: &[Option<i64>]) -> String {
    let shown: Vec<String> = watermarks
        .iter()
        .map(|watermark| match watermark {
            Some(ms) => chrono::DateTime::from_timestamp_millis(*ms)
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_else(|| ms.to_string()),
            None => "-".into(),
        })
        .collect();
    format!("[{}]", shown.join(" "))
}

/// Prints who owns each task of the job whose checkpoints are under
/// `checkpoints`, its last checkpoint and its source lag.
pub async fn print_status(checkpoints: &str) -> Result<String> {
    let root = CheckpointStore::open(checkpoints)?;
    let layout: TaskLayout = match root.get_file(LAYOUT_FILE).await? {
        Some(body) => serde_json::from_slice(&body)
            .map_err(|e| SluiceError::State(format!("{checkpoints}/{LAYOUT_FILE}: {e}")))?,
        None => {
            return Err(SluiceError::Config(format!(
                "no scale-out job has run with checkpoints in '{checkpoints}' (no {LAYOUT_FILE})"
            )))
        }
    };
    let mut config = ClientConfig::new();
    for (key, value) in &layout.properties {
        config.set(key, value);
    }
    let consumer: Option<BaseConsumer> = config
        .set("group.id", format!("{}-status", layout.group_id))
        .create()
        .ok();
    let mut out = format!(
        "Job '{}': {} task(s) over {}; consumer group '{}'\n",
        layout.job,
        layout.tasks,
        layout.source_topics.join(", "),
        layout.group_id
    );
    let now = chrono::Utc::now().timestamp_millis();
    let _ = writeln!(
        out,
        "{:<5} {:<28} {:>5} {:<14} {:>10}  source lag, repartition watermarks",
        "task", "owner", "epoch", "checkpoint", "age"
    );
    for task in 0..layout.tasks {
        let store = CheckpointStore::open(&layout.task_checkpoints(task))?;
        let status = TaskStatus::read(&store).await?;
        let latest = store.checkpoints().await?.last().copied();
        let (name, age, lag) = match latest {
            Some(id) => {
                let manifest = store.read_manifest(id).await?;
                let age = Duration::from_millis((now - manifest.created_ms).max(0) as u64);
                let positions = checkpointed_positions(&store, id).await?;
                let mut lags = Vec::new();
                for watermarks in &positions.upstream_watermarks {
                    lags.push(format!(
                        "upstream watermarks {}",
                        watermarks_text(watermarks)
                    ));
                }
                for ((topic, partition), offset) in positions.offsets {
                    let end = consumer.as_ref().and_then(|c| {
                        c.fetch_watermarks(&topic, partition, Duration::from_secs(5))
                            .ok()
                            .map(|(_, high)| high)
                    });
                    lags.push(match end {
                        Some(end) => format!("{topic}[{partition}]={}", (end - offset).max(0)),
                        None => format!("{topic}[{partition}]=?"),
                    });
                }
                (
                    sluice_core::connector::checkpoint_label(id),
                    format!("{:.1}s", age.as_secs_f64()),
                    lags.join(" "),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        let (owner, epoch) = status
            .map(|s| (s.owner, s.epoch.to_string()))
            .unwrap_or_else(|| ("(never started)".into(), "-".into()));
        let _ = writeln!(
            out,
            "{task:<5} {owner:<28} {epoch:>5} {name:<14} {age:>10}  {lag}"
        );
    }
    Ok(out)
}
