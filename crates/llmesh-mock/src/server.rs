//! Accept loop, routing, auth, fault injection and the `/_mock/` control API.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::behavior::{Behavior, Layers};
use crate::body::{ActiveGuard, Events, MockBody, Pacing};
use crate::common::{ChatReq, Plan, ToolCall, DEFAULT_TOOL_ARGS};
use crate::{anthropic, gemini, openai, RecordedRequest};

/// Request bodies above this are refused (413); the mock has no use for them.
const MAX_BODY: usize = 32 << 20;

/// Models listed by the models endpoints, besides those with a rule.
const BUILTIN_MODELS: [&str; 7] = [
    "gpt-4o",
    "gpt-4o-mini",
    "text-embedding-3-small",
    "claude-sonnet-4-5",
    "claude-3-5-haiku-latest",
    "gemini-2.0-flash",
    "gemini-2.5-pro",
];

/// State shared by the handle and every connection. Readers on the hot path
/// only touch atomics and arc-swap loads; the request log mutex is taken
/// briefly and never across an await.
pub(crate) struct Shared {
    pub api_key: Option<String>,
    pub record: bool,
    pub default: ArcSwap<Behavior>,
    pub models: ArcSwap<HashMap<String, Arc<Behavior>>>,
    pub log: Mutex<Vec<RecordedRequest>>,
    pub count: AtomicUsize,
    pub active: Arc<AtomicUsize>,
    seq: AtomicU64,
}

impl Shared {
    pub fn new(api_key: Option<String>, record: bool, default: Behavior) -> Self {
        Shared {
            api_key,
            record,
            default: ArcSwap::from_pointee(default),
            models: ArcSwap::from_pointee(HashMap::new()),
            log: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            active: Arc::new(AtomicUsize::new(0)),
            seq: AtomicU64::new(0),
        }
    }

    pub fn set_model(&self, model: &str, b: Behavior) {
        let b = Arc::new(b);
        self.models.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(model.to_owned(), b.clone());
            m
        });
    }

    pub fn remove_model(&self, model: &str) {
        self.models.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(model);
            m
        });
    }

    pub fn log(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic elsewhere must not take the mock down with it.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn layers(&self, model: Option<&str>, headers: &HeaderMap) -> Result<Layers, String> {
        let header_layer = Behavior::from_headers(headers).map_err(|e| e.to_string())?;
        let model = model.and_then(|m| {
            let map = self.models.load();
            map.get(m).cloned()
        });
        Ok(Layers {
            default: self.default.load_full(),
            model,
            headers: header_layer,
        })
    }
}

/// Accept connections until `stop` fires (or its sender is dropped), then
/// abort every connection still open.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Streams are many small writes; Nagle would add delays.
                    let _ = stream.set_nodelay(true);
                    let builder = builder.clone();
                    let shared = shared.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(handle(shared, req).await) }
                        });
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                            tracing::trace!(error = %e, "connection ended with error");
                        }
                    });
                }
                Err(e) => {
                    // Typically EMFILE under load: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Dialect {
    fn error(self, status: u16, error_type: Option<&str>, message: &str) -> Response<MockBody> {
        let body = match self {
            Dialect::OpenAi => openai::error_body(status, error_type, message),
            Dialect::Anthropic => anthropic::error_body(status, error_type, message),
            Dialect::Gemini => gemini::error_body(status, error_type, message),
        };
        json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
    }
}

enum Endpoint<'a> {
    Chat,
    Embeddings,
    Models,
    Gemini { model: &'a str, stream: bool },
    NotFound,
    BadMethod,
}

