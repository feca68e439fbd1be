//! `spec.canary` of an `LLMRoute`: its defaults and checks (shared by the
//! sidecar's compiler and the controller that walks the steps), and the
//! share of requests the sidecars give the candidate from `status.canary`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use llmesh_api::{CanaryPhase, CanarySpec, CanaryStatus, MirrorBackend, ResourceKind};

use crate::compile::Ctx;
use crate::duration::parse_duration;
use crate::route::Backend;
use crate::snapshot::Provider;

/// Steps when `spec.canary.steps` is empty.
pub const DEFAULT_STEPS: [u32; 4] = [5, 25, 50, 100];
/// Hold of each step when `spec.canary.hold` is unset.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(600);
/// Range of the metric gates when `spec.canary.gates.window` is unset.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Candidate requests in the window before metric gates count.
pub const DEFAULT_MIN_REQUESTS: u32 = 20;

/// The steps of a canary, its own or the default ones.
pub fn steps(spec: &CanarySpec) -> Vec<u32> {
    if spec.steps.is_empty() {
        DEFAULT_STEPS.to_vec()
    } else {
        spec.steps.clone()
    }
}

/// The hold of each step (the default on an unreadable value, which the
/// compiler refuses anyway).
pub fn hold(spec: &CanarySpec) -> Duration {
    spec.hold
        .as_deref()
        .and_then(|h| parse_duration(h).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HOLD)
}

/// The range the metric gates look at.
pub fn window(spec: &CanarySpec) -> Duration {
    spec.gates
        .window
        .as_deref()
        .and_then(|h| parse_duration(h).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_WINDOW)
}

/// The candidate as `status.canary.candidate` names it: `provider` or
/// `provider/model`.
pub fn candidate_key(b: &MirrorBackend) -> String {
    match &b.model {
        Some(m) => format!("{}/{m}", b.provider),
        None => b.provider.clone(),
    }
}

/// Percent of requests the candidate gets under `status`: the current
/// step's weight while the canary runs for this very candidate, all of
/// them once promoted, none before the controller has written anything,
/// after a rollback or an abort.
pub fn share(spec: &CanarySpec, status: Option<&CanaryStatus>) -> u32 {
    let Some(s) = status else { return 0 };
    if s.candidate != candidate_key(&spec.backend) {
        return 0;
    }
    match s.phase {
        CanaryPhase::Progressing | CanaryPhase::Paused => s.weight.min(100),
        CanaryPhase::Promoted => 100,
        CanaryPhase::RolledBack | CanaryPhase::Aborted => 0,
    }
}

/// A canary as the sidecar applies it.
#[derive(Debug, Clone)]
pub struct CanarySettings {
    /// Index of the candidate in the route's `backends` (the last one).
    pub index: usize,
    /// Percent of requests that try the candidate first (1 to 100); the
    /// route's own backends serve the rest and take over when the
    /// candidate fails.
    pub percent: u32,
}

