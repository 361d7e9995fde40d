//! `sluice bench nexmark`: runs the Nexmark queries (the Flink SQL text of
//! `benchmarks/nexmark/queries`, built into the binary) into a blackhole sink
//! over the built-in generator or a JSON-lines file, one `sluice run` child
//! process per query so that CPU time and peak memory are the query's own.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

macro_rules! queries {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../../benchmarks/nexmark/queries/", $name, ".sql")))),*]
    };
}

/// The Nexmark suite in Flink SQL, each with a `${SINK}` placeholder.
const QUERIES: [(&str, &str); 23] = queries!(
    "q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", "q10", "q11", "q12", "q13", "q14",
    "q15", "q16", "q17", "q18", "q19", "q20", "q21", "q22",
);

/// Latency runs of window queries, whose results carry no `dateTime`: a
/// variant of the query that also passes its window's end to the sink, and
/// that column. Latency is then measured from the moment the window closes.
const LATENCY_VARIANTS: [(&str, &str, &str); 1] = [(
    "q5",
    include_str!("../../../benchmarks/nexmark/queries/latency/q5.sql"),
    "window_end",
)];

/// How long a window waits after its end by design: it closes once the
/// watermark (`dateTime - INTERVAL '4' SECOND` in the source) reaches its
/// last millisecond, so 4 s minus 1 ms after the end.
const WINDOW_CLOSE_DELAY: &str = "3999 ms";

/// The nexmark-flink source table and its `person`, `auction`, `bid` views.
const SOURCE: &str = include_str!("../../../benchmarks/nexmark/queries/_source.sql");

/// Stderr line prefix of a child's progress reports.
pub const PROGRESS_PREFIX: &str = "sluice-progress rows=";

/// What `sluice bench nexmark` was asked to do.
pub struct BenchOptions {
    /// Query names, or `all`.
    pub queries: String,
    /// Events the generator produces (ignored with `input`).
    pub events: u64,
    /// A JSON-lines file or directory in the nexmark-flink shape.
    pub input: Option<PathBuf>,
    /// Subtasks per operator.
    pub parallelism: usize,
    /// Wall-clock event rate of the generator (events/s).
    pub rate: Option<u64>,
    /// Where to write one JSON line per query.
    pub json: Option<PathBuf>,
    /// `execution.checkpointing.interval` of the queries (`off` by default).
    pub checkpoint_interval: String,
    /// Job options set in every query (`KEY`, `VALUE`).
    pub settings: Vec<(String, String)>,
}

/// One query's measurements.
struct Measurement {
    query: String,
    events: u64,
    wall: Duration,
    cpu: Duration,
    peak_rss_bytes: u64,
    /// With `--rate`: end-to-end latency percentiles (ms) p50, p99, p999.
    latency: Option<[u64; 3]>,
}

impl Measurement {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn events_per_cpu_second(&self) -> f64 {
        self.events as f64 / self.cpu.as_secs_f64().max(1e-9)
    }

