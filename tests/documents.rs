#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Every document a user is shown applies on a real cluster as written.
//!
//! kubectl and Helm read YAML 1.1 (an unquoted `on` is `true`, as a key
//! too); the sidecar's file mode and serde_yaml read YAML 1.2. So each
//! document is read both ways (`llmesh_tests::kubectl`) and the readings
//! must be equal; then the llmesh objects among them go through the API
//! server's strict decoding against the generated CRDs and its CEL rules,
//! and compile with llmesh-policy without an error. The CRD files
//! themselves must be CRDs a kube-apiserver accepts once kubectl has read
//! them, and equal to what the Rust types generate.
//!
//! Shown documents: the YAML blocks of every Markdown file (README.md,
//! docs/, the folders' READMEs) and the heredocs of their shell blocks,
//! `examples/`, the heredocs of `e2e/*.sh`, the chart's values, and
//! `manifests/install.yaml` (the chart as Helm renders it; render.py's
//! recording server refuses what a real API server would while rendering).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use llmesh_api::{parse_documents, AnyResource, CredentialRef};
use llmesh_policy::{compile, SecretError, SecretSource};
use llmesh_tests::kubectl::{
    admit, crd_problems, is_yaml11_special, read_as_kubectl, read_as_yaml12,
};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One YAML text a user is shown, and where.
struct Shown {
    origin: String,
    text: String,
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            if !name.starts_with('.') && name != "target" {
                files_under(&p, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .to_string()
}

/// Shell variables in an unquoted heredoc, filled in as the scripts do.
fn expand(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').unwrap_or(braced.len());
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        out.push_str(match name {
            "" => "$",
            "NS" | "NAMESPACE" => "e2e",
            "1" => "model-a",
            n if n.ends_with("PORT") => "18080",
            _ => "value",
        });
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// The bodies of the heredocs in a shell text (`<<'YAML'`, `<<EOF`, ...).
fn heredocs(origin: &str, text: &str, out: &mut Vec<Shown>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(pos) = line.find("<<") else {
            continue;
        };
        let marker = line[pos + 2..].trim_start_matches('-').trim_start();
        let quoted = marker.starts_with(['\'', '"']);
        let word: String = marker
            .trim_start_matches(['\'', '"'])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if word.is_empty() {
            continue;
        }
        let start = i;
        while i < lines.len() && lines[i].trim() != word {
            i += 1;
        }
        let body = lines[start..i].join("\n") + "\n";
        out.push(Shown {
            origin: format!("{origin}:{}", start + 1),
            text: if quoted { body } else { expand(&body) },
        });
        i += 1;
    }
}

/// YAML blocks and shell heredocs of a Markdown file.
fn markdown(path: &Path, out: &mut Vec<Shown>) {
    let text = read(path);
    let mut lang: Option<(String, usize)> = None;
    let mut body = String::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            match lang.take() {
                None => {
                    lang = Some((fence.trim().to_string(), n + 2));
                    body.clear();
                }
                Some((l, start)) => {
                    let origin = format!("{}:{start}", rel(path));
                    match l.as_str() {
                        "yaml" | "yml" => out.push(Shown {
                            origin,
                            text: body.clone(),
                        }),
                        "sh" | "bash" | "shell" | "console" => heredocs(&origin, &body, out),
                        _ => {}
                    }
                }
            }
            continue;
        }
        if lang.is_some() {
            body.push_str(line);
            body.push('\n');
        }
    }
}

/// Every YAML text a user is shown.
fn shown() -> Vec<Shown> {
    let mut out = Vec::new();
    let mut md = Vec::new();
    files_under(&root(), ".md", &mut md);
    md.sort();
    for p in &md {
        markdown(p, &mut out);
    }
    let mut yaml = Vec::new();
    files_under(&root().join("examples"), ".yaml", &mut yaml);
    yaml.push(root().join("charts/llmesh/values.yaml"));
    yaml.push(root().join("tests/injector/all-options.values.yaml"));
    yaml.push(root().join("manifests/install.yaml"));
    yaml.push(root().join("manifests/controller.yaml"));
    yaml.sort();
    for p in yaml {
        out.push(Shown {
            origin: rel(&p),
            text: read(&p),
        });
    }
    let mut sh = Vec::new();
    files_under(&root().join("e2e"), ".sh", &mut sh);
    sh.sort();
    for p in sh {
        heredocs(&rel(&p), &read(&p), &mut out);
    }
    out
}

fn is_llmesh(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|a| a.starts_with("llmesh.io/"))
}

