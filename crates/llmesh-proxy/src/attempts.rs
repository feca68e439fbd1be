//! The attempts stage: ask the plan for a backend, check the prompt fits
//! its window, take a breaker permit, make the attempt (hedged when the plan
//! says so), count the outcome against the backend, and tell the plan.
//! Nothing reaches the client from here.

use std::sync::Arc;

use llmesh_resilience::OwnedInFlight;

use crate::attempt::{attempt, preflight, Failure, Success};
use crate::clock;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::plan::{backend_at, Outcome, Plan, Slot, Step, Stop, Verdict};
use crate::runtime::AttemptOutcome;

/// How the attempts ended.
pub enum Ended {
    /// A backend answered (for a stream: its first event arrived).
    Answered {
        /// The backend.
        slot: Slot,
        /// The answer.
        success: Success,
        /// Counts the answer as in flight on its backend until it ends.
        in_flight: OwnedInFlight,
    },
    /// The last attempt failed and its failure is the answer.
    Failed {
        /// The backend of the last attempt.
        slot: Slot,
        /// Its failure.
        failure: Failure,
    },
    /// No attempt could be made, or the request failed before one.
    Refused(ProxyError),
}

/// Runs the plan to its end.
pub async fn run(ctx: &Arc<RequestCtx>, plan: &mut Plan) -> Ended {
    let m = &ctx.shared.metrics;
    let route = ctx.route.name.as_str();
    let mut last: Option<(Slot, Failure)> = None;
    plan.deposit(clock::now());
    loop {
        let now = clock::now();
        let pick = match plan.next(now) {
            Step::Try(pick) => pick,
            Step::Wait(d) => {
                tokio::time::sleep(d).await;
                continue;
            }
            Step::Stop(Stop::Failed(_)) if last.is_some() => {
                let Some((slot, failure)) = last else {
                    continue;
                };
                return Ended::Failed { slot, failure };
            }
            Step::Stop(_) => return Ended::Refused(nothing_to_try(ctx)),
        };
        let Some(b) = backend_at(&ctx.table, ctx.route_index, pick.slot) else {
            return Ended::Refused(ProxyError::NoPolicy);
        };
        // Context-window preflight: a backend whose window cannot hold the
        // prompt plus max_tokens is not paid for a doomed call; the request
        // moves on as if it had answered context-length-exceeded.
        match preflight(ctx, b).await {
            Err(e) => return Ended::Refused(e),
            Ok(Some(f)) => {
                m.preflight_skips
                    .with_label_values(&[
                        route,
                        &b.backend.provider.name,
                        b.backend.model.as_deref().unwrap_or(""),
                    ])
                    .inc();
                let verdict = plan.record(pick.slot, Outcome::Skipped, now);
                note(ctx, pick.slot, verdict);
                last = Some((pick.slot, f));
                continue;
            }
            Ok(None) => {}
        }
        if !b.state.breaker.try_acquire(now) {
            // Another request took the last probe slot; pick again.
            plan.record(pick.slot, Outcome::Busy, now);
            continue;
        }
        crate::quota::pace(ctx.pacing(), &b.backend.provider.name, 1, 0);
        let in_flight = b.state.start_owned();
        let t0 = clock::now();
        let (slot, result) = match pick.hedge {
            Some(delay) => crate::hedge::race(ctx, plan, pick.slot, in_flight, t0, delay).await,
            None => match attempt(ctx, b, None, None).await {
                Ok(success) => (pick.slot, Ok((success, in_flight, t0))),
                Err(f) => (pick.slot, Err((f, Some(in_flight)))),
            },
        };
        let Some(b) = backend_at(&ctx.table, ctx.route_index, slot) else {
            return Ended::Refused(ProxyError::NoPolicy);
        };
        let now = clock::now();
        match result {
            Ok((success, in_flight, t0)) => {
                let ttfb = now.saturating_duration_since(t0);
                b.record(m, AttemptOutcome::Answered { ttfb: Some(ttfb) }, now);
                plan.record(slot, Outcome::Answered, now);
                return Ended::Answered {
                    slot,
                    success,
                    in_flight,
                };
            }
            Err((f, flight)) => {
                if flight.is_some() {
                    crate::account::attempt_failed(ctx, b, f.class, now);
                }
                drop(flight);
                let outcome = Outcome::Failed {
                    class: f.class,
                    retry_after: f.retry_after,
                };
                let verdict = plan.record(slot, outcome, now);
                note(ctx, slot, verdict);
                last = Some((slot, f));
            }
        }
    }
}

/// Why no backend could be tried: the providers whose credential cannot be
/// had, when there are any, else every breaker open.
fn nothing_to_try(ctx: &RequestCtx) -> ProxyError {
    let route = ctx.route.name.as_str();
    let mut reasons: Vec<String> = Vec::new();
    if let Some(rt) = ctx.table.routes.get(ctx.route_index) {
        for b in rt.backends.iter().chain(rt.fallbacks.iter().flatten()) {
            if let Some(c) = b.credential.as_ref().filter(|c| !c.usable()) {
                let r = c.unready_reason();
                if !reasons.contains(&r) {
                    reasons.push(r);
                }
            }
        }
    }
    if reasons.is_empty() {
        ProxyError::NoHealthyBackend {
            route: route.to_string(),
        }
    } else {
        ProxyError::NoCredential {
            route: route.to_string(),
            reasons: reasons.join("; "),
        }
    }
}

/// The metrics of a plan's decision.
fn note(ctx: &RequestCtx, slot: Slot, verdict: Verdict) {
    let m = &ctx.shared.metrics;
    let route = ctx.route.name.as_str();
    match verdict {
        Verdict::Retry { class, .. } => m.retries.with_label_values(&[route, class.as_str()]).inc(),
        Verdict::Failover { class, .. } => {
            let provider = backend_at(&ctx.table, ctx.route_index, slot)
                .map_or("", |b| b.backend.provider.name.as_str());
            m.failovers
                .with_label_values(&[route, provider, class.as_str()])
                .inc()
        }
        Verdict::BudgetExhausted => m.budget_exhausted.with_label_values(&[route]).inc(),
        Verdict::Answered | Verdict::Again | Verdict::Final => {}
    }
}
