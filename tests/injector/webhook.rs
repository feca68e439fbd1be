//! Admission reviews as the API server sends them for a Deployment's pods,
//! answered by the injector; every patch is applied to the pod and the
//! result compared with a committed expected pod
//! (`injector/expected/*.json`; `LLMESH_UPDATE_GOLDEN=1` rewrites them).

use base64::Engine as _;
use llmesh_injector::config::NativeSidecar;
use llmesh_injector::{Injector, Outcome, SidecarConfig};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use super::root;

fn fixture(name: &str) -> Value {
    let path = root().join("tests/injector/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn config() -> SidecarConfig {
    SidecarConfig {
        credential_secrets: vec!["llm-keys".into()],
        quota: llmesh_injector::config::Quota {
            store: "redis://llmesh-redis.llmesh-system:6379/0".into(),
            local_share: Some(4),
        },
        native_sidecar: NativeSidecar::Auto,
        ..SidecarConfig::default()
    }
}

fn injector(native: bool) -> Injector {
    Injector {
        sidecar: config(),
        native,
        own_namespace: "llmesh-system".into(),
    }
}

/// What came back: the response, and the pod after its patch (if any).
struct Answer {
    response: Value,
    outcome: Outcome,
    pod: Value,
    patched: bool,
}

fn answer(inj: &Injector, review: &Value, namespace_enabled: bool) -> Answer {
    let body = serde_json::to_vec(review).unwrap();
    let (out, outcome) = inj.review(&body, namespace_enabled).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = out["response"].clone();
    assert_eq!(
        response["uid"], review["request"]["uid"],
        "the uid is echoed"
    );
    let mut pod = review["request"]["object"].clone();
    let patched = match response.get("patch") {
        Some(p) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().unwrap())
                .unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut pod, &patch).unwrap();
            true
        }
        None => false,
    };
    Answer {
        response,
        outcome,
        pod,
        patched,
    }
}

fn golden(name: &str, pod: &Value) {
    let path = root().join("tests/injector/expected").join(name);
    let text = serde_json::to_string_pretty(pod).unwrap() + "\n";
    if std::env::var_os("LLMESH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (LLMESH_UPDATE_GOLDEN=1 writes it)", path.display())
        }))
        .unwrap();
    assert_eq!(pod, &want, "{name}");
}

fn with_annotations(mut review: Value, annotations: Value) -> Value {
    review["request"]["object"]["metadata"]["annotations"] = annotations;
    review
}

fn sidecar_of(pod: &Value) -> Value {
    let lists = [&pod["spec"]["initContainers"], &pod["spec"]["containers"]];
    lists
        .iter()
        .filter_map(|l| l.as_array())
        .flatten()
        .find(|c| c["name"] == "llmesh-proxy")
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn an_annotated_deployment_pod_gets_a_native_sidecar() {
    let a = answer(
        &injector(true),
        &fixture("deployment-pod.review.json"),
        false,
    );
    assert_eq!(a.outcome, Outcome::Injected);
    assert_eq!(a.response["allowed"], true);
    golden("deployment-pod.native.json", &a.pod);
    // The facts the golden file encodes, spelled out.
    let sidecar = &a.pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "llmesh-proxy");
    assert_eq!(sidecar["restartPolicy"], "Always");
    let env = &a.pod["spec"]["containers"][0]["env"];
    assert!(env
        .as_array()
        .unwrap()
        .contains(&json!({"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:15500/v1"})));
    assert!(env
        .as_array()
        .unwrap()
        .contains(&json!({"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:15500"})));
}

#[test]
fn without_native_sidecars_it_is_a_regular_container() {
    let a = answer(
        &injector(false),
        &fixture("deployment-pod.review.json"),
        false,
    );
    assert_eq!(a.outcome, Outcome::Injected);
    golden("deployment-pod.classic.json", &a.pod);
    assert!(a.pod["spec"].get("initContainers").is_none());
    let sidecar = sidecar_of(&a.pod);
    assert!(sidecar.get("restartPolicy").is_none());
    assert_eq!(a.pod["spec"]["containers"][1]["name"], "llmesh-proxy");
}

