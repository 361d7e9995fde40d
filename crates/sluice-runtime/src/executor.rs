//! Builds the tasks of a job plan and runs them to completion (bounded input),
//! until a stop signal (unbounded input), or until the first error.
//!
//! Each plan node runs as `parallelism` subtasks. Consecutive operators are
//! chained into one task per subtask. A union starts a new task that merges its
//! inputs' channels; a keyed operator (window aggregation) at parallelism > 1
//! starts a new task fed by a hash shuffle from every upstream subtask.
//! Channels are bounded, so a slow sink slows its sources (backpressure).
//! Watermarks flow with the data; a task with several inputs forwards the
//! minimum of its inputs' watermarks. At the end of input every source emits a
//! final watermark (`i64::MAX`) so every open window fires.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::UInt32Array;
use datafusion::physical_expr::PhysicalExpr;
use futures::{FutureExt, StreamExt};
use sluice_core::connector::{SinkWriter, SourceReader};
use sluice_core::dlq::DeadLetterQueue;
use sluice_core::{Barrier, ChangeBatch, Message, Result, SluiceError};
use sluice_sql::plan::{JobPlan, NodeId, PlanNode, WindowKind};
use sluice_state::{RestoredCheckpoint, Role, SpillArea};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::assign::WindowAssignOperator;
use crate::batching::Coalescer;
use crate::checkpoint::{
    check_compatible, coordinator, node_kind, recover_sinks, restored_chunks, CheckpointConfig,
    CheckpointHandle, CheckpointStats, ComponentKey, Coordinator, RoleKey,
};
use crate::group::GroupAggregateOperator;
use crate::join::JoinOperator;
use crate::late::LateRecords;
use crate::metrics::{JobMetrics, OperatorMetrics};
use crate::operators::{Filter, Operator, Project, Relabel};
use crate::over::OverAggregateOperator;
use crate::session::SessionAggregateOperator;
use crate::state::{key_hashes, KeyOwner, StateConfig};
use crate::temporal_join::TemporalJoinOperator;
use crate::topn::TopNOperator;
use crate::trace::BatchSampler;
use crate::upsert::UpsertMaterializer;
use crate::watermark::{SplitCursor, WatermarkAssigner, NO_SPLIT};
use crate::window::WindowAggregateOperator;
use crate::window_join::WindowJoinOperator;
use datafusion::physical_expr::expressions::Column as ColumnExpr;

/// Set to `true` to stop a job: sources stop reading, in-flight batches drain,
/// sinks flush and close.
pub type StopSignal = watch::Receiver<bool>;

/// Batches buffered per channel between two subtasks.
const CHANNEL_CAPACITY: usize = 16;

/// What a finished job did.
#[derive(Debug, Default)]
pub struct JobSummary {
    /// Per source table.
    pub sources: Vec<SourceSummary>,
    /// Per sink table.
    pub sinks: Vec<SinkSummary>,
    /// Records dropped by event-time operators because they arrived behind the watermark.
    pub late_records: u64,
    /// The same, per operator kind.
    pub late_by_operator: Vec<(String, u64)>,
    /// What checkpointing did (when on).
    pub checkpoints: Option<CheckpointStats>,
    /// The run resumed from this checkpoint.
    pub resumed_from: Option<u64>,
    /// Bytes of keyed state spilled to disk beyond `state.memory-budget`.
    pub spilled_bytes: u64,
    /// Idle keys of keyed state compacted in memory (`state.compact-idle-keys`).
    pub compacted_keys: u64,
    /// Of those, keys whose value was compressed (`state.compress-idle-keys`).
    pub compressed_keys: u64,
}

/// Rows a source emitted and rejected.
#[derive(Debug)]
pub struct SourceSummary {
    /// Table name.
    pub table: String,
    /// Rows emitted.
    pub rows: u64,
    /// Bad records skipped.
    pub skipped: u64,
    /// Bad records dead-lettered.
    pub dead_lettered: u64,
    /// The dead letter file, if any.
    pub dead_letter_path: Option<PathBuf>,
}

/// Rows a sink wrote.
#[derive(Debug)]
pub struct SinkSummary {
    /// Table name.
    pub table: String,
    /// Rows written.
    pub rows: u64,
}

enum Input {
    /// A source reader of plan node `node`; idle after `idle_timeout` without data.
    Source {
        reader: Box<dyn SourceReader>,
        idle_timeout: Option<std::time::Duration>,
        node: NodeId,
        /// The split of the batch being pushed, for per-split watermarks.
        split: Arc<SplitCursor>,
    },
    /// Channels tagged with the input number of the first operator (a join's
    /// left = 0, right = 1).
    Channels(Vec<(usize, mpsc::Receiver<Message>)>),
}

/// A task's input channels, each tagged with the input number of its first operator.
type InputChannels = Vec<(usize, mpsc::Receiver<Message>)>;

enum Output {
    Sink(Box<dyn SinkWriter>),
    Forward(mpsc::Sender<Message>),
    /// Every message to every consumer of a node read by several operators.
    Broadcast(Vec<mpsc::Sender<Message>>),
    Shuffle {
        senders: Vec<mpsc::Sender<Message>>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
    },
}

/// A chain under construction for one subtask: where it reads from and the
/// operators so far.
struct Pending {
    input: Input,
    chain: Vec<Chained>,
    source_rows: Option<Arc<AtomicU64>>,
    subtask: usize,
}

impl Pending {
    /// A chain reading channels, to be extended.
    fn channels(receivers: Vec<(usize, mpsc::Receiver<Message>)>, subtask: usize) -> Self {
        Pending {
            input: Input::Channels(receivers),
            chain: Vec::new(),
            source_rows: None,
            subtask,
        }
    }
}

/// An operator in a chain, with the plan node it runs.
struct Chained {
    node: NodeId,
    operator: Box<dyn Operator>,
}

/// An operator of a running task's chain, with its figures.
struct Stage {
    node: NodeId,
    operator: Box<dyn Operator>,
    metrics: Arc<OperatorMetrics>,
    /// What it is, for trace spans.
    kind: String,
}

