//! OpenAI dialect: chat completions (plain and streamed), embeddings, models.
//!
//! Bodies are written from string templates rather than built as
//! `serde_json::Value` trees: the bench drives the mock hard and a value tree
//! costs dozens of allocations per chunk.

use serde_json::Value;

use crate::body::{push_json_str, push_num, Events};
use crate::common::{count_words, embedding, prefill_words, ChatReq, Plan};

pub(crate) fn parse_chat(body: &Value) -> Result<ChatReq<'_>, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("'model' is required and must be a string")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("'messages' is required and must be an array")?;
    let words: u64 = messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(count_words)
        .sum();
    let last_is_tool = messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .is_some_and(|r| r == "tool" || r == "function");
    let tool = if last_is_tool {
        None
    } else {
        body.get("tools")
            .and_then(Value::as_array)
            .and_then(|t| t.first())
            .and_then(|t| {
                t.pointer("/function/name")
                    .or_else(|| t.get("name"))
                    .and_then(Value::as_str)
            })
    };
    Ok(ChatReq {
        model,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        sse: true,
        input_tokens: words.max(1),
        first_word: prefill_words(messages, true),
        last_user_text: crate::common::last_user_text(messages),
        assistant_turns: crate::common::assistant_turns(messages),
        tool,
        forced_tool: false,
    })
}

fn push_usage(out: &mut String, p: &Plan) {
    out.push_str("{\"prompt_tokens\":");
    push_num(out, p.input_tokens);
    out.push_str(",\"completion_tokens\":");
    push_num(out, p.output_tokens);
    out.push_str(",\"total_tokens\":");
    push_num(out, p.input_tokens + u64::from(p.output_tokens));
    out.push_str(",\"prompt_tokens_details\":{\"cached_tokens\":");
    push_num(out, p.cached_tokens);
    out.push_str("},\"completion_tokens_details\":{\"reasoning_tokens\":0}}");
}

fn push_head(out: &mut String, p: &Plan, object: &str) {
    out.push_str("{\"id\":\"chatcmpl-mock-");
    push_num(out, p.id);
    out.push_str("\",\"object\":\"");
    out.push_str(object);
    out.push_str("\",\"created\":");
    push_num(out, p.created);
    out.push_str(",\"model\":");
    push_json_str(out, p.model);
    out.push_str(",\"system_fingerprint\":\"fp_llmesh_mock\"");
}

fn finish_reason(p: &Plan) -> &'static str {
    if p.content_filter {
        "content_filter"
    } else if p.tool.is_some() {
        "tool_calls"
    } else {
        "stop"
    }
}

pub(crate) fn render(p: &Plan) -> String {
    let mut out = String::with_capacity(512 + p.output_tokens as usize * 8);
    push_head(&mut out, p, "chat.completion");
    out.push_str(",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    match &p.tool {
        Some(t) => {
            out.push_str("null,\"refusal\":null,\"tool_calls\":[{\"id\":\"call_mock_");
            push_num(&mut out, p.id);
            out.push_str("\",\"type\":\"function\",\"function\":{\"name\":");
            push_json_str(&mut out, t.name);
            out.push_str(",\"arguments\":");
            push_json_str(&mut out, &t.args);
            out.push_str("}}]");
        }
        None => {
            p.push_text_json(&mut out);
            out.push_str(",\"refusal\":null");
        }
    }
    out.push_str("},\"logprobs\":null,\"finish_reason\":\"");
    out.push_str(finish_reason(p));
    out.push_str("\"}],\"usage\":");
    if p.omit_usage {
        out.push_str("null");
    } else {
        push_usage(&mut out, p);
    }
    out.push('}');
    out
}

