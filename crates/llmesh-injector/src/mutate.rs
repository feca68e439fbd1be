//! The JSON patch (RFC 6902) that adds the sidecar to a pod. Works on the
//! pod as raw JSON, so fields the injector does not know are never touched,
//! and builds `add` operations only: a pod that is not selected gets no
//! patch at all.

use serde_json::{json, Map, Value};

use crate::config::SidecarConfig;
use crate::overrides::STATUS;

/// Name of the sidecar container.
pub const SIDECAR_NAME: &str = "llmesh-proxy";
/// Label set to `"true"` on every injected pod (the PodMonitor selects it).
pub const SIDECAR_LABEL: &str = "llmesh.io/sidecar";
/// The IRSA token volume (sidecar only).
const AWS_TOKEN_VOLUME: &str = "llmesh-aws-identity";
/// The Entra federated token volume (sidecar only).
const AZURE_TOKEN_VOLUME: &str = "llmesh-azure-identity";
/// The sidecar's own API token volume, for pods that turn automounting off.
pub const TOKEN_VOLUME: &str = "llmesh-api-token";
/// Where credential Secrets are mounted, one folder per Secret.
pub const SECRETS_DIR: &str = "/var/run/secrets/llmesh";

/// A patch and the warnings that go with it.
#[derive(Debug, Default)]
pub struct Mutation {
    /// JSON patch operations.
    pub ops: Vec<Value>,
    /// Shown by kubectl to whoever created the pod.
    pub warnings: Vec<String>,
}

/// Whether a pod already has the sidecar: the status annotation or a
/// container of that name, among containers or init containers.
pub fn already_injected(pod: &Value) -> bool {
    let annotated = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(STATUS))
        .is_some();
    let named = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .any(|p| {
            pod.pointer(p).and_then(Value::as_array).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME))
            })
        });
    annotated || named
}

/// The workload a pod belongs to, for `LLMESH_WORKLOAD`: the Deployment
/// behind a ReplicaSet owner, another controller's name, else the
/// `app.kubernetes.io/name` or `app` label, else the pod's name prefix.
pub fn workload_name(pod: &Value) -> String {
    let meta = pod.get("metadata");
    let labels = meta.and_then(|m| m.get("labels"));
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let owners = meta
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array);
    let owner = owners.and_then(|os| {
        os.iter()
            .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
            .or_else(|| os.first())
    });
    if let Some(o) = owner {
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
        if let Some(name) = o
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return match kind {
                // ReplicaSets made by a Deployment are named <deployment>-<pod-template-hash>.
                "ReplicaSet" => match label("pod-template-hash") {
                    Some(h) => name
                        .strip_suffix(h)
                        .and_then(|n| n.strip_suffix('-'))
                        .unwrap_or(name)
                        .to_string(),
                    None => name.to_string(),
                },
                // Jobs made by a CronJob are named <cronjob>-<minutes since epoch>.
                "Job" => match name.rsplit_once('-') {
                    Some((base, n)) if n.len() >= 8 && n.bytes().all(|b| b.is_ascii_digit()) => {
                        base.to_string()
                    }
                    _ => name.to_string(),
                },
                _ => name.to_string(),
            };
        }
    }
    if let Some(n) = label("app.kubernetes.io/name").or_else(|| label("app")) {
        return n.to_string();
    }
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(g) = field("generateName") {
        return g.trim_end_matches('-').to_string();
    }
    field("name").unwrap_or("unknown").to_string()
}

/// Escapes one JSON pointer segment (`/` and `~`).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})
}

