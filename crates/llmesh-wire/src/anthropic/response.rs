//! Non-streaming responses: Anthropic message ⇄ OpenAI chat completion.

use serde_json::{json, Value};

use super::{anthropic_id, openai_id, STRUCTURED_OUTPUT_TOOL};
use crate::json::{bad_upstream, now_unix};
use crate::openai::parse_arguments;
use crate::reasons;
use crate::usage::{anthropic_usage, anthropic_usage_json, openai_usage, openai_usage_json};

/// Anthropic message → OpenAI chat completion. A call of
/// [`STRUCTURED_OUTPUT_TOOL`] is the answer of a structured-output request:
/// its input becomes the message's text, and the turn ends with `stop`.
pub(crate) fn response_to_openai(body: &Value) -> Result<Value, crate::TranslateError> {
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_upstream("anthropic response has no content array"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut structured = false;
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use")
                if block.get("name").and_then(Value::as_str) == Some(STRUCTURED_OUTPUT_TOOL) =>
            {
                structured = true;
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                text.push_str(&input.to_string());
            }
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                    "type": "function",
                    "function": {
                        "name": block.get("name").and_then(Value::as_str).unwrap_or(""),
                        "arguments": input.to_string(),
                    },
                }));
            }
            _ => {}
        }
    }
    let finish = match body.get("stop_reason").and_then(Value::as_str) {
        Some("tool_use") if structured && calls.is_empty() => "stop",
        Some(stop) => reasons::anthropic_to_openai(stop),
        None => "stop",
    };
    let message = crate::openai::assistant_message(text, calls);
    let mut out = json!({
        "id": openai_id(body.get("id").and_then(Value::as_str).unwrap_or("")),
        "object": "chat.completion",
        "created": now_unix(),
        "model": body.get("model").and_then(Value::as_str).unwrap_or(""),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = body.get("usage").and_then(anthropic_usage) {
        out["usage"] = openai_usage_json(u);
    }
    Ok(out)
}

/// OpenAI chat completion → Anthropic message. Only the first choice is
/// kept: Anthropic has no `n`.
pub(crate) fn response_from_openai(body: &Value) -> Result<Value, crate::TranslateError> {
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| bad_upstream("openai response has no choices"))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = message_text(message);
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let func = call.get("function").unwrap_or(&Value::Null);
        let args = func.get("arguments").and_then(Value::as_str).unwrap_or("");
        // A model can emit malformed arguments; the client still needs the
        // call, so the input degrades to an empty object.
        let input = parse_arguments(args).unwrap_or_default();
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
            "name": func.get("name").and_then(Value::as_str).unwrap_or(""),
            "input": input,
        }));
    }
    let stop = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map_or("end_turn", reasons::openai_to_anthropic);
    let usage = body.get("usage").and_then(openai_usage).unwrap_or_default();
    Ok(json!({
        "id": anthropic_id(body.get("id").and_then(Value::as_str).unwrap_or("")),
        "type": "message",
        "role": "assistant",
        "model": body.get("model").and_then(Value::as_str).unwrap_or(""),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": anthropic_usage_json(usage),
    }))
}

/// Assistant text from `content` (string or parts) and `refusal`.
fn message_text(message: &Value) -> String {
    let mut text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    if let Some(r) = message.get("refusal").and_then(Value::as_str) {
        text.push_str(r);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_tool_arguments_become_empty_input() {
        let body = json!({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
            "finish_reason": "tool_calls"}]});
        let out = response_from_openai(&body).unwrap();
        assert_eq!(
            out["content"],
            json!([{"type": "tool_use", "id": "c", "name": "f", "input": {}}])
        );
        assert_eq!(out["stop_reason"], "tool_use");
    }

    #[test]
    fn missing_shapes_are_upstream_errors() {
        assert!(response_from_openai(&json!({"choices": []})).is_err());
        assert!(response_to_openai(&json!({"content": "x"})).is_err());
        assert!(response_to_openai(&json!(null)).is_err());
    }

    #[test]
    fn the_structured_output_tool_is_the_answer_text() {
        let body = json!({"id": "msg_1", "model": "m", "stop_reason": "tool_use", "content": [
            {"type": "tool_use", "id": "t", "name": STRUCTURED_OUTPUT_TOOL, "input": {"n": 1}}]});
        let out = response_to_openai(&body).unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(choice["message"]["content"], r#"{"n":1}"#);
        assert!(choice["message"].get("tool_calls").is_none());
        // Beside a real tool call, the turn is still a tool-call turn.
        let body = json!({"id": "msg_1", "model": "m", "stop_reason": "tool_use", "content": [
            {"type": "tool_use", "id": "t", "name": STRUCTURED_OUTPUT_TOOL, "input": {"n": 1}},
            {"type": "tool_use", "id": "u", "name": "f", "input": {}}]});
        let out = response_to_openai(&body).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["id"], "u");
        // Cut short, it is still cut short.
        let body = json!({"id": "msg_1", "model": "m", "stop_reason": "max_tokens", "content": [
            {"type": "tool_use", "id": "t", "name": STRUCTURED_OUTPUT_TOOL, "input": {}}]});
        let out = response_to_openai(&body).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "length");
    }
}
