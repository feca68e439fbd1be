//! AWS Bedrock runtime: `Converse` / `ConverseStream` (rendered from the
//! shared plan in the Converse shape, streams as AWS event-stream
//! messages), and `InvokeModel` / `InvokeModelWithResponseStream` for
//! Anthropic models (the Anthropic renderers; each streamed SSE event's JSON
//! travels base64-encoded in a `chunk` message, as Bedrock sends it).
//!
//! Errors are `{"message": "..."}` with the type in the `x-amzn-ErrorType`
//! header. SigV4 is not checked.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use llmesh_wire::bedrock_event_frame;
use serde_json::{json, Value};

use crate::behavior::Layers;
use crate::body::{push_json_str, ActiveGuard, Events, MockBody, Pacing};
use crate::common::{assistant_turns, last_user_text, prefill_words, ChatReq, Plan};

/// The `anthropic_version` Bedrock's Anthropic models require.
pub(crate) const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The message of Bedrock's 404 for an unknown model id.
pub(crate) const UNKNOWN_MODEL: &str =
    "Could not resolve the foundation model from the provided model identifier.";

/// The message of Bedrock's 429.
pub(crate) const THROTTLED: &str = "Too many requests, please wait before trying again.";

/// Model ids the mock does not know (besides the `model_not_found`
/// behavior).
pub(crate) fn unknown_model(model: &str) -> bool {
    model.starts_with("missing.")
}

/// `x-amzn-ErrorType` for an error answer: the behavior's `error_type`, or
/// the type Bedrock uses for the status.
pub(crate) fn error_type_header(status: u16, error_type: Option<&str>) -> String {
    let ty = error_type.unwrap_or(match status {
        400 | 413 | 422 => "ValidationException",
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ if status < 500 => "ValidationException",
        _ => "InternalServerException",
    });
    format!("{ty}:http://internal.amazon.com/coral/com.amazon.bedrock/")
}

pub(crate) fn error_body(message: &str) -> String {
    let mut out = String::with_capacity(16 + message.len());
    out.push_str("{\"message\":");
    push_json_str(&mut out, message);
    out.push('}');
    out
}

/// Words of Converse content blocks: `text`, and the `text` items of a
/// `toolResult`'s content.
fn words(blocks: &Value) -> u64 {
    let count = |t: &str| t.split_whitespace().count() as u64;
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let text = b.get("text").and_then(Value::as_str).map_or(0, count);
            let result = b.pointer("/toolResult/content").map_or(0, words);
            text + result
        })
        .sum()
}

/// A Converse request; `model` is the decoded model id of the URL.
pub(crate) fn parse_converse<'a>(
    body: &'a Value,
    model: &'a str,
    stream: bool,
) -> Result<ChatReq<'a>, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("1 validation error detected: Value at 'messages' failed to satisfy constraint: Member must not be null")?;
    let mut input: u64 = messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(words)
        .sum();
    if let Some(system) = body.get("system") {
        input += words(system);
    }
    let last_is_tool_result = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| b.get("toolResult").is_some()));
    let config = body.get("toolConfig");
    let forced = config
        .and_then(|c| c.pointer("/toolChoice/tool/name"))
        .and_then(Value::as_str);
    let tool = if last_is_tool_result {
        None
    } else {
        forced.or_else(|| {
            config
                .and_then(|c| c.pointer("/tools/0/toolSpec/name"))
                .and_then(Value::as_str)
        })
    };
    Ok(ChatReq {
        model,
        stream,
        include_usage: false,
        sse: false,
        input_tokens: input.max(1),
        first_word: prefill_words(messages, false),
        last_user_text: last_user_text(messages),
        assistant_turns: assistant_turns(messages),
        forced_tool: forced.is_some() && tool.is_some(),
        tool,
    })
}

fn stop_reason(p: &Plan) -> &'static str {
    if p.content_filter {
        "content_filtered"
    } else if p.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    }
}

