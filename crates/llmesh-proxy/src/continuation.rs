//! Mid-stream continuation (`LLMRoute.spec.streamContinuation`).
//!
//! When a stream breaks after the client has received part of the answer,
//! the request is sent again to another backend of the route with the
//! partial answer as the start of the assistant's turn, and the new stream
//! is spliced into the client's: its opening events (Anthropic
//! `message_start` and the re-opened text block, OpenAI's role-only chunk)
//! are dropped, so the client reads one answer.
//!
//! The backend is the attempt plan's ([`Plan::continuation`]): only
//! upstreams that can continue an assistant turn (see `prefill`) qualify.
//! Answers that had started a tool call are not continued (arguments cut
//! mid-JSON cannot be resumed reliably).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use llmesh_resilience::BackendState;
use llmesh_wire::sse::{write_event, SseEvent, SseParser};
use llmesh_wire::Dialect;
use serde_json::Value;
use tracing::Instrument;

use crate::attempt::{attempt, Failure, Success};
use crate::clock;
use crate::context::RequestCtx;
use crate::plan::{backend_at, Plan, Slot};
use crate::prefill::ContinueFrom;
use crate::upstream::Operation;

/// Follows what the client has been sent: the answer's text, and whether
/// it is still text only (a tool call cannot be continued).
#[derive(Debug)]
struct Capture {
    parser: SseParser,
    text: String,
    text_only: bool,
    /// Anthropic: a content block is open (the continuation must not open
    /// another).
    block_open: bool,
}

impl Capture {
    fn observe(&mut self, client: Dialect, bytes: &[u8]) {
        let (text, text_only, block_open) =
            (&mut self.text, &mut self.text_only, &mut self.block_open);
        self.parser.push_raw(bytes, |raw| {
            let Some(ev) = SseEvent::parse(raw) else {
                return;
            };
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                return;
            };
            match client {
                Dialect::Anthropic => match v.get("type").and_then(Value::as_str) {
                    Some("content_block_start") => {
                        *block_open = true;
                        if v["content_block"]["type"] != "text" {
                            *text_only = false;
                        }
                    }
                    Some("content_block_stop") => *block_open = false,
                    Some("content_block_delta") => match v["delta"]["text"].as_str() {
                        Some(t) if v["delta"]["type"] == "text_delta" => text.push_str(t),
                        _ => *text_only = false,
                    },
                    _ => {}
                },
                _ => {
                    let delta = &v["choices"][0]["delta"];
                    if let Some(t) = delta.get("content").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                    if delta.get("tool_calls").is_some_and(|t| !t.is_null()) {
                        *text_only = false;
                    }
                }
            }
        });
    }
}

/// Rewrites a continuation's client-format events so they extend the
/// answer already sent instead of starting a new one.
#[derive(Debug)]
struct Splice {
    parser: SseParser,
    /// Drop the next Anthropic `content_block_start` (the block the
    /// partial answer left open is continued instead).
    drop_block_start: bool,
    /// Whitespace taken off the end of the prefill; removed from the start
    /// of the continuation's first text, which repeats it.
    strip_leading: bool,
}

impl Splice {
    fn filter(&mut self, client: Dialect, bytes: &[u8], out: &mut Vec<u8>) {
        let this = &mut *self;
        let (drop_block_start, strip_leading) =
            (&mut this.drop_block_start, &mut this.strip_leading);
        this.parser.push_raw(bytes, |raw| {
            let Some(ev) = SseEvent::parse(raw) else {
                return;
            };
            let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else {
                // `[DONE]` and anything else that is not JSON goes as is.
                write_event(out, ev.event.as_deref(), ev.data.as_bytes());
                return;
            };
            let text = match client {
                Dialect::Anthropic => match v.get("type").and_then(Value::as_str) {
                    Some("message_start") => return,
                    Some("content_block_start") if *drop_block_start => {
                        *drop_block_start = false;
                        return;
                    }
                    Some("content_block_delta") => v.pointer_mut("/delta/text"),
                    _ => None,
                },
                _ => {
                    let delta = &v["choices"][0]["delta"];
                    let empty_content = delta
                        .get("content")
                        .is_none_or(|c| c.is_null() || c.as_str() == Some(""));
                    let role_only = delta.get("role").is_some()
                        && empty_content
                        && delta.get("tool_calls").is_none_or(Value::is_null);
                    if role_only && v["choices"][0]["finish_reason"].is_null() {
                        return;
                    }
                    v.pointer_mut("/choices/0/delta/content")
                }
            };
            if *strip_leading {
                if let Some(Value::String(t)) = text {
                    if !t.is_empty() {
                        *strip_leading = false;
                        let trimmed = t.trim_start();
                        if trimmed.len() != t.len() {
                            *t = trimmed.to_string();
                        }
                    }
                }
            }
            // Re-encoding a parsed event cannot fail; were it to, the event
            // goes as it came rather than empty.
            let data = serde_json::to_vec(&v).unwrap_or_else(|_| ev.data.clone().into_bytes());
            write_event(out, ev.event.as_deref(), &data);
        });
    }
}

