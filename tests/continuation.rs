//! Mid-stream continuation (`streamContinuation`): a stream that breaks
//! after the client got part of the answer is resumed on another backend
//! with the partial answer as a prefill, and the client reads one answer.
#![allow(clippy::unwrap_used)]

use llmesh_mock::{generated_text, Behavior};
use llmesh_tests::*;
use serde_json::{json, Value};

fn policy(mock: &str) -> String {
    let mut out = format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: claude}}
spec: {{schema: anthropic, baseUrl: {mock}/v1, credential: {{file: key.txt}}, models: [{{name: steady, pricing: {{input: 3, output: 15}}}}, {{name: breaks, pricing: {{input: 3, output: 15}}}}]}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: ds}}
spec: {{schema: openai-compatible, providerName: deepseek, baseUrl: {mock}/v1, credential: {{file: key.txt}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: oai}}
spec: {{schema: openai, baseUrl: {mock}/v1, credential: {{file: key.txt}}}}
"
    );
    let routes = [
        ("cont", "backends: [{provider: claude, model: breaks}, {provider: claude, model: steady, priority: 1}]\n  streamContinuation: {}"),
        ("cont-ds", "backends: [{provider: ds, model: breaks-ds}, {provider: ds, model: steady-ds, priority: 1}]\n  streamContinuation: {maxContinuations: 2}"),
        ("no-cont", "backends: [{provider: claude, model: breaks}, {provider: claude, model: steady, priority: 1}]"),
        ("cont-oai", "backends: [{provider: claude, model: breaks}, {provider: oai, model: plain, priority: 1}]\n  streamContinuation: {}"),
        ("cont-both-break", "backends: [{provider: claude, model: breaks}, {provider: claude, model: breaks-too, priority: 1}]\n  streamContinuation: {}"),
    ];
    for (name, body) in routes {
        out.push_str(&format!(
            "---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: {name}}}\nspec:\n  models: [{name}]\n  {body}\n  timeouts: {{firstByte: 3s, idle: 3s, total: 20s}}\n"
        ));
    }
    out
}

async fn env() -> Env {
    let env = Env::start_with(policy).await;
    let b = |v: Value| -> Behavior { serde_json::from_value(v).unwrap() };
    // Anthropic events: message_start, content_block_start, ping, then one
    // delta per word; five events = two words reach the client.
    env.mock
        .set_model_behavior("breaks", b(json!({"reset_after_chunks": 5})));
    env.mock
        .set_model_behavior("breaks-too", b(json!({"reset_after_chunks": 4})));
    // OpenAI events: the role chunk, then one per word: three words.
    env.mock
        .set_model_behavior("breaks-ds", b(json!({"reset_after_chunks": 4})));
    env
}

#[tokio::test]
async fn an_openai_client_reads_one_answer_when_the_stream_is_continued() {
    let env = env().await;
    let mut req = openai_chat("cont", "tell me a story");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (s, h, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(h["x-llmesh-model"], "breaks");
    assert!(!text.contains("error"), "{text}");
    // Two words from the broken stream, eight more from the continuation,
    // which picks up where the prefill left off.
    assert_eq!(openai_text(&text), generated_text(10), "{text}");
    let data = sse_data(&text);
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1, "{text}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let roles = data.iter().filter(|d| d.contains("\"role\"")).count();
    assert_eq!(roles, 1, "one opening chunk: {text}");

    // The continuation went to the other backend with the partial answer as
    // an assistant prefill.
    let reqs = env.mock.requests();
    let last = &reqs.last().unwrap().body;
    assert_eq!(last["model"], "steady");
    let msgs = last["messages"].as_array().unwrap();
    assert_eq!(msgs.last().unwrap()["role"], "assistant");
    assert_eq!(msgs.last().unwrap()["content"], generated_text(2));

    let m = env.wait_metric("llmesh_stream_continuations_total{").await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_stream_continuations_total",
            &[("route", "cont"), ("provider", "claude"), ("result", "ok")]
        ),
        Some(1.0)
    );
    // One request, answered; the broken attempt is billed on its own.
    let m = env
        .wait_metric("model=\"breaks\",provider=\"claude\",route=\"cont\",type=\"output\"")
        .await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_requests_total",
            &[("route", "cont"), ("model", "steady"), ("code", "200")]
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "llmesh_tokens_total",
            &[("model", "breaks"), ("type", "output")]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_anthropic_client_gets_one_message_with_one_text_block() {
    let env = env().await;
    let mut req = anthropic_msg("cont", "tell me a story");
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/messages", &req, &[]).await;
    assert_eq!(s, 200, "{text}");
    let events = sse_events(&text);
    let count = |name: &str| events.iter().filter(|e| *e == name).count();
    assert_eq!(count("message_start"), 1, "{text}");
    assert_eq!(count("content_block_start"), 1, "{text}");
    assert_eq!(count("content_block_stop"), 1, "{text}");
    assert_eq!(count("message_stop"), 1, "{text}");
    assert_eq!(count("error"), 0, "{text}");
    assert_eq!(anthropic_text(&text), generated_text(10), "{text}");
}

#[tokio::test]
async fn an_openai_compatible_deepseek_backend_gets_the_prefix_flag() {
    let env = env().await;
    let mut req = openai_chat("cont-ds", "tell me a story");
    req["stream"] = json!(true);
    req["max_tokens"] = json!(50);
    let (s, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(openai_text(&text), generated_text(11), "{text}");
    let reqs = env.mock.requests();
    let last = &reqs.last().unwrap().body;
    assert_eq!(last["model"], "steady-ds");
    let prefill = last["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(prefill["prefix"], true, "{last}");
    assert_eq!(prefill["content"], generated_text(3));
    // The output cap shrinks by what was already produced.
    assert_eq!(last["max_tokens"], 47, "{last}");
}

#[tokio::test]
async fn without_the_option_a_broken_stream_ends_with_an_error_event() {
    let env = env().await;
    let mut req = openai_chat("no-cont", "tell me a story");
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200);
    assert!(text.contains("upstream_stream_broken"), "{text}");
    assert_eq!(openai_text(&text), generated_text(2));
    // Nothing was resent after the client had bytes.
    assert_eq!(env.mock.requests().len(), 1);
}

#[tokio::test]
async fn a_backend_that_cannot_prefill_is_never_used_to_continue() {
    let env = env().await;
    let mut req = openai_chat("cont-oai", "tell me a story");
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200);
    assert!(text.contains("upstream_stream_broken"), "{text}");
    assert_eq!(env.mock.requests().len(), 1);
}

#[tokio::test]
async fn a_continuation_that_breaks_too_ends_with_the_error_event() {
    let env = env().await;
    let mut req = anthropic_msg("cont-both-break", "tell me a story");
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/messages", &req, &[]).await;
    assert_eq!(s, 200);
    let events = sse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("error"), "{text}");
    assert_eq!(
        events.iter().filter(|e| *e == "message_start").count(),
        1,
        "{text}"
    );
    // maxContinuations defaults to 1: two upstream calls, no more.
    assert_eq!(env.mock.requests().len(), 2);
    // Two words, then one more from the continuation before it broke.
    assert_eq!(anthropic_text(&text), generated_text(3), "{text}");
}