#[test]
fn a_pod_with_init_containers_volumes_env_and_annotations_keeps_them() {
    let review = fixture("busy-pod.review.json");
    let a = answer(&injector(true), &review, false);
    assert_eq!(a.outcome, Outcome::Injected);
    golden("busy-pod.native.json", &a.pod);
    // The sidecar goes first, before the migration init container.
    assert_eq!(a.pod["spec"]["initContainers"][0]["name"], "llmesh-proxy");
    assert_eq!(a.pod["spec"]["initContainers"][1]["name"], "migrate");
    // Init containers do not get base URLs; app containers do, unless set.
    assert_eq!(a.pod["spec"]["initContainers"][1].get("env"), None);
    let api_env = a.pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        api_env
            .iter()
            .filter(|e| e["name"] == "OPENAI_BASE_URL")
            .count(),
        1,
        "an app's own OPENAI_BASE_URL is kept"
    );
    assert!(api_env
        .contains(&json!({"name": "OPENAI_BASE_URL", "value": "https://llm-gateway.internal/v1"})));
    let warnings = a.response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0]
        .as_str()
        .unwrap()
        .contains("\"api\" sets OPENAI_BASE_URL"));
    // The pod's own scrape annotations win.
    assert_eq!(
        a.pod["metadata"]["annotations"]["prometheus.io/port"],
        "9090"
    );
    assert_eq!(
        a.pod["metadata"]["annotations"]["llmesh.io/status"],
        "injected"
    );
    let env = sidecar_of(&a.pod)["env"].clone();
    assert!(env
        .as_array()
        .unwrap()
        .contains(&json!({"name": "LLMESH_WORKLOAD", "value": "invoicer"})));
}

