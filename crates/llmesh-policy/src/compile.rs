//! Resources in, one snapshot and a list of per-field errors out.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use llmesh_api::{
    AnyResource, ApiSchema, BackendRef, CredentialRef, ErrorClass, LLMDataPolicySpec,
    LLMProviderSpec, LLMQuotaSpec, LLMRouteSpec, Resource, ResourceKey, ResourceKind, Strategy,
};

use crate::data_policy::{compile_data_policy, is_class_name};
use crate::duration::parse_duration;
use crate::quota::compile_quota;
use crate::route::{
    Backend, BreakerSettings, CacheSettings, ClassSet, EnforcedSchema, Fallback, Passthrough,
    RetrySettings, Route, SemanticSettings, StrategyKind, Timeouts,
};
use crate::snapshot::{BaseUrl, Cloud, Identity, ModelInfo, Price, Provider, Secret, Snapshot};

/// One problem with one field of one resource. The resource is left out of
/// the snapshot; the reason never contains a secret.
///
/// Displayed as `Kind/namespace/name: field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}/{namespace}/{name}: {field}: {reason}")]
pub struct CompileError {
    /// Kind of the resource.
    pub kind: ResourceKind,
    /// The namespace that was compiled (an object inherited from the
    /// platform namespace is named under the namespace that inherits it).
    pub namespace: String,
    /// `metadata.name` of the resource.
    pub name: String,
    /// Path of the offending field, e.g. `spec.backends[1].provider`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl CompileError {
    /// `Kind/name` of the resource: the same key as [`AnyResource::key`]
    /// of the resource that failed.
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(self.kind, self.name.clone())
    }
}

/// Why a credential cannot be had. Never holds the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The reference sets none, or more than one, of its sources.
    #[error("set exactly one of env, file or secretKeyRef")]
    NotExactlyOne,
    /// `env:` names an empty variable name.
    #[error("the environment variable name is empty")]
    EmptyEnvName,
    /// `file:` is empty.
    #[error("the file path is empty")]
    EmptyFilePath,
    /// `env:` names a variable that is not set.
    #[error("environment variable {0} is not set")]
    EnvNotSet(String),
    /// The file (or mounted Secret key) cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `secretKeyRef` parts that are not a Secret name and key (they
    /// would step out of the secrets folder).
    #[error("secretKeyRef {name}/{key} is not a Secret name and key")]
    NotASecretKey {
        /// `secretKeyRef.name`.
        name: String,
        /// `secretKeyRef.key`.
        key: String,
    },
}

/// Looks up credential values. File mode reads env vars and files; both
/// modes read Secrets where the injector mounts them.
pub trait SecretSource {
    /// The key named by `r`, or why it cannot be had (without the value).
    fn resolve(&self, r: &CredentialRef) -> Result<String, SecretError>;

    /// A variable of the sidecar's environment: where workload identities
    /// take their defaults (`AWS_ROLE_ARN`, `AZURE_CLIENT_ID`...).
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Where the injector mounts the Secrets named by `secretKeyRef` into the
/// sidecar container: one folder per Secret, one file per key.
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/secrets/llmesh";

/// Credentials from the sidecar's environment, files, and mounted Secrets.
/// Relative file paths are taken from `base_dir` (the policy file's
/// folder); `secretKeyRef: {name, key}` reads `<secrets_dir>/<name>/<key>`.
#[derive(Debug, Clone)]
pub struct EnvFileSecrets {
    /// Folder relative `file:` references start from.
    pub base_dir: Option<PathBuf>,
    /// Folder holding mounted Secrets (default [`DEFAULT_SECRETS_DIR`]).
    pub secrets_dir: PathBuf,
}

impl Default for EnvFileSecrets {
    fn default() -> Self {
        EnvFileSecrets {
            base_dir: None,
            secrets_dir: PathBuf::from(DEFAULT_SECRETS_DIR),
        }
    }
}

fn read_key(path: &Path) -> Result<String, SecretError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SecretError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
}

impl SecretSource for EnvFileSecrets {
    fn resolve(&self, r: &CredentialRef) -> Result<String, SecretError> {
        match (&r.env, &r.file, &r.secret_key_ref) {
            (Some(var), None, None) => {
                std::env::var(var).map_err(|_| SecretError::EnvNotSet(var.clone()))
            }
            (None, Some(file), None) => {
                let path = match &self.base_dir {
                    Some(dir) if Path::new(file).is_relative() => dir.join(file),
                    _ => PathBuf::from(file),
                };
                read_key(&path)
            }
            (None, None, Some(s)) => {
                // Both parts become path components: refuse anything that
                // could step out of the secrets folder.
                let bad =
                    |p: &str| p.is_empty() || p == "." || p == ".." || p.contains(['/', '\\']);
                if bad(&s.name) || bad(&s.key) {
                    return Err(SecretError::NotASecretKey {
                        name: s.name.clone(),
                        key: s.key.clone(),
                    });
                }
                read_key(&self.secrets_dir.join(&s.name).join(&s.key))
            }
            _ => Err(SecretError::NotExactlyOne),
        }
    }
}

pub(crate) struct Ctx<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) errors: Vec<CompileError>,
}

impl Ctx<'_> {
    pub(crate) fn err(
        &mut self,
        kind: ResourceKind,
        name: &str,
        field: &str,
        reason: impl std::fmt::Display,
    ) {
        self.errors.push(CompileError {
            kind,
            namespace: self.namespace.to_string(),
            name: name.to_string(),
            field: field.to_string(),
            reason: reason.to_string(),
        });
    }
}

