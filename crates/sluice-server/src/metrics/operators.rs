//! Per-operator, checkpoint, late-row and dead-letter families of running
//! jobs. Operators are labelled `operator_id` (the plan node, as in the
//! job's graph), `operator` (its kind) and `subtask`.

use std::sync::atomic::Ordering;

use sluice_runtime::metrics::OperatorSnapshot;
use sluice_sql::PlanNode;

use super::Exposition;
use crate::AppState;

/// A counter or gauge read from one operator subtask's figures.
type Reading = fn(&OperatorSnapshot) -> Option<f64>;

/// Name, type, help and reading of each per-subtask family.
const FAMILIES: [(&str, &str, &str, Reading); 7] = [
    (
        "sluice_operator_records_in_total",
        "counter",
        "Rows an operator subtask received (sinks: wrote).",
        |s| Some(s.records_in as f64),
    ),
    (
        "sluice_operator_records_out_total",
        "counter",
        "Rows an operator subtask emitted (sources: read).",
        |s| Some(s.records_out as f64),
    ),
    (
        "sluice_operator_batches_in_total",
        "counter",
        "Batches an operator subtask received.",
        |s| Some(s.batches_in as f64),
    ),
    (
        "sluice_operator_output_bytes_total",
        "counter",
        "In-memory bytes of the batches an operator subtask emitted.",
        |s| Some(s.bytes_out as f64),
    ),
    (
        "sluice_operator_backpressured_seconds_total",
        "counter",
        "Time an operator subtask's output waited on a full channel to the next task; its rate is the backpressure ratio.",
        |s| Some(s.backpressured_seconds),
    ),
    (
        "sluice_operator_watermark_seconds",
        "gauge",
        "The latest watermark an operator subtask emitted (sinks: received), in seconds since the epoch.",
        |s| s.watermark_ms.map(|w| w as f64 / 1000.0),
    ),
    (
        "sluice_operator_state_bytes",
        "gauge",
        "Size of an operator subtask's state in the job's latest checkpoint.",
        |s| Some(s.state_bytes as f64),
    ),
];

/// Writes the families of every running job.
pub(super) fn render(state: &AppState, e: &mut Exposition) {
    let jobs = state.jobs.all_live();
    let snapshots: Vec<_> = jobs
        .iter()
        .map(|(name, live, _)| (name, live, live.metrics().operators()))
        .collect();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (name, kind, help, read) in FAMILIES {
        e.family(name, kind, help);
        for (job, live, operators) in &snapshots {
            for operator in operators {
                if let Some(value) = read(operator) {
                    let labels = Labels::of(job, live.nodes(), operator);
                    e.sample(name, &labels.as_pairs(), value);
                }
            }
        }
    }
    e.family(
        "sluice_operator_event_time_lag_seconds",
        "gauge",
        "Wall clock minus an operator subtask's watermark.",
    );
    for (job, live, operators) in &snapshots {
        for operator in operators {
            if let Some(watermark) = operator.watermark_ms {
                let labels = Labels::of(job, live.nodes(), operator);
                let lag = (now_ms - watermark).max(0) as f64 / 1000.0;
                e.sample(
                    "sluice_operator_event_time_lag_seconds",
                    &labels.as_pairs(),
                    lag,
                );
            }
        }
    }
    e.family(
        "sluice_operator_processing_seconds",
        "histogram",
        "Time an operator subtask took for one input batch, or a watermark that fired output (sinks: one write).",
    );
    for (job, live, operators) in &snapshots {
        for operator in operators {
            let labels = Labels::of(job, live.nodes(), operator);
            e.histogram(
                "sluice_operator_processing_seconds",
                &labels.as_pairs(),
                &operator.processing,
            );
        }
    }
    checkpoints(&jobs, e);
    late_and_dead_lettered(&jobs, e);
}

/// An operator subtask's labels.
struct Labels<'a> {
    job: &'a str,
    id: String,
    kind: &'a str,
    subtask: String,
}

