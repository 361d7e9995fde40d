//! `sluice serve` (the server) and `sluice jobs` (its REST API from the
//! command line).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use sluice_server::{Server, ServerConfig};
use tracing::info;

/// Where the server is configured from on the command line.
pub struct ServeArgs {
    /// A TOML file.
    pub config: Option<PathBuf>,
    /// `listen`.
    pub listen: Option<String>,
    /// `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `insecure_no_auth`.
    pub insecure_no_auth: bool,
    /// Other `key=value` settings.
    pub settings: Vec<(String, String)>,
}

/// `sluice serve`: runs until Ctrl-C / SIGTERM.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut overrides = args.settings;
    if let Some(listen) = args.listen {
        overrides.push(("listen".into(), listen));
    }
    if let Some(dir) = args.data_dir {
        overrides.push(("data_dir".into(), dir.display().to_string()));
    }
    if args.insecure_no_auth {
        overrides.push(("insecure_no_auth".into(), "true".into()));
    }
    let config = ServerConfig::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    let data_dir = config.data_dir.clone();
    let server = Server::bind(config, std::env::var("SLUICE_ADMIN_TOKEN").ok())
        .await
        .context("starting the server")?;
    let url = server.url()?;
    if let Some(token) = server.new_admin_token() {
        // Shown once, outside the log filter: only its hash is stored.
        eprintln!("admin token (shown only now; store it safely): {token}");
    }
    info!(data_dir = %data_dir.display(), "server started");
    // Printed as is: scripts and tests read it.
    eprintln!("sluice server listening on {url}");
    server.run(shutdown).await?;
    info!("server stopped");
    Ok(())
}

/// `sluice jobs ...`: one call of the REST API.
#[derive(Subcommand)]
pub enum JobsAction {
    /// List jobs with status and throughput.
    List,
    /// Show a job: status, live figures, operator graph, recent events.
    Get {
        /// The job's name.
        name: String,
    },
    /// Submit a SQL script as a new job.
    Submit {
        /// The SQL script.
        script: PathBuf,
        /// The job's name (default: the script's file name).
        #[arg(long)]
        name: Option<String>,
        /// Subtasks per operator.
        #[arg(long, short = 'p')]
        parallelism: Option<u32>,
    },
    /// Stop a job (with `--savepoint`, take one first so `resume` goes on from it).
    Stop {
        /// The job's name.
        name: String,
        /// Take a savepoint and stop right after it.
        #[arg(long)]
        savepoint: bool,
        /// Where to write the savepoint.
        #[arg(long, value_name = "DIR")]
        target: Option<String>,
    },
    /// Start a stopped, finished or failed job again.
    Resume {
        /// The job's name.
        name: String,
    },
    /// Stop and delete a job with its checkpoints.
    Delete {
        /// The job's name.
        name: String,
    },
}

/// Runs one `sluice jobs` action against `server`.
pub async fn jobs(server: &str, token: Option<&str>, action: JobsAction) -> Result<()> {
    let client = ApiClient::new(server, token)?;
    match action {
        JobsAction::List => {
            let jobs = client.call(reqwest::Method::GET, "/jobs", None).await?;
            print_job_table(&jobs);
        }
        JobsAction::Get { name } => {
            let job = client
                .call(reqwest::Method::GET, &format!("/jobs/{name}"), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsAction::Submit {
            script,
            name,
            parallelism,
        } => {
            let sql = std::fs::read_to_string(&script)
                .with_context(|| format!("cannot read script '{}'", script.display()))?;
            let name = name.unwrap_or_else(|| default_name(&script));
            let body = json!({"name": name, "sql": sql, "parallelism": parallelism});
            let job = client
                .call(reqwest::Method::POST, "/jobs", Some(body))
                .await?;
            println!(
                "submitted job '{}' ({})",
                name,
                job["status"].as_str().unwrap_or("?")
            );
        }
        JobsAction::Stop {
            name,
            savepoint,
            target,
        } => {
            let body = json!({"savepoint": savepoint, "target": target});
            let job = client
                .call(
                    reqwest::Method::POST,
                    &format!("/jobs/{name}/stop"),
                    Some(body),
                )
                .await?;
            match job["savepoint"].as_str() {
                Some(location) => println!("job '{name}' stopped with a savepoint at {location}"),
                None => println!("job '{name}' stopped"),
            }
        }
        JobsAction::Resume { name } => {
            client
                .call(reqwest::Method::POST, &format!("/jobs/{name}/resume"), None)
                .await?;
            println!("job '{name}' resumed");
        }
        JobsAction::Delete { name } => {
            client
                .call(reqwest::Method::DELETE, &format!("/jobs/{name}"), None)
                .await?;
            println!("job '{name}' deleted");
        }
    }
    Ok(())
}

fn default_name(script: &Path) -> String {
    script
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "job".into())
}

fn print_job_table(jobs: &Value) {
    println!(
        "{:<24} {:<10} {:>12} {:>12}  SUBMITTED",
        "NAME", "STATUS", "ROWS READ", "ROWS/S"
    );
    for job in jobs.as_array().into_iter().flatten() {
        let metrics = &job["metrics"];
        println!(
            "{:<24} {:<10} {:>12} {:>12.0}  {}",
            job["name"].as_str().unwrap_or(""),
            job["status"].as_str().unwrap_or(""),
            metrics["rows_read"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            metrics["rows_per_second"].as_f64().unwrap_or(0.0),
            job["created_at"].as_str().unwrap_or(""),
        );
    }
}

/// A REST client for `/api/v1`.
struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    fn new(server: &str, token: Option<&str>) -> Result<Self> {
        Ok(ApiClient {
            http: reqwest::Client::builder().build()?,
            base: format!("{}/api/v1", server.trim_end_matches('/')),
            token: token.map(str::to_string),
        })
    }

    /// Calls the API; a JSON error answer becomes an error with its message.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!("{status}: {message}");
        }
        Ok(value)
    }
}