/// Compiles `resources` (all from `namespace`) into a snapshot.
///
/// A resource with any error is left out and each of its errors is
/// returned; the rest still compiles. Routes are processed in name order
/// so the outcome does not depend on the order resources arrived in.
pub fn compile(
    resources: &[AnyResource],
    namespace: &str,
    secrets: &dyn SecretSource,
) -> (Snapshot, Vec<CompileError>) {
    let mut cx = Ctx {
        namespace,
        errors: Vec::new(),
    };
    let mut snap = Snapshot::default();

    let mut provider_specs: Vec<&Resource<LLMProviderSpec>> = Vec::new();
    let mut route_specs: Vec<&Resource<LLMRouteSpec>> = Vec::new();
    let mut quota_specs: Vec<&Resource<LLMQuotaSpec>> = Vec::new();
    let mut data_specs: Vec<&Resource<LLMDataPolicySpec>> = Vec::new();
    for r in resources {
        match r {
            AnyResource::Provider(p) => provider_specs.push(p),
            AnyResource::Route(rt) => route_specs.push(rt),
            AnyResource::Quota(q) => quota_specs.push(q),
            AnyResource::DataPolicy(d) => data_specs.push(d),
        }
    }
    provider_specs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    route_specs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    quota_specs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    data_specs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    // Quotas are enforced by the proxy's quota engine, built from these
    // when the snapshot is published; `/config_dump` lists them.
    for q in quota_specs {
        let name = &q.metadata.name;
        if snap.quotas.iter().any(|o| &o.name == name) {
            cx.err(
                ResourceKind::Quota,
                name,
                "metadata.name",
                "duplicate quota name",
            );
            continue;
        }
        if let Some(quota) = compile_quota(&mut cx, q) {
            snap.dump_resources
                .push(kind_dump(ResourceKind::Quota, name, &quota.spec));
            snap.quotas.push(Arc::new(quota));
        }
    }
    for d in data_specs {
        let name = &d.metadata.name;
        if snap.data_policies.iter().any(|o| &o.name == name) {
            cx.err(
                ResourceKind::DataPolicy,
                name,
                "metadata.name",
                "duplicate data policy name",
            );
            continue;
        }
        if let Some(policy) = compile_data_policy(&mut cx, d) {
            snap.dump_data_policies
                .push(kind_dump(ResourceKind::DataPolicy, name, &policy.spec));
            snap.data_policies.push(Arc::new(policy));
        }
    }

    snap.data_guard = crate::data_policy::build_guard(&mut cx, &snap.data_policies).map(Arc::new);

    for p in provider_specs {
        let name = &p.metadata.name;
        if snap.providers.contains_key(name) {
            cx.err(
                ResourceKind::Provider,
                name,
                "metadata.name",
                "duplicate provider name",
            );
            continue;
        }
        if let Some(compiled) = compile_provider(&mut cx, p, secrets) {
            snap.providers.insert(name.clone(), Arc::new(compiled));
        }
    }

    let mut compiled = Vec::new();
    let mut names_seen = BTreeMap::new();
    for r in route_specs {
        let name = &r.metadata.name;
        if names_seen.insert(name.clone(), ()).is_some() {
            cx.err(
                ResourceKind::Route,
                name,
                "metadata.name",
                "duplicate route name",
            );
            continue;
        }
        if let Some(route) = compile_route(&mut cx, r, &snap.providers) {
            compiled.push(route);
        }
    }
    // Evaluation order: ascending `order`, more header conditions first,
    // then name. A route that claims a name or prefix an earlier route
    // already claims with the very same order and header conditions could
    // never be reached for it: that is an error on the later route.
    compiled.sort_by(|a, b| {
        a.order
            .cmp(&b.order)
            .then(b.headers.len().cmp(&a.headers.len()))
            .then(a.name.cmp(&b.name))
    });
    for route in compiled {
        let mut conflict = false;
        for (i, m) in route.models.iter().enumerate() {
            let earlier: Vec<usize> = match m.strip_suffix('*') {
                Some(prefix) => snap
                    .prefixes
                    .iter()
                    .filter(|(p, _)| p == prefix)
                    .map(|&(_, idx)| idx)
                    .collect(),
                None => snap.exact.get(m).cloned().unwrap_or_default(),
            };
            if let Some(other) = earlier
                .iter()
                .map(|&idx| &snap.routes[idx])
                .find(|o| o.headers == route.headers && o.order == route.order)
            {
                cx.err(
                    ResourceKind::Route,
                    &route.name,
                    &format!("spec.models[{i}]"),
                    format!(
                        "model {m:?} is already served by route {} with the same order and headers",
                        other.name
                    ),
                );
                conflict = true;
            }
        }
        if conflict {
            continue;
        }
        let idx = snap.routes.len();
        for m in &route.models {
            match m.strip_suffix('*') {
                Some(prefix) => snap.prefixes.push((prefix.to_string(), idx)),
                None => {
                    snap.exact.entry(m.clone()).or_default().push(idx);
                    if !snap.model_names.contains(m) {
                        snap.model_names.push(m.clone());
                    }
                }
            }
        }
        snap.routes.push(Arc::new(route));
    }
    // Longest prefix first; the sort is stable, so routes keep their
    // evaluation order among equal prefixes.
    snap.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    snap.model_names.sort();
    (snap, cx.errors)
}

fn kind_dump(kind: ResourceKind, name: &str, spec: &impl serde::Serialize) -> serde_json::Value {
    let spec = serde_json::to_value(spec).unwrap_or(serde_json::Value::Null);
    serde_json::json!({"kind": kind.as_str(), "name": name, "enforced": false, "spec": spec})
}

fn default_base_url(schema: ApiSchema, region: Option<&str>) -> Option<String> {
    Some(match schema {
        ApiSchema::Openai => "https://api.openai.com/v1".into(),
        ApiSchema::Anthropic => "https://api.anthropic.com/v1".into(),
        ApiSchema::Gemini => "https://generativelanguage.googleapis.com/v1beta".into(),
        ApiSchema::OpenaiCompatible | ApiSchema::AzureOpenai => return None,
        ApiSchema::Bedrock => format!("https://bedrock-runtime.{}.amazonaws.com", region?),
        ApiSchema::Vertex => match region? {
            "global" => "https://aiplatform.googleapis.com".into(),
            r => format!("https://{r}-aiplatform.googleapis.com"),
        },
    })
}

fn default_provider_name(schema: ApiSchema) -> &'static str {
    // Values from the OpenTelemetry GenAI conventions' provider list.
    match schema {
        ApiSchema::Openai => "openai",
        ApiSchema::Anthropic => "anthropic",
        ApiSchema::Gemini => "gcp.gemini",
        ApiSchema::OpenaiCompatible => "openai_compatible",
        ApiSchema::AzureOpenai => "azure.ai.openai",
        ApiSchema::Bedrock => "aws.bedrock",
        ApiSchema::Vertex => "gcp.vertex_ai",
    }
}

fn parse_base_url(text: &str) -> Result<BaseUrl, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or("missing scheme (http:// or https://)")?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!("scheme {scheme} is not http or https"));
    }
    let authority: Authority = uri.authority().cloned().ok_or("missing host")?;
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    Ok(BaseUrl {
        scheme,
        authority,
        path: uri.path().trim_end_matches('/').to_string(),
        original: text.to_string(),
    })
}

