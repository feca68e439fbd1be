//! Canonical events → OpenAI Responses API stream events.
//!
//! Every event is written as `event: <type>` plus
//! `data: {"type": <type>, "sequence_number": n, ...}`, n counting from 0:
//!
//! 1. `response.created`, `response.in_progress` (status `in_progress`, no
//!    output yet);
//! 2. per output item, `response.output_item.added`, then
//!    - message: `response.content_part.added`, `response.output_text.delta`
//!      …, `response.output_text.done`, `response.content_part.done`;
//!    - function call: `response.function_call_arguments.delta` …,
//!      `response.function_call_arguments.done`;
//!    - reasoning: `response.reasoning_summary_part.added`,
//!      `response.reasoning_summary_text.delta` …,
//!      `response.reasoning_summary_text.done`,
//!      `response.reasoning_summary_part.done`;
//!
//!    and `response.output_item.done`;
//! 3. `response.completed`, or `response.incomplete` (length or content
//!    filter), with the full response object, usage included.
//!
//! One item is open at a time: starting the next item finishes the current
//! one. Arguments that still arrive for an earlier call (an upstream
//! interleaving parallel calls) are sent as deltas of that call anyway, so
//! the final response object is complete.
//!
//! An upstream error becomes an `error` event followed by `response.failed`
//! (status `failed`, `error {code, message}`). A stream that ends without
//! the upstream's end marker gets no terminal event: the proxy reports the
//! truncation with `write_error` (the same `error` + `response.failed`
//! pair), and a client that never gets a terminal event sees the stream end
//! before `response.completed`, which the OpenAI SDKs report as an error.
//! Closing it as `response.completed` would hide the truncation, and
//! `response.incomplete` only has reasons (`max_output_tokens`,
//! `content_filter`) that would be false.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::{write_json, Ev};
use crate::responses::{
    function_call_item, item_id, message_item, output_text_part, reasoning_item, response_object,
    status_of, usage_json, Outcome, ResponseEcho,
};
use crate::Usage;

#[derive(Debug)]
enum Kind {
    Message,
    Reasoning,
    Call { call_id: String, name: String },
}

#[derive(Debug)]
struct Slot {
    id: String,
    kind: Kind,
    /// Message text, reasoning text or call arguments so far.
    text: String,
    /// Set once `response.output_item.done` was written.
    status: Option<&'static str>,
}

#[derive(Debug)]
pub(crate) struct ResponsesEncoder {
    echo: ResponseEcho,
    id: String,
    created_at: u64,
    model: String,
    seq: u64,
    started: bool,
    items: Vec<Slot>,
    open: Option<usize>,
    /// Canonical tool-call index → item index.
    tools: HashMap<usize, usize>,
    finish: Option<&'static str>,
    usage: Option<Usage>,
    reasoning_tokens: u64,
    /// A terminal event was written; nothing more may follow.
    closed: bool,
    final_response: Option<Value>,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    sequence_number: u64,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct SummaryDelta<'a> {
    item_id: &'a str,
    output_index: usize,
    summary_index: u32,
    delta: &'a str,
}

#[derive(Serialize)]
struct ArgsDelta<'a> {
    item_id: &'a str,
    output_index: usize,
    delta: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    param: Option<()>,
}

/// Write one event and advance the sequence number. `body` must serialize
/// as a JSON object.
fn write_event<T: Serialize>(seq: &mut u64, out: &mut Vec<u8>, kind: &str, body: &T) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json(
        out,
        &Envelope {
            kind,
            sequence_number: *seq,
            body,
        },
    );
    out.extend_from_slice(b"\n\n");
    *seq += 1;
}

/// A Responses `error` event (`{type: error, code, message, param: null}`).
pub(crate) fn write_error_event(seq: &mut u64, code: &str, message: &str, out: &mut Vec<u8>) {
    let body = ErrorBody {
        code,
        message,
        param: None,
    };
    write_event(seq, out, "error", &body);
}

/// The `response.error.code` for an llmesh error kind: Responses objects
/// know a closed set of codes.
fn response_error_code(kind: &str) -> &'static str {
    match kind {
        "rate_limit_error" => "rate_limit_exceeded",
        _ => "server_error",
    }
}

impl ResponsesEncoder {
    pub(crate) fn new(echo: ResponseEcho) -> Self {
        ResponsesEncoder {
            id: echo.response_id(),
            created_at: echo.created(),
            echo,
            model: String::new(),
            seq: 0,
            started: false,
            items: Vec::new(),
            open: None,
            tools: HashMap::new(),
            finish: None,
            usage: None,
            reasoning_tokens: 0,
            closed: false,
            final_response: None,
        }
    }

    pub(crate) fn set_created(&mut self, created: u64) {
        self.created_at = created;
    }

