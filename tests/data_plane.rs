//! The proxy end to end over real sockets: both client APIs, streaming and
//! not, every translation pair, usage and cost checked against what the
//! mock provider reported.
#![allow(clippy::unwrap_used)]

use llmesh_mock::generated_text;
use llmesh_tests::*;
use serde_json::{json, Value};

const PROMPT: &str = "hello there friend";
/// The mock counts words: "be brief" + "hello there friend".
const IN: u64 = 5;
const OUT: u64 = 8;

fn openai_stream_text(text: &str) -> (String, Vec<Value>) {
    let mut content = String::new();
    let mut chunks = Vec::new();
    for d in sse_data(text) {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&d).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
        chunks.push(v);
    }
    (content, chunks)
}

#[tokio::test]
async fn openai_chat_is_forwarded_with_the_provider_key_and_accounted() {
    let env = Env::start().await;
    let (status, headers, body) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", PROMPT),
            &[
                ("authorization", "Bearer app-own-secret"),
                ("x-request-id", "req-abc-1"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-request-id"], "req-abc-1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["usage"]["prompt_tokens"], IN);
    assert_eq!(body["usage"]["completion_tokens"], OUT);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        generated_text(OUT as u32)
    );

    let reqs = env.mock.requests();
    assert_eq!(reqs.len(), 1);
    let up = &reqs[0];
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(
        up.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(
        up.headers
            .iter()
            .all(|(_, v)| !v.contains("app-own-secret")),
        "the app's key leaked upstream: {:?}",
        up.headers
    );
    assert_eq!(up.header("x-request-id"), Some("req-abc-1"));

    let m = env.metrics().await;
    let labels = [
        ("route", "openai"),
        ("provider", "oai"),
        ("model", "gpt-4o-mini"),
    ];
    let tok = |t: &str| {
        let mut l = labels.to_vec();
        l.push(("type", t));
        metric_value(&m, "llmesh_tokens_total", &l)
    };
    assert_eq!(tok("input"), Some(IN as f64));
    assert_eq!(tok("output"), Some(OUT as f64));
    let cost = metric_value(&m, "llmesh_cost_usd_total", &labels).unwrap();
    let want = IN as f64 * 1.0e-6 + OUT as f64 * 2.0e-6;
    assert!((cost - want).abs() < 1e-12, "cost {cost} want {want}");
    let mut l = labels.to_vec();
    l.push(("code", "200"));
    assert_eq!(metric_value(&m, "llmesh_requests_total", &l), Some(1.0));
    // Every series carries the pod identity.
    assert!(m.contains("namespace=\"test-ns\""), "{m}");
    assert!(m.contains("pod=\"test-app-0\""));
    assert!(m.contains("workload=\"test-app\""));
    assert!(m.contains("gen_ai_client_operation_duration_seconds_count{"));
    assert!(metric_value(
        &m,
        "gen_ai_client_token_usage_sum",
        &[
            ("gen_ai_token_type", "input"),
            ("gen_ai_provider_name", "openai")
        ]
    )
    .is_some());
}

#[tokio::test]
async fn a_fresh_request_id_is_returned_when_the_client_sends_none() {
    let env = Env::start().await;
    let (status, headers, _) = env
        .post("/v1/chat/completions", &openai_chat("gpt-4o-mini", PROMPT))
        .await;
    assert_eq!(status, 200);
    let id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32, "{id}");
    let up = &env.mock.requests()[0];
    assert_eq!(up.header("x-request-id"), Some(id));
}

#[tokio::test]
async fn openai_stream_hides_the_usage_chunk_it_asked_for() {
    let env = Env::start().await;
    let mut req = openai_chat("gpt-4o-mini", PROMPT);
    req["stream"] = json!(true);
    let (status, headers, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let (content, chunks) = openai_stream_text(&text);
    assert_eq!(content, generated_text(OUT as u32));
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "usage chunk leaked to a client that did not ask: {text}"
    );
    // ...but the proxy asked upstream, and accounted it.
    let up = &env.mock.requests()[0];
    assert_eq!(up.body["stream_options"]["include_usage"], true);
    let m = env.wait_metric("llmesh_tokens_total{").await;
    let v = metric_value(
        &m,
        "llmesh_tokens_total",
        &[("route", "openai"), ("type", "output")],
    );
    assert_eq!(v, Some(OUT as f64));
    assert!(m.contains("gen_ai_client_operation_time_to_first_chunk_seconds_count{"));
}

