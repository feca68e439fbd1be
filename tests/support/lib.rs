//! Shared helpers for the end-to-end tests: a mock provider and a proxy
//! started in-process on ephemeral loopback ports, a policy file in a
//! temporary folder, and a small HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod process;
/// A real redis-server on a free loopback port (the quota crate's helper).
#[path = "../../crates/llmesh-quota/tests/support/redis_server.rs"]
pub mod redis_server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use llmesh_mock::{MockConfig, MockServer};
use llmesh_proxy::{Proxy, ProxyConfig};
use serde_json::Value;

pub mod fake_kube;
pub mod kubectl;
pub use process::{field, proxy_command, sdk_command, spawn_mock, spawn_proxy, Proc, ProxyProc};

pub const KEY: &str = "test-provider-key-0001";

/// The policy used by most tests; `MOCK` is replaced by the mock's URL.
pub fn default_policy(mock_url: &str) -> String {
    POLICY.replace("MOCK", mock_url)
}

/// [`default_policy`] whose `openai` route makes one attempt
/// (`retries: {attempts: 0}`).
pub fn one_attempt_policy(mock_url: &str) -> String {
    default_policy(mock_url).replacen(
        "  backends: [{provider: oai}]\n",
        "  backends: [{provider: oai}]\n  retries: {attempts: 0}\n",
        1,
    )
}

const POLICY: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: oai}
spec:
  schema: openai
  baseUrl: MOCK/v1
  credential: {file: key.txt}
  models:
    - name: gpt-4o-mini
      pricing: {input: 1.0, output: 2.0, cachedInput: 0.5}
    - name: text-embedding-3-small
      pricing: {input: 0.5, output: 0}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: ant}
spec:
  schema: anthropic
  baseUrl: MOCK/v1
  credential: {file: key.txt}
  models:
    - name: claude-sonnet-4-5
      pricing: {input: 3.0, output: 15.0}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: gem}
spec:
  schema: gemini
  baseUrl: MOCK/v1beta
  credential: {file: key.txt}
  models:
    - name: gemini-2.0-flash
      pricing: {input: 0.1, output: 0.4}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: openai}
spec:
  models: [gpt-4o-mini, text-embedding-3-small]
  backends: [{provider: oai}]
  timeouts: {firstByte: 2s, idle: 2s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: claude}
spec:
  models: [claude-sonnet-4-5]
  backends: [{provider: ant}]
  timeouts: {firstByte: 2s, idle: 2s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: gemini}
spec:
  models: [gemini-2.0-flash]
  backends: [{provider: gem}]
  timeouts: {firstByte: 2s, idle: 2s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: gpt-via-claude}
spec:
  models: [gpt-as-claude]
  backends: [{provider: ant, model: claude-sonnet-4-5}]
  timeouts: {firstByte: 2s, idle: 2s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: gpt-via-gemini}
spec:
  models: [gpt-as-gemini]
  backends: [{provider: gem, model: gemini-2.0-flash}]
  timeouts: {firstByte: 2s, idle: 2s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: claude-via-openai}
spec:
  models: [claude-as-gpt]
  backends: [{provider: oai, model: gpt-4o-mini}]
  timeouts: {firstByte: 2s, idle: 2s, total: 10s}
"#;

