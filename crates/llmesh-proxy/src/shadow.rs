//! Shadow traffic (`LLMRoute.spec.mirror`): a sampled share of a route's
//! requests is also sent, in the background, to a candidate backend. The
//! client only ever gets the primary's answer and never waits for the
//! shadow; a shadow failure changes nothing for it.
//!
//! A shadow call is made once the primary has answered (a streamed one:
//! once its stream has started), so the two never compete; it is the
//! request as the data policy left it, unstreamed,
//! to the candidate's provider only when that provider is cleared for the
//! request's restricted classes, within the mirror's own per-sidecar caps
//! (calls per minute, USD per hour). It is accounted apart (the
//! `llmesh_shadow_*` families), never against the client's quotas, never
//! cached. When the primary answered whole, the pair's signals (latency,
//! output tokens, finish reason, refusal, JSON validity against the
//! request's schema, the tool called) are compared; a streamed primary's
//! answer is not held for comparison, so only the candidate's signals are
//! recorded for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use llmesh_wire::Dialect;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::attempt::Success;
use crate::context::RequestCtx;
use crate::signals::{signals, Signals};
use crate::upstream::Operation;

/// What one side of a pair answered.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Time to the whole answer.
    pub latency: Duration,
    /// Generated tokens, when reported.
    pub output_tokens: Option<u64>,
    /// The answer's signals, when it was whole.
    pub signals: Option<Signals>,
}

/// Starts the shadow call of a request, if its route mirrors and this one
/// is sampled, allowed and within the caps. The sender takes the
/// primary's [`Observed`] for the comparison (dropping it compares
/// nothing). Never blocks: the call runs on its own task.
pub fn start(ctx: &Arc<RequestCtx>) -> Option<oneshot::Sender<Observed>> {
    let settings = ctx.route.mirror.as_ref()?;
    let mirror = ctx.table.routes.get(ctx.route_index)?.mirror.as_ref()?;
    // Chat calls of the chat and messages APIs; a Responses call belongs to
    // a conversation the candidate does not hold.
    if ctx.op != Operation::Chat || !matches!(ctx.client, Dialect::OpenAi | Dialect::Anthropic) {
        return None;
    }
    if settings.fraction < 1.0 && rand::random::<f64>() >= settings.fraction {
        return None;
    }
    let m = &ctx.shared.metrics;
    let b = &mirror.backend;
    let provider = b.backend.provider.name.as_str();
    let model = b.backend.upstream_model(ctx.requested());
    let count = |outcome: &str| {
        m.shadow_requests
            .with_label_values(&[ctx.route.name.as_str(), provider, model, outcome])
            .inc();
    };
    // Never to a provider the data policy keeps the request from.
    let cleared = ctx
        .restricted
        .iter()
        .all(|c| b.backend.provider.clearance.contains(c));
    if !cleared {
        count("skipped_policy");
        return None;
    }
    let unix = crate::clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if !mirror.budget.take(settings, unix) {
        count("skipped_budget");
        return None;
    }
    let raw = unstreamed(ctx.stream, &ctx.raw)?;
    let shadow = ctx.for_shadow(raw);
    let (tx, rx) = oneshot::channel();
    tokio::spawn(run(shadow, rx));
    Some(tx)
}

