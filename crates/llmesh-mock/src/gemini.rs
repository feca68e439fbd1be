//! Gemini dialect: `generateContent`, `streamGenerateContent` (SSE with
//! `alt=sse`, otherwise a streamed JSON array, like the real API), models.

use serde_json::Value;

use crate::body::{push_json_str, push_num, Events};
use crate::common::{count_words, push_text, word_piece, ChatReq, Plan};

/// `model` comes from the URL (`/v1beta/models/{model}:method`).
pub(crate) fn parse_chat<'a>(
    body: &'a Value,
    model: &'a str,
    stream: bool,
    sse: bool,
) -> Result<ChatReq<'a>, String> {
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    let mut words: u64 = contents.iter().map(count_words).sum();
    if let Some(s) = body
        .get("systemInstruction")
        .or_else(|| body.get("system_instruction"))
    {
        words += count_words(s);
    }
    let last_is_fn_response = contents
        .last()
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .is_some_and(|parts| {
            parts.iter().any(|p| {
                p.get("functionResponse")
                    .or_else(|| p.get("function_response"))
                    .is_some()
            })
        });
    let tool = if last_is_fn_response {
        None
    } else {
        body.get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| {
                t.get("functionDeclarations")
                    .or_else(|| t.get("function_declarations"))
                    .and_then(Value::as_array)
                    .and_then(|d| d.first())
            })
            .find_map(|d| d.get("name").and_then(Value::as_str))
    };
    Ok(ChatReq {
        model,
        stream,
        include_usage: false,
        sse,
        input_tokens: words.max(1),
        first_word: 0,
        last_user_text: None,
        assistant_turns: 0,
        tool,
        forced_tool: false,
    })
}

fn finish_reason(p: &Plan) -> &'static str {
    if p.content_filter {
        "SAFETY"
    } else {
        // Gemini reports STOP for function calls too.
        "STOP"
    }
}

fn push_usage(out: &mut String, p: &Plan) {
    out.push_str(",\"usageMetadata\":{\"promptTokenCount\":");
    push_num(out, p.input_tokens);
    out.push_str(",\"candidatesTokenCount\":");
    push_num(out, p.output_tokens);
    out.push_str(",\"totalTokenCount\":");
    push_num(out, p.input_tokens + u64::from(p.output_tokens));
    if p.cached_tokens > 0 {
        out.push_str(",\"cachedContentTokenCount\":");
        push_num(out, p.cached_tokens);
    }
    out.push('}');
}

/// One GenerateContentResponse. `part` writes the content of the single
/// part; `last` adds finishReason and usageMetadata.
fn push_response(out: &mut String, p: &Plan, part: impl FnOnce(&mut String), last: bool) {
    out.push_str("{\"candidates\":[{\"content\":{\"parts\":[");
    part(out);
    out.push_str("],\"role\":\"model\"}");
    if last {
        out.push_str(",\"finishReason\":\"");
        out.push_str(finish_reason(p));
        out.push('"');
        if p.content_filter {
            out.push_str(",\"safetyRatings\":[{\"category\":\"HARM_CATEGORY_DANGEROUS_CONTENT\",\"probability\":\"HIGH\",\"blocked\":true}]");
        }
    }
    out.push_str(",\"index\":0}]");
    if last {
        push_usage(out, p);
    }
    out.push_str(",\"modelVersion\":");
    push_json_str(out, p.model);
    out.push_str(",\"responseId\":\"mock-");
    push_num(out, p.id);
    out.push_str("\"}");
}

fn push_function_call(out: &mut String, name: &str, args: &str) {
    out.push_str("{\"functionCall\":{\"name\":");
    push_json_str(out, name);
    out.push_str(",\"args\":");
    out.push_str(args);
    out.push_str("}}");
}

pub(crate) fn render(p: &Plan) -> String {
    let mut out = String::with_capacity(384 + p.output_tokens as usize * 8);
    push_response(
        &mut out,
        p,
        |o| match &p.tool {
            Some(t) => push_function_call(o, t.name, &t.args),
            None => {
                o.push_str("{\"text\":\"");
                push_text(o, p.output_tokens);
                o.push_str("\"}");
            }
        },
        true,
    );
    out
}

pub(crate) fn render_stream(p: &Plan) -> Events {
    let n = p.output_tokens as usize;
    let mut ev = Events::with_capacity(300 + n * 220, n + 1);
    // Framing: SSE events, or the elements of one JSON array.
    let emit = |ev: &mut Events, first: bool, last: bool, body: &dyn Fn(&mut String)| {
        if p.sse {
            ev.sse(body);
        } else {
            ev.buf.push_str(if first { "[" } else { ",\r\n" });
            body(&mut ev.buf);
            if last {
                ev.buf.push(']');
            }
            ev.end_event();
        }
    };
    match &p.tool {
        Some(t) => emit(&mut ev, true, true, &|o| {
            push_response(o, p, |o| push_function_call(o, t.name, &t.args), true)
        }),
        None if n == 0 => emit(&mut ev, true, true, &|o| {
            push_response(o, p, |o| o.push_str("{\"text\":\"\"}"), true)
        }),
        None => {
            for i in 0..n {
                let (sep, w) = word_piece(i);
                let last = i + 1 == n;
                emit(&mut ev, i == 0, last, &|o| {
                    push_response(
                        o,
                        p,
                        |o| {
                            o.push_str("{\"text\":\"");
                            o.push_str(sep);
                            o.push_str(w);
                            o.push_str("\"}");
                        },
                        last,
                    )
                });
            }
        }
    }
    ev
}

pub(crate) fn render_models(models: &[&str]) -> String {
    let mut out = String::from("{\"models\":[");
    for (i, m) in models.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_json_str(&mut out, &format!("models/{m}"));
        out.push_str(",\"displayName\":");
        push_json_str(&mut out, m);
        out.push_str(
            ",\"supportedGenerationMethods\":[\"generateContent\",\"streamGenerateContent\"]}",
        );
    }
    out.push_str("]}");
    out
}

pub(crate) fn error_body(status: u16, error_type: Option<&str>, message: &str) -> String {
    let default_status = match status {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    let mut out = String::with_capacity(96 + message.len());
    out.push_str("{\"error\":{\"code\":");
    push_num(&mut out, status);
    out.push_str(",\"message\":");
    push_json_str(&mut out, message);
    out.push_str(",\"status\":");
    push_json_str(&mut out, error_type.unwrap_or(default_status));
    out.push_str("}}");
    out
}