impl Stage {
    /// Runs `step` (one input batch of `rows_in` rows, or a watermark) through
    /// the operator into `out`, recording its figures and, when the batch is
    /// traced, a span. Processing time counts batches, and watermarks that
    /// fired output (a window closing), not every passing watermark.
    fn run(
        &mut self,
        rows_in: Option<usize>,
        trace: Option<&tracing::Span>,
        out: &mut Vec<Message>,
        step: impl FnOnce(&mut dyn Operator, &mut Vec<Message>) -> Result<()>,
    ) -> Result<()> {
        let before = out.len();
        let span = trace.map(|parent| {
            tracing::info_span!(
                parent: parent,
                "operator",
                node = self.node,
                kind = %self.kind,
                subtask = self.metrics.subtask,
                rows_in = rows_in.unwrap_or(0),
                rows_out = tracing::field::Empty,
            )
        });
        let entered = span.as_ref().map(tracing::Span::enter);
        let started = std::time::Instant::now();
        step(self.operator.as_mut(), out)?;
        let elapsed = started.elapsed();
        drop(entered);
        if let Some(rows) = rows_in {
            self.metrics.record_input(rows);
        }
        let (rows_out, bytes_out) = emitted(&out[before..], &self.metrics);
        if rows_out > 0 {
            self.metrics.record_output(rows_out, bytes_out);
        }
        if rows_in.is_some() || rows_out > 0 {
            self.metrics.record_processing(elapsed);
        }
        if let Some(span) = span {
            span.record("rows_out", rows_out);
        }
        Ok(())
    }
}

/// Rows and bytes of the data in `messages`; records their watermarks.
fn emitted(messages: &[Message], metrics: &OperatorMetrics) -> (usize, usize) {
    let (mut rows, mut bytes) = (0, 0);
    for message in messages {
        match message {
            Message::Data(batch) => {
                rows += batch.num_rows();
                bytes += batch.data.get_array_memory_size();
            }
            Message::Watermark(watermark) => metrics.record_watermark(*watermark),
            _ => {}
        }
    }
    (rows, bytes)
}

struct Task {
    input: Input,
    chain: Vec<Stage>,
    output: Output,
    subtask: usize,
    /// The source node, when the task starts at a source reader.
    source_node: Option<NodeId>,
    /// The sink node, when the task ends in a sink.
    sink_node: Option<NodeId>,
    checkpoints: Option<CheckpointHandle>,
    /// Rows read from the source, when the task starts at one.
    source_rows: Option<Arc<AtomicU64>>,
    /// Rows written, when the task ends in a sink.
    sink_rows: Option<Arc<AtomicU64>>,
    /// The source's figures, when the task starts at one.
    source_metrics: Option<Arc<OperatorMetrics>>,
    /// The sink's figures, when the task ends in one.
    sink_metrics: Option<Arc<OperatorMetrics>>,
    /// The figures of its source and chained operators: what a full output
    /// channel holds up.
    blocked: Vec<Arc<OperatorMetrics>>,
    /// Picks the source batches to trace.
    sampler: BatchSampler,
    /// The trace of the batch being pushed, when it was sampled.
    trace: Option<tracing::Span>,
    /// The job's name, for trace spans.
    job: Arc<str>,
}

/// Runs a job until its input ends or `stop` becomes true.
pub async fn run_job(plan: &JobPlan, stop: StopSignal) -> Result<JobSummary> {
    run_job_reporting(plan, stop, None).await
}

/// Reports the rows read by all sources so far.
pub type ProgressReport = Box<dyn Fn(u64) + Send + Sync>;

/// Like [`run_job`], calling `progress` with the rows read so far every
/// interval (for progress displays).
pub async fn run_job_reporting(
    plan: &JobPlan,
    stop: StopSignal,
    progress: Option<(std::time::Duration, ProgressReport)>,
) -> Result<JobSummary> {
    run_job_checkpointed(plan, stop, progress, None, &Arc::default()).await
}

/// Like [`run_job_reporting`], with checkpoints (and resuming from
/// `checkpoints.restored`) when `checkpoints` is given, recording live
/// figures into `metrics`.
pub async fn run_job_checkpointed(
    plan: &JobPlan,
    stop: StopSignal,
    progress: Option<(std::time::Duration, ProgressReport)>,
    checkpoints: Option<&CheckpointConfig>,
    metrics: &Arc<JobMetrics>,
) -> Result<JobSummary> {
    let restored = checkpoints.and_then(|c| c.restored.clone());
    if let Some(restored) = &restored {
        check_compatible(plan, &restored.manifest)?;
    }
    if checkpoints.is_some() {
        recover_sinks(plan, restored.as_deref())?;
    }
    let (mut coordinator, handle) = match checkpoints {
        Some(config) => {
            let (coordinator, handle) = coordinator(plan, config, metrics.clone());
            (Some(coordinator), Some(handle))
        }
        None => (None, None),
    };
    let mut builder = TaskBuilder::new(plan, restored.as_deref(), handle, metrics.clone())?;
    metrics.set_late_records(builder.late_records.clone());
    for &sink in &plan.sinks {
        builder.build_sink(sink)?;
    }
    let TaskBuilder {
        tasks,
        source_counters,
        sink_counters,
        late_records,
        checkpoints: builder_handle,
        state: state_config,
        ..
    } = builder;
    // Only the tasks hold the coordinator's line: when they are all gone, it ends.
    drop(builder_handle);
    if let Some(coordinator) = coordinator.as_mut() {
        register_components(coordinator, &tasks);
    }

    let batching = Batching {
        rows: plan.settings.batch_size,
        linger: plan.settings.batch_linger,
    };
    let mut running = JoinSet::new();
    for task in tasks {
        // Tasks log inside the caller's span (scale-out names the task there).
        running.spawn(run_task(task, stop.clone(), batching).in_current_span());
    }
    let coordinating = coordinator.map(|c| tokio::spawn(c.run().in_current_span()));
    // A run dropped before it ends (a scale-out task whose process lost it)
    // stops its coordinator too.
    let _stop_coordinator = coordinating
        .as_ref()
        .map(|handle| AbortOnDrop(handle.abort_handle()));
    let reporter = progress.map(|(interval, report)| {
        let counters: Vec<Arc<AtomicU64>> =
            source_counters.iter().map(|(_, c)| c.clone()).collect();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                report(counters.iter().map(|c| c.load(Ordering::Relaxed)).sum());
            }
        })
    });
    let stop_background = || {
        if let Some(reporter) = &reporter {
            reporter.abort();
        }
        if let Some(coordinating) = &coordinating {
            coordinating.abort();
        }
    };
    while let Some(joined) = running.join_next().await {
        let outcome = joined.map_err(|e| SluiceError::Runtime(format!("a task panicked: {e}")));
        if let Err(error) = outcome.and_then(|outcome| outcome) {
            running.abort_all();
            stop_background();
            return Err(error);
        }
    }
    if let Some(reporter) = &reporter {
        reporter.abort();
    }
    let checkpoint_stats = match coordinating {
        Some(coordinating) => Some(
            coordinating
                .await
                .map_err(|e| SluiceError::Runtime(format!("the checkpoint coordinator: {e}")))??,
        ),
        None => None,
    };

    let mut summary = JobSummary {
        spilled_bytes: state_config
            .spill
            .as_ref()
            .map_or(0, |area| area.spilled_bytes()),
        compacted_keys: state_config.compacted_keys.load(Ordering::Relaxed),
        compressed_keys: state_config.compressed_keys.load(Ordering::Relaxed),
        late_records: late_records.count(),
        late_by_operator: late_records.per_operator(),
        checkpoints: checkpoint_stats,
        resumed_from: restored.map(|r| r.manifest.checkpoint),
        ..JobSummary::default()
    };
    for (node, counter) in source_counters {
        if let PlanNode::Source {
            table, connector, ..
        } = &plan.nodes[node]
        {
            let policy = connector.bad_records();
            let load = |f: fn(&sluice_core::dlq::BadRecordCounters) -> &AtomicU64| {
                policy
                    .map(|p| f(p.counters()).load(Ordering::Relaxed))
                    .unwrap_or(0)
            };
            summary.sources.push(SourceSummary {
                table: table.clone(),
                rows: counter.load(Ordering::Relaxed),
                skipped: load(|c| &c.skipped),
                dead_lettered: load(|c| &c.dead_lettered),
                dead_letter_path: policy.and_then(|p| p.dead_letter_path()).map(PathBuf::from),
            });
        }
    }
    for (node, counter) in sink_counters {
        if let PlanNode::Sink { table, .. } = &plan.nodes[node] {
            summary.sinks.push(SinkSummary {
                table: table.clone(),
                rows: counter.load(Ordering::Relaxed),
            });
        }
    }
    Ok(summary)
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells the coordinator every component that takes part in checkpoints.
fn register_components(coordinator: &mut Coordinator, tasks: &[Task]) {
    for task in tasks {
        let key = |node, role| ComponentKey {
            node,
            subtask: task.subtask,
            role,
        };
        if let Some(node) = task.source_node {
            coordinator.expect(key(node, RoleKey::Source));
        }
        for chained in &task.chain {
            coordinator.expect(key(chained.node, RoleKey::Operator));
        }
        if let Some(node) = task.sink_node {
            coordinator.expect(key(node, RoleKey::Sink));
        }
    }
}