#[tokio::test]
async fn openai_stream_keeps_the_usage_chunk_when_asked() {
    let env = Env::start().await;
    let mut req = openai_chat("gpt-4o-mini", PROMPT);
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (status, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(status, 200);
    let (_, chunks) = openai_stream_text(&text);
    let usage = chunks
        .iter()
        .rev()
        .find_map(|c| c.get("usage").filter(|u| !u.is_null()))
        .unwrap();
    assert_eq!(usage["prompt_tokens"], IN);
    assert_eq!(usage["completion_tokens"], OUT);
}

#[tokio::test]
async fn anthropic_messages_pass_through_with_the_anthropic_key() {
    let env = Env::start().await;
    let (status, _, body) = env
        .post_with(
            "/v1/messages",
            &anthropic_msg("claude-sonnet-4-5", PROMPT),
            &[
                ("x-api-key", "app-own-secret"),
                ("anthropic-version", "2023-06-01"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "message");
    assert_eq!(body["usage"]["input_tokens"], IN);
    assert_eq!(body["usage"]["output_tokens"], OUT);
    let up = &env.mock.requests()[0];
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.header("x-api-key"), Some(KEY));
    assert!(up.header("anthropic-version").is_some());

    let mut req = anthropic_msg("claude-sonnet-4-5", PROMPT);
    req["stream"] = json!(true);
    let (status, _, text) = env.post_stream("/v1/messages", &req, &[]).await;
    assert_eq!(status, 200);
    let events = sse_events(&text);
    assert_eq!(events.first().map(String::as_str), Some("message_start"));
    assert_eq!(events.last().map(String::as_str), Some("message_stop"));
    let m = env.wait_metric("route=\"claude\"").await;
    let out = metric_value(
        &m,
        "llmesh_tokens_total",
        &[("route", "claude"), ("type", "output")],
    );
    assert_eq!(out, Some(2.0 * OUT as f64));
}

/// Anthropic prompt caching through the sidecar: the app's `cache_control`
/// breakpoints reach the provider as sent (a data policy redacting the same
/// blocks included), and the cache writes and reads the provider reports
/// are priced apart and shown in the metrics.
#[tokio::test]
async fn anthropic_prompt_caching_passes_through_and_is_priced_apart() {
    let env = Env::start_with(|mock| {
        default_policy(mock).replace(
            "pricing: {input: 3.0, output: 15.0}",
            "pricing: {input: 3.0, output: 15.0, cachedInput: 0.3, cacheWrite: 3.75}",
        ) + "---\napiVersion: llmesh.io/v1alpha1\nkind: LLMDataPolicy\nmetadata: {name: pii}\nspec:\n  rules: [{class: email, action: redact}]\n"
    })
    .await;
    let system = json!([{"type": "text", "text": "you answer for the shop from its long catalogue",
        "cache_control": {"type": "ephemeral", "ttl": "1h"}}]);
    let req = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": system,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "where is my order?", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "reply to jane.doe@example.com"}
        ]}]
    });
    // The mock counts 16 words: 4 read from the cache, 6 written to it.
    let (read, write, plain) = (4u64, 6u64, 6u64);
    let cache = [
        ("x-mock-cached-tokens", "4"),
        ("x-mock-cache-write-tokens", "6"),
    ];
    let (status, _, body) = env.post_with("/v1/messages", &req, &cache).await;
    assert_eq!(status, 200, "{body}");
    let u = &body["usage"];
    assert_eq!(u["input_tokens"], plain, "{u}");
    assert_eq!(u["cache_read_input_tokens"], read, "{u}");
    assert_eq!(u["cache_creation_input_tokens"], write, "{u}");

    let up = &env.mock.requests()[0].body;
    assert_eq!(up["system"], system, "{up}");
    let blocks = &up["messages"][0]["content"];
    assert_eq!(blocks[0], req["messages"][0]["content"][0], "{up}");
    assert_eq!(blocks[1]["text"], "reply to [EMAIL_1]", "redacted: {up}");

    let m = env
        .wait_metric("llmesh_provider_cache_saved_usd_total{")
        .await;
    let labels = [
        ("route", "claude"),
        ("provider", "ant"),
        ("model", "claude-sonnet-4-5"),
    ];
    let cost = metric_value(&m, "llmesh_cost_usd_total", &labels).unwrap();
    let want = plain as f64 * 3.0e-6
        + read as f64 * 0.3e-6
        + write as f64 * 3.75e-6
        + OUT as f64 * 15.0e-6;
    assert_eq!(cost, want, "cost");
    let saved = metric_value(&m, "llmesh_provider_cache_saved_usd_total", &labels).unwrap();
    assert_eq!(saved, read as f64 * (3.0e-6 - 0.3e-6), "saved");
    let tok = |t: &str| {
        let mut l = labels.to_vec();
        l.push(("type", t));
        metric_value(&m, "llmesh_tokens_total", &l)
    };
    assert_eq!(tok("input"), Some((plain + read + write) as f64));
    assert_eq!(tok("cached_input"), Some(read as f64));
    assert_eq!(tok("cache_write"), Some(write as f64));
    let hist = |t: &str| {
        metric_value(
            &m,
            "gen_ai_client_token_usage_sum",
            &[("route", "claude"), ("gen_ai_token_type", t)],
        )
    };
    assert_eq!(hist("cache_write"), Some(write as f64));
    assert_eq!(hist("cached_input"), Some(read as f64));

    // OpenAI caches on its own and reports reads only: no cache_write
    // observation, and its reads saved input - cachedInput each.
    let (status, _, body) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", PROMPT),
            &[("x-mock-cached-tokens", "2")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let m = env.wait_metric("route=\"openai\"").await;
    let oai = [("route", "openai"), ("gen_ai_token_type", "cache_write")];
    assert_eq!(
        metric_value(&m, "gen_ai_client_token_usage_count", &oai),
        None
    );
    let saved = metric_value(
        &m,
        "llmesh_provider_cache_saved_usd_total",
        &[("route", "openai")],
    );
    assert_eq!(saved, Some(2.0 * (1.0e-6 - 0.5e-6)));

    // Streamed: the client's message_start carries the write count, and the
    // accounting adds the same tokens again.
    let mut req = req;
    req["stream"] = json!(true);
    let (status, _, text) = env.post_stream("/v1/messages", &req, &cache).await;
    assert_eq!(status, 200, "{text}");
    let start: Value = serde_json::from_str(&sse_data(&text)[0]).unwrap();
    assert_eq!(
        start["message"]["usage"]["cache_creation_input_tokens"], write,
        "{text}"
    );
    let last = env.mock.requests().pop().unwrap();
    assert_eq!(last.body["system"], system);
    // A stream is accounted just after its body ends.
    for _ in 0..750 {
        let m = env.metrics().await;
        let mut l = labels.to_vec();
        l.push(("type", "cache_write"));
        if metric_value(&m, "llmesh_tokens_total", &l) == Some(2.0 * write as f64) {
            let saved = metric_value(&m, "llmesh_provider_cache_saved_usd_total", &labels).unwrap();
            let want = 2.0 * read as f64 * (3.0e-6 - 0.3e-6);
            assert!((saved - want).abs() < 1e-15, "saved {saved} want {want}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "the stream's cache writes were not accounted:\n{}",
        env.metrics().await
    );
}

#[tokio::test]
async fn openai_client_to_anthropic_upstream() {
    let env = Env::start().await;
    let (status, _, body) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("gpt-as-claude", PROMPT),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        generated_text(OUT as u32)
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], IN);
    assert_eq!(body["usage"]["completion_tokens"], OUT);
    let up = &env.mock.requests()[0];
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.body["model"], "claude-sonnet-4-5");
    assert!(
        up.body["max_tokens"].as_u64().is_some(),
        "Anthropic needs max_tokens"
    );
    assert_eq!(up.header("x-api-key"), Some(KEY));

    // Streamed, with a tool call.
    let mut req = openai_chat("gpt-as-claude", PROMPT);
    req["stream"] = json!(true);
    req["tools"] = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let (status, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(status, 200, "{text}");
    let (_, chunks) = openai_stream_text(&text);
    let mut name = String::new();
    let mut args = String::new();
    let mut finish = None;
    for c in &chunks {
        if let Some(calls) = c["choices"][0]["delta"]["tool_calls"].as_array() {
            for call in calls {
                name.push_str(call["function"]["name"].as_str().unwrap_or(""));
                args.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn openai_client_tool_call_non_streaming_through_anthropic() {
    let env = Env::start().await;
    let mut req = openai_chat("gpt-as-claude", PROMPT);
    req["tools"] = json!([{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {}}}}]);
    let (status, _, body) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(status, 200, "{body}");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let up = &env.mock.requests()[0];
    assert_eq!(up.body["tools"][0]["name"], "lookup");
}

#[tokio::test]
async fn anthropic_client_to_openai_upstream() {
    let env = Env::start().await;
    let (status, _, body) = env
        .post("/v1/messages", &anthropic_msg("claude-as-gpt", PROMPT))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(body["content"][0]["text"], generated_text(OUT as u32));
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], IN);
    assert_eq!(body["usage"]["output_tokens"], OUT);
    let up = &env.mock.requests()[0];
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.body["messages"][0]["role"], "system");
    assert_eq!(
        up.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    let mut req = anthropic_msg("claude-as-gpt", PROMPT);
    req["stream"] = json!(true);
    let (status, _, text) = env.post_stream("/v1/messages", &req, &[]).await;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    assert_eq!(events.first().map(String::as_str), Some("message_start"));
    assert!(events.contains(&"content_block_delta".to_string()));
    assert_eq!(events.last().map(String::as_str), Some("message_stop"));
    let mut content = String::new();
    for d in sse_data(&text) {
        let v: Value = serde_json::from_str(&d).unwrap();
        if let Some(t) = v["delta"]["text"].as_str() {
            content.push_str(t);
        }
    }
    assert_eq!(content, generated_text(OUT as u32));
}

