//! What the leader writes: conditions, observedGeneration, Events, and
//! nothing when nothing changed.

use std::time::{Duration, Instant};

use llmesh_tests::fake_kube::FakeKube;
use llmesh_tests::{metric_value, Http};
use serde_json::{json, Value};

use super::*;

#[tokio::test]
async fn a_valid_route_is_accepted_with_resolved_refs_at_its_generation() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&provider("team", "openai"));
    kube.apply_yaml(&route("team", "chat", "openai"));
    let c = start(&kube, "a").await;

    let acc = until_condition(&kube, "team", "llmroutes", "chat", "Accepted", "True", 1).await;
    assert_eq!(acc["reason"], "Accepted");
    assert!(acc["lastTransitionTime"].is_string(), "{acc}");
    let refs = until_condition(
        &kube,
        "team",
        "llmroutes",
        "chat",
        "ResolvedRefs",
        "True",
        1,
    )
    .await;
    assert_eq!(refs["reason"], "ResolvedRefs");
    let obj = kube.object("team", "llmroutes", "chat").unwrap();
    assert_eq!(obj["status"]["observedGeneration"], 1);
    assert_eq!(
        obj["metadata"]["generation"], 1,
        "a status patch moved the generation"
    );
    until_condition(
        &kube,
        "team",
        "llmproviders",
        "openai",
        "Accepted",
        "True",
        1,
    )
    .await;

    // A spec change: the conditions follow the new generation, and the
    // transition time stays since the status did not change.
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: chat, namespace: team}, spec: {models: [chat, chat-2], backends: [{provider: openai}]}}");
    let acc2 = until_condition(&kube, "team", "llmroutes", "chat", "Accepted", "True", 2).await;
    assert_eq!(acc2["lastTransitionTime"], acc["lastTransitionTime"]);
    let obj = kube.object("team", "llmroutes", "chat").unwrap();
    assert_eq!(obj["status"]["observedGeneration"], 2);
    assert!(kube.events().is_empty(), "{:?}", kube.events());
    c.shutdown().await;
}

