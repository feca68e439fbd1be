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
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use llmesh_api::ErrorClass;
use llmesh_policy::Route;
use llmesh_resilience::{balance, Backoff, Candidate, OwnedInFlight, Strategy};
use llmesh_wire::Dialect;
use serde_json::Value;

use crate::account::{status_label, Call, Outcome};
use crate::attempt::{self, attempt, preflight, Failure, FailureKind, Req, Success};
use crate::body::ProxyBody;
use crate::error::{json_bytes_response, json_response, ProxyError};
use crate::runtime::{BackendRuntime, RouteRuntime};
use crate::stream::{deadline_from, StreamingBody};
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
    let route = m.route.clone();
    let pattern = m.pattern.to_string();
    let Some(rt) = table.routes.get(m.index) else {
        return Err(ProxyError::NoPolicy);
    };
    let req = Req {
        shared,
        client,
        op: endpoint.operation(),
        stream,
        include_usage,
        requested: &requested,
        raw: &raw,
        headers: &parts.headers,
        request_id: &request_id,
        route: &route,
        deadline: deadline_from(start, route.timeouts.total),
        max_output,
    };
    let labels = Labels {
        pattern: &pattern,
        start,
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
    let mut prompt_tokens: Option<u64> = None;
    let mut iterations = 0u32;
    let mut hedged = false;
    loop {
        let now = clock();
        let picked = match chain {
            None => select_own(&route, rt, tried, now).map(|(i, _)| {
                tried |= bit(i);
                &rt.backends[i]
            }),
            Some(ci) => next_in_chain(&rt.fallbacks[ci], &mut chain_pos, now),
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
                let in_flight = b.state.start_owned();
                let t0 = clock();
                match route.hedge.filter(|_| chain.is_none() && !hedged) {
                    Some(delay) => {
                        hedged = true;
                        race(&req, rt, b, in_flight, t0, tried, delay, &mut attempts).await
                    }
                    None => match attempt(&req, b).await {
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
                return Ok(respond(&req, &labels, b, success, in_flight, attempts));
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
            let fresh = select_own(&route, rt, tried, now).is_some_and(|(_, fresh)| fresh);
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

/// How one attempt (or a hedged pair) ended: the answer with its in-flight
/// guard and start time, or the failure with the guard if a call was made.
type AttemptResult =
    Result<(Success, OwnedInFlight, std::time::Instant), (Failure, Option<OwnedInFlight>)>;

/// A failed attempt's effect on its backend: the breaker hears of it unless
/// the request itself was the problem (the backend answered properly).
fn record_failure(req: &Req<'_>, b: &BackendRuntime, f: &Failure) {
    let now = clock();
    match f.class {
        ErrorClass::InvalidRequest | ErrorClass::ContextLength | ErrorClass::ContentFilter => {
            b.state.breaker.on_success(now)
        }
        _ => b.state.breaker.on_failure(now),
    }
    note_attempt(req, b, f.class.as_str());
}

/// The first attempt, hedged: if `a` has produced nothing after `delay`, a
/// second backend of the route (one not tried yet, budget permitting) is
/// raced against it. The first success wins and the other attempt is
/// dropped, which cancels its upstream call; if one fails, the other is
/// awaited.
// Failures are the rare path and are moved once; boxing them would cost
// every one an allocation for nothing.
#[allow(clippy::too_many_arguments, clippy::result_large_err)]
async fn race<'a>(
    req: &Req<'_>,
    rt: &'a RouteRuntime,
    a: &'a BackendRuntime,
    a_flight: OwnedInFlight,
    a_t0: std::time::Instant,
    tried: u64,
    delay: Duration,
    attempts: &mut u32,
) -> (&'a BackendRuntime, AttemptResult) {
    let wrap = |r: Result<Success, Failure>, flight: OwnedInFlight, t0| match r {
        Ok(s) => Ok((s, flight, t0)),
        Err(f) => Err((f, Some(flight))),
    };
    let fa = attempt(req, a);
    tokio::pin!(fa);
    if let Ok(r) = tokio::time::timeout(delay, &mut fa).await {
        return (a, wrap(r, a_flight, a_t0));
    }
    let now = clock();
    let second = select_own(req.route, rt, tried, now)
        .filter(|&(_, fresh)| fresh)
        .map(|(i, _)| &rt.backends[i])
        .filter(|b| budget_allows(rt, now) && b.state.breaker.try_acquire(now));
    let Some(b) = second else {
        return (a, wrap(fa.await, a_flight, a_t0));
    };
    *attempts += 1;
    let hedges = &req.shared.metrics.hedges;
    let b_flight = b.state.start_owned();
    let b_t0 = clock();
    let fb = attempt(req, b);
    tokio::pin!(fb);
    // A cancelled attempt did not fail: its breaker permit is returned as a
    // success so a half-open probe slot is never lost.
    let cancelled = |loser: &BackendRuntime| {
        let now = clock();
        loser.state.breaker.on_success(now);
        note_attempt(req, loser, "hedge_cancelled");
    };
    tokio::select! {
        ra = &mut fa => match ra {
            Ok(s) => {
                cancelled(b);
                hedges.with_label_values(&[&req.route.name, "lost"]).inc();
                (a, Ok((s, a_flight, a_t0)))
            }
            Err(f) => {
                record_failure(req, a, &f);
                drop(a_flight);
                hedges.with_label_values(&[&req.route.name, "won"]).inc();
                (b, wrap(fb.await, b_flight, b_t0))
            }
        },
        rb = &mut fb => match rb {
            Ok(s) => {
                cancelled(a);
                hedges.with_label_values(&[&req.route.name, "won"]).inc();
                (b, Ok((s, b_flight, b_t0)))
            }
            Err(f) => {
                record_failure(req, b, &f);
                drop(b_flight);
                hedges.with_label_values(&[&req.route.name, "lost"]).inc();
                (a, wrap(fa.await, a_flight, a_t0))
            }
        },
    }
}

/// What accounting needs besides the request.
struct Labels<'a> {
    pattern: &'a str,
    start: Instant,
}

fn clock() -> std::time::Instant {
    // tokio's clock, so tests with paused time drive breakers and budgets.
    tokio::time::Instant::now().into_std()
}

fn bit(i: usize) -> u64 {
    1u64 << (i.min(63))
}

fn budget_allows(rt: &RouteRuntime, now: std::time::Instant) -> bool {
    rt.budget.as_ref().is_none_or(|b| b.try_withdraw(now))
}

/// A backend of the route's own, by its strategy, from the best priority
/// group that has an available backend. Backends in `tried` are avoided
/// while others are available; the flag says whether the pick is untried.
fn select_own(
    route: &Route,
    rt: &RouteRuntime,
    tried: u64,
    now: std::time::Instant,
) -> Option<(usize, bool)> {
    let strategy = &route.strategy;
    // The common case, one backend, needs no balancing.
    if let [only] = rt.backends.as_slice() {
        return only
            .state
            .breaker
            .would_admit(now)
            .then_some((0, tried & 1 == 0));
    }
    let needs_p90 = matches!(strategy, Strategy::Cost { .. });
    let mut groups: Vec<u32> = rt.backends.iter().map(|b| b.backend.priority).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut cands: Vec<Candidate> = Vec::with_capacity(rt.backends.len());
    for avoid_tried in [true, false] {
        for &group in &groups {
            cands.clear();
            cands.extend(rt.backends.iter().enumerate().map(|(i, b)| {
                Candidate {
                    weight: b.backend.weight,
                    outstanding: b
                        .state
                        .outstanding
                        .load(std::sync::atomic::Ordering::Relaxed),
                    ewma: b.state.ttft.get(),
                    // p90 sorts a sample window: only the cost strategy pays for it.
                    p90: if needs_p90 {
                        b.state.latency.p90()
                    } else {
                        None
                    },
                    cost_per_mtok: price_per_mtok(&b.backend),
                    available: b.backend.priority == group
                        && !(avoid_tried && tried & bit(i) != 0)
                        && b.state.breaker.would_admit(now),
                }
            }));
            if let Some(i) = balance::pick(strategy, &cands, &rt.rr, rand::random(), rand::random())
            {
                return Some((i, tried & bit(i) == 0));
            }
        }
    }
    None
}

fn price_per_mtok(b: &llmesh_policy::Backend) -> f64 {
    b.model
        .as_deref()
        .and_then(|m| b.provider.model(m))
        .and_then(|info| info.price)
        .map_or(f64::NAN, |p| (p.input + p.output) * 1e6)
}

/// The next available backend of a fallback chain, moving past it.
fn next_in_chain<'a>(
    chain: &'a [BackendRuntime],
    pos: &mut usize,
    now: std::time::Instant,
) -> Option<&'a BackendRuntime> {
    while let Some(b) = chain.get(*pos) {
        *pos += 1;
        if b.state.breaker.would_admit(now) {
            return Some(b);
        }
    }
    None
}

fn note_attempt(req: &Req<'_>, b: &BackendRuntime, outcome: &str) {
    // The breaker gauge is read from the breakers at scrape time
    // (runtime::refresh_breaker_gauges), so only the counter is touched here.
    let model = b.backend.model.as_deref().unwrap_or("");
    req.shared
        .metrics
        .attempts
        .with_label_values(&[&req.route.name, &b.backend.provider.name, model, outcome])
        .inc();
}

fn call_for(req: &Req<'_>, labels: &Labels<'_>, b: &BackendRuntime) -> Call {
    let model = attempt::upstream_model(req, b).to_string();
    Call {
        shared: req.shared.clone(),
        request_id: req.request_id.clone(),
        start: labels.start,
        op: req.op,
        client: req.client,
        stream: req.stream,
        route: req.route.clone(),
        provider: b.backend.provider.clone(),
        request_model: labels.pattern.to_string(),
        requested: req.requested.to_string(),
        model_label: b
            .backend
            .model
            .clone()
            .unwrap_or_else(|| labels.pattern.to_string()),
        upstream_model: model,
        raw_request: req.raw.clone(),
    }
}

fn add_route_headers(
    resp: &mut Response<ProxyBody>,
    req: &Req<'_>,
    b: &BackendRuntime,
    attempts: u32,
) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&b.backend.provider.name) {
        h.insert("x-llmesh-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(attempt::upstream_model(req, b)) {
        h.insert("x-llmesh-model", v);
    }
    h.insert("x-llmesh-attempts", HeaderValue::from(attempts));
}

