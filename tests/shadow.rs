//! Shadow traffic (`LLMRoute.spec.mirror`, issue 18): a sampled share of
//! requests also goes, in the background, to a candidate backend whose
//! answers' signals are compared with the primary's. Through the proxy and
//! the mock over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use llmesh_mock::Behavior;
use llmesh_tests::*;
use serde_json::json;

fn policy(mock: &str) -> String {
    let cleared = mock_provider(
        "oai",
        mock,
        "  clearance: [email]\n  models:\n    - {name: gpt-4o-mini, pricing: {input: 1, output: 2}}\n    - {name: candidate, pricing: {input: 10, output: 20}}\n",
    );
    cleared
        + &mock_provider("uncleared", mock, "")
        + r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  models: [gpt-4o-mini]
  backends: [{provider: oai}]
  mirror: {backend: {provider: oai, model: candidate}, percent: 100}
  timeouts: {firstByte: 5s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: plain}
spec:
  models: [plain]
  backends: [{provider: oai, model: gpt-4o-mini}]
  timeouts: {firstByte: 5s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: capped}
spec:
  models: [capped]
  backends: [{provider: oai, model: gpt-4o-mini}]
  mirror: {backend: {provider: oai, model: candidate}, percent: 100, maxRequestsPerMinute: 3}
  timeouts: {firstByte: 5s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: private}
spec:
  models: [private]
  backends: [{provider: oai, model: gpt-4o-mini}]
  mirror: {backend: {provider: uncleared, model: candidate}, percent: 100}
  timeouts: {firstByte: 5s, total: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {name: pii}
spec:
  rules: [{class: email, action: restrict}]
"#
}

/// Waits until the shadow calls of `route` with `outcome` number `n`.
async fn shadow_calls(env: &Env, route: &str, outcome: &str, n: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = env.metrics().await;
        let got = metric_sum(
            &m,
            "llmesh_shadow_requests_total",
            &[("route", route), ("outcome", outcome)],
        );
        if got >= n {
            assert_eq!(got, n, "more shadow calls than requests\n{m}");
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {n} {outcome} shadow calls of {route}\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_candidate_answering_invalid_json_a_third_of_the_time_is_caught() {
    let env = Env::start_with(policy).await;
    env.mock
        .set_model_behavior("gpt-4o-mini", behavior(json!({"json_reply": {"n": 1}})));
    for i in 0..9u32 {
        // Every third call, the candidate answers prose instead of JSON.
        let candidate = if i % 3 == 2 {
            json!({"json_reply": {"n": 1}, "json_reply_after_turns": 99})
        } else {
            json!({"json_reply": {"n": 2}})
        };
        env.mock
            .set_model_behavior("candidate", behavior(candidate));
        let (s, _, v) = env
            .post("/v1/chat/completions", &json_schema_request("gpt-4o-mini"))
            .await;
        assert_eq!(s, 200, "{v}");
        // The client gets the primary's answer, always.
        assert_eq!(v["choices"][0]["message"]["content"], r#"{"n":1}"#, "{v}");
        shadow_calls(&env, "chat", "answered", f64::from(i + 1)).await;
    }
    // The comparison is recorded once the primary's side is in.
    let m = env
        .until_sum(
            "llmesh_shadow_agreement_total",
            &[("route", "chat"), ("signal", "json")],
            9.0,
        )
        .await;
    let answers = |role: &str, json: &str| {
        metric_sum(
            &m,
            "llmesh_shadow_answers_total",
            &[("route", "chat"), ("role", role), ("json", json)],
        )
    };
    assert_eq!(answers("candidate", "invalid"), 3.0, "{m}");
    assert_eq!(answers("candidate", "valid"), 6.0, "{m}");
    assert_eq!(answers("primary", "valid"), 9.0, "{m}");
    let agreement = |signal: &str, result: &str| {
        metric_sum(
            &m,
            "llmesh_shadow_agreement_total",
            &[("route", "chat"), ("signal", signal), ("result", result)],
        )
    };
    assert_eq!(agreement("json", "differ"), 3.0, "{m}");
    assert_eq!(agreement("json", "same"), 6.0, "{m}");
    assert_eq!(agreement("finish_reason", "same"), 9.0, "{m}");
    // Both sides' latency and output tokens, side by side.
    for role in ["primary", "candidate"] {
        let n = metric_sum(
            &m,
            "llmesh_shadow_latency_seconds_count",
            &[("route", "chat"), ("role", role)],
        );
        assert_eq!(n, 9.0, "{role}\n{m}");
        let n = metric_sum(
            &m,
            "llmesh_shadow_output_tokens_count",
            &[("route", "chat"), ("role", role)],
        );
        assert_eq!(n, 9.0, "{role}\n{m}");
    }
    // Shadow calls are accounted apart, at the candidate's price, never
    // in the route's own cost.
    assert!(
        metric_sum(
            &m,
            "llmesh_shadow_cost_usd_total",
            &[("route", "chat"), ("model", "candidate")]
        ) > 0.0
    );
    assert!(
        metric_sum(
            &m,
            "llmesh_shadow_tokens_total",
            &[("route", "chat"), ("type", "output")]
        ) > 0.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "llmesh_cost_usd_total",
            &[("route", "chat"), ("model", "candidate")]
        ),
        0.0,
        "{m}"
    );
    assert!(m.contains("traffic=\"shadow\""));
}

#[tokio::test]
async fn shadow_traffic_never_changes_the_answer_or_its_latency() {
    let env = Env::start_with(policy).await;
    // A candidate that takes 1.5 s, then one that fails.
    env.mock
        .set_model_behavior("candidate", behavior(json!({"latency_ms": 1500})));
    let t0 = Instant::now();
    let (s, _, mirrored) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", "same words"),
        )
        .await;
    let with_mirror = t0.elapsed();
    assert_eq!(s, 200, "{mirrored}");
    let t0 = Instant::now();
    let (s, _, plain) = env
        .post("/v1/chat/completions", &openai_chat("plain", "same words"))
        .await;
    let without = t0.elapsed();
    assert_eq!(s, 200, "{plain}");
    assert_eq!(
        mirrored["choices"], plain["choices"],
        "the mirrored request got the same answer as an unmirrored one"
    );
    assert_eq!(mirrored["usage"], plain["usage"]);
    assert!(
        with_mirror < Duration::from_millis(1000),
        "the client waited for the shadow: {with_mirror:?} (without a mirror: {without:?})"
    );
    let m = shadow_calls(&env, "chat", "answered", 1.0).await;
    let slow = metric_sum(
        &m,
        "llmesh_shadow_latency_seconds_sum",
        &[("route", "chat"), ("role", "candidate")],
    );
    assert!(
        slow >= 1.5,
        "the candidate's own latency is recorded: {slow}"
    );

    env.mock
        .set_model_behavior("candidate", behavior(json!({"status": 500})));
    let (s, _, v) = env
        .post("/v1/chat/completions", &openai_chat("gpt-4o-mini", "again"))
        .await;
    assert_eq!(
        s, 200,
        "a failing candidate changes nothing for the client: {v}"
    );
    // A streamed request is mirrored unstreamed, the client's stream intact.
    env.mock
        .set_model_behavior("candidate", Behavior::default());
    let mut body = openai_chat("gpt-4o-mini", "stream me");
    body["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/chat/completions", &body, &[]).await;
    assert_eq!(s, 200);
    assert!(!openai_text(&text).is_empty(), "{text}");
    shadow_calls(&env, "chat", "answered", 2.0).await;
    let m = shadow_calls(&env, "chat", "failed", 1.0).await;
    // The primary's own accounting is unchanged: three requests, one model.
    assert_eq!(
        metric_sum(&m, "llmesh_requests_total", &[("route", "chat")]),
        3.0,
        "{m}"
    );
}

#[tokio::test]
async fn the_mirror_stops_when_its_cap_is_spent() {
    inside_minute(20.0).await;
    let env = Env::start_with(policy).await;
    for _ in 0..6 {
        let (s, _, v) = env
            .post("/v1/chat/completions", &openai_chat("capped", "hi"))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    shadow_calls(&env, "capped", "answered", 3.0).await;
    shadow_calls(&env, "capped", "skipped_budget", 3.0).await;
}

#[tokio::test]
async fn a_request_the_data_policy_restricts_never_reaches_an_uncleared_candidate() {
    let env = Env::start_with(policy).await;
    let (s, _, v) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("private", "write to jane.roe@example.com"),
        )
        .await;
    assert_eq!(s, 200, "the primary is cleared for email: {v}");
    shadow_calls(&env, "private", "skipped_policy", 1.0).await;
    let (s, _, _) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("private", "nothing personal"),
        )
        .await;
    assert_eq!(s, 200);
    let m = shadow_calls(&env, "private", "answered", 1.0).await;
    assert_eq!(
        metric_sum(&m, "llmesh_shadow_requests_total", &[("route", "private")]),
        2.0
    );
}
