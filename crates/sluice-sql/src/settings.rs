//! Job-wide settings from `SET 'key' = 'value'` statements (Flink's keys where
//! Flink has one).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sluice_core::options::Options;
use sluice_core::Result;

/// Keys Sluice reads, with what they do. Other keys are accepted (Flink scripts
/// carry many that do not apply) and reported as ignored.
pub const KNOWN_SETTINGS: [(&str, &str); 34] = [
    (
        "table.exec.state.ttl",
        "drop join and GROUP BY state of keys idle this long (processing time; default 0 = keep)",
    ),
    (
        "state.memory-budget",
        "memory for keyed state (joins, GROUP BY, Top-N, OVER) of the whole job; least recently used keys beyond it spill to local disk (default: a quarter of the machine's or container's memory; 'unlimited' never spills)",
    ),
    (
        "state.compact-idle-keys",
        "keep keys of joins, GROUP BY, Top-N and OVER state that have been idle for a while encoded in memory, a third of their live size for aggregates, 0.7 for stored rows, and decode a key when it is touched again (default true)",
    ),
    (
        "state.compress-idle-keys",
        "compress the values (512 bytes or more) of compacted idle keys with LZ4 against a dictionary of the state's first values, about 1.6x smaller for stored rows; stops by itself where it saves under a fifth (default true)",
    ),
    (
        "state.spill.dir",
        "scratch directory keyed state spills to (default <data dir>/spill; wiped when the job starts)",
    ),
    (
        "table.exec.late-data",
        "'drop' (default) or 'dlq': what window operators do with rows behind the watermark",
    ),
    (
        "table.exec.late-data.dlq-path",
        "dead letter file for late rows (default <data dir>/dlq/late.jsonl)",
    ),
    (
        "table.exec.source.idle-timeout",
        "mark a source subtask idle after this long without data, so it does not hold back the watermark (default 0 = never; per table: 'scan.watermark.idle-timeout')",
    ),
    (
        "pipeline.auto-watermark-interval",
        "least time between two watermarks of a source subtask (default 0 = after every batch)",
    ),
    (
        "table.exec.emit.allow-lateness",
        "keep window state this long after a window closes; later rows update its result with -U/+U (default 0)",
    ),
    ("parallelism.default", "subtasks per operator (default 1)"),
    (
        crate::reuse::REUSE_SUB_PLAN_SETTING,
        "run identical sub-plans of the job once and share their output (default true; always off in scale-out mode)",
    ),
    (
        "pipeline.name",
        "job name, used for data directories (default: script file name)",
    ),
    (
        "sluice.data-dir",
        "job data directory (default ./sluice-data/<job name>)",
    ),
    ("sluice.batch.size", "target rows per batch (default 8192)"),
    (
        "execution.checkpointing.interval",
        "take a checkpoint this often (default 10 s; '0' or 'off' disables checkpoints and exactly-once file output)",
    ),
    (
        "execution.checkpointing.timeout",
        "abandon a checkpoint not complete after this long (default 10 min)",
    ),
    (
        "execution.checkpointing.min-pause",
        "least time between the end of one checkpoint and the start of the next (default 0)",
    ),
    (
        "execution.checkpointing.num-retained",
        "complete checkpoints kept (default 3; also 'state.checkpoints.num-retained')",
    ),
    (
        "state.checkpoints.num-retained",
        "same as 'execution.checkpointing.num-retained'",
    ),
    (
        "execution.checkpointing.dir",
        "where checkpoints go: a directory or s3://bucket/prefix (default <data dir>/checkpoints; also 'state.checkpoints.dir')",
    ),
    ("state.checkpoints.dir", "same as 'execution.checkpointing.dir'"),
    (
        "restart-strategy.type",
        "'none' (default), 'fixed-delay' or 'exponential-delay': restart a failed job in-process from its latest checkpoint",
    ),
    (
        "restart-strategy.fixed-delay.attempts",
        "restarts before the job fails (default 1)",
    ),
    (
        "restart-strategy.fixed-delay.delay",
        "wait before each restart (default 1 s)",
    ),
    (
        "restart-strategy.exponential-delay.initial-backoff",
        "first wait before a restart (default 1 s)",
    ),
    (
        "restart-strategy.exponential-delay.max-backoff",
        "longest wait before a restart (default 1 min)",
    ),
    (
        "restart-strategy.exponential-delay.backoff-multiplier",
        "factor the wait grows by after each restart (default 2.0)",
    ),
    (
        "sluice.batch.linger",
        "longest wait to fill a batch before emitting it (default 0: each batch at once)",
    ),
    (
        "sluice.batch.held-rows",
        "most rows a GROUP BY holds back while more input is ready, to update each key once for all of them (default 131072; 0: none)",
    ),
    (
        "execution.mode",
        "'embedded' (default: one process) or 'scale-out': processes started with the same job share it over a Kafka consumer group (same as `sluice run --scale-out`)",
    ),
    (
        "scale-out.group.id",
        "scale-out: the consumer group that assigns tasks to processes (default 'sluice-<job name>')",
    ),
    (
        "scale-out.group.bootstrap.servers",
        "scale-out: the Kafka cluster of that consumer group (default: the first source table's)",
    ),
    (
        "scale-out.session-timeout",
        "scale-out: a process that stops heartbeating for this long loses its tasks (default 10 s)",
    ),
];