fn route<'a>(method: &Method, path: &'a str, headers: &HeaderMap) -> (Dialect, Endpoint<'a>) {
    let post = method == Method::POST;
    let get = method == Method::GET;
    let check = |ok: bool, e: Endpoint<'a>| if ok { e } else { Endpoint::BadMethod };
    match path {
        "/v1/chat/completions" => (Dialect::OpenAi, check(post, Endpoint::Chat)),
        "/v1/embeddings" => (Dialect::OpenAi, check(post, Endpoint::Embeddings)),
        "/v1/messages" => (Dialect::Anthropic, check(post, Endpoint::Chat)),
        // Both OpenAI and Anthropic serve GET /v1/models; Anthropic clients
        // always send anthropic-version.
        "/v1/models" if headers.contains_key("anthropic-version") => {
            (Dialect::Anthropic, check(get, Endpoint::Models))
        }
        "/v1/models" => (Dialect::OpenAi, check(get, Endpoint::Models)),
        "/v1beta/models" => (Dialect::Gemini, check(get, Endpoint::Models)),
        _ => {
            let rest = path
                .strip_prefix("/v1beta/models/")
                .or_else(|| path.strip_prefix("/v1/models/"));
            match rest.and_then(|r| r.rsplit_once(':')) {
                Some((model, "generateContent")) if !model.is_empty() => (
                    Dialect::Gemini,
                    check(
                        post,
                        Endpoint::Gemini {
                            model,
                            stream: false,
                        },
                    ),
                ),
                Some((model, "streamGenerateContent")) if !model.is_empty() => (
                    Dialect::Gemini,
                    check(
                        post,
                        Endpoint::Gemini {
                            model,
                            stream: true,
                        },
                    ),
                ),
                _ if path.starts_with("/v1beta/") => (Dialect::Gemini, Endpoint::NotFound),
                _ => (Dialect::OpenAi, Endpoint::NotFound),
            }
        }
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

fn authorized(key: &str, dialect: Dialect, headers: &HeaderMap, query: Option<&str>) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match dialect {
        Dialect::OpenAi => header(AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|k| k.trim() == key),
        Dialect::Anthropic => header("x-api-key").is_some_and(|k| k == key),
        Dialect::Gemini => {
            header("x-goog-api-key").is_some_and(|k| k == key)
                || query_param(query, "key").is_some_and(|k| k == key)
        }
    }
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn handle(sh: Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    if let Some(rest) = parts.uri.path().strip_prefix("/_mock/") {
        let rest = rest.to_owned();
        return crate::control::handle(&sh, &parts.method, &rest, body).await;
    }
    let active = ActiveGuard::new(&sh.active);
    let (dialect, endpoint) = route(&parts.method, parts.uri.path(), &parts.headers);
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return dialect.error(413, None, &format!("could not read request body: {e}"));
        }
    };
    let json = if bytes.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice::<Value>(&bytes)
    };
    sh.count.fetch_add(1, Ordering::Relaxed);
    if sh.record {
        record(&sh, &parts, json.as_ref().ok());
    }
    match endpoint {
        Endpoint::NotFound => {
            return dialect.error(
                404,
                None,
                &format!("no such endpoint: {}", parts.uri.path()),
            )
        }
        Endpoint::BadMethod => {
            return dialect.error(
                405,
                None,
                &format!(
                    "method {} not allowed on {}",
                    parts.method,
                    parts.uri.path()
                ),
            )
        }
        _ => {}
    }
    if let Some(key) = sh.api_key.as_deref() {
        if !authorized(key, dialect, &parts.headers, parts.uri.query()) {
            return dialect.error(401, None, "invalid or missing API key");
        }
    }
    let body = match json {
        Ok(v) => v,
        Err(e) => return dialect.error(400, None, &format!("malformed JSON body: {e}")),
    };
    let model = match endpoint {
        Endpoint::Gemini { model, .. } => Some(model),
        _ => body.get("model").and_then(Value::as_str),
    };
    let layers = match sh.layers(model, &parts.headers) {
        Ok(l) => l,
        Err(e) => return dialect.error(400, None, &e),
    };

    // Faults, in the order a real upstream would exhibit them.
    let latency = layers.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if layers.hang() {
        // Dropped by hyper when the client disconnects.
        std::future::pending::<()>().await;
    }
    if let Some(status) = layers.injected_status() {
        let msg = match layers.error_message() {
            Some(m) => m.to_owned(),
            None => format!("llmesh-mock injected error (status {status})"),
        };
        let mut r = dialect.error(status, layers.error_type(), &msg);
        if let Some(s) = layers.retry_after_s() {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        return r;
    }

    let id = sh.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let parsed = match endpoint {
        Endpoint::Chat if dialect == Dialect::OpenAi => openai::parse_chat(&body),
        Endpoint::Chat => anthropic::parse_chat(&body),
        Endpoint::Gemini { model, stream } => {
            let sse = query_param(parts.uri.query(), "alt") == Some("sse");
            gemini::parse_chat(&body, model, stream, sse)
        }
        Endpoint::Embeddings => {
            return match openai::render_embeddings(&body, id) {
                Ok(b) => json_response(StatusCode::OK, b),
                Err(e) => dialect.error(400, None, &e),
            }
        }
        Endpoint::Models => return models(&sh, dialect),
        Endpoint::NotFound | Endpoint::BadMethod => return dialect.error(404, None, "not found"),
    };
    match parsed {
        Ok(chat) => answer(dialect, &chat, &layers, id, active),
        Err(e) => dialect.error(400, None, &e),
    }
}

