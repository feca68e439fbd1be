//! Upstream SSE events → canonical events.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::decode_bedrock::BedrockDecoder;
use super::Ev;
use crate::error::extract;
use crate::json::{bad_upstream, synth_id};
use crate::sse::SseEvent;
use crate::usage::{gemini_usage, openai_usage};
use crate::{reasons, Dialect, TranslateError, Usage, STRUCTURED_OUTPUT_TOOL};

#[derive(Debug)]
pub(crate) enum Decoder {
    OpenAi(OpenAiDecoder),
    Anthropic(AnthropicDecoder),
    Gemini(GeminiDecoder),
    /// Binary event-stream messages, not SSE: fed through
    /// [`BedrockDecoder::push`], never [`Decoder::decode`].
    Bedrock(BedrockDecoder),
}

impl Decoder {
    /// `None` for a Responses upstream: its streams are only passed through.
    pub(crate) fn new(upstream: Dialect) -> Option<Self> {
        Some(match upstream {
            Dialect::OpenAi => Decoder::OpenAi(OpenAiDecoder::default()),
            Dialect::Anthropic => Decoder::Anthropic(AnthropicDecoder::default()),
            Dialect::Gemini => Decoder::Gemini(GeminiDecoder::default()),
            Dialect::Bedrock => Decoder::Bedrock(BedrockDecoder::default()),
            Dialect::Responses => return None,
        })
    }

    pub(crate) fn decode(
        &mut self,
        ev: &SseEvent,
        sink: &mut Vec<Ev>,
    ) -> Result<(), TranslateError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let dialect = match self {
            Decoder::OpenAi(_) => Dialect::OpenAi,
            Decoder::Anthropic(_) => Dialect::Anthropic,
            Decoder::Gemini(_) => Dialect::Gemini,
            // Its bytes are not SSE (see `push`).
            Decoder::Bedrock(_) => return Ok(()),
        };
        if dialect == Dialect::OpenAi && data == "[DONE]" {
            sink.push(Ev::Done);
            return Ok(());
        }
        let value: Value = serde_json::from_str(data).map_err(|_| {
            bad_upstream(format!(
                "{} stream event is not valid JSON",
                dialect.as_str()
            ))
        })?;
        let is_error = value.get("error").is_some()
            || value.get("type").and_then(Value::as_str) == Some("error");
        if is_error {
            if let Some(e) = extract(dialect, &value) {
                sink.push(Ev::Error(e));
                return Ok(());
            }
        }
        match self {
            Decoder::OpenAi(d) => d.decode(&value, sink),
            Decoder::Anthropic(d) => d.decode(&value, sink),
            Decoder::Gemini(d) => d.decode(&value, sink),
            Decoder::Bedrock(_) => {}
        }
        Ok(())
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Map an upstream's free-form finish reason onto the known vocabulary.
fn known_finish(reason: &str) -> &'static str {
    match reason {
        "length" => "length",
        "tool_calls" | "function_call" => "tool_calls",
        "content_filter" => "content_filter",
        _ => "stop",
    }
}

#[derive(Debug, Default)]
pub(crate) struct OpenAiDecoder {
    started: bool,
    tools_started: HashSet<usize>,
}

