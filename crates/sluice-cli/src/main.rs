//! The `sluice` command: runs, explains and validates SQL pipelines, and
//! benchmarks them.

mod bench;
mod job;
mod serve;
mod telemetry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sluice_runtime::{JobSummary, ProgressReport};
use tokio::sync::watch;
use tracing::{info, warn};

/// mimalloc instead of the system allocator: faster for the engine's many
/// short-lived allocations (measured in benchmarks/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's option setter (in the library the allocator links).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_arena_eager_commit` in mimalloc 3's `mi_option_t`.
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;

/// Commits mimalloc's arena memory as it is used instead of all at once on
/// Linux: about 50 MB less peak RSS for the same speed (benchmarks/README.md).
/// It must run before the first allocation creates the first arena, and the
/// Rust runtime allocates before `main`, so it is an ELF constructor. An
/// explicit `MIMALLOC_ARENA_EAGER_COMMIT` still wins.
extern "C" fn configure_allocator() {
    // SAFETY: `getenv` with a NUL-terminated name (it does not allocate);
    // `mi_option_set` stores a plain integer option.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

/// Sluice: a real-time stream processor that runs Flink SQL pipelines.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter for stderr (e.g. `info`, `debug`, `sluice_runtime=debug`).
    #[arg(long, global = true, default_value = "info", env = "SLUICE_LOG")]
    log: String,
    /// Log lines as text for people or as JSON objects for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SLUICE_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// How log lines look.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a SQL script as one streaming job (embedded, no server needed).
    Run {
        /// The SQL script.
        script: PathBuf,
        /// Print the operator graph the job would run, then exit.
        #[arg(long)]
        explain: bool,
        /// Override a setting, as `SET 'key' = 'value'` would (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Subtasks per operator (same as `--set parallelism.default=N`).
        #[arg(long, short = 'p')]
        parallelism: Option<usize>,
        /// The job's name, which names its data directory and checkpoints
        /// (same as `--set pipeline.name=ID`; default: the script's file name).
        #[arg(long)]
        job_id: Option<String>,
        /// Start over: delete the job's checkpoints instead of resuming from them.
        #[arg(long)]
        fresh: bool,
        /// Resume from a savepoint directory (at any parallelism).
        #[arg(long, value_name = "DIR")]
        from_savepoint: Option<String>,
        /// Share the job with every other process started with the same job
        /// and checkpoint directory, over a Kafka consumer group (same as
        /// `--set execution.mode=scale-out`).
        #[arg(long)]
        scale_out: bool,
    },
    /// Show a scale-out job's tasks: owner, last checkpoint, source lag.
    Status {
        /// The job's name.
        #[arg(long)]
        job: String,
        /// The job's checkpoint directory (`execution.checkpointing.dir`;
        /// default <data dir>/checkpoints).
        #[arg(long, value_name = "DIR")]
        checkpoints: Option<String>,
        /// The job's data directory, if it sets `sluice.data-dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Take a savepoint of a running job.
    Savepoint {
        /// The job's name (`pipeline.name`, `--job-id`, or its script's file name).
        job: String,
        /// Where to write the savepoint (a directory or s3://...; default
        /// <data dir>/savepoints/<time>).
        #[arg(long, value_name = "DIR")]
        dir: Option<String>,
        /// The job's data directory, if it sets `sluice.data-dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Stop a running job, taking a savepoint first (resume it with
    /// `sluice run --from-savepoint DIR`).
    Stop {
        /// The job's name.
        job: String,
        /// Where to write the savepoint.
        #[arg(long, value_name = "DIR")]
        savepoint: String,
        /// The job's data directory, if it sets `sluice.data-dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Check a SQL script (syntax, tables, connectors, options) without running it.
    Validate {
        /// The SQL script.
        script: PathBuf,
    },
    /// List the Flink functions Sluice adds to DataFusion's built-ins, and the connectors.
    Functions,
    /// Run a schema registry compatible with Confluent's REST API (Avro,
    /// JSON Schema, Protobuf) until Ctrl-C / SIGTERM.
    SchemaRegistry {
        /// Address to listen on (`127.0.0.1:0` picks a free port).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// Directory of the registry's database (`schema-registry.db`).
        #[arg(long, value_name = "DIR", default_value = "sluice-data")]
        data_dir: PathBuf,
    },
    /// Run Sluice as a server: many jobs behind a REST API, HTTP ingest into
    /// an embedded durable log, Prometheus metrics (until Ctrl-C / SIGTERM).
    Serve {
        /// A TOML configuration file (every key can also be set with
        /// `SLUICE_<KEY>` variables and `--set key=value`).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on (`127.0.0.1:0` picks a free port; default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory (default ./sluice-data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Serve without authentication: anyone who can connect controls the server.
        #[arg(long)]
        insecure_no_auth: bool,
        /// Override a configuration key (repeatable), e.g. `ingest.rate_limit=1000`.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// Manage the jobs of a running `sluice serve`.
    Jobs {
        #[command(subcommand)]
        action: serve::JobsAction,
        /// The server's URL.
        #[arg(
            long,
            global = true,
            env = "SLUICE_SERVER",
            default_value = "http://127.0.0.1:8080"
        )]
        server: String,
        /// An API token.
        #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        suite: BenchSuite,
    },
}

#[derive(Subcommand)]
enum BenchSuite {
    /// Run Nexmark queries (Flink SQL) into a blackhole sink and report
    /// events/s, events per CPU-second, CPU time and peak memory per query.
    Nexmark {
        /// Comma-separated query names (q0..q22), or `all`.
        #[arg(long, default_value = "all")]
        queries: String,
        /// Events the built-in generator produces.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Read this JSON-lines file (or directory) in the nexmark-flink shape instead.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Subtasks per operator.
        #[arg(long, short = 'p', default_value_t = 1)]
        parallelism: usize,
        /// Throttle the generator to this many events per second of wall time.
        #[arg(long)]
        rate: Option<u64>,
        /// Also write one JSON line per query to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Checkpoint interval of the queries (e.g. `10s`), or `off`.
        #[arg(long, default_value = "off")]
        checkpoint_interval: String,
        /// Set a job option in every query (any `SET` key, e.g.
        /// `--set sluice.batch.size=4096`); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{text}'"))
}

fn main() {
    let cli = Cli::parse();
    let telemetry = telemetry::Telemetry::init(&cli.log, matches!(cli.log_format, LogFormat::Json));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    let outcome = runtime.block_on(execute(cli.command));
    // Source threads blocked on stdin or a followed file must not keep us alive.
    runtime.shutdown_background();
    telemetry.shutdown();
    if let Err(error) = outcome {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn execute(command: Command) -> Result<()> {
    match command {
        Command::Bench {
            suite:
                BenchSuite::Nexmark {
                    queries,
                    events,
                    input,
                    parallelism,
                    rate,
                    json,
                    checkpoint_interval,
                    settings,
                },
        } => {
            let options = bench::BenchOptions {
                queries,
                events,
                input,
                parallelism: parallelism.max(1),
                rate,
                json,
                checkpoint_interval,
                settings,
            };
            tokio::task::spawn_blocking(move || bench::run(&options))
                .await
                .context("benchmark thread")?
        }
        Command::Serve {
            config,
            listen,
            data_dir,
            insecure_no_auth,
            settings,
        } => {
            let args = serve::ServeArgs {
                config,
                listen,
                data_dir,
                insecure_no_auth,
                settings,
            };
            serve::serve(args, wait_for_signal()).await
        }
        Command::Jobs {
            action,
            server,
            token,
        } => serve::jobs(&server, token.as_deref(), action).await,
        Command::SchemaRegistry { listen, data_dir } => schema_registry(&listen, &data_dir).await,
        Command::Functions => {
            println!(
                "Flink functions (in addition to every DataFusion scalar and aggregate function):"
            );
            for usage in sluice_sql::functions::flink_function_usages() {
                println!("  {usage}");
            }
            println!(
                "Connectors: {}",
                sluice_connectors::builtin_connectors().names().join(", ")
            );
            Ok(())
        }
        Command::Validate { script } => {
            let plan = plan(&script, BTreeMap::new()).await?;
            println!(
                "{}: OK ({} sink(s), {} operator(s))",
                script.display(),
                plan.sinks.len(),
                plan.nodes.len()
            );
            Ok(())
        }
        Command::Savepoint { job, dir, data_dir } => {
            let data_dir = data_dir.unwrap_or_else(|| sluice_sql::settings::default_data_dir(&job));
            let target = dir.unwrap_or_else(|| {
                data_dir
                    .join("savepoints")
                    .join(format!(
                        "savepoint-{}",
                        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
                    ))
                    .display()
                    .to_string()
            });
            job::savepoint(&data_dir, &target, false).await
        }
        Command::Stop {
            job,
            savepoint,
            data_dir,
        } => {
            let data_dir = data_dir.unwrap_or_else(|| sluice_sql::settings::default_data_dir(&job));
            job::savepoint(&data_dir, &savepoint, true).await
        }
        Command::Status {
            job,
            checkpoints,
            data_dir,
        } => {
            let checkpoints = checkpoints.unwrap_or_else(|| {
                data_dir
                    .unwrap_or_else(|| sluice_sql::settings::default_data_dir(&job))
                    .join("checkpoints")
                    .display()
                    .to_string()
            });
            print!("{}", sluice_scale_out::print_status(&checkpoints).await?);
            Ok(())
        }
        Command::Run {
            script,
            explain,
            settings,
            parallelism,
            job_id,
            fresh,
            from_savepoint,
            scale_out,
        } => {
            let mut overrides: BTreeMap<String, String> = settings.into_iter().collect();
            if let Some(parallelism) = parallelism {
                overrides.insert("parallelism.default".into(), parallelism.to_string());
            }
            if let Some(job_id) = job_id {
                overrides.insert("pipeline.name".into(), job_id);
            }
            if scale_out {
                overrides.insert("execution.mode".into(), "scale-out".into());
            }
            let plan = plan(&script, overrides.clone()).await?;
            if plan.settings.scale_out.is_some() {
                if fresh || from_savepoint.is_some() {
                    bail!(
                        "scale-out jobs resume from their tasks' checkpoints: --fresh and \
                         --from-savepoint are not supported (delete the checkpoint directory \
                         to start over)"
                    );
                }
                return run_scale_out(&script, overrides, explain).await;
            }
            if explain {
                print!("{}", plan.explain());
                return Ok(());
            }
            for key in &plan.settings.ignored_keys {
                warn!("setting '{key}' is not used by Sluice and is ignored");
            }
            let (stop_sender, stop) = watch::channel(false);
            tokio::spawn(stop_on_signal(stop_sender));
            info!(
                job = %plan.settings.job_name,
                parallelism = plan.settings.parallelism,
                "job started"
            );
            let started = std::time::Instant::now();
            // `sluice bench` reads the progress of the queries it runs from stderr.
            let progress = || {
                std::env::var_os("SLUICE_PROGRESS").map(|_| {
                    let report: ProgressReport =
                        Box::new(|rows| eprintln!("{}{rows}", bench::PROGRESS_PREFIX));
                    (std::time::Duration::from_millis(250), report)
                })
            };
            let start = sluice_runtime::supervisor::StartOptions {
                fresh,
                from_savepoint,
                ..Default::default()
            };
            let summary = sluice_runtime::supervisor::run_supervised(&plan, &start, stop, progress)
                .await
                .context("job failed")?;
            job::report_checkpoints(&summary);
            report(&summary, started.elapsed());
            Ok(())
        }
    }
}

/// `sluice run --scale-out`: this process's share of the job, until Ctrl-C / SIGTERM.
async fn run_scale_out(
    script: &Path,
    overrides: BTreeMap<String, String>,
    explain: bool,
) -> Result<()> {
    let job = sluice_scale_out::ScaleOutJob {
        script: std::fs::read_to_string(script)
            .with_context(|| format!("cannot read script '{}'", script.display()))?,
        default_name: script
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into()),
        overrides,
        registry: sluice_connectors::builtin_connectors(),
    };
    if explain {
        print!("{}", job.explain().await?);
        return Ok(());
    }
    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(stop_on_signal(stop_sender));
    sluice_scale_out::run_scale_out(job, stop)
        .await
        .context("scale-out job failed")
}

async fn plan(script: &Path, overrides: BTreeMap<String, String>) -> Result<sluice_sql::JobPlan> {
    let text = std::fs::read_to_string(script)
        .with_context(|| format!("cannot read script '{}'", script.display()))?;
    let default_name = script
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "job".into());
    let registry = sluice_connectors::builtin_connectors();
    match sluice_sql::plan_script(&text, &default_name, &registry, &overrides).await {
        Ok(plan) => Ok(plan),
        Err(error) => bail!("{}: {error}", script.display()),
    }
}

/// `sluice schema-registry`: serves the registry until Ctrl-C / SIGTERM.
async fn schema_registry(listen: &str, data_dir: &Path) -> Result<()> {
    let path = data_dir.join("schema-registry.db");
    let registry = sluice_registry::Registry::open(&path)
        .with_context(|| format!("cannot open the schema registry at '{}'", path.display()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    info!(database = %path.display(), "schema registry started");
    // Printed as is (not through the log filter): scripts and tests read it.
    eprintln!("schema registry listening on http://{address}");
    sluice_registry::serve_with_shutdown(listener, registry, wait_for_signal())
        .await
        .context("schema registry server")?;
    info!("schema registry stopped");
    Ok(())
}

/// Stops the job on the first Ctrl-C / SIGTERM; exits at once on the second.
async fn stop_on_signal(stop: watch::Sender<bool>) {
    let mut first = true;
    loop {
        wait_for_signal().await;
        if !first {
            eprintln!("second signal: exiting without draining");
            std::process::exit(130);
        }
        first = false;
        info!("stopping: draining in-flight data and closing sinks (signal again to exit at once)");
        let _ = stop.send(true);
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = terminate.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

fn report(summary: &JobSummary, elapsed: std::time::Duration) {
    for source in &summary.sources {
        let mut line = format!("source `{}`: {} rows read", source.table, source.rows);
        if source.skipped > 0 {
            line.push_str(&format!(", {} bad records skipped", source.skipped));
        }
        if source.dead_lettered > 0 {
            let path = source
                .dead_letter_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            line.push_str(&format!(
                ", {} bad records dead-lettered to {path}",
                source.dead_lettered
            ));
        }
        info!("{line}");
    }
    if summary.late_records > 0 {
        let per_operator: Vec<String> = summary
            .late_by_operator
            .iter()
            .map(|(operator, count)| format!("{operator} {count}"))
            .collect();
        warn!(
            "{} late records (behind the watermark) were dropped: {}",
            summary.late_records,
            per_operator.join(", ")
        );
    }
    for sink in &summary.sinks {
        info!("sink `{}`: {} rows written", sink.table, sink.rows);
    }
    if summary.spilled_bytes > 0 {
        info!(
            "keyed state beyond 'state.memory-budget' spilled {:.1} MB to disk",
            summary.spilled_bytes as f64 / 1e6
        );
    }
    if summary.compacted_keys > 0 {
        info!(
            "keyed state: {} idle keys were compacted in memory, {} of them compressed",
            summary.compacted_keys, summary.compressed_keys
        );
    }
    info!("job finished in {:.2?}", elapsed);
}
