//! `LLMQuota` validation. The quota is kept as its validated spec until
//! enforcement arrives; these checks mirror the CRD's schema and CEL rules
//! so the file mode refuses what `kubectl apply` would.

use llmesh_api::{LLMQuotaSpec, QuotaAction, QuotaScope, Resource, ResourceKind};

use crate::compile::Ctx;
use crate::data_policy::check_header_name;

/// A validated `LLMQuota` (not enforced yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// `metadata.name`.
    pub name: String,
    /// Namespace the resource came from.
    pub namespace: String,
    /// The spec as written, every field checked.
    pub spec: LLMQuotaSpec,
}

const K: ResourceKind = ResourceKind::Quota;

pub(crate) fn compile_quota(cx: &mut Ctx<'_>, q: &Resource<LLMQuotaSpec>) -> Option<Quota> {
    let name = &q.metadata.name;
    let spec = &q.spec;
    let before = cx.errors.len();

    let l = &spec.limits;
    let counts = [
        ("requestsPerSecond", l.requests_per_second),
        ("requestsPerMinute", l.requests_per_minute),
        ("tokensPerMinute", l.tokens_per_minute),
        ("tokensPerDay", l.tokens_per_day),
        ("concurrentRequests", l.concurrent_requests.map(u64::from)),
    ];
    let costs = [
        ("costPerDay", &l.cost_per_day),
        ("costPerMonth", &l.cost_per_month),
    ];
    let any_count = counts.iter().any(|(_, v)| v.is_some());
    let any_cost = costs.iter().any(|(_, v)| v.is_some());
    if !any_count && !any_cost {
        cx.err(K, name, "spec.limits", "set at least one limit");
    }
    for (field, v) in counts {
        if v == Some(0) {
            cx.err(K, name, &format!("spec.limits.{field}"), "must be > 0");
        }
    }
    for (field, v) in costs {
        if let Some(text) = v {
            if let Err(e) = parse_usd(text) {
                cx.err(K, name, &format!("spec.limits.{field}"), e);
            }
        }
    }

    if spec.action == QuotaAction::Downgrade && spec.downgrade_to.is_none() {
        cx.err(
            K,
            name,
            "spec.downgradeTo",
            "required when action is downgrade",
        );
    }
    if spec.downgrade_to.as_deref() == Some("") {
        cx.err(K, name, "spec.downgradeTo", "must not be empty");
    }
    if let Some(h) = &spec.caller_header {
        if spec.scope != QuotaScope::Caller {
            cx.err(K, name, "spec.callerHeader", "only used with scope caller");
        }
        if let Err(e) = check_header_name(h) {
            cx.err(K, name, "spec.callerHeader", e);
        }
    }
    for (i, w) in spec.workloads.iter().enumerate() {
        if w.is_empty() {
            cx.err(
                K,
                name,
                &format!("spec.workloads[{i}]"),
                "must not be empty",
            );
        }
    }
    for (i, m) in spec.models.iter().enumerate() {
        let body = m.strip_suffix('*').unwrap_or(m);
        if body.is_empty() || body.contains('*') {
            cx.err(
                K,
                name,
                &format!("spec.models[{i}]"),
                "must be a model name, optionally ending in *",
            );
        }
    }
    for (i, t) in spec.alert_thresholds.iter().enumerate() {
        if !(1..=1000).contains(t) {
            cx.err(
                K,
                name,
                &format!("spec.alertThresholds[{i}]"),
                "must be a percentage between 1 and 1000",
            );
        }
    }

    if cx.errors.len() > before {
        return None;
    }
    Some(Quota {
        name: name.clone(),
        namespace: cx.namespace.to_string(),
        spec: spec.clone(),
    })
}

/// Why a text is not a USD amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsdError {
    /// Not digits with an optional decimal part (the text as written).
    #[error("{0:?} is not a decimal USD amount such as \"12.50\"")]
    NotDecimal(String),
    /// Zero (an amount must be more than 0).
    #[error("must be more than 0")]
    NotPositive,
}

/// A USD amount written as a decimal string (`"50"`, `"12.50"`), above 0.
pub fn parse_usd(text: &str) -> Result<f64, UsdError> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) {
        return Err(UsdError::NotDecimal(text.to_string()));
    }
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(UsdError::NotPositive),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_usd;

    #[test]
    fn usd_amounts() {
        assert_eq!(parse_usd("50").unwrap(), 50.0);
        assert_eq!(parse_usd("12.50").unwrap(), 12.5);
        for bad in ["", "1e3", "-1", "12.", ".5", "1,5", "0", "0.00", "USD 5"] {
            assert!(parse_usd(bad).is_err(), "{bad}");
        }
    }
}