    fn json(&self, options: &BenchOptions) -> String {
        format!(
            r#"{{"query":"{}","events":{},"parallelism":{},"input":"{}","wall_seconds":{:.3},"events_per_second":{:.0},"events_per_cpu_second":{:.0},"cpu_seconds":{:.3},"peak_rss_mb":{:.1},"latency_ms":{}}}"#,
            self.query,
            self.events,
            options.parallelism,
            options
                .input
                .as_ref()
                .map(|p| p
                    .display()
                    .to_string()
                    .replace('\\', "\\\\")
                    .replace('"', "\\\""))
                .unwrap_or_else(|| "generator".into()),
            self.wall.as_secs_f64(),
            self.events_per_second(),
            self.events_per_cpu_second(),
            self.cpu.as_secs_f64(),
            self.peak_rss_bytes as f64 / 1_048_576.0,
            match self.latency {
                Some([p50, p99, p999]) => format!(r#"{{"p50":{p50},"p99":{p99},"p999":{p999}}}"#),
                None => "null".into(),
            }
        )
    }
}

/// Runs the benchmark and prints its table.
pub fn run(options: &BenchOptions) -> Result<()> {
    let selected = select_queries(&options.queries)?;
    let work = tempfile_dir()?;
    let (source, events) = match &options.input {
        Some(path) => (file_source(path)?, count_lines(path)?),
        None => (
            generator_source(options.events, options.rate),
            options.events,
        ),
    };
    let side_input = work.join("side_input.csv");
    std::fs::write(&side_input, side_input_rows()).context("writing q13's side input")?;
    let mut json = match &options.json {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("creating '{}'", path.display()))?,
        ),
        None => None,
    };
    println!(
        "Nexmark: {} events from {}, parallelism {}, blackhole sink",
        events,
        options
            .input
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the built-in generator".into()),
        options.parallelism
    );
    println!(
        "{:<6} {:>11} {:>9} {:>12} {:>14} {:>8} {:>10}{}",
        "query",
        "events",
        "wall s",
        "events/s",
        "events/cpu-s",
        "cpu s",
        "peak RSS",
        if options.rate.is_some() {
            "   latency ms p50 / p99 / p999"
        } else {
            ""
        }
    );
    let mut failures = Vec::new();
    for (name, text) in selected {
        let script = work.join(format!("{name}.sql"));
        let (text, sink) = sink_for(name, text, options.rate.is_some());
        let sql = format!(
            "SET 'pipeline.name' = 'bench-{name}';\nSET 'sluice.data-dir' = '{}';\n\
             SET 'execution.checkpointing.interval' = '{}';\n{source}\n{}",
            work.join("data").display(),
            options.checkpoint_interval,
            text.replace("${SINK}", &sink)
                .replace("${SIDE_INPUT}", &side_input.display().to_string())
        );
        std::fs::write(&script, sql).context("writing the query script")?;
        match measure(name, &script, events, options) {
            Ok(measurement) => {
                let latency = match (options.rate, measurement.latency) {
                    (None, _) => String::new(),
                    (Some(_), Some([p50, p99, p999])) => format!("   {p50} / {p99} / {p999}"),
                    (Some(_), None) => "   n/a (no time column in the result)".into(),
                };
                println!(
                    "{:<6} {:>11} {:>9.2} {:>12.0} {:>14.0} {:>8.2} {:>7.0} MB{latency}",
                    name,
                    measurement.events,
                    measurement.wall.as_secs_f64(),
                    measurement.events_per_second(),
                    measurement.events_per_cpu_second(),
                    measurement.cpu.as_secs_f64(),
                    measurement.peak_rss_bytes as f64 / 1_048_576.0
                );
                if let Some(file) = json.as_mut() {
                    writeln!(file, "{}", measurement.json(options))?;
                }
            }
            Err(error) => {
                println!("{name:<6} failed: {error:#}");
                failures.push(name);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if !failures.is_empty() {
        bail!("queries failed: {}", failures.join(", "));
    }
    Ok(())
}

/// The query text to run and its sink options. Latency runs measure from
/// the result's `dateTime` (the event's creation time) or, for window
/// queries in [`LATENCY_VARIANTS`], from the window's close.
fn sink_for(name: &str, text: &'static str, latency: bool) -> (&'static str, String) {
    let blackhole = "'connector' = 'blackhole'";
    if !latency {
        return (text, blackhole.into());
    }
    if let Some((_, variant, column)) = LATENCY_VARIANTS.iter().find(|(q, _, _)| *q == name) {
        return (
            variant,
            format!(
                "{blackhole}, 'latency.column' = '{column}', 'latency.offset' = '{WINDOW_CLOSE_DELAY}'"
            ),
        );
    }
    let sink_columns = &text[..text.find("${SINK}").unwrap_or(0)];
    if sink_columns.contains("`dateTime`") {
        (text, format!("{blackhole}, 'latency.column' = 'dateTime'"))
    } else {
        (text, blackhole.into())
    }
}

fn select_queries(list: &str) -> Result<Vec<(&'static str, &'static str)>> {
    if list.trim() == "all" {
        return Ok(QUERIES.to_vec());
    }
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            QUERIES
                .iter()
                .find(|(known, _)| *known == name)
                .copied()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown query '{name}'; the suite has {}",
                        QUERIES.map(|(n, _)| n).join(", ")
                    )
                })
        })
        .collect()
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating '{}'", dir.display()))?;
    Ok(dir)
}

