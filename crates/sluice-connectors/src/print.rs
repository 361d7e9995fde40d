//! The `print` sink (rows with Flink's row kinds on stdout or stderr) and the
//! `blackhole` sink (discards everything; for benchmarks).

use std::io::Write;
use std::sync::Arc;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use sluice_core::connector::{ConnectorFactory, JobContext, SinkConnector, SinkWriter};
use sluice_core::options::OptionSpec;
use sluice_core::table::TableDef;
use sluice_core::{ChangeBatch, Result, SluiceError};

use crate::validate_options;

const PRINT_OPTIONS: [OptionSpec; 4] = [
    OptionSpec::required("connector", "'print'"),
    OptionSpec::optional("print-identifier", "prefix for every printed line"),
    OptionSpec::optional(
        "standard-error",
        "print to stderr instead of stdout (default false)",
    ),
    OptionSpec::optional("sink.parallelism", "accepted for compatibility"),
];

const BLACKHOLE_OPTIONS: [OptionSpec; 3] = [
    OptionSpec::required("connector", "'blackhole'"),
    OptionSpec::optional(
        "latency.column",
        "a TIMESTAMP column: record now - its value per row and print latency percentiles at the end (benchmarks)",
    ),
    OptionSpec::optional(
        "latency.offset",
        "a duration the result waits by design after its `latency.column` time (e.g. a window end plus the watermark delay): subtracted from each latency (default 0)",
    ),
];

/// Stderr line prefix of the blackhole sink's latency report.
pub const LATENCY_PREFIX: &str = "sluice-latency ";

/// Creates `print` sinks. Output is at-least-once: after a restart rows may be
/// printed again.
pub struct PrintConnector;

impl ConnectorFactory for PrintConnector {
    fn name(&self) -> &'static str {
        "print"
    }

    fn create_sink(&self, table: &TableDef, _job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        validate_options(table, &[&PRINT_OPTIONS])?;
        Ok(Arc::new(PrintSink {
            identifier: table.options.get("print-identifier").map(str::to_string),
            to_stderr: table.options.bool("standard-error", false)?,
        }))
    }
}

#[derive(Debug)]
struct PrintSink {
    identifier: Option<String>,
    to_stderr: bool,
}

impl SinkConnector for PrintSink {
    fn accepts_updates(&self) -> bool {
        true
    }

    fn open(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter>> {
        // Flink's prefixes: "id:2> ", "2> ", "id> " or nothing.
        let prefix = match (&self.identifier, parallelism > 1) {
            (Some(id), true) => format!("{id}:{}> ", subtask + 1),
            (None, true) => format!("{}> ", subtask + 1),
            (Some(id), false) => format!("{id}> "),
            (None, false) => String::new(),
        };
        Ok(Box::new(PrintWriter {
            prefix,
            to_stderr: self.to_stderr,
        }))
    }

    fn describe(&self) -> String {
        format!(
            "print to {}",
            if self.to_stderr { "stderr" } else { "stdout" }
        )
    }
}

struct PrintWriter {
    prefix: String,
    to_stderr: bool,
}

/// Formats each row as Flink's print sink does: `+I[1, abc, 2020-01-01T00:00]`.
pub fn format_rows(batch: &ChangeBatch, prefix: &str) -> Result<String> {
    let options = FormatOptions::default().with_null("null");
    let formatters = batch
        .data
        .columns()
        .iter()
        .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut text = String::new();
    for row in 0..batch.num_rows() {
        use std::fmt::Write as _;
        text.push_str(prefix);
        text.push_str(batch.kind(row).short_string());
        text.push('[');
        for (index, formatter) in formatters.iter().enumerate() {
            if index > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "{}", formatter.value(row));
        }
        text.push_str("]\n");
    }
    Ok(text)
}

#[async_trait]
impl SinkWriter for PrintWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        let text = format_rows(batch, &self.prefix)?;
        let result = if self.to_stderr {
            std::io::stderr().lock().write_all(text.as_bytes())
        } else {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
        };
        result.map_err(|e| SluiceError::io("printing rows", e))
    }

    async fn finish(&mut self) -> Result<()> {
        std::io::stdout()
            .flush()
            .map_err(|e| SluiceError::io("flushing stdout", e))
    }
}

/// Creates `blackhole` sinks.
pub struct BlackholeConnector;

impl ConnectorFactory for BlackholeConnector {
    fn name(&self) -> &'static str {
        "blackhole"
    }

    fn create_sink(&self, table: &TableDef, _job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        validate_options(table, &[&BLACKHOLE_OPTIONS])?;
        let latency = match table.options.get("latency.column") {
            None => None,
            Some(column) => {
                let index = table.physical_schema().index_of(column).map_err(|_| {
                    SluiceError::Config(format!(
                        "table `{}`: 'latency.column' names unknown column `{column}`",
                        table.name
                    ))
                })?;
                let offset = table
                    .options
                    .duration("latency.offset")?
                    .unwrap_or_default();
                Some(Arc::new(LatencyRecorder {
                    column: index,
                    offset_millis: i64::try_from(offset.as_millis()).unwrap_or(i64::MAX),
                    histogram: std::sync::Mutex::new(LatencyHistogram::default()),
                    open_writers: std::sync::atomic::AtomicUsize::new(0),
                }))
            }
        };
        Ok(Arc::new(BlackholeSink { latency }))
    }
}

