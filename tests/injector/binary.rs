//! The real `llmesh-injector` binary against the fake API server, set up as
//! `manifests/install.yaml` sets it up: its sidecar settings from the
//! install's ConfigMap, no certificate files. It must generate and share
//! its certificate, write the caBundle, pick native sidecars from the
//! server version, answer over TLS, and ask the API server for nothing the
//! install's RBAC does not grant.

use std::process::Command;

use base64::Engine as _;
use llmesh_tests::fake_kube::FakeKube;
use llmesh_tests::{bin_path, Proc};
use serde_json::Value;

use super::root;

fn install() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("manifests/install.yaml")).unwrap();
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in install.yaml"))
}

/// Starts one replica; returns it and its address.
fn start(
    kube: &FakeKube,
    dir: &std::path::Path,
    config: &std::path::Path,
) -> (Proc, std::net::SocketAddr) {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig("llmesh-system")).unwrap();
    let proc = Proc::spawn(
        Command::new(bin_path("llmesh-injector"))
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", "llmesh-system")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("--listen=127.0.0.1:0")
            .arg(format!("--config={}", config.display()))
            .arg("--log=info,kube=warn,hyper=warn"),
    );
    let line = proc.wait_line("llmesh-injector listening https://");
    let addr = line
        .trim_start_matches("llmesh-injector listening https://")
        .parse()
        .unwrap();
    (proc, addr)
}

fn ca_bundle(kube: &FakeKube) -> String {
    let mwc = kube.webhook_configuration("llmesh-injector").unwrap();
    let b64 = mwc["webhooks"][1]["clientConfig"]["caBundle"]
        .as_str()
        .expect("caBundle set");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

async fn injected_pod(addr: std::net::SocketAddr, ca: &str) -> Value {
    let stream = super::tls::connect(addr, ca)
        .await
        .expect("TLS handshake with the caBundle CA");
    let answer = super::tls::post_review(stream).await;
    let patch = answer["response"]["patch"].as_str().expect("a patch");
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap(),
    )
    .unwrap();
    let review: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/injector/fixtures/deployment-pod.review.json"))
            .unwrap(),
    )
    .unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

/// (group, namespace, resource, name, verb) of a request.
type Attributes = (String, Option<String>, String, Option<String>, String);

/// The attributes of a recorded request; `None` for non-resource paths
/// such as `/version` (open to every client).
fn attributes(line: &str) -> Option<Attributes> {
    let (method, target) = line.split_once(' ').unwrap();
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", g, _, rest @ ..] => (*g, rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let name = rest.get(1).map(|n| n.to_string());
    let verb = match (method, &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        (other, _) => other,
    };
    Some((
        group.to_string(),
        ns,
        rest[0].to_string(),
        name,
        verb.to_string(),
    ))
}

// Multi-threaded: waiting for the binary's line blocks a thread while the
// fake API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_as_installed_shares_its_certificate_and_needs_no_more_rbac_than_granted() {
    let docs = install();
    let kube = FakeKube::start().await;
    // The webhook configuration as install.yaml creates it (no caBundle).
    kube.put_webhook_configuration(
        find(&docs, "MutatingWebhookConfiguration", "llmesh-injector").clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.yaml");
    let cm = find(&docs, "ConfigMap", "llmesh-injector-config");
    std::fs::write(&config, cm["data"]["sidecar.yaml"].as_str().unwrap()).unwrap();

    // Kubernetes 1.33: native sidecars.
    let (first, addr) = start(&kube, dir.path(), &config);
    let ca = ca_bundle(&kube);
    assert!(kube
        .secret("llmesh-system", "llmesh-injector-tls")
        .is_some());
    let pod = injected_pod(addr, &ca).await;
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "llmesh-proxy");
    assert_eq!(pod["spec"]["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(
        pod["spec"]["initContainers"][0]["image"],
        "ghcr.io/llmesh/llmesh-proxy:0.1.0"
    );

    // A second replica on a 1.28 API server: the same certificate (no new
    // Secret, no second caBundle patch), classic sidecars.
    kube.set_minor_version(28);
    let patches = kube.json_patch_count();
    let (second, addr2) = start(&kube, dir.path(), &config);
    assert_eq!(
        kube.json_patch_count(),
        patches,
        "the caBundle was already right"
    );
    let pod = injected_pod(addr2, &ca).await;
    assert!(pod["spec"].get("initContainers").is_none());
    assert_eq!(pod["spec"]["containers"][1]["name"], "llmesh-proxy");
    drop((first, second));

    // Every request is granted by install.yaml's rules for the injector.
    let mut rules = Vec::new();
    for (kind, name) in [
        ("ClusterRole", "llmesh-injector"),
        ("Role", "llmesh-injector"),
    ] {
        let d = find(&docs, kind, name);
        let ns = d["metadata"]["namespace"].as_str().map(str::to_string);
        for r in d["rules"].as_array().unwrap() {
            rules.push((ns.clone(), r.clone()));
        }
    }
    let has = |v: &Value, s: &str| v.as_array().is_some_and(|a| a.iter().any(|x| x == s));
    let requests = kube.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("POST")),
        "{requests:?}"
    );
    for line in &requests {
        let Some((group, ns, resource, name, verb)) = attributes(line) else {
            continue;
        };
        let granted = rules.iter().any(|(rns, r)| {
            has(&r["apiGroups"], &group)
                && has(&r["resources"], &resource)
                && has(&r["verbs"], &verb)
                && (r.get("resourceNames").is_none()
                    || name.as_deref().is_some_and(|n| has(&r["resourceNames"], n)))
                && (rns.is_none() || *rns == ns)
        });
        assert!(
            granted,
            "{line} ({verb} {group}/{resource}) is not granted by install.yaml"
        );
    }
}
