//! Backend selection: pure functions over a slice of [`Candidate`]s.
//!
//! [`pick`] never allocates and never mutates anything but the round-robin
//! counter; randomness comes in as two `u64` rolls so that callers (and
//! tests) decide where it comes from.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the balancer knows about one backend at the time of a pick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Relative share under [`Strategy::Weighted`]; tie-breaker under
    /// [`Strategy::LeastRequest`]. Ignored by the other strategies.
    pub weight: u32,
    /// Requests in flight to this backend now.
    pub outstanding: u64,
    /// Moving average of its latency (time to first token), `None` before
    /// the first sample.
    pub ewma: Option<Duration>,
    /// Recent 90th-percentile latency, `None` before the first sample.
    pub p90: Option<Duration>,
    /// Price estimate (e.g. USD per million tokens); NaN sorts as the most
    /// expensive.
    pub cost_per_mtok: f64,
    /// Whether it may be sent a request (breaker not open). Unavailable
    /// candidates are never picked, by any strategy.
    pub available: bool,
}

/// How [`pick`] chooses among the available candidates.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Random, in proportion to `weight`: a candidate of weight 0 is chosen
    /// only if every available candidate has weight 0 (then uniformly).
    /// Uses `roll`.
    Weighted,
    /// The next available candidate after the previous pick, in slice order
    /// (weights ignored; an unavailable candidate's turn goes to the next
    /// one). Uses the shared counter, not the rolls.
    RoundRobin,
    /// Power of two choices: two distinct available candidates drawn
    /// uniformly (`roll`, `roll2`), the one with fewer `outstanding` wins,
    /// then the higher `weight`, then the first drawn. With one available
    /// candidate, that one.
    LeastRequest,
    /// Lowest latency, with exploration:
    /// 1. an available candidate without an `ewma` yet and with nothing in
    ///    flight is picked first (uniformly among those, by `roll`), so new
    ///    and recovered backends get measured; one already being probed is
    ///    not sent a whole burst before its first sample lands;
    /// 2. otherwise, with probability `exploration` (0..=1, decided by
    ///    `roll2`), a uniformly random available candidate (by `roll`), so a
    ///    backend that got faster is noticed;
    /// 3. otherwise the lowest `ewma`; ties go to fewer `outstanding`, then
    ///    to the first in the slice. Candidates without an `ewma` come after
    ///    every measured one (so when none is measured yet: fewest
    ///    `outstanding`).
    Latency {
        /// Share of picks that ignore latency, e.g. 0.05.
        exploration: f64,
    },
    /// Cheapest within a latency budget:
    /// 1. the cheapest available candidate that qualifies, i.e. whose `p90`
    ///    is `<= latency_budget`, or unknown (so its latency gets learned);
    ///    on equal cost a known `p90` beats an unknown one, then fewer
    ///    `outstanding`, then the first in the slice;
    /// 2. if none qualifies, the available candidate with the lowest `p90`
    ///    (ties: cheaper, then first).
    ///
    /// Uses no roll.
    Cost {
        /// Largest acceptable p90 latency.
        latency_budget: Duration,
    },
}

/// Chooses a candidate by `strategy` and returns its index in `cands`, or
/// `None` when none is available. `rr_counter` is the round-robin position
/// shared by the callers of one backend set; `roll` and `roll2` are
/// independent uniform random numbers (see each [`Strategy`] for which it
/// uses).
pub fn pick(
    strategy: &Strategy,
    cands: &[Candidate],
    rr_counter: &AtomicU64,
    roll: u64,
    roll2: u64,
) -> Option<usize> {
    match strategy {
        Strategy::Weighted => weighted(cands, roll),
        Strategy::RoundRobin => round_robin(cands, rr_counter),
        Strategy::LeastRequest => least_request(cands, roll, roll2),
        Strategy::Latency { exploration } => latency(cands, *exploration, roll, roll2),
        Strategy::Cost { latency_budget } => cost(cands, *latency_budget),
    }
}

/// [`pick`] with both rolls drawn from `rng`.
pub fn pick_with_rng(
    strategy: &Strategy,
    cands: &[Candidate],
    rr_counter: &AtomicU64,
    rng: &mut impl rand::Rng,
) -> Option<usize> {
    let (roll, roll2) = (rng.random(), rng.random());
    pick(strategy, cands, rr_counter, roll, roll2)
}

/// Maps a uniform `roll` onto `0..n` (multiply-shift: unbiased enough and
/// cheaper than a modulo). `n` must be > 0.
fn below(roll: u64, n: u64) -> u64 {
    ((u128::from(roll) * u128::from(n)) >> 64) as u64
}