/// A mock and a proxy wired together.
pub struct Env {
    pub mock: MockServer,
    pub proxy: Proxy,
    pub dir: tempfile::TempDir,
    pub http: Http,
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(default_policy).await
    }

    /// `policy` gets the mock URL and returns the policy file text.
    pub async fn start_with(policy: impl Fn(&str) -> String) -> Env {
        Env::start_configured(policy, |_| {}).await
    }

    /// As [`Env::start_with`], with `tweak` adjusting the proxy's settings.
    pub async fn start_configured(
        policy: impl Fn(&str) -> String,
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> Env {
        let mock = MockServer::start(MockConfig {
            api_key: Some(KEY.to_string()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.txt"), format!("{KEY}\n")).unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, policy(&mock.url())).unwrap();
        let mut cfg = ProxyConfig::for_test(file);
        tweak(&mut cfg);
        let proxy = Proxy::start(cfg).await.unwrap();
        Env {
            mock,
            proxy,
            dir,
            http: Http::new(),
        }
    }

    /// `POST /cache/purge` on the admin port (`?route=` when given): the
    /// status and the text it answered.
    pub async fn purge_cache(&self, route: Option<&str>) -> (StatusCode, String) {
        let query = route.map(|r| format!("?route={r}")).unwrap_or_default();
        let url = format!("http://{}/cache/purge{query}", self.proxy.admin_addr());
        let (s, _, b) = self.http.send(Method::POST, &url, Bytes::new(), &[]).await;
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.llm_addr(), path)
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.proxy.metrics_addr());
        let (status, _, body) = self.http.get(&url).await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Posts JSON to the proxy and returns status, headers and parsed JSON.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let (s, h, b) = self.post_bytes(path, body, headers).await;
        let v = serde_json::from_slice(&b)
            .unwrap_or_else(|_| panic!("not JSON ({s}): {}", String::from_utf8_lossy(&b)));
        (s, h, v)
    }

    /// Posts and returns the raw streamed body as text.
    pub async fn post_stream(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let (s, h, b) = self.post_bytes(path, body, headers).await;
        (s, h, String::from_utf8(b.to_vec()).unwrap())
    }

    async fn post_bytes(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let body = Bytes::from(body.to_string());
        self.http
            .send(Method::POST, &self.url(path), body, headers)
            .await
    }

    /// Waits until `metric_line_prefix` appears in /metrics (accounting of a
    /// finished stream can land just after the body ends).
    pub async fn wait_metric(&self, needle: &str) -> String {
        // Up to 15 s: an estimate may first load the tokenizer (slow in debug builds).
        for _ in 0..750 {
            let m = self.metrics().await;
            if m.contains(needle) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("metric {needle} never appeared:\n{}", self.metrics().await);
    }

    /// Polls /metrics every 20 ms until `check` holds on it, for at most
    /// `within`; panics with `what` and the last text after that.
    pub async fn until_metrics(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let m = self.metrics().await;
            if check(&m) {
                return m;
            }
            assert!(std::time::Instant::now() < deadline, "{what}\n{m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Env::until_metrics`] until the samples of `name` with `labels`
    /// add up to at least `n` (within 10 s).
    pub async fn until_sum(&self, name: &str, labels: &[(&str, &str)], n: f64) -> String {
        let what = format!("{name}{labels:?} >= {n}");
        self.until_metrics(&what, Duration::from_secs(10), |m| {
            metric_sum(m, name, labels) >= n
        })
        .await
    }
}

/// An OpenAI-schema `LLMProvider` named `name` for the mock at `mock`,
/// its key read from `key.txt` (as [`Env`] writes it), then `extra` spec
/// lines (each indented two spaces), ending with `---`.
pub fn mock_provider(name: &str, mock: &str, extra: &str) -> String {
    format!(
        "apiVersion: llmesh.io/v1alpha1\nkind: LLMProvider\nmetadata: {{name: {name}}}\nspec:\n  schema: openai\n  baseUrl: {mock}/v1\n  credential: {{file: key.txt}}\n{extra}---\n"
    )
}

/// A mock behaviour written as JSON (`{"json_reply": {...}}`).
pub fn behavior(v: Value) -> llmesh_mock::Behavior {
    serde_json::from_value(v).expect("a mock Behavior")
}

/// A chat request for `model` asking for `{"n": <integer>}` through
/// `response_format: json_schema`.
pub fn json_schema_request(model: &str) -> Value {
    let mut body = openai_chat(model, "give me n");
    body["response_format"] = serde_json::json!({"type": "json_schema", "json_schema": {"name": "n",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}});
    body
}

/// A plain HTTP/1.1 client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.send(Method::GET, url, Bytes::new(), &[]).await
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let resp = self.open(method, url, body, headers).await;
        let (parts, body) = resp.into_parts();
        let bytes = tokio::time::timeout(Duration::from_secs(20), body.collect())
            .await
            .expect("body timed out")
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (parts.status, parts.headers, bytes)
    }

    /// Sends and returns the response with its body unread.
    pub async fn open(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> http::Response<Incoming> {
        let mut req = Request::builder().method(method).uri(url);
        let typed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if !body.is_empty() && !typed {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed")
    }
}

/// Value of a series in Prometheus text output whose line starts with
/// `name{` and contains every `label="value"` pair in `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_lines(text, name, labels)
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Per-minute quota windows reset on the minute: returns once at least
/// `need` seconds of the current minute are left (waiting for the next
/// one if fewer are), so a test's counts stay in one window.
pub async fn inside_minute(need: f64) {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        % 60.0;
    if s > 60.0 - need {
        tokio::time::sleep(Duration::from_secs_f64(60.5 - s)).await;
    }
}

/// Sum of every series of `name` whose line contains each
/// `label="value"` pair in `labels` (e.g. a counter over all its routes).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_lines(text, name, labels)
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metric_lines<'a>(
    text: &'a str,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a str> + 'a {
    text.lines()
        .filter(move |l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(move |l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
}

/// `data:` payloads of an SSE text, in order.
pub fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

/// Text deltas of an OpenAI chat stream (first choice), joined.
pub fn openai_text(sse: &str) -> String {
    sse_data(sse)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Text deltas of an Anthropic message stream, joined.
pub fn anthropic_text(sse: &str) -> String {
    sse_data(sse)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "content_block_delta")
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

/// `event:` names of an SSE text, in order.
pub fn sse_events(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .map(|d| d.trim().to_string())
        .collect()
}

/// Path of a workspace binary built next to the test executables.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir: &Path = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// A chat request body in OpenAI format.
pub fn openai_chat(model: &str, text: &str) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": text}
        ]
    })
}

/// A messages request body in Anthropic format.
pub fn anthropic_msg(model: &str, text: &str) -> Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": text}]
    })
}

