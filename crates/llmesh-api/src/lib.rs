//! The llmesh resource kinds as plain Rust types and as Kubernetes custom
//! resources.
//!
//! Every other crate depends on this one, so it stays free of tokio, hyper
//! and the Kubernetes client: it is the shape of the four kinds
//! (`LLMProvider`, `LLMRoute`, `LLMQuota`, `LLMDataPolicy`) in group
//! `llmesh.io/v1alpha1`, their CustomResourceDefinitions (kube's derive, no
//! client), and the parser for the multi-document YAML files that the file
//! mode reads.
//!
//! Two shapes of one resource exist: the kube-generated types
//! ([`LLMProvider`], [`LLMRoute`], [`LLMQuota`], [`LLMDataPolicy`]) that a
//! watch returns, and [`Resource<S>`] inside [`AnyResource`] that the file
//! parser returns and the policy compiler takes. `AnyResource::from(obj)`
//! goes from the first to the second. The specs are the same types in both.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

mod crd;
mod data_policy;
mod document;
mod kind;
mod probe;
mod provider;
mod quota;
mod route;
mod schema;
mod status;

pub use crd::{crd_files, crd_schemas, crds, RenderError};
pub use data_policy::{
    DataAction, DataRule, LLMDataPolicy, LLMDataPolicySpec, Unscannable, BUILTIN_CLASSES,
};
pub use document::{parse_documents, AnyResource, ObjectMeta, Observed, ParseError, Resource};
pub use kind::{ResourceKey, ResourceKind};
pub use probe::{GoldenPrompt, ProbeChecks, ProbeMessage, ProbeRole, ProbeTool, ProbesSpec};
pub use provider::{
    ApiSchema, AwsKeys, AwsPodIdentity, AwsWebIdentity, AzureWorkloadIdentity, CredentialRef,
    GkeMetadata, GoogleServiceAccount, LLMProvider, LLMProviderSpec, ModelSpec, Pricing,
    ProviderLimits, SecretKeyRef, ValueSource,
};
pub use quota::{
    LLMQuota, LLMQuotaSpec, QuotaAction, QuotaLimits, QuotaScope, StoreUnavailable, TokenKind,
};
pub use route::{
    BackendRef, CacheMode, CacheSpec, CacheStore, CanaryGates, CanarySpec, CircuitBreakerSpec,
    EmbeddingRef, ErrorClass, ExactCacheSpec, FallbackChain, HedgeSpec, LLMRoute, LLMRouteSpec,
    MirrorBackend, MirrorSpec, PassthroughSpec, RetryPolicy, SemanticCacheSpec, Strategy,
    StreamContinuationSpec, StructuredOutputMode, StructuredOutputSpec, Timeouts, PASSTHROUGH_PATH,
};
pub use status::{
    CanaryPhase, CanaryStatus, LLMDataPolicyStatus, LLMQuotaStatus, LLMRouteStatus, PolicyStatus,
    RouteBackendStatus, CONDITION_ACCEPTED, CONDITION_ENFORCED, CONDITION_PROBES_PASSING,
    CONDITION_RESOLVED_REFS, REASON_ACCEPTED, REASON_BACKEND_NOT_FOUND, REASON_ENFORCED,
    REASON_INVALID, REASON_INVALID_BACKEND, REASON_MODEL_NOT_ROUTED, REASON_NOT_ENFORCED,
    REASON_PROBES_FAILED, REASON_PROBES_PASSED, REASON_PROBE_ERROR, REASON_RESOLVED_REFS,
};

/// API group of every llmesh kind.
pub const GROUP: &str = "llmesh.io";
/// API version of every llmesh kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "llmesh.io/v1alpha1";
