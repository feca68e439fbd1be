//! Mid-stream continuation (`LLMRoute.spec.streamContinuation`).
//!
//! When a stream breaks after the client has received part of the answer,
//! the request is sent again to another backend of the route with the
//! partial answer as the start of the assistant's turn, and the new stream
//! is spliced into the client's: its opening events (Anthropic
//! `message_start` and the re-opened text block, OpenAI's role-only chunk)
//! are dropped, so the client reads one answer.
//!
//! Only upstreams that can continue an assistant turn are used: Anthropic
//! (a trailing assistant message is a prefill) and the OpenAI-compatible
//! APIs of DeepSeek and Mistral (a trailing assistant message with
//! `"prefix": true`). OpenAI's own API and Gemini would start a new turn,
//! so they are never chosen. Answers that had started a tool call are not
//! continued (arguments cut mid-JSON cannot be resumed reliably).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use llmesh_api::{ApiSchema, ErrorClass};
use llmesh_policy::{Provider, Route};
use llmesh_wire::sse::{write_event, SseEvent, SseParser};
use llmesh_wire::Dialect;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::account::Call;
use crate::attempt::{attempt, Failure, Req, Success};
use crate::runtime::BackendRuntime;
use crate::table::Table;
use crate::upstream::Operation;
use crate::Shared;

/// The answer so far, to continue from.
#[derive(Debug, Clone, Default)]
pub struct ContinueFrom {
    /// Text the client has received.
    pub text: String,
    /// Content chunks the client has received (about a token each); the
    /// continuation's `max_tokens` is lowered by this much.
    pub chunks: u64,
}

/// How an upstream takes a partial assistant turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Anthropic: a trailing assistant message is continued (no trailing
    /// whitespace allowed).
    Prefill,
    /// DeepSeek, Mistral: a trailing assistant message with `prefix: true`.
    PrefixFlag,
}

fn style(p: &Provider) -> Option<Style> {
    match p.schema {
        ApiSchema::Anthropic => Some(Style::Prefill),
        ApiSchema::OpenaiCompatible
            if matches!(p.provider_name.as_str(), "deepseek" | "mistral_ai") =>
        {
            Some(Style::PrefixFlag)
        }
        _ => None,
    }
}

/// Whether `p` can continue a partial answer.
pub fn can_continue(p: &Provider) -> bool {
    style(p).is_some()
}

/// Adds the partial answer to an upstream-format request body and lowers
/// its output cap by what was already produced.
pub fn prefill(p: &Provider, body: &mut Value, from: &ContinueFrom) -> Result<(), String> {
    let style = style(p).ok_or_else(|| {
        format!(
            "provider {} cannot continue a partial answer (needs an Anthropic, DeepSeek or Mistral API)",
            p.name
        )
    })?;
    let messages = body
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .ok_or("the request has no messages to continue")?;
    match style {
        Style::Prefill => {
            let text = from.text.trim_end();
            if !text.is_empty() {
                messages.push(json!({"role": "assistant", "content": text}));
            }
        }
        Style::PrefixFlag => {
            messages.push(json!({"role": "assistant", "content": from.text, "prefix": true}));
        }
    }
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = body.get(key).and_then(Value::as_u64) {
            body[key] = json!(n.saturating_sub(from.chunks).max(1));
        }
    }
    Ok(())
}

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
            let data = serde_json::to_vec(&v).unwrap_or_default();
            write_event(out, ev.event.as_deref(), &data);
        });
    }
}

/// What a continuation attempt needs of the request, owned, since it runs
/// inside the response body after the handler has returned.
pub struct Context {
    shared: Arc<Shared>,
    table: Arc<Table>,
    route_index: usize,
    route: Arc<Route>,
    client: Dialect,
    include_usage: bool,
    requested: String,
    raw: Bytes,
    headers: HeaderMap,
    request_id: HeaderValue,
    deadline: tokio::time::Instant,
    max_output: u64,
    restricted: Vec<String>,
    vault: Option<Arc<llmesh_dlp::Vault>>,
    audit: Option<Arc<crate::dataguard::Audit>>,
    body_model: String,
    /// The request's span: a continuation runs in the response body, out
    /// of the handler's span, and its attempt belongs under this one.
    span: tracing::Span,
}

