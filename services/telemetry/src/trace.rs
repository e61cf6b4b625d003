//! OpenTelemetry traces: the OTLP/HTTP exporter (`[telemetry]` or the standard `OTEL_*`
//! variables; off when neither names an endpoint) and the W3C trace context a workflow carries in
//! its record, so every step attempt, on any worker, joins the trace its submission started.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Trace export settings (`[telemetry]` in the config file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The OTLP/HTTP collector's base URL (`http://otel-collector:4318`); spans go to
    /// `<endpoint>/v1/traces`, protobuf-encoded. Unset: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` if set, else no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of this process's spans. Unset: `OTEL_SERVICE_NAME`, else `drover-<role>`
    /// (`drover-api`, `drover-worker`).
    pub service_name: Option<String>,
}

impl Config {
    /// Whether traces are exported: an endpoint in the file or in the standard variables.
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
            || [
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
    }

    /// The endpoint, checked: an http(s) URL without credentials.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(e) = &self.otlp_endpoint {
            let ok = (e.starts_with("http://") || e.starts_with("https://"))
                && !e.split("://").nth(1).unwrap_or("").contains('@');
            if !ok {
                return Err(format!(
                    "telemetry.otlp_endpoint {e:?} must be an http:// or https:// URL without \
                     credentials (headers go in OTEL_EXPORTER_OTLP_HEADERS)"
                ));
            }
        }
        Ok(())
    }
}

/// The trace context of the current span as a W3C `traceparent` value, when traces are on and a
/// span is current.
pub fn current() -> Option<String> {
    traceparent(&tracing::Span::current().context())
}

/// The `traceparent` value of an OpenTelemetry context, if it carries a valid span.
pub fn traceparent(cx: &opentelemetry::Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(1);
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span `traceparent` names (a workflow's stored context); a value
/// that does not parse leaves `span` where it was.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The root span of a workflow's trace: its submission by `source` (`api`, `webhook`,
/// `schedule`). Store [`of`] it in the workflow's record.
pub fn submit_span(source: &'static str, kind: &str, id: &str) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "workflow.submit",
        otel.name = %format_args!("submit {kind}"),
        source,
        kind,
        workflow_id = id,
    )
}

/// The `traceparent` naming `span`, when traces are on.
pub fn of(span: &tracing::Span) -> Option<String> {
    traceparent(&span.context())
}

/// A submission span that ends at once, for creators whose write is not worth a span of its own
/// (a schedule's fire, a webhook's delivery, a write-back): the `traceparent` to store.
pub fn start(source: &'static str, kind: &str, id: &str) -> Option<String> {
    of(&submit_span(source, kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_without_credentials() {
        let with = |e: &str| Config {
            otlp_endpoint: Some(e.into()),
            service_name: None,
        };
        assert!(with("http://collector:4318").validate().is_ok());
        assert!(with("https://collector.example").validate().is_ok());
        assert!(with("collector:4318").validate().is_err());
        let e = with("http://user:secret@collector:4318")
            .validate()
            .unwrap_err();
        assert!(e.contains("without credentials"), "{e}");
        assert!(with("http://user:secret@collector:4318").enabled());
    }

    #[test]
    fn no_traceparent_without_a_valid_span_context() {
        assert_eq!(traceparent(&opentelemetry::Context::new()), None);
        // Without an OpenTelemetry layer, spans carry no context to propagate.
        assert_eq!(of(&submit_span("api", "synthetic", "x")), None);
    }
}
