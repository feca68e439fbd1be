//! From a quota's usage to the text people read: the `status` fields that
//! `kubectl get llmquota` prints and the notes of threshold Events. Pure.
//!
//! Every figure carries its unit (`USD`, `tokens`, `requests`, `in
//! flight`) and every limit its window (`/day`, `/min`), because the
//! columns are read without the spec at hand.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use llmesh_api::{QuotaScope, TokenKind};
use llmesh_quota::spend::{LimitSpend, QuotaSpend};
use llmesh_quota::{LimitName, Rule, Unit, MICRO_USD};
use serde_json::{json, Value};

/// The spend fields of an `LLMQuota`'s status.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendStatus {
    /// The limit closest to being reached, e.g. `50.00 USD/day`.
    pub limit: String,
    /// Its use in the current window, e.g. `12.40 USD`.
    pub spent: String,
    /// What is left, e.g. `37.60 USD (75%)`.
    pub remaining: String,
    /// End of its window (`None` for concurrency).
    pub window_resets_at: Option<Time>,
}

impl SpendStatus {
    /// The `status` part of a merge patch; a limit without a window
    /// removes `windowResetsAt`.
    pub fn to_json(&self) -> Value {
        json!({
            "limit": self.limit,
            "spent": self.spent,
            "remaining": self.remaining,
            "windowResetsAt": self.window_resets_at,
        })
    }

    /// Whether `status` (the object's, if any) already says this.
    pub fn matches(&self, status: Option<&Value>) -> bool {
        let want = self.to_json();
        let Some(fields) = want.as_object() else {
            return false;
        };
        fields.iter().all(|(k, v)| {
            let have = status.and_then(|s| s.get(k)).unwrap_or(&Value::Null);
            have == v
        })
    }
}

/// The status fields for the limit of `spend` closest to being reached;
/// `None` for a quota without limits.
pub fn status(rule: &Rule, spend: &QuotaSpend) -> Option<SpendStatus> {
    let l = spend.closest()?;
    let left = l.max.saturating_sub(l.used);
    let left_pct = u128::from(left) * 100 / u128::from(l.max.max(1));
    let left_text = match l.name.unit() {
        Unit::InFlight => format!("{left} free"),
        unit => amount(unit, rule.token_kind, left),
    };
    Some(SpendStatus {
        limit: limit_text(rule, l),
        spent: format!(
            "{}{}",
            amount(l.name.unit(), rule.token_kind, l.used),
            among(rule.scope, l.scopes)
        ),
        remaining: format!("{left_text} ({left_pct}%)"),
        window_resets_at: l.window.map(|(_, end)| time(end)),
    })
}

/// The note of the Event for `threshold` of limit `l`. Names the quota,
/// the limit, the figures and the window; never a workload, pod or caller.
pub fn alert_note(rule: &Rule, l: &LimitSpend, threshold: u32) -> String {
    let who = match rule.scope {
        QuotaScope::Namespace => String::new(),
        scope => format!(" (the busiest of {} {})", l.scopes, plural(scope, l.scopes)),
    };
    let when = match l.window {
        Some((start, end)) => format!("in the window {} to {}", rfc3339(start), rfc3339(end)),
        None => "now (at most one such Event per hour)".to_string(),
    };
    format!(
        "LLMQuota {}: {} at {}%{who}, {} against a limit of {}; alert threshold {threshold}% reached {when}",
        rule.name,
        l.name.as_str(),
        l.percent(),
        amount(l.name.unit(), rule.token_kind, l.used),
        limit_text(rule, l),
    )
}

/// `50.00 USD/day`, `100000 tokens/min per workload`, `8 in flight`.
fn limit_text(rule: &Rule, l: &LimitSpend) -> String {
    let per = match l.name {
        LimitName::RequestsPerSecond => "/s",
        LimitName::RequestsPerMinute | LimitName::TokensPerMinute => "/min",
        LimitName::TokensPerDay | LimitName::CostPerDay => "/day",
        LimitName::CostPerMonth => "/month",
        LimitName::ConcurrentRequests => "",
    };
    let scope = match rule.scope {
        QuotaScope::Namespace => "",
        QuotaScope::Workload => " per workload",
        QuotaScope::Pod => " per pod",
        QuotaScope::Caller => " per caller",
    };
    format!(
        "{}{per}{scope}",
        amount(l.name.unit(), rule.token_kind, l.max)
    )
}

/// A figure with its unit: `12.40 USD`, `300 tokens`, `2 input tokens`,
/// `5 requests`, `3 in flight`.
fn amount(unit: Unit, kind: TokenKind, v: u64) -> String {
    match unit {
        Unit::MicroUsd => format!("{:.2} USD", v as f64 / MICRO_USD),
        Unit::Tokens => match kind {
            TokenKind::Total => format!("{v} tokens"),
            TokenKind::Input => format!("{v} input tokens"),
            TokenKind::Output => format!("{v} output tokens"),
        },
        Unit::Requests => format!("{v} requests"),
        Unit::InFlight => format!("{v} in flight"),
    }
}

/// ` (busiest of 3 workloads)` after the figure of a scoped quota.
fn among(scope: QuotaScope, n: u64) -> String {
    match (scope, n) {
        (QuotaScope::Namespace, _) | (_, 0) => String::new(),
        (scope, 1) => format!(" (1 {})", plural(scope, 1)),
        (scope, n) => format!(" (busiest of {n} {})", plural(scope, n)),
    }
}

fn plural(scope: QuotaScope, n: u64) -> &'static str {
    match (scope, n == 1) {
        (QuotaScope::Namespace, true) => "namespace",
        (QuotaScope::Namespace, false) => "namespaces",
        (QuotaScope::Workload, true) => "workload",
        (QuotaScope::Workload, false) => "workloads",
        (QuotaScope::Pod, true) => "pod",
        (QuotaScope::Pod, false) => "pods",
        (QuotaScope::Caller, true) => "caller",
        (QuotaScope::Caller, false) => "callers",
    }
}