fn compile_provider(
    cx: &mut Ctx<'_>,
    p: &Resource<LLMProviderSpec>,
    secrets: &dyn SecretSource,
) -> Option<Provider> {
    let name = &p.metadata.name;
    let spec = &p.spec;
    let before = cx.errors.len();
    const K: ResourceKind = ResourceKind::Provider;

    let cloud = compile_cloud(cx, name, spec);
    let default_base = default_base_url(spec.schema, spec.region.as_deref());
    let base_text = spec.base_url.as_deref().or(default_base.as_deref());
    let base_url = match base_text {
        None if matches!(spec.schema, ApiSchema::Bedrock | ApiSchema::Vertex) => None,
        None => {
            let why = if spec.schema == ApiSchema::AzureOpenai {
                "required for schema azure-openai (the resource's endpoint, e.g. https://NAME.openai.azure.com)"
            } else {
                "required for schema openai-compatible"
            };
            cx.err(K, name, "spec.baseUrl", why);
            None
        }
        Some(t) => parse_base_url(t)
            .map_err(|e| cx.err(K, name, "spec.baseUrl", e))
            .ok(),
    };

    let mut auth = None;
    let mut credential_source = None;
    let mut identity = None;
    if let Some(cred) = &spec.credential {
        if let Some((id, shown)) = compile_identity(cx, name, spec.schema, cred, secrets) {
            identity = id;
            credential_source = Some(shown);
        } else {
            let (a, shown) = compile_static_key(cx, name, spec.schema, cred, secrets);
            auth = a;
            credential_source = shown;
        }
    } else if spec.schema == ApiSchema::Bedrock {
        cx.err(
            K,
            name,
            "spec.credential",
            "schema bedrock signs requests with AWS credentials: set awsKeys, awsWebIdentity or awsPodIdentity",
        );
    }

    let mut headers = Vec::new();
    for (k, v) in &spec.headers {
        let field = format!("spec.headers.{k}");
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(hn), Ok(hv)) => headers.push((hn, hv)),
            _ => cx.err(K, name, &field, "not a valid header"),
        }
    }
    if spec.schema == ApiSchema::Anthropic
        && !headers
            .iter()
            .any(|(h, _)| h.as_str() == "anthropic-version")
    {
        headers.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        ));
    }

    let catalog = crate::catalog::family(spec.schema, base_text.unwrap_or(""));
    let mut models = HashMap::new();
    for (i, m) in spec.models.iter().enumerate() {
        let field = format!("spec.models[{i}]");
        if m.name.is_empty() {
            cx.err(K, name, &format!("{field}.name"), "must not be empty");
            continue;
        }
        let price = m.pricing.map(|pr| Price {
            input: pr.input / 1e6,
            output: pr.output / 1e6,
            cached_input: pr.cached_input.unwrap_or(pr.input) / 1e6,
            cache_write: pr.cache_write.unwrap_or(pr.input) / 1e6,
            batch: pr.batch.unwrap_or(1.0),
        });
        if let Some(pr) = m.pricing {
            let all = [
                Some(pr.input),
                Some(pr.output),
                pr.cached_input,
                pr.cache_write,
            ];
            if all.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
                cx.err(K, name, &format!("{field}.pricing"), "prices must be >= 0");
            }
            if pr.batch.is_some_and(|b| !(0.0..=1.0).contains(&b)) {
                cx.err(
                    K,
                    name,
                    &format!("{field}.pricing.batch"),
                    "must be between 0 and 1 (the fraction of the price paid)",
                );
            }
        }
        if m.context_window == Some(0) {
            cx.err(K, name, &format!("{field}.contextWindow"), "must be > 0");
        }
        // What the listing leaves out, the catalog gives.
        let known = crate::catalog::lookup_model(spec.schema, catalog, &m.name);
        let from_catalog = crate::catalog::Sources {
            price: price.is_none() && known.is_some_and(|k| k.price.is_some()),
            context_window: m.context_window.is_none()
                && known.is_some_and(|k| k.context_window.is_some()),
        };
        if m.deployment.is_some() && spec.schema != ApiSchema::AzureOpenai {
            cx.err(
                K,
                name,
                &format!("{field}.deployment"),
                "only schema azure-openai has deployments",
            );
        }
        let info = ModelInfo {
            context_window: m
                .context_window
                .or_else(|| known.and_then(|k| k.context_window)),
            price: price.or_else(|| known.and_then(|k| k.price)),
            responses_api: m.responses_api,
            from_catalog,
            deployment: m.deployment.clone(),
        };
        if models.insert(m.name.clone(), info).is_some() {
            cx.err(
                K,
                name,
                &format!("{field}.name"),
                format!("model {:?} listed twice", m.name),
            );
        }
    }

    let mut clearance: Vec<String> = Vec::with_capacity(spec.clearance.len());
    for (i, class) in spec.clearance.iter().enumerate() {
        let field = format!("spec.clearance[{i}]");
        if !is_class_name(class) {
            cx.err(K, name, &field, format!("{class:?} is not a data class name (lowercase letters, digits and '-', at most 63)"));
        } else if clearance.contains(class) {
            cx.err(K, name, &field, format!("{class:?} listed twice"));
        } else {
            clearance.push(class.clone());
        }
    }
    if let Some(l) = &spec.limits {
        if l.requests_per_minute.is_none() && l.tokens_per_minute.is_none() {
            cx.err(
                K,
                name,
                "spec.limits",
                "set requestsPerMinute or tokensPerMinute",
            );
        }
        for (field, v) in [
            ("requestsPerMinute", l.requests_per_minute),
            ("tokensPerMinute", l.tokens_per_minute),
        ] {
            if v == Some(0) {
                cx.err(K, name, &format!("spec.limits.{field}"), "must be > 0");
            }
        }
        if l.headroom_percent > 90 {
            cx.err(
                K,
                name,
                "spec.limits.headroomPercent",
                "must be between 0 and 90",
            );
        }
    }

    if cx.errors.len() > before {
        return None;
    }
    Some(Provider {
        name: name.clone(),
        // Where the object lives: a provider inherited from the platform
        // namespace keeps the platform's, so its pacing counters are the
        // same in every namespace that uses it.
        namespace: p
            .metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| cx.namespace.to_string()),
        schema: spec.schema,
        base_url: base_url?,
        provider_name: spec
            .provider_name
            .clone()
            .unwrap_or_else(|| default_provider_name(spec.schema).to_string()),
        auth,
        credential_source,
        ca_file: spec.ca_file.as_ref().map(PathBuf::from),
        headers,
        catalog,
        models,
        clearance,
        limits: spec.limits,
        identity,
        cloud,
    })
}