/// A continuation attempt in progress.
pub type Pending = Pin<Box<dyn Future<Output = Result<Success, Failure>> + Send>>;

/// Per-stream continuation state, present only on routes that enable it.
pub struct Continuation {
    ctx: Arc<RequestCtx>,
    /// The request's attempt plan: it picks the backend to continue on.
    plan: Plan,
    remaining: u32,
    capture: Capture,
    splice: Option<Splice>,
}

/// A continuation that was started: the attempt, its backend, and the
/// guard that counts it in flight there.
pub struct Started {
    /// The attempt.
    pub future: Pending,
    /// Its backend.
    pub slot: Slot,
    /// Counts the attempt against its backend.
    pub in_flight: llmesh_resilience::OwnedInFlight,
}

impl Continuation {
    /// State for a stream of `ctx` on a route that allows continuations.
    /// `None` when the route does not, or the request is not a chat stream.
    pub fn new(ctx: &Arc<RequestCtx>, plan: Plan) -> Option<Box<Self>> {
        if ctx.route.max_continuations == 0
            || !ctx.stream
            || ctx.op != Operation::Chat
            || ctx.client == Dialect::Responses
        {
            return None;
        }
        Some(Box::new(Continuation {
            ctx: ctx.clone(),
            plan,
            remaining: ctx.route.max_continuations,
            capture: Capture {
                parser: SseParser::new(),
                text: String::new(),
                text_only: true,
                block_open: false,
            },
            splice: None,
        }))
    }

    /// Client-bound bytes of the current upstream: spliced if this is a
    /// continuation, and remembered.
    pub fn on_output(&mut self, out: Vec<u8>) -> Vec<u8> {
        let client = self.ctx.client;
        let out = match &mut self.splice {
            Some(s) => {
                let mut spliced = Vec::with_capacity(out.len());
                s.filter(client, &out, &mut spliced);
                spliced
            }
            None => out,
        };
        self.capture.observe(client, &out);
        out
    }

    /// Starts a continuation after the stream on the backend counted by
    /// `current` broke, if one is allowed and the plan has a capable
    /// backend. `chunks` is the content chunks the client got so far.
    pub fn start(&mut self, current: &BackendState, chunks: u64) -> Option<Started> {
        if self.remaining == 0
            || !self.capture.text_only
            || tokio::time::Instant::now() >= self.ctx.deadline
        {
            return None;
        }
        let i = self
            .plan
            .continuation(current, clock::now(), crate::prefill::can_continue)?;
        let slot = Slot::Own(i);
        let in_flight = backend_at(&self.ctx.table, self.ctx.route_index, slot)?
            .state
            .start_owned();
        self.remaining -= 1;
        let from = ContinueFrom {
            text: self.capture.text.clone(),
            chunks,
        };
        // Anthropic refuses a prefill ending in whitespace: it is trimmed,
        // and the continuation's first text, which repeats it, is trimmed too.
        let strip_leading = from.text.len() != from.text.trim_end().len();
        self.splice = Some(Splice {
            parser: SseParser::new(),
            drop_block_start: self.capture.block_open,
            strip_leading,
        });
        self.capture.parser = SseParser::new();
        let ctx = self.ctx.clone();
        let span = ctx.span.clone();
        let future: Pending = Box::pin(
            async move {
                match backend_at(&ctx.table, ctx.route_index, slot) {
                    Some(b) => attempt(&ctx, b, None, Some(&from)).await,
                    None => Err(Failure::gone()),
                }
            }
            .instrument(span),
        );
        Some(Started {
            future,
            slot,
            in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splice_all(client: Dialect, drop_block_start: bool, strip: bool, input: &str) -> String {
        let mut s = Splice {
            parser: SseParser::new(),
            drop_block_start,
            strip_leading: strip,
        };
        let mut out = Vec::new();
        s.filter(client, input.as_bytes(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn anthropic_preamble_is_dropped_and_the_open_block_continued() {
        let input = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let out = splice_all(Dialect::Anthropic, true, true, input);
        assert!(!out.contains("message_start"), "{out}");
        assert!(!out.contains("content_block_start"), "{out}");
        assert!(out.contains("\"text\":\"world\""), "{out}");
        assert!(out.contains("message_stop"), "{out}");
    }

    #[test]
    fn openai_role_chunk_is_dropped_and_done_kept() {
        let input = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" more\"},\"finish_reason\":null}]}\n\n",
            "data: [DONE]\n\n",
        );
        let out = splice_all(Dialect::OpenAi, false, false, input);
        assert!(!out.contains("\"role\""), "{out}");
        assert!(out.contains("\" more\""), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    }

    #[test]
    fn capture_follows_text_and_notices_tool_calls() {
        let mut c = Capture {
            parser: SseParser::new(),
            text: String::new(),
            text_only: true,
            block_open: false,
        };
        c.observe(
            Dialect::OpenAi,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
        );
        assert_eq!(c.text, "Hello");
        assert!(c.text_only);
        c.observe(
            Dialect::OpenAi,
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n",
        );
        assert!(!c.text_only);
    }
}
