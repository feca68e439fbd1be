//! `llmesh-bench --cache`: the exact response cache.
//!
//! 1. In process: what a hit costs the sidecar before it writes the answer:
//!    parse the body, key it and find it in the memory store, for a chat
//!    request of about 1 KB.
//! 2. Through the sidecar binary on loopback, one client: a hit against
//!    the same request answered by the provider (the mock, which answers
//!    at once, so the difference is the sidecar's upstream call).
//! 3. A replayed workload where each request repeats an earlier one with a
//!    given probability: provider calls, cost paid and cost saved, read
//!    from the sidecar's own metrics.
//! 4. The semantic cache: a search of one context's stored prompts in
//!    process (the cosine scan, by index size and vector length), and a
//!    semantic hit through the sidecar (which includes the embeddings call
//!    to the mock).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use llmesh_api::parse_documents;
use llmesh_policy::{compile, EnvFileSecrets};
use llmesh_proxy::cache::{Answered, CacheBuilder, Caches};
use llmesh_proxy::upstream::Operation;
use llmesh_wire::{Dialect, Usage};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::faults::fetch_metrics;
use crate::load::{percentile, Conn, Target};
use crate::procs::{cpu_affinity, cpu_model};

/// The issue's target for a hit, at p50, in memory.
const TARGET_HIT_US: f64 = 50.0;

/// Counts for one run.
pub struct CachePlan {
    pub quick: bool,
    pub proxy_bin: Option<std::path::PathBuf>,
    pub mock_bin: Option<std::path::PathBuf>,
    /// Share of the replayed requests that repeat an earlier one.
    pub duplicate_rate: f64,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The main bench's policy (route `bench`, model `gpt-4o-mini`, no
/// cache) and a route `cached` to the same model with the cache.
fn policy(mock_port: u16) -> String {
    crate::policy_yaml(mock_port)
        + "---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: cached}
spec:
  models: [cached]
  backends: [{provider: mock, model: gpt-4o-mini}]
  cache: {exact: {ttl: 1h}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: semantic}
spec:
  models: [semantic]
  backends: [{provider: mock, model: gpt-4o-mini}]
  cache:
    semantic: {embedding: {provider: mock, model: text-embedding-3-small, dimensions: 256}, threshold: 0.9}
"
}

/// The bench policy compiled, and its route `name`.
fn compiled_route(name: &str) -> anyhow::Result<std::sync::Arc<llmesh_policy::Route>> {
    let docs = parse_documents(&policy(1)).map_err(|e| anyhow!("bench policy: {e}"))?;
    let secrets = EnvFileSecrets {
        base_dir: None,
        secrets_dir: std::env::temp_dir(),
    };
    // The credential is read from the environment.
    if std::env::var_os("LLMESH_BENCH_KEY").is_none() {
        std::env::set_var("LLMESH_BENCH_KEY", "bench");
    }
    let (mut snap, errors) = compile(&docs, "bench", &secrets);
    if !errors.is_empty() {
        bail!("bench policy: {errors:?}");
    }
    snap.routes
        .iter()
        .position(|r| r.name == name)
        .map(|i| snap.routes.swap_remove(i))
        .ok_or_else(|| anyhow!("no {name} route"))
}

/// Phase 4a: one context's search with `stored` prompts of `dims`
/// dimensions in memory; p50 and p99 of `n` lookups.
fn semantic_in_process(
    stored: usize,
    dims: usize,
    n: usize,
) -> anyhow::Result<(Duration, Duration)> {
    use llmesh_proxy::cache::semantic::{prompt_id, Index, Vector};
    use llmesh_proxy::cache::{Entry, EntryMeta};
    let route = compiled_route("semantic")?;
    let mut settings = route
        .semantic_cache
        .clone()
        .ok_or_else(|| anyhow!("the route has no semantic cache"))?;
    settings.max_entries = stored as u32;
    let index = Index::new(&route, settings, None);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let random = |rng: &mut rand::rngs::StdRng| {
        let v: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() - 0.5).collect();
        Vector::unit(v).ok_or_else(|| anyhow!("zero vector"))
    };
    let partition = index.partition(
        &[0; 32],
        Dialect::OpenAi,
        Operation::Chat,
        false,
        "",
        &serde_json::json!({"model": "semantic"}),
    );
    let far = u64::MAX / 2;
    for i in 0..stored {
        let entry = Entry {
            meta: EntryMeta {
                stream: false,
                provider: "mock".into(),
                model: "gpt-4o-mini".into(),
                response_model: None,
                tokens: None,
                stored_ms: 0,
                expires_ms: far,
            },
            body: Bytes::from_static(b"{}"),
        };
        let v = random(&mut rng)?;
        index.put(partition, prompt_id(&partition, &i.to_string()), v, entry);
    }
    let probes: Vec<Vector> = (0..64)
        .map(|_| random(&mut rng))
        .collect::<anyhow::Result<_>>()?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async {
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            let found = index
                .find(&partition, &probes[i % probes.len()])
                .await
                .map_err(|e| anyhow!(e))?;
            times.push(t.elapsed());
            if found.best.is_none() {
                bail!("the stored prompts were not compared");
            }
        }
        times.sort();
        Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
    })
}

