//! `llmesh-controller` against the fake API server: the conditions it
//! writes, its Events, no write storms (`controller/status.rs`), leader
//! election with two replicas (`controller/leader.rs`), the real binary and
//! the deployment manifest (`controller/deploy.rs`), spend against limit
//! and threshold Events from a real Redis (`controller/spend.rs`), golden
//! prompts against the mock (`controller/probes.rs`).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use llmesh_controller::{Controller, ControllerConfig, LeaseConfig, SpendConfig};
use llmesh_tests::fake_kube::FakeKube;
use llmesh_tests::{metric_value, Http};
use serde_json::{json, Value};

#[path = "controller/canary.rs"]
mod canary;
#[path = "controller/deploy.rs"]
mod deploy;
#[path = "controller/leader.rs"]
mod leader;
#[path = "controller/probes.rs"]
mod probes;
#[path = "controller/spend.rs"]
mod spend;
#[path = "controller/status.rs"]
mod status;

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
        spend: SpendConfig::default(),
        canary: llmesh_controller::CanaryConfig::default(),
        probes: llmesh_controller::ProbeConfig::default(),
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
    format!("{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: {name}, namespace: {ns}}}, spec: {{models: [{name}], backends: [{{provider: '{provider}'}}]}}}}")
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