#[tokio::test]
async fn a_route_naming_a_missing_provider_is_rejected_with_one_event_until_fixed() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&route("team", "lost", "x"));
    let c = start(&kube, "a").await;

    let acc = until_condition(&kube, "team", "llmroutes", "lost", "Accepted", "False", 1).await;
    assert_eq!(acc["reason"], "Invalid");
    assert_eq!(
        acc["message"],
        r#"spec.backends[0].provider: no valid LLMProvider named "x""#
    );
    let refs = until_condition(
        &kube,
        "team",
        "llmroutes",
        "lost",
        "ResolvedRefs",
        "False",
        1,
    )
    .await;
    assert_eq!(refs["reason"], "BackendNotFound");
    assert_eq!(
        refs["message"],
        r#"spec.backends[0].provider: no LLMProvider "x" in namespace team or llmesh-system"#
    );
    let events = until("one event", || {
        Some(events_for(&kube, "lost")).filter(|e| !e.is_empty())
    })
    .await;
    let e = &events[0];
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "Invalid");
    assert_eq!(e["note"], acc["message"]);
    assert_eq!(e["regarding"]["kind"], "LLMRoute");
    assert_eq!(e["regarding"]["namespace"], "team");
    assert_eq!(e["metadata"]["namespace"], "team");
    assert_eq!(e["reportingController"], "llmesh.io/controller");
    assert_eq!(e["reportingInstance"], "a");

    // Resyncs (a relist after compaction, unrelated changes) repeat neither
    // the patch nor the Event.
    let patches = kube.status_patches("team", "llmroutes", "lost");
    let before = evaluations(&c).await;
    kube.compact();
    kube.apply_yaml(&provider("elsewhere", "unrelated"));
    evaluated_after(&c, before).await;
    until_condition(
        &kube,
        "elsewhere",
        "llmproviders",
        "unrelated",
        "Accepted",
        "True",
        1,
    )
    .await;
    assert_eq!(kube.status_patches("team", "llmroutes", "lost"), patches);
    assert_eq!(events_for(&kube, "lost").len(), 1);

    // The provider appears: the route flips, at the same generation, with
    // a new transition time, and no Event.
    kube.apply_yaml(&provider("team", "x"));
    let fixed = until_condition(&kube, "team", "llmroutes", "lost", "Accepted", "True", 1).await;
    assert_ne!(fixed["lastTransitionTime"], Value::Null);
    until_condition(
        &kube,
        "team",
        "llmroutes",
        "lost",
        "ResolvedRefs",
        "True",
        1,
    )
    .await;
    assert_eq!(events_for(&kube, "lost").len(), 1);

    // Broken again by an edit: a new generation, a new Event.
    kube.apply_yaml(&route("team", "lost", "y"));
    until_condition(&kube, "team", "llmroutes", "lost", "Accepted", "False", 2).await;
    until("second event", || {
        Some(events_for(&kube, "lost")).filter(|e| e.len() == 2)
    })
    .await;
    let m = metrics(&c).await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_controller_rejected_resources",
            &[("kind", "LLMRoute")]
        ),
        Some(1.0)
    );
    assert!(
        metric_value(
            &m,
            "llmesh_controller_events_total",
            &[("kind", "LLMRoute"), ("result", "success")]
        ) == Some(2.0),
        "{m}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn an_unchanged_object_is_not_patched_again() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&provider("team", "openai"));
    kube.apply_yaml(&route("team", "chat", "openai"));
    let c = start(&kube, "a").await;
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
    until_condition(
        &kube,
        "team",
        "llmproviders",
        "openai",
        "Accepted",
        "True",
        1,
    )
    .await;
    // Our own patches come back as watch events and are evaluated too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kube.status_patches("team", "llmroutes", "chat"), 1);
    assert_eq!(kube.status_patches("team", "llmproviders", "openai"), 1);

    // A metadata-only change (same generation), a dropped watch, a relist:
    // all re-evaluate, none patches.
    let before = evaluations(&c).await;
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: chat, namespace: team, labels: {team: a}}, spec: {models: [chat], backends: [{provider: openai}]}}");
    kube.drop_watches();
    kube.compact();
    evaluated_after(&c, before).await;
    assert_eq!(kube.status_patches("team", "llmroutes", "chat"), 1);
    assert_eq!(kube.status_patch_count(), 2);

    // Someone else's edit of the status is put right.
    kube.patch_status(
        "team",
        "llmroutes",
        "chat",
        json!({"status": {"conditions": [{"type": "Accepted", "status": "False",
            "reason": "Tampered", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
    );
    let acc = until_condition(&kube, "team", "llmroutes", "chat", "Accepted", "True", 1).await;
    assert_eq!(acc["reason"], "Accepted");
    assert!(condition(&kube, "team", "llmroutes", "chat", "ResolvedRefs").is_some());
    c.shutdown().await;
}

#[tokio::test]
async fn objects_of_the_wrong_shape_are_rejected_with_the_field_path() {
    let kube = FakeKube::start().await;
    kube.apply_yaml_past_the_schema("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: shape, namespace: team}, spec: {models: 7, backends: []}}");
    kube.apply_yaml(&provider("team", "openai"));
    kube.apply_yaml(&route("team", "chat", "openai"));
    let c = start(&kube, "a").await;
    let acc = until_condition(&kube, "team", "llmroutes", "shape", "Accepted", "False", 1).await;
    let message = acc["message"].as_str().unwrap();
    assert_eq!(
        message,
        "spec.models: invalid type: integer `7`, expected a sequence"
    );
    let refs = condition(&kube, "team", "llmroutes", "shape", "ResolvedRefs").unwrap();
    assert_eq!(refs["status"], "Unknown");
    // The bad object breaks neither the list nor its neighbours.
    until_condition(&kube, "team", "llmroutes", "chat", "Accepted", "True", 1).await;
    until("event", || {
        Some(events_for(&kube, "shape")).filter(|e| e.len() == 1)
    })
    .await;
    c.shutdown().await;
}

#[tokio::test]
async fn quotas_and_data_policies_are_accepted_and_enforced() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&provider("team", "openai"));
    kube.apply_yaml(&route("team", "gpt-4o-mini", "openai"));
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMQuota, metadata: {name: budget, namespace: team}, spec: {limits: {costPerDay: '50'}, action: downgrade, downgradeTo: gpt-4o-mini}}");
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMQuota, metadata: {name: nowhere, namespace: team}, spec: {limits: {costPerDay: '50'}, action: downgrade, downgradeTo: tiny}}");
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMDataPolicy, metadata: {name: pii, namespace: team}, spec: {rules: [{class: email, action: redact}, {class: iban, action: block}]}}");
    // A platform default: judged in its own namespace, once.
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMDataPolicy, metadata: {name: default, namespace: llmesh-system}, spec: {rules: [{class: secret, action: block}]}}");
    let c = start(&kube, "a").await;

    until_condition(&kube, "team", "llmquotas", "budget", "Accepted", "True", 1).await;
    let enforced =
        until_condition(&kube, "team", "llmquotas", "budget", "Enforced", "True", 1).await;
    assert_eq!(enforced["reason"], "Enforced");
    until_condition(
        &kube,
        "team",
        "llmquotas",
        "budget",
        "ResolvedRefs",
        "True",
        1,
    )
    .await;
    let refs = until_condition(
        &kube,
        "team",
        "llmquotas",
        "nowhere",
        "ResolvedRefs",
        "False",
        1,
    )
    .await;
    assert_eq!(refs["reason"], "ModelNotRouted");

    until_condition(
        &kube,
        "team",
        "llmdatapolicies",
        "pii",
        "Enforced",
        "True",
        1,
    )
    .await;
    let pii = kube.object("team", "llmdatapolicies", "pii").unwrap();
    assert_eq!(pii["status"]["ruleCount"], 2);
    let acc = until_condition(
        &kube,
        "llmesh-system",
        "llmdatapolicies",
        "default",
        "Accepted",
        "True",
        1,
    )
    .await;
    assert!(
        acc["message"]
            .as_str()
            .unwrap()
            .contains("default for every namespace"),
        "{acc}"
    );
    // Secret references are judged on their spec: the controller reads no
    // Secret (and its requests show it).
    assert!(kube.requests().iter().all(|r| !r.contains("secrets")));
    c.shutdown().await;
}

