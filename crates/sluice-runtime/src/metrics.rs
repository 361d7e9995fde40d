//! Live figures of a running job, per operator subtask and per checkpoint,
//! read by `sluice serve` for `/metrics`, the REST API and the dashboard.
//!
//! Everything is a relaxed atomic updated once per batch (never per row),
//! so the hot path pays a few uncontended increments and two clock reads per
//! operator and batch. Counters survive in-process restarts of a job: the
//! executor asks [`JobMetrics::operator`] for the same (node, subtask) again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_sql::plan::NodeId;

use crate::late::LateRecords;

/// Upper bounds (seconds) of the processing-time histogram buckets: the time
/// one operator takes for one batch, or for a watermark that fired output.
pub const PROCESSING_BUCKETS_SECONDS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 1.0,
];

/// Upper bounds (seconds) of the checkpoint-duration histogram buckets.
pub const CHECKPOINT_BUCKETS_SECONDS: [f64; 10] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// A cumulative histogram of durations over fixed buckets (plus +Inf).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is +Inf.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (seconds, increasing).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in seconds (the +Inf bucket is implied).
    pub bounds: &'static [f64],
    /// Observations per bucket, not cumulative; one more than `bounds`.
    pub counts: Vec<u64>,
    /// Sum of all observations in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Observations in total.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another snapshot over the same buckets.
    pub fn add(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
    }

    /// What was observed since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }

    /// The `q` quantile (0 to 1) in seconds, interpolated within its bucket
    /// as Prometheus' `histogram_quantile` does; `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (bucket, &count) in self.counts.iter().enumerate() {
            if count > 0 && (seen + count) as f64 >= rank {
                let lower = if bucket == 0 {
                    0.0
                } else {
                    self.bounds[bucket - 1]
                };
                let Some(&upper) = self.bounds.get(bucket) else {
                    // +Inf bucket: the highest finite bound is the best answer.
                    return Some(lower);
                };
                let within = (rank - seen as f64) / count as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            seen += count;
        }
        self.bounds.last().copied()
    }
}

/// Sentinel for "no watermark yet".
const NO_WATERMARK: i64 = i64::MIN;

/// Figures of one operator subtask (a source, an operator or a sink).
#[derive(Debug)]
pub struct OperatorMetrics {
    /// The plan node.
    pub node: NodeId,
    /// The subtask.
    pub subtask: usize,
    records_in: AtomicU64,
    records_out: AtomicU64,
    batches_in: AtomicU64,
    bytes_out: AtomicU64,
    processing: Histogram,
    backpressured_nanos: AtomicU64,
    watermark: AtomicI64,
    state_bytes: AtomicU64,
}

impl OperatorMetrics {
    fn new(node: NodeId, subtask: usize) -> Self {
        OperatorMetrics {
            node,
            subtask,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            batches_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            processing: Histogram::new(&PROCESSING_BUCKETS_SECONDS),
            backpressured_nanos: AtomicU64::new(0),
            watermark: AtomicI64::new(NO_WATERMARK),
            state_bytes: AtomicU64::new(0),
        }
    }

    /// One input batch of `rows` arrived.
    pub fn record_input(&self, rows: usize) {
        self.records_in.fetch_add(rows as u64, Ordering::Relaxed);
        self.batches_in.fetch_add(1, Ordering::Relaxed);
    }