/// `spec.region`, `spec.project` and `spec.apiVersion`, checked against
/// the schema that uses them.
fn compile_cloud(cx: &mut Ctx<'_>, name: &str, spec: &LLMProviderSpec) -> Cloud {
    const K: ResourceKind = ResourceKind::Provider;
    let schema = spec.schema;
    let cloud_schema = matches!(schema, ApiSchema::Bedrock | ApiSchema::Vertex);
    if cloud_schema && spec.region.is_none() {
        cx.err(
            K,
            name,
            "spec.region",
            "required for schemas bedrock and vertex",
        );
    }
    if !cloud_schema && spec.region.is_some() {
        cx.err(
            K,
            name,
            "spec.region",
            "only schemas bedrock and vertex have a region",
        );
    }
    if let Some(r) = &spec.region {
        if r.is_empty()
            || !r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            cx.err(
                K,
                name,
                "spec.region",
                format!("{r:?} is not a region name (e.g. us-east-1, us-east5, global)"),
            );
        }
    }
    match (schema, &spec.project) {
        (ApiSchema::Vertex, None) => cx.err(K, name, "spec.project", "required for schema vertex"),
        (ApiSchema::Vertex, Some(p))
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            cx.err(
                K,
                name,
                "spec.project",
                format!("{p:?} is not a Google Cloud project id"),
            )
        }
        (ApiSchema::Vertex, Some(_)) | (_, None) => {}
        (_, Some(_)) => cx.err(K, name, "spec.project", "only schema vertex has a project"),
    }
    let api_version = match (schema, spec.api_version.as_deref()) {
        (ApiSchema::AzureOpenai, Some("v1")) => None,
        (ApiSchema::AzureOpenai, Some(v)) => {
            if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || v.is_empty() {
                cx.err(
                    K,
                    name,
                    "spec.apiVersion",
                    format!("{v:?} is not an api-version (e.g. 2024-10-21, or v1)"),
                );
            }
            Some(v.to_string())
        }
        (ApiSchema::AzureOpenai, None) => Some(AZURE_API_VERSION.to_string()),
        (_, Some(_)) => {
            cx.err(
                K,
                name,
                "spec.apiVersion",
                "only schema azure-openai has an apiVersion",
            );
            None
        }
        (_, None) => None,
    };
    Cloud {
        region: spec.region.clone(),
        project: spec.project.clone(),
        api_version,
    }
}

/// The Azure OpenAI GA `api-version` deployment URLs use by default.
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// A static key in a header (`env`, `file` or `secretKeyRef`), and where it
/// came from for dumps.
fn compile_static_key(
    cx: &mut Ctx<'_>,
    name: &str,
    schema: ApiSchema,
    cred: &CredentialRef,
    secrets: &dyn SecretSource,
) -> (Option<(HeaderName, HeaderValue)>, Option<String>) {
    const K: ResourceKind = ResourceKind::Provider;
    let shown = cred
        .env
        .as_ref()
        .map(|v| format!("env:{v}"))
        .or_else(|| cred.file.as_ref().map(|f| format!("file:{f}")))
        .or_else(|| {
            cred.secret_key_ref
                .as_ref()
                .map(|s| format!("secret:{}/{}", s.name, s.key))
        });
    if schema == ApiSchema::Bedrock {
        cx.err(
            K,
            name,
            "spec.credential",
            "schema bedrock signs requests with AWS credentials: set awsKeys, awsWebIdentity or awsPodIdentity",
        );
        return (None, shown);
    }
    let header_name = match &cred.header {
        Some(h) => HeaderName::try_from(h.as_str())
            .map_err(|_| cx.err(K, name, "spec.credential.header", "not a valid header name"))
            .ok(),
        None => Some(HeaderName::from_static(match schema {
            ApiSchema::Anthropic => "x-api-key",
            ApiSchema::Gemini => "x-goog-api-key",
            ApiSchema::AzureOpenai => "api-key",
            ApiSchema::Openai
            | ApiSchema::OpenaiCompatible
            | ApiSchema::Vertex
            | ApiSchema::Bedrock => "authorization",
        })),
    };
    let mut auth = None;
    match secrets.resolve(cred) {
        Err(e) => cx.err(K, name, "spec.credential", e),
        Ok(key) if key.is_empty() => cx.err(K, name, "spec.credential", "the key is empty"),
        Ok(key) => {
            let bearer = header_name.as_ref() == Some(&http::header::AUTHORIZATION);
            let text = if bearer { format!("Bearer {key}") } else { key };
            match HeaderValue::try_from(text) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    auth = header_name.map(|h| (h, v));
                }
                Err(_) => cx.err(
                    K,
                    name,
                    "spec.credential",
                    "the key holds characters not allowed in a header",
                ),
            }
        }
    }
    (auth, shown)
}

