//! WebSocket pass-through (`GET /v1/realtime` and any other upgrade): the
//! provider is chosen as for other pass-through calls (the `model` query
//! parameter's route, else a route's `spec.passthrough`), the handshake is
//! sent with the provider's key instead of the app's, and once both sides
//! have switched protocols the bytes are copied both ways until either
//! closes. The sidecar counts connections and their bytes; it does not
//! read the frames, so tokens and cost of realtime sessions are not
//! accounted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{ProxyBody, UpstreamBody};
use crate::error::ProxyError;
use crate::shared::Shared;

/// Time for the upstream to answer the handshake.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// Whether `req` asks to switch to WebSocket.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    upgrade && connection
}

/// Serves one upgrade request.
pub async fn serve(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    request_id: HeaderValue,
    start: Instant,
) -> Response<ProxyBody> {
    let dialect = crate::inbound::dialect_of_path(req.uri().path(), req.headers());
    let endpoint = crate::passthrough::endpoint_label(req.uri().path());
    let client_side = hyper::upgrade::on(&mut req);
    match open(&shared, &req, &request_id, dialect).await {
        Ok((resp, upstream_side, provider, charge)) => {
            let m = &shared.metrics;
            m.upgrades
                .with_label_values(&[endpoint.as_str(), provider.as_str(), "open"])
                .inc();
            let id = shared.identity();
            tracing::info!(
                target: "llmesh::access",
                request_id = request_id.to_str().unwrap_or(""),
                namespace = id.namespace.as_str(),
                workload = id.workload.as_str(),
                pod = id.pod.as_str(),
                provider = provider.as_str(),
                endpoint = endpoint.as_str(),
                status = 101,
                passthrough = true,
                latency_ms = crate::clock::since(start).as_secs_f64() * 1000.0,
                "websocket opened"
            );
            let shared = shared.clone();
            tokio::spawn(async move {
                // Quotas count the session, and a concurrency limit holds
                // its slot, until it closes.
                let _charge = charge;
                let (c, u) = match tokio::join!(client_side, upstream_side) {
                    (Ok(c), Ok(u)) => (c, u),
                    (c, u) => {
                        let e = c.err().or(u.err()).map(|e| e.to_string());
                        tracing::warn!(
                            error = e.as_deref().unwrap_or(""),
                            "websocket upgrade did not complete"
                        );
                        return;
                    }
                };
                shared.metrics.upgrades_active.inc();
                let opened = crate::clock::now();
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                let copied = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                shared.metrics.upgrades_active.dec();
                let (sent, received) = copied.unwrap_or((0, 0));
                tracing::info!(
                    target: "llmesh::access",
                    request_id = request_id.to_str().unwrap_or(""),
                    provider = provider.as_str(),
                    bytes_sent = sent,
                    bytes_received = received,
                    duration_ms = crate::clock::since(opened).as_millis() as u64,
                    "websocket closed"
                );
            });
            resp
        }
        Err((e, provider)) => {
            if let Some(p) = provider {
                let outcome = match e {
                    ProxyError::UpgradeRefused { .. } => "refused",
                    _ => "failed",
                };
                shared
                    .metrics
                    .upgrades
                    .with_label_values(&[endpoint.as_str(), p.as_str(), outcome])
                    .inc();
            }
            crate::answer::refused(&shared, e, dialect, &request_id, start)
        }
    }
}

/// The 101 for the client, the upstream's side of the upgrade, the
/// provider's name and what the session holds against quotas.
type Opened = (
    Response<ProxyBody>,
    hyper::upgrade::OnUpgrade,
    String,
    Option<Arc<crate::quota::Charge>>,
);

async fn open(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
    request_id: &HeaderValue,
    dialect: llmesh_wire::Dialect,
) -> Result<Opened, (ProxyError, Option<String>)> {
    let table = shared.table.load_full();
    let model = crate::passthrough::query_model(req.uri());
    let target = crate::passthrough::choose(
        &table,
        dialect,
        req.uri().path(),
        model.as_deref(),
        req.headers(),
    )
    .ok_or_else(|| {
        (
            ProxyError::UnsupportedEndpoint {
                method: req.method().to_string(),
                path: crate::inbound::truncate_path(req.uri().path()),
            },
            None,
        )
    })?;
    let name = target.provider.name.clone();
    let fail = |e: ProxyError| (e, Some(name.clone()));
    // Frames are not scanned: a policy that denies unscannable bodies for
    // a class keeps them from providers not cleared for it.
    if let Some(g) = &table.snap.data_guard {
        crate::dataguard::allow_unscannable(g, &target.provider, "websocket").map_err(&fail)?;
    }
    // The handshake's headers are scanned like any forwarded header.
    let headers = crate::dataguard::guard_headers(
        table.snap.data_guard.as_deref(),
        &shared.metrics,
        &target.provider,
        &target.route.name,
        req.headers(),
    )
    .map_err(&fail)?;
    let charge = crate::admission::admit_passthrough(
        shared,
        &table,
        &target.route,
        model.as_deref().unwrap_or(""),
        req.headers(),
    )
    .await
    .map_err(&fail)?;
    let client = shared
        .clients
        .get_http1(target.provider.ca_file.as_deref(), Duration::from_secs(10))
        .map_err(|e| fail(ProxyError::Unsupported(format!("upstream client: {e}"))))?;
    let mut up = crate::passthrough::build(
        &target.provider,
        req.method(),
        req.uri(),
        headers.as_ref().unwrap_or(req.headers()),
        dialect,
        request_id,
        UpstreamBody::default(),
        None,
    )
    .map_err(&fail)?;
    let h = up.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let mut resp = match tokio::time::timeout(HANDSHAKE, client.request(up)).await {
        Err(_) => {
            return Err(fail(ProxyError::UpstreamTimeout {
                provider: name.clone(),
                phase: "handshake",
                after_ms: HANDSHAKE.as_millis(),
            }))
        }
        Ok(Err(e)) => {
            return Err(fail(ProxyError::UpstreamConnect {
                provider: name.clone(),
                detail: crate::error::error_chain(&e),
            }))
        }
        Ok(Ok(r)) => r,
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(fail(ProxyError::UpgradeRefused {
            provider: name.clone(),
            status: resp.status().as_u16(),
        }));
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(crate::body::full(bytes::Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let oh = out.headers_mut();
    for (n, v) in resp.headers() {
        let keep = matches!(n.as_str(), "upgrade" | "connection")
            || n.as_str().starts_with("sec-websocket-");
        if keep {
            oh.append(n.clone(), v.clone());
        }
    }
    oh.insert("x-request-id", request_id.clone());
    if let Ok(v) = HeaderValue::from_str(&name) {
        oh.insert("x-llmesh-provider", v);
    }
    Ok((out, upstream_side, name, charge))
}
