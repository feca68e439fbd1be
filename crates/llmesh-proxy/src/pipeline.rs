//! The request path, top to bottom:
//!
//! 1. classify the endpoint (it decides the error format of everything after),
//! 2. read the body under the size limit and parse it,
//! 3. load the policy snapshot once (the request keeps it to the end),
//! 4. resolve the route and pick a backend,
//! 5. translate the request to the provider's API and send it with the
//!    route's deadlines,
//! 6. answer: errors translated to the client's format, whole bodies
//!    translated and accounted, streams translated chunk by chunk and
//!    accounted when they end.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use llmesh_wire::{Dialect, StreamOptions, StreamTranslator};
use serde_json::Value;

use crate::account::{status_label, Call, Outcome, OutputEstimate};
use crate::body::ProxyBody;
use crate::error::{json_bytes_response, json_response, ProxyError};
use crate::stream::{deadline_from, StreamingBody};
use crate::upstream::{build_request, dialect_of, upstream_path, Operation};
use crate::Shared;

/// The request fields routing needs; everything else is skipped unparsed
/// (but still validated as JSON).
#[derive(serde::Deserialize)]
struct RequestPeek {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    stream_options: Option<Value>,
}

/// The two fields the proxy reads from a same-API response.
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Messages,
    Embeddings,
    Models,
}

impl Endpoint {
    fn classify(method: &Method, path: &str) -> Result<Endpoint, ()> {
        // SDKs differ on whether the base URL carries /v1; accept both.
        let path = path.strip_prefix("/v1").unwrap_or(path);
        match (method, path) {
            (&Method::POST, "/chat/completions") => Ok(Endpoint::Chat),
            (&Method::POST, "/messages") => Ok(Endpoint::Messages),
            (&Method::POST, "/embeddings") => Ok(Endpoint::Embeddings),
            (&Method::GET, "/models") => Ok(Endpoint::Models),
            _ => Err(()),
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Endpoint::Messages => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    fn operation(self) -> Operation {
        match self {
            Endpoint::Embeddings => Operation::Embeddings,
            _ => Operation::Chat,
        }
    }
}

/// Entry point for every request on the LLM port.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let request_id = request_id(req.headers());
    let path = req.uri().path();
    let endpoint = match Endpoint::classify(req.method(), path) {
        Ok(e) => e,
        Err(()) => {
            let dialect = if path.contains("/messages") {
                Dialect::Anthropic
            } else {
                Dialect::OpenAi
            };
            let err = ProxyError::UnsupportedEndpoint {
                method: req.method().to_string(),
                path: truncate_path(path),
            };
            return Ok(early_error(&shared, err, dialect, &request_id, start));
        }
    };
    if endpoint == Endpoint::Models {
        let anthropic = req.headers().contains_key("anthropic-version");
        return Ok(list_models(&shared, anthropic, &request_id));
    }
    let dialect = endpoint.dialect();
    shared.metrics.in_flight.inc();
    let _in_flight = InFlight(&shared);
    match proxy_call(&shared, endpoint, req, request_id.clone(), start).await {
        Ok(resp) => Ok(resp),
        Err(e) => Ok(early_error(&shared, e, dialect, &request_id, start)),
    }
}

struct InFlight<'a>(&'a Shared);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// Errors before a route was chosen: counted and logged without route labels.
fn early_error(
    shared: &Shared,
    err: ProxyError,
    dialect: Dialect,
    request_id: &HeaderValue,
    start: Instant,
) -> Response<ProxyBody> {
    if matches!(err, ProxyError::Routed(_)) {
        return err.into_response(dialect, request_id);
    }
    let status = err.status().as_u16();
    shared
        .metrics
        .requests
        .with_label_values(&["", "", "", status_label(status), err.metric_label()])
        .inc();
    let id = shared.identity();
    tracing::info!(
        target: "llmesh::access",
        request_id = request_id.to_str().unwrap_or(""),
        namespace = id.namespace.as_str(),
        workload = id.workload.as_str(),
        pod = id.pod.as_str(),
        status,
        error_type = err.metric_label(),
        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request rejected"
    );
    err.into_response(dialect, request_id)
}

async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::BodyRead(e.to_string())),
    }
}

