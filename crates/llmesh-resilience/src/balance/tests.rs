use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const MS: Duration = Duration::from_millis(1);

fn c(weight: u32) -> Candidate {
    Candidate {
        weight,
        outstanding: 0,
        ewma: Some(MS * 100),
        p90: Some(MS * 200),
        cost_per_mtok: 1.0,
        available: true,
    }
}

fn down(mut c: Candidate) -> Candidate {
    c.available = false;
    c
}

/// Picks `n` times with a seeded RNG and counts the picks per index.
fn histogram(strategy: &Strategy, cands: &[Candidate], n: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(7);
    let rr = AtomicU64::new(0);
    let mut counts = vec![0; cands.len()];
    for _ in 0..n {
        let i = pick_with_rng(strategy, cands, &rr, &mut rng).expect("some available");
        counts[i] += 1;
    }
    counts
}

const ALL: [Strategy; 5] = [
    Strategy::Weighted,
    Strategy::RoundRobin,
    Strategy::LeastRequest,
    Strategy::Latency { exploration: 0.05 },
    Strategy::Cost {
        latency_budget: Duration::from_secs(1),
    },
];

#[test]
fn none_when_nothing_available() {
    let rr = AtomicU64::new(0);
    for s in &ALL {
        assert_eq!(pick(s, &[], &rr, 1, 2), None, "{s:?}");
        assert_eq!(pick(s, &[down(c(1)), down(c(5))], &rr, 1, 2), None, "{s:?}");
    }
}

#[test]
fn unavailable_never_chosen() {
    let cands = [down(c(100)), c(1), down(c(100)), c(1)];
    for s in &ALL {
        let h = histogram(s, &cands, 2000);
        assert_eq!((h[0], h[2]), (0, 0), "{s:?}: {h:?}");
        assert_eq!(h[1] + h[3], 2000);
    }
}

#[test]
fn weighted_honours_weights() {
    let h = histogram(&Strategy::Weighted, &[c(1), c(3), c(0), c(6)], 10_000);
    assert_eq!(h[2], 0, "weight 0 is never picked when others have weight");
    for (got, share) in [(h[0], 0.1), (h[1], 0.3), (h[3], 0.6)] {
        let expected = share * 10_000.0;
        assert!((got as f64 - expected).abs() < 0.05 * 10_000.0, "{h:?}");
    }
}

#[test]
fn weighted_extreme_rolls_and_all_zero_weights() {
    let rr = AtomicU64::new(0);
    let cands = [c(1), c(1)];
    assert_eq!(pick(&Strategy::Weighted, &cands, &rr, 0, 0), Some(0));
    assert_eq!(pick(&Strategy::Weighted, &cands, &rr, u64::MAX, 0), Some(1));
    let h = histogram(&Strategy::Weighted, &[c(0), c(0)], 1000);
    assert!(h[0] > 400 && h[1] > 400, "{h:?}");
}

#[test]
fn round_robin_cycles_and_skips_unavailable() {
    let rr = AtomicU64::new(0);
    let cands = [c(1), down(c(1)), c(1), c(1)];
    let picks: Vec<_> = (0..8)
        .map(|_| pick(&Strategy::RoundRobin, &cands, &rr, 0, 0).unwrap())
        .collect();
    // Index 1's turn goes to index 2.
    assert_eq!(picks, vec![0, 2, 2, 3, 0, 2, 2, 3]);
    // Counter wrap-around is harmless.
    let rr = AtomicU64::new(u64::MAX);
    assert!(pick(&Strategy::RoundRobin, &cands, &rr, 0, 0).is_some());
    assert!(pick(&Strategy::RoundRobin, &cands, &rr, 0, 0).is_some());
}

#[test]
fn least_request_prefers_fewer_outstanding() {
    let mut busy = c(1);
    busy.outstanding = 10;
    let cands = [busy, c(1)];
    let rr = AtomicU64::new(0);
    // With two candidates both are always drawn: the idle one wins.
    for (r1, r2) in [(0, 0), (u64::MAX, u64::MAX), (1 << 63, 5)] {
        assert_eq!(pick(&Strategy::LeastRequest, &cands, &rr, r1, r2), Some(1));
    }
    // Tie on outstanding: the higher weight wins.
    assert_eq!(
        pick(&Strategy::LeastRequest, &[c(1), c(2)], &rr, 0, 0),
        Some(1)
    );
    assert_eq!(
        pick(&Strategy::LeastRequest, &[c(2), c(1)], &rr, 0, 0),
        Some(0)
    );
    // A single available one is picked.
    assert_eq!(
        pick(&Strategy::LeastRequest, &[down(busy), busy], &rr, 9, 9),
        Some(1)
    );
}

#[test]
fn least_request_spreads_and_never_picks_the_worst_of_three() {
    let mut cands = [c(1), c(1), c(1)];
    cands[0].outstanding = 5;
    cands[1].outstanding = 1;
    cands[2].outstanding = 3;
    let h = histogram(&Strategy::LeastRequest, &cands, 9000);
    // P2C: the busiest loses every pair it is in; the idlest wins both of
    // its pairs (2/3 of picks), the middle one 1/3.
    assert_eq!(h[0], 0, "{h:?}");
    assert!((h[1] as f64 - 6000.0).abs() < 300.0, "{h:?}");
}

