//! A policy and a round of traffic that give every metric family of the
//! sidecar samples: successes and streams in both client APIs, errors,
//! prompt cache reads and writes, a retry, a failover, a breaker that
//! opens, a spent retry budget, a hedge, a context preflight skip, a
//! continued stream and an outlier ejection, all driven through the mock's fault controls; and the SDK
//! calls beyond chat: a pass-through moderation, a batch downloaded (and
//! accounted) through the sidecar, a realtime WebSocket session.

use bytes::Bytes;
use http::{Method, StatusCode};
use llmesh_tests::{anthropic_msg, openai_chat, Http};
use serde_json::{json, Value};

/// The policy; `{mock}` is the mock's base URL.
pub fn policy(mock: &str) -> String {
    let mut out = format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: oai}}
spec:
  schema: openai
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
  limits: {{requestsPerMinute: 100000}}
  models:
    - {{name: gpt-4o-mini, pricing: {{input: 0.15, output: 0.6, batch: 0.5}}}}
    - {{name: tiny, contextWindow: 60}}
    - {{name: huge, contextWindow: 100000, pricing: {{input: 2, output: 8}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: ant}}
spec:
  schema: anthropic
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
  models:
    - {{name: claude-sonnet-4-5, pricing: {{input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75}}}}
    - {{name: breaks, pricing: {{input: 3, output: 15}}}}
    - {{name: steady, pricing: {{input: 3, output: 15}}}}
---
# Signed with static AWS keys, for the credential panels.
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: bedrock}}
spec:
  schema: bedrock
  baseUrl: {mock}
  region: us-east-1
  credential: {{awsKeys: {{accessKeyId: {{file: key.txt}}, secretAccessKey: {{file: key.txt}}}}}}
"
    );
    let routes = [
        ("chat", "gpt-4o-mini", "backends: [{provider: oai}]"),
        ("claude", "claude-sonnet-4-5", "backends: [{provider: ant}]"),
        (
            "retry",
            "retry",
            "backends: [{provider: oai, model: bad}, {provider: oai, model: gpt-4o-mini, priority: 1}]
  retries: {attempts: 2, backoffBase: 1ms}",
        ),
        (
            "failover",
            "failover",
            "backends: [{provider: oai, model: bad}]
  retries: {attempts: 0}
  fallbacks: [{when: [server-error], backends: [{provider: ant, model: claude-sonnet-4-5}]}]",
        ),
        (
            "brk",
            "brk",
            "backends: [{provider: oai, model: flaky}]
  retries: {attempts: 0}
  circuitBreaker: {consecutiveFailures: 2, openFor: 60s}",
        ),
        (
            "bud",
            "bud",
            "backends: [{provider: oai, model: bad}, {provider: oai, model: gpt-4o-mini, priority: 1}]
  retries: {attempts: 1, budgetPercent: 10, budgetMinPerSecond: 0, backoffBase: 1ms}",
        ),
        (
            "hedge",
            "hedge",
            "backends: [{provider: oai, model: slow}, {provider: oai, model: gpt-4o-mini, priority: 1}]
  hedge: {delay: 50ms}",
        ),
        (
            "pre",
            "pre",
            "backends: [{provider: oai, model: tiny}]
  fallbacks: [{when: [context-length], backends: [{provider: oai, model: huge}]}]",
        ),
        (
            "cont",
            "cont",
            "backends: [{provider: ant, model: breaks}, {provider: ant, model: steady, priority: 1}]
  streamContinuation: {}",
        ),
        (
            "outl",
            "outl",
            "strategy: {type: round-robin}
  backends: [{provider: oai, model: sluggish}, {provider: oai, model: quick}, {provider: oai, model: quick2}]
  circuitBreaker: {slowOutlierFactor: 3, openFor: 30s}",
        ),
        (
            "cached",
            "cached",
            "backends: [{provider: oai, model: gpt-4o-mini}]
  cache:
    exact: {mode: always}
    semantic: {embedding: {provider: oai, model: text-embedding-3-small, dimensions: 64}}",
        ),
        (
            "shadowed",
            "shadowed",
            "backends: [{provider: oai, model: gpt-4o-mini}]
  mirror: {backend: {provider: oai, model: gpt-4o-mini}, percent: 100}",
        ),
        (
            "cloud",
            "nova-lite",
            "backends: [{provider: bedrock, model: \"amazon.nova-lite-v1:0\"}]",
        ),
        (
            "files",
            "files-only",
            "backends: [{provider: oai}]
  passthrough: {paths: [/v1/files*, /v1/batches*], provider: oai}",
        ),
    ];
    for (name, model, body) in routes {
        out.push_str(&format!(
            "---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: {name}}}\nspec:\n  models: [{model}]\n  {body}\n  timeouts: {{firstByte: 5s, idle: 5s, total: 20s}}\n"
        ));
    }
    // A warn quota the Claude traffic goes past at once: the quota panels
    // have data and the budget alerts are pending, nothing is refused.
    out.push_str("---\napiVersion: llmesh.io/v1alpha1\nkind: LLMQuota\nmetadata: {name: claude-budget}\nspec:\n  models: [claude-sonnet-4-5]\n  limits: {costPerDay: '0.0001'}\n  action: warn\n");
    // A data policy, so the redaction panel has data.
    out.push_str("---\napiVersion: llmesh.io/v1alpha1\nkind: LLMDataPolicy\nmetadata: {name: pii}\nspec:\n  rules: [{class: email, action: redact}]\n");
    out
}

