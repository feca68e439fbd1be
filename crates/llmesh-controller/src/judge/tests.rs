use std::sync::Arc;

use kube::api::DynamicObject;
use llmesh_kube::Object;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use super::*;

fn obj(kind: &'static str, ns: &str, name: &str, spec: Value) -> Object {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "llmesh.io/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": ns, "generation": 3, "uid": format!("{ns}-{name}")},
        "spec": spec,
    }))
    .unwrap();
    Object {
        kind: ResourceKind::from_name(kind).unwrap(),
        platform: ns == "llmesh-system",
        object: Arc::new(object),
    }
}

fn provider(ns: &str, name: &str) -> Object {
    obj(
        "LLMProvider",
        ns,
        name,
        json!({"schema": "openai", "credential": {"secretKeyRef": {"name": "keys", "key": "openai"}}}),
    )
}

fn route(ns: &str, name: &str, models: Value, backends: Value) -> Object {
    obj(
        "LLMRoute",
        ns,
        name,
        json!({"models": models, "backends": backends}),
    )
}

/// (type, status, reason) of each condition of `name`.
fn conds(verdicts: &[Verdict], ns: &str, name: &str) -> Vec<(String, String, String)> {
    let v = verdicts
        .iter()
        .find(|v| {
            v.object.metadata.name.as_deref() == Some(name)
                && v.object.metadata.namespace.as_deref() == Some(ns)
        })
        .unwrap_or_else(|| panic!("no verdict for {ns}/{name}"));
    v.conditions
        .iter()
        .map(|c| {
            (
                c.type_.to_string(),
                c.status.as_str().to_string(),
                c.reason.to_string(),
            )
        })
        .collect()
}