/// A credential the sidecar obtains itself: `Some` when `cred` names one
/// (with `None` inside when it has errors, recorded in `cx`), `None` for a
/// static key.
fn compile_identity(
    cx: &mut Ctx<'_>,
    name: &str,
    schema: ApiSchema,
    cred: &CredentialRef,
    secrets: &dyn SecretSource,
) -> Option<(Option<Identity>, String)> {
    const K: ResourceKind = ResourceKind::Provider;
    let set = [
        cred.env.is_some() || cred.file.is_some() || cred.secret_key_ref.is_some(),
        cred.aws_keys.is_some(),
        cred.aws_web_identity.is_some(),
        cred.aws_pod_identity.is_some(),
        cred.google_service_account.is_some(),
        cred.gke_metadata.is_some(),
        cred.azure_workload_identity.is_some(),
    ];
    if set[1..].iter().all(|s| !s) {
        return None;
    }
    let fail = |cx: &mut Ctx<'_>, field: &str, why: String| {
        cx.err(K, name, &format!("spec.credential{field}"), why);
    };
    if set.iter().filter(|s| **s).count() > 1 {
        fail(cx, "", "set exactly one of env, file, secretKeyRef, awsKeys, awsWebIdentity, awsPodIdentity, googleServiceAccount, gkeMetadata or azureWorkloadIdentity".into());
        return Some((None, String::new()));
    }
    if cred.header.is_some() {
        fail(
            cx,
            ".header",
            "only a static key (env, file or secretKeyRef) has a header".into(),
        );
    }
    let wants = |kind: ApiSchema| -> Result<(), String> {
        if schema == kind {
            Ok(())
        } else {
            Err(format!(
                "this credential is for schema {}, not {}",
                schema_name(kind),
                schema_name(schema)
            ))
        }
    };
    // A setting, else its environment default, else an error naming both.
    let setting =
        |cx: &mut Ctx<'_>, field: &str, given: &Option<String>, var: &str| -> Option<String> {
            match given.clone().or_else(|| secrets.env(var)) {
                Some(v) => Some(v),
                None => {
                    cx.err(
                        K,
                        name,
                        &format!("spec.credential.{field}"),
                        format!("not set, and {var} is not set in the sidecar's environment"),
                    );
                    None
                }
            }
        };
    let before = cx.errors.len();
    let (identity, shown) = if let Some(k) = &cred.aws_keys {
        if let Err(e) = wants(ApiSchema::Bedrock) {
            fail(cx, ".awsKeys", e);
        }
        let get = |cx: &mut Ctx<'_>, field: &str, v: &llmesh_api::ValueSource| match secrets
            .resolve(&v.as_credential())
        {
            Ok(s) if !s.is_empty() => Some(s),
            Ok(_) => {
                cx.err(
                    K,
                    name,
                    &format!("spec.credential.awsKeys.{field}"),
                    "is empty",
                );
                None
            }
            Err(e) => {
                cx.err(K, name, &format!("spec.credential.awsKeys.{field}"), e);
                None
            }
        };
        let id = get(cx, "accessKeyId", &k.access_key_id);
        let secret = get(cx, "secretAccessKey", &k.secret_access_key);
        let token = match &k.session_token {
            Some(t) => get(cx, "sessionToken", t).map(Some),
            None => Some(None),
        };
        let identity = match (id, secret, token) {
            (Some(access_key_id), Some(secret), Some(token)) => Some(Identity::AwsKeys {
                access_key_id,
                secret_access_key: Secret::new(secret),
                session_token: token.map(Secret::new),
            }),
            _ => None,
        };
        (identity, "aws-keys".to_string())
    } else if let Some(w) = &cred.aws_web_identity {
        if let Err(e) = wants(ApiSchema::Bedrock) {
            fail(cx, ".awsWebIdentity", e);
        }
        let role = setting(cx, "awsWebIdentity.roleArn", &w.role_arn, "AWS_ROLE_ARN");
        let file = setting(
            cx,
            "awsWebIdentity.tokenFile",
            &w.token_file,
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        );
        let session_name = w.session_name.clone().unwrap_or_else(|| {
            let pod = secrets.env("POD_NAME").unwrap_or_else(|| "sidecar".into());
            let mut n = format!("llmesh-{pod}");
            n.truncate(64);
            n
        });
        let sts = w.sts_endpoint.clone().or_else(|| {
            let region = secrets.env("AWS_REGION");
            region.map(|r| format!("https://sts.{r}.amazonaws.com"))
        });
        let shown = format!("aws-web-identity:{}", role.as_deref().unwrap_or(""));
        let identity = match (role, file) {
            (Some(role_arn), Some(file)) => Some(Identity::AwsWebIdentity {
                role_arn,
                token_file: PathBuf::from(file),
                session_name,
                sts_endpoint: sts.unwrap_or_else(|| "https://sts.amazonaws.com".into()),
            }),
            _ => None,
        };
        (identity, shown)
    } else if let Some(p) = &cred.aws_pod_identity {
        if let Err(e) = wants(ApiSchema::Bedrock) {
            fail(cx, ".awsPodIdentity", e);
        }
        let endpoint = setting(
            cx,
            "awsPodIdentity.endpoint",
            &p.endpoint,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        );
        let token_file = p
            .token_file
            .clone()
            .or_else(|| secrets.env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"))
            .map(PathBuf::from);
        (
            endpoint.map(|endpoint| Identity::AwsPodIdentity {
                endpoint,
                token_file,
            }),
            "aws-pod-identity".to_string(),
        )
    } else if let Some(g) = &cred.google_service_account {
        if let Err(e) = wants(ApiSchema::Vertex) {
            fail(cx, ".googleServiceAccount", e);
        }
        let r = CredentialRef {
            file: g.key_file.clone(),
            secret_key_ref: g.secret_key_ref.clone(),
            ..CredentialRef::default()
        };
        let key = match secrets.resolve(&r) {
            Ok(k) => match serde_json::from_str::<serde_json::Value>(&k) {
                Ok(v) if v.get("private_key").is_some() && v.get("client_email").is_some() => {
                    Some(k)
                }
                _ => {
                    fail(cx, ".googleServiceAccount", "is not a service-account JSON key (private_key and client_email are needed)".into());
                    None
                }
            },
            Err(e) => {
                fail(cx, ".googleServiceAccount", e.to_string());
                None
            }
        };
        let shown = match (&g.key_file, &g.secret_key_ref) {
            (Some(f), _) => format!("google-service-account:file:{f}"),
            (_, Some(s)) => format!("google-service-account:secret:{}/{}", s.name, s.key),
            _ => "google-service-account".into(),
        };
        (
            key.map(|k| Identity::GoogleServiceAccount {
                key_json: Secret::new(k),
                token_uri: g.token_uri.clone(),
            }),
            shown,
        )
    } else if let Some(m) = &cred.gke_metadata {
        if let Err(e) = wants(ApiSchema::Vertex) {
            fail(cx, ".gkeMetadata", e);
        }
        let endpoint = m
            .endpoint
            .clone()
            .or_else(|| {
                secrets
                    .env("GCE_METADATA_HOST")
                    .map(|h| format!("http://{h}"))
            })
            .unwrap_or_else(|| "http://metadata.google.internal".into());
        (
            Some(Identity::GkeMetadata { endpoint }),
            "gke-metadata".to_string(),
        )
    } else if let Some(a) = &cred.azure_workload_identity {
        if let Err(e) = wants(ApiSchema::AzureOpenai) {
            fail(cx, ".azureWorkloadIdentity", e);
        }
        let tenant = setting(
            cx,
            "azureWorkloadIdentity.tenantId",
            &a.tenant_id,
            "AZURE_TENANT_ID",
        );
        let client = setting(
            cx,
            "azureWorkloadIdentity.clientId",
            &a.client_id,
            "AZURE_CLIENT_ID",
        );
        let file = setting(
            cx,
            "azureWorkloadIdentity.tokenFile",
            &a.token_file,
            "AZURE_FEDERATED_TOKEN_FILE",
        );
        let authority = a
            .authority_host
            .clone()
            .or_else(|| secrets.env("AZURE_AUTHORITY_HOST"))
            .unwrap_or_else(|| "https://login.microsoftonline.com".into());
        let shown = format!(
            "azure-workload-identity:{}",
            client.as_deref().unwrap_or("")
        );
        let identity = match (tenant, client, file) {
            (Some(tenant_id), Some(client_id), Some(file)) => {
                Some(Identity::AzureWorkloadIdentity {
                    tenant_id,
                    client_id,
                    token_file: PathBuf::from(file),
                    authority_host: authority.trim_end_matches('/').to_string(),
                    scope: a
                        .scope
                        .clone()
                        .unwrap_or_else(|| "https://cognitiveservices.azure.com/.default".into()),
                })
            }
            _ => None,
        };
        (identity, shown)
    } else {
        return None;
    };
    let identity = if cx.errors.len() > before {
        None
    } else {
        identity
    };
    Some((identity, shown))
}