/// How a job's work is spread over processes.
#[derive(Debug, Clone, Default)]
pub struct ScaleOutSettings {
    /// `scale-out.group.id`.
    pub group_id: Option<String>,
    /// `scale-out.group.bootstrap.servers`.
    pub group_bootstrap_servers: Option<String>,
    /// `scale-out.session-timeout`.
    pub session_timeout: Duration,
}

/// The settings a job runs with.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Subtasks per operator.
    pub parallelism: usize,
    /// Job name.
    pub job_name: String,
    /// Where the job keeps its files.
    pub data_dir: PathBuf,
    /// Target rows per batch.
    pub batch_size: usize,
    /// Longest wait to fill a batch.
    pub batch_linger: Duration,
    /// Most rows a `GROUP BY` holds back while more input is ready (0: none).
    pub held_rows: usize,
    /// Idle time after which join and GROUP BY state of a key is dropped.
    pub state_ttl: Option<Duration>,
    /// Bytes of keyed state kept in memory before keys spill (`None`: no limit).
    pub state_memory_budget: Option<u64>,
    /// Whether idle keys of keyed state are kept encoded in memory.
    pub compact_idle_keys: bool,
    /// Whether the values of compacted keys are compressed.
    pub compress_idle_keys: bool,
    /// Where keyed state spills to.
    pub spill_dir: PathBuf,
    /// Dead letter file for late rows, when `table.exec.late-data` = `dlq`.
    pub late_data_dlq: Option<PathBuf>,
    /// Default idle timeout of source subtasks (`table.exec.source.idle-timeout`).
    pub source_idle_timeout: Option<Duration>,
    /// Least time between a source subtask's watermarks.
    pub watermark_interval: Duration,
    /// How long windows accept late rows after they fire (`table.exec.emit.allow-lateness`).
    pub allowed_lateness: Duration,
    /// Checkpoints and restarts.
    pub checkpoints: CheckpointSettings,
    /// `execution.mode = 'scale-out'`: how the job shares work with other processes.
    pub scale_out: Option<ScaleOutSettings>,
    /// Identical sub-plans run once (`table.optimizer.reuse-sub-plan-enabled`).
    pub reuse_sub_plans: bool,
    /// Keys that were set but that Sluice does not use.
    pub ignored_keys: Vec<String>,
}

/// How a job takes checkpoints and recovers.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// Time between checkpoints; `None` = checkpoints off.
    pub interval: Option<Duration>,
    /// A checkpoint not complete after this long is abandoned.
    pub timeout: Duration,
    /// Least time between one checkpoint's end and the next one's start.
    pub min_pause: Duration,
    /// Complete checkpoints kept.
    pub retained: usize,
    /// A directory or object store URL.
    pub location: String,
    /// What happens when the job fails.
    pub restart: RestartStrategy,
}

/// What a job does when a task fails (`restart-strategy.type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Fail the job.
    None,
    /// Restart up to `attempts` times, waiting `delay` each time.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each.
        delay: Duration,
    },
    /// Restart without limit, waiting `initial`, then `multiplier` times
    /// longer each time, up to `max`.
    ExponentialDelay {
        /// First wait.
        initial: Duration,
        /// Longest wait.
        max: Duration,
        /// Growth factor.
        multiplier: f64,
    },
}

impl RestartStrategy {
    /// The wait before restart number `attempt` (1-based), or `None` when
    /// the job must fail.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        match self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (attempt <= *attempts).then_some(*delay)
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
            } => {
                let factor = multiplier.powi(attempt.saturating_sub(1).min(64) as i32);
                Some(initial.mul_f64(factor.min(1e9)).min(*max))
            }
        }
    }
}

