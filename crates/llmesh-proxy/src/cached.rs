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
use crate::cache::{deterministic, semantic, Entry, Pending, SemanticPending};
use crate::error::json_bytes_response;
use crate::runtime::RouteRuntime;
use crate::shared::Shared;
use crate::upstream::Operation;

/// Request header: `on` caches a request the route's mode would not,
/// `off` bypasses the cache, `refresh` asks the provider and stores the
/// new answer. Also the response header: `hit`, `miss`, `refresh` or
/// `bypass`.
pub const HEADER: &str = "x-llmesh-cache";

/// Response header of a semantic hit: the cosine similarity of the
/// request's prompt to the stored one.
pub const SIMILARITY_HEADER: &str = "x-llmesh-cache-similarity";

/// What a request on a route with a cache gets.
pub enum Lookup {
    /// A stored answer (with the prompt similarity of a semantic hit).
    Hit(Arc<Entry>, Option<f32>),
    /// None stored (or a refresh): store the answer here.
    Miss(Pending),
    /// The cache does not apply to this request.
    Bypass,
}

/// A request, as the cache stage sees it.
pub struct Ask<'a> {
    /// The client's API.
    pub client: Dialect,
    /// What it asks for.
    pub op: Operation,
    /// Whether it streams.
    pub stream: bool,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// The body as the provider would get it (after the data policy).
    pub raw: &'a [u8],
    /// Its data class (see [`crate::dataguard::Guarded::data_class`]);
    /// `None` when the data policy keeps it out of caches.
    pub data_class: Option<&'a str>,
    /// Classes a provider must be cleared for to see it.
    pub restricted: &'a [String],
    /// A Responses call continuing a stored conversation.
    pub continues: bool,
    /// The request id (sent with the embeddings call).
    pub request_id: &'a HeaderValue,
}