pub(crate) fn render_stream(p: &Plan) -> Events {
    let n = p.output_tokens as usize;
    let mut head = String::with_capacity(160);
    push_head(&mut head, p, "chat.completion.chunk");
    head.push_str(",\"choices\":[{\"index\":0,\"delta\":");
    // Real OpenAI sends `"usage":null` on every chunk once usage was asked for.
    let tail = if p.include_usage {
        ",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}"
    } else {
        ",\"logprobs\":null,\"finish_reason\":null}]}"
    };
    let mut ev = Events::with_capacity((head.len() + tail.len() + 40) * (n + 6), n + 6);
    let chunk = |ev: &mut Events, delta: &dyn Fn(&mut String)| {
        ev.sse(|o| {
            o.push_str(&head);
            delta(o);
            o.push_str(tail);
        })
    };
    match &p.tool {
        Some(t) => {
            chunk(&mut ev, &|o| {
                o.push_str("{\"role\":\"assistant\",\"content\":null,\"refusal\":null}")
            });
            chunk(&mut ev, &|o| {
                o.push_str("{\"tool_calls\":[{\"index\":0,\"id\":\"call_mock_");
                push_num(o, p.id);
                o.push_str("\",\"type\":\"function\",\"function\":{\"name\":");
                push_json_str(o, t.name);
                o.push_str(",\"arguments\":\"\"}}]}");
            });
            for piece in t.arg_pieces() {
                chunk(&mut ev, &|o| {
                    o.push_str("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":");
                    push_json_str(o, piece);
                    o.push_str("}}]}");
                });
            }
        }
        None => {
            chunk(&mut ev, &|o| {
                o.push_str("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}")
            });
            for k in 0..n {
                chunk(&mut ev, &|o| {
                    o.push_str("{\"content\":");
                    p.push_piece_json(k, o);
                    o.push('}');
                });
            }
        }
    }
    ev.sse(|o| {
        o.push_str(&head);
        o.push_str("{},\"logprobs\":null,\"finish_reason\":\"");
        o.push_str(finish_reason(p));
        o.push_str(if p.include_usage {
            "\"}],\"usage\":null}"
        } else {
            "\"}]}"
        });
    });
    if p.include_usage && !p.omit_usage {
        ev.sse(|o| {
            push_head(o, p, "chat.completion.chunk");
            o.push_str(",\"choices\":[],\"usage\":");
            push_usage(o, p);
            o.push('}');
        });
    }
    ev.sse(|o| o.push_str("[DONE]"));
    ev
}

/// `/v1/embeddings`: one deterministic vector per input; usage counts words
/// (or elements of token arrays).
pub(crate) fn render_embeddings(body: &Value, id: u64) -> Result<String, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("'model' is required and must be a string")?;
    let input = body.get("input").ok_or("'input' is required")?;
    // Inputs are strings, or token arrays (counted one token per element).
    let one = |v: &Value| -> Result<(Vec<u8>, u64), String> {
        match v {
            Value::String(s) => Ok((s.as_bytes().to_vec(), s.split_whitespace().count() as u64)),
            Value::Array(t) if t.iter().all(Value::is_u64) => {
                Ok((v.to_string().into_bytes(), t.len() as u64))
            }
            _ => Err("'input' must be a string, an array of strings, or token arrays".into()),
        }
    };
    let items: Vec<(Vec<u8>, u64)> = match input {
        Value::String(_) => vec![one(input)?],
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_u64) => vec![one(input)?],
        Value::Array(a) if !a.is_empty() => a.iter().map(one).collect::<Result<_, _>>()?,
        _ => return Err("'input' must be a non-empty string or array".into()),
    };
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => crate::common::EMBEDDING_DIMS,
        Some(d) => match d.as_u64() {
            Some(n @ 1..) if n as usize <= crate::common::MAX_EMBEDDING_DIMS => n as usize,
            _ => {
                return Err(format!(
                    "'dimensions' must be an integer from 1 to {}",
                    crate::common::MAX_EMBEDDING_DIMS
                ))
            }
        },
    };
    // The official SDKs ask for base64 (little-endian f32) by default.
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let tokens = items.iter().map(|(_, n)| n).sum::<u64>().max(1);
    let mut out = String::with_capacity(128 + items.len() * 160);
    out.push_str("{\"object\":\"list\",\"data\":[");
    for (i, (text, _)) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"object\":\"embedding\",\"index\":");
        push_num(&mut out, i);
        out.push_str(",\"embedding\":");
        let vector = embedding(text, dims);
        if base64 {
            let mut raw = vec![0u8; 4 * dims];
            for (chunk, x) in raw.chunks_exact_mut(4).zip(vector) {
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            out.push('"');
            push_base64(&mut out, &raw);
            out.push('"');
        } else {
            out.push('[');
            for (j, x) in vector.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_num(&mut out, x);
            }
            out.push(']');
        }
        out.push('}');
    }
    out.push_str("],\"model\":");
    push_json_str(&mut out, model);
    out.push_str(",\"usage\":{\"prompt_tokens\":");
    push_num(&mut out, tokens);
    out.push_str(",\"total_tokens\":");
    push_num(&mut out, tokens);
    out.push_str("},\"id\":\"emb-mock-");
    push_num(&mut out, id);
    out.push_str("\"}");
    Ok(out)
}

/// Standard base64 with padding.
pub(crate) fn push_base64(out: &mut String, data: &[u8]) {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
}

pub(crate) fn render_models(models: &[&str], created: u64) -> String {
    let mut out = String::from("{\"object\":\"list\",\"data\":[");
    for (i, m) in models.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        push_json_str(&mut out, m);
        out.push_str(",\"object\":\"model\",\"created\":");
        push_num(&mut out, created);
        out.push_str(",\"owned_by\":\"llmesh-mock\"}");
    }
    out.push_str("]}");
    out
}

pub(crate) fn error_body(status: u16, error_type: Option<&str>, message: &str) -> String {
    let default_type = match status {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    };
    let mut out = String::with_capacity(128 + message.len());
    out.push_str("{\"error\":{\"message\":");
    push_json_str(&mut out, message);
    out.push_str(",\"type\":");
    // The real API puts e.g. `context_length_exceeded` in `code` with type
    // `invalid_request_error`; we put the requested type in both so a
    // client keyed on either field sees it.
    push_json_str(&mut out, error_type.unwrap_or(default_type));
    out.push_str(",\"param\":null,\"code\":");
    match error_type {
        Some(t) => push_json_str(&mut out, t),
        None => out.push_str("null"),
    }
    out.push_str("}}");
    out
}

/// An error body with every field chosen, e.g. the Responses API's
/// `previous_response_not_found`.
pub(crate) fn error_body_with(
    message: &str,
    error_type: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> String {
    serde_json::json!({
        "error": {"message": message, "type": error_type, "param": param, "code": code}
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::push_base64;

    #[test]
    fn base64_matches_reference() {
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            push_base64(&mut out, input);
            assert_eq!(out, want);
        }
    }
}