fn record(sh: &Shared, parts: &Parts, body: Option<&Value>) {
    let rec = RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.cloned().unwrap_or(Value::Null),
    };
    sh.log().push(rec);
}

fn models(sh: &Shared, dialect: Dialect) -> Response<MockBody> {
    let rules = sh.models.load();
    let mut names: Vec<&str> = BUILTIN_MODELS.to_vec();
    let mut extra: Vec<&str> = rules
        .keys()
        .map(String::as_str)
        .filter(|m| !BUILTIN_MODELS.contains(m))
        .collect();
    extra.sort_unstable();
    names.extend(extra);
    let body = match dialect {
        Dialect::OpenAi => openai::render_models(&names, unix_now()),
        Dialect::Anthropic => anthropic::render_models(&names),
        Dialect::Gemini => gemini::render_models(&names),
    };
    json_response(StatusCode::OK, body)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Render the answer; `active` travels with a streamed body so the request
/// counts as live until the stream ends or is dropped.
fn answer(
    dialect: Dialect,
    chat: &ChatReq<'_>,
    layers: &Layers,
    id: u64,
    active: ActiveGuard,
) -> Response<MockBody> {
    let content_filter = layers.content_filter();
    let tool = if content_filter || !layers.tool_call() {
        None
    } else {
        chat.tool.map(|name| ToolCall {
            name,
            args: layers
                .tool_args()
                .map_or_else(|| DEFAULT_TOOL_ARGS.to_owned(), Value::to_string),
        })
    };
    let echo = layers.echo_chunk_chars().and_then(|n| {
        chat.last_user_text
            .as_deref()
            .map(|t| crate::common::pieces(t, n as usize))
    });
    let output_tokens = echo
        .as_ref()
        .map_or(layers.output_tokens(), |p| p.len() as u32);
    let plan = Plan {
        id,
        created: unix_now(),
        model: chat.model,
        input_tokens: chat.input_tokens,
        cached_tokens: u64::from(layers.cached_tokens()).min(chat.input_tokens),
        output_tokens,
        first_word: chat.first_word,
        echo,
        tool,
        content_filter,
        include_usage: chat.include_usage,
        omit_usage: layers.omit_usage(),
        sse: chat.sse,
    };
    let reset_after = layers.reset_after_chunks().map(|n| n as usize);
    if chat.stream {
        let events = match dialect {
            Dialect::OpenAi => openai::render_stream(&plan),
            Dialect::Anthropic => anthropic::render_stream(&plan),
            Dialect::Gemini => gemini::render_stream(&plan),
        };
        let pacing = Pacing {
            first: layers.ttft(),
            between: layers.chunk_delay(),
            reset_after,
        };
        let mut r = Response::new(MockBody::events(events, pacing, Some(active)));
        let ct = if plan.sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return r;
    }
    let body = match dialect {
        Dialect::OpenAi => openai::render(&plan),
        Dialect::Anthropic => anthropic::render(&plan),
        Dialect::Gemini => gemini::render(&plan),
    };
    match reset_after {
        None => json_response(StatusCode::OK, body),
        Some(n) => {
            // Non-streaming: send at most the first half of the JSON, then
            // abort, so the client sees a truncated body.
            let mut mid = body.len() / 2;
            while !body.is_char_boundary(mid) {
                mid -= 1;
            }
            let mut halves = Events::with_capacity(body.len(), 2);
            halves.buf.push_str(&body[..mid]);
            halves.end_event();
            halves.buf.push_str(&body[mid..]);
            halves.end_event();
            let pacing = Pacing {
                reset_after: Some(n.min(1)),
                ..Pacing::default()
            };
            let mut r = Response::new(MockBody::events(halves, pacing, Some(active)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    }
}
