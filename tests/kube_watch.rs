//! The sidecar's Kubernetes source against a fake API server that speaks
//! the real list/watch protocol: initial sync, changes, deletes, invalid
//! objects, watch drops, 410 Gone relists and readiness.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use llmesh_kube::{Scope, View};
use llmesh_tests::fake_kube::FakeKube;
use tokio::sync::watch;

async fn next_view(
    rx: &mut watch::Receiver<Option<Arc<View>>>,
    pred: impl Fn(&View) -> bool,
) -> Arc<View> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(v) = rx.borrow_and_update().clone() {
                if pred(&v) {
                    return v;
                }
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("view did not arrive in time")
}

fn names(v: &View) -> Vec<String> {
    v.objects.iter().map(|o| o.full_name()).collect()
}

#[tokio::test]
async fn reflectors_sync_merge_and_follow_changes() {
    let kube = FakeKube::start().await;
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: chat, namespace: team}, spec: {models: [chat], backends: [{provider: p}]}}");
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: chat, namespace: llmesh-system}, spec: {models: [x], backends: [{provider: p}]}}");
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {name: p, namespace: llmesh-system}, spec: {schema: openai}}");
    let client = llmesh_kube::plain_client(&kube.url(), "team").unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let mut rx = llmesh_kube::spawn(
        client,
        Scope {
            namespace: "team".into(),
            platform_namespace: Some("llmesh-system".into()),
        },
        stop_rx,
    );
    let v = next_view(&mut rx, |_| true).await;
    // The team's route shadows the platform's of the same name.
    assert_eq!(
        names(&v),
        ["LLMRoute/team/chat", "LLMProvider/llmesh-system/p"]
    );
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: two, namespace: team}, spec: {models: [two], backends: [{provider: p}]}}");
    next_view(&mut rx, |v| v.objects.len() == 3).await;
    kube.delete("team", "llmroutes", "chat");
    let v = next_view(&mut rx, |v| {
        v.objects.len() == 3 && !names(v).contains(&"LLMRoute/team/chat".to_string())
    })
    .await;
    assert!(
        names(&v).contains(&"LLMRoute/llmesh-system/chat".to_string()),
        "{:?}",
        names(&v)
    );

    // A dropped watch resumes; a compacted history forces a relist.
    kube.drop_watches();
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: three, namespace: team}, spec: {models: [three], backends: [{provider: p}]}}");
    next_view(&mut rx, |v| v.objects.len() == 4).await;
    // An outage during which history is compacted: the watch comes back
    // with an old version, gets 410 Gone, and relists.
    kube.set_down(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: four, namespace: team}, spec: {models: [four], backends: [{provider: p}]}}");
    kube.compact();
    kube.set_down(false);
    next_view(&mut rx, |v| v.objects.len() == 5).await;
    let lists = kube
        .requests()
        .iter()
        .filter(|r| r.contains("llmroutes") && !r.contains("watch="))
        .count();
    assert!(lists >= 3, "no relist after 410: {:?}", kube.requests());
}

mod proxy {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::Method;
    use llmesh_mock::{MockConfig, MockServer};
    use llmesh_proxy::k8s::KubeSource;
    use llmesh_proxy::{Proxy, ProxyConfig};
    use llmesh_tests::fake_kube::FakeKube;
    use llmesh_tests::*;
    use serde_json::Value;

    struct Cluster {
        kube: FakeKube,
        mock: MockServer,
        proxy: Proxy,
        http: Http,
        _dir: tempfile::TempDir,
    }

    fn provider(mock: &str, key_file: &std::path::Path) -> String {
        format!(
            "{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: mock, namespace: test-ns}}, spec: {{schema: openai, baseUrl: '{mock}/v1', credential: {{file: '{}'}}}}}}",
            key_file.display()
        )
    }

    fn route(ns: &str, name: &str, models: &str, backend: &str) -> String {
        format!("{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: {name}, namespace: {ns}}}, spec: {{models: [{models}], backends: [{backend}]}}}}")
    }