impl CheckpointSettings {
    fn from_options(options: &Options, data_dir: &std::path::Path) -> Result<Self> {
        let interval = match options
            .get("execution.checkpointing.interval")
            .map(str::trim)
        {
            Some(off) if ["off", "disabled", "none", "false"].contains(&off) => None,
            _ => Some(
                options
                    .duration("execution.checkpointing.interval")?
                    .unwrap_or(Duration::from_secs(10)),
            ),
        }
        .filter(|interval| !interval.is_zero());
        let retained = match options.parse::<usize>("execution.checkpointing.num-retained")? {
            Some(n) => Some(n),
            None => options.parse::<usize>("state.checkpoints.num-retained")?,
        }
        .unwrap_or(3)
        .max(1);
        let location = options
            .get("execution.checkpointing.dir")
            .or_else(|| options.get("state.checkpoints.dir"))
            .map(str::to_string)
            .unwrap_or_else(|| data_dir.join("checkpoints").display().to_string());
        let seconds = |key: &str, default: u64| -> Result<Duration> {
            Ok(options
                .duration(key)?
                .unwrap_or(Duration::from_secs(default)))
        };
        let restart = match options
            .get("restart-strategy.type")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("none") | Some("disable") | Some("off") => RestartStrategy::None,
            Some("fixed-delay") | Some("fixeddelay") => RestartStrategy::FixedDelay {
                attempts: options
                    .parse::<u32>("restart-strategy.fixed-delay.attempts")?
                    .unwrap_or(1),
                delay: seconds("restart-strategy.fixed-delay.delay", 1)?,
            },
            Some("exponential-delay") | Some("exponentialdelay") => {
                RestartStrategy::ExponentialDelay {
                    initial: seconds("restart-strategy.exponential-delay.initial-backoff", 1)?,
                    max: seconds("restart-strategy.exponential-delay.max-backoff", 60)?,
                    multiplier: options
                        .parse::<f64>("restart-strategy.exponential-delay.backoff-multiplier")?
                        .unwrap_or(2.0)
                        .max(1.0),
                }
            }
            Some(other) => {
                return Err(sluice_core::SluiceError::Config(format!(
                    "SET: 'restart-strategy.type' must be 'none', 'fixed-delay' or \
                     'exponential-delay', got '{other}'"
                )))
            }
        };
        Ok(CheckpointSettings {
            interval,
            timeout: seconds("execution.checkpointing.timeout", 600)?,
            min_pause: seconds("execution.checkpointing.min-pause", 0)?,
            retained,
            location,
            restart,
        })
    }
}

impl JobSettings {
    /// Builds settings from `SET` pairs; `default_name` is used without `pipeline.name`.
    pub fn from_pairs(pairs: &BTreeMap<String, String>, default_name: &str) -> Result<Self> {
        let options = Options::new("SET", pairs.clone());
        let parallelism = options
            .parse::<usize>("parallelism.default")?
            .unwrap_or(1)
            .max(1);
        let job_name = options
            .get("pipeline.name")
            .map(str::to_string)
            .unwrap_or_else(|| default_name.to_string());
        let data_dir = options
            .get("sluice.data-dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_data_dir(&job_name));
        let batch_size = options
            .parse::<usize>("sluice.batch.size")?
            .unwrap_or(8192)
            .max(1);
        let batch_linger = options
            .duration("sluice.batch.linger")?
            .unwrap_or(Duration::ZERO);
        let held_rows = options
            .parse::<usize>("sluice.batch.held-rows")?
            .unwrap_or(DEFAULT_HELD_ROWS);

        let state_ttl = options
            .duration("table.exec.state.ttl")?
            .filter(|ttl| !ttl.is_zero());
        let state_memory_budget = match options.get("state.memory-budget") {
            Some(raw)
                if ["unlimited", "off", "none"]
                    .contains(&raw.trim().to_ascii_lowercase().as_str()) =>
            {
                None
            }
            Some(_) => options.size("state.memory-budget")?,
            None => Some(default_state_memory_budget()),
        };
        let spill_dir = options
            .get("state.spill.dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("spill"));
        let late_data_dlq = match options
            .get("table.exec.late-data")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("drop") => None,
            Some("dlq") => Some(
                options
                    .get("table.exec.late-data.dlq-path")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| data_dir.join("dlq").join("late.jsonl")),
            ),
            Some(other) => {
                return Err(sluice_core::SluiceError::Config(format!(
                    "SET: 'table.exec.late-data' must be 'drop' or 'dlq', got '{other}'"
                )))
            }
        };
        let source_idle_timeout = options
            .duration("table.exec.source.idle-timeout")?
            .filter(|timeout| !timeout.is_zero());
        let watermark_interval = options
            .duration("pipeline.auto-watermark-interval")?
            .unwrap_or(Duration::ZERO);
        let allowed_lateness = options
            .duration("table.exec.emit.allow-lateness")?
            .unwrap_or(Duration::ZERO);
        let checkpoints = CheckpointSettings::from_options(&options, &data_dir)?;
        let scale_out = match options
            .get("execution.mode")
            .map(|mode| mode.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("embedded") | Some("single-process") => None,
            Some("scale-out") => Some(ScaleOutSettings {
                group_id: options.get("scale-out.group.id").map(str::to_string),
                group_bootstrap_servers: options
                    .get("scale-out.group.bootstrap.servers")
                    .map(str::to_string),
                session_timeout: options
                    .duration("scale-out.session-timeout")?
                    .unwrap_or(Duration::from_secs(10)),
            }),
            Some(other) => {
                return Err(sluice_core::SluiceError::Config(format!(
                    "SET: 'execution.mode' must be 'embedded' or 'scale-out', got '{other}'"
                )))
            }
        };
        let reuse_sub_plans = options.bool(crate::reuse::REUSE_SUB_PLAN_SETTING, true)?;
        let compact_idle_keys = options.bool("state.compact-idle-keys", true)?;
        let compress_idle_keys = options.bool("state.compress-idle-keys", true)?;
        let ignored_keys = pairs
            .keys()
            .filter(|key| !KNOWN_SETTINGS.iter().any(|(known, _)| known == key))
            .cloned()
            .collect();
        Ok(JobSettings {
            parallelism,
            job_name,
            data_dir,
            batch_size,
            batch_linger,
            held_rows,
            state_ttl,
            state_memory_budget,
            compact_idle_keys,
            compress_idle_keys,
            spill_dir,
            late_data_dlq,
            source_idle_timeout,
            watermark_interval,
            allowed_lateness,
            checkpoints,
            scale_out,
            reuse_sub_plans,
            ignored_keys,
        })
    }
}

