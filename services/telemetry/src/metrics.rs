//! The process's Prometheus metrics: one registry per process, like the tracing subscriber, so the
//! adapters record their calls without a handle threaded through every constructor. Workers record
//! steps, attempts, dispatch latency and lease expirations as they happen; every process records
//! its outgoing calls; `drover api` also reads the store's gauges at scrape time
//! ([`Metrics::store`]). Label values are kinds, step names, states, systems, verbs, statuses and
//! semaphore names: never ids, inputs, URLs or anything a secret can hide in.

use std::future::Future;
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What `/metrics` answers with: OpenMetrics text, which Prometheus asks for and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Labels of a step's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub kind: String,
    pub step: String,
}

/// Labels of an attempt's end.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub kind: String,
    /// The engine core's outcome (`completed`, `retry`, `failed`, ...), or `lease-lost`.
    pub outcome: String,
}

/// Labels of a dispatch latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Labels of an outgoing call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `maas`, `kubernetes`, `jira` or `servicenow`.
    pub system: &'static str,
    /// The HTTP method.
    pub verb: String,
    /// The HTTP status code, or `error` when no response came (connection refused, timeout).
    pub status: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric a process records.
pub struct Metrics {
    registry: Mutex<Registry>,
    store: OnceLock<StoreGauges>,
    /// How long a step ran, from its start on a worker to its outcome (the commit excluded).
    pub step_duration: Histograms<StepLabels>,
    /// From the moment a task fell due to the moment its step started on a worker.
    pub dispatch_latency: Histograms<KindLabels>,
    /// Attempts by how they ended.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Expired leases this process's claims reclaimed (a worker died or stalled).
    pub lease_expirations: Counter,
    /// Outgoing HTTP calls to the systems Drover drives.
    pub calls: Histograms<CallLabels>,
}

/// Workflow, queue and semaphore gauges read from the store at each scrape (`drover api` only).
#[derive(Default)]
pub struct StoreGauges {
    /// Workflows by state (all kinds).
    pub workflows: Family<StateLabels, Gauge>,
    /// Live workflows (not ended) by kind and state.
    pub live: Family<KindStateLabels, Gauge>,
    /// Tasks by where they wait: `ready`, `delayed`, `leased`, `paused`, `semaphore`.
    pub queue: Family<QueueLabels, Gauge>,
    /// Permits held per semaphore.
    pub permits: Family<SemaphoreLabels, Gauge>,
    /// Tasks waiting for each semaphore.
    pub permit_waiters: Family<SemaphoreLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindStateLabels {
    pub kind: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SemaphoreLabels {
    pub semaphore: String,
}

/// Buckets from 1 ms to about 9 minutes: steps poll in milliseconds and deploy machines in
/// minutes.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 20,
    ))
}

/// Buckets from 1 ms to about 33 s, for HTTP calls.
fn call_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            store: OnceLock::new(),
            step_duration: Family::new_with_constructor(duration_histogram),
            dispatch_latency: Family::new_with_constructor(duration_histogram),
            attempts: Family::default(),
            lease_expirations: Counter::default(),
            calls: Family::new_with_constructor(call_histogram),
        };
        {
            let mut r = lock(&m.registry);
            r.register(
                "drover_step_duration_seconds",
                "How long a step attempt ran on a worker, from its start to its outcome",
                m.step_duration.clone(),
            );
            r.register(
                "drover_dispatch_latency_seconds",
                "From a task falling due to its step starting on a worker (time spent waiting \
                 for a permit included)",
                m.dispatch_latency.clone(),
            );
            r.register(
                "drover_attempts",
                "Step attempts by kind and outcome",
                m.attempts.clone(),
            );
            r.register(
                "drover_lease_expirations",
                "Expired leases this process reclaimed (their workers died or stalled)",
                m.lease_expirations.clone(),
            );
            r.register(
                "drover_outgoing_call_duration_seconds",
                "Outgoing HTTP calls by system (maas, kubernetes, jira, servicenow), verb and status",
                m.calls.clone(),
            );
        }
        m
    }

    /// The store's gauges, registered on first use (by `drover api`, which sets them at each
    /// scrape).
    pub fn store(&self) -> &StoreGauges {
        self.store.get_or_init(|| {
            let g = StoreGauges::default();
            let mut r = lock(&self.registry);
            r.register(
                "drover_workflows",
                "Workflows in the store by state",
                g.workflows.clone(),
            );
            r.register(
                "drover_live_workflows",
                "Workflows not ended, by kind and state",
                g.live.clone(),
            );
            r.register(
                "drover_queue_tasks",
                "Tasks by where they wait (ready, delayed, leased, paused, semaphore)",
                g.queue.clone(),
            );
            r.register(
                "drover_semaphore_permits_in_use",
                "Permits held, per semaphore",
                g.permits.clone(),
            );
            r.register(
                "drover_semaphore_waiters",
                "Tasks waiting for a permit, per semaphore",
                g.permit_waiters.clone(),
            );
            g
        })
    }

    /// Records the end of an outgoing call.
    pub fn call(&self, system: &'static str, verb: &str, status: Option<u16>, took: Duration) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.calls
            .get_or_create(&CallLabels {
                system,
                verb: verb.to_string(),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// The text a scrape gets.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &lock(&self.registry));
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `/metrics` route alone, for processes without an HTTP API (workers).
pub fn router() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { response(metrics().encode()) }),
    )
}

/// A scrape's answer.
pub fn response(body: String) -> axum::response::Response {
    axum::response::IntoResponse::into_response((
        [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
        body,
    ))
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_labelled_by_system_verb_and_status() {
        let m = metrics();
        m.call("maas", "POST", Some(409), Duration::from_millis(3));
        m.call("jira", "GET", None, Duration::from_millis(3));
        let text = m.encode();
        assert!(text.contains("# TYPE drover_outgoing_call_duration_seconds histogram"));
        assert!(text.contains(
            r#"drover_outgoing_call_duration_seconds_count{system="maas",verb="POST",status="409"} 1"#
        ));
        assert!(text.contains(r#"system="jira",verb="GET",status="error""#));
        assert!(text.ends_with("# EOF\n"));
        // The store's gauges appear only once a process (the API) asks for them.
        assert!(!text.contains("drover_workflows"));
        m.store()
            .workflows
            .get_or_create(&StateLabels { state: "running" })
            .set(2);
        assert!(
            m.encode()
                .contains(r#"drover_workflows{state="running"} 2"#)
        );
    }
}
