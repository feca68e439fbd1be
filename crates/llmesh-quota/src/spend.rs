//! Spend: what a quota's shared counters hold in their current window,
//! read back from Redis for the controller (`status` of an `LLMQuota`,
//! threshold Events), plus the markers that make each threshold alert
//! fire once per period across controller restarts.
//!
//! Read-only over the sidecars' counters: every key is built by
//! [`counter_key`] from a [`PlanEntry`] like the ones the engine reserves,
//! so the two cannot disagree on a format.

use std::collections::HashSet;

use llmesh_api::QuotaScope;
use redis::aio::ConnectionLike;

use crate::redis_store::counter_key;
use crate::rules::{Limit, LimitName, Rule};
use crate::store::{PlanEntry, ScopeId};

/// Keys asked for per `SCAN` call.
const SCAN_COUNT: u64 = 1000;
const HOUR_MS: u64 = 3_600_000;
/// How long an alert marker outlives its period.
const MARKER_SLACK_MS: u64 = 60_000;

/// Current-window usage of one limit of a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSpend {
    /// Which limit.
    pub name: LimitName,
    /// Budget per window, in the limit's unit (micro-USD for costs).
    pub max: u64,
    /// Use so far: the counter of a namespace quota; the highest counter
    /// among the workloads, pods or callers of the other scopes.
    pub used: u64,
    /// Workloads, pods or callers with some use in this window (1 or 0
    /// for a namespace quota).
    pub scopes: u64,
    /// The window, ms since the epoch, end exclusive; `None` for
    /// concurrency, which has none.
    pub window: Option<(u64, u64)>,
}

impl LimitSpend {
    /// `used / max` (above 1 once a `warn` quota is exceeded).
    pub fn ratio(&self) -> f64 {
        self.used as f64 / self.max.max(1) as f64
    }

    /// Whole percent used, rounded down.
    pub fn percent(&self) -> u64 {
        let pct = u128::from(self.used) * 100 / u128::from(self.max.max(1));
        u64::try_from(pct).unwrap_or(u64::MAX)
    }

    /// Whether use is at or past `threshold` percent (the engine's test).
    pub fn reached(&self, threshold: u32) -> bool {
        u128::from(self.used) * 100 >= u128::from(self.max) * u128::from(threshold)
    }
}

/// Current-window usage of every limit of a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSpend {
    /// Who shares one budget.
    pub scope: QuotaScope,
    /// One per limit, in the order of the resource's fields.
    pub limits: Vec<LimitSpend>,
}

impl QuotaSpend {
    /// The limit closest to being reached (highest `used / max`). Ties go
    /// to costs first, then to longer windows: with nothing used yet, the
    /// money is what people look for.
    pub fn closest(&self) -> Option<&LimitSpend> {
        let rank = |n: LimitName| match n {
            LimitName::CostPerDay => 0,
            LimitName::CostPerMonth => 1,
            LimitName::TokensPerDay => 2,
            LimitName::TokensPerMinute => 3,
            LimitName::RequestsPerMinute => 4,
            LimitName::RequestsPerSecond => 5,
            LimitName::ConcurrentRequests => 6,
        };
        self.limits.iter().min_by(|a, b| {
            b.ratio()
                .total_cmp(&a.ratio())
                .then(rank(a.name).cmp(&rank(b.name)))
        })
    }
}

/// Reads every limit of `rule` in the windows holding `now_ms`.
///
/// A namespace quota has one counter per limit; the other scopes have one
/// per workload, pod or caller, found with `SCAN` over the current
/// window's keys (cost grows with the size of the keyspace, which is why
/// only the controller does this, every few seconds).
pub async fn read_spend<C: ConnectionLike + Send>(
    conn: &mut C,
    rule: &Rule,
    now_ms: u64,
) -> redis::RedisResult<QuotaSpend> {
    let mut limits = Vec::with_capacity(rule.limits.len());
    for limit in &rule.limits {
        let window = limit.name.window().map(|w| w.bounds(now_ms));
        let entry = plan_entry(rule, limit, ScopeId::Namespace, window);
        let key = counter_key(&entry);
        let keys = match scope_class(rule.scope) {
            None => vec![key],
            Some(class) => scan(conn, &key, &class).await?,
        };
        let values = if limit.name == LimitName::ConcurrentRequests {
            in_flight(conn, &keys, now_ms).await?
        } else {
            counters(conn, &keys).await?
        };
        limits.push(LimitSpend {
            name: limit.name,
            max: limit.max,
            used: values.iter().copied().max().unwrap_or(0),
            scopes: values.iter().filter(|v| **v > 0).count() as u64,
            window,
        });
    }
    Ok(QuotaSpend {
        scope: rule.scope,
        limits,
    })
}

