#![allow(clippy::unwrap_used)]

//! Every example manifest is valid for both kubectl and the file mode: it
//! parses and compiles without errors, and it passes the generated CRD's
//! schema and CEL rules. The file mode's default policy passes the schema
//! too, so the CRDs are no stricter than what the file mode accepts.

use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use llmesh_api::{parse_documents, AnyResource};
use llmesh_policy::{compile, EnvFileSecrets};
use serde_json::{json, Map, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kube_examples() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("examples/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The CRD's openAPIV3Schema as a JSON Schema: `nullable` becomes a `null`
/// type, Kubernetes extensions go, and objects with properties refuse
/// unknown fields (what `kubectl apply`'s strict field validation does).
fn json_schema(s: &Value) -> Value {
    let Some(o) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in o {
        match k.as_str() {
            "nullable" => {}
            k if k.starts_with("x-kubernetes-") => {}
            "properties" => {
                let props = v
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, p)| (name.clone(), json_schema(p)))
                    .collect();
                out.insert(k.to_string(), Value::Object(props));
                out.insert("additionalProperties".into(), json!(false));
            }
            "items" | "additionalProperties" => {
                out.insert(k.to_string(), json_schema(v));
            }
            _ => {
                out.insert(k.to_string(), v.clone());
            }
        }
    }
    if o.get("nullable") == Some(&json!(true)) {
        let ty = out["type"].clone();
        out.insert("type".into(), json!([ty, "null"]));
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// Schema and CEL errors of each document of `text` against its CRD.
fn crd_errors(text: &str) -> Vec<String> {
    let schemas = llmesh_api::crd_schemas();
    let mut errors = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap();
        let name = value["metadata"]["name"].as_str().unwrap_or("?");
        let (_, schema) = schemas.iter().find(|(k, _)| k == kind).unwrap();
        let mut root = json_schema(schema);
        // The API server adds these three to every kind's schema.
        for field in ["apiVersion", "kind"] {
            root["properties"][field] = json!({"type": "string"});
        }
        root["properties"]["metadata"] = json!({"type": "object"});
        let validator = jsonschema::validator_for(&root).unwrap();
        for e in validator.iter_errors(&value) {
            errors.push(format!("{kind}/{name}: {}: {e}", e.instance_path()));
        }
        if let Err(cel) = Validator::new().validate(schema, &value, None) {
            for e in cel.iter() {
                errors.push(format!("{kind}/{name}: CEL: {e}"));
            }
        }
    }
    errors
}

#[test]
fn there_is_one_example_per_kind() {
    let mut kinds = Vec::new();
    for path in kube_examples() {
        let docs = parse_documents(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(docs.len(), 1, "{}: one resource per file", path.display());
        kinds.push(docs[0].key().split('/').next().unwrap().to_string());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["LLMDataPolicy", "LLMProvider", "LLMQuota", "LLMRoute"]
    );
}

#[test]
fn kubernetes_examples_compile_in_the_file_mode() {
    let mut docs: Vec<AnyResource> = Vec::new();
    for path in kube_examples() {
        docs.extend(parse_documents(&std::fs::read_to_string(&path).unwrap()).unwrap());
    }
    // Where the injector mounts the Secret named by secretKeyRef.
    let secrets_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(secrets_dir.path().join("openai-key")).unwrap();
    std::fs::write(secrets_dir.path().join("openai-key/api-key"), "sk-example").unwrap();
    let secrets = EnvFileSecrets {
        secrets_dir: secrets_dir.path().to_path_buf(),
        ..EnvFileSecrets::default()
    };
    let (snap, errors) = compile(&docs, "team-a", &secrets);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(snap.providers.len(), 1);
    assert_eq!(snap.routes.len(), 1);
    assert_eq!(snap.quotas.len(), 1);
    assert_eq!(snap.data_policies.len(), 1);
}

#[test]
fn kube_objects_convert_to_what_the_file_parser_reads() {
    use llmesh_api::{LLMDataPolicy, LLMProvider, LLMQuota, LLMRoute};
    for path in kube_examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = parse_documents(&text).unwrap().remove(0);
        // What a watch would hand out: the kube-generated type, with the
        // metadata and status the API server adds.
        let mut value: Value = serde_yaml::from_str(&text).unwrap();
        value["metadata"]["namespace"] = json!("team-a");
        value["metadata"]["uid"] = json!("0b6c3e4e-3c1d-4a8e-9a57-2f0e1a7c5d11");
        value["metadata"]["generation"] = json!(3);
        value["status"] = json!({"observedGeneration": 2});
        let converted = match value["kind"].as_str().unwrap() {
            "LLMProvider" => {
                AnyResource::from(serde_json::from_value::<LLMProvider>(value).unwrap())
            }
            "LLMRoute" => AnyResource::from(serde_json::from_value::<LLMRoute>(value).unwrap()),
            "LLMQuota" => AnyResource::from(serde_json::from_value::<LLMQuota>(value).unwrap()),
            "LLMDataPolicy" => {
                AnyResource::from(serde_json::from_value::<LLMDataPolicy>(value).unwrap())
            }
            other => panic!("{other}"),
        };
        let mut expected = parsed;
        let meta = match &mut expected {
            AnyResource::Provider(r) => &mut r.metadata,
            AnyResource::Route(r) => &mut r.metadata,
            AnyResource::Quota(r) => &mut r.metadata,
            AnyResource::DataPolicy(r) => &mut r.metadata,
        };
        meta.namespace = Some("team-a".into());
        meta.generation = Some(3);
        assert_eq!(converted, expected, "{}", path.display());
    }
}

#[test]
fn kubernetes_examples_pass_the_crd_schemas_and_rules() {
    for path in kube_examples() {
        let errors = crd_errors(&std::fs::read_to_string(&path).unwrap());
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_file_mode_policy_passes_the_crd_schemas() {
    let path = repo().join("examples/local/policy.yaml");
    let errors = crd_errors(&std::fs::read_to_string(Path::new(&path)).unwrap());
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
