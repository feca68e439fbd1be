//! Kubernetes-shaped envelopes and the multi-document YAML reader.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    LLMDataPolicySpec, LLMProviderSpec, LLMQuotaSpec, LLMRouteSpec, ResourceKey, ResourceKind,
    API_VERSION,
};

/// The subset of Kubernetes object metadata llmesh reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name, unique per kind and namespace.
    pub name: String,
    /// Namespace; empty in file mode means "the sidecar's own".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Generation, set by the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// One resource of kind `K` with spec `S`, as written in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    /// Always `llmesh.io/v1alpha1`.
    pub api_version: String,
    /// The kind name.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The desired state.
    pub spec: S,
    /// The part of `status` the sidecar acts on: the canary's progress an
    /// `LLMRoute`'s controller wrote. A status of another shape is
    /// ignored, never a reason to refuse the object.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "observed"
    )]
    pub status: Option<Observed>,
}

/// What llmesh reads of a resource's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// `status.canary` of an `LLMRoute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::status::CanaryStatus>,
}

fn observed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Observed>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value::<Observed>(value)
        .ok()
        .filter(|o| o.canary.is_some()))
}

/// Any of the four kinds.
// Resources are parsed once per policy load, never on the request path, so
// the size difference between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AnyResource {
    /// An upstream provider.
    Provider(Resource<LLMProviderSpec>),
    /// A routing rule.
    Route(Resource<LLMRouteSpec>),
    /// A quota (accepted, not enforced yet).
    Quota(Resource<LLMQuotaSpec>),
    /// A data policy (accepted, not enforced yet).
    DataPolicy(Resource<LLMDataPolicySpec>),
}

impl AnyResource {
    /// Its kind.
    pub fn kind(&self) -> ResourceKind {
        match self {
            AnyResource::Provider(_) => ResourceKind::Provider,
            AnyResource::Route(_) => ResourceKind::Route,
            AnyResource::Quota(_) => ResourceKind::Quota,
            AnyResource::DataPolicy(_) => ResourceKind::DataPolicy,
        }
    }

    /// Its metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            AnyResource::Provider(r) => &r.metadata,
            AnyResource::Route(r) => &r.metadata,
            AnyResource::Quota(r) => &r.metadata,
            AnyResource::DataPolicy(r) => &r.metadata,
        }
    }

    /// `Kind/name`: the key objects are merged and matched by (its
    /// `Display` is the text for messages).
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(self.kind(), self.metadata().name.clone())
    }
}

/// Why a policy document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not YAML.
    #[error("document {index}: invalid YAML: {source}")]
    Yaml {
        /// Position of the document in the file, from 1.
        index: usize,
        /// The YAML error (carries line and column).
        source: serde_yaml::Error,
    },
    /// A document names an apiVersion other than llmesh.io/v1alpha1.
    #[error("document {index}: apiVersion {found:?} is not {API_VERSION}")]
    ApiVersion {
        /// Position of the document in the file, from 1.
        index: usize,
        /// What the document said.
        found: String,
    },
    /// A document has a kind llmesh does not know.
    #[error("document {index}: unknown kind {found:?} (expected LLMProvider, LLMRoute, LLMQuota or LLMDataPolicy)")]
    Kind {
        /// Position of the document in the file, from 1.
        index: usize,
        /// What the document said.
        found: String,
    },
    /// The document has the right kind but fields of the wrong shape.
    #[error("document {index} ({kind}/{name}): {message}")]
    Shape {
        /// Position of the document in the file, from 1.
        index: usize,
        /// The kind.
        kind: String,
        /// `metadata.name`, or `?`.
        name: String,
        /// The field error.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Option<serde_yaml::Value>,
}

/// Parses a multi-document YAML text holding llmesh resources.
///
/// Empty documents (a trailing `---`, comments only) are skipped. The first
/// error stops the parse: a policy file is taken whole or not at all.
pub fn parse_documents(text: &str) -> Result<Vec<AnyResource>, ParseError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|source| ParseError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        let head: Head = serde_yaml::from_value(value.clone())
            .map_err(|source| ParseError::Yaml { index, source })?;
        if head.api_version != API_VERSION {
            return Err(ParseError::ApiVersion {
                index,
                found: head.api_version,
            });
        }
        let name = head
            .metadata
            .as_ref()
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_string();
        // serde_path_to_error names the failing field (`spec.models`),
        // which a YAML value alone no longer can by line number.
        let shape = |e: serde_path_to_error::Error<serde_yaml::Error>| ParseError::Shape {
            index,
            kind: head.kind.clone(),
            name: name.clone(),
            message: format!("{}: {}", e.path(), e.inner()),
        };
        let res = match head.kind.as_str() {
            "LLMProvider" => {
                AnyResource::Provider(serde_path_to_error::deserialize(value).map_err(shape)?)
            }
            "LLMRoute" => {
                AnyResource::Route(serde_path_to_error::deserialize(value).map_err(shape)?)
            }
            "LLMQuota" => {
                AnyResource::Quota(serde_path_to_error::deserialize(value).map_err(shape)?)
            }
            "LLMDataPolicy" => {
                AnyResource::DataPolicy(serde_path_to_error::deserialize(value).map_err(shape)?)
            }
            _ => {
                return Err(ParseError::Kind {
                    index,
                    found: head.kind,
                })
            }
        };
        out.push(res);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_kinds_and_skips_empty_documents() {
        let text = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: p}
spec:
  schema: openai
  models: [{name: m}]
---
# only a comment
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: r}
spec:
  models: [m]
  backends: [{provider: p}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: q}
spec: {limits: {requestsPerMinute: 60}}
"#;
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].key().to_string(), "LLMProvider/p");
        assert_eq!(docs[1].key(), ResourceKey::new(ResourceKind::Route, "r"));
    }

    #[test]
    fn names_the_document_and_field_on_shape_errors() {
        let text = "apiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: r}\nspec:\n  models: 3\n";
        let err = parse_documents(text).unwrap_err().to_string();
        assert!(err.contains("LLMRoute/r"), "{err}");
        assert!(err.contains("models"), "{err}");
    }

    #[test]
    fn strategy_fields_only_go_with_their_type() {
        // What the CRD's CEL rules on `strategy` say, the parser says too.
        let doc = |strategy: &str| {
            format!("apiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: r}}\nspec:\n  models: [m]\n  backends: [{{provider: p}}]\n  strategy: {strategy}\n")
        };
        assert!(parse_documents(&doc("{type: cost, latencyBudget: 2s}")).is_ok());
        assert!(parse_documents(&doc("{type: latency, explorationPercent: 5}")).is_ok());
        for bad in [
            "{type: cost}",
            "{type: weighted, latencyBudget: 2s}",
            "{type: round-robin, explorationPercent: 5}",
            "{type: latency, latencyBudget: 2s}",
        ] {
            assert!(parse_documents(&doc(bad)).is_err(), "{bad}");
        }
        let err = parse_documents(&doc("{type: weighted, latencyBudget: 2s}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "spec.strategy: latencyBudget is required for type cost and only allowed there"
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_kind_and_version() {
        let err = parse_documents("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n").unwrap_err();
        assert!(matches!(err, ParseError::ApiVersion { .. }));
        let err = parse_documents("apiVersion: llmesh.io/v1alpha1\nkind: Pod\n").unwrap_err();
        assert!(matches!(err, ParseError::Kind { .. }));
        assert!(matches!(
            parse_documents("a: [").unwrap_err(),
            ParseError::Yaml { .. }
        ));
    }
}
