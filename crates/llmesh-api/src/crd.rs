//! The kinds as Kubernetes custom resources: their CustomResourceDefinitions
//! (what `make crds` writes to `crds/`) and the step from an object read
//! from the API server to what the policy compiler takes.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::document::{AnyResource, ObjectMeta, Resource};
use crate::{LLMDataPolicy, LLMProvider, LLMQuota, LLMRoute, ResourceKind, API_VERSION};

/// The four CustomResourceDefinitions, in a fixed order (provider, route,
/// quota, data policy).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        LLMProvider::crd(),
        LLMRoute::crd(),
        LLMQuota::crd(),
        LLMDataPolicy::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                kubernetes_formats(schema);
            }
        }
    }
    crds
}

/// `(kind, openAPIV3Schema as JSON)` of each CRD, for validating documents
/// the way the API server would (the tests and tools that check manifests).
pub fn crd_schemas() -> Vec<(String, serde_json::Value)> {
    crds()
        .into_iter()
        .filter_map(|crd| {
            let schema = crd
                .spec
                .versions
                .first()?
                .schema
                .as_ref()?
                .open_api_v3_schema
                .as_ref()?;
            Some((
                crd.spec.names.kind.clone(),
                serde_json::to_value(schema).ok()?,
            ))
        })
        .collect()
}

/// schemars names Rust's number types (`uint32`, `uint64`, `double`); the
/// API server knows `int32` and `int64` and warns about the rest on every
/// install. Unsigned integers become `int64` (a `u32` keeps its upper
/// bound, so the server refuses what the sidecar could not read); numbers
/// lose the format, which only ever described the Rust type.
fn kubernetes_formats(s: &mut JSONSchemaProps) {
    match (s.type_.as_deref(), s.format.as_deref()) {
        (Some("integer"), Some("uint32")) => {
            s.format = Some("int64".into());
            let max = f64::from(u32::MAX);
            s.maximum = Some(s.maximum.map_or(max, |m| m.min(max)));
        }
        (Some("integer"), Some("uint64")) => s.format = Some("int64".into()),
        (Some("number"), Some(_)) => s.format = None,
        _ => {}
    }
    for child in s.properties.iter_mut().flat_map(|p| p.values_mut()) {
        kubernetes_formats(child);
    }
    match &mut s.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => kubernetes_formats(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(kubernetes_formats)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(value)) = &mut s.additional_properties {
        kubernetes_formats(value);
    }
}

/// Why the CRDs could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render CRD {name} as YAML: {source}")]
pub struct RenderError {
    /// `metadata.name` of the CRD.
    pub name: String,
    /// The serializer's error.
    pub source: serde_yaml::Error,
}

const HEADER: &str = "# Generated from crates/llmesh-api by `make crds`; do not edit.\n";

/// The files `make crds` writes into `crds/`, as (file name, contents):
/// `llmesh.io_<plural>.yaml` per kind, then `all.yaml` with all four.
pub fn crd_files() -> Result<Vec<(String, String)>, RenderError> {
    let mut files = Vec::new();
    let mut all = String::from(HEADER);
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let yaml = serde_yaml::to_string(&crd).map_err(|source| RenderError {
            name: name.clone(),
            source,
        })?;
        all.push_str("---\n");
        all.push_str(&yaml);
        // `llmproviders.llmesh.io` -> `llmesh.io_llmproviders.yaml`
        let (plural, group) = name.split_once('.').unwrap_or((&name, ""));
        files.push((format!("{group}_{plural}.yaml"), format!("{HEADER}{yaml}")));
    }
    files.push(("all.yaml".to_string(), all));
    Ok(files)
}

// === impl From<kube object> for AnyResource ===
//
// A watch hands out the kube-generated types; the compiler takes the same
// `AnyResource` the file mode parses, so both modes share one path. Only
// the metadata llmesh reads is carried over, and of status only an
// LLMRoute's canary progress.

fn meta(m: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.unwrap_or_default(),
        namespace: m.namespace,
        labels: m.labels.unwrap_or_default(),
        annotations: m.annotations.unwrap_or_default(),
        generation: m.generation,
    }
}

fn resource<S>(kind: ResourceKind, metadata: ObjectMeta, spec: S) -> Resource<S> {
    Resource {
        api_version: API_VERSION.to_string(),
        kind: kind.as_str().to_string(),
        metadata,
        spec,
        status: None,
    }
}

impl From<LLMProvider> for AnyResource {
    fn from(o: LLMProvider) -> Self {
        AnyResource::Provider(resource(ResourceKind::Provider, meta(o.metadata), o.spec))
    }
}

impl From<LLMRoute> for AnyResource {
    fn from(o: LLMRoute) -> Self {
        let canary = o.status.and_then(|s| s.canary);
        let mut r = resource(ResourceKind::Route, meta(o.metadata), o.spec);
        r.status = canary.map(|c| crate::document::Observed { canary: Some(c) });
        AnyResource::Route(r)
    }
}

impl From<LLMQuota> for AnyResource {
    fn from(o: LLMQuota) -> Self {
        AnyResource::Quota(resource(ResourceKind::Quota, meta(o.metadata), o.spec))
    }
}

impl From<LLMDataPolicy> for AnyResource {
    fn from(o: LLMDataPolicy) -> Self {
        AnyResource::DataPolicy(resource(ResourceKind::DataPolicy, meta(o.metadata), o.spec))
    }
}
