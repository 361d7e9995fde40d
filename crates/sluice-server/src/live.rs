//! Per-operator figures of a running job, sampled once a second from the
//! runtime's counters into rates, backpressure ratios, latency quantiles and
//! a five-minute history: `GET /api/v1/jobs/{name}/operators`, the operator
//! graph's live figures and the dashboard's charts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_runtime::metrics::{HistogramSnapshot, JobMetrics, OperatorSnapshot};
use utoipa::ToSchema;

/// How often the figures are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Samples kept for the charts (five minutes).
const HISTORY_POINTS: usize = 300;

/// One operator's figures, summed over its subtasks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OperatorFigures {
    /// The plan node (as in the job's graph).
    pub id: usize,
    /// What it is (`source`, `window_aggregate`, `sink`, ...; as in the graph).
    pub kind: String,
    /// Its short label (as in the graph).
    pub label: String,
    /// Subtasks that reported figures.
    pub subtasks: usize,
    /// Rows received in this run (operators and sinks).
    pub records_in: u64,
    /// Rows emitted in this run (sources and operators).
    pub records_out: u64,
    /// Batches received in this run.
    pub batches_in: u64,
    /// In-memory bytes of the batches emitted in this run.
    pub bytes_out: u64,
    /// Rows received per second over the last sample interval.
    pub records_in_per_second: Option<f64>,
    /// Rows emitted per second over the last sample interval.
    pub records_out_per_second: Option<f64>,
    /// Share of the last interval (0 to 1) its busiest subtask waited on a
    /// full channel to the next task.
    pub backpressure: Option<f64>,
    /// Its watermark: the least over its subtasks (milliseconds since the epoch).
    pub watermark_ms: Option<i64>,
    /// Wall clock minus the watermark, in milliseconds.
    pub event_time_lag_ms: Option<i64>,
    /// Median time to process one batch (or an output-firing watermark) over the last interval.
    pub processing_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub processing_p99_ms: Option<f64>,
    /// Size of its state in the latest checkpoint.
    pub state_bytes: u64,
}

/// The job's figures at one sample.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LivePoint {
    /// When (milliseconds since the epoch).
    pub t: i64,
    /// Rows the sources emitted per second.
    pub records_in_per_second: f64,
    /// Rows the sinks received per second.
    pub records_out_per_second: f64,
    /// The largest event-time lag of any operator, in milliseconds.
    pub event_time_lag_ms: Option<i64>,
    /// Median per-batch processing time over all operators.
    pub processing_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub processing_p99_ms: Option<f64>,
    /// The highest backpressure of any operator.
    pub backpressure: Option<f64>,
}

/// What the job's checkpoints did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CheckpointFigures {
    /// Completed since the job started on this server.
    pub completed: u64,
    /// Abandoned or failed.
    pub failed: u64,
    /// The latest completed checkpoint's number.
    pub last_id: Option<u64>,
    /// Its state size in bytes.
    pub last_bytes: u64,
    /// Trigger to commit, in milliseconds.
    pub last_duration_ms: f64,
    /// When it completed (milliseconds since the epoch).
    pub last_completed_ms: Option<i64>,
}

/// `GET /api/v1/jobs/{name}/operators`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct OperatorsView {
    /// When the figures were sampled (milliseconds since the epoch); null
    /// before the first sample.
    pub sampled_at: Option<i64>,
    /// Per operator, in plan order.
    pub operators: Vec<OperatorFigures>,
    /// Job-wide figures once a second, oldest first (up to five minutes).
    pub history: Vec<LivePoint>,
    /// Checkpoints.
    pub checkpoints: CheckpointFigures,
    /// Late rows dropped per operator kind in this run.
    pub late_records: BTreeMap<String, u64>,
}

/// A plan node's identity for the figures.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// As in the graph.
    pub kind: String,
    /// As in the graph.
    pub label: String,
}

/// Samples one running job's counters.
pub struct LiveFigures {
    metrics: Arc<JobMetrics>,
    nodes: Vec<NodeInfo>,
    state: Mutex<Sampled>,
}

