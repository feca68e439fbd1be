//! Governed pass-through: the OpenAI and Anthropic endpoints the sidecar
//! does not translate (audio, images, moderations, files, uploads,
//! batches, vector stores, fine-tuning, message batches, ...) go to one
//! provider the platform team chose, with the provider's key in place of
//! the app's credentials.
//!
//! The provider is chosen by the `model` the JSON or multipart body (or
//! the `model` query parameter) names, through the route that serves that
//! model; else by the first route whose `spec.passthrough.paths` allows
//! the path; else the call is a 404 that says how to allow it. JSON
//! bodies are read whole (under the body limit) and scanned by the data
//! policy like chat; other bodies stream through unbuffered, under the
//! upload limit, and a policy rule with `unscannable: deny` keeps them
//! from providers not cleared for its class. Batch results the app
//! downloads through the sidecar are accounted line by line at the
//! model's batch price.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use llmesh_api::ApiSchema;
use llmesh_policy::Provider;
use llmesh_wire::Dialect;
use serde_json::Value;

use crate::body::{BodyError, ProxyBody, RelayedBody, UpstreamBody};
use crate::error::ProxyError;
use crate::quota::Charge;
use crate::shared::Shared;
use crate::table::Table;
use crate::upstream::UpstreamClient;

/// Bytes of a multipart body read ahead to find its `model` field.
const PEEK_BYTES: usize = 64 * 1024;
/// Longest batch result line accounted; longer ones pass uncounted.
const MAX_LINE: usize = 4 * 1024 * 1024;

/// Where a pass-through call goes.
pub struct Target {
    /// The route that allowed it.
    pub route: Arc<llmesh_policy::Route>,
    /// The provider.
    pub provider: Arc<Provider>,
    /// Its pooled client.
    pub client: UpstreamClient,
    /// The model sent upstream, when the route renames it.
    pub rename: Option<(String, String)>,
    /// The route's total timeout.
    pub timeout: std::time::Duration,
}

fn family_fits(dialect: Dialect, schema: ApiSchema) -> bool {
    match dialect {
        Dialect::Anthropic => schema == ApiSchema::Anthropic,
        _ => matches!(schema, ApiSchema::Openai | ApiSchema::OpenaiCompatible),
    }
}

/// The provider for a call to `path` naming `model` (if it does).
pub fn choose(
    table: &Table,
    dialect: Dialect,
    path: &str,
    model: Option<&str>,
    headers: &HeaderMap,
) -> Option<Target> {
    if let Some(m) = model.and_then(|m| table.snap.route_for(m, headers)) {
        let rt = table.routes.get(m.index)?;
        let b = rt
            .backends
            .iter()
            .find(|b| family_fits(dialect, b.backend.provider.schema));
        if let Some(b) = b {
            let requested = model.unwrap_or_default();
            let rename = b
                .backend
                .model
                .as_ref()
                .filter(|up| up.as_str() != requested)
                .map(|up| (requested.to_string(), up.clone()));
            return Some(Target {
                route: m.route.clone(),
                provider: b.backend.provider.clone(),
                client: b.client.clone(),
                rename,
                timeout: m.route.timeouts.total,
            });
        }
    }
    // The first route allowing the path whose provider speaks the client's
    // API; else the first allowing it at all (the platform team said so).
    let allowing = || {
        table
            .snap
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let pt = route.passthrough.as_ref()?;
                (pt.allows(path).is_some() && route.headers_match(headers))
                    .then_some((i, route, pt))
            })
    };
    let (i, route, pt) = allowing()
        .find(|(_, _, pt)| family_fits(dialect, pt.provider.schema))
        .or_else(|| allowing().next())?;
    Some(Target {
        route: route.clone(),
        provider: pt.provider.clone(),
        client: table.routes.get(i)?.passthrough.clone()?,
        rename: None,
        timeout: route.timeouts.total,
    })
}