/// Documents an e2e script applies to see them refused.
fn meant_to_be_refused(doc: &Value) -> bool {
    doc["metadata"]["name"] == json!("invalid")
}

#[test]
fn the_documents_are_found() {
    let all = shown();
    let origins: BTreeSet<&str> = all
        .iter()
        .map(|s| s.origin.split(':').next().unwrap())
        .collect();
    for needed in [
        "README.md",
        "examples/kubernetes/route-chat.yaml",
        "examples/local/policy.yaml",
        "e2e/run.sh",
        "manifests/install.yaml",
    ] {
        assert!(origins.contains(needed), "{needed} not read: {origins:?}");
    }
    let llmesh: usize = all
        .iter()
        .map(|s| {
            read_as_yaml12(&s.text)
                .unwrap_or_default()
                .iter()
                .filter(|d| is_llmesh(d))
                .count()
        })
        .sum();
    assert!(llmesh >= 20, "only {llmesh} llmesh documents found");
}

#[test]
fn every_document_reads_the_same_in_yaml_1_1_and_yaml_1_2() {
    let mut differ = Vec::new();
    for s in shown() {
        let v12 = read_as_yaml12(&s.text);
        let v11 = read_as_kubectl(&s.text);
        match (v11, v12) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(a), Ok(b)) => {
                let (a, b) = a
                    .iter()
                    .zip(&b)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .unwrap_or_default();
                differ.push(format!(
                    "{}: kubectl reads\n  {a}\nwhere the file mode reads\n  {b}",
                    s.origin
                ));
            }
            (a, b) => differ.push(format!(
                "{}: YAML error: kubectl {:?} / serde_yaml {:?}",
                s.origin,
                a.err(),
                b.err()
            )),
        }
    }
    assert!(
        differ.is_empty(),
        "documents kubectl reads differently (quote the value):\n{}",
        differ.join("\n")
    );
}

/// Any credential resolves, and every variable a workload identity
/// defaults from is set: compiling checks the policy, not this machine.
/// The stand-in value is also a (fake) service-account key.
struct AnyKey;

