//! LLMDataPolicy end to end: redaction with placeholders restored in whole
//! and streamed answers (placeholders split across chunks), masking,
//! blocking, and restricted classes kept to cleared providers.
#![allow(clippy::unwrap_used)]

use llmesh_mock::Behavior;
use llmesh_tests::*;
use serde_json::json;

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";
const AWS_KEY: &str = concat!("AKIA", "IOSFODNN7EXAMPLE");

fn policy(mock: &str) -> String {
    format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: open}}
spec: {{schema: openai, baseUrl: {mock}/v1, credential: {{file: key.txt}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: cleared}}
spec: {{schema: anthropic, baseUrl: {mock}/v1, credential: {{file: key.txt}}, clearance: [payment-card, confidential]}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {{name: pii}}
spec:
  rules:
    - {{class: email, action: redact}}
    - {{class: payment-card, action: restrict}}
    - {{class: secret, action: block}}
    - {{class: project-names, dictionary: [Bluebird], action: mask}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat}}
spec:
  models: [chat]
  backends: [{{provider: open, model: echo}}, {{provider: cleared, model: echo-cleared, priority: 1}}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: open-only}}
spec:
  models: [open-only]
  backends: [{{provider: open, model: echo}}]
  passthrough: {{paths: [/v1/files], provider: open}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: anthropic-only}}
spec:
  models: [anthropic-only]
  backends: [{{provider: cleared, model: echo-cleared}}]
"
    )
}

async fn env() -> Env {
    let env = Env::start_with(policy).await;
    let echo: Behavior = serde_json::from_value(json!({"echo_chunk_chars": 3})).unwrap();
    env.mock.set_model_behavior("echo", echo.clone());
    env.mock.set_model_behavior("echo-cleared", echo);
    env
}