/// The schema as written in YAML (its serde name, e.g. `azure-openai`).
fn schema_name(s: ApiSchema) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn compile_semantic(
    cx: &mut Ctx<'_>,
    name: &str,
    s: &llmesh_api::SemanticCacheSpec,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Option<SemanticSettings> {
    const K: ResourceKind = ResourceKind::Route;
    let ttl = duration_or(
        cx,
        name,
        "spec.cache.semantic.ttl",
        &s.ttl,
        Duration::from_secs(3600),
    );
    let timeout = duration_or(
        cx,
        name,
        "spec.cache.semantic.timeout",
        &s.timeout,
        Duration::from_secs(2),
    );
    let threshold = s.threshold.unwrap_or(0.95);
    if !(0.5..=1.0).contains(&threshold) {
        cx.err(
            K,
            name,
            "spec.cache.semantic.threshold",
            "must be between 0.5 and 1",
        );
    }
    if s.max_entries == Some(0) {
        cx.err(K, name, "spec.cache.semantic.maxEntries", "must be > 0");
    }
    let field = "spec.cache.semantic.embedding.provider";
    let provider = match providers.get(&s.embedding.provider) {
        Some(p) => p.clone(),
        None => {
            cx.err(
                K,
                name,
                field,
                format!("no valid LLMProvider named {:?}", s.embedding.provider),
            );
            return None;
        }
    };
    if !matches!(
        provider.schema,
        ApiSchema::Openai | ApiSchema::OpenaiCompatible
    ) {
        cx.err(
            K,
            name,
            field,
            format!(
                "LLMProvider {:?} has schema {:?}; embeddings are asked over the OpenAI API (schema openai or openai-compatible)",
                provider.name, provider.schema
            ),
        );
        return None;
    }
    Some(SemanticSettings {
        provider,
        model: s.embedding.model.clone(),
        dimensions: s.embedding.dimensions,
        threshold: threshold as f32,
        ttl,
        mode: s.mode.unwrap_or(llmesh_api::CacheMode::Always),
        store: s.store,
        max_entries: s.max_entries.unwrap_or(1000),
        timeout,
    })
}

fn compile_route(
    cx: &mut Ctx<'_>,
    r: &Resource<LLMRouteSpec>,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Option<Route> {
    let name = &r.metadata.name;
    let spec = &r.spec;
    let before = cx.errors.len();
    const K: ResourceKind = ResourceKind::Route;

    if spec.models.is_empty() {
        cx.err(K, name, "spec.models", "must name at least one model");
    }
    for (i, m) in spec.models.iter().enumerate() {
        let body = m.strip_suffix('*').unwrap_or(m);
        if m.is_empty() || body.contains('*') {
            cx.err(
                K,
                name,
                &format!("spec.models[{i}]"),
                "must be a model name, optionally ending in *",
            );
        }
    }
    if spec.backends.is_empty() {
        cx.err(K, name, "spec.backends", "must have at least one backend");
    }
    let mut backends = compile_backends(cx, name, "spec.backends", &spec.backends, providers);
    let total_weight: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if !backends.is_empty() && total_weight == 0 {
        cx.err(
            K,
            name,
            "spec.backends",
            "weights must add up to more than 0",
        );
    }

    let mut timeouts = Timeouts::default();
    let t = &spec.timeouts;
    for (field, text, slot) in [
        ("connect", &t.connect, &mut timeouts.connect),
        ("firstByte", &t.first_byte, &mut timeouts.first_byte),
        ("idle", &t.idle, &mut timeouts.idle),
        ("total", &t.total, &mut timeouts.total),
    ] {
        if let Some(text) = text {
            match parse_duration(text) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => cx.err(K, name, &format!("spec.timeouts.{field}"), "must be > 0"),
                Err(e) => cx.err(K, name, &format!("spec.timeouts.{field}"), e),
            }
        }
    }

    let headers = compile_match_headers(cx, name, &spec.headers);
    let strategy = compile_strategy(cx, name, &spec.strategy);
    // A route without `retries` gets the defaults: every provider call is
    // retried unless the route opts out with `attempts: 0`.
    let defaults = llmesh_api::RetryPolicy::default();
    let retry = Some(spec.retries.as_ref().unwrap_or(&defaults))
        .map(|r| {
            let on = if r.when.is_empty() {
                ClassSet::of(&[
                    ErrorClass::Connect,
                    ErrorClass::Timeout,
                    ErrorClass::ServerError,
                    ErrorClass::RateLimited,
                ])
            } else {
                if r.when.contains(&ErrorClass::InvalidRequest) {
                    cx.err(
                        K,
                        name,
                        "spec.retries.when",
                        "invalid-request is never retried",
                    );
                }
                ClassSet::of(&r.when)
            };
            let percent = r.budget_percent.unwrap_or(20.0);
            if !(0.0..=1000.0).contains(&percent) {
                cx.err(
                    K,
                    name,
                    "spec.retries.budgetPercent",
                    "must be between 0 and 1000",
                );
            }
            RetrySettings {
                attempts: r.attempts,
                on,
                backoff_base: duration_or(
                    cx,
                    name,
                    "spec.retries.backoffBase",
                    &r.backoff_base,
                    Duration::from_millis(100),
                ),
                backoff_max: duration_or(
                    cx,
                    name,
                    "spec.retries.backoffMax",
                    &r.backoff_max,
                    Duration::from_secs(2),
                ),
                budget_ratio: percent / 100.0,
                budget_min_per_second: r.budget_min_per_second.unwrap_or(5),
            }
        })
        // `attempts: 0` is the way out.
        .filter(|r| r.attempts > 0);
    let mut fallbacks = Vec::new();
    for (i, f) in spec.fallbacks.iter().enumerate() {
        let field = format!("spec.fallbacks[{i}]");
        if f.when.is_empty() {
            cx.err(
                K,
                name,
                &format!("{field}.when"),
                "must name at least one error class",
            );
        }
        if f.when.contains(&ErrorClass::InvalidRequest) {
            cx.err(
                K,
                name,
                &format!("{field}.when"),
                "invalid-request never fails over",
            );
        }
        if f.backends.is_empty() {
            cx.err(
                K,
                name,
                &format!("{field}.backends"),
                "must have at least one backend",
            );
        }
        let field = format!("{field}.backends");
        let backends = compile_backends(cx, name, &field, &f.backends, providers);
        fallbacks.push(Fallback {
            on: ClassSet::of(&f.when),
            backends,
        });
    }
    let breaker = spec.circuit_breaker.as_ref().map(|b| {
        let rate = b.failure_percent.unwrap_or(50.0);
        if !(0.0..=100.0).contains(&rate) {
            cx.err(
                K,
                name,
                "spec.circuitBreaker.failurePercent",
                "must be between 0 and 100",
            );
        }
        BreakerSettings {
            consecutive_failures: b.consecutive_failures.unwrap_or(5),
            failure_rate: rate / 100.0,
            min_requests: b.min_requests.unwrap_or(20),
            window: duration_or(
                cx,
                name,
                "spec.circuitBreaker.window",
                &b.window,
                Duration::from_secs(30),
            ),
            open_for: duration_or(
                cx,
                name,
                "spec.circuitBreaker.openFor",
                &b.open_for,
                Duration::from_secs(30),
            ),
            half_open_probes: b.half_open_probes.unwrap_or(1).max(1),
            slow_outlier_factor: match b.slow_outlier_factor {
                Some(f) if !(f > 1.0 && f.is_finite()) => {
                    cx.err(
                        K,
                        name,
                        "spec.circuitBreaker.slowOutlierFactor",
                        "must be a number above 1",
                    );
                    0.0
                }
                Some(f) => f,
                None => 0.0,
            },
        }
    });

    let hedge = spec
        .hedge
        .as_ref()
        .and_then(|h| match parse_duration(&h.delay) {
            Ok(d) => Some(d),
            Err(e) => {
                cx.err(K, name, "spec.hedge.delay", e);
                None
            }
        });

    let max_continuations =
        spec.stream_continuation
            .as_ref()
            .map_or(0, |c| match c.max_continuations {
                None => 1,
                Some(n @ 1..=3) => n,
                Some(_) => {
                    cx.err(
                        K,
                        name,
                        "spec.streamContinuation.maxContinuations",
                        "must be between 1 and 3",
                    );
                    1
                }
            });

    let passthrough = spec.passthrough.as_ref().and_then(|pt| {
        for (i, p) in pt.paths.iter().enumerate() {
            let body = p.strip_suffix('*').unwrap_or(p);
            if !p.starts_with('/') || body.contains('*') {
                cx.err(
                    K,
                    name,
                    &format!("spec.passthrough.paths[{i}]"),
                    "must be a path starting with /, optionally ending in *",
                );
            }
        }
        if pt.paths.is_empty() {
            cx.err(
                K,
                name,
                "spec.passthrough.paths",
                "must name at least one path",
            );
        }
        match providers.get(&pt.provider) {
            // Pass-through keeps the app's path and body: the clouds' own
            // URL shapes and signatures are not applied to it.
            Some(p) if matches!(p.schema, ApiSchema::AzureOpenai | ApiSchema::Bedrock | ApiSchema::Vertex) => {
                cx.err(
                    K,
                    name,
                    "spec.passthrough.provider",
                    format!(
                        "LLMProvider {:?} has schema {}; pass-through goes to providers of schema openai, openai-compatible, anthropic or gemini",
                        p.name,
                        schema_name(p.schema)
                    ),
                );
                None
            }
            Some(p) => Some(Passthrough {
                paths: pt.paths.clone(),
                provider: p.clone(),
            }),
            None => {
                cx.err(
                    K,
                    name,
                    "spec.passthrough.provider",
                    format!("no valid LLMProvider named {:?}", pt.provider),
                );
                None
            }
        }
    });

    if spec
        .cache
        .as_ref()
        .is_some_and(|c| c.exact.is_none() && c.semantic.is_none())
    {
        cx.err(K, name, "spec.cache", "needs exact, semantic or both");
    }
    let semantic_cache = spec
        .cache
        .as_ref()
        .and_then(|c| c.semantic.as_ref())
        .and_then(|s| compile_semantic(cx, name, s, providers));
    let cache = spec.cache.as_ref().and_then(|c| c.exact.as_ref()).map(|e| {
        let ttl = duration_or(
            cx,
            name,
            "spec.cache.exact.ttl",
            &e.ttl,
            Duration::from_secs(3600),
        );
        if e.max_entries == Some(0) {
            cx.err(K, name, "spec.cache.exact.maxEntries", "must be > 0");
        }
        if e.max_bytes.is_some_and(|b| b < 4096) {
            cx.err(
                K,
                name,
                "spec.cache.exact.maxBytes",
                "must be at least 4096",
            );
        }
        CacheSettings {
            ttl,
            mode: e.mode,
            store: e.store,
            max_entries: e.max_entries.unwrap_or(10_000),
            max_bytes: e.max_bytes.unwrap_or(64 * 1024 * 1024),
        }
    });

    let schema_retries = match &spec.structured_output {
        None => Some(1),
        Some(so) if so.mode == llmesh_api::StructuredOutputMode::Ignore => None,
        Some(so) => match so.retries {
            None => Some(1),
            Some(n @ 0..=3) => Some(n),
            Some(_) => {
                cx.err(
                    K,
                    name,
                    "spec.structuredOutput.retries",
                    "must be between 0 and 3",
                );
                Some(1)
            }
        },
    };

    let enforced_schema = spec
        .structured_output
        .as_ref()
        .and_then(|so| enforced_schema(cx, name, so));

    let mirror = spec
        .mirror
        .as_ref()
        .and_then(|m| compile_mirror(cx, name, m, providers));

    // The candidate joins the best priority group; the plan alone picks it,
    // for the share of requests the controller's status gives it.
    let mirrored = spec.mirror.as_ref().map(|m| &m.backend);
    let canary = spec.canary.as_ref().and_then(|c| {
        let status = r.status.as_ref().and_then(|s| s.canary.as_ref());
        let priority = backends.iter().map(|b| b.priority).min().unwrap_or(0);
        let (backend, percent) =
            crate::canary::compile(cx, name, c, status, providers, priority, mirrored)?;
        backends.push(backend);
        Some(crate::canary::CanarySettings {
            index: backends.len() - 1,
            percent,
        })
    });

    // The sidecars do not run probes; the controller's prober does, from
    // a route accepted with them.
    if let Some(p) = &spec.probes {
        if let Err(errors) = crate::probes::build(spec, p) {
            for (field, reason) in errors {
                cx.err(K, name, &field, reason);
            }
        }
    }

    if cx.errors.len() > before {
        return None;
    }
    Some(Route {
        name: name.clone(),
        namespace: cx.namespace.to_string(),
        models: spec.models.clone(),
        headers,
        order: spec.order,
        strategy,
        backends,
        total_weight,
        retry,
        fallbacks,
        breaker,
        hedge,
        timeouts,
        max_continuations,
        passthrough,
        cache,
        semantic_cache,
        schema_retries,
        enforced_schema,
        mirror,
        canary,
    })
}

/// `spec.mirror`: the candidate must be a provider of the namespace, the
/// share between 0 and 100, the caps positive.
fn compile_mirror(
    cx: &mut Ctx<'_>,
    name: &str,
    m: &llmesh_api::MirrorSpec,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Option<crate::route::MirrorSettings> {
    const K: ResourceKind = ResourceKind::Route;
    let before = cx.errors.len();
    let provider = providers.get(&m.backend.provider);
    if provider.is_none() {
        cx.err(
            K,
            name,
            "spec.mirror.backend.provider",
            format!("no valid LLMProvider named {:?}", m.backend.provider),
        );
    }
    let percent = m.percent.unwrap_or(5.0);
    if !(0.0..=100.0).contains(&percent) || !percent.is_finite() {
        cx.err(K, name, "spec.mirror.percent", "must be between 0 and 100");
    }
    if m.max_requests_per_minute == Some(0) {
        cx.err(K, name, "spec.mirror.maxRequestsPerMinute", "must be > 0");
    }
    let max_cost_per_hour = match &m.max_cost_per_hour {
        None => None,
        Some(t) => match crate::quota::parse_usd(t) {
            Ok(v) => Some(v),
            Err(e) => {
                cx.err(K, name, "spec.mirror.maxCostPerHour", e);
                None
            }
        },
    };
    if cx.errors.len() > before {
        return None;
    }
    Some(crate::route::MirrorSettings {
        backend: Backend {
            provider: provider?.clone(),
            model: m.backend.model.clone(),
            weight: 1,
            priority: 0,
        },
        fraction: percent / 100.0,
        max_per_minute: m.max_requests_per_minute,
        max_cost_per_hour,
    })
}

/// A route's own schema (`spec.structuredOutput.schema`), compiled: an
/// object that is a JSON Schema, on a route that validates.
fn enforced_schema(
    cx: &mut Ctx<'_>,
    name: &str,
    so: &llmesh_api::StructuredOutputSpec,
) -> Option<Arc<EnforcedSchema>> {
    const K: ResourceKind = ResourceKind::Route;
    let Some(schema) = &so.schema else {
        if so.name.is_some() {
            cx.err(
                K,
                name,
                "spec.structuredOutput.name",
                "names the schema: only with spec.structuredOutput.schema",
            );
        }
        return None;
    };
    let field = "spec.structuredOutput.schema";
    if so.mode == llmesh_api::StructuredOutputMode::Ignore {
        cx.err(
            K,
            name,
            field,
            "a route that enforces a schema validates its answers: not with mode: ignore",
        );
        return None;
    }
    if !schema.is_object() {
        cx.err(K, name, field, "must be a JSON Schema object");
        return None;
    }
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => {
            cx.err(
                K,
                name,
                field,
                format_args!("is not a valid JSON Schema: {e}"),
            );
            return None;
        }
    };
    let schema_name = so.name.clone().unwrap_or_else(|| "response".to_owned());
    let name_ok = (1..=64).contains(&schema_name.len())
        && schema_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        cx.err(
            K,
            name,
            "spec.structuredOutput.name",
            "must be 1 to 64 letters, digits, `_` or `-`",
        );
        return None;
    }
    Some(Arc::new(EnforcedSchema {
        name: schema_name,
        schema: schema.clone(),
        validator: Arc::new(validator),
    }))
}

