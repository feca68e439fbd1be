//! A canary end to end: the sidecar (from the fake API server) sends the
//! candidate its share, a real Prometheus scrapes the sidecar, and the
//! controller reads the gates from that Prometheus and walks the canary in
//! the route's status, which the sidecar follows. A healthy candidate is
//! promoted; one that fails every call is paused and rolled back, while
//! every client request is still answered (retried on the route's own
//! backend) and the candidate gets nothing once rolled back.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use llmesh_controller::{CanaryConfig, Controller, ControllerConfig, LeaseConfig, SpendConfig};
use llmesh_mock::{Behavior, MockConfig, MockServer};
use llmesh_proxy::k8s::KubeSource;
use llmesh_proxy::{Proxy, ProxyConfig};
use llmesh_tests::fake_kube::FakeKube;
use llmesh_tests::{openai_chat, Http, KEY};
use serde_json::Value;

#[allow(dead_code)]
#[path = "observability/prometheus.rs"]
mod prometheus;

const NS: &str = "test-ns";

struct Stack {
    kube: FakeKube,
    _old: MockServer,
    next: MockServer,
    proxy: Proxy,
    controller: Controller,
    _prometheus: prometheus::Prometheus,
    _dir: tempfile::TempDir,
}

async fn mock(default: Behavior) -> MockServer {
    MockServer::start(MockConfig {
        api_key: Some(KEY.to_string()),
        default,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn provider(name: &str, url: &str, key: &std::path::Path) -> String {
    format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: {name}, namespace: {NS}}}, spec: {{schema: openai, baseUrl: '{url}/v1', credential: {{file: '{}'}}}}}}",
        key.display()
    )
}

const ROUTE: &str = "
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: chat, namespace: test-ns}
spec:
  models: [chat]
  backends: [{provider: old, model: m-old}]
  retries: {attempts: 1, when: [server-error], budgetMinPerSecond: 100}
  canary:
    backend: {provider: next, model: m-new}
    steps: [30, 70]
    hold: 3s
    gates: {maxErrorRatioIncrease: 0.1, maxLatencyRatio: 5, minRequests: 5, window: 15s}
";

/// Returns `None` (the test is skipped, loudly) only where
/// `LLMESH_ALLOW_MISSING_PROMETHEUS=1` and Prometheus is not installed.
async fn start(candidate: Behavior) -> Option<Stack> {
    let bin = prometheus::tool("prometheus")?;
    let kube = FakeKube::start().await;
    let old = mock(Behavior::default()).await;
    let next = mock(candidate).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, KEY).unwrap();
    kube.apply_yaml(&provider("old", &old.url(), &key));
    kube.apply_yaml(&provider("next", &next.url(), &key));
    kube.apply_yaml(ROUTE);

    let mut cfg = ProxyConfig::for_test(dir.path().join("unused.yaml"));
    cfg.kube = Some(KubeSource {
        client: llmesh_kube::plain_client(&kube.url(), NS).unwrap(),
        platform_namespace: Some("llmesh-system".into()),
    });
    let proxy = Proxy::start(cfg).await.unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: sidecar
    static_configs:
      - targets: ['{}']
",
        proxy.metrics_addr()
    );
    let prom = prometheus::Prometheus::start(&bin, &config).await;
    let controller = Controller::start(
        llmesh_kube::plain_client(&kube.url(), "default").unwrap(),
        ControllerConfig {
            namespace: None,
            platform_namespace: Some("llmesh-system".into()),
            lease: LeaseConfig {
                namespace: "llmesh-system".into(),
                name: "llmesh-controller".into(),
                identity: "one".into(),
                duration: Duration::from_secs(2),
                renew: Duration::from_millis(300),
            },
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            debounce: Duration::from_millis(20),
            spend: SpendConfig::default(),
            canary: CanaryConfig {
                interval: Duration::from_millis(500),
                prometheus: Some(prom.url().to_string()),
            },
            probes: llmesh_controller::ProbeConfig::default(),
        },
    )
    .await
    .unwrap();
    Some(Stack {
        kube,
        _old: old,
        next,
        proxy,
        controller,
        _prometheus: prom,
        _dir: dir,
    })
}