/// The sidecar container for these settings.
pub fn sidecar_container(cfg: &SidecarConfig, workload: &str, native: bool) -> Value {
    let p = cfg.ports;
    let args = vec![
        "--source".to_string(),
        "kubernetes".to_string(),
        "--platform-namespace".to_string(),
        cfg.platform_namespace.clone(),
        "--listen".to_string(),
        format!("127.0.0.1:{}", p.llm),
        "--metrics-listen".to_string(),
        format!("0.0.0.0:{}", p.metrics),
        "--admin-listen".to_string(),
        format!("127.0.0.1:{}", p.admin),
        "--secrets-dir".to_string(),
        SECRETS_DIR.to_string(),
        "--log".to_string(),
        cfg.log_level.clone(),
        "--log-format".to_string(),
        cfg.log_format.clone(),
    ];
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("NODE_NAME", "spec.nodeName"),
        json!({"name": "LLMESH_WORKLOAD", "value": workload}),
    ];
    if !cfg.quota.store.is_empty() {
        env.push(json!({"name": "LLMESH_QUOTA_STORE", "value": cfg.quota.store}));
    }
    if !cfg.otlp_endpoint.is_empty() {
        env.push(json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": cfg.otlp_endpoint}));
    }
    if let Some(share) = cfg.quota.local_share {
        env.push(json!({"name": "LLMESH_QUOTA_LOCAL_SHARE", "value": share.to_string()}));
    }
    let mut mounts: Vec<Value> = cfg
        .credential_secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"name": format!("llmesh-secret-{i}"), "mountPath": format!("{SECRETS_DIR}/{s}"), "readOnly": true})
        })
        .collect();
    let id = &cfg.cloud_identity;
    if id.aws.enabled {
        mounts.push(json!({"name": AWS_TOKEN_VOLUME, "mountPath": crate::config::AWS_TOKEN_DIR, "readOnly": true}));
        env.push(json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": format!("{}/token", crate::config::AWS_TOKEN_DIR)}));
        if !id.aws.role_arn.is_empty() {
            env.push(json!({"name": "AWS_ROLE_ARN", "value": id.aws.role_arn}));
        }
        if !id.aws.region.is_empty() {
            env.push(json!({"name": "AWS_REGION", "value": id.aws.region}));
        }
    }
    if id.azure.enabled {
        mounts.push(json!({"name": AZURE_TOKEN_VOLUME, "mountPath": crate::config::AZURE_TOKEN_DIR, "readOnly": true}));
        env.push(json!({"name": "AZURE_FEDERATED_TOKEN_FILE", "value": format!("{}/token", crate::config::AZURE_TOKEN_DIR)}));
        env.push(
            json!({"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}),
        );
        if !id.azure.client_id.is_empty() {
            env.push(json!({"name": "AZURE_CLIENT_ID", "value": id.azure.client_id}));
        }
        if !id.azure.tenant_id.is_empty() {
            env.push(json!({"name": "AZURE_TENANT_ID", "value": id.azure.tenant_id}));
        }
    }
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": {"path": path, "port": p.metrics, "scheme": "HTTP"},
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": failures,
        })
    };
    let mut c = json!({
        "name": SIDECAR_NAME,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "args": args,
        "env": env,
        "ports": [{"name": "llmesh-metrics", "containerPort": p.metrics, "protocol": "TCP"}],
        "resources": {"requests": cfg.resources.requests, "limits": cfg.resources.limits},
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": cfg.run_as_user,
            "runAsGroup": cfg.run_as_user,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        // Holds the app's start (native sidecar) until the proxy listens.
        "startupProbe": probe("/healthz", 1, 30),
        "readinessProbe": probe("/readyz", 5, 2),
        "livenessProbe": probe("/healthz", 10, 3),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if !mounts.is_empty() {
        c["volumeMounts"] = Value::Array(mounts);
    }
    if native {
        c["restartPolicy"] = json!("Always");
    }
    c
}

/// The patch adding the sidecar, its volumes, the annotations and the app
/// containers' base URLs. `cfg` is the pod's effective configuration.
pub fn patch(pod: &Value, cfg: &SidecarConfig, native: bool) -> Mutation {
    let mut m = Mutation::default();
    let workload = workload_name(pod);
    let mut sidecar = sidecar_container(cfg, &workload, native);

    // A pod that turns off the API token for its app still needs one for
    // the sidecar, which watches the llmesh resources: a projected token,
    // mounted into the sidecar only.
    let no_token = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        == Some(false);
    let mut volumes: Vec<Value> = Vec::new();
    if no_token {
        volumes.push(json!({"name": TOKEN_VOLUME, "projected": {"defaultMode": 0o444, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}}));
        let mount = json!({"name": TOKEN_VOLUME, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true});
        match sidecar
            .get_mut("volumeMounts")
            .and_then(Value::as_array_mut)
        {
            Some(mounts) => mounts.push(mount),
            None => sidecar["volumeMounts"] = json!([mount]),
        }
    }

    // The sidecar: first init container (started before the others and the
    // app, stopped after them), or the last regular container.
    if native {
        match pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
        {
            Some(list) if !list.is_empty() => m
                .ops
                .push(json!({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})),
            _ => m
                .ops
                .push(json!({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})),
        }
    } else {
        m.ops
            .push(json!({"op": "add", "path": "/spec/containers/-", "value": sidecar}));
    }

    // Credential Secrets, mounted in the sidecar only. Files are root-owned
    // without an fsGroup, so they must be world-readable for the non-root
    // sidecar; no other container mounts the volume.
    volumes.extend(cfg.credential_secrets.iter().enumerate().map(|(i, s)| {
        json!({"name": format!("llmesh-secret-{i}"), "secret": {"secretName": s, "optional": true, "defaultMode": 0o444}})
    }));
    // Cloud workload identity tokens: projected for their cloud's
    // audience, mounted in the sidecar only.
    let id = &cfg.cloud_identity;
    for (enabled, name, audience) in [
        (id.aws.enabled, AWS_TOKEN_VOLUME, &id.aws.audience),
        (id.azure.enabled, AZURE_TOKEN_VOLUME, &id.azure.audience),
    ] {
        if enabled {
            volumes.push(json!({"name": name, "projected": {"defaultMode": 0o444, "sources": [
                {"serviceAccountToken": {"path": "token", "audience": audience, "expirationSeconds": 86400}},
            ]}}));
        }
    }
    if !volumes.is_empty() {
        match pod.pointer("/spec/volumes").and_then(Value::as_array) {
            Some(_) => {
                for v in volumes {
                    m.ops
                        .push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
                }
            }
            None => m
                .ops
                .push(json!({"op": "add", "path": "/spec/volumes", "value": volumes})),
        }
    }

    // App containers: the SDKs' base URLs point at the sidecar.
    if cfg.base_urls {
        let llm = cfg.ports.llm;
        let urls = [
            ("OPENAI_BASE_URL", format!("http://127.0.0.1:{llm}/v1")),
            ("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{llm}")),
        ];
        let containers = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, c) in containers.iter().enumerate() {
            let env = c.get("env").and_then(Value::as_array);
            let cname = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let mut add = Vec::new();
            for (name, url) in &urls {
                let present = env.is_some_and(|e| {
                    e.iter()
                        .any(|v| v.get("name").and_then(Value::as_str) == Some(*name))
                });
                if present {
                    m.warnings.push(format!(
                        "llmesh: container {cname:?} sets {name} itself; left as is, so its calls may bypass the sidecar"
                    ));
                } else {
                    add.push(json!({"name": name, "value": url}));
                }
            }
            if add.is_empty() {
                continue;
            }
            if env.is_some() {
                for v in add {
                    m.ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env/-"), "value": v}));
                }
            } else {
                m.ops.push(
                    json!({"op": "add", "path": format!("/spec/containers/{i}/env"), "value": add}),
                );
            }
        }
    }

    // Annotations: the injection mark, and Prometheus scrape hints unless
    // the pod already has its own.
    let mut new: Map<String, Value> = Map::new();
    new.insert(STATUS.to_string(), json!("injected"));
    let existing = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let has_scrape = existing.is_some_and(|a| a.keys().any(|k| k.starts_with("prometheus.io/")));
    if !has_scrape {
        new.insert("prometheus.io/scrape".into(), json!("true"));
        new.insert(
            "prometheus.io/port".into(),
            json!(cfg.ports.metrics.to_string()),
        );
        new.insert("prometheus.io/path".into(), json!("/metrics"));
    }
    // A label, so a PodMonitor (or kubectl) can select injected pods.
    match pod.pointer("/metadata/labels").and_then(Value::as_object) {
        Some(_) => m.ops.push(json!({"op": "add", "path": format!("/metadata/labels/{}", escape(SIDECAR_LABEL)), "value": "true"})),
        None => m.ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {SIDECAR_LABEL: "true"}})),
    }
    match existing {
        Some(_) => {
            for (k, v) in new {
                m.ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(&k)), "value": v}));
            }
        }
        None => m
            .ops
            .push(json!({"op": "add", "path": "/metadata/annotations", "value": new})),
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_name_comes_from_the_replicaset() {
        let pod = json!({"metadata": {
            "generateName": "chat-7d9f8b6c5d-",
            "labels": {"pod-template-hash": "7d9f8b6c5d", "app": "other"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "chat-7d9f8b6c5d", "controller": true}]
        }});
        assert_eq!(workload_name(&pod), "chat");
    }

    #[test]
    fn other_owners_labels_and_names() {
        let sts = json!({"metadata": {"ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": true}]}});
        assert_eq!(workload_name(&sts), "db");
        let cron = json!({"metadata": {"ownerReferences": [{"kind": "Job", "name": "nightly-29123456", "controller": true}]}});
        assert_eq!(workload_name(&cron), "nightly");
        let labelled =
            json!({"metadata": {"name": "x", "labels": {"app.kubernetes.io/name": "web"}}});
        assert_eq!(workload_name(&labelled), "web");
        let bare = json!({"metadata": {"name": "solo"}});
        assert_eq!(workload_name(&bare), "solo");
        assert_eq!(escape("prometheus.io/scrape"), "prometheus.io~1scrape");
    }
}
