//! The exact response cache through the sidecar: a repeated deterministic
//! request is answered without calling the provider (whole and streamed,
//! in each API), accounted as saved cost, bounded by its TTL, emptied by
//! the purge endpoint and by a change of the route's backends, never fed
//! with what the data policy found, and shared (or not) through Redis as
//! namespaces require.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use llmesh_tests::*;
use serde_json::{json, Value};

fn policy_with(mock: &str, cache: &str, model: &str) -> String {
    format!(
        r#"apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: oai}}
spec:
  schema: openai
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
  models:
    - {{name: gpt-4o-mini, pricing: {{input: 0.15, output: 0.6}}}}
    - {{name: gpt-4o, pricing: {{input: 2.5, output: 10}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: ant}}
spec:
  schema: anthropic
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {{name: pii}}
spec:
  rules: [{{class: email, action: redact}}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat}}
spec:
  models: [chat, text-embedding-3-small]
  backends: [{{provider: oai, model: {model}}}]
  cache: {cache}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: claude}}
spec:
  models: [claude-sonnet-4-5]
  backends: [{{provider: ant}}]
  cache: {{exact: {{mode: always}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: plain}}
spec:
  models: [plain]
  backends: [{{provider: oai, model: gpt-4o-mini}}]
"#
    )
}

fn policy(mock: &str) -> String {
    policy_with(mock, "{exact: {ttl: 1h}}", "gpt-4o-mini")
}

fn chat(text: &str, temperature: f64) -> Value {
    let mut b = openai_chat("chat", text);
    b["temperature"] = json!(temperature);
    b
}

fn cache_header(h: &HeaderMap) -> &str {
    h.get("x-llmesh-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn a_repeated_deterministic_request_is_answered_from_the_cache() {
    let env = Env::start_with(policy).await;
    let req = chat("what is two plus two", 0.0);
    let (s, h, first) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(cache_header(&h), "miss");
    assert_eq!(env.mock.request_count(), 1);

    // Same request, keys in another order and another end user: a hit,
    // the same answer, no provider call.
    let mut again = json!({"temperature": 0, "user": "someone-else"});
    again["messages"] = req["messages"].clone();
    again["model"] = json!("chat");
    let t0 = Instant::now();
    let (s, h, second) = env.post("/v1/chat/completions", &again).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_header(&h), "hit");
    assert_eq!(second, first);
    assert_eq!(h["x-llmesh-attempts"], "0");
    assert_eq!(h["x-llmesh-provider"], "oai");
    assert!(h.get("age").is_some());
    assert_eq!(env.mock.request_count(), 1);
    assert!(t0.elapsed() < Duration::from_secs(1));

    // The hit saved what the first call cost, and cost nothing itself.
    let m = env.metrics().await;
    let cost = metric_sum(&m, "llmesh_cost_usd_total", &[("route", "chat")]);
    assert!(cost > 0.0, "{m}");
    let saved = metric_value(&m, "llmesh_cache_saved_usd_total", &[("route", "chat")]).unwrap();
    assert!((saved - cost).abs() < 1e-12, "saved {saved} vs cost {cost}");
    for (result, n) in [("miss", 1.0), ("hit", 1.0)] {
        assert_eq!(
            metric_value(
                &m,
                "llmesh_cache_lookups_total",
                &[("route", "chat"), ("result", result)]
            ),
            Some(n),
            "{result}"
        );
    }
    assert_eq!(
        metric_value(&m, "llmesh_cache_entries", &[("route", "chat")]),
        Some(1.0)
    );

    // A different prompt or sampling setting is another key.
    let (_, h, _) = env
        .post(
            "/v1/chat/completions",
            &chat("what is three plus three", 0.0),
        )
        .await;
    assert_eq!(cache_header(&h), "miss");
    let mut other = req.clone();
    other["max_tokens"] = json!(5);
    let (_, h, _) = env.post("/v1/chat/completions", &other).await;
    assert_eq!(cache_header(&h), "miss");
    assert_eq!(env.mock.request_count(), 3);

    // A route without a cache says nothing.
    let mut plain = req.clone();
    plain["model"] = json!("plain");
    let (s, h, _) = env.post("/v1/chat/completions", &plain).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("x-llmesh-cache").is_none());
}

#[tokio::test]
async fn only_deterministic_requests_are_cached_unless_asked() {
    let env = Env::start_with(policy).await;
    let warm = chat("tell me a story", 0.9);
    for _ in 0..2 {
        let (s, h, _) = env.post("/v1/chat/completions", &warm).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(cache_header(&h), "bypass");
    }
    assert_eq!(env.mock.request_count(), 2);
    // The request header opts one in, `off` skips it, `refresh` replaces it.
    for (asked, want) in [
        ("on", "miss"),
        ("on", "hit"),
        ("off", "bypass"),
        ("refresh", "miss"),
        ("on", "hit"),
    ] {
        let (s, h, _) = env
            .post_with("/v1/chat/completions", &warm, &[("x-llmesh-cache", asked)])
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(cache_header(&h), want, "{asked}");
    }
    assert_eq!(env.mock.request_count(), 5);
    // Embeddings are deterministic.
    let emb = json!({"model": "text-embedding-3-small", "input": "cache me"});
    let (_, h1, a) = env.post("/v1/embeddings", &emb).await;
    let (_, h2, b) = env.post("/v1/embeddings", &emb).await;
    assert_eq!((cache_header(&h1), cache_header(&h2)), ("miss", "hit"));
    assert_eq!(a, b);
}