/// Default `sluice.batch.held-rows`: sixteen default batches.
pub const DEFAULT_HELD_ROWS: usize = 131_072;

/// `state.memory-budget` where the machine's memory is unknown: 1 GiB.
const FALLBACK_STATE_MEMORY_BUDGET: u64 = 1 << 30;

/// The smallest default `state.memory-budget`: 256 MiB.
const MIN_DEFAULT_STATE_MEMORY_BUDGET: u64 = 256 << 20;

/// Default `state.memory-budget`: a quarter of the memory this process may
/// use (the machine's, or the cgroup limit of its container when lower), as
/// the JVM sizes its default heap; at least 256 MiB, and 1 GiB where the
/// memory cannot be read (not Linux).
pub fn default_state_memory_budget() -> u64 {
    match available_memory() {
        Some(bytes) => (bytes / 4).max(MIN_DEFAULT_STATE_MEMORY_BUDGET),
        None => FALLBACK_STATE_MEMORY_BUDGET,
    }
}

/// Physical memory (`/proc/meminfo`), capped by a cgroup v2 or v1 limit.
fn available_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())?
        .saturating_mul(1024);
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .find_map(|text| text.trim().parse::<u64>().ok());
    Some(limit.map_or(total, |limit| limit.min(total)))
}

/// The data directory of a job that sets no `sluice.data-dir`.
pub fn default_data_dir(job_name: &str) -> PathBuf {
    PathBuf::from("sluice-data").join(sanitize(job_name))
}

/// Makes a job name safe as a directory name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_known_keys_and_lists_ignored_ones() {
        let pairs: BTreeMap<String, String> = [
            ("parallelism.default", "2"),
            ("pipeline.name", "my job"),
            ("table.exec.mini-batch.enabled", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings = JobSettings::from_pairs(&pairs, "script").unwrap();
        assert_eq!(settings.parallelism, 2);
        assert_eq!(settings.data_dir, PathBuf::from("sluice-data/my_job"));
        assert_eq!(settings.ignored_keys, vec!["table.exec.mini-batch.enabled"]);
    }

    #[test]
    fn memory_budget_takes_sizes_or_unlimited() {
        let settings = |value: &str| {
            let pairs = [("state.memory-budget".to_string(), value.to_string())].into();
            JobSettings::from_pairs(&pairs, "x")
        };
        assert_eq!(
            settings("64mb").unwrap().state_memory_budget,
            Some(64 << 20)
        );
        assert_eq!(settings("unlimited").unwrap().state_memory_budget, None);
        let err = settings("lots").unwrap_err().to_string();
        assert!(err.contains("state.memory-budget"), "{err}");
        let default = JobSettings::from_pairs(&BTreeMap::new(), "x").unwrap();
        let budget = default.state_memory_budget.expect("a default budget");
        assert!(budget >= MIN_DEFAULT_STATE_MEMORY_BUDGET, "{budget}");
        assert_eq!(budget, default_state_memory_budget());
        assert_eq!(default.spill_dir, default.data_dir.join("spill"));
    }

    #[test]
    fn bad_parallelism_is_rejected() {
        let pairs = [("parallelism.default".to_string(), "two".to_string())].into();
        let err = JobSettings::from_pairs(&pairs, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("parallelism.default"), "{err}");
    }
}