#[test]
fn the_sidecar_is_hardened_probed_and_alone_with_the_secrets() {
    let a = answer(
        &injector(true),
        &fixture("deployment-pod.review.json"),
        false,
    );
    let s = sidecar_of(&a.pod);
    assert_eq!(
        s["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": true,
               "allowPrivilegeEscalation": false, "privileged": false, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(s["readinessProbe"]["httpGet"]["port"], 15501);
    assert_eq!(s["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(s["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        s["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );
    let env = s["env"].as_array().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("NODE_NAME", "spec.nodeName"),
    ] {
        let e = env.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    assert!(env.contains(&json!({"name": "LLMESH_WORKLOAD", "value": "chat"})));
    assert!(env.contains(
        &json!({"name": "LLMESH_QUOTA_STORE", "value": "redis://llmesh-redis.llmesh-system:6379/0"})
    ));
    assert!(env.contains(&json!({"name": "LLMESH_QUOTA_LOCAL_SHARE", "value": "4"})));
    assert_eq!(
        s["volumeMounts"],
        json!([{"name": "llmesh-secret-0", "mountPath": "/var/run/secrets/llmesh/llm-keys", "readOnly": true}])
    );
    // The app containers do not see the credential volume.
    for c in a.pod["spec"]["containers"].as_array().unwrap() {
        let mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
        assert!(
            mounts.iter().all(|m| m["name"] != "llmesh-secret-0"),
            "{}",
            c["name"]
        );
    }
    let ann = &a.pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "15501");
}

#[test]
fn a_pod_without_the_annotation_is_left_untouched() {
    let review = with_annotations(fixture("deployment-pod.review.json"), Value::Null);
    let a = answer(&injector(true), &review, false);
    assert!(!a.patched);
    assert_eq!(
        a.response,
        json!({"uid": review["request"]["uid"], "allowed": true})
    );
    assert_eq!(a.outcome, Outcome::Skipped("not selected"));
}

#[test]
fn a_labelled_namespace_selects_unannotated_pods_unless_they_opt_out() {
    let plain = with_annotations(fixture("deployment-pod.review.json"), json!({}));
    let a = answer(&injector(true), &plain, true);
    assert_eq!(a.outcome, Outcome::Injected);
    assert_eq!(sidecar_of(&a.pod)["name"], "llmesh-proxy");

    let opted_out = with_annotations(
        fixture("deployment-pod.review.json"),
        json!({"llmesh.io/inject": "false"}),
    );
    let a = answer(&injector(true), &opted_out, true);
    assert!(!a.patched, "\"false\" wins over the namespace label");
    assert_eq!(a.response["allowed"], true);
}

#[test]
fn a_pod_is_never_injected_twice() {
    let inj = injector(true);
    let first = answer(&inj, &fixture("deployment-pod.review.json"), false);
    assert!(first.patched);
    // The same pod, already patched (a webhook reinvocation, or a pod
    // created from an already-injected spec).
    let mut again = fixture("deployment-pod.review.json");
    again["request"]["object"] = first.pod.clone();
    let second = answer(&inj, &again, true);
    assert!(!second.patched);
    assert_eq!(second.outcome, Outcome::Skipped("already injected"));
    // A container of the sidecar's name, without the status annotation.
    let mut named = fixture("deployment-pod.review.json");
    named["request"]["object"]["spec"]["containers"][0]["name"] = json!("llmesh-proxy");
    assert!(!answer(&inj, &named, false).patched);
}

#[test]
fn system_namespaces_and_the_injectors_own_are_never_injected() {
    for ns in [
        "llmesh-system",
        "kube-system",
        "kube-public",
        "kube-node-lease",
    ] {
        let mut review = fixture("deployment-pod.review.json");
        review["request"]["namespace"] = json!(ns);
        review["request"]["object"]["metadata"]["namespace"] = json!(ns);
        let a = answer(&injector(true), &review, true);
        assert!(!a.patched, "{ns}");
        assert_eq!(a.outcome, Outcome::Skipped("excluded namespace"));
    }
}

#[test]
fn only_pod_creations_are_considered() {
    let mut update = fixture("deployment-pod.review.json");
    update["request"]["operation"] = json!("UPDATE");
    assert!(!answer(&injector(true), &update, true).patched);
    let mut deployment = fixture("deployment-pod.review.json");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    assert!(!answer(&injector(true), &deployment, true).patched);
    // Not a review at all: an error, not a guess.
    assert!(injector(true).review(b"{\"kind\":\"Pod\"}", false).is_err());
}

#[test]
fn valid_overrides_change_the_sidecar() {
    let review = with_annotations(
        fixture("deployment-pod.review.json"),
        json!({
            "llmesh.io/inject": "true",
            "llmesh.io/sidecar-image": "registry.internal:5000/llmesh/llmesh-proxy:0.1.1",
            "llmesh.io/log-level": "info,llmesh_proxy=debug",
            "llmesh.io/sidecar-cpu-request": "100m",
            "llmesh.io/sidecar-cpu-limit": "1",
            "llmesh.io/sidecar-memory-limit": "512Mi",
            "llmesh.io/credential-secrets": "team-openai, team-anthropic",
        }),
    );
    let a = answer(&injector(true), &review, false);
    assert_eq!(a.outcome, Outcome::Injected);
    golden("deployment-pod.overrides.json", &a.pod);
    let s = sidecar_of(&a.pod);
    assert_eq!(
        s["image"],
        "registry.internal:5000/llmesh/llmesh-proxy:0.1.1"
    );
    assert_eq!(
        s["resources"],
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}})
    );
    let args: Vec<&str> = s["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args.iter().position(|a| *a == "--log").unwrap();
    assert_eq!(args[at + 1], "info,llmesh_proxy=debug");
    let mounts: Vec<&str> = s["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        [
            "/var/run/secrets/llmesh/llm-keys",
            "/var/run/secrets/llmesh/team-openai",
            "/var/run/secrets/llmesh/team-anthropic"
        ]
    );
}

#[test]
fn the_base_urls_can_be_turned_off() {
    let review = with_annotations(
        fixture("deployment-pod.review.json"),
        json!({"llmesh.io/inject": "true", "llmesh.io/base-urls": "false"}),
    );
    let a = answer(&injector(true), &review, false);
    assert!(a.patched);
    assert_eq!(
        a.pod["spec"]["containers"][0]["env"],
        json!([{"name": "LOG_LEVEL", "value": "info"}])
    );
}

#[test]
fn bad_overrides_reject_the_pod_with_a_clear_message() {
    let cases = [
        (
            json!({"llmesh.io/inject": "yes"}),
            "llmesh.io/inject: \"yes\" is neither \"true\" nor \"false\"",
        ),
        (
            json!({"llmesh.io/inject": "true", "llmesh.io/sidecar-image": "https://evil/x"}),
            "llmesh.io/sidecar-image: \"https://evil/x\" is not an image reference",
        ),
        (
            json!({"llmesh.io/inject": "true", "llmesh.io/sidecar-memory-limit": "lots"}),
            "llmesh.io/sidecar-memory-limit: \"lots\" is not a quantity",
        ),
        (
            json!({"llmesh.io/inject": "true", "llmesh.io/sidecar-memory-request": "1Gi"}),
            "memory: request 1Gi is above limit 256Mi",
        ),
        (
            json!({"llmesh.io/inject": "true", "llmesh.io/log-level": "loud"}),
            "llmesh.io/log-level: \"loud\" is not a log level",
        ),
        (
            json!({"llmesh.io/inject": "true", "llmesh.io/credential-secrets": "ok,Not_A_Name"}),
            "llmesh.io/credential-secrets: \"Not_A_Name\" is not a Secret name",
        ),
        (
            json!({"llmesh.io/inject": "true", "llmesh.io/base-urls": "off"}),
            "llmesh.io/base-urls: \"off\" is neither",
        ),
        (
            json!({"llmesh.io/inject": "true", "llmesh.io/sidecar-imag": "x"}),
            "llmesh.io/sidecar-imag: unknown llmesh annotation",
        ),
    ];
    for (annotations, message) in cases {
        let review = with_annotations(fixture("deployment-pod.review.json"), annotations.clone());
        let a = answer(&injector(true), &review, false);
        assert_eq!(a.outcome, Outcome::Rejected, "{annotations}");
        assert!(!a.patched);
        assert_eq!(a.response["allowed"], false);
        assert_eq!(a.response["status"]["code"], 400);
        let got = a.response["status"]["message"].as_str().unwrap();
        assert!(
            got.starts_with("llmesh sidecar injection refused: "),
            "{got}"
        );
        assert!(got.contains(message), "{annotations}: {got}");
    }
}

#[test]
fn host_network_pods_are_refused_rather_than_broken() {
    let mut review = fixture("deployment-pod.review.json");
    review["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    let a = answer(&injector(true), &review, false);
    assert_eq!(a.outcome, Outcome::Rejected);
    assert!(a.response["status"]["message"]
        .as_str()
        .unwrap()
        .contains("hostNetwork"));
    // Not selected, it is none of the injector's business.
    let plain = with_annotations(review, Value::Null);
    assert!(!answer(&injector(true), &plain, false).patched);
}

#[test]
fn a_bad_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.yaml");
    std::fs::write(&path, "image: ghcr.io/llmesh/llmesh-proxy:0.1.0\nresources:\n  requests: {memory: 1Gi}\n  limits: {memory: 64Mi}\n").unwrap();
    let e = SidecarConfig::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("request 1Gi is above limit 64Mi"), "{e}");
    std::fs::write(&path, "image: ghcr.io/llmesh/llmesh-proxy:0.1.0\nquota: {store: \"redis://r:6379/0\", localShare: 2}\nnativeSidecar: never\n").unwrap();
    let cfg = SidecarConfig::from_file(&path).unwrap();
    assert_eq!(cfg.native_sidecar, NativeSidecar::Never);
    assert_eq!(cfg.quota.local_share, Some(2));
    std::fs::write(
        &path,
        "image: ghcr.io/llmesh/llmesh-proxy:0.1.0\notlpEndpoint: otel-collector:4317\n",
    )
    .unwrap();
    let e = SidecarConfig::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("otlpEndpoint"), "{e}");
}

