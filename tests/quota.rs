//! `LLMQuota` enforced by one sidecar (the in-process proxy, memory store):
//! what a client sees at a limit, reservations settled with real usage,
//! downgrade, warn, concurrency slots, per-caller budgets and provider
//! pacing.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::StatusCode;
use llmesh_tests::{anthropic_msg, default_policy, inside_minute, metric_value, openai_chat, Env};
use serde_json::json;

const NS_QUOTA: &str = "test-ns/budget";

fn with_quota(quota_spec: &'static str) -> impl Fn(&str) -> String {
    move |mock| {
        format!(
            "{}\n---\napiVersion: llmesh.io/v1alpha1\nkind: LLMQuota\nmetadata: {{name: budget}}\nspec: {quota_spec}\n",
            default_policy(mock)
        )
    }
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
}

/// Polls /metrics until `name{labels}` satisfies `ok`.
async fn until_metric(env: &Env, name: &str, labels: &[(&str, &str)], ok: impl Fn(f64) -> bool) {
    for _ in 0..500 {
        if metric_value(&env.metrics().await, name, labels).is_some_and(&ok) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{name}{labels:?} never reached the expected value:\n{}",
        env.metrics().await
    );
}

#[tokio::test]
async fn a_request_limit_answers_429_in_the_clients_format() {
    inside_minute(10.0).await;
    let env = Env::start_with(with_quota("{limits: {requestsPerMinute: 2}}")).await;
    let req = openai_chat("gpt-4o-mini", "hello");
    let (s, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "1");
    let (s, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
    let upstream_calls = env.mock.requests().len();

    let (s, h, body) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("budget") && msg.contains("requestsPerMinute"),
        "{msg}"
    );
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&h, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&h, "x-llmesh-quota"), "budget/requestsPerMinute");
    assert!(h.get("x-request-id").is_some());

    // An Anthropic client gets Anthropic's error shape.
    let (s, _, body) = env
        .post("/v1/messages", &anthropic_msg("claude-sonnet-4-5", "hi"))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Refused requests never reach the provider, and are counted.
    assert_eq!(env.mock.requests().len(), upstream_calls);
    let m = env.metrics().await;
    let rejected = metric_value(
        &m,
        "llmesh_quota_decisions_total",
        &[("decision", "reject"), ("quota", NS_QUOTA)],
    );
    assert_eq!(rejected, Some(2.0));
    assert_eq!(
        metric_value(
            &m,
            "llmesh_quota_limit",
            &[("quota", NS_QUOTA), ("limit", "requestsPerMinute")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "llmesh_quota_remaining",
            &[("quota", NS_QUOTA), ("limit", "requestsPerMinute")]
        ),
        Some(0.0)
    );
    // Reaching the limit raised both default alert thresholds.
    for t in ["80", "100"] {
        assert_eq!(
            metric_value(
                &m,
                "llmesh_quota_alerts_total",
                &[("quota", NS_QUOTA), ("threshold", t)]
            ),
            Some(1.0),
            "threshold {t}:\n{m}"
        );
    }
}

