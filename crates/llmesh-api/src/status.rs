//! What llmesh reports back on each resource (the `status` subresource).
//!
//! All four kinds share `conditions` and `observedGeneration`, so one merge
//! patch `{"status": {"conditions": [...], "observedGeneration": n}}` works
//! on any of them; `LLMQuota` adds its spend and `LLMDataPolicy` its rule
//! count for `kubectl get`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the resource was validated and is part of the active
/// policy (`True`), or was refused (`False`, reason [`REASON_INVALID`],
/// the field errors in the message).
pub const CONDITION_ACCEPTED: &str = "Accepted";
/// Condition type on `LLMQuota` and `LLMDataPolicy`: `False` with reason
/// [`REASON_NOT_ENFORCED`] while this version validates them but does not
/// act on them yet.
pub const CONDITION_ENFORCED: &str = "Enforced";
/// Condition type written by `llmesh-controller`: every reference the
/// resource makes resolves (`True`, reason [`REASON_RESOLVED_REFS`]), or
/// one does not (`False`, reason [`REASON_BACKEND_NOT_FOUND`],
/// [`REASON_INVALID_BACKEND`] or [`REASON_MODEL_NOT_ROUTED`]). On
/// `LLMRoute` (backends and fallbacks) and `LLMQuota` (`downgradeTo`).
pub const CONDITION_RESOLVED_REFS: &str = "ResolvedRefs";
/// Reason of a `ResolvedRefs=True` condition.
pub const REASON_RESOLVED_REFS: &str = "ResolvedRefs";
/// Reason of a `ResolvedRefs=False` condition on an `LLMRoute`: a backend
/// names an `LLMProvider` that exists in neither the route's namespace
/// nor the platform namespace.
pub const REASON_BACKEND_NOT_FOUND: &str = "BackendNotFound";
/// Reason of a `ResolvedRefs=False` condition on an `LLMRoute`: a backend
/// names an `LLMProvider` that exists but is not accepted.
pub const REASON_INVALID_BACKEND: &str = "InvalidBackend";
/// Reason of a `ResolvedRefs=False` condition on an `LLMQuota`: no
/// accepted `LLMRoute` serves the model named by `downgradeTo`.
pub const REASON_MODEL_NOT_ROUTED: &str = "ModelNotRouted";
/// Reason of an `Accepted=True` condition.
pub const REASON_ACCEPTED: &str = "Accepted";
/// Reason of an `Accepted=False` condition: a field is invalid.
pub const REASON_INVALID: &str = "Invalid";
/// Reason of an `Enforced=False` condition on kinds validated but not
/// enforced by this version.
pub const REASON_NOT_ENFORCED: &str = "NotEnforced";
/// Reason of an `Enforced=True` condition: the sidecars apply the object.
pub const REASON_ENFORCED: &str = "Enforced";

/// Status of an `LLMProvider` or an `LLMRoute`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Current state: `Accepted` (see the README's "Custom resources").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of an `LLMQuota`: the conditions, and spend against the tightest
/// limit in the current window, as text for `kubectl get`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LLMQuotaStatus {
    /// Current state: `Accepted`, `Enforced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The limit closest to being reached, e.g. `50 USD/day`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Use of that limit in the current window, e.g. `12.40 USD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<String>,
    /// What is left of it, e.g. `37.60 USD (75%)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<String>,
    /// When the current window of that limit ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_resets_at: Option<Time>,
}

/// Status of an `LLMDataPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LLMDataPolicyStatus {
    /// Current state: `Accepted`, `Enforced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of rules in the accepted spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_count: Option<i64>,
}

/// Condition type on each entry of an `LLMRoute`'s `status.backends`,
/// written by the controller's prober: every golden prompt of
/// `spec.probes` passed its checks on that backend at the last run
/// (`True`), or one did not (`False`, the failed probes and checks in the
/// message).
pub const CONDITION_PROBES_PASSING: &str = "ProbesPassing";
/// `ProbesPassing` is `True`: every golden prompt passed.
pub const REASON_PROBES_PASSED: &str = "ProbesPassed";
/// `ProbesPassing` is `False`: a golden prompt failed a check or its call
/// failed.
pub const REASON_PROBES_FAILED: &str = "ProbesFailed";
/// `ProbesPassing` is `Unknown`: the probes could not be sent (no such
/// provider, a credential the controller cannot read).
pub const REASON_PROBE_ERROR: &str = "ProbeError";

/// Status of an `LLMRoute`: the conditions, each backend's probe results
/// and the canary's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LLMRouteStatus {
    /// Current state: `Accepted`, `ResolvedRefs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One entry per backend the controller probes (the route's backends,
    /// its fallbacks', the mirror's and the canary's candidate), with its
    /// `ProbesPassing` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<RouteBackendStatus>,
    /// Where the canary of `spec.canary` stands; the sidecars send the
    /// candidate `canary.weight` percent of the route's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
}

/// What the controller knows of one backend of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteBackendStatus {
    /// The `LLMProvider`.
    pub provider: String,
    /// The model sent to it, when the backend names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `ProbesPassing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the probes last ran against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
}

/// Phase of a canary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CanaryPhase {
    /// Walking its steps: the candidate gets the current step's weight.
    #[default]
    Progressing,
    /// A gate failed: the weight holds until the gates pass again, or the
    /// canary rolls back when they keep failing for the step's hold time.
    Paused,
    /// Every step held with passing gates (or `llmesh.io/canary=promote`):
    /// the candidate gets all traffic until the spec changes.
    Promoted,
    /// A gate failed for a whole hold time: all traffic back on the
    /// route's own backends.
    RolledBack,
    /// Stopped by `llmesh.io/canary=abort`: all traffic back on the
    /// route's own backends.
    Aborted,
}

impl CanaryPhase {
    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryPhase::Progressing => "Progressing",
            CanaryPhase::Paused => "Paused",
            CanaryPhase::Promoted => "Promoted",
            CanaryPhase::RolledBack => "RolledBack",
            CanaryPhase::Aborted => "Aborted",
        }
    }
}

/// Progress of an `LLMRoute`'s canary, written by the controller's leader
/// and read by every sidecar from the same watched object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// `Progressing`, `Paused`, `Promoted`, `RolledBack` or `Aborted`.
    pub phase: CanaryPhase,
    /// The candidate this progress is for, `provider` or `provider/model`
    /// as in `spec.canary.backend`: a sidecar applies `weight` only while
    /// it names the spec's candidate.
    #[serde(default)]
    pub candidate: String,
    /// Index of the current step in `spec.canary.steps`.
    #[serde(default)]
    pub step: u32,
    /// Percent of the route's requests the sidecars send to the candidate
    /// (0 to 100).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub weight: u32,
    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Since when a gate has been failing, while one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// The `metadata.generation` of the spec this canary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why the canary is where it is: the gate that failed, the override
    /// applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
