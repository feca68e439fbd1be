//! Key names. `{<namespace>}` is a Redis Cluster hash tag, so every key of
//! one plan lives in one slot, as a multi-key script requires.

use std::fmt::Write as _;

use crate::store::PlanEntry;

/// `llmesh:q:{<namespace>}:<quota>:<scope>:<limit>:<window start, s>`; the
/// namespace is a hash tag, so every key of one plan lives in one Redis
/// Cluster slot, as a multi-key script requires.
pub fn counter_key(e: &PlanEntry<'_>) -> String {
    let mut k = String::with_capacity(48 + e.namespace.len() + e.quota.len());
    let _ = write!(
        k,
        "llmesh:q:{{{}}}:{}:{}:{}",
        e.namespace,
        e.quota,
        e.scope,
        e.limit.key()
    );
    if e.window.1 != u64::MAX {
        let _ = write!(k, ":{}", e.window.0 / 1000);
    }
    k
}

/// `llmesh:p:{<namespace>}:<provider>:<rpm|tpm>:<minute start, s>`.
pub fn provider_key(namespace: &str, provider: &str, what: &str, window_start_ms: u64) -> String {
    format!(
        "llmesh:p:{{{namespace}}}:{provider}:{what}:{}",
        window_start_ms / 1000
    )
}
