//! Gemini `GenerateContentResponse` → OpenAI chat completion.

use serde_json::{json, Value};

use super::{call_id, completion_id};
use crate::json::{bad_upstream, now_unix};
use crate::reasons;
use crate::usage::{gemini_usage, openai_usage_json};

/// Translate a full (non-streaming) response. Each candidate becomes a
/// choice; a prompt blocked before any candidate yields one empty choice
/// with `finish_reason: content_filter`.
pub(crate) fn response_to_openai(body: &Value) -> Result<Value, crate::TranslateError> {
    if !body.is_object() {
        return Err(bad_upstream("gemini response is not a JSON object"));
    }
    let candidates = body
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut choices: Vec<Value> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| choice(c, i))
        .collect();
    if choices.is_empty() {
        let blocked = body
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .is_some();
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": null},
            "logprobs": null,
            "finish_reason": if blocked { "content_filter" } else { "stop" },
        }));
    }
    let mut out = json!({
        "id": completion_id(body.get("responseId").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": now_unix(),
        "model": body.get("modelVersion").and_then(Value::as_str).unwrap_or(""),
        "choices": choices,
    });
    if let Some(u) = body.get("usageMetadata").and_then(gemini_usage) {
        out["usage"] = openai_usage_json(u);
    }
    Ok(out)
}

fn choice(candidate: &Value, position: usize) -> Value {
    let parts = candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in parts {
        if let Some(call) = part.get("functionCall") {
            calls.push(tool_call(call, part, calls.len()));
        } else if let Some(t) = part.get("text").and_then(Value::as_str) {
            // Thought summaries are not part of the answer.
            if part.get("thought").and_then(Value::as_bool) != Some(true) {
                text.push_str(t);
            }
        }
    }
    let finish = if calls.is_empty() {
        candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .map_or("stop", reasons::gemini_to_openai)
    } else {
        "tool_calls"
    };
    let message = crate::openai::assistant_message(text, calls);
    let index = candidate
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64);
    json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish})
}

/// A Gemini `functionCall` part in OpenAI terms; shared with the stream
/// decoder.
pub(crate) struct GeminiCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub signature: Option<String>,
}

/// `n` counts the function calls of the response so far.
pub(crate) fn tool_call_of(call: &Value, part: &Value, n: usize) -> GeminiCall {
    GeminiCall {
        id: call_id(n),
        name: call
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        arguments: call
            .get("args")
            .filter(|a| !a.is_null())
            .map_or_else(|| "{}".to_owned(), Value::to_string),
        signature: part
            .get("thoughtSignature")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

fn tool_call(call: &Value, part: &Value, n: usize) -> Value {
    let c = tool_call_of(call, part, n);
    let mut out = json!({
        "id": c.id,
        "type": "function",
        "function": {"name": c.name, "arguments": c.arguments},
    });
    if let Some(sig) = c.signature {
        out["extra_content"] = json!({"google": {"thought_signature": sig}});
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_prompt() {
        let out = response_to_openai(&json!({"promptFeedback": {"blockReason": "SAFETY"},
            "responseId": "r"}))
        .unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(out["id"], "chatcmpl-r");
    }

    #[test]
    fn not_an_object() {
        assert!(response_to_openai(&json!("x")).is_err());
    }

    #[test]
    fn thoughts_are_skipped_and_calls_win() {
        let out = response_to_openai(
            &json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": true},
            {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "sig"}]},
            "finishReason": "STOP"}]}),
        )
        .unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"][0],
            json!({"id": "call_0", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"},
                "extra_content": {"google": {"thought_signature": "sig"}}})
        );
    }
}
