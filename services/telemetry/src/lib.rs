//! Drover's telemetry, shared by every process and adapter: the tracing subscriber (log lines to
//! stderr or a file, as text or JSON, and OpenTelemetry spans over OTLP/HTTP when an endpoint is
//! configured), the Prometheus metrics of the process ([`metrics`]), the W3C trace context a
//! workflow carries ([`trace`]), and the instrumentation of outgoing HTTP calls ([`calls`]).

pub mod calls;
pub mod metrics;
pub mod trace;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use metrics::metrics;

/// Errors setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(String),
}

/// Where and how log lines are written.
pub struct Logging {
    /// Which events are logged (`DROVER_LOG`).
    pub filter: tracing_subscriber::EnvFilter,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Colour escape codes (for a person at a terminal).
    pub ansi: bool,
    pub writer: BoxMakeWriter,
}

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the process's subscriber: the log lines of `logging`, and, when `traces` names an
/// endpoint (or the standard `OTEL_*` variables do), spans of Drover's own crates exported as
/// service `drover-<role>` unless a name is configured.
pub fn init(logging: Logging, traces: &trace::Config, role: &str) -> Result<Guard, Error> {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(logging.writer)
        .with_ansi(logging.ansi);
    let fmt = if logging.json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    }
    .with_filter(logging.filter);
    let provider = if traces.enabled() {
        Some(provider(traces, role)?)
    } else {
        None
    };
    // Only Drover's spans: a dependency's (apalis's per task, hyper's) would start traces of
    // their own, outside any workflow's.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("drover"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("drover", tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| Error::Subscriber(e.to_string()))?;
    Ok(Guard(provider))
}

fn provider(traces: &trace::Config, role: &str) -> Result<SdkTracerProvider, Error> {
    traces.validate().map_err(Error::Exporter)?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = &traces.otlp_endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .map_err(|e| Error::Exporter(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder()
        .with_attribute(KeyValue::new("process.pid", i64::from(std::process::id())));
    if let Some(name) = &traces.service_name {
        resource = resource.with_service_name(name.clone());
    } else if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(format!("drover-{role}"));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
