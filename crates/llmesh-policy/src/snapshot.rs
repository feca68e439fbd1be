//! The compiled, immutable routing table the request path reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use llmesh_api::{ApiSchema, ProviderLimits};

use crate::data_policy::DataPolicy;
use crate::quota::Quota;
use crate::route::{Route, RouteMatch};

/// A credential value. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The value, for building the upstream header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A provider's base URL, split once so each request only appends a path.
#[derive(Debug, Clone)]
pub struct BaseUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// Path prefix without a trailing slash, e.g. `/v1`.
    pub path: String,
    /// The URL as written, for dumps and messages.
    pub original: String,
}

impl BaseUrl {
    /// The full URI of `suffix` (which starts with `/`) under this base.
    pub fn join(&self, suffix: &str) -> Result<http::Uri, http::Error> {
        let mut pq = String::with_capacity(self.path.len() + suffix.len());
        pq.push_str(&self.path);
        pq.push_str(suffix);
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// Price in USD per token (the YAML says per million; divided once here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Per uncached input token.
    pub input: f64,
    /// Per output token.
    pub output: f64,
    /// Per cached input token (read from the provider's prompt cache).
    pub cached_input: f64,
    /// Per input token written to the provider's prompt cache.
    pub cache_write: f64,
    /// Fraction of the price paid for Batch API calls.
    pub batch: f64,
}

/// The tokens of one call, as [`Price::cost`] prices them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// All prompt tokens, cached reads and cache writes included.
    pub input: u64,
    /// Prompt tokens read from the provider's cache (part of `input`).
    pub cached: u64,
    /// Prompt tokens written to the provider's cache (part of `input`).
    pub cache_write: u64,
    /// Generated tokens.
    pub output: u64,
}

impl Price {
    /// Cost in USD of a call: the prompt tokens neither read from nor
    /// written to the cache at `input`, cache reads at `cached_input`,
    /// cache writes at `cache_write`, output at `output`. Reads and writes
    /// beyond `input` (a provider's inconsistent counts) are capped so no
    /// token is billed twice.
    pub fn cost(&self, t: TokenCounts) -> f64 {
        let cached = t.cached.min(t.input);
        let write = t.cache_write.min(t.input - cached);
        (t.input - cached - write) as f64 * self.input
            + cached as f64 * self.cached_input
            + write as f64 * self.cache_write
            + t.output as f64 * self.output
    }

    /// What the call's cache reads saved in USD against paying `input` for
    /// them (0 when the cached price is not lower). Cache writes are not
    /// subtracted: their premium is in [`Price::cost`].
    pub fn cache_savings(&self, t: TokenCounts) -> f64 {
        (t.cached.min(t.input) as f64 * (self.input - self.cached_input)).max(0.0)
    }
}

/// What the policy says about one model of a provider.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    /// Context window in tokens.
    pub context_window: Option<u64>,
    /// Price, if the policy gives one.
    pub price: Option<Price>,
    /// `responsesApi` as written.
    pub responses_api: Option<bool>,
    /// Which figures came from the built-in catalog.
    pub from_catalog: crate::catalog::Sources,
    /// Azure OpenAI deployment serving the model, when not its name.
    pub deployment: Option<String>,
}

/// A compiled `LLMProvider`.
#[derive(Debug)]
pub struct Provider {
    /// `metadata.name`.
    pub name: String,
    /// Namespace the resource lives in (the platform namespace for one
    /// inherited from it, else the compiled namespace). Provider pacing
    /// counts under it, so one provider's limits are shared by every
    /// namespace that uses it.
    pub namespace: String,
    /// Wire format.
    pub schema: ApiSchema,
    /// Where requests go.
    pub base_url: BaseUrl,
    /// `gen_ai_provider_name` for metrics.
    pub provider_name: String,
    /// The header carrying the key, ready to insert (marked sensitive).
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// Where the key came from, for dumps (`env:NAME`, `file:/path`,
    /// `secret:name/key`).
    pub credential_source: Option<String>,
    /// Extra CA certificates for this upstream.
    pub ca_file: Option<PathBuf>,
    /// Static headers added to every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Models by upstream name.
    pub models: HashMap<String, ModelInfo>,
    /// The built-in catalog family its unlisted models are looked up in.
    pub catalog: Option<&'static str>,
    /// Data classes the provider is cleared for.
    pub clearance: Vec<String>,
    /// The provider's published rate limits, paced by the quota engine.
    pub limits: Option<ProviderLimits>,
    /// A credential the sidecar obtains and refreshes itself (cloud keys
    /// and workload identities), instead of a static `auth` header.
    pub identity: Option<Identity>,
    /// Where a cloud provider's models are served.
    pub cloud: Cloud,
}

/// Cloud-specific addressing of a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cloud {
    /// `spec.region`: the AWS region (also the SigV4 signing region) or the
    /// Vertex AI location.
    pub region: Option<String>,
    /// `spec.project` (Vertex AI).
    pub project: Option<String>,
    /// Azure OpenAI `api-version` of deployment URLs; `None` on the v1
    /// surface.
    pub api_version: Option<String>,
}

