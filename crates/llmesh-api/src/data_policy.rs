//! `LLMDataPolicy`: which data is sensitive and what happens to it on the
//! way to a provider.
//!
//! Validated and kept in the compiled policy; enforcement comes with the
//! data classification work.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{CLASS_NAME, HEADER_NAME};
use crate::status::LLMDataPolicyStatus;

/// Data classes llmesh detects by itself; any other class name is a custom
/// class and brings its own `patterns` or `dictionary`.
pub const BUILTIN_CLASSES: [&str; 7] = [
    "email",
    "phone",
    "payment-card",
    "iban",
    "us-ssn",
    "ip-address",
    "secret",
];

// The CEL rules below spell out BUILTIN_CLASSES; a test keeps them equal.
const BUILTIN_TAKES_NOTHING: &str = "!(self.class in ['email', 'phone', 'payment-card', 'iban', 'us-ssn', 'ip-address', 'secret']) || (!has(self.patterns) && !has(self.dictionary))";
const CUSTOM_NEEDS_ONE: &str = "self.class in ['email', 'phone', 'payment-card', 'iban', 'us-ssn', 'ip-address', 'secret'] || has(self.patterns) != has(self.dictionary)";

/// What happens to a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataAction {
    /// Replaced by a placeholder upstream; restored in the answer when
    /// `restoreResponses` is on.
    Redact,
    /// Replaced by a fixed mask, never restored.
    Mask,
    /// The request is refused.
    Block,
    /// The request only goes to providers whose `clearance` lists the class.
    Restrict,
}

/// One class of sensitive data and its action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(BUILTIN_TAKES_NOTHING)
    .message("a built-in class takes no patterns or dictionary"))]
#[x_kube(validation = Rule::new(CUSTOM_NEEDS_ONE)
    .message("a custom class needs exactly one of patterns or dictionary"))]
pub struct DataRule {
    /// A built-in class (`email`, `phone`, `payment-card`, `iban`,
    /// `us-ssn`, `ip-address`, `secret`) or a custom class name.
    #[schemars(pattern(CLASS_NAME), length(max = 63))]
    pub class: String,
    /// What happens to a match.
    pub action: DataAction,
    /// Custom class: regular expressions (Rust `regex` syntax, no
    /// look-around) that find it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 1024)))]
    pub patterns: Vec<String>,
    /// Custom class: literal words or phrases that are the class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 1000), inner(length(min = 1, max = 256)))]
    pub dictionary: Vec<String>,
    /// Match `patterns` or `dictionary` regardless of case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive: bool,
    /// What to do with a pass-through body the sidecar cannot scan
    /// (multipart uploads, audio, binary files): `allow` sends it
    /// (default); `deny` refuses it unless the provider is cleared for this
    /// class.
    #[serde(default, skip_serializing_if = "Unscannable::is_allow")]
    pub unscannable: Unscannable,
    /// Requests in which this class was found may still be answered from
    /// a route's response cache and stored in it (default false: a request
    /// with any finding is never cached). They are keyed by the body as
    /// providers get it, so redacted values are stored as placeholders,
    /// and kept apart from requests with other classes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cacheable: bool,
}

/// A rule's verdict on bodies the detectors cannot read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Unscannable {
    /// Sent as they are.
    #[default]
    Allow,
    /// Refused unless the provider is cleared for the class.
    Deny,
}

impl Unscannable {
    fn is_allow(&self) -> bool {
        *self == Unscannable::Allow
    }
}

/// Spec of an `LLMDataPolicy`.
// Each printcolumn repeats `type_`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "llmesh.io",
    version = "v1alpha1",
    kind = "LLMDataPolicy",
    namespaced,
    status = "LLMDataPolicyStatus",
    shortname = "llmdp",
    category = "llmesh",
    doc = "What counts as sensitive data in requests (built-in and custom classes) and what happens to it: redact and restore, mask, block, or keep it to cleared providers.",
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.ruleCount"),
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
pub struct LLMDataPolicySpec {
    /// The classes and their actions, one rule per class.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["class".into()]))]
    pub rules: Vec<DataRule>,
    /// Header an app sets to declare a class for the whole request
    /// (default `x-llmesh-data-class`).
    #[serde(default = "default_class_header")]
    #[schemars(pattern(HEADER_NAME))]
    pub request_class_header: String,
    /// Put redacted values back into answers (default true).
    #[serde(default = "default_true")]
    pub restore_responses: bool,
}

fn default_class_header() -> String {
    "x-llmesh-data-class".into()
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_rules_list_exactly_the_builtin_classes() {
        let list = format!(
            "[{}]",
            BUILTIN_CLASSES
                .iter()
                .map(|c| format!("'{c}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(BUILTIN_TAKES_NOTHING.contains(&list), "{list}");
        assert!(CUSTOM_NEEDS_ONE.contains(&list), "{list}");
    }
}