/// Looks the request up in its route's caches: the exact one first, then
/// the semantic one (which embeds the prompt).
pub async fn lookup(shared: &Shared, rt: Option<&RouteRuntime>, ask: Ask<'_>) -> Lookup {
    let Some(cache) = rt.and_then(|r| r.cache.as_ref()) else {
        return Lookup::Bypass;
    };
    let asked = ask
        .headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let m = &shared.metrics;
    let route = &*cache.route;
    let count = |result: &str| {
        if cache.exact.is_some() {
            m.cache_lookups.with_label_values(&[route, result]).inc();
        }
    };
    let count_semantic = |result: &str| {
        if cache.semantic.is_some() {
            m.semantic_lookups.with_label_values(&[route, result]).inc();
        }
    };
    let bypass = || {
        count("bypass");
        count_semantic("bypass");
        Lookup::Bypass
    };
    let Some(data_class) = ask.data_class else {
        return bypass();
    };
    if ask.continues || asked.as_deref() == Some("off") {
        return bypass();
    }
    let Ok(body) = serde_json::from_slice::<Value>(ask.raw) else {
        return bypass();
    };
    let opted_in = matches!(asked.as_deref(), Some("on" | "refresh"));
    let refresh = asked.as_deref() == Some("refresh");
    let wanted =
        |mode: CacheMode| opted_in || mode == CacheMode::Always || deterministic(ask.op, &body);
    let mut pending = Pending {
        cache: cache.clone(),
        key: None,
        semantic: None,
    };
    // Whether a cache was asked (then the answer says `miss`, even when
    // an error leaves nothing to store it under).
    let mut looked_up = false;

    // Exact: a hash of the whole body.
    if let Some(exact) = &cache.exact {
        if !wanted(exact.mode) {
            count("bypass");
        } else {
            let key = cache.key(ask.client, ask.op, ask.stream, data_class, &body);
            pending.key = Some(key);
            looked_up = true;
            if refresh {
                count("refresh");
            } else {
                match cache.get(&key).await {
                    Ok(Some(e)) if e.meta.stream == ask.stream => {
                        count("hit");
                        return Lookup::Hit(e, None);
                    }
                    Ok(_) => count("miss"),
                    Err(e) => {
                        count("error");
                        tracing::warn!(route, error = %e, "response cache: lookup failed; asking the provider");
                    }
                }
            }
        }
    }

    // Semantic: the prompt's embedding, within the rest of the request.
    if let Some(index) = &cache.semantic {
        let settings = &index.settings;
        let prompt = semantic::prompt(ask.client, ask.op, &body);
        let embedder = rt.and_then(|r| r.embedder.as_ref());
        match (prompt, embedder) {
            _ if !wanted(settings.mode) => count_semantic("bypass"),
            // The embeddings provider would see the prompt.
            _ if !crate::dataguard::cleared(&settings.provider, ask.restricted) => {
                count_semantic("bypass")
            }
            (Some((text, blanked)), Some(client)) => {
                let partition = index.partition(
                    &cache.scope,
                    ask.client,
                    ask.op,
                    ask.stream,
                    data_class,
                    &blanked,
                );
                looked_up = true;
                match semantic::embed(settings, client, &text, ask.request_id).await {
                    Err(e) => {
                        count_semantic("error");
                        tracing::warn!(route, provider = %settings.provider.name, error = %e, "semantic cache: the embeddings call failed; asking the provider");
                    }
                    Ok(embedded) => {
                        bill_embedding(shared, route, settings, embedded.tokens);
                        let id = semantic::prompt_id(&partition, &text);
                        let vector = embedded.vector;
                        if refresh {
                            count_semantic("refresh");
                        } else {
                            match index.find(&partition, &vector).await {
                                Ok(found) => {
                                    if let Some(best) = found.best {
                                        m.semantic_similarity
                                            .with_label_values(&[route])
                                            .observe(f64::from(best));
                                    }
                                    match found.entry {
                                        Some(e) if e.meta.stream == ask.stream => {
                                            count_semantic("hit");
                                            return Lookup::Hit(e, found.best);
                                        }
                                        _ => count_semantic("miss"),
                                    }
                                }
                                Err(e) => {
                                    count_semantic("error");
                                    tracing::warn!(route, error = %e, "semantic cache: lookup failed; asking the provider");
                                }
                            }
                        }
                        pending.semantic = Some(SemanticPending {
                            partition,
                            id,
                            vector,
                        });
                    }
                }
            }
            _ => count_semantic("bypass"),
        }
    }
    if !looked_up {
        return Lookup::Bypass;
    }
    Lookup::Miss(pending)
}

/// Counts the tokens and cost of a semantic cache's embeddings call under
/// its route, like any call.
fn bill_embedding(
    shared: &Shared,
    route: &str,
    settings: &llmesh_policy::SemanticSettings,
    tokens: Option<u64>,
) {
    let Some(n) = tokens else {
        return;
    };
    let m = &shared.metrics;
    let p = &settings.provider;
    let model = settings.model.as_str();
    m.tokens
        .with_label_values(&[route, &p.name, model, "input"])
        .inc_by(n);
    m.token_usage
        .with_label_values(&["embeddings", &p.provider_name, model, model, "input", route])
        .observe(n as f64);
    match p.model(model).and_then(|i| i.price) {
        Some(price) => {
            let cost = price.cost(llmesh_policy::TokenCounts {
                input: n,
                ..Default::default()
            });
            m.cost
                .with_label_values(&[route, &p.name, model])
                .inc_by(cost);
        }
        None => m.unpriced.with_label_values(&[route, &p.name, model]).inc(),
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
    /// How like the stored prompt the request's is, for a semantic hit.
    pub similarity: Option<f32>,
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
    if let Some(sim) = hit.similarity {
        if let Ok(v) = HeaderValue::from_str(&format!("{sim:.4}")) {
            h.insert(SIMILARITY_HEADER, v);
        }
    }

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
        cache = if hit.similarity.is_some() { "semantic-hit" } else { "hit" },
        similarity = hit.similarity.map_or(1.0, f64::from),
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
