//! How a job divides into tasks: found from its plan, written beside its
//! checkpoints (`scale-out.json`) so `sluice status` can read it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_expr::PhysicalExpr;
use serde::{Deserialize, Serialize};
use sluice_core::connector::PartitionedSource;
use sluice_core::{Result, SluiceError};
use sluice_sql::plan::NodeId;
use sluice_sql::{JobPlan, PlanNode};

/// One input of a keyed operator carried over a repartition topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepartitionCut {
    /// The keyed operator.
    pub node: NodeId,
    /// Which of its inputs (0, or 1 for a join's right side).
    pub side: usize,
    /// The topic.
    pub topic: String,
    /// Transactional ids of the upstream tasks' writers: `<prefix>-<task>`.
    pub transactional_prefix: String,
}

/// How a scale-out job divides into tasks and where they coordinate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskLayout {
    /// The job's name.
    pub job: String,
    /// Tasks: the partition count of the source topics.
    pub tasks: usize,
    /// The source topics (every one has `tasks` partitions).
    pub source_topics: Vec<String>,
    /// Client settings of the source cluster.
    pub properties: BTreeMap<String, String>,
    /// The consumer group that assigns tasks.
    pub group_id: String,
    /// Client settings of the group's cluster.
    pub group_properties: BTreeMap<String, String>,
    /// The internal topic the group subscribes to: one partition per task.
    pub tasks_topic: String,
    /// Session timeout of the group's members.
    pub session_timeout_ms: u64,
    /// Repartition topics, one per cut input.
    pub cuts: Vec<RepartitionCut>,
    /// Root of the tasks' checkpoint directories.
    pub checkpoints: String,
}

/// Characters Kafka allows in topic names; others become `-`.
pub(crate) fn topic_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An input of a keyed operator and the keys its rows are grouped by.
pub(crate) type KeyedInput = (NodeId, Vec<Arc<dyn PhysicalExpr>>);

/// A keyed operator's inputs and the keys their rows must be grouped by;
/// `None` for operators that keep no keyed state.
pub(crate) fn keyed_inputs(node: &PlanNode) -> Result<Option<Vec<KeyedInput>>> {
    Ok(match node {
        PlanNode::WindowAggregate(window) => Some(vec![(window.input, window.keys.clone())]),
        PlanNode::GroupAggregate(group) => Some(vec![(group.input, group.keys.clone())]),
        PlanNode::TopN(top) => Some(vec![(top.input, top.partition_keys.clone())]),
        PlanNode::OverAggregate(over) => Some(vec![(over.input, over.partition_keys.clone())]),
        PlanNode::Join(join) if join.lookup.is_some() => {
            return Err(SluiceError::Unsupported(format!(
                "scale-out: lookup joins ({}) are not supported yet; run the job embedded",
                join.condition
            )))
        }
        PlanNode::Join(join) => Some(vec![
            (join.left, join.left_keys.clone()),
            (join.right, join.right_keys.clone()),
        ]),
        PlanNode::Sink {
            table,
            materialize_by: Some(_),
            ..
        } => {
            return Err(SluiceError::Unsupported(format!(
                "scale-out: sink `{table}` materializes an updating result at the end of \
                 input, which needs the whole input in one process; give it a connector \
                 that accepts updates (e.g. upsert-kafka)"
            )))
        }
        _ => None,
    })
}

/// The operator's name in repartition topic names.
fn operator_name(node: &PlanNode) -> &'static str {
    match node {
        PlanNode::WindowAggregate(_) => "window-aggregate",
        PlanNode::GroupAggregate(_) => "group-aggregate",
        PlanNode::TopN(_) => "top-n",
        PlanNode::OverAggregate(_) => "over-aggregate",
        PlanNode::Join(_) => "join",
        _ => "operator",
    }
}

/// The partitioned view of every source of the plan (scale-out reads
/// single-topic Kafka sources only).
pub(crate) fn partitioned_sources(
    plan: &JobPlan,
) -> Result<Vec<(NodeId, Arc<dyn PartitionedSource>)>> {
    let mut sources = Vec::new();
    for (id, node) in plan.nodes.iter().enumerate() {
        if let PlanNode::Source {
            table, connector, ..
        } = node
        {
            let partitioned = connector.clone().partitioned().ok_or_else(|| {
                SluiceError::Unsupported(format!(
                    "scale-out: source table `{table}` ({}) cannot be split into \
                     partition tasks; scale-out reads kafka tables with a single 'topic' \
                     (no topic-pattern or partition discovery)",
                    connector.describe()
                ))
            })?;
            sources.push((id, partitioned));
        }
    }
    if sources.is_empty() {
        return Err(SluiceError::Unsupported(
            "scale-out: the job reads no source".into(),
        ));
    }
    Ok(sources)
}