#[derive(Default)]
struct Sampled {
    previous: Option<(Instant, Vec<OperatorSnapshot>)>,
    view: OperatorsView,
}

impl LiveFigures {
    /// Figures of a job with the plan nodes `nodes`, read from `metrics`.
    pub fn new(metrics: Arc<JobMetrics>, nodes: Vec<NodeInfo>) -> Self {
        LiveFigures {
            metrics,
            nodes,
            state: Mutex::default(),
        }
    }

    /// The runtime's counters.
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        &self.metrics
    }

    /// The plan nodes.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The latest sampled figures.
    pub fn view(&self) -> OperatorsView {
        self.lock().view.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sampled> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a sample: rates and ratios since the previous one.
    pub fn sample(&self) {
        let now = Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let current = self.metrics.operators();
        let mut state = self.lock();
        let previous = state.previous.take();
        let (elapsed, before) = match &previous {
            Some((at, snapshots)) => (Some(now.duration_since(*at).as_secs_f64()), snapshots),
            None => (None, &Vec::new()),
        };
        let earlier = |node: usize, subtask: usize| {
            before
                .iter()
                .find(|s| s.node == node && s.subtask == subtask)
        };
        let mut operators = Vec::with_capacity(self.nodes.len());
        let mut all_processing: Option<HistogramSnapshot> = None;
        let (mut in_rate, mut out_rate) = (0.0, 0.0);
        for (id, info) in self.nodes.iter().enumerate() {
            let subtasks: Vec<&OperatorSnapshot> =
                current.iter().filter(|s| s.node == id).collect();
            let mut figures = OperatorFigures {
                id,
                kind: info.kind.clone(),
                label: info.label.clone(),
                subtasks: subtasks.len(),
                records_in: 0,
                records_out: 0,
                batches_in: 0,
                bytes_out: 0,
                records_in_per_second: None,
                records_out_per_second: None,
                backpressure: None,
                watermark_ms: None,
                event_time_lag_ms: None,
                processing_p50_ms: None,
                processing_p99_ms: None,
                state_bytes: 0,
            };
            let mut processing: Option<HistogramSnapshot> = None;
            let (mut delta_in, mut delta_out, mut busiest) = (0u64, 0u64, 0f64);
            for subtask in &subtasks {
                figures.records_in += subtask.records_in;
                figures.records_out += subtask.records_out;
                figures.batches_in += subtask.batches_in;
                figures.bytes_out += subtask.bytes_out;
                figures.state_bytes += subtask.state_bytes;
                if let Some(watermark) = subtask.watermark_ms {
                    figures.watermark_ms =
                        Some(figures.watermark_ms.map_or(watermark, |w| w.min(watermark)));
                }
                let prior = earlier(subtask.node, subtask.subtask);
                let recent = match prior {
                    Some(prior) => subtask.processing.since(&prior.processing),
                    None => subtask.processing.clone(),
                };
                match &mut processing {
                    Some(sum) => sum.add(&recent),
                    None => processing = Some(recent),
                }
                if let (Some(seconds), Some(prior)) = (elapsed, prior) {
                    delta_in += subtask.records_in.saturating_sub(prior.records_in);
                    delta_out += subtask.records_out.saturating_sub(prior.records_out);
                    let waited = subtask.backpressured_seconds - prior.backpressured_seconds;
                    busiest = busiest.max((waited / seconds).clamp(0.0, 1.0));
                }
            }
            if let Some(seconds) = elapsed.filter(|s| *s > 0.0 && !subtasks.is_empty()) {
                figures.records_in_per_second = Some(delta_in as f64 / seconds);
                figures.records_out_per_second = Some(delta_out as f64 / seconds);
                figures.backpressure = Some(busiest);
                match info.kind.as_str() {
                    "source" => in_rate += delta_out as f64 / seconds,
                    "sink" => out_rate += delta_in as f64 / seconds,
                    _ => {}
                }
            }
            figures.event_time_lag_ms = figures.watermark_ms.map(|w| (now_ms - w).max(0));
            if let Some(processing) = processing {
                figures.processing_p50_ms = processing.quantile(0.5).map(|s| s * 1000.0);
                figures.processing_p99_ms = processing.quantile(0.99).map(|s| s * 1000.0);
                match &mut all_processing {
                    Some(sum) => sum.add(&processing),
                    None => all_processing = Some(processing),
                }
            }
            operators.push(figures);
        }
        if elapsed.is_some() {
            let point = LivePoint {
                t: now_ms,
                records_in_per_second: in_rate,
                records_out_per_second: out_rate,
                event_time_lag_ms: operators.iter().filter_map(|o| o.event_time_lag_ms).max(),
                processing_p50_ms: all_processing
                    .as_ref()
                    .and_then(|h| h.quantile(0.5))
                    .map(|s| s * 1000.0),
                processing_p99_ms: all_processing
                    .as_ref()
                    .and_then(|h| h.quantile(0.99))
                    .map(|s| s * 1000.0),
                backpressure: operators
                    .iter()
                    .filter_map(|o| o.backpressure)
                    .reduce(f64::max),
            };
            let history = &mut state.view.history;
            if history.len() >= HISTORY_POINTS {
                history.remove(0);
            }
            history.push(point);
        }
        let checkpoints = self.metrics.checkpoints.snapshot();
        state.view.sampled_at = Some(now_ms);
        state.view.operators = operators;
        state.view.checkpoints = CheckpointFigures {
            completed: checkpoints.completed,
            failed: checkpoints.failed,
            last_id: (checkpoints.last_id > 0).then_some(checkpoints.last_id),
            last_bytes: checkpoints.last_bytes,
            last_duration_ms: checkpoints.last_duration_seconds * 1000.0,
            last_completed_ms: (checkpoints.last_completed_ms > 0)
                .then_some(checkpoints.last_completed_ms),
        };
        state.view.late_records = self.metrics.late_by_operator().into_iter().collect();
        state.previous = Some((now, current));
    }
}