impl Context {
    fn req<'a>(&'a self, from: &'a ContinueFrom) -> Req<'a> {
        Req {
            shared: &self.shared,
            client: self.client,
            op: Operation::Chat,
            stream: true,
            include_usage: self.include_usage,
            requested: &self.requested,
            raw: &self.raw,
            headers: &self.headers,
            request_id: &self.request_id,
            route: &self.route,
            deadline: self.deadline,
            max_output: self.max_output,
            continue_from: Some(from),
            restricted: &self.restricted,
            vault: self.vault.as_ref(),
            audit: self.audit.as_ref(),
            body_model: &self.body_model,
            // The call that accounts a continuation shares the broken
            // one's charge (see `call_for`).
            charge: None,
            pacing: None,
        }
    }

    fn backend(&self, index: usize) -> Option<&BackendRuntime> {
        self.table.routes.get(self.route_index)?.backends.get(index)
    }
}

/// A continuation attempt in progress.
pub type Pending = Pin<Box<dyn Future<Output = Result<Success, Failure>> + Send>>;

/// Per-stream continuation state, present only on routes that enable it.
pub struct Continuation {
    ctx: Arc<Context>,
    remaining: u32,
    capture: Capture,
    splice: Option<Splice>,
}

/// A continuation that was started: the attempt, its backend, and the
/// call that accounts it if it answers.
pub struct Started {
    /// The attempt.
    pub future: Pending,
    /// Index of the backend in the route.
    pub backend: usize,
    /// Counts the attempt against its backend.
    pub in_flight: llmesh_resilience::OwnedInFlight,
}

