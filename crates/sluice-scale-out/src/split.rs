//! The plan one task runs: the job's plan with every source pinned to the
//! task's partition, every keyed input cut into a repartition topic (a sink
//! upstream, a source downstream), and every sink writing as the task's
//! subtask.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_connectors::kafka::repartition::{
    RepartitionSink, RepartitionSource, RepartitionTopic, RowRouter,
};
use sluice_core::connector::{epoch_final_checkpoint, SinkConnector, SinkWriter};
use sluice_core::{ChangeBatch, Result, SluiceError};
use sluice_sql::plan::NodeId;
use sluice_sql::{JobPlan, PlanNode};

use crate::layout::{keyed_inputs, partitioned_sources, TaskLayout};

/// Rewrites `plan` (planned at parallelism 1) into the plan of task `task`,
/// whose checkpoints belong to ownership epoch `epoch`.
pub fn task_plan(plan: JobPlan, layout: &TaskLayout, task: usize, epoch: u64) -> Result<JobPlan> {
    let pinned: Vec<(NodeId, Arc<dyn sluice_core::connector::SourceConnector>)> =
        partitioned_sources(&plan)?
            .into_iter()
            .map(|(id, source)| (id, source.pin(task)))
            .collect();
    let JobPlan {
        settings,
        nodes,
        sinks,
    } = plan;
    // Every sink of the plan, the repartition topics' too, writes as this task.
    let task_sink = |inner: Arc<dyn SinkConnector>| -> Arc<dyn SinkConnector> {
        Arc::new(TaskSink {
            inner,
            task,
            tasks: layout.tasks,
            final_checkpoint: epoch_final_checkpoint(epoch),
        })
    };
    let mut built: Vec<PlanNode> = Vec::with_capacity(nodes.len() + 2 * layout.cuts.len());
    let mut new_id: Vec<NodeId> = Vec::with_capacity(nodes.len());
    let mut task_sinks = Vec::new();
    for (id, mut node) in nodes.into_iter().enumerate() {
        let mut inputs: Vec<NodeId> = node.inputs().iter().map(|input| new_id[*input]).collect();
        if let Some(keyed) = keyed_inputs(&node)? {
            for (side, (_, keys)) in keyed.into_iter().enumerate() {
                let cut = layout
                    .cuts
                    .iter()
                    .find(|cut| cut.node == id && cut.side == side)
                    .ok_or_else(|| {
                        SluiceError::Runtime(format!(
                            "scale-out: no repartition topic for input {side} of operator {id}"
                        ))
                    })?;
                let upstream = inputs[side];
                let schema = sluice_sql::plan::output_schema(&built, upstream);
                let topic = RepartitionTopic {
                    name: cut.topic.clone(),
                    partitions: layout.tasks,
                    properties: layout.properties.clone(),
                };
                let router: RowRouter = Arc::new(move |batch: &ChangeBatch, partitions| {
                    sluice_runtime::executor::partition(batch, &keys, partitions)
                });
                let writer = RepartitionSink::new(
                    topic.clone(),
                    schema.clone(),
                    router,
                    task,
                    cut.transactional_prefix.clone(),
                );
                built.push(PlanNode::Sink {
                    input: upstream,
                    table: cut.topic.clone(),
                    connector: task_sink(Arc::new(writer)),
                    materialize_by: None,
                });
                task_sinks.push(built.len() - 1);
                built.push(PlanNode::Source {
                    table: cut.topic.clone(),
                    connector: Arc::new(RepartitionSource::new(topic, schema, task, layout.tasks)),
                    watermark: None,
                    idle_timeout: None,
                    read_fields: None,
                });
                inputs[side] = built.len() - 1;
            }
        }
        node.set_inputs(&inputs);
        match &mut node {
            PlanNode::Source { connector, .. } => {
                if let Some((_, pinned)) = pinned.iter().find(|(source, _)| *source == id) {
                    *connector = pinned.clone();
                }
            }
            PlanNode::Sink { connector, .. } => *connector = task_sink(connector.clone()),
            _ => {}
        }
        built.push(node);
        new_id.push(built.len() - 1);
    }
    let mut all_sinks: Vec<NodeId> = sinks.iter().map(|sink| new_id[*sink]).collect();
    all_sinks.extend(task_sinks);
    let mut settings = settings;
    settings.parallelism = 1;
    Ok(JobPlan {
        settings,
        nodes: built,
        sinks: all_sinks,
    })
}

/// A job's sink as one task writes it: as subtask `task` of `tasks` (so
/// transactional ids and file names differ between tasks), with the final
/// pre-commit numbered inside the task's epoch.
#[derive(Debug)]
struct TaskSink {
    inner: Arc<dyn SinkConnector>,
    task: usize,
    tasks: usize,
    final_checkpoint: u64,
}

impl SinkConnector for TaskSink {
    fn accepts_updates(&self) -> bool {
        self.inner.accepts_updates()
    }

