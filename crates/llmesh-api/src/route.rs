//! `LLMRoute`: which model names an app may ask for, where they go, and
//! what happens when an upstream fails.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::schema::{DURATION, MODEL_PATTERN};
use crate::status::LLMRouteStatus;

/// Spec of an `LLMRoute`.
// Each printcolumn repeats `type_`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "llmesh.io",
    version = "v1alpha1",
    kind = "LLMRoute",
    namespaced,
    status = "LLMRouteStatus",
    shortname = "llmr",
    category = "llmesh",
    doc = "Which model names an app may ask for, where they go (weighted or latency-aware backends, priorities, fallback chains by error class) and how failures are retried, broken and hedged.",
    printcolumn(name = "Models", type_ = "string", json_path = ".spec.models"),
    printcolumn(
        name = "Backend",
        type_ = "string",
        description = "Provider of the first backend (a printer column shows one value; -o wide lists all)",
        json_path = ".spec.backends[0].provider"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Canary",
        type_ = "string",
        description = "Phase of the canary of spec.canary",
        json_path = ".status.canary.phase"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        description = "Percent of requests the canary's candidate gets",
        json_path = ".status.canary.weight"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Backends",
        type_ = "string",
        priority = 1,
        json_path = ".spec.backends"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.backends.exists(b, !has(b.weight) || b.weight > 0)")
    .message("backend weights must add up to more than 0"))]
pub struct LLMRouteSpec {
    /// Model names clients may request through this route. An entry ending in
    /// `*` matches every name with that prefix (`gpt-4o*`).
    #[schemars(length(min = 1, max = 128), inner(pattern(MODEL_PATTERN)))]
    pub models: Vec<String>,
    /// Extra match conditions: request headers that must be present with
    /// exactly these values (names are case-insensitive), e.g.
    /// `x-llmesh-task: coding`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Evaluation order: routes are tried by ascending `order`, then by
    /// name; the first whose models and headers match serves the request.
    #[serde(default)]
    pub order: i32,
    /// How a backend is chosen among the available ones of the best
    /// priority group.
    #[serde(default)]
    pub strategy: Strategy,
    /// Where requests go.
    #[schemars(length(min = 1, max = 64))]
    pub backends: Vec<BackendRef>,
    /// Retries of failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Fallback chains by error class, tried in order once the route's own
    /// backends and retries are used up for that class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub fallbacks: Vec<FallbackChain>,
    /// Per-backend circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Race a second backend when the first is slow to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<HedgeSpec>,
    /// Deadlines for upstream calls.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Continue a stream that fails after the client has received part of
    /// it on another backend, instead of ending it with an error event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_continuation: Option<StreamContinuationSpec>,
    /// OpenAI and Anthropic endpoints the sidecar does not translate
    /// (audio, files, batches, moderations, realtime, ...) that may go to
    /// one provider when the request names no model this route serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<PassthroughSpec>,
    /// Response caching: the same request is answered from the cache
    /// instead of the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// What happens to answers of requests that ask for a JSON schema
    /// (`response_format`, `text.format`, `output_format`): by default
    /// each is validated against it and an invalid one asked again once.
    /// With a `schema`, requests that ask for none get that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_output: Option<StructuredOutputSpec>,
    /// Shadow traffic: a sampled share of requests is also sent, in the
    /// background, to a candidate backend, and the two answers' signals
    /// (latency, output tokens, finish reason, JSON validity, tool called)
    /// are compared in metrics. The client only ever gets the primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSpec>,
    /// Progressive canary: the controller moves a growing share of the
    /// route's requests to a candidate backend, step by step, while its
    /// gates pass, and moves it all back when they keep failing. The
    /// sidecars read the current share from `status.canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    /// Golden prompts: the controller's leader sends each to every backend
    /// of the route (its own, its fallbacks', the mirror's and the canary's
    /// candidate) on
    /// an interval, checks the answers (JSON schema, regex, contains, max
    /// tokens, tool called) and writes a `ProbesPassing` condition per
    /// backend in `status.backends`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<crate::probe::ProbesSpec>,
}