/// The source table reading the built-in generator instead of a file.
fn generator_source(events: u64, rate: Option<u64>) -> String {
    let (table, views) = split_source();
    let columns = &table[..table.rfind("WITH (").unwrap_or(table.len())];
    let mut options = format!("'connector' = 'nexmark', 'events.num' = '{events}'");
    if let Some(rate) = rate {
        // Event time = creation time, so the sink can measure end-to-end latency.
        options.push_str(&format!(
            ", 'events.per-second' = '{rate}', 'first-event.rate' = '{rate}', 'event-time.base' = 'now'"
        ));
    }
    format!("{columns}WITH ({options});\n{views}")
}

/// The source table over a JSON-lines file or directory.
fn file_source(path: &Path) -> Result<String> {
    if !path.exists() {
        bail!("input '{}' does not exist", path.display());
    }
    Ok(SOURCE.replace("${INPUT}", &path.display().to_string()))
}

/// The `CREATE TABLE` part and the `CREATE VIEW` part of the source script.
fn split_source() -> (&'static str, &'static str) {
    match SOURCE.find("CREATE VIEW") {
        Some(at) => {
            let table = SOURCE[..at].trim_end();
            (table.strip_suffix(';').unwrap_or(table), &SOURCE[at..])
        }
        None => (SOURCE, ""),
    }
}

/// q13's bounded side input: `key,value` for every third key below 10000.
fn side_input_rows() -> String {
    (0..10_000)
        .step_by(3)
        .map(|key| format!("{key},value-{key}\n"))
        .collect()
}

/// Lines of a file, or of every file in a directory.
fn count_lines(path: &Path) -> Result<u64> {
    let files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut lines = 0u64;
    for file in files {
        let reader = std::io::BufReader::new(
            std::fs::File::open(&file).with_context(|| format!("opening '{}'", file.display()))?,
        );
        lines += reader.split(b'\n').count() as u64;
    }
    Ok(lines)
}

/// Runs one query in a child process and measures it.
fn measure(name: &str, script: &Path, events: u64, options: &BenchOptions) -> Result<Measurement> {
    let exe = std::env::current_exe().context("locating the sluice binary")?;
    let started = Instant::now();
    let mut command = std::process::Command::new(exe);
    command
        .arg("run")
        .arg(script)
        .arg("-p")
        .arg(options.parallelism.to_string());
    for (key, value) in &options.settings {
        command.arg("--set").arg(format!("{key}={value}"));
    }
    let mut child = command
        .env("SLUICE_LOG", "warn")
        .env("SLUICE_PROGRESS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting sluice run")?;
    let rows = Arc::new(AtomicU64::new(0));
    let stderr = child.stderr.take().context("child stderr")?;
    let reader = {
        let rows = rows.clone();
        std::thread::spawn(move || {
            let mut messages = Vec::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(|l| l.ok())
            {
                match line.strip_prefix(PROGRESS_PREFIX) {
                    Some(count) => rows.store(count.trim().parse().unwrap_or(0), Ordering::Relaxed),
                    None => messages.push(line),
                }
            }
            messages
        })
    };
    let (done_sender, done) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = done_sender.send(wait_with_usage(pid, child));
    });
    let interactive = std::io::stderr().is_terminal();
    let outcome = loop {
        match done.recv_timeout(Duration::from_millis(250)) {
            Ok(outcome) => break outcome,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if interactive {
                    let read = rows.load(Ordering::Relaxed);
                    let seconds = started.elapsed().as_secs_f64();
                    eprint!(
                        "\r{name}: {read} / {events} events, {:.0} events/s, {seconds:.1} s   ",
                        read as f64 / seconds.max(1e-9)
                    );
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("lost the child process")
            }
        }
    };
    let wall = started.elapsed();
    if interactive {
        eprint!("\r{:80}\r", "");
    }
    let messages = reader.join().unwrap_or_default();
    let usage = outcome?;
    if !usage.success {
        bail!("{}", messages.join("\n"));
    }
    Ok(Measurement {
        query: name.to_string(),
        events,
        wall,
        cpu: usage.cpu,
        peak_rss_bytes: usage.peak_rss_bytes,
        latency: messages.iter().find_map(|line| parse_latency(line)),
    })
}