impl SecretSource for AnyKey {
    fn resolve(&self, _: &CredentialRef) -> Result<String, SecretError> {
        Ok(r#"{"type":"service_account","client_email":"docs@example.iam.gserviceaccount.com","private_key":"stand-in","token_uri":"https://oauth2.googleapis.com/token"}"#.into())
    }
    fn env(&self, _: &str) -> Option<String> {
        Some("stand-in".into())
    }
}

fn stand_in_provider(name: &str) -> Value {
    json!({"apiVersion": "llmesh.io/v1alpha1", "kind": "LLMProvider",
           "metadata": {"name": name},
           "spec": {"schema": "openai", "baseUrl": "http://127.0.0.1:9/v1",
                    "credential": {"env": "STAND_IN_KEY"}}})
}

/// Providers the routes of `docs` name without defining them.
fn missing_providers(docs: &[Value]) -> BTreeSet<String> {
    let defined: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "LLMProvider")
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    let mut named = BTreeSet::new();
    for d in docs.iter().filter(|d| d["kind"] == "LLMRoute") {
        let spec = &d["spec"];
        let chains = std::iter::once(&spec["backends"]).chain(
            spec["fallbacks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| &f["backends"]),
        );
        for b in chains.flat_map(|b| b.as_array().cloned().unwrap_or_default()) {
            if let Some(p) = b["provider"].as_str() {
                if !defined.contains(p) {
                    named.insert(p.to_string());
                }
            }
        }
    }
    named
}

/// Documents that compile together, by `Kind/name`: (origin, document).
type Group = BTreeMap<String, (String, Value)>;

#[test]
fn every_llmesh_document_is_accepted_by_the_api_server_and_compiles() {
    let mut refused = Vec::new();
    // Documents compile together with those shown beside them (one
    // Markdown file, one examples folder, one script), a document joining
    // the first group of its set where its kind and name are free: the
    // README's quick start and its reference may both show `openai`.
    let mut groups: Vec<(String, Group)> = Vec::new();
    for s in shown() {
        let Ok(docs) = read_as_kubectl(&s.text) else {
            continue; // reported by the YAML 1.1 / 1.2 test
        };
        for doc in docs.into_iter().filter(is_llmesh) {
            let verdict = admit(&doc);
            if meant_to_be_refused(&doc) {
                assert!(
                    verdict.is_err(),
                    "{}: the API server would accept it",
                    s.origin
                );
                continue;
            }
            if let Err(errors) = verdict {
                refused.push(format!("{}: {}", s.origin, errors.join("; ")));
                continue;
            }
            let key = format!("{}/{}", doc["kind"], doc["metadata"]["name"]);
            let file = s.origin.split(':').next().unwrap();
            let set = match file.strip_prefix("examples/") {
                Some(rest) => rest.split('/').next().unwrap().to_string(),
                None => file.to_string(),
            };
            let free = |(g, docs): &(String, Group)| *g == set && !docs.contains_key(&key);
            let group = match groups.iter().position(free) {
                Some(i) => i,
                None => {
                    groups.push((set, BTreeMap::new()));
                    groups.len() - 1
                }
            };
            groups[group].1.insert(key, (s.origin.clone(), doc));
        }
    }
    assert!(
        refused.is_empty(),
        "the API server would refuse (kubectl apply, strict field validation):\n{}",
        refused.join("\n")
    );
    let mut failed = Vec::new();
    for (_, group) in groups {
        let mut docs: Vec<Value> = group.values().map(|(_, d)| d.clone()).collect();
        for p in missing_providers(&docs) {
            docs.push(stand_in_provider(&p));
        }
        let text = docs
            .iter()
            .map(|d| serde_yaml::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        let resources: Vec<AnyResource> = parse_documents(&text)
            .unwrap_or_else(|e| panic!("the file mode cannot read {:?}: {e}", group.keys()));
        let (_, errors) = compile(&resources, "docs", &AnyKey);
        for e in errors {
            let origin = group
                .iter()
                .find(|(k, _)| {
                    let k = k.replace('"', "");
                    k == e.key().to_string()
                })
                .map(|(_, (o, _))| o.as_str())
                .unwrap_or("?");
            failed.push(format!("{origin}: {e}"));
        }
    }
    assert!(
        failed.is_empty(),
        "documents that do not compile:\n{}",
        failed.join("\n")
    );
}

/// The CRDs of `crds/`, the chart and `install.yaml`, as kubectl reads them.
fn crd_documents() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    files_under(&root().join("crds"), ".yaml", &mut files);
    files_under(&root().join("charts/llmesh/crds"), ".yaml", &mut files);
    files.push(root().join("manifests/install.yaml"));
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let docs = read_as_kubectl(&read(&f)).unwrap_or_else(|e| panic!("{}: {e}", rel(&f)));
        for d in docs {
            if d["kind"] == "CustomResourceDefinition" {
                out.push((rel(&f), d));
            }
        }
    }
    out
}

#[test]
fn every_crd_is_one_a_real_api_server_accepts() {
    let generated: BTreeMap<String, Value> = llmesh_api::crds()
        .into_iter()
        .map(|c| {
            let v = serde_json::to_value(&c).unwrap();
            (c.metadata.name.clone().unwrap(), v)
        })
        .collect();
    let docs = crd_documents();
    // crds/ (four files and all.yaml), the chart's four, install.yaml's four.
    assert_eq!(
        docs.len(),
        16,
        "{:?}",
        docs.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    for (origin, crd) in docs {
        let problems = crd_problems(&crd);
        assert!(problems.is_empty(), "{origin}:\n{}", problems.join("\n"));
        let name = crd["metadata"]["name"].as_str().unwrap();
        let want = &generated[name];
        // Equal to the types' CRD once read: every field, pattern, bound and
        // x-kubernetes-validations rule arrives as the Rust types declare it
        // (numbers compared by value: Helm's JSON writes `90.0` as `90`).
        assert_eq!(
            numbers_as_f64(&crd["spec"]),
            numbers_as_f64(&want["spec"]),
            "{origin}: {name}"
        );
    }
}

fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn the_crd_check_refuses_what_the_api_server_refused() {
    // The LLMRoute CRD as it was generated while the field was called `on`:
    // kubectl turned `required: [on, backends]` into `[true, backends]`.
    let (_, text) = llmesh_api::crd_files()
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "llmesh.io_llmroutes.yaml")
        .unwrap();
    let old = text
        .replace("                    when:\n", "                    on:\n")
        .replace("                  when:\n", "                  on:\n")
        .replace("- when\n", "- on\n");
    assert_ne!(old, text);
    let crd = read_as_kubectl(&old).unwrap().remove(0);
    let problems = crd_problems(&crd).join("\n");
    assert!(
        problems.contains("cannot be handled as a CustomResourceDefinition"),
        "{problems}"
    );
    assert!(
        problems.contains(".required[1]: cannot unmarshal true into a string"),
        "{problems}"
    );
    // A required name that is no property, and a mistyped field.
    let mut crd = read_as_kubectl(&text).unwrap().remove(0);
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["required"] = json!(["models", "backendz"]);
    spec["properties"]["models"]["maxItems"] = json!("many");
    spec["properties"]["models"]["items"]["enum"] = json!(["a", true]);
    let problems = crd_problems(&crd).join("\n");
    for needle in [
        "\"backendz\" is not one of the properties",
        "cannot be handled as a CustomResourceDefinition",
        "enum[1]: true is not of type string",
    ] {
        assert!(problems.contains(needle), "{needle}\n{problems}");
    }
}