/// The `endpoint` label of a path: `/v1/files/{id}/content`. Segments that
/// are not API words become `{id}`, so ids never become label values.
pub fn endpoint_label(path: &str) -> String {
    const WORDS: &[&str] = &[
        "v1",
        "audio",
        "transcriptions",
        "translations",
        "speech",
        "images",
        "generations",
        "edits",
        "variations",
        "moderations",
        "files",
        "content",
        "uploads",
        "parts",
        "complete",
        "cancel",
        "batches",
        "results",
        "vector_stores",
        "file_batches",
        "fine_tuning",
        "jobs",
        "events",
        "checkpoints",
        "messages",
        "realtime",
        "sessions",
        "transcription_sessions",
        "client_secrets",
        "calls",
        "models",
        "responses",
        "input_items",
        "conversations",
        "items",
        "containers",
        "assistants",
        "threads",
        "runs",
        "steps",
        "chat",
        "completions",
        "embeddings",
        "organization",
        "usage",
        "costs",
        "search",
        "videos",
        "evals",
    ];
    let mut out = String::with_capacity(path.len().min(64));
    for seg in path.split('/').filter(|s| !s.is_empty()).take(8) {
        out.push('/');
        if WORDS.contains(&seg) {
            out.push_str(seg);
        } else {
            out.push_str("{id}");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn is_json(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|c| c == "application/json" || c.ends_with("+json"))
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The `model` query parameter, if any.
pub fn query_model(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "model" && !v.is_empty()).then(|| v.replace("%2F", "/").replace("%3A", ":"))
    })
}

/// The value of the form field `model` in the start of a multipart body.
pub fn multipart_model(prefix: &[u8], content_type: &str) -> Option<String> {
    let boundary = content_type.split(';').find_map(|p| {
        let p = p.trim();
        p.strip_prefix("boundary=")
            .map(|b| b.trim_matches('"').to_string())
    })?;
    let delim = format!("--{boundary}");
    let text = String::from_utf8_lossy(prefix);
    for part in text.split(delim.as_str()) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let named_model = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("content-disposition:")
                && (l.contains("name=\"model\"") || l.contains("name=model;"))
                && !l.contains("filename=")
        });
        if named_model {
            let v = value.trim_end_matches("\r\n").trim();
            if !v.is_empty() && v.len() <= 256 {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// A body as read for routing: whole (JSON), or a prefix and the rest.
enum ReadBody {
    Whole(Bytes),
    Streamed { first: Bytes, rest: RelayedBody },
}

async fn read(
    shared: &Shared,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(ReadBody, Option<String>), ProxyError> {
    let upload_limit = shared.cfg.max_upload_bytes;
    if is_json(headers) {
        let raw = crate::inbound::read_body(body, headers, shared.cfg.max_body_bytes).await?;
        let model = if raw.is_empty() {
            None
        } else {
            #[derive(serde::Deserialize)]
            struct Peek {
                #[serde(default)]
                model: Option<Value>,
            }
            match serde_json::from_slice::<Peek>(&raw) {
                Ok(p) => p.model.and_then(|m| m.as_str().map(str::to_string)),
                Err(e) if e.is_data() => None,
                Err(e) => return Err(ProxyError::InvalidJson(e.to_string())),
            }
        };
        return Ok((ReadBody::Whole(raw), model));
    }
    if declared_len(headers).is_some_and(|n| n > upload_limit as u64) {
        return Err(ProxyError::BodyTooLarge {
            limit: upload_limit,
        });
    }
    let mut body = Limited::new(body, upload_limit);
    let mut first = BytesMut::new();
    let mut model = None;
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|c| c.to_ascii_lowercase().starts_with("multipart/form-data"))
    {
        // Read ahead until the model field shows up or enough was seen.
        while first.len() < PEEK_BYTES {
            match body.frame().await {
                None => break,
                Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(ProxyError::BodyTooLarge {
                        limit: upload_limit,
                    })
                }
                Some(Err(e)) => return Err(ProxyError::BodyRead(e.to_string())),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        first.extend_from_slice(&d);
                    }
                }
            }
            if let Some(m) = multipart_model(&first, ct) {
                model = Some(m);
                break;
            }
        }
    }
    let rest: RelayedBody = Box::pin(body.map_err(|e| -> BodyError {
        if e.is::<http_body_util::LengthLimitError>() {
            Box::new(UploadTooLarge)
        } else {
            e
        }
    }));
    Ok((
        ReadBody::Streamed {
            first: first.freeze(),
            rest,
        },
        model,
    ))
}

/// A streamed upload went past the limit.
#[derive(Debug, thiserror::Error)]
#[error("upload larger than the limit")]
struct UploadTooLarge;

