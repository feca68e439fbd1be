//! `llmesh-controller` against the fake API server: the conditions it
//! writes, its Events, no write storms, leader election with two replicas,
//! and the real binary from a kubeconfig.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use llmesh_controller::{Controller, ControllerConfig, LeaseConfig};
use llmesh_tests::fake_kube::FakeKube;
use llmesh_tests::{metric_value, Http};
use serde_json::{json, Value};

const LEASE_NS: &str = "llmesh-system";
const LEASE: &str = "llmesh-controller";
/// Short lease timings, so takeovers happen within a test.
const LEASE_DURATION: Duration = Duration::from_secs(2);
const LEASE_RENEW: Duration = Duration::from_millis(300);

fn config(identity: &str) -> ControllerConfig {
    ControllerConfig {
        namespace: None,
        platform_namespace: Some("llmesh-system".into()),
        lease: LeaseConfig {
            namespace: LEASE_NS.into(),
            name: LEASE.into(),
            identity: identity.into(),
            duration: LEASE_DURATION,
            renew: LEASE_RENEW,
        },
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        debounce: Duration::from_millis(20),
    }
}

async fn start_with(kube: &FakeKube, cfg: ControllerConfig) -> Controller {
    let client = llmesh_kube::plain_client(&kube.url(), "default").unwrap();
    Controller::start(client, cfg).await.unwrap()
}

async fn start(kube: &FakeKube, identity: &str) -> Controller {
    start_with(kube, config(identity)).await
}

