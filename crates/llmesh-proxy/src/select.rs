//! Choosing the backend of an attempt: the route's own backends by
//! strategy and priority group, or the next entry of a fallback chain.

use llmesh_resilience::{balance, Candidate, Strategy};

use crate::attempt::Req;
use crate::runtime::{BackendRuntime, RouteRuntime};

pub(crate) fn clock() -> std::time::Instant {
    // tokio's clock, so tests with paused time drive breakers and budgets.
    tokio::time::Instant::now().into_std()
}

pub(crate) fn bit(i: usize) -> u64 {
    1u64 << (i.min(63))
}

pub(crate) fn budget_allows(rt: &RouteRuntime, now: std::time::Instant) -> bool {
    rt.budget.as_ref().is_none_or(|b| b.try_withdraw(now))
}

/// A backend of the route's own, by its strategy, from the best priority
/// group that has an available backend. Backends in `tried` are avoided
/// while others are available; the flag says whether the pick is untried.
/// Backends must be cleared for the request's restricted data classes.
/// Backends whose provider's published per-minute budget is used up are
/// avoided while another backend has room.
pub(crate) fn select_own(
    req: &Req<'_>,
    rt: &RouteRuntime,
    tried: u64,
    now: std::time::Instant,
) -> Option<(usize, bool)> {
    let route = req.route;
    let restricted = req.restricted;
    let strategy = &route.strategy;
    let cleared = |b: &BackendRuntime| {
        restricted.is_empty() || crate::dataguard::cleared(&b.backend.provider, restricted)
    };
    // The common case, one backend, needs no balancing.
    if let [only] = rt.backends.as_slice() {
        return (only.state.breaker.would_admit(now) && cleared(only))
            .then_some((0, tried & 1 == 0));
    }
    let room: Vec<bool> = match req.pacing {
        Some(engine) => rt
            .backends
            .iter()
            .map(|b| crate::quota::has_room(engine, &b.backend.provider.name))
            .collect(),
        None => Vec::new(),
    };
    let has_room = |i: usize| room.get(i).copied().unwrap_or(true);
    let needs_p90 = matches!(strategy, Strategy::Cost { .. });
    let mut groups: Vec<u32> = rt.backends.iter().map(|b| b.backend.priority).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut cands: Vec<Candidate> = Vec::with_capacity(rt.backends.len());
    let passes: &[(bool, bool)] = if room.contains(&false) {
        &[(true, true), (false, true), (true, false), (false, false)]
    } else {
        &[(true, false), (false, false)]
    };
    for &(avoid_tried, avoid_paced) in passes {
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
                        && (!avoid_paced || has_room(i))
                        && b.state.breaker.would_admit(now)
                        && cleared(b),
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

pub(crate) fn price_per_mtok(b: &llmesh_policy::Backend) -> f64 {
    b.model
        .as_deref()
        .and_then(|m| b.provider.model(m))
        .and_then(|info| info.price)
        .map_or(f64::NAN, |p| (p.input + p.output) * 1e6)
}

/// The next available backend of a fallback chain, moving past it.
pub(crate) fn next_in_chain<'a>(
    chain: &'a [BackendRuntime],
    pos: &mut usize,
    now: std::time::Instant,
    restricted: &[String],
) -> Option<&'a BackendRuntime> {
    while let Some(b) = chain.get(*pos) {
        *pos += 1;
        let cleared =
            restricted.is_empty() || crate::dataguard::cleared(&b.backend.provider, restricted);
        if cleared && b.state.breaker.would_admit(now) {
            return Some(b);
        }
    }
    None
}