/// A policy the proxy refuses (a backend naming no provider).
pub fn broken_policy(mock: &str) -> String {
    policy(mock)
        + "---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: ghost}\nspec:\n  models: [ghost]\n  backends: [{provider: nobody}]\n"
}

/// Per-model faults of the mock, set through its control API.
pub async fn set_faults(http: &Http, mock: &str) {
    for (model, behavior) in [
        ("bad", json!({"status": 503})),
        ("flaky", json!({"status": 500})),
        ("slow", json!({"latency_ms": 2000})),
        ("sluggish", json!({"latency_ms": 150})),
        // Anthropic events: message_start, content_block_start, ping, then
        // one delta per word: the fifth event breaks after two words.
        ("breaks", json!({"reset_after_chunks": 5})),
        // Prompt caching: reads and writes, for the cache panels.
        (
            "claude-sonnet-4-5",
            json!({"cached_tokens": 1, "cache_write_tokens": 1}),
        ),
    ] {
        let (s, _, b) = http
            .send(
                Method::PUT,
                &format!("{mock}/_mock/models/{model}"),
                Bytes::from(behavior.to_string()),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
}

/// One round of traffic through the proxy at `llm`. Statuses are checked
/// where they are certain, so a policy mistake shows here rather than as
/// an empty panel.
pub async fn round(http: &Http, llm: &str) {
    let post =
        |path: &'static str, body: Value, headers: &'static [(&'static str, &'static str)]| {
            let http = http.clone();
            let url = format!("{llm}{path}");
            async move {
                let (s, _, b) = http
                    .send(Method::POST, &url, Bytes::from(body.to_string()), headers)
                    .await;
                (s.as_u16(), String::from_utf8_lossy(&b).to_string())
            }
        };
    let chat = "/v1/chat/completions";
    let messages = "/v1/messages";
    let stream = |mut v: Value| {
        v["stream"] = json!(true);
        v
    };
    let expect = |what: &str, got: (u16, String), want: u16| {
        assert_eq!(got.0, want, "{what}: {}", got.1);
    };

    for _ in 0..3 {
        expect(
            "chat",
            post(chat, openai_chat("gpt-4o-mini", "hello there"), &[]).await,
            200,
        );
    }
    expect(
        "chat with an email the data policy redacts",
        post(
            chat,
            openai_chat("gpt-4o-mini", "mail ops@example.com"),
            &[],
        )
        .await,
        200,
    );
    for _ in 0..2 {
        let req = stream(openai_chat("gpt-4o-mini", "stream please"));
        expect("openai stream", post(chat, req, &[]).await, 200);
        let req = stream(anthropic_msg("claude-sonnet-4-5", "stream please"));
        expect("anthropic stream", post(messages, req, &[]).await, 200);
    }
    expect(
        "anthropic",
        post(messages, anthropic_msg("claude-sonnet-4-5", "hi"), &[]).await,
        200,
    );
    let failing = post(
        chat,
        openai_chat("gpt-4o-mini", "fail"),
        &[("x-mock-status", "500")],
    );
    expect("upstream 500", failing.await, 500);
    expect(
        "unknown model",
        post(chat, openai_chat("no-such-model", "hi"), &[]).await,
        404,
    );
    for _ in 0..2 {
        expect(
            "retry",
            post(chat, openai_chat("retry", "hi"), &[]).await,
            200,
        );
        expect(
            "failover",
            post(chat, openai_chat("failover", "hi"), &[]).await,
            200,
        );
    }
    for _ in 0..3 {
        let (s, b) = post(chat, openai_chat("brk", "hi"), &[]).await;
        assert!(s == 500 || s == 503, "breaker route: {s} {b}");
    }
    for _ in 0..4 {
        let (s, b) = post(chat, openai_chat("bud", "hi"), &[]).await;
        assert!(s == 200 || s == 503, "budget route: {s} {b}");
    }
    expect(
        "hedge",
        post(chat, openai_chat("hedge", "hi"), &[]).await,
        200,
    );
    let long = "lorem ipsum ".repeat(100);
    expect(
        "preflight",
        post(chat, openai_chat("pre", &long), &[]).await,
        200,
    );
    let req = stream(anthropic_msg("cont", "tell me a story"));
    expect("continued stream", post(messages, req, &[]).await, 200);
    for _ in 0..6 {
        expect(
            "outlier",
            post(chat, openai_chat("outl", "hi"), &[]).await,
            200,
        );
    }
    // A structured output the mock gets right.
    let mut structured = openai_chat("gpt-4o-mini", "give me n");
    structured["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "n",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}});
    expect(
        "structured output",
        post(
            chat,
            structured,
            &[("x-mock-behavior", r#"{"json_reply": {"n": 1}}"#)],
        )
        .await,
        200,
    );
    // A mirrored request with a schema, for the shadow traffic row.
    let mut asked = openai_chat("shadowed", "mirror me");
    asked["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "n",
        "schema": {"type": "object", "required": ["n"]}}});
    expect(
        "shadowed",
        post(
            chat,
            asked,
            &[("x-mock-behavior", r#"{"json_reply": {"n": 1}}"#)],
        )
        .await,
        200,
    );
    // A Bedrock call, signed with the provider's keys.
    expect(
        "cloud",
        post(chat, openai_chat("nova-lite", "hello bedrock"), &[]).await,
        200,
    );
    // A provider moving an alias to a new version, for the drift panels.
    const VERSIONS: [&[(&str, &str)]; 2] = [
        &[(
            "x-mock-behavior",
            r#"{"response_model": "gpt-4o-mini-2024-07-18"}"#,
        )],
        &[(
            "x-mock-behavior",
            r#"{"response_model": "gpt-4o-mini-2025-03-01"}"#,
        )],
    ];
    for headers in VERSIONS {
        expect(
            "chat",
            post(chat, openai_chat("gpt-4o-mini", "which version"), headers).await,
            200,
        );
    }
    // The response cache: the first is stored, the rest are hits (the
    // reworded one from the semantic cache).
    for q in [
        "same question",
        "same question",
        "same question",
        "Same question?",
    ] {
        expect(
            "cached",
            post(chat, openai_chat("cached", q), &[]).await,
            200,
        );
    }
    passthrough(http, llm).await;
    realtime(llm).await;
}

/// Pass-through: a moderation by model, and a batch whose results are
/// downloaded (and accounted) through the sidecar.
async fn passthrough(http: &Http, llm: &str) {
    let (s, _, b) = http
        .send(
            Method::POST,
            &format!("{llm}/v1/moderations"),
            Bytes::from(json!({"model": "gpt-4o-mini", "input": "hi"}).to_string()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(s, 200, "moderation: {}", String::from_utf8_lossy(&b));
    let line = json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": openai_chat("gpt-4o-mini", "batched hello")});
    llmesh_tests::run_batch(http, llm, &[line]).await;
}

/// A realtime (WebSocket) session: the mock's greeting and an echo.
async fn realtime(llm: &str) {
    use futures_util::{SinkExt, StreamExt};
    let url = format!(
        "{}/v1/realtime?model=gpt-4o-mini",
        llm.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_string().contains("session.created"), "{hello}");
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.to_string(), "ping");
    ws.close(None).await.unwrap();
}
