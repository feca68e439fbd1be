//! Redact a request, let the "model" echo the placeholders, restore the
//! answer: the originals come back, in every API format, including inside
//! tool-call arguments (JSON text) when a value holds quotes and backslashes.

mod common;

use llmesh_dlp::{Action, Api, ClassCount};
use serde_json::{json, Value};

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";
const PHONE: &str = "+44 20 7946 0958";
const IBAN: &str = "DE89 3704 0044 0532 0130 00";
const KEY: &str = concat!("sk-proj-", "Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789");
/// A custom-pattern value with a quote and a backslash.
const CODENAME: &str = r#"codename "Blue\Bird""#;

fn assert_clean(body: &Value) {
    let s = body.to_string();
    for v in [EMAIL, CARD, PHONE, IBAN, KEY, "Blue\\\\Bird", "Apollo"] {
        assert!(!s.contains(v), "{v} left in {s}");
    }
}

fn count(found: &[ClassCount], class: &str) -> usize {
    found
        .iter()
        .find(|c| c.class == class)
        .map_or(0, |c| c.count)
}

#[test]
fn openai_chat() {
    let engine = common::redact_all();
    let args = json!({"to": EMAIL, "note": CODENAME, "n": 4111111111111111u64}).to_string();
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": format!("You help {EMAIL}.")},
            {"role": "user", "content": [
                {"type": "text", "text": format!("Charge {CARD}, call {PHONE}, project apollo.")},
                {"type": "image_url", "image_url": {"url": "https://example.com/a@b.com.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "send", "arguments": args}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": format!("sent to {EMAIL}; key {KEY}")}
        ],
        "user": "someone@example.com"
    });
    let out = engine.process(&mut body, Api::OpenAiChat);
    assert!(!out.blocked);
    // Three in messages, one in `user`, one in the image URL.
    assert_eq!(count(&out.found, "email"), 5);
    assert_eq!(count(&out.found, "payment-card"), 1);
    assert_eq!(count(&out.found, "codename"), 1);
    assert_eq!(count(&out.found, "project-names"), 1);
    assert_clean(&body);
    // The provider receives `user` and fetches the image URL: scanned too.
    assert_eq!(body["user"], "[EMAIL_3]");
    assert_eq!(
        body["messages"][1]["content"][1]["image_url"]["url"],
        "https://example.com/[EMAIL_2]"
    );
    // Same value, same placeholder.
    assert_eq!(body["messages"][0]["content"], "You help [EMAIL_1].");
    // Arguments stay valid JSON, numbers untouched.
    let redacted_args: Value = serde_json::from_str(
        body["messages"][2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        redacted_args,
        json!({"to": "[EMAIL_1]", "note": "[CODENAME_1]", "n": 4111111111111111u64})
    );

    let mut answer = json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant",
            "content": "Charged [PAYMENT_CARD_1] for [EMAIL_1] ([PROJECT_NAMES_1]); [EMAIL_7] is unknown.",
            "tool_calls": [{"id": "c2", "type": "function", "function": {
                "name": "send", "arguments": "{\"to\":\"[EMAIL_1]\",\"note\":\"[CODENAME_1]\",\"key\":\"[SECRET_1]\"}"
            }}]
        }}]
    });
    assert_eq!(out.vault.restore_json(&mut answer, Api::OpenAiChat), 2);
    let msg = &answer["choices"][0]["message"];
    assert_eq!(
        msg["content"],
        format!("Charged {CARD} for {EMAIL} (apollo); [EMAIL_7] is unknown.")
    );
    let restored: Value = serde_json::from_str(
        msg["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(restored, json!({"to": EMAIL, "note": CODENAME, "key": KEY}));
}

#[test]
fn openai_embeddings() {
    let engine = common::redact_all();
    let mut body =
        json!({"model": "text-embedding-3-small", "input": [format!("mail {EMAIL}"), "plain", 42]});
    let out = engine.process(&mut body, Api::OpenAiEmbeddings);
    assert_eq!(body["input"], json!(["mail [EMAIL_1]", "plain", 42]));
    assert_eq!(
        out.vault.restore_str("mail [EMAIL_1]"),
        format!("mail {EMAIL}")
    );
    let mut body = json!({"input": format!("iban {IBAN}")});
    engine.process(&mut body, Api::OpenAiEmbeddings);
    assert_eq!(body["input"], "iban [IBAN_1]");
}

#[test]
fn anthropic() {
    let engine = common::redact_all();
    let mut body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [{"type": "text", "text": format!("Owner: {EMAIL}")}],
        "messages": [
            {"role": "user", "content": format!("Pay from {IBAN}")},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Calling the tool."},
                {"type": "tool_use", "id": "t1", "name": "pay", "input": {"from": IBAN, "memo": {"text": CODENAME, "n": [1, PHONE]}}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": format!("ok, card {CARD}")}]},
                {"type": "tool_result", "tool_use_id": "t2", "content": format!("mailed {EMAIL}")}
            ]}
        ],
        "tools": [{"name": "pay", "description": "pays, e.g. from DE89 3704 0044 0532 0130 00", "input_schema": {}}]
    });
    let out = engine.process(&mut body, Api::Anthropic);
    // Two in messages, one in the tool description.
    assert_eq!(count(&out.found, "iban"), 3);
    assert_eq!(count(&out.found, "email"), 2);
    assert_clean(&body);
    assert_eq!(body["tools"][0]["description"], "pays, e.g. from [IBAN_1]");
    assert_eq!(
        body["messages"][1]["content"][1]["input"]["memo"]["n"],
        json!([1, "[PHONE_1]"])
    );

    let mut answer = json!({
        "type": "message", "role": "assistant",
        "content": [
            {"type": "text", "text": "Paid from [IBAN_1], told [EMAIL_1]."},
            {"type": "tool_use", "id": "t3", "name": "pay", "input": {"from": "[IBAN_1]", "memo": "[CODENAME_1]"}}
        ]
    });
    out.vault.restore_json(&mut answer, Api::Anthropic);
    assert_eq!(
        answer["content"][0]["text"],
        format!("Paid from {IBAN}, told {EMAIL}.")
    );
    assert_eq!(
        answer["content"][1]["input"],
        json!({"from": IBAN, "memo": CODENAME})
    );
}

