//! The checkpoint coordinator. It triggers checkpoints at the sources, which
//! inject barriers into their streams; every operator snapshots its state when
//! the barrier passes (tasks with several inputs align the barrier first),
//! every sink pre-commits. Once every component has acknowledged (or has
//! finished), the coordinator stores the snapshots, writes the manifest, and
//! then tells the sinks to commit: output is published exactly when the
//! checkpoint covering it is durable. At the end of bounded input a final
//! checkpoint commits the rest. Savepoints are checkpoints copied to a
//! directory of their own, requested through the job's control directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_core::connector::SinkConnector;
use sluice_core::{Barrier, Result, SluiceError};
use sluice_sql::plan::{JobPlan, NodeId, PlanNode};
use sluice_sql::settings::CheckpointSettings;
use sluice_state::{
    CheckpointStore, ComponentState, Manifest, RestoredCheckpoint, Role, SnapshotKind,
    FORMAT_VERSION,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::metrics::JobMetrics;

/// A checkpointed part of a running job: one subtask of a plan node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ComponentKey {
    pub node: NodeId,
    pub subtask: usize,
    pub role: RoleKey,
}

/// [`Role`], ordered and hashable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RoleKey {
    Source,
    Operator,
    Sink,
}

impl RoleKey {
    fn role(self) -> Role {
        match self {
            RoleKey::Source => Role::Source,
            RoleKey::Operator => Role::Operator,
            RoleKey::Sink => Role::Sink,
        }
    }
}

/// What tasks tell the coordinator.
enum Report {
    /// A component's snapshot for a checkpoint.
    Ack {
        checkpoint: u64,
        key: ComponentKey,
        chunks: Vec<Vec<u8>>,
    },
    /// A component reached the end of its input; its final snapshot.
    Finished {
        key: ComponentKey,
        chunks: Vec<Vec<u8>>,
    },
}

/// A task's line to the coordinator.
#[derive(Clone)]
pub(crate) struct CheckpointHandle {
    reports: mpsc::UnboundedSender<Report>,
    triggers: watch::Receiver<Option<Barrier>>,
}

impl CheckpointHandle {
    /// Acknowledges `checkpoint` with a component's snapshot.
    pub fn ack(&self, checkpoint: u64, key: ComponentKey, chunks: Vec<Vec<u8>>) {
        let _ = self.reports.send(Report::Ack {
            checkpoint,
            key,
            chunks,
        });
    }

    /// Reports that a component finished, with its final snapshot.
    pub fn finished(&self, key: ComponentKey, chunks: Vec<Vec<u8>>) {
        let _ = self.reports.send(Report::Finished { key, chunks });
    }

    /// Checkpoint triggers (for source tasks).
    pub fn triggers(&self) -> watch::Receiver<Option<Barrier>> {
        self.triggers.clone()
    }
}

/// Checkpointing of one job run.
pub struct CheckpointConfig {
    /// Where checkpoints go.
    pub store: CheckpointStore,
    /// Interval, timeout, retention.
    pub settings: CheckpointSettings,
    /// The checkpoint or savepoint the run resumes from.
    pub restored: Option<Arc<RestoredCheckpoint>>,
    /// Directory polled for savepoint requests (see [`request_savepoint`]).
    pub control_dir: Option<PathBuf>,
    /// Number of the run's first checkpoint (after any already stored).
    pub first_checkpoint: u64,
    /// Scale-out: checked before every manifest is written, so a process
    /// that lost its task stores no more checkpoints for it.
    pub fence: Option<Arc<dyn CheckpointFence>>,
}

/// A check that this run still owns what it checkpoints (scale-out's tasks).
#[async_trait::async_trait]
pub trait CheckpointFence: Send + Sync {
    /// Fails when another process has taken over.
    async fn check(&self) -> Result<()>;
}

/// What the checkpoints of a run did.
#[derive(Debug, Default, Clone)]
pub struct CheckpointStats {
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints abandoned (timed out).
    pub abandoned: u64,
    /// The last completed checkpoint's number.
    pub last_checkpoint: Option<u64>,
    /// Its total state size in bytes.
    pub last_bytes: u64,
    /// Bytes it had to write (chunks not stored before).
    pub last_written_bytes: u64,
    /// From trigger to committed.
    pub last_duration: Duration,
    /// Its state bytes per operator kind.
    pub last_bytes_by_operator: Vec<(String, u64)>,
    /// Longest trigger-to-commit time.
    pub max_duration: Duration,
}