struct TaskBuilder<'a> {
    plan: &'a JobPlan,
    parallelism: usize,
    readers: HashMap<NodeId, Vec<Box<dyn SourceReader>>>,
    tasks: Vec<Task>,
    source_counters: Vec<(NodeId, Arc<AtomicU64>)>,
    sink_counters: Vec<(NodeId, Arc<AtomicU64>)>,
    late_records: LateRecords,
    /// How many operators read each node.
    consumers: Vec<usize>,
    /// Nodes read by several operators, built once: the chains not handed out yet.
    shared: HashMap<NodeId, Vec<Vec<Pending>>>,
    /// The checkpoint the job resumes from.
    restored: Option<&'a RestoredCheckpoint>,
    /// The coordinator's line, when checkpoints are on.
    checkpoints: Option<CheckpointHandle>,
    /// TTL and memory budget of keyed state.
    state: StateConfig,
    /// Where operators record their figures.
    metrics: Arc<JobMetrics>,
    /// The job's name.
    job: Arc<str>,
}

impl<'a> TaskBuilder<'a> {
    fn new(
        plan: &'a JobPlan,
        restored: Option<&'a RestoredCheckpoint>,
        checkpoints: Option<CheckpointHandle>,
        metrics: Arc<JobMetrics>,
    ) -> Result<Self> {
        let parallelism = plan.settings.parallelism;
        let mut readers = HashMap::new();
        let mut source_counters = Vec::new();
        for (id, node) in plan.nodes.iter().enumerate() {
            if let PlanNode::Source { connector, .. } = node {
                let positions: Vec<Vec<u8>> = match restored {
                    Some(restored) => restored_chunks(restored, id, Role::Source)?
                        .into_iter()
                        .filter_map(|chunks| chunks.first().map(|c| c.to_vec()))
                        .collect(),
                    None => Vec::new(),
                };
                let opened = connector.open_at(parallelism, &positions)?;
                if opened.len() != parallelism {
                    return Err(SluiceError::Runtime(format!(
                        "source {} opened {} readers for parallelism {parallelism}",
                        connector.describe(),
                        opened.len()
                    )));
                }
                readers.insert(id, opened);
                source_counters.push((id, Arc::new(AtomicU64::new(0))));
            }
        }
        let mut consumers = vec![0; plan.nodes.len()];
        for node in &plan.nodes {
            for input in node.inputs() {
                consumers[input] += 1;
            }
        }
        Ok(TaskBuilder {
            plan,
            parallelism,
            consumers,
            shared: HashMap::new(),
            readers,
            tasks: Vec::new(),
            source_counters,
            sink_counters: Vec::new(),
            late_records: LateRecords::new(match &plan.settings.late_data_dlq {
                Some(path) => Some(Arc::new(DeadLetterQueue::open(path)?)),
                None => None,
            }),
            restored,
            checkpoints,
            metrics,
            job: plan.settings.job_name.as_str().into(),
            state: StateConfig {
                ttl: plan.settings.state_ttl,
                spill: plan
                    .settings
                    .state_memory_budget
                    .map(|budget| SpillArea::new(&plan.settings.spill_dir, budget)),
                compact_idle_keys: plan.settings.compact_idle_keys,
                compress_idle_keys: plan.settings.compress_idle_keys,
                compacted_keys: Arc::default(),
                compressed_keys: Arc::default(),
            },
        })
    }

    /// A task for `pending` ending in `output`, its operators' state restored.
    fn task(&self, pending: Pending, output: Output, sink_node: Option<NodeId>) -> Result<Task> {
        let Pending {
            input,
            chain,
            source_rows,
            subtask,
        } = pending;
        let owner = KeyOwner {
            subtask,
            parallelism: self.parallelism,
        };
        let mut stages = Vec::with_capacity(chain.len());
        for mut chained in chain {
            if let Some(restored) = self.restored {
                let chunks = restored_chunks(restored, chained.node, Role::Operator)?;
                chained.operator.restore(&chunks, &owner)?;
            }
            stages.push(Stage {
                node: chained.node,
                operator: chained.operator,
                metrics: self.metrics.operator(chained.node, subtask),
                kind: node_kind(&self.plan.nodes[chained.node]),
            });
        }
        let source_node = match &input {
            Input::Source { node, .. } => Some(*node),
            Input::Channels(_) => None,
        };
        let source_metrics = source_node.map(|node| self.metrics.operator(node, subtask));
        let blocked = source_metrics
            .iter()
            .chain(stages.iter().map(|stage| &stage.metrics))
            .cloned()
            .collect();
        Ok(Task {
            input,
            chain: stages,
            output,
            subtask,
            source_node,
            sink_node,
            checkpoints: self.checkpoints.clone(),
            source_rows,
            sink_rows: None,
            source_metrics,
            blocked,
            sink_metrics: sink_node.map(|node| self.metrics.operator(node, subtask)),
            sampler: BatchSampler::default(),
            trace: None,
            job: self.job.clone(),
        })
    }

