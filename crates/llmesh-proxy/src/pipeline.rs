//! The request path, top to bottom:
//!
//! 1. classify the endpoint (it decides the error format of everything after),
//! 2. read the body under the size limit and parse it,
//! 3. load the policy snapshot once (the request keeps it to the end),
//! 4. resolve the route (model name and header conditions),
//! 5. the attempt loop: pick a backend (`select`), skip it if the prompt
//!    cannot fit its window (preflight), make the attempt (`attempt`,
//!    hedged on the first try when the route says so, `hedge`), and on a
//!    failure decide by its class: retry within the route's budget, move to
//!    a fallback chain, or stop,
//! 6. answer (`respond`): errors translated to the client's format, whole
//!    bodies translated and accounted, streams translated chunk by chunk and
//!    accounted when they end.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use llmesh_api::ErrorClass;
use llmesh_resilience::Backoff;
use llmesh_wire::Dialect;
use serde_json::Value;

use crate::account::status_label;
use crate::attempt::{attempt, preflight, Failure, Req};
use crate::body::ProxyBody;
use crate::error::{json_response, ProxyError};
use crate::hedge::race;
use crate::respond::{fail, note_attempt, record_failure, respond, Labels};
use crate::runtime::BackendRuntime;
use crate::select::{bit, budget_allows, clock, next_in_chain, select_own};
use crate::stream::deadline_from;
use crate::upstream::Operation;
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
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    messages: Option<SeqLen>,
}

/// The length of a JSON array, counted without keeping its items.
struct SeqLen(usize);

impl<'de> serde::Deserialize<'de> for SeqLen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SeqLen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SeqLen, A::Error> {
                let mut n = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(SeqLen(n))
            }
            // Anything else is not ours to judge here: the upstream says
            // what is wrong with it.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SeqLen, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(SeqLen(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_bool<E>(self, _: bool) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_unit<E>(self) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether JSON text nests arrays/objects deeper than `max` (strings are
