//! `LLMRoute.spec.probes`: golden prompts the controller's leader sends to
//! every backend of the route on an interval, each answer checked without
//! a judge model.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{CLASS_NAME, DECIMAL, DURATION};

/// The golden prompts of a route and how often they run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbesSpec {
    /// Time between two runs of the set against each backend (default
    /// `5m`, at least `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub interval: Option<String>,
    /// Longest wait for one probe's answer (default `60s`); a probe that
    /// takes longer fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION))]
    pub timeout: Option<String>,
    /// The model name requested; default the first entry of
    /// `spec.models` that is not a pattern. A backend with its own
    /// `model` is sent that one, as for any request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub model: Option<String>,
    /// At most this much spent on this route's probes per UTC day, in USD
    /// as a decimal string (`"0.50"`); once spent, runs wait for the next
    /// day. Unset: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DECIMAL))]
    pub max_cost_per_day: Option<String>,
    /// The prompts, each with its checks.
    #[schemars(length(min = 1, max = 20))]
    pub prompts: Vec<GoldenPrompt>,
}

/// One golden prompt: a conversation sent as a chat request, and what its
/// answer must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GoldenPrompt {
    /// Names the probe in status messages, metrics and Events (lowercase,
    /// digits and `-`, unique in the route).
    #[schemars(length(min = 1, max = 63), pattern(CLASS_NAME))]
    pub name: String,
    /// The conversation, in order; the last message is usually the
    /// user's.
    #[schemars(length(min = 1, max = 32))]
    pub messages: Vec<ProbeMessage>,
    /// `max_tokens` of the request (unset: the provider's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u32>,
    /// Functions the model may call, as in an OpenAI `tools` entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub tools: Vec<ProbeTool>,
    /// The checks; every one written must hold.
    #[serde(default)]
    pub expect: ProbeChecks,
}

/// One message of a golden prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeMessage {
    /// `system`, `user` or `assistant`.
    pub role: ProbeRole,
    /// The text.
    pub content: String,
}

/// Who says a message of a golden prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeRole {
    /// Instructions.
    System,
    /// The user.
    User,
    /// An earlier answer (few-shot examples).
    Assistant,
}

impl ProbeRole {
    /// As written in a chat request.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeRole::System => "system",
            ProbeRole::User => "user",
            ProbeRole::Assistant => "assistant",
        }
    }
}

/// A function a golden prompt offers the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeTool {
    /// The function's name.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema of its arguments (default: an object with no fixed
    /// properties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::json_schema_object")]
    pub parameters: Option<serde_json::Value>,
}

/// What the answer to a golden prompt must satisfy. No judge model: each
/// check is decided on the answer's text, tokens and tool calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeChecks {
    /// The answer must be JSON valid against this JSON Schema. The request
    /// asks for it (`response_format: json_schema`), as an app asking for
    /// structured output would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::json_schema_object")]
    pub json_schema: Option<serde_json::Value>,
    /// A regular expression (Rust `regex` syntax) the answer's text must
    /// match somewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub regex: Option<String>,
    /// Strings the answer's text must contain (case-sensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<String>,
    /// Strings the answer's text must not contain (case-sensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_contains: Vec<String>,
    /// The answer may use at most this many output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u32>,
    /// The answer must call this tool (one of the prompt's `tools`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tool_called: Option<String>,
}
