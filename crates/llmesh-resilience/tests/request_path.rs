//! The crate used the way the proxy's request path uses it: a set of
//! backends, a shared retry budget, breakers and balancing, on a simulated
//! clock (explicit `Instant`s) and a seeded RNG.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmesh_resilience::{
    pick, pick_with_rng, slow_outliers, BackendState, Backoff, BreakerConfig, BreakerState,
    RetryBudget, Strategy,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn backends(n: usize) -> Vec<Arc<BackendState>> {
    let cfg = BreakerConfig {
        open_for: S * 10,
        ..BreakerConfig::default()
    };
    (0..n)
        .map(|_| Arc::new(BackendState::new(cfg.clone(), S * 5)))
        .collect()
}

/// One request: deposit, pick, acquire, call `outcome`, retry on failure
/// while the budget allows. Returns the backends tried, in order.
fn send(
    set: &[Arc<BackendState>],
    budget: &RetryBudget,
    rng: &mut StdRng,
    now: Instant,
    outcome: impl Fn(usize) -> Result<Duration, ()>,
) -> Vec<usize> {
    let rr = AtomicU64::new(0);
    let strategy = Strategy::Latency { exploration: 0.05 };
    let mut tried = Vec::new();
    budget.deposit(now);
    for attempt in 0..3 {
        if attempt > 0 && !budget.try_withdraw(now) {
            break;
        }
        let cands: Vec<_> = set.iter().map(|b| b.candidate(1, 1.0, now)).collect();
        let Some(i) = pick_with_rng(&strategy, &cands, &rr, rng) else {
            break;
        };
        if !set[i].breaker.try_acquire(now) {
            continue;
        }
        let _guard = set[i].start();
        tried.push(i);
        match outcome(i) {
            Ok(latency) => {
                set[i].breaker.on_success(now);
                set[i].ttft.observe(latency, now);
                set[i].latency.observe(latency);
                return tried;
            }
            Err(()) => set[i].breaker.on_failure(now),
        }
    }
    tried
}

#[test]
fn failing_backend_is_ejected_then_probed_back() {
    let t0 = Instant::now();
    let set = backends(3);
    let budget = RetryBudget::new(0.2, 10, S * 10);
    let mut rng = StdRng::seed_from_u64(1);
    let broken = |i: usize| if i == 2 { Err(()) } else { Ok(MS * 100) };
    for k in 0..200u32 {
        send(&set, &budget, &mut rng, t0 + MS * k, broken);
    }
    assert_eq!(set[2].breaker.state(t0 + S), BreakerState::Open);
    assert_eq!(set[2].breaker.trips(), 1);
    // While open it gets nothing.
    for k in 0..100u32 {
        let tried = send(&set, &budget, &mut rng, t0 + S + MS * k, broken);
        assert!(!tried.contains(&2));
    }
    // Open time over: it is probed (no EWMA yet, so first), recovers, closes.
    let t1 = t0 + S * 11;
    assert_eq!(set[2].breaker.state(t1), BreakerState::HalfOpen);
    let tried = send(&set, &budget, &mut rng, t1, |_| Ok(MS * 50));
    assert_eq!(tried, vec![2]);
    assert_eq!(set[2].breaker.state(t1), BreakerState::Closed);
    // Now the fastest: the latency balancer prefers it.
    let cands: Vec<_> = set.iter().map(|b| b.candidate(1, 1.0, t1)).collect();
    let exploit = Strategy::Latency { exploration: 0.0 };
    assert_eq!(pick(&exploit, &cands, &AtomicU64::new(0), 0, 0), Some(2));
    // Every guard was dropped.
    assert!(cands.iter().all(|c| c.outstanding == 0));
}

#[test]
fn retry_storm_is_capped_by_budget() {
    let t0 = Instant::now();
    // Breakers off: only the budget limits retries.
    let cfg = BreakerConfig {
        consecutive_failures: 0,
        failure_rate: 0.0,
        ..BreakerConfig::default()
    };
    let set: Vec<_> = (0..2)
        .map(|_| Arc::new(BackendState::new(cfg.clone(), S)))
        .collect();
    let budget = RetryBudget::new(0.2, 1, S * 10);
    let mut rng = StdRng::seed_from_u64(2);
    let mut attempts = 0;
    for k in 0..1000u32 {
        attempts += send(&set, &budget, &mut rng, t0 + MS * 9 * k, |_| Err(())).len();
    }
    // 1000 originals in 9 s: retries at most 20 % of them plus 1/s * 10 s.
    let retries = attempts - 1000;
    assert_eq!(retries, 200 + 10);
}

#[test]
fn slow_backend_is_ejected_by_outlier_detection() {
    let t0 = Instant::now();
    let set = backends(4);
    for (i, b) in set.iter().enumerate() {
        let ms = if i == 1 { 2000 } else { 100 + 10 * i as u32 };
        b.ttft.observe(MS * ms, t0);
    }
    let ewmas: Vec<_> = set.iter().map(|b| b.ttft.get()).collect();
    for i in slow_outliers(&ewmas, 3.0, 2) {
        set[i].breaker.force_open(t0, S * 30);
    }
    assert_eq!(set[1].breaker.state(t0 + S), BreakerState::Open);
    assert!(!set[1].candidate(1, 1.0, t0 + S).available);
    assert!(set[0].candidate(1, 1.0, t0 + S).available);
}

#[test]
fn backoff_schedule_under_budget() {
    let b = Backoff {
        base: MS * 250,
        max: S * 8,
    };
    let mut rng = StdRng::seed_from_u64(3);
    let mut total = Duration::ZERO;
    for retry in 0..10 {
        let d = b.delay(retry, rng.random());
        assert!(d <= b.ceiling(retry));
        total += d;
    }
    assert!(total <= S * (8 * 10));
}