#[tokio::test]
async fn with_a_namespace_only_that_namespace_and_the_platform_are_written() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&provider("llmesh-system", "shared"));
    kube.apply_yaml(&route("team", "chat", "shared"));
    kube.apply_yaml(&route("other", "chat", "shared"));
    let mut cfg = config("a");
    cfg.namespace = Some("team".into());
    let c = start_with(&kube, cfg).await;
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
    until_condition(
        &kube,
        "llmesh-system",
        "llmproviders",
        "shared",
        "Accepted",
        "True",
        1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kube.status_patches("other", "llmroutes", "chat"), 0);
    assert!(kube
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /apis/llmesh.io"))
        .all(|r| r.contains("/namespaces/team/") || r.contains("/namespaces/llmesh-system/")));
    c.shutdown().await;
}

#[tokio::test]
async fn not_ready_until_every_kind_is_listed() {
    let kube = FakeKube::start().await;
    kube.set_down(true);
    let c = start(&kube, "a").await;
    let http = Http::new();
    let url = format!("http://{}/readyz", c.metrics_addr());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http.get(&url).await.0, 503);
    let (s, _, _) = http
        .get(&format!("http://{}/healthz", c.metrics_addr()))
        .await;
    assert_eq!(s, 200);
    kube.set_down(false);
    let t0 = Instant::now();
    while http.get(&url).await.0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}
