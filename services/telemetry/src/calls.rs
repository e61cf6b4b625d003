//! Outgoing HTTP calls to the systems Drover drives: each one a client span (child of whatever
//! span is current, a step attempt's on a worker), a W3C `traceparent` header naming that span,
//! and one observation of `drover_outgoing_call_duration_seconds`. The reqwest adapters (MAAS,
//! ticketing) wrap each attempt in an [`Outgoing`]; the Kubernetes client gets [`Layer`] through
//! kube's `ClientBuilder`. Only the method, the path and the status are recorded: never a query
//! string, a header or a body, where credentials travel.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderName, HeaderValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::metrics;

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The systems Drover calls, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Maas,
    Kubernetes,
    Jira,
    ServiceNow,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Maas => "maas",
            System::Kubernetes => "kubernetes",
            System::Jira => "jira",
            System::ServiceNow => "servicenow",
        }
    }
}

/// One outgoing call in flight.
pub struct Outgoing {
    system: System,
    verb: http::Method,
    start: Instant,
    span: Span,
}

impl Outgoing {
    /// Starts timing a call and opens its span.
    pub fn start(system: System, verb: &http::Method, path: &str) -> Outgoing {
        let span = tracing::info_span!(
            "http.client",
            otel.name = %format_args!("{} {}", verb, system.as_str()),
            otel.kind = "client",
            peer.service = system.as_str(),
            http.request.method = %verb,
            url.path = path,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        Outgoing {
            system,
            verb: verb.clone(),
            start: Instant::now(),
            span,
        }
    }

    /// The `traceparent` to send, naming this call's span (none when traces are off).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        crate::trace::traceparent(&self.span.context()).and_then(|v| HeaderValue::from_str(&v).ok())
    }

    /// The call's span, to run the request in.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Awaits the request `send` inside the call's span and records how it ended (`status_of`
    /// its response's status).
    pub async fn run<T, E>(
        self,
        send: impl Future<Output = Result<T, E>>,
        status_of: impl Fn(&T) -> u16,
    ) -> Result<T, E> {
        let result = tracing::Instrument::instrument(send, self.span.clone()).await;
        self.finish(result.as_ref().ok().map(status_of));
        result
    }

    /// Records the end of the call: its status, or `None` when no response came.
    pub fn finish(self, status: Option<u16>) {
        if let Some(s) = status {
            self.span.record("http.response.status_code", s);
        }
        if status.is_none_or(|s| s >= 500) {
            self.span.record("otel.status_code", "ERROR");
        }
        metrics().call(
            self.system.as_str(),
            self.verb.as_str(),
            status,
            self.start.elapsed(),
        );
    }
}

/// A tower layer that instruments every request of a client built on tower (kube's).
#[derive(Debug, Clone, Copy)]
pub struct Layer(pub System);

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service {
            inner,
            system: self.0,
        }
    }
}

/// See [`Layer`].
#[derive(Debug, Clone)]
pub struct Service<S> {
    inner: S,
    system: System,
}

impl<S, B, R> tower::Service<http::Request<B>> for Service<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let call = Outgoing::start(self.system, req.method(), req.uri().path());
        if let Some(tp) = call.traceparent() {
            req.headers_mut().insert(TRACEPARENT.clone(), tp);
        }
        let fut = {
            let _entered = call.span().enter();
            self.inner.call(req)
        };
        Box::pin(call.run(fut, |r| r.status().as_u16()))
    }
}