#[tokio::test]
async fn openai_client_to_gemini_upstream() {
    let env = Env::start().await;
    let mut req = openai_chat("gpt-as-gemini", PROMPT);
    req["response_format"] = json!({"type": "json_object"});
    let (status, _, body) = env.post("/v1/chat/completions", &req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        generated_text(OUT as u32)
    );
    assert_eq!(body["usage"]["prompt_tokens"], IN);
    let up = &env.mock.requests()[0];
    assert_eq!(up.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(up.header("x-goog-api-key"), Some(KEY));
    assert_eq!(
        up.body["generationConfig"]["responseMimeType"],
        "application/json"
    );

    let mut req = openai_chat("gpt-as-gemini", PROMPT);
    req["stream"] = json!(true);
    let (status, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(status, 200, "{text}");
    let (content, _) = openai_stream_text(&text);
    assert_eq!(content, generated_text(OUT as u32));
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));
    let up = &env.mock.requests()[1];
    assert_eq!(
        up.path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
    let m = env.wait_metric("route=\"gpt-via-gemini\"").await;
    let out = metric_value(
        &m,
        "llmesh_tokens_total",
        &[("route", "gpt-via-gemini"), ("type", "output")],
    );
    assert_eq!(out, Some(2.0 * OUT as f64), "{m}");
}

/// A model neither the policy nor the built-in catalog prices is served,
/// costs 0, and is counted as unpriced so the dashboard shows the gap; one
/// the catalog knows is priced from it.
#[tokio::test]
async fn a_model_without_a_price_is_served_and_counted_as_unpriced() {
    let env = Env::start_with(|mock| {
        default_policy(mock)
            + "---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: local}
spec:
  models: [local-llama]
  backends: [{provider: oai}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: catalogued}
spec:
  models: [gpt-4o]
  backends: [{provider: oai}]
"
    })
    .await;
    // gpt-4o is not in the policy but in the built-in catalog: priced.
    let (s, _, _) = env
        .post("/v1/chat/completions", &openai_chat("gpt-4o", "hi there"))
        .await;
    assert_eq!(s, 200);
    for _ in 0..2 {
        let (s, _, b) = env
            .post(
                "/v1/chat/completions",
                &openai_chat("local-llama", "hi there"),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, _, _) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", "hi there"),
        )
        .await;
    assert_eq!(s, 200);
    let m = env.wait_metric("llmesh_unpriced_requests_total{").await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_unpriced_requests_total",
            &[
                ("route", "local"),
                ("provider", "oai"),
                ("model", "local-llama")
            ]
        ),
        Some(2.0),
        "{m}"
    );
    // A priced model is not counted; the unpriced one costs nothing.
    assert_eq!(
        metric_sum(&m, "llmesh_unpriced_requests_total", &[("route", "openai")]),
        0.0
    );
    assert_eq!(
        metric_sum(&m, "llmesh_cost_usd_total", &[("route", "local")]),
        0.0
    );
    assert!(metric_sum(&m, "llmesh_cost_usd_total", &[("route", "openai")]) > 0.0);
    assert!(metric_sum(&m, "llmesh_cost_usd_total", &[("route", "catalogued")]) > 0.0);
    assert_eq!(
        metric_sum(
            &m,
            "llmesh_unpriced_requests_total",
            &[("route", "catalogued")]
        ),
        0.0
    );
}

