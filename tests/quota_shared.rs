//! One namespace budget shared by several sidecar processes through a real
//! Redis: the limit holds under concurrent load, spend adds up across
//! processes and matches the usage records, and a Redis outage in the
//! middle of traffic is survived as each quota says.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http::Method;
use llmesh_tests::redis_server::RedisServer;
use llmesh_tests::*;
use serde_json::Value;

const NS: &str = "shop";

fn policy(mock: &str, quotas: &str) -> String {
    format!(
        r#"apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: oai}}
spec:
  schema: openai
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
  models:
    - {{name: gpt-4o-mini, pricing: {{input: 0.15, output: 0.6}}}}
    - {{name: strict-model, pricing: {{input: 0.15, output: 0.6}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat}}
spec:
  models: [gpt-4o-mini, strict-model]
  backends: [{{provider: oai}}]
{quotas}"#
    )
}

/// A sidecar process of namespace `shop` on the shared Redis.
struct Sidecar {
    p: ProxyProc,
}

/// `timeout`: the sidecars' Redis command timeout (a loaded CI machine
/// can take longer than the 50 ms default to answer, and the load test
/// means to measure the shared store, not the fallback).
fn sidecars(
    n: usize,
    policy_file: &std::path::Path,
    redis: &RedisServer,
    timeout: &str,
) -> Vec<Sidecar> {
    (0..n)
        .map(|i| Sidecar {
            p: spawn_proxy(
                proxy_command(policy_file)
                    .args(["--quota-store", &redis.url()])
                    .args(["--quota-redis-timeout", timeout])
                    .args(["--quota-local-share", &n.to_string()])
                    .env("POD_NAMESPACE", NS)
                    .env("LLMESH_WORKLOAD", "checkout")
                    .env("POD_NAME", format!("checkout-{i}"))
                    .env("LLMESH_LOG", "warn"),
            ),
        })
        .collect()
}

async fn metrics_of(http: &Http, s: &Sidecar) -> String {
    let (st, _, body) = http.get(&format!("{}/metrics", s.p.metrics)).await;
    assert_eq!(st, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

async fn post(http: &Http, base: &str, model: &str, max_tokens: u64) -> (u16, Value) {
    let mut body = openai_chat(model, "count to three");
    body["max_tokens"] = max_tokens.into();
    let (s, _, b) = http
        .send(
            Method::POST,
            &format!("{base}/v1/chat/completions"),
            Bytes::from(body.to_string()),
            &[],
        )
        .await;
    let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
    (s.as_u16(), v)
}

async fn counter(redis: &RedisServer, pattern: &str) -> i64 {
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut c)
        .await
        .unwrap();
    let mut total = 0;
    for k in keys {
        let v: Option<i64> = redis::cmd("GET").arg(&k).query_async(&mut c).await.unwrap();
        total += v.unwrap_or(0);
    }
    total
}

/// A real Redis, the mock provider binary and a policy file with `quotas`,
/// started inside a minute with `need` seconds left.
struct Setup {
    redis: RedisServer,
    _mock: Proc,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

async fn setup(quotas: &str, need: f64) -> Option<Setup> {
    let redis = RedisServer::start()?;
    inside_minute(need).await;
    let (mock, mock_url) = spawn_mock(KEY);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), KEY).unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy(&mock_url, quotas)).unwrap();
    Some(Setup {
        redis,
        _mock: mock,
        _dir: dir,
        file,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_and_64_clients_share_one_token_budget() {
    const LIMIT: i64 = 3000;
    const MAX_TOKENS: u64 = 40;
    let quota = format!("---\napiVersion: llmesh.io/v1alpha1\nkind: LLMQuota\nmetadata: {{name: budget}}\nspec:\n  limits: {{tokensPerMinute: {LIMIT}}}\n");
    let Some(Setup {
        redis,
        _mock,
        _dir,
        file,
    }) = setup(&quota, 20.0).await
    else {
        return;
    };
    let mut procs = sidecars(3, &file, &redis, "2s");
    let http = Http::new();
    let bases: Arc<Vec<String>> = Arc::new(procs.iter().map(|s| s.p.llm.clone()).collect());

    // 64 clients, round-robin over the sidecars, until each has been
    // refused 3 times (or 20 s pass).
    let admitted_tokens = Arc::new(AtomicU64::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for c in 0..64usize {
        let (http, bases) = (http.clone(), bases.clone());
        let (tok, adm, refu) = (admitted_tokens.clone(), admitted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut refusals = 0;
            let mut i = c;
            while refusals < 3 && Instant::now() < deadline {
                let base = &bases[i % bases.len()];
                i += 1;
                match post(&http, base, "gpt-4o-mini", MAX_TOKENS).await {
                    (200, v) => {
                        let used = v["usage"]["total_tokens"].as_u64().unwrap();
                        tok.fetch_add(used, Ordering::Relaxed);
                        adm.fetch_add(1, Ordering::Relaxed);
                    }
                    (429, v) => {
                        assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
                        refusals += 1;
                        refu.fetch_add(1, Ordering::Relaxed);
                    }
                    (s, v) => panic!("unexpected {s}: {v}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let used = admitted_tokens.load(Ordering::Relaxed) as i64;
    let n_admitted = admitted.load(Ordering::Relaxed);
    eprintln!(
        "admitted {n_admitted} requests using {used} tokens of a {LIMIT}-token budget; {} refused",
        refused.load(Ordering::Relaxed)
    );
    assert!(
        refused.load(Ordering::Relaxed) >= 64 * 3,
        "the limit was reached"
    );
    // Every reservation (prompt + max_tokens) is at least the usage it
    // settles to, and reservations are atomic in Redis: the budget holds.
    // The slack is what 64 in-flight requests could add if the provider
    // counted a prompt above the local estimate.
    let per_request_slack = 16;
    assert!(
        used <= LIMIT + 64 * per_request_slack,
        "admitted {used} tokens over a limit of {LIMIT}"
    );
    // And the budget was really used, not refused early.
    assert!(
        used >= LIMIT - 64 * (MAX_TOKENS as i64 + 40),
        "only {used} of {LIMIT} tokens admitted"
    );

    // Settled counts in Redis equal the real usage of every admitted call.
    let key = format!("llmesh:q:{{{NS}}}:budget:ns:tpm:*");
    let mut in_store = 0;
    for _ in 0..200 {
        in_store = counter(&redis, &key).await;
        if in_store == used {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_store, used, "Redis counter vs admitted usage");

    // Cost per namespace summed over the processes equals the usage
    // records' (written to the Redis stream; flushed on shutdown).
    let mut cost = 0.0;
    let mut requests = 0.0;
    for s in &procs {
        let m = metrics_of(&http, s).await;
        cost += metric_sum(&m, "llmesh_cost_usd_total", &[("namespace", NS)]);
        requests += metric_sum(&m, "llmesh_requests_total", &[("code", "200")]);
        assert_eq!(
            metric_sum(&m, "llmesh_quota_store_errors_total", &[]),
            0.0,
            "every admission went through Redis"
        );
        assert!(
            metric_sum(
                &m,
                "llmesh_quota_decisions_total",
                &[("decision", "reject")]
            ) > 0.0,
            "every sidecar refused some"
        );
    }
    assert_eq!(requests as u64, n_admitted);
    for s in &mut procs {
        assert!(s.p.proc.terminate().success());
    }
    let mut c = redis.conn().await;
    // What `llmesh cost` reads.
    let records = llmesh_quota::cost::read_records(&mut c, llmesh_quota::USAGE_STREAM, UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(records.len() as u64, n_admitted, "one record per request");
    let rec_cost: f64 = records.iter().map(|r| r.cost_usd).sum();
    let rec_tokens: u64 = records
        .iter()
        .map(|r| r.input_tokens + r.output_tokens)
        .sum();
    assert!(
        (rec_cost - cost).abs() < 1e-9,
        "records {rec_cost} vs metrics {cost}"
    );
    assert_eq!(rec_tokens as i64, used);
    for r in &records {
        assert_eq!(r.namespace, NS);
        assert_eq!(r.workload, "checkout");
        assert!(r.pod.starts_with("checkout-"), "{}", r.pod);
        assert_eq!((r.route.as_str(), r.provider.as_str()), ("chat", "oai"));
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_mid_load_is_survived_as_each_quota_says() {
    let quotas = "---
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: open}
spec:
  models: [gpt-4o-mini]
  limits: {requestsPerMinute: 100000}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: strict}
spec:
  models: [strict-model]
  limits: {requestsPerMinute: 100000}
  onStoreUnavailable: fail-closed
";
    let Some(Setup {
        mut redis,
        _mock,
        _dir,
        file,
    }) = setup(quotas, 25.0).await
    else {
        return;
    };
    let mut procs = sidecars(2, &file, &redis, "1s");
    let http = Http::new();
    let bases: Vec<String> = procs.iter().map(|s| s.p.llm.clone()).collect();

    // Phase 1: shared store up. Phase 2: Redis killed. Phase 3: back.
    let mut by_phase: Vec<HashMap<(&str, u16), u32>> = vec![HashMap::new(); 3];
    for (phase, counts) in by_phase.iter_mut().enumerate() {
        if phase == 1 {
            redis.kill();
        }
        if phase == 2 {
            redis.restart();
            // The sidecars probe Redis again once a second.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut degraded = 0.0;
                for s in &procs {
                    let m = metrics_of(&http, s).await;
                    degraded += metric_sum(&m, "llmesh_quota_store_degraded", &[]);
                    // Drive a probe.
                    post(&http, &s.p.llm, "gpt-4o-mini", 5).await;
                }
                if degraded == 0.0 {
                    break;
                }
                assert!(Instant::now() < deadline, "never recovered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut tasks = Vec::new();
        for c in 0..16usize {
            let (http, base) = (http.clone(), bases[c % bases.len()].clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..6 {
                    let model = if (c + i) % 2 == 0 {
                        "gpt-4o-mini"
                    } else {
                        "strict-model"
                    };
                    let (s, v) = post(&http, &base, model, 5).await;
                    out.push((model, s, v));
                }
                out
            }));
        }
        for t in tasks {
            for (model, s, v) in t.await.unwrap() {
                if s == 503 {
                    assert_eq!(v["error"]["code"], "quota_unavailable", "{v}");
                }
                *counts.entry((model, s)).or_default() += 1;
            }
        }
    }
    let [up, down, back] = &by_phase[..] else {
        unreachable!()
    };
    // Up: everything served.
    assert_eq!(up.get(&("gpt-4o-mini", 200)), Some(&48), "{up:?}");
    assert_eq!(up.get(&("strict-model", 200)), Some(&48), "{up:?}");
    // Down: the local quota keeps serving on each sidecar's share; the
    // fail-closed one refuses with 503 in the client's format.
    assert_eq!(down.get(&("gpt-4o-mini", 200)), Some(&48), "{down:?}");
    assert_eq!(down.get(&("strict-model", 503)), Some(&48), "{down:?}");
    // Back: both served again.
    assert_eq!(back.get(&("gpt-4o-mini", 200)), Some(&48), "{back:?}");
    assert_eq!(back.get(&("strict-model", 200)), Some(&48), "{back:?}");

    // The sidecars lived through it, counted it, and count on the shared
    // store again: 10 more requests per sidecar land in Redis exactly.
    let before = counter(&redis, &format!("llmesh:q:{{{NS}}}:open:ns:rpm:*")).await;
    for s in &procs {
        for _ in 0..10 {
            assert_eq!(post(&http, &s.p.llm, "gpt-4o-mini", 5).await.0, 200);
        }
    }
    let after = counter(&redis, &format!("llmesh:q:{{{NS}}}:open:ns:rpm:*")).await;
    assert_eq!(after - before, 20);
    let mut total_routed = 0.0;
    let mut delivered = 0.0;
    for s in &procs {
        let (st, _, _) = http.get(&format!("{}/healthz", s.p.metrics)).await;
        assert_eq!(st, 200);
        let m = metrics_of(&http, s).await;
        assert!(metric_sum(&m, "llmesh_quota_store_errors_total", &[]) > 0.0);
        assert!(metric_sum(&m, "llmesh_quota_local_admissions_total", &[]) > 0.0);
        assert!(metric_sum(&m, "llmesh_quota_fail_closed_total", &[]) > 0.0);
        assert_eq!(
            metric_sum(&m, "llmesh_quota_settlements_dropped_total", &[]),
            0.0
        );
        total_routed += metric_sum(&m, "llmesh_requests_total", &[("code", "200")]);
        // Usage records held while Redis was down are delivered after.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = metrics_of(&http, s).await;
            if metric_sum(&m, "llmesh_usage_records_queued", &[]) == 0.0 {
                assert_eq!(
                    metric_sum(&m, "llmesh_usage_records_total", &[("result", "dropped")]),
                    0.0,
                    "no usage record lost"
                );
                delivered +=
                    metric_sum(&m, "llmesh_usage_records_total", &[("result", "delivered")]);
                break;
            }
            assert!(Instant::now() < deadline, "usage records stuck");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        delivered >= total_routed,
        "{delivered} delivered of {total_routed}"
    );
    for s in &mut procs {
        assert!(s.p.proc.terminate().success(), "{}", s.p.proc.output());
    }
}

/// A provider defined once in the platform namespace (its key, its
/// published limits) is paced once: sidecars of two app namespaces on one
/// Redis count their calls to it together, so the two stay under its
/// limits between them instead of each using all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_providers_limits_hold_across_namespaces() {
    use llmesh_proxy::config::StoreSetting;
    use llmesh_proxy::k8s::KubeSource;
    use llmesh_proxy::{Proxy, ProxyConfig};
    use llmesh_tests::fake_kube::FakeKube;

    let Some(redis) = RedisServer::start() else {
        return;
    };
    inside_minute(15.0).await;
    let kube = FakeKube::start().await;
    let mock = llmesh_mock::MockServer::start(llmesh_mock::MockConfig {
        api_key: Some(KEY.to_string()),
        ..llmesh_mock::MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, KEY).unwrap();
    for (name, limits) in [
        (
            "oai",
            ", limits: {requestsPerMinute: 4, headroomPercent: 0}",
        ),
        ("spare", ""),
    ] {
        kube.apply_yaml(&format!(
            "{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: {name}, namespace: llmesh-system}}, spec: {{schema: openai, baseUrl: '{}/v1', credential: {{file: '{}'}}{limits}}}}}",
            mock.url(),
            key.display()
        ));
    }
    kube.apply_yaml("{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {name: chat, namespace: llmesh-system}, spec: {models: [gpt-4o-mini], backends: [{provider: oai, priority: 0}, {provider: spare, priority: 1}]}}");

    let mut proxies = Vec::new();
    for ns in ["team-a", "team-b"] {
        let mut cfg = ProxyConfig::for_test(dir.path().join("unused.yaml"));
        cfg.identity.namespace = ns.into();
        cfg.quota.store = StoreSetting::Redis(redis.url());
        cfg.quota.redis_timeout = Duration::from_secs(2);
        cfg.kube = Some(KubeSource {
            client: llmesh_kube::plain_client(&kube.url(), ns).unwrap(),
            platform_namespace: Some("llmesh-system".into()),
        });
        proxies.push(Proxy::start(cfg).await.unwrap());
    }
    let http = Http::new();
    for p in &proxies {
        let url = format!("http://{}/readyz", p.metrics_addr());
        let t0 = Instant::now();
        while http.get(&url).await.0 != 200 {
            assert!(t0.elapsed() < Duration::from_secs(5), "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Three calls through team-a's sidecar, then three through team-b's.
    let mut by: HashMap<(usize, String), u32> = HashMap::new();
    for (i, p) in proxies.iter().enumerate() {
        for _ in 0..3 {
            let (s, h, b) = http
                .send(
                    Method::POST,
                    &format!("http://{}/v1/chat/completions", p.llm_addr()),
                    Bytes::from(openai_chat("gpt-4o-mini", "hi").to_string()),
                    &[("content-type", "application/json")],
                )
                .await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            let provider = h
                .get("x-llmesh-provider")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            *by.entry((i, provider)).or_default() += 1;
            // Pacing counts land off the request path.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let oai: u32 = by
        .iter()
        .filter(|((_, p), _)| p == "oai")
        .map(|(_, n)| n)
        .sum();
    // team-b's first call finds the count team-a left (3) and makes it 4,
    // the limit: its next two go to the spare provider.
    assert_eq!(oai, 4, "{by:?}");
    assert_eq!(by.get(&(1, "spare".to_string())), Some(&2), "{by:?}");
    // One counter for the provider, under the namespace it lives in.
    assert_eq!(
        counter(&redis, "llmesh:p:{llmesh-system}:oai:rpm:*").await,
        4
    );
    assert_eq!(counter(&redis, "llmesh:p:{team-*").await, 0);
    for p in proxies {
        p.shutdown().await;
    }
}
