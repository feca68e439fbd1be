//! The compiled, immutable routing table the request path reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use llmesh_api::ApiSchema;

/// A credential value. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
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
    /// Per cached input token.
    pub cached_input: f64,
}

impl Price {
    /// Cost in USD of a call. `input` counts all prompt tokens, of which
    /// `cached` were served from the provider's cache.
    pub fn cost(&self, input: u64, cached: u64, output: u64) -> f64 {
        let cached = cached.min(input);
        (input - cached) as f64 * self.input
            + cached as f64 * self.cached_input
            + output as f64 * self.output
    }
}

/// What the policy says about one model of a provider.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    /// Context window in tokens.
    pub context_window: Option<u64>,
    /// Price, if the policy gives one.
    pub price: Option<Price>,
}

/// A compiled `LLMProvider`.
#[derive(Debug)]
pub struct Provider {
    /// `metadata.name`.
    pub name: String,
    /// Namespace the resource came from.
    pub namespace: String,
    /// Wire format.
    pub schema: ApiSchema,
    /// Where requests go.
    pub base_url: BaseUrl,
    /// `gen_ai_provider_name` for metrics.
    pub provider_name: String,
    /// The header carrying the key, ready to insert (marked sensitive).
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// Where the key came from, for dumps (`env:NAME`, `file:/path`).
    pub credential_source: Option<String>,
    /// Extra CA certificates for this upstream.
    pub ca_file: Option<PathBuf>,
    /// Static headers added to every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Models by upstream name.
    pub models: HashMap<String, ModelInfo>,
}

impl Provider {
    /// Policy facts about `model`, if listed.
    pub fn model(&self, model: &str) -> Option<&ModelInfo> {
        self.models.get(model)
    }
}

/// Upstream deadlines of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// Until response headers.
    pub first_byte: Duration,
    /// Largest gap between body chunks.
    pub idle: Duration,
    /// Whole call.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// One compiled backend of a route.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The provider.
    pub provider: Arc<Provider>,
    /// Upstream model, or `None` to send the requested name.
    pub model: Option<String>,
    /// Share of traffic.
    pub weight: u32,
}

impl Backend {
    /// The model name to send upstream for a request that asked for `requested`.
    pub fn upstream_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.model.as_deref().unwrap_or(requested)
    }
}

/// A compiled `LLMRoute`.
#[derive(Debug)]
pub struct Route {
    /// `metadata.name`.
    pub name: String,
    /// Namespace the resource came from.
    pub namespace: String,
    /// Model patterns as written.
    pub models: Vec<String>,
    /// Backends (at least one).
    pub backends: Vec<Backend>,
    /// Sum of backend weights (positive).
    pub total_weight: u64,
    /// Deadlines.
    pub timeouts: Timeouts,
}

impl Route {
    /// Picks a backend by weight. `roll` is a uniform random number; taking
    /// it as an argument keeps the table free of RNG state and testable.
    pub fn pick(&self, roll: u64) -> &Backend {
        let mut point = roll % self.total_weight.max(1);
        for b in &self.backends {
            let w = u64::from(b.weight);
            if point < w {
                return b;
            }
            point -= w;
        }
        // Unreachable while total_weight is the sum of the weights; the
        // first backend is a safe answer either way.
        &self.backends[0]
    }
}

/// A model name resolved to its route.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    /// Position of the route in [`Snapshot::routes`].
    pub index: usize,
    /// The route.
    pub route: &'a Arc<Route>,
    /// The entry of `spec.models` that matched.
    pub pattern: &'a str,
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
    pub(crate) exact: HashMap<String, usize>,
    /// (prefix, route index), longest prefix first.
    pub(crate) prefixes: Vec<(String, usize)>,
    /// Names for `GET /v1/models`: exact route models, sorted.
    pub model_names: Vec<String>,
    /// Resources accepted but not enforced by this version (kind/name).
    pub inert: Vec<String>,
    /// Serialized resources kept for `/config_dump`.
    pub(crate) dump_resources: Vec<serde_json::Value>,
}

impl Snapshot {
    /// The route serving `model`, if any, with its index in `routes` and
    /// the pattern that matched (the name itself, or `prefix*`). The pattern
    /// is what metrics use, so a client inventing model names under a prefix
    /// cannot grow the label set.
    pub fn route_for(&self, model: &str) -> Option<RouteMatch<'_>> {
        if let Some(&index) = self.exact.get(model) {
            let route = self.routes.get(index)?;
            let pattern = route.models.iter().find(|m| *m == model)?;
            return Some(RouteMatch {
                index,
                route,
                pattern,
            });
        }
        let (prefix, index) = self
            .prefixes
            .iter()
            .find(|(p, _)| model.starts_with(p.as_str()))?;
        let route = self.routes.get(*index)?;
        let pattern = route
            .models
            .iter()
            .find(|m| m.strip_suffix('*') == Some(prefix.as_str()))?;
        Some(RouteMatch {
            index: *index,
            route,
            pattern,
        })
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
