//! What the injector asks of the API server: the self-generated certificate
//! shared by its replicas through one Secret, the caBundle of its
//! MutatingWebhookConfiguration, and the server version (native sidecars).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;

use crate::tls::{self, Generated};

/// Annotation on the Secret: when its serving certificate expires (unix seconds).
const NOT_AFTER: &str = "llmesh.io/not-after";
/// A stored certificate closer than this to its end is replaced at start.
const RENEW_BEFORE_SECS: i64 = 30 * 24 * 3600;

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn from_secret(s: &Secret) -> Option<Generated> {
    let data = s.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let not_after = s
        .metadata
        .annotations
        .as_ref()?
        .get(NOT_AFTER)?
        .parse::<i64>()
        .ok()?;
    let g = Generated {
        ca_pem: text("ca.crt")?,
        cert_pem: text("tls.crt")?,
        key_pem: text("tls.key")?,
        not_after,
    };
    tls::certified_key(g.cert_pem.as_bytes(), g.key_pem.as_bytes()).ok()?;
    Some(g)
}

fn to_secret(name: &str, g: &Generated) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        "ca.crt".to_string(),
        ByteString(g.ca_pem.clone().into_bytes()),
    );
    data.insert(
        "tls.crt".to_string(),
        ByteString(g.cert_pem.clone().into_bytes()),
    );
    data.insert(
        "tls.key".to_string(),
        ByteString(g.key_pem.clone().into_bytes()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                NOT_AFTER.to_string(),
                g.not_after.to_string(),
            )])),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "llmesh-injector".to_string(),
                ),
                (
                    "app.kubernetes.io/part-of".to_string(),
                    "llmesh".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The certificate all replicas serve: the one in Secret `name` when it is
/// valid for another 30 days, else a new one stored there. Two replicas
/// starting together race on the create; the loser reads the winner's.
pub async fn shared_certificate(
    client: kube::Client,
    namespace: &str,
    name: &str,
    service: &str,
) -> anyhow::Result<Generated> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let existing = match api.get(name).await {
        Ok(s) => Some(s),
        Err(e) if is_not_found(&e) => None,
        Err(e) => anyhow::bail!("reading Secret {namespace}/{name}: {e}"),
    };
    if let Some(s) = &existing {
        if let Some(g) = from_secret(s).filter(|g| g.not_after - now > RENEW_BEFORE_SECS) {
            tracing::info!(secret = name, "using the stored serving certificate");
            return Ok(g);
        }
    }
    let g = tls::generate(&tls::service_names(service, namespace))?;
    let mut secret = to_secret(name, &g);
    let written = match existing {
        // Replace an expiring or broken one, guarded by its resourceVersion.
        Some(old) => {
            secret.metadata.resource_version = old.metadata.resource_version.clone();
            api.replace(name, &PostParams::default(), &secret).await
        }
        None => api.create(&PostParams::default(), &secret).await,
    };
    match written {
        Ok(_) => {
            tracing::info!(secret = name, "generated a CA and serving certificate");
            Ok(g)
        }
        Err(e) if is_conflict(&e) => {
            let s = api.get(name).await.map_err(|e| {
                anyhow::anyhow!("reading Secret {namespace}/{name} after a conflict: {e}")
            })?;
            from_secret(&s).ok_or_else(|| {
                anyhow::anyhow!("Secret {namespace}/{name} holds no usable certificate")
            })
        }
        Err(e) => anyhow::bail!("writing Secret {namespace}/{name}: {e}"),
    }
}

/// Sets `caBundle` on every webhook of the configuration `name` that does
/// not carry it yet. Returns how many webhooks changed.
pub async fn patch_ca_bundle(
    client: kube::Client,
    name: &str,
    ca_pem: &str,
) -> anyhow::Result<usize> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let want = ca_pem.as_bytes();
    for attempt in 0..3 {
        let mwc = api
            .get(name)
            .await
            .map_err(|e| anyhow::anyhow!("reading MutatingWebhookConfiguration {name}: {e}"))?;
        let webhooks = mwc.webhooks.unwrap_or_default();
        let mut ops = Vec::new();
        // Fails the whole patch if the object changed since the read, so an
        // index never points at another webhook.
        if let Some(rv) = &mwc.metadata.resource_version {
            ops.push(
                serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
            );
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(want);
        let mut changed = 0;
        for (i, w) in webhooks.iter().enumerate() {
            if w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(want) {
                ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
                changed += 1;
            }
        }
        if changed == 0 {
            return Ok(0);
        }
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))?;
        match api
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(
                    webhook_configuration = name,
                    webhooks = changed,
                    "caBundle set"
                );
                return Ok(changed);
            }
            Err(e) if attempt < 2 => {
                tracing::debug!(error = %e, "caBundle patch failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("patching the caBundle of {name}: {e}"),
        }
    }
    anyhow::bail!("patching the caBundle of {name}: gave up")
}

/// Whether the API server runs native sidecars (Kubernetes 1.29 or newer,
/// where the SidecarContainers feature is on by default).
pub async fn supports_native_sidecars(client: &kube::Client) -> anyhow::Result<bool> {
    let v = client.apiserver_version().await?;
    let num = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .ok()
    };
    Ok(match (num(&v.major), num(&v.minor)) {
        (Some(major), Some(minor)) => major > 1 || (major == 1 && minor >= 29),
        _ => false,
    })
}
