//! The two side ports: 15501 (`/metrics`, `/healthz`, `/readyz`, read-only,
//! reachable from the pod network) and 15502 (`/config_dump`, loopback).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{full, ProxyBody};
use llmesh_quota::{QuotaStore, Unit, MICRO_USD};

use crate::quota::{has_room, quota_label};
use crate::shared::Shared;

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Handler of the metrics/health port.
pub async fn metrics_port(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "read-only port\n",
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            refresh_breaker_gauges(&shared);
            refresh_quota_gauges(&shared);
            refresh_cache_gauges(&shared);
            if let Some(n) = crate::logging::dropped_lines() {
                sync_counter(&shared.metrics.log_lines_dropped, n);
            }
            sync_counter(
                &shared.metrics.tokenizer_fallbacks,
                crate::tokens::fallbacks(),
            );
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                shared.metrics.render(),
            )
        }
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no policy loaded yet\n",
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    })
}

/// Handler of the admin port.
pub async fn admin_port(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if req.uri().path() == "/logging" {
        return Ok(logging_endpoint(&req));
    }
    if req.uri().path() == "/cache/purge" {
        return Ok(purge_endpoint(&shared, &req).await);
    }
    if req.method() != Method::GET {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n",
        ));
    }
    Ok(match req.uri().path() {
        "/config_dump" => {
            let table = shared.table.load();
            let mut dump = table.snap.dump();
            if let Some(o) = dump.as_object_mut() {
                let source = match &shared.cfg.kube {
                    Some(k) => format!(
                        "kubernetes: namespace {}{}",
                        shared.cfg.identity.namespace,
                        k.platform_namespace
                            .as_deref()
                            .map(|p| format!(", platform namespace {p}"))
                            .unwrap_or_default()
                    ),
                    None => shared.cfg.policy_file.display().to_string(),
                };
                o.insert("source".into(), source.into());
                o.insert("lastReloadError".into(), shared.last_error().into());
            }
            let json = req.uri().query().is_some_and(|q| q.contains("format=json"));
            if json {
                text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec_pretty(&dump).unwrap_or_default(),
                )
            } else {
                match serde_yaml::to_string(&dump) {
                    Ok(y) => text(StatusCode::OK, "application/yaml", y),
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        format!("{e}\n"),
                    ),
                }
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /config_dump, /logging or POST /cache/purge\n",
        ),
    })
}

/// `POST /cache/purge` empties every route's response cache;
/// `?route=NAME` only that route's. Redis-stored answers of the namespace
/// go too. Answers with how many were removed.
async fn purge_endpoint(shared: &Shared, req: &Request<Incoming>) -> Response<ProxyBody> {
    let show = |code, msg: String| text(code, "text/plain", format!("{msg}\n"));
    if req.method() != Method::POST {
        return show(StatusCode::METHOD_NOT_ALLOWED, "POST only".into());
    }
    let route = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("route=")));
    let caches = match route {
        Some(r) => match shared.registry.caches.get(r) {
            Some(c) => vec![c],
            None => {
                return show(
                    StatusCode::NOT_FOUND,
                    format!(
                        "route {:?} has no response cache",
                        crate::inbound::truncate_path(r)
                    ),
                )
            }
        },
        None => shared.registry.caches.all(),
    };
    let mut removed = 0;
    for c in caches {
        match c.purge().await {
            Ok(n) => removed += n,
            Err(e) => {
                return show(
                    StatusCode::BAD_GATEWAY,
                    format!("purging route {}: the cache store failed: {e}", c.route),
                )
            }
        }
    }
    tracing::info!(
        route = route.unwrap_or(""),
        removed,
        "response cache purged"
    );
    show(StatusCode::OK, format!("purged {removed} answers"))
}