/// A progressive canary of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanarySpec {
    /// The candidate: an `LLMProvider` of the namespace and the model sent
    /// to it (the requested name when unset).
    pub backend: MirrorBackend,
    /// Percent of requests the candidate gets at each step, ascending,
    /// each 1 to 100 (default `[5, 25, 50, 100]`). After the last step
    /// holds with passing gates the canary is promoted: the candidate gets
    /// every request until the spec changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(range(min = 1, max = 100)))]
    pub steps: Vec<u32>,
    /// How long each step holds before the next (default `10m`); also how
    /// long gates may keep failing before the canary rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub hold: Option<String>,
    /// What must stay true of the candidate for the canary to go on. A
    /// gate not written is not checked; with none, steps advance on time.
    #[serde(default)]
    pub gates: CanaryGates,
}

/// The checks of a canary step, the candidate against the route's own
/// backends over the last `window`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryGates {
    /// The candidate's share of failed attempts may exceed the route's own
    /// backends' by at most this much (`0.02`: two points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub max_error_ratio_increase: Option<f64>,
    /// The candidate's p95 attempt latency may be at most this multiple of
    /// the route's own backends' (`1.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_latency_ratio: Option<f64>,
    /// The candidate's `ProbesPassing` condition (from `spec.probes`) must
    /// not be `False`.
    #[serde(default)]
    pub probes: bool,
    /// Of the shadow pairs of `spec.mirror` (when it mirrors to the same
    /// candidate), at least this share must agree on each signal
    /// (`0.9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub min_shadow_agreement: Option<f64>,
    /// Requests the candidate must have had in the window before the
    /// metric gates count (default 20); below, a step waits for traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// The range the metric gates are computed over (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub window: Option<String>,
}

/// Shadow traffic to a candidate backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorSpec {
    /// The candidate: an `LLMProvider` of the namespace and the model sent
    /// to it (the requested name when unset).
    pub backend: MirrorBackend,
    /// Share of the route's requests mirrored, 0 to 100 (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<f64>,
    /// At most this many shadow calls per minute, per sidecar (unset: no
    /// cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests_per_minute: Option<u32>,
    /// At most this much spent on shadow calls per hour, per sidecar, in
    /// USD as a decimal string (e.g. `"2.50"`); unset: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_cost_per_hour: Option<String>,
}

/// The candidate backend of a mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorBackend {
    /// Name of an `LLMProvider` in the same namespace.
    #[schemars(length(min = 1))]
    pub provider: String,
    /// Model name sent to it; the requested name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub model: Option<String>,
}

/// Structured-output enforcement of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StructuredOutputSpec {
    /// `validate` (default) or `ignore` (answers pass as they come).
    #[serde(default)]
    pub mode: StructuredOutputMode,
    /// How many times an answer that does not match the schema is asked
    /// again, with the validation error fed back (default 1, at most 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 3))]
    pub retries: Option<u32>,
    /// A JSON Schema (an object) the answers of this route must match: a
    /// chat, messages or Responses request that asks for no schema of its
    /// own is sent with this one (`response_format`, `text.format`,
    /// `output_format`) and its answer validated against it. A request
    /// with its own schema keeps it. Not with `mode: ignore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::json_schema_object")]
    pub schema: Option<serde_json::Value>,
    /// The schema's name in the request (OpenAI's `json_schema.name`;
    /// default `response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SCHEMA_NAME))]
    pub name: Option<String>,
}

/// A structured-output schema name, as OpenAI accepts it.
pub const SCHEMA_NAME: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// Whether answers are validated against the request's JSON schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StructuredOutputMode {
    /// Validated; an invalid answer is retried, then refused.
    #[default]
    Validate,
    /// Not validated.
    Ignore,
}

/// Response caching of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheSpec {
    /// Exact-match cache: a request identical to an earlier one (after the
    /// data policy: same model, messages, tools, sampling parameters,
    /// response format and API) gets the earlier answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactCacheSpec>,
    /// Semantic cache: a request whose last user message means nearly the
    /// same as an earlier one's (embedding similarity above `threshold`),
    /// with everything else in the request identical, gets the earlier
    /// answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<SemanticCacheSpec>,
}

