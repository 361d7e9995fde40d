//! `GET /metrics`: jobs, streams and the process in the Prometheus text
//! exposition format (units in names, `_total` counters).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::ingest::IngestCounters;
use crate::AppState;

mod operators;

/// Writes metric families in the text format.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape(text));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram family.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        histogram: &sluice_runtime::metrics::HistogramSnapshot,
    ) -> &mut Self {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in histogram.counts.iter().enumerate() {
            cumulative += count;
            let le = histogram
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |bound| bound.to_string());
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, histogram.sum_seconds);
        self.sample(&format!("{name}_count"), labels, histogram.count() as f64)
    }
}

/// Escapes a label value.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Committed offsets per stream and job (see
/// [`crate::jobs::JobManager::committed_stream_offsets`]).
pub type Committed = BTreeMap<String, BTreeMap<String, crate::jobs::CommittedOffsets>>;

/// The whole exposition.
pub fn render(state: &AppState, committed: Committed) -> String {
    let mut e = Exposition::default();
    jobs(state, &mut e);
    crate::metrics::operators::render(state, &mut e);
    streams(state, &mut e);
    consumer_lag(state, committed, &mut e);
    process(&mut e);
    e.out
}

fn jobs(state: &AppState, e: &mut Exposition) {
    let records = state.jobs.list().unwrap_or_default();
    e.family("sluice_jobs", "gauge", "Jobs on this server by status.");
    for status in [
        "running",
        "stopping",
        "suspending",
        "stopped",
        "finished",
        "failed",
    ] {
        let count = records
            .iter()
            .filter(|job| job.record.status == status)
            .count();
        e.sample("sluice_jobs", &[("status", status)], count as f64);
    }
    let live = state.jobs.all_metrics();
    e.family(
        "sluice_job_uptime_seconds",
        "gauge",
        "Seconds since the job's current run started.",
    );
    for (job, metrics) in &live {
        e.sample(
            "sluice_job_uptime_seconds",
            &[("job_name", job)],
            metrics.uptime_seconds,
        );
    }
    e.family(
        "sluice_job_source_records_total",
        "counter",
        "Records the job's sources read in its current run.",
    );
    for (job, metrics) in &live {
        e.sample(
            "sluice_job_source_records_total",
            &[("job_name", job)],
            metrics.rows_read as f64,
        );
    }
    e.family(
        "sluice_job_sink_records_total",
        "counter",
        "Rows the job's sinks wrote in its current run, per sink table.",
    );
    for (job, metrics) in &live {
        for (table, rows) in &metrics.rows_written {
            e.sample(
                "sluice_job_sink_records_total",
                &[("job_name", job), ("table", table)],
                *rows as f64,
            );
        }
    }
}

/// Reads one counter of a stream's ingest counters.
type CounterReader = fn(&IngestCounters) -> u64;

fn streams(state: &AppState, e: &mut Exposition) {
    let counters = state.ingest.all_counters();
    let families: [(&str, &str, CounterReader); 5] = [
        (
            "sluice_ingest_requests_total",
            "Ingest requests accepted.",
            |c| c.requests.load(Ordering::Relaxed),
        ),
        (
            "sluice_ingest_events_total",
            "Events appended by HTTP ingest.",
            |c| c.events.load(Ordering::Relaxed),
        ),
        (
            "sluice_ingest_bytes_total",
            "Bytes of events appended by HTTP ingest.",
            |c| c.bytes.load(Ordering::Relaxed),
        ),
        (
            "sluice_ingest_throttled_total",
            "Ingest requests refused by the rate limit (429).",
            |c| c.throttled.load(Ordering::Relaxed),
        ),
        (
            "sluice_ingest_rejected_total",
            "Ingest requests refused as invalid (400).",
            |c| c.rejected.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in families {
        e.family(name, "counter", help);
        for (stream, counter) in &counters {
            e.sample(name, &[("stream", stream)], read(counter) as f64);
        }
    }
    let infos = state.log.streams();
    e.family(
        "sluice_stream_end_offset",
        "gauge",
        "Next offset to be written, per stream partition.",
    );
    for info in &infos {
        for p in &info.partitions {
            let partition = p.partition.to_string();
            e.sample(
                "sluice_stream_end_offset",
                &[("stream", &info.name), ("partition", &partition)],
                p.end_offset as f64,
            );
        }
    }
    e.family(
        "sluice_stream_size_bytes",
        "gauge",
        "Bytes on disk per stream partition.",
    );
    for info in &infos {
        for p in &info.partitions {
            let partition = p.partition.to_string();
            e.sample(
                "sluice_stream_size_bytes",
                &[("stream", &info.name), ("partition", &partition)],
                p.bytes as f64,
            );
        }
    }
}

fn consumer_lag(state: &AppState, mut committed: Committed, e: &mut Exposition) {
    e.family(
        "sluice_stream_consumer_lag_records",
        "gauge",
        "Records of a stream beyond the offsets a job's latest checkpoint committed.",
    );
    for info in state.log.streams() {
        let jobs = committed.remove(&info.name).unwrap_or_default();
        for consumer in crate::api::consumer_lag(&info, jobs) {
            e.sample(
                "sluice_stream_consumer_lag_records",
                &[("stream", &info.name), ("job_name", &consumer.job)],
                consumer.lag as f64,
            );
        }
    }
}

/// Process figures from `/proc/self` (Linux).
fn process(e: &mut Exposition) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (field(11), field(12)) {
        e.family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent in seconds.",
        )
        .sample("process_cpu_seconds_total", &[], (user + system) / ticks);
    }
    if let Some(rss_pages) = field(21) {
        e.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        )
        .sample("process_resident_memory_bytes", &[], rss_pages * page);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        e.family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        )
        .sample("process_open_fds", &[], entries.count() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_labels() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "An example.").sample(
            "x_total",
            &[("job", "a\"b\\c\nd")],
            3.0,
        );
        assert_eq!(
            e.out,
            "# HELP x_total An example.\n# TYPE x_total counter\nx_total{job=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }
}