/// `GET /logging` shows the log filter; `PUT /logging?level=FILTER` (or
/// POST) replaces it, e.g. `level=debug` or `level=info,llmesh=debug`.
fn logging_endpoint(req: &Request<Incoming>) -> Response<ProxyBody> {
    let show = |code, msg: String| text(code, "text/plain", format!("{msg}\n"));
    match *req.method() {
        Method::GET => match crate::logging::current() {
            Some(f) => show(StatusCode::OK, format!("level={f}")),
            None => show(
                StatusCode::NOT_FOUND,
                "the logger is not installed in this process".into(),
            ),
        },
        Method::PUT | Method::POST => {
            let level = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("level="))
                    .map(|v| v.replace("%2C", ",").replace("%3D", "="))
            });
            let Some(level) = level.filter(|l| !l.is_empty()) else {
                return show(
                    StatusCode::BAD_REQUEST,
                    "give ?level=FILTER, e.g. ?level=debug".into(),
                );
            };
            match crate::logging::set(&level) {
                Ok(()) => show(StatusCode::OK, format!("level={level}")),
                Err(e @ crate::logging::SetLevelError::Invalid(_)) => {
                    show(StatusCode::BAD_REQUEST, e.to_string())
                }
                Err(e) => show(StatusCode::NOT_FOUND, e.to_string()),
            }
        }
        _ => show(StatusCode::METHOD_NOT_ALLOWED, "GET or PUT only".into()),
    }
}

/// Sets `llmesh_circuit_breaker_state` for every backend of the active
/// table from the breakers themselves, so a scrape sees an open breaker turn
/// half-open when its time is up, not only when traffic next touches it.
fn refresh_breaker_gauges(shared: &Shared) {
    let table = shared.table.load();
    let now = crate::clock::now();
    let gauge = &shared.metrics.breaker_state;
    for (route, rt) in table.snap.routes.iter().zip(&table.routes) {
        if route.breaker.is_none() {
            continue;
        }
        for b in rt.backends.iter().chain(rt.fallbacks.iter().flatten()) {
            let model = b.backend.model.as_deref().unwrap_or("");
            gauge
                .with_label_values(&[&route.name, &b.backend.provider.name, model])
                .set(b.state.breaker.state(now).as_gauge());
        }
    }
}

/// Sets the response cache gauges from the live caches, at scrape time.
fn refresh_cache_gauges(shared: &Shared) {
    let m = &shared.metrics;
    m.cache_entries.reset();
    m.cache_bytes.reset();
    for c in shared.registry.caches.all() {
        let (entries, bytes) = c.usage();
        m.cache_entries
            .with_label_values(&[&c.route])
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        m.cache_bytes
            .with_label_values(&[&c.route])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// Sets the quota gauges from the active engine and the store, at scrape
/// time.
fn refresh_quota_gauges(shared: &Shared) {
    let m = &shared.metrics;
    let table = shared.table.load();
    m.quota_used.reset();
    m.quota_limit.reset();
    m.quota_remaining.reset();
    m.provider_budget_exhausted.reset();
    let now = crate::clock::wall();
    if let Some(engine) = &table.quota {
        for u in engine.usage(now) {
            let q = quota_label(&u.limit);
            let scale = if u.limit.limit.unit() == Unit::MicroUsd {
                MICRO_USD
            } else {
                1.0
            };
            let labels = [q.as_str(), u.limit.limit.as_str(), u.scope];
            m.quota_used
                .with_label_values(&labels)
                .set(u.used as f64 / scale);
            m.quota_limit
                .with_label_values(&labels)
                .set(u.max as f64 / scale);
            m.quota_remaining
                .with_label_values(&labels)
                .set(u.remaining() as f64 / scale);
        }
        for p in table.snap.providers.values() {
            if engine.paces(&p.name) {
                let out = !has_room(engine, &p.name, now);
                m.provider_budget_exhausted
                    .with_label_values(&[&p.name])
                    .set(i64::from(out));
            }
        }
    }
    let st = shared.quota.runtime.store().stats();
    m.quota_store_degraded.set(i64::from(st.degraded));
    sync_counter(&m.quota_store_errors, st.errors);
    sync_counter(&m.quota_local_admissions, st.local_admissions);
    sync_counter(&m.quota_fail_closed, st.fail_closed_refusals);
    sync_counter(&m.quota_dropped_settlements, st.dropped_settlements);
    m.quota_pending_settlements
        .set(i64::try_from(st.pending_settlements).unwrap_or(i64::MAX));
    if let Some(w) = &shared.quota.usage {
        let u = w.stats();
        sync_counter(
            &m.usage_records.with_label_values(&["delivered"]),
            u.delivered,
        );
        sync_counter(&m.usage_records.with_label_values(&["dropped"]), u.dropped);
        sync_counter(&m.usage_write_failures, u.failed_writes);
        m.usage_records_queued
            .set(i64::try_from(u.queued).unwrap_or(i64::MAX));
    }
}

/// Moves a counter up to a total kept elsewhere.
fn sync_counter(c: &prometheus::IntCounter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}
