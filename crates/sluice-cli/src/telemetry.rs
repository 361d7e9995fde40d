//! Logs and traces: log lines to stderr (text for people or JSON for log
//! collectors) and, when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set, spans exported over
//! OTLP/HTTP (protobuf) to a collector such as Jaeger or the OpenTelemetry
//! Collector. `OTEL_SERVICE_NAME` names the service (default `sluice`);
//! `OTEL_BSP_*` tune the batch exporter; `OTEL_SDK_DISABLED=true` turns
//! export off.
//!
//! With export on, every source subtask also traces one batch per
//! `SLUICE_TRACE_BATCH_INTERVAL` (default `1s`; `0` turns it off) from the
//! source through each operator to the sink (see `sluice_runtime::trace`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The installed logging and tracing; call [`Telemetry::shutdown`] before
/// exiting so the last spans are exported.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: `filter` (e.g. `info`), JSON log
    /// lines when `json`, and an OTLP exporter when configured.
    pub fn init(filter: &str, json: bool) -> Telemetry {
        let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false);
        let lines = if json {
            lines.json().boxed()
        } else {
            lines.boxed()
        };
        let provider = otlp_provider();
        if provider.is_some() {
            sluice_runtime::trace::sample_batches_every(batch_trace_interval());
        }
        let spans = provider
            .as_ref()
            .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("sluice")));
        tracing_subscriber::registry()
            .with(filter)
            .with(lines)
            .with(spans)
            .init();
        Telemetry { provider }
    }

    /// Exports the spans still buffered.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("warning: exporting the last traces failed: {error}");
            }
        }
    }
}

/// How often each source subtask traces a batch: `SLUICE_TRACE_BATCH_INTERVAL`.
fn batch_trace_interval() -> Option<std::time::Duration> {
    let default = std::time::Duration::from_secs(1);
    let interval = match std::env::var("SLUICE_TRACE_BATCH_INTERVAL") {
        Ok(raw) => match sluice_core::options::parse_duration(&raw) {
            Some(interval) => interval,
            None => {
                eprintln!(
                    "warning: SLUICE_TRACE_BATCH_INTERVAL='{raw}' is not a duration (e.g. 1s, 500ms, 0); using 1s"
                );
                default
            }
        },
        Err(_) => default,
    };
    (!interval.is_zero()).then_some(interval)
}

/// An OTLP/HTTP trace pipeline, when an endpoint is configured.
fn otlp_provider() -> Option<SdkTracerProvider> {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let configured =
        set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if !configured || disabled {
        return None;
    }
    // The exporter reads the endpoint, headers and timeout variables itself.
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("warning: traces are not exported: {error}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("sluice");
    }
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}