fn duration_or(
    cx: &mut Ctx<'_>,
    name: &str,
    field: &str,
    text: &Option<String>,
    default: Duration,
) -> Duration {
    match text.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            cx.err(ResourceKind::Route, name, field, "must be > 0");
            default
        }
        Some(Err(e)) => {
            cx.err(ResourceKind::Route, name, field, e);
            default
        }
    }
}

fn compile_backends(
    cx: &mut Ctx<'_>,
    name: &str,
    field: &str,
    refs: &[BackendRef],
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Vec<Backend> {
    let mut out = Vec::with_capacity(refs.len());
    for (i, b) in refs.iter().enumerate() {
        match providers.get(&b.provider) {
            None => cx.err(
                ResourceKind::Route,
                name,
                &format!("{field}[{i}].provider"),
                format!("no valid LLMProvider named {:?}", b.provider),
            ),
            Some(p) => out.push(Backend {
                provider: p.clone(),
                model: b.model.clone(),
                weight: b.weight,
                priority: b.priority,
            }),
        }
    }
    out
}

fn compile_match_headers(
    cx: &mut Ctx<'_>,
    name: &str,
    headers: &BTreeMap<String, String>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in headers {
        let field = format!("spec.headers.{k}");
        match (
            HeaderName::try_from(k.to_ascii_lowercase()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(hn), Ok(hv)) => out.push((hn, hv)),
            _ => cx.err(
                ResourceKind::Route,
                name,
                &field,
                "not a valid header name and value",
            ),
        }
    }
    out
}

fn compile_strategy(cx: &mut Ctx<'_>, name: &str, s: &Strategy) -> StrategyKind {
    const F: &str = "spec.strategy";
    match s {
        Strategy::Weighted => StrategyKind::Weighted,
        Strategy::RoundRobin => StrategyKind::RoundRobin,
        Strategy::LeastRequest => StrategyKind::LeastRequest,
        Strategy::Latency {
            exploration_percent,
        } => {
            let p = exploration_percent.unwrap_or(5.0);
            if !(0.0..=100.0).contains(&p) {
                let field = format!("{F}.explorationPercent");
                cx.err(
                    ResourceKind::Route,
                    name,
                    &field,
                    "must be between 0 and 100",
                );
            }
            StrategyKind::Latency {
                exploration: p / 100.0,
            }
        }
        Strategy::Cost { latency_budget } => {
            let field = format!("{F}.latencyBudget");
            match parse_duration(latency_budget) {
                Ok(d) if !d.is_zero() => StrategyKind::Cost { latency_budget: d },
                Ok(_) => {
                    cx.err(ResourceKind::Route, name, &field, "must be > 0");
                    StrategyKind::Weighted
                }
                Err(e) => {
                    cx.err(ResourceKind::Route, name, &field, e);
                    StrategyKind::Weighted
                }
            }
        }
    }
}
