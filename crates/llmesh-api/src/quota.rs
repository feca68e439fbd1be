//! `LLMQuota`: request, token and cost limits for a namespace, a workload,
//! a pod or a caller, and what happens when one is reached.
//!
//! Validated and kept in the compiled policy; enforcement comes with the
//! quota work.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{DECIMAL, HEADER_NAME, MODEL_PATTERN};
use crate::status::LLMQuotaStatus;

/// Who shares one budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaScope {
    /// Every matching request in the namespace counts against one budget.
    #[default]
    Namespace,
    /// One budget per workload (Deployment, StatefulSet...).
    Workload,
    /// One budget per pod.
    Pod,
    /// One budget per end user, named by the `callerHeader` request header.
    Caller,
}

/// Which tokens the token limits count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// Prompt tokens.
    Input,
    /// Completion tokens.
    Output,
    /// Both.
    #[default]
    Total,
}

/// What happens to a request once a limit is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaAction {
    /// Refuse it with 429 and a `Retry-After` for the window's end.
    #[default]
    Reject,
    /// Serve it with the cheaper model named by `downgradeTo`.
    Downgrade,
    /// Serve it, and count and log the excess.
    Warn,
}

/// What sidecars do while the shared quota store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StoreUnavailable {
    /// Each sidecar keeps counting on its own share of the limits.
    #[default]
    Local,
    /// Refuse requests this quota covers until the store is back.
    FailClosed,
}

/// The limits of an `LLMQuota`; at least one is set. Rates are per sidecar
/// window (second, minute, day, calendar month in UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "has(self.requestsPerSecond) || has(self.requestsPerMinute) || has(self.tokensPerMinute) || has(self.tokensPerDay) || has(self.costPerDay) || has(self.costPerMonth) || has(self.concurrentRequests)"
).message("set at least one limit"))]
pub struct QuotaLimits {
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_second: Option<u64>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute (of `tokenKind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
    /// Tokens per day (of `tokenKind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_day: Option<u64>,
    /// Which tokens the token limits count (default `total`).
    #[serde(default)]
    pub token_kind: TokenKind,
    /// USD per day, a decimal string such as `"12.50"`, priced from the
    /// providers' price tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DECIMAL))]
    pub cost_per_day: Option<String>,
    /// USD per calendar month, a decimal string such as `"1000"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DECIMAL))]
    pub cost_per_month: Option<String>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrent_requests: Option<u32>,
}

/// Spec of an `LLMQuota`.
// Each printcolumn repeats `type_`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "llmesh.io",
    version = "v1alpha1",
    kind = "LLMQuota",
    namespaced,
    status = "LLMQuotaStatus",
    shortname = "llmq",
    category = "llmesh",
    doc = "Request, token and cost limits per namespace, workload, pod or caller, and what happens when one is reached (reject, downgrade, warn).",
    printcolumn(name = "Scope", type_ = "string", json_path = ".spec.scope"),
    printcolumn(name = "Limit", type_ = "string", json_path = ".status.limit"),
    printcolumn(name = "Spent", type_ = "string", json_path = ".status.spent"),
    printcolumn(name = "Remaining", type_ = "string", json_path = ".status.remaining"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Action",
        type_ = "string",
        priority = 1,
        json_path = ".spec.action"
    ),
    printcolumn(
        name = "Resets",
        type_ = "date",
        priority = 1,
        json_path = ".status.windowResetsAt"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "!has(self.action) || self.action != 'downgrade' || has(self.downgradeTo)"
).message("downgradeTo is required when action is downgrade"))]
#[x_kube(validation = Rule::new(
    "!has(self.callerHeader) || (has(self.scope) && self.scope == 'caller')"
).message("callerHeader is only used with scope caller"))]
pub struct LLMQuotaSpec {
    /// Who shares one budget (default `namespace`).
    #[serde(default)]
    pub scope: QuotaScope,
    /// For scope `caller`: the request header naming the caller (default
    /// `x-llmesh-user`). Its value is hashed before it is stored or shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HEADER_NAME))]
    pub caller_header: Option<String>,
    /// Only these workloads (`LLMESH_WORKLOAD` of the sidecar); empty means
    /// every workload of the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub workloads: Vec<String>,
    /// Only requests for these model names (a trailing `*` matches a
    /// prefix); empty means every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(pattern(MODEL_PATTERN)))]
    pub models: Vec<String>,
    /// The limits; at least one is set.
    pub limits: QuotaLimits,
    /// What happens once a limit is reached (default `reject`).
    #[serde(default)]
    pub action: QuotaAction,
    /// For action `downgrade` (required there): the model name requests are
    /// routed as instead, e.g. `gpt-4o-mini`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub downgrade_to: Option<String>,
    /// Usage percentages at which an alert fires (default 80 and 100).
    #[serde(default = "default_thresholds")]
    #[schemars(length(max = 8), inner(range(min = 1, max = 1000)))]
    pub alert_thresholds: Vec<u32>,
    /// While the shared quota store is unreachable: `local` (default) or
    /// `fail-closed`.
    #[serde(default)]
    pub on_store_unavailable: StoreUnavailable,
}

fn default_thresholds() -> Vec<u32> {
    vec![80, 100]
}
