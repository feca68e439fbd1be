//! Non-streaming answers as Responses objects, and the pieces of a
//! Responses object that the stream encoder shares.

use serde_json::{json, Map, Value};

use super::{item_id, ResponseEcho};
use crate::json::bad_upstream;
use crate::usage::usage_of;
use crate::{anthropic, gemini, Dialect, TranslateError, Usage};

/// Translate a non-streaming upstream answer for a Responses client, and
/// extract its usage (read from the upstream body, so it is exact).
///
/// A Responses upstream's body is returned unchanged. Any other upstream's
/// answer goes through the Chat Completions pivot and becomes a Responses
/// object with `echo.id`, `echo.created_at` and the settings of
/// `echo.request` echoed back. `status` is `completed`, or `incomplete`
/// (with `incomplete_details.reason` `max_output_tokens` or
/// `content_filter`) when the upstream stopped for length or a content
/// filter.
pub fn translate_response_for_responses(
    upstream: Dialect,
    body: Value,
    echo: &ResponseEcho,
) -> Result<(Value, Option<Usage>), TranslateError> {
    let usage = usage_of(upstream, &body);
    let pivot = match upstream {
        Dialect::Responses => return Ok((body, usage)),
        Dialect::OpenAi => None,
        Dialect::Anthropic => Some(anthropic::response_to_openai(&body)?),
        Dialect::Gemini => Some(gemini::response_to_openai(&body)?),
        Dialect::Bedrock => Some(crate::bedrock::response_to_openai(&body)?),
    };
    let chat = pivot.as_ref().unwrap_or(&body);
    let choice = chat
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| bad_upstream("openai response has no choices"))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let (status, incomplete) = status_of(finish);
    let item_status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };

    let id = echo.response_id();
    let mut output = Vec::new();
    let reasoning = reasoning_texts(upstream, &body);
    if !reasoning.is_empty() {
        output.push(reasoning_item(
            &item_id("rs", &id, output.len()),
            &reasoning,
        ));
    }
    let calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut content = Vec::new();
    let text = message_text(message);
    if !text.is_empty() {
        content.push(output_text_part(&text));
    }
    if let Some(refusal) = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    if !content.is_empty() || calls.is_empty() {
        if content.is_empty() {
            content.push(output_text_part(""));
        }
        output.push(message_item(
            &item_id("msg", &id, output.len()),
            item_status,
            content,
        ));
    }
    for call in calls {
        let func = call.get("function").unwrap_or(&Value::Null);
        let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        output.push(function_call_item(
            &item_id("fc", &id, output.len()),
            "completed",
            &str_of(call, "id"),
            &str_of(func, "name"),
            &str_of(func, "arguments"),
        ));
    }

    let model = chat.get("model").and_then(Value::as_str).unwrap_or("");
    let object = response_object(
        echo,
        &id,
        echo.created(),
        Outcome {
            status,
            incomplete_reason: incomplete,
            model,
            output,
            usage: usage.map(|u| usage_json(u, reasoning_tokens(upstream, &body))),
            error: None,
        },
    );
    Ok((object, usage))
}

/// Text of a Chat assistant message (`content` as a string or text parts).
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Reasoning the upstream reported, one entry per thinking block / thought.
fn reasoning_texts(upstream: Dialect, body: &Value) -> Vec<String> {
    let flagged = |list: Option<&Value>, flag: &dyn Fn(&Value) -> bool, key: &str| {
        list.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| flag(v))
            .filter_map(|v| v.get(key).and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    match upstream {
        Dialect::OpenAi => {
            let message = body.pointer("/choices/0/message").unwrap_or(&Value::Null);
            ["reasoning_content", "reasoning"]
                .iter()
                .filter_map(|k| message.get(*k).and_then(Value::as_str))
                .find(|t| !t.is_empty())
                .map(|t| vec![t.to_owned()])
                .unwrap_or_default()
        }
        Dialect::Anthropic => flagged(
            body.get("content"),
            &|b| b.get("type").and_then(Value::as_str) == Some("thinking"),
            "thinking",
        ),
        Dialect::Gemini => flagged(
            body.pointer("/candidates/0/content/parts"),
            &|p| p.get("thought").and_then(Value::as_bool) == Some(true),
            "text",
        ),
        Dialect::Bedrock => crate::bedrock::reasoning_texts(body),
        Dialect::Responses => Vec::new(),
    }
}

/// Reasoning tokens the upstream reported (a part of the output tokens).
fn reasoning_tokens(upstream: Dialect, body: &Value) -> u64 {
    let n = match upstream {
        Dialect::OpenAi => body.pointer("/usage/completion_tokens_details/reasoning_tokens"),
        Dialect::Gemini => body.pointer("/usageMetadata/thoughtsTokenCount"),
        Dialect::Anthropic | Dialect::Responses | Dialect::Bedrock => None,
    };
    n.and_then(Value::as_u64).unwrap_or(0)
}

/// Response `status` and `incomplete_details.reason` for an OpenAI
/// `finish_reason`.
pub(crate) fn status_of(finish: &str) -> (&'static str, Option<&'static str>) {
    match finish {
        "length" => ("incomplete", Some("max_output_tokens")),
        "content_filter" => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A Responses `usage` object.
pub(crate) fn usage_json(u: Usage, reasoning_tokens: u64) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

pub(crate) fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

pub(crate) fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

pub(crate) fn function_call_item(
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    })
}

pub(crate) fn reasoning_item(id: &str, texts: &[String]) -> Value {
    let summary: Vec<Value> = texts
        .iter()
        .map(|t| json!({"type": "summary_text", "text": t}))
        .collect();
    json!({"type": "reasoning", "id": id, "summary": summary})
}

/// The parts of a Responses object that come from the answer.
pub(crate) struct Outcome<'a> {
    pub status: &'a str,
    pub incomplete_reason: Option<&'a str>,
    pub model: &'a str,
    pub output: Vec<Value>,
    pub usage: Option<Value>,
    /// `{code, message}` for failed responses.
    pub error: Option<Value>,
}