/// The semantic response cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SemanticCacheSpec {
    /// The embeddings model that compares prompts.
    pub embedding: EmbeddingRef,
    /// Cosine similarity from which a stored prompt is the same question
    /// (default 0.95; 1 is the same text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 1.0))]
    pub threshold: Option<f64>,
    /// How long an answer is served from the cache, e.g. `10m` (default
    /// `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub ttl: Option<String>,
    /// Which requests are cached (default `always`: a route opts in to
    /// the semantic cache for every request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CacheMode>,
    /// Where prompts and answers are kept.
    #[serde(default)]
    pub store: CacheStore,
    /// Most answers kept for this route: by one sidecar (memory store) or
    /// per distinct request context in Redis (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_entries: Option<u32>,
    /// How long the embeddings call may take before the request goes on
    /// as a miss, e.g. `500ms` (default `2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub timeout: Option<String>,
}

/// An embeddings model of an `LLMProvider`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmbeddingRef {
    /// Name of an `LLMProvider` in the same namespace with `schema:
    /// openai` (any server of `/v1/embeddings`).
    #[schemars(length(min = 1))]
    pub provider: String,
    /// The model, as the provider names it.
    #[schemars(length(min = 1))]
    pub model: String,
    /// Vector length to ask for (OpenAI `dimensions`, for models that
    /// can shorten their vectors); the model's own length when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub dimensions: Option<u32>,
}

/// The exact-match response cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExactCacheSpec {
    /// How long an answer is served from the cache, e.g. `10m` (default
    /// `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub ttl: Option<String>,
    /// Which requests are cached.
    #[serde(default)]
    pub mode: CacheMode,
    /// Where answers are kept.
    #[serde(default)]
    pub store: CacheStore,
    /// Most answers kept by one sidecar for this route (memory store,
    /// default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_entries: Option<u32>,
    /// Most bytes of answers kept by one sidecar for this route (memory
    /// store, default 67108864, 64 MiB); an answer larger than a sixteenth
    /// of it is not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4096))]
    pub max_bytes: Option<u64>,
}

/// Which requests the exact cache serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Requests whose answer does not vary: `temperature: 0` (Gemini
    /// `generationConfig.temperature: 0`), and embeddings. Others opt in
    /// with the request header `x-llmesh-cache: on`.
    #[default]
    Deterministic,
    /// Every request, whatever its temperature.
    Always,
}

/// Where the exact cache keeps answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStore {
    /// In each sidecar, a bounded least-recently-used map.
    #[default]
    Memory,
    /// In the Redis of the quota store (`--quota-store`), shared by every
    /// sidecar of the namespace; a sidecar without one uses memory.
    Redis,
}

/// Governed pass-through: request paths sent as they are to one provider,
/// with its key injected and the client's credentials dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassthroughSpec {
    /// Request paths, as the client sends them (`/v1/files`); an entry
    /// ending in `*` matches every path with that prefix (`/v1/audio/*`).
    #[schemars(length(min = 1, max = 64), inner(pattern(PASSTHROUGH_PATH)))]
    pub paths: Vec<String>,
    /// Name of an `LLMProvider` in the same namespace that gets them.
    #[schemars(length(min = 1))]
    pub provider: String,
}

/// A path that starts with `/`, with at most a trailing `*`.
pub const PASSTHROUGH_PATH: &str = r"^/[A-Za-z0-9._~/:-]*\*?$";

/// Mid-stream continuation: when an upstream stream breaks after the client
/// got some of the answer, the request is resubmitted to a backend of the
/// route with the partial answer as the start of the assistant's turn, and
/// the new stream is spliced into the client's so it sees one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamContinuationSpec {
    /// How many times one response may be continued (default 1, at most 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3))]
    pub max_continuations: Option<u32>,
}