/// Checks `spec.canary` and returns the candidate backend to add to the
/// route with the share `status` gives it, or `None` when it gets nothing
/// now (or the spec is invalid, with the errors in `cx`).
pub(crate) fn compile(
    cx: &mut Ctx<'_>,
    name: &str,
    spec: &CanarySpec,
    status: Option<&CanaryStatus>,
    providers: &BTreeMap<String, Arc<Provider>>,
    priority: u32,
    mirror: Option<&MirrorBackend>,
) -> Option<(Backend, u32)> {
    const K: ResourceKind = ResourceKind::Route;
    let before = cx.errors.len();
    let provider = providers.get(&spec.backend.provider);
    if provider.is_none() {
        cx.err(
            K,
            name,
            "spec.canary.backend.provider",
            format!("no valid LLMProvider named {:?}", spec.backend.provider),
        );
    }
    let mut last = 0;
    for (i, &s) in spec.steps.iter().enumerate() {
        if !(1..=100).contains(&s) {
            cx.err(
                K,
                name,
                &format!("spec.canary.steps[{i}]"),
                "must be between 1 and 100",
            );
        } else if s <= last {
            cx.err(
                K,
                name,
                &format!("spec.canary.steps[{i}]"),
                "steps must ascend",
            );
        }
        last = s;
    }
    for (field, text) in [
        ("spec.canary.hold", &spec.hold),
        ("spec.canary.gates.window", &spec.gates.window),
    ] {
        match text.as_deref().map(parse_duration) {
            None => {}
            Some(Ok(d)) if !d.is_zero() => {}
            Some(Ok(_)) => cx.err(K, name, field, "must be > 0"),
            Some(Err(e)) => cx.err(K, name, field, e),
        }
    }
    let g = &spec.gates;
    if g.max_error_ratio_increase
        .is_some_and(|v| !(0.0..=1.0).contains(&v) || !v.is_finite())
    {
        cx.err(
            K,
            name,
            "spec.canary.gates.maxErrorRatioIncrease",
            "must be between 0 and 1",
        );
    }
    if g.max_latency_ratio
        .is_some_and(|v| v < 1.0 || !v.is_finite())
    {
        cx.err(
            K,
            name,
            "spec.canary.gates.maxLatencyRatio",
            "must be at least 1",
        );
    }
    if g.min_shadow_agreement
        .is_some_and(|v| !(0.0..=1.0).contains(&v) || !v.is_finite())
    {
        cx.err(
            K,
            name,
            "spec.canary.gates.minShadowAgreement",
            "must be between 0 and 1",
        );
    }
    if g.min_shadow_agreement.is_some() && mirror != Some(&spec.backend) {
        cx.err(
            K,
            name,
            "spec.canary.gates.minShadowAgreement",
            "compares shadow pairs: spec.mirror.backend must be the canary's candidate",
        );
    }
    if cx.errors.len() > before {
        return None;
    }
    let percent = share(spec, status);
    if percent == 0 {
        return None;
    }
    let backend = Backend {
        provider: provider?.clone(),
        model: spec.backend.model.clone(),
        weight: 1,
        priority,
    };
    Some((backend, percent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CanarySpec {
        serde_json::from_value(serde_json::json!({
            "backend": {"provider": "next", "model": "gpt-5"}
        }))
        .unwrap()
    }

    fn status(phase: CanaryPhase, candidate: &str, weight: u32) -> CanaryStatus {
        CanaryStatus {
            phase,
            candidate: candidate.into(),
            weight,
            ..CanaryStatus::default()
        }
    }

    #[test]
    fn the_share_follows_the_status_written_for_this_candidate_only() {
        let s = spec();
        assert_eq!(share(&s, None), 0);
        let cases = [
            (CanaryPhase::Progressing, "next/gpt-5", 25, 25),
            (CanaryPhase::Paused, "next/gpt-5", 50, 50),
            (CanaryPhase::Promoted, "next/gpt-5", 50, 100),
            (CanaryPhase::RolledBack, "next/gpt-5", 50, 0),
            (CanaryPhase::Aborted, "next/gpt-5", 50, 0),
            // Progress of the candidate before the spec changed.
            (CanaryPhase::Progressing, "next/gpt-4.1", 50, 0),
            (CanaryPhase::Progressing, "next/gpt-5", 400, 100),
        ];
        for (phase, candidate, weight, want) in cases {
            assert_eq!(
                share(&s, Some(&status(phase, candidate, weight))),
                want,
                "{phase:?} {candidate} {weight}"
            );
        }
    }

    #[test]
    fn defaults_apply_to_unset_fields() {
        let s = spec();
        assert_eq!(steps(&s), DEFAULT_STEPS);
        assert_eq!(hold(&s), DEFAULT_HOLD);
        assert_eq!(window(&s), DEFAULT_WINDOW);
        assert_eq!(candidate_key(&s.backend), "next/gpt-5");
    }
}
