#![allow(clippy::unwrap_used)]

//! LLMQuota and LLMDataPolicy validation, and the provider fields that go
//! with them (secretKeyRef, clearance, limits).

use llmesh_api::{parse_documents, QuotaAction, QuotaScope};
use llmesh_policy::{compile, CompileError, EnvFileSecrets, Snapshot};

fn build_with(text: &str, secrets: &EnvFileSecrets) -> (Snapshot, Vec<String>) {
    let docs = parse_documents(text).unwrap();
    let (snap, errors) = compile(&docs, "team-a", secrets);
    (snap, errors.iter().map(CompileError::to_string).collect())
}

fn build(text: &str) -> (Snapshot, Vec<String>) {
    build_with(text, &EnvFileSecrets::default())
}

fn has(msgs: &[String], needle: &str) -> bool {
    msgs.iter().any(|m| m.contains(needle))
}

const QUOTA: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: team}
spec:
  scope: caller
  callerHeader: x-llmesh-user
  workloads: [checkout]
  models: ["gpt-4o*"]
  limits:
    requestsPerMinute: 300
    tokensPerDay: 2000000
    costPerDay: "12.50"
  action: downgrade
  downgradeTo: gpt-4o-mini
"#;

const DATA: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {name: pii}
spec:
  rules:
    - {class: email, action: redact}
    - class: project-names
      dictionary: [Bluebird, Nightjar]
      caseInsensitive: true
      action: mask
    - class: employee-id
      patterns: ["EMP-[0-9]{6}"]
      action: restrict
"#;

#[test]
fn valid_quota_and_data_policy_are_kept_and_the_quota_listed_as_not_enforced() {
    let (snap, errors) = build(&format!("{QUOTA}---{DATA}"));
    assert!(errors.is_empty(), "{errors:#?}");
    let q = &snap.quotas[0];
    assert_eq!((q.name.as_str(), q.namespace.as_str()), ("team", "team-a"));
    assert_eq!(q.spec.scope, QuotaScope::Caller);
    assert_eq!(q.spec.action, QuotaAction::Downgrade);
    assert_eq!(q.spec.alert_thresholds, vec![80, 100], "default thresholds");
    let d = &snap.data_policies[0];
    assert_eq!(d.spec.rules.len(), 3);
    assert_eq!(d.spec.request_class_header, "x-llmesh-data-class");
    assert!(d.spec.restore_responses);
    assert!(
        snap.inert.is_empty(),
        "quotas are enforced: {:?}",
        snap.inert
    );
    let guard = snap.data_guard.as_ref().expect("data policy compiled");
    assert_eq!(guard.engine.len(), 3);
    assert_eq!(guard.class_header.as_str(), "x-llmesh-data-class");
    let dump = snap.dump();
    let listed = dump["quotas"].as_array().unwrap();
    assert_eq!(listed[0]["spec"]["limits"]["costPerDay"], "12.50");
    let data = dump["dataPolicies"].as_array().unwrap();
    assert_eq!(data[0]["spec"]["rules"][2]["patterns"][0], "EMP-[0-9]{6}");
}

#[test]
fn quota_errors_name_the_field() {
    let text = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: nolimit}
spec:
  limits: {tokenKind: output}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: downgrade}
spec:
  callerHeader: x-user
  limits: {costPerMonth: "1,000", requestsPerSecond: 0}
  action: downgrade
  models: ["*"]
  alertThresholds: [0, 80]
"#;
    let (snap, errors) = build(text);
    assert!(snap.quotas.is_empty() && snap.inert.is_empty());
    for needle in [
        "LLMQuota/team-a/nolimit: spec.limits: set at least one limit",
        "LLMQuota/team-a/downgrade: spec.downgradeTo: required when action is downgrade",
        "LLMQuota/team-a/downgrade: spec.callerHeader: only used with scope caller",
        "LLMQuota/team-a/downgrade: spec.limits.costPerMonth: \"1,000\" is not a decimal USD amount",
        "LLMQuota/team-a/downgrade: spec.limits.requestsPerSecond: must be > 0",
        "LLMQuota/team-a/downgrade: spec.models[0]",
        "LLMQuota/team-a/downgrade: spec.alertThresholds[0]",
    ] {
        assert!(has(&errors, needle), "{needle}\n{errors:#?}");
    }
}