/// Serves a call to a path the sidecar does not answer itself.
pub async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    start: Instant,
) -> Response<ProxyBody> {
    let dialect = crate::inbound::dialect_of_path(req.uri().path(), req.headers());
    let endpoint = endpoint_label(req.uri().path());
    match relay(&shared, req, &request_id, start, &endpoint, dialect).await {
        Ok(resp) => resp,
        Err((e, provider)) => {
            if let Some(p) = &provider {
                shared
                    .metrics
                    .passthrough
                    .with_label_values(&[endpoint.as_str(), p.as_str(), e.status().as_str()])
                    .inc();
            }
            crate::answer::refused(&shared, e, dialect, &request_id, start)
        }
    }
}

type Failed = (ProxyError, Option<String>);

async fn relay(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    start: Instant,
    endpoint: &str,
    dialect: Dialect,
) -> Result<Response<ProxyBody>, Failed> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let table = shared.table.load_full();
    let (body, body_model) = read(shared, &parts.headers, body)
        .await
        .map_err(|e| (e, None))?;
    let model = body_model.or_else(|| query_model(&parts.uri));
    let Some(target) = choose(&table, dialect, &path, model.as_deref(), &parts.headers) else {
        return Err((
            ProxyError::UnsupportedEndpoint {
                method: parts.method.to_string(),
                path: crate::inbound::truncate_path(&path),
            },
            None,
        ));
    };
    let provider_name = Some(target.provider.name.clone());
    let fail = |e: ProxyError| (e, provider_name.clone());

    // The data policy: JSON is scanned like chat; what cannot be scanned
    // goes only where the policy's `unscannable: deny` classes may go.
    // Forwarded headers are scanned either way.
    let mut headers = None;
    let body = match (body, &table.snap.data_guard) {
        (ReadBody::Whole(raw), Some(g)) if !raw.is_empty() => {
            let guarded = crate::dataguard::apply_api(
                g,
                &shared.metrics,
                llmesh_dlp::Api::AnyJson,
                Some(&raw),
                &parts.headers,
            )
            .map_err(&fail)?;
            if !crate::dataguard::cleared(&target.provider, &guarded.restricted) {
                return Err(fail(ProxyError::NotCleared {
                    route: target.route.name.clone(),
                    classes: guarded.restricted.join(", "),
                }));
            }
            headers = guarded.headers;
            ReadBody::Whole(guarded.body.unwrap_or(raw))
        }
        (b, Some(g)) => {
            if let ReadBody::Streamed { first, rest } = &b {
                if !g.unscannable_deny.is_empty() && (!first.is_empty() || !rest.is_end_stream()) {
                    let what =
                        content_type(&parts.headers).unwrap_or_else(|| "no content type".into());
                    crate::dataguard::allow_unscannable(g, &target.provider, &what)
                        .map_err(&fail)?;
                }
            }
            headers = crate::dataguard::guard_headers(
                Some(g),
                &shared.metrics,
                &target.provider,
                &target.route.name,
                &parts.headers,
            )
            .map_err(&fail)?;
            b
        }
        (b, None) => b,
    };
    let forwarded = headers.as_ref().unwrap_or(&parts.headers);
    // Quotas count the call (and hold a concurrency slot) until its
    // answer has been relayed.
    let charge = crate::admission::admit_passthrough(
        shared,
        &table,
        &target.route,
        model.as_deref().unwrap_or(""),
        &parts.headers,
    )
    .await
    .map_err(&fail)?;
    let body = match body {
        ReadBody::Whole(raw) => {
            let raw = match &target.rename {
                Some((from, to)) => rename_model(&raw, from, to).map_err(&fail)?,
                None => raw,
            };
            UpstreamBody::new(raw, None)
        }
        ReadBody::Streamed { first, rest } => UpstreamBody::relayed(first, rest),
    };
    let streamed_len = (!is_json(&parts.headers))
        .then(|| parts.headers.get(header::CONTENT_LENGTH).cloned())
        .flatten();
    let up = build(
        &target.provider,
        &parts.method,
        &parts.uri,
        forwarded,
        dialect,
        request_id,
        body,
        streamed_len,
    )
    .map_err(&fail)?;

    let deadline = tokio::time::Instant::now() + target.timeout;
    let resp = match tokio::time::timeout_at(deadline, target.client.request(up)).await {
        Err(_) => {
            return Err(fail(ProxyError::UpstreamTimeout {
                provider: target.provider.name.clone(),
                phase: "total",
                after_ms: target.timeout.as_millis(),
            }))
        }
        Ok(Err(e)) => {
            let chain = crate::error::error_chain(&e);
            let too_large = chain.contains("upload larger than the limit");
            return Err(fail(if too_large {
                ProxyError::BodyTooLarge {
                    limit: shared.cfg.max_upload_bytes,
                }
            } else if e.is_connect() {
                ProxyError::UpstreamConnect {
                    provider: target.provider.name.clone(),
                    detail: chain,
                }
            } else {
                ProxyError::UpstreamProtocol {
                    provider: target.provider.name.clone(),
                    detail: chain,
                }
            }));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let (rparts, rbody) = resp.into_parts();
    // Anthropic names a batch's results by an absolute `results_url` at the
    // provider, which SDKs fetch as given: that download would skip the
    // sidecar (no key, no accounting), so it is pointed at the sidecar.
    let sidecar = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|_| status.is_success() && is_json(&rparts.headers) && is_batch_object(&path));
    let (rbody, rewritten) = match sidecar {
        None => (Some(rbody), None),
        Some(host) => {
            let limit = shared.cfg.max_response_bytes;
            let raw = match tokio::time::timeout_at(deadline, Limited::new(rbody, limit).collect())
                .await
            {
                Ok(Ok(c)) => c.to_bytes(),
                Ok(Err(e)) => {
                    return Err(fail(ProxyError::UpstreamProtocol {
                        provider: target.provider.name.clone(),
                        detail: format!("reading the answer: {e}"),
                    }))
                }
                Err(_) => {
                    return Err(fail(ProxyError::UpstreamTimeout {
                        provider: target.provider.name.clone(),
                        phase: "total",
                        after_ms: target.timeout.as_millis(),
                    }))
                }
            };
            let base = &target.provider.base_url;
            let upstream = format!("{}://{}{}", base.scheme, base.authority, base.path);
            let local = format!("http://{host}/v1");
            let body = results_at_sidecar(&raw, &upstream, &local).unwrap_or(raw);
            (None, Some(body))
        }
    };
    let m = &shared.metrics;
    m.passthrough
        .with_label_values(&[endpoint, target.provider.name.as_str(), status.as_str()])
        .inc();
    m.requests
        .with_label_values(&[
            target.route.name.as_str(),
            target.provider.name.as_str(),
            "",
            crate::account::status_label(status.as_u16()),
            if status.is_success() { "" } else { "upstream" },
        ])
        .inc();
    let id = shared.identity();
    tracing::info!(
        target: "llmesh::access",
        request_id = request_id.to_str().unwrap_or(""),
        namespace = id.namespace.as_str(),
        workload = id.workload.as_str(),
        pod = id.pod.as_str(),
        route = target.route.name.as_str(),
        provider = target.provider.name.as_str(),
        endpoint,
        method = parts.method.as_str(),
        status = status.as_u16(),
        passthrough = true,
        latency_ms = crate::clock::since(start).as_secs_f64() * 1000.0,
        "request passed through"
    );

    let meter = (status.is_success() && is_batch_results(&parts.method, &path)).then(|| {
        BatchMeter::new(
            shared.clone(),
            target.route.name.clone(),
            target.provider.clone(),
            charge.clone(),
        )
    });
    let body = match (rbody, rewritten) {
        (Some(inner), _) => BodyExt::boxed_unsync(Relay {
            inner,
            meter,
            _charge: charge,
        }),
        (None, body) => crate::body::full(body.unwrap_or_default()),
    };
    let resized = sidecar.is_some();
    let mut out = Response::new(body);
    *out.status_mut() = status;
    let h = out.headers_mut();
    for (name, value) in &rparts.headers {
        if !(hop_by_hop(name.as_str()) || resized && name == header::CONTENT_LENGTH) {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert("x-request-id", request_id.clone());
    if let Ok(v) = HeaderValue::from_str(&target.provider.name) {
        h.insert("x-llmesh-provider", v);
    }
    Ok(out)
}

fn hop_by_hop(n: &str) -> bool {
    matches!(
        n,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

fn rename_model(raw: &Bytes, from: &str, to: &str) -> Result<Bytes, ProxyError> {
    let mut v: Value =
        serde_json::from_slice(raw).map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
    if let Some(m) = v.get_mut("model") {
        if m.as_str() == Some(from) {
            *m = Value::String(to.to_string());
        }
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| ProxyError::Encode(format!("the pass-through request: {e}")))
}

/// The upstream request of a pass-through call: same method, path (under
/// the provider's base URL, without the client's `/v1`) and query; the
/// app's safe headers; the provider's headers and key.
#[allow(clippy::too_many_arguments)]
pub fn build(
    provider: &Provider,
    method: &Method,
    uri: &Uri,
    app_headers: &HeaderMap,
    dialect: Dialect,
    request_id: &HeaderValue,
    body: UpstreamBody,
    content_length: Option<HeaderValue>,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let path = uri.path();
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let path_q = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let upstream_uri = provider
        .base_url
        .join(&path_q)
        .map_err(|e| ProxyError::Unsupported(format!("building upstream URL: {e}")))?;
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = upstream_uri;
    let upstream = crate::upstream::dialect_of(provider.schema);
    let h = req.headers_mut();
    for (name, value) in app_headers {
        if crate::upstream::relayable(name, dialect, upstream) {
            h.append(name.clone(), value.clone());
        }
    }
    if let Some(len) = content_length {
        h.insert(header::CONTENT_LENGTH, len);
    }
    crate::upstream::provider_headers(h, provider, request_id);
    Ok(req)
}

/// Downloads that can hold batch results: OpenAI file contents and
/// Anthropic message-batch results.
fn is_batch_results(method: &Method, path: &str) -> bool {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    method == Method::GET
        && ((p.starts_with("/files/") && p.ends_with("/content"))
            || (p.starts_with("/messages/batches/") && p.ends_with("/results")))
}

/// Anthropic message-batch objects (create, get, list, cancel), whose
/// `results_url` names where the results are downloaded.
fn is_batch_object(path: &str) -> bool {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    p.starts_with("/messages/batches") && !p.ends_with("/results")
}

/// `raw` with every `results_url` under `upstream` (the provider's base
/// URL) moved under `local` (the sidecar's); `None` when nothing changes.
fn results_at_sidecar(raw: &[u8], upstream: &str, local: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(raw).ok()?;
    let mut changed = false;
    let mut point = |o: &mut Value| {
        if let Some(Value::String(url)) = o.get_mut("results_url") {
            if let Some(rest) = url.strip_prefix(upstream).filter(|r| r.starts_with('/')) {
                *url = format!("{local}{rest}");
                changed = true;
            }
        }
    };
    point(&mut v);
    if let Some(Value::Array(items)) = v.get_mut("data") {
        items.iter_mut().for_each(&mut point);
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// The response body, relayed frame by frame, metered when it carries
/// batch results.
struct Relay {
    inner: Incoming,
    meter: Option<BatchMeter>,
    /// Settled when the answer has been relayed (or abandoned).
    _charge: Option<Arc<Charge>>,
}

impl Body for Relay {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(m), Some(d)) = (this.meter.as_mut(), f.data_ref()) {
                    m.push(d);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => {
                if let Some(m) = this.meter.as_mut() {
                    m.finish();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Accounts batch result lines (JSONL) as they stream to the app: each
/// line's usage, at the model's price times its `batch` fraction, in the
/// metrics, the quotas covering the download, and the usage stream.
struct BatchMeter {
    shared: Arc<Shared>,
    route: String,
    provider: Arc<Provider>,
    charge: Option<Arc<Charge>>,
    line: Vec<u8>,
    skipping: bool,
}

impl BatchMeter {
    fn new(
        shared: Arc<Shared>,
        route: String,
        provider: Arc<Provider>,
        charge: Option<Arc<Charge>>,
    ) -> Self {
        BatchMeter {
            shared,
            route,
            provider,
            charge,
            line: Vec::new(),
            skipping: false,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if !self.skipping {
                self.line.extend_from_slice(&data[..nl]);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
            }
            self.skipping = false;
            data = &data[nl + 1..];
        }
        if !self.skipping {
            if self.line.len() + data.len() > MAX_LINE {
                self.line.clear();
                self.skipping = true;
            } else {
                self.line.extend_from_slice(data);
            }
        }
    }

    fn finish(&mut self) {
        let line = std::mem::take(&mut self.line);
        if !self.skipping && !line.is_empty() {
            self.line_done(&line);
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        // OpenAI: {custom_id, response: {status_code, body}}; Anthropic:
        // {custom_id, result: {type: succeeded, message}}.
        let (body, dialect) = if let Some(b) = v.pointer("/response/body") {
            (b, Dialect::OpenAi)
        } else if let Some(m) = v.pointer("/result/message") {
            (m, Dialect::Anthropic)
        } else {
            return;
        };
        if v.get("custom_id").is_none() {
            return;
        }
        let Some(usage) = llmesh_wire::usage_of(dialect, body) else {
            return;
        };
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        let m = &self.shared.metrics;
        let provider = self.provider.name.as_str();
        let counts = crate::account::token_counts(&usage);
        for (kind, n) in crate::metrics::TOKEN_TYPES.into_iter().zip(counts) {
            if n > 0 {
                m.tokens
                    .with_label_values(&[self.route.as_str(), provider, model, kind])
                    .inc_by(n);
            }
        }
        let price = self.provider.model(model).and_then(|i| i.price);
        let tokens = crate::account::priced(&usage);
        let usd = price.map_or(0.0, |p| p.cost(tokens) * p.batch);
        if let Some(p) = price {
            let labels = [self.route.as_str(), provider, model];
            m.cost.with_label_values(&labels).inc_by(usd);
            // Batch calls pay the batch fraction of every price, so the
            // cache saved that fraction of the difference too.
            let saved = p.cache_savings(tokens) * p.batch;
            if saved > 0.0 {
                m.cache_saved.with_label_values(&labels).inc_by(saved);
            }
        }
        if let Some(c) = &self.charge {
            c.add(&usage, usd);
        }
        crate::quota::record_usage(
            &self.shared.quota,
            self.shared.identity(),
            crate::quota::CallUsage {
                route: &self.route,
                provider,
                model,
                usage: &usage,
                cost_usd: usd,
                status: 200,
                caller: self.charge.as_ref().and_then(|c| c.caller),
            },
        );
        m.batch_results
            .with_label_values(&[self.route.as_str(), provider, model])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_hide_ids() {
        assert_eq!(
            endpoint_label("/v1/files/file-abc123/content"),
            "/v1/files/{id}/content"
        );
        assert_eq!(
            endpoint_label("/v1/audio/transcriptions"),
            "/v1/audio/transcriptions"
        );
        assert_eq!(
            endpoint_label("/v1/messages/batches/msgbatch_01/results"),
            "/v1/messages/batches/{id}/results"
        );
        assert_eq!(endpoint_label(""), "/");
    }

    #[test]
    fn the_model_field_of_a_form_is_found() {
        let ct = "multipart/form-data; boundary=XyZ";
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF....";
        assert_eq!(multipart_model(body, ct).as_deref(), Some("whisper-1"));
        assert_eq!(multipart_model(b"--XyZ\r\n", ct), None);
        assert_eq!(multipart_model(body, "multipart/form-data"), None);
    }

    #[test]
    fn batch_results_urls_point_at_the_sidecar() {
        let raw = br#"{"id":"b","results_url":"https://api.anthropic.com/v1/messages/batches/b/results"}"#;
        let out = results_at_sidecar(
            raw,
            "https://api.anthropic.com/v1",
            "http://127.0.0.1:15500/v1",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["results_url"],
            "http://127.0.0.1:15500/v1/messages/batches/b/results"
        );
        let list = br#"{"data":[{"results_url":"https://api.anthropic.com/v1/messages/batches/b/results"},{"results_url":null}]}"#;
        let out = results_at_sidecar(list, "https://api.anthropic.com/v1", "http://h/v1").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["data"][0]["results_url"],
            "http://h/v1/messages/batches/b/results"
        );
        // Elsewhere, or not there yet: unchanged.
        assert!(results_at_sidecar(
            br#"{"results_url":"https://other/x"}"#,
            "https://api.anthropic.com/v1",
            "http://h/v1"
        )
        .is_none());
        assert!(results_at_sidecar(
            br#"{"results_url":null}"#,
            "https://api.anthropic.com/v1",
            "http://h/v1"
        )
        .is_none());
        assert!(is_batch_object("/v1/messages/batches/b"));
        assert!(!is_batch_object("/v1/messages/batches/b/results"));
    }

    #[test]
    fn batch_result_paths() {
        assert!(is_batch_results(&Method::GET, "/v1/files/file-1/content"));
        assert!(is_batch_results(
            &Method::GET,
            "/v1/messages/batches/b/results"
        ));
        assert!(!is_batch_results(&Method::POST, "/v1/files/file-1/content"));
        assert!(!is_batch_results(&Method::GET, "/v1/files/file-1"));
    }
}