impl TaskLayout {
    /// The layout of `plan` (planned at parallelism 1): asks the brokers
    /// how many partitions the source topics have.
    pub fn of(plan: &JobPlan) -> Result<Self> {
        let settings = plan.settings.scale_out.clone().unwrap_or_default();
        let job = plan.settings.job_name.clone();
        let sources = partitioned_sources(plan)?;
        let mut tasks = None;
        let mut source_topics = Vec::new();
        for (id, source) in &sources {
            let partitions = source.partitions()?;
            let table = match &plan.nodes[*id] {
                PlanNode::Source { table, .. } => table.clone(),
                _ => String::new(),
            };
            match tasks {
                None => tasks = Some((partitions, table.clone())),
                Some((count, ref first)) if count != partitions => {
                    return Err(SluiceError::Config(format!(
                        "scale-out: source `{table}` (topic '{}') has {partitions} partitions \
                         but `{first}` has {count}; the tasks of a job pair up partition i of \
                         every source, so its topics need the same partition count",
                        source.topic()
                    )))
                }
                Some(_) => {}
            }
            source_topics.push(source.topic());
        }
        let tasks = tasks.map_or(0, |(count, _)| count);
        if tasks == 0 {
            return Err(SluiceError::Config(format!(
                "scale-out: topic '{}' has no partitions (does it exist?)",
                source_topics.join("', '")
            )));
        }
        let properties = sources[0].1.client_properties();
        // Not the source's `properties.group.id`: source readers commit their
        // offsets there for monitoring, outside any group generation.
        let group_id = settings
            .group_id
            .clone()
            .unwrap_or_else(|| format!("sluice-{job}"));
        let mut group_properties = properties.clone();
        group_properties.remove("group.id");
        if let Some(servers) = &settings.group_bootstrap_servers {
            group_properties.insert("bootstrap.servers".into(), servers.clone());
        }
        let mut cuts = Vec::new();
        for (id, node) in plan.nodes.iter().enumerate() {
            let Some(inputs) = keyed_inputs(node)? else {
                continue;
            };
            for side in 0..inputs.len() {
                let suffix = match (inputs.len(), side) {
                    (1, _) => String::new(),
                    (_, 0) => "-left".into(),
                    _ => "-right".into(),
                };
                let base = topic_safe(&format!("{job}-{}-{id}{suffix}", operator_name(node)));
                cuts.push(RepartitionCut {
                    node: id,
                    side,
                    topic: format!("{base}-repartition"),
                    transactional_prefix: format!("sluice-{base}"),
                });
            }
        }
        Ok(TaskLayout {
            tasks_topic: topic_safe(&format!("{job}-tasks")),
            job,
            tasks,
            source_topics,
            properties,
            group_id,
            group_properties,
            session_timeout_ms: settings.session_timeout.as_millis() as u64,
            cuts,
            checkpoints: plan
                .settings
                .checkpoints
                .location
                .trim_end_matches('/')
                .to_string(),
        })
    }

    /// Where task `task` checkpoints.
    pub fn task_checkpoints(&self, task: usize) -> String {
        format!("{}/task-{task}", self.checkpoints)
    }

    /// The session timeout.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }

    /// What `--explain` adds for scale-out.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "Scale-out: {} task(s), one per partition of {}; consumer group '{}' on topic '{}'\n",
            self.tasks,
            self.source_topics.join(", "),
            self.group_id,
            self.tasks_topic
        );
        for cut in &self.cuts {
            out.push_str(&format!(
                "  repartition topic '{}' ({} partitions) feeds input {} of operator {}\n",
                cut.topic, self.tasks, cut.side, cut.node
            ));
        }
        out.push_str(&format!(
            "  task checkpoints: {}/task-<n>\n",
            self.checkpoints
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_keep_only_kafka_characters() {
        assert_eq!(topic_safe("my job/1:x"), "my-job-1-x");
        assert_eq!(topic_safe("a.b_c-d"), "a.b_c-d");
    }
}
