//! The request path, top to bottom. Each stage is one call, in the module
//! named after it; the comment says why it sits where it does.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::answer::Routing;
use crate::attempts::Ended;
use crate::body::ProxyBody;
use crate::clock;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::inbound::Endpoint;
use crate::shared::Shared;
use crate::stream::deadline_from;

/// Entry point for every request on the LLM port.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let span = crate::trace::request_span(req.method(), req.uri().path(), req.headers());
    let resp = serve(shared, req).instrument(span.clone()).await;
    crate::trace::response_status(&span, resp.status().as_u16());
    Ok(resp)
}

async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = clock::now();
    let request_id = crate::inbound::request_id(req.headers());
    // The endpoint first: it decides the error format of everything after.
    let endpoint = Endpoint::classify(req.method(), req.uri().path());
    // Listing models needs no body, no route and no token.
    match endpoint {
        Endpoint::Models => {
            let anthropic = req.headers().contains_key("anthropic-version");
            return crate::answer::models(&shared, anthropic, &request_id);
        }
        Endpoint::Model => {
            let anthropic = req.headers().contains_key("anthropic-version");
            let id = crate::inbound::model_id(req.uri().path()).unwrap_or_default();
            return crate::answer::model(&shared, id, anthropic, &request_id, start);
        }
        _ => {}
    }
    let dialect = match endpoint {
        Endpoint::Other => crate::inbound::dialect_of_path(req.uri().path(), req.headers()),
        e => e.dialect(),
    };
    // The inbound token before a byte of the body is read.
    if let Err(e) = crate::inbound::authorize(&shared.cfg, req.headers()) {
        return crate::answer::refused(&shared, e, dialect, &request_id, start);
    }
    match endpoint {
        // Every other path: governed pass-through, WebSocket included.
        Endpoint::Other if crate::upgrade::is_upgrade(&req) => {
            return crate::upgrade::serve(shared, req, request_id, start).await;
        }
        Endpoint::Other => {
            return crate::passthrough::serve(shared, req, request_id, start).await;
        }
        Endpoint::ResponseState => {
            return crate::responses::state(&shared, req, &request_id, start).await;
        }
        Endpoint::CountTokens => {
            return match crate::count_tokens::serve(&shared, req, &request_id, start).await {
                Ok(r) => r,
                Err(e) => crate::answer::refused(&shared, e, dialect, &request_id, start),
            };
        }
        _ => {}
    }
    shared.metrics.in_flight.inc();
    let _in_flight = InFlight(&shared);
    match routed(&shared, endpoint, req, &request_id, start).await {
        Ok(resp) => resp,
        Err((e, at)) => crate::answer::refused_at(
            &shared,
            e,
            endpoint.dialect(),
            &request_id,
            start,
            at.as_ref(),
        ),
    }
}

async fn routed(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    req: Request<Incoming>,
    request_id: &http::HeaderValue,
    start: std::time::Instant,
) -> Result<Response<ProxyBody>, (ProxyError, Option<Routing>)> {
    // Inbound: the body under the size limit, parsed once for routing.
    let inbound = crate::inbound::read(&shared.cfg, endpoint, req)
        .await
        .map_err(|e| (e, None))?;
    // One table for the whole request: every later stage reads this one.
    let table = shared.table.load_full();
    // Route: the model name and headers pick the route.
    let routed = crate::route::resolve(&table, &inbound.model, &inbound.headers).map_err(|e| {
        let asked = Routing {
            route: String::new(),
            model: crate::inbound::truncate_path(&inbound.model),
        };
        (e, Some(asked))
    })?;
    // From here on a refusal is logged and counted with its route.
    let at = Routing {
        route: routed.route.name.clone(),
        model: inbound.model.clone(),
    };
    on_route(shared, endpoint, inbound, table, routed, request_id, start)
        .await
        .map_err(|e| (e, Some(at)))
}

