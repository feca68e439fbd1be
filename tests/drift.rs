//! Drift signals per model version (issue 18): the sidecar counts what each
//! backend answers under the model version it answers with, so a version
//! can be compared with its own past. Through the proxy and the mock over
//! loopback; the mock reports the model versions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use llmesh_tests::*;
use serde_json::json;

const V1: &str = "gpt-4o-mini-2024-07-18";
const V2: &str = "gpt-4o-mini-2025-03-01";

fn policy(mock: &str) -> String {
    let provider = mock_provider(
        "oai",
        mock,
        "  models:\n    - {name: gpt-4o-mini, pricing: {input: 1, output: 2}}\n",
    );
    provider
        + "
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  models: [gpt-4o-mini]
  backends: [{provider: oai}]
  structuredOutput: {retries: 0}
  timeouts: {firstByte: 5s, total: 10s}
"
}

/// `llmesh_backend_answers_total` of the chat route's backend under
/// `version`, with `labels` besides.
fn answers(m: &str, version: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("route", "chat"), ("provider", "oai"), ("version", version)];
    all.extend_from_slice(labels);
    metric_sum(m, "llmesh_backend_answers_total", &all)
}

fn output_answers(m: &str, version: &str) -> f64 {
    metric_sum(
        m,
        "llmesh_backend_output_tokens_count",
        &[("route", "chat"), ("provider", "oai"), ("version", version)],
    )
}

/// One chat request the backend fails with a 500 (the route has no
/// retries), then the metrics.
async fn fail_once(env: &Env) -> String {
    let (s, _, v) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", "fail"),
            &[("x-mock-status", "500")],
        )
        .await;
    assert_eq!(s, 500, "{v}");
    env.metrics().await
}

