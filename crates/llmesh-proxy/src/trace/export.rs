//! The OTLP side of tracing: a batch exporter over HTTP/protobuf that sends
//! through the proxy's own hyper + rustls stack, and counts what it fails
//! to deliver.
//!
//! The SDK's batch processor runs on a thread of its own and drives each
//! export to completion there. Our HTTP client needs the tokio runtime, so
//! each POST is spawned onto the runtime and the batch thread waits for its
//! join handle: requests never wait for the collector, and the collector
//! never waits for a busy runtime thread longer than one POST.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use super::TraceError;

/// Largest collector answer read (they are a few bytes; partial-success
/// messages a little more).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How often a failing collector is reported in the log, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Counter of export calls that failed, also served on `/metrics`.
static EXPORT_FAILURES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::IntCounter::new(
        "llmesh_trace_export_failures_total",
        "Batches of spans the OTLP collector did not accept (unreachable, timed out or refused); their spans are lost.",
    )
    .expect("a constant metric name and help are valid")
});

/// The export-failure counter, for the metrics registry.
pub fn export_failures() -> &'static prometheus::IntCounter {
    &EXPORT_FAILURES
}

/// The OTLP/HTTP URL for traces: `base` as `OTEL_EXPORTER_OTLP_ENDPOINT`
/// means it (a collector's root, `/v1/traces` appended), unless it already
/// names the traces path.
pub fn traces_url(base: &str) -> String {
    let base = base.trim();
    if base.ends_with("/v1/traces") {
        return base.to_string();
    }
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// Builds the OTLP span exporter for `endpoint`.
pub(super) fn exporter(
    endpoint: &str,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
) -> Result<Counted<opentelemetry_otlp::SpanExporter>, TraceError> {
    let url = traces_url(endpoint);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| TraceError::Endpoint(format!("{url}: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(TraceError::Endpoint(format!(
            "{url}: expected http:// or https:// and a host"
        )));
    }
    let transport = Transport::new(runtime, timeout)?;
    let inner = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(transport)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(timeout)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    Ok(Counted {
        inner,
        reported: Arc::new(Reported::default()),
    })
}

// === impl Transport ===

/// The exporter's HTTP client: hyper with the same rustls (ring, web
/// roots) as the upstream clients, run on the proxy's runtime.
#[derive(Debug, Clone)]
struct Transport {
    runtime: tokio::runtime::Handle,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Transport {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Result<Transport, TraceError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TraceError::Exporter(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(https);
        Ok(Transport {
            runtime,
            client,
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for Transport {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let post = async move {
            let send = async {
                let resp = client.request(request.map(Full::new)).await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_ANSWER_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, send).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis()).into()),
            }
        };
        // Spawned, so the POST runs on the runtime whatever thread the
        // batch processor awaits it from.
        self.runtime.spawn(post).await?
    }
}

// === impl Counted ===

/// The OTLP exporter with its failures counted and logged, at most one
/// warning a minute, so a collector that is down costs a line, not a flood.
#[derive(Debug)]
pub(super) struct Counted<E> {
    inner: E,
    reported: Arc<Reported>,
}

/// Failures since the last warning.
#[derive(Debug, Default)]
struct Reported {
    since_last: AtomicU64,
    spans_since_last: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Reported {
    fn failed(&self, spans: usize, error: &dyn std::fmt::Display) {
        EXPORT_FAILURES.inc();
        self.since_last.fetch_add(1, Ordering::Relaxed);
        self.spans_since_last
            .fetch_add(spans as u64, Ordering::Relaxed);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = crate::clock::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        *last = Some(now);
        let failures = self.since_last.swap(0, Ordering::Relaxed);
        let spans = self.spans_since_last.swap(0, Ordering::Relaxed);
        tracing::warn!(
            target: "llmesh::trace",
            failures,
            spans_lost = spans,
            error = %error,
            "trace export failed; requests are unaffected, spans are dropped (next report in at most a minute)"
        );
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.reported.failed(n, e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_path_is_appended_once() {
        assert_eq!(traces_url("http://otel:4318"), "http://otel:4318/v1/traces");
        assert_eq!(
            traces_url("http://otel:4318/"),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://o.example/v1/traces"),
            "https://o.example/v1/traces"
        );
    }
}