/// `ms` since the epoch as a status `Time` (whole seconds, as the API
/// server writes them back).
fn time(ms: u64) -> Time {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::MAX))
}

fn rfc3339(ms: u64) -> String {
    time(ms).0.to_string()
}

#[cfg(test)]
mod tests {
    use llmesh_api::LLMQuotaSpec;
    use llmesh_policy::Quota;
    use pretty_assertions::assert_eq;

    use super::*;

    fn rule(spec: Value) -> Rule {
        let spec: LLMQuotaSpec = serde_json::from_value(spec).unwrap();
        Rule::from_quota(&Quota {
            name: "budget".into(),
            namespace: "team".into(),
            spec,
        })
    }

    fn spend(rule: &Rule, used: &[u64], scopes: u64, window: Option<(u64, u64)>) -> QuotaSpend {
        QuotaSpend {
            scope: rule.scope,
            limits: rule
                .limits
                .iter()
                .zip(used)
                .map(|(l, used)| LimitSpend {
                    name: l.name,
                    max: l.max,
                    used: *used,
                    scopes,
                    window: window.filter(|_| l.name.window().is_some()),
                })
                .collect(),
        }
    }

    // 2026-11-22T00:00:00Z and the next midnight.
    const DAY: (u64, u64) = (1_795_305_600_000, 1_795_392_000_000);

    #[test]
    fn cost_is_shown_in_usd_with_cents_and_the_window_end() {
        let r = rule(json!({"limits": {"costPerDay": "50", "requestsPerMinute": 100}}));
        // Limits in field order: requestsPerMinute, then costPerDay.
        let s = status(&r, &spend(&r, &[10, 12_400_000], 1, Some(DAY))).unwrap();
        assert_eq!(s.limit, "50.00 USD/day");
        assert_eq!(s.spent, "12.40 USD");
        assert_eq!(s.remaining, "37.60 USD (75%)");
        assert_eq!(s.to_json()["windowResetsAt"], json!("2026-11-23T00:00:00Z"));
        // Requests at 30% beat cost at 24.8%.
        let s = status(&r, &spend(&r, &[30, 12_400_000], 1, Some(DAY))).unwrap();
        assert_eq!(
            (s.limit.as_str(), s.spent.as_str(), s.remaining.as_str()),
            ("100 requests/min", "30 requests", "70 requests (70%)")
        );
    }

    #[test]
    fn scoped_quotas_say_per_what_and_how_many_shared_it() {
        let r = rule(json!({"scope": "workload", "limits": {"tokensPerMinute": 1000}}));
        let s = status(&r, &spend(&r, &[750], 3, Some(DAY))).unwrap();
        assert_eq!(s.limit, "1000 tokens/min per workload");
        assert_eq!(s.spent, "750 tokens (busiest of 3 workloads)");
        assert_eq!(s.remaining, "250 tokens (25%)");
        let r =
            rule(json!({"scope": "caller", "limits": {"tokensPerDay": 10, "tokenKind": "output"}}));
        let s = status(&r, &spend(&r, &[2], 1, Some(DAY))).unwrap();
        assert_eq!(s.spent, "2 output tokens (1 caller)");
    }

    #[test]
    fn concurrency_has_no_window_and_an_exceeded_warn_quota_has_nothing_left() {
        let r = rule(json!({"limits": {"concurrentRequests": 8}}));
        let s = status(&r, &spend(&r, &[2], 1, None)).unwrap();
        assert_eq!(
            (s.limit.as_str(), s.spent.as_str(), s.remaining.as_str()),
            ("8 in flight", "2 in flight", "6 free (75%)")
        );
        assert_eq!(s.to_json()["windowResetsAt"], Value::Null);
        let r = rule(json!({"action": "warn", "limits": {"costPerMonth": "10"}}));
        let s = status(&r, &spend(&r, &[12_000_000], 1, Some(DAY))).unwrap();
        assert_eq!(
            (s.limit.as_str(), s.spent.as_str(), s.remaining.as_str()),
            ("10.00 USD/month", "12.00 USD", "0.00 USD (0%)")
        );
    }

    #[test]
    fn an_unchanged_status_matches_and_a_missing_field_does_not() {
        let r = rule(json!({"limits": {"concurrentRequests": 8}}));
        let s = status(&r, &spend(&r, &[2], 1, None)).unwrap();
        let mut current = s.to_json();
        current["conditions"] = json!([]);
        assert!(s.matches(Some(&current)));
        current["spent"] = json!("3 in flight");
        assert!(!s.matches(Some(&current)));
        assert!(!s.matches(None));
    }

    #[test]
    fn alert_notes_name_the_quota_limit_share_and_window() {
        let r = rule(json!({"limits": {"costPerDay": "10"}}));
        let sp = spend(&r, &[8_500_000], 1, Some(DAY));
        assert_eq!(
            alert_note(&r, &sp.limits[0], 80),
            "LLMQuota budget: costPerDay at 85%, 8.50 USD against a limit of 10.00 USD/day; alert threshold 80% reached in the window 2026-11-22T00:00:00Z to 2026-11-23T00:00:00Z"
        );
        let r = rule(json!({"scope": "caller", "limits": {"concurrentRequests": 4}}));
        let sp = spend(&r, &[4], 7, None);
        assert_eq!(
            alert_note(&r, &sp.limits[0], 100),
            "LLMQuota budget: concurrentRequests at 100% (the busiest of 7 callers), 4 in flight against a limit of 4 in flight per caller; alert threshold 100% reached now (at most one such Event per hour)"
        );
    }
}