/// skipped, escapes honoured). One pass over the bytes, no allocation.
fn nests_deeper_than(raw: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in raw {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The inbound token a client presented: `Authorization: Bearer T`,
/// `x-api-key: T` or `api-key: T` (what OpenAI, Anthropic and Azure SDKs
/// send as their API key).
fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.as_bytes();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(&v[7..]);
        }
    }
    headers
        .get("x-api-key")
        .or_else(|| headers.get("api-key"))
        .map(|v| v.as_bytes())
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
    if let Some(token) = &shared.cfg.inbound_token {
        let ok = presented_token(req.headers()).is_some_and(|t| same_secret(t, token.as_bytes()));
        if !ok {
            return Ok(early_error(
                &shared,
                ProxyError::InboundAuth,
                dialect,
                &request_id,
                start,
            ));
        }
    }
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
    if nests_deeper_than(&raw, shared.cfg.max_json_depth) {
        return Err(ProxyError::InvalidRequest(format!(
            "request JSON nests deeper than {} levels",
            shared.cfg.max_json_depth
        )));
    }
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
    if let Some(SeqLen(n)) = peek.messages {
        if n > shared.cfg.max_messages {
            return Err(ProxyError::InvalidRequest(format!(
                "`messages` has {n} entries; at most {} are accepted",
                shared.cfg.max_messages
            )));
        }
    }
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

    let max_output = [&peek.max_completion_tokens, &peek.max_tokens]
        .into_iter()
        .find_map(|v| v.as_ref().and_then(Value::as_u64))
        .unwrap_or(0);

    // One snapshot for the whole request.
    let table = shared.table.load_full();
    let Some(m) = table.snap.route_for(&requested, &parts.headers) else {
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
    let mut route = m.route.clone();
    let mut pattern = m.pattern.to_string();
    let mut route_index = m.index;
    crate::trace::routed(&requested, &route.name);
    // The data policy sees the client's body before anything else does.
    let guarded = match &table.snap.data_guard {
        Some(g) => crate::dataguard::apply(
            g,
            &shared.metrics,
            client,
            endpoint.operation(),
            &raw,
            &parts.headers,
        )?,
        None => crate::dataguard::Guarded::default(),
    };
    let raw = guarded.body.clone().unwrap_or(raw);
    check_cleared(&route, &guarded.restricted)?;
    // Quotas: admission reserves the request's tokens, cost and slot now;
    // the reservation is settled with the real usage when its last call
    // is accounted.
    let mut prompt_tokens: Option<u64> = None;
    let admitted = match &table.quota {
        Some(engine) => {
            crate::quota::admit(
                shared,
                engine,
                &route,
                &requested,
                &parts.headers,
                &raw,
                client,
                max_output,
                &mut prompt_tokens,
            )
            .await?
        }
        None => crate::quota::Admitted::default(),
    };
    if let Some(to) = &admitted.downgrade_to {
        let Some(m) = table.snap.route_for(to, &parts.headers) else {
            return Err(ProxyError::Quota {
                status: 429,
                message: format!(
                    "a downgrade quota's limit is reached and its downgradeTo model `{}` is not served here",
                    truncate_path(to)
                ),
                headers: vec![("retry-after", "60".to_string())],
            });
        };
        route = m.route.clone();
        pattern = m.pattern.to_string();
        route_index = m.index;
        check_cleared(&route, &guarded.restricted)?;
        crate::trace::routed(to, &route.name);
    }
    let Some(rt) = table.routes.get(route_index) else {
        return Err(ProxyError::NoPolicy);
    };
    let req = Req {
        shared,
        client,
        op: endpoint.operation(),
        stream,
        include_usage,
        // The model routed as: a downgrade quota's target, else the
        // client's.
        requested: admitted.downgrade_to.as_deref().unwrap_or(&requested),
        body_model: &requested,
        raw: &raw,
        headers: &parts.headers,
        request_id: &request_id,
        route: &route,
        deadline: deadline_from(start, route.timeouts.total),
        max_output,
        continue_from: None,
        restricted: &guarded.restricted,
        vault: guarded.vault.as_ref(),
        audit: guarded.audit.as_ref(),
        charge: admitted.charge.as_ref(),
        pacing: table.quota.as_deref().filter(|e| e.paces_any()),
    };
    let labels = Labels {
        pattern: &pattern,
        start,
        table: &table,
        route_index,
    };
    if let Some(b) = &rt.budget {
        b.deposit(clock());
    }
    // Every path through the loop makes an attempt or moves along a
    // finite list, and attempts are capped, so it always ends.
    let max_attempts = 1
        + route.retry.map_or(0, |r| r.attempts)
        + route
            .fallbacks
            .iter()
            .map(|f| f.backends.len() as u32)
            .sum::<u32>();
    let mut chain: Option<usize> = None;
    let mut chain_pos = 0usize;
    let mut tried: u64 = 0;
    let mut retries = 0u32;
    let mut attempts = 0u32;
    let mut last: Option<(Failure, &BackendRuntime)> = None;
    let mut iterations = 0u32;
    let mut hedged = false;
    loop {
        let now = clock();
        let picked = match chain {
            None => select_own(&req, rt, tried, now).map(|(i, _)| {
                tried |= bit(i);
                &rt.backends[i]
            }),
            Some(ci) => next_in_chain(&rt.fallbacks[ci], &mut chain_pos, now, req.restricted),
        };
        let Some(b) = picked else {
            // Nothing available here. If the route's own backends are all
            // out, a chain for connect failures takes over, once.
            if chain.is_none() {
                if let Some(ci) = route
                    .fallbacks
                    .iter()
                    .position(|f| f.on.contains(ErrorClass::Connect))
                {
                    chain = Some(ci);
                    chain_pos = 0;
                    continue;
                }
            }
            break;
        };
        // Context-window preflight: a backend whose window cannot hold the
        // prompt plus max_tokens is not paid for a doomed call; the request
        // moves on as if it had answered context-length-exceeded.
        let preflight = match preflight(&req, b, &mut prompt_tokens).await {
            Some(f) => {
                shared
                    .metrics
                    .preflight_skips
                    .with_label_values(&[
                        &route.name,
                        &b.backend.provider.name,
                        b.backend.model.as_deref().unwrap_or(""),
                    ])
                    .inc();
                Some(f)
            }
            None => None,
        };
        let (b, result) = match preflight {
            Some(f) => (b, Err((f, None))),
            None => {
                if !b.state.breaker.try_acquire(now) {
                    // Another request took the last probe slot; pick again.
                    continue;
                }
                attempts += 1;
                if req.pacing.is_some() {
                    crate::quota::pace(shared, &b.backend.provider.name, 1, 0);
                }
                let in_flight = b.state.start_owned();
                let t0 = clock();
                match route.hedge.filter(|_| chain.is_none() && !hedged) {
                    Some(delay) => {
                        hedged = true;
                        race(
                            &req,
                            &labels,
                            rt,
                            b,
                            in_flight,
                            t0,
                            tried,
                            delay,
                            &mut attempts,
                        )
                        .await
                    }
                    None => match attempt(&req, b, None).await {
                        Ok(success) => (b, Ok((success, in_flight, t0))),
                        Err(f) => (b, Err((f, Some(in_flight)))),
                    },
                }
            }
        };
        let f = match result {
            Ok((success, in_flight, t0)) => {
                let now = clock();
                let ttfb = now.saturating_duration_since(t0);
                b.state.breaker.on_success(now);
                b.state.ttft.observe(ttfb, now);
                b.state.latency.observe(ttfb);
                note_attempt(&req, b, "ok");
                let mut resp = respond(&req, &labels, b, success, in_flight, attempts);
                quota_headers(&mut resp, &admitted);
                return Ok(resp);
            }
            Err((f, Some(in_flight))) => {
                record_failure(&req, b, &f);
                drop(in_flight);
                f
            }
            Err((f, None)) => f,
        };
        let now = clock();
        let class = f.class;
        iterations += 1;
        if class == ErrorClass::InvalidRequest || attempts >= max_attempts || iterations > 64 {
            last = Some((f, b));
            break;
        }
        let m = &shared.metrics;
        // 1. Retry on the route's own backends.
        if let Some(r) = route
            .retry
            .filter(|r| chain.is_none() && r.on.contains(class) && retries < r.attempts)
        {
            // Retry-After speaks for the backend that sent it: another
            // backend is tried at once; the same one only after it,
            // and not at all if it is longer than we would wait.
            let fresh = select_own(&req, rt, tried, now).is_some_and(|(_, fresh)| fresh);
            let wait = match f.retry_after {
                Some(_) if fresh => Some(Duration::ZERO),
                Some(ra) if ra > r.backoff_max => None,
                Some(ra) => Some(ra),
                None => Some(
                    Backoff {
                        base: r.backoff_base,
                        max: r.backoff_max,
                    }
                    .delay(retries, rand::random()),
                ),
            };
            if let Some(wait) = wait {
                if !budget_allows(rt, now) {
                    m.budget_exhausted.with_label_values(&[&route.name]).inc();
                    last = Some((f, b));
                    break;
                }
                if tokio::time::Instant::now() + wait >= req.deadline {
                    last = Some((f, b));
                    break;
                }
                retries += 1;
                m.retries
                    .with_label_values(&[&route.name, class.as_str()])
                    .inc();
                // Each retry prefers a backend not tried yet; once
                // all were, any may be tried again.
                if !fresh {
                    tried = 0;
                }
                tokio::time::sleep(wait).await;
                last = Some((f, b));
                continue;
            }
        }
        // 2. A fallback chain for this class.
        let target = match chain {
            Some(ci) if route.fallbacks[ci].on.contains(class) => Some(ci),
            _ => route.fallbacks.iter().position(|fb| fb.on.contains(class)),
        };
        if let Some(ci) = target {
            if !budget_allows(rt, now) {
                m.budget_exhausted.with_label_values(&[&route.name]).inc();
                last = Some((f, b));
                break;
            }
            if chain != Some(ci) {
                chain = Some(ci);
                chain_pos = 0;
            }
            m.failovers
                .with_label_values(&[&route.name, &b.backend.provider.name, class.as_str()])
                .inc();
            last = Some((f, b));
            continue;
        }
        last = Some((f, b));
        break;
    }
    match last {
        Some((f, b)) => Ok(fail(&req, &labels, b, f, attempts)),
        None => Err(ProxyError::NoHealthyBackend {
            route: route.name.clone(),
        }),
    }
}

/// Refuses a request carrying data classes no backend of `route` is
/// cleared for.
fn check_cleared(route: &llmesh_policy::Route, restricted: &[String]) -> Result<(), ProxyError> {
    if restricted.is_empty() {
        return Ok(());
    }
    let mut all = route
        .backends
        .iter()
        .chain(route.fallbacks.iter().flat_map(|f| f.backends.iter()));
    if all.any(|b| crate::dataguard::cleared(&b.provider, restricted)) {
        return Ok(());
    }
    Err(ProxyError::NotCleared {
        route: route.name.clone(),
        classes: restricted.join(", "),
    })
}

/// The tightest quota limit's `x-ratelimit-*` headers, and
/// `x-llmesh-quota-downgraded-to` when a downgrade quota changed the model.
fn quota_headers(resp: &mut Response<ProxyBody>, admitted: &crate::quota::Admitted) {
    let h = resp.headers_mut();
    if let Some(rate) = &admitted.rate {
        for (name, value) in rate.headers() {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    if let Some(to) = &admitted.downgrade_to {
        if let Ok(v) = HeaderValue::from_str(to) {
            h.insert("x-llmesh-quota-downgraded-to", v);
        }
    }
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
