//! Hedging: race a second backend when the first is slow to answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use llmesh_resilience::OwnedInFlight;

use crate::account::Call;
use crate::attempt::{attempt, AttemptResult};
use crate::clock;
use crate::context::RequestCtx;
use crate::plan::{backend_at, Plan, Slot};
use crate::runtime::AttemptOutcome;

/// The first attempt, hedged: if the backend at `a` has produced nothing
/// after `delay`, a second backend the plan gives
/// ([`Plan::hedge_partner`]) is raced against it. The first success wins
/// and the other attempt is dropped, which cancels its upstream call; if
/// one fails, the other is awaited. A cancelled attempt whose request had
/// reached the upstream is billed there, so its prompt tokens are accounted
/// (see `Call::bill`).
pub(crate) async fn race(
    ctx: &Arc<RequestCtx>,
    plan: &mut Plan,
    a: Slot,
    a_flight: OwnedInFlight,
    a_t0: std::time::Instant,
    delay: Duration,
) -> (Slot, AttemptResult) {
    // The Err is the attempt's `AttemptResult` error, moved as it is.
    #[allow(clippy::result_large_err)]
    let wrap = |r, flight: OwnedInFlight, t0| match r {
        Ok(s) => Ok((s, flight, t0)),
        Err(f) => Err((f, Some(flight))),
    };
    let table = ctx.table.clone();
    let Some(a_rt) = backend_at(&table, ctx.route_index, a) else {
        return (a, Err((crate::attempt::Failure::gone(), Some(a_flight))));
    };
    let a_sent = Arc::new(AtomicBool::new(false));
    let fa = attempt(ctx, a_rt, Some(a_sent.clone()), None);
    tokio::pin!(fa);
    if let Ok(r) = tokio::time::timeout(delay, &mut fa).await {
        return (a, wrap(r, a_flight, a_t0));
    }
    let partner = plan.hedge_partner(clock::now()).map(Slot::Own);
    let Some((b, b_rt)) = partner.and_then(|s| Some((s, backend_at(&table, ctx.route_index, s)?)))
    else {
        return (a, wrap(fa.await, a_flight, a_t0));
    };
    let m = &ctx.shared.metrics;
    let hedges = &m.hedges;
    let route = ctx.route.name.as_str();
    let b_flight = b_rt.state.start_owned();
    let b_t0 = clock::now();
    let b_sent = Arc::new(AtomicBool::new(false));
    let fb = attempt(ctx, b_rt, Some(b_sent.clone()), None);
    tokio::pin!(fb);
    let cancelled = |loser: &crate::runtime::BackendRuntime, sent: &AtomicBool| {
        loser.record(m, AttemptOutcome::Cancelled, clock::now());
        if sent.load(Ordering::Relaxed) {
            Call::new(ctx, loser).bill(None, 0, "hedge_cancelled");
        }
    };
    tokio::select! {
        ra = &mut fa => match ra {
            Ok(s) => {
                cancelled(b_rt, &b_sent);
                hedges.with_label_values(&[route, "lost"]).inc();
                (a, Ok((s, a_flight, a_t0)))
            }
            Err(f) => {
                crate::account::attempt_failed(ctx, a_rt, f.class, clock::now());
                drop(a_flight);
                hedges.with_label_values(&[route, "won"]).inc();
                (b, wrap(fb.await, b_flight, b_t0))
            }
        },
        rb = &mut fb => match rb {
            Ok(s) => {
                cancelled(a_rt, &a_sent);
                hedges.with_label_values(&[route, "won"]).inc();
                (b, Ok((s, b_flight, b_t0)))
            }
            Err(f) => {
                crate::account::attempt_failed(ctx, b_rt, f.class, clock::now());
                drop(b_flight);
                hedges.with_label_values(&[route, "lost"]).inc();
                (a, wrap(fa.await, a_flight, a_t0))
            }
        },
    }
}
