//! Same dialect on both sides: forward event bytes untouched.
//!
//! This is the hot path, so events are classified with substring searches on
//! the raw bytes and JSON is parsed only for the few events that can carry
//! usage, the model name or the end marker. The one rewrite: an OpenAI
//! usage chunk the client did not ask for (upstream requests always ask) is
//! dropped, or re-serialized without `usage` if it also carries choices.
//!
//! Responses API streams are classified by their event type (the `event:`
//! line, or the data's `"type":"response.…"`); only `response.created` and
//! the terminal `response.completed`/`response.incomplete`/`response.failed`
//! are parsed, the latter keeping the final response object.

use std::sync::LazyLock;

use memchr::memmem;
use serde_json::Value;

use super::decode::AnthropicUsage;
use super::{write_error_event, write_json, Stats};
use crate::sse::{write_event, SseEvent};
use crate::usage::{gemini_usage, openai_usage, responses_usage};
use crate::Dialect;

#[derive(Debug)]
pub(crate) struct Passthrough {
    dialect: Dialect,
    include_usage: bool,
    model_seen: bool,
    /// Chunks parsed looking for the model; bounded so a server that never
    /// names it does not cost a parse per chunk.
    model_tries: u8,
    anthropic_usage: AnthropicUsage,
    /// Responses: the last `sequence_number` forwarded, so an error event
    /// written by the proxy continues the sequence.
    last_sequence: Option<u64>,
}

/// Needles searched on forwarded events. Building a searcher costs more
/// than running it on a short event, so each is built once per process.
#[derive(Clone, Copy)]
enum Needle {
    Data,
    Done,
    Usage,
    ToolCalls,
    Content,
    ContentBlockDelta,
    MessageStart,
    MessageDelta,
    MessageStop,
    Parts,
    UsageMetadata,
    FinishReason,
    ResponseType,
    SequenceNumber,
    OpenAiFinish,
    Refusal,
    ToolUse,
}

const NEEDLES: [&[u8]; 17] = [
    b"data",
    b"[DONE]",
    b"\"usage\"",
    b"\"tool_calls\"",
    b"\"content\"",
    b"content_block_delta",
    b"message_start",
    b"message_delta",
    b"message_stop",
    b"\"parts\"",
    b"usageMetadata",
    b"finishReason",
    b"\"type\":\"",
    b"\"sequence_number\"",
    b"\"finish_reason\"",
    b"\"refusal\"",
    b"\"tool_use\"",
];

static FINDERS: LazyLock<Vec<memmem::Finder<'static>>> =
    LazyLock::new(|| NEEDLES.iter().map(memmem::Finder::new).collect());

fn find(raw: &[u8], needle: Needle) -> Option<usize> {
    FINDERS.get(needle as usize)?.find(raw)
}

fn has(raw: &[u8], needle: Needle) -> bool {
    find(raw, needle).is_some()
}

/// The first byte of the JSON value of the first `needle` key in `raw`
/// (skipping the colon and whitespace), e.g. `n` for null, `[` for an array.
fn value_start(raw: &[u8], needle: Needle) -> Option<(u8, &[u8])> {
    let key_end = find(raw, needle)? + NEEDLES.get(needle as usize)?.len();
    let mut rest = raw.get(key_end..)?;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b':' || b.is_ascii_whitespace() {
            rest = tail;
        } else {
            return Some((b, tail));
        }
    }
    None
}

fn parse_json(raw: &[u8]) -> Option<Value> {
    let ev = SseEvent::parse(raw)?;
    serde_json::from_str(&ev.data).ok()
}

impl Passthrough {
    pub(crate) fn new(dialect: Dialect, include_usage: bool) -> Self {
        Passthrough {
            dialect,
            include_usage,
            model_seen: false,
            model_tries: 0,
            anthropic_usage: AnthropicUsage::default(),
            last_sequence: None,
        }
    }

    pub(crate) fn on_event(&mut self, raw: &[u8], out: &mut Vec<u8>, stats: &mut Stats) {
        let forward = match self.dialect {
            Dialect::OpenAi => self.openai(raw, out, stats),
            Dialect::Anthropic => {
                self.anthropic(raw, stats);
                true
            }
            Dialect::Gemini => {
                self.gemini(raw, stats);
                true
            }
            Dialect::Responses => {
                self.responses(raw, stats);
                true
            }
            // Never built: Bedrock is no client dialect, so there is no
            // Bedrock-to-Bedrock pass-through.
            Dialect::Bedrock => true,
        };
        if forward {
            out.extend_from_slice(raw);
        }
    }