/// Converse usage: like Anthropic's, `inputTokens` leaves out the tokens
/// read from and written to the prompt cache.
fn usage(p: &Plan) -> Value {
    let mut u = json!({
        "inputTokens": p.input_tokens - p.cached_tokens - p.cache_write_tokens,
        "outputTokens": p.output_tokens,
        "totalTokens": p.input_tokens + u64::from(p.output_tokens),
    });
    if p.cached_tokens > 0 {
        u["cacheReadInputTokens"] = json!(p.cached_tokens);
    }
    if p.cache_write_tokens > 0 {
        u["cacheWriteInputTokens"] = json!(p.cache_write_tokens);
    }
    u
}

fn tool_use_id(p: &Plan) -> String {
    format!("tooluse_mock_{}", p.id)
}

/// A complete Converse answer.
pub(crate) fn render_converse(p: &Plan) -> String {
    let content = match &p.tool {
        Some(t) => {
            let input: Value = serde_json::from_str(&t.args).unwrap_or_else(|_| json!({}));
            json!([{"toolUse": {"toolUseId": tool_use_id(p), "name": t.name, "input": input}}])
        }
        None => json!([{"text": p.text()}]),
    };
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(p),
        "usage": usage(p),
        "metrics": {"latencyMs": 1},
    })
    .to_string()
}

/// Event-stream messages, one paced event each.
struct Frames {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Frames {
    fn new() -> Self {
        Frames {
            buf: Vec::new(),
            ends: Vec::new(),
        }
    }

    fn event(&mut self, event_type: &str, payload: &Value) {
        self.buf.extend(bedrock_event_frame(
            event_type,
            payload.to_string().as_bytes(),
        ));
        self.ends.push(self.buf.len());
    }

