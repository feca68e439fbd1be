//! Anthropic `POST /v1/messages/count_tokens`: forwarded to the route's
//! first Anthropic backend cleared for the request's data, with the model
//! renamed as routed; answered by the sidecar's tokenizer when the route
//! has none (`x-llmesh-token-count: estimate` says so). Free calls: no
//! quota is charged and no tokens are accounted.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use llmesh_api::ApiSchema;
use llmesh_wire::Dialect;
use serde_json::Value;

use crate::body::{ProxyBody, UpstreamBody};
use crate::error::{json_bytes_response, json_response, ProxyError};
use crate::inbound::Endpoint;
use crate::shared::Shared;

/// Serves one count_tokens call.
pub async fn serve(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    start: Instant,
) -> Result<Response<ProxyBody>, ProxyError> {
    let inbound = crate::inbound::read(&shared.cfg, Endpoint::CountTokens, req).await?;
    let table = shared.table.load_full();
    let routed = crate::route::resolve(&table, &inbound.model, &inbound.headers)?;
    let guarded = crate::dataguard::guard(&table, &shared.metrics, &inbound)?;
    let raw = guarded.body.clone().unwrap_or_else(|| inbound.raw.clone());
    let rt = table.routes.get(routed.index).ok_or(ProxyError::NoPolicy)?;
    let backend = rt.backends.iter().find(|b| {
        b.backend.provider.schema == ApiSchema::Anthropic
            && crate::dataguard::cleared(&b.backend.provider, &guarded.restricted)
    });
    let route = routed.route.name.as_str();
    let count = |provider: &str, status: StatusCode| {
        shared
            .metrics
            .requests
            .with_label_values(&[
                route,
                provider,
                inbound.model.as_str(),
                crate::account::status_label(status.as_u16()),
                "",
            ])
            .inc();
    };
    let Some(b) = backend else {
        // The tokenizer never sends the prompt anywhere: no clearance needed.
        let n = crate::tokens::count_prompt(Dialect::Anthropic, raw).await?;
        let mut resp = json_response(
            StatusCode::OK,
            &serde_json::json!({ "input_tokens": n }),
            request_id,
        );
        resp.headers_mut()
            .insert("x-llmesh-token-count", HeaderValue::from_static("estimate"));
        count("", StatusCode::OK);
        tracing::debug!(
            route,
            latency_ms = crate::clock::since(start).as_secs_f64() * 1000.0,
            "count_tokens estimated"
        );
        return Ok(resp);
    };
    let provider = &b.backend.provider;
    let model = b.backend.upstream_model(&inbound.model);
    let body = if model == inbound.model && guarded.body.is_none() {
        raw
    } else {
        let mut v: Value =
            serde_json::from_slice(&raw).map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
        if let Some(m) = v.get_mut("model") {
            *m = Value::String(model.to_string());
        }
        Bytes::from(
            serde_json::to_vec(&v)
                .map_err(|e| ProxyError::Encode(format!("the count_tokens request: {e}")))?,
        )
    };
    let up = crate::upstream::build_request(
        provider,
        "/messages/count_tokens",
        UpstreamBody::new(body, None),
        guarded.headers.as_ref().unwrap_or(&inbound.headers),
        Dialect::Anthropic,
        Dialect::Anthropic,
        request_id,
    )?;
    let total = routed.route.timeouts.total;
    let answer = crate::upstream::call_whole(
        &b.client,
        up,
        &provider.name,
        Dialect::Anthropic,
        total,
        1 << 20,
    )
    .await;
    let status = match &answer {
        Ok((s, _)) => *s,
        Err(e) => e.status(),
    };
    count(&provider.name, status);
    let (_, bytes) = answer?;
    let mut resp = json_bytes_response(StatusCode::OK, bytes, request_id);
    if let Ok(v) = HeaderValue::from_str(&provider.name) {
        resp.headers_mut().insert("x-llmesh-provider", v);
    }
    Ok(resp)
}