    /// Returns whether `raw` should be forwarded as is.
    fn openai(&mut self, raw: &[u8], out: &mut Vec<u8>, stats: &mut Stats) -> bool {
        if !has(raw, Needle::Data) {
            return true;
        }
        if raw.len() < 64 && has(raw, Needle::Done) {
            if SseEvent::parse(raw).is_some_and(|e| e.data.trim() == "[DONE]") {
                stats.completed = true;
            }
            return true;
        }
        // Several servers send `"usage":null` on every chunk.
        let usage = value_start(raw, Needle::Usage).is_some_and(|(b, _)| b == b'{');
        let want_model = !self.model_seen && self.model_tries < 3;
        if usage || want_model {
            if let Some(mut v) = parse_json(raw) {
                if want_model {
                    self.model_tries += 1;
                    // Azure opens with a filter-results chunk whose model is "".
                    if let Some(m) = v
                        .get("model")
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                    {
                        stats.model = Some(m.to_owned());
                        self.model_seen = true;
                    }
                }
                if let Some(u) = v.get("usage").and_then(openai_usage) {
                    stats.usage = Some(u);
                    if !self.include_usage {
                        return self.strip_usage(&mut v, out, stats);
                    }
                }
            }
        }
        if openai_content_bearing(raw) {
            stats.content_chunks += 1;
        }
        openai_signals(raw, stats);
        true
    }

    /// Drop a usage-only chunk, or re-send one with choices minus `usage`.
    fn strip_usage(&mut self, v: &mut Value, out: &mut Vec<u8>, stats: &mut Stats) -> bool {
        let has_choices = v
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        if has_choices {
            if let Some(obj) = v.as_object_mut() {
                obj.remove("usage");
            }
            let mut data = Vec::new();
            write_json(&mut data, v);
            if openai_content_bearing(&data) {
                stats.content_chunks += 1;
            }
            write_event(out, None, &data);
        }
        false
    }

    fn anthropic(&mut self, raw: &[u8], stats: &mut Stats) {
        if has(raw, Needle::ContentBlockDelta) {
            stats.content_chunks += 1;
            return;
        }
        // The first tool called opens a `tool_use` content block.
        if !stats.tool_seen() && !has(raw, Needle::MessageDelta) && has(raw, Needle::ToolUse) {
            if let Some(v) = parse_json(raw) {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                    stats.said().tool = Some(name.to_owned());
                }
            }
            return;
        }
        let interesting = has(raw, Needle::MessageStart)
            || has(raw, Needle::MessageDelta)
            || has(raw, Needle::MessageStop);
        if !interesting {
            return;
        }
        let Some(v) = parse_json(raw) else { return };
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let msg = v.get("message").unwrap_or(&Value::Null);
                if let Some(m) = msg.get("model").and_then(Value::as_str) {
                    stats.model = Some(m.to_owned());
                }
                if let Some(u) = msg.get("usage") {
                    self.anthropic_usage.update(u);
                    stats.usage = Some(self.anthropic_usage.usage());
                }
            }
            Some("message_delta") => {
                if let Some(stop) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    let said = stats.said();
                    said.finish = Some(crate::reasons::anthropic_to_openai(stop));
                    said.refusal |= stop == "refusal";
                }
                if let Some(u) = v.get("usage") {
                    self.anthropic_usage.update(u);
                    stats.usage = Some(self.anthropic_usage.usage());
                }
            }
            Some("message_stop") => stats.completed = true,
            _ => {}
        }
    }

    fn gemini(&mut self, raw: &[u8], stats: &mut Stats) {
        if has(raw, Needle::Parts) {
            stats.content_chunks += 1;
        }
        if !has(raw, Needle::UsageMetadata) && !has(raw, Needle::FinishReason) && self.model_seen {
            return;
        }
        let Some(v) = parse_json(raw) else { return };
        if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
            stats.model = Some(m.to_owned());
            self.model_seen = true;
        }
        if let Some(u) = v.get("usageMetadata").and_then(gemini_usage) {
            stats.usage = Some(u);
        }
        let finished = v
            .get("candidates")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c.get("finishReason").is_some()));
        if finished {
            stats.completed = true;
        }
    }
}

