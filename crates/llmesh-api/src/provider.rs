//! `LLMProvider`: an upstream API, its key, its models and their prices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Wire format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// Where the provider key comes from. Exactly one source may be set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialRef {
    /// Name of an environment variable of the sidecar holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file holding the key (surrounding whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Header carrying the key instead of the schema's usual one
    /// (`Authorization: Bearer` for OpenAI, `x-api-key` for Anthropic,
    /// `x-goog-api-key` for Gemini), e.g. `api-key` for Azure OpenAI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// Price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pricing {
    /// Uncached input (prompt) tokens.
    #[serde(default)]
    pub input: f64,
    /// Output (completion) tokens.
    #[serde(default)]
    pub output: f64,
    /// Input tokens served from the provider's prompt cache; the input price
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

/// One model a provider serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    /// The provider's name for the model.
    pub name: String,
    /// Context window in tokens (prompt plus completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// Price per million tokens; requests are still counted without one,
    /// at zero cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// Spec of an `LLMProvider`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LLMProviderSpec {
    /// The wire format.
    pub schema: ApiSchema,
    /// Base URL including the version segment, e.g. `https://api.openai.com/v1`.
    /// Defaults per schema; required for `openai-compatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The provider's name in metrics (`gen_ai_provider_name`), e.g.
    /// `deepseek`, `mistral_ai`. Defaults from the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    /// The key. Optional for upstreams without authentication (a local vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
    /// PEM file with extra CA certificates trusted for this upstream, on top
    /// of the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Static headers added to every upstream request (e.g. `anthropic-version`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Models served, with context windows and prices.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
}