    fn build_sink(&mut self, node: NodeId) -> Result<()> {
        let PlanNode::Sink {
            input,
            connector,
            materialize_by,
            ..
        } = &self.plan.nodes[node]
        else {
            return Err(SluiceError::Runtime(format!("node {node} is not a sink")));
        };
        let counter = Arc::new(AtomicU64::new(0));
        self.sink_counters.push((node, counter.clone()));
        let mut upstream = self.build(*input)?;
        if let (Some(key_columns), true) = (materialize_by, self.parallelism > 1) {
            // Every change of a key must reach the subtask that materializes it.
            let schema = self.plan.output_schema(*input);
            let keys = key_columns
                .iter()
                .map(|&i| {
                    Arc::new(ColumnExpr::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>
                })
                .collect();
            upstream = self
                .shuffle(upstream, keys, 0)?
                .into_iter()
                .enumerate()
                .map(|(subtask, receivers)| Pending::channels(receivers, subtask))
                .collect();
        }
        for pending in upstream {
            let subtask = pending.subtask;
            let mut writer = connector.open(subtask, self.parallelism)?;
            if let Some(key_columns) = materialize_by {
                let schema = self.plan.output_schema(*input);
                writer = Box::new(UpsertMaterializer::new(
                    writer,
                    schema,
                    key_columns.clone(),
                    KeyOwner {
                        subtask,
                        parallelism: self.parallelism,
                    },
                )?);
            }
            if let Some(restored) = self.restored {
                let states: Vec<Vec<u8>> = restored_chunks(restored, node, Role::Sink)?
                    .into_iter()
                    .filter_map(|chunks| chunks.get(1).map(|state| state.to_vec()))
                    .collect();
                writer.restore(&states)?;
            }
            let mut task = self.task(pending, Output::Sink(writer), Some(node))?;
            task.sink_rows = Some(counter.clone());
            self.tasks.push(task);
        }
        Ok(())
    }

    /// Builds the chains ending at `node`, one per subtask. A node read by
    /// several operators (e.g. a source scanned by both sides of a self-join)
    /// runs once and broadcasts its output to each of them.
    fn build(&mut self, node: NodeId) -> Result<Vec<Pending>> {
        let readers = self.consumers[node];
        if readers <= 1 {
            return self.build_node(node);
        }
        if let Some(remaining) = self.shared.get_mut(&node) {
            return remaining
                .pop()
                .ok_or_else(|| SluiceError::Runtime(format!("node {node} read too often")));
        }
        let mut per_consumer: Vec<Vec<Pending>> = (0..readers).map(|_| Vec::new()).collect();
        for pending in self.build_node(node)? {
            let mut senders = Vec::with_capacity(readers);
            for chains in per_consumer.iter_mut() {
                let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                senders.push(sender);
                chains.push(Pending::channels(vec![(0, receiver)], pending.subtask));
            }
            self.spawn(pending, Output::Broadcast(senders))?;
        }
        let first = per_consumer.pop().unwrap_or_default();
        self.shared.insert(node, per_consumer);
        Ok(first)
    }

    fn build_node(&mut self, node: NodeId) -> Result<Vec<Pending>> {
        match &self.plan.nodes[node] {
            PlanNode::Source { idle_timeout, .. } => {
                let idle_timeout = *idle_timeout;
                let readers = self.readers.remove(&node).ok_or_else(|| {
                    SluiceError::Runtime(format!("source node {node} read twice"))
                })?;
                let counter = self
                    .source_counters
                    .iter()
                    .find(|(id, _)| *id == node)
                    .map(|(_, c)| c.clone());
                Ok(readers
                    .into_iter()
                    .enumerate()
                    .map(|(subtask, reader)| Pending {
                        input: Input::Source {
                            reader,
                            idle_timeout,
                            node,
                            split: Arc::default(),
                        },
                        chain: Vec::new(),
                        source_rows: counter.clone(),
                        subtask,
                    })
                    .collect())
            }
            PlanNode::Project {
                input,
                exprs,
                schema,
            } => self.extend(node, *input, |_| {
                Ok(Box::new(Project::new(exprs.clone(), schema.clone())) as Box<dyn Operator>)
            }),
            PlanNode::Filter { input, predicate } => self.extend(node, *input, |_| {
                Ok(Box::new(Filter::new(predicate.clone())) as Box<dyn Operator>)
            }),
            PlanNode::Watermark { input, expr, .. } => {
                let mut chains = self.build(*input)?;
                for pending in chains.iter_mut() {
                    let mut assigner =
                        WatermarkAssigner::new(expr.clone(), self.plan.settings.watermark_interval);
                    // Behind its source in the same task (the operators between
                    // keep batches whole): a watermark per split of the source.
                    if let Input::Source {
                        split,
                        idle_timeout,
                        ..
                    } = &pending.input
                    {
                        assigner = assigner.per_split(split.clone(), *idle_timeout);
                    }
                    pending.chain.push(Chained {
                        node,
                        operator: Box::new(assigner),
                    });
                }
                Ok(chains)
            }
            PlanNode::Union { inputs, schema } => {
                let mut receivers: Vec<Vec<(usize, mpsc::Receiver<Message>)>> =
                    (0..self.parallelism).map(|_| Vec::new()).collect();
                for &branch in inputs {
                    for pending in self.build(branch)? {
                        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                        let subtask = pending.subtask;
                        self.spawn(pending, Output::Forward(sender))?;
                        receivers[subtask].push((0, receiver));
                    }
                }
                Ok(receivers
                    .into_iter()
                    .enumerate()
                    .map(|(subtask, receivers)| {
                        let mut pending = Pending::channels(receivers, subtask);
                        pending.chain.push(Chained {
                            node,
                            operator: Box::new(Relabel::new(schema.clone())),
                        });
                        pending
                    })
                    .collect())
            }
            PlanNode::WindowAssign(assign) => {
                let late = self.late_records.clone();
                self.extend(node, assign.input, |_| {
                    Ok(
                        Box::new(WindowAssignOperator::new(assign.clone(), late.clone()))
                            as Box<dyn Operator>,
                    )
                })
            }
            PlanNode::WindowAggregate(window) => {
                let late = self.late_records.clone();
                self.keyed(node, window.input, window.keys.clone(), || {
                    Ok(match window.kind {
                        WindowKind::Session { gap } => Box::new(SessionAggregateOperator::new(
                            window.clone(),
                            gap,
                            &window.input_schema,
                            late.clone(),
                        )?),
                        _ => Box::new(WindowAggregateOperator::new(
                            window.clone(),
                            &window.input_schema,
                            late.clone(),
                        )?),
                    })
                })
            }
            PlanNode::GroupAggregate(group) => {
                let state = self.state.clone();
                let held_rows = self.plan.settings.held_rows;
                self.keyed(node, group.input, group.keys.clone(), || {
                    Ok(Box::new(GroupAggregateOperator::new(
                        group.clone(),
                        &state,
                        held_rows,
                    )?))
                })
            }
            PlanNode::TopN(top) => {
                let state = self.state.clone();
                let late = self.late_records.clone();
                self.keyed(node, top.input, top.partition_keys.clone(), || {
                    Ok(Box::new(TopNOperator::new(
                        top.clone(),
                        &state,
                        late.clone(),
                    )?))
                })
            }
            PlanNode::OverAggregate(over) => {
                let state = self.state.clone();
                let late = self.late_records.clone();
                self.keyed(node, over.input, over.partition_keys.clone(), || {
                    Ok(Box::new(OverAggregateOperator::new(
                        over.clone(),
                        &state,
                        late.clone(),
                    )?))
                })
            }
            PlanNode::Join(join) => {
                let left_chains = self.build(join.left)?;
                let right_chains = self.build(join.right)?;
                let mut inputs: Vec<Vec<(usize, mpsc::Receiver<Message>)>> = if self.parallelism
                    == 1
                {
                    let mut receivers = Vec::new();
                    for (side, chains) in [(0, left_chains), (1, right_chains)] {
                        for pending in chains {
                            let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                            self.spawn(pending, Output::Forward(sender))?;
                            receivers.push((side, receiver));
                        }
                    }
                    vec![receivers]
                } else {
                    let mut by_subtask = self.shuffle(left_chains, join.left_keys.clone(), 0)?;
                    for (subtask, receivers) in self
                        .shuffle(right_chains, join.right_keys.clone(), 1)?
                        .into_iter()
                        .enumerate()
                    {
                        by_subtask[subtask].extend(receivers);
                    }
                    by_subtask
                };
                inputs
                    .drain(..)
                    .enumerate()
                    .map(|(subtask, receivers)| {
                        let mut pending = Pending::channels(receivers, subtask);
                        pending.chain.push(Chained {
                            node,
                            operator: if join.versioned.is_some() {
                                Box::new(TemporalJoinOperator::new(
                                    join.clone(),
                                    &self.state,
                                    self.late_records.clone(),
                                )?) as Box<dyn Operator>
                            } else if join.window.is_some() {
                                Box::new(WindowJoinOperator::new(
                                    join.clone(),
                                    &self.state,
                                    self.late_records.clone(),
                                )?)
                            } else {
                                Box::new(JoinOperator::new(
                                    join.clone(),
                                    &self.state,
                                    self.late_records.clone(),
                                )?)
                            },
                        });
                        Ok(pending)
                    })
                    .collect()
            }
            PlanNode::Sink { .. } => Err(SluiceError::Runtime(format!(
                "sink node {node} cannot feed another operator"
            ))),
        }
    }

    /// Appends a keyed operator for `node`: chained when there is one
    /// subtask, behind a hash shuffle on `keys` otherwise.
    fn keyed(
        &mut self,
        node: NodeId,
        input: NodeId,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        make: impl Fn() -> Result<Box<dyn Operator>>,
    ) -> Result<Vec<Pending>> {
        let upstream = self.build(input)?;
        let mut chains = if self.parallelism == 1 {
            upstream
        } else {
            self.shuffle(upstream, keys, 0)?
                .into_iter()
                .enumerate()
                .map(|(subtask, receivers)| Pending::channels(receivers, subtask))
                .collect()
        };
        for pending in &mut chains {
            pending.chain.push(Chained {
                node,
                operator: make()?,
            });
        }
        Ok(chains)
    }

    /// Appends an operator for `node` to every subtask's chain.
    fn extend(
        &mut self,
        node: NodeId,
        input: NodeId,
        make: impl Fn(usize) -> Result<Box<dyn Operator>>,
    ) -> Result<Vec<Pending>> {
        let mut chains = self.build(input)?;
        for pending in chains.iter_mut() {
            let operator = make(pending.subtask)?;
            pending.chain.push(Chained { node, operator });
        }
        Ok(chains)
    }

    /// Ends every upstream chain in a hash shuffle on `keys`; returns each
    /// downstream subtask's receivers (one per upstream subtask).
    fn shuffle(
        &mut self,
        upstream: Vec<Pending>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        side: usize,
    ) -> Result<Vec<InputChannels>> {
        let mut receivers: Vec<InputChannels> = (0..self.parallelism).map(|_| Vec::new()).collect();
        for pending in upstream {
            let mut senders = Vec::with_capacity(self.parallelism);
            for downstream in receivers.iter_mut() {
                let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                senders.push(sender);
                downstream.push((side, receiver));
            }
            self.spawn(
                pending,
                Output::Shuffle {
                    senders,
                    keys: keys.clone(),
                },
            )?;
        }
        Ok(receivers)
    }

    fn spawn(&mut self, pending: Pending, output: Output) -> Result<()> {
        let task = self.task(pending, output, None)?;
        self.tasks.push(task);
        Ok(())
    }
}

/// Splits a batch by the hash of its key columns into one part per target:
/// the partitioning of the hash shuffles and of scale-out's repartition
/// topics, and the one [`KeyOwner`] restores state by.
pub fn partition(
    batch: &ChangeBatch,
    keys: &[Arc<dyn PhysicalExpr>],
    targets: usize,
) -> Result<Vec<Option<ChangeBatch>>> {
    let hashes = key_hashes(batch, keys)?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); targets];
    for (row, hash) in hashes.iter().enumerate() {
        indices[KeyOwner::target(*hash, targets)].push(row as u32);
    }
    indices
        .into_iter()
        .map(|rows| {
            if rows.is_empty() {
                Ok(None)
            } else {
                batch.take(&UInt32Array::from(rows)).map(Some)
            }
        })
        .collect()
}