async fn proxy_call(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    req: Request<Incoming>,
    request_id: HeaderValue,
    start: Instant,
) -> Result<Response<ProxyBody>, ProxyError> {
    let client = endpoint.dialect();
    let (parts, body) = req.into_parts();
    let raw = read_body(body, &parts.headers, shared.cfg.max_body_bytes).await?;
    // Only the fields routing needs are read here; the full document is
    // parsed again only when it has to be rewritten for another API.
    let peek: RequestPeek = serde_json::from_slice(&raw).map_err(|e| {
        if e.is_data() {
            ProxyError::InvalidRequest(format!("request body must be a JSON object: {e}"))
        } else {
            ProxyError::InvalidJson(e.to_string())
        }
    })?;
    let requested = match peek.model {
        Some(Value::String(m)) if !m.is_empty() => m,
        Some(_) => {
            return Err(ProxyError::InvalidRequest(
                "`model` must be a non-empty string".into(),
            ))
        }
        None => return Err(ProxyError::InvalidRequest("`model` is required".into())),
    };
    let stream = matches!(peek.stream, Some(Value::Bool(true)));
    if stream && endpoint == Endpoint::Embeddings {
        return Err(ProxyError::InvalidRequest(
            "embeddings cannot be streamed".into(),
        ));
    }
    let include_usage = peek
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    // One snapshot for the whole request.
    let table = shared.table.load_full();
    let Some(m) = table.snap.route_for(&requested) else {
        let known = table.snap.known_models();
        return Err(ProxyError::UnknownModel {
            message: format!(
                "The model `{}` is not served here. Known models: {}",
                truncate_path(&requested),
                if known.is_empty() {
                    "(none)".to_string()
                } else {
                    known.join(", ")
                }
            ),
        });
    };
    let route = m.route.clone();
    let roll = rand::random::<u64>();
    let backend_index = {
        let picked = route.pick(roll);
        route
            .backends
            .iter()
            .position(|b| std::ptr::eq(b, picked))
            .unwrap_or(0)
    };
    let backend = &route.backends[backend_index];
    let http_client = table
        .clients
        .get(m.index)
        .and_then(|c| c.get(backend_index))
        .ok_or(ProxyError::NoPolicy)?
        .clone();
    let provider = backend.provider.clone();
    let upstream = dialect_of(provider.schema);
    let upstream_model = backend.upstream_model(&requested).to_string();
    let model_label = backend
        .model
        .clone()
        .unwrap_or_else(|| m.pattern.to_string());
    let call = Call {
        shared: shared.clone(),
        request_id: request_id.clone(),
        start,
        op: endpoint.operation(),
        client,
        stream,
        request_model: m.pattern.to_string(),
        requested,
        upstream_model,
        model_label,
        route: route.clone(),
        provider: provider.clone(),
        raw_request: raw,
    };
    drop(table);

    let path = match upstream_path(upstream, call.op, &call.upstream_model, stream) {
        Ok(p) => p,
        Err(e) => return Err(finish_err(call, ProxyError::Unsupported(e))),
    };
    // Same API, same model, nothing to add: the client's bytes go upstream
    // as they are (key order and unknown fields included). OpenAI streams
    // need `stream_options.include_usage` added unless the client set it.
    let needs_usage_option = stream && upstream == Dialect::OpenAi && !include_usage;
    let up_bytes =
        if client == upstream && call.upstream_model == call.requested && !needs_usage_option {
            call.raw_request.clone()
        } else {
            let translated = serde_json::from_slice::<Value>(&call.raw_request)
                .map_err(|e| ProxyError::InvalidJson(e.to_string()))
                .and_then(|body| {
                    llmesh_wire::translate_request(client, upstream, body, &call.upstream_model)
                        .map_err(|e| ProxyError::InvalidRequest(e.to_string()))
                });
            match translated {
                Ok(v) => Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                Err(e) => return Err(finish_err(call, e)),
            }
        };
    let up_req = match build_request(
        &provider,
        &path,
        up_bytes,
        &parts.headers,
        client,
        upstream,
        &request_id,
    ) {
        Ok(r) => r,
        Err(e) => return Err(finish_err(call, ProxyError::Unsupported(e))),
    };

    let timeouts = route.timeouts;
    let deadline = deadline_from(start, timeouts.total);
    let first_byte = tokio::time::Instant::now() + timeouts.first_byte;
    let send = tokio::time::timeout_at(first_byte.min(deadline), http_client.request(up_req));
    let resp = match send.await {
        Err(_) => {
            let err = ProxyError::UpstreamTimeout {
                provider: provider.name.clone(),
                phase: if first_byte <= deadline {
                    "first byte"
                } else {
                    "total"
                },
                after_ms: timeouts.first_byte.min(timeouts.total).as_millis(),
            };
            return Err(finish_err(call, err));
        }
        Ok(Err(e)) => {
            let err = if e.is_connect() {
                ProxyError::UpstreamConnect {
                    provider: provider.name.clone(),
                    detail: error_chain(&e),
                }
            } else {
                ProxyError::UpstreamProtocol {
                    provider: provider.name.clone(),
                    detail: error_chain(&e),
                }
            };
            return Err(finish_err(call, err));
        }
        Ok(Ok(r)) => r,
    };

    let status = resp.status();
    if !status.is_success() {
        return upstream_error(call, resp, upstream, deadline).await;
    }
    if stream {
        let translator = StreamTranslator::new(client, upstream, StreamOptions { include_usage });
        let idle = timeouts.idle;
        let body = StreamingBody::new(resp.into_body(), translator, call, idle, deadline);
        let mut out = Response::new(BodyExt::boxed_unsync(body));
        let h = out.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-request-id", request_id);
        return Ok(out);
    }

    let max = shared.cfg.max_response_bytes;
    let collected =
        tokio::time::timeout_at(deadline, Limited::new(resp.into_body(), max).collect()).await;
    let bytes = match collected {
        Err(_) => {
            let err = ProxyError::UpstreamTimeout {
                provider: provider.name.clone(),
                phase: "total",
                after_ms: timeouts.total.as_millis(),
            };
            return Err(finish_err(call, err));
        }
        Ok(Err(e)) => {
            let err = ProxyError::UpstreamProtocol {
                provider: provider.name.clone(),
                detail: format!("reading the response body: {e}"),
            };
            return Err(finish_err(call, err));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let (resp, usage, response_model, client_body) = if client == upstream {
        // Same API on both sides: the client gets the upstream's bytes as
        // they are; only the usage and model fields are read.
        match serde_json::from_slice::<Peek>(&bytes) {
            Ok(p) => {
                let usage = p.usage.and_then(|u| {
                    llmesh_wire::usage_of(upstream, &serde_json::json!({ "usage": u }))
                });
                let resp = json_bytes_response(StatusCode::OK, bytes.clone(), &request_id);
                (resp, usage, p.model, None)
            }
            Err(e) => {
                let err = ProxyError::UpstreamProtocol {
                    provider: provider.name.clone(),
                    detail: format!("response is not a JSON object: {e}"),
                };
                return Err(finish_err(call, err));
            }
        }
    } else {
        let parsed: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                let err = ProxyError::UpstreamProtocol {
                    provider: provider.name.clone(),
                    detail: format!("response is not JSON: {e}"),
                };
                return Err(finish_err(call, err));
            }
        };
        let response_model = llmesh_wire::response_model_of(upstream, &parsed).map(str::to_string);
        match llmesh_wire::translate_response(client, upstream, parsed) {
            Ok((body, usage)) => {
                let resp = json_response(StatusCode::OK, &body, &request_id);
                (resp, usage, response_model, Some(body))
            }
            Err(e) => {
                let err = ProxyError::UpstreamProtocol {
                    provider: provider.name.clone(),
                    detail: e.to_string(),
                };
                return Err(finish_err(call, err));
            }
        }
    };
    let output_estimate = if usage.is_none() {
        // Rare: only upstreams that report no usage pay for this parse.
        let body = client_body.or_else(|| serde_json::from_slice(&bytes).ok());
        let mut text = String::new();
        if let Some(b) = &body {
            crate::tokens::collect_text(b.get("choices"), &mut text);
            crate::tokens::collect_text(b.get("content"), &mut text);
        }
        OutputEstimate::Text(text)
    } else {
        OutputEstimate::None
    };
    call.finish(Outcome {
        status: 200,
        error_type: "",
        usage,
        response_model,
        ttfc: None,
        output_estimate,
    });
    Ok(resp)
}