    /// It emitted `rows` rows taking `bytes` of memory.
    pub fn record_output(&self, rows: usize, bytes: usize) {
        self.records_out.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// One batch (or an output-firing watermark) took `elapsed` to process.
    pub fn record_processing(&self, elapsed: Duration) {
        self.processing.observe(elapsed);
    }

    /// Its output waited `elapsed` on a full channel.
    pub fn record_backpressure(&self, elapsed: Duration) {
        self.backpressured_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Its watermark (milliseconds since the epoch) advanced to `watermark`.
    pub fn record_watermark(&self, watermark: i64) {
        if watermark < i64::MAX {
            self.watermark.fetch_max(watermark, Ordering::Relaxed);
        }
    }

    /// Its state took `bytes` in the latest checkpoint.
    pub fn record_state_bytes(&self, bytes: u64) {
        self.state_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The current figures.
    pub fn snapshot(&self) -> OperatorSnapshot {
        let watermark = self.watermark.load(Ordering::Relaxed);
        OperatorSnapshot {
            node: self.node,
            subtask: self.subtask,
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            batches_in: self.batches_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            processing: self.processing.snapshot(),
            backpressured_seconds: self.backpressured_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            watermark_ms: (watermark != NO_WATERMARK).then_some(watermark),
            state_bytes: self.state_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One operator subtask's figures at one moment.
#[derive(Debug, Clone)]
pub struct OperatorSnapshot {
    /// The plan node.
    pub node: NodeId,
    /// The subtask.
    pub subtask: usize,
    /// Rows received (sinks, operators).
    pub records_in: u64,
    /// Rows emitted (sources, operators).
    pub records_out: u64,
    /// Batches received.
    pub batches_in: u64,
    /// In-memory size of the emitted batches.
    pub bytes_out: u64,
    /// Time per input batch or output-firing watermark.
    pub processing: HistogramSnapshot,
    /// Time the output spent waiting on a full channel to the next task.
    pub backpressured_seconds: f64,
    /// The latest watermark it emitted (a sink: received), if any.
    pub watermark_ms: Option<i64>,
    /// Size of its state in the latest checkpoint.
    pub state_bytes: u64,
}

/// What the checkpoints of a job did, across its runs.
#[derive(Debug)]
pub struct CheckpointMetrics {
    completed: AtomicU64,
    failed: AtomicU64,
    last_id: AtomicU64,
    last_bytes: AtomicU64,
    last_written_bytes: AtomicU64,
    last_duration_nanos: AtomicU64,
    last_completed_ms: AtomicI64,
    durations: Histogram,
}

impl Default for CheckpointMetrics {
    fn default() -> Self {
        CheckpointMetrics {
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_id: AtomicU64::new(0),
            last_bytes: AtomicU64::new(0),
            last_written_bytes: AtomicU64::new(0),
            last_duration_nanos: AtomicU64::new(0),
            last_completed_ms: AtomicI64::new(0),
            durations: Histogram::new(&CHECKPOINT_BUCKETS_SECONDS),
        }
    }
}

/// [`CheckpointMetrics`] at one moment.
#[derive(Debug, Clone)]
pub struct CheckpointSnapshot {
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints abandoned or failed.
    pub failed: u64,
    /// The last completed checkpoint's number (0: none yet).
    pub last_id: u64,
    /// Its state size.
    pub last_bytes: u64,
    /// What it had to write (chunks not stored before).
    pub last_written_bytes: u64,
    /// Trigger to commit.
    pub last_duration_seconds: f64,
    /// When it completed (milliseconds since the epoch; 0: never).
    pub last_completed_ms: i64,
    /// Trigger-to-commit durations.
    pub durations: HistogramSnapshot,
}

impl CheckpointMetrics {
    /// Checkpoint `id` completed in `duration` with `bytes` of state, of which
    /// `written` were new.
    pub fn record_completed(&self, id: u64, duration: Duration, bytes: u64, written: u64) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.last_id.store(id, Ordering::Relaxed);
        self.last_bytes.store(bytes, Ordering::Relaxed);
        self.last_written_bytes.store(written, Ordering::Relaxed);
        self.last_duration_nanos
            .store(duration.as_nanos() as u64, Ordering::Relaxed);
        self.last_completed_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.durations.observe(duration);
    }

    /// A checkpoint was abandoned or failed.
    pub fn record_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The current figures.
    pub fn snapshot(&self) -> CheckpointSnapshot {
        CheckpointSnapshot {
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_id: self.last_id.load(Ordering::Relaxed),
            last_bytes: self.last_bytes.load(Ordering::Relaxed),
            last_written_bytes: self.last_written_bytes.load(Ordering::Relaxed),
            last_duration_seconds: self.last_duration_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            last_completed_ms: self.last_completed_ms.load(Ordering::Relaxed),
            durations: self.durations.snapshot(),
        }
    }
}

/// The live figures of one job.
#[derive(Debug, Default)]
pub struct JobMetrics {
    operators: Mutex<BTreeMap<(NodeId, usize), Arc<OperatorMetrics>>>,
    /// What its checkpoints did.
    pub checkpoints: CheckpointMetrics,
    late: Mutex<Option<LateRecords>>,
}

impl JobMetrics {
    /// The figures of subtask `subtask` of node `node`, created on first use.
    pub fn operator(&self, node: NodeId, subtask: usize) -> Arc<OperatorMetrics> {
        let mut operators = self
            .operators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        operators
            .entry((node, subtask))
            .or_insert_with(|| Arc::new(OperatorMetrics::new(node, subtask)))
            .clone()
    }

    /// Every operator subtask's figures, by node and subtask.
    pub fn operators(&self) -> Vec<OperatorSnapshot> {
        let operators = self
            .operators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        operators.values().map(|o| o.snapshot()).collect()
    }

    /// Records the current run's late-row counter.
    pub(crate) fn set_late_records(&self, late: LateRecords) {
        *self
            .late
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(late);
    }

    /// Late rows dropped in the current run, per operator kind.
    pub fn late_by_operator(&self) -> Vec<(String, u64)> {
        self.late
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(LateRecords::per_operator)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_interpolate_within_buckets() {
        let histogram = Histogram::new(&PROCESSING_BUCKETS_SECONDS);
        for _ in 0..90 {
            histogram.observe(Duration::from_micros(5));
        }
        for _ in 0..10 {
            histogram.observe(Duration::from_millis(3));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 100);
        let p50 = snapshot.quantile(0.5).unwrap();
        assert!(p50 > 0.0 && p50 <= 0.000_01, "p50 {p50}");
        let p99 = snapshot.quantile(0.99).unwrap();
        assert!((0.002_5..=0.005).contains(&p99), "p99 {p99}");
        assert!((snapshot.sum_seconds - 0.030_45).abs() < 1e-9);
        assert_eq!(Histogram::new(&[1.0]).snapshot().quantile(0.5), None);
    }

    #[test]
    fn histogram_differences_count_what_happened_between() {
        let histogram = Histogram::new(&CHECKPOINT_BUCKETS_SECONDS);
        histogram.observe(Duration::from_millis(20));
        let earlier = histogram.snapshot();
        histogram.observe(Duration::from_secs(100));
        let since = histogram.snapshot().since(&earlier);
        assert_eq!(since.count(), 1);
        assert_eq!(since.counts.last(), Some(&1));
        assert_eq!(since.quantile(0.5), Some(60.0));
    }

    #[test]
    fn operators_are_kept_across_runs_and_watermarks_only_advance() {
        let job = JobMetrics::default();
        let first = job.operator(2, 1);
        first.record_input(10);
        first.record_output(4, 100);
        first.record_watermark(50);
        first.record_watermark(40);
        first.record_watermark(i64::MAX);
        let again = job.operator(2, 1);
        again.record_input(5);
        let snapshots = job.operators();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0].records_in, 15);
        assert_eq!(snapshots[0].batches_in, 2);
        assert_eq!(snapshots[0].records_out, 4);
        assert_eq!(snapshots[0].watermark_ms, Some(50));
    }
}