/// The body without `stream` (and its options) when the client streamed.
fn unstreamed(stream: bool, raw: &Bytes) -> Option<Bytes> {
    if !stream {
        return Some(raw.clone());
    }
    let mut v: Value = serde_json::from_slice(raw).ok()?;
    let o = v.as_object_mut()?;
    o.remove("stream");
    o.remove("stream_options");
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

async fn run(mut ctx: RequestCtx, primary: oneshot::Receiver<Observed>) {
    // The shadow call starts once the primary has answered (or gave up):
    // the primary never competes with its own shadow.
    let wait = ctx.route.timeouts.total + Duration::from_secs(1);
    let primary = tokio::time::timeout(wait, primary)
        .await
        .ok()
        .and_then(Result::ok);
    ctx.start = crate::clock::now();
    ctx.deadline = tokio::time::Instant::now() + ctx.route.timeouts.total;
    let ctx = ctx;
    let Some(mirror) = ctx
        .table
        .routes
        .get(ctx.route_index)
        .and_then(|r| r.mirror.as_ref())
    else {
        return;
    };
    let m = &ctx.shared.metrics;
    let b = &mirror.backend;
    let route = ctx.route.name.as_str();
    let provider = b.backend.provider.name.as_str();
    let model = b.backend.upstream_model(ctx.requested()).to_string();
    let t0 = crate::clock::now();
    let result = crate::attempt::attempt(&ctx, b, None, None).await;
    let latency = crate::clock::since(t0);
    let candidate = match result {
        Ok(Success::Whole {
            body,
            usage,
            response_model,
            ..
        }) => {
            m.shadow_requests
                .with_label_values(&[route, provider, &model, "answered"])
                .inc();
            if let Some(u) = &usage {
                let price = b
                    .backend
                    .provider
                    .model(response_model.as_deref().unwrap_or(&model))
                    .or_else(|| b.backend.provider.model(&model))
                    .and_then(|i| i.price);
                let cost = price.map_or(0.0, |p| {
                    p.cost(llmesh_policy::TokenCounts {
                        input: u.input_tokens,
                        cached: u.cached_input_tokens,
                        cache_write: u.cache_write_input_tokens,
                        output: u.output_tokens,
                    })
                });
                mirror.budget.spend(cost);
                m.shadow_cost
                    .with_label_values(&[route, provider, &model])
                    .inc_by(cost);
                for (kind, n) in [("input", u.input_tokens), ("output", u.output_tokens)] {
                    m.shadow_tokens
                        .with_label_values(&[route, provider, &model, kind])
                        .inc_by(n);
                }
            }
            Observed {
                latency,
                output_tokens: usage.map(|u| u.output_tokens),
                signals: signals(ctx.client, &body, ctx.schema.as_deref().into()),
            }
        }
        Ok(Success::Stream { .. }) => return,
        Err(f) => {
            m.shadow_requests
                .with_label_values(&[route, provider, &model, "failed"])
                .inc();
            tracing::debug!(route, provider, error = %f.error, "shadow call failed");
            return;
        }
    };
    record(&ctx, "candidate", &candidate);
    if let Some(primary) = primary {
        record(&ctx, "primary", &primary);
        if let (Some(p), Some(c)) = (&primary.signals, &candidate.signals) {
            let agree = |signal: &str, same: bool| {
                m.shadow_agreement
                    .with_label_values(&[route, signal, if same { "same" } else { "differ" }])
                    .inc();
            };
            agree("finish_reason", p.finish == c.finish);
            agree("tool", p.tool == c.tool);
            if p.json != "none" {
                agree("json", p.json == c.json);
            }
        }
    }
}

/// One side's signals in the comparison families.
fn record(ctx: &RequestCtx, role: &str, o: &Observed) {
    let m = &ctx.shared.metrics;
    let route = ctx.route.name.as_str();
    m.shadow_latency
        .with_label_values(&[route, role])
        .observe(o.latency.as_secs_f64());
    if let Some(n) = o.output_tokens {
        m.shadow_output_tokens
            .with_label_values(&[route, role])
            .observe(n as f64);
    }
    if let Some(s) = &o.signals {
        m.shadow_answers
            .with_label_values(&[route, role, &s.finish, s.json])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Budget;
    use llmesh_policy::MirrorSettings;

    #[test]
    fn the_caps_count_per_minute_and_per_hour() {
        let b = Budget::default();
        let s = MirrorSettings {
            backend: llmesh_policy::Backend {
                provider: test_provider(),
                model: None,
                weight: 1,
                priority: 0,
            },
            fraction: 1.0,
            max_per_minute: Some(2),
            max_cost_per_hour: Some(1.0),
        };
        assert!(b.take(&s, 60));
        assert!(b.take(&s, 61));
        assert!(!b.take(&s, 62), "the minute's calls are used");
        assert!(b.take(&s, 120), "a new minute");
        b.spend(1.5);
        assert!(!b.take(&s, 180), "the hour's spend is used");
        assert!(b.take(&s, 3600), "a new hour");
    }

    fn test_provider() -> Arc<llmesh_policy::Provider> {
        let docs = llmesh_api::parse_documents(
            "apiVersion: llmesh.io/v1alpha1\nkind: LLMProvider\nmetadata: {name: p}\nspec: {schema: openai}\n",
        )
        .unwrap();
        let (snap, _) =
            llmesh_policy::compile(&docs, "t", &llmesh_policy::EnvFileSecrets::default());
        snap.providers["p"].clone()
    }
}
