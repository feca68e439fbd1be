//! Optional OpenTelemetry traces, exported over OTLP/HTTP when an endpoint
//! is configured and absent otherwise.
//!
//! One trace per LLM call, continuing the app's trace when it sent a W3C
//! `traceparent`:
//!
//! ```text
//! llm request   (server)  gen_ai.* request/response/usage, http status, llmesh.route
//! ├── redaction           classes found (a count, never what was found)
//! ├── quota check         the decision
//! └── llm attempt (client) × each upstream attempt: provider, model, number, outcome
//! ```
//!
//! The upstream request of an attempt carries a `traceparent` naming the
//! attempt span, so a provider (or a proxy in front of it) that traces
//! joins the same trace. With tracing off nothing is rewritten: the app's
//! own `traceparent` goes upstream untouched, as any other header.
//!
//! Spans are `tracing` spans with the target [`TARGET`], bridged by
//! `tracing-opentelemetry`; only spans of that target are exported. Every
//! helper here returns a disabled span when tracing is off, so the request
//! path pays one relaxed atomic load and nothing else. Attributes never hold
//! prompt or completion text, keys, or who the caller is.

mod export;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::config::Identity;
use crate::upstream::Operation;

pub use export::{export_failures, traces_url};

/// The `tracing` target of every exported span.
pub const TARGET: &str = "llmesh::otel";

/// Set once an exporter is installed; read on every request.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How long one export POST may take before its batch is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether spans are being recorded in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The current span when tracing is on (inside a call: its request span),
/// else a disabled one without asking the subscriber.
pub fn current() -> Span {
    if enabled() {
        Span::current()
    } else {
        Span::none()
    }
}

/// Why trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The endpoint is not an http(s) URL.
    #[error("invalid OTLP endpoint {0}")]
    Endpoint(String),
    /// The sample ratio is outside 0..=1.
    #[error("the trace sample ratio must be between 0 and 1, got {0}")]
    Ratio(f64),
    /// The exporter could not be built.
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
}

/// A layer for the process's `tracing` subscriber.
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The installed exporter; [`Tracing::shutdown`] flushes what is queued.
pub struct Tracing {
    provider: SdkTracerProvider,
    layer: Option<BoxedLayer>,
}

/// Starts trace export to `endpoint` (a collector's OTLP/HTTP root, e.g.
/// `http://otel-collector:4318`), recording `sample_ratio` of new traces;
/// a request with a `traceparent` follows its sampled flag instead. `None`
/// or an empty endpoint: tracing stays off and nothing is built. Exports
/// run on `runtime`.
pub fn start(
    endpoint: Option<&str>,
    sample_ratio: f64,
    identity: &Identity,
    runtime: tokio::runtime::Handle,
) -> Result<Option<Tracing>, TraceError> {
    let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(TraceError::Ratio(sample_ratio));
    }
    let exporter = export::exporter(endpoint, runtime, EXPORT_TIMEOUT)?;
    // The SDK's batch processor: a bounded queue drained on its own thread
    // (OTEL_BSP_* variables tune it). A full queue drops spans, never waits.
    let processor = BatchSpanProcessor::builder(exporter).build();
    let resource = Resource::builder()
        .with_service_name("llmesh-proxy")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("k8s.namespace.name", identity.namespace.clone()),
            KeyValue::new("k8s.pod.name", identity.pod.clone()),
            KeyValue::new("llmesh.workload", identity.workload.clone()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer::<Registry>()
        .with_tracer(provider.tracer("llmesh-proxy"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_level(false)
        .with_target(false)
        .with_context_activation(false)
        // Only our spans: log events and other crates' spans stay out of
        // the export, whatever the log level.
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO))
        .boxed();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(Tracing {
        provider,
        layer: Some(layer),
    }))
}

impl Tracing {
    /// The layer to add to the subscriber (once).
    pub fn take_layer(&mut self) -> Option<BoxedLayer> {
        self.layer.take()
    }