#[test]
fn a_route_written_with_on_is_refused_and_one_with_when_applies() {
    let route = |word: &str| {
        format!(
            "apiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: chat}}\nspec:\n  models: [chat]\n  backends: [{{provider: openai}}]\n  retries: {{{word}: [server-error]}}\n  fallbacks: [{{{word}: [rate-limited], backends: [{{provider: b}}]}}]\n"
        )
    };
    let old = read_as_kubectl(&route("on")).unwrap().remove(0);
    let errors = admit(&old).unwrap_err().join("\n");
    assert!(
        errors.contains("unknown field \"spec.retries.true\""),
        "{errors}"
    );
    assert!(
        errors.contains("unknown field \"spec.fallbacks[0].true\""),
        "{errors}"
    );
    let new = read_as_kubectl(&route("when")).unwrap().remove(0);
    assert_eq!(admit(&new), Ok(()));
    // The file mode names the new field when it meets the old one.
    let e = parse_documents(&route("on")).unwrap_err().to_string();
    assert!(
        e.contains("unknown field `on`") && e.contains("when"),
        "{e}"
    );
}

/// Property names and enum values of a JSON schema, with their paths.
fn names_and_enums(path: &str, s: &Value, out: &mut Vec<(String, String)>) {
    for (name, child) in s["properties"].as_object().into_iter().flatten() {
        out.push((format!("{path}.{name}"), name.clone()));
        names_and_enums(&format!("{path}.{name}"), child, out);
    }
    for v in s["enum"].as_array().into_iter().flatten() {
        if let Some(v) = v.as_str() {
            out.push((format!("{path} enum"), v.to_string()));
        }
    }
    for key in ["items", "additionalProperties"] {
        if s[key].is_object() {
            names_and_enums(&format!("{path}[]"), &s[key], out);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for alt in s[key].as_array().into_iter().flatten() {
            names_and_enums(path, alt, out);
        }
    }
}

/// Keys of a YAML or JSON tree, with their paths.
fn keys(path: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                out.push((format!("{path}.{k}"), k.clone()));
                keys(&format!("{path}.{k}"), child, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                keys(&format!("{path}[]"), item, out);
            }
        }
        _ => {}
    }
}

#[test]
fn no_field_name_or_enum_value_is_a_yaml_1_1_word() {
    let mut names = Vec::new();
    for (kind, schema) in llmesh_api::crd_schemas() {
        names_and_enums(&kind, &schema, &mut names);
    }
    let chart_schema: Value =
        serde_json::from_str(&read(&root().join("charts/llmesh/values.schema.json"))).unwrap();
    names_and_enums("values.schema.json", &chart_schema, &mut names);
    let values: Value =
        serde_yaml::from_str(&read(&root().join("charts/llmesh/values.yaml"))).unwrap();
    keys("values.yaml", &values, &mut names);
    let injector = serde_json::to_value(llmesh_injector::SidecarConfig::default()).unwrap();
    keys("injector sidecar.yaml", &injector, &mut names);
    assert!(names.len() > 200, "{}", names.len());
    let bad: Vec<_> = names.iter().filter(|(_, n)| is_yaml11_special(n)).collect();
    assert!(
        bad.is_empty(),
        "names kubectl would read as booleans, nulls or numbers: {bad:?}"
    );
}

/// Schema and CEL errors of each document of `text`, as the API server
/// reports them to `kubectl apply`.
fn crd_errors(text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for doc in read_as_kubectl(text).unwrap() {
        let kind = doc["kind"].as_str().unwrap_or("?").to_string();
        let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_string();
        if let Err(e) = admit(&doc) {
            errors.extend(e.into_iter().map(|e| format!("{kind}/{name}: {e}")));
        }
    }
    errors
}