    fn response(self, layers: &Layers, active: ActiveGuard) -> Response<MockBody> {
        let pacing = Pacing {
            first: layers.ttft(),
            between: layers.chunk_delay(),
            reset_after: layers.reset_after_chunks().map(|n| n as usize),
            per_event: false,
        };
        let body = MockBody::frames(Bytes::from(self.buf), self.ends, pacing, Some(active));
        let mut r = Response::new(body);
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

/// A ConverseStream answer: `messageStart`, the content block (one
/// `contentBlockDelta` per word, or a `toolUse` start and two argument
/// pieces), `contentBlockStop`, `messageStop`, and `metadata` with the usage.
pub(crate) fn converse_stream(
    p: &Plan,
    layers: &Layers,
    active: ActiveGuard,
) -> Response<MockBody> {
    let mut f = Frames::new();
    f.event("messageStart", &json!({"role": "assistant"}));
    match &p.tool {
        Some(t) => {
            f.event(
                "contentBlockStart",
                &json!({"start": {"toolUse": {"toolUseId": tool_use_id(p), "name": t.name}},
                    "contentBlockIndex": 0}),
            );
            for piece in t.arg_pieces() {
                f.event(
                    "contentBlockDelta",
                    &json!({"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": 0}),
                );
            }
        }
        None => {
            for k in 0..p.output_tokens as usize {
                f.event(
                    "contentBlockDelta",
                    &json!({"delta": {"text": p.piece(k)}, "contentBlockIndex": 0}),
                );
            }
        }
    }
    f.event("contentBlockStop", &json!({"contentBlockIndex": 0}));
    f.event("messageStop", &json!({"stopReason": stop_reason(p)}));
    f.event(
        "metadata",
        &json!({"usage": usage(p), "metrics": {"latencyMs": 1}}),
    );
    f.response(layers, active)
}

/// An InvokeModelWithResponseStream answer for an Anthropic model: each
/// event of the Anthropic stream as `{"bytes": base64(event JSON)}` in a
/// `chunk` message; `message_stop` carries Bedrock's
/// `amazon-bedrock-invocationMetrics`.
pub(crate) fn invoke_stream(
    p: &Plan,
    events: &Events,
    layers: &Layers,
    active: ActiveGuard,
) -> Response<MockBody> {
    let mut f = Frames::new();
    for ev in events.each() {
        let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let mut json = data.to_owned();
        if let Ok(mut v) = serde_json::from_str::<Value>(data) {
            if v.get("type").and_then(Value::as_str) == Some("message_stop") {
                v["amazon-bedrock-invocationMetrics"] = json!({
                    "inputTokenCount": p.input_tokens - p.cached_tokens - p.cache_write_tokens,
                    "outputTokenCount": p.output_tokens,
                    "invocationLatency": 1,
                    "firstByteLatency": 1,
                });
                json = v.to_string();
            }
        }
        let mut b64 = String::new();
        crate::openai::push_base64(&mut b64, json.as_bytes());
        f.event("chunk", &json!({"bytes": b64}));
    }
    f.response(layers, active)
}

/// Why an InvokeModel body for an Anthropic model is refused, as Bedrock
/// words it.
pub(crate) fn check_invoke_body(body: &Value) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err("Malformed input request: expected a JSON object".into());
    };
    for key in ["model", "stream"] {
        if obj.contains_key(key) {
            return Err(format!(
                "Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input and try again."
            ));
        }
    }
    match obj.get("anthropic_version").and_then(Value::as_str) {
        Some(ANTHROPIC_VERSION) => Ok(()),
        Some(_) => Err("Invalid API version: anthropic_version must be bedrock-2023-05-31".into()),
        None => Err(
            "Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again."
                .into(),
        ),
    }
}

/// `GET /foundation-models`-like listing (for the models endpoint match).
pub(crate) fn render_models(models: &[&str]) -> String {
    let summaries: Vec<Value> = models
        .iter()
        .map(|m| json!({"modelId": m, "modelName": m}))
        .collect();
    json!({"modelSummaries": summaries}).to_string()
}

/// Percent-decode a URL path segment (`%3A` → `:`); invalid escapes stay
/// as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_model_ids() {
        assert_eq!(
            percent_decode("anthropic.claude-3-5-sonnet-20240620-v1%3A0"),
            "anthropic.claude-3-5-sonnet-20240620-v1:0"
        );
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[test]
    fn converse_words_count_text_and_tool_results() {
        let body = json!({"system": [{"text": "be brief"}], "messages": [
            {"role": "user", "content": [{"text": "one two"}, {"image": {"format": "png"}}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t",
                "content": [{"text": "three four five"}, {"json": {"a": 1}}]}}]}],
            "toolConfig": {"tools": [{"toolSpec": {"name": "f"}}]}});
        let chat = parse_converse(&body, "m", false).unwrap();
        assert_eq!(chat.input_tokens, 7);
        assert_eq!(chat.tool, None);
        assert_eq!(chat.assistant_turns, 1);
        assert!(parse_converse(&json!({}), "m", false).is_err());
    }

    #[test]
    fn error_types_follow_the_status() {
        assert_eq!(
            error_type_header(429, None),
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
        );
        assert!(error_type_header(404, None).starts_with("ResourceNotFoundException:"));
        assert!(
            error_type_header(500, Some("ModelErrorException")).starts_with("ModelErrorException:")
        );
        assert_eq!(error_body("a \"b\""), r#"{"message":"a \"b\""}"#);
    }

    #[test]
    fn invoke_bodies() {
        assert!(check_invoke_body(&json!({"anthropic_version": ANTHROPIC_VERSION})).is_ok());
        let e = check_invoke_body(&json!({"anthropic_version": ANTHROPIC_VERSION, "model": "x"}))
            .unwrap_err();
        assert!(e.contains("extraneous key [model]"));
        assert!(check_invoke_body(&json!({}))
            .unwrap_err()
            .contains("anthropic_version"));
        assert!(check_invoke_body(&json!({"anthropic_version": "vertex-2023-10-16"})).is_err());
    }
}