/// A full Responses object: the answer plus the request's settings.
pub(crate) fn response_object(
    echo: &ResponseEcho,
    id: &str,
    created_at: u64,
    outcome: Outcome<'_>,
) -> Value {
    let req = &echo.request;
    let echoed = |key: &str, default: Value| -> Value {
        req.get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    let mut text = match req.get("text") {
        Some(Value::Object(t)) => t.clone(),
        _ => Map::new(),
    };
    if text.get("format").is_none_or(Value::is_null) {
        text.insert("format".into(), json!({"type": "text"}));
    }
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": outcome.status,
        "background": false,
        "error": outcome.error,
        "incomplete_details": outcome.incomplete_reason.map(|r| json!({"reason": r})),
        "instructions": echoed("instructions", Value::Null),
        "max_output_tokens": echoed("max_output_tokens", Value::Null),
        "metadata": echoed("metadata", json!({})),
        "model": outcome.model,
        "output": outcome.output,
        "parallel_tool_calls": echoed("parallel_tool_calls", Value::Bool(true)),
        "previous_response_id": echoed("previous_response_id", Value::Null),
        "reasoning": echoed("reasoning", json!({"effort": null, "summary": null})),
        "store": echoed("store", Value::Bool(true)),
        "temperature": echoed("temperature", Value::Null),
        "text": text,
        "tool_choice": echoed("tool_choice", json!("auto")),
        "tools": echoed("tools", json!([])),
        "top_p": echoed("top_p", Value::Null),
        "truncation": echoed("truncation", json!("disabled")),
        "usage": outcome.usage,
        "user": echoed("user", Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> ResponseEcho {
        ResponseEcho {
            id: "resp_t".into(),
            created_at: 5,
            request: Map::new(),
        }
    }

    #[test]
    fn length_is_incomplete_and_defaults_are_echoed() {
        let body = json!({"id": "chatcmpl-1", "model": "gpt", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "cut"}, "finish_reason": "length"}]});
        let (out, usage) =
            translate_response_for_responses(Dialect::OpenAi, body, &echo()).unwrap();
        assert_eq!(usage, None);
        assert_eq!(out["status"], "incomplete");
        assert_eq!(
            out["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(out["output"][0]["status"], "incomplete");
        assert_eq!(out["output"][0]["id"], "msg_t_0");
        assert_eq!(out["text"], json!({"format": {"type": "text"}}));
        assert_eq!(out["tool_choice"], "auto");
        assert_eq!(out["store"], true);
        assert_eq!(out["created_at"], 5);
        assert_eq!(out["usage"], Value::Null);
    }

    #[test]
    fn refusal_and_reasoning_content() {
        let body = json!({"model": "ds", "choices": [{"index": 0, "message": {"role": "assistant",
            "content": null, "refusal": "no", "reasoning_content": "hmm"},
            "finish_reason": "content_filter"}]});
        let (out, _) = translate_response_for_responses(Dialect::OpenAi, body, &echo()).unwrap();
        assert_eq!(out["status"], "incomplete");
        assert_eq!(out["incomplete_details"]["reason"], "content_filter");
        assert_eq!(
            out["output"],
            json!([
                {"type": "reasoning", "id": "rs_t_0", "summary": [{"type": "summary_text", "text": "hmm"}]},
                {"type": "message", "id": "msg_t_1", "status": "incomplete", "role": "assistant",
                 "content": [{"type": "refusal", "refusal": "no"}]}])
        );
    }

    #[test]
    fn responses_upstream_is_unchanged_and_bad_bodies_fail() {
        let body = json!({"id": "resp_x", "usage": {"input_tokens": 1, "output_tokens": 2}});
        let (out, usage) =
            translate_response_for_responses(Dialect::Responses, body.clone(), &echo()).unwrap();
        assert_eq!(out, body);
        assert_eq!(usage.map(|u| u.output_tokens), Some(2));
        assert!(translate_response_for_responses(Dialect::OpenAi, json!({}), &echo()).is_err());
        assert!(translate_response_for_responses(Dialect::Anthropic, json!([]), &echo()).is_err());
    }

    #[test]
    fn empty_echo_gets_an_id_and_a_time() {
        let body = json!({"choices": [{"message": {"content": "x"}}]});
        let (out, _) =
            translate_response_for_responses(Dialect::OpenAi, body, &ResponseEcho::default())
                .unwrap();
        assert!(out["id"].as_str().unwrap().starts_with("resp_"));
        assert!(out["created_at"].as_u64().unwrap() > 0);
    }
}
