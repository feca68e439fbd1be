//! Property tests of the invariants the proxy relies on.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use llmesh_resilience::{
    parse_retry_after, pick, slow_outliers, Backoff, Candidate, RetryBudget, Strategy,
};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

fn candidate() -> impl proptest::strategy::Strategy<Value = Candidate> {
    (
        0u32..5,
        0u64..4,
        proptest::option::of(0u64..500),
        proptest::option::of(0u64..500),
        0.0f64..10.0,
        any::<bool>(),
    )
        .prop_map(
            |(weight, outstanding, ewma, p90, cost_per_mtok, available)| Candidate {
                weight,
                outstanding,
                ewma: ewma.map(Duration::from_millis),
                p90: p90.map(Duration::from_millis),
                cost_per_mtok,
                available,
            },
        )
}

fn strategies() -> [Strategy; 5] {
    [
        Strategy::Weighted,
        Strategy::RoundRobin,
        Strategy::LeastRequest,
        Strategy::Latency { exploration: 0.1 },
        Strategy::Cost {
            latency_budget: Duration::from_millis(250),
        },
    ]
}

/// IMF-fixdate of a Unix time (inverse of Hinnant's days_from_civil).
fn imf_fixdate(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

proptest! {
    #[test]
    fn backoff_delay_within_ceiling(base in 0u64..10_000_000, max in 0u64..10_000_000, retry: u32, roll: u64) {
        let b = Backoff { base: Duration::from_micros(base), max: Duration::from_micros(max) };
        prop_assert!(b.delay(retry, roll) <= b.ceiling(retry));
        prop_assert!(b.ceiling(retry) <= b.max);
        prop_assert!(b.ceiling(retry.saturating_add(1)) >= b.ceiling(retry));
    }

    #[test]
    fn retry_after_never_panics(s in "\\PC{0,40}") {
        let _ = parse_retry_after(&s, SystemTime::now());
    }

    #[test]
    fn retry_after_date_round_trips(at in 0u64..253_402_300_799, ahead in 0u64..100_000) {
        let now = UNIX_EPOCH + Duration::from_secs(at);
        let v = imf_fixdate(at + ahead);
        prop_assert_eq!(parse_retry_after(&v, now), Some(Duration::from_secs(ahead)), "{}", v);
        let past = imf_fixdate(at);
        prop_assert_eq!(parse_retry_after(&past, now + Duration::from_secs(ahead)), Some(Duration::ZERO));
    }

    #[test]
    fn pick_only_available(cands in proptest::collection::vec(candidate(), 0..8), roll: u64, roll2: u64, rr: u64) {
        let any_available = cands.iter().any(|c| c.available);
        for s in strategies() {
            let got = pick(&s, &cands, &AtomicU64::new(rr), roll, roll2);
            prop_assert_eq!(got.is_some(), any_available);
            if let Some(i) = got {
                prop_assert!(cands[i].available);
            }
        }
    }

    #[test]
    fn budget_never_exceeds_window_credit(
        events in proptest::collection::vec((0u64..1500, any::<bool>()), 1..400),
        ratio_pct in 0u32..100,
        floor in 0u32..3,
    ) {
        // Sliding check with the same per-second buckets as the budget: at
        // each success, withdrawals in the last 10 buckets (this one
        // included) fit in ratio * deposits + floor * 10.
        let t0 = Instant::now();
        let ratio = f64::from(ratio_pct) / 100.0;
        let b = RetryBudget::new(ratio, floor, Duration::from_secs(10));
        // The ring's buckets start at its first call: make that t0.
        let _ = b.remaining(t0);
        let mut log: Vec<(u64, bool)> = Vec::new(); // (second, is_deposit)
        let mut at = Duration::ZERO;
        for (step_ms, deposit) in events {
            at += Duration::from_millis(step_ms);
            let now = t0 + at;
            let sec = at.as_secs();
            if deposit {
                b.deposit(now);
                log.push((sec, true));
            } else if b.try_withdraw(now) {
                log.push((sec, false));
                let live = log.iter().filter(|(s, _)| s + 10 > sec);
                let deposits = live.clone().filter(|(_, d)| *d).count() as f64;
                let withdrawals = live.filter(|(_, d)| !*d).count() as f64;
                prop_assert!(withdrawals <= ratio * deposits + f64::from(floor) * 10.0 + 1e-9);
            }
        }
    }

    #[test]
    fn outliers_match_naive(vals in proptest::collection::vec(proptest::option::of(1u64..1000), 0..9), min_peers in 0usize..4) {
        let ewmas: Vec<_> = vals.iter().map(|v| v.map(Duration::from_millis)).collect();
        let got = slow_outliers(&ewmas, 2.0, min_peers);
        let known = vals.iter().flatten().count();
        let expected: Vec<usize> = vals
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .filter(|&(i, v)| {
                let mut others: Vec<f64> = vals
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .filter_map(|(_, o)| o.map(|o| o as f64))
                    .collect();
                if known - 1 < min_peers.max(1) {
                    return false;
                }
                others.sort_by(f64::total_cmp);
                let n = others.len();
                let median = if n % 2 == 1 { others[n / 2] } else { (others[n / 2 - 1] + others[n / 2]) / 2.0 };
                v as f64 > 2.0 * median
            })
            .map(|(i, _)| i)
            .collect();
        prop_assert_eq!(got, expected);
    }
}