impl Continuation {
    /// State for a stream of `req` on a route that allows continuations.
    /// `None` when the route does not, or the request is not a chat stream.
    pub fn new(req: &Req<'_>, table: &Arc<Table>, route_index: usize) -> Option<Box<Self>> {
        if req.route.max_continuations == 0 || !req.stream || req.op != Operation::Chat {
            return None;
        }
        Some(Box::new(Continuation {
            ctx: Arc::new(Context {
                shared: req.shared.clone(),
                table: table.clone(),
                route_index,
                route: req.route.clone(),
                client: req.client,
                include_usage: req.include_usage,
                requested: req.requested.to_string(),
                raw: req.raw.clone(),
                headers: req.headers.clone(),
                request_id: req.request_id.clone(),
                deadline: req.deadline,
                max_output: req.max_output,
                restricted: req.restricted.to_vec(),
                vault: req.vault.cloned(),
                audit: req.audit.cloned(),
                body_model: req.body_model.to_string(),
                span: crate::trace::current(),
            }),
            remaining: req.route.max_continuations,
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
    /// `current` broke, if one is allowed and a capable backend is
    /// available. `chunks` is the content chunks the client got so far.
    pub fn start(
        &mut self,
        current: &llmesh_resilience::BackendState,
        chunks: u64,
    ) -> Option<Started> {
        if self.remaining == 0
            || !self.capture.text_only
            || tokio::time::Instant::now() >= self.ctx.deadline
        {
            return None;
        }
        let now = crate::select::clock();
        let rt = self.ctx.table.routes.get(self.ctx.route_index)?;
        let mut order: Vec<usize> = (0..rt.backends.len()).collect();
        order.sort_by_key(|&i| rt.backends[i].backend.priority);
        let backend = order.into_iter().find(|&i| {
            let b = &rt.backends[i];
            !std::ptr::eq(b.state.as_ref(), current)
                && can_continue(&b.backend.provider)
                && crate::dataguard::cleared(&b.backend.provider, &self.ctx.restricted)
                && b.state.breaker.try_acquire(now)
        })?;
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
        let in_flight = rt.backends[backend].state.start_owned();
        let ctx = self.ctx.clone();
        let span = ctx.span.clone();
        let future: Pending = Box::pin(
            async move {
                let req = ctx.req(&from);
                match ctx.backend(backend) {
                    Some(b) => attempt(&req, b, None).await,
                    None => Err(Failure::gone()),
                }
            }
            .instrument(span),
        );
        Some(Started {
            future,
            backend,
            in_flight,
        })
    }

    /// The backend at `index` of the route.
    pub fn backend(&self, index: usize) -> Option<&BackendRuntime> {
        self.ctx.backend(index)
    }

    /// Route name, for metrics.
    pub fn route_name(&self) -> &str {
        &self.ctx.route.name
    }

    /// Shared state, for metrics.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.ctx.shared
    }

    /// The call that accounts an answer from `b`, replacing `old`.
    pub fn call_for(&self, old: &Call, b: &BackendRuntime) -> Call {
        Call {
            shared: self.ctx.shared.clone(),
            request_id: old.request_id.clone(),
            start: old.start,
            op: old.op,
            client: old.client,
            stream: old.stream,
            route: old.route.clone(),
            provider: b.backend.provider.clone(),
            request_model: old.request_model.clone(),
            requested: old.requested.clone(),
            upstream_model: b.backend.upstream_model(&self.ctx.requested).to_string(),
            model_label: b
                .backend
                .model
                .clone()
                .unwrap_or_else(|| old.request_model.clone()),
            raw_request: old.raw_request.clone(),
            audit: old.audit.clone(),
            series: b.series.clone(),
            charge: old.charge.clone(),
            span: old.span.clone(),
        }
    }
}

/// Whether a failed continuation attempt counts against its backend.
pub fn counts_against_backend(f: &Failure) -> bool {
    !matches!(
        f.class,
        ErrorClass::InvalidRequest | ErrorClass::ContextLength | ErrorClass::ContentFilter
    )
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

    #[test]
    fn prefill_shapes_per_upstream_and_lowers_max_tokens() {
        let from = ContinueFrom {
            text: "Once upon ".into(),
            chunks: 3,
        };
        let mut p = test_provider(ApiSchema::Anthropic, "anthropic");
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10});
        prefill(&p, &mut body, &from).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": "Once upon"})
        );
        assert_eq!(body["max_tokens"], 7);

        p = test_provider(ApiSchema::OpenaiCompatible, "deepseek");
        let mut body = json!({"messages": []});
        prefill(&p, &mut body, &from).unwrap();
        assert_eq!(body["messages"][0]["prefix"], true);
        assert_eq!(body["messages"][0]["content"], "Once upon ");

        p = test_provider(ApiSchema::Openai, "openai");
        assert!(prefill(&p, &mut json!({"messages": []}), &from).is_err());
    }

    fn test_provider(schema: ApiSchema, name: &str) -> Arc<Provider> {
        let yaml = format!(
            "apiVersion: llmesh.io/v1alpha1\nkind: LLMProvider\nmetadata: {{name: p}}\nspec: {{schema: {}, baseUrl: 'http://127.0.0.1:1/v1', providerName: {name}}}\n",
            match schema {
                ApiSchema::Anthropic => "anthropic",
                ApiSchema::OpenaiCompatible => "openai-compatible",
                ApiSchema::Gemini => "gemini",
                ApiSchema::Openai => "openai",
            }
        );
        let docs = llmesh_api::parse_documents(&yaml).unwrap();
        let (snap, errors) =
            llmesh_policy::compile(&docs, "t", &llmesh_policy::EnvFileSecrets::default());
        assert!(errors.is_empty(), "{errors:?}");
        snap.providers.values().next().unwrap().clone()
    }
}