/// The model version each backend answers with is tracked: an info series
/// of the current one, and a counted change when the provider moves the
/// name to another version.
#[tokio::test]
async fn a_backend_answering_with_a_new_model_version_is_counted_as_a_change() {
    let env = Env::start().await;
    let answer_as = |v: &str| {
        env.mock.set_model_behavior(
            "gpt-4o-mini",
            serde_json::from_value(json!({"response_model": v})).unwrap(),
        )
    };
    let req = openai_chat("gpt-4o-mini", "hi");
    let ask = || env.post("/v1/chat/completions", &req);
    answer_as("gpt-4o-mini-2024-07-18");
    for _ in 0..3 {
        let (s, _, b) = ask().await;
        assert_eq!(s, 200);
        assert_eq!(b["model"], "gpt-4o-mini-2024-07-18");
    }
    let version = |m: &str, v: &str| {
        metric_value(
            m,
            "llmesh_backend_model_version_info",
            &[("route", "openai"), ("provider", "oai"), ("version", v)],
        )
    };
    let changes = |m: &str| {
        metric_sum(
            m,
            "llmesh_backend_model_version_changes_total",
            &[("route", "openai"), ("provider", "oai")],
        )
    };
    let m = env.wait_metric("llmesh_backend_model_version_info{").await;
    assert_eq!(version(&m, "gpt-4o-mini-2024-07-18"), Some(1.0), "{m}");
    assert_eq!(changes(&m), 0.0, "the first version is not a change");

    // The provider updates the alias: one change, the new version only.
    answer_as("gpt-4o-mini-2025-03-01");
    for _ in 0..3 {
        let (s, _, _) = ask().await;
        assert_eq!(s, 200);
    }
    let m = env.wait_metric("version=\"gpt-4o-mini-2025-03-01\"").await;
    assert_eq!(version(&m, "gpt-4o-mini-2025-03-01"), Some(1.0), "{m}");
    assert_eq!(version(&m, "gpt-4o-mini-2024-07-18"), None, "{m}");
    assert_eq!(changes(&m), 1.0, "{m}");
}

