//! `LLMDataPolicy` on the request path: scan the client's body once with
//! the namespace's engine, redact or mask what the policy says, refuse what
//! it blocks, keep restricted classes to cleared providers, and put redacted
//! values back into the answer (whole or streamed).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use llmesh_dlp::{Action, Api, StreamRestorer, Vault};
use llmesh_policy::{DataGuard, Provider};
use llmesh_wire::sse::{write_event, SseEvent, SseParser};
use llmesh_wire::Dialect;
use serde_json::Value;

use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::upstream::Operation;

/// What the policy found, for the audit line: classes, counts and actions,
/// never the values.
#[derive(Debug, Default)]
pub struct Audit {
    /// e.g. `email=2 (redact), payment-card=1 (restrict)`.
    pub found: String,
    /// Classes routing had to honour (found with `restrict`, or declared).
    pub restricted: String,
    /// Classes the app declared in the request header.
    pub declared: String,
}

/// The request after the policy.
#[derive(Debug, Default)]
pub struct Guarded {
    /// The rewritten body, when something was redacted or masked.
    pub body: Option<Bytes>,
    /// Classes a provider must be cleared for.
    pub restricted: Vec<String>,
    /// Placeholders to put back into the answer.
    pub vault: Option<Arc<Vault>>,
    /// For the audit line, when the policy had anything to say.
    pub audit: Option<Arc<Audit>>,
    /// The client's headers with redacted or masked values, when a
    /// forwarded header held something the policy rewrites.
    pub headers: Option<HeaderMap>,
    /// A class was found or declared whose rule is not `cacheable`: the
    /// request is never answered from or stored in a response cache.
    pub uncacheable: bool,
    /// The classes found or declared, sorted and comma-joined (empty when
    /// none): cached answers are kept apart by it.
    pub data_class: String,
}

/// Headers that carry ids, not text: trace context. Left unscanned so a
/// detector never breaks a trace.
const TRACE_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "uber-trace-id",
    "sentry-trace",
    "x-cloud-trace-context",
    "x-amzn-trace-id",
];

/// Whether the value of an app header the sidecar may forward is scanned:
/// every forwarded header but content negotiation and trace context.
fn scanned_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    crate::upstream::relayable(name, Dialect::OpenAi, Dialect::OpenAi)
        && !matches!(n, "content-type" | "accept")
        && !TRACE_HEADERS.contains(&n)
        && !n.starts_with("x-b3-")
        && !n.starts_with("x-datadog-")
}

/// The API shape the engine walks for a client request.
pub fn api_of(client: Dialect, op: Operation) -> Api {
    match (client, op) {
        (Dialect::OpenAi, Operation::Embeddings) => Api::OpenAiEmbeddings,
        (Dialect::OpenAi, Operation::Completions) => Api::OpenAiCompletions,
        (Dialect::Responses, _) => Api::OpenAiResponses,
        (Dialect::Anthropic, _) => Api::Anthropic,
        (Dialect::Gemini, _) => Api::Gemini,
        // Never a client; scanned as any JSON if it were.
        (Dialect::Bedrock, _) => Api::AnyJson,
        (Dialect::OpenAi, Operation::Chat) => Api::OpenAiChat,
    }
}

