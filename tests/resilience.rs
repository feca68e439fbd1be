//! Routing and resilience end to end: retries, Retry-After, fallback
//! chains by error class, circuit breakers, retry budgets, header matching,
//! strategies and transparent failover of streams, all driven through the
//! mock provider's fault controls.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use llmesh_tests::*;
use serde_json::{json, Value};

fn policy(mock: &str) -> String {
    let providers = format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: p1}}
spec: {{schema: openai, baseUrl: {mock}/v1, credential: {{file: key.txt}}, models: [{{name: tiny, contextWindow: 60}}, {{name: pricey, pricing: {{input: 10, output: 30}}}}]}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: p2}}
spec: {{schema: openai, baseUrl: {mock}/v1, credential: {{file: key.txt}}, models: [{{name: huge, contextWindow: 100000}}, {{name: cheap, pricing: {{input: 0.1, output: 0.4}}}}]}}
"
    );
    let routes = [
        ("retry", "backends: [{provider: p1, model: bad}, {provider: p2, model: good, priority: 1}]\n  retries: {attempts: 2, backoffBase: 10ms}"),
        ("r400", "backends: [{provider: p1, model: bad400}, {provider: p2, model: good, priority: 1}]\n  retries: {attempts: 3}"),
        ("rl", "backends: [{provider: p1, model: limited}]\n  retries: {attempts: 1, backoffMax: 3s}"),
        ("ctx", "backends: [{provider: p1, model: small}]\n  fallbacks: [{when: [context-length], backends: [{provider: p2, model: large}]}]"),
        ("brk", "backends: [{provider: p1, model: flaky}, {provider: p2, model: good, priority: 1}]\n  retries: {attempts: 0}\n  circuitBreaker: {consecutiveFailures: 2, openFor: 1s}"),
        ("down", "backends: [{provider: p1, model: dead}]\n  circuitBreaker: {consecutiveFailures: 1, openFor: 30s}"),
        ("sf", "backends: [{provider: p1, model: resets}, {provider: p2, model: good, priority: 1}]\n  retries: {attempts: 1, backoffBase: 1ms}"),
        ("bud", "backends: [{provider: p1, model: bad}, {provider: p2, model: good, priority: 1}]\n  retries: {attempts: 1, budgetPercent: 10, budgetMinPerSecond: 0, backoffBase: 1ms}"),
        ("rr", "strategy: {type: round-robin}\n  backends: [{provider: p1, model: good}, {provider: p2, model: good}]"),
        ("general", "backends: [{provider: p1, model: general}]"),
        ("pre", "backends: [{provider: p1, model: tiny}]\n  fallbacks: [{when: [context-length], backends: [{provider: p2, model: huge}]}]"),
        ("pre2", "backends: [{provider: p1, model: tiny}]"),
        ("hedge", "backends: [{provider: p1, model: slow}, {provider: p2, model: good, priority: 1}]\n  hedge: {delay: 100ms}"),
        ("outl", "strategy: {type: round-robin}\n  backends: [{provider: p1, model: sluggish}, {provider: p2, model: good}, {provider: p2, model: good2}]\n  circuitBreaker: {slowOutlierFactor: 3, openFor: 30s}"),
        ("lat", "strategy: {type: latency, explorationPercent: 5}\n  backends: [{provider: p1, model: sluggish}, {provider: p2, model: good}]"),
        ("cost", "strategy: {type: cost, latencyBudget: 2s}\n  backends: [{provider: p1, model: pricey}, {provider: p2, model: cheap}]"),
        ("hedge2", "backends: [{provider: p1, model: good}, {provider: p2, model: good, priority: 1}]\n  hedge: {delay: 1s}"),
    ];
    let mut out = providers;
    for (name, body) in routes {
        let model = if name == "general" { "chat" } else { name };
        out.push_str(&format!(
            "---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: {name}}}\nspec:\n  models: [{model}]\n  {body}\n  timeouts: {{firstByte: 3s, idle: 3s, total: 20s}}\n"
        ));
    }
    out.push_str(
        "---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: coding}\nspec:\n  models: [chat]\n  headers: {x-llmesh-task: coding}\n  backends: [{provider: p2, model: coder}]\n",
    );
    out
}

