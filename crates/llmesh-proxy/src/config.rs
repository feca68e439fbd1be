//! Start-up settings of the sidecar: addresses, limits and the pod's identity.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Who this sidecar runs for. Every metric series carries these, set by the
/// injector through the downward API (or by hand outside Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Kubernetes namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// Owning workload, e.g. the Deployment name (`LLMESH_WORKLOAD`).
    pub workload: String,
    /// Pod name (`POD_NAME`).
    pub pod: String,
}

impl Identity {
    /// Reads the identity from the environment the injector sets, falling
    /// back to `default` / the host name outside Kubernetes.
    pub fn from_env() -> Identity {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let pod = var("POD_NAME")
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "local".to_string());
        Identity {
            namespace: var("POD_NAMESPACE").unwrap_or_else(|| "default".to_string()),
            workload: var("LLMESH_WORKLOAD").unwrap_or_else(|| "local".to_string()),
            pod,
        }
    }
}

/// Everything the proxy needs to start.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The app-facing LLM API (loopback only in a pod).
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: SocketAddr,
    /// `/config_dump` (loopback only).
    pub admin_listen: SocketAddr,
    /// The policy file (multi-document YAML).
    pub policy_file: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest non-streamed upstream response body read.
    pub max_response_bytes: usize,
    /// Time allowed for a client to send its request headers.
    pub header_read_timeout: Duration,
    /// Extra CA certificates trusted for every upstream.
    pub ca_file: Option<PathBuf>,
    /// How long in-flight requests may finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// Pod identity for metrics and logs.
    pub identity: Identity,
    /// Where Secrets named by `secretKeyRef` are mounted (one folder per
    /// Secret, one file per key); watched, so a rotated key applies at once.
    pub secrets_dir: PathBuf,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Deepest JSON nesting accepted in a request body.
    pub max_json_depth: usize,
    /// Most `messages` accepted in one request.
    pub max_messages: usize,
    /// When set, clients must present this token as their API key
    /// (`Authorization: Bearer`, `x-api-key` or `api-key`).
    pub inbound_token: Option<String>,
    /// Take policy from the cluster instead of `policy_file`.
    pub kube: Option<KubeSource>,
    /// Quota store and admission settings.
    pub quota: QuotaSettings,
    /// Largest pass-through body that is not JSON (uploads), streamed.
    pub max_upload_bytes: usize,
    /// How long the Responses conversation store keeps an entry.
    pub responses_ttl: Duration,
    /// Most entries the in-memory Responses store keeps.
    pub responses_max_entries: usize,
}

impl ProxyConfig {
    /// Defaults for tests: every port ephemeral on loopback.
    pub fn for_test(policy_file: PathBuf) -> ProxyConfig {
        ProxyConfig::loopback(
            policy_file,
            Identity {
                namespace: "test-ns".into(),
                workload: "test-app".into(),
                pod: "test-app-0".into(),
            },
        )
    }

    /// A sidecar for one client in the same process (the controller's
    /// prober): every port ephemeral on loopback, the policy from
    /// `policy_file`, the sidecar's defaults for the rest.
    pub fn loopback(policy_file: PathBuf, identity: Identity) -> ProxyConfig {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ProxyConfig {
            listen: any,
            metrics_listen: any,
            admin_listen: any,
            policy_file,
            max_body_bytes: 4 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            ca_file: None,
            drain_timeout: Duration::from_secs(5),
            identity,
            secrets_dir: PathBuf::from(llmesh_policy::DEFAULT_SECRETS_DIR),
            max_header_bytes: 64 * 1024,
            max_json_depth: 64,
            max_messages: 2048,
            inbound_token: None,
            kube: None,
            max_upload_bytes: 64 * 1024 * 1024,
            responses_ttl: Duration::from_secs(3600),
            responses_max_entries: 10_000,
            quota: QuotaSettings::default(),
        }
    }
}

/// Where quota counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSetting {
    /// In this process (exact for one sidecar).
    Memory,
    /// Shared by every sidecar through Redis at this URL.
    Redis(String),
}

impl StoreSetting {
    /// `memory` or a `redis://` / `rediss://` URL.
    pub fn parse(text: &str) -> Result<StoreSetting, String> {
        let t = text.trim();
        if t.is_empty() || t == "memory" {
            return Ok(StoreSetting::Memory);
        }
        if t.starts_with("redis://") || t.starts_with("rediss://") {
            return Ok(StoreSetting::Redis(t.to_string()));
        }
        Err(format!(
            "quota store must be `memory` or a redis:// URL, not {:?}",
            t.chars().take(64).collect::<String>()
        ))
    }
}

/// Start-up settings of quota enforcement.
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// The counters' store.
    pub store: StoreSetting,
    /// While Redis is unreachable each sidecar enforces every limit divided
    /// by this (the number of sidecars expected to share a budget).
    pub local_share: u32,
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    pub default_max_tokens: u64,
    /// Longest wait for one Redis command before the request is decided
    /// on the local share.
    pub redis_timeout: Duration,
    /// Key for hashing caller header values (same on every sidecar).
    pub caller_hash_key: Vec<u8>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            store: StoreSetting::Memory,
            local_share: 1,
            default_max_tokens: 1024,
            redis_timeout: llmesh_quota::RedisConfig::default().command_timeout,
            caller_hash_key: Vec::new(),
        }
    }
}

/// Where the cluster is.
#[derive(Clone)]
pub struct KubeSource {
    /// API server client.
    pub client: kube::Client,
    /// Namespace of cluster-wide defaults, merged under the pod's own.
    pub platform_namespace: Option<String>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("platform_namespace", &self.platform_namespace)
            .finish_non_exhaustive()
    }
}
