//! Builds the tasks of a job plan and runs them to completion (bounded input),
//! until a stop signal (unbounded input), or until the first error.
//!
//! Each plan node runs as `parallelism` subtasks. Consecutive single-input
//! operators are chained into one task per subtask; a union starts a new task
//! that merges its inputs' channels. Channels are bounded, so a slow sink slows
//! its sources (backpressure).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use sluice_core::connector::{SinkWriter, SourceReader};
use sluice_core::{ChangeBatch, Message, Result, SluiceError};
use sluice_sql::plan::{JobPlan, NodeId, PlanNode};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::batching::Coalescer;
use crate::operators::{Filter, Operator, Project, Relabel};

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
    Source(Box<dyn SourceReader>),
    Channels(Vec<mpsc::Receiver<Message>>),
}

enum Output {
    Sink(Box<dyn SinkWriter>),
    Channel(mpsc::Sender<Message>),
}

struct Task {
    input: Input,
    chain: Vec<Box<dyn Operator>>,
    output: Output,
    /// Rows read from the source, when the task starts at one.
    source_rows: Option<Arc<AtomicU64>>,
    /// Rows written, when the task ends in a sink.
    sink_rows: Option<Arc<AtomicU64>>,
}

/// Runs a job until its input ends or `stop` becomes true.
pub async fn run_job(plan: &JobPlan, stop: StopSignal) -> Result<JobSummary> {
    let mut builder = TaskBuilder::new(plan)?;
    for subtask in 0..plan.settings.parallelism {
        for &sink in &plan.sinks {
            builder.build_sink(sink, subtask)?;
        }
    }
    let TaskBuilder {
        tasks,
        source_counters,
        sink_counters,
        ..
    } = builder;

    let batching = Batching {
        rows: plan.settings.batch_size,
        linger: plan.settings.batch_linger,
    };
    let mut running = JoinSet::new();
    for task in tasks {
        running.spawn(run_task(task, stop.clone(), batching));
    }
    while let Some(joined) = running.join_next().await {
        let outcome = joined.map_err(|e| SluiceError::Runtime(format!("a task panicked: {e}")))?;
        if let Err(error) = outcome {
            running.abort_all();
            return Err(error);
        }
    }

    let mut summary = JobSummary::default();
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

struct TaskBuilder<'a> {
    plan: &'a JobPlan,
    readers: HashMap<NodeId, Vec<Option<Box<dyn SourceReader>>>>,
    tasks: Vec<Task>,
    source_counters: Vec<(NodeId, Arc<AtomicU64>)>,
    sink_counters: Vec<(NodeId, Arc<AtomicU64>)>,
}

impl<'a> TaskBuilder<'a> {
    fn new(plan: &'a JobPlan) -> Result<Self> {
        let parallelism = plan.settings.parallelism;
        let mut readers = HashMap::new();
        let mut source_counters = Vec::new();
        for (id, node) in plan.nodes.iter().enumerate() {
            if let PlanNode::Source { connector, .. } = node {
                let opened = connector.open(parallelism)?;
                if opened.len() != parallelism {
                    return Err(SluiceError::Runtime(format!(
                        "source {} opened {} readers for parallelism {parallelism}",
                        connector.describe(),
                        opened.len()
                    )));
                }
                readers.insert(id, opened.into_iter().map(Some).collect());
                source_counters.push((id, Arc::new(AtomicU64::new(0))));
            }
        }
        Ok(TaskBuilder {
            plan,
            readers,
            tasks: Vec::new(),
            source_counters,
            sink_counters: Vec::new(),
        })
    }

    fn counter(list: &[(NodeId, Arc<AtomicU64>)], node: NodeId) -> Option<Arc<AtomicU64>> {
        list.iter()
            .find(|(id, _)| *id == node)
            .map(|(_, c)| c.clone())
    }

    fn build_sink(&mut self, node: NodeId, subtask: usize) -> Result<()> {
        let PlanNode::Sink {
            input, connector, ..
        } = &self.plan.nodes[node]
        else {
            return Err(SluiceError::Runtime(format!("node {node} is not a sink")));
        };
        let (task_input, chain, source_counter) = self.build_chain(*input, subtask)?;
        let writer = connector.open(subtask, self.plan.settings.parallelism)?;
        let counter = match Self::counter(&self.sink_counters, node) {
            Some(counter) => counter,
            None => {
                let counter = Arc::new(AtomicU64::new(0));
                self.sink_counters.push((node, counter.clone()));
                counter
            }
        };
        self.tasks.push(Task {
            input: task_input,
            chain,
            output: Output::Sink(writer),
            source_rows: source_counter,
            sink_rows: Some(counter),
        });
        Ok(())
    }

