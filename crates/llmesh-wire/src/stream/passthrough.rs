//! Same dialect on both sides: forward event bytes untouched.
//!
//! This is the hot path, so events are classified with substring searches on
//! the raw bytes and JSON is parsed only for the few events that can carry
//! usage, the model name or the end marker. The one rewrite: an OpenAI
//! usage chunk the client did not ask for (upstream requests always ask) is
//! dropped, or re-serialized without `usage` if it also carries choices.

use std::sync::LazyLock;

use memchr::memmem;
use serde_json::Value;

use super::decode::AnthropicUsage;
use super::{write_json, Stats};
use crate::sse::{write_event, SseEvent};
use crate::usage::{gemini_usage, openai_usage};
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
}

const NEEDLES: [&[u8]; 12] = [
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
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
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

/// Whether an OpenAI chunk carries text or tool-call data, judged from its
/// bytes. JSON string escaping keeps the key needles from matching inside
/// generated text.
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
