//! The semantic response cache through the sidecar, with the mock's
//! bag-of-words embeddings (cosine similarity about shared words / word
//! count): a prompt that means the same as a stored one is answered from
//! the cache when everything else in the request is the same, a different
//! one is not; streams replay as streams; what the data policy found is
//! kept out unless its rule says `cacheable`, and kept apart by class; the
//! namespace's sidecars share prompts through Redis and other namespaces
//! never see them; a failing embeddings call is a miss; a changed
//! embeddings model or a purge empties the index.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use llmesh_tests::*;
use serde_json::{json, Value};

fn policy_with(mock: &str, semantic: &str, cacheable: bool) -> String {
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
    - {{name: text-embedding-3-small, pricing: {{input: 0.02, output: 0}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: ant}}
spec:
  schema: anthropic
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
  clearance: [email]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {{name: pii}}
spec:
  rules:
    - {{class: email, action: redact, cacheable: {cacheable}}}
    - {{class: phone, action: redact}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: faq}}
spec:
  models: [faq]
  backends: [{{provider: oai, model: gpt-4o-mini}}]
  cache:
    semantic: {semantic}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: claude}}
spec:
  models: [claude-sonnet-4-5]
  backends: [{{provider: ant}}]
  cache:
    exact: {{mode: always}}
    semantic: {{embedding: {{provider: oai, model: text-embedding-3-small, dimensions: 256}}, threshold: 0.9}}
"#
    )
}

const SEMANTIC: &str =
    "{embedding: {provider: oai, model: text-embedding-3-small, dimensions: 256}, threshold: 0.9}";

fn policy(mock: &str) -> String {
    policy_with(mock, SEMANTIC, false)
}

fn ask(text: &str) -> Value {
    let mut b = openai_chat("faq", text);
    b["temperature"] = json!(0.7);
    b
}

