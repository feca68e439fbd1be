//! OTLP trace export through the real proxy binary: a fake collector on
//! loopback decodes what the proxy posts to /v1/traces, and the mock
//! provider records the `traceparent` each upstream attempt carried.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmesh_mock::{Behavior, MockConfig, MockServer};
use llmesh_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;

/// Trace and parent span id of the app's incoming `traceparent`.
const APP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";
const PROMPT_MARKER: &str = "PROMPT-MARKER-TRACE-3307";
const EMAIL: &str = "jane.doe@example.com";

// === fake collector ===

/// One exported span, flattened with its resource.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: i32,
    attrs: Vec<(String, String)>,
    resource: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn res(&self, key: &str) -> Option<&str> {
        self.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<Got>,
    /// Every body as posted, to search for text that must not be there.
    raw: Vec<Bytes>,
}

/// A collector that accepts OTLP/HTTP protobuf on /v1/traces.
struct Collector {
    addr: SocketAddr,
    got: Arc<Mutex<Received>>,
}

fn text(kv: &[KeyValue]) -> Vec<(String, String)> {
    kv.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Received::default()));
        let store = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move { Ok::<_, std::convert::Infallible>(accept(req, &store).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Collector { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Got> {
        self.got.lock().unwrap().spans.clone()
    }

    fn raw_contains(&self, needle: &str) -> bool {
        self.got
            .lock()
            .unwrap()
            .raw
            .iter()
            .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }

    /// Waits (up to 15 s) until `done` holds for the spans received.
    async fn wait(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "{what}; got {spans:#?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn accept(req: Request<Incoming>, store: &Mutex<Received>) -> Response<Full<Bytes>> {
    let ok_path = req.method() == Method::POST && req.uri().path() == "/v1/traces";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if !ok_path {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    let decoded = ExportTraceServiceRequest::decode(body.clone()).unwrap();
    let mut got = store.lock().unwrap();
    got.raw.push(body);
    for rs in decoded.resource_spans {
        let resource = rs.resource.map(|r| text(&r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.spans.push(Got {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    kind: s.kind,
                    attrs: text(&s.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}

// === set-up ===

fn policy(mock: &str) -> String {
    format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: p1}}
spec: {{schema: openai, baseUrl: {mock}/v1, credential: {{file: key.txt}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: p2}}
spec: {{schema: openai, baseUrl: {mock}/v1, credential: {{file: key.txt}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {{name: pii}}
spec:
  rules:
    - {{class: email, action: redact}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: retry}}
spec:
  models: [retry]
  backends: [{{provider: p1, model: bad}}, {{provider: p2, model: good, priority: 1}}]
  retries: {{attempts: 2, backoffBase: 5ms}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: hedge}}
spec:
  models: [hedge]
  backends: [{{provider: p1, model: slow}}, {{provider: p2, model: good, priority: 1}}]
  hedge: {{delay: 100ms}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: plain}}
spec:
  models: [plain]
  backends: [{{provider: p1, model: good}}]
"
    )
}

/// The mock (in this process) and a policy folder for the proxy binary.
async fn mock_and_policy() -> (MockServer, tempfile::TempDir) {
    let mock = MockServer::start(MockConfig {
        api_key: Some(KEY.to_string()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let bad: Behavior = serde_json::from_value(json!({"status": 503})).unwrap();
    mock.set_model_behavior("bad", bad);
    let slow: Behavior = serde_json::from_value(json!({"latency_ms": 3000})).unwrap();
    mock.set_model_behavior("slow", slow);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), format!("{KEY}\n")).unwrap();
    std::fs::write(dir.path().join("policy.yaml"), policy(&mock.url())).unwrap();
    (mock, dir)
}

/// The proxy binary, exporting to `endpoint` when given. Batches leave
/// every 50 ms so the tests do not wait for the 5 s default.
fn proxy(dir: &tempfile::TempDir, endpoint: Option<&str>, extra: &[&str]) -> ProxyProc {
    let mut cmd = proxy_command(&dir.path().join("policy.yaml"));
    cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("POD_NAMESPACE", "shop")
        .env("POD_NAME", "checkout-7d9f-abcde")
        .env("LLMESH_WORKLOAD", "checkout")
        .args(extra);
    if let Some(e) = endpoint {
        cmd.args(["--otlp-endpoint", e]);
    }
    spawn_proxy(&mut cmd)
}

async fn chat(llm: &str, model: &str, headers: &[(&str, &str)]) -> StatusCode {
    let body = openai_chat(model, &format!("write to {EMAIL} about {PROMPT_MARKER}"));
    let (status, _, _) = Http::new()
        .send(
            Method::POST,
            &format!("{llm}/v1/chat/completions"),
            Bytes::from(body.to_string()),
            headers,
        )
        .await;
    status
}

fn app_traceparent() -> String {
    format!("00-{APP_TRACE}-{APP_SPAN}-01")
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_continues_the_apps_trace_with_one_span_per_attempt() {
    let collector = Collector::start().await;
    let (mock, dir) = mock_and_policy().await;
    let p = proxy(&dir, Some(&collector.url()), &[]);
    let tp = app_traceparent();
    let status = chat(
        &p.llm,
        "retry",
        &[("traceparent", tp.as_str()), ("tracestate", "app=1")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", p.proc.output());

    let spans = collector
        .wait("the request span and its two attempts", |s| {
            s.iter().filter(|g| g.trace_id == APP_TRACE).count() >= 4
        })
        .await;
    let ours: Vec<&Got> = spans.iter().filter(|g| g.trace_id == APP_TRACE).collect();
    let request = ours.iter().find(|g| g.name == "llm request").unwrap();
    assert_eq!(
        request.parent_span_id, APP_SPAN,
        "the app's span is the parent"
    );
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.attr("llmesh.route"), Some("retry"));
    assert_eq!(request.attr("gen_ai.operation.name"), Some("chat"));
    assert_eq!(request.attr("gen_ai.request.model"), Some("retry"));
    assert_eq!(request.attr("gen_ai.provider.name"), Some("openai"));
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    assert!(
        request.attr("gen_ai.usage.input_tokens").is_some(),
        "{request:#?}"
    );
    assert!(
        request.attr("gen_ai.usage.output_tokens").is_some(),
        "{request:#?}"
    );
    assert_eq!(request.res("service.name"), Some("llmesh-proxy"));
    assert_eq!(request.res("k8s.namespace.name"), Some("shop"));
    assert_eq!(request.res("k8s.pod.name"), Some("checkout-7d9f-abcde"));
    assert_eq!(request.res("llmesh.workload"), Some("checkout"));

    let mut attempts: Vec<&&Got> = ours.iter().filter(|g| g.name == "llm attempt").collect();
    attempts.sort_by_key(|g| g.attr("llmesh.attempt").map(str::to_string));
    assert_eq!(attempts.len(), 2, "{ours:#?}");
    for a in &attempts {
        assert_eq!(a.parent_span_id, request.span_id);
        assert_eq!(a.kind, SpanKind::Client as i32);
        assert_eq!(a.attr("gen_ai.provider.name"), Some("openai"));
    }
    assert_eq!(attempts[0].attr("llmesh.attempt"), Some("1"));
    assert_eq!(attempts[0].attr("llmesh.provider"), Some("p1"));
    assert_eq!(attempts[0].attr("gen_ai.request.model"), Some("bad"));
    assert_eq!(attempts[0].attr("http.response.status_code"), Some("503"));
    assert_ne!(attempts[0].attr("llmesh.outcome"), Some("ok"));
    assert!(attempts[0].attr("error.type").is_some());
    assert_eq!(attempts[1].attr("llmesh.attempt"), Some("2"));
    assert_eq!(attempts[1].attr("llmesh.provider"), Some("p2"));
    assert_eq!(attempts[1].attr("llmesh.outcome"), Some("ok"));

    let redaction = ours.iter().find(|g| g.name == "redaction").unwrap();
    assert_eq!(redaction.parent_span_id, request.span_id);
    assert_eq!(redaction.attr("llmesh.redaction.classes_found"), Some("1"));

    // Each upstream request names its own attempt span as parent, in the
    // app's trace, and keeps the app's tracestate.
    let sent = mock.requests();
    assert_eq!(sent.len(), 2);
    for (req, span) in sent.iter().zip(&attempts) {
        let tp = req.header("traceparent").unwrap();
        assert_eq!(tp, format!("00-{APP_TRACE}-{}-01", span.span_id));
        assert_eq!(req.header("tracestate"), Some("app=1"));
    }

    // No prompt text, no redacted value, no key anywhere in the export.
    for needle in [PROMPT_MARKER, EMAIL, KEY, "write to"] {
        assert!(!collector.raw_contains(needle), "{needle} was exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_that_lost_is_cancelled_and_a_stream_is_traced_to_its_end() {
    let collector = Collector::start().await;
    let (_mock, dir) = mock_and_policy().await;
    let p = proxy(&dir, Some(&collector.url()), &[]);
    let hedge_trace = "2".repeat(32);
    let tp = format!("00-{hedge_trace}-{APP_SPAN}-01");
    assert_eq!(
        chat(&p.llm, "hedge", &[("traceparent", tp.as_str())]).await,
        StatusCode::OK
    );
    let spans = collector
        .wait("both hedged attempts", |s| {
            s.iter()
                .filter(|g| g.trace_id == hedge_trace && g.name == "llm attempt")
                .count()
                == 2
        })
        .await;
    let mut outcomes: Vec<&str> = spans
        .iter()
        .filter(|g| g.trace_id == hedge_trace && g.name == "llm attempt")
        .filter_map(|g| g.attr("llmesh.outcome"))
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["cancelled", "ok"]);

    let stream_trace = "3".repeat(32);
    let tp = format!("00-{stream_trace}-{APP_SPAN}-01");
    let mut body = openai_chat("plain", "count to three");
    body["stream"] = json!(true);
    let (status, _, text) = Http::new()
        .send(
            Method::POST,
            &format!("{}/v1/chat/completions", p.llm),
            Bytes::from(body.to_string()),
            &[("traceparent", tp.as_str())],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&text).contains("[DONE]"));
    let spans = collector
        .wait("the stream's request span", |s| {
            s.iter()
                .any(|g| g.trace_id == stream_trace && g.name == "llm request")
        })
        .await;
    let request = spans
        .iter()
        .find(|g| g.trace_id == stream_trace && g.name == "llm request")
        .unwrap();
    // Recorded when the stream ended, not when its headers went out.
    assert!(
        request.attr("gen_ai.usage.output_tokens").is_some(),
        "{request:#?}"
    );
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_invents_no_traceparent_and_passes_the_apps_through() {
    let collector = Collector::start().await;
    let (mock, dir) = mock_and_policy().await;
    // The collector exists but the proxy is not told about it.
    let p = proxy(&dir, None, &[]);
    assert_eq!(chat(&p.llm, "plain", &[]).await, StatusCode::OK);
    let tp = app_traceparent();
    let with = [("traceparent", tp.as_str()), ("tracestate", "app=1")];
    assert_eq!(chat(&p.llm, "plain", &with).await, StatusCode::OK);

    let sent = mock.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].header("traceparent"), None, "none invented");
    assert_eq!(
        sent[1].header("traceparent"),
        Some(tp.as_str()),
        "untouched"
    );
    assert_eq!(sent[1].header("tracestate"), Some("app=1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(collector.spans().is_empty());
    assert!(!p.proc.output().contains("OTLP"), "{}", p.proc.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_apps_flag_and_the_ratio_for_new_traces() {
    let collector = Collector::start().await;
    let (mock, dir) = mock_and_policy().await;
    let p = proxy(&dir, Some(&collector.url()), &["--trace-sample-ratio", "0"]);
    // A new trace at ratio 0: not recorded, but the upstream still learns
    // the trace and that it is not sampled.
    assert_eq!(chat(&p.llm, "plain", &[]).await, StatusCode::OK);
    // The app sampled its trace: recorded whatever the ratio.
    let tp = app_traceparent();
    assert_eq!(
        chat(&p.llm, "plain", &[("traceparent", tp.as_str())]).await,
        StatusCode::OK
    );
    // The app did not sample: not recorded.
    let unsampled = format!("00-{}-{APP_SPAN}-00", "1".repeat(32));
    assert_eq!(
        chat(&p.llm, "plain", &[("traceparent", unsampled.as_str())]).await,
        StatusCode::OK
    );
    collector
        .wait("the sampled request", |s| {
            s.iter()
                .any(|g| g.trace_id == APP_TRACE && g.name == "llm request")
        })
        .await;
    // Flush the rest, then nothing but the sampled trace is there.
    let mut proc = p.proc;
    assert!(proc.terminate().success());
    let spans = collector.spans();
    assert!(spans.iter().all(|g| g.trace_id == APP_TRACE), "{spans:#?}");

    let sent = mock.requests();
    assert_eq!(sent.len(), 3);
    let first = sent[0].header("traceparent").unwrap();
    assert!(
        first.starts_with("00-") && first.ends_with("-00"),
        "{first}"
    );
    assert!(!first.contains(APP_TRACE));
    assert!(sent[1].header("traceparent").unwrap().ends_with("-01"));
    let third = sent[2].header("traceparent").unwrap();
    assert!(
        third.starts_with(&format!("00-{}-", "1".repeat(32))),
        "{third}"
    );
    assert!(third.ends_with("-00"), "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_requests_nothing() {
    // A port that was just free: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_mock, dir) = mock_and_policy().await;
    let p = proxy(&dir, Some(&format!("http://{dead}")), &[]);
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(chat(&p.llm, "plain", &[]).await, StatusCode::OK);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // The failures are counted and reported, once.
    let http = Http::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = http.get(&format!("{}/metrics", p.metrics)).await;
        let text = String::from_utf8_lossy(&body).to_string();
        if metric_value(&text, "llmesh_trace_export_failures_total", &[]).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no export failure counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(chat(&p.llm, "plain", &[]).await, StatusCode::OK);
    let out = p.proc.output();
    assert_eq!(out.matches("trace export failed").count(), 1, "{out}");

    // Shutdown gives up on the collector within its flush timeout.
    let mut proc = p.proc;
    let t = Instant::now();
    assert!(proc.terminate().success());
    assert!(t.elapsed() < Duration::from_secs(9), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_bad_endpoint_or_ratio_is_refused_at_start() {
    let (_mock, dir) = mock_and_policy().await;
    let policy = dir.path().join("policy.yaml");
    for args in [
        ["--otlp-endpoint", "not a url"],
        ["--trace-sample-ratio", "1.5"],
    ] {
        let mut cmd = proxy_command(&policy);
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT").args(args);
        if args[0] == "--trace-sample-ratio" {
            cmd.args(["--otlp-endpoint", "http://127.0.0.1:4318"]);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            text.contains("OTLP endpoint") || text.contains("sample ratio"),
            "{text}"
        );
    }
}
