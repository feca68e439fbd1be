//! The sidecar's Prometheus metrics.
//!
//! Names follow the OpenTelemetry GenAI client conventions where they name a
//! metric, and `llmesh_` otherwise. The pod's namespace, workload and pod
//! are registry-wide constant labels, so they cost nothing per request.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Identity;

/// Seconds, from tens of milliseconds to ten minutes: LLM calls are slow and
/// long-tailed.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84,
    327.68, 655.36,
];
/// Time to first chunk: finer at the low end where streaming lives.
const TTFC_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Tokens per request, powers of four (the conventions' advice).
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
];

/// All metric families of the proxy.
pub struct Metrics {
    registry: Registry,
    /// gen_ai_client_operation_duration_seconds
    pub duration: HistogramVec,
    /// gen_ai_client_token_usage
    pub token_usage: HistogramVec,
    /// gen_ai_client_operation_time_to_first_chunk_seconds
    pub time_to_first_chunk: HistogramVec,
    /// llmesh_requests_total
    pub requests: IntCounterVec,
    /// llmesh_passthrough_requests_total
    pub passthrough: IntCounterVec,
    /// llmesh_cache_lookups_total
    pub cache_lookups: IntCounterVec,
    /// llmesh_cache_saved_usd_total
    pub cache_saved_usd: CounterVec,
    /// llmesh_semantic_cache_lookups_total
    pub semantic_lookups: IntCounterVec,
    /// llmesh_semantic_cache_similarity
    pub semantic_similarity: HistogramVec,
    /// llmesh_cache_entries
    pub cache_entries: IntGaugeVec,
    /// llmesh_cache_bytes
    pub cache_bytes: IntGaugeVec,
    /// llmesh_structured_outputs_total
    pub structured_outputs: IntCounterVec,
    /// llmesh_upgrades_total
    pub upgrades: IntCounterVec,
    /// llmesh_upgrades_active
    pub upgrades_active: IntGauge,
    /// llmesh_batch_results_total
    pub batch_results: IntCounterVec,
    /// llmesh_tokens_total
    pub tokens: IntCounterVec,
    /// llmesh_cost_usd_total
    pub cost: CounterVec,
    /// llmesh_provider_cache_saved_usd_total
    pub cache_saved: CounterVec,
    /// llmesh_unpriced_requests_total
    pub unpriced: IntCounterVec,
    /// llmesh_backend_model_version_info
    pub model_version: IntGaugeVec,
    /// llmesh_backend_model_version_changes_total
    pub model_version_changes: IntCounterVec,
    /// llmesh_backend_output_tokens
    pub backend_output_tokens: HistogramVec,
    /// llmesh_backend_answers_total
    pub backend_answers: IntCounterVec,
    /// llmesh_backend_errors_total
    pub backend_errors: IntCounterVec,
    /// llmesh_provider_credential_ready and
    /// llmesh_provider_credential_refreshes_total
    pub credentials: crate::identity::CredentialMetrics,
    /// llmesh_shadow_requests_total
    pub shadow_requests: IntCounterVec,
    /// llmesh_shadow_tokens_total
    pub shadow_tokens: IntCounterVec,
    /// llmesh_shadow_cost_usd_total
    pub shadow_cost: CounterVec,
    /// llmesh_shadow_latency_seconds
    pub shadow_latency: HistogramVec,
    /// llmesh_shadow_output_tokens
    pub shadow_output_tokens: HistogramVec,
    /// llmesh_shadow_answers_total
    pub shadow_answers: IntCounterVec,
    /// llmesh_shadow_agreement_total
    pub shadow_agreement: IntCounterVec,
    /// llmesh_upstream_errors_total
    pub upstream_errors: IntCounterVec,
    /// llmesh_attempts_total
    pub attempts: IntCounterVec,
    /// llmesh_attempt_first_byte_seconds
    pub attempt_first_byte: HistogramVec,
    /// llmesh_retries_total
    pub retries: IntCounterVec,
    /// llmesh_failovers_total
    pub failovers: IntCounterVec,
    /// llmesh_retry_budget_exhausted_total
    pub budget_exhausted: IntCounterVec,
    /// llmesh_circuit_breaker_state
    pub breaker_state: IntGaugeVec,
    /// llmesh_context_preflight_skips_total
    pub preflight_skips: IntCounterVec,
    /// llmesh_hedges_total
    pub hedges: IntCounterVec,
    /// llmesh_redactions_total
    pub redactions: IntCounterVec,
    /// llmesh_config_rejected_resources
    pub rejected_resources: IntGaugeVec,
    /// llmesh_stream_continuations_total
    pub continuations: IntCounterVec,
    /// llmesh_outlier_ejections_total
    pub outlier_ejections: IntCounterVec,
    /// llmesh_requests_in_flight
    pub in_flight: IntGauge,
    /// llmesh_log_lines_dropped_total
    pub log_lines_dropped: IntCounter,
    /// llmesh_tokenizer_fallbacks_total
    pub tokenizer_fallbacks: IntCounter,
    /// llmesh_quota_decisions_total
    pub quota_decisions: IntCounterVec,
    /// llmesh_quota_alerts_total
    pub quota_alerts: IntCounterVec,
    /// llmesh_quota_used
    pub quota_used: GaugeVec,
    /// llmesh_quota_limit
    pub quota_limit: GaugeVec,
    /// llmesh_quota_remaining
    pub quota_remaining: GaugeVec,
    /// llmesh_provider_budget_exhausted
    pub provider_budget_exhausted: IntGaugeVec,
    /// llmesh_quota_store_degraded
    pub quota_store_degraded: IntGauge,
    /// llmesh_quota_store_errors_total
    pub quota_store_errors: IntCounter,
    /// llmesh_quota_local_admissions_total
    pub quota_local_admissions: IntCounter,
    /// llmesh_quota_fail_closed_total
    pub quota_fail_closed: IntCounter,
    /// llmesh_quota_settlements_dropped_total
    pub quota_dropped_settlements: IntCounter,
    /// llmesh_quota_settlements_pending
    pub quota_pending_settlements: IntGauge,
    /// llmesh_usage_records_total
    pub usage_records: IntCounterVec,
    /// llmesh_usage_write_failures_total
    pub usage_write_failures: IntCounter,
    /// llmesh_usage_records_queued
    pub usage_records_queued: IntGauge,
    /// llmesh_config_reloads_total
    pub reloads: IntCounterVec,
    /// llmesh_config_generation
    pub generation: IntGauge,
    /// llmesh_config_last_reload_successful
    pub last_reload_ok: IntGauge,
    /// llmesh_config_last_reload_success_timestamp_seconds
    pub last_reload_time: Gauge,
}

