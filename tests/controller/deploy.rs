//! Deployability: the real binary from a kubeconfig, and
//! `manifests/controller.yaml` granting exactly what the controller uses.

use std::process::Command;

use llmesh_tests::fake_kube::FakeKube;
use llmesh_tests::{bin_path, field, metric_value, Http, Proc};
use serde_json::{json, Value};

use super::{holder, provider, route, two_replicas, until, until_condition};

// Multi-threaded: the fake API server must keep answering while this
// test blocks on the child process (its output, its exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_binary_writes_status_from_a_kubeconfig_and_releases_its_lease() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&provider("team", "openai"));
    kube.apply_yaml(&route("team", "chat", "openai"));
    kube.apply_yaml(&route("team", "lost", "x"));
    let (mut proc, _dir) = spawn_binary(
        &kube,
        &["--log", "debug,hyper=info,kube=info,tower=info,rustls=info"],
    );
    let line = proc.wait_line("llmesh-controller listening ");
    let metrics = field(&line, "metrics").to_string();

    until_condition(
        &kube,
        "team",
        "llmroutes",
        "chat",
        "ResolvedRefs",
        "True",
        1,
    )
    .await;
    until_condition(&kube, "team", "llmroutes", "lost", "Accepted", "False", 1).await;
    // Identity and Lease namespace from the downward-API variables.
    assert_eq!(holder(&kube).as_deref(), Some("controller-0"));
    let http = Http::new();
    assert_eq!(http.get(&format!("{metrics}/readyz")).await.0, 200);
    assert_eq!(http.get(&format!("{metrics}/healthz")).await.0, 200);
    until("the event", || (!kube.events().is_empty()).then_some(())).await;
    let (_, _, body) = http.get(&format!("{metrics}/metrics")).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(
        metric_value(&text, "llmesh_controller_leader", &[]),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "llmesh_controller_status_patches_total",
            &[("kind", "LLMRoute"), ("result", "success")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "llmesh_controller_events_total",
            &[("kind", "LLMRoute"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert!(text.contains("llmesh_build_info{version=\""), "{text}");

    // SIGTERM: a clean exit that gives the Lease up.
    let status = proc.terminate();
    assert!(status.success(), "{status:?}\n{}", proc.output());
    assert_eq!(holder(&kube), None);
    // JSON log lines, with the rejection named.
    let out = proc.output();
    let rejected = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "resource rejected")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(rejected["resource"], "LLMRoute/team/lost");
    assert!(!out.contains("not-read-by-the-controller"));
}

/// The real binary against `kube` (from a kubeconfig in the returned
/// folder, as `controller-0` of `llmesh-system`), with a short Lease and
/// `extra` flags.
pub(super) fn spawn_binary(kube: &FakeKube, extra: &[&str]) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig("default")).unwrap();
    let proc = Proc::spawn(
        Command::new(bin_path("llmesh-controller"))
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", "controller-0")
            .env("POD_NAMESPACE", "llmesh-system")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--lease-duration",
                "2s",
                "--lease-renew",
                "300ms",
            ])
            .args(extra),
    );
    (proc, dir)
}

/// `manifests/controller.yaml` as JSON documents.
fn manifest() -> Vec<Value> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/controller.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).unwrap())
        .collect()
}

/// One RBAC rule, with the namespace it is limited to (a Role's).
struct Rule {
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    names: Vec<String>,
    verbs: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn rbac_rules(docs: &[Value]) -> Vec<Rule> {
    let mut out = Vec::new();
    for d in docs {
        let namespace = match d["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => Some(d["metadata"]["namespace"].as_str().unwrap().to_string()),
            _ => continue,
        };
        for r in d["rules"].as_array().unwrap() {
            out.push(Rule {
                namespace: namespace.clone(),
                groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                names: strings(&r["resourceNames"]),
                verbs: strings(&r["verbs"]),
            });
        }
    }
    out
}

/// (group, namespace, resource[/subresource], name, verb) of a request
/// line recorded by the fake API server.
fn authz_attributes(line: &str) -> (String, Option<String>, String, Option<String>, String) {
    let (method, target) = line.split_once(' ').unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {path}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let resource = match rest {
        [r] | [r, _] => r.to_string(),
        [r, _, sub] => format!("{r}/{sub}"),
        _ => panic!("unexpected path {path}"),
    };
    let name = rest.get(1).map(|n| n.to_string());
    let verb = match method {
        "GET" if query.contains("watch=true") => "watch",
        "GET" if name.is_some() => "get",
        "GET" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => panic!("unexpected method {other}"),
    };
    (
        group.to_string(),
        namespace,
        resource,
        name,
        verb.to_string(),
    )
}

#[tokio::test]
async fn the_manifest_grants_every_request_the_controller_makes_and_runs_it_as_tested() {
    let docs = manifest();
    let rules = rbac_rules(&docs);
    let kube = FakeKube::start().await;
    kube.apply_yaml(&provider("team", "openai"));
    kube.apply_yaml(&route("team", "chat", "openai"));
    kube.apply_yaml(&route("team", "lost", "x"));
    // Two replicas, a takeover and a release: every request kind happens.
    let (a, b) = two_replicas(&kube).await;
    until("event", || (!kube.events().is_empty()).then_some(())).await;
    a.shutdown().await;
    until("b leads", || b.is_leader().then_some(())).await;
    b.shutdown().await;
    let requests = kube.requests();
    for kind in ["GET", "POST", "PUT", "PATCH"] {
        assert!(
            requests.iter().any(|r| r.starts_with(kind)),
            "no {kind} request in {requests:?}"
        );
    }
    for line in &requests {
        let (group, ns, resource, name, verb) = authz_attributes(line);
        let allowed = rules.iter().any(|r| {
            r.groups.contains(&group)
                && r.resources.contains(&resource)
                && r.verbs.contains(&verb)
                && (r.names.is_empty() || name.as_ref().is_some_and(|n| r.names.contains(n)))
                && (r.namespace.is_none() || r.namespace == ns)
        });
        assert!(
            allowed,
            "{line} ({verb} {group}/{resource}) is not granted by manifests/controller.yaml"
        );
    }
    // Nothing granted that the controller never needs: every rule is used.
    for r in &rules {
        for verb in &r.verbs {
            let used = requests
                .iter()
                .map(|l| authz_attributes(l))
                .any(|(g, _, res, _, v)| {
                    r.groups.contains(&g) && r.resources.contains(&res) && &v == verb
                });
            assert!(
                used,
                "{verb} on {:?} is granted but never used",
                r.resources
            );
        }
    }

    // The Deployment runs what the tests run.
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/llmesh/llmesh-controller:0.1.0");
    assert_eq!(c["ports"][0]["containerPort"], 15510);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .unwrap();
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["serviceAccountName"], "llmesh-controller");
}