impl<'a> Labels<'a> {
    fn of(job: &'a str, nodes: &'a [crate::live::NodeInfo], operator: &OperatorSnapshot) -> Self {
        Labels {
            job,
            id: operator.node.to_string(),
            kind: nodes
                .get(operator.node)
                .map_or("unknown", |node| node.kind.as_str()),
            subtask: operator.subtask.to_string(),
        }
    }

    fn as_pairs(&self) -> [(&str, &str); 4] {
        [
            ("job_name", self.job),
            ("operator_id", &self.id),
            ("operator", self.kind),
            ("subtask", &self.subtask),
        ]
    }
}

type RunningJobs = [(
    String,
    std::sync::Arc<crate::live::LiveFigures>,
    std::sync::Arc<sluice_sql::JobPlan>,
)];

fn checkpoints(jobs: &RunningJobs, e: &mut Exposition) {
    let figures: Vec<_> = jobs
        .iter()
        .map(|(job, live, _)| (job, live.metrics().checkpoints.snapshot()))
        .collect();
    type Figure = fn(&sluice_runtime::metrics::CheckpointSnapshot) -> f64;
    let families: [(&str, &str, &str, Figure); 5] = [
        (
            "sluice_checkpoints_completed_total",
            "counter",
            "Checkpoints the job completed.",
            |c| c.completed as f64,
        ),
        (
            "sluice_checkpoints_failed_total",
            "counter",
            "Checkpoints the job abandoned (timed out) or failed to store.",
            |c| c.failed as f64,
        ),
        (
            "sluice_checkpoint_last_size_bytes",
            "gauge",
            "State size of the job's latest completed checkpoint.",
            |c| c.last_bytes as f64,
        ),
        (
            "sluice_checkpoint_last_written_bytes",
            "gauge",
            "Bytes the job's latest checkpoint had to write (state not stored before).",
            |c| c.last_written_bytes as f64,
        ),
        (
            "sluice_checkpoint_last_completed_timestamp_seconds",
            "gauge",
            "When the job's latest checkpoint completed, in seconds since the epoch (0: none yet).",
            |c| c.last_completed_ms as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, read) in families {
        e.family(name, kind, help);
        for (job, snapshot) in &figures {
            e.sample(name, &[("job_name", job)], read(snapshot));
        }
    }
    e.family(
        "sluice_checkpoint_duration_seconds",
        "histogram",
        "Time from a checkpoint's trigger to its commit.",
    );
    for (job, snapshot) in &figures {
        e.histogram(
            "sluice_checkpoint_duration_seconds",
            &[("job_name", job)],
            &snapshot.durations,
        );
    }
}

fn late_and_dead_lettered(jobs: &RunningJobs, e: &mut Exposition) {
    e.family(
        "sluice_late_records_total",
        "counter",
        "Rows event-time operators dropped (or dead-lettered) as behind the watermark, per operator kind.",
    );
    for (job, live, _) in jobs {
        for (operator, rows) in live.metrics().late_by_operator() {
            e.sample(
                "sluice_late_records_total",
                &[("job_name", job), ("operator", &operator)],
                rows as f64,
            );
        }
    }
    let mut policies = Vec::new();
    for (job, _, plan) in jobs {
        for node in &plan.nodes {
            if let PlanNode::Source {
                table, connector, ..
            } = node
            {
                if let Some(policy) = connector.bad_records() {
                    policies.push((job, table, policy.counters().clone()));
                }
            }
        }
    }
    e.family(
        "sluice_source_dead_lettered_records_total",
        "counter",
        "Bad records a source wrote to its dead letter queue.",
    );
    for (job, table, counters) in &policies {
        e.sample(
            "sluice_source_dead_lettered_records_total",
            &[("job_name", job), ("table", table)],
            counters.dead_lettered.load(Ordering::Relaxed) as f64,
        );
    }
    e.family(
        "sluice_source_skipped_records_total",
        "counter",
        "Bad records a source skipped ('errors' = 'skip').",
    );
    for (job, table, counters) in &policies {
        e.sample(
            "sluice_source_skipped_records_total",
            &[("job_name", job), ("table", table)],
            counters.skipped.load(Ordering::Relaxed) as f64,
        );
    }
}
