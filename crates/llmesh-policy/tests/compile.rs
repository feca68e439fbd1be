#![allow(clippy::unwrap_used)]

use llmesh_api::{parse_documents, CredentialRef};
use llmesh_policy::{compile, SecretSource};

struct Fixed;
impl SecretSource for Fixed {
    fn resolve(&self, r: &CredentialRef) -> Result<String, String> {
        match r.env.as_deref() {
            Some("GOOD") => Ok("sk-test-123".into()),
            Some(v) => Err(format!("environment variable {v} is not set")),
            None => Err("no env".into()),
        }
    }
}

const BASE: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: openai}
spec:
  schema: openai
  credential: {env: GOOD}
  models:
    - name: gpt-4o-mini
      contextWindow: 128000
      pricing: {input: 0.15, output: 0.6, cachedInput: 0.075}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: claude}
spec:
  schema: anthropic
  baseUrl: http://127.0.0.1:9/v1
  credential: {env: GOOD}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  models: [gpt-4o-mini, "gpt-4*"]
  backends:
    - {provider: openai, weight: 3}
    - {provider: claude, model: claude-sonnet-4, weight: 1}
  timeouts: {connect: 2s, total: 1m}
"#;

fn build(text: &str) -> (llmesh_policy::Snapshot, Vec<llmesh_policy::CompileError>) {
    let docs = parse_documents(text).unwrap();
    compile(&docs, "team-a", &Fixed)
}

#[test]
fn compiles_providers_routes_and_lookups() {
    let (snap, errors) = build(BASE);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(snap.model_names, vec!["gpt-4o-mini"]);
    let m = snap.route_for("gpt-4o-mini").unwrap();
    assert_eq!((m.index, m.pattern), (0, "gpt-4o-mini"));
    let route = m.route;
    assert_eq!(route.name, "chat");
    assert_eq!(
        snap.route_for("gpt-4.1").unwrap().pattern,
        "gpt-4*",
        "prefix match"
    );
    assert!(snap.route_for("claude-x").is_none());
    assert_eq!(route.timeouts.connect.as_secs(), 2);
    assert_eq!(route.timeouts.total.as_secs(), 60);
    // weights 3:1
    let picks: Vec<_> = (0..4)
        .map(|i| route.pick(i).provider.name.as_str())
        .collect();
    assert_eq!(picks, ["openai", "openai", "openai", "claude"]);
    let openai = &snap.providers["openai"];
    let (h, v) = openai.auth.as_ref().unwrap();
    assert_eq!(h, "authorization");
    assert_eq!(v.to_str().unwrap(), "Bearer sk-test-123");
    let claude = &snap.providers["claude"];
    assert_eq!(claude.auth.as_ref().unwrap().0, "x-api-key");
    assert!(claude.headers.iter().any(|(k, _)| k == "anthropic-version"));
    let price = openai.model("gpt-4o-mini").unwrap().price.unwrap();
    let cost = price.cost(1_000_000, 0, 1_000_000);
    assert!((cost - 0.75).abs() < 1e-9, "{cost}");
    let cached = price.cost(1_000_000, 1_000_000, 0);
    assert!((cached - 0.075).abs() < 1e-9, "{cached}");
}

#[test]
fn dump_masks_secrets() {
    let (snap, _) = build(BASE);
    let text = serde_json::to_string(&snap.dump()).unwrap();
    assert!(!text.contains("sk-test-123"), "{text}");
    assert!(text.contains("env:GOOD"), "{text}");
}

#[test]
fn bad_resources_are_left_out_with_field_errors() {
    let text = format!(
        "{BASE}---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: nokey}}
spec: {{schema: openai, credential: {{env: MISSING}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: compat}}
spec: {{schema: openai-compatible}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: broken}}
spec:
  models: [other]
  backends: [{{provider: nokey}}]
  timeouts: {{connect: 5 parsecs}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: thief}}
spec:
  models: [gpt-4o-mini]
  backends: [{{provider: openai}}]
"
    );
    let (snap, errors) = build(&text);
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| msgs.iter().any(|m| m.contains(needle));
    assert!(
        has("LLMProvider/team-a/nokey: spec.credential: environment variable MISSING is not set"),
        "{msgs:#?}"
    );
    assert!(
        has("LLMProvider/team-a/compat: spec.baseUrl: required"),
        "{msgs:#?}"
    );
    assert!(
        has("LLMRoute/team-a/broken: spec.backends[0].provider"),
        "{msgs:#?}"
    );
    assert!(
        has("LLMRoute/team-a/broken: spec.timeouts.connect"),
        "{msgs:#?}"
    );
    assert!(has("LLMRoute/team-a/thief: spec.models[0]: model \"gpt-4o-mini\" is already served by route chat"), "{msgs:#?}");
    // the good ones still compile
    assert_eq!(snap.routes.len(), 1);
    assert_eq!(snap.providers.len(), 2);
}
