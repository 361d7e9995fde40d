//! `sluice serve`: a long-running Sluice that hosts many jobs behind a REST
//! API (`/api/v1`, OpenAPI at `/api/v1/openapi.json`), takes events over
//! HTTP into an embedded durable log that jobs read with the `stream`
//! connector, and exports Prometheus metrics at `/metrics`. Job definitions,
//! their status and API tokens live in SQLite (`<data dir>/sluice.db`);
//! every job that was running resumes when the server starts again.

pub mod api;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod ingest;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod store;
pub mod tap;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use sluice_connectors::stream::StreamConnector;
use sluice_log::StreamLog;
use tracing::{info, warn};

pub use config::ServerConfig;
pub use error::{ApiError, ServerError};

use crate::ingest::Ingest;
use crate::jobs::JobManager;
use crate::store::MetadataStore;

/// How often old stream segments are deleted.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// What request handlers share.
pub struct AppState {
    /// The configuration the server started with.
    pub config: ServerConfig,
    /// Jobs, tokens and events.
    pub store: Arc<MetadataStore>,
    /// The hosted jobs.
    pub jobs: Arc<JobManager>,
    /// The embedded log.
    pub log: StreamLog,
    /// HTTP ingest limits and counters.
    pub ingest: Ingest,
}

/// A server bound to its address, not yet serving.
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    admin_token: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    /// Opens the data directory (metadata store, stream log), creates the
    /// admin token on first start (`SLUICE_ADMIN_TOKEN` or a new one), and
    /// binds the listen address.
    pub async fn bind(
        config: ServerConfig,
        admin_token: Option<String>,
    ) -> Result<Self, ServerError> {
        let io = |context: String| move |source| ServerError::Io { context, source };
        std::fs::create_dir_all(&config.data_dir)
            .map_err(io(format!("creating '{}'", config.data_dir.display())))?;
        let tls = if config.tls.enabled() {
            Some(tls::server_config(&config.tls)?)
        } else {
            None
        };
        let store = Arc::new(MetadataStore::open(&config.data_dir.join("sluice.db"))?);
        let bootstrap = auth::bootstrap_admin(&store, admin_token)?;
        let streams_dir = config.data_dir.join("streams");
        let log = StreamLog::open_shared(&streams_dir, config.log_config()?)?;
        let mut connectors = sluice_connectors::builtin_connectors();
        connectors.register(Arc::new(StreamConnector::new(streams_dir)));
        let jobs = Arc::new(JobManager::new(
            store.clone(),
            config.data_dir.join("jobs"),
            connectors,
        ));
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(io(format!("listening on {}", config.listen)))?;
        let state = Arc::new(AppState {
            ingest: Ingest::new(config.ingest.rate_limit),
            config,
            store,
            jobs,
            log,
        });
        Ok(Server {
            state,
            listener,
            admin_token: bootstrap,
            tls,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(|source| ServerError::Io {
                context: "reading the listen address".into(),
                source,
            })
    }

    /// The server's base URL (`http://` or `https://` and the address).
    pub fn url(&self) -> Result<String, ServerError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// The admin token created on this first start, to show once.
    pub fn new_admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Resumes the jobs that were running, then serves until `shutdown`
    /// completes; then stops every job with a savepoint (they resume on the
    /// next start) and finishes the requests in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.state;
        if state.config.insecure_no_auth {
            warn!("authentication is OFF (insecure_no_auth): anyone who can reach the server controls it");
        }
        if state.config.listens_beyond_loopback() && self.tls.is_none() {
            warn!(
                "listening on {} beyond loopback without TLS: tokens and data cross the network in clear text",
                state.config.listen
            );
        }
        state.jobs.resume_all().await;
        let retention = tokio::spawn(enforce_retention(state.log.clone()));
        let app = router(state.clone());
        let jobs = state.jobs.clone();
        let stopping = async move {
            shutdown.await;
            info!("shutting down: stopping jobs with savepoints");
            jobs.shutdown().await;
        };
        let served = match self.tls {
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(stopping)
                    .await
            }
            Some(tls) => serve_tls(self.listener, tls, app, stopping).await,
        };
        retention.abort();
        served.map_err(|source| ServerError::Io {
            context: "serving HTTP".into(),
            source,
        })
    }
}

/// Serves HTTPS on `listener` until `stopping` completes, then finishes the
/// requests in flight (up to 30 s).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    stopping: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        stopping.await;
        on_stop.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    let listener = listener.into_std()?;
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(app.into_make_service())
        .await
}

/// Every route: the API (behind the token check), metrics, health.
pub fn router(state: Arc<AppState>) -> Router {
    let ingest_limit = state.config.ingest.max_request_bytes;
    let protected = Router::new()
        .route("/api/v1/jobs", get(api::list_jobs).post(api::submit_job))
        .route(
            "/api/v1/jobs/{name}",
            get(api::get_job).delete(api::delete_job),
        )
        .route("/api/v1/jobs/{name}/stop", post(api::stop_job))
        .route("/api/v1/jobs/{name}/resume", post(api::resume_job))
        .route("/api/v1/jobs/{name}/tail", get(api::tail_job))
        .route("/api/v1/jobs/{name}/graph", get(api::job_graph))
        .route("/api/v1/jobs/{name}/operators", get(api::job_operators))
        .route("/api/v1/jobs/{name}/checkpoints", get(api::job_checkpoints))
        .route(
            "/api/v1/jobs/{name}/dead-letters",
            get(api::job_dead_letters),
        )
        .route("/api/v1/sql/validate", post(api::validate_sql))
        .route("/api/v1/streams", get(api::list_streams))
        .route(
            "/api/v1/streams/{name}",
            put(api::create_stream).delete(api::delete_stream),
        )
        .route(
            "/api/v1/streams/{name}/events",
            post(api::ingest_events).layer(DefaultBodyLimit::max(ingest_limit)),
        )
        .route("/metrics", get(metrics_handler))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/api/v1/health", get(api::health))
        .route("/api/v1/openapi.json", get(api::openapi))
        .merge(dashboard::routes())
        .merge(protected)
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(auth::challenge))
        .with_state(state)
}

async fn metrics_handler(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state, state.jobs.committed_stream_offsets().await),
    )
}

async fn enforce_retention(log: StreamLog) {
    let mut tick = tokio::time::interval(RETENTION_INTERVAL);
    loop {
        tick.tick().await;
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.enforce_retention()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(bytes)) => info!("stream retention deleted {bytes} bytes"),
            Ok(Err(error)) => warn!("stream retention failed: {error}"),
            Err(error) => warn!("stream retention task failed: {error}"),
        }
    }
}
