use super::*;

const S: Duration = Duration::from_secs(1);

fn cfg() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        failure_rate: 0.0,
        min_requests: 10,
        window: S * 10,
        open_for: S * 10,
        max_open_for: S * 35,
        half_open_probes: 1,
    }
}

fn fail_n(b: &CircuitBreaker, now: Instant, n: u32) {
    for _ in 0..n {
        assert!(b.try_acquire(now));
        b.on_failure(now);
    }
}

#[test]
fn state_labels() {
    assert_eq!(BreakerState::Closed.as_str(), "closed");
    assert_eq!(BreakerState::Open.as_str(), "open");
    assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
    assert_eq!(BreakerState::Closed.as_gauge(), 0);
    assert_eq!(BreakerState::Open.as_gauge(), 1);
    assert_eq!(BreakerState::HalfOpen.as_gauge(), 2);
}

#[test]
fn trips_on_consecutive_failures() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(cfg());
    fail_n(&b, t0, 2);
    b.on_success(t0); // resets the run
    fail_n(&b, t0, 2);
    assert_eq!(b.state(t0), BreakerState::Closed);
    fail_n(&b, t0, 1);
    assert_eq!(b.state(t0), BreakerState::Open);
    assert_eq!(b.trips(), 1);
    assert!(!b.try_acquire(t0 + S * 9));
    assert!(!b.would_admit(t0 + S * 9));
    assert_eq!(b.open_until(), Some(t0 + S * 10));
}

#[test]
fn trips_on_failure_rate_only_above_min_requests() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        failure_rate: 0.5,
        ..cfg()
    });
    // 4 failures of 8: a 50 % rate but below min_requests (10).
    for _ in 0..4 {
        b.on_failure(t0);
        b.on_success(t0);
    }
    assert_eq!(b.state(t0), BreakerState::Closed);
    b.on_success(t0);
    b.on_failure(t0); // 5 of 10
    assert_eq!(b.state(t0), BreakerState::Open);
}

#[test]
fn failure_rate_window_slides() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        failure_rate: 0.5,
        ..cfg()
    });
    for _ in 0..9 {
        b.on_failure(t0);
    }
    // The 9 failures have left the 10 s window: 1 of 1 is below min_requests.
    b.on_failure(t0 + S * 11);
    assert_eq!(b.state(t0 + S * 11), BreakerState::Closed);
}

#[test]
fn consecutive_off_with_zero() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        ..cfg()
    });
    fail_n(&b, t0, 1000);
    assert_eq!(b.state(t0), BreakerState::Closed);
    assert_eq!(b.trips(), 0);
}

#[test]
fn half_open_admits_only_n_probes_and_closes_after_they_succeed() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(BreakerConfig {
        half_open_probes: 2,
        ..cfg()
    });
    fail_n(&b, t0, 3);
    let t1 = t0 + S * 10;
    assert_eq!(b.state(t1), BreakerState::HalfOpen);
    assert!(b.would_admit(t1));
    assert!(b.try_acquire(t1));
    assert!(b.try_acquire(t1));
    assert!(!b.try_acquire(t1));
    assert!(!b.would_admit(t1));
    b.on_success(t1);
    assert_eq!(b.state(t1), BreakerState::HalfOpen);
    assert!(b.try_acquire(t1), "a finished probe frees its slot");
    b.on_success(t1);
    assert_eq!(b.state(t1), BreakerState::Closed);
    assert!(b.try_acquire(t1));
    // The window was cleared on close: it takes a full run to trip again.
    fail_n(&b, t1, 2);
    assert_eq!(b.state(t1), BreakerState::Closed);
}

#[test]
fn probe_failure_reopens_with_doubled_time_capped() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(cfg());
    fail_n(&b, t0, 3);
    assert_eq!(b.open_until(), Some(t0 + S * 10));
    // 10 s, then 20 s, then capped at 35 s (not 40), and it stays capped.
    for expected in [20, 35, 35, 35] {
        let now = b.open_until().unwrap();
        assert!(b.try_acquire(now));
        b.on_failure(now);
        assert_eq!(b.state(now), BreakerState::Open);
        assert_eq!(b.open_until(), Some(now + S * expected));
    }
    assert_eq!(b.trips(), 5);
    // Recovery: closes, and the next trip soon after still remembers the
    // level (one doubling forgiven per open_for spent healthy).
    let now = b.open_until().unwrap();
    assert!(b.try_acquire(now));
    b.on_success(now);
    assert_eq!(b.state(now), BreakerState::Closed);
    let later = now + S * 5;
    fail_n(&b, later, 3);
    assert_eq!(b.open_until(), Some(later + S * 35));
}

#[test]
fn long_healthy_period_resets_open_time() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(cfg());
    fail_n(&b, t0, 3);
    let t1 = t0 + S * 10;
    assert!(b.try_acquire(t1));
    b.on_failure(t1); // level 2 now: next would be 40 s, capped 35
    let t2 = t1 + S * 20;
    assert!(b.try_acquire(t2));
    b.on_success(t2);
    let t3 = t2 + S * 3600;
    fail_n(&b, t3, 3);
    assert_eq!(b.open_until(), Some(t3 + S * 10));
}

#[test]
fn late_outcomes_while_open_are_ignored() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(cfg());
    fail_n(&b, t0, 3);
    b.on_success(t0 + S);
    b.on_failure(t0 + S);
    assert_eq!(b.open_until(), Some(t0 + S * 10));
    assert_eq!(b.trips(), 1);
}

#[test]
fn force_open_ejects_for_given_time() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(cfg());
    b.force_open(t0, S * 7);
    assert_eq!(b.state(t0 + S * 6), BreakerState::Open);
    assert_eq!(b.state(t0 + S * 7), BreakerState::HalfOpen);
    assert_eq!(b.trips(), 1);
    assert!(b.try_acquire(t0 + S * 7));
    b.on_success(t0 + S * 7);
    assert_eq!(b.state(t0 + S * 7), BreakerState::Closed);
}

#[test]
fn zero_probes_means_one() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(BreakerConfig {
        half_open_probes: 0,
        ..cfg()
    });
    fail_n(&b, t0, 3);
    let t1 = t0 + S * 10;
    assert!(b.try_acquire(t1));
    assert!(!b.try_acquire(t1));
    b.on_success(t1);
    assert_eq!(b.state(t1), BreakerState::Closed);
}

#[test]
fn default_config_matches_docs() {
    let c = BreakerConfig::default();
    assert_eq!(c.consecutive_failures, 5);
    assert_eq!(c.failure_rate, 0.5);
    assert_eq!(c.min_requests, 20);
    assert_eq!(c.window, S * 30);
    assert_eq!(c.open_for, S * 30);
    assert_eq!(c.max_open_for, S * 300);
    assert_eq!(c.half_open_probes, 1);
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CircuitBreaker>();
}
