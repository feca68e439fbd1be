//! Spend against limit: the controller reads the counters the sidecars'
//! quota engine keeps in a real redis-server (counted here by that same
//! engine, admit then settle) and writes them into LLMQuota status, raises
//! one Event per alert threshold, and rides out a Redis outage.

use std::time::{Duration, SystemTime};

use llmesh_controller::{Controller, ControllerConfig, QuotaStore, SpendConfig};
use llmesh_policy::{compile, EnvFileSecrets};
use llmesh_quota::{Admission, AnyStore, QuotaEngine, QuotaRuntime, RedisConfig, RedisStore};
use llmesh_tests::fake_kube::FakeKube;
use llmesh_tests::metric_value;
use llmesh_tests::redis_server::RedisServer;
use serde_json::Value;

use super::*;

const NS: &str = "team";

fn spend_config(identity: &str, redis: &RedisServer) -> ControllerConfig {
    let mut cfg = config(identity);
    cfg.spend = SpendConfig {
        store: QuotaStore::Redis(redis.url()),
        interval: Duration::from_millis(200),
    };
    cfg
}

fn quota(name: &str, spec: &str) -> String {
    format!("{{apiVersion: llmesh.io/v1alpha1, kind: LLMQuota, metadata: {{name: {name}, namespace: {NS}}}, spec: {spec}}}")
}

/// A sidecar's quota engine over `redis`, enforcing `yaml`.
fn sidecar(redis: &RedisServer, yaml: &str) -> QuotaEngine {
    let docs = llmesh_api::parse_documents(yaml).unwrap();
    let (snap, errors) = compile(&docs, NS, &EnvFileSecrets::default());
    assert!(errors.is_empty(), "{errors:?}");
    // Generous timeouts: on a busy test machine the first call (connect,
    // load the script) must not fall back to local counting.
    let store = RedisStore::new(RedisConfig {
        url: redis.url(),
        command_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    })
    .unwrap();
    QuotaEngine::from_snapshot(&snap, &QuotaRuntime::new(AnyStore::Redis(store)))
}

/// One request of `workload` through the engine, settled at `tokens`
/// input tokens and `usd`.
async fn request(e: &QuotaEngine, workload: &str, tokens: u64, usd: f64) {
    let d = e
        .admit(&Admission {
            namespace: NS,
            workload,
            pod: &format!("{workload}-1"),
            callers: &[],
            model: "gpt-4o",
            input_tokens: tokens,
            output_tokens: 0,
            est_cost_usd: 0.0,
            now: SystemTime::now(),
        })
        .await;
    let r = d.into_reservation().expect("admitted");
    assert!(!r.is_local(), "counted locally, not in Redis");
    r.settle(tokens, 0, usd).await;
}

/// The spend fields of the stored quota.
fn spend_of(kube: &FakeKube, name: &str) -> Option<(String, String, String)> {
    let status = kube.object(NS, "llmquotas", name)?["status"].clone();
    let text = |k: &str| status[k].as_str().map(str::to_string);
    Some((text("limit")?, text("spent")?, text("remaining")?))
}

async fn until_spent(kube: &FakeKube, name: &str, spent: &str) -> (String, String, String) {
    until(&format!("{name} spent {spent}"), || {
        spend_of(kube, name).filter(|s| s.1 == spent)
    })
    .await
}

fn alerts(kube: &FakeKube, name: &str) -> Vec<Value> {
    events_for(kube, name)
        .into_iter()
        .filter(|e| e["reason"] == "QuotaThresholdReached")
        .collect()
}