    /// Builds the chain ending at `node` for one subtask; returns the chain's
    /// input, its operators, and the source counter if the chain starts at a source.
    #[allow(clippy::type_complexity)]
    fn build_chain(
        &mut self,
        node: NodeId,
        subtask: usize,
    ) -> Result<(Input, Vec<Box<dyn Operator>>, Option<Arc<AtomicU64>>)> {
        match &self.plan.nodes[node] {
            PlanNode::Source { .. } => {
                let reader = self
                    .readers
                    .get_mut(&node)
                    .and_then(|readers| readers.get_mut(subtask))
                    .and_then(Option::take)
                    .ok_or_else(|| {
                        SluiceError::Runtime(format!("source node {node} read twice"))
                    })?;
                Ok((
                    Input::Source(reader),
                    Vec::new(),
                    Self::counter(&self.source_counters, node),
                ))
            }
            PlanNode::Project {
                input,
                exprs,
                schema,
            } => {
                let (task_input, mut chain, counter) = self.build_chain(*input, subtask)?;
                chain.push(Box::new(Project::new(exprs.clone(), schema.clone())));
                Ok((task_input, chain, counter))
            }
            PlanNode::Filter { input, predicate } => {
                let (task_input, mut chain, counter) = self.build_chain(*input, subtask)?;
                chain.push(Box::new(Filter::new(predicate.clone())));
                Ok((task_input, chain, counter))
            }
            PlanNode::Union { inputs, schema } => {
                let mut receivers = Vec::with_capacity(inputs.len());
                for &branch in inputs {
                    let (branch_input, branch_chain, counter) =
                        self.build_chain(branch, subtask)?;
                    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                    self.tasks.push(Task {
                        input: branch_input,
                        chain: branch_chain,
                        output: Output::Channel(sender),
                        source_rows: counter,
                        sink_rows: None,
                    });
                    receivers.push(receiver);
                }
                Ok((
                    Input::Channels(receivers),
                    vec![Box::new(Relabel::new(schema.clone()))],
                    None,
                ))
            }
            PlanNode::Sink { .. } => Err(SluiceError::Runtime(format!(
                "sink node {node} cannot feed another operator"
            ))),
        }
    }
}

impl Task {
    /// Pushes a batch through the chain and out. Returns false when the
    /// downstream task is gone (it failed; its error ends the job).
    async fn emit(&mut self, batch: ChangeBatch, from_source: bool) -> Result<bool> {
        if let Some(counter) = self.source_rows.as_ref().filter(|_| from_source) {
            counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        }
        let mut batches = vec![batch];
        for operator in &mut self.chain {
            let mut next = Vec::with_capacity(batches.len());
            for batch in batches {
                operator.process(batch, &mut next)?;
            }
            batches = next;
        }
        for batch in batches {
            match &mut self.output {
                Output::Sink(writer) => {
                    writer.write(&batch).await?;
                    if let Some(counter) = &self.sink_rows {
                        counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    }
                }
                Output::Channel(sender) => {
                    if sender.send(Message::Data(batch)).await.is_err() {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    async fn finish(&mut self) -> Result<()> {
        match &mut self.output {
            Output::Sink(writer) => writer.finish().await,
            Output::Channel(sender) => {
                let _ = sender.send(Message::EndOfInput).await;
                Ok(())
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

async fn run_task(mut task: Task, mut stop: StopSignal, batching: Batching) -> Result<()> {
    let input = std::mem::replace(&mut task.input, Input::Channels(Vec::new()));
    match input {
        Input::Source(mut reader) => {
            let mut coalescer = Coalescer::new(batching.rows, batching.linger);
            loop {
                if *stop.borrow() {
                    break;
                }
                let deadline = coalescer.deadline();
                let ready = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped) => break,
                    _ = sleep_until_some(deadline), if deadline.is_some() => coalescer.flush()?,
                    next = reader.next_batch() => match next? {
                        Some(batch) => coalescer.push(batch)?,
                        None => break,
                    },
                };
                if let Some(batch) = ready {
                    if !task.emit(batch, true).await? {
                        return Ok(());
                    }
                }
            }
            if let Some(batch) = coalescer.flush()? {
                if !task.emit(batch, true).await? {
                    return Ok(());
                }
            }
        }
        Input::Channels(receivers) => {
            let inputs = receivers.len();
            let mut merged = futures::stream::select_all(receivers.into_iter().map(|receiver| {
                Box::pin(futures::stream::unfold(
                    receiver,
                    |mut receiver| async move {
                        receiver.recv().await.map(|message| (message, receiver))
                    },
                ))
            }));
            let mut ended = 0;
            while ended < inputs {
                match merged.next().await {
                    // All senders gone without EndOfInput: an upstream task failed.
                    None => return Ok(()),
                    Some(Message::EndOfInput) => ended += 1,
                    Some(Message::Watermark(_)) => {}
                    Some(Message::Data(batch)) => {
                        if !task.emit(batch, false).await? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
    task.finish().await
}