#[test]
fn a_trace_collector_reaches_the_sidecar_only() {
    let mut inj = injector(true);
    inj.sidecar.otlp_endpoint = "http://otel-collector.observability:4318".into();
    let a = answer(&inj, &fixture("deployment-pod.review.json"), false);
    let otel = json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4318"});
    assert!(sidecar_of(&a.pod)["env"]
        .as_array()
        .unwrap()
        .contains(&otel));
    for c in a.pod["spec"]["containers"].as_array().unwrap() {
        let env = c["env"].as_array().cloned().unwrap_or_default();
        assert!(!env.contains(&otel), "{}", c["name"]);
    }
    // Without one, no variable at all: the proxy's tracing stays off.
    let a = answer(
        &injector(true),
        &fixture("deployment-pod.review.json"),
        false,
    );
    let env = sidecar_of(&a.pod)["env"].as_array().unwrap().clone();
    assert!(env
        .iter()
        .all(|e| e["name"] != "OTEL_EXPORTER_OTLP_ENDPOINT"));
}

#[test]
fn a_pod_without_an_api_token_gets_one_for_the_sidecar_only() {
    let mut review = fixture("deployment-pod.review.json");
    let pod = &mut review["request"]["object"];
    pod["spec"]["automountServiceAccountToken"] = json!(false);
    pod["spec"]["volumes"] = json!([]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([]);
    let a = answer(&injector(true), &review, false);
    let s = sidecar_of(&a.pod);
    let mounts = s["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(&json!({"name": "llmesh-api-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true})));
    let volumes = a.pod["spec"]["volumes"].as_array().unwrap();
    let token = volumes
        .iter()
        .find(|v| v["name"] == "llmesh-api-token")
        .unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["path"],
        "token"
    );
    assert_eq!(
        a.pod["spec"]["containers"][0]["volumeMounts"],
        json!([]),
        "the app still has none"
    );
    // With the default automounting, nothing extra.
    let a = answer(
        &injector(true),
        &fixture("deployment-pod.review.json"),
        false,
    );
    assert!(a.pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["name"] != "llmesh-api-token"));
}

