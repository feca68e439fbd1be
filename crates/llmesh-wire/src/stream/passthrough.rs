//! Same dialect on both sides: forward event bytes untouched.
//!
//! This is the hot path, so events are classified with substring searches on
//! the raw bytes and JSON is parsed only for the few events that can carry
//! usage, the model name or the end marker. The one rewrite: an OpenAI
//! usage chunk the client did not ask for (upstream requests always ask) is
//! dropped, or re-serialized without `usage` if it also carries choices.

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
    anthropic_usage: AnthropicUsage,
}

fn has(raw: &[u8], needle: &[u8]) -> bool {
    memmem::find(raw, needle).is_some()
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
        if !has(raw, b"data") {
            return true;
        }
        if raw.len() < 64 && has(raw, b"[DONE]") {
            if SseEvent::parse(raw).is_some_and(|e| e.data.trim() == "[DONE]") {
                stats.completed = true;
            }
            return true;
        }
        // Several servers send `"usage":null` on every chunk.
        let usage =
            has(raw, b"\"usage\"") && !has(raw, b"\"usage\":null") && !has(raw, b"\"usage\": null");
        if usage || !self.model_seen {
            if let Some(mut v) = parse_json(raw) {
                if !self.model_seen {
                    if let Some(m) = v.get("model").and_then(Value::as_str) {
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
        if has(raw, b"content_block_delta") {
            stats.content_chunks += 1;
            return;
        }
        let interesting =
            has(raw, b"message_start") || has(raw, b"message_delta") || has(raw, b"message_stop");
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
        if has(raw, b"\"parts\"") {
            stats.content_chunks += 1;
        }
        if !has(raw, b"usageMetadata") && !has(raw, b"finishReason") && self.model_seen {
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
/// bytes. JSON string escaping keeps these needles from matching inside
/// generated text.
fn openai_content_bearing(raw: &[u8]) -> bool {
    if has(raw, b"\"tool_calls\":[") || has(raw, b"\"tool_calls\": [") {
        return true;
    }
    has(raw, b"\"content\"")
        && !has(raw, b"\"content\":\"\"")
        && !has(raw, b"\"content\": \"\"")
        && !has(raw, b"\"content\":null")
        && !has(raw, b"\"content\": null")
}