    /// The full response, once `response.completed`/`response.incomplete`
    /// was written.
    pub(crate) fn final_response(&self) -> Option<&Value> {
        self.final_response.as_ref()
    }

    /// Encode one event; returns whether anything was written.
    pub(crate) fn encode(&mut self, ev: &Ev, out: &mut Vec<u8>) -> bool {
        if self.closed {
            return false;
        }
        match ev {
            Ev::Start { model, .. } => {
                if self.model.is_empty() {
                    self.model.clone_from(model);
                }
                self.ensure_started(out);
            }
            Ev::Text(text) => {
                self.ensure_started(out);
                let index = self.open_of(out, |k| matches!(k, Kind::Message), || Kind::Message);
                self.append(index, text, out);
            }
            Ev::Reasoning(text) => {
                self.ensure_started(out);
                let index = self.open_of(out, |k| matches!(k, Kind::Reasoning), || Kind::Reasoning);
                self.append(index, text, out);
            }
            Ev::ToolStart {
                index,
                id,
                name,
                args,
                ..
            } => self.start_call(out, *index, id, name, args),
            Ev::ToolArgs { index, args } => match self.tools.get(index) {
                Some(&item) => self.append(item, args, out),
                // Arguments before any id/name: the call still has to exist.
                None => self.start_call(out, *index, &format!("call_{index}"), "", args),
            },
            Ev::Finish(reason) => {
                self.finish = Some(reason);
                return false;
            }
            Ev::Usage(u) => {
                self.usage = Some(*u);
                return false;
            }
            Ev::ReasoningTokens(n) => {
                self.reasoning_tokens = *n;
                return false;
            }
            Ev::Error(e) => {
                let code = e.code.as_deref().unwrap_or("upstream_error");
                self.fail(e.kind, code, &e.message, out);
            }
            Ev::Done => self.complete(out),
        }
        true
    }

    /// The upstream body ended. Without its end marker no terminal event is
    /// written (see the module documentation); the stream is at least
    /// opened, so an error written next is well-formed.
    pub(crate) fn close(&mut self, out: &mut Vec<u8>) {
        if !self.closed {
            self.ensure_started(out);
        }
    }

    /// End the stream with `error` + `response.failed`, unless a terminal
    /// event was written already.
    pub(crate) fn fail(&mut self, kind: &str, code: &str, message: &str, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.ensure_started(out);
        write_error_event(&mut self.seq, code, message, out);
        let error = json!({"code": response_error_code(kind), "message": message});
        let response = self.snapshot("failed", None, Some(error), "incomplete");
        write_event(
            &mut self.seq,
            out,
            "response.failed",
            &json!({"response": response}),
        );
        self.closed = true;
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.ensure_started(out);
        let (status, reason) = status_of(self.finish.unwrap_or("stop"));
        let item_status = if reason.is_some() {
            "incomplete"
        } else {
            "completed"
        };
        self.close_open(out, item_status);
        let response = self.snapshot(status, reason, None, item_status);
        let kind = if reason.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        write_event(&mut self.seq, out, kind, &json!({"response": &response}));
        self.final_response = Some(response);
        self.closed = true;
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = response_object(
            &self.echo,
            &self.id,
            self.created_at,
            Outcome {
                status: "in_progress",
                incomplete_reason: None,
                model: &self.model,
                output: Vec::new(),
                usage: None,
                error: None,
            },
        );
        let body = json!({"response": response});
        write_event(&mut self.seq, out, "response.created", &body);
        write_event(&mut self.seq, out, "response.in_progress", &body);
    }

    /// The response object now; items not yet done get `open_status`.
    fn snapshot(
        &self,
        status: &str,
        reason: Option<&str>,
        error: Option<Value>,
        open_status: &'static str,
    ) -> Value {
        let output = self
            .items
            .iter()
            .map(|s| render(s, s.status.unwrap_or(open_status)))
            .collect();
        response_object(
            &self.echo,
            &self.id,
            self.created_at,
            Outcome {
                status,
                incomplete_reason: reason,
                model: &self.model,
                output,
                usage: self.usage.map(|u| usage_json(u, self.reasoning_tokens)),
                error,
            },
        )
    }

    /// The open item if `is` accepts its kind, else a new item of `kind()`.
    fn open_of(
        &mut self,
        out: &mut Vec<u8>,
        is: impl Fn(&Kind) -> bool,
        kind: impl FnOnce() -> Kind,
    ) -> usize {
        match self.open {
            Some(i) if self.items.get(i).is_some_and(|s| is(&s.kind)) => i,
            _ => self.open_item(out, kind()),
        }
    }

    fn start_call(&mut self, out: &mut Vec<u8>, index: usize, id: &str, name: &str, args: &str) {
        self.ensure_started(out);
        let item = self.open_item(
            out,
            Kind::Call {
                call_id: id.to_owned(),
                name: name.to_owned(),
            },
        );
        self.tools.insert(index, item);
        if !args.is_empty() {
            self.append(item, args, out);
        }
    }