/// Samples `figures` every [`SAMPLE_INTERVAL`] until the task is aborted.
pub fn spawn_sampler(figures: Arc<LiveFigures>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            figures.sample();
        }
    })
}

/// Samples in the history.
#[cfg(test)]
fn history_len(figures: &LiveFigures) -> usize {
    figures.lock().view.history.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_turn_counters_into_rates_and_ratios() {
        let metrics = Arc::new(JobMetrics::default());
        let nodes = vec![
            NodeInfo {
                kind: "source".into(),
                label: "events".into(),
            },
            NodeInfo {
                kind: "sink".into(),
                label: "out".into(),
            },
        ];
        let figures = LiveFigures::new(metrics.clone(), nodes);
        let source = metrics.operator(0, 0);
        let sink = metrics.operator(1, 0);
        figures.sample();
        assert_eq!(history_len(&figures), 0, "the first sample has no rates");
        source.record_output(1000, 8000);
        source.record_backpressure(Duration::from_millis(400));
        sink.record_input(1000);
        sink.record_processing(Duration::from_micros(30));
        sink.record_watermark(chrono::Utc::now().timestamp_millis() - 5000);
        std::thread::sleep(Duration::from_millis(200));
        figures.sample();
        let view = figures.view();
        assert_eq!(view.history.len(), 1);
        let source = &view.operators[0];
        assert_eq!(source.records_out, 1000);
        let rate = source.records_out_per_second.unwrap();
        assert!((1000.0..=5000.0).contains(&rate), "rate {rate}");
        assert!(source.backpressure.unwrap() > 0.5);
        let sink = &view.operators[1];
        assert_eq!(sink.records_in, 1000);
        assert!(sink.event_time_lag_ms.unwrap() >= 5000);
        assert!(sink.processing_p99_ms.unwrap() > 0.0);
        let point = &view.history[0];
        assert!(point.records_in_per_second > 0.0 && point.records_out_per_second > 0.0);
        assert!(point.event_time_lag_ms.unwrap() >= 5000);
    }
}