impl OpenAiDecoder {
    fn decode(&mut self, v: &Value, sink: &mut Vec<Ev>) {
        if !self.started {
            self.started = true;
            let id = str_of(v, "id").unwrap_or_default();
            sink.push(Ev::Start {
                id: id.strip_prefix("chatcmpl-").unwrap_or(id).to_owned(),
                model: str_of(v, "model").unwrap_or_default().to_owned(),
            });
        }
        let first_choice = v.get("choices").and_then(Value::as_array).and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        });
        if let Some(choice) = first_choice {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            // DeepSeek's `reasoning_content`; vLLM and OpenRouter say
            // `reasoning`.
            let reasoning = ["reasoning_content", "reasoning"]
                .into_iter()
                .find_map(|k| str_of(delta, k).filter(|t| !t.is_empty()));
            if let Some(text) = reasoning {
                sink.push(Ev::Reasoning(text.to_owned()));
            }
            for key in ["content", "refusal"] {
                if let Some(text) = str_of(delta, key).filter(|t| !t.is_empty()) {
                    sink.push(Ev::Text(text.to_owned()));
                }
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for (pos, call) in calls
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                self.tool_call(call, pos, sink);
            }
            if let Some(reason) = str_of(choice, "finish_reason") {
                sink.push(Ev::Finish(known_finish(reason)));
            }
        }
        if let Some(usage) = v.get("usage") {
            if let Some(u) = openai_usage(usage) {
                sink.push(Ev::Usage(u));
            }
            let reasoning = usage
                .get("completion_tokens_details")
                .and_then(|d| d.get("reasoning_tokens"))
                .and_then(Value::as_u64);
            if let Some(n) = reasoning {
                sink.push(Ev::ReasoningTokens(n));
            }
        }
    }

    fn tool_call(&mut self, call: &Value, pos: usize, sink: &mut Vec<Ev>) {
        let index = call
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(pos);
        let func = call.get("function").unwrap_or(&Value::Null);
        let args = str_of(func, "arguments").unwrap_or_default().to_owned();
        if self.tools_started.insert(index) {
            sink.push(Ev::ToolStart {
                index,
                id: str_of(call, "id").map_or_else(|| format!("call_{index}"), str::to_owned),
                name: str_of(func, "name").unwrap_or_default().to_owned(),
                args,
                signature: call
                    .get("extra_content")
                    .and_then(|e| e.get("google"))
                    .and_then(|g| str_of(g, "thought_signature"))
                    .map(str::to_owned),
            });
        } else if !args.is_empty() {
            sink.push(Ev::ToolArgs { index, args });
        }
    }
}

/// Anthropic reports input (and cache) tokens in `message_start` and
/// output tokens — cumulatively, sometimes with updated input counts — in
/// `message_delta`; this keeps the latest value of each field.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AnthropicUsage {
    input: u64,
    cache_read: u64,
    cache_creation: u64,
    output: u64,
}