/// The entry the engine would reserve for `limit` of `rule` and `scope`;
/// only the fields that name its key matter here.
fn plan_entry<'a>(
    rule: &'a Rule,
    limit: &Limit,
    scope: ScopeId<'a>,
    window: Option<(u64, u64)>,
) -> PlanEntry<'a> {
    PlanEntry {
        namespace: &rule.namespace,
        quota: &rule.name,
        scope,
        limit: limit.name,
        counter_id: 0,
        window: window.unwrap_or((0, u64::MAX)),
        max: limit.max,
        add: 0,
        hard: false,
        fail_closed: false,
    }
}

/// How scope ids of `scope` start (`w.`, `p.`, `c.`), from their display;
/// `None` for the namespace, which has a single counter.
fn scope_class(scope: QuotaScope) -> Option<String> {
    let sample = match scope {
        QuotaScope::Namespace => return None,
        QuotaScope::Workload => ScopeId::Workload(""),
        QuotaScope::Pod => ScopeId::Pod(""),
        QuotaScope::Caller => ScopeId::Caller(None),
    };
    let text = sample.to_string();
    text.split_inclusive('.').next().map(str::to_string)
}

/// Every key of the same quota, limit and window as `ns_key` (the
/// namespace scope's key) whose scope id starts with `class`.
async fn scan<C: ConnectionLike + Send>(
    conn: &mut C,
    ns_key: &str,
    class: &str,
) -> redis::RedisResult<Vec<String>> {
    // `<prefix>:ns:<limit>[:<window>]`: the limit and window never hold
    // ":ns:", so the last one is the scope.
    let Some(at) = ns_key.rfind(":ns:") else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}{class}", &ns_key[..=at]);
    let suffix = &ns_key[at + ":ns".len()..];
    let pattern = format!("{}*{}", glob_escape(&prefix), glob_escape(suffix));
    let mut found = HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?;
        // `*` matches colons too: keep ids that are one key segment.
        found.extend(keys.into_iter().filter(|k| {
            k.strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_suffix(suffix))
                .is_some_and(|id| !id.contains(':'))
        }));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut keys: Vec<String> = found.into_iter().collect();
    keys.sort_unstable();
    Ok(keys)
}

/// `text` matching itself only in a `SCAN MATCH` pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Counter values (missing or negative: 0).
async fn counters<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &[String],
) -> redis::RedisResult<Vec<u64>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(SCAN_COUNT as usize) {
        let values: Vec<Option<i64>> = redis::cmd("MGET").arg(chunk).query_async(conn).await?;
        out.extend(
            values
                .into_iter()
                .map(|v| u64::try_from(v.unwrap_or(0)).unwrap_or(0)),
        );
    }
    Ok(out)
}

/// Concurrency slots whose lease has not ended at `now_ms` (a slot of a
/// sidecar that died unsettled stops counting when its lease ends).
async fn in_flight<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &[String],
    now_ms: u64,
) -> redis::RedisResult<Vec<u64>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(SCAN_COUNT as usize) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("ZCOUNT")
                .arg(k)
                .arg(format!("({now_ms}"))
                .arg("+inf");
        }
        let values: Vec<u64> = pipe.query_async(conn).await?;
        out.extend(values);
    }
    Ok(out)
}

// === threshold alerts ===

/// The period in which a threshold alert of `limit` is raised at most
/// once: the limit's window for days and months; otherwise the UTC hour,
/// since per-second and per-minute windows (and concurrency, which has
/// none) would raise one every few seconds under steady load.
pub fn alert_period(limit: LimitName, now_ms: u64) -> (u64, u64) {
    match limit.window().map(|w| w.bounds(now_ms)) {
        Some((start, end)) if end - start >= HOUR_MS => (start, end),
        _ => {
            let start = now_ms - now_ms % HOUR_MS;
            (start, start + HOUR_MS)
        }
    }
}

