//! Structured outputs through the sidecar: an answer that does not match
//! the JSON schema the request asked for is asked again with the error fed
//! back, in each API, and surfaced as a clear error after the route's
//! bound; routes may turn validation off; streams pass as they come.
#![allow(clippy::unwrap_used)]

use llmesh_mock::Behavior;
use llmesh_tests::*;
use serde_json::{json, Value};

fn policy(mock: &str) -> String {
    format!(
        r#"apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: oai}}
spec:
  schema: openai
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
  models: [{{name: gpt-4o-mini, pricing: {{input: 0.15, output: 0.6}}}}]
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
kind: LLMRoute
metadata: {{name: chat}}
spec:
  models: [json-now, json-second, json-never, json-wrong]
  backends: [{{provider: oai}}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: claude}}
spec:
  models: [claude-json]
  backends: [{{provider: ant}}]
  structuredOutput: {{retries: 2}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: loose}}
spec:
  models: [loose]
  backends: [{{provider: oai, model: json-never}}]
  structuredOutput: {{mode: ignore}}
"#
    )
}

const SCHEMA: &str = r#"{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}, "additionalProperties": false}"#;

fn schema() -> Value {
    serde_json::from_str(SCHEMA).unwrap()
}

async fn env() -> Env {
    let env = Env::start_with(policy).await;
    let b = |after: u32, reply: Value| -> Behavior {
        serde_json::from_value(json!({"json_reply": reply, "json_reply_after_turns": after}))
            .unwrap()
    };
    env.mock
        .set_model_behavior("json-now", b(0, json!({"n": 3})));
    env.mock
        .set_model_behavior("json-second", b(1, json!({"n": 4})));
    env.mock
        .set_model_behavior("json-never", b(99, json!({"n": 5})));
    env.mock
        .set_model_behavior("json-wrong", b(0, json!({"n": "five"})));
    env.mock
        .set_model_behavior("claude-json", b(2, json!({"n": 6})));
    env
}

fn chat(model: &str) -> Value {
    let mut b = openai_chat(model, "give me n");
    b["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "n", "strict": true, "schema": schema()}});
    b
}

#[tokio::test]
async fn a_valid_answer_passes_and_an_invalid_one_is_asked_again() {
    let env = env().await;
    let (s, h, b) = env.post("/v1/chat/completions", &chat("json-now")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], r#"{"n":3}"#);
    assert!(h.get("x-llmesh-schema-retries").is_none());
    assert_eq!(env.mock.request_count(), 1);

    // Prose first, JSON once told why.
    let (s, h, b) = env.post("/v1/chat/completions", &chat("json-second")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], r#"{"n":4}"#);
    assert_eq!(h["x-llmesh-schema-retries"], "1");
    let reqs = env.mock.requests();
    assert_eq!(reqs.len(), 3);
    let retry = &reqs[2].body["messages"];
    let n = retry.as_array().unwrap().len();
    assert_eq!(retry[n - 2]["role"], "assistant");
    let feedback = retry[n - 1]["content"].as_str().unwrap();
    assert!(feedback.contains("not JSON"), "{feedback}");
    let m = env.metrics().await;
    for (result, want) in [("valid", 2.0), ("retried", 1.0)] {
        assert_eq!(
            metric_value(
                &m,
                "llmesh_structured_outputs_total",
                &[("route", "chat"), ("result", result)]
            ),
            Some(want),
            "{result}"
        );
    }
}

#[tokio::test]
async fn an_answer_that_never_matches_is_a_clear_error_after_the_bound() {
    let env = env().await;
    let (s, _, b) = env.post("/v1/chat/completions", &chat("json-never")).await;
    assert_eq!(s, 502, "{b}");
    assert_eq!(b["error"]["code"], "structured_output_invalid");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("after 2 tries") && msg.contains("not JSON"),
        "{msg}"
    );
    // One retry by default: two calls, both paid.
    assert_eq!(env.mock.request_count(), 2);
    // JSON of the wrong shape names the field.
    let (s, _, b) = env.post("/v1/chat/completions", &chat("json-wrong")).await;
    assert_eq!(s, 502);
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("at /n"), "{msg}");
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_structured_outputs_total",
            &[("route", "chat"), ("result", "invalid")]
        ),
        Some(2.0)
    );
    // A route that does not validate passes the answer as it came.
    let (s, _, b) = env.post("/v1/chat/completions", &chat("loose")).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("Sure"));
    // A streamed answer is not validated.
    let mut req = chat("json-never");
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200);
    assert!(text.contains("data: [DONE]"));
}

#[tokio::test]
async fn responses_and_anthropic_clients_get_the_same() {
    let env = env().await;
    let req = json!({"model": "json-second", "input": "give me n",
        "text": {"format": {"type": "json_schema", "name": "n", "schema": schema()}}});
    let (s, h, b) = env.post("/v1/responses", &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-schema-retries"], "1");
    let text = b["output"][0]["content"][0]["text"].as_str().unwrap();
    assert_eq!(text, r#"{"n":4}"#);

    // Anthropic with two retries allowed: right on the third answer.
    let mut msg = anthropic_msg("claude-json", "give me n");
    msg["output_format"] = json!({"type": "json_schema", "schema": schema()});
    let (s, h, b) = env.post("/v1/messages", &msg).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-schema-retries"], "2");
    assert_eq!(b["content"][0]["text"], r#"{"n":6}"#);
}
