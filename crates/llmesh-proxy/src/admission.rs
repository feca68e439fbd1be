//! The admission stage: the quotas covering the request reserve its
//! tokens, cost and slot (settled with the real usage when its last call is
//! accounted); a full downgrade quota re-routes it to its cheaper model.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use llmesh_policy::Route;
use llmesh_quota::{Admission, CallerId, Decision, QuotaEngine};
use llmesh_wire::Dialect;
use tracing::Instrument;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::inbound::{truncate_path, Inbound};
use crate::quota::{quota_label, raise_alerts, Admitted, Charge};
use crate::route::{check_cleared, Routed};
use crate::shared::Shared;
use crate::table::Table;

/// Admits the request routed as `routed`; returns the route it goes to
/// (another one after a downgrade) and what it holds.
pub async fn admit(
    shared: &Arc<Shared>,
    table: &Table,
    routed: Routed,
    inbound: &Inbound,
    raw: &bytes::Bytes,
    restricted: &[String],
) -> Result<(Routed, Admitted), ProxyError> {
    let Some(engine) = &table.quota else {
        return Ok((routed, Admitted::default()));
    };
    let ask = Ask {
        route: &routed.route,
        requested: &inbound.model,
        headers: &inbound.headers,
        raw,
        client: inbound.endpoint.dialect(),
        max_output: inbound.max_output,
        tokens: true,
    };
    let admitted = quota_admit(shared, engine, &ask).await?;
    let Some(to) = &admitted.downgrade_to else {
        return Ok((routed, admitted));
    };
    let downgraded = crate::route::resolve(table, to, &inbound.headers).map_err(|_| {
        ProxyError::Quota {
            status: 429,
            message: format!(
                "a downgrade quota's limit is reached and its downgradeTo model `{}` is not served here",
                truncate_path(to)
            ),
            headers: vec![("retry-after", "60".to_string())],
        }
    })?;
    check_cleared(&downgraded.route, restricted)?;
    Ok((downgraded, admitted))
}

/// Admission of a pass-through call or a WebSocket session allowed by
/// `route`: counted against the request and concurrency limits of the
/// quotas covering `model` (the one the call names, or `""`, which only
/// quotas without a model list cover). Nothing is reserved for tokens or
/// cost: what batch results cost is added to the charge as they are
/// downloaded. A full downgrade quota has nothing to downgrade here and
/// lets the call go ahead.
pub async fn admit_passthrough(
    shared: &Arc<Shared>,
    table: &Table,
    route: &Route,
    model: &str,
    headers: &HeaderMap,
) -> Result<Option<Arc<Charge>>, ProxyError> {
    let Some(engine) = &table.quota else {
        return Ok(None);
    };
    let ask = Ask {
        route,
        requested: model,
        headers,
        raw: &Bytes::new(),
        client: Dialect::OpenAi,
        max_output: 0,
        tokens: false,
    };
    Ok(quota_admit(shared, engine, &ask).await?.charge)
}

/// The tightest quota limit's `x-ratelimit-*` headers, and
/// `x-llmesh-quota-downgraded-to` when a downgrade quota changed the model.
pub fn headers(resp: &mut Response<ProxyBody>, admitted: &Admitted) {
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

/// What admission reads of a routed request.
pub struct Ask<'a> {
    /// The route it goes to.
    pub route: &'a Route,
    /// The model it is routed as.
    pub requested: &'a str,
    /// The client's headers (caller headers).
    pub headers: &'a HeaderMap,
    /// The body, to count the prompt when a token limit needs it.
    pub raw: &'a Bytes,
    /// The client's API.
    pub client: Dialect,
    /// `max_tokens` asked for, 0 if none.
    pub max_output: u64,
    /// Reserve the prompt and the answer's tokens (false for calls whose
    /// tokens are not known up front: pass-through).
    pub tokens: bool,
}

/// The prompt tokens a reservation counts: the tokenizer's count once it
/// is `ready` (kept as the prompt's count), else the byte estimate (not
/// kept: the preflight and accounting count again if they need to).
async fn quota_prompt(
    client: Dialect,
    raw: &Bytes,
    ready: bool,
) -> Result<(Option<u64>, u64), ProxyError> {
    if ready {
        let n = crate::tokens::count_prompt(client, raw.clone()).await?;
        Ok((Some(n), n))
    } else {
        Ok((None, crate::tokens::byte_estimate(raw.len())))
    }
}

