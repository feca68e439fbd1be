//! What the injector adds to a pod: the sidecar's image, ports, resources and
//! settings. Read from a YAML file (the chart renders it from the `sidecar`
//! block of its values into a ConfigMap) and validated once at start, so a
//! bad install fails at start-up rather than on the first pod.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::quantity::Quantity;

/// The sidecar as every injected pod gets it, before per-pod annotations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// Image of `llmesh-proxy`.
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// `--log` of the proxy (a tracing filter such as `info`).
    pub log_level: String,
    /// `json` or `text`.
    pub log_format: String,
    /// Namespace whose llmesh resources apply to every namespace.
    pub platform_namespace: String,
    /// The three sidecar ports.
    pub ports: Ports,
    /// Requests and limits (`cpu`, `memory`) of the sidecar container.
    pub resources: Resources,
    /// Secrets mounted into the sidecar (and only the sidecar) under
    /// `/var/run/secrets/llmesh/<name>`, for `credential.secretKeyRef`.
    /// Mounted as optional, so a pod starts when one is missing.
    pub credential_secrets: Vec<String>,
    /// Quota store settings handed to the proxy.
    pub quota: Quota,
    /// Add the sidecar as a native sidecar (an init container with
    /// `restartPolicy: Always`): `auto` (when the API server is 1.29 or
    /// newer), `always` or `never`.
    pub native_sidecar: NativeSidecar,
    /// Set `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` on the app containers
    /// unless a pod opts out.
    pub base_urls: bool,
    /// User and group the sidecar runs as.
    pub run_as_user: i64,
    /// OTLP/HTTP collector the sidecar exports traces to
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`); empty: no traces.
    pub otlp_endpoint: String,
    /// Cloud workload identities given to the sidecar, and only to it.
    pub cloud_identity: CloudIdentity,
}

/// Projected service-account tokens for cloud workload identities, mounted
/// into the sidecar only (the app's containers never see them), with the
/// variables `LLMProvider` credentials default from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CloudIdentity {
    /// IRSA (`credential.awsWebIdentity`).
    pub aws: AwsIdentity,
    /// Entra Workload Identity (`credential.azureWorkloadIdentity`).
    pub azure: AzureIdentity,
}

/// IRSA for the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AwsIdentity {
    /// Mount the token and set `AWS_WEB_IDENTITY_TOKEN_FILE`.
    pub enabled: bool,
    /// The token's audience.
    pub audience: String,
    /// `AWS_ROLE_ARN`; empty leaves it to the LLMProvider's `roleArn`.
    pub role_arn: String,
    /// `AWS_REGION`, for the regional STS endpoint; empty: the global one.
    pub region: String,
}

impl Default for AwsIdentity {
    fn default() -> Self {
        AwsIdentity {
            enabled: false,
            audience: "sts.amazonaws.com".into(),
            role_arn: String::new(),
            region: String::new(),
        }
    }
}

/// Entra Workload Identity for the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AzureIdentity {
    /// Mount the token and set `AZURE_FEDERATED_TOKEN_FILE`.
    pub enabled: bool,
    /// The token's audience.
    pub audience: String,
    /// `AZURE_CLIENT_ID`; empty leaves it to the LLMProvider.
    pub client_id: String,
    /// `AZURE_TENANT_ID`; empty leaves it to the LLMProvider.
    pub tenant_id: String,
}

impl Default for AzureIdentity {
    fn default() -> Self {
        AzureIdentity {
            enabled: false,
            audience: "api://AzureADTokenExchange".into(),
            client_id: String::new(),
            tenant_id: String::new(),
        }
    }
}

/// Where the sidecar finds the IRSA token.
pub const AWS_TOKEN_DIR: &str = "/var/run/secrets/llmesh-identity/aws";
/// Where the sidecar finds the Entra federated token.
pub const AZURE_TOKEN_DIR: &str = "/var/run/secrets/llmesh-identity/azure";

/// Ports of the sidecar (PRODUCT.md fixes the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Ports {
    /// LLM API, loopback only.
    pub llm: u16,
    /// `/metrics`, `/healthz`, `/readyz`, on the pod network.
    pub metrics: u16,
    /// `/config_dump`, loopback only.
    pub admin: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            llm: 15500,
            metrics: 15501,
            admin: 15502,
        }
    }
}

/// Kubernetes-style requests and limits, `cpu` and `memory` only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// Resource name to quantity.
    pub requests: BTreeMap<String, String>,
    /// Resource name to quantity.
    pub limits: BTreeMap<String, String>,
}

/// Where quota counters live (the proxy's `--quota-store`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Quota {
    /// `memory` or `redis://host:port/db`; empty leaves the proxy's default.
    pub store: String,
    /// `LLMESH_QUOTA_LOCAL_SHARE` (at least 1); unset leaves the default.
    pub local_share: Option<u32>,
}