/// Backend selection strategy.
// Read through `StrategyFields`: serde lets a unit variant of an internally
// tagged enum ignore extra fields, so `{type: weighted, latencyBudget: 2s}`
// would pass silently where the CRD's CEL rule refuses it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "camelCase",
    tag = "type",
    try_from = "StrategyFields"
)]
pub enum Strategy {
    /// Weighted random by `weight` (the default).
    #[default]
    Weighted,
    /// In turn.
    RoundRobin,
    /// Power of two choices on outstanding requests.
    LeastRequest,
    /// Lowest moving average of time to first byte, exploring the others
    /// `explorationPercent` of the time so recovering backends are seen.
    Latency {
        /// Share of requests sent to a random backend (default 5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exploration_percent: Option<f64>,
    },
    /// The cheapest backend whose recent p90 latency is within budget.
    Cost {
        /// Latency budget, e.g. `2s`.
        latency_budget: String,
    },
}

/// `strategy` as written: one object, `type` and the optional fields, the
/// same shape as its CRD schema.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StrategyFields {
    #[serde(rename = "type")]
    kind: StrategyType,
    #[serde(default)]
    exploration_percent: Option<f64>,
    #[serde(default)]
    latency_budget: Option<String>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum StrategyType {
    Weighted,
    RoundRobin,
    LeastRequest,
    Latency,
    Cost,
}

// The messages are the CRD's CEL messages, so both modes say the same.
impl TryFrom<StrategyFields> for Strategy {
    type Error = &'static str;

    fn try_from(f: StrategyFields) -> Result<Self, Self::Error> {
        if f.exploration_percent.is_some() && f.kind != StrategyType::Latency {
            return Err("explorationPercent is only allowed for type latency");
        }
        match (f.kind, f.latency_budget) {
            (StrategyType::Cost, Some(latency_budget)) => Ok(Strategy::Cost { latency_budget }),
            (StrategyType::Cost, None) | (_, Some(_)) => {
                Err("latencyBudget is required for type cost and only allowed there")
            }
            (StrategyType::Weighted, None) => Ok(Strategy::Weighted),
            (StrategyType::RoundRobin, None) => Ok(Strategy::RoundRobin),
            (StrategyType::LeastRequest, None) => Ok(Strategy::LeastRequest),
            (StrategyType::Latency, None) => Ok(Strategy::Latency {
                exploration_percent: f.exploration_percent,
            }),
        }
    }
}

// The derive would describe this internally tagged enum as a `oneOf` of
// objects, each pinning `type` to a constant: not a structural schema, so
// the API server would refuse the CRD. It is written by hand as the one
// object it is on the wire, with CEL saying which field goes with which type.
impl JsonSchema for Strategy {
    fn schema_name() -> Cow<'static, str> {
        "Strategy".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "How a backend is chosen among the available ones of the best priority group.",
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {
                    "description": "weighted (default: random by weight), round-robin, least-request (power of two choices on requests in flight), latency (lowest moving average of time to first byte), cost (cheapest whose recent p90 latency is within latencyBudget).",
                    "type": "string",
                    "enum": ["weighted", "round-robin", "least-request", "latency", "cost"],
                },
                "explorationPercent": {
                    "description": "latency only: share of requests sent to a random backend so a recovering one is noticed (default 5).",
                    "type": "number",
                    "minimum": 0,
                    "maximum": 100,
                },
                "latencyBudget": {
                    "description": "cost only, required there: latency budget, e.g. `2s`.",
                    "type": "string",
                    "pattern": DURATION,
                },
            },
            "x-kubernetes-validations": [
                {
                    "rule": "self.type == 'cost' ? has(self.latencyBudget) : !has(self.latencyBudget)",
                    "message": "latencyBudget is required for type cost and only allowed there",
                },
                {
                    "rule": "!has(self.explorationPercent) || self.type == 'latency'",
                    "message": "explorationPercent is only allowed for type latency",
                },
            ],
        })
    }
}

/// One upstream target of a route or a fallback chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// Name of an `LLMProvider` in the same namespace.
    #[schemars(length(min = 1))]
    pub provider: String,
    /// Model name sent upstream; the requested name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub model: Option<String>,
    /// Relative share of traffic among backends of the same priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Priority group: 0 first; a higher group is used only while no
    /// backend of a lower group is available (breaker open).
    #[serde(default)]
    pub priority: u32,
}

fn default_weight() -> u32 {
    1
}