/// Indices of the available candidates, lazily (no allocation).
fn available(cands: &[Candidate]) -> impl Iterator<Item = (usize, &Candidate)> + Clone {
    cands.iter().enumerate().filter(|(_, c)| c.available)
}

/// The `roll`-chosen one of the candidates matching `keep`.
fn uniform(cands: &[Candidate], roll: u64, keep: impl Fn(&Candidate) -> bool) -> Option<usize> {
    let matching = || available(cands).filter(|(_, c)| keep(c));
    let n = matching().count() as u64;
    if n == 0 {
        return None;
    }
    matching().nth(below(roll, n) as usize).map(|(i, _)| i)
}

fn weighted(cands: &[Candidate], roll: u64) -> Option<usize> {
    let total: u64 = available(cands).map(|(_, c)| u64::from(c.weight)).sum();
    if total == 0 {
        return uniform(cands, roll, |_| true);
    }
    let mut target = below(roll, total);
    for (i, c) in available(cands) {
        let w = u64::from(c.weight);
        if target < w {
            return Some(i);
        }
        target -= w;
    }
    None
}

fn round_robin(cands: &[Candidate], rr_counter: &AtomicU64) -> Option<usize> {
    let n = cands.len() as u64;
    if n == 0 {
        return None;
    }
    let start = rr_counter.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|step| (start.wrapping_add(step) % n) as usize)
        .find(|&i| cands.get(i).is_some_and(|c| c.available))
}

fn least_request(cands: &[Candidate], roll: u64, roll2: u64) -> Option<usize> {
    let n = available(cands).count() as u64;
    match n {
        0 => return None,
        1 => return available(cands).next().map(|(i, _)| i),
        _ => {}
    }
    // Second draw among the other n - 1, shifted past the first so the two
    // are distinct and each pair is equally likely.
    let a = below(roll, n);
    let mut b = below(roll2, n - 1);
    if b >= a {
        b += 1;
    }
    let (ia, ca) = available(cands).nth(a as usize)?;
    let (ib, cb) = available(cands).nth(b as usize)?;
    let b_wins = cb
        .outstanding
        .cmp(&ca.outstanding)
        .then(ca.weight.cmp(&cb.weight))
        .is_lt();
    Some(if b_wins { ib } else { ia })
}

fn latency(cands: &[Candidate], exploration: f64, roll: u64, roll2: u64) -> Option<usize> {
    if let Some(i) = uniform(cands, roll, |c| c.ewma.is_none() && c.outstanding == 0) {
        return Some(i);
    }
    // roll2 / 2^64 is uniform in [0, 1); the float conversion can round
    // u64::MAX up to 2^64, hence the explicit `>= 1`.
    if exploration >= 1.0 || (roll2 as f64) < exploration * 2f64.powi(64) {
        return uniform(cands, roll, |_| true);
    }
    // Sort key: measured first, then by latency, then by load.
    let key = |c: &Candidate| (c.ewma.is_none(), c.ewma, c.outstanding);
    available(cands)
        .min_by(|(_, a), (_, b)| key(a).cmp(&key(b)))
        .map(|(i, _)| i)
}

fn cost(cands: &[Candidate], budget: Duration) -> Option<usize> {
    let qualifies = |c: &Candidate| c.p90.is_none_or(|p| p <= budget);
    let cheapest = available(cands)
        .filter(|(_, c)| qualifies(c))
        .min_by(|(_, a), (_, b)| {
            by_cost(a, b)
                // `None < Some`: reversed, so a known p90 comes first.
                .then(b.p90.is_some().cmp(&a.p90.is_some()))
                .then(a.outstanding.cmp(&b.outstanding))
        });
    if let Some((i, _)) = cheapest {
        return Some(i);
    }
    // Every available one is known to be over budget: least slow wins.
    available(cands)
        .min_by(|(_, a), (_, b)| a.p90.cmp(&b.p90).then(by_cost(a, b)))
        .map(|(i, _)| i)
}

/// Cost order with NaN last (`total_cmp` alone would put -NaN first).
fn by_cost(a: &Candidate, b: &Candidate) -> CmpOrdering {
    let key = |c: &Candidate| {
        if c.cost_per_mtok.is_nan() {
            f64::INFINITY
        } else {
            c.cost_per_mtok
        }
    };
    key(a)
        .total_cmp(&key(b))
        .then(a.cost_per_mtok.is_nan().cmp(&b.cost_per_mtok.is_nan()))
}

#[cfg(test)]
mod tests;
