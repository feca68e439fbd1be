//! Canonical events → Anthropic Messages stream events.

use std::collections::HashMap;

use serde::Serialize;

use super::{write_error_event, write_json, Ev};
use crate::anthropic::anthropic_id;
use crate::json::synth_id;
use crate::{reasons, Dialect, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(usize),
    Tool(usize),
}

#[derive(Debug, Default)]
pub(crate) struct AnthropicEncoder {
    id: String,
    model: String,
    started: bool,
    open: Option<Open>,
    next_block: usize,
    /// OpenAI tool-call index → content block index.
    tool_blocks: HashMap<usize, usize>,
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
    closed: bool,
}

/// Field order follows Anthropic's own events (`type` first), hence typed
/// structs rather than `json!` (whose maps sort keys).
#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: UsageOut,
}

#[derive(Serialize)]
struct UsageOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<u64>,
    output_tokens: u64,
}

impl UsageOut {
    fn of(u: Usage, output_tokens: u64) -> Self {
        UsageOut {
            input_tokens: Some(u.anthropic_input_tokens()),
            cache_creation_input_tokens: Some(u.cache_write_input_tokens),
            cache_read_input_tokens: Some(u.cached_input_tokens),
            output_tokens,
        }
    }
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    content_block: Block<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: DeltaBody<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaBody<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: UsageOut,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct MessageStop {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl AnthropicEncoder {
    /// Encode one event; returns whether anything was written.
    pub(crate) fn encode(&mut self, ev: &Ev, out: &mut Vec<u8>) -> bool {
        if self.closed {
            return false;
        }
        match ev {
            // message_start waits for the first content so that usage known
            // by then (Gemini sends prompt tokens up front) can be included.
            Ev::Start { id, model } => {
                if self.id.is_empty() {
                    self.id = anthropic_id(id);
                    self.model.clone_from(model);
                }
                return false;
            }
            Ev::Text(text) => {
                self.ensure_started(out);
                let index = match self.open {
                    Some(Open::Text(i)) => i,
                    _ => {
                        let i = self.open_block(out, Block::Text { text: "" });
                        self.open = Some(Open::Text(i));
                        i
                    }
                };
                self.delta(out, index, DeltaBody::TextDelta { text });
            }
            Ev::ToolStart {
                index,
                id,
                name,
                args,
                ..
            } => self.start_tool(out, *index, id, name, args),
            Ev::ToolArgs { index, args } => match self.tool_blocks.get(index) {
                Some(&block) => {
                    self.delta(out, block, DeltaBody::InputJsonDelta { partial_json: args })
                }
                // Arguments before any id/name: the call still has to exist.
                None => self.start_tool(out, *index, &format!("call_{index}"), "", args),
            },
            Ev::Finish(reason) => {
                self.stop_reason = Some(reasons::openai_to_anthropic(reason));
                return false;
            }
            Ev::Usage(u) => {
                self.usage = Some(*u);
                return false;
            }
            // Thinking from another dialect has no signature Anthropic
            // clients could send back.
            Ev::Reasoning(_) | Ev::ReasoningTokens(_) => return false,
            Ev::Error(e) => {
                let code = e.code.as_deref().unwrap_or("upstream_error");
                write_error_event(Dialect::Anthropic, e.kind, code, &e.message, out);
                self.closed = true;
            }
            Ev::Done => self.close(out),
        }
        true
    }

    pub(crate) fn fail(&mut self) {
        self.closed = true;
    }

    /// Write the end of the message unless already written.
    pub(crate) fn close(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.ensure_started(out);
        self.close_open(out);
        let usage = match self.usage {
            Some(u) => UsageOut::of(u, u.output_tokens),
            None => UsageOut {
                input_tokens: None,
                cache_creation_input_tokens: None,
                cache_read_input_tokens: None,
                output_tokens: 0,
            },
        };
        let delta = MessageDelta {
            kind: "message_delta",
            delta: StopDelta {
                stop_reason: self.stop_reason.unwrap_or("end_turn"),
                stop_sequence: None,
            },
            usage,
        };
        write(out, "message_delta", &delta);
        write(
            out,
            "message_stop",
            &MessageStop {
                kind: "message_stop",
            },
        );
        self.closed = true;
    }

    fn start_tool(&mut self, out: &mut Vec<u8>, index: usize, id: &str, name: &str, args: &str) {
        self.ensure_started(out);
        let block = self.open_block(
            out,
            Block::ToolUse {
                id,
                name,
                input: Empty {},
            },
        );
        self.open = Some(Open::Tool(block));
        self.tool_blocks.insert(index, block);
        if !args.is_empty() {
            self.delta(out, block, DeltaBody::InputJsonDelta { partial_json: args });
        }
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = format!("msg_{}", synth_id());
        }
        let start = MessageStart {
            kind: "message_start",
            message: StartMessage {
                id: &self.id,
                kind: "message",
                role: "assistant",
                model: &self.model,
                content: [],
                stop_reason: None,
                stop_sequence: None,
                // Output is reported by message_delta; a start snapshot says 0.
                usage: UsageOut::of(self.usage.unwrap_or_default(), 0),
            },
        };
        write(out, "message_start", &start);
    }

    fn open_block(&mut self, out: &mut Vec<u8>, block: Block<'_>) -> usize {
        self.close_open(out);
        let index = self.next_block;
        self.next_block += 1;
        let start = BlockStart {
            kind: "content_block_start",
            index,
            content_block: block,
        };
        write(out, "content_block_start", &start);
        index
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        if let Some(Open::Text(i) | Open::Tool(i)) = self.open.take() {
            write(
                out,
                "content_block_stop",
                &BlockStop {
                    kind: "content_block_stop",
                    index: i,
                },
            );
        }
    }

    fn delta(&mut self, out: &mut Vec<u8>, index: usize, delta: DeltaBody<'_>) {
        write(
            out,
            "content_block_delta",
            &BlockDelta {
                kind: "content_block_delta",
                index,
                delta,
            },
        );
    }
}

fn write<T: Serialize>(out: &mut Vec<u8>, event: &str, data: &T) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json(out, data);
    out.extend_from_slice(b"\n\n");
}