    fn open_item(&mut self, out: &mut Vec<u8>, kind: Kind) -> usize {
        self.close_open(out, "completed");
        let index = self.items.len();
        let (prefix, added) = match &kind {
            Kind::Message => ("msg", None),
            Kind::Reasoning => ("rs", None),
            Kind::Call { call_id, name } => ("fc", Some((call_id.as_str(), name.as_str()))),
        };
        let id = item_id(prefix, &self.id, index);
        let item = match (&kind, added) {
            (Kind::Message, _) => message_item(&id, "in_progress", Vec::new()),
            (_, Some((call_id, name))) => function_call_item(&id, "in_progress", call_id, name, ""),
            _ => reasoning_item(&id, &[]),
        };
        let seq = &mut self.seq;
        write_event(
            seq,
            out,
            "response.output_item.added",
            &json!({"output_index": index, "item": item}),
        );
        match kind {
            Kind::Message => write_event(
                seq,
                out,
                "response.content_part.added",
                &json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": output_text_part("")}),
            ),
            Kind::Reasoning => write_event(
                seq,
                out,
                "response.reasoning_summary_part.added",
                &json!({"item_id": id, "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""}}),
            ),
            Kind::Call { .. } => {}
        }
        self.items.push(Slot {
            id,
            kind,
            text: String::new(),
            status: None,
        });
        self.open = Some(index);
        index
    }

    /// Append text/arguments to item `index` and write the delta event.
    fn append(&mut self, index: usize, delta: &str, out: &mut Vec<u8>) {
        let Some(slot) = self.items.get_mut(index) else {
            return;
        };
        slot.text.push_str(delta);
        let seq = &mut self.seq;
        let item_id = slot.id.as_str();
        match slot.kind {
            Kind::Message => write_event(
                seq,
                out,
                "response.output_text.delta",
                &TextDelta {
                    item_id,
                    output_index: index,
                    content_index: 0,
                    delta,
                    logprobs: [],
                },
            ),
            Kind::Reasoning => write_event(
                seq,
                out,
                "response.reasoning_summary_text.delta",
                &SummaryDelta {
                    item_id,
                    output_index: index,
                    summary_index: 0,
                    delta,
                },
            ),
            Kind::Call { .. } => write_event(
                seq,
                out,
                "response.function_call_arguments.delta",
                &ArgsDelta {
                    item_id,
                    output_index: index,
                    delta,
                },
            ),
        }
    }

    fn close_open(&mut self, out: &mut Vec<u8>, status: &'static str) {
        let Some(index) = self.open.take() else {
            return;
        };
        let Some(slot) = self.items.get_mut(index) else {
            return;
        };
        if slot.status.is_some() {
            return;
        }
        slot.status = Some(status);
        let seq = &mut self.seq;
        let (id, text) = (slot.id.as_str(), slot.text.as_str());
        match &slot.kind {
            Kind::Message => {
                write_event(
                    seq,
                    out,
                    "response.output_text.done",
                    &json!({"item_id": id, "output_index": index, "content_index": 0,
                        "text": text, "logprobs": []}),
                );
                write_event(
                    seq,
                    out,
                    "response.content_part.done",
                    &json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": output_text_part(text)}),
                );
            }
            Kind::Reasoning => {
                write_event(
                    seq,
                    out,
                    "response.reasoning_summary_text.done",
                    &json!({"item_id": id, "output_index": index, "summary_index": 0,
                        "text": text}),
                );
                write_event(
                    seq,
                    out,
                    "response.reasoning_summary_part.done",
                    &json!({"item_id": id, "output_index": index, "summary_index": 0,
                        "part": {"type": "summary_text", "text": text}}),
                );
            }
            Kind::Call { name, .. } => write_event(
                seq,
                out,
                "response.function_call_arguments.done",
                &json!({"item_id": id, "output_index": index, "name": name,
                    "arguments": text}),
            ),
        }
        write_event(
            seq,
            out,
            "response.output_item.done",
            &json!({"output_index": index, "item": render(slot, status)}),
        );
    }
}

/// An item as it appears in the response's `output`.
fn render(slot: &Slot, status: &str) -> Value {
    match &slot.kind {
        Kind::Message => message_item(&slot.id, status, vec![output_text_part(&slot.text)]),
        Kind::Reasoning => {
            let texts = if slot.text.is_empty() {
                Vec::new()
            } else {
                vec![slot.text.clone()]
            };
            reasoning_item(&slot.id, &texts)
        }
        Kind::Call { call_id, name } => {
            function_call_item(&slot.id, status, call_id, name, &slot.text)
        }
    }
}