    /// Exports what is queued and stops, waiting at most `timeout`. Runs on
    /// a blocking thread: the export itself needs the runtime to progress.
    pub async fn shutdown(self, timeout: Duration) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(target: "llmesh::trace", error = %e, "flushing traces at shutdown")
            }
            Err(e) => {
                tracing::warn!(target: "llmesh::trace", error = %e, "flushing traces at shutdown")
            }
        }
    }
}

/// Records the response status on a request span (`ERROR` from 500 up).
pub fn response_status(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The `gen_ai.operation.name` of an LLM endpoint; `None` for anything
/// else (model listing, unknown paths), which gets no span.
fn operation_of(method: &Method, path: &str) -> Option<&'static str> {
    if method != Method::POST {
        return None;
    }
    match path.strip_prefix("/v1").unwrap_or(path) {
        "/chat/completions" | "/messages" => Some("chat"),
        "/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// The server span of a call, child of the app's `traceparent` if any
/// (disabled when tracing is off or the path is no LLM call).
pub fn request_span(method: &Method, path: &str, headers: &HeaderMap) -> Span {
    if !enabled() {
        return Span::none();
    }
    let Some(op) = operation_of(method, path) else {
        return Span::none();
    };
    let span = tracing::info_span!(
        target: TARGET,
        "llm request",
        otel.kind = "server",
        otel.status_code = Empty,
        gen_ai.operation.name = op,
        gen_ai.provider.name = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        http.request.method = "POST",
        http.route = path,
        http.response.status_code = Empty,
        error.type = Empty,
        llmesh.route = Empty,
    );
    if headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        // Fails only when the span is disabled or already started; either
        // way it stays a root, which is what a bad traceparent gets too.
        let _ = span.set_parent(parent);
    }
    span
}

/// Notes the route and the model asked for on the current request span.
pub fn routed(requested: &str, route: &str) {
    if !enabled() {
        return;
    }
    let span = Span::current();
    span.record("gen_ai.request.model", requested);
    span.record("llmesh.route", route);
}

/// How a routed call ended, recorded on its request span by the
/// accounting at the very end (for streams, when the stream ends).
pub struct Finished<'a> {
    /// Status given to the client (499 when it went away).
    pub status: u16,
    /// Error class, empty on success.
    pub error_type: &'a str,
    /// The answering provider's `gen_ai.provider.name`.
    pub provider: &'a str,
    /// Model named by the upstream's answer.
    pub response_model: &'a str,
    /// Tokens in and out.
    pub usage: Option<llmesh_wire::Usage>,
}

/// Records `done` on `span` (a call's request span).
pub fn finish_request(span: &Span, done: Finished<'_>) {
    if span.is_disabled() {
        return;
    }
    span.record("gen_ai.provider.name", done.provider);
    if !done.response_model.is_empty() {
        span.record("gen_ai.response.model", done.response_model);
    }
    if let Some(u) = done.usage {
        span.record("gen_ai.usage.input_tokens", u.input_tokens);
        span.record("gen_ai.usage.output_tokens", u.output_tokens);
    }
    if !done.error_type.is_empty() {
        span.record("error.type", done.error_type);
    }
    if done.status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span around the data policy. Record its result with
/// [`redaction_done`].
pub fn redaction_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "redaction",
        llmesh.redaction.classes_found = Empty,
        llmesh.redaction.blocked = Empty,
    )
}

/// How many data classes the policy found, and whether it blocked.
pub fn redaction_done(span: &Span, classes_found: usize, blocked: bool) {
    if span.is_disabled() {
        return;
    }
    span.record("llmesh.redaction.classes_found", classes_found as u64);
    span.record("llmesh.redaction.blocked", blocked);
}

/// The span around the quota admission of a call: wrap the admission
/// future with `.instrument(trace::quota_span())` (or enter it around a
/// synchronous check) and record the decision with [`quota_decision`].
pub fn quota_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "quota check", llmesh.quota.decision = Empty)
}