#[test]
fn cloud_identity_tokens_reach_the_sidecar_only() {
    let mut inj = injector(true);
    let id = &mut inj.sidecar.cloud_identity;
    id.aws.enabled = true;
    id.aws.role_arn = "arn:aws:iam::111122223333:role/llm".into();
    id.aws.region = "eu-west-1".into();
    id.azure.enabled = true;
    id.azure.client_id = "11111111-2222-3333-4444-555555555555".into();
    id.azure.tenant_id = "contoso.onmicrosoft.com".into();
    let a = answer(&inj, &fixture("deployment-pod.review.json"), false);
    let s = sidecar_of(&a.pod);
    let env = s["env"].as_array().unwrap();
    for (name, value) in [
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "/var/run/secrets/llmesh-identity/aws/token",
        ),
        ("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/llm"),
        ("AWS_REGION", "eu-west-1"),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            "/var/run/secrets/llmesh-identity/azure/token",
        ),
        ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
        ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
    ] {
        assert!(
            env.contains(&json!({"name": name, "value": value})),
            "{name}"
        );
    }
    let volumes = a.pod["spec"]["volumes"].as_array().unwrap();
    let token = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["projected"]["sources"][0]["serviceAccountToken"].clone())
            .unwrap()
    };
    assert_eq!(
        token("llmesh-aws-identity")["audience"],
        "sts.amazonaws.com"
    );
    assert_eq!(
        token("llmesh-azure-identity")["audience"],
        "api://AzureADTokenExchange"
    );
    let mounts = s["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["name"] == "llmesh-aws-identity"));
    assert!(mounts.iter().any(|m| m["name"] == "llmesh-azure-identity"));
    // No app container mounts them or sees the variables.
    for c in a.pod["spec"]["containers"].as_array().unwrap() {
        if c["name"] == "llmesh-proxy" {
            continue;
        }
        let text = c.to_string();
        assert!(!text.contains("llmesh-identity"), "{}", c["name"]);
        assert!(!text.contains("AWS_ROLE_ARN") && !text.contains("AZURE_CLIENT_ID"));
    }
    // Off by default: nothing added.
    let a = answer(
        &injector(true),
        &fixture("deployment-pod.review.json"),
        false,
    );
    assert!(!a.pod.to_string().contains("llmesh-identity"));
}

#[test]
fn a_bad_cloud_identity_setting_is_refused_at_start() {
    let mut cfg = config();
    cfg.cloud_identity.aws.role_arn = "llm-role".into();
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("cloudIdentity.aws.roleArn"), "{e}");
    let mut cfg = config();
    cfg.cloud_identity.azure.audience = String::new();
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("cloudIdentity.azure.audience"), "{e}");
}
