//! Slow-outlier detection over the backends of one set, run periodically
//! (not per request): a backend much slower than its peers is ejected for a
//! while (see `CircuitBreaker::force_open`), like Envoy's outlier detection
//! but on latency rather than on errors, which the breaker already covers.

use std::time::Duration;

/// Indices (ascending) of the backends whose EWMA exceeds `factor` times the
/// median EWMA of the *other* backends that have one.
///
/// Rules:
/// - a backend without an EWMA (`None`) is never flagged and is not a peer;
/// - a backend is judged only if at least `min_peers` (and at least 1) other
///   backends have an EWMA, so a set of two cannot eject half of itself
///   unless the caller allows it;
/// - with an even number of peers, the median is the mean of the two middle
///   values; a zero median flags nothing (no meaningful "times slower");
/// - `factor` should be above 1; NaN flags nothing.
///
/// The caller should still cap how many backends it ejects at once (Envoy's
/// `max_ejection_percent`). Allocates one sorted copy of the EWMAs.
pub fn slow_outliers(ewmas: &[Option<Duration>], factor: f64, min_peers: usize) -> Vec<usize> {
    let mut sorted: Vec<u128> = ewmas.iter().flatten().map(Duration::as_nanos).collect();
    sorted.sort_unstable();
    let peers = sorted.len().saturating_sub(1);
    if peers < min_peers.max(1) {
        return Vec::new();
    }
    ewmas
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.map(|d| (i, d.as_nanos())))
        .filter(|&(_, v)| {
            // The others are `sorted` minus one copy of `v`; removing any of
            // several equal copies leaves the same multiset.
            let pos = sorted.partition_point(|&x| x < v);
            let other = |k: usize| sorted.get(if k < pos { k } else { k + 1 }).copied();
            let median = if peers % 2 == 1 {
                other(peers / 2).map(|m| m as f64)
            } else {
                match (other(peers / 2 - 1), other(peers / 2)) {
                    (Some(a), Some(b)) => Some((a as f64 + b as f64) / 2.0),
                    _ => None,
                }
            };
            median.is_some_and(|m| m > 0.0 && v as f64 > factor * m)
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[Option<u64>]) -> Vec<Option<Duration>> {
        v.iter().map(|x| x.map(Duration::from_millis)).collect()
    }

    #[test]
    fn flags_the_slow_one() {
        let e = ms(&[Some(100), Some(120), Some(500), Some(90)]);
        assert_eq!(slow_outliers(&e, 3.0, 2), vec![2]);
        // Median of the others is 100 ms: 300 is not above 3x, 301 is.
        let e = ms(&[Some(100), Some(300), Some(100)]);
        assert_eq!(slow_outliers(&e, 3.0, 2), Vec::<usize>::new());
        let e = ms(&[Some(100), Some(301), Some(100)]);
        assert_eq!(slow_outliers(&e, 3.0, 2), vec![1]);
    }

    #[test]
    fn needs_enough_peers_with_data() {
        let e = ms(&[Some(100), None, Some(900), None]);
        assert!(slow_outliers(&e, 3.0, 2).is_empty());
        assert_eq!(slow_outliers(&e, 3.0, 1), vec![2]);
        assert!(slow_outliers(&ms(&[Some(1)]), 3.0, 0).is_empty());
        assert!(slow_outliers(&[], 3.0, 0).is_empty());
    }

    #[test]
    fn even_peer_count_uses_mean_of_middle() {
        // For index 4 the others are 100, 100, 200, 200: median 150.
        let e = ms(&[Some(100), Some(100), Some(200), Some(200), Some(451)]);
        assert_eq!(slow_outliers(&e, 3.0, 3), vec![4]);
        let e = ms(&[Some(100), Some(100), Some(200), Some(200), Some(450)]);
        assert!(slow_outliers(&e, 3.0, 3).is_empty());
    }

    #[test]
    fn several_outliers_and_duplicates() {
        let e = ms(&[Some(10), Some(10), Some(10), Some(10), Some(50), Some(50)]);
        assert_eq!(slow_outliers(&e, 3.0, 2), vec![4, 5]);
        let same = ms(&[Some(10); 5]);
        assert!(slow_outliers(&same, 1.0, 2).is_empty());
    }

    #[test]
    fn zero_median_and_nan_factor_flag_nothing() {
        let e = ms(&[Some(0), Some(0), Some(5)]);
        assert!(slow_outliers(&e, 3.0, 2).is_empty());
        let e = ms(&[Some(1), Some(1), Some(500)]);
        assert!(slow_outliers(&e, f64::NAN, 2).is_empty());
    }
}