impl AnthropicUsage {
    pub(crate) fn update(&mut self, usage: &Value) {
        let field = |k: &str| usage.get(k).and_then(Value::as_u64);
        if let Some(n) = field("input_tokens") {
            self.input = n;
        }
        if let Some(n) = field("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = field("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = field("output_tokens") {
            self.output = n;
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            output_tokens: self.output,
            cached_input_tokens: self.cache_read,
            cache_write_input_tokens: self.cache_creation,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct AnthropicDecoder {
    usage: AnthropicUsage,
    /// Content block index → tool-call index, for `tool_use` blocks.
    tool_blocks: HashMap<u64, usize>,
    /// Content block indexes of [`STRUCTURED_OUTPUT_TOOL`] calls: their
    /// input is the answer's text.
    structured_blocks: HashSet<u64>,
}

impl AnthropicDecoder {
    fn decode(&mut self, v: &Value, sink: &mut Vec<Ev>) {
        match str_of(v, "type").unwrap_or_default() {
            "message_start" => {
                let msg = v.get("message").unwrap_or(&Value::Null);
                let id = str_of(msg, "id").unwrap_or_default();
                sink.push(Ev::Start {
                    id: id.strip_prefix("msg_").unwrap_or(id).to_owned(),
                    model: str_of(msg, "model").unwrap_or_default().to_owned(),
                });
                if let Some(u) = msg.get("usage") {
                    self.usage.update(u);
                    sink.push(Ev::Usage(self.usage.usage()));
                }
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match str_of(block, "type") {
                    Some("text") => {
                        if let Some(t) = str_of(block, "text").filter(|t| !t.is_empty()) {
                            sink.push(Ev::Text(t.to_owned()));
                        }
                    }
                    Some("tool_use") if str_of(block, "name") == Some(STRUCTURED_OUTPUT_TOOL) => {
                        let block_index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.structured_blocks.insert(block_index);
                        if let Some(input) = non_empty_input(block) {
                            sink.push(Ev::Text(input));
                        }
                    }
                    Some("tool_use") => {
                        let index = self.tool_blocks.len();
                        let block_index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.tool_blocks.insert(block_index, index);
                        // The start block's input is `{}`; arguments stream
                        // as input_json_delta.
                        let args = non_empty_input(block).unwrap_or_default();
                        sink.push(Ev::ToolStart {
                            index,
                            id: str_of(block, "id").unwrap_or_default().to_owned(),
                            name: str_of(block, "name").unwrap_or_default().to_owned(),
                            args,
                            signature: None,
                        });
                    }
                    Some("thinking") => {
                        if let Some(t) = str_of(block, "thinking").filter(|t| !t.is_empty()) {
                            sink.push(Ev::Reasoning(t.to_owned()));
                        }
                    }
                    // Server-tool blocks have no OpenAI form.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match str_of(delta, "type") {
                    Some("text_delta") => {
                        if let Some(t) = str_of(delta, "text").filter(|t| !t.is_empty()) {
                            sink.push(Ev::Text(t.to_owned()));
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = str_of(delta, "thinking").filter(|t| !t.is_empty()) {
                            sink.push(Ev::Reasoning(t.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let block_index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let json = str_of(delta, "partial_json").unwrap_or_default();
                        if self.structured_blocks.contains(&block_index) {
                            if !json.is_empty() {
                                sink.push(Ev::Text(json.to_owned()));
                            }
                        } else if let (Some(&index), false) =
                            (self.tool_blocks.get(&block_index), json.is_empty())
                        {
                            sink.push(Ev::ToolArgs {
                                index,
                                args: json.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.usage.update(u);
                    sink.push(Ev::Usage(self.usage.usage()));
                }
                if let Some(stop) = v.get("delta").and_then(|d| str_of(d, "stop_reason")) {
                    // The structured-output tool's call is the answer.
                    let structured_answer = stop == "tool_use"
                        && !self.structured_blocks.is_empty()
                        && self.tool_blocks.is_empty();
                    sink.push(Ev::Finish(if structured_answer {
                        "stop"
                    } else {
                        reasons::anthropic_to_openai(stop)
                    }));
                }
            }
            "message_stop" => sink.push(Ev::Done),
            _ => {}
        }
    }
}

/// A `tool_use` start block's input as JSON text, unless it is `{}` (the
/// input then streams as `input_json_delta`).
fn non_empty_input(block: &Value) -> Option<String> {
    block
        .get("input")
        .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
        .map(Value::to_string)
}

#[derive(Debug, Default)]
pub(crate) struct GeminiDecoder {
    started: bool,
    calls: usize,
    done: bool,
}

impl GeminiDecoder {
    fn decode(&mut self, v: &Value, sink: &mut Vec<Ev>) {
        // `alt=sse` sends one object per event; tolerate an array anyway.
        if let Value::Array(items) = v {
            for item in items {
                self.decode(item, sink);
            }
            return;
        }
        if !self.started {
            self.started = true;
            sink.push(Ev::Start {
                id: str_of(v, "responseId")
                    .filter(|s| !s.is_empty())
                    .map_or_else(synth_id, str::to_owned),
                model: str_of(v, "modelVersion").unwrap_or_default().to_owned(),
            });
        }
        if let Some(meta) = v.get("usageMetadata") {
            if let Some(u) = gemini_usage(meta) {
                sink.push(Ev::Usage(u));
            }
            if let Some(n) = meta.get("thoughtsTokenCount").and_then(Value::as_u64) {
                sink.push(Ev::ReasoningTokens(n));
            }
        }
        if self.done {
            return;
        }
        let candidate = v.get("candidates").and_then(Value::as_array).and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        });
        let Some(candidate) = candidate else {
            if v.get("promptFeedback")
                .and_then(|f| f.get("blockReason"))
                .is_some()
            {
                sink.push(Ev::Finish("content_filter"));
                self.finish(sink);
            }
            return;
        };
        let parts = candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for part in parts {
            if let Some(call) = part.get("functionCall") {
                let tc = crate::gemini::tool_call_of(call, part, self.calls);
                sink.push(Ev::ToolStart {
                    index: self.calls,
                    id: tc.id,
                    name: tc.name,
                    args: tc.arguments,
                    signature: tc.signature,
                });
                self.calls += 1;
            } else if let Some(t) = str_of(part, "text").filter(|t| !t.is_empty()) {
                if part.get("thought").and_then(Value::as_bool) == Some(true) {
                    sink.push(Ev::Reasoning(t.to_owned()));
                } else {
                    sink.push(Ev::Text(t.to_owned()));
                }
            }
        }
        if let Some(reason) = str_of(candidate, "finishReason") {
            let finish = if self.calls > 0 {
                "tool_calls"
            } else {
                reasons::gemini_to_openai(reason)
            };
            sink.push(Ev::Finish(finish));
            self.finish(sink);
        }
    }

    fn finish(&mut self, sink: &mut Vec<Ev>) {
        self.done = true;
        sink.push(Ev::Done);
    }
}
