//! `LLMProvider`: an upstream API, its key, its models and their prices.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{CLASS_NAME, HEADER_NAME, OBJECT_NAME, SECRET_KEY};
use crate::status::PolicyStatus;

/// Wire format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApiSchema {
    /// OpenAI's own API.
    Openai,
    /// Any OpenAI-compatible API: DeepSeek, Mistral, Qwen, vLLM, Groq...
    OpenaiCompatible,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini generateContent API.
    Gemini,
}

/// Where the provider key comes from. Exactly one of `env`, `file` and
/// `secretKeyRef` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "[has(self.env), has(self.file), has(self.secretKeyRef)].filter(x, x).size() == 1"
).message("set exactly one of env, file or secretKeyRef"))]
pub struct CredentialRef {
    /// Name of an environment variable of the sidecar holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub env: Option<String>,
    /// Path of a file holding the key (surrounding whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub file: Option<String>,
    /// A key of a Secret in the provider's namespace. The injector mounts
    /// the Secret into the sidecar, which reads
    /// `/var/run/secrets/llmesh/<name>/<key>`; the app's containers never
    /// see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Header carrying the key instead of the schema's usual one
    /// (`Authorization: Bearer` for OpenAI, `x-api-key` for Anthropic,
    /// `x-goog-api-key` for Gemini), e.g. `api-key` for Azure OpenAI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HEADER_NAME))]
    pub header: Option<String>,
}

/// One key of a Kubernetes Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.key != '.' && self.key != '..'")
    .message("key must not be . or .."))]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(pattern(OBJECT_NAME), length(max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(pattern(SECRET_KEY), length(max = 253))]
    pub key: String,
}

/// Price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pricing {
    /// Uncached input (prompt) tokens.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub input: f64,
    /// Output (completion) tokens.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub output: f64,
    /// Input tokens served from the provider's prompt cache; the input price
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cached_input: Option<f64>,
    /// Input tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, billed at a premium: 1.25 times
    /// `input` for the 5-minute cache, 2 times for the 1-hour one); the
    /// input price when unset, as for OpenAI, which charges nothing extra
    /// for caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cache_write: Option<f64>,
    /// Fraction of these prices paid for calls made through the provider's
    /// Batch API (`0.5` for OpenAI's and Anthropic's half price); 1 when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub batch: Option<f64>,
}

/// One model a provider serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    /// The provider's name for the model.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Context window in tokens (prompt plus completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_window: Option<u64>,
    /// Price per million tokens; requests are still counted without one,
    /// at zero cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// The upstream serves the Responses API (`/v1/responses`) for this
    /// model, so Responses calls pass through untranslated. Default: true
    /// for schema `openai`, false for the others (their Responses calls are
    /// translated to the API they speak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses_api: Option<bool>,
}

/// The rate limits the provider publishes for the key, so llmesh can stay
/// under them (kept in the compiled policy; not enforced yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.requestsPerMinute) || has(self.tokensPerMinute)")
    .message("set requestsPerMinute or tokensPerMinute"))]
pub struct ProviderLimits {
    /// Requests per minute allowed for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u64>,
    /// Tokens (input plus output) per minute allowed for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
    /// Share of the limits kept free as a safety margin, 0 to 90 (default 20).
    #[serde(default = "default_headroom")]
    #[schemars(range(max = 90))]
    pub headroom_percent: u32,
}

fn default_headroom() -> u32 {
    20
}

/// Spec of an `LLMProvider`.
// Each printcolumn repeats `type_`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "llmesh.io",
    version = "v1alpha1",
    kind = "LLMProvider",
    namespaced,
    status = "PolicyStatus",
    shortname = "llmp",
    category = "llmesh",
    doc = "An upstream LLM API: its wire format, base URL, key, models with prices, published limits and data clearance.",
    printcolumn(name = "Schema", type_ = "string", json_path = ".spec.schema"),
    printcolumn(name = "Base URL", type_ = "string", json_path = ".spec.baseUrl"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.schema != 'openai-compatible' || has(self.baseUrl)")
    .message("baseUrl is required for schema openai-compatible"))]
pub struct LLMProviderSpec {
    /// The wire format.
    pub schema: ApiSchema,
    /// Base URL including the version segment, e.g. `https://api.openai.com/v1`.
    /// Defaults per schema; required for `openai-compatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/?#]+"))]
    pub base_url: Option<String>,
    /// The provider's name in metrics (`gen_ai_provider_name`), e.g.
    /// `deepseek`, `mistral_ai`. Defaults from the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub provider_name: Option<String>,
    /// The key. Optional for upstreams without authentication (a local vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
    /// PEM file with extra CA certificates trusted for this upstream, on top
    /// of the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub ca_file: Option<String>,
    /// Static headers added to every upstream request (e.g. `anthropic-version`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Models served, with context windows and prices.
    #[serde(default)]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub models: Vec<ModelSpec>,
    /// Data classes this provider is cleared to receive (built-in ones such
    /// as `email`, custom ones from an `LLMDataPolicy`, or labels such as
    /// `pii`, `confidential`). Kept in the policy; enforced with data
    /// classification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(CLASS_NAME), length(max = 63)), length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub clearance: Vec<String>,
    /// The provider's published rate limits for this key: sidecars pace
    /// their calls under them (less `headroomPercent`) and prefer other
    /// backends once a minute's budget is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ProviderLimits>,
}
