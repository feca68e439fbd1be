//! Compiles llmesh resources into one immutable routing snapshot.
//!
//! `compile(resources, secrets) -> (Snapshot, Vec<CompileError>)` is pure
//! apart from the secret lookups it delegates: every reference is resolved
//! and every value parsed here, once, so the request path only reads. The
//! file mode and the Kubernetes mode share this one path.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod canary;
pub mod catalog;
mod compile;
mod data_policy;
mod dump;
mod duration;
pub mod probes;
mod quota;
mod route;
mod snapshot;

pub use compile::AZURE_API_VERSION;
pub use compile::{
    compile, CompileError, EnvFileSecrets, SecretError, SecretSource, DEFAULT_SECRETS_DIR,
};
pub use data_policy::{DataGuard, DataPolicy, DEFAULT_CLASS_HEADER};
pub use duration::{parse_duration, DurationError};
pub use quota::{parse_usd, Quota, UsdError};
pub use route::{
    Backend, BreakerSettings, CacheSettings, ClassSet, EnforcedSchema, Fallback, MirrorSettings,
    Passthrough, RetrySettings, Route, RouteMatch, SemanticSettings, StrategyKind, Timeouts,
};
pub use snapshot::{
    BaseUrl, Cloud, Identity, ModelInfo, Price, Provider, Secret, Snapshot, TokenCounts,
};