fn cache_header(h: &HeaderMap) -> &str {
    h.get("x-llmesh-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn similarity(h: &HeaderMap) -> f64 {
    h.get("x-llmesh-cache-similarity")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// What the cache said of a chat request asking `text` on the route.
async fn cache_of(env: &Env, text: &str) -> String {
    let (s, h, b) = env.post("/v1/chat/completions", &ask(text)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    cache_header(&h).to_string()
}

/// Calls the mock got on paths ending with `suffix`.
fn calls(env: &Env, suffix: &str) -> usize {
    env.mock
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(suffix))
        .count()
}

/// Waits until the route's cache holds `n` entries (a stream is stored
/// once it completes, just after the client has read it).
async fn wait_entries(env: &Env, route: &str, n: f64) {
    for _ in 0..250 {
        let m = env.metrics().await;
        if metric_value(&m, "llmesh_cache_entries", &[("route", route)]) == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the {route} cache never held {n} entries");
}

fn lookups(m: &str, route: &str, result: &str) -> f64 {
    metric_value(
        m,
        "llmesh_semantic_cache_lookups_total",
        &[("route", route), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_prompt_that_means_the_same_is_answered_from_the_cache() {
    let env = Env::start_with(policy).await;
    let (s, h, first) = env
        .post(
            "/v1/chat/completions",
            &ask("What is the capital of France?"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(cache_header(&h), "miss");
    assert_eq!(calls(&env, "/chat/completions"), 1);
    assert_eq!(calls(&env, "/embeddings"), 1);
    // The embeddings call carried the provider's key and only the prompt.
    let emb = env
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/embeddings"))
        .unwrap();
    assert_eq!(emb.body["model"], "text-embedding-3-small");
    assert_eq!(emb.body["input"], "What is the capital of France?");

    // Another wording, same question: the stored answer, no chat call.
    let (s, h, second) = env
        .post(
            "/v1/chat/completions",
            &ask("what is the capital city of france"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_header(&h), "hit");
    let sim = similarity(&h);
    assert!((0.9..1.0).contains(&sim), "similarity {sim}");
    assert_eq!(second, first);
    assert_eq!(h["x-llmesh-attempts"], "0");
    assert_eq!(calls(&env, "/chat/completions"), 1);

    // A different question is asked.
    assert_eq!(cache_of(&env, "How do I bake bread at home?").await, "miss");
    assert_eq!(calls(&env, "/chat/completions"), 2);

    // Everything but the prompt must match: another system prompt misses.
    let mut other = ask("What is the capital of France?");
    other["messages"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"role": "system", "content": "Answer in French."}));
    let (_, h, _) = env.post("/v1/chat/completions", &other).await;
    assert_eq!(cache_header(&h), "miss");
    assert_eq!(calls(&env, "/chat/completions"), 3);

    let m = env.metrics().await;
    assert_eq!(lookups(&m, "faq", "hit"), 1.0, "{m}");
    assert_eq!(lookups(&m, "faq", "miss"), 3.0);
    // The similarity seen is recorded, to choose a threshold by.
    assert!(
        metric_value(
            &m,
            "llmesh_semantic_cache_similarity_count",
            &[("route", "faq")]
        )
        .unwrap()
            >= 2.0
    );
    // The hit saved the first call's cost; the embeddings calls are paid
    // for under the route.
    let saved = metric_value(&m, "llmesh_cache_saved_usd_total", &[("route", "faq")]).unwrap();
    assert!(saved > 0.0);
    let embed_cost = metric_value(
        &m,
        "llmesh_cost_usd_total",
        &[
            ("route", "faq"),
            ("provider", "oai"),
            ("model", "text-embedding-3-small"),
        ],
    )
    .unwrap();
    assert!(embed_cost > 0.0, "{m}");
    assert_eq!(
        metric_value(&m, "llmesh_cache_entries", &[("route", "faq")]),
        Some(3.0)
    );
    // `off` skips the cache; `refresh` asks the provider and stores anew.
    let (_, h, _) = env
        .post_with(
            "/v1/chat/completions",
            &ask("What is the capital of France?"),
            &[("x-llmesh-cache", "off")],
        )
        .await;
    assert_eq!(cache_header(&h), "bypass");
    let (_, h, _) = env
        .post_with(
            "/v1/chat/completions",
            &ask("What is the capital of France?"),
            &[("x-llmesh-cache", "refresh")],
        )
        .await;
    assert_eq!(cache_header(&h), "miss");
    assert_eq!(calls(&env, "/chat/completions"), 5);
}

#[tokio::test]
async fn a_stream_is_replayed_as_a_stream_and_exact_hits_need_no_embedding() {
    let env = Env::start_with(policy).await;
    let mut req = ask("Count from one to five please");
    req["stream"] = json!(true);
    let (s, h, first) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_header(&h), "miss");
    wait_entries(&env, "faq", 1.0).await;
    req["messages"][1]["content"] = json!("count from one to five, please!");
    let (s, h, second) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_header(&h), "hit");
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(second, first);
    // A whole request does not get the stream.
    req["stream"] = json!(false);
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "miss");
    assert_eq!(calls(&env, "/chat/completions"), 2);

    // A route with both caches: the exact one answers a repeat before
    // any embedding; the semantic one a rewording; Anthropic clients too.
    let msg = anthropic_msg("claude-sonnet-4-5", "Tell me a joke about cats");
    let (_, h, a) = env.post("/v1/messages", &msg).await;
    assert_eq!(cache_header(&h), "miss");
    let embeddings = calls(&env, "/embeddings");
    let (_, h, b) = env.post("/v1/messages", &msg).await;
    assert_eq!(cache_header(&h), "hit");
    assert!(h.get("x-llmesh-cache-similarity").is_none());
    assert_eq!(calls(&env, "/embeddings"), embeddings);
    assert_eq!(a, b);
    let reworded = anthropic_msg("claude-sonnet-4-5", "tell me a joke about cats!");
    let (_, h, c) = env.post("/v1/messages", &reworded).await;
    assert_eq!(cache_header(&h), "hit");
    assert_eq!(c, a);
    assert_eq!(calls(&env, "/embeddings"), embeddings + 1);
}

#[tokio::test]
async fn sensitive_requests_stay_out_unless_their_class_is_cacheable() {
    // By default a request with a finding is never cached.
    let env = Env::start_with(policy).await;
    let req = ask("Write a note to jane.doe@example.com about lunch");
    for _ in 0..2 {
        let (s, h, b) = env.post("/v1/chat/completions", &req).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(cache_header(&h), "bypass");
    }
    assert_eq!(calls(&env, "/embeddings"), 0);
    drop(env);

    // `cacheable: true`: requests with only that class are cached, keyed by
    // the redacted text, and apart from requests without it.
    let env = Env::start_with(|m| policy_with(m, SEMANTIC, true)).await;
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "miss");
    // The embeddings provider got the placeholder, not the address.
    let emb = env
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/embeddings"))
        .unwrap();
    assert!(!emb.body.to_string().contains("jane.doe"), "{}", emb.body);
    assert_eq!(
        cache_of(&env, "Write a note to john.roe@example.org about lunch").await,
        "hit"
    );
    // Same words without an address: another data class, a miss.
    assert_eq!(
        cache_of(&env, "Write a note to the team about lunch").await,
        "miss"
    );
    // A class that is not cacheable keeps the request out.
    assert_eq!(
        cache_of(
            &env,
            "Write a note to jane.doe@example.com about lunch, call +1 415 555 0100"
        )
        .await,
        "bypass"
    );
    // A class declared by header leaves the body as it is: the exact cache
    // keys it apart too.
    let msg = anthropic_msg("claude-sonnet-4-5", "Summarise the meeting notes");
    let (_, h, _) = env.post("/v1/messages", &msg).await;
    assert_eq!(cache_header(&h), "miss");
    let (_, h, _) = env.post("/v1/messages", &msg).await;
    assert_eq!(cache_header(&h), "hit");
    let (s, h, b) = env
        .post_with("/v1/messages", &msg, &[("x-llmesh-data-class", "email")])
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(cache_header(&h), "miss");
}

#[tokio::test]
async fn a_failing_embeddings_call_is_a_miss_and_the_provider_answers() {
    let env = Env::start_with(|m| {
        policy_with(
            m,
            "{embedding: {provider: oai, model: broken-embedder, dimensions: 256}, timeout: 500ms}",
            false,
        )
    })
    .await;
    env.mock.set_model_behavior(
        "broken-embedder",
        serde_json::from_value(json!({"status": 500})).unwrap(),
    );
    for _ in 0..2 {
        let (s, h, b) = env
            .post("/v1/chat/completions", &ask("Is anybody there?"))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(cache_header(&h), "miss");
    }
    // A hanging one is cut at the timeout.
    env.mock.set_model_behavior(
        "broken-embedder",
        serde_json::from_value(json!({"hang": true})).unwrap(),
    );
    let t0 = Instant::now();
    let (s, _, _) = env
        .post("/v1/chat/completions", &ask("Is anybody there?"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let m = env.metrics().await;
    assert_eq!(lookups(&m, "faq", "error"), 3.0, "{m}");
    assert_eq!(calls(&env, "/chat/completions"), 3);
}

#[tokio::test]
async fn a_new_embeddings_model_or_a_purge_empties_the_index() {
    let env = Env::start_with(policy).await;
    let req = ask("Which planet is the largest?");
    env.post("/v1/chat/completions", &req).await;
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "hit");

    let (s, b) = env.purge_cache(Some("faq")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "purged 1 answers\n");
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "miss");
    let (_, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(cache_header(&h), "hit");

    // Vectors of another model are not comparable: a new, empty index.
    std::fs::write(
        env.policy_path(),
        policy_with(
            &env.mock.url(),
            "{embedding: {provider: oai, model: text-embedding-3-large, dimensions: 256}, threshold: 0.9}",
            false,
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        let before = env
            .mock
            .requests()
            .iter()
            .filter(|r| r.body["model"] == "text-embedding-3-large")
            .count();
        let (s, h, _) = env.post("/v1/chat/completions", &req).await;
        assert_eq!(s, StatusCode::OK);
        let after = env
            .mock
            .requests()
            .iter()
            .filter(|r| r.body["model"] == "text-embedding-3-large")
            .count();
        if after > before {
            assert_eq!(cache_header(&h), "miss");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `store: redis` the namespace's sidecars share prompts and
/// answers; another namespace on the same Redis never sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_shares_the_index_within_a_namespace_only() {
    use llmesh_proxy::config::StoreSetting;
    use llmesh_tests::redis_server::RedisServer;

    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let start = |ns: &'static str, provider: Option<String>| {
        let url = url.clone();
        Env::start_configured(
            move |m| {
                let m = provider.as_deref().unwrap_or(m);
                policy_with(
                    m,
                    "{embedding: {provider: oai, model: text-embedding-3-small, dimensions: 256}, threshold: 0.9, store: redis}",
                    false,
                )
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
    let (_, h, first) = a1
        .post("/v1/chat/completions", &ask("How tall is Mount Everest?"))
        .await;
    assert_eq!(cache_header(&h), "miss");
    let mut conn = redis.conn().await;
    for _ in 0..100 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("llmesh:cache:{team-a}:faq:s:e:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, h, got) = a2
        .post("/v1/chat/completions", &ask("how tall is mount everest"))
        .await;
    assert_eq!(cache_header(&h), "hit", "team-a's other sidecar missed");
    assert_eq!(got, first);
    let (_, h, _) = b
        .post("/v1/chat/completions", &ask("How tall is Mount Everest?"))
        .await;
    assert_eq!(
        cache_header(&h),
        "miss",
        "team-b was served team-a's answer"
    );
    // The purge removes the shared prompts too.
    let (s, _) = a2.purge_cache(Some("faq")).await;
    assert_eq!(s, StatusCode::OK);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("llmesh:cache:{team-a}:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    // Redis down: the provider answers, the lookup counts as an error.
    redis.kill();
    let (s, h, _) = a1
        .post("/v1/chat/completions", &ask("while the store is down"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_header(&h), "miss");
    let m = a1.metrics().await;
    assert_eq!(lookups(&m, "faq", "error"), 1.0, "{m}");
}