#[tokio::test]
async fn embeddings_are_forwarded_and_priced() {
    let env = Env::start().await;
    let req = json!({"model": "text-embedding-3-small", "input": ["one two three", "four"]});
    let (status, _, body) = env.post("/v1/embeddings", &req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > 0);
    let m = env.metrics().await;
    let cost = metric_value(
        &m,
        "llmesh_cost_usd_total",
        &[("model", "text-embedding-3-small")],
    )
    .unwrap();
    assert!((cost - tokens as f64 * 0.5e-6).abs() < 1e-12, "{cost}");
    assert!(m.contains("gen_ai_operation_name=\"embeddings\""));
}

#[tokio::test]
async fn models_lists_what_the_routes_expose_in_both_formats() {
    let env = Env::start().await;
    let (status, _, body) = env.http.get(&env.url("/v1/models")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"gpt-4o-mini") && ids.contains(&"claude-sonnet-4-5"),
        "{ids:?}"
    );
    assert_eq!(v["object"], "list");

    let (_, _, body) = env
        .http
        .send(
            http::Method::GET,
            &env.url("/v1/models"),
            bytes::Bytes::new(),
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
}

#[tokio::test]
async fn config_dump_shows_the_policy_but_never_the_key() {
    let env = Env::start().await;
    let url = format!("http://{}/config_dump", env.proxy.admin_addr());
    let (status, headers, body) = env.http.get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/yaml");
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("gpt-4o-mini"), "{text}");
    assert!(text.contains("file:key.txt"), "{text}");
    assert!(!text.contains(KEY), "secret in config_dump:\n{text}");
}