impl Task {
    /// Pushes a message through the chain and out. Returns false when a
    /// downstream task is gone (it failed; its error ends the job).
    async fn push(&mut self, message: Message) -> Result<bool> {
        self.push_input(0, message).await
    }

    /// Like [`Task::push`], for a message from input `input` of the first operator.
    async fn push_input(&mut self, input: usize, message: Message) -> Result<bool> {
        let messages = match (message, self.chain.first_mut()) {
            (Message::Data(batch), Some(first)) => {
                let mut next = Vec::new();
                let rows = batch.num_rows();
                first.run(
                    Some(rows),
                    self.trace.as_ref(),
                    &mut next,
                    |operator, out| operator.process_input(input, batch, out),
                )?;
                next
            }
            (message, _) => return self.run_chain(0, vec![message]).await,
        };
        self.run_chain(1, messages).await
    }

    /// Tells the first operator that input `input` has ended.
    async fn end_input(&mut self, input: usize) -> Result<bool> {
        let mut messages = Vec::new();
        if let Some(first) = self.chain.first_mut() {
            first.run(None, None, &mut messages, |operator, out| {
                operator.on_input_end(input, out)
            })?;
        }
        self.run_chain(1, messages).await
    }

    fn key(&self, node: NodeId, role: RoleKey) -> ComponentKey {
        ComponentKey {
            node,
            subtask: self.subtask,
            role,
        }
    }