#[tokio::test]
async fn answers_count_under_the_version_the_backend_answers_with() {
    let env = Env::start_with(policy).await;
    let chat = "/v1/chat/completions";
    env.mock
        .set_model_behavior("gpt-4o-mini", behavior(json!({"response_model": V1})));
    for _ in 0..3 {
        let (s, _, v) = env.post(chat, &openai_chat("gpt-4o-mini", "hi")).await;
        assert_eq!(s, 200, "{v}");
    }
    let m = env.metrics().await;
    let plain = [
        ("finish_reason", "stop"),
        ("refusal", "false"),
        ("tool_call", "false"),
        ("json", "none"),
    ];
    assert_eq!(answers(&m, V1, &plain), 3.0, "{m}");
    assert_eq!(output_answers(&m, V1), 3.0, "{m}");
    assert!(
        metric_sum(
            &m,
            "llmesh_backend_output_tokens_sum",
            &[("route", "chat"), ("version", V1)]
        ) > 0.0,
        "{m}"
    );
    // The first version seen is no change.
    assert_eq!(
        metric_sum(
            &m,
            "llmesh_backend_model_version_changes_total",
            &[("route", "chat")]
        ),
        0.0,
        "{m}"
    );

    // The provider moves the alias: the next answers count under the new
    // version, the old version's series keep what they counted.
    env.mock
        .set_model_behavior("gpt-4o-mini", behavior(json!({"response_model": V2})));
    for _ in 0..2 {
        let (s, _, v) = env.post(chat, &openai_chat("gpt-4o-mini", "hi")).await;
        assert_eq!(s, 200, "{v}");
    }
    let m = env.metrics().await;
    assert_eq!(answers(&m, V2, &plain), 2.0, "{m}");
    assert_eq!(answers(&m, V1, &[]), 3.0, "{m}");
    assert_eq!(
        metric_sum(
            &m,
            "llmesh_backend_model_version_changes_total",
            &[("route", "chat"), ("provider", "oai")]
        ),
        1.0,
        "{m}"
    );

    // The new version answers prose to a request with a schema: refused
    // (no retries on this route), and counted as invalid JSON of that
    // version; then one that matches.
    let (s, _, v) = env.post(chat, &json_schema_request("gpt-4o-mini")).await;
    assert_eq!(s, 502, "{v}");
    env.mock.set_model_behavior(
        "gpt-4o-mini",
        behavior(json!({"response_model": V2, "json_reply": {"n": 1}})),
    );
    let (s, _, v) = env.post(chat, &json_schema_request("gpt-4o-mini")).await;
    assert_eq!(s, 200, "{v}");
    let m = env.metrics().await;
    assert_eq!(answers(&m, V2, &[("json", "invalid")]), 1.0, "{m}");
    assert_eq!(answers(&m, V2, &[("json", "valid")]), 1.0, "{m}");
    assert_eq!(answers(&m, V1, &[("json", "invalid")]), 0.0, "{m}");

    // A tool call and a filtered answer, by their own labels.
    let mut with_tools = openai_chat("gpt-4o-mini", "look it up");
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {}}}}]);
    let (s, _, v) = env.post(chat, &with_tools).await;
    assert_eq!(s, 200, "{v}");
    env.mock.set_model_behavior(
        "gpt-4o-mini",
        behavior(json!({"response_model": V2, "content_filter": true})),
    );
    let (s, _, v) = env.post(chat, &openai_chat("gpt-4o-mini", "hi")).await;
    assert_eq!(s, 200, "{v}");
    let m = env.metrics().await;
    assert_eq!(
        answers(
            &m,
            V2,
            &[("finish_reason", "tool_calls"), ("tool_call", "true")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        answers(
            &m,
            V2,
            &[("finish_reason", "content_filter"), ("refusal", "true")]
        ),
        1.0,
        "{m}"
    );

    // Streamed answers count too, from what the stream said on the way:
    // passed through (an OpenAI client) or translated (an Anthropic one),
    // and a streamed tool call.
    let plain_before = answers(&m, V2, &plain);
    let tools_before = answers(&m, V2, &[("tool_call", "true")]);
    let outputs = output_answers(&m, V2);
    env.mock
        .set_model_behavior("gpt-4o-mini", behavior(json!({"response_model": V2})));
    let mut req = openai_chat("gpt-4o-mini", "stream please");
    req["stream"] = json!(true);
    let (s, _, _) = env.post_stream(chat, &req, &[]).await;
    assert_eq!(s, 200);
    let mut req = anthropic_msg("gpt-4o-mini", "stream please");
    req["stream"] = json!(true);
    let (s, _, body) = env.post_stream("/v1/messages", &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    let mut req = with_tools.clone();
    req["stream"] = json!(true);
    let (s, _, body) = env.post_stream(chat, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    let m = env
        .until_metrics("the streams' accounting", Duration::from_secs(10), |m| {
            output_answers(m, V2) == outputs + 3.0
        })
        .await;
    assert_eq!(answers(&m, V2, &plain), plain_before + 2.0, "{m}");
    assert_eq!(
        answers(
            &m,
            V2,
            &[("finish_reason", "tool_calls"), ("tool_call", "true")]
        ),
        tools_before + 1.0,
        "{m}"
    );

    // A failed attempt counts under the version the backend last answered
    // with.
    let m = fail_once(&env).await;
    assert!(
        metric_sum(
            &m,
            "llmesh_backend_errors_total",
            &[
                ("route", "chat"),
                ("version", V2),
                ("error_type", "server-error")
            ]
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "llmesh_backend_errors_total", &[("version", V1)]),
        0.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_backend_that_named_no_version_yet_is_unknown_and_shadow_calls_are_not_counted() {
    let env = Env::start_with(|mock| {
        policy(mock).replace(
            "  structuredOutput: {retries: 0}\n",
            "  mirror: {backend: {provider: oai, model: candidate}, percent: 100}\n",
        )
    })
    .await;
    let chat = "/v1/chat/completions";
    // The first attempt fails before the backend ever answered.
    let m = fail_once(&env).await;
    assert!(
        metric_sum(
            &m,
            "llmesh_backend_errors_total",
            &[("route", "chat"), ("version", "unknown")]
        ) >= 1.0,
        "{m}"
    );
    // An answer of the primary, mirrored to a candidate: only the
    // primary's answer is in the drift families.
    env.mock
        .set_model_behavior("gpt-4o-mini", behavior(json!({"response_model": V1})));
    let (s, _, v) = env.post(chat, &openai_chat("gpt-4o-mini", "hi")).await;
    assert_eq!(s, 200, "{v}");
    let m = env
        .until_sum(
            "llmesh_shadow_requests_total",
            &[("route", "chat"), ("outcome", "answered")],
            1.0,
        )
        .await;
    assert_eq!(
        metric_sum(&m, "llmesh_backend_answers_total", &[("route", "chat")]),
        1.0,
        "{m}"
    );
    assert_eq!(answers(&m, V1, &[]), 1.0, "{m}");
}
