//! The cloud providers' URL shapes: Azure OpenAI, Bedrock runtime and
//! Vertex AI, answered with the mock's usual text and tokens, errors
//! included. Bedrock answers are read back through llmesh-wire, as the proxy
//! reads them.

// Test helpers outside #[test] fns are not covered by clippy's
// allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use llmesh_mock::{generated_text, Behavior, MockConfig, MockServer};
use llmesh_wire::{
    bedrock_anthropic_body, bedrock_error_type, translate_bedrock_error, translate_request,
    translate_response, vertex_anthropic_body, BedrockInvokeStream, Dialect, StreamOptions,
    StreamTranslator,
};
use serde_json::{json, Value};
use support::*;

const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const CLAUDE_IN_URL: &str = "anthropic.claude-3-5-sonnet-20240620-v1%3A0";

async fn start_with_key() -> MockServer {
    MockServer::start(MockConfig {
        api_key: Some("k".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn chat_without_model(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

// ---- Azure OpenAI ----

#[tokio::test]
async fn azure_deployment_chat_answers_as_the_deployment() {
    bounded(async {
        let m = start_with_key().await;
        let url = format!(
            "{}/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
            m.url()
        );
        let body = chat_without_model("hello there big world");
        for auth in [("api-key", "k"), ("authorization", "Bearer entra-token")] {
            let r = post(&url, &[auth], &body).await;
            assert_eq!(r.status, 200, "{auth:?}: {}", r.text());
            let v = r.json();
            assert_eq!(v["model"], "prod-gpt4o");
            assert_eq!(v["choices"][0]["message"]["content"], generated_text(8));
            assert_eq!(v["usage"]["prompt_tokens"], 4);
        }
        for bad in [
            vec![("api-key", "wrong")],
            vec![("authorization", "Bearer ")],
            vec![],
        ] {
            let r = post(&url, &bad, &body).await;
            assert_eq!(r.status, 401, "{bad:?}");
        }
        // The recorded body is what was sent: no model.
        assert!(m.requests()[0].body.get("model").is_none());
        // response_model wins over the deployment name.
        let r = post(
            &url,
            &[
                ("api-key", "k"),
                (
                    "x-mock-behavior",
                    r#"{"response_model":"gpt-4o-2024-11-20"}"#,
                ),
            ],
            &body,
        )
        .await;
        assert_eq!(r.json()["model"], "gpt-4o-2024-11-20");
    })
    .await;
}

#[tokio::test]
async fn azure_deployment_needs_an_api_version() {
    bounded(async {
        let m = start().await;
        for api in ["chat/completions", "embeddings"] {
            let r = post(
                &format!("{}/openai/deployments/d/{api}", m.url()),
                &[],
                &chat_without_model("hi"),
            )
            .await;
            assert_eq!(r.status, 400);
            let v = r.json();
            assert_eq!(v["error"]["code"], "MissingApiVersionParameter");
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("api-version"));
        }
        // The v1 surface does not need one.
        let r = post(
            &format!("{}/openai/v1/chat/completions", m.url()),
            &[],
            &openai_chat("gpt-4o-mini", "hi"),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["model"], "gpt-4o-mini");
    })
    .await;
}

#[tokio::test]
async fn azure_embeddings_responses_and_streams() {
    bounded(async {
        let m = start().await;
        let r = post(
            &format!(
                "{}/openai/deployments/emb/embeddings?api-version=2024-10-21",
                m.url()
            ),
            &[],
            &json!({"input": ["one two", "three"]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["model"], "emb");
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        let r = post(
            &format!("{}/openai/v1/embeddings", m.url()),
            &[],
            &json!({"model": "text-embedding-3-small", "input": "x"}),
        )
        .await;
        assert_eq!(r.status, 200);
        let r = post(
            &format!("{}/openai/v1/responses", m.url()),
            &[],
            &json!({"model": "gpt-5", "input": "hi there"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["object"], "response");
        let mut body = chat_without_model("a b c");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let r = post(
            &format!(
                "{}/openai/deployments/dep/chat/completions?api-version=2025-01-01-preview",
                m.url()
            ),
            &[("x-mock-output-tokens", "3")],
            &body,
        )
        .await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let chunks = sse_json(r.text());
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, generated_text(3));
        assert_eq!(chunks[0]["model"], "dep");
        assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 3);
        // No Responses API under a deployment path.
        let r = post(
            &format!("{}/openai/deployments/dep/responses?api-version=x", m.url()),
            &[],
            &json!({}),
        )
        .await;
        assert_eq!(r.status, 404);
    })
    .await;
}

#[tokio::test]
async fn azure_content_filter_and_unknown_deployment() {
    bounded(async {
        let m = start().await;
        let url = format!(
            "{}/openai/deployments/d/chat/completions?api-version=2024-10-21",
            m.url()
        );
        let r = post(
            &url,
            &[("x-mock-prompt-filtered", "true")],
            &chat_without_model("hi"),
        )
        .await;
        assert_eq!(r.status, 400);
        let e = &r.json()["error"];
        assert_eq!(e["code"], "content_filter");
        assert_eq!(e["innererror"]["code"], "ResponsibleAIPolicyViolation");
        assert!(e["message"]
            .as_str()
            .unwrap()
            .starts_with("The response was filtered due to the prompt triggering Azure OpenAI's content management policy"));
        m.set_model_behavior(
            "gone",
            Behavior {
                model_not_found: Some(true),
                ..Behavior::default()
            },
        );
        let r = post(
            &format!(
                "{}/openai/deployments/gone/chat/completions?api-version=2024-10-21",
                m.url()
            ),
            &[],
            &chat_without_model("hi"),
        )
        .await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"]["code"], "DeploymentNotFound");
    })
    .await;
}

// ---- Bedrock ----

fn converse_url(m: &MockServer, model: &str, op: &str) -> String {
    format!("{}/model/{model}/{op}", m.url())
}

/// The proxy's view: an OpenAI request translated for Bedrock.
fn converse_body(text: &str, tools: bool) -> Value {
    let mut chat = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": text}]});
    if tools {
        chat["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    }
    translate_request(Dialect::OpenAi, Dialect::Bedrock, chat, CLAUDE).unwrap()
}

#[tokio::test]
async fn bedrock_converse_text_and_tools() {
    bounded(async {
        let m = start_with_key().await;
        // Per-model rules see the decoded id; no key is checked (SigV4 is
        // a front's business).
        m.set_model_behavior(
            CLAUDE,
            Behavior {
                output_tokens: Some(5),
                cached_tokens: Some(1),
                cache_write_tokens: Some(2),
                ..Behavior::default()
            },
        );
        let r = post(
            &converse_url(&m, CLAUDE_IN_URL, "converse"),
            &[],
            &converse_body("one two three four", false),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["stopReason"], "end_turn");
        assert_eq!(
            v["output"]["message"]["content"][0]["text"],
            generated_text(5)
        );
        assert_eq!(
            v["usage"],
            json!({"inputTokens": 3, "outputTokens": 5, "totalTokens": 11,
                "cacheReadInputTokens": 1, "cacheWriteInputTokens": 2})
        );
        let (chat, usage) = translate_response(Dialect::OpenAi, Dialect::Bedrock, v).unwrap();
        assert_eq!(chat["choices"][0]["message"]["content"], generated_text(5));
        let u = usage.unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_write_input_tokens
            ),
            (6, 1, 2)
        );

        let r = post(
            &converse_url(&m, "amazon.nova-pro-v1%3A0", "converse"),
            &[],
            &converse_body("weather?", true),
        )
        .await;
        let v = r.json();
        assert_eq!(v["stopReason"], "tool_use");
        let tool = &v["output"]["message"]["content"][0]["toolUse"];
        assert_eq!(tool["name"], "get_weather");
        assert_eq!(tool["input"], json!({"city": "Paris"}));
        let (chat, _) = translate_response(Dialect::Anthropic, Dialect::Bedrock, v).unwrap();
        assert_eq!(chat["stop_reason"], "tool_use");
        assert_eq!(chat["content"][0]["input"], json!({"city": "Paris"}));
    })
    .await;
}

/// Feed a Bedrock stream to the translator in small pieces, as the proxy
/// reads it from the socket.
fn translate_stream(client: Dialect, bytes: &[u8]) -> (String, StreamTranslator) {
    let mut t = StreamTranslator::new(
        client,
        Dialect::Bedrock,
        StreamOptions {
            include_usage: true,
        },
    );
    let mut out = Vec::new();
    for piece in bytes.chunks(5) {
        t.push(piece, &mut out).unwrap();
    }
    t.finish(&mut out);
    (String::from_utf8(out).unwrap(), t)
}

#[tokio::test]
async fn bedrock_converse_stream_is_an_event_stream() {
    bounded(async {
        let m = start().await;
        let r = post(
            &converse_url(&m, CLAUDE_IN_URL, "converse-stream"),
            &[("x-mock-output-tokens", "4")],
            &converse_body("one two three", false),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.amazon.eventstream")
        );
        let (out, t) = translate_stream(Dialect::OpenAi, &r.body);
        let text: String = sse_json(&out)
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, generated_text(4));
        assert!(t.completed());
        // "be brief" and "one two three".
        assert_eq!(
            t.usage().map(|u| (u.input_tokens, u.output_tokens)),
            Some((5, 4))
        );

        let r = post(
            &converse_url(&m, CLAUDE_IN_URL, "converse-stream"),
            &[],
            &converse_body("weather?", true),
        )
        .await;
        let (out, t) = translate_stream(Dialect::Anthropic, &r.body);
        let events = sse_json(&out);
        let args: String = events
            .iter()
            .filter_map(|e| e["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(args, r#"{"city":"Paris"}"#);
        assert!(out.contains(r#""stop_reason":"tool_use""#));
        assert!(t.completed());
    })
    .await;
}

#[tokio::test]
async fn bedrock_errors_carry_their_type_in_a_header() {
    bounded(async {
        let m = start().await;
        let r = post(
            &converse_url(&m, "missing.model-v1%3A0", "converse"),
            &[],
            &converse_body("hi", false),
        )
        .await;
        assert_eq!(r.status, 404);
        let ty = r.header("x-amzn-errortype").unwrap();
        assert!(ty.starts_with("ResourceNotFoundException:"), "{ty}");
        assert_eq!(
            r.json(),
            json!({"message": "Could not resolve the foundation model from the provided model identifier."})
        );
        let out = translate_bedrock_error(Dialect::OpenAi, r.status, Some(ty), &r.body);
        assert_eq!(out["error"]["code"], "model_not_found");

        let r = post(
            &converse_url(&m, CLAUDE_IN_URL, "converse-stream"),
            &[("x-mock-status", "429")],
            &converse_body("hi", false),
        )
        .await;
        assert_eq!(r.status, 429);
        let ty = r.header("x-amzn-errortype").unwrap();
        assert_eq!(bedrock_error_type(ty), "ThrottlingException");
        assert_eq!(
            r.json(),
            json!({"message": "Too many requests, please wait before trying again."})
        );
        let out = translate_bedrock_error(Dialect::Anthropic, r.status, Some(ty), &r.body);
        assert_eq!(out["error"]["type"], "rate_limit_error");

        let r = post(&converse_url(&m, CLAUDE_IN_URL, "converse"), &[], &json!({})).await;
        assert_eq!(r.status, 400);
        assert!(r
            .header("x-amzn-errortype")
            .unwrap()
            .starts_with("ValidationException:"));
        let r = post(&converse_url(&m, CLAUDE_IN_URL, "nope"), &[], &json!({})).await;
        assert_eq!(r.status, 404);
    })
    .await;
}

/// The payloads of AWS event-stream messages (lengths trusted: the CRCs
/// are the translator's business, tested in llmesh-wire).
fn frame_payloads(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let total = u32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
        let hlen = u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize;
        let headers = &b[12..12 + hlen];
        let text = String::from_utf8_lossy(headers);
        let event = text
            .split(":event-type")
            .nth(1)
            .map(|s| {
                s[3..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect()
            })
            .unwrap_or_default();
        out.push((event, b[12 + hlen..total - 4].to_vec()));
        b = &b[total..];
    }
    out
}

#[tokio::test]
async fn bedrock_invoke_for_anthropic_models() {
    bounded(async {
        let m = start().await;
        let messages = json!({"model": "claude-3-5-sonnet", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "one two"}]});
        let body = bedrock_anthropic_body(&messages);
        let r = post(&converse_url(&m, CLAUDE_IN_URL, "invoke"), &[], &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["type"], "message");
        assert_eq!(v["model"], CLAUDE);
        assert_eq!(v["content"][0]["text"], generated_text(8));
        assert_eq!(v["usage"]["input_tokens"], 2);

        let r = post(
            &converse_url(&m, CLAUDE_IN_URL, "invoke-with-response-stream"),
            &[("x-mock-output-tokens", "3")],
            &body,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.amazon.eventstream")
        );
        let events: Vec<Value> = frame_payloads(&r.body)
            .into_iter()
            .map(|(event, payload)| {
                assert_eq!(event, "chunk");
                let chunk: Value = serde_json::from_slice(&payload).unwrap();
                let json = base64::engine::general_purpose::STANDARD
                    .decode(chunk["bytes"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice(&json).unwrap()
            })
            .collect();
        assert_eq!(events[0]["type"], "message_start");
        let text: String = events
            .iter()
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, generated_text(3));
        let last = events.last().unwrap();
        assert_eq!(last["type"], "message_stop");
        assert_eq!(
            last["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
            3
        );
        // As the proxy reads it: unwrapped to Anthropic SSE, then translated.
        let mut sse_bytes = Vec::new();
        let mut unwrap = BedrockInvokeStream::new();
        for piece in r.body.chunks(3) {
            unwrap.push(piece, &mut sse_bytes).unwrap();
        }
        let mut t = StreamTranslator::new(
            Dialect::OpenAi,
            Dialect::Anthropic,
            StreamOptions::default(),
        );
        let mut out = Vec::new();
        t.push(&sse_bytes, &mut out).unwrap();
        t.finish(&mut out);
        assert!(t.completed());
        assert_eq!(t.usage().map(|u| u.output_tokens), Some(3));
        let text: String = sse_json(std::str::from_utf8(&out).unwrap())
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, generated_text(3));

        // The Messages body as an Anthropic client sends it is refused.
        let r = post(&converse_url(&m, CLAUDE_IN_URL, "invoke"), &[], &messages).await;
        assert_eq!(r.status, 400);
        assert!(r.json()["message"]
            .as_str()
            .unwrap()
            .contains("extraneous key [model]"));
        let r = post(
            &converse_url(&m, CLAUDE_IN_URL, "invoke"),
            &[],
            &json!({"messages": [], "max_tokens": 1}),
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("anthropic_version"));
    })
    .await;
}

// ---- Vertex AI ----

#[tokio::test]
async fn vertex_gemini_with_a_bearer_token() {
    bounded(async {
        let m = start_with_key().await;
        let base = format!(
            "{}/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash",
            m.url()
        );
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "one two three"}]}]});
        let bearer = [("authorization", "Bearer ya29.token")];
        let r = post(&format!("{base}:generateContent"), &bearer, &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["modelVersion"], "gemini-2.5-flash");
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            generated_text(8)
        );
        assert_eq!(v["usageMetadata"]["promptTokenCount"], 3);
        let r = post(&format!("{base}:generateContent"), &[], &body).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
        // A Gemini API key is no Vertex credential.
        let r = post(
            &format!("{base}:generateContent"),
            &[("x-goog-api-key", "k")],
            &body,
        )
        .await;
        assert_eq!(r.status, 401);

        let r = post(
            &format!("{base}:streamGenerateContent?alt=sse"),
            &bearer,
            &body,
        )
        .await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let text: String = sse_json(r.text())
            .iter()
            .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
            .collect();
        assert_eq!(text, generated_text(8));
        let r = post(&format!("{base}:countTokens"), &bearer, &body).await;
        assert_eq!(r.status, 404);
    })
    .await;
}

#[tokio::test]
async fn vertex_anthropic_raw_predict() {
    bounded(async {
        let m = start().await;
        let base = format!(
            "{}/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929",
            m.url()
        );
        let messages = json!({"model": "claude-sonnet-4-5", "max_tokens": 20,
            "messages": [{"role": "user", "content": "a b c d"}]});
        let r = post(
            &format!("{base}:rawPredict"),
            &[],
            &vertex_anthropic_body(&messages),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["model"], "claude-sonnet-4-5@20250929");
        assert_eq!(v["content"][0]["text"], generated_text(8));
        assert_eq!(v["usage"]["input_tokens"], 4);

        let mut streamed = messages.clone();
        streamed["stream"] = json!(true);
        let r = post(
            &format!("{base}:streamRawPredict"),
            &[("x-mock-output-tokens", "2")],
            &vertex_anthropic_body(&streamed),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let events = sse(r.text());
        assert_eq!(events[0].0.as_deref(), Some("message_start"));
        assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));
        assert!(r.text().contains("claude-sonnet-4-5@20250929"));

        // Without the Vertex anthropic_version: an Anthropic-shaped 400.
        let r = post(&format!("{base}:rawPredict"), &[], &messages).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert!(r.text().contains("vertex-2023-10-16"));
    })
    .await;
}