    /// Runs messages through the chain from operator `start` on, then out.
    /// A barrier makes each operator snapshot its state on the way.
    async fn run_chain(&mut self, start: usize, mut messages: Vec<Message>) -> Result<bool> {
        let subtask = self.subtask;
        let trace = self.trace.as_ref();
        for stage in self.chain.iter_mut().skip(start) {
            let mut next = Vec::with_capacity(messages.len());
            for message in messages {
                match message {
                    Message::Data(batch) => {
                        let rows = batch.num_rows();
                        stage.run(Some(rows), trace, &mut next, |operator, out| {
                            operator.process(batch, out)
                        })?
                    }
                    Message::Watermark(watermark) => {
                        stage.run(None, None, &mut next, |operator, out| {
                            operator.on_watermark(watermark, out)
                        })?
                    }
                    Message::Barrier(barrier) => {
                        // Held rows belong before the barrier, in this checkpoint.
                        if stage.operator.holds_rows() {
                            stage
                                .run(None, None, &mut next, |operator, out| operator.flush(out))?;
                        }
                        if let Some(checkpoints) = &self.checkpoints {
                            let key = ComponentKey {
                                node: stage.node,
                                subtask,
                                role: RoleKey::Operator,
                            };
                            let state = stage.operator.snapshot()?;
                            let bytes = state.iter().map(|chunk| chunk.len() as u64).sum();
                            stage.metrics.record_state_bytes(bytes);
                            checkpoints.ack(barrier.checkpoint, key, state);
                        }
                        next.push(Message::Barrier(barrier));
                    }
                    Message::EndOfInput => next.push(Message::EndOfInput),
                    Message::Idle => next.push(Message::Idle),
                    // Markers travel between tasks only; a chain keeps its trace on the task.
                    Message::Traced(_) => {}
                }
            }
            messages = next;
        }
        for message in messages {
            if !self.deliver(message).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether an operator of the chain holds rows back.
    fn holds_rows(&self) -> bool {
        self.chain.iter().any(|stage| stage.operator.holds_rows())
    }

    /// Has the chain's operators process the rows they hold back, in chain
    /// order, and sends the results on. False when downstream is gone.
    async fn flush_chain(&mut self) -> Result<bool> {
        for start in 0..self.chain.len() {
            if !self.chain[start].operator.holds_rows() {
                continue;
            }
            let mut flushed = Vec::new();
            self.chain[start].run(None, None, &mut flushed, |operator, out| {
                operator.flush(out)
            })?;
            if !self.run_chain(start + 1, flushed).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Pushes a batch read from this task's source, counting its rows, and
    /// tracing it when the sampler picks it.
    async fn push_from_source(&mut self, batch: ChangeBatch) -> Result<bool> {
        let rows = batch.num_rows();
        if let Some(counter) = &self.source_rows {
            counter.fetch_add(rows as u64, Ordering::Relaxed);
        }
        if let Some(metrics) = &self.source_metrics {
            metrics.record_output(rows, batch.data.get_array_memory_size());
        }
        if self.sampler.sample() {
            self.trace = Some(tracing::info_span!(
                parent: None,
                "batch",
                job = %self.job,
                source = self.source_node.unwrap_or_default(),
                subtask = self.subtask,
                rows,
            ));
        }
        let pushed = self.push(Message::Data(batch)).await;
        self.trace = None;
        pushed
    }

    /// A sink's snapshot: what it pre-committed, and its own state.
    async fn sink_snapshot(
        writer: &mut Box<dyn SinkWriter>,
        checkpoint: u64,
    ) -> Result<Vec<Vec<u8>>> {
        let pending = writer.pre_commit(checkpoint).await?;
        Ok(vec![pending, writer.snapshot()?])
    }

    async fn deliver(&mut self, message: Message) -> Result<bool> {
        let blocked = Blocked(&self.blocked);
        let traced = match (&message, &self.trace) {
            (Message::Data(_), Some(span)) => Some(span),
            _ => None,
        };
        match &mut self.output {
            Output::Sink(writer) => {
                match message {
                    Message::Data(batch) => {
                        let rows = batch.num_rows();
                        let started = std::time::Instant::now();
                        match traced {
                            Some(parent) => {
                                let span = tracing::info_span!(parent: parent, "sink.write", node = self.sink_node.unwrap_or_default(), rows);
                                writer.write(&batch).instrument(span).await?
                            }
                            None => writer.write(&batch).await?,
                        }
                        if let Some(metrics) = &self.sink_metrics {
                            metrics.record_processing(started.elapsed());
                            metrics.record_input(rows);
                        }
                        if let Some(counter) = &self.sink_rows {
                            counter.fetch_add(rows as u64, Ordering::Relaxed);
                        }
                    }
                    Message::Watermark(watermark) => {
                        if let Some(metrics) = &self.sink_metrics {
                            metrics.record_watermark(watermark);
                        }
                        writer.on_watermark(watermark).await?;
                    }
                    Message::Barrier(barrier) => {
                        if let (Some(checkpoints), Some(node)) = (&self.checkpoints, self.sink_node)
                        {
                            let chunks = Self::sink_snapshot(writer, barrier.checkpoint).await?;
                            let key = ComponentKey {
                                node,
                                subtask: self.subtask,
                                role: RoleKey::Sink,
                            };
                            checkpoints.ack(barrier.checkpoint, key, chunks);
                        }
                    }
                    _ => {}
                }
                Ok(true)
            }
            Output::Forward(sender) => Ok(blocked.send(sender, message, traced).await),
            Output::Broadcast(senders) => {
                for sender in senders.iter() {
                    if !blocked.send(sender, message.clone(), traced).await {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Output::Shuffle { senders, keys } => match message {
                Message::Data(batch) => {
                    let parts = partition(&batch, keys, senders.len())?;
                    for (sender, part) in senders.iter().zip(parts) {
                        if let Some(part) = part {
                            if !blocked.send(sender, Message::Data(part), traced).await {
                                return Ok(false);
                            }
                        }
                    }
                    Ok(true)
                }
                other => {
                    for sender in senders.iter() {
                        if !blocked.send(sender, other.clone(), None).await {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                }
            },
        }
    }

    /// Fires everything event time still holds, then closes the output. With
    /// checkpoints, a sink pre-commits instead of publishing, and every
    /// component reports its final state; the final checkpoint commits.
    async fn finish(&mut self) -> Result<()> {
        if !self.flush_chain().await? || !self.push(Message::Watermark(i64::MAX)).await? {
            return Ok(());
        }
        match &mut self.output {
            Output::Sink(writer) => {
                writer.end_of_input().await?;
                match (&self.checkpoints, self.sink_node) {
                    (Some(checkpoints), Some(node)) => {
                        let chunks = Self::sink_snapshot(writer, u64::MAX).await?;
                        let key = ComponentKey {
                            node,
                            subtask: self.subtask,
                            role: RoleKey::Sink,
                        };
                        checkpoints.finished(key, chunks);
                    }
                    _ => writer.finish().await?,
                }
            }
            Output::Forward(_) | Output::Broadcast(_) | Output::Shuffle { .. } => {
                self.deliver(Message::EndOfInput).await?;
            }
        }
        if let Some(checkpoints) = &self.checkpoints {
            for chained in &self.chain {
                checkpoints.finished(self.key(chained.node, RoleKey::Operator), Vec::new());
            }
        }
        Ok(())
    }
}

/// The figures a task's blocked output is charged to: every operator of its
/// chain (and its source) waits while the next task's channel is full.
struct Blocked<'a>(&'a [Arc<OperatorMetrics>]);

impl Blocked<'_> {
    /// Sends `message` (after the trace marker, when the batch is traced);
    /// false when the receiver is gone. Time spent waiting on a full channel
    /// counts as backpressure.
    async fn send(
        &self,
        sender: &mpsc::Sender<Message>,
        message: Message,
        traced: Option<&tracing::Span>,
    ) -> bool {
        if let Some(span) = traced {
            if !self.send_one(sender, Message::Traced(span.clone())).await {
                return false;
            }
        }
        self.send_one(sender, message).await
    }

    async fn send_one(&self, sender: &mpsc::Sender<Message>, message: Message) -> bool {
        match sender.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(message)) => {
                let started = std::time::Instant::now();
                let sent = sender.send(message).await.is_ok();
                let waited = started.elapsed();
                for metrics in self.0 {
                    metrics.record_backpressure(waited);
                }
                sent
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// How sources batch their output.
#[derive(Debug, Clone, Copy)]
struct Batching {
    rows: usize,
    linger: std::time::Duration,
}

/// What a source task does when it sees a checkpoint trigger.
enum AfterBarrier {
    Continue,
    /// Downstream is gone, or the barrier stops the job.
    Exit,
}

async fn run_task(mut task: Task, stop: StopSignal, batching: Batching) -> Result<()> {
    let input = std::mem::replace(&mut task.input, Input::Channels(Vec::new()));
    let finish = match input {
        Input::Source {
            reader,
            idle_timeout,
            node,
            split,
        } => {
            let source = SourceInput {
                reader,
                idle_timeout,
                node,
                split,
            };
            run_source(&mut task, source, stop, batching).await?
        }
        Input::Channels(receivers) => run_channels(&mut task, receivers).await?,
    };
    if finish {
        task.finish().await?;
    }
    Ok(())
}

/// A source task's input.
struct SourceInput {
    reader: Box<dyn SourceReader>,
    idle_timeout: Option<std::time::Duration>,
    node: NodeId,
    split: Arc<SplitCursor>,
}

/// Reads a source until it ends (true: finish the task) or the task must
/// exit without finishing (false). Batches of one split are coalesced; the
/// split of each pushed batch is published on the source's split cursor.
async fn run_source(
    task: &mut Task,
    source: SourceInput,
    mut stop: StopSignal,
    batching: Batching,
) -> Result<bool> {
    let SourceInput {
        mut reader,
        idle_timeout,
        node,
        split: cursor,
    } = source;
    cursor.set_known(reader.splits());
    let mut coalesced_split = NO_SPLIT;
    let mut coalescer = Coalescer::new(batching.rows, batching.linger);
    let mut idle_at = idle_timeout.map(|t| tokio::time::Instant::now() + t);
    let mut triggers = task.checkpoints.as_ref().map(CheckpointHandle::triggers);
    let mut deep_for = 0u32;
    loop {
        if *stop.borrow() {
            break;
        }
        let deadline = coalescer.deadline();
        let holding = task.holds_rows();
        // While the chain gathers batches (and for a while after: it stops
        // holding each time it aggregates), the reader may decode further ahead.
        deep_for = if holding {
            DEEP_READ_LOOPS
        } else {
            deep_for.saturating_sub(1)
        };
        reader.read_ahead(deep_for > 0);
        let mut flush = false;
        let mut went_idle = false;
        let mut barrier = None;
        let mut read = None;
        let ready = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            changed = wait_for_trigger(&mut triggers) => {
                barrier = changed;
                None
            }
            _ = sleep_until_some(deadline), if deadline.is_some() => coalescer.flush()?,
            _ = sleep_until_some(idle_at), if idle_at.is_some() => {
                idle_at = None;
                went_idle = true;
                None
            }
            next = reader.next_batch() => match next? {
                Some(batch) => {
                    idle_at = idle_timeout.map(|t| tokio::time::Instant::now() + t);
                    read = Some(batch);
                    None
                }
                None => break,
            },
            // Nothing else is ready: the rows the chain holds go out.
            _ = std::future::ready(()), if holding => {
                flush = true;
                None
            }
        };
        if flush {
            if !task.flush_chain().await? {
                return Ok(false);
            }
            continue;
        }
        let ready = match read {
            None => ready,
            Some(batch) => {
                let split = reader.batch_split().unwrap_or(NO_SPLIT);
                if split != coalesced_split {
                    // Batches of another split are not mixed in.
                    if let Some(earlier) = coalescer.flush()? {
                        cursor.set_current(coalesced_split);
                        if !task.push_from_source(earlier).await? {
                            return Ok(false);
                        }
                    }
                    coalesced_split = split;
                }
                coalescer.push(batch)?
            }
        };
        cursor.set_current(coalesced_split);
        if let Some(barrier) = barrier {
            match source_barrier(task, &mut coalescer, &mut reader, node, barrier).await? {
                AfterBarrier::Continue => continue,
                AfterBarrier::Exit => return Ok(false),
            }
        }
        // No data for the idle timeout: stop holding back the watermark.
        if went_idle && !task.push(Message::Idle).await? {
            return Ok(false);
        }
        if let Some(batch) = ready {
            if !task.push_from_source(batch).await? {
                return Ok(false);
            }
            // A source whose input is always ready never returns Pending; yield
            // so idle workers can steal the other subtasks queued behind it.
            tokio::task::yield_now().await;
        }
        // A watermark the input carries follows the rows read before it.
        if let Some(watermark) = reader.watermark() {
            if let Some(batch) = coalescer.flush()? {
                if !task.push_from_source(batch).await? {
                    return Ok(false);
                }
            }
            if !task.push(Message::Watermark(watermark)).await? {
                return Ok(false);
            }
        }
    }
    if let Some(batch) = coalescer.flush()? {
        if !task.push_from_source(batch).await? {
            return Ok(false);
        }
    }
    if let Some(checkpoints) = &task.checkpoints {
        checkpoints.finished(task.key(node, RoleKey::Source), vec![reader.position()?]);
    }
    Ok(true)
}

/// Source loop turns a reader keeps reading deep after its chain last held rows.
const DEEP_READ_LOOPS: u32 = 64;

/// The next checkpoint trigger (never, without checkpoints).
async fn wait_for_trigger(
    triggers: &mut Option<tokio::sync::watch::Receiver<Option<Barrier>>>,
) -> Option<Barrier> {
    let Some(receiver) = triggers.as_mut() else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_err() {
        // The coordinator is gone: no more checkpoints.
        *triggers = None;
        return None;
    }
    let barrier = *receiver.borrow_and_update();
    barrier
}

/// Emits what the source buffered, records its position and sends the barrier on.
async fn source_barrier(
    task: &mut Task,
    coalescer: &mut Coalescer,
    reader: &mut Box<dyn SourceReader>,
    node: NodeId,
    barrier: Barrier,
) -> Result<AfterBarrier> {
    if let Some(batch) = coalescer.flush()? {
        if !task.push_from_source(batch).await? {
            return Ok(AfterBarrier::Exit);
        }
    }
    if let Some(checkpoints) = &task.checkpoints {
        let key = task.key(node, RoleKey::Source);
        checkpoints.ack(barrier.checkpoint, key, vec![reader.position()?]);
    }
    if !task.push(Message::Barrier(barrier)).await? || barrier.stop {
        return Ok(AfterBarrier::Exit);
    }
    Ok(AfterBarrier::Continue)
}

/// Merges a task's input channels: forwards the least watermark, aligns
/// checkpoint barriers (an input that delivered the barrier is held back
/// until every open input has), and passes end-of-input on. Returns true
/// when every input ended (finish the task), false to exit without finishing.
async fn run_channels(
    task: &mut Task,
    receivers: Vec<(usize, mpsc::Receiver<Message>)>,
) -> Result<bool> {
    let inputs = receivers.len();
    let sides: Vec<usize> = receivers.iter().map(|(side, _)| *side).collect();
    let mut merged =
        futures::stream::select_all(receivers.into_iter().map(|(_, r)| r).enumerate().map(
            |(index, receiver)| {
                Box::pin(futures::stream::unfold(
                    receiver,
                    move |mut receiver| async move {
                        receiver
                            .recv()
                            .await
                            .map(|message| ((index, message), receiver))
                    },
                ))
            },
        ));
    let mut watermarks = vec![i64::MIN; inputs];
    let mut closed = vec![false; inputs];
    let mut idle = vec![false; inputs];
    let mut forwarded_idle = false;
    let mut forwarded = i64::MIN;
    let mut ended = 0;
    // Barrier alignment: the barrier being aligned, the inputs that delivered
    // it, and their later messages, held until it is aligned.
    let mut aligning: Option<Barrier> = None;
    let mut last_aligned = 0u64;
    let mut blocked = vec![false; inputs];
    let mut held: VecDeque<(usize, Message)> = VecDeque::new();
    // The trace of the next batch of each input, when it was sampled.
    let mut traces: Vec<Option<tracing::Span>> = vec![None; inputs];
    while ended < inputs {
        let next = match held.iter().position(|(index, _)| !blocked[*index]) {
            Some(position) => held.remove(position),
            None if task.holds_rows() => match merged.next().now_or_never() {
                Some(next) => next,
                // Nothing is ready: the rows the chain holds go out first.
                None => {
                    if !task.flush_chain().await? {
                        return Ok(false);
                    }
                    merged.next().await
                }
            },
            None => merged.next().await,
        };
        let Some((index, message)) = next else {
            // All senders gone without EndOfInput: an upstream task failed
            // or a stop-with-savepoint barrier passed.
            return Ok(false);
        };
        if blocked[index] {
            held.push_back((index, message));
            continue;
        }
        if !matches!(message, Message::Idle) {
            idle[index] = false;
        }
        match message {
            Message::Data(batch) => {
                forwarded_idle = false;
                task.trace = traces[index].take();
                let pushed = task.push_input(sides[index], Message::Data(batch)).await;
                task.trace = None;
                if !pushed? {
                    return Ok(false);
                }
                continue;
            }
            Message::Traced(span) => {
                traces[index] = Some(span);
                continue;
            }
            Message::Barrier(barrier) => {
                if barrier.checkpoint <= last_aligned {
                    continue;
                }
                match aligning {
                    Some(current) if barrier.checkpoint < current.checkpoint => continue,
                    Some(current) if barrier.checkpoint > current.checkpoint => {
                        // The older checkpoint was abandoned: align the new one.
                        blocked.fill(false);
                        aligning = Some(barrier);
                    }
                    Some(_) => {}
                    None => aligning = Some(barrier),
                }
                blocked[index] = true;
            }
            Message::Idle => {
                idle[index] = true;
                let all_idle = (0..inputs).all(|i| idle[i] || closed[i]);
                if all_idle && !forwarded_idle {
                    forwarded_idle = true;
                    if !task.push(Message::Idle).await? {
                        return Ok(false);
                    }
                }
            }
            Message::EndOfInput => {
                ended += 1;
                watermarks[index] = i64::MAX;
                closed[index] = true;
                let side = sides[index];
                let side_open = (0..inputs).any(|other| sides[other] == side && !closed[other]);
                if !side_open && !task.end_input(side).await? {
                    return Ok(false);
                }
            }
            Message::Watermark(watermark) => {
                watermarks[index] = watermarks[index].max(watermark);
            }
        }
        if let Some(barrier) = aligning {
            if (0..inputs).all(|i| blocked[i] || closed[i]) {
                aligning = None;
                last_aligned = barrier.checkpoint;
                blocked.fill(false);
                if !task.push(Message::Barrier(barrier)).await? || barrier.stop {
                    return Ok(false);
                }
            }
        }
        // Idle inputs do not hold the watermark back (unless all are idle).
        let combined = (0..inputs)
            .filter(|&i| !idle[i])
            .map(|i| watermarks[i])
            .min()
            .unwrap_or(forwarded);
        if combined > forwarded && combined < i64::MAX {
            forwarded = combined;
            if !task.push(Message::Watermark(combined)).await? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