fn message(verdicts: &[Verdict], name: &str, type_: &str) -> String {
    verdicts
        .iter()
        .find(|v| v.object.metadata.name.as_deref() == Some(name))
        .and_then(|v| v.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap()
}

fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[test]
fn a_valid_route_and_its_provider_are_accepted_with_resolved_refs() {
    let objects = [
        provider("team", "openai"),
        route(
            "team",
            "chat",
            json!(["chat"]),
            json!([{"provider": "openai"}]),
        ),
    ];
    let v = judge(&objects, Some("llmesh-system"));
    assert_eq!(
        conds(&v, "team", "openai"),
        [t("Accepted", "True", "Accepted")]
    );
    assert_eq!(
        conds(&v, "team", "chat"),
        [
            t("Accepted", "True", "Accepted"),
            t("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
}

#[test]
fn a_missing_provider_is_not_found_and_an_invalid_one_is_invalid() {
    let objects = [
        obj(
            "LLMProvider",
            "team",
            "broken",
            json!({"schema": "openai-compatible"}),
        ),
        route("team", "lost", json!(["a"]), json!([{"provider": "x"}])),
        route("team", "bad", json!(["b"]), json!([{"provider": "broken"}])),
    ];
    let v = judge(&objects, Some("llmesh-system"));
    assert_eq!(
        conds(&v, "team", "lost"),
        [
            t("Accepted", "False", "Invalid"),
            t("ResolvedRefs", "False", "BackendNotFound")
        ]
    );
    assert_eq!(
        message(&v, "lost", "Accepted"),
        r#"spec.backends[0].provider: no valid LLMProvider named "x""#
    );
    assert_eq!(
        message(&v, "lost", "ResolvedRefs"),
        r#"spec.backends[0].provider: no LLMProvider "x" in namespace team or llmesh-system"#
    );
    assert_eq!(
        conds(&v, "team", "bad"),
        [
            t("Accepted", "False", "Invalid"),
            t("ResolvedRefs", "False", "InvalidBackend")
        ]
    );
    assert_eq!(
        message(&v, "broken", "Accepted"),
        "spec.baseUrl: required for schema openai-compatible"
    );
}

#[test]
fn platform_objects_fill_in_under_a_namespace_and_are_judged_on_their_own() {
    let objects = [
        provider("llmesh-system", "shared"),
        route(
            "llmesh-system",
            "default",
            json!(["d"]),
            json!([{"provider": "team-only"}]),
        ),
        route(
            "team",
            "chat",
            json!(["chat"]),
            json!([{"provider": "shared"}]),
        ),
        provider("team", "team-only"),
    ];
    let v = judge(&objects, Some("llmesh-system"));
    // The team's route uses the platform's provider.
    assert_eq!(
        conds(&v, "team", "chat")[1],
        t("ResolvedRefs", "True", "ResolvedRefs")
    );
    // The platform's route is judged in the platform namespace, where
    // "team-only" does not exist.
    assert_eq!(
        conds(&v, "llmesh-system", "default")[1],
        t("ResolvedRefs", "False", "BackendNotFound")
    );
    assert_eq!(
        message(&v, "default", "ResolvedRefs"),
        r#"spec.backends[0].provider: no LLMProvider "team-only" in namespace llmesh-system"#
    );
    // Platform objects are not judged again under each namespace.
    assert_eq!(v.len(), 4);
    assert!(message(&v, "shared", "Accepted").contains("default for every namespace"));
}

#[test]
fn a_spec_of_the_wrong_shape_is_rejected_with_its_field_path() {
    let objects = [route("team", "shape", json!(7), json!([]))];
    let v = judge(&objects, None);
    assert_eq!(
        conds(&v, "team", "shape"),
        [
            t("Accepted", "False", "Invalid"),
            t("ResolvedRefs", "Unknown", "Invalid")
        ]
    );
    let m = message(&v, "shape", "Accepted");
    assert!(m.starts_with("spec.models"), "{m}");
}

#[test]
fn quotas_and_data_policies_are_accepted_but_not_enforced() {
    let objects = [
        provider("team", "openai"),
        route(
            "team",
            "chat",
            json!(["gpt-4o*"]),
            json!([{"provider": "openai"}]),
        ),
        obj(
            "LLMQuota",
            "team",
            "down",
            json!({"limits": {"costPerDay": "10"}, "action": "downgrade", "downgradeTo": "gpt-4o-mini"}),
        ),
        obj(
            "LLMQuota",
            "team",
            "nowhere",
            json!({"limits": {"costPerDay": "10"}, "action": "downgrade", "downgradeTo": "tiny"}),
        ),
        obj(
            "LLMDataPolicy",
            "team",
            "pii",
            json!({"rules": [{"class": "email", "action": "redact"}]}),
        ),
    ];
    let v = judge(&objects, None);
    assert_eq!(
        conds(&v, "team", "down"),
        [
            t("Accepted", "True", "Accepted"),
            t("ResolvedRefs", "True", "ResolvedRefs"),
            t("Enforced", "True", "Enforced")
        ]
    );
    assert_eq!(
        conds(&v, "team", "nowhere")[1],
        t("ResolvedRefs", "False", "ModelNotRouted")
    );
    assert_eq!(
        conds(&v, "team", "pii"),
        [
            t("Accepted", "True", "Accepted"),
            t("Enforced", "True", "Enforced")
        ]
    );
    let pii = v.iter().find(|v| v.kind == "LLMDataPolicy").unwrap();
    assert_eq!(pii.rule_count, Some(Some(1)));
}

#[test]
fn credentials_are_judged_on_their_spec_only() {
    let objects = [
        obj(
            "LLMProvider",
            "team",
            "env",
            json!({"schema": "openai", "credential": {"env": "UNSET_IN_THE_CONTROLLER"}}),
        ),
        obj(
            "LLMProvider",
            "team",
            "file",
            json!({"schema": "openai", "credential": {"file": "/nowhere/key"}}),
        ),
        obj(
            "LLMProvider",
            "team",
            "dots",
            json!({"schema": "openai", "credential": {"secretKeyRef": {"name": "..", "key": "k"}}}),
        ),
    ];
    let v = judge(&objects, None);
    assert_eq!(
        conds(&v, "team", "env"),
        [t("Accepted", "True", "Accepted")]
    );
    assert_eq!(
        conds(&v, "team", "file"),
        [t("Accepted", "True", "Accepted")]
    );
    assert_eq!(
        message(&v, "dots", "Accepted"),
        "spec.credential: secretKeyRef ../k is not a Secret name and key"
    );
    for verdict in &v {
        for c in &verdict.conditions {
            assert!(!c.message.contains("not-read-by-the-controller"));
        }
    }
}