#[test]
fn data_policy_errors_name_the_rule_and_pattern() {
    let text = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {name: bad}
spec:
  requestClassHeader: "x data"
  rules:
    - {class: email, action: redact, patterns: ["@"]}
    - {class: project-names, action: mask}
    - {class: employee-id, action: restrict, patterns: ["EMP-[0-9]{6}", "EMP-[0-9"]}
    - {class: Employee_ID, action: block, dictionary: [x]}
    - {class: email, action: block}
    - {class: both, action: mask, patterns: [a], dictionary: [b]}
"#;
    let (snap, errors) = build(text);
    assert!(snap.data_policies.is_empty());
    for needle in [
        "LLMDataPolicy/team-a/bad: spec.rules[0].patterns: built-in class \"email\" takes no patterns",
        "LLMDataPolicy/team-a/bad: spec.rules[1]: custom class \"project-names\" needs patterns or dictionary",
        "LLMDataPolicy/team-a/bad: spec.rules[2].patterns[1]: invalid regex: unclosed character class",
        "LLMDataPolicy/team-a/bad: spec.rules[3].class: \"Employee_ID\" is not a class name",
        "LLMDataPolicy/team-a/bad: spec.rules[4].class: class \"email\" has a rule already",
        "LLMDataPolicy/team-a/bad: spec.rules[5]: custom class \"both\": set patterns or dictionary, not both",
        "LLMDataPolicy/team-a/bad: spec.requestClassHeader",
    ] {
        assert!(has(&errors, needle), "{needle}\n{errors:#?}");
    }
    let empty = "apiVersion: llmesh.io/v1alpha1\nkind: LLMDataPolicy\nmetadata: {name: e}\nspec: {rules: []}\n";
    let (_, errors) = build(empty);
    assert!(
        has(&errors, "spec.rules: must have at least one rule"),
        "{errors:#?}"
    );
}

const PROVIDER: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: openai}
spec:
  schema: openai
  credential:
    secretKeyRef: {name: openai-key, key: api-key}
  clearance: [pii, email]
  limits: {requestsPerMinute: 500, tokensPerMinute: 200000}
"#;

#[test]
fn secret_key_ref_reads_the_mounted_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("openai-key")).unwrap();
    std::fs::write(dir.path().join("openai-key/api-key"), "sk-mounted\n").unwrap();
    let secrets = EnvFileSecrets {
        secrets_dir: dir.path().to_path_buf(),
        ..EnvFileSecrets::default()
    };
    let (snap, errors) = build_with(PROVIDER, &secrets);
    assert!(errors.is_empty(), "{errors:#?}");
    let p = &snap.providers["openai"];
    assert_eq!(
        p.auth.as_ref().unwrap().1.to_str().unwrap(),
        "Bearer sk-mounted"
    );
    assert_eq!(
        p.credential_source.as_deref(),
        Some("secret:openai-key/api-key")
    );
    assert_eq!(p.clearance, vec!["pii", "email"]);
    let limits = p.limits.unwrap();
    assert_eq!(limits.requests_per_minute, Some(500));
    assert_eq!(limits.headroom_percent, 20, "default headroom");
    let text = serde_json::to_string(&snap.dump()).unwrap();
    assert!(!text.contains("sk-mounted"), "{text}");
    assert!(text.contains("secret:openai-key/api-key"), "{text}");

    // A missing Secret is named, without guessing at the value.
    let (_, errors) = build_with(&PROVIDER.replace("openai-key", "other"), &secrets);
    assert!(has(&errors, "spec.credential: cannot read"), "{errors:#?}");
    // Names that would leave the secrets folder are refused before any read.
    let (_, errors) = build_with(&PROVIDER.replace("key: api-key", "key: .."), &secrets);
    assert!(has(&errors, "is not a Secret name and key"), "{errors:#?}");
}

#[test]
fn provider_clearance_and_limits_are_checked() {
    let text = PROVIDER
        .replace("[pii, email]", "[pii, PII, pii]")
        .replace(
            "{requestsPerMinute: 500, tokensPerMinute: 200000}",
            "{headroomPercent: 95}",
        )
        .replace(
            "secretKeyRef: {name: openai-key, key: api-key}",
            "env: NOPE_UNSET_VAR",
        );
    let (snap, errors) = build(&text);
    assert!(snap.providers.is_empty());
    for needle in [
        "spec.clearance[1]: \"PII\" is not a data class name",
        "spec.clearance[2]: \"pii\" listed twice",
        "spec.limits: set requestsPerMinute or tokensPerMinute",
        "spec.limits.headroomPercent: must be between 0 and 90",
    ] {
        assert!(has(&errors, needle), "{needle}\n{errors:#?}");
    }
    let two = PROVIDER.replace(
        "secretKeyRef: {name: openai-key, key: api-key}",
        "{env: A, secretKeyRef: {name: openai-key, key: api-key}}",
    );
    let (_, errors) = build(&two.replace("credential:\n    {", "credential: {"));
    assert!(
        has(&errors, "set exactly one of env, file or secretKeyRef"),
        "{errors:#?}"
    );
}