/// The request's admission by the quotas covering it.
async fn quota_admit(
    shared: &Arc<Shared>,
    engine: &QuotaEngine,
    ask: &Ask<'_>,
) -> Result<Admitted, ProxyError> {
    let Ask {
        route,
        requested,
        headers,
        raw,
        client,
        max_output,
        tokens,
    } = *ask;
    let id = shared.identity();
    let Some(needs_tokens) = engine.coverage(&id.namespace, &id.workload, requested) else {
        return Ok(Admitted::default());
    };
    let state = &shared.quota;
    let output = if !tokens {
        0
    } else if max_output > 0 {
        max_output
    } else {
        state.default_max_tokens
    };
    // Counted with the tokenizer once it is loaded (it loads in the
    // background when the policy is published); until then reserved from
    // the body's length, so no request waits for the load. Settlement
    // corrects either with the provider's usage.
    let (prompt_tokens, input) = if needs_tokens && tokens {
        quota_prompt(client, raw, crate::tokens::ready()).await?
    } else {
        (None, 0)
    };
    // The price of the backend the route tries first; settlement corrects
    // the estimate with what the call really cost.
    let est_cost = route
        .backends
        .iter()
        .find_map(|b| {
            b.provider
                .model(b.upstream_model(requested))
                .and_then(|m| m.price)
        })
        .map_or(0.0, |p| {
            // Whether the provider's cache will serve part of the prompt
            // is unknown before the call: estimated at the full input
            // price, and settled at what the call reported.
            p.cost(llmesh_policy::TokenCounts {
                input,
                output,
                ..Default::default()
            })
        });
    let mut callers: Vec<(&str, CallerId)> = Vec::new();
    for h in engine.caller_headers() {
        if let Some(v) = headers.get(h.as_ref()).and_then(|v| v.to_str().ok()) {
            callers.push((h, state.hasher.hash(v)));
        }
    }
    let caller = callers.first().map(|(_, c)| *c);
    let span = crate::trace::quota_span();
    let decision = engine
        .admit(&Admission {
            namespace: &id.namespace,
            workload: &id.workload,
            pod: &id.pod,
            callers: &callers,
            model: requested,
            input_tokens: input,
            output_tokens: output,
            est_cost_usd: est_cost,
            now: crate::clock::wall(),
        })
        .instrument(span.clone())
        .await;
    crate::trace::quota_decision(&span, decision.label());
    let m = &shared.metrics;
    let label = decision.label();
    let (reservation, downgrade_to) = match decision {
        Decision::Reject(rej) => {
            raise_alerts(&m.quota_alerts, &rej.alerts);
            m.quota_decisions
                .with_label_values(&[label, &quota_label(&rej.limit)])
                .inc();
            tracing::warn!(
                quota = quota_label(&rej.limit).as_str(),
                limit = rej.limit.limit.as_str(),
                status = rej.status(),
                "request refused by quota"
            );
            return Err(ProxyError::Quota {
                status: rej.status(),
                message: rej.message(),
                headers: rej.headers(),
            });
        }
        Decision::Allow(r) => {
            if !r.is_empty() {
                m.quota_decisions.with_label_values(&[label, ""]).inc();
            }
            (r, None)
        }
        Decision::Warn {
            reservation,
            exceeded,
        } => {
            for l in &exceeded {
                tracing::warn!(
                    quota = quota_label(l).as_str(),
                    limit = l.limit.as_str(),
                    "request over a warn quota's limit; served"
                );
            }
            let q = exceeded.first().map(quota_label).unwrap_or_default();
            m.quota_decisions.with_label_values(&[label, &q]).inc();
            (reservation, None)
        }
        Decision::Downgrade {
            to_model,
            by,
            reservation,
        } => {
            m.quota_decisions
                .with_label_values(&[label, &quota_label(&by)])
                .inc();
            (reservation, Some(to_model))
        }
    };
    raise_alerts(&m.quota_alerts, reservation.alerts());
    let rate = reservation.rate_limit();
    let charge = (!reservation.is_empty())
        .then(|| Arc::new(Charge::new(reservation, caller, m.quota_alerts.clone())));
    Ok(Admitted {
        charge,
        downgrade_to,
        rate,
        prompt_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn before_the_tokenizer_is_loaded_a_reservation_uses_the_length() {
        let raw = Bytes::from(vec![b'x'; 90]);
        let (kept, input) = quota_prompt(Dialect::OpenAi, &raw, false).await.unwrap();
        assert_eq!((kept, input), (None, 30));
        crate::tokens::load().await;
        assert!(crate::tokens::ready());
        let raw = Bytes::from(r#"{"messages":[{"role":"user","content":"hello there"}]}"#);
        let (kept, input) = quota_prompt(Dialect::OpenAi, &raw, true).await.unwrap();
        assert_eq!(kept, Some(input));
        assert!((1..10).contains(&input), "{input}");
    }
}