/// The admission decision, e.g. `admit`, `reject`, `downgrade`, `warn`.
pub fn quota_decision(span: &Span, decision: &str) {
    span.record("llmesh.quota.decision", decision);
}

/// Attempt count of one request, kept in its span's extensions.
struct AttemptCount(u32);

/// The next attempt number under `parent` (1, 2, ...), 0 if unknown.
fn next_attempt(parent: &Span) -> u32 {
    parent
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            let mut ext = span.extensions_mut();
            let n = match ext.get_mut::<AttemptCount>() {
                Some(c) => {
                    c.0 += 1;
                    c.0
                }
                None => {
                    ext.insert(AttemptCount(1));
                    1
                }
            };
            Some(n)
        })
        .flatten()
        .unwrap_or(0)
}

/// The client span of one upstream attempt, child of the current span
/// (the request's). Record its end with [`AttemptSpan::done`]; one dropped
/// before that (a hedge that lost) is marked cancelled.
pub fn attempt_span(op: Operation, provider: &llmesh_policy::Provider, model: &str) -> AttemptSpan {
    if !enabled() {
        return AttemptSpan {
            span: Span::none(),
            open: false,
        };
    }
    let n = next_attempt(&Span::current());
    let op = match op {
        Operation::Chat => "chat",
        Operation::Embeddings => "embeddings",
        Operation::Completions => "text_completion",
    };
    let span = tracing::info_span!(
        target: TARGET,
        "llm attempt",
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = op,
        gen_ai.provider.name = provider.provider_name.as_str(),
        gen_ai.request.model = model,
        server.address = provider.base_url.authority.host(),
        llmesh.provider = provider.name.as_str(),
        llmesh.attempt = n,
        llmesh.outcome = Empty,
        error.type = Empty,
        http.response.status_code = Empty,
    );
    AttemptSpan { span, open: true }
}

/// An attempt's span and whether its outcome is still to be recorded.
pub struct AttemptSpan {
    /// The span; instrument the attempt with a clone of it.
    pub span: Span,
    open: bool,
}

impl AttemptSpan {
    /// Records how the attempt ended: `None` when it answered, else its
    /// error class and the upstream's status if it sent one.
    pub fn done(mut self, failed: Option<(&str, Option<u16>)>) {
        self.open = false;
        if self.span.is_disabled() {
            return;
        }
        match failed {
            None => {
                self.span.record("llmesh.outcome", "ok");
            }
            Some((class, status)) => {
                self.span.record("llmesh.outcome", class);
                self.span.record("error.type", class);
                self.span.record("otel.status_code", "ERROR");
                if let Some(status) = status {
                    self.span.record("http.response.status_code", status);
                }
            }
        }
    }

    /// Puts this attempt's `traceparent` (and the app's `tracestate`) on
    /// the upstream request. Tracing off: nothing is touched, so the app's
    /// own headers, forwarded like any other, go upstream as they came.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if self.span.is_disabled() {
            return;
        }
        let cx = self.span.context();
        if !cx.span().span_context().is_valid() {
            return;
        }
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        if self.open && !self.span.is_disabled() {
            self.span.record("llmesh.outcome", "cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_llm_calls_get_a_span() {
        assert_eq!(
            operation_of(&Method::POST, "/v1/chat/completions"),
            Some("chat")
        );
        assert_eq!(operation_of(&Method::POST, "/messages"), Some("chat"));
        assert_eq!(
            operation_of(&Method::POST, "/v1/embeddings"),
            Some("embeddings")
        );
        assert_eq!(operation_of(&Method::GET, "/v1/models"), None);
        assert_eq!(operation_of(&Method::POST, "/v1/other"), None);
    }

    #[test]
    fn off_by_default_and_spans_are_disabled() {
        assert!(!enabled());
        assert!(redaction_span().is_disabled());
        assert!(quota_span().is_disabled());
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let before = h.clone();
        AttemptSpan {
            span: Span::none(),
            open: false,
        }
        .inject(&mut h);
        assert_eq!(h, before);
    }
}