#[tokio::test]
async fn health_and_readiness() {
    let env = Env::start().await;
    for path in ["/healthz", "/readyz"] {
        let url = format!("http://{}{path}", env.proxy.metrics_addr());
        let (status, _, _) = env.http.get(&url).await;
        assert_eq!(status, 200, "{path}");
    }
    let url = format!("http://{}/config_dump", env.proxy.metrics_addr());
    let (status, _, _) = env.http.get(&url).await;
    assert_eq!(
        status, 404,
        "config_dump must not be on the pod-network port"
    );
}

#[tokio::test]
async fn missing_upstream_usage_is_estimated_with_the_tokenizer() {
    let env = Env::start().await;
    let (status, _, body) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", PROMPT),
            &[("x-mock-omit-usage", "true")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["usage"].is_null());
    // The estimate lands in llmesh_tokens_total last (gen_ai_token_type
    // "output" of the OTel histogram can come first): wait for it there.
    let mut m = String::new();
    for _ in 0..750 {
        m = env.metrics().await;
        let counted = |type_: &str| {
            metric_value(
                &m,
                "llmesh_tokens_total",
                &[("route", "openai"), ("type", type_)],
            )
            .is_some()
        };
        if counted("input") && counted("output") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let input = metric_value(
        &m,
        "llmesh_tokens_total",
        &[("route", "openai"), ("type", "input")],
    )
    .unwrap();
    let output = metric_value(
        &m,
        "llmesh_tokens_total",
        &[("route", "openai"), ("type", "output")],
    )
    .unwrap();
    // "be brief" + "hello there friend" and eight generated words, in o200k tokens.
    assert!((4.0..=12.0).contains(&input), "input estimate {input}");
    assert!((8.0..=24.0).contains(&output), "output estimate {output}");
    assert!(metric_value(&m, "llmesh_cost_usd_total", &[("route", "openai")]).unwrap() > 0.0);

    // Streamed with no usage chunk: output is counted from the content chunks.
    let mut req = openai_chat("gpt-4o-mini", PROMPT);
    req["stream"] = json!(true);
    let (status, _, text) = env
        .post_stream(
            "/v1/chat/completions",
            &req,
            &[("x-mock-omit-usage", "true")],
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let want = output + OUT as f64;
    for _ in 0..750 {
        let m = env.metrics().await;
        if metric_value(
            &m,
            "llmesh_tokens_total",
            &[("route", "openai"), ("type", "output")],
        ) == Some(want)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "streamed output was not estimated as {want}:\n{}",
        env.metrics().await
    );
}
