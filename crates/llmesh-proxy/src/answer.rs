//! The answer stage: the last attempt becomes the client's response, a
//! whole body or a stream, in the client's API format, and is accounted
//! (a stream when it ends).

use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use llmesh_resilience::OwnedInFlight;
use llmesh_wire::Dialect;
use serde_json::Value;

use crate::account::status_label;
use crate::account::{Call, Outcome};
use crate::attempt::{self, Failure, Success};
use crate::body::ProxyBody;
use crate::context::RequestCtx;
use crate::error::{json_bytes_response, json_response, ProxyError};
use crate::plan::{backend_at, Plan, Slot};
use crate::runtime::BackendRuntime;
use crate::shared::Shared;
use crate::stream::StreamingBody;

fn route_headers(
    resp: &mut Response<ProxyBody>,
    ctx: &RequestCtx,
    b: &BackendRuntime,
    attempts: u32,
) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&b.backend.provider.name) {
        h.insert("x-llmesh-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(attempt::upstream_model(ctx, b)) {
        h.insert("x-llmesh-model", v);
    }
    h.insert("x-llmesh-attempts", HeaderValue::from(attempts));
}

/// The answer of a successful attempt on `slot`. A stream takes the plan
/// along: a continuation after a mid-stream failure asks it for the next
/// backend.
pub(crate) fn success(
    ctx: &Arc<RequestCtx>,
    slot: Slot,
    success: Success,
    in_flight: OwnedInFlight,
    plan: Plan,
    signals: Option<crate::signals::Signals>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let b = backend_at(&ctx.table, ctx.route_index, slot).ok_or(ProxyError::NoPolicy)?;
    let attempts = plan.attempts();
    let call = Call::new(ctx, b);
    let mut resp = match success {
        Success::Whole {
            body,
            usage,
            response_model,
            output_estimate,
        } => {
            drop(in_flight);
            if let Some(turn) = &ctx.turn {
                remember(ctx, turn, &call, &body);
            }
            // Cached as the client gets it, before redacted values are put
            // back: a hit restores its own request's.
            if let Some(p) = &ctx.cache {
                p.store(
                    false,
                    body.clone(),
                    crate::cache::Answered {
                        provider: call.provider.name.clone(),
                        model: call.upstream_model.clone(),
                        usage,
                        response_model: response_model.clone(),
                    },
                );
            }
            let body = match &ctx.vault {
                Some(v) => crate::dataguard::restore_whole(
                    v,
                    crate::dataguard::api_of(ctx.client, ctx.op),
                    body,
                ),
                None => body,
            };
            let resp = json_bytes_response(StatusCode::OK, body, &ctx.request_id);
            call.finish(Outcome {
                status: 200,
                error_type: "",
                usage,
                response_model,
                ttfc: None,
                output_estimate,
                signals,
            });
            resp
        }
        Success::Stream {
            upstream,
            first,
            translator,
        } => {
            let cont = crate::continuation::Continuation::new(ctx, plan);
            let restore = ctx
                .vault
                .as_ref()
                .map(|v| Box::new(crate::dataguard::StreamRestore::new(ctx.client, v.clone())));
            let mut body = StreamingBody::new(
                upstream, first, in_flight, slot, translator, call, cont, restore,
            );
            if let Some(p) = &ctx.cache {
                body.record(p.recorder());
            }
            crate::body::sse_response(BodyExt::boxed_unsync(body), &ctx.request_id)
        }
    };
    route_headers(&mut resp, ctx, b, attempts);
    Ok(resp)
}

/// Keeps a Responses answer in the conversation store (off the request
/// path: a Redis store is written by a task).
fn remember(ctx: &RequestCtx, turn: &Arc<crate::conversation::Turn>, call: &Call, body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    turn.clone().save_later(
        ctx.shared.conversations.clone(),
        &call.provider,
        &call.upstream_model,
        v,
    );
}

/// The last failure, on `slot`, in the client's format, accounted.
pub(crate) fn failure(
    ctx: &Arc<RequestCtx>,
    slot: Slot,
    f: Failure,
    attempts: u32,
) -> Result<Response<ProxyBody>, ProxyError> {
    let b = backend_at(&ctx.table, ctx.route_index, slot).ok_or(ProxyError::NoPolicy)?;
    let call = Call::new(ctx, b);
    call.finish(Outcome::error(
        f.error.status().as_u16(),
        f.error.metric_label(),
    ));
    let mut resp = f.error.into_response(ctx.client, &ctx.request_id);
    route_headers(&mut resp, ctx, b, attempts);
    Ok(resp)
}

/// Errors before a route was chosen: counted and logged without route labels.
pub(crate) fn refused(
    shared: &Shared,
    err: ProxyError,
    dialect: Dialect,
    request_id: &HeaderValue,
    start: Instant,
) -> Response<ProxyBody> {
    refused_at(shared, err, dialect, request_id, start, None)
}

/// Where a refused request was going, once routing chose it.
#[derive(Debug, Clone)]
pub(crate) struct Routing {
    /// The route.
    pub route: String,
    /// The model the client asked for.
    pub model: String,
}

/// A refused request, counted and logged with its route and model when
/// routing had chosen them (quota, data policy, no healthy backend...).
pub(crate) fn refused_at(
    shared: &Shared,
    err: ProxyError,
    dialect: Dialect,
    request_id: &HeaderValue,
    start: Instant,
    at: Option<&Routing>,
) -> Response<ProxyBody> {
    let status = err.status().as_u16();
    let (route, model) = at.map_or(("", ""), |r| (r.route.as_str(), r.model.as_str()));
    shared
        .metrics
        .requests
        .with_label_values(&[route, "", "", status_label(status), err.metric_label()])
        .inc();
    let id = shared.identity();
    tracing::info!(
        target: "llmesh::access",
        request_id = request_id.to_str().unwrap_or(""),
        namespace = id.namespace.as_str(),
        workload = id.workload.as_str(),
        pod = id.pod.as_str(),
        route,
        model_requested = model,
        status,
        error_type = err.metric_label(),
        latency_ms = crate::clock::since(start).as_secs_f64() * 1000.0,
        "request rejected"
    );
    err.into_response(dialect, request_id)
}

/// `GET /v1/models`: the model names the table serves, in the OpenAI or
/// (with `anthropic-version`) the Anthropic shape.
pub(crate) fn models(
    shared: &Shared,
    anthropic: bool,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
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
                    .route_for(n, &HeaderMap::new())
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

/// `GET /v1/models/{id}`: one model the table serves, in the shape of
/// [`models`]; a 404 in the client's format for one it does not.
pub(crate) fn model(
    shared: &Shared,
    id: &str,
    anthropic: bool,
    request_id: &HeaderValue,
    start: Instant,
) -> Response<ProxyBody> {
    let table = shared.table.load();
    let Some(m) = table.snap.route_for(id, &HeaderMap::new()) else {
        let dialect = if anthropic {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        };
        let err = ProxyError::NotFound {
            what: format!("model '{}'", crate::inbound::truncate_path(id)),
            param: Some("model"),
        };
        return refused(shared, err, dialect, request_id, start);
    };
    let body = if anthropic {
        serde_json::json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})
    } else {
        let owner = m
            .route
            .backends
            .first()
            .map(|b| b.provider.name.as_str())
            .unwrap_or("llmesh");
        serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
    };
    json_response(StatusCode::OK, &body, request_id)
}