#[tokio::test]
async fn a_cached_stream_is_replayed_as_a_stream() {
    let env = Env::start_with(policy).await;
    let mut req = chat("count to five", 0.0);
    req["stream"] = json!(true);
    let (s, h, first) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_header(&h), "miss");
    assert!(first.contains("data: [DONE]"), "{first}");
    // Stored once the stream completed.
    env.wait_metric("llmesh_cache_entries{").await;
    let (s, h, second) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_header(&h), "hit");
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(second, first);
    assert_eq!(env.mock.request_count(), 1);
    // The same request not streamed is another entry.
    req["stream"] = json!(false);
    let (_, h, whole) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "miss");
    assert!(whole["choices"][0]["message"]["content"].is_string());

    // An Anthropic client, streamed, on a route caching every request.
    let mut msg = anthropic_msg("claude-sonnet-4-5", "hello there");
    msg["stream"] = json!(true);
    let (_, h, a) = env.post_stream("/v1/messages", &msg, &[]).await;
    assert_eq!(cache_header(&h), "miss");
    let n = env.mock.request_count();
    let mut b = String::new();
    for _ in 0..50 {
        let (_, h, text) = env.post_stream("/v1/messages", &msg, &[]).await;
        if cache_header(&h) == "hit" {
            b = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b, a);
    assert!(a.contains("event: message_stop"), "{a}");
    assert!(env.mock.request_count() <= n + 1);
}

#[tokio::test]
async fn entries_expire_and_the_purge_endpoint_empties_the_cache() {
    let env = Env::start_with(|m| policy_with(m, "{exact: {ttl: 1s}}", "gpt-4o-mini")).await;
    let req = chat("short lived", 0.0);
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "miss");
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "hit");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "miss");

    let (s, b) = env.purge_cache(Some("chat")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "purged 1 answers\n");
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "miss");
    // Every route at once; a wrong method or route is said so.
    let (s, b) = env.purge_cache(None).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "purged 1 answers\n"));
    let admin = format!("http://{}", env.proxy.admin_addr());
    let (s, _, _) = env.http.get(&format!("{admin}/cache/purge")).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, b) = env.purge_cache(Some("plain")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(b.contains("no response cache"));
}

#[tokio::test]
async fn a_changed_backend_is_never_served_the_old_answers() {
    let env = Env::start_with(policy).await;
    let req = chat("which model are you", 0.0);
    let (_, _, a) = env.post("/v1/chat/completions", &req).await;
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "hit");
    // The route now sends a new model: its old answers are gone.
    std::fs::write(
        env.policy_path(),
        policy_with(&env.mock.url(), "{exact: {ttl: 1h}}", "gpt-4o"),
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        let (s, h, b) = env.post("/v1/chat/completions", &req).await;
        assert_eq!(s, StatusCode::OK);
        if h["x-llmesh-model"] == "gpt-4o" {
            assert_eq!(cache_header(&h), "miss");
            assert_ne!(b["model"], a["model"]);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new model's answer is cached in turn.
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "hit");
}

#[tokio::test]
async fn what_the_data_policy_finds_is_never_cached() {
    let env = Env::start_with(policy).await;
    let req = chat("write to jane.doe@example.com", 0.0);
    for _ in 0..2 {
        let (s, h, b) = env.post("/v1/chat/completions", &req).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(cache_header(&h), "bypass");
    }
    assert_eq!(env.mock.request_count(), 2);
}

/// With `store: redis` the namespace's sidecars share answers; another
/// namespace on the same Redis never sees them; a Redis outage is a miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_shares_answers_within_a_namespace_only() {
    use llmesh_proxy::config::StoreSetting;
    use llmesh_tests::redis_server::RedisServer;

    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    // Every sidecar's provider is the first one's mock: the same backends,
    // as the namespace's replicas have.
    let start = |ns: &'static str, provider: Option<String>| {
        let url = url.clone();
        Env::start_configured(
            move |m| {
                let m = provider.as_deref().unwrap_or(m);
                policy_with(m, "{exact: {store: redis}}", "gpt-4o-mini")
            },
            move |cfg| {
                cfg.identity.namespace = ns.into();
                cfg.quota.store = StoreSetting::Redis(url);
                cfg.quota.redis_timeout = Duration::from_secs(1);
            },
        )
    };
    let a1 = start("team-a", None).await;
    let shared = Some(a1.mock.url());
    let a2 = start("team-a", shared.clone()).await;
    let b = start("team-b", shared).await;
    let req = chat("shared question", 0.0);
    let (_, h, first) = a1.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "miss");
    // The write is off the request path: wait until it is in Redis.
    let mut conn = redis.conn().await;
    for _ in 0..100 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("llmesh:cache:{team-a}:chat:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, h, got) = a2.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "hit", "team-a's other sidecar missed");
    assert_eq!(got, first);
    let (_, h, _) = b.post("/v1/chat/completions", &req).await;
    assert_eq!(
        cache_header(&h),
        "miss",
        "team-b was served team-a's answer"
    );

    // Redis down: the provider answers, the lookup counts as an error.
    redis.kill();
    let (s, h, _) = a1
        .post("/v1/chat/completions", &chat("while down", 0.0))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_header(&h), "miss");
    let m = a1.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_cache_lookups_total",
            &[("route", "chat"), ("result", "error")]
        ),
        Some(1.0)
    );
}