#[test]
fn latency_picks_lowest_ewma_and_explores() {
    let mut cands = [c(1), c(1), c(1), c(1)];
    for (i, ms) in [300u32, 100, 200, 400].into_iter().enumerate() {
        cands[i].ewma = Some(MS * ms);
    }
    let rr = AtomicU64::new(0);
    assert_eq!(
        pick(
            &Strategy::Latency { exploration: 0.0 },
            &cands,
            &rr,
            1,
            u64::MAX
        ),
        Some(1)
    );
    let h = histogram(&Strategy::Latency { exploration: 0.2 }, &cands, 10_000);
    // 80 % exploit index 1, 20 % spread uniformly (5 % each).
    assert!((h[1] as f64 - 8500.0).abs() < 200.0, "{h:?}");
    for i in [0, 2, 3] {
        assert!((h[i] as f64 - 500.0).abs() < 120.0, "{h:?}");
    }
    let always = histogram(&Strategy::Latency { exploration: 1.0 }, &cands, 4000);
    assert!(always.iter().all(|&n| n > 800), "{always:?}");
}

#[test]
fn latency_probes_unknown_first_but_not_in_bursts() {
    let mut cands = [c(1), c(1), c(1)];
    cands[2].ewma = None;
    let rr = AtomicU64::new(0);
    let s = Strategy::Latency { exploration: 0.0 };
    assert_eq!(pick(&s, &cands, &rr, 0, u64::MAX), Some(2));
    assert_eq!(pick(&s, &cands, &rr, u64::MAX, 0), Some(2));
    // Once a probe is in flight, back to the measured ones.
    cands[2].outstanding = 1;
    assert_eq!(pick(&s, &cands, &rr, 0, u64::MAX), Some(0));
    // Nothing measured at all: the least loaded.
    let mut fresh = [c(1), c(1)];
    for (i, f) in fresh.iter_mut().enumerate() {
        f.ewma = None;
        f.outstanding = 2 - i as u64;
    }
    assert_eq!(pick(&s, &fresh, &rr, 0, u64::MAX), Some(1));
    // Ties on ewma go to fewer outstanding.
    let mut tie = [c(1), c(1)];
    tie[0].outstanding = 4;
    assert_eq!(pick(&s, &tie, &rr, 0, u64::MAX), Some(1));
}

#[test]
fn cost_cheapest_within_budget() {
    let budget = Duration::from_secs(1);
    let s = Strategy::Cost {
        latency_budget: budget,
    };
    let rr = AtomicU64::new(0);
    let mut cands = [c(1), c(1), c(1)];
    cands[0].cost_per_mtok = 10.0;
    cands[1].cost_per_mtok = 0.5;
    cands[1].p90 = Some(MS * 1500); // cheapest but too slow
    cands[2].cost_per_mtok = 2.0;
    assert_eq!(pick(&s, &cands, &rr, 0, 0), Some(2));
    // Exactly at budget qualifies.
    cands[1].p90 = Some(budget);
    assert_eq!(pick(&s, &cands, &rr, 0, 0), Some(1));
    // Unknown p90 qualifies, to learn it.
    cands[1].p90 = None;
    assert_eq!(pick(&s, &cands, &rr, 0, 0), Some(1));
    // Unavailable cheapest is skipped.
    cands[2] = down(cands[2]);
    cands[1] = down(cands[1]);
    assert_eq!(pick(&s, &cands, &rr, 0, 0), Some(0));
}

#[test]
fn cost_falls_back_to_fastest_when_all_over_budget() {
    let s = Strategy::Cost {
        latency_budget: MS * 100,
    };
    let rr = AtomicU64::new(0);
    let mut cands = [c(1), c(1), c(1)];
    cands[0].p90 = Some(MS * 900);
    cands[0].cost_per_mtok = 0.1;
    cands[1].p90 = Some(MS * 300);
    cands[1].cost_per_mtok = 50.0;
    cands[2].p90 = Some(MS * 600);
    assert_eq!(pick(&s, &cands, &rr, 0, 0), Some(1));
}

#[test]
fn cost_ties_and_nan() {
    let s = Strategy::Cost {
        latency_budget: Duration::from_secs(1),
    };
    let rr = AtomicU64::new(0);
    let mut cands = [c(1), c(1), c(1)];
    cands[0].p90 = None; // same cost, unknown: the known one is preferred
    cands[1].outstanding = 3;
    cands[2].outstanding = 1;
    assert_eq!(pick(&s, &cands, &rr, 0, 0), Some(2));
    let mut nan = [c(1), c(1)];
    nan[0].cost_per_mtok = f64::NAN;
    nan[1].cost_per_mtok = 1e9;
    assert_eq!(pick(&s, &nan, &rr, 0, 0), Some(1));
    nan[0].cost_per_mtok = -f64::NAN;
    assert_eq!(pick(&s, &nan, &rr, 0, 0), Some(1));
}