/// When to use a native sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum NativeSidecar {
    /// Native when the API server is 1.29 or newer.
    #[default]
    Auto,
    /// Always native.
    Always,
    /// Always a regular container.
    Never,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        let mut requests = BTreeMap::new();
        requests.insert("cpu".to_string(), "50m".to_string());
        requests.insert("memory".to_string(), "64Mi".to_string());
        let mut limits = BTreeMap::new();
        limits.insert("memory".to_string(), "256Mi".to_string());
        SidecarConfig {
            image: "ghcr.io/llmesh/llmesh-proxy:0.1.0".to_string(),
            image_pull_policy: "IfNotPresent".to_string(),
            log_level: "info".to_string(),
            log_format: "json".to_string(),
            platform_namespace: "llmesh-system".to_string(),
            ports: Ports::default(),
            resources: Resources { requests, limits },
            credential_secrets: Vec::new(),
            quota: Quota::default(),
            native_sidecar: NativeSidecar::Auto,
            base_urls: true,
            run_as_user: 65532,
            otlp_endpoint: String::new(),
            cloud_identity: CloudIdentity::default(),
        }
    }
}

/// Why a configuration or an override is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidSetting {
    /// The setting or annotation at fault.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidSetting {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidSetting {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl SidecarConfig {
    /// Reads and validates a YAML file.
    pub fn from_file(path: &Path) -> anyhow::Result<SidecarConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let cfg: SidecarConfig = serde_yaml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Checks every field the pod would carry, with the same rules as the
    /// per-pod overrides.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        validate_image("image", &self.image)?;
        if !matches!(
            self.image_pull_policy.as_str(),
            "IfNotPresent" | "Always" | "Never"
        ) {
            return Err(InvalidSetting::new(
                "imagePullPolicy",
                "must be IfNotPresent, Always or Never",
            ));
        }
        validate_log_level("logLevel", &self.log_level)?;
        if !matches!(self.log_format.as_str(), "json" | "text") {
            return Err(InvalidSetting::new("logFormat", "must be json or text"));
        }
        if !self.platform_namespace.is_empty() && !is_dns_label(&self.platform_namespace) {
            return Err(InvalidSetting::new(
                "platformNamespace",
                "must be a namespace name (DNS-1123 label)",
            ));
        }
        let p = self.ports;
        if p.llm == 0 || p.metrics == 0 || p.admin == 0 {
            return Err(InvalidSetting::new("ports", "ports must be 1-65535"));
        }
        if p.llm == p.metrics || p.llm == p.admin || p.metrics == p.admin {
            return Err(InvalidSetting::new("ports", "the three ports must differ"));
        }
        validate_resources("resources", &self.resources)?;
        for s in &self.credential_secrets {
            validate_secret_name("credentialSecrets", s)?;
        }
        validate_quota_store(&self.quota.store)?;
        if self.quota.local_share == Some(0) {
            return Err(InvalidSetting::new(
                "quota.localShare",
                "must be at least 1",
            ));
        }
        validate_otlp_endpoint(&self.otlp_endpoint)?;
        let id = &self.cloud_identity;
        for (field, v) in [
            ("cloudIdentity.aws.audience", &id.aws.audience),
            ("cloudIdentity.azure.audience", &id.azure.audience),
        ] {
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(InvalidSetting::new(
                    field,
                    "an audience without spaces is required",
                ));
            }
        }
        if !id.aws.role_arn.is_empty() && !id.aws.role_arn.starts_with("arn:") {
            return Err(InvalidSetting::new(
                "cloudIdentity.aws.roleArn",
                "must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
            ));
        }
        if !id.aws.region.is_empty()
            && !id
                .aws
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(InvalidSetting::new(
                "cloudIdentity.aws.region",
                "must be a region name such as us-east-1",
            ));
        }
        for (field, v) in [
            ("cloudIdentity.azure.clientId", &id.azure.client_id),
            ("cloudIdentity.azure.tenantId", &id.azure.tenant_id),
        ] {
            if !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(InvalidSetting::new(
                    field,
                    "must be a GUID (or a domain, for tenantId)",
                ));
            }
        }
        if self.run_as_user <= 0 {
            return Err(InvalidSetting::new(
                "runAsUser",
                "must be a non-root user id (> 0)",
            ));
        }
        Ok(())
    }
}

/// An image reference: registry/path:tag or @digest, no spaces, no scheme.
pub(crate) fn validate_image(field: &str, image: &str) -> Result<(), InvalidSetting> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "./:-_@".contains(c);
    if image.is_empty() || image.len() > 512 {
        return Err(InvalidSetting::new(field, "an image reference is required"));
    }
    if !image.chars().all(ok_char) {
        return Err(InvalidSetting::new(
            field,
            format!("{image:?} is not an image reference (letters, digits, . / : - _ @ only)"),
        ));
    }
    if image.contains("://")
        || image.starts_with(['/', ':', '@', '.', '-'])
        || image.ends_with([':', '/', '@'])
    {
        return Err(InvalidSetting::new(
            field,
            format!(
                "{image:?} is not an image reference such as ghcr.io/llmesh/llmesh-proxy:0.1.0"
            ),
        ));
    }
    Ok(())
}

