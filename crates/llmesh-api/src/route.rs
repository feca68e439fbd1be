//! `LLMRoute`: which model names an app may ask for, and where they go.

use serde::{Deserialize, Serialize};

/// Spec of an `LLMRoute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LLMRouteSpec {
    /// Model names clients may request through this route. An entry ending in
    /// `*` matches every name with that prefix (`gpt-4o*`). Exact names win
    /// over prefixes; among prefixes the longest wins.
    pub models: Vec<String>,
    /// Where requests go, in order of preference.
    pub backends: Vec<BackendRef>,
    /// Deadlines for upstream calls.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// One upstream target of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// Name of an `LLMProvider` in the same namespace.
    pub provider: String,
    /// Model name sent upstream; the requested name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Relative share of traffic among backends.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Upstream deadlines, as durations such as `500ms`, `10s`, `5m`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// TCP and TLS connect (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    /// Until the upstream's response headers arrive (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<String>,
    /// Longest gap between two body chunks of a response (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    /// The whole call, body included (default 600s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
}