/// A chat request of about 1 KB.
pub(crate) fn body(model: &str, prompt: &str) -> String {
    let context =
        "The sidecar keeps provider keys out of the app and answers repeated questions itself. "
            .repeat(8);
    serde_json::json!({
        "model": model,
        "temperature": 0,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": format!("You are terse. {context}")},
            {"role": "user", "content": prompt}
        ]
    })
    .to_string()
}

/// Phase 1: parse, key and find, in process.
fn lookup_in_process(n: usize) -> anyhow::Result<(Duration, Duration)> {
    let route = compiled_route("cached")?;
    let caches = Caches::default();
    let mut builder = CacheBuilder::default();
    let cache = builder
        .cache(&caches, &route)
        .ok_or_else(|| anyhow!("the route has no cache"))?;
    let raw = body("cached", "What does a sidecar do?");
    let parsed: Value = serde_json::from_str(&raw)?;
    let key = cache.key(Dialect::OpenAi, Operation::Chat, false, "", &parsed);
    let answer = Bytes::from(
        r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"It proxies."},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":3,"total_tokens":253}}"#,
    );
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async {
        cache.pending(key).store(
            false,
            answer,
            Answered {
                provider: "mock".into(),
                model: "gpt-4o-mini".into(),
                usage: Some(Usage {
                    input_tokens: 250,
                    output_tokens: 3,
                    cached_input_tokens: 0,
                    cache_write_input_tokens: 0,
                }),
                response_model: None,
            },
        );
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let v: Value = serde_json::from_slice(raw.as_bytes())?;
            let k = cache.key(Dialect::OpenAi, Operation::Chat, false, "", &v);
            let hit = cache.get(&k).await.map_err(|e| anyhow!(e))?;
            times.push(t.elapsed());
            if hit.is_none() {
                bail!("the stored answer was not found");
            }
        }
        times.sort();
        Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
    })
}

/// `n` sequential requests of `make(i)`: each one's client-observed time.
pub(crate) async fn each(
    target: &Target,
    n: usize,
    make: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Duration>> {
    let mut conn = Conn::open(target.addr).await?;
    let mut buf = Vec::new();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let req = target.post_json("/v1/chat/completions", Bytes::from(make(i)))?;
        let t = Instant::now();
        let status = conn.exchange(req, &mut buf).await.map_err(|e| anyhow!(e))?;
        times.push(t.elapsed());
        if status != 200 {
            bail!("status {status}: {}", String::from_utf8_lossy(&buf));
        }
    }
    Ok(times)
}

/// `n` sequential requests of `body` to `path`; p50 and p99.
pub(crate) async fn sequential(
    target: &Target,
    n: usize,
    make: impl Fn(usize) -> String,
) -> anyhow::Result<(Duration, Duration)> {
    let mut times = each(target, n, make).await?;
    times.sort();
    Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
}

/// Sum of a metric's series with `label=value`.
pub(crate) async fn metric(
    metrics: SocketAddr,
    name: &str,
    label: (&str, &str),
) -> anyhow::Result<f64> {
    Ok(fetch_metrics(metrics)
        .await?
        .iter()
        .filter(|s| s.name == name && s.labels.get(label.0).map(String::as_str) == Some(label.1))
        .map(|s| s.value)
        .sum())
}