    fn open(&self, _subtask: usize, _parallelism: usize) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(TaskWriter {
            inner: self.inner.open(self.task, self.tasks)?,
            final_checkpoint: self.final_checkpoint,
        }))
    }

    fn commit(&self, pending: &[u8]) -> Result<()> {
        self.inner.commit(pending)
    }

    fn uncommit(&self, pending: &[u8]) -> Result<()> {
        self.inner.uncommit(pending)
    }

    fn discard_uncommitted(&self, committed: &[Vec<u8>]) -> Result<()> {
        self.inner.discard_uncommitted(committed)
    }

    fn fence(&self, _subtask: usize) -> Result<()> {
        self.inner.fence(self.task)
    }

    fn describe(&self) -> String {
        format!("{} (as subtask {})", self.inner.describe(), self.task)
    }
}

struct TaskWriter {
    inner: Box<dyn SinkWriter>,
    final_checkpoint: u64,
}

#[async_trait]
impl SinkWriter for TaskWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.inner.write(batch).await
    }

    async fn end_of_input(&mut self) -> Result<()> {
        self.inner.end_of_input().await
    }

    async fn finish(&mut self) -> Result<()> {
        self.inner.finish().await
    }

    async fn on_watermark(&mut self, watermark: i64) -> Result<()> {
        self.inner.on_watermark(watermark).await
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        let checkpoint = if checkpoint == u64::MAX {
            self.final_checkpoint
        } else {
            checkpoint
        };
        self.inner.pre_commit(checkpoint).await
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.inner.snapshot()
    }

    fn restore(&mut self, states: &[Vec<u8>]) -> Result<()> {
        self.inner.restore(states)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::layout::{RepartitionCut, TaskLayout};

    const SCRIPT: &str = "
        SET 'pipeline.name' = 'stats';
        CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3),
          WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = 'localhost:1',
              'format' = 'json');
        CREATE TABLE out (auction BIGINT, bids BIGINT)
        WITH ('connector' = 'kafka', 'topic' = 'out', 'properties.bootstrap.servers' = 'localhost:1',
              'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once',
              'sink.transactional-id-prefix' = 'out');
        INSERT INTO out SELECT auction, COUNT(*)
        FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))
        GROUP BY auction, window_start, window_end;";

    fn layout(node: NodeId) -> TaskLayout {
        TaskLayout {
            job: "stats".into(),
            tasks: 4,
            source_topics: vec!["bids".into()],
            properties: BTreeMap::from([("bootstrap.servers".into(), "localhost:1".into())]),
            group_id: "sluice-stats".into(),
            group_properties: BTreeMap::new(),
            tasks_topic: "stats-tasks".into(),
            session_timeout_ms: 10_000,
            cuts: vec![RepartitionCut {
                node,
                side: 0,
                topic: "stats-window-aggregate-repartition".into(),
                transactional_prefix: "sluice-stats-window-aggregate".into(),
            }],
            checkpoints: "/tmp/stats".into(),
        }
    }

    /// The plan of [`SCRIPT`] as job `stats`.
    async fn stats_plan() -> JobPlan {
        let registry = sluice_connectors::builtin_connectors();
        sluice_sql::plan_script(SCRIPT, "stats", &registry, &BTreeMap::new())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_task_plan_cuts_keyed_inputs_and_pins_partitions() {
        let plan = stats_plan().await;
        let window = plan
            .nodes
            .iter()
            .position(|node| matches!(node, PlanNode::WindowAggregate(_)))
            .unwrap();
        let task = task_plan(plan, &layout(window), 2, 7).unwrap();
        let explained = task.explain();
        // The job's sink, as subtask 2, above the window over the repartition topic.
        assert!(
            explained.contains("kafka topic 'out' (json) (as subtask 2)"),
            "{explained}"
        );
        assert!(
            explained.contains("Source `stats-window-aggregate-repartition`: repartition topic 'stats-window-aggregate-repartition' partition 2"),
            "{explained}"
        );
        // The upstream half writes the topic, from partition 2 of the source.
        assert!(
            explained.contains("Sink `stats-window-aggregate-repartition`: repartition topic 'stats-window-aggregate-repartition' (4 partitions)"),
            "{explained}"
        );
        assert!(
            explained.contains("kafka topic 'bids' (json) partition 2"),
            "{explained}"
        );
        assert_eq!(task.sinks.len(), 2);
        // Every node's inputs come before it.
        for (id, node) in task.nodes.iter().enumerate() {
            assert!(node.inputs().iter().all(|input| *input < id), "{explained}");
        }
    }

    #[tokio::test]
    async fn a_cut_missing_from_the_layout_is_an_error() {
        let plan = stats_plan().await;
        let error = task_plan(plan, &layout(usize::MAX), 0, 1).unwrap_err();
        assert!(
            error.to_string().contains("no repartition topic"),
            "{error}"
        );
    }
}