/// p50, p99 and p999 from the blackhole sink's latency report line.
fn parse_latency(line: &str) -> Option<[u64; 3]> {
    let report = line.strip_prefix(sluice_connectors::print::LATENCY_PREFIX)?;
    let value = |key: &str| -> Option<u64> {
        report
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some([value("p50_ms")?, value("p99_ms")?, value("p999_ms")?])
}

/// How a child process ended and what it used.
struct Usage {
    success: bool,
    cpu: Duration,
    peak_rss_bytes: u64,
}

#[cfg(unix)]
fn wait_with_usage(pid: u32, child: std::process::Child) -> Result<Usage> {
    // `wait4` reaps the child and returns its own resource usage.
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain data; zeroed is a valid value to be filled in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child with valid pointers to locals.
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    drop(child);
    if reaped < 0 {
        bail!("waiting for the child: {}", std::io::Error::last_os_error());
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    Ok(Usage {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        // Linux reports kilobytes.
        peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
    })
}

#[cfg(not(unix))]
fn wait_with_usage(_pid: u32, mut child: std::process::Child) -> Result<Usage> {
    let status = child.wait()?;
    Ok(Usage {
        success: status.success(),
        cpu: Duration::ZERO,
        peak_rss_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_source_keeps_the_table_and_views() {
        let sql = generator_source(1000, Some(500));
        assert!(sql.contains(
            "'connector' = 'nexmark', 'events.num' = '1000', 'events.per-second' = '500'"
        ));
        assert!(sql.contains("'event-time.base' = 'now'"));
        assert!(sql.contains("CREATE VIEW bid"));
        assert!(!sql.contains("filesystem"));
    }

    #[test]
    fn latency_runs_measure_from_the_event_time_or_the_window_close() {
        let query = |name: &str| QUERIES.iter().find(|(q, _)| *q == name).unwrap().1;
        let (_, q1_sink) = sink_for("q1", query("q1"), true);
        assert!(q1_sink.contains("'latency.column' = 'dateTime'"));
        let (q5_text, q5_sink) = sink_for("q5", query("q5"), true);
        assert!(q5_sink.contains("'latency.column' = 'window_end'"));
        assert!(q5_sink.contains("'latency.offset' = '3999 ms'"));
        // The variant runs the same query: only the selected columns differ.
        let from = |text: &'static str| &text[text.find("\nFROM (").unwrap()..];
        assert_eq!(from(q5_text), from(query("q5")));
        assert!(SOURCE.contains("`dateTime` - INTERVAL '4' SECOND"));
        let (_, q3_sink) = sink_for("q3", query("q3"), true);
        assert_eq!(q3_sink, "'connector' = 'blackhole'");
        let (q5_plain, _) = sink_for("q5", query("q5"), false);
        assert_eq!(q5_plain, query("q5"));
    }

    #[test]
    fn latency_reports_are_parsed() {
        let line = format!(
            "{}rows=10 p50_ms=1 p99_ms=4 p999_ms=9 max_ms=12",
            sluice_connectors::print::LATENCY_PREFIX
        );
        assert_eq!(parse_latency(&line), Some([1, 4, 9]));
        assert_eq!(parse_latency("other"), None);
    }

    #[test]
    fn queries_are_selected_by_name() {
        assert_eq!(select_queries("all").expect("all").len(), 23);
        let some = select_queries("q0, q5").expect("some");
        assert_eq!(
            some.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["q0", "q5"]
        );
        assert!(select_queries("q99").is_err());
    }
}