impl Passthrough {
    /// Append an error event in the client's dialect.
    pub(crate) fn write_error(&self, kind: &str, code: &str, message: &str, out: &mut Vec<u8>) {
        if self.dialect == Dialect::Responses {
            let mut seq = self.last_sequence.map_or(0, |n| n.saturating_add(1));
            super::encode_responses::write_error_event(&mut seq, code, message, out);
        } else {
            write_error_event(self.dialect, kind, code, message, out);
        }
    }

    fn responses(&mut self, raw: &[u8], stats: &mut Stats) {
        if let Some((b, rest)) = value_start(raw, Needle::SequenceNumber) {
            let digits = std::iter::once(b)
                .chain(rest.iter().copied())
                .take_while(u8::is_ascii_digit);
            let mut n: Option<u64> = None;
            for d in digits {
                n = Some(
                    n.unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(u64::from(d - b'0')),
                );
            }
            if n.is_some() {
                self.last_sequence = n;
            }
        }
        let Some(kind) = responses_event_type(raw) else {
            return;
        };
        match kind {
            b"response.output_text.delta" | b"response.function_call_arguments.delta" => {
                stats.content_chunks += 1;
            }
            b"response.created" if !self.model_seen => {
                let model = parse_json(raw).and_then(|v| {
                    v.pointer("/response/model")
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                });
                if let Some(m) = model {
                    stats.model = Some(m);
                    self.model_seen = true;
                }
            }
            b"response.completed" | b"response.incomplete" | b"response.failed" => {
                let Some(mut v) = parse_json(raw) else { return };
                let Some(response) = v.get_mut("response").map(Value::take) else {
                    return;
                };
                if let Some(m) = response.get("model").and_then(Value::as_str) {
                    if !m.is_empty() {
                        stats.model = Some(m.to_owned());
                    }
                }
                if let Some(u) = response.get("usage").and_then(responses_usage) {
                    stats.usage = Some(u);
                }
                if kind != b"response.failed" {
                    stats.completed = true;
                    stats.final_response = Some(response);
                }
            }
            _ => {}
        }
    }
}

/// The type of a Responses stream event: its `event:` line, else the first
/// `"type":"response.…"`/`"type":"error"` in its data (nested objects never
/// have such a type, and string values cannot contain an unescaped quote).
fn responses_event_type(raw: &[u8]) -> Option<&[u8]> {
    for line in raw.split(|b| *b == b'\n' || *b == b'\r') {
        if let Some(name) = line.strip_prefix(b"event:") {
            let name = name.strip_prefix(b" ").unwrap_or(name);
            if !name.is_empty() {
                return Some(name);
            }
        }
    }
    let mut rest = raw;
    while let Some(at) = find(rest, Needle::ResponseType) {
        let value = rest.get(at + NEEDLES.get(Needle::ResponseType as usize)?.len()..)?;
        let end = memchr::memchr(b'"', value)?;
        let name = value.get(..end)?;
        if name.starts_with(b"response.") || name == b"error" {
            return Some(name);
        }
        rest = value;
    }
    None
}

/// Whether an OpenAI chunk carries text or tool-call data, judged from its
/// bytes. JSON string escaping keeps the key needles from matching inside
/// generated text.
/// The finish reason, the first tool called and a refusal of an OpenAI
/// chunk, by byte search: JSON is parsed only for the chunk that names the
/// first tool.
fn openai_signals(raw: &[u8], stats: &mut Stats) {
    if let Some((b'"', rest)) = value_start(raw, Needle::OpenAiFinish) {
        let reason = rest.split(|&b| b == b'"').next().unwrap_or_default();
        stats.said().finish = Some(match reason {
            b"stop" => "stop",
            b"length" => "length",
            b"tool_calls" | b"function_call" => "tool_calls",
            b"content_filter" => "content_filter",
            _ => "other",
        });
    }
    if matches!(value_start(raw, Needle::Refusal), Some((b'"', _))) {
        stats.said().refusal = true;
    }
    if !stats.tool_seen() && value_start(raw, Needle::ToolCalls).is_some_and(|(b, _)| b == b'[') {
        let name = parse_json(raw).and_then(|v| {
            v.pointer("/choices/0/delta/tool_calls/0/function/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if let Some(name) = name {
            stats.said().tool = Some(name);
        }
    }
}

fn openai_content_bearing(raw: &[u8]) -> bool {
    if value_start(raw, Needle::ToolCalls).is_some_and(|(b, _)| b == b'[') {
        return true;
    }
    match value_start(raw, Needle::Content) {
        Some((b'"', rest)) => rest.first() != Some(&b'"'),
        Some((b'n', _)) | None => false,
        Some(_) => true,
    }
}