/// What the app saw.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    failed: AtomicU64,
    on_candidate: AtomicU64,
}

/// Sends chat requests through the sidecar until `stop`, about 40 a
/// second.
fn traffic(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = Http::new();
        let url = format!("http://{addr}/v1/chat/completions");
        let body = Bytes::from(serde_json::to_vec(&openai_chat("chat", "hi")).unwrap());
        while !stop.load(Ordering::Relaxed) {
            let (s, h, _) = http
                .send(
                    Method::POST,
                    &url,
                    body.clone(),
                    &[("content-type", "application/json")],
                )
                .await;
            if s.as_u16() == 200 {
                seen.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                seen.failed.fetch_add(1, Ordering::Relaxed);
            }
            if h.get("x-llmesh-model").and_then(|v| v.to_str().ok()) == Some("m-new") {
                seen.on_candidate.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

fn canary(kube: &FakeKube) -> Value {
    kube.object(NS, "llmroutes", "chat")
        .map(|o| o["status"]["canary"].clone())
        .unwrap_or(Value::Null)
}

async fn until_phase(kube: &FakeKube, phase: &str, within: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let c = canary(kube);
        if c["phase"] == phase {
            return c;
        }
        assert!(
            t0.elapsed() < within,
            "no {phase} within {within:?}; canary is {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn canary_events(kube: &FakeKube) -> Vec<String> {
    kube.events()
        .iter()
        .filter(|e| e["regarding"]["name"] == "chat")
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .filter(|r| r.starts_with("Canary"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_candidate_is_promoted_step_by_step() {
    let Some(s) = start(Behavior::default()).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let driver = traffic(s.proxy.llm_addr(), stop.clone(), seen.clone());
    let first = until_phase(&s.kube, "Progressing", Duration::from_secs(10)).await;
    assert_eq!(first["weight"], 30);
    let promoted = until_phase(&s.kube, "Promoted", Duration::from_secs(60)).await;
    assert_eq!(promoted["weight"], 100);
    // Promoted: the sidecar follows, every request goes to the candidate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = seen.on_candidate.load(Ordering::Relaxed);
    let ok_before = seen.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on = seen.on_candidate.load(Ordering::Relaxed) - before;
    let all = seen.ok.load(Ordering::Relaxed) - ok_before;
    assert!(
        all > 0 && on == all,
        "{on} of {all} on the candidate after promotion"
    );
    stop.store(true, Ordering::Relaxed);
    driver.await.unwrap();
    assert_eq!(seen.failed.load(Ordering::Relaxed), 0);
    let events = canary_events(&s.kube);
    assert_eq!(
        events,
        ["CanaryStarted", "CanaryAdvanced", "CanaryPromoted"]
    );
    s.controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_is_paused_and_rolled_back_and_no_request_is_lost() {
    let failing = Behavior {
        status: Some(500),
        ..Behavior::default()
    };
    let Some(s) = start(failing).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let driver = traffic(s.proxy.llm_addr(), stop.clone(), seen.clone());
    let paused = until_phase(&s.kube, "Paused", Duration::from_secs(30)).await;
    assert_eq!(paused["weight"], 30, "{paused}");
    assert!(
        paused["message"]
            .as_str()
            .unwrap()
            .contains("error ratio 100.0% on the candidate"),
        "{paused}"
    );
    let back = until_phase(&s.kube, "RolledBack", Duration::from_secs(30)).await;
    assert_eq!(back["weight"], 0);
    // Rolled back: the sidecar stops sending the candidate anything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = s.next.requests().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.next.requests().len(),
        calls,
        "the candidate still gets calls"
    );
    stop.store(true, Ordering::Relaxed);
    driver.await.unwrap();
    assert!(calls > 0, "the candidate never got its share");
    assert_eq!(
        seen.failed.load(Ordering::Relaxed),
        0,
        "a client saw the candidate's failure"
    );
    assert_eq!(seen.on_candidate.load(Ordering::Relaxed), 0);
    let events = canary_events(&s.kube);
    assert_eq!(
        events,
        ["CanaryStarted", "CanaryPaused", "CanaryRolledBack"]
    );
    s.controller.shutdown().await;
}