/// Classes the app declared with the policy's header (comma-separated,
/// case-insensitive, at most 16).
fn declared(guard: &DataGuard, headers: &HeaderMap) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in headers.get_all(&guard.class_header) {
        let Ok(s) = v.to_str() else { continue };
        for c in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let c = c.to_ascii_lowercase();
            if out.len() < 16 && !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// The data policy stage: the table's policy, if it has one, over the
/// client's body.
pub fn guard(
    table: &crate::table::Table,
    metrics: &Metrics,
    inbound: &crate::inbound::Inbound,
) -> Result<Guarded, ProxyError> {
    match &table.snap.data_guard {
        Some(g) => apply_api(
            g,
            metrics,
            api_of(inbound.endpoint.dialect(), inbound.endpoint.operation()),
            Some(&inbound.raw),
            &inbound.headers,
        ),
        None => Ok(Guarded::default()),
    }
}

/// Runs the policy over a body walked as `api` (none: the headers only,
/// for a body the detectors cannot read) and the values of the headers
/// the sidecar forwards.
pub fn apply_api(
    guard: &DataGuard,
    metrics: &Metrics,
    api: Api,
    raw: Option<&[u8]>,
    headers: &HeaderMap,
) -> Result<Guarded, ProxyError> {
    let span = crate::trace::redaction_span();
    let _in_span = span.enter();
    let declared = declared(guard, headers);
    let mut body: Value = match raw {
        Some(raw) => {
            serde_json::from_slice(raw).map_err(|e| ProxyError::InvalidJson(e.to_string()))?
        }
        None => Value::Null,
    };
    let mut values: Vec<String> = headers
        .iter()
        .filter(|(n, _)| scanned_header(n))
        .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let outcome = guard.engine.process_with(&mut body, api, &mut values);
    let classes_found = outcome.found.iter().filter(|c| c.count > 0).count();
    crate::trace::redaction_done(&span, classes_found, outcome.blocked);
    for c in &outcome.found {
        metrics
            .redactions
            .with_label_values(&[c.class.as_str(), c.action.name()])
            .inc_by(c.count as u64);
    }
    if outcome.blocked {
        let classes: Vec<String> = outcome
            .blocking()
            .map(|c| format!("{} ({} found)", c.class, c.count))
            .collect();
        return Err(ProxyError::DataBlocked {
            classes: classes.join(", "),
        });
    }
    let rewritten = outcome
        .found
        .iter()
        .any(|c| matches!(c.action, Action::Redact | Action::Mask) && c.count > 0);
    let mut restricted = outcome.restricted.clone();
    for d in &declared {
        if !restricted.contains(d) {
            restricted.push(d.clone());
        }
    }
    let audit = (!outcome.found.is_empty() || !declared.is_empty()).then(|| {
        Arc::new(Audit {
            found: outcome.to_string(),
            restricted: restricted.join(","),
            declared: declared.join(","),
        })
    });
    let (body, headers) = match rewritten {
        true => (
            match raw {
                Some(_) => Some(Bytes::from(serde_json::to_vec(&body).map_err(|e| {
                    ProxyError::Encode(format!("the redacted request: {e}"))
                })?)),
                None => None,
            },
            rewrite_headers(headers, &values),
        ),
        false => (None, None),
    };
    let mut classes: Vec<&str> = outcome
        .found
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| c.class.as_str())
        .chain(declared.iter().map(String::as_str))
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let uncacheable = classes
        .iter()
        .any(|c| !guard.cacheable.iter().any(|k| k == c));
    let data_class = classes.join(",");
    let vault = (guard.restore && !outcome.vault.is_empty()).then(|| Arc::new(outcome.vault));
    Ok(Guarded {
        body,
        restricted,
        vault,
        audit,
        headers,
        uncacheable,
        data_class,
    })
}

/// `headers` with the scanned values replaced by `values` (in the same
/// order), or `None` when none changed. A value that is no longer a valid
/// header value is dropped rather than forwarded raw.
fn rewrite_headers(headers: &HeaderMap, values: &[String]) -> Option<HeaderMap> {
    let mut scanned = values.iter();
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut changed = false;
    for (name, value) in headers {
        if !scanned_header(name) {
            out.append(name.clone(), value.clone());
            continue;
        }
        let Some(new) = scanned.next() else {
            out.append(name.clone(), value.clone());
            continue;
        };
        if new.as_bytes() == value.as_bytes() {
            out.append(name.clone(), value.clone());
            continue;
        }
        changed = true;
        if let Ok(mut v) = HeaderValue::from_bytes(new.as_bytes()) {
            v.set_sensitive(value.is_sensitive());
            out.append(name.clone(), v);
        }
    }
    changed.then_some(out)
}

/// The data policy over a request whose body is not scanned here (no
/// body, or bytes the detectors cannot read): its forwarded headers are,
/// and what they carry must be cleared for `provider`. The headers to
/// send, when a value was rewritten.
pub fn guard_headers(
    guard: Option<&DataGuard>,
    metrics: &Metrics,
    provider: &Provider,
    route: &str,
    headers: &HeaderMap,
) -> Result<Option<HeaderMap>, ProxyError> {
    let Some(guard) = guard else {
        return Ok(None);
    };
    let g = apply_api(guard, metrics, Api::AnyJson, None, headers)?;
    if !cleared(provider, &g.restricted) {
        return Err(ProxyError::NotCleared {
            route: route.to_string(),
            classes: g.restricted.join(", "),
        });
    }
    Ok(g.headers)
}

