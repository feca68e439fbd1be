//! Canonical events → OpenAI `chat.completion.chunk` SSE.

use serde::Serialize;

use super::{write_error_event, write_json, Ev};
use crate::json::{now_unix, synth_id};
use crate::{Dialect, Usage};

#[derive(Debug)]
pub(crate) struct OpenAiEncoder {
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    role_sent: bool,
    finish_sent: bool,
    usage: Option<Usage>,
    /// `[DONE]` or an error was written; nothing more may follow.
    closed: bool,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [Choice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: Function<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_content: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Function<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl OpenAiEncoder {
    pub(crate) fn new(include_usage: bool) -> Self {
        OpenAiEncoder {
            include_usage,
            id: String::new(),
            model: String::new(),
            created: now_unix(),
            role_sent: false,
            finish_sent: false,
            usage: None,
            closed: false,
        }
    }

    pub(crate) fn set_created(&mut self, created: u64) {
        self.created = created;
    }

    /// Encode one event; returns whether anything was written.
    pub(crate) fn encode(&mut self, ev: &Ev, out: &mut Vec<u8>) -> bool {
        if self.closed {
            return false;
        }
        match ev {
            Ev::Start { id, model } => {
                if self.id.is_empty() {
                    self.id = format!("chatcmpl-{id}");
                    self.model.clone_from(model);
                }
                self.ensure_role(out);
            }
            Ev::Text(text) => {
                self.ensure_role(out);
                let delta = Delta {
                    content: Some(text),
                    ..Delta::default()
                };
                self.chunk(out, delta, None);
            }
            Ev::ToolStart {
                index,
                id,
                name,
                args,
                signature,
            } => {
                self.ensure_role(out);
                let call = ToolCall {
                    index: *index,
                    id: Some(id),
                    kind: Some("function"),
                    function: Function {
                        name: Some(name),
                        arguments: args,
                    },
                    extra_content: signature
                        .as_ref()
                        .map(|s| serde_json::json!({"google": {"thought_signature": s}})),
                };
                let delta = Delta {
                    tool_calls: Some([call]),
                    ..Delta::default()
                };
                self.chunk(out, delta, None);
            }
            Ev::ToolArgs { index, args } => {
                self.ensure_role(out);
                let call = ToolCall {
                    index: *index,
                    id: None,
                    kind: None,
                    function: Function {
                        name: None,
                        arguments: args,
                    },
                    extra_content: None,
                };
                let delta = Delta {
                    tool_calls: Some([call]),
                    ..Delta::default()
                };
                self.chunk(out, delta, None);
            }
            Ev::Finish(reason) => {
                if self.finish_sent {
                    return false;
                }
                self.ensure_role(out);
                self.finish_sent = true;
                self.chunk(out, Delta::default(), Some(reason));
            }
            Ev::Usage(u) => {
                self.usage = Some(*u);
                return false;
            }
            // Chat Completions has no standard place for reasoning.
            Ev::Reasoning(_) | Ev::ReasoningTokens(_) => return false,
            Ev::Error(e) => {
                let code = e.code.as_deref().unwrap_or("upstream_error");
                write_error_event(Dialect::OpenAi, e.kind, code, &e.message, out);
                self.closed = true;
            }
            Ev::Done => self.close(out),
        }
        true
    }

    pub(crate) fn fail(&mut self) {
        self.closed = true;
    }

    /// Write the end of the stream unless already written.
    pub(crate) fn close(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        if !self.finish_sent {
            self.ensure_role(out);
            self.finish_sent = true;
            self.chunk(out, Delta::default(), Some("stop"));
        }
        if self.include_usage {
            if let Some(u) = self.usage {
                self.ensure_id();
                let chunk = Chunk {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.model,
                    choices: &[],
                    usage: Some(crate::usage::openai_usage_json(u)),
                };
                let mut data = Vec::new();
                write_json(&mut data, &chunk);
                crate::sse::write_event(out, None, &data);
            }
        }
        crate::sse::write_event(out, None, b"[DONE]");
        self.closed = true;
    }

    fn ensure_id(&mut self) {
        if self.id.is_empty() {
            self.id = format!("chatcmpl-{}", synth_id());
        }
    }

    fn ensure_role(&mut self, out: &mut Vec<u8>) {
        if self.role_sent {
            return;
        }
        self.role_sent = true;
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
            ..Delta::default()
        };
        self.chunk(out, delta, None);
    }

    fn chunk(&mut self, out: &mut Vec<u8>, delta: Delta<'_>, finish: Option<&str>) {
        self.ensure_id();
        let choices = [Choice {
            index: 0,
            delta,
            finish_reason: finish,
        }];
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &choices,
            usage: None,
        };
        out.extend_from_slice(b"data: ");
        write_json(out, &chunk);
        out.extend_from_slice(b"\n\n");
    }
}
