//! Turning the last attempt into the client's answer, and accounting it.

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use llmesh_api::ErrorClass;
use llmesh_resilience::OwnedInFlight;

use crate::account::{Call, Outcome};
use crate::attempt::{self, Failure, FailureKind, Req, Success};
use crate::body::ProxyBody;
use crate::error::{json_bytes_response, json_response};
use crate::runtime::BackendRuntime;
use crate::select::clock;
use crate::stream::StreamingBody;

/// What accounting needs besides the request.
pub(crate) struct Labels<'a> {
    /// The route entry that matched (the request-model label).
    pub pattern: &'a str,
    /// When the request arrived.
    pub start: Instant,
    /// The policy table the request was routed with.
    pub table: &'a std::sync::Arc<crate::table::Table>,
    /// Position of the route in the table.
    pub route_index: usize,
}

/// A failed attempt's effect on its backend: the breaker hears of it unless
/// the request itself was the problem (the backend answered properly).
pub(crate) fn record_failure(req: &Req<'_>, b: &BackendRuntime, f: &Failure) {
    let now = clock();
    match f.class {
        ErrorClass::InvalidRequest | ErrorClass::ContextLength | ErrorClass::ContentFilter => {
            b.state.breaker.on_success(now)
        }
        _ => b.state.breaker.on_failure(now),
    }
    note_attempt(req, b, f.class.as_str());
}

pub(crate) fn note_attempt(req: &Req<'_>, b: &BackendRuntime, outcome: &str) {
    // The breaker gauge is read from the breakers at scrape time
    // (runtime::refresh_breaker_gauges), so only the counter is touched here.
    let model = b.backend.model.as_deref().unwrap_or("");
    let m = &req.shared.metrics;
    if outcome == "ok" {
        b.series
            .attempt_ok(m, &req.route.name, &b.backend.provider.name, model);
    } else {
        m.attempts
            .with_label_values(&[&req.route.name, &b.backend.provider.name, model, outcome])
            .inc();
    }
}

pub(crate) fn call_for(req: &Req<'_>, labels: &Labels<'_>, b: &BackendRuntime) -> Call {
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
        requested: req.body_model.to_string(),
        model_label: b
            .backend
            .model
            .clone()
            .unwrap_or_else(|| labels.pattern.to_string()),
        upstream_model: model,
        raw_request: req.raw.clone(),
        audit: req.audit.cloned(),
        series: b.series.clone(),
        charge: req.charge.cloned(),
        span: crate::trace::current(),
    }
}

pub(crate) fn add_route_headers(
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
pub(crate) fn respond(
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
            let body = match req.vault {
                Some(v) => crate::dataguard::restore_whole(
                    v,
                    crate::dataguard::api_of(req.client, req.op),
                    body,
                ),
                None => body,
            };
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
            let cont =
                crate::continuation::Continuation::new(req, labels.table, labels.route_index);
            let body = StreamingBody::new(
                upstream,
                first,
                in_flight,
                translator,
                call,
                idle,
                req.deadline,
                cont,
                req.vault
                    .map(|v| Box::new(crate::dataguard::StreamRestore::new(req.client, v.clone()))),
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
pub(crate) fn fail(
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
