//! Canaries walked by the controller against the fake API server: steps
//! advance on time while the candidate's probes pass, a failing probe
//! pauses then rolls back, the annotation promotes or aborts, and metric
//! gates without a Prometheus hold the canary where it is. The metric
//! gates against a real Prometheus scraping a real sidecar are in
//! `tests/canary.rs`.

use llmesh_controller::CanaryConfig;

use super::*;

const NS: &str = "team";

fn canary_config(identity: &str) -> ControllerConfig {
    let mut cfg = config(identity);
    cfg.canary = CanaryConfig {
        interval: Duration::from_millis(100),
        prometheus: None,
    };
    cfg
}

fn canary_route(name: &str, gates: &str, annotations: &str) -> String {
    format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: {name}, namespace: {NS}, annotations: {{{annotations}}}}}, spec: {{models: [{name}], backends: [{{provider: old, model: m-old}}], canary: {{backend: {{provider: next, model: m-new}}, steps: [20, 60], hold: 1s, gates: {gates}}}}}}}"
    )
}

fn canary_of(kube: &FakeKube, name: &str) -> Value {
    kube.object(NS, "llmroutes", name)
        .map(|o| o["status"]["canary"].clone())
        .unwrap_or(Value::Null)
}

async fn until_phase(kube: &FakeKube, name: &str, phase: &str) -> Value {
    until(&format!("{name} canary {phase}"), || {
        Some(canary_of(kube, name)).filter(|c| c["phase"] == phase)
    })
    .await
}

/// The canary Events regarding `name`, once there are `n` of them (the
/// Event follows its status patch).
async fn reasons_once(kube: &FakeKube, name: &str, n: usize) -> Vec<String> {
    until(&format!("{n} canary events on {name}"), || {
        Some(reasons(kube, name)).filter(|r| r.len() >= n)
    })
    .await
}

fn reasons(kube: &FakeKube, name: &str) -> Vec<String> {
    events_for(kube, name)
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .filter(|r| r.starts_with("Canary"))
        .map(str::to_string)
        .collect()
}

/// Writes the candidate's `ProbesPassing` as the prober would.
fn probes(kube: &FakeKube, name: &str, passing: bool) {
    let status = if passing { "True" } else { "False" };
    kube.patch_status(
        NS,
        "llmroutes",
        name,
        json!({"status": {"backends": [{"provider": "next", "model": "m-new", "conditions": [{
            "type": "ProbesPassing", "status": status, "reason": if passing {"ProbesPassed"} else {"ProbesFailed"},
            "message": if passing {""} else {"json-reply: answer is not valid JSON"},
            "lastTransitionTime": "2026-12-07T00:00:00Z"}]}]}}),
    );
}

fn setup(kube: &FakeKube) {
    kube.apply_yaml(&provider(NS, "old"));
    kube.apply_yaml(&provider(NS, "next"));
}

#[tokio::test]
async fn a_canary_with_passing_probes_walks_its_steps_to_promotion() {
    let kube = FakeKube::start().await;
    setup(&kube);
    kube.apply_yaml(&canary_route("good", "{probes: true}", ""));
    let c = start_with(&kube, canary_config("one")).await;
    // No probe result yet: the first step holds.
    let first = until_phase(&kube, "good", "Progressing").await;
    assert_eq!(
        (first["step"].clone(), first["weight"].clone()),
        (json!(0), json!(20))
    );
    assert_eq!(first["candidate"], "next/m-new");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = canary_of(&kube, "good");
    assert_eq!(held["weight"], 20, "{held}");
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .contains("no probe results"),
        "{held}"
    );

    probes(&kube, "good", true);
    let promoted = until_phase(&kube, "good", "Promoted").await;
    assert_eq!(promoted["weight"], 100);
    assert_eq!(
        reasons_once(&kube, "good", 3).await,
        ["CanaryStarted", "CanaryAdvanced", "CanaryPromoted"]
    );
    let m = metrics(&c).await;
    assert_eq!(
        metric_value(&m, "llmesh_controller_canary_weight", &[("route", "good")]),
        Some(100.0)
    );
    // The judge's conditions and the canary's progress live side by side.
    until_condition(&kube, NS, "llmroutes", "good", "Accepted", "True", 1).await;
    assert_eq!(canary_of(&kube, "good")["phase"], "Promoted");
    c.shutdown().await;
}

#[tokio::test]
async fn failing_probes_pause_then_roll_back_and_the_annotation_overrides() {
    let kube = FakeKube::start().await;
    setup(&kube);
    kube.apply_yaml(&canary_route("bad", "{probes: true}", ""));
    let c = start_with(&kube, canary_config("one")).await;
    until_phase(&kube, "bad", "Progressing").await;
    probes(&kube, "bad", false);
    let paused = until_phase(&kube, "bad", "Paused").await;
    assert_eq!(paused["weight"], 20, "the weight holds while paused");
    assert!(
        paused["message"]
            .as_str()
            .unwrap()
            .contains("probes fail on next/m-new"),
        "{paused}"
    );
    let back = until_phase(&kube, "bad", "RolledBack").await;
    assert_eq!(back["weight"], 0);
    assert_eq!(
        reasons_once(&kube, "bad", 3).await,
        ["CanaryStarted", "CanaryPaused", "CanaryRolledBack"]
    );
    let warnings: Vec<Value> = events_for(&kube, "bad")
        .into_iter()
        .filter(|e| e["reason"] == "CanaryRolledBack")
        .collect();
    assert_eq!(warnings[0]["type"], "Warning");

    // Promote by hand, then abort by hand.
    kube.apply_yaml(&canary_route(
        "bad",
        "{probes: true}",
        "llmesh.io/canary: promote",
    ));
    until_phase(&kube, "bad", "Promoted").await;
    kube.apply_yaml(&canary_route(
        "bad",
        "{probes: true}",
        "llmesh.io/canary: abort",
    ));
    let aborted = until_phase(&kube, "bad", "Aborted").await;
    assert_eq!(aborted["weight"], 0);
    assert!(reasons_once(&kube, "bad", 5)
        .await
        .ends_with(&["CanaryPromoted".to_string(), "CanaryAborted".to_string()]));
    // The canary leaves the spec: its progress leaves the status.
    kube.apply_yaml(&route(NS, "bad", "old"));
    until("status.canary cleared", || {
        Some(()).filter(|_| canary_of(&kube, "bad").is_null())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test]
async fn metric_gates_without_a_prometheus_hold_the_first_step() {
    let kube = FakeKube::start().await;
    setup(&kube);
    kube.apply_yaml(&canary_route(
        "metrics",
        "{maxErrorRatioIncrease: 0.02}",
        "",
    ));
    let c = start_with(&kube, canary_config("one")).await;
    until_phase(&kube, "metrics", "Progressing").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = canary_of(&kube, "metrics");
    assert_eq!(
        (held["phase"].clone(), held["weight"].clone()),
        (json!("Progressing"), json!(20))
    );
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .contains("--prometheus-url"),
        "{held}"
    );
    c.shutdown().await;
}