/// Accounts a failed routed call (with its route labels) and hands the
/// error back, wrapped so the caller renders it without counting it again.
fn finish_err(call: Call, err: ProxyError) -> ProxyError {
    call.finish(Outcome::error(err.status().as_u16(), err.metric_label()));
    ProxyError::Routed(Box::new(err))
}

/// The upstream answered with an error status: pass it on in the client's
/// format with the same status and the rate-limit hints.
async fn upstream_error(
    call: Call,
    resp: Response<Incoming>,
    upstream: Dialect,
    deadline: tokio::time::Instant,
) -> Result<Response<ProxyBody>, ProxyError> {
    let status = resp.status();
    let mut keep = HeaderMap::new();
    for (name, value) in resp.headers() {
        let n = name.as_str();
        if n == "retry-after" || n.starts_with("x-ratelimit-") {
            keep.append(name.clone(), value.clone());
        }
    }
    let bytes = tokio::time::timeout_at(
        deadline,
        Limited::new(resp.into_body(), 1024 * 1024).collect(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|c| c.to_bytes())
    .unwrap_or_default();
    let body = llmesh_wire::translate_error(call.client, upstream, status.as_u16(), &bytes);
    let mut out = json_response(status, &body, &call.request_id);
    out.headers_mut().extend(keep);
    let error_type = match status.as_u16() {
        429 => "rate_limited",
        s if s >= 500 => "upstream_5xx",
        _ => "upstream_4xx",
    };
    call.finish(Outcome::error(status.as_u16(), error_type));
    Ok(out)
}

fn list_models(shared: &Shared, anthropic: bool, request_id: &HeaderValue) -> Response<ProxyBody> {
    let table = shared.table.load();
    let names = &table.snap.model_names;
    let body = if anthropic {
        let data: Vec<Value> = names
            .iter()
            .map(|n| serde_json::json!({"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": names.first(),
            "last_id": names.last(),
        })
    } else {
        let data: Vec<Value> = names
            .iter()
            .map(|n| {
                let owner = table
                    .snap
                    .route_for(n)
                    .and_then(|m| m.route.backends.first())
                    .map(|b| b.provider.name.as_str())
                    .unwrap_or("llmesh");
                serde_json::json!({"id": n, "object": "model", "created": 0, "owned_by": owner})
            })
            .collect();
        serde_json::json!({"object": "list", "data": data})
    };
    json_response(StatusCode::OK, &body, request_id)
}

/// The client's `x-request-id` when it is a sane token, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get("x-request-id") {
        let ok =
            v.len() <= 128 && !v.is_empty() && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn truncate_path(p: &str) -> String {
    p.chars().take(200).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