/// Refuses a body the detectors cannot read (`what`: its content type, or
/// `websocket`) for a provider not cleared for every class whose rule
/// says `unscannable: deny`.
pub fn allow_unscannable(guard: &DataGuard, p: &Provider, what: &str) -> Result<(), ProxyError> {
    let missing: Vec<&str> = guard
        .unscannable_deny
        .iter()
        .filter(|c| !p.clearance.contains(c))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ProxyError::Unscannable {
        content_type: what.to_string(),
        provider: p.name.clone(),
        classes: missing.join(", "),
    })
}

/// Whether `p` may receive a request carrying `restricted` classes.
pub fn cleared(p: &Provider, restricted: &[String]) -> bool {
    restricted
        .iter()
        .all(|c| p.clearance.iter().any(|x| x == c))
}

/// Puts redacted values back into a whole answer in the client's format.
pub fn restore_whole(vault: &Vault, api: Api, body: Bytes) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    if vault.restore_json(&mut v, api) == 0 {
        return body;
    }
    // Encoding a parsed document cannot fail; were it to, the answer goes
    // as the upstream sent it rather than empty.
    serde_json::to_vec(&v).map(Bytes::from).unwrap_or(body)
}

/// Restores placeholders in a client-format event stream. Each text or
/// tool-argument channel has its own restorer, which holds back at most a
/// placeholder's length until it is complete; what it holds is flushed
/// before the channel ends.
pub struct StreamRestore {
    client: Dialect,
    vault: Arc<Vault>,
    parser: SseParser,
    /// OpenAI: choice index; Anthropic: content block index.
    text: HashMap<u64, StreamRestorer>,
    /// OpenAI: (choice, tool call index); Anthropic: (block, 0).
    args: HashMap<(u64, u64), StreamRestorer>,
}

impl StreamRestore {
    /// A restorer for one response stream.
    pub fn new(client: Dialect, vault: Arc<Vault>) -> Self {
        StreamRestore {
            client,
            vault,
            parser: SseParser::new(),
            text: HashMap::new(),
            args: HashMap::new(),
        }
    }

    fn text_push(&mut self, key: u64, s: &str) -> String {
        let vault = &self.vault;
        self.text
            .entry(key)
            .or_insert_with(|| StreamRestorer::new(vault.clone()))
            .push(s)
    }

    fn args_push(&mut self, key: (u64, u64), s: &str) -> String {
        let vault = &self.vault;
        self.args
            .entry(key)
            .or_insert_with(|| StreamRestorer::new_json_string(vault.clone()))
            .push(s)
    }

    /// Client-bound bytes in, restored bytes out.
    pub fn filter(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut events = Vec::new();
        self.parser.push_raw(bytes, |raw| {
            if let Some(ev) = SseEvent::parse(raw) {
                events.push(ev);
            }
        });
        let mut out = Vec::with_capacity(bytes.len() + 32);
        for ev in events {
            self.event(ev, &mut out);
        }
        out
    }

    fn event(&mut self, ev: SseEvent, out: &mut Vec<u8>) {
        let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else {
            if ev.data.trim() == "[DONE]" {
                self.flush_openai_all(out);
            }
            write_event(out, ev.event.as_deref(), ev.data.as_bytes());
            return;
        };
        match self.client {
            Dialect::Anthropic => self.anthropic(&mut v, ev.event.as_deref(), out),
            Dialect::Responses => self.responses(&mut v, out),
            _ => self.openai(&mut v),
        }
        let data = serde_json::to_vec(&v).unwrap_or_else(|_| ev.data.clone().into_bytes());
        write_event(out, ev.event.as_deref(), &data);
    }