    async fn start(down: bool) -> Cluster {
        let kube = FakeKube::start().await;
        let mock = MockServer::start(MockConfig {
            api_key: Some(KEY.to_string()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, KEY).unwrap();
        kube.apply_yaml(&provider(&mock.url(), &key));
        kube.apply_yaml(&route(
            "test-ns",
            "chat",
            "chat",
            "{provider: mock, model: m1}",
        ));
        // A platform default the namespace does not override.
        kube.apply_yaml(&route(
            "llmesh-system",
            "shared",
            "shared",
            "{provider: mock, model: m-shared}",
        ));
        kube.set_down(down);
        let mut cfg = ProxyConfig::for_test(dir.path().join("unused.yaml"));
        cfg.kube = Some(KubeSource {
            client: llmesh_kube::plain_client(&kube.url(), "test-ns").unwrap(),
            platform_namespace: Some("llmesh-system".into()),
        });
        let proxy = Proxy::start(cfg).await.unwrap();
        Cluster {
            kube,
            mock,
            proxy,
            http: Http::new(),
            _dir: dir,
        }
    }

    impl Cluster {
        async fn chat(&self, model: &str) -> (u16, String) {
            let url = format!("http://{}/v1/chat/completions", self.proxy.llm_addr());
            let body = serde_json::to_vec(&openai_chat(model, "hi")).unwrap();
            let (s, h, b) = self
                .http
                .send(
                    Method::POST,
                    &url,
                    Bytes::from(body),
                    &[("content-type", "application/json")],
                )
                .await;
            let used = h
                .get("x-llmesh-model")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let _ = serde_json::from_slice::<Value>(&b);
            (s.as_u16(), used)
        }

        /// Polls until `model` is served by `want` (status 200 and that
        /// upstream model), or `want` is None and the model is unknown (404).
        async fn until(&self, model: &str, want: Option<&str>) -> Duration {
            let t0 = Instant::now();
            loop {
                let (s, used) = self.chat(model).await;
                let ok = match want {
                    Some(w) => s == 200 && used == w,
                    None => s == 404,
                };
                if ok {
                    return t0.elapsed();
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "{model}: still {s} {used} after 5s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        async fn metrics(&self) -> String {
            let url = format!("http://{}/metrics", self.proxy.metrics_addr());
            let (_, _, b) = self.http.get(&url).await;
            String::from_utf8_lossy(&b).into_owned()
        }

        async fn ready(&self) -> u16 {
            let url = format!("http://{}/readyz", self.proxy.metrics_addr());
            self.http.get(&url).await.0.as_u16()
        }
    }

    #[tokio::test]
    async fn routing_follows_the_cluster_within_a_second() {
        let c = start(false).await;
        c.until("chat", Some("m1")).await;
        // Platform defaults apply under the namespace's own objects.
        c.until("shared", Some("m-shared")).await;

        // Modify.
        c.kube.apply_yaml(&route(
            "test-ns",
            "chat",
            "chat",
            "{provider: mock, model: m2}",
        ));
        let took = c.until("chat", Some("m2")).await;
        assert!(took < Duration::from_secs(1), "took {took:?}");
        // Add.
        c.kube.apply_yaml(&route(
            "test-ns",
            "extra",
            "extra",
            "{provider: mock, model: m3}",
        ));
        c.until("extra", Some("m3")).await;
        // Delete.
        c.kube.delete("test-ns", "llmroutes", "extra");
        c.until("extra", None).await;
        // A namespace object shadows the platform's of the same name.
        c.kube.apply_yaml(&route(
            "test-ns",
            "shared",
            "shared",
            "{provider: mock, model: m-own}",
        ));
        c.until("shared", Some("m-own")).await;
        assert!(c
            .mock
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_some()));
    }

    #[tokio::test]
    async fn an_invalid_object_is_left_out_and_a_valid_one_keeps_its_last_version() {
        let c = start(false).await;
        c.until("chat", Some("m1")).await;
        // A new object naming a provider that does not exist: left out.
        c.kube
            .apply_yaml(&route("test-ns", "broken", "broken", "{provider: nope}"));
        // An edit that breaks a valid object: its last valid version serves.
        c.kube.apply_yaml(&route(
            "test-ns",
            "chat",
            "chat",
            "{provider: nope, model: m9}",
        ));
        // A shape error (models must be a list).
        c.kube.apply_yaml_past_the_schema("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: shape, namespace: test-ns}, spec: {models: 7, backends: []}}");
        let t0 = Instant::now();
        loop {
            let m = c.metrics().await;
            if metric_value(
                &m,
                "llmesh_config_rejected_resources",
                &[("kind", "LLMRoute")],
            ) == Some(3.0)
            {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "{m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (s, used) = c.chat("chat").await;
        assert_eq!((s, used.as_str()), (200, "m1"));
        assert_eq!(c.chat("broken").await.0, 404);
        // Fixing it applies the fix.
        c.kube.apply_yaml(&route(
            "test-ns",
            "chat",
            "chat",
            "{provider: mock, model: m4}",
        ));
        c.until("chat", Some("m4")).await;
        // config_dump tells why objects are out, without secrets.
        let url = format!("http://{}/config_dump?format=json", c.proxy.admin_addr());
        let (_, _, b) = c.http.get(&url).await;
        let dump = String::from_utf8_lossy(&b);
        assert!(dump.contains("broken"), "{dump}");
        assert!(!dump.contains(KEY), "{dump}");
    }

    #[tokio::test]
    async fn not_ready_until_synced_and_serving_through_an_api_outage() {
        let c = start(true).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.ready().await, 503);
        c.kube.set_down(false);
        let t0 = Instant::now();
        while c.ready().await != 200 {
            assert!(t0.elapsed() < Duration::from_secs(10), "never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.until("chat", Some("m1")).await;
        // The API server goes away: the last policy keeps serving.
        c.kube.set_down(true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.chat("chat").await, (200, "m1".to_string()));
        assert_eq!(c.ready().await, 200);
        // It comes back with a change made meanwhile (and history compacted):
        // the watch relists and picks it up.
        c.kube.apply_yaml(&route(
            "test-ns",
            "chat",
            "chat",
            "{provider: mock, model: m5}",
        ));
        c.kube.compact();
        c.kube.set_down(false);
        c.until("chat", Some("m5")).await;
    }

    #[tokio::test]
    async fn a_rotated_secret_takes_effect_without_a_restart() {
        let kube = FakeKube::start().await;
        let mock = MockServer::start(MockConfig {
            api_key: Some(KEY.to_string()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secrets").join("provider-key");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("api-key"), "stale-key\n").unwrap();
        kube.apply_yaml(&format!(
            "{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: mock, namespace: test-ns}}, spec: {{schema: openai, baseUrl: '{}/v1', credential: {{secretKeyRef: {{name: provider-key, key: api-key}}}}}}}}",
            mock.url()
        ));
        kube.apply_yaml(&route(
            "test-ns",
            "chat",
            "chat",
            "{provider: mock, model: m1}",
        ));
        let mut cfg = ProxyConfig::for_test(dir.path().join("unused.yaml"));
        cfg.secrets_dir = dir.path().join("secrets");
        cfg.kube = Some(KubeSource {
            client: llmesh_kube::plain_client(&kube.url(), "test-ns").unwrap(),
            platform_namespace: None,
        });
        let proxy = Proxy::start(cfg).await.unwrap();
        let c = Cluster {
            kube,
            mock,
            proxy,
            http: Http::new(),
            _dir: dir,
        };
        let t0 = Instant::now();
        loop {
            let (s, _) = c.chat("chat").await;
            if s == 401 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "status {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The kubelet replaces Secret files by renaming a new version in.
        let tmp = secret.join(".api-key.new");
        std::fs::write(&tmp, format!("{KEY}\n")).unwrap();
        std::fs::rename(&tmp, secret.join("api-key")).unwrap();
        let took = c.until("chat", Some("m1")).await;
        assert!(took < Duration::from_secs(2), "took {took:?}");
        // The key never shows in the dump.
        let url = format!("http://{}/config_dump", c.proxy.admin_addr());
        let (_, _, b) = c.http.get(&url).await;
        let dump = String::from_utf8_lossy(&b);
        assert!(
            !dump.contains(KEY) && dump.contains("secret:provider-key/api-key"),
            "{dump}"
        );
    }

    #[tokio::test]
    async fn a_new_model_version_is_an_event_on_the_provider() {
        let c = start(false).await;
        c.until("chat", Some("m1")).await;
        for version in ["m1-2024-07-18", "m1-2025-03-01"] {
            c.mock.set_model_behavior(
                "m1",
                llmesh_mock::Behavior {
                    response_model: Some(version.into()),
                    ..Default::default()
                },
            );
            assert_eq!(c.chat("chat").await.0, 200);
        }
        let t0 = Instant::now();
        let event = loop {
            let found = c.kube.events().into_iter().find(|e| {
                e["reason"] == "ModelVersionChanged"
                    && e["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("m1-2025-03-01"))
            });
            if let Some(e) = found {
                break e;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no ModelVersionChanged event: {:?}",
                c.kube.events()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(event["type"], "Normal", "{event}");
        assert_eq!(event["regarding"]["kind"], "LLMProvider", "{event}");
        assert_eq!(event["regarding"]["name"], "mock", "{event}");
        assert_eq!(event["metadata"]["namespace"], "test-ns", "{event}");
        assert_eq!(event["reportingController"], "llmesh.io/sidecar", "{event}");
        let note = event["note"].as_str().unwrap();
        assert!(
            note.contains("m1-2025-03-01") && note.contains("was m1-2024-07-18"),
            "{note}"
        );
        // One Event per change (m1 to the first dated version, then to the
        // second); the same answer again raises none.
        assert_eq!(c.chat("chat").await.0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = c
            .kube
            .events()
            .iter()
            .filter(|e| e["reason"] == "ModelVersionChanged")
            .count();
        assert_eq!(n, 2);
    }
}
