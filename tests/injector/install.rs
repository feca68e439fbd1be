//! The Helm chart and `manifests/install.yaml`: Helm's own lint passes, the
//! chart's CRDs are the generated ones, `install.yaml` is the chart as Helm
//! renders it with the default values (`manifests/render.py` runs a real
//! `helm install` through helm-sdkpy against a recording API server), the
//! chart renders with every option on, and, read without Helm, the
//! templates and `install.yaml` agree on kinds, names, images, ports, RBAC
//! rules, webhook settings, the shipped dashboard and the sidecar settings.
//!
//! The last group reads each template as YAML with its `{{ }}` expressions
//! blanked, which keeps every literal field comparable without rendering.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use llmesh_injector::SidecarConfig;
use pretty_assertions::assert_eq;
use serde_json::Value;

use super::root;

const NAMESPACE: &str = "llmesh-system";
const BLANK: &str = "TEMPLATED";

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

fn values() -> Value {
    serde_yaml::from_str(&read("charts/llmesh/values.yaml")).unwrap()
}

fn app_version() -> String {
    let chart: Value = serde_yaml::from_str(&read("charts/llmesh/Chart.yaml")).unwrap();
    chart["appVersion"].as_str().unwrap().to_string()
}

fn install() -> Vec<Value> {
    yaml_docs(&read("manifests/install.yaml"))
}

/// Whether a `.Values.a.b` path is set (truthy) in values.yaml.
fn truthy(values: &Value, path: &str) -> bool {
    let v = path
        .trim_start_matches(".Values.")
        .split('.')
        .fold(values, |v, k| &v[k]);
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

/// The objects of one template with the default values: none when the file
/// is wholly inside `{{- if .Values.x }}` and x is off; otherwise its
/// documents with template-only lines dropped and expressions blanked.
fn template_objects(path: &Path, values: &Value) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .unwrap_or("");
    if let Some(cond) = first
        .trim()
        .strip_prefix("{{- if ")
        .and_then(|r| r.strip_suffix(" }}"))
    {
        assert!(
            cond.starts_with(".Values."),
            "{}: gate on one values path",
            path.display()
        );
        if !truthy(values, cond) {
            return Vec::new();
        }
    }
    let mut kept = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1 {
            continue;
        }
        let mut out = String::new();
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").map(|e| start + e + 2).unwrap();
            out.push_str(BLANK);
            rest = &rest[end..];
        }
        out.push_str(rest);
        kept.push_str(&out);
        kept.push('\n');
    }
    yaml_docs(&kept)
}

/// Every object the chart installs with its default values: templates and CRDs.
fn chart_objects() -> Vec<Value> {
    let values = values();
    let dir = root().join("charts/llmesh/templates");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out: Vec<Value> = files
        .iter()
        .flat_map(|f| template_objects(f, &values))
        .collect();
    for crd in chart_crds() {
        out.extend(yaml_docs(&read(&format!("charts/llmesh/crds/{crd}"))));
    }
    out
}

fn chart_crds() -> BTreeSet<String> {
    std::fs::read_dir(root().join("charts/llmesh/crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn key(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or("?").to_string(),
        o["metadata"]["name"].as_str().unwrap_or("?").to_string(),
    )
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| key(o) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn helm_lint_passes_on_the_chart() {
    let out = Command::new("python3")
        .arg(root().join("tests/injector/helm_lint.py"))
        .arg(root().join("charts/llmesh"))
        .arg("--strict")
        .output()
        .expect("python3 is needed for helm lint (make deps)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm lint failed:\n{text}");
    assert!(
        text.contains("default values: INFO") || text.contains("default values: OK"),
        "{text}"
    );
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let generated: BTreeSet<String> = std::fs::read_dir(root().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("llmesh.io_") && n.ends_with(".yaml"))
        .collect();
    assert_eq!(
        chart_crds(),
        generated,
        "make crds copies crds/llmesh.io_*.yaml into the chart"
    );
    for name in &generated {
        assert_eq!(
            read(&format!("charts/llmesh/crds/{name}")),
            read(&format!("crds/{name}")),
            "{name} differs: run make crds"
        );
    }
}

#[test]
fn every_object_has_api_version_kind_and_metadata() {
    for (source, objs) in [("chart", chart_objects()), ("install.yaml", install())] {
        assert!(objs.len() > 20, "{source}: {} objects", objs.len());
        for o in &objs {
            let ok = o["apiVersion"].as_str().is_some_and(|s| !s.is_empty())
                && o["kind"].as_str().is_some_and(|s| !s.is_empty())
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty());
            assert!(
                ok,
                "{source}: an object without apiVersion, kind or metadata.name: {o}"
            );
        }
    }
}

#[test]
fn install_yaml_holds_the_charts_objects() {
    let chart: BTreeSet<_> = chart_objects().iter().map(key).collect();
    let mut plain: BTreeSet<_> = install().iter().map(key).collect();
    // Helm creates the namespace (--create-namespace); kubectl needs it written.
    assert!(plain.remove(&("Namespace".into(), NAMESPACE.into())));
    assert_eq!(plain, chart);
    // Namespaced objects of install.yaml are all in llmesh-system.
    for o in install() {
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            assert_eq!(ns, NAMESPACE, "{:?}", key(&o));
        }
    }
}

