//! `GET` / `DELETE /v1/responses/{id}` and `GET
//! /v1/responses/{id}/input_items`: answered from the conversation store
//! for responses the sidecar translated, forwarded to the provider that
//! holds the others, and a 404 for ids the namespace does not know.

use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use llmesh_wire::Dialect;
use serde_json::{json, Value};

use crate::body::{ProxyBody, UpstreamBody};
use crate::conversation::Stored;
use crate::error::{json_bytes_response, json_response, ProxyError};
use crate::shared::Shared;

/// Serves one request on a stored response.
pub async fn state(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    start: Instant,
) -> Response<ProxyBody> {
    match serve(shared, req, request_id).await {
        Ok(r) => r,
        Err(e) => crate::answer::refused(shared, e, Dialect::Responses, request_id, start),
    }
}

async fn serve(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Result<Response<ProxyBody>, ProxyError> {
    let path = req.uri().path().to_string();
    let (id, items) = crate::inbound::response_id(&path).ok_or(ProxyError::NotFound {
        what: "response".into(),
        param: None,
    })?;
    let not_found = || ProxyError::NotFound {
        what: format!("response with id '{id}'"),
        param: None,
    };
    let stored = shared.conversations.get(id).await.ok_or_else(not_found)?;
    match &*stored {
        Stored::Kept { response, context } => match (req.method(), items) {
            (&Method::GET, false) => Ok(json_response(StatusCode::OK, response, request_id)),
            (&Method::GET, true) => {
                let asc = req
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "order=asc"));
                let mut data: Vec<Value> = context
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let mut item = item.clone();
                        if let Value::Object(o) = &mut item {
                            o.entry("id")
                                .or_insert_with(|| Value::String(format!("{id}_item_{i}")));
                        }
                        item
                    })
                    .collect();
                if !asc {
                    data.reverse();
                }
                let first = data.first().and_then(|v| v.get("id")).cloned();
                let last = data.last().and_then(|v| v.get("id")).cloned();
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false}),
                    request_id,
                ))
            }
            (&Method::DELETE, false) => {
                shared.conversations.remove(id).await;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"id": id, "object": "response.deleted", "deleted": true}),
                    request_id,
                ))
            }
            _ => Err(not_found()),
        },
        Stored::Native { provider } => {
            let resp = forward(shared, &req, request_id, provider).await?;
            if req.method() == Method::DELETE && resp.status().is_success() {
                shared.conversations.remove(id).await;
            }
            Ok(resp)
        }
    }
}

/// Sends the request to `provider`, which holds the response.
async fn forward(
    shared: &Shared,
    req: &Request<Incoming>,
    request_id: &HeaderValue,
    provider: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let table = shared.table.load_full();
    // The provider's client, from any backend that uses it.
    let backend = table
        .routes
        .iter()
        .flat_map(|r| r.backends.iter().chain(r.fallbacks.iter().flatten()))
        .find(|b| b.backend.provider.name == provider)
        .ok_or_else(|| {
            ProxyError::Unsupported(format!(
                "the response is held by provider {provider}, which no route uses any more"
            ))
        })?;
    let p = &backend.backend.provider;
    let headers = crate::dataguard::guard_headers(
        table.snap.data_guard.as_deref(),
        &shared.metrics,
        p,
        &backend.route,
        req.headers(),
    )?;
    let up = crate::passthrough::build(
        p,
        req.method(),
        req.uri(),
        headers.as_ref().unwrap_or(req.headers()),
        Dialect::Responses,
        request_id,
        UpstreamBody::default(),
        None,
    )?;
    let timeout = std::time::Duration::from_secs(60);
    let (status, body) = crate::upstream::call_whole(
        &backend.client,
        up,
        &p.name,
        Dialect::Responses,
        timeout,
        shared.cfg.max_response_bytes,
    )
    .await?;
    let mut out = json_bytes_response(status, body, request_id);
    if let Ok(v) = HeaderValue::from_str(&p.name) {
        out.headers_mut().insert("x-llmesh-provider", v);
    }
    Ok(out)
}