/// The `type` label values of `llmesh_tokens_total` (and
/// `gen_ai_token_type` of `gen_ai_client_token_usage`), in the order
/// [`SeriesCache::tokens`] takes its counts. `cached_input` and
/// `cache_write` are parts of `input`.
pub const TOKEN_TYPES: [&str; 4] = ["input", "output", "cached_input", "cache_write"];

/// Labels of the per-version (drift) series.
pub const DRIFT_LABELS: &[&str] = &["route", "provider", "model", "version"];

/// The version label of a backend that has not yet named its model version.
pub const UNKNOWN_VERSION: &str = "unknown";

/// Labels of the duration histogram.
pub const OP_LABELS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "error_type",
    "route",
];

impl Metrics {
    /// Registers every family with the pod's identity as constant labels.
    pub fn new(identity: &Identity) -> Result<Metrics, prometheus::Error> {
        let consts: HashMap<String, String> = [
            ("namespace".to_string(), identity.namespace.clone()),
            ("workload".to_string(), identity.workload.clone()),
            ("pod".to_string(), identity.pod.clone()),
        ]
        .into_iter()
        .collect();
        let registry = Registry::new_custom(None, Some(consts))?;

        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gen_ai_client_operation_duration_seconds",
                "Duration of GenAI operations through the sidecar, until the last byte.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            OP_LABELS,
        )?;
        let token_usage = HistogramVec::new(
            HistogramOpts::new(
                "gen_ai_client_token_usage",
                "Tokens used per GenAI operation, by token type.",
            )
            .buckets(TOKEN_BUCKETS.to_vec()),
            &[
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "gen_ai_response_model",
                "gen_ai_token_type",
                "route",
            ],
        )?;
        let time_to_first_chunk = HistogramVec::new(
            HistogramOpts::new(
                "gen_ai_client_operation_time_to_first_chunk_seconds",
                "Time from request to the first streamed chunk of the response.",
            )
            .buckets(TTFC_BUCKETS.to_vec()),
            &[
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "gen_ai_response_model",
                "route",
            ],
        )?;
        let requests = IntCounterVec::new(
            Opts::new("llmesh_requests_total", "Requests answered by the sidecar."),
            &["route", "provider", "model", "code", "error_type"],
        )?;
        let passthrough = IntCounterVec::new(
            Opts::new(
                "llmesh_passthrough_requests_total",
                "Calls passed through to a provider (audio, files, batches, ...), by endpoint (ids replaced by {id}).",
            ),
            &["endpoint", "provider", "code"],
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "llmesh_cache_lookups_total",
                "Requests on routes with a response cache, by result: hit (answered from the cache), miss, refresh, bypass (not cacheable), error (store unreachable; the provider answered).",
            ),
            &["route", "result"],
        )?;
        let cache_saved_usd = CounterVec::new(
            Opts::new(
                "llmesh_cache_saved_usd_total",
                "What cache hits would have cost at the provider's current prices (USD).",
            ),
            &["route"],
        )?;
        let semantic_lookups = IntCounterVec::new(
            Opts::new(
                "llmesh_semantic_cache_lookups_total",
                "Requests on routes with a semantic cache, by result: hit (a stored prompt reached the threshold), miss, refresh, bypass (not cacheable, or no text prompt), error (the embeddings call or the store failed; the provider answered).",
            ),
            &["route", "result"],
        )?;
        let semantic_similarity = HistogramVec::new(
            HistogramOpts::new(
                "llmesh_semantic_cache_similarity",
                "Best cosine similarity between a request's prompt and the stored prompts it was compared with, per semantic lookup (to choose the threshold).",
            )
            .buckets(vec![0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0]),
            &["route"],
        )?;
        let cache_entries = IntGaugeVec::new(
            Opts::new(
                "llmesh_cache_entries",
                "Answers in this sidecar's in-memory response cache (exact and semantic).",
            ),
            &["route"],
        )?;
        let cache_bytes = IntGaugeVec::new(
            Opts::new(
                "llmesh_cache_bytes",
                "Bytes of answers (and prompt vectors) in this sidecar's in-memory response cache.",
            ),
            &["route"],
        )?;
        let structured_outputs = IntCounterVec::new(
            Opts::new(
                "llmesh_structured_outputs_total",
                "Answers checked against the JSON schema their request asked for, by result: valid, retried (did not match; asked again), invalid (did not match after the route's retries; refused).",
            ),
            &["route", "result"],
        )?;
        let upgrades = IntCounterVec::new(
            Opts::new(
                "llmesh_upgrades_total",
                "WebSocket upgrades (realtime) passed through, by outcome (open, refused, failed).",
            ),
            &["endpoint", "provider", "outcome"],
        )?;
        let batch_results = IntCounterVec::new(
            Opts::new(
                "llmesh_batch_results_total",
                "Batch results accounted as the app downloaded them (their tokens and cost are in llmesh_tokens_total and llmesh_cost_usd_total).",
            ),
            &["route", "provider", "model"],
        )?;
        let upgrades_active = IntGauge::new(
            "llmesh_upgrades_active",
            "WebSocket connections open through the sidecar.",
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "llmesh_tokens_total",
                "Tokens accounted, by type (input, output, cached_input, cache_write; the last two are part of input).",
            ),
            &["route", "provider", "model", "type"],
        )?;
        let cost = CounterVec::new(
            Opts::new(
                "llmesh_cost_usd_total",
                "Cost in USD from the provider's price table in the policy.",
            ),
            &["route", "provider", "model"],
        )?;
        let cache_saved = CounterVec::new(
            Opts::new(
                "llmesh_provider_cache_saved_usd_total",
                "USD the provider's prompt cache saved: cached input tokens times the difference between the input and cachedInput prices.",
            ),
            &["route", "provider", "model"],
        )?;
        let unpriced = IntCounterVec::new(
            Opts::new(
                "llmesh_unpriced_requests_total",
                "Calls whose model has no price in the policy: served, and counted at cost 0 in llmesh_cost_usd_total (add pricing to the LLMProvider's model to count them).",
            ),
            &["route", "provider", "model"],
        )?;
        let model_version = IntGaugeVec::new(
            Opts::new(
                "llmesh_backend_model_version_info",
                "1 for the model version each backend last answered with (the model field of its answers, e.g. gpt-4o-2024-08-06 for gpt-4o).",
            ),
            &["route", "provider", "model", "version"],
        )?;
        let model_version_changes = IntCounterVec::new(
            Opts::new(
                "llmesh_backend_model_version_changes_total",
                "Times a backend answered with another model version than before (a provider updated what a model name points to).",
            ),
            &["route", "provider", "model"],
        )?;
        // Drift signals: what each model version of a backend answers, so a
        // version can be compared with its own past.
        let backend_output_tokens = HistogramVec::new(
            HistogramOpts::new(
                "llmesh_backend_output_tokens",
                "Output tokens per successful chat answer, per backend and the model version it answered with (version=\"unknown\" before the first answer naming one).",
            )
            .buckets(TOKEN_BUCKETS.to_vec()),
            DRIFT_LABELS,
        )?;
        let backend_answers = IntCounterVec::new(
            Opts::new(
                "llmesh_backend_answers_total",
                "Chat answers per backend and model version (streamed ones as the stream ended), by finish reason (stop, length, tool_calls, content_filter, other), refusal (true, false), tool_call (true, false) and JSON validity against the request's validated schema (valid, invalid, none without one).",
            ),
            &[
                "route",
                "provider",
                "model",
                "version",
                "finish_reason",
                "refusal",
                "tool_call",
                "json",
            ],
        )?;
        let backend_errors = IntCounterVec::new(
            Opts::new(
                "llmesh_backend_errors_total",
                "Failed upstream attempts per backend, by error class, under the model version the backend last answered with.",
            ),
            &["route", "provider", "model", "version", "error_type"],
        )?;
        let credentials = crate::identity::CredentialMetrics {
            ready: IntGaugeVec::new(
                Opts::new(
                    "llmesh_provider_credential_ready",
                    "1 while the sidecar holds a valid credential for a provider whose credential it obtains itself (cloud keys, workload identities), 0 while it cannot get one (its backends are skipped).",
                ),
                &["provider", "kind"],
            )?,
            refreshes: IntCounterVec::new(
                Opts::new(
                    "llmesh_provider_credential_refreshes_total",
                    "Credential fetches and refreshes from token endpoints (STS, Pod Identity, Google, Entra) by result (ok, error).",
                ),
                &["provider", "kind", "result"],
            )?,
        };
        let shadow_requests = IntCounterVec::new(
            Opts::new(
                "llmesh_shadow_requests_total",
                "Shadow calls of routes with a mirror, by candidate and outcome (answered, failed, skipped_policy: the candidate's provider is not cleared for the request, skipped_budget: the mirror's caps are used).",
            ),
            &["route", "provider", "model", "outcome"],
        )?;
        let shadow_tokens = IntCounterVec::new(
            Opts::new(
                "llmesh_shadow_tokens_total",
                "Tokens of shadow calls (traffic=\"shadow\"), by candidate and type; not in llmesh_tokens_total.",
            )
            .const_label("traffic", "shadow"),
            &["route", "provider", "model", "type"],
        )?;
        let shadow_cost = CounterVec::new(
            Opts::new(
                "llmesh_shadow_cost_usd_total",
                "Cost of shadow calls in USD (traffic=\"shadow\"); not in llmesh_cost_usd_total, never charged to the client's quotas.",
            )
            .const_label("traffic", "shadow"),
            &["route", "provider", "model"],
        )?;
        let shadow_latency = HistogramVec::new(
            HistogramOpts::new(
                "llmesh_shadow_latency_seconds",
                "Time to the whole answer of mirrored requests, per side (role: primary, candidate).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "role"],
        )?;
        let shadow_output_tokens = HistogramVec::new(
            HistogramOpts::new(
                "llmesh_shadow_output_tokens",
                "Output tokens of mirrored requests' answers, per side (role: primary, candidate).",
            )
            .buckets(TOKEN_BUCKETS.to_vec()),
            &["route", "role"],
        )?;
        let shadow_answers = IntCounterVec::new(
            Opts::new(
                "llmesh_shadow_answers_total",
                "Whole answers of mirrored requests per side, by finish reason (refusal for a refusal) and JSON validity against the request's schema (valid, invalid, none).",
            ),
            &["route", "role", "finish_reason", "json"],
        )?;
        let shadow_agreement = IntCounterVec::new(
            Opts::new(
                "llmesh_shadow_agreement_total",
                "Pairs of answers compared, by signal (finish_reason, tool, json) and whether the candidate's matched the primary's (same, differ).",
            ),
            &["route", "signal", "result"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "llmesh_upstream_errors_total",
                "Failed upstream calls by error class.",
            ),
            &["route", "provider", "error_type"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "llmesh_attempts_total",
                "Upstream attempts by outcome (ok or the error class).",
            ),
            &["route", "provider", "model", "outcome"],
        )?;
        let attempt_first_byte = HistogramVec::new(
            HistogramOpts::new(
                "llmesh_attempt_first_byte_seconds",
                "Time from an upstream call to its first byte or event, per backend, of the calls that answered.",
            )
            .buckets(TTFC_BUCKETS.to_vec()),
            &["route", "provider", "model"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "llmesh_retries_total",
                "Retries, by the class of the failure retried.",
            ),
            &["route", "reason"],
        )?;
        let failovers = IntCounterVec::new(
            Opts::new(
                "llmesh_failovers_total",
                "Moves to a fallback chain, by the provider failed away from and the class.",
            ),
            &["route", "from", "reason"],
        )?;
        let budget_exhausted = IntCounterVec::new(
            Opts::new(
                "llmesh_retry_budget_exhausted_total",
                "Retries or failovers refused because the route's retry budget was spent.",
            ),
            &["route"],
        )?;
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "llmesh_circuit_breaker_state",
                "Circuit breaker per backend: 0 closed, 1 open, 2 half-open.",
            ),
            &["route", "provider", "model"],
        )?;
        let preflight_skips = IntCounterVec::new(
            Opts::new(
                "llmesh_context_preflight_skips_total",
                "Backends skipped because the prompt plus max_tokens cannot fit their context window.",
            ),
            &["route", "provider", "model"],
        )?;
        let hedges = IntCounterVec::new(
            Opts::new(
                "llmesh_hedges_total",
                "Hedged second attempts, by whether the hedge won the race or lost it.",
            ),
            &["route", "result"],
        )?;
        let redactions = IntCounterVec::new(
            Opts::new(
                "llmesh_redactions_total",
                "Values the data policy found in requests, by class and the action taken (redact, mask, block, restrict).",
            ),
            &["class", "action"],
        )?;
        let rejected_resources = IntGaugeVec::new(
            Opts::new(
                "llmesh_config_rejected_resources",
                "Policy objects currently rejected (unreadable or failing to compile) by kind; each is left out or served at its last valid version.",
            ),
            &["kind"],
        )?;
        let continuations = IntCounterVec::new(
            Opts::new(
                "llmesh_stream_continuations_total",
                "Broken streams continued on another backend (streamContinuation), by the provider that broke and the result.",
            ),
            &["route", "provider", "result"],
        )?;
        let outlier_ejections = IntCounterVec::new(
            Opts::new(
                "llmesh_outlier_ejections_total",
                "Backends ejected for being much slower than their peers.",
            ),
            &["route", "provider", "model"],
        )?;
        let in_flight = IntGauge::new(
            "llmesh_requests_in_flight",
            "Requests being served right now.",
        )?;
        let tokenizer_fallbacks = IntCounter::new(
            "llmesh_tokenizer_fallbacks_total",
            "Prompts counted from their byte length because the tokenizer failed.",
        )?;
        let log_lines_dropped = IntCounter::new(
            "llmesh_log_lines_dropped_total",
            "Log lines dropped because stdout could not keep up (the log writer's buffer was full).",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "llmesh_config_reloads_total",
                "Policy reloads by result (success, failure).",
            ),
            &["result"],
        )?;
        let generation = IntGauge::new(
            "llmesh_config_generation",
            "Generation of the active policy snapshot; increases on every swap.",
        )?;
        let last_reload_ok = IntGauge::new(
            "llmesh_config_last_reload_successful",
            "1 if the last policy load succeeded, 0 if the last good snapshot is still in use after a failure.",
        )?;
        let last_reload_time = Gauge::new(
            "llmesh_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful policy load.",
        )?;
        let quota_decisions = IntCounterVec::new(
            Opts::new(
                "llmesh_quota_decisions_total",
                "Requests a quota covered, by decision (allow, warn, downgrade, reject) and the quota (namespace/name) that decided.",
            ),
            &["decision", "quota"],
        )?;
        let quota_alerts = IntCounterVec::new(
            Opts::new(
                "llmesh_quota_alerts_total",
                "Quota alert thresholds (alertThresholds, percent of a limit) reached in a window, seen by this sidecar.",
            ),
            &["quota", "limit", "threshold"],
        )?;
        let quota_gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["quota", "limit", "scope"])
        };
        let quota_used = quota_gauge(
            "llmesh_quota_used",
            "Use of a quota's limit in the current window as last seen in the store (USD for cost limits; highest scope id for non-namespace scopes).",
        )?;
        let quota_limit = quota_gauge(
            "llmesh_quota_limit",
            "A quota's limit (USD for cost limits).",
        )?;
        let quota_remaining = quota_gauge(
            "llmesh_quota_remaining",
            "What is left of a quota's limit in the current window (USD for cost limits).",
        )?;
        let provider_budget_exhausted = IntGaugeVec::new(
            Opts::new(
                "llmesh_provider_budget_exhausted",
                "1 while a provider's published per-minute limits (less headroom) are used up and routing prefers other backends.",
            ),
            &["provider"],
        )?;
        let quota_store_degraded = IntGauge::new(
            "llmesh_quota_store_degraded",
            "1 while the shared quota store is unreachable and quotas are counted locally or fail closed.",
        )?;
        let quota_store_errors = IntCounter::new(
            "llmesh_quota_store_errors_total",
            "Quota store operations that failed (timeouts, connection errors).",
        )?;
        let quota_local_admissions = IntCounter::new(
            "llmesh_quota_local_admissions_total",
            "Admissions decided on this sidecar's share of the limits while the shared store was unreachable.",
        )?;
        let quota_fail_closed = IntCounter::new(
            "llmesh_quota_fail_closed_total",
            "Requests refused because a fail-closed quota could not be checked.",
        )?;
        let quota_dropped_settlements = IntCounter::new(
            "llmesh_quota_settlements_dropped_total",
            "Settlements that could not be replayed on the shared store (queue full), logged.",
        )?;
        let quota_pending_settlements = IntGauge::new(
            "llmesh_quota_settlements_pending",
            "Settlements waiting for the shared store to come back.",
        )?;
        let usage_records = IntCounterVec::new(
            Opts::new(
                "llmesh_usage_records_total",
                "Usage records for the Redis usage stream, by result (delivered, dropped).",
            ),
            &["result"],
        )?;
        let usage_write_failures = IntCounter::new(
            "llmesh_usage_write_failures_total",
            "Writes of usage records to Redis that failed and were retried.",
        )?;
        let usage_records_queued = IntGauge::new(
            "llmesh_usage_records_queued",
            "Usage records waiting to be written to Redis.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "llmesh_build_info",
                "Build of the running sidecar; always 1.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(token_usage.clone()))?;
        registry.register(Box::new(time_to_first_chunk.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(passthrough.clone()))?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(cache_saved_usd.clone()))?;
        registry.register(Box::new(semantic_lookups.clone()))?;
        registry.register(Box::new(semantic_similarity.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(structured_outputs.clone()))?;
        registry.register(Box::new(upgrades.clone()))?;
        registry.register(Box::new(upgrades_active.clone()))?;
        registry.register(Box::new(batch_results.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(cost.clone()))?;
        registry.register(Box::new(cache_saved.clone()))?;
        registry.register(Box::new(unpriced.clone()))?;
        registry.register(Box::new(model_version.clone()))?;
        registry.register(Box::new(model_version_changes.clone()))?;
        registry.register(Box::new(backend_output_tokens.clone()))?;
        registry.register(Box::new(backend_answers.clone()))?;
        registry.register(Box::new(backend_errors.clone()))?;
        registry.register(Box::new(credentials.ready.clone()))?;
        registry.register(Box::new(credentials.refreshes.clone()))?;
        registry.register(Box::new(shadow_requests.clone()))?;
        registry.register(Box::new(shadow_tokens.clone()))?;
        registry.register(Box::new(shadow_cost.clone()))?;
        registry.register(Box::new(shadow_latency.clone()))?;
        registry.register(Box::new(shadow_output_tokens.clone()))?;
        registry.register(Box::new(shadow_answers.clone()))?;
        registry.register(Box::new(shadow_agreement.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(log_lines_dropped.clone()))?;
        registry.register(Box::new(tokenizer_fallbacks.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(attempt_first_byte.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(failovers.clone()))?;
        registry.register(Box::new(budget_exhausted.clone()))?;
        registry.register(Box::new(breaker_state.clone()))?;
        registry.register(Box::new(preflight_skips.clone()))?;
        registry.register(Box::new(hedges.clone()))?;
        registry.register(Box::new(continuations.clone()))?;
        registry.register(Box::new(rejected_resources.clone()))?;
        registry.register(Box::new(redactions.clone()))?;
        registry.register(Box::new(outlier_ejections.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(generation.clone()))?;
        registry.register(Box::new(last_reload_ok.clone()))?;
        registry.register(Box::new(last_reload_time.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(quota_decisions.clone()))?;
        registry.register(Box::new(quota_alerts.clone()))?;
        registry.register(Box::new(quota_used.clone()))?;
        registry.register(Box::new(quota_limit.clone()))?;
        registry.register(Box::new(quota_remaining.clone()))?;
        registry.register(Box::new(provider_budget_exhausted.clone()))?;
        registry.register(Box::new(quota_store_degraded.clone()))?;
        registry.register(Box::new(quota_store_errors.clone()))?;
        registry.register(Box::new(quota_local_admissions.clone()))?;
        registry.register(Box::new(quota_fail_closed.clone()))?;
        registry.register(Box::new(quota_dropped_settlements.clone()))?;
        registry.register(Box::new(quota_pending_settlements.clone()))?;
        registry.register(Box::new(usage_records.clone()))?;
        registry.register(Box::new(usage_write_failures.clone()))?;
        registry.register(Box::new(usage_records_queued.clone()))?;
        // Only a sidecar that exports traces has this family.
        if crate::trace::enabled() {
            registry.register(Box::new(crate::trace::export_failures().clone()))?;
        }
        // Make the reload families visible before the first reload happens.
        reloads.with_label_values(&["success"]);
        reloads.with_label_values(&["failure"]);
        usage_records.with_label_values(&["delivered"]);
        usage_records.with_label_values(&["dropped"]);
        for (kind, _) in llmesh_kube::KINDS {
            rejected_resources.with_label_values(&[kind]);
        }

        Ok(Metrics {
            registry,
            duration,
            token_usage,
            time_to_first_chunk,
            requests,
            passthrough,
            cache_lookups,
            cache_saved_usd,
            semantic_lookups,
            semantic_similarity,
            cache_entries,
            cache_bytes,
            structured_outputs,
            upgrades,
            upgrades_active,
            batch_results,
            tokens,
            cost,
            cache_saved,
            unpriced,
            model_version,
            model_version_changes,
            backend_output_tokens,
            backend_answers,
            backend_errors,
            credentials,
            shadow_requests,
            shadow_tokens,
            shadow_cost,
            shadow_latency,
            shadow_output_tokens,
            shadow_answers,
            shadow_agreement,
            upstream_errors,
            attempts,
            attempt_first_byte,
            retries,
            failovers,
            budget_exhausted,
            breaker_state,
            preflight_skips,
            hedges,
            continuations,
            rejected_resources,
            redactions,
            outlier_ejections,
            in_flight,
            log_lines_dropped,
            tokenizer_fallbacks,
            quota_decisions,
            quota_alerts,
            quota_used,
            quota_limit,
            quota_remaining,
            provider_budget_exhausted,
            quota_store_degraded,
            quota_store_errors,
            quota_local_admissions,
            quota_fail_closed,
            quota_dropped_settlements,
            quota_pending_settlements,
            usage_records,
            usage_write_failures,
            usage_records_queued,
            reloads,
            generation,
            last_reload_ok,
            last_reload_time,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

/// A series cached with the model label it was made for.
struct Cached<T> {
    model: String,
    series: T,
}

/// The series of one route backend whose labels stay the same from request
/// to request (route, provider, model label), looked up in their family
/// once and kept with the backend in the policy table, so a request's
/// accounting increments them without hashing labels or taking the
/// family's lock. Each is made on first use, so the exposition is the same
/// as without the cache; a request whose model label differs from the
/// cached one (a backend without a fixed model on a route with several
/// model patterns) falls back to the family.
#[derive(Default)]
pub struct SeriesCache {
    requests_ok: OnceLock<Cached<IntCounter>>,
    tokens: OnceLock<Cached<[IntCounter; 4]>>,
    cost: OnceLock<Cached<Counter>>,
    cache_saved: OnceLock<Cached<Counter>>,
    attempts_ok: OnceLock<Cached<IntCounter>>,
    first_byte: OnceLock<Cached<Histogram>>,
    /// Replaced when the model label or the version differs (a version
    /// changes rarely): the drift series of the current version.
    drift: arc_swap::ArcSwapOption<DriftSeries>,
}

/// The drift series of one model version of a backend.
struct DriftSeries {
    model: String,
    version: String,
    output_tokens: OnceLock<Histogram>,
    /// The most frequent answer: stopped, no refusal, no tool, no schema.
    plain: OnceLock<IntCounter>,
}

fn cached<'a, T>(
    cell: &'a OnceLock<Cached<T>>,
    model: &str,
    make: impl FnOnce() -> T,
) -> Option<&'a T> {
    let c = cell.get_or_init(|| Cached {
        model: model.to_string(),
        series: make(),
    });
    (c.model == model).then_some(&c.series)
}

impl SeriesCache {
    /// `llmesh_requests_total{code="200", error_type=""}` + 1.
    pub fn request_ok(&self, m: &Metrics, route: &str, provider: &str, model: &str) {
        let make = || {
            m.requests
                .with_label_values(&[route, provider, model, "200", ""])
        };
        match cached(&self.requests_ok, model, make) {
            Some(c) => c.inc(),
            None => make().inc(),
        }
    }

    /// `llmesh_tokens_total` by type: input, output, cached input, cache
    /// write.
    pub fn tokens(&self, m: &Metrics, route: &str, provider: &str, model: &str, n: [u64; 4]) {
        let make =
            || TOKEN_TYPES.map(|kind| m.tokens.with_label_values(&[route, provider, model, kind]));
        match cached(&self.tokens, model, make) {
            Some(c) => c.iter().zip(n).for_each(|(c, n)| c.inc_by(n)),
            None => make().iter().zip(n).for_each(|(c, n)| c.inc_by(n)),
        }
    }

    /// `llmesh_cost_usd_total` + `usd`.
    pub fn cost(&self, m: &Metrics, route: &str, provider: &str, model: &str, usd: f64) {
        let make = || m.cost.with_label_values(&[route, provider, model]);
        match cached(&self.cost, model, make) {
            Some(c) => c.inc_by(usd),
            None => make().inc_by(usd),
        }
    }

    /// `llmesh_provider_cache_saved_usd_total` + `usd`.
    pub fn cache_saved(&self, m: &Metrics, route: &str, provider: &str, model: &str, usd: f64) {
        let make = || m.cache_saved.with_label_values(&[route, provider, model]);
        match cached(&self.cache_saved, model, make) {
            Some(c) => c.inc_by(usd),
            None => make().inc_by(usd),
        }
    }

    /// `llmesh_attempt_first_byte_seconds` observes `seconds`.
    pub fn first_byte(&self, m: &Metrics, route: &str, provider: &str, model: &str, seconds: f64) {
        let make = || {
            m.attempt_first_byte
                .with_label_values(&[route, provider, model])
        };
        match cached(&self.first_byte, model, make) {
            Some(h) => h.observe(seconds),
            None => make().observe(seconds),
        }
    }

    /// `llmesh_attempts_total{outcome="ok"}` + 1 (`model` is the backend's
    /// fixed model or empty).
    pub fn attempt_ok(&self, m: &Metrics, route: &str, provider: &str, model: &str) {
        let make = || {
            m.attempts
                .with_label_values(&[route, provider, model, "ok"])
        };
        match cached(&self.attempts_ok, model, make) {
            Some(c) => c.inc(),
            None => make().inc(),
        }
    }

    /// The drift series of a successful answer of model `version`:
    /// `llmesh_backend_output_tokens` when the output is known, and
    /// `llmesh_backend_answers_total` when the answer's signals are (every
    /// finished OpenAI or Anthropic chat answer, whole or streamed).
    pub fn answered(
        &self,
        m: &Metrics,
        labels: [&str; 4],
        output_tokens: Option<u64>,
        signals: Option<&crate::signals::Signals>,
    ) {
        let [route, provider, model, version] = labels;
        let current = self.drift.load();
        let fresh;
        let d: &DriftSeries = match current.as_deref() {
            Some(d) if d.model == model && d.version == version => d,
            _ => {
                fresh = Arc::new(DriftSeries {
                    model: model.to_string(),
                    version: version.to_string(),
                    output_tokens: OnceLock::new(),
                    plain: OnceLock::new(),
                });
                self.drift.store(Some(fresh.clone()));
                &fresh
            }
        };
        if let Some(n) = output_tokens {
            d.output_tokens
                .get_or_init(|| m.backend_output_tokens.with_label_values(&labels))
                .observe(n as f64);
        }
        let Some(s) = signals else {
            return;
        };
        let tool = s.tool.is_some();
        if s.reason == "stop" && !s.refusal && !tool && s.json == "none" {
            d.plain
                .get_or_init(|| {
                    m.backend_answers.with_label_values(&[
                        route, provider, model, version, "stop", "false", "false", "none",
                    ])
                })
                .inc();
            return;
        }
        let flag = |b: bool| if b { "true" } else { "false" };
        m.backend_answers
            .with_label_values(&[
                route,
                provider,
                model,
                version,
                s.reason,
                flag(s.refusal),
                flag(tool),
                s.json,
            ])
            .inc();
    }
}