/// Classes of failed attempts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// TCP/TLS connection failed.
    Connect,
    /// No answer within a deadline, or a stalled stream.
    Timeout,
    /// 5xx from the upstream (or a broken stream).
    ServerError,
    /// 429.
    RateLimited,
    /// The prompt does not fit the model's context window.
    ContextLength,
    /// The provider's content filter refused.
    ContentFilter,
    /// 401/403: the provider refused the key.
    Auth,
    /// Any other 4xx: never retried or failed over.
    InvalidRequest,
}

impl ErrorClass {
    /// The kebab-case name, as in YAML and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::ServerError => "server-error",
            ErrorClass::RateLimited => "rate-limited",
            ErrorClass::ContextLength => "context-length",
            ErrorClass::ContentFilter => "content-filter",
            ErrorClass::Auth => "auth",
            ErrorClass::InvalidRequest => "invalid-request",
        }
    }
}

/// Retries of failed attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.when) || !('invalid-request' in self.when)")
    .message("invalid-request is never retried"))]
pub struct RetryPolicy {
    /// Extra attempts after the first (default 2).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Classes that are retried (default connect, timeout, server-error,
    /// rate-limited). `invalid-request` is never retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub when: Vec<ErrorClass>,
    /// First backoff step (default `100ms`); each retry waits a random time
    /// up to base × 2^retry (full jitter), or the upstream's Retry-After.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub backoff_base: Option<String>,
    /// Largest backoff (default `2s`). A Retry-After longer than this skips
    /// the retry on that backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub backoff_max: Option<String>,
    /// Retries and failovers may add at most this percentage of the
    /// route's request rate (default 20), over a 10 s window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub budget_percent: Option<f64>,
    /// Retries per second always allowed, whatever the rate (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_min_per_second: Option<u32>,
}

impl Default for RetryPolicy {
    /// What a route without `retries` gets: the defaults of every field.
    fn default() -> Self {
        RetryPolicy {
            attempts: default_attempts(),
            when: Vec::new(),
            backoff_base: None,
            backoff_max: None,
            budget_percent: None,
            budget_min_per_second: None,
        }
    }
}

fn default_attempts() -> u32 {
    2
}

/// A fallback chain for some error classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!('invalid-request' in self.when)")
    .message("invalid-request never fails over"))]
pub struct FallbackChain {
    /// The classes this chain handles.
    #[schemars(length(min = 1, max = 8))]
    pub when: Vec<ErrorClass>,
    /// Tried in order.
    #[schemars(length(min = 1, max = 64))]
    pub backends: Vec<BackendRef>,
}

/// Hedging: if the first attempt has produced nothing after `delay`, the
/// same request goes to a second backend too; the first to answer (for a
/// stream: to send its first event) wins and the other is cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HedgeSpec {
    /// Wait before hedging, e.g. `800ms`; `0s` races both at once.
    #[schemars(pattern(DURATION))]
    pub delay: String,
}

/// Circuit breaker settings, per backend of the route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// Open after this many failures in a row (default 5; 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Open when this percentage of calls in `window` failed (default 50;
    /// 0 disables)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failure_percent: Option<f64>,
    /// ...once the window holds at least this many calls (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// Failure-rate window (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub window: Option<String>,
    /// How long an open breaker stays open before probing (default `30s`,
    /// doubling on repeated trips up to `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub open_for: Option<String>,
    /// Probe requests let through while half-open (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    /// Outlier ejection: a backend whose time-to-first-byte average exceeds
    /// this many times the median of its peers' (at least two measured
    /// peers) is ejected for `openFor`, at most half of a route's backends
    /// at a time. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 1.0").message("must be a number above 1"))]
    pub slow_outlier_factor: Option<f64>,
}

/// Upstream deadlines, as durations such as `500ms`, `10s`, `5m`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// TCP and TLS connect (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub connect: Option<String>,
    /// Until the upstream's response headers (and, for streams, its first
    /// event) arrive (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub first_byte: Option<String>,
    /// Longest gap between two body chunks of a response (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub idle: Option<String>,
    /// The whole call, retries and body included (default 600s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub total: Option<String>,
}