#[test]
fn gemini() {
    let engine = common::redact_all();
    let mut body = json!({
        "systemInstruction": {"parts": [{"text": format!("Admin {EMAIL}")}]},
        "contents": [
            {"role": "user", "parts": [{"text": format!("card {CARD} and ip 10.1.2.3")}]},
            {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": CODENAME}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"owner": EMAIL}}}]}
        ]
    });
    let out = engine.process(&mut body, Api::Gemini);
    assert_eq!(count(&out.found, "ip-address"), 1);
    assert_clean(&body);
    assert_eq!(
        body["contents"][0]["parts"][0]["text"],
        "card [PAYMENT_CARD_1] and ip [IP_ADDRESS_1]"
    );

    let mut answer = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "[EMAIL_1] owns [IP_ADDRESS_1]"},
        {"functionCall": {"name": "lookup", "args": {"q": "[CODENAME_1]", "list": ["[PAYMENT_CARD_1]"]}}}
    ]}}]});
    out.vault.restore_json(&mut answer, Api::Gemini);
    let parts = &answer["candidates"][0]["content"]["parts"];
    assert_eq!(parts[0]["text"], format!("{EMAIL} owns 10.1.2.3"));
    assert_eq!(
        parts[1]["functionCall"]["args"],
        json!({"q": CODENAME, "list": [CARD]})
    );
}

#[test]
fn literal_placeholders_in_the_request_are_never_restored() {
    let engine = common::redact_all();
    let mut text = format!("my template says [EMAIL_1], the address is {EMAIL}");
    let out = engine.process_text(&mut text);
    assert_eq!(text, "my template says [EMAIL_1], the address is [EMAIL_2]");
    assert_eq!(
        out.vault.restore_str(&text),
        format!("my template says [EMAIL_1], the address is {EMAIL}")
    );

    let original = format!("[PAYMENT_CARD_1] [PAYMENT_CARD_2] [EMAIL_x] {CARD} {EMAIL}");
    let mut text = original.clone();
    let out = engine.process_text(&mut text);
    assert_eq!(
        text,
        "[PAYMENT_CARD_1] [PAYMENT_CARD_2] [EMAIL_x] [PAYMENT_CARD_3] [EMAIL_1]"
    );
    assert_eq!(out.vault.restore_str(&text), original);
}

#[test]
fn mask_is_irreversible() {
    let engine = llmesh_dlp::Engine::new(vec![llmesh_dlp::ClassRule::builtin(
        llmesh_dlp::Builtin::Email,
        Action::Mask,
    )])
    .unwrap();
    let mut text = format!("{EMAIL} and {EMAIL}");
    let out = engine.process_text(&mut text);
    assert_eq!(text, "[EMAIL] and [EMAIL]");
    assert!(out.vault.is_empty());
    assert_eq!(out.found[0].count, 2);
}
