//! Hedging: race a second backend when the first is slow to answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use llmesh_resilience::OwnedInFlight;

use crate::attempt::{attempt, Failure, Req, Success};
use crate::respond::{call_for, note_attempt, record_failure, Labels};
use crate::runtime::{BackendRuntime, RouteRuntime};
use crate::select::{budget_allows, clock, select_own};

/// How one attempt (or a hedged pair) ended: the answer with its in-flight
/// guard and start time, or the failure with the guard if a call was made.
pub(crate) type AttemptResult =
    Result<(Success, OwnedInFlight, std::time::Instant), (Failure, Option<OwnedInFlight>)>;

/// The first attempt, hedged: if `a` has produced nothing after `delay`, a
/// second backend of the route (one not tried yet, budget permitting) is
/// raced against it. The first success wins and the other attempt is
/// dropped, which cancels its upstream call; if one fails, the other is
/// awaited. A cancelled attempt whose request had reached the upstream is
/// billed there, so its prompt tokens are accounted (see `Call::bill`).
// Failures are the rare path and are moved once; boxing them would cost
// every one an allocation for nothing.
#[allow(clippy::too_many_arguments, clippy::result_large_err)]
pub(crate) async fn race<'a>(
    req: &Req<'_>,
    labels: &Labels<'_>,
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
    let a_sent = Arc::new(AtomicBool::new(false));
    let fa = attempt(req, a, Some(a_sent.clone()));
    tokio::pin!(fa);
    if let Ok(r) = tokio::time::timeout(delay, &mut fa).await {
        return (a, wrap(r, a_flight, a_t0));
    }
    let now = clock();
    let second = select_own(req, rt, tried, now)
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
    let b_sent = Arc::new(AtomicBool::new(false));
    let fb = attempt(req, b, Some(b_sent.clone()));
    tokio::pin!(fb);
    // A cancelled attempt did not fail: its breaker permit is returned as a
    // success so a half-open probe slot is never lost.
    let cancelled = |loser: &BackendRuntime, sent: &AtomicBool| {
        let now = clock();
        loser.state.breaker.on_success(now);
        note_attempt(req, loser, "hedge_cancelled");
        if sent.load(Ordering::Relaxed) {
            call_for(req, labels, loser).bill(None, 0, "hedge_cancelled");
        }
    };
    tokio::select! {
        ra = &mut fa => match ra {
            Ok(s) => {
                cancelled(b, &b_sent);
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
                cancelled(a, &a_sent);
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