/// A tracing filter: comma-separated `level` or `target=level` items.
pub(crate) fn validate_log_level(field: &str, level: &str) -> Result<(), InvalidSetting> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let bad = || {
        InvalidSetting::new(
            field,
            format!("{level:?} is not a log level (trace, debug, info, warn, error, off, or target=level items)"),
        )
    };
    if level.is_empty() {
        return Err(bad());
    }
    for item in level.split(',') {
        let lvl = match item.split_once('=') {
            Some((target, lvl)) => {
                let target_ok = !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                if !target_ok {
                    return Err(bad());
                }
                lvl
            }
            None => item,
        };
        if !LEVELS.contains(&lvl) {
            return Err(bad());
        }
    }
    Ok(())
}

/// Only `cpu` and `memory`, each a valid quantity, and no request above its limit.
pub(crate) fn validate_resources(field: &str, r: &Resources) -> Result<(), InvalidSetting> {
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, value) in map {
            if name != "cpu" && name != "memory" {
                return Err(InvalidSetting::new(
                    format!("{field}.{kind}"),
                    format!("{name:?}: only cpu and memory can be set"),
                ));
            }
            Quantity::parse(value).map_err(|e| {
                InvalidSetting::new(format!("{field}.{kind}.{name}"), e.to_string())
            })?;
        }
    }
    for name in ["cpu", "memory"] {
        if let (Some(req), Some(lim)) = (r.requests.get(name), r.limits.get(name)) {
            let (Ok(req_q), Ok(lim_q)) = (Quantity::parse(req), Quantity::parse(lim)) else {
                continue;
            };
            if req_q.value() > lim_q.value() {
                return Err(InvalidSetting::new(
                    format!("{field}.{name}"),
                    format!("request {req} is above limit {lim}"),
                ));
            }
        }
    }
    Ok(())
}

/// A Secret name: a DNS-1123 subdomain.
pub(crate) fn validate_secret_name(field: &str, name: &str) -> Result<(), InvalidSetting> {
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label);
    if ok {
        Ok(())
    } else {
        Err(InvalidSetting::new(
            field,
            format!("{name:?} is not a Secret name (lower-case letters, digits, '-' and '.')"),
        ))
    }
}

fn validate_otlp_endpoint(url: &str) -> Result<(), InvalidSetting> {
    if url.is_empty() {
        return Ok(());
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => Ok(()),
        _ => Err(InvalidSetting::new(
            "otlpEndpoint",
            format!("{url:?}: use http(s)://collector:4318 (OTLP over HTTP)"),
        )),
    }
}

fn validate_quota_store(store: &str) -> Result<(), InvalidSetting> {
    if store.is_empty() || store == "memory" {
        return Ok(());
    }
    let rest = store
        .strip_prefix("redis://")
        .or_else(|| store.strip_prefix("rediss://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => Ok(()),
        _ => Err(InvalidSetting::new(
            "quota.store",
            format!("{store:?}: use memory or redis://host:port/db"),
        )),
    }
}

/// A DNS-1123 label: 1-63 lower-case alphanumerics or '-', alphanumeric at both ends.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        assert_eq!(SidecarConfig::default().validate(), Ok(()));
    }

    #[test]
    fn images_log_levels_and_secrets_are_checked() {
        assert!(validate_image("i", "ghcr.io/a/b:1.0").is_ok());
        assert!(validate_image("i", "reg:5000/a/b@sha256:abc").is_ok());
        assert!(validate_image("i", "https://x/y").is_err());
        assert!(validate_image("i", "a b").is_err());
        assert!(validate_image("i", "").is_err());
        assert!(validate_log_level("l", "debug").is_ok());
        assert!(validate_log_level("l", "info,llmesh_proxy=trace").is_ok());
        assert!(validate_log_level("l", "verbose").is_err());
        assert!(validate_secret_name("s", "openai-key").is_ok());
        assert!(validate_secret_name("s", "team.keys").is_ok());
        assert!(validate_secret_name("s", "Bad_Name").is_err());
    }

    #[test]
    fn a_request_above_its_limit_is_refused() {
        let mut r = Resources::default();
        r.requests.insert("memory".into(), "1Gi".into());
        r.limits.insert("memory".into(), "512Mi".into());
        let e = validate_resources("resources", &r).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("resources.memory: request 1Gi is above limit 512Mi".to_string())
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_yaml::from_str::<SidecarConfig>("imagee: x\n");
        assert!(e.is_err());
    }
}
