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

/// Source offsets a checkpoint recorded: `(topic, partition) -> next offset`.
async fn checkpointed_offsets(
    store: &CheckpointStore,
    checkpoint: u64,
) -> Result<BTreeMap<(String, i32), i64>> {
    let restored = store.load(checkpoint).await?;
    let mut offsets = BTreeMap::new();
    for component in &restored.manifest.components {
        if component.role != Role::Source {
            continue;
        }
        for chunk in &component.chunks {
            let Ok(body) = restored.chunk(chunk) else {
                continue;
            };
            // Kafka sources record `{"offsets": {"topic": {"partition": offset}}}`.
            #[derive(Deserialize)]
            struct KafkaPosition {
                offsets: BTreeMap<String, BTreeMap<String, i64>>,
            }
            if let Ok(KafkaPosition { offsets: topics }) = serde_json::from_slice(body) {
                for (topic, partitions) in topics {
                    for (partition, offset) in partitions {
                        if let Ok(partition) = partition.parse() {
                            offsets.insert((topic.clone(), partition), offset);
                        }
                    }
                }
            }
        }
    }
    Ok(offsets)
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
        "{:<5} {:<28} {:>5} {:<14} {:>10}  source lag",
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
                let mut lags = Vec::new();
                for ((topic, partition), offset) in checkpointed_offsets(&store, id).await? {
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