async fn reads(c: &Controller, result: &str) -> f64 {
    metric_value(
        &metrics(c).await,
        "llmesh_controller_quota_spend_reads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// Waits until `n` more readings with `result` than now.
async fn more_reads(c: &Controller, result: &str, n: f64) {
    let before = reads(c, result).await;
    let t0 = Instant::now();
    while reads(c, result).await < before + n {
        assert!(t0.elapsed() < Duration::from_secs(10), "no {result} reads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_reaches_status_and_each_threshold_raises_one_event() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let yaml = quota(
        "budget",
        "{limits: {costPerDay: \"10\", requestsPerMinute: 1000}}",
    );
    let kube = FakeKube::start().await;
    kube.apply_yaml(&yaml);
    let e = sidecar(&redis, &yaml);
    let c = start_with(&kube, spend_config("a", &redis)).await;

    // Nothing spent yet: the cost limit is shown, in full.
    let s = until_spent(&kube, "budget", "0.00 USD").await;
    assert_eq!(
        s,
        (
            "10.00 USD/day".into(),
            "0.00 USD".into(),
            "10.00 USD (100%)".into()
        )
    );
    let resets =
        kube.object(NS, "llmquotas", "budget").unwrap()["status"]["windowResetsAt"].clone();
    assert!(
        resets.as_str().is_some_and(|t| t.ends_with("T00:00:00Z")),
        "{resets}"
    );
    // The conditions are still the status writer's.
    until_condition(&kube, NS, "llmquotas", "budget", "Accepted", "True", 1).await;

    // 85%: one Normal Event for the 80% threshold.
    request(&e, "checkout", 100, 8.5).await;
    let s = until_spent(&kube, "budget", "8.50 USD").await;
    assert_eq!(s.2, "1.50 USD (15%)");
    let first = until("the 80% event", || {
        Some(alerts(&kube, "budget")).filter(|a| !a.is_empty())
    })
    .await;
    assert_eq!(first.len(), 1, "{first:?}");
    let ev = &first[0];
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["regarding"]["kind"], "LLMQuota");
    assert_eq!(ev["metadata"]["namespace"], NS);
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.starts_with(
            "LLMQuota budget: costPerDay at 85%, 8.50 USD against a limit of 10.00 USD/day; alert threshold 80% reached in the window "
        ),
        "{note}"
    );
    assert!(!note.contains("checkout"), "{note}");

    // 100%: one Warning Event.
    request(&e, "checkout", 100, 1.5).await;
    let s = until_spent(&kube, "budget", "10.00 USD").await;
    assert_eq!(s.2, "0.00 USD (0%)");
    let both = until("the 100% event", || {
        Some(alerts(&kube, "budget")).filter(|a| a.len() >= 2)
    })
    .await;
    assert_eq!(both[1]["type"], "Warning");
    assert!(
        both[1]["note"]
            .as_str()
            .unwrap()
            .contains("costPerDay at 100%"),
        "{}",
        both[1]["note"]
    );

    // Later readings find nothing new: no patch, no Event.
    let patches = kube.status_patches(NS, "llmquotas", "budget");
    more_reads(&c, "success", 3.0).await;
    assert_eq!(kube.status_patches(NS, "llmquotas", "budget"), patches);
    assert_eq!(alerts(&kube, "budget").len(), 2);
    let m = metrics(&c).await;
    for type_ in ["Normal", "Warning"] {
        assert_eq!(
            metric_value(
                &m,
                "llmesh_controller_quota_alerts_total",
                &[("type", type_), ("result", "success")]
            ),
            Some(1.0),
            "{m}"
        );
    }

    // A new leader (a restart) remembers, through Redis, what was raised.
    c.shutdown().await;
    let b = start_with(&kube, spend_config("b", &redis)).await;
    until("b leads", || b.is_leader().then_some(())).await;
    more_reads(&b, "success", 3.0).await;
    assert_eq!(alerts(&kube, "budget").len(), 2);
    assert_eq!(kube.status_patches(NS, "llmquotas", "budget"), patches);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_keeps_the_last_figures_until_it_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let yaml = quota(
        "per-app",
        "{scope: workload, alertThresholds: [90], limits: {tokensPerDay: 1000}}",
    );
    let kube = FakeKube::start().await;
    kube.apply_yaml(&yaml);
    request(&sidecar(&redis, &yaml), "checkout", 100, 0.0).await;
    let c = start_with(&kube, spend_config("a", &redis)).await;
    let s = until_spent(&kube, "per-app", "100 tokens (1 workload)").await;
    assert_eq!(s.0, "1000 tokens/day per workload");
    assert_eq!(s.2, "900 tokens (90%)");

    redis.kill();
    more_reads(&c, "failure", 2.0).await;
    assert_eq!(
        spend_of(&kube, "per-app").unwrap().1,
        "100 tokens (1 workload)"
    );
    assert!(c.is_leader());
    assert_eq!(
        Http::new()
            .get(&format!("http://{}/healthz", c.metrics_addr()))
            .await
            .0,
        200
    );

    // Back, empty: new counts (by a sidecar reconnected) are read.
    redis.restart();
    let e = sidecar(&redis, &yaml);
    request(&e, "checkout", 300, 0.0).await;
    request(&e, "search", 120, 0.0).await;
    until_spent(&kube, "per-app", "300 tokens (busiest of 2 workloads)").await;
    assert!(alerts(&kube, "per-app").is_empty());
    c.shutdown().await;
}

#[tokio::test]
async fn without_a_shared_store_no_spend_is_written() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&quota("budget", "{limits: {costPerDay: \"10\"}}"));
    let c = start(&kube, "a").await;
    until_condition(&kube, NS, "llmquotas", "budget", "Accepted", "True", 1).await;
    let before = evaluations(&c).await;
    kube.apply_yaml(&provider(NS, "unrelated"));
    evaluated_after(&c, before).await;
    let status = kube.object(NS, "llmquotas", "budget").unwrap()["status"].clone();
    assert!(status.get("spent").is_none(), "{status}");
    assert!(status.get("limit").is_none(), "{status}");
    c.shutdown().await;
}