/// Runs the three phases and returns the markdown report.
pub fn run(plan: &CachePlan) -> anyhow::Result<String> {
    let n1 = if plan.quick { 20_000 } else { 200_000 };
    let n2 = if plan.quick { 300 } else { 3000 };
    let n3 = if plan.quick { 400 } else { 4000 };
    let (p50, p99) = lookup_in_process(n1)?;
    let n4 = if plan.quick { 200 } else { 2000 };
    let mut scans = Vec::new();
    for (stored, dims) in [(1000, 256), (1000, 1536), (10_000, 256)] {
        scans.push((stored, dims, semantic_in_process(stored, dims, n4)?));
    }

    let stack = crate::procs::Stack::start(
        plan.proxy_bin.as_deref(),
        plan.mock_bin.as_deref(),
        &[],
        policy,
    )?;
    let addrs = stack.addrs;
    let target = Target::new("proxy", addrs.llm, None)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (hit, upstream, replay, semantic_hit) = rt.block_on(async {
        // Warm both paths.
        sequential(&target, 50, |_| body("cached", "warm")).await?;
        sequential(&target, 50, |i| body("gpt-4o-mini", &format!("warm {i}"))).await?;
        let hit = sequential(&target, n2, |_| body("cached", "warm")).await?;
        let upstream = sequential(&target, n2, |_| body("gpt-4o-mini", "warm")).await?;

        // The replay: request i repeats a random earlier prompt with
        // probability `duplicate_rate`, else asks a new one.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut prompts: Vec<String> = Vec::with_capacity(n3);
        for i in 0..n3 {
            let p = if !prompts.is_empty() && rng.random::<f64>() < plan.duplicate_rate {
                prompts[rng.random_range(0..prompts.len())].clone()
            } else {
                format!("question number {i}: what does a sidecar do?")
            };
            prompts.push(p);
        }
        let before_hits = metric(
            addrs.metrics,
            "llmesh_cache_lookups_total",
            ("result", "hit"),
        )
        .await?;
        let before_cost =
            metric(addrs.metrics, "llmesh_cost_usd_total", ("route", "cached")).await?;
        let before_saved = metric(
            addrs.metrics,
            "llmesh_cache_saved_usd_total",
            ("route", "cached"),
        )
        .await?;
        let t = Instant::now();
        sequential(&target, n3, |i| body("cached", &prompts[i])).await?;
        let took = t.elapsed();
        // Accounting lands just after each answer.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hits = metric(
            addrs.metrics,
            "llmesh_cache_lookups_total",
            ("result", "hit"),
        )
        .await?
            - before_hits;
        let cost = metric(addrs.metrics, "llmesh_cost_usd_total", ("route", "cached")).await?
            - before_cost;
        let saved = metric(
            addrs.metrics,
            "llmesh_cache_saved_usd_total",
            ("route", "cached"),
        )
        .await?
            - before_saved;
        // A semantic hit: another wording of a stored prompt each time.
        sequential(&target, 1, |_| body("semantic", "What does a sidecar do?")).await?;
        let semantic_hit = sequential(&target, n2, |i| {
            let p = if i % 2 == 0 {
                "what does a sidecar do"
            } else {
                "What does a sidecar do, please?"
            };
            body("semantic", p)
        })
        .await?;
        let semantic_hits = metric(
            addrs.metrics,
            "llmesh_semantic_cache_lookups_total",
            ("result", "hit"),
        )
        .await?;
        if semantic_hits < n2 as f64 {
            bail!("only {semantic_hits} of {n2} rewordings were semantic hits");
        }
        Ok::<_, anyhow::Error>((hit, upstream, (hits, cost, saved, took), semantic_hit))
    })?;

    let mut md = String::new();
    let _ = writeln!(md, "## Response cache (`llmesh-bench --cache`)\n");
    let _ = writeln!(
        md,
        "CPU: {} ({}); release build; one client, keep-alive, loopback.\n",
        cpu_model(),
        cpu_affinity()
    );
    let _ = writeln!(md, "| Measure | Calls | p50 | p99 | Target (p50) |");
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    let _ = writeln!(
        md,
        "| hit lookup in process (parse, key, find; 1 KB body) | {n1} | {:.1} µs | {:.1} µs | < {TARGET_HIT_US} µs: {} |",
        us(p50),
        us(p99),
        if us(p50) < TARGET_HIT_US { "met" } else { "missed" }
    );
    let _ = writeln!(
        md,
        "| hit through the sidecar, client-observed | {n2} | {:.1} µs | {:.1} µs | |",
        us(hit.0),
        us(hit.1)
    );
    let _ = writeln!(
        md,
        "| same request answered by the provider (mock) through the sidecar | {n2} | {:.1} µs | {:.1} µs | |",
        us(upstream.0),
        us(upstream.1)
    );
    let _ = writeln!(
        md,
        "| semantic hit through the sidecar (a reworded prompt; one embeddings call to the mock) | {n2} | {:.1} µs | {:.1} µs | |",
        us(semantic_hit.0),
        us(semantic_hit.1)
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| Semantic search in process (one context, memory) | Stored prompts | Dimensions | Lookups | p50 | p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (stored, dims, (p50, p99)) in &scans {
        let _ = writeln!(
            md,
            "| cosine scan and best match | {stored} | {dims} | {n4} | {:.1} µs | {:.1} µs |",
            us(*p50),
            us(*p99)
        );
    }
    let (hits, cost, saved, took) = replay;
    let share = if cost + saved > 0.0 {
        saved / (cost + saved) * 100.0
    } else {
        0.0
    };
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| Replayed workload | Requests | Duplicate rate | Hits | Paid (USD) | Saved (USD) | Saved share | Time |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| temperature 0, gpt-4o-mini prices | {n3} | {:.0}% | {hits:.0} | {cost:.6} | {saved:.6} | {share:.1}% | {:.2} s |",
        plan.duplicate_rate * 100.0,
        took.as_secs_f64()
    );
    Ok(md)
}
