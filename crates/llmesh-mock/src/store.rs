//! In-memory object stores (responses, files, batches): bounded, oldest
//! first out, plus the small helpers their endpoints share (ids, list
//! pagination, timestamps).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock a store; a panic elsewhere must not take the mock down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Objects by id in insertion order, at most `cap` of them: inserting one
/// more forgets the oldest.
pub(crate) struct Store<T> {
    map: HashMap<String, T>,
    order: VecDeque<String>,
    cap: usize,
}

impl<T> Store<T> {
    pub fn new(cap: usize) -> Self {
        Store {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Insert (or replace) `id`; returns the evicted oldest entry, if any.
    pub fn insert(&mut self, id: String, v: T) -> Option<T> {
        if self.map.insert(id.clone(), v).is_some() {
            return None;
        }
        self.order.push_back(id);
        if self.map.len() <= self.cap {
            return None;
        }
        let old = self.order.pop_front()?;
        self.map.remove(&old)
    }

    pub fn get(&self, id: &str) -> Option<&T> {
        self.map.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.map.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<T> {
        let v = self.map.remove(id)?;
        self.order.retain(|x| x != id);
        Some(v)
    }

    /// Entries, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = (&str, &T)> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| self.map.get(id).map(|v| (id.as_str(), v)))
    }
}

/// One page of a list endpoint: the items after `after` (an id; from the
/// start when unset or unknown), at most `limit`, and whether more follow.
pub(crate) fn page<'a, T: 'a>(
    items: impl Iterator<Item = (&'a str, &'a T)>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<(&'a str, &'a T)>, bool) {
    let all: Vec<_> = items.collect();
    let start = after
        .and_then(|a| all.iter().position(|(id, _)| *id == a))
        .map_or(0, |i| i + 1);
    let rest = &all[start..];
    (
        rest.iter().take(limit).copied().collect(),
        rest.len() > limit,
    )
}

/// The `limit` query parameter of a list endpoint: `default` when unset,
/// clamped to 1..=`max`.
pub(crate) fn limit_param(query: Option<&str>, default: usize, max: usize) -> usize {
    crate::server::query_param(query, "limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

/// `secs` since the Unix epoch as RFC 3339 UTC, e.g.
/// `2025-01-01T00:00:00Z` (Anthropic's timestamps).
pub(crate) fn rfc3339(secs: u64) -> String {
    // Days to civil date (H. Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_bounded_oldest_out() {
        let mut s = Store::new(2);
        assert!(s.insert("a".into(), 1).is_none());
        assert!(s.insert("b".into(), 2).is_none());
        assert_eq!(s.insert("c".into(), 3), Some(1));
        assert!(s.get("a").is_none());
        assert_eq!(s.len(), 2);
        let ids: Vec<&str> = s.newest_first().map(|(k, _)| k).collect();
        assert_eq!(ids, ["c", "b"]);
        assert_eq!(s.remove("c"), Some(3));
        assert_eq!(s.insert("d".into(), 4), None);
        assert_eq!(s.len(), 2);
        // Replacing keeps one entry.
        assert_eq!(s.insert("d".into(), 5), None);
        assert_eq!(s.get("d"), Some(&5));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn pages() {
        let v = [("a", 1), ("b", 2), ("c", 3)];
        let it = || v.iter().map(|(k, x)| (*k, x));
        let (p, more) = page(it(), None, 2);
        assert_eq!(p.len(), 2);
        assert!(more);
        let (p, more) = page(it(), Some("a"), 5);
        assert_eq!(p.iter().map(|x| x.0).collect::<Vec<_>>(), ["b", "c"]);
        assert!(!more);
        let (p, more) = page(it(), Some("zz"), 1);
        assert_eq!(p[0].0, "a");
        assert!(more);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3_723), "2000-02-29T01:02:03Z");
    }
}
