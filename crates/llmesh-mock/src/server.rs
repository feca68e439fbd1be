//! Accept loop, routing, auth, fault injection and the `/_mock/` control API.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
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

use crate::batches::MsgBatch;
use crate::behavior::{Behavior, Layers};
use crate::body::{ActiveGuard, Events, MockBody, Pacing};
use crate::common::{ChatReq, Plan, ToolCall, DEFAULT_TOOL_ARGS};
use crate::files::FileStore;
use crate::responses::StoredResponse;
use crate::store::{lock, Store};
use crate::{
    anthropic, audio, azure, batches, bedrock, completions, files, gemini, images, moderations,
    multipart, openai, realtime, responses, RecordedRequest,
};

/// Request bodies above this are refused (413); the mock has no use for them.
pub(crate) const MAX_BODY: usize = 32 << 20;

/// Batches (of each kind) kept for retrieval; the oldest go first.
const MAX_BATCHES: usize = 1000;

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
    /// Random per instance, so that the ids of two mocks never collide.
    salt: u32,
    /// The bound address, for absolute URLs when a request names no host.
    pub addr: SocketAddr,
    /// Responses API objects (`previous_response_id`, retrieve, delete).
    pub responses: Mutex<Store<StoredResponse>>,
    /// Uploaded files and batch output files.
    pub files: Mutex<FileStore>,
    /// OpenAI batch objects.
    pub batches: Mutex<Store<Value>>,
    /// Anthropic message batches with their results.
    pub msg_batches: Mutex<Store<MsgBatch>>,
    /// Open realtime WebSocket sessions, aborted at shutdown.
    pub ws_tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    pub fn new(api_key: Option<String>, record: bool, default: Behavior, addr: SocketAddr) -> Self {
        Shared {
            api_key,
            record,
            default: ArcSwap::from_pointee(default),
            models: ArcSwap::from_pointee(HashMap::new()),
            log: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            active: Arc::new(AtomicUsize::new(0)),
            seq: AtomicU64::new(0),
            salt: rand::random(),
            addr,
            responses: Mutex::new(Store::new(responses::MAX_STORED)),
            files: Mutex::new(FileStore::default()),
            batches: Mutex::new(Store::new(MAX_BATCHES)),
            msg_batches: Mutex::new(Store::new(MAX_BATCHES)),
            ws_tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Next per-server sequence number (used in ids).
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A fresh id: `prefix` then 24 hex digits (instance salt, sequence).
    pub fn new_id(&self, prefix: &str) -> String {
        format!("{prefix}{:08x}{:016x}", self.salt, self.next_seq())
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

    pub fn layers(&self, model: Option<&str>, headers: &HeaderMap) -> Result<Layers, String> {
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
                        // With upgrades: the realtime endpoint is a WebSocket.
                        if let Err(e) = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await
                        {
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
    // No handler runs any more, so no session starts after this.
    let mut ws = std::mem::take(&mut *lock(&shared.ws_tasks));
    ws.shutdown().await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
    /// Bedrock runtime errors (`{"message"}` plus `x-amzn-ErrorType`).
    Bedrock,
}

impl Dialect {
    pub(crate) fn error_body(self, status: u16, error_type: Option<&str>, message: &str) -> String {
        match self {
            Dialect::OpenAi => openai::error_body(status, error_type, message),
            Dialect::Anthropic => anthropic::error_body(status, error_type, message),
            Dialect::Gemini => gemini::error_body(status, error_type, message),
            Dialect::Bedrock => bedrock::error_body(message),
        }
    }

    pub(crate) fn error(
        self,
        status: u16,
        error_type: Option<&str>,
        message: &str,
    ) -> Response<MockBody> {
        let mut r = json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            self.error_body(status, error_type, message),
        );
        if self == Dialect::Bedrock {
            set_aws_error_type(&mut r, status, error_type);
        }
        r
    }
}

/// Bedrock names its error type in a header, not in the body.
fn set_aws_error_type(r: &mut Response<MockBody>, status: u16, error_type: Option<&str>) {
    if let Ok(v) = HeaderValue::from_str(&bedrock::error_type_header(status, error_type)) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
}

/// An error answer (status and body in the endpoint's dialect), for the
/// parts of a request that batches run as well.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub body: String,
}

impl ApiError {
    pub fn new(dialect: Dialect, status: u16, message: &str) -> Self {
        ApiError {
            status,
            body: dialect.error_body(status, None, message),
        }
    }

    /// A 400 in the OpenAI format.
    pub fn openai(message: &str) -> Self {
        ApiError::new(Dialect::OpenAi, 400, message)
    }

    pub fn response(self) -> Response<MockBody> {
        json_response(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            self.body,
        )
    }
}

/// The injected error of the behavior, if this request is to get one.
pub(crate) fn injected_error(dialect: Dialect, layers: &Layers) -> Option<ApiError> {
    let status = layers.injected_status()?;
    let msg = match layers.error_message() {
        Some(m) => m.to_owned(),
        None if dialect == Dialect::Bedrock && status == 429 => bedrock::THROTTLED.to_owned(),
        None => format!("llmesh-mock injected error (status {status})"),
    };
    Some(ApiError {
        status,
        body: dialect.error_body(status, layers.error_type(), &msg),
    })
}

#[derive(Clone, Copy)]
pub(crate) enum Endpoint<'a> {
    Chat,
    Embeddings,
    Models,
    Gemini {
        model: &'a str,
        stream: bool,
    },
    /// OpenAI legacy `/v1/completions`.
    Completions,
    Responses,
    ResponsesInputTokens,
    ResponseGet(&'a str),
    ResponseDelete(&'a str),
    ResponseInputItems(&'a str),
    /// Anthropic `/v1/messages/count_tokens`.
    CountTokens,
    Transcribe {
        translate: bool,
    },
    Speech,
    Moderations,
    Images,
    FileUpload,
    FileList,
    FileGet(&'a str),
    FileDelete(&'a str),
    FileContent(&'a str),
    BatchCreate,
    BatchList,
    BatchGet(&'a str),
    BatchCancel(&'a str),
    MsgBatchCreate,
    MsgBatchList,
    MsgBatchGet(&'a str),
    MsgBatchDelete(&'a str),
    MsgBatchResults(&'a str),
    MsgBatchCancel(&'a str),
    Realtime,
    /// Azure OpenAI; `deployment` is `None` on the v1 surface (model in the
    /// body).
    Azure {
        deployment: Option<&'a str>,
        api: azure::Api,
    },
    /// Bedrock runtime `/model/{model}/{op}`; `model` still percent-encoded.
    Bedrock {
        model: &'a str,
        op: BedrockOp,
    },
    /// Vertex AI `publishers/anthropic/models/{model}:rawPredict` or
    /// `:streamRawPredict`.
    VertexClaude {
        model: &'a str,
        stream: bool,
    },
    NotFound,
    BadMethod,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BedrockOp {
    Converse,
    ConverseStream,
    Invoke,
    InvokeStream,
}

/// How a route checks the API key (when the mock has one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// The dialect's own header.
    Dialect,
    /// Azure: `api-key: <key>`, or any non-empty `Authorization: Bearer`
    /// (Entra ID tokens are checked by a front, not here).
    Azure,
    /// Vertex AI: any non-empty `Authorization: Bearer` (a Google token).
    Bearer,
    /// Bedrock: SigV4, which a front checks; nothing here.
    None,
}

impl Endpoint<'_> {
    /// Endpoints whose body is `multipart/form-data`, parsed as a stream.
    fn multipart(self) -> bool {
        matches!(self, Endpoint::Transcribe { .. } | Endpoint::FileUpload)
    }
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
                _ => route_v1(method, path).unwrap_or((Dialect::OpenAi, Endpoint::NotFound)),
            }
        }
    }
}

/// The cloud providers' URL shapes: Azure OpenAI (`/openai/...`), Bedrock
/// runtime (`/model/...`) and Vertex AI (`/v1/projects/...`).
fn route_cloud<'a>(method: &Method, path: &'a str) -> Option<(Dialect, Endpoint<'a>, Auth)> {
    let check = |e: Endpoint<'a>| {
        if method == Method::POST {
            e
        } else {
            Endpoint::BadMethod
        }
    };
    if let Some(rest) = path.strip_prefix("/openai/") {
        let (deployment, api) = match rest.strip_prefix("v1/") {
            Some(api) => (None, api),
            None => {
                let (dep, api) = rest.strip_prefix("deployments/")?.split_once('/')?;
                if dep.is_empty() {
                    return Some((Dialect::OpenAi, Endpoint::NotFound, Auth::Azure));
                }
                (Some(dep), api)
            }
        };
        let api = match api {
            "chat/completions" => Some(azure::Api::Chat),
            "embeddings" => Some(azure::Api::Embeddings),
            "responses" if deployment.is_none() => Some(azure::Api::Responses),
            _ => None,
        };
        let endpoint = match api {
            Some(api) => check(Endpoint::Azure { deployment, api }),
            None => Endpoint::NotFound,
        };
        return Some((Dialect::OpenAi, endpoint, Auth::Azure));
    }
    if let Some(rest) = path.strip_prefix("/model/") {
        let endpoint = match rest.split_once('/') {
            Some((model, op)) if !model.is_empty() => {
                let op = match op {
                    "converse" => Some(BedrockOp::Converse),
                    "converse-stream" => Some(BedrockOp::ConverseStream),
                    "invoke" => Some(BedrockOp::Invoke),
                    "invoke-with-response-stream" => Some(BedrockOp::InvokeStream),
                    _ => None,
                };
                op.map_or(Endpoint::NotFound, |op| {
                    check(Endpoint::Bedrock { model, op })
                })
            }
            _ => Endpoint::NotFound,
        };
        return Some((Dialect::Bedrock, endpoint, Auth::None));
    }
    let rest = path.strip_prefix("/v1/projects/")?;
    let seg: Vec<&str> = rest.splitn(7, '/').collect();
    let ["locations", "publishers", "models"] = [seg.get(1)?, seg.get(3)?, seg.get(5)?].map(|s| *s)
    else {
        return None;
    };
    let (publisher, tail) = (seg.get(4)?, seg.get(6)?);
    let (model, verb) = tail.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') {
        return Some((Dialect::Gemini, Endpoint::NotFound, Auth::Bearer));
    }
    Some(match (*publisher, verb) {
        ("google", "generateContent") => (
            Dialect::Gemini,
            check(Endpoint::Gemini {
                model,
                stream: false,
            }),
            Auth::Bearer,
        ),
        ("google", "streamGenerateContent") => (
            Dialect::Gemini,
            check(Endpoint::Gemini {
                model,
                stream: true,
            }),
            Auth::Bearer,
        ),
        ("anthropic", "rawPredict") => (
            Dialect::Anthropic,
            check(Endpoint::VertexClaude {
                model,
                stream: false,
            }),
            Auth::Bearer,
        ),
        ("anthropic", "streamRawPredict") => (
            Dialect::Anthropic,
            check(Endpoint::VertexClaude {
                model,
                stream: true,
            }),
            Auth::Bearer,
        ),
        ("anthropic", _) => (Dialect::Anthropic, Endpoint::NotFound, Auth::Bearer),
        _ => (Dialect::Gemini, Endpoint::NotFound, Auth::Bearer),
    })
}

/// The endpoints besides chat, embeddings and models, by path segment.
fn route_v1<'a>(method: &Method, path: &'a str) -> Option<(Dialect, Endpoint<'a>)> {
    use Endpoint as E;
    let rest = path.strip_prefix("/v1/")?;
    let mut seg = [""; 4];
    let mut n = 0;
    for s in rest.split('/') {
        if n == seg.len() || s.is_empty() {
            return None;
        }
        seg[n] = s;
        n += 1;
    }
    let post = method == Method::POST;
    let get = method == Method::GET;
    let delete = method == Method::DELETE;
    let one = |ok: bool, e: Endpoint<'a>| if ok { e } else { E::BadMethod };
    // get, post or delete, each when given.
    let by = |g: Option<Endpoint<'a>>, p: Option<Endpoint<'a>>, d: Option<Endpoint<'a>>| {
        let pick = if get {
            g
        } else if post {
            p
        } else if delete {
            d
        } else {
            None
        };
        pick.unwrap_or(E::BadMethod)
    };
    let o = |e| Some((Dialect::OpenAi, e));
    let a = |e| Some((Dialect::Anthropic, e));
    match seg[..n] {
        ["completions"] => o(one(post, E::Completions)),
        ["responses"] => o(one(post, E::Responses)),
        ["responses", "input_tokens"] => o(one(post, E::ResponsesInputTokens)),
        ["responses", id] => o(by(
            Some(E::ResponseGet(id)),
            None,
            Some(E::ResponseDelete(id)),
        )),
        ["responses", id, "input_items"] => o(one(get, E::ResponseInputItems(id))),
        ["audio", "transcriptions"] => o(one(post, E::Transcribe { translate: false })),
        ["audio", "translations"] => o(one(post, E::Transcribe { translate: true })),
        ["audio", "speech"] => o(one(post, E::Speech)),
        ["moderations"] => o(one(post, E::Moderations)),
        ["images", "generations"] => o(one(post, E::Images)),
        ["files"] => o(by(Some(E::FileList), Some(E::FileUpload), None)),
        ["files", id] => o(by(Some(E::FileGet(id)), None, Some(E::FileDelete(id)))),
        ["files", id, "content"] => o(one(get, E::FileContent(id))),
        ["batches"] => o(by(Some(E::BatchList), Some(E::BatchCreate), None)),
        ["batches", id] => o(one(get, E::BatchGet(id))),
        ["batches", id, "cancel"] => o(one(post, E::BatchCancel(id))),
        ["messages", "count_tokens"] => a(one(post, E::CountTokens)),
        ["messages", "batches"] => a(by(Some(E::MsgBatchList), Some(E::MsgBatchCreate), None)),
        ["messages", "batches", id] => a(by(
            Some(E::MsgBatchGet(id)),
            None,
            Some(E::MsgBatchDelete(id)),
        )),
        ["messages", "batches", id, "results"] => a(one(get, E::MsgBatchResults(id))),
        ["messages", "batches", id, "cancel"] => a(one(post, E::MsgBatchCancel(id))),
        ["realtime"] => o(one(get, E::Realtime)),
        _ => None,
    }
}

pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
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
        Dialect::Bedrock => true,
    }
}

fn authorized_by(
    auth: Auth,
    key: &str,
    dialect: Dialect,
    headers: &HeaderMap,
    query: Option<&str>,
) -> bool {
    let bearer = || {
        headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| !t.trim().is_empty())
    };
    match auth {
        Auth::Dialect => authorized(key, dialect, headers, query),
        Auth::Azure => {
            headers
                .get("api-key")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|k| k == key)
                || bearer()
        }
        Auth::Bearer => bearer(),
        Auth::None => true,
    }
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// What an endpoint handler gets besides its body.
pub(crate) struct Ctx<'a> {
    pub sh: &'a Arc<Shared>,
    pub parts: &'a Parts,
    pub layers: &'a Layers,
    /// Per-server sequence number of this request, used in ids.
    pub id: u64,
}

