//! The llmesh resource kinds as plain Rust types.
//!
//! Every other crate depends on this one, so it stays free of tokio, hyper and
//! the Kubernetes client: it is only the shape of the four kinds
//! (`LLMProvider`, `LLMRoute`, `LLMQuota`, `LLMDataPolicy`) in group
//! `llmesh.io/v1alpha1`, and the parser for the multi-document YAML files that
//! the file mode reads.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod document;
mod provider;
mod route;

pub use document::{parse_documents, AnyResource, ObjectMeta, ParseError, Resource};
pub use provider::{ApiSchema, CredentialRef, LLMProviderSpec, ModelSpec, Pricing};
pub use route::{
    BackendRef, CircuitBreakerSpec, ErrorClass, FallbackChain, HedgeSpec, LLMRouteSpec,
    RetryPolicy, Strategy, StreamContinuationSpec, Timeouts,
};

/// API group of every llmesh kind.
pub const GROUP: &str = "llmesh.io";
/// API version of every llmesh kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "llmesh.io/v1alpha1";

/// Spec of an `LLMQuota`.
///
/// The quota semantics arrive with the quota work; until then the proxy accepts
/// the kind in policy files (so one file can hold all four kinds) and keeps the
/// spec verbatim without enforcing it.
pub type LLMQuotaSpec = serde_json::Value;

/// Spec of an `LLMDataPolicy`.
///
/// Accepted and kept verbatim, not enforced yet (see [`LLMQuotaSpec`]).
pub type LLMDataPolicySpec = serde_json::Value;