async fn env() -> Env {
    let env = Env::start_with(policy).await;
    env.mock
        .set_model_behavior("bad", behavior(json!({"status": 503})));
    env.mock
        .set_model_behavior("dead", behavior(json!({"status": 503})));
    env.mock
        .set_model_behavior("flaky", behavior(json!({"status": 500})));
    env.mock
        .set_model_behavior("bad400", behavior(json!({"status": 400})));
    env.mock.set_model_behavior(
        "limited",
        behavior(json!({"status": 429, "retry_after_s": 1})),
    );
    env.mock.set_model_behavior(
        "small",
        behavior(json!({"status": 400, "error_type": "context_length_exceeded", "error_message": "This model's maximum context length is 8192 tokens"})),
    );
    env.mock
        .set_model_behavior("resets", behavior(json!({"reset_after_chunks": 0})));
    env.mock
        .set_model_behavior("slow", behavior(json!({"latency_ms": 3000})));
    env.mock
        .set_model_behavior("sluggish", behavior(json!({"latency_ms": 150})));
    env
}

fn models_sent(env: &Env) -> Vec<String> {
    env.mock
        .requests()
        .iter()
        .map(|r| r.body["model"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn a_5xx_is_retried_on_another_backend() {
    let env = env().await;
    let (s, h, b) = env
        .post("/v1/chat/completions", &openai_chat("retry", "hi"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-attempts"], "2");
    assert_eq!(h["x-llmesh-provider"], "p2");
    assert_eq!(h["x-llmesh-model"], "good");
    assert_eq!(models_sent(&env), ["bad", "good"]);
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_retries_total",
            &[("route", "retry"), ("reason", "server-error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "llmesh_attempts_total",
            &[
                ("route", "retry"),
                ("model", "bad"),
                ("outcome", "server-error")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "llmesh_attempts_total",
            &[("route", "retry"), ("model", "good"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_invalid_request_is_never_retried() {
    let env = env().await;
    let (s, h, b) = env
        .post("/v1/chat/completions", &openai_chat("r400", "hi"))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(h["x-llmesh-attempts"], "1");
    assert_eq!(env.mock.request_count(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_on_the_same_backend() {
    let env = env().await;
    let t0 = Instant::now();
    let (s, h, _) = env
        .post("/v1/chat/completions", &openai_chat("rl", "hi"))
        .await;
    assert_eq!(s, 429, "the only backend stays rate limited");
    assert_eq!(h["x-llmesh-attempts"], "2");
    assert_eq!(h["retry-after"], "1");
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        t0.elapsed()
    );
    assert_eq!(env.mock.request_count(), 2);
}

#[tokio::test]
async fn context_length_goes_to_the_larger_model_chain() {
    let env = env().await;
    let (s, h, b) = env
        .post("/v1/chat/completions", &openai_chat("ctx", "hi"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-model"], "large");
    assert_eq!(models_sent(&env), ["small", "large"]);
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_failovers_total",
            &[
                ("route", "ctx"),
                ("from", "p1"),
                ("reason", "context-length")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_breaker_opens_sends_traffic_to_the_next_priority_and_recovers() {
    let env = env().await;
    for _ in 0..2 {
        let (s, _, _) = env
            .post("/v1/chat/completions", &openai_chat("brk", "hi"))
            .await;
        assert_eq!(s, 500, "no retries: the client sees the failure");
    }
    // Open now: the primary is skipped, the priority-1 backend serves.
    let (s, h, _) = env
        .post("/v1/chat/completions", &openai_chat("brk", "hi"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-llmesh-model"], "good");
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_circuit_breaker_state",
            &[("route", "brk"), ("model", "flaky")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(models_sent(&env), ["flaky", "flaky", "good"]);

    // The primary heals; after openFor a probe goes to it and closes the breaker.
    env.mock.set_model_behavior("flaky", behavior(json!({})));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, h, _) = env
        .post("/v1/chat/completions", &openai_chat("brk", "hi"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-llmesh-model"], "flaky", "half-open probe");
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_circuit_breaker_state",
            &[("route", "brk"), ("model", "flaky")]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn with_every_backend_down_the_client_gets_a_fast_503_naming_the_route() {
    let env = env().await;
    let (s, _, _) = env
        .post("/v1/chat/completions", &openai_chat("down", "hi"))
        .await;
    assert_eq!(s, 503);
    let t0 = Instant::now();
    let (s, _, b) = env
        .post("/v1/chat/completions", &openai_chat("down", "hi"))
        .await;
    assert_eq!(s, 503);
    assert!(t0.elapsed() < Duration::from_millis(500));
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("route down") && msg.contains("circuit breaker"),
        "{msg}"
    );
    assert_eq!(b["error"]["code"], "no_healthy_backend");
    assert_eq!(
        env.mock.request_count(),
        1,
        "the open breaker spared the upstream"
    );
}

#[tokio::test]
async fn a_stream_that_dies_before_its_first_event_fails_over_transparently() {
    let env = env().await;
    let mut req = openai_chat("sf", "hi");
    req["stream"] = json!(true);
    let (s, h, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(h["x-llmesh-model"], "good");
    assert_eq!(
        sse_data(&text).last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
    assert!(
        !text.contains("error"),
        "the client saw the failed attempt: {text}"
    );
    assert_eq!(models_sent(&env), ["resets", "good"]);
}

#[tokio::test]
async fn the_retry_budget_caps_extra_load() {
    let env = env().await;
    let mut ok = 0;
    for _ in 0..20 {
        let (s, _, _) = env
            .post("/v1/chat/completions", &openai_chat("bud", "hi"))
            .await;
        if s == 200 {
            ok += 1;
        }
    }
    // 10% of 20 requests: at most 2 retries, so at most 2 successes.
    assert!(ok <= 2, "{ok} requests were retried");
    assert!(
        env.mock.request_count() <= 22,
        "{} upstream calls",
        env.mock.request_count()
    );
    let m = env.metrics().await;
    let exhausted = metric_value(
        &m,
        "llmesh_retry_budget_exhausted_total",
        &[("route", "bud")],
    )
    .unwrap();
    assert!(exhausted >= 18.0, "{exhausted}");
}

#[tokio::test]
async fn header_conditions_pick_the_route_and_never_go_upstream() {
    let env = env().await;
    let (s, h, _) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("chat", "hi"),
            &[("x-llmesh-task", "coding")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-llmesh-model"], "coder");
    let (_, h, _) = env
        .post("/v1/chat/completions", &openai_chat("chat", "hi"))
        .await;
    assert_eq!(h["x-llmesh-model"], "general");
    assert!(env.mock.requests()[0].header("x-llmesh-task").is_none());
}

#[tokio::test]
async fn round_robin_alternates_backends() {
    let env = env().await;
    let mut providers = Vec::new();
    for _ in 0..4 {
        let (s, h, _) = env
            .post("/v1/chat/completions", &openai_chat("rr", "hi"))
            .await;
        assert_eq!(s, 200);
        providers.push(h["x-llmesh-provider"].to_str().unwrap().to_string());
    }
    assert_ne!(providers[0], providers[1]);
    assert_eq!(providers[0], providers[2]);
    assert_eq!(providers[1], providers[3]);
}

#[tokio::test]
async fn a_prompt_too_big_for_the_window_skips_straight_to_the_larger_model() {
    let env = env().await;
    let long = "lorem ipsum ".repeat(100);
    let (s, h, b) = env
        .post("/v1/chat/completions", &openai_chat("pre", &long))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-model"], "huge");
    assert_eq!(
        models_sent(&env),
        ["huge"],
        "no doomed call to the small model"
    );
    // A short prompt fits and stays on the small model.
    let (s, h, _) = env
        .post("/v1/chat/completions", &openai_chat("pre", "hi"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-llmesh-model"], "tiny");

    // No larger model to go to: a clear 400, nothing sent.
    env.mock.clear_requests();
    let (s, _, b) = env
        .post("/v1/chat/completions", &openai_chat("pre2", &long))
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "context_length_exceeded");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("60-token context window of tiny"), "{msg}");
    assert_eq!(env.mock.request_count(), 0);
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_context_preflight_skips_total",
            &[("route", "pre"), ("model", "tiny")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn hedging_races_a_second_backend_and_cancels_the_loser() {
    let env = env().await;
    let t0 = Instant::now();
    let (s, h, b) = env
        .post("/v1/chat/completions", &openai_chat("hedge", "hi"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "hedge did not cut the wait: {:?}",
        t0.elapsed()
    );
    assert_eq!(h["x-llmesh-model"], "good");
    assert_eq!(h["x-llmesh-attempts"], "2");
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_hedges_total",
            &[("route", "hedge"), ("result", "won")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "llmesh_attempts_total",
            &[
                ("route", "hedge"),
                ("model", "slow"),
                ("outcome", "hedge_cancelled")
            ]
        ),
        Some(1.0)
    );
    // The slow call upstream was cancelled, not left running.
    for _ in 0..100 {
        if env.mock.active_requests() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.mock.active_requests(), 0);
    // The loser's request had reached the upstream, which bills its prompt:
    // it is accounted (counted locally) without counting a second request.
    let m = env
        .wait_metric("model=\"slow\",provider=\"p1\",route=\"hedge\",type=\"input\"")
        .await;
    assert!(
        metric_value(
            &m,
            "llmesh_tokens_total",
            &[("model", "slow"), ("type", "input")]
        )
        .unwrap_or(0.0)
            > 0.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "llmesh_requests_total", &[("route", "hedge")]),
        Some(1.0)
    );

    // A fast first backend never triggers the hedge.
    let (s, h, _) = env
        .post("/v1/chat/completions", &openai_chat("hedge2", "hi"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-llmesh-attempts"], "1");
}

#[tokio::test]
async fn a_backend_much_slower_than_its_peers_is_ejected() {
    let env = env().await;
    for _ in 0..6 {
        let (s, _, _) = env
            .post("/v1/chat/completions", &openai_chat("outl", "hi"))
            .await;
        assert_eq!(s, 200);
    }
    assert_eq!(
        models_sent(&env)
            .iter()
            .filter(|m| *m == "sluggish")
            .count(),
        2
    );
    // The ejection pass runs every second.
    let m = env.wait_metric("llmesh_outlier_ejections_total{").await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_outlier_ejections_total",
            &[("route", "outl"), ("model", "sluggish")]
        ),
        Some(1.0)
    );
    env.mock.clear_requests();
    for _ in 0..6 {
        let (s, _, _) = env
            .post("/v1/chat/completions", &openai_chat("outl", "hi"))
            .await;
        assert_eq!(s, 200);
    }
    assert!(
        !models_sent(&env).contains(&"sluggish".to_string()),
        "{:?}",
        models_sent(&env)
    );
}

#[tokio::test]
async fn the_latency_strategy_prefers_the_faster_backend() {
    let env = env().await;
    for _ in 0..20 {
        let (s, _, _) = env
            .post("/v1/chat/completions", &openai_chat("lat", "hi"))
            .await;
        assert_eq!(s, 200);
    }
    let slow = models_sent(&env)
        .iter()
        .filter(|m| *m == "sluggish")
        .count();
    // One probe to learn its latency, then only exploration (5%).
    assert!(slow <= 4, "{slow} of 20 went to the slow backend");
}

#[tokio::test]
async fn the_cost_strategy_picks_the_cheapest_backend_within_budget() {
    let env = env().await;
    for _ in 0..5 {
        let (s, h, _) = env
            .post("/v1/chat/completions", &openai_chat("cost", "hi"))
            .await;
        assert_eq!(s, 200);
        assert_eq!(h["x-llmesh-model"], "cheap");
    }
}

#[tokio::test]
async fn an_open_breaker_survives_a_reload_of_other_routes() {
    let env = env().await;
    let (s, _, _) = env
        .post("/v1/chat/completions", &openai_chat("down", "hi"))
        .await;
    assert_eq!(s, 503);
    // Add a route elsewhere in the file.
    let mut text = policy(&env.mock.url());
    text.push_str("---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: extra}\nspec:\n  models: [extra]\n  backends: [{provider: p1, model: good}]\n");
    std::fs::write(env.policy_path(), text).unwrap();
    for _ in 0..250 {
        let (s, _, _) = env
            .post("/v1/chat/completions", &openai_chat("extra", "hi"))
            .await;
        if s == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.mock.clear_requests();
    let (s, _, b) = env
        .post("/v1/chat/completions", &openai_chat("down", "hi"))
        .await;
    assert_eq!(s, 503);
    assert_eq!(b["error"]["code"], "no_healthy_backend", "{b}");
    assert_eq!(env.mock.request_count(), 0, "the reload reset the breaker");
}

#[tokio::test]
async fn a_route_without_retries_gets_the_documented_defaults_and_attempts_0_opts_out() {
    // The shared test policy's routes have no `retries` block.
    let env = Env::start().await;
    let (s, h, _) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", "hi"),
            &[("x-mock-status", "500")],
        )
        .await;
    assert_eq!(s, 500);
    assert_eq!(h["x-llmesh-attempts"], "3", "two retries by default");
    assert_eq!(env.mock.request_count(), 3);
    // /config_dump says so.
    let (s, _, dump) = env
        .http
        .get(&format!("http://{}/config_dump", env.proxy.admin_addr()))
        .await;
    assert_eq!(s, 200);
    let dump: Value = serde_yaml::from_slice(&dump).unwrap();
    let routes = dump["routes"].as_array().unwrap();
    let openai = routes.iter().find(|r| r["name"] == "openai").unwrap();
    assert_eq!(openai["retries"]["attempts"], 2, "{openai}");

    // `retries: {attempts: 0}` is one attempt.
    let env = Env::start_with(one_attempt_policy).await;
    let (s, h, _) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", "hi"),
            &[("x-mock-status", "500")],
        )
        .await;
    assert_eq!(s, 500);
    assert_eq!(h["x-llmesh-attempts"], "1");
    assert_eq!(env.mock.request_count(), 1);
}