#[test]
fn kubernetes_examples_pass_the_crd_schemas_and_rules() {
    let mut files = Vec::new();
    files_under(&root().join("examples/kubernetes"), ".yaml", &mut files);
    assert_eq!(files.len(), 4);
    for path in files {
        let errors = crd_errors(&read(&path));
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_file_mode_policy_passes_the_crd_schemas() {
    let errors = crd_errors(&read(&root().join("examples/local/policy.yaml")));
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_schema_check_refuses_what_the_api_server_would() {
    let bad = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: bad}
spec:
  models: []
  backends: [{provider: openai, wieght: 2}]
  timeouts: {connect: 5 parsecs}
  strategy: {type: cost}
"#;
    let errors = crd_errors(bad).join("\n");
    for needle in [
        "/spec/models",
        "wieght",
        "/spec/timeouts/connect",
        "CEL: spec.strategy: latencyBudget is required for type cost",
    ] {
        assert!(errors.contains(needle), "{needle}\n{errors}");
    }
}

#[tokio::test]
async fn the_fake_api_server_refuses_what_a_real_one_refuses() {
    use http::Method;
    use llmesh_tests::{fake_kube::FakeKube, Http};

    let kube = FakeKube::start().await;
    let route = |word: &str, provider: &str| {
        format!("{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: chat, namespace: team}}, spec: {{models: [chat], backends: [{{provider: {provider}}}], retries: {{{word}: [timeout]}}}}}}")
    };
    // Written as the README once showed it: kubectl sends `"true": [...]`.
    let old = read_as_kubectl(&route("on", "openai")).unwrap().remove(0);
    let err = kube.try_apply(old).unwrap_err();
    assert!(err.contains("unknown field \"spec.retries.true\""), "{err}");
    // A provider named `no`, unquoted: a boolean where a string belongs.
    let no = read_as_kubectl(&route("when", "no")).unwrap().remove(0);
    let err = kube.try_apply(no).unwrap_err();
    assert!(
        err.contains("/spec/backends/0/provider") && err.contains("false"),
        "{err}"
    );
    assert!(kube.object("team", "llmroutes", "chat").is_none());
    kube.apply_yaml(&route("when", "'no'"));
    assert!(kube.object("team", "llmroutes", "chat").is_some());

    // The status subresource checks the status schema too.
    let url = format!(
        "{}/apis/llmesh.io/v1alpha1/namespaces/team/llmroutes/chat/status",
        kube.url()
    );
    let patch = |status: Value| bytes::Bytes::from(json!({ "status": status }).to_string());
    let http = Http::new();
    let ct = [("content-type", "application/merge-patch+json")];
    let (code, _, body) = http
        .send(
            Method::PATCH,
            &url,
            patch(json!({"observedGeneration": "one"})),
            &ct,
        )
        .await;
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&body));
    let (code, _, body) = http
        .send(
            Method::PATCH,
            &url,
            patch(json!({"observedGenerationn": 1})),
            &ct,
        )
        .await;
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("unknown field \\\"status.observedGenerationn\\\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, _, _) = http
        .send(
            Method::PATCH,
            &url,
            patch(json!({"observedGeneration": 1})),
            &ct,
        )
        .await;
    assert_eq!(code, 200);

    // Built-in kinds decode into their Kubernetes types.
    let url = format!("{}/api/v1/namespaces/team/secrets", kube.url());
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "immutable": "yes"});
    let (code, _, body) = http
        .send(
            Method::POST,
            &url,
            bytes::Bytes::from(secret.to_string()),
            &[],
        )
        .await;
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("cannot be handled as a Secret"));
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn relative_links_between_the_documents_resolve() {
    let mut md = Vec::new();
    files_under(&root(), ".md", &mut md);
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &md {
        let text = read(page);
        let mut in_block = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if in_block {
                continue;
            }
            for part in line.split("](").skip(1) {
                let Some(link) = part.split(')').next() else {
                    continue;
                };
                if link.contains("://") || link.starts_with("mailto:") || link.contains(' ') {
                    continue;
                }
                checked += 1;
                let (path, frag) = link.split_once('#').unwrap_or((link, ""));
                let target = if path.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(path)
                };
                if !target.exists() {
                    broken.push(format!("{}:{}: {link}: no such file", rel(page), n + 1));
                } else if !frag.is_empty()
                    && target.extension().is_some_and(|e| e == "md")
                    && !anchors(&read(&target)).contains(frag)
                {
                    broken.push(format!("{}:{}: {link}: no such heading", rel(page), n + 1));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