/// A request to take a savepoint, as a file in the job's control directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavepointRequest {
    /// Directory (or object store URL) to write the savepoint to; empty:
    /// only a checkpoint in the job's own store.
    pub target: String,
    /// Stop the job once the savepoint is taken (without draining).
    pub stop: bool,
}

/// The answer to a [`SavepointRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub struct SavepointResponse {
    /// The savepoint's location, when it was taken.
    pub savepoint: Option<String>,
    /// Its checkpoint number.
    pub checkpoint: Option<u64>,
    /// Why it was not taken.
    pub error: Option<String>,
}

/// Asks the job running with `control_dir` for a savepoint and waits for the
/// answer (up to `timeout`).
pub async fn request_savepoint(
    control_dir: &std::path::Path,
    request: &SavepointRequest,
    timeout: Duration,
) -> Result<SavepointResponse> {
    std::fs::create_dir_all(control_dir).map_err(|e| {
        SluiceError::io(
            format!("creating control directory '{}'", control_dir.display()),
            e,
        )
    })?;
    let name = format!("{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    let temporary = control_dir.join(format!(".{name}.tmp"));
    let body = serde_json::to_vec(request).map_err(|e| SluiceError::State(e.to_string()))?;
    std::fs::write(&temporary, body)
        .map_err(|e| SluiceError::io(format!("writing '{}'", temporary.display()), e))?;
    let request_path = control_dir.join(format!("{name}.savepoint"));
    std::fs::rename(&temporary, &request_path)
        .map_err(|e| SluiceError::io(format!("writing '{}'", request_path.display()), e))?;
    let response_path = control_dir.join(format!("{name}.response"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(body) = std::fs::read(&response_path) {
            let _ = std::fs::remove_file(&response_path);
            return serde_json::from_slice(&body)
                .map_err(|e| SluiceError::State(format!("bad savepoint response: {e}")));
        }
        if Instant::now() > deadline {
            let _ = std::fs::remove_file(&request_path);
            return Err(SluiceError::State(format!(
                "no answer from the job within {timeout:?}: is it running with data directory \
                 '{}'?",
                control_dir.parent().unwrap_or(control_dir).display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Failpoints for crash tests: `SLUICE_FAILPOINT=<name>:<checkpoint>` aborts
/// the process at that point of that checkpoint, as a `kill -9` would.
fn failpoint(name: &str, checkpoint: u64) {
    if let Ok(spec) = std::env::var("SLUICE_FAILPOINT") {
        if spec == format!("{name}:{checkpoint}") {
            eprintln!("failpoint {spec}: aborting");
            std::process::abort();
        }
    }
}

/// A short name per plan node kind, for the manifest's fingerprint and the
/// per-operator state sizes.
pub(crate) fn node_kind(node: &PlanNode) -> String {
    let description = node.describe();
    let mut words = description.split([' ', '(', ':']).filter(|w| !w.is_empty());
    let mut kind = words.next().unwrap_or("").to_string();
    // Window kinds (`WindowAggregate HOP`) tell operators apart.
    if let Some(next) = words
        .next()
        .filter(|w| w.chars().all(|c| c.is_ascii_uppercase()))
    {
        kind.push(' ');
        kind.push_str(next);
    }
    kind
}

struct InFlight {
    barrier: Barrier,
    started: Instant,
    acks: HashMap<ComponentKey, Vec<Vec<u8>>>,
    savepoint: Option<(PathBuf, SavepointRequest)>,
}

/// The coordinator of one job run.
pub(crate) struct Coordinator {
    store: CheckpointStore,
    settings: CheckpointSettings,
    job: String,
    parallelism: usize,
    operators: Vec<String>,
    expected: Vec<ComponentKey>,
    sinks: HashMap<NodeId, Arc<dyn SinkConnector>>,
    reports: mpsc::UnboundedReceiver<Report>,
    trigger: watch::Sender<Option<Barrier>>,
    control_dir: Option<PathBuf>,
    fence: Option<Arc<dyn CheckpointFence>>,
    next_checkpoint: u64,
    stored: HashSet<String>,
    finished: HashMap<ComponentKey, Vec<Vec<u8>>>,
    in_flight: Option<InFlight>,
    /// Output sinks pre-committed into checkpoints that were abandoned or
    /// failed, oldest first: the next stored checkpoint records and commits
    /// it before its own, so nothing pre-committed is ever dropped.
    carried: HashMap<ComponentKey, Vec<Vec<u8>>>,
    last_completed: Instant,
    stats: CheckpointStats,
    /// Live figures, across the job's runs.
    metrics: Arc<JobMetrics>,
}

/// Index in a sink's checkpointed chunks where output carried over from
/// abandoned checkpoints starts (after the pending output and the writer
/// state).
const CARRIED_CHUNKS: usize = 2;

/// The pre-committed output a sink component recorded, in commit order:
/// output carried over from abandoned checkpoints first, then its own.
pub(crate) fn sink_pendings<T>(chunks: &[T]) -> impl Iterator<Item = &T> {
    chunks
        .get(CARRIED_CHUNKS..)
        .unwrap_or(&[])
        .iter()
        .chain(chunks.first())
}

/// The coordinator and the handle its tasks report to.
pub(crate) fn coordinator(
    plan: &JobPlan,
    config: &CheckpointConfig,
    metrics: Arc<JobMetrics>,
) -> (Coordinator, CheckpointHandle) {
    let (reports_sender, reports) = mpsc::unbounded_channel();
    let (trigger, triggers) = watch::channel(None);
    let sinks = plan
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(id, node)| match node {
            PlanNode::Sink { connector, .. } => Some((id, connector.clone())),
            _ => None,
        })
        .collect();
    let next_checkpoint = config
        .restored
        .as_ref()
        .map(|r| r.manifest.checkpoint + 1)
        .unwrap_or(1)
        .max(config.first_checkpoint);
    let coordinator = Coordinator {
        store: config.store.clone(),
        settings: config.settings.clone(),
        job: plan.settings.job_name.clone(),
        parallelism: plan.settings.parallelism,
        operators: plan.nodes.iter().map(node_kind).collect(),
        expected: Vec::new(),
        sinks,
        reports,
        trigger,
        control_dir: config.control_dir.clone(),
        fence: config.fence.clone(),
        next_checkpoint,
        stored: HashSet::new(),
        finished: HashMap::new(),
        in_flight: None,
        carried: HashMap::new(),
        last_completed: Instant::now(),
        stats: CheckpointStats::default(),
        metrics,
    };
    let handle = CheckpointHandle {
        reports: reports_sender,
        triggers,
    };
    (coordinator, handle)
}

/// Checks that a checkpoint belongs to this job's plan.
pub(crate) fn check_compatible(plan: &JobPlan, manifest: &Manifest) -> Result<()> {
    let operators: Vec<String> = plan.nodes.iter().map(node_kind).collect();
    if operators != manifest.operators {
        let first_difference = operators
            .iter()
            .zip(&manifest.operators)
            .position(|(a, b)| a != b)
            .unwrap_or(operators.len().min(manifest.operators.len()));
        return Err(SluiceError::State(format!(
            "checkpoint {} of job '{}' does not match this job's plan (operator {first_difference}: \
             checkpoint has {:?}, job has {:?}); run with --fresh to start over",
            manifest.checkpoint,
            manifest.job,
            manifest.operators.get(first_difference),
            operators.get(first_difference),
        )));
    }
    Ok(())
}

/// The checkpoint to recover from: the newest intact one. Newer ones found
/// unusable are discarded, and the output they published is taken back (when
/// their manifest still says what it was), because the replay from the older
/// checkpoint writes it again.
pub async fn load_for_recovery(
    plan: &JobPlan,
    store: &CheckpointStore,
) -> Result<Option<RestoredCheckpoint>> {
    let (restored, skipped) = store.load_latest_skipping().await?;
    if restored.is_none() && !skipped.is_empty() {
        return Err(SluiceError::State(format!(
            "no checkpoint in {} can be read back (see the warnings above), so the job cannot \
             resume without repeating output; run with --fresh to start over",
            store.location()
        )));
    }
    for checkpoint in skipped {
        match store.read_manifest(checkpoint).await {
            Ok(manifest) => {
                for component in manifest.components.iter().filter(|c| c.role == Role::Sink) {
                    let Some(PlanNode::Sink { connector, .. }) = plan.nodes.get(component.node)
                    else {
                        continue;
                    };
                    for pending in sink_pendings(&component.chunks) {
                        match store.read_chunk(pending).await {
                            Ok(pending) => connector.uncommit(&pending)?,
                            Err(error) => warn!(
                                "output published by checkpoint {checkpoint} may be written \
                                 again: {error}"
                            ),
                        }
                    }
                }
            }
            Err(error) => {
                warn!("output published by checkpoint {checkpoint} may be written again: {error}")
            }
        }
        store.discard(checkpoint).await?;
    }
    Ok(restored)
}

/// Publishes what a restored checkpoint's sinks pre-committed and discards
/// output no completed checkpoint covers (all pending output, when the run
/// starts without a checkpoint).
pub(crate) fn recover_sinks(plan: &JobPlan, restored: Option<&RestoredCheckpoint>) -> Result<()> {
    for (id, node) in plan.nodes.iter().enumerate() {
        let PlanNode::Sink { connector, .. } = node else {
            continue;
        };
        let mut committed = Vec::new();
        let components = restored
            .map(|r| r.manifest.components.as_slice())
            .unwrap_or(&[]);
        for component in components {
            if let (true, Some(restored)) = (
                component.node == id && component.role == Role::Sink,
                restored,
            ) {
                for pending in sink_pendings(&component.chunks) {
                    let pending = restored.chunk(pending)?.to_vec();
                    connector.commit(&pending)?;
                    committed.push(pending);
                }
            }
        }
        connector.discard_uncommitted(&committed)?;
    }
    Ok(())
}

impl Coordinator {
    /// Registers a component that must acknowledge every checkpoint.
    pub fn expect(&mut self, key: ComponentKey) {
        self.expected.push(key);
    }

    /// Runs until every component finished (final checkpoint), a
    /// stop-with-savepoint completed, or every task is gone.
    pub async fn run(mut self) -> Result<CheckpointStats> {
        self.expected.sort_unstable();
        self.expected.dedup();
        if let Ok(live) = self.store.retain(self.settings.retained).await {
            self.stored = live;
        }
        let mut control_poll = tokio::time::interval(Duration::from_millis(100));
        let mut queued_savepoints: Vec<(PathBuf, SavepointRequest)> = Vec::new();
        let mut stopping = false;
        loop {
            if self.finished.len() >= self.expected.len() {
                self.refuse_savepoints(&mut queued_savepoints, "the job's input ended first");
                self.complete_final().await?;
                return Ok(self.stats);
            }
            let next_due = self.settings.interval.map(|interval| {
                tokio::time::Instant::from_std(
                    self.last_completed + interval.max(self.settings.min_pause),
                )
            });
            let timeout_at = self
                .in_flight
                .as_ref()
                .map(|f| tokio::time::Instant::from_std(f.started + self.settings.timeout));
            tokio::select! {
                report = self.reports.recv() => match report {
                    None => {
                        self.refuse_savepoints(&mut queued_savepoints, "the job ended first");
                        return Ok(self.stats);
                    }
                    Some(report) => self.record(report),
                },
                _ = sleep_until(next_due), if next_due.is_some() && self.in_flight.is_none() && !stopping => {
                    self.start(false, None);
                }
                _ = sleep_until(timeout_at), if timeout_at.is_some() => {
                    if let Some(abandoned) = self.in_flight.take() {
                        warn!(
                            "checkpoint {} abandoned: not complete after {:?}",
                            abandoned.barrier.checkpoint, self.settings.timeout
                        );
                        self.stats.abandoned += 1;
                        self.metrics.checkpoints.record_failed();
                        self.last_completed = Instant::now();
                        for (key, chunks) in abandoned.acks {
                            self.carry(key, chunks);
                        }
                        if let Some((path, _)) = abandoned.savepoint {
                            respond(&path, None, None, Some("the savepoint timed out".into()));
                        }
                        if abandoned.barrier.stop {
                            // The tasks stopped at the barrier: the job ends without a savepoint.
                            return Err(SluiceError::State(format!(
                                "stop with savepoint: checkpoint {} did not complete within {:?}",
                                abandoned.barrier.checkpoint, self.settings.timeout
                            )));
                        }
                    }
                }
                _ = control_poll.tick(), if self.control_dir.is_some() => {
                    queued_savepoints.extend(self.take_savepoint_requests());
                }
            }
            if self.in_flight.is_none() && !stopping && !queued_savepoints.is_empty() {
                let (path, request) = queued_savepoints.remove(0);
                stopping = request.stop;
                self.start(request.stop, Some((path, request)));
            }
            if self.is_complete() {
                if let Some(in_flight) = self.in_flight.take() {
                    let stop = in_flight.barrier.stop;
                    self.complete(in_flight).await?;
                    if stop {
                        return Ok(self.stats);
                    }
                }
            }
        }
    }

    /// Answers pending savepoint requests that can no longer be served.
    fn refuse_savepoints(&mut self, queued: &mut Vec<(PathBuf, SavepointRequest)>, why: &str) {
        let in_flight = self
            .in_flight
            .as_mut()
            .and_then(|in_flight| in_flight.savepoint.take());
        for (response, _) in queued.drain(..).chain(in_flight) {
            respond(&response, None, None, Some(why.to_string()));
        }
    }

    fn record(&mut self, report: Report) {
        match report {
            Report::Ack {
                checkpoint,
                key,
                chunks,
            } => {
                match &mut self.in_flight {
                    Some(in_flight) if in_flight.barrier.checkpoint == checkpoint => {
                        tracing::debug!(
                            "checkpoint {checkpoint}: {key:?} acknowledged after {:?}",
                            in_flight.started.elapsed()
                        );
                        in_flight.acks.insert(key, chunks);
                    }
                    // A late acknowledgement of an abandoned checkpoint.
                    _ => self.carry(key, chunks),
                }
            }
            Report::Finished { key, chunks } => {
                self.finished.insert(key, chunks);
            }
        }
    }

    /// Keeps the output a sink pre-committed into a checkpoint that will not
    /// complete, for the next one to commit.
    fn carry(&mut self, key: ComponentKey, chunks: Vec<Vec<u8>>) {
        if key.role != RoleKey::Sink {
            return;
        }
        if let Some(pending) = chunks.into_iter().next() {
            self.carried.entry(key).or_default().push(pending);
        }
    }

    fn is_complete(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|in_flight| {
            self.expected
                .iter()
                .all(|key| in_flight.acks.contains_key(key) || self.finished.contains_key(key))
        })
    }

    fn start(&mut self, stop: bool, savepoint: Option<(PathBuf, SavepointRequest)>) {
        let barrier = Barrier {
            checkpoint: self.next_checkpoint,
            stop,
        };
        self.next_checkpoint += 1;
        self.in_flight = Some(InFlight {
            barrier,
            started: Instant::now(),
            acks: HashMap::new(),
            savepoint,
        });
        let _ = self.trigger.send(Some(barrier));
    }

    fn take_savepoint_requests(&self) -> Vec<(PathBuf, SavepointRequest)> {
        let Some(dir) = &self.control_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut requests = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("savepoint") {
                continue;
            }
            let taken = path.with_extension("taken");
            if std::fs::rename(&path, &taken).is_err() {
                continue;
            }
            let response = path.with_extension("response");
            match std::fs::read(&taken)
                .ok()
                .and_then(|body| serde_json::from_slice::<SavepointRequest>(&body).ok())
            {
                Some(request) => requests.push((response, request)),
                None => respond(&response, None, None, Some("unreadable request".into())),
            }
            let _ = std::fs::remove_file(&taken);
        }
        requests
    }

    async fn complete(&mut self, in_flight: InFlight) -> Result<()> {
        let InFlight {
            barrier,
            started,
            mut acks,
            savepoint,
        } = in_flight;
        let kind = if savepoint.is_some() {
            SnapshotKind::Savepoint
        } else {
            SnapshotKind::Checkpoint
        };
        let mut states = Vec::with_capacity(self.expected.len());
        for key in &self.expected {
            match acks.remove(key) {
                Some(chunks) => states.push((*key, false, chunks)),
                None => states.push((
                    *key,
                    true,
                    self.finished.get(key).cloned().unwrap_or_default(),
                )),
            }
        }
        let outcome = self
            .store_checkpoint(barrier.checkpoint, kind, states, started)
            .await;
        match (&outcome, savepoint) {
            (Ok(manifest), Some((response, request))) => {
                let copied = async {
                    if request.target.is_empty() {
                        // A stop with a checkpoint only (scale-out's handover).
                        return Ok(());
                    }
                    let target = CheckpointStore::open(&request.target)?;
                    let restored = self.store.load(manifest.checkpoint).await?;
                    CheckpointStore::copy_into(&restored, &target).await
                }
                .await;
                match copied {
                    Ok(()) => {
                        info!(
                            "savepoint {} written to {}",
                            manifest.checkpoint, request.target
                        );
                        respond(
                            &response,
                            Some(request.target.clone()),
                            Some(manifest.checkpoint),
                            None,
                        );
                    }
                    Err(error) => respond(&response, None, None, Some(error.to_string())),
                }
            }
            (Err(error), Some((response, _))) => {
                respond(&response, None, None, Some(error.to_string()))
            }
            _ => {}
        }
        match outcome {
            Ok(_) => Ok(()),
            Err(error) if !barrier.stop => {
                warn!("checkpoint {} failed: {error}", barrier.checkpoint);
                self.last_completed = Instant::now();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn complete_final(&mut self) -> Result<()> {
        let checkpoint = self.next_checkpoint;
        self.next_checkpoint += 1;
        let states = self
            .expected
            .iter()
            .map(|key| {
                (
                    *key,
                    true,
                    self.finished.get(key).cloned().unwrap_or_default(),
                )
            })
            .collect();
        // Stored as a plain checkpoint first: if the process dies before every
        // sink has committed, the rerun resumes from it (all inputs at their
        // end) and commits. Only then is it marked final, so a rerun of a
        // finished job starts over instead.
        let mut manifest = self
            .store_checkpoint(checkpoint, SnapshotKind::Checkpoint, states, Instant::now())
            .await?;
        manifest.kind = SnapshotKind::Final;
        self.store.write_manifest(&manifest).await?;
        info!("checkpoint {checkpoint} is final: the input ended and all output is committed");
        Ok(())
    }

    /// Stores the snapshots and the manifest, then commits the sinks.
    #[tracing::instrument(name = "checkpoint", skip_all, fields(checkpoint, kind = ?kind))]
    async fn store_checkpoint(
        &mut self,
        checkpoint: u64,
        kind: SnapshotKind,
        states: Vec<(ComponentKey, bool, Vec<Vec<u8>>)>,
        started: Instant,
    ) -> Result<Manifest> {
        let carried = std::mem::take(&mut self.carried);
        let outcome = self
            .write_checkpoint(checkpoint, kind, states, started, &carried)
            .await;
        if outcome.is_err() {
            self.metrics.checkpoints.record_failed();
            // Nothing of this checkpoint counts: its sinks' output waits for the next.
            for (key, pendings) in carried {
                let later = self.carried.remove(&key).unwrap_or_default();
                self.carried
                    .insert(key, pendings.into_iter().chain(later).collect());
            }
        }
        outcome
    }

    async fn write_checkpoint(
        &mut self,
        checkpoint: u64,
        kind: SnapshotKind,
        states: Vec<(ComponentKey, bool, Vec<Vec<u8>>)>,
        started: Instant,
        carried: &HashMap<ComponentKey, Vec<Vec<u8>>>,
    ) -> Result<Manifest> {
        failpoint("before-state", checkpoint);
        let mut components = Vec::with_capacity(states.len());
        let mut commits = Vec::new();
        let mut written_bytes = 0;
        let mut by_operator: BTreeMap<String, u64> = BTreeMap::new();
        for (key, finished, mut chunks) in states {
            if key.role == RoleKey::Sink {
                if let Some(earlier) = carried.get(&key).filter(|c| !c.is_empty()) {
                    chunks.resize(CARRIED_CHUNKS.max(chunks.len()), Vec::new());
                    chunks.extend(earlier.iter().cloned());
                }
                commits.extend(
                    sink_pendings(&chunks)
                        .filter(|pending| !pending.is_empty())
                        .map(|pending| (key.node, pending.clone())),
                );
            }
            if chunks.is_empty() && !finished {
                continue;
            }
            let mut refs = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                let (chunk_ref, written) = self.store.put_chunk(chunk, &self.stored).await?;
                if written {
                    written_bytes += chunk_ref.size;
                    self.stored.insert(chunk_ref.hash.clone());
                }
                if key.role == RoleKey::Operator {
                    *by_operator
                        .entry(self.operators.get(key.node).cloned().unwrap_or_default())
                        .or_default() += chunk_ref.size;
                }
                refs.push(chunk_ref);
            }
            components.push(ComponentState {
                node: key.node,
                subtask: key.subtask,
                role: key.role.role(),
                finished,
                chunks: refs,
            });
        }
        failpoint("before-manifest", checkpoint);
        if let Some(fence) = &self.fence {
            fence.check().await?;
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            sluice_version: env!("CARGO_PKG_VERSION").to_string(),
            job: self.job.clone(),
            checkpoint,
            kind,
            created_ms: chrono::Utc::now().timestamp_millis(),
            parallelism: self.parallelism,
            operators: self.operators.clone(),
            components,
        };
        self.store.write_manifest(&manifest).await?;
        failpoint("before-commit", checkpoint);
        for (node, pending) in commits {
            if let Some(sink) = self.sinks.get(&node) {
                sink.commit(&pending)?;
            }
        }
        failpoint("after-commit", checkpoint);
        self.stored = self.store.retain(self.settings.retained).await?;
        let duration = started.elapsed();
        self.last_completed = Instant::now();
        let total = manifest.total_bytes();
        info!(
            "checkpoint {} complete in {duration:.1?}: {} of state, {} written",
            sluice_core::connector::checkpoint_label(checkpoint),
            human_bytes(total),
            human_bytes(written_bytes),
        );
        self.metrics
            .checkpoints
            .record_completed(checkpoint, duration, total, written_bytes);
        self.stats.completed += 1;
        self.stats.last_checkpoint = Some(checkpoint);
        let running = manifest.components.iter().any(|c| !c.finished);
        if running || self.stats.completed == 1 {
            // The final checkpoint holds no operator state: keep the last real one's figures.
            self.stats.last_bytes = total;
            self.stats.last_written_bytes = written_bytes;
            self.stats.last_duration = duration;
            self.stats.max_duration = self.stats.max_duration.max(duration);
            self.stats.last_bytes_by_operator = by_operator.into_iter().collect();
        }
        Ok(manifest)
    }
}

fn respond(
    path: &std::path::Path,
    savepoint: Option<String>,
    checkpoint: Option<u64>,
    error: Option<String>,
) {
    let response = SavepointResponse {
        savepoint,
        checkpoint,
        error,
    };
    if let Ok(body) = serde_json::to_vec(&response) {
        let temporary = path.with_extension("response-tmp");
        if std::fs::write(&temporary, body).is_ok() {
            let _ = std::fs::rename(&temporary, path);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Bytes as B/KB/MB/GB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Per old subtask, the chunks a restored checkpoint holds for `node` in `role`.
pub(crate) fn restored_chunks(
    restored: &RestoredCheckpoint,
    node: NodeId,
    role: Role,
) -> Result<Vec<Vec<&[u8]>>> {
    let mut by_subtask: BTreeMap<usize, Vec<&[u8]>> = BTreeMap::new();
    for component in &restored.manifest.components {
        if component.node == node && component.role == role {
            let chunks = component
                .chunks
                .iter()
                .map(|chunk| restored.chunk(chunk).map(|bytes| bytes.as_ref()))
                .collect::<Result<Vec<_>>>()?;
            by_subtask.insert(component.subtask, chunks);
        }
    }
    Ok(by_subtask.into_values().collect())
}