impl Ctx<'_> {
    pub fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }
}

async fn handle(sh: Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let (mut parts, body) = req.into_parts();
    if let Some(rest) = parts.uri.path().strip_prefix("/_mock/") {
        let rest = rest.to_owned();
        return crate::control::handle(&sh, &parts.method, &rest, body).await;
    }
    let active = ActiveGuard::new(&sh.active);
    let (dialect, endpoint, auth) =
        route_cloud(&parts.method, parts.uri.path()).unwrap_or_else(|| {
            let (d, e) = route(&parts.method, parts.uri.path(), &parts.headers);
            (d, e, Auth::Dialect)
        });
    // Multipart bodies are parsed as they arrive (after the auth check);
    // every other body is read whole first.
    let (json, stream_body) = if endpoint.multipart() {
        (Ok(Value::Null), Some(body))
    } else {
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
        (json, None)
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
        let ok = authorized_by(auth, key, dialect, &parts.headers, parts.uri.query())
            || (matches!(endpoint, Endpoint::Realtime)
                && realtime::subprotocol_key(&parts.headers).is_some_and(|k| k == key));
        if !ok {
            if let Some(b) = stream_body {
                // Read the upload first: a client still sending would see
                // a broken pipe instead of the 401.
                drain(b).await;
            }
            return dialect.error(401, None, "invalid or missing API key");
        }
    }
    let mut body = match json {
        Ok(v) => v,
        Err(e) => return dialect.error(400, None, &format!("malformed JSON body: {e}")),
    };
    if let Endpoint::Azure {
        deployment: Some(_),
        ..
    } = endpoint
    {
        if query_param(parts.uri.query(), "api-version").is_none() {
            return json_response(StatusCode::BAD_REQUEST, azure::missing_api_version());
        }
    }
    // The model named by a cloud URL (decoded: Bedrock ids hold `:`); the
    // body names none, so the answer and the per-model rules use this one.
    let url_model = match endpoint {
        Endpoint::Bedrock { model, .. } | Endpoint::VertexClaude { model, .. } => {
            Some(bedrock::percent_decode(model))
        }
        Endpoint::Azure {
            deployment: Some(d),
            ..
        } => Some(bedrock::percent_decode(d)),
        _ => None,
    };
    if let Endpoint::Bedrock {
        op: BedrockOp::Invoke | BedrockOp::InvokeStream,
        ..
    } = endpoint
    {
        if let Err(e) = bedrock::check_invoke_body(&body) {
            return dialect.error(400, None, &e);
        }
    }
    if let Endpoint::VertexClaude { .. } = endpoint {
        if body.get("anthropic_version").and_then(Value::as_str) != Some("vertex-2023-10-16") {
            return dialect.error(
                400,
                None,
                "anthropic_version: must be \"vertex-2023-10-16\" on Vertex AI",
            );
        }
    }
    if let (Some(m), Some(obj)) = (url_model.as_deref(), body.as_object_mut()) {
        if !matches!(
            endpoint,
            Endpoint::Bedrock {
                op: BedrockOp::Converse | BedrockOp::ConverseStream,
                ..
            }
        ) {
            obj.insert("model".into(), Value::String(m.to_owned()));
        }
    }
    let form = match stream_body {
        Some(b) => {
            let keep_file = matches!(endpoint, Endpoint::FileUpload);
            match multipart::read(&parts.headers, b, keep_file).await {
                Ok(f) => Some(f),
                Err(e) => return e.response(),
            }
        }
        None => None,
    };
    let query_model = match endpoint {
        Endpoint::Realtime => realtime::query_model(parts.uri.query()),
        _ => None,
    };
    let model = match endpoint {
        Endpoint::Gemini { model, .. } => Some(model),
        Endpoint::Bedrock { .. } | Endpoint::VertexClaude { .. } => url_model.as_deref(),
        Endpoint::Realtime => query_model.as_deref(),
        _ => match &form {
            Some(f) => f.field("model"),
            None => body.get("model").and_then(Value::as_str),
        },
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
    if let Some(err) = injected_error(dialect, &layers) {
        let status = err.status;
        let mut r = err.response();
        if let Some(s) = layers.retry_after_s() {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        if dialect == Dialect::Bedrock {
            set_aws_error_type(&mut r, status, layers.error_type());
        }
        return r;
    }
    match endpoint {
        Endpoint::Bedrock { .. }
            if layers.model_not_found()
                || url_model.as_deref().is_some_and(bedrock::unknown_model) =>
        {
            return dialect.error(
                404,
                Some("ResourceNotFoundException"),
                bedrock::UNKNOWN_MODEL,
            );
        }
        Endpoint::Azure { .. } if layers.model_not_found() => {
            return json_response(StatusCode::NOT_FOUND, azure::deployment_not_found());
        }
        Endpoint::Azure {
            api: azure::Api::Chat | azure::Api::Responses,
            ..
        } if layers.prompt_filtered() => {
            return json_response(StatusCode::BAD_REQUEST, azure::content_filter());
        }
        _ => {}
    }

    // Taken out before `ctx` borrows the parts.
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let id = sh.next_seq();
    let ctx = Ctx {
        sh: &sh,
        parts: &parts,
        layers: &layers,
        id,
    };
    let chat = match endpoint {
        Endpoint::Chat if dialect == Dialect::OpenAi => openai::parse_chat(&body),
        Endpoint::Chat => anthropic::parse_chat(&body),
        Endpoint::Gemini { model, stream } => {
            let sse = query_param(parts.uri.query(), "alt") == Some("sse");
            gemini::parse_chat(&body, model, stream, sse)
        }
        Endpoint::Azure { api, .. } => match api {
            azure::Api::Chat => openai::parse_chat(&body),
            azure::Api::Embeddings => {
                return match openai::render_embeddings(&body, id) {
                    Ok(b) => json_response(StatusCode::OK, b),
                    Err(e) => dialect.error(400, None, &e),
                }
            }
            azure::Api::Responses => return responses::create(&ctx, &body, active),
        },
        Endpoint::Bedrock { op, .. } => {
            let model = url_model.as_deref().unwrap_or_default();
            match op {
                BedrockOp::Converse | BedrockOp::ConverseStream => {
                    bedrock::parse_converse(&body, model, op == BedrockOp::ConverseStream)
                }
                BedrockOp::Invoke | BedrockOp::InvokeStream => {
                    let mut chat = match anthropic::parse_chat(&body) {
                        Ok(c) => c,
                        Err(e) => return dialect.error(400, None, &e),
                    };
                    chat.stream = op == BedrockOp::InvokeStream;
                    if !chat.stream {
                        return answer(Dialect::Anthropic, &chat, &layers, id, active);
                    }
                    let plan = make_plan(&chat, &layers, id);
                    let events = anthropic::render_stream(&plan);
                    return bedrock::invoke_stream(&plan, &events, &layers, active);
                }
            }
        }
        Endpoint::VertexClaude { stream, .. } => match anthropic::parse_chat(&body) {
            Ok(mut chat) => {
                chat.stream = stream;
                return answer(Dialect::Anthropic, &chat, &layers, id, active);
            }
            Err(e) => return dialect.error(400, None, &e),
        },
        Endpoint::Embeddings => {
            return match openai::render_embeddings(&body, id) {
                Ok(b) => json_response(StatusCode::OK, b),
                Err(e) => dialect.error(400, None, &e),
            }
        }
        Endpoint::Models => return models(&sh, dialect),
        Endpoint::Completions => return completions::handle(&ctx, &body, active),
        Endpoint::Responses => return responses::create(&ctx, &body, active),
        Endpoint::ResponsesInputTokens => return responses::input_tokens(&ctx, &body),
        Endpoint::ResponseGet(rid) => return responses::get(&ctx, rid, active),
        Endpoint::ResponseDelete(rid) => return responses::delete(&ctx, rid),
        Endpoint::ResponseInputItems(rid) => return responses::input_items(&ctx, rid),
        Endpoint::CountTokens => {
            return match anthropic::parse_chat(&body) {
                Ok(chat) => json_response(
                    StatusCode::OK,
                    format!("{{\"input_tokens\":{}}}", chat.input_tokens),
                ),
                Err(e) => dialect.error(400, None, &e),
            }
        }
        Endpoint::Transcribe { translate } => {
            return match form {
                Some(f) => audio::transcribe(&ctx, &f, translate, active),
                None => dialect.error(400, None, "expected a multipart/form-data body"),
            }
        }
        Endpoint::Speech => return audio::speech(&ctx, &body, active),
        Endpoint::Moderations => {
            return match moderations::render(&body, &layers, id) {
                Ok(b) => full_answer(b, "application/json", &layers, active),
                Err(e) => e.response(),
            }
        }
        Endpoint::Images => return images::generate(&ctx, &body, active),
        Endpoint::FileUpload => {
            return match form {
                Some(f) => files::upload(&ctx, f),
                None => dialect.error(400, None, "expected a multipart/form-data body"),
            }
        }
        Endpoint::FileList => return files::list(&ctx),
        Endpoint::FileGet(fid) => return files::get(&ctx, fid),
        Endpoint::FileDelete(fid) => return files::delete(&ctx, fid),
        Endpoint::FileContent(fid) => return files::content(&ctx, fid, active),
        Endpoint::BatchCreate => return batches::create(&ctx, &body),
        Endpoint::BatchList => return batches::list(&ctx),
        Endpoint::BatchGet(bid) => return batches::get(&ctx, bid),
        Endpoint::BatchCancel(bid) => return batches::cancel(&ctx, bid),
        Endpoint::MsgBatchCreate => return batches::msg_create(&ctx, &body),
        Endpoint::MsgBatchList => return batches::msg_list(&ctx),
        Endpoint::MsgBatchGet(bid) => return batches::msg_get(&ctx, bid),
        Endpoint::MsgBatchDelete(bid) => return batches::msg_delete(&ctx, bid),
        Endpoint::MsgBatchResults(bid) => return batches::msg_results(&ctx, bid, active),
        Endpoint::MsgBatchCancel(bid) => return batches::msg_cancel(&ctx, bid),
        Endpoint::Realtime => {
            let model = model.unwrap_or(realtime::DEFAULT_MODEL);
            return realtime::accept(&ctx, model, on_upgrade, active);
        }
        Endpoint::NotFound | Endpoint::BadMethod => return dialect.error(404, None, "not found"),
    };
    match chat {
        Ok(chat) => answer(dialect, &chat, &layers, id, active),
        Err(e) => dialect.error(400, None, &e),
    }
}

/// Read and discard a request body (at most [`MAX_BODY`] bytes).
async fn drain(mut body: Incoming) {
    let mut n = 0;
    while let Some(Ok(frame)) = body.frame().await {
        n += frame.data_ref().map_or(0, Bytes::len);
        if n > MAX_BODY {
            return;
        }
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
        Dialect::Bedrock => bedrock::render_models(&names),
    };
    json_response(StatusCode::OK, body)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What `json_reply` answers before its turn: prose, not JSON.
const NOT_JSON: &str = "Sure! The answer is below.";

/// The generated answer to a chat-like request under these behaviors.
pub(crate) fn make_plan<'a>(chat: &ChatReq<'a>, layers: &'a Layers, id: u64) -> Plan<'a> {
    let content_filter = layers.content_filter();
    let json_turn = chat.assistant_turns >= layers.json_reply_after_turns() as usize;
    let tool = if content_filter || !layers.tool_call() {
        None
    } else {
        chat.tool.map(|name| ToolCall {
            name,
            // A forced tool carrying a structured answer: the JSON, or an
            // empty object before the turn it gets it right.
            args: match layers.json_reply() {
                Some(v) if chat.forced_tool && json_turn => v.to_string(),
                Some(_) if chat.forced_tool => "{}".to_owned(),
                _ => layers
                    .tool_args()
                    .map_or_else(|| DEFAULT_TOOL_ARGS.to_owned(), Value::to_string),
            },
        })
    };
    let echo = layers.echo_chunk_chars().and_then(|n| {
        chat.last_user_text
            .as_deref()
            .map(|t| crate::common::pieces(t, n as usize))
    });
    // A structured-output answer: the JSON, or prose before the turn it
    // gets it right.
    let echo = match layers.json_reply() {
        Some(v) if json_turn => Some(crate::common::pieces(&v.to_string(), 8)),
        Some(_) => Some(crate::common::pieces(NOT_JSON, 8)),
        None => echo,
    };
    let output_tokens = echo
        .as_ref()
        .map_or(layers.output_tokens(), |p| p.len() as u32);
    let cached_tokens = u64::from(layers.cached_tokens()).min(chat.input_tokens);
    Plan {
        id,
        created: unix_now(),
        model: layers.response_model().unwrap_or(chat.model),
        input_tokens: chat.input_tokens,
        cached_tokens,
        cache_write_tokens: u64::from(layers.cache_write_tokens())
            .min(chat.input_tokens - cached_tokens),
        output_tokens,
        first_word: chat.first_word,
        echo,
        tool,
        content_filter,
        include_usage: chat.include_usage,
        omit_usage: layers.omit_usage(),
        sse: chat.sse,
    }
}

/// A streamed answer paced by the behavior (ttft, chunk delay, reset);
/// `active` travels with the body so the request counts as live until the
/// stream ends or is dropped.
pub(crate) fn stream_answer(
    events: Events,
    content_type: &'static str,
    layers: &Layers,
    active: ActiveGuard,
) -> Response<MockBody> {
    let pacing = Pacing {
        first: layers.ttft(),
        between: layers.chunk_delay(),
        reset_after: layers.reset_after_chunks().map(|n| n as usize),
        per_event: false,
    };
    let mut r = Response::new(MockBody::events(events, pacing, Some(active)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A complete 200 answer; with `reset_after_chunks` at most its first half
/// is sent before the connection is aborted, so the client sees a
/// truncated body.
pub(crate) fn full_answer(
    body: impl Into<Bytes>,
    content_type: &'static str,
    layers: &Layers,
    active: ActiveGuard,
) -> Response<MockBody> {
    let body: Bytes = body.into();
    let mut r = match layers.reset_after_chunks() {
        None => Response::new(MockBody::full(body)),
        Some(n) => {
            // Not inside a UTF-8 sequence, so a text prefix stays text.
            let mut mid = body.len() / 2;
            while mid > 0 && body.get(mid).is_some_and(|b| b & 0xC0 == 0x80) {
                mid -= 1;
            }
            let pacing = Pacing {
                reset_after: Some((n as usize).min(1)),
                ..Pacing::default()
            };
            let len = body.len();
            Response::new(MockBody::frames(body, vec![mid, len], pacing, Some(active)))
        }
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Render a chat answer in its dialect.
fn answer(
    dialect: Dialect,
    chat: &ChatReq<'_>,
    layers: &Layers,
    id: u64,
    active: ActiveGuard,
) -> Response<MockBody> {
    let plan = make_plan(chat, layers, id);
    if chat.stream {
        let events = match dialect {
            Dialect::OpenAi => openai::render_stream(&plan),
            Dialect::Anthropic => anthropic::render_stream(&plan),
            Dialect::Gemini => gemini::render_stream(&plan),
            Dialect::Bedrock => return bedrock::converse_stream(&plan, layers, active),
        };
        let ct = if plan.sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        return stream_answer(events, ct, layers, active);
    }
    let body = match dialect {
        Dialect::OpenAi => openai::render(&plan),
        Dialect::Anthropic => anthropic::render(&plan),
        Dialect::Gemini => gemini::render(&plan),
        Dialect::Bedrock => bedrock::render_converse(&plan),
    };
    full_answer(body, "application/json", layers, active)
}