fn sent_bodies(env: &Env) -> String {
    env.mock
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn an_email_is_redacted_upstream_and_restored_in_the_answer() {
    let env = env().await;
    let prompt = format!("write to {EMAIL} and {EMAIL} today");
    let (s, h, b) = env
        .post("/v1/chat/completions", &openai_chat("chat", &prompt))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-provider"], "open");
    // The provider never saw the address, only a stable placeholder.
    let sent = sent_bodies(&env);
    assert!(!sent.contains(EMAIL), "{sent}");
    assert!(
        sent.contains("write to [EMAIL_1] and [EMAIL_1] today"),
        "{sent}"
    );
    // The app reads its own text back.
    assert_eq!(b["choices"][0]["message"]["content"], prompt.as_str());
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_redactions_total",
            &[("class", "email"), ("action", "redact")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn placeholders_split_across_stream_chunks_are_restored() {
    let env = env().await;
    let prompt = format!("mail {EMAIL}, cc ops@example.org; thanks");
    // OpenAI client; the echo comes back three characters per chunk, so
    // every placeholder arrives in pieces.
    let mut req = openai_chat("chat", &prompt);
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/chat/completions", &req, &[]).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(openai_text(&text), prompt, "{text}");
    assert!(!text.contains("[EMAIL_"), "{text}");
    // Anthropic client, through the translated path.
    let mut req = anthropic_msg("chat", &prompt);
    req["stream"] = json!(true);
    let (s, _, text) = env.post_stream("/v1/messages", &req, &[]).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(anthropic_text(&text), prompt, "{text}");
    assert!(!sent_bodies(&env).contains(EMAIL));
}

#[tokio::test]
async fn masked_values_never_come_back() {
    let env = env().await;
    let (s, _, b) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("chat", "status of Bluebird?"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(!sent_bodies(&env).contains("Bluebird"));
    let answer = b["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!answer.contains("Bluebird"), "{answer}");
}

#[tokio::test]
async fn a_blocked_class_is_refused_naming_the_class_not_the_value() {
    let env = env().await;
    let (s, _, b) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("chat", &format!("my key is {AWS_KEY}")),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "data_policy_blocked");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("secret"), "{msg}");
    assert!(!b.to_string().contains(AWS_KEY), "{b}");
    assert!(env.mock.requests().is_empty());
    // Anthropic clients get their own error shape.
    let (s, _, b) = env
        .post(
            "/v1/messages",
            &anthropic_msg("chat", &format!("my key is {AWS_KEY}")),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["type"], "error", "{b}");
}

#[tokio::test]
async fn restricted_data_only_goes_to_cleared_providers() {
    let env = env().await;
    let prompt = format!("charge card {CARD}");
    let (s, h, b) = env
        .post("/v1/chat/completions", &openai_chat("chat", &prompt))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-provider"], "cleared");
    // Without a cleared backend the request is refused, clearly.
    let (s, _, b) = env
        .post("/v1/chat/completions", &openai_chat("open-only", &prompt))
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "data_policy_restricted");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("payment-card"));
    // A class declared by the app for the whole request is honoured too.
    let (s, h, _) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("chat", "quarterly numbers"),
            &[("x-llmesh-data-class", "confidential")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-llmesh-provider"], "cleared");
    // Undeclared, the same request takes the usual backend.
    let (_, h, _) = env
        .post(
            "/v1/chat/completions",
            &openai_chat("chat", "quarterly numbers"),
        )
        .await;
    assert_eq!(h["x-llmesh-provider"], "open");
    // The declaration header never goes upstream.
    assert!(env
        .mock
        .requests()
        .iter()
        .all(|r| r.header("x-llmesh-data-class").is_none()));
}

#[tokio::test]
async fn every_text_the_provider_gets_is_scanned_through_the_sidecar() {
    let env = env().await;
    // An Anthropic client: a text document, a tool schema, the user id,
    // and a signed thinking block that must reach the provider unchanged.
    let thinking =
        json!({"type": "thinking", "thinking": format!("note {EMAIL}"), "signature": "c2ln"});
    let msg = json!({
        "model": "anthropic-only", "max_tokens": 64,
        "metadata": {"user_id": EMAIL},
        "tools": [{"name": "notify", "description": format!("mails {EMAIL}"),
            "input_schema": {"type": "object", "properties": {"to": {"type": "string", "default": EMAIL}}}}],
        "messages": [
            {"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": format!("contact {EMAIL}")}}]},
            {"role": "assistant", "content": [thinking.clone(), {"type": "text", "text": "ok"}]},
            {"role": "user", "content": "go on"}
        ]
    });
    let (s, _, b) = env.post("/v1/messages", &msg).await;
    assert_eq!(s, 200, "{b}");
    let sent = sent_bodies(&env);
    // Only the signed block still holds the address, byte for byte.
    assert_eq!(sent.matches(EMAIL).count(), 1, "{sent}");
    assert!(sent.contains(&format!("note {EMAIL}")), "{sent}");
    // An OpenAI client: the `user` field and an image URL's query string.
    let chat = json!({"model": "open-only", "user": EMAIL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": format!("https://img.example/a.png?owner={EMAIL}")}}]}]});
    let before = env.mock.requests().len();
    let (s, _, b) = env.post("/v1/chat/completions", &chat).await;
    assert_eq!(s, 200, "{b}");
    let sent: String = env.mock.requests()[before..]
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(!sent.contains(EMAIL), "{sent}");
    assert!(sent.contains("?owner=[EMAIL_"), "{sent}");
}

/// Headers the sidecar forwards are scanned like the body: an e-mail in an
/// app header or in `baggage` reaches the provider as its placeholder (the
/// same one the body got), a key in a header blocks the request, and trace
/// context passes untouched. Pass-through calls (an upload) get the same.
#[tokio::test]
async fn forwarded_headers_are_scanned_too() {
    let env = env().await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let baggage = format!("user.email={EMAIL},tier=gold");
    let (s, _, b) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("open-only", &format!("hello {EMAIL}")),
            &[
                ("x-customer", EMAIL),
                ("baggage", &baggage),
                ("traceparent", trace),
            ],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let reqs = env.mock.requests();
    let r = reqs.last().unwrap();
    assert_eq!(r.header("x-customer"), Some("[EMAIL_1]"));
    assert_eq!(r.header("baggage"), Some("user.email=[EMAIL_1],tier=gold"));
    // The sidecar continues the app's trace: same trace id.
    assert!(
        r.header("traceparent")
            .is_some_and(|t| t.contains("4bf92f3577b34da6a3ce929d0e0e4736")),
        "{:?}",
        r.header("traceparent")
    );
    assert!(!r.body.to_string().contains(EMAIL));

    // A key in a header is refused like one in the prompt, nothing sent.
    let before = env.mock.requests().len();
    let (s, _, b) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("open-only", "hi"),
            &[("x-debug-token", AWS_KEY)],
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("secret"));
    assert!(!b.to_string().contains(AWS_KEY));
    assert_eq!(env.mock.requests().len(), before);

    // A pass-through upload: the body is not JSON, the headers still are.
    let (ct, body) = multipart(&[("purpose", "batch")], ("in.jsonl", b"{}\n"));
    let (s, _, b) = Http::new()
        .send(
            http::Method::POST,
            &env.url("/v1/files"),
            body,
            &[("content-type", &ct), ("x-customer", EMAIL)],
        )
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let reqs = env.mock.requests();
    let r = reqs.last().unwrap();
    assert_eq!(r.header("x-customer"), Some("[EMAIL_1]"));
}
