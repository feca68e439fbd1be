#![allow(clippy::unwrap_used)]

//! Every example manifest is valid for the file mode: it parses and
//! compiles without errors, and what a watch hands out converts to what the
//! file parser reads. That kubectl applies them as written (YAML 1.1, the
//! CRD schemas and CEL rules) is checked in tests/documents.rs.

use std::path::PathBuf;

use llmesh_api::{parse_documents, AnyResource};
use llmesh_policy::{compile, EnvFileSecrets};
use serde_json::{json, Value};

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

#[test]
fn there_is_one_example_per_kind() {
    let mut kinds = Vec::new();
    for path in kube_examples() {
        let docs = parse_documents(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(docs.len(), 1, "{}: one resource per file", path.display());
        kinds.push(docs[0].kind().as_str());
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