/// `llmesh:qa:{<namespace>}:<quota>:<limit>:<threshold>:<period start, s>`:
/// set once the alert of that threshold was raised in that period.
pub fn alert_key(rule: &Rule, limit: LimitName, threshold: u32, now_ms: u64) -> String {
    let (start, _) = alert_period(limit, now_ms);
    format!(
        "llmesh:qa:{{{}}}:{}:{}:{threshold}:{}",
        rule.namespace,
        rule.name,
        limit.key(),
        start / 1000
    )
}

/// Claims the alert of `threshold` for `limit` in the period holding
/// `now_ms`: `true` for the first caller in that period, `false` once
/// claimed (by this controller, an earlier one or another replica). The
/// marker expires shortly after the period.
pub async fn claim_alert<C: ConnectionLike + Send>(
    conn: &mut C,
    rule: &Rule,
    limit: LimitName,
    threshold: u32,
    now_ms: u64,
) -> redis::RedisResult<bool> {
    let (_, end) = alert_period(limit, now_ms);
    let ttl = end.saturating_sub(now_ms) + MARKER_SLACK_MS;
    let set: Option<String> = redis::cmd("SET")
        .arg(alert_key(rule, limit, threshold, now_ms))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(ttl)
        .query_async(conn)
        .await?;
    Ok(set.is_some())
}

/// Gives a claim back (the Event could not be created), so the next pass
/// tries again.
pub async fn unclaim_alert<C: ConnectionLike + Send>(
    conn: &mut C,
    rule: &Rule,
    limit: LimitName,
    threshold: u32,
    now_ms: u64,
) -> redis::RedisResult<()> {
    redis::cmd("DEL")
        .arg(alert_key(rule, limit, threshold, now_ms))
        .query_async(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(name: LimitName, used: u64, max: u64) -> LimitSpend {
        LimitSpend {
            name,
            max,
            used,
            scopes: 1,
            window: None,
        }
    }

    #[test]
    fn the_closest_limit_has_the_highest_ratio_and_ties_go_to_cost() {
        let q = QuotaSpend {
            scope: QuotaScope::Namespace,
            limits: vec![
                spend(LimitName::RequestsPerMinute, 50, 100),
                spend(LimitName::CostPerDay, 6_000_000, 10_000_000),
            ],
        };
        assert_eq!(q.closest().map(|l| l.name), Some(LimitName::CostPerDay));
        let idle = QuotaSpend {
            scope: QuotaScope::Namespace,
            limits: vec![
                spend(LimitName::RequestsPerSecond, 0, 10),
                spend(LimitName::CostPerMonth, 0, 10),
                spend(LimitName::CostPerDay, 0, 10),
            ],
        };
        assert_eq!(idle.closest().map(|l| l.name), Some(LimitName::CostPerDay));
    }

    #[test]
    fn thresholds_and_percentages_use_integers() {
        let l = spend(LimitName::TokensPerDay, 799, 1000);
        assert!(!l.reached(80));
        assert_eq!(l.percent(), 79);
        let l = spend(LimitName::TokensPerDay, 800, 1000);
        assert!(l.reached(80) && !l.reached(100));
        assert!(spend(LimitName::TokensPerDay, 1200, 1000).reached(120));
    }

    #[test]
    fn alerts_of_short_windows_are_raised_per_hour() {
        let now = 1_795_341_600_000 + 125_000; // 10:02:05Z
        assert_eq!(
            alert_period(LimitName::RequestsPerMinute, now),
            (1_795_341_600_000, 1_795_345_200_000)
        );
        assert_eq!(
            alert_period(LimitName::ConcurrentRequests, now),
            alert_period(LimitName::RequestsPerSecond, now)
        );
        let (start, end) = alert_period(LimitName::CostPerDay, now);
        assert_eq!(end - start, 24 * HOUR_MS);
    }

    #[test]
    fn scope_classes_and_patterns() {
        assert_eq!(scope_class(QuotaScope::Workload).as_deref(), Some("w."));
        assert_eq!(scope_class(QuotaScope::Caller).as_deref(), Some("c."));
        assert_eq!(scope_class(QuotaScope::Namespace), None);
        assert_eq!(glob_escape("a*b[c]"), "a\\*b\\[c\\]");
    }
}
