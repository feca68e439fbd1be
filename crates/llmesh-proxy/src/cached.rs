//! The response cache stage: a request on a route with a cache is looked
//! up before admission; a hit is answered from the cache (see
//! [`crate::cache`] for keys and stores), a miss carries where to store
//! its answer.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use llmesh_api::CacheMode;
use llmesh_policy::Route;
use llmesh_wire::Dialect;
use serde_json::Value;

use crate::body::ProxyBody;
use crate::cache::{deterministic, Entry, Pending, RouteCache};
use crate::error::json_bytes_response;
use crate::shared::Shared;
use crate::upstream::Operation;

/// Request header: `on` caches a request the route's mode would not,
/// `off` bypasses the cache, `refresh` asks the provider and stores the
/// new answer. Also the response header: `hit`, `miss`, `refresh` or
/// `bypass`.
pub const HEADER: &str = "x-llmesh-cache";

/// What a request on a route with a cache gets.
pub enum Lookup {
    /// A stored answer.
    Hit(Arc<Entry>),
    /// None stored (or a refresh): store the answer here.
    Miss(Pending),
    /// The cache does not apply to this request.
    Bypass,
}

/// Looks the request up in its route's cache. `raw` is the body as the
/// provider would get it; `sensitive` when the data policy found anything
/// in it (such a request is never cached).
#[allow(clippy::too_many_arguments)]
pub async fn lookup(
    shared: &Shared,
    cache: Option<&Arc<RouteCache>>,
    client: Dialect,
    op: Operation,
    stream: bool,
    headers: &HeaderMap,
    raw: &[u8],
    sensitive: bool,
    continues: bool,
) -> Lookup {
    let Some(cache) = cache else {
        return Lookup::Bypass;
    };
    let asked = headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let m = &shared.metrics;
    let count = |result: &str| {
        m.cache_lookups
            .with_label_values(&[&cache.route, result])
            .inc();
    };
    if sensitive || continues || asked.as_deref() == Some("off") {
        count("bypass");
        return Lookup::Bypass;
    }
    let Ok(body) = serde_json::from_slice::<Value>(raw) else {
        count("bypass");
        return Lookup::Bypass;
    };
    let wanted = match asked.as_deref() {
        Some("on" | "refresh") => true,
        _ => cache.settings.mode == CacheMode::Always || deterministic(op, &body),
    };
    if !wanted {
        count("bypass");
        return Lookup::Bypass;
    }
    let key = cache.key(client, op, stream, &body);
    let pending = Pending {
        cache: cache.clone(),
        key,
    };
    if asked.as_deref() == Some("refresh") {
        count("refresh");
        return Lookup::Miss(pending);
    }
    match cache.get(&key).await {
        Ok(Some(e)) if e.meta.stream == stream => {
            count("hit");
            Lookup::Hit(e)
        }
        Ok(_) => {
            count("miss");
            Lookup::Miss(pending)
        }
        Err(e) => {
            count("error");
            tracing::warn!(route = &*cache.route, error = %e, "response cache: lookup failed; asking the provider");
            Lookup::Miss(pending)
        }
    }
}

/// What a hit is answered and logged with.
pub struct Hit<'a> {
    /// The route.
    pub route: &'a Route,
    /// The client's API.
    pub client: Dialect,
    /// What the request asks for.
    pub op: Operation,
    /// The model in the client's body.
    pub model_requested: &'a str,
    /// This request's redacted values.
    pub vault: Option<&'a Arc<llmesh_dlp::Vault>>,
    /// The request id.
    pub request_id: &'a HeaderValue,
    /// When the request arrived.
    pub start: std::time::Instant,
}

/// The client's answer from `entry`: the stored body (a stream replayed as
/// one) with the request's own redacted values put back, accounted at zero
/// upstream cost and with what it saved.
pub fn answer(
    shared: &Shared,
    table: &crate::table::Table,
    hit: Hit<'_>,
    entry: &Entry,
) -> Response<ProxyBody> {
    let api = crate::dataguard::api_of(hit.client, hit.op);
    let mut resp = if entry.meta.stream {
        let body = match hit.vault {
            Some(v) => {
                let mut r = crate::dataguard::StreamRestore::new(hit.client, v.clone());
                Bytes::from(r.filter(&entry.body))
            }
            None => entry.body.clone(),
        };
        crate::body::sse_response(crate::body::full(body), hit.request_id)
    } else {
        let body = match hit.vault {
            Some(v) => crate::dataguard::restore_whole(v, api, entry.body.clone()),
            None => entry.body.clone(),
        };
        json_bytes_response(StatusCode::OK, body, hit.request_id)
    };
    let h = resp.headers_mut();
    h.insert(HEADER, HeaderValue::from_static("hit"));
    h.insert(header::AGE, HeaderValue::from(entry.age_secs()));
    if let Ok(v) = HeaderValue::from_str(&entry.meta.provider) {
        h.insert("x-llmesh-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(&entry.meta.model) {
        h.insert("x-llmesh-model", v);
    }
    h.insert("x-llmesh-attempts", HeaderValue::from(0u32));

    // What the provider would have charged for it now.
    let usage = entry.meta.usage();
    let saved = usage
        .and_then(|u| {
            let p = table.snap.providers.get(&entry.meta.provider)?;
            let price = p.model(&entry.meta.model)?.price?;
            Some(price.cost(crate::account::priced(&u)))
        })
        .unwrap_or(0.0);
    let route = hit.route.name.as_str();
    if saved > 0.0 {
        shared
            .metrics
            .cache_saved_usd
            .with_label_values(&[route])
            .inc_by(saved);
    }
    let usage = usage.unwrap_or_default();
    let id = shared.identity();
    tracing::info!(
        target: "llmesh::access",
        request_id = hit.request_id.to_str().unwrap_or(""),
        namespace = id.namespace.as_str(),
        workload = id.workload.as_str(),
        pod = id.pod.as_str(),
        route,
        model_requested = hit.model_requested,
        provider = entry.meta.provider.as_str(),
        model_used = entry.meta.model.as_str(),
        api = hit.client.as_str(),
        stream = entry.meta.stream,
        status = 200,
        cache = "hit",
        input_tokens = 0,
        output_tokens = 0,
        cost_usd = 0.0,
        saved_input_tokens = usage.input_tokens,
        saved_output_tokens = usage.output_tokens,
        saved_usd = saved,
        latency_ms = crate::clock::since(hit.start).as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// Marks a response of a route with a cache: `miss` (asked the provider,
/// stored if it succeeded) or `bypass`.
pub fn mark(resp: &mut Response<ProxyBody>, looked_up: bool) {
    let v = if looked_up { "miss" } else { "bypass" };
    resp.headers_mut()
        .insert(HEADER, HeaderValue::from_static(v));
}
