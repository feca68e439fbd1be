//! Structured outputs through the sidecar: an answer that does not match
//! the JSON schema the request asked for is asked again with the error fed
//! back, in each API, and surfaced as a clear error after the route's
//! bound; routes may turn validation off; streams pass as they come. An
//! OpenAI-format request to an Anthropic provider asks through a forced
//! tool and gets its input as the text; a route may enforce its own schema.
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
  models: [claude-json, claude-now]
  backends: [{{provider: ant}}]
  structuredOutput: {{retries: 2}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: enforced}}
spec:
  models: [json-enforced, json-enforced-never]
  backends: [{{provider: oai}}]
  structuredOutput:
    name: counted
    schema: {SCHEMA}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: enforced-claude}}
spec:
  models: [claude-enforced]
  backends: [{{provider: ant}}]
  structuredOutput: {{schema: {SCHEMA}}}
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
    env.mock
        .set_model_behavior("claude-now", b(0, json!({"n": 7})));
    env.mock
        .set_model_behavior("json-enforced", b(0, json!({"n": 8})));
    env.mock
        .set_model_behavior("json-enforced-never", b(99, json!({"n": 9})));
    env.mock
        .set_model_behavior("claude-enforced", b(0, json!({"n": 10})));
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

/// The body the mock got last.
fn last_sent(env: &Env) -> Value {
    env.mock.requests().last().unwrap().body.clone()
}

#[tokio::test]
async fn openai_clients_of_an_anthropic_provider_get_the_forced_tool_as_text() {
    let env = env().await;
    let (s, h, b) = env.post("/v1/chat/completions", &chat("claude-now")).await;
    assert_eq!(s, 200, "{b}");
    let choice = &b["choices"][0];
    assert_eq!(choice["message"]["content"], r#"{"n":7}"#);
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none(), "{b}");
    assert!(h.get("x-llmesh-schema-retries").is_none());
    // Anthropic was asked through one forced tool, not an instruction.
    let sent = last_sent(&env);
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "llmesh_structured_output"})
    );
    assert_eq!(sent["tools"][0]["input_schema"], schema());
    assert_eq!(sent["system"], "be brief");

    // An invalid tool input ({} before its turn) is retried like text.
    let (s, h, b) = env.post("/v1/chat/completions", &chat("claude-json")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-schema-retries"], "2");
    assert_eq!(b["choices"][0]["message"]["content"], r#"{"n":6}"#);
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    let retry = last_sent(&env);
    let turns = retry["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 5, "{retry}");
    assert_eq!(turns[1], json!({"role": "assistant", "content": "{}"}));
    assert!(turns[4]["content"].as_str().unwrap().contains("\"n\""));

    // Streamed, the input's pieces are the content.
    let mut req = chat("claude-now");
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(openai_text(&text), r#"{"n":7}"#);
    assert!(text.contains(r#""finish_reason":"stop""#), "{text}");
    assert!(!text.contains("tool_calls"), "{text}");

    // A Responses client goes through the same pivot.
    let req = json!({"model": "claude-now", "input": "give me n",
        "text": {"format": {"type": "json_schema", "name": "n", "schema": schema()}}});
    let (s, _, b) = env.post("/v1/responses", &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["output"][0]["type"], "message");
    assert_eq!(b["output"][0]["content"][0]["text"], r#"{"n":7}"#);
    assert_eq!(b["status"], "completed");
}

#[tokio::test]
async fn a_route_schema_is_sent_with_requests_that_ask_for_none_and_enforced() {
    let env = env().await;
    let (s, _, b) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("json-enforced", "give me n"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], r#"{"n":8}"#);
    assert_eq!(
        last_sent(&env)["response_format"],
        json!({"type": "json_schema",
            "json_schema": {"name": "counted", "schema": schema(), "strict": true}})
    );

    // Never right: retried once, then refused.
    let before = env.mock.request_count();
    let (s, _, b) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("json-enforced-never", "give me n"),
        )
        .await;
    assert_eq!(s, 502, "{b}");
    assert_eq!(b["error"]["code"], "structured_output_invalid");
    assert_eq!(env.mock.request_count(), before + 2);
    assert_eq!(
        last_sent(&env)["response_format"]["json_schema"]["name"],
        "counted"
    );

    // A request with a schema of its own keeps it.
    let mut own = openai_chat("json-enforced", "give me n");
    own["response_format"] = json!({"type": "json_schema",
        "json_schema": {"name": "mine", "schema": {"type": "object"}}});
    let (s, _, b) = env.post("/v1/chat/completions", &own).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(last_sent(&env)["response_format"], own["response_format"]);

    // Responses and Anthropic clients get it in their API.
    let req = json!({"model": "json-enforced", "input": "give me n"});
    let (s, _, b) = env.post("/v1/responses", &req).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["output"][0]["content"][0]["text"], r#"{"n":8}"#);
    assert_eq!(
        last_sent(&env)["text"]["format"],
        json!({"type": "json_schema", "name": "counted", "schema": schema(), "strict": true})
    );
    let (s, _, b) = env
        .post(
            "/v1/messages",
            &anthropic_msg("claude-enforced", "give me n"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["content"][0]["text"], r#"{"n":10}"#);
    assert_eq!(
        last_sent(&env)["output_config"]["format"],
        json!({"type": "json_schema", "schema": schema()})
    );

    // An OpenAI client of the Anthropic route: the forced tool.
    let (s, _, b) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("claude-enforced", "give me n"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], r#"{"n":10}"#);
    assert_eq!(last_sent(&env)["tools"][0]["input_schema"], schema());

    // Streams get the schema too (and are not validated).
    let mut req = openai_chat("json-enforced-never", "give me n");
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200);
    assert!(text.contains("data: [DONE]"));
    assert_eq!(last_sent(&env)["response_format"]["type"], "json_schema");
}