    fn openai(&mut self, v: &mut Value) {
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return;
        };
        for choice in choices {
            let i = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else {
                continue;
            };
            if let Some(Value::String(s)) = delta.get("content") {
                let restored = self.text_push(i, s);
                delta.insert("content".into(), Value::String(restored));
            }
            if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    let j = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(Value::String(a)) = call.pointer("/function/arguments") {
                        let restored = self.args_push((i, j), a);
                        if let Some(slot) = call.pointer_mut("/function/arguments") {
                            *slot = Value::String(restored);
                        }
                    }
                }
            }
            if finishing {
                let rest = self.text.get_mut(&i).map(StreamRestorer::finish);
                if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                    let cur = delta
                        .get("content")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    delta.insert("content".into(), Value::String(cur + &rest));
                }
                let mut tail = Vec::new();
                for ((ci, j), r) in self.args.iter_mut() {
                    if *ci == i {
                        let rest = r.finish();
                        if !rest.is_empty() {
                            tail.push(
                                serde_json::json!({"index": j, "function": {"arguments": rest}}),
                            );
                        }
                    }
                }
                if !tail.is_empty() {
                    delta.insert("tool_calls".into(), Value::Array(tail));
                }
            }
        }
    }

    /// Whatever is still held (a stream without `finish_reason`), as one
    /// chunk before `[DONE]`.
    fn flush_openai_all(&mut self, out: &mut Vec<u8>) {
        let mut keys: Vec<u64> = self.text.keys().copied().collect();
        keys.sort_unstable();
        for i in keys {
            let rest = self
                .text
                .get_mut(&i)
                .map(StreamRestorer::finish)
                .unwrap_or_default();
            if !rest.is_empty() {
                let chunk = serde_json::json!({"object": "chat.completion.chunk",
                    "choices": [{"index": i, "delta": {"content": rest}, "finish_reason": null}]});
                write_event(out, None, chunk.to_string().as_bytes());
            }
        }
    }

    /// Responses events: text and argument deltas through their channel's
    /// restorer (what it holds flushed as one more delta before the part's
    /// `done`), and the texts of `done` events and the final response
    /// restored whole.
    fn responses(&mut self, v: &mut Value, out: &mut Vec<u8>) {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let (item, part) = (u("output_index"), u("content_index"));
        let key = item * 1024 + part;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "response.output_text.delta" | "response.function_call_arguments.delta" => {
                let Some(Value::String(d)) = v.get("delta") else {
                    return;
                };
                let restored = if kind == "response.output_text.delta" {
                    self.text_push(key, d)
                } else {
                    self.args_push((item, 0), d)
                };
                if let Some(slot) = v.get_mut("delta") {
                    *slot = Value::String(restored);
                }
            }
            "response.output_text.done" | "response.function_call_arguments.done" => {
                let (rest, delta_type) = if kind == "response.output_text.done" {
                    let r = self.text.remove(&key).map(|mut r| r.finish());
                    (r, "response.output_text.delta")
                } else {
                    let r = self.args.remove(&(item, 0)).map(|mut r| r.finish());
                    (r, "response.function_call_arguments.delta")
                };
                if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                    let mut d = v.clone();
                    if let Value::Object(o) = &mut d {
                        o.remove("text");
                        o.remove("arguments");
                        o.insert("type".into(), Value::String(delta_type.into()));
                        o.insert("delta".into(), Value::String(rest));
                    }
                    write_event(out, Some(delta_type), d.to_string().as_bytes());
                }
                for field in ["text", "arguments"] {
                    if let Some(Value::String(t)) = v.get(field) {
                        let restored = if field == "text" {
                            self.vault.restore_str(t).into_owned()
                        } else {
                            self.vault.restore_json_text(t).into_owned()
                        };
                        if let Some(slot) = v.get_mut(field) {
                            *slot = Value::String(restored);
                        }
                    }
                }
            }
            _ => {
                for field in ["response", "item", "part"] {
                    if let Some(obj) = v.get_mut(field) {
                        self.vault.restore_value(obj);
                    }
                }
            }
        }
    }

    fn anthropic(&mut self, v: &mut Value, event: Option<&str>, out: &mut Vec<u8>) {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match v.get("type").and_then(Value::as_str) {
            Some("content_block_delta") => {
                let kind = v.pointer("/delta/type").and_then(Value::as_str);
                match kind {
                    Some("text_delta") => {
                        if let Some(Value::String(s)) = v.pointer("/delta/text") {
                            let restored = self.text_push(index, s);
                            if let Some(slot) = v.pointer_mut("/delta/text") {
                                *slot = Value::String(restored);
                            }
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(Value::String(s)) = v.pointer("/delta/partial_json") {
                            let restored = self.args_push((index, 0), s);
                            if let Some(slot) = v.pointer_mut("/delta/partial_json") {
                                *slot = Value::String(restored);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => {
                // Flush the block's held text as one more delta before it
                // closes.
                let text = self.text.remove(&index).map(|mut r| r.finish());
                if let Some(t) = text.filter(|t| !t.is_empty()) {
                    let d = serde_json::json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": t}});
                    write_event(
                        out,
                        event.map(|_| "content_block_delta"),
                        d.to_string().as_bytes(),
                    );
                }
                let args = self.args.remove(&(index, 0)).map(|mut r| r.finish());
                if let Some(a) = args.filter(|a| !a.is_empty()) {
                    let d = serde_json::json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": a}});
                    write_event(
                        out,
                        event.map(|_| "content_block_delta"),
                        d.to_string().as_bytes(),
                    );
                }
            }
            _ => {}
        }
    }
}