/// Polls `f` every 20 ms until it gives a value; panics after 10 s.
async fn until<T>(what: &str, f: impl Fn() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn provider(ns: &str, name: &str) -> String {
    format!("{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: {name}, namespace: {ns}}}, spec: {{schema: openai, credential: {{secretKeyRef: {{name: openai, key: api-key}}}}}}}}")
}

fn route(ns: &str, name: &str, provider: &str) -> String {
    format!("{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: {name}, namespace: {ns}}}, spec: {{models: [{name}], backends: [{{provider: {provider}}}]}}}}")
}

/// The condition of `type_` on the stored object.
fn condition(kube: &FakeKube, ns: &str, plural: &str, name: &str, type_: &str) -> Option<Value> {
    let obj = kube.object(ns, plural, name)?;
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Waits until the object's `type_` condition has `status` at `generation`.
async fn until_condition(
    kube: &FakeKube,
    ns: &str,
    plural: &str,
    name: &str,
    type_: &str,
    status: &str,
    generation: i64,
) -> Value {
    until(
        &format!("{plural}/{ns}/{name} {type_}={status}@{generation}"),
        || {
            condition(kube, ns, plural, name, type_)
                .filter(|c| c["status"] == status && c["observedGeneration"] == json!(generation))
        },
    )
    .await
}

/// Events regarding `name`.
fn events_for(kube: &FakeKube, name: &str) -> Vec<Value> {
    kube.events()
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name)
        .collect()
}

async fn metrics(c: &Controller) -> String {
    let (_, _, b) = Http::new()
        .get(&format!("http://{}/metrics", c.metrics_addr()))
        .await;
    String::from_utf8_lossy(&b).into_owned()
}

/// Waits for one more full evaluation than `before`, so "nothing was
/// written" is checked after the controller has looked again.
async fn evaluated_after(c: &Controller, before: f64) {
    let t0 = Instant::now();
    loop {
        let m = metrics(c).await;
        if metric_value(&m, "llmesh_controller_evaluations_total", &[]).unwrap_or(0.0) > before {
            // Let a write that would follow the evaluation happen.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no new evaluation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn evaluations(c: &Controller) -> f64 {
    metric_value(
        &metrics(c).await,
        "llmesh_controller_evaluations_total",
        &[],
    )
    .unwrap_or(0.0)
}

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
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: shape, namespace: team}, spec: {models: 7, backends: []}}");
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
async fn quotas_and_data_policies_are_accepted_but_not_enforced() {
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
        until_condition(&kube, "team", "llmquotas", "budget", "Enforced", "False", 1).await;
    assert_eq!(enforced["reason"], "NotEnforced");
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
        "False",
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

fn holder(kube: &FakeKube) -> Option<String> {
    kube.lease(LEASE_NS, LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

/// Starts "a", waits until it leads, then starts "b".
async fn two_replicas(kube: &FakeKube) -> (Controller, Controller) {
    let a = start(kube, "a").await;
    until("a leads", || a.is_leader().then_some(())).await;
    let b = start(kube, "b").await;
    until("b synced", || b.is_ready().then_some(())).await;
    (a, b)
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_when_it_stops() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&route("team", "lost", "x"));
    let (a, b) = two_replicas(&kube).await;
    assert_eq!(holder(&kube).as_deref(), Some("a"));
    until("one event", || {
        Some(events_for(&kube, "lost")).filter(|e| e.len() == 1)
    })
    .await;
    // Let b evaluate a few times: it must stay quiet.
    let before = evaluations(&b).await;
    kube.apply_yaml(&route("team", "second", "y"));
    evaluated_after(&b, before).await;
    until("second event", || {
        Some(events_for(&kube, "second")).filter(|e| e.len() == 1)
    })
    .await;
    assert!(!b.is_leader());
    assert!(kube.events().iter().all(|e| e["reportingInstance"] == "a"));
    let m = metrics(&b).await;
    assert_eq!(metric_value(&m, "llmesh_controller_leader", &[]), Some(0.0));
    assert_eq!(
        metric_value(&metrics(&a).await, "llmesh_controller_leader", &[]),
        Some(1.0)
    );
    let (s, _, _) = Http::new()
        .get(&format!("http://{}/readyz", b.metrics_addr()))
        .await;
    assert_eq!(s, 200, "a synced standby is ready");

    // The leader shuts down and gives the Lease up: b takes over at its
    // next attempt, well within the lease duration.
    let t0 = Instant::now();
    a.shutdown().await;
    until("b leads", || b.is_leader().then_some(())).await;
    let took = t0.elapsed();
    assert!(took < LEASE_DURATION, "took {took:?}");
    assert_eq!(holder(&kube).as_deref(), Some("b"));
    kube.apply_yaml(&route("team", "third", "z"));
    let e = until("b's event", || {
        events_for(&kube, "third").into_iter().next()
    })
    .await;
    assert_eq!(e["reportingInstance"], "b");
    // b found a's work in status: no repeated Events.
    assert_eq!(events_for(&kube, "lost").len(), 1);
    let lease = kube.lease(LEASE_NS, LEASE).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    b.shutdown().await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_once_its_lease_expires() {
    let kube = FakeKube::start().await;
    let (a, b) = two_replicas(&kube).await;
    // Dropping stops every task without giving the Lease up.
    let t0 = Instant::now();
    drop(a);
    until("b leads", || b.is_leader().then_some(())).await;
    let took = t0.elapsed();
    // Not before the lease has expired (its last renewal was at most one
    // renew interval before the crash), and within the lease time plus
    // one attempt.
    assert!(took >= LEASE_DURATION - LEASE_RENEW * 2, "took {took:?}");
    assert!(took < LEASE_DURATION + LEASE_RENEW * 3, "took {took:?}");
    assert_eq!(holder(&kube).as_deref(), Some("b"));
    b.shutdown().await;
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_writing_at_once() {
    let kube = FakeKube::start().await;
    let c = start(&kube, "a").await;
    until("a leads", || c.is_leader().then_some(())).await;

    // Another holder takes the Lease over (as after a long pause of ours).
    let mut lease = kube.lease(LEASE_NS, LEASE).unwrap();
    lease["spec"]["holderIdentity"] = json!("intruder");
    // Its renewTime is the leader's last renewal, a moment ago.
    lease["spec"]["leaseDurationSeconds"] = json!(3600);
    kube.put_lease(lease);
    until("a steps down", || (!c.is_leader()).then_some(())).await;
    let before = evaluations(&c).await;
    kube.apply_yaml(&route("team", "lost", "x"));
    evaluated_after(&c, before).await;
    assert_eq!(kube.status_patch_count(), 0);
    assert!(kube.events().is_empty());
    assert_eq!(
        metric_value(&metrics(&c).await, "llmesh_controller_leader", &[]),
        Some(0.0)
    );
    c.shutdown().await;
    // A standby does not give up a Lease it does not hold.
    assert_eq!(holder(&kube).as_deref(), Some("intruder"));
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_steps_down_before_its_lease_expires() {
    let kube = FakeKube::start().await;
    let c = start(&kube, "a").await;
    until("a leads", || c.is_leader().then_some(())).await;
    let t0 = Instant::now();
    kube.set_down(true);
    until("a steps down", || (!c.is_leader()).then_some(())).await;
    let took = t0.elapsed();
    assert!(took < LEASE_DURATION, "took {took:?}");
    kube.set_down(false);
    until("a leads again", || c.is_leader().then_some(())).await;
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

mod binary {
    use std::process::Command;

    use llmesh_tests::fake_kube::FakeKube;
    use llmesh_tests::{bin_path, field, metric_value, Http, Proc};

    use super::{holder, provider, route, until, until_condition};

    // Multi-threaded: the fake API server must keep answering while this
    // test blocks on the child process (its output, its exit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_controller_binary_writes_status_from_a_kubeconfig_and_releases_its_lease() {
        let kube = FakeKube::start().await;
        kube.apply_yaml(&provider("team", "openai"));
        kube.apply_yaml(&route("team", "chat", "openai"));
        kube.apply_yaml(&route("team", "lost", "x"));
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kube.kubeconfig("default")).unwrap();
        let mut proc = Proc::spawn(
            Command::new(bin_path("llmesh-controller"))
                .env("KUBECONFIG", &kubeconfig)
                .env("POD_NAME", "controller-0")
                .env("POD_NAMESPACE", "llmesh-system")
                .env_remove("KUBERNETES_SERVICE_HOST")
                .args([
                    "--metrics-listen",
                    "127.0.0.1:0",
                    "--lease-duration",
                    "2s",
                    "--lease-renew",
                    "300ms",
                    "--log",
                    "debug,hyper=info,kube=info,tower=info,rustls=info",
                ]),
        );
        let line = proc.wait_line("llmesh-controller listening ");
        let metrics = field(&line, "metrics").to_string();

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
        until_condition(&kube, "team", "llmroutes", "lost", "Accepted", "False", 1).await;
        // Identity and Lease namespace from the downward-API variables.
        assert_eq!(holder(&kube).as_deref(), Some("controller-0"));
        let http = Http::new();
        assert_eq!(http.get(&format!("{metrics}/readyz")).await.0, 200);
        assert_eq!(http.get(&format!("{metrics}/healthz")).await.0, 200);
        until("the event", || (!kube.events().is_empty()).then_some(())).await;
        let (_, _, body) = http.get(&format!("{metrics}/metrics")).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(
            metric_value(&text, "llmesh_controller_leader", &[]),
            Some(1.0)
        );
        assert_eq!(
            metric_value(
                &text,
                "llmesh_controller_status_patches_total",
                &[("kind", "LLMRoute"), ("result", "success")]
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            metric_value(
                &text,
                "llmesh_controller_events_total",
                &[("kind", "LLMRoute"), ("result", "success")]
            ),
            Some(1.0)
        );
        assert!(text.contains("llmesh_build_info{version=\""), "{text}");

        // SIGTERM: a clean exit that gives the Lease up.
        let status = proc.terminate();
        assert!(status.success(), "{status:?}\n{}", proc.output());
        assert_eq!(holder(&kube), None);
        // JSON log lines, with the rejection named.
        let out = proc.output();
        let rejected = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "resource rejected")
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(rejected["resource"], "LLMRoute/team/lost");
        assert!(!out.contains("not-read-by-the-controller"));
    }
}