/// A `multipart/form-data` body: text `fields`, then `file` (name, bytes).
pub fn multipart(fields: &[(&str, &str)], file: (&str, &[u8])) -> (String, Bytes) {
    let boundary = "llmesh-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            file.0
        )
        .as_bytes(),
    );
    body.extend_from_slice(file.1);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

/// Uploads `lines` as a batch input file through the sidecar at `llm`,
/// creates a chat-completions batch of it and downloads its output file,
/// all as an app would: the batch object and the output's text.
pub async fn run_batch(http: &Http, llm: &str, lines: &[Value]) -> (Value, String) {
    let jsonl: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (ct, body) = multipart(&[("purpose", "batch")], ("in.jsonl", jsonl.as_bytes()));
    let (s, _, b) = http
        .send(
            Method::POST,
            &format!("{llm}/v1/files"),
            body,
            &[("content-type", ct.as_str())],
        )
        .await;
    assert_eq!(s, 200, "file upload: {}", String::from_utf8_lossy(&b));
    let file: Value = serde_json::from_slice(&b).unwrap();
    let create = serde_json::json!({"input_file_id": file["id"],
        "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (s, _, b) = http
        .send(
            Method::POST,
            &format!("{llm}/v1/batches"),
            Bytes::from(create.to_string()),
            &[],
        )
        .await;
    assert_eq!(s, 200, "batch: {}", String::from_utf8_lossy(&b));
    let batch: Value = serde_json::from_slice(&b).unwrap();
    let out = batch["output_file_id"].as_str().unwrap_or_default();
    let (s, _, b) = http.get(&format!("{llm}/v1/files/{out}/content")).await;
    assert_eq!(s, 200, "batch output: {}", String::from_utf8_lossy(&b));
    (batch, String::from_utf8_lossy(&b).to_string())
}