/// The answer of a successful attempt, accounted.
fn respond(
    req: &Req<'_>,
    labels: &Labels<'_>,
    b: &BackendRuntime,
    success: Success,
    in_flight: OwnedInFlight,
    attempts: u32,
) -> Response<ProxyBody> {
    let call = call_for(req, labels, b);
    let mut resp = match success {
        Success::Whole {
            body,
            usage,
            response_model,
            output_estimate,
        } => {
            drop(in_flight);
            let resp = json_bytes_response(StatusCode::OK, body, req.request_id);
            call.finish(Outcome {
                status: 200,
                error_type: "",
                usage,
                response_model,
                ttfc: None,
                output_estimate,
            });
            resp
        }
        Success::Stream {
            upstream,
            first,
            translator,
        } => {
            let idle = req.route.timeouts.idle;
            let body = StreamingBody::new(
                upstream,
                first,
                in_flight,
                translator,
                call,
                idle,
                req.deadline,
            );
            let mut out = Response::new(BodyExt::boxed_unsync(body));
            let h = out.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-request-id", req.request_id.clone());
            out
        }
    };
    add_route_headers(&mut resp, req, b, attempts);
    resp
}

/// The last failure, in the client's format, accounted.
fn fail(
    req: &Req<'_>,
    labels: &Labels<'_>,
    b: &BackendRuntime,
    f: Failure,
    attempts: u32,
) -> Response<ProxyBody> {
    let call = call_for(req, labels, b);
    let mut resp = match f.kind {
        FailureKind::Proxy(err) => {
            call.finish(Outcome::error(err.status().as_u16(), err.metric_label()));
            err.into_response(req.client, req.request_id)
        }
        FailureKind::Upstream {
            status,
            keep,
            body,
            dialect,
        } => {
            let translated =
                llmesh_wire::translate_error(req.client, dialect, status.as_u16(), &body);
            let mut out = json_response(status, &translated, req.request_id);
            out.headers_mut().extend(keep);
            call.finish(Outcome::error(
                status.as_u16(),
                crate::classify::label(f.class),
            ));
            out
        }
    };
    add_route_headers(&mut resp, req, b, attempts);
    resp
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