#[derive(Debug)]
struct BlackholeSink {
    latency: Option<Arc<LatencyRecorder>>,
}

impl SinkConnector for BlackholeSink {
    fn accepts_updates(&self) -> bool {
        true
    }

    fn open(&self, _subtask: usize, _parallelism: usize) -> Result<Box<dyn SinkWriter>> {
        if let Some(latency) = &self.latency {
            latency
                .open_writers
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(Box::new(BlackholeWriter {
            latency: self.latency.clone(),
        }))
    }

    fn describe(&self) -> String {
        match &self.latency {
            Some(_) => "blackhole (recording latency)".to_string(),
            None => "blackhole".to_string(),
        }
    }
}

/// Millisecond latencies, counted per millisecond up to a minute.
#[derive(Debug)]
struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; 60_001],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    fn record(&mut self, millis: i64) {
        let bucket = millis.clamp(0, 60_000) as usize;
        self.counts[bucket] += 1;
        self.total += 1;
    }

    /// The latency (ms) at quantile `q` (0..=1).
    fn quantile(&self, q: f64) -> usize {
        let wanted = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (millis, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return millis;
            }
        }
        self.counts.len() - 1
    }
}

/// Shared by a blackhole sink's writers: latency of each row's time column.
#[derive(Debug)]
struct LatencyRecorder {
    column: usize,
    /// Subtracted from every latency (`latency.offset`).
    offset_millis: i64,
    histogram: std::sync::Mutex<LatencyHistogram>,
    open_writers: std::sync::atomic::AtomicUsize,
}

struct BlackholeWriter {
    latency: Option<Arc<LatencyRecorder>>,
}

#[async_trait]
impl SinkWriter for BlackholeWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        let Some(latency) = &self.latency else {
            return Ok(());
        };
        let now = chrono::Utc::now().timestamp_millis();
        let times = arrow::compute::cast(
            batch.data.column(latency.column),
            &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
        )?;
        let times = times
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .ok_or_else(|| SluiceError::Runtime("latency column is not a timestamp".into()))?;
        let mut histogram = latency
            .histogram
            .lock()
            .map_err(|_| SluiceError::Runtime("latency histogram lock poisoned".into()))?;
        let mut slowest = i64::MIN;
        for time in times.iter().flatten() {
            let millis = now - time.saturating_add(latency.offset_millis);
            slowest = slowest.max(millis);
            histogram.record(millis);
        }
        tracing::debug!(rows = times.len(), slowest_ms = slowest, "latency recorded");
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        let Some(latency) = &self.latency else {
            return Ok(());
        };
        let last = latency
            .open_writers
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1;
        if last {
            let histogram = latency
                .histogram
                .lock()
                .map_err(|_| SluiceError::Runtime("latency histogram lock poisoned".into()))?;
            eprintln!(
                "{LATENCY_PREFIX}rows={} p50_ms={} p99_ms={} p999_ms={} max_ms={}",
                histogram.total,
                histogram.quantile(0.5),
                histogram.quantile(0.99),
                histogram.quantile(0.999),
                histogram.quantile(1.0)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, Int8Array, RecordBatch, StringArray};

    #[test]
    fn latency_quantiles_come_from_the_histogram() {
        let mut histogram = LatencyHistogram::default();
        for millis in 1..=100 {
            histogram.record(millis);
        }
        histogram.record(-5); // clock skew counts as 0
        assert_eq!(histogram.quantile(0.5), 50);
        assert_eq!(histogram.quantile(0.99), 99);
        assert_eq!(histogram.quantile(1.0), 100);
        histogram.record(10 * 60_000);
        assert_eq!(histogram.quantile(1.0), 60_000);
    }

    #[tokio::test]
    async fn latency_offset_is_subtracted_from_each_latency() {
        let recorder = Arc::new(LatencyRecorder {
            column: 0,
            offset_millis: 4_000,
            histogram: std::sync::Mutex::new(LatencyHistogram::default()),
            open_writers: std::sync::atomic::AtomicUsize::new(1),
        });
        let mut writer = BlackholeWriter {
            latency: Some(recorder.clone()),
        };
        let created = chrono::Utc::now().timestamp_millis() - 4_003;
        let data = RecordBatch::try_from_iter([(
            "window_end",
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![created])) as _,
        )])
        .unwrap();
        writer.write(&ChangeBatch::inserts(data)).await.unwrap();
        let latency = recorder.histogram.lock().unwrap().quantile(1.0);
        assert!((3..1_000).contains(&latency), "latency {latency} ms");
    }

    #[test]
    fn rows_print_with_row_kinds() {
        let data = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as _),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("a"), None])) as _,
            ),
        ])
        .unwrap();
        let batch = ChangeBatch {
            data,
            kinds: Some(Int8Array::from(vec![0, 3])),
        };
        assert_eq!(
            format_rows(&batch, "2> ").unwrap(),
            "2> +I[1, a]\n2> -D[2, null]\n"
        );
    }
}
