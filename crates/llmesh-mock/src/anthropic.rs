//! Anthropic dialect: `/v1/messages` (plain and streamed), models.
//!
//! Usage follows the real API: `input_tokens` excludes cache reads, so
//! `input_tokens + cache_read_input_tokens` equals the word-count input.

use serde_json::Value;

use crate::body::{push_json_str, push_num, Events};
use crate::common::{count_words, prefill_words, ChatReq, Plan};

pub(crate) fn parse_chat(body: &Value) -> Result<ChatReq<'_>, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model: Field required")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    let mut words: u64 = messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(count_words)
        .sum();
    if let Some(s) = body.get("system") {
        words += count_words(s);
    }
    let last_is_tool_result = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    // `tool_choice: {type: tool, name}` forces that tool.
    let forced = body
        .get("tool_choice")
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool"))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str);
    let tool = if last_is_tool_result {
        None
    } else {
        forced.or_else(|| {
            body.get("tools")
                .and_then(Value::as_array)
                .and_then(|t| t.first())
                .and_then(|t| t.get("name"))
                .and_then(Value::as_str)
        })
    };
    Ok(ChatReq {
        model,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: false,
        sse: true,
        input_tokens: words.max(1),
        first_word: prefill_words(messages, false),
        last_user_text: crate::common::last_user_text(messages),
        assistant_turns: crate::common::assistant_turns(messages),
        forced_tool: forced.is_some() && tool.is_some(),
        tool,
    })
}

fn stop_reason(p: &Plan) -> &'static str {
    if p.content_filter {
        "refusal"
    } else if p.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn push_usage(out: &mut String, p: &Plan, output_tokens: u64) {
    out.push_str("{\"input_tokens\":");
    push_num(out, p.input_tokens - p.cached_tokens - p.cache_write_tokens);
    out.push_str(",\"cache_creation_input_tokens\":");
    push_num(out, p.cache_write_tokens);
    out.push_str(",\"cache_read_input_tokens\":");
    push_num(out, p.cached_tokens);
    out.push_str(",\"output_tokens\":");
    push_num(out, output_tokens);
    out.push('}');
}

/// Message envelope up to (not including) the content array.
fn push_message_head(out: &mut String, p: &Plan) {
    out.push_str("{\"id\":\"msg_mock_");
    push_num(out, p.id);
    out.push_str("\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    push_json_str(out, p.model);
    out.push_str(",\"content\":");
}

pub(crate) fn render(p: &Plan) -> String {
    let mut out = String::with_capacity(384 + p.output_tokens as usize * 8);
    push_message_head(&mut out, p);
    match &p.tool {
        Some(t) => {
            out.push_str("[{\"type\":\"tool_use\",\"id\":\"toolu_mock_");
            push_num(&mut out, p.id);
            out.push_str("\",\"name\":");
            push_json_str(&mut out, t.name);
            out.push_str(",\"input\":");
            out.push_str(&t.args);
            out.push_str("}]");
        }
        None => {
            out.push_str("[{\"type\":\"text\",\"text\":");
            p.push_text_json(&mut out);
            out.push_str("}]");
        }
    }
    out.push_str(",\"stop_reason\":\"");
    out.push_str(stop_reason(p));
    out.push_str("\",\"stop_sequence\":null,\"usage\":");
    push_usage(&mut out, p, u64::from(p.output_tokens));
    out.push('}');
    out
}

pub(crate) fn render_stream(p: &Plan) -> Events {
    let n = p.output_tokens as usize;
    let mut ev = Events::with_capacity(700 + n * 110, n + 8);
    ev.sse_named("message_start", |o| {
        o.push_str("{\"type\":\"message_start\",\"message\":");
        push_message_head(o, p);
        o.push_str("[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
        // The real API reports a provisional output count here; the final,
        // cumulative figure comes in message_delta.
        push_usage(o, p, u64::from(p.output_tokens.min(1)));
        o.push_str("}}");
    });
    match &p.tool {
        Some(t) => {
            ev.sse_named("content_block_start", |o| {
                o.push_str("{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_mock_");
                push_num(o, p.id);
                o.push_str("\",\"name\":");
                push_json_str(o, t.name);
                o.push_str(",\"input\":{}}}");
            });
            ev.sse_named("ping", |o| o.push_str("{\"type\":\"ping\"}"));
            for piece in t.arg_pieces() {
                ev.sse_named("content_block_delta", |o| {
                    o.push_str("{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":");
                    push_json_str(o, piece);
                    o.push_str("}}");
                });
            }
        }
        None => {
            ev.sse_named("content_block_start", |o| {
                o.push_str("{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
            });
            ev.sse_named("ping", |o| o.push_str("{\"type\":\"ping\"}"));
            for k in 0..n {
                ev.sse_named("content_block_delta", |o| {
                    o.push_str("{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
                    p.push_piece_json(k, o);
                    o.push_str("}}");
                });
            }
        }
    }
    ev.sse_named("content_block_stop", |o| {
        o.push_str("{\"type\":\"content_block_stop\",\"index\":0}")
    });
    ev.sse_named("message_delta", |o| {
        o.push_str("{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        o.push_str(stop_reason(p));
        o.push_str("\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
        push_num(o, p.output_tokens);
        o.push_str("}}");
    });
    ev.sse_named("message_stop", |o| {
        o.push_str("{\"type\":\"message_stop\"}")
    });
    ev
}

pub(crate) fn render_models(models: &[&str]) -> String {
    let mut out = String::from("{\"data\":[");
    for (i, m) in models.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"type\":\"model\",\"id\":");
        push_json_str(&mut out, m);
        out.push_str(",\"display_name\":");
        push_json_str(&mut out, m);
        out.push_str(",\"created_at\":\"2025-01-01T00:00:00Z\"}");
    }
    out.push_str("],\"has_more\":false,\"first_id\":");
    match models.first() {
        Some(m) => push_json_str(&mut out, m),
        None => out.push_str("null"),
    }
    out.push_str(",\"last_id\":");
    match models.last() {
        Some(m) => push_json_str(&mut out, m),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

pub(crate) fn error_body(status: u16, error_type: Option<&str>, message: &str) -> String {
    let default_type = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    let mut out = String::with_capacity(96 + message.len());
    out.push_str("{\"type\":\"error\",\"error\":{\"type\":");
    push_json_str(&mut out, error_type.unwrap_or(default_type));
    out.push_str(",\"message\":");
    push_json_str(&mut out, message);
    out.push_str("}}");
    out
}