/// Containers of every Deployment: (deployment, container) -> container.
fn containers(objs: &[Value]) -> BTreeMap<(String, String), Value> {
    objs.iter()
        .filter(|o| o["kind"] == "Deployment")
        .flat_map(|d| {
            let dn = d["metadata"]["name"].as_str().unwrap().to_string();
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |c| {
                    (
                        (dn.clone(), c["name"].as_str().unwrap().to_string()),
                        c.clone(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn images_ports_and_settings_follow_the_default_values() {
    let values = values();
    let version = app_version();
    let plain = install();
    let chart = chart_objects();
    let pc = containers(&plain);
    let cc = containers(&chart);
    assert_eq!(pc.keys().collect::<Vec<_>>(), cc.keys().collect::<Vec<_>>());
    for (component, port_key) in [("injector", "port"), ("controller", "metricsPort")] {
        let deployment = format!("llmesh-{component}");
        let image = &values[component]["image"];
        let tag = image["tag"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or(&version);
        let (_, c) = pc.iter().find(|((d, _), _)| *d == deployment).unwrap();
        assert_eq!(
            c["image"],
            format!("{}:{tag}", image["repository"].as_str().unwrap())
        );
        assert_eq!(c["imagePullPolicy"], image["pullPolicy"]);
        assert_eq!(c["ports"][0]["containerPort"], values[component][port_key]);
        assert_eq!(c["resources"], values[component]["resources"]);
        let d = find(&plain, "Deployment", &deployment);
        assert_eq!(d["spec"]["replicas"], values[component]["replicas"]);
        // Port names and probes are literal in the template: they must agree.
        let (_, t) = cc.iter().find(|((d, _), _)| *d == deployment).unwrap();
        assert_eq!(c["ports"][0]["name"], t["ports"][0]["name"]);
        assert_eq!(c["readinessProbe"], t["readinessProbe"]);
        assert_eq!(c["livenessProbe"], t["livenessProbe"]);
        assert_eq!(c["securityContext"], t["securityContext"]);
    }
    // The controller and the sidecars share the quota store.
    let (_, controller) = pc
        .iter()
        .find(|((d, _), _)| d == "llmesh-controller")
        .unwrap();
    let env = controller["env"].as_array().unwrap();
    let store = env
        .iter()
        .find(|e| e["name"] == "LLMESH_QUOTA_STORE")
        .unwrap();
    assert_eq!(store["value"], values["quotaStore"]);

    // Services point at the containers' named ports.
    for name in ["llmesh-injector", "llmesh-controller"] {
        let p = &find(&plain, "Service", name)["spec"]["ports"][0];
        let t = &find(&chart, "Service", name)["spec"]["ports"][0];
        assert_eq!(p["targetPort"], t["targetPort"]);
        assert_eq!(p["name"], t["name"]);
    }
}

#[test]
fn the_sidecar_settings_are_the_values_and_valid() {
    let values = values();
    let cm = find(&install(), "ConfigMap", "llmesh-injector-config").clone();
    let text = cm["data"]["sidecar.yaml"].as_str().unwrap();
    let plain: Value = serde_yaml::from_str(text).unwrap();
    // The chart's template: the sidecar block, plus the platform namespace
    // and the quota settings.
    let mut want = values["sidecar"].clone();
    want["platformNamespace"] = Value::String(NAMESPACE.into());
    want["quota"] = serde_json::json!({"store": values["quotaStore"]});
    assert_eq!(plain, want);
    // And the injector accepts it as is.
    let cfg: SidecarConfig = serde_yaml::from_str(text).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.ports.metrics, 15501);
    assert_eq!(cfg.ports.llm, 15500);
    assert_eq!(cfg.ports.admin, 15502);
}

#[test]
fn rbac_rules_and_bindings_are_the_charts() {
    let chart = chart_objects();
    let plain = install();
    let mut compared = 0;
    for o in &plain {
        let (kind, name) = key(o);
        match kind.as_str() {
            "ClusterRole" | "Role" => {
                let t = find(&chart, &kind, &name);
                assert_eq!(o["rules"], t["rules"], "{kind} {name}");
                compared += 1;
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                let t = find(&chart, &kind, &name);
                assert_eq!(o["roleRef"], t["roleRef"], "{kind} {name}");
                let subjects = o["subjects"].as_array().unwrap();
                let tsubjects = t["subjects"].as_array().unwrap();
                assert_eq!(subjects.len(), tsubjects.len());
                for (s, ts) in subjects.iter().zip(tsubjects) {
                    assert_eq!(s["kind"], ts["kind"]);
                    assert_eq!(s["name"], ts["name"]);
                    if ts["namespace"] == BLANK {
                        assert_eq!(s["namespace"], NAMESPACE);
                    }
                }
                compared += 1;
            }
            _ => {}
        }
    }
    // 10, and the sidecars' events ClusterRole (bound per app namespace).
    assert_eq!(compared, 11);
    // The controller's rules are those of manifests/controller.yaml, which
    // tests/controller/deploy.rs checks against what the controller asks.
    let standalone = yaml_docs(&read("manifests/controller.yaml"));
    for (kind, name) in [
        ("ClusterRole", "llmesh-controller"),
        ("Role", "llmesh-controller-leader-election"),
    ] {
        assert_eq!(
            find(&plain, kind, name)["rules"],
            find(&standalone, kind, name)["rules"],
            "{kind} {name}"
        );
    }
    // Least privilege: the sidecar only reads llmesh resources.
    let sidecar = find(&plain, "ClusterRole", "llmesh-sidecar");
    assert_eq!(
        sidecar["rules"],
        serde_json::json!([{"apiGroups": ["llmesh.io"], "resources": ["llmproviders", "llmroutes", "llmquotas", "llmdatapolicies"], "verbs": ["get", "list", "watch"]}])
    );
    // ...and is bound per namespace, never cluster-wide.
    assert!(plain
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding")
        .all(|o| o["roleRef"]["name"] != "llmesh-sidecar"));
}

#[test]
fn the_webhook_configuration_is_the_charts() {
    let values = values();
    let plain = find(
        &install(),
        "MutatingWebhookConfiguration",
        "llmesh-injector",
    )
    .clone();
    let chart = chart_objects();
    let t = find(&chart, "MutatingWebhookConfiguration", "llmesh-injector");
    let hooks = plain["webhooks"].as_array().unwrap();
    let thooks = t["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks.len(), thooks.len());
    for (h, th) in hooks.iter().zip(thooks) {
        let name = h["name"].as_str().unwrap();
        for field in [
            "name",
            "admissionReviewVersions",
            "sideEffects",
            "reinvocationPolicy",
            "matchPolicy",
            "rules",
            "objectSelector",
        ] {
            assert_eq!(h[field], th[field], "{name}: {field}");
        }
        assert_eq!(
            h["failurePolicy"], values["injector"]["failurePolicy"],
            "{name}"
        );
        assert_eq!(
            h["timeoutSeconds"], values["injector"]["timeoutSeconds"],
            "{name}"
        );
        assert_eq!(
            h["clientConfig"]["service"]["path"],
            th["clientConfig"]["service"]["path"]
        );
        assert_eq!(h["clientConfig"]["service"]["name"], "llmesh-injector");
        assert_eq!(h["clientConfig"]["service"]["port"], 443);
        assert!(
            h["clientConfig"].get("caBundle").is_none(),
            "the injector writes caBundle"
        );
        // The same selector; the excluded namespaces come from a helper.
        let exprs = h["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        let texprs = th["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        assert_eq!(exprs[0], texprs[0], "{name}");
        assert_eq!(exprs[1]["key"], "kubernetes.io/metadata.name");
        assert_eq!(exprs[1]["operator"], "NotIn");
        assert_eq!(
            exprs[1]["values"],
            serde_json::json!(["kube-system", "kube-public", "kube-node-lease", NAMESPACE])
        );
    }
    // The paths the injector serves.
    assert_eq!(
        hooks[0]["clientConfig"]["service"]["path"],
        "/inject/namespace"
    );
    assert_eq!(hooks[1]["clientConfig"]["service"]["path"], "/inject");
}

#[test]
fn the_dashboard_and_rules_ship_from_their_files() {
    let plain = install();
    let cm = find(&plain, "ConfigMap", "llmesh-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(cm["data"]["llmesh.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_str(&read("charts/llmesh/dashboards/llmesh.json")).unwrap();
    assert_eq!(shipped, file, "run make manifests");
    let t = read("charts/llmesh/templates/grafana-dashboard.yaml");
    assert!(t.contains(".Files.Get \"dashboards/llmesh.json\""));
    let rules = read("charts/llmesh/templates/prometheus-rule.yaml");
    assert!(rules.contains(".Files.Get \"prometheus/llmesh-rules.yaml\""));
}

#[test]
fn the_values_schema_covers_every_value() {
    let schema: Value = serde_json::from_str(&read("charts/llmesh/values.schema.json")).unwrap();
    fn walk(values: &Value, schema: &Value, path: &str) {
        let Some(obj) = values.as_object() else {
            return;
        };
        let props = &schema["properties"];
        for (k, v) in obj {
            let s = &props[k];
            assert!(
                !s.is_null(),
                "values.yaml {path}{k} is not in values.schema.json"
            );
            walk(v, s, &format!("{path}{k}."));
        }
    }
    walk(&values(), &schema, "");
}

/// `manifests/render.py`'s output: the chart as Helm renders it.
fn helm_render(extra: &[&str]) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(root().join("manifests/render.py"))
        .args(extra)
        .output()
        .expect("python3 is needed to render the chart (make deps)");
    assert!(
        out.status.success(),
        "manifests/render.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

/// Copies the chart to a temporary folder, changes (or adds) one file there,
/// and renders it; the failure message when render.py's API server refuses it.
fn render_changed_chart(file: &str, change: impl Fn(&str) -> String) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("llmesh");
    let src = root().join("charts/llmesh");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&chart)
        .status()
        .unwrap();
    assert!(status.success());
    let path = chart.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, change(&text)).unwrap();
    let out = Command::new("python3")
        .arg(root().join("manifests/render.py"))
        .arg("--chart")
        .arg(&chart)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[test]
fn the_recording_server_refuses_what_a_real_api_server_refuses() {
    // The LLMRoute CRD as it was with a field named `on`: Helm, like
    // kubectl, reads YAML 1.1 and sends `required: [true, backends]`.
    let err = render_changed_chart("crds/llmesh.io_llmroutes.yaml", |t| {
        t.replace("                    when:\n", "                    on:\n")
            .replace("                  when:\n", "                  on:\n")
            .replace("- when\n", "- on\n")
    })
    .unwrap_err();
    assert!(
        err.contains("cannot be handled as a CustomResourceDefinition")
            && err.contains("cannot unmarshal bool into Go struct field JSONSchemaProps.required of type string"),
        "{err}"
    );
    // An llmesh object in a template, written with the old field name:
    // strict decoding refuses the key YAML 1.1 made of `on`.
    let err = render_changed_chart("templates/route.yaml", |_| {
        "apiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: chat, namespace: default}\nspec:\n  models: [chat]\n  backends: [{provider: openai}]\n  retries: {on: [server-error]}\n".to_string()
    })
    .unwrap_err();
    assert!(err.contains("unknown field \"spec.retries.true\""), "{err}");
    // The chart as it is renders.
    render_changed_chart("values.yaml", |t| t.to_string()).unwrap();
}

#[test]
fn install_yaml_is_the_chart_rendered_by_helm() {
    let rendered = helm_render(&[]);
    let plain = install();
    assert_eq!(
        plain.iter().map(key).collect::<Vec<_>>(),
        rendered.iter().map(key).collect::<Vec<_>>(),
        "run make manifests"
    );
    for (p, r) in plain.iter().zip(&rendered) {
        assert_eq!(
            p,
            r,
            "{:?} differs from the chart: run make manifests",
            key(p)
        );
    }
}

#[test]
fn the_chart_renders_with_every_option_on() {
    let options = root().join("tests/injector/all-options.values.yaml");
    let objs = helm_render(&["--values", options.to_str().unwrap(), "--no-namespace"]);
    let kinds: BTreeSet<_> = objs
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "Certificate",
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(k), "no {k} in {kinds:?}");
    }
    // An issuerRef given: no Issuer of the chart's own.
    assert!(!kinds.contains("Issuer"));
    let cert = find(&objs, "Certificate", "llmesh-injector");
    assert_eq!(
        cert["spec"]["issuerRef"],
        serde_json::json!({"name": "internal-ca", "kind": "ClusterIssuer"})
    );
    assert_eq!(cert["spec"]["secretName"], "llmesh-injector-tls");

    // cert-manager: the injector reads the mounted Secret, and cert-manager
    // fills the caBundle.
    let injector = find(&objs, "Deployment", "llmesh-injector");
    let c = &injector["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--cert-file=/etc/llmesh-injector-tls/tls.crt"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--key-file=/etc/llmesh-injector-tls/tls.key"),
        "{args:?}"
    );
    let pod = &injector["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["secret"]["secretName"] == "llmesh-injector-tls"));
    // The prober reads the listed Secrets where a sidecar would, and the
    // extra environment.
    let controller = find(&objs, "Deployment", "llmesh-controller");
    let pod = &controller["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert!(c["volumeMounts"].as_array().unwrap().iter().any(|m| {
        m["mountPath"] == "/var/run/secrets/llmesh/openai-probe" && m["readOnly"] == true
    }));
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["secret"]["secretName"] == "openai-probe"));
    let env = c["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "ANTHROPIC_API_KEY"
        && e["valueFrom"]["secretKeyRef"]["name"] == "anthropic"));
    assert!(env.iter().any(
        |e| e["name"] == "LLMESH_PROBE_SECRETS_DIR" && e["value"] == "/var/run/secrets/llmesh"
    ));
    let mwc = find(&objs, "MutatingWebhookConfiguration", "llmesh-injector");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "llmesh-system/llmesh-injector"
    );
    for hook in mwc["webhooks"].as_array().unwrap() {
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["timeoutSeconds"], 3);
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"][1]["values"],
            serde_json::json!([
                "kube-system",
                "kube-public",
                "kube-node-lease",
                "llmesh-system",
                "monitoring"
            ])
        );
    }

    // The sidecar settings carry the quota store and share, and the injector accepts them.
    let cm = find(&objs, "ConfigMap", "llmesh-injector-config");
    let cfg: SidecarConfig =
        serde_yaml::from_str(cm["data"]["sidecar.yaml"].as_str().unwrap()).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.quota.store, "redis://llmesh-redis.llmesh-system:6379/0");
    assert_eq!(cfg.quota.local_share, Some(8));
    assert_eq!(cfg.platform_namespace, "llmesh-platform");
    assert_eq!(cfg.credential_secrets, ["llmesh-credentials", "team-keys"]);
    let controller = &find(&objs, "Deployment", "llmesh-controller")["spec"]["template"]["spec"]
        ["containers"][0];
    assert!(controller["env"].as_array().unwrap().contains(
        &serde_json::json!({"name": "LLMESH_QUOTA_STORE", "value": "redis://llmesh-redis.llmesh-system:6379/0"})
    ));

    // Sidecar RBAC in each listed namespace and the platform namespace.
    let bindings: BTreeSet<(String, String)> = objs
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" && o["roleRef"]["name"] == "llmesh-sidecar")
        .map(|o| {
            (
                o["metadata"]["namespace"].as_str().unwrap().to_string(),
                o["subjects"][0]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("billing", "system:serviceaccounts:billing"),
        ("llmesh-platform", "system:serviceaccounts"),
        ("shop", "system:serviceaccounts:shop"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(bindings, want);

    // Monitoring: injected pods, honoring their own labels; the alert rules
    // are the rule file's groups.
    let pm = find(&objs, "PodMonitor", "llmesh-sidecar");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"]["llmesh.io/sidecar"],
        "true"
    );
    assert_eq!(
        pm["spec"]["podMetricsEndpoints"][0]["port"],
        "llmesh-metrics"
    );
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["honorLabels"], true);
    assert_eq!(pm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let rule = find(&objs, "PrometheusRule", "llmesh");
    let file: Value =
        serde_yaml::from_str(&read("charts/llmesh/prometheus/llmesh-rules.yaml")).unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
}