/// The stages after routing, for a request going to `routed`.
async fn on_route(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    inbound: crate::inbound::Inbound,
    table: Arc<crate::table::Table>,
    routed: crate::route::Routed,
    request_id: &http::HeaderValue,
    start: std::time::Instant,
) -> Result<Response<ProxyBody>, ProxyError> {
    // Data policy: it sees the client's body before anything is counted or
    // sent, and what it finds limits the providers that may get it.
    let guarded = crate::dataguard::guard(&table, &shared.metrics, &inbound)?;
    let raw = guarded.body.clone().unwrap_or_else(|| inbound.raw.clone());
    crate::route::check_cleared(&routed.route, &guarded.restricted)?;
    // Conversation: a Responses follow-up becomes one whole input, or is
    // pinned to the provider that holds it; before admission, which counts
    // the whole prompt.
    let (turn, raw) = match endpoint {
        Endpoint::Responses => {
            let (turn, raw) = crate::conversation::prepare(
                &shared.conversations,
                &raw,
                inbound.previous_response_id.as_deref(),
                inbound.store,
            )
            .await?;
            (Some(Arc::new(turn)), raw)
        }
        _ => (None, raw),
    };
    // Structured output: the route's own schema, if any, joins a request
    // that asks for none; before the cache (it is part of the request) and
    // admission, which counts what is sent.
    let raw = crate::structured::enforce_schema(&routed.route, endpoint, raw);
    // Cache: a stored answer to the same request is the answer; nothing is
    // admitted, sent or paid. A miss carries where its answer is stored.
    let rt = table.routes.get(routed.index);
    let ask = crate::cached::Ask {
        client: endpoint.dialect(),
        op: endpoint.operation(),
        stream: inbound.stream,
        headers: &inbound.headers,
        raw: &raw,
        data_class: (!guarded.uncacheable).then_some(guarded.data_class.as_str()),
        restricted: &guarded.restricted,
        continues: inbound.previous_response_id.is_some(),
        request_id,
    };
    let lookup = crate::cached::lookup(shared, rt, ask).await;
    let cache = match lookup {
        crate::cached::Lookup::Hit(entry, similarity) => {
            let hit = crate::cached::Hit {
                route: &routed.route,
                client: endpoint.dialect(),
                op: endpoint.operation(),
                model_requested: &inbound.model,
                vault: guarded.vault.as_ref(),
                request_id,
                start,
                similarity,
            };
            return Ok(crate::cached::answer(shared, &table, hit, &entry));
        }
        crate::cached::Lookup::Miss(p) => Some(p),
        crate::cached::Lookup::Bypass => None,
    };
    let cache_mark = rt
        .is_some_and(|r| r.cache.is_some())
        .then_some(cache.is_some());
    // Admission: quotas reserve on the way in, after the data policy so a
    // blocked request costs nothing; a downgrade re-routes.
    let (routed, admitted) =
        crate::admission::admit(shared, &table, routed, &inbound, &raw, &guarded.restricted)
            .await?;
    // The request context, created once and shared by every later stage.
    let schema = crate::structured::validator(&routed.route, endpoint.dialect(), &raw);
    let ctx = Arc::new(RequestCtx {
        shared: shared.clone(),
        route_index: routed.index,
        deadline: deadline_from(start, routed.route.timeouts.total),
        route: routed.route,
        pattern_index: routed.pattern_index,
        client: endpoint.dialect(),
        op: endpoint.operation(),
        stream: inbound.stream,
        include_usage: inbound.include_usage,
        downgraded_to: admitted.downgrade_to.clone(),
        body_model: inbound.model,
        raw,
        // Forwarded headers as the data policy left them.
        headers: guarded.headers.unwrap_or(inbound.headers),
        request_id: request_id.clone(),
        start,
        max_output: inbound.max_output,
        restricted: guarded.restricted,
        vault: guarded.vault,
        audit: guarded.audit,
        charge: admitted.charge.clone(),
        prompt_tokens: admitted
            .prompt_tokens
            .map(OnceLock::from)
            .unwrap_or_default(),
        span: tracing::Span::current(),
        turn,
        cache,
        schema,
        table,
    });
    // Shadow: a sampled copy goes to the route's mirror candidate in the
    // background; nothing here waits for it.
    let shadow = crate::shadow::start(&ctx);
    // Plan: the retry, failover and hedge decisions of this request.
    let mut plan = ctx.plan();
    // Attempts: nothing reaches the client until one answers or the plan stops.
    let ended = crate::attempts::run(&ctx, &mut plan).await;
    // Structured output: an answer that does not match the request's JSON
    // schema is asked again with the error, up to the route's bound.
    let (ctx, plan, ended, schema_retries, matched) =
        crate::structured::enforce(ctx, plan, ended).await;
    // The signals of a whole chat answer, read once: for the drift
    // families of its backend's model version, and for the primary's side
    // of the shadow comparison.
    let signals = match &ended {
        Ended::Answered {
            success: crate::attempt::Success::Whole { body, .. },
            ..
        } if ctx.op == crate::upstream::Operation::Chat => {
            // An answer enforce() found matching is not validated twice.
            let schema = if matched {
                crate::signals::Schema::Checked { valid: true }
            } else {
                ctx.schema.as_deref().into()
            };
            crate::signals::signals(ctx.client, body, schema)
        }
        _ => None,
    };
    if let (
        Some(tx),
        Ended::Answered {
            success: crate::attempt::Success::Whole { usage, .. },
            ..
        },
    ) = (shadow, &ended)
    {
        let _ = tx.send(crate::shadow::Observed {
            latency: crate::clock::since(start),
            output_tokens: usage.map(|u| u.output_tokens),
            signals: signals.clone(),
        });
    }
    // Answer: a whole body or a stream, accounted when it ends.
    match ended {
        Ended::Answered {
            slot,
            success,
            in_flight,
        } => {
            let mut resp = crate::answer::success(&ctx, slot, success, in_flight, plan, signals)?;
            crate::admission::headers(&mut resp, &admitted);
            if let Some(looked_up) = cache_mark {
                crate::cached::mark(&mut resp, looked_up);
            }
            if schema_retries > 0 {
                resp.headers_mut().insert(
                    "x-llmesh-schema-retries",
                    http::HeaderValue::from(schema_retries),
                );
            }
            Ok(resp)
        }
        Ended::Failed { slot, failure } => {
            crate::answer::failure(&ctx, slot, failure, plan.attempts())
        }
        Ended::Refused(e) => Err(e),
    }
}

struct InFlight<'a>(&'a Shared);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}