#[tokio::test]
async fn tokens_are_reserved_up_front_and_settled_with_the_real_usage() {
    inside_minute(10.0).await;
    let env = Env::start_with(with_quota("{limits: {tokensPerMinute: 3000}}")).await;
    let labels = [("quota", NS_QUOTA), ("limit", "tokensPerMinute")];

    // While a stream runs, its max_tokens is held.
    let mut req = openai_chat("gpt-4o-mini", "tell me a story");
    req["stream"] = json!(true);
    req["max_tokens"] = json!(1000);
    let env = std::sync::Arc::new(env);
    let e2 = env.clone();
    let r2 = req.clone();
    let stream = tokio::spawn(async move {
        e2.post_stream(
            "/v1/chat/completions",
            &r2,
            &[("x-mock-chunk-delay-ms", "100")],
        )
        .await
    });
    until_metric(&env, "llmesh_quota_used", &labels, |v| v >= 1000.0).await;
    let (s, _, body) = stream.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{body}");

    // Once it ends, the reservation is replaced by what the provider
    // reported: the same total as the token counter.
    let m = env.wait_metric("llmesh_tokens_total{").await;
    let tokens = |kind: &str| {
        metric_value(
            &m,
            "llmesh_tokens_total",
            &[("route", "openai"), ("type", kind)],
        )
        .unwrap()
    };
    let real = tokens("input") + tokens("output");
    assert!(real > 0.0 && real < 100.0, "{real}");
    until_metric(&env, "llmesh_quota_used", &labels, |v| v == real).await;

    // A request whose prompt plus max_tokens cannot fit what is left is
    // refused with the token headers.
    let mut big = openai_chat("gpt-4o-mini", "hello");
    big["max_tokens"] = json!(5000);
    let (s, h, _) = env.post("/v1/chat/completions", &big).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "3000");
    assert_eq!(header(&h, "x-llmesh-quota"), "budget/tokensPerMinute");
    // Without max_tokens the configured default (1024) is reserved.
    let (s, h, _) = env
        .post("/v1/chat/completions", &openai_chat("gpt-4o-mini", "hi"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let remaining: f64 = header(&h, "x-ratelimit-remaining-tokens").parse().unwrap();
    assert!(remaining <= 3000.0 - real - 1024.0, "{remaining}");
}

#[tokio::test]
async fn a_full_downgrade_quota_serves_the_cheaper_model() {
    inside_minute(10.0).await;
    let env = Env::start_with(with_quota(
        "{models: [claude-sonnet-4-5], limits: {requestsPerMinute: 1}, action: downgrade, downgradeTo: gpt-4o-mini}",
    ))
    .await;
    let req = anthropic_msg("claude-sonnet-4-5", "hello");
    let (s, h, _) = env.post("/v1/messages", &req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "x-llmesh-provider"), "ant");
    assert!(h.get("x-llmesh-quota-downgraded-to").is_none());

    let (s, h, body) = env.post("/v1/messages", &req).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(header(&h, "x-llmesh-quota-downgraded-to"), "gpt-4o-mini");
    assert_eq!(header(&h, "x-llmesh-provider"), "oai");
    assert_eq!(header(&h, "x-llmesh-model"), "gpt-4o-mini");
    // Still the Anthropic shape the client asked in.
    assert_eq!(body["type"], "message", "{body}");
    let last = env.mock.requests().pop().unwrap();
    assert!(last.path.ends_with("/chat/completions"), "{}", last.path);
    assert_eq!(last.body["model"], "gpt-4o-mini");
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_quota_decisions_total",
            &[("decision", "downgrade"), ("quota", NS_QUOTA)]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_warn_quota_serves_counts_and_alerts() {
    inside_minute(10.0).await;
    let env = Env::start_with(with_quota(
        "{limits: {requestsPerMinute: 1}, action: warn, alertThresholds: [50, 100, 200]}",
    ))
    .await;
    let req = openai_chat("gpt-4o-mini", "hello");
    for _ in 0..3 {
        let (s, _, _) = env.post("/v1/chat/completions", &req).await;
        assert_eq!(s, StatusCode::OK);
    }
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_quota_decisions_total",
            &[("decision", "warn"), ("quota", NS_QUOTA)]
        ),
        Some(2.0)
    );
    for t in ["50", "100", "200"] {
        assert_eq!(
            metric_value(
                &m,
                "llmesh_quota_alerts_total",
                &[("quota", NS_QUOTA), ("threshold", t)]
            ),
            Some(1.0),
            "threshold {t}"
        );
    }
    assert_eq!(
        metric_value(
            &m,
            "llmesh_quota_used",
            &[("quota", NS_QUOTA), ("limit", "requestsPerMinute")]
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn concurrency_slots_are_freed_when_calls_end_or_clients_leave() {
    let env =
        std::sync::Arc::new(Env::start_with(with_quota("{limits: {concurrentRequests: 1}}")).await);
    let req = openai_chat("gpt-4o-mini", "hello");
    let (e2, r2) = (env.clone(), req.clone());
    let slow = tokio::spawn(async move {
        e2.post_with("/v1/chat/completions", &r2, &[("x-mock-latency-ms", "800")])
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, h, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&h, "x-ratelimit-limit-concurrent"), "1");
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);
    let admitted = |env: std::sync::Arc<Env>| async move {
        for _ in 0..250 {
            let (s, _, _) = env
                .post("/v1/chat/completions", &openai_chat("gpt-4o-mini", "x"))
                .await;
            if s == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the slot was never freed");
    };
    admitted(env.clone()).await;

    // A streaming client that goes away mid-stream frees its slot too.
    let mut sreq = openai_chat("gpt-4o-mini", "hello");
    sreq["stream"] = json!(true);
    let (e2, r2) = (env.clone(), sreq.clone());
    let gone = tokio::spawn(async move {
        e2.post_stream(
            "/v1/chat/completions",
            &r2,
            &[("x-mock-chunk-delay-ms", "5000")],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, _) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "the stream holds the slot"
    );
    gone.abort();
    admitted(env.clone()).await;
}

#[tokio::test]
async fn callers_get_their_own_budget_and_their_ids_never_show() {
    inside_minute(10.0).await;
    let env = Env::start_with(with_quota(
        "{scope: caller, callerHeader: x-team-user, limits: {requestsPerMinute: 1}}",
    ))
    .await;
    let req = openai_chat("gpt-4o-mini", "hello");
    let post = |user: &'static str| {
        let (env, req) = (&env, &req);
        async move {
            env.post_with("/v1/chat/completions", req, &[("x-team-user", user)])
                .await
                .0
        }
    };
    assert_eq!(post("alice@example.com").await, StatusCode::OK);
    assert_eq!(
        post("alice@example.com").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(post("bob@example.com").await, StatusCode::OK);
    let m = env.metrics().await;
    assert!(!m.contains("alice") && !m.contains("bob"), "{m}");
    let dump = env
        .http
        .get(&format!("http://{}/config_dump", env.proxy.admin_addr()))
        .await
        .2;
    let dump = String::from_utf8_lossy(&dump);
    assert!(dump.contains("x-team-user"), "{dump}");
    assert!(!dump.contains("alice"));
}

/// Two OpenAI-compatible providers on one route; `oai` publishes a limit
/// of 2 requests a minute with no headroom.
fn paced_policy(mock: &str) -> String {
    format!(
        r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: oai}}
spec:
  schema: openai
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
  limits: {{requestsPerMinute: 2, headroomPercent: 0}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: spare}}
spec:
  schema: openai
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: paced}}
spec:
  models: [gpt-4o-mini]
  backends: [{{provider: oai, priority: 0}}, {{provider: spare, priority: 1}}]
"#
    )
}

#[tokio::test]
async fn routing_moves_off_a_provider_whose_published_budget_is_used() {
    inside_minute(10.0).await;
    let env = Env::start_with(paced_policy).await;
    let req = openai_chat("gpt-4o-mini", "hello");
    let mut by = std::collections::HashMap::<String, u32>::new();
    for _ in 0..8 {
        let (s, h, _) = env.post("/v1/chat/completions", &req).await;
        assert_eq!(s, StatusCode::OK);
        *by.entry(header(&h, "x-llmesh-provider").to_string())
            .or_default() += 1;
        // Pacing counts land off the request path.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(by.get("oai"), Some(&2), "{by:?}");
    assert_eq!(by.get("spare"), Some(&6), "{by:?}");
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_provider_budget_exhausted",
            &[("provider", "oai")]
        ),
        Some(1.0)
    );
}
