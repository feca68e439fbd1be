//! Bedrock `Converse` response → OpenAI chat completion.

use serde_json::{json, Value};

use crate::json::{bad_upstream, now_unix, synth_id};
use crate::usage::{bedrock_usage, openai_usage_json};
use crate::TranslateError;

/// Translate a full (non-streaming) Converse answer. Converse answers carry
/// neither an id nor the model: the id is synthesized and `model` is empty
/// (the proxy knows which model it called).
pub(crate) fn response_to_openai(body: &Value) -> Result<Value, TranslateError> {
    if !body.is_object() {
        return Err(bad_upstream("bedrock response is not a JSON object"));
    }
    let blocks = body
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tool) = block.get("toolUse") {
            let str_of = |k: &str| tool.get(k).and_then(Value::as_str).unwrap_or_default();
            let arguments = tool
                .get("input")
                .filter(|i| !i.is_null())
                .map_or_else(|| "{}".to_owned(), Value::to_string);
            calls.push(json!({
                "id": str_of("toolUseId"),
                "type": "function",
                "function": {"name": str_of("name"), "arguments": arguments},
            }));
        }
        // reasoningContent, citations, guardContent... have no Chat
        // Completions form.
    }
    let stop = body.get("stopReason").and_then(Value::as_str);
    let finish = match stop {
        _ if !calls.is_empty() => "tool_calls",
        Some(reason) => finish_reason(reason),
        None => "stop",
    };
    let message = crate::openai::assistant_message(text, calls);
    let mut out = json!({
        "id": format!("chatcmpl-{}", synth_id()),
        "object": "chat.completion",
        "created": now_unix(),
        "model": "",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = body.get("usage").and_then(bedrock_usage) {
        out["usage"] = openai_usage_json(u);
    }
    Ok(out)
}

/// Converse `stopReason` → OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// Reasoning text of a Converse answer (`reasoningContent` blocks), for
/// Responses clients.
pub(crate) fn reasoning_texts(body: &Value) -> Vec<String> {
    body.pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.pointer("/reasoningContent/reasoningText/text"))
        .filter_map(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons() {
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("stop_sequence"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("tool_use"), "tool_calls");
        assert_eq!(finish_reason("guardrail_intervened"), "content_filter");
        assert_eq!(finish_reason("content_filtered"), "content_filter");
    }

    #[test]
    fn not_an_object_and_empty_output() {
        assert!(response_to_openai(&json!([])).is_err());
        let out = response_to_openai(&json!({"stopReason": "end_turn"})).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], "");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        assert!(out.get("usage").is_none());
    }

    #[test]
    fn reasoning_is_kept_apart() {
        let body = json!({"output": {"message": {"content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
            {"text": "yes"}]}}, "stopReason": "end_turn"});
        assert_eq!(reasoning_texts(&body), vec!["hmm".to_owned()]);
        let out = response_to_openai(&body).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], "yes");
    }
}