/// A credential obtained at run time, every setting resolved (defaults
/// from the sidecar's environment applied).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Static AWS keys.
    AwsKeys {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: Secret,
        /// The session token of temporary keys.
        session_token: Option<Secret>,
    },
    /// IRSA: STS `AssumeRoleWithWebIdentity` with a projected token.
    AwsWebIdentity {
        /// The role assumed.
        role_arn: String,
        /// The projected service-account token (read at each exchange, as
        /// the kubelet rotates it).
        token_file: PathBuf,
        /// `RoleSessionName`.
        session_name: String,
        /// The STS endpoint.
        sts_endpoint: String,
    },
    /// EKS Pod Identity agent.
    AwsPodIdentity {
        /// The agent's full credentials URL.
        endpoint: String,
        /// The token sent as `Authorization`.
        token_file: Option<PathBuf>,
    },
    /// Google service-account key: an RS256 JWT exchanged for a token.
    GoogleServiceAccount {
        /// The JSON key.
        key_json: Secret,
        /// The token endpoint, when not the key's `token_uri`.
        token_uri: Option<String>,
    },
    /// GKE metadata server.
    GkeMetadata {
        /// Its base URL.
        endpoint: String,
    },
    /// Microsoft Entra workload identity (client-assertion exchange).
    AzureWorkloadIdentity {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The projected federated token.
        token_file: PathBuf,
        /// Login endpoint.
        authority_host: String,
        /// Scope asked for.
        scope: String,
    },
}

impl Identity {
    /// Short name of the kind, for metrics, logs and dumps.
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::AwsKeys { .. } => "aws-keys",
            Identity::AwsWebIdentity { .. } => "aws-web-identity",
            Identity::AwsPodIdentity { .. } => "aws-pod-identity",
            Identity::GoogleServiceAccount { .. } => "google-service-account",
            Identity::GkeMetadata { .. } => "gke-metadata",
            Identity::AzureWorkloadIdentity { .. } => "azure-workload-identity",
        }
    }

    /// Whether requests are signed with AWS SigV4 (else a bearer token).
    pub fn is_aws(&self) -> bool {
        matches!(
            self,
            Identity::AwsKeys { .. }
                | Identity::AwsWebIdentity { .. }
                | Identity::AwsPodIdentity { .. }
        )
    }
}

impl Provider {
    /// Policy facts about `model`: as listed (with the catalog's figures
    /// where the listing has none), else the catalog's, if it knows it.
    pub fn model(&self, model: &str) -> Option<&ModelInfo> {
        self.models
            .get(model)
            .or_else(|| crate::catalog::lookup_model(self.schema, self.catalog, model))
    }

    /// Whether the upstream serves the Responses API for `model` itself
    /// (else Responses calls are translated): the model's `responsesApi`,
    /// or true for schema `openai`.
    pub fn native_responses(&self, model: &str) -> bool {
        self.model(model)
            .and_then(|m| m.responses_api)
            .unwrap_or(self.schema == ApiSchema::Openai)
    }
}

/// The whole compiled policy. Published with one atomic swap; a request
/// loads it once and uses that one table to the end.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases by one on every published snapshot.
    pub generation: u64,
    /// Providers by name.
    pub providers: BTreeMap<String, Arc<Provider>>,
    /// Routes by name order.
    pub routes: Vec<Arc<Route>>,
    /// Exact model name -> route indexes in evaluation order.
    pub(crate) exact: HashMap<String, Vec<usize>>,
    /// (prefix, route index), longest prefix first, then evaluation order.
    pub(crate) prefixes: Vec<(String, usize)>,
    /// Names for `GET /v1/models`: exact route models, sorted.
    pub model_names: Vec<String>,
    /// Validated quotas, by name (not enforced yet).
    pub quotas: Vec<Arc<Quota>>,
    /// Validated data policies, by name.
    pub data_policies: Vec<Arc<DataPolicy>>,
    /// The data policies' rules compiled into one detection engine.
    pub data_guard: Option<Arc<crate::data_policy::DataGuard>>,
    /// Resources accepted but not enforced by this version (kind/name).
    pub inert: Vec<String>,
    /// Serialized resources kept for `/config_dump`.
    pub(crate) dump_resources: Vec<serde_json::Value>,
    /// Serialized data policies for `/config_dump`.
    pub(crate) dump_data_policies: Vec<serde_json::Value>,
}

impl Snapshot {
    /// The route serving `model` for a request with `headers`: exact names
    /// first, then prefixes (longest first); among routes claiming the same
    /// name or prefix, ascending `order`, then more header conditions, then
    /// name; a route whose header conditions fail is skipped.
    pub fn route_for(&self, model: &str, headers: &HeaderMap) -> Option<RouteMatch<'_>> {
        if let Some(list) = self.exact.get(model) {
            for &index in list {
                let route = &self.routes[index];
                if route.headers_match(headers) {
                    let pattern = route.models.iter().find(|m| *m == model)?;
                    return Some(RouteMatch {
                        index,
                        route,
                        pattern,
                    });
                }
            }
        }
        for (prefix, index) in &self.prefixes {
            if !model.starts_with(prefix.as_str()) {
                continue;
            }
            let route = &self.routes[*index];
            if route.headers_match(headers) {
                let pattern = route
                    .models
                    .iter()
                    .find(|m| m.strip_suffix('*') == Some(prefix.as_str()))?;
                return Some(RouteMatch {
                    index: *index,
                    route,
                    pattern,
                });
            }
        }
        None
    }

    /// Model names and patterns clients may ask for, for error messages.
    pub fn known_models(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .routes
            .iter()
            .flat_map(|r| r.models.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all
    }
}
