//! `llmesh-bench --faults` (`make bench-faults`): how many requests an app
//! gets answered when an upstream fails, through llmesh (retries, circuit
//! breaker, a second backend) and, for comparison, calling the provider
//! directly.
//!
//! One mock plays both providers, told apart by model name (`model-a`,
//! `model-b`); its per-model rules inject the failures. Each proxied
//! scenario runs on a fresh proxy, so breakers, the retry budget and the
//! metrics start from zero and the metric totals are the scenario's own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::load::{contains, one_shot, percentile, Conn, Target};
use crate::procs::{run_key, spawn_mock, spawn_proxy, ChildGuard, ProxyAddrs};

/// Every mock answer waits this long, like a real upstream.
const UPSTREAM_LATENCY_MS: u64 = 20;
/// Longest a scenario may run, whatever the request count.
const SCENARIO_TIME: Duration = Duration::from_secs(20);
/// Longest one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A client stops after this many connection failures in a row.
const MAX_CONSECUTIVE_TRANSPORT_ERRORS: u32 = 20;
/// How long a new proxy gets to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Breaker states are sampled from `/metrics` this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Failure descriptions kept per scenario.
const KEEP_MESSAGES: usize = 3;

const ROUTE_MODEL: &str = "gpt-4o-mini";
const MODEL_A: &str = "model-a";
const MODEL_B: &str = "model-b";
/// A complete, successful chat answer contains this.
const EXPECT: &[u8] = b"\"finish_reason\":\"stop\"";

/// Counts after `--quick` and the defaults are applied.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub requests: u64,
    pub clients: usize,
    pub proxy_threads: usize,
    pub proxy_log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The app calls llmesh, which routes to model-a / model-b.
    Proxy,
    /// The app calls the provider itself, model-a or model-b at random.
    Direct,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::Proxy => "llmesh",
            Via::Direct => "direct, 50/50 model-a/model-b",
        }
    }
}

struct Scenario {
    name: &'static str,
    /// The mock's rule for model-a (model-b is always healthy).
    model_a: Option<&'static str>,
    via: Via,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "a. no failures",
        model_a: None,
        via: Via::Proxy,
    },
    Scenario {
        name: "b. model-a fails 50% (503)",
        model_a: Some(r#"{"fail_percent":50,"status":503}"#),
        via: Via::Proxy,
    },
    Scenario {
        name: "b. model-a fails 50% (503)",
        model_a: Some(r#"{"fail_percent":50,"status":503}"#),
        via: Via::Direct,
    },
    Scenario {
        name: "c. model-a down (503)",
        model_a: Some(r#"{"status":503}"#),
        via: Via::Proxy,
    },
];

/// What one scenario produced.
#[derive(Debug, Default)]
struct Outcome {
    requests: u64,
    ok: u64,
    /// Failed requests by reason (`status 503`, `transport`, ...).
    failures: BTreeMap<String, u64>,
    messages: Vec<String>,
    /// Time to the whole answer, failed answers included; sorted at the end.
    latencies: Vec<Duration>,
    upstream_calls: u64,
    wall: Duration,
    metrics: Option<MetricsSummary>,
}

impl Outcome {
    fn absorb(&mut self, o: Outcome) {
        self.requests += o.requests;
        self.ok += o.ok;
        for (k, n) in o.failures {
            *self.failures.entry(k).or_insert(0) += n;
        }
        for m in o.messages {
            if self.messages.len() < KEEP_MESSAGES {
                self.messages.push(m);
            }
        }
        self.latencies.extend(o.latencies);
    }

    fn fail(&mut self, reason: String, message: String) {
        *self.failures.entry(reason).or_insert(0) += 1;
        if self.messages.len() < KEEP_MESSAGES {
            self.messages.push(message);
        }
    }

    fn failed(&self) -> u64 {
        self.requests - self.ok
    }
}

/// The proxy's resilience metrics over one scenario.
#[derive(Debug, Default)]
struct MetricsSummary {
    /// `llmesh_retries_total` by reason.
    retries: BTreeMap<String, f64>,
    /// `llmesh_retry_budget_exhausted_total`, all routes.
    budget_exhausted: f64,
    /// `llmesh_circuit_breaker_state` per `provider/model` at the end.
    breaker_end: BTreeMap<String, i64>,
    /// Sampled breaker states per `provider/model`: [closed, open, half-open].
    breaker_samples: BTreeMap<String, [u32; 3]>,
    samples: u32,
    /// `llmesh_attempts_total` per `provider/model` and outcome.
    attempts: BTreeMap<(String, String), f64>,
}

/// Runs every scenario; returns the number of failed requests of
/// scenario a (which must be zero).
pub async fn run(mock_bin: &Path, proxy_bin: &Path, plan: &FaultPlan) -> anyhow::Result<u64> {
    let run_start = Instant::now();
    // Declared before the children: dropped after them.
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let key = run_key();
    let (mut mock, mock_addr) = spawn_mock(mock_bin, &key)?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, policy_yaml(mock_addr.port())).context("writing the policy file")?;
    control(
        mock_addr,
        Method::PUT,
        "/_mock/behavior",
        Some(&format!("{{\"latency_ms\":{UPSTREAM_LATENCY_MS}}}")),
    )
    .await?;
    let direct = Target::new("direct", mock_addr, Some(&key))?;

    let mut outcomes = Vec::with_capacity(SCENARIOS.len());
    for sc in &SCENARIOS {
        eprintln!(
            "llmesh-bench: faults: {} via {} ({} requests, {} clients)",
            sc.name,
            sc.via.label(),
            plan.requests,
            plan.clients
        );
        control(mock_addr, Method::DELETE, "/_mock/models", None).await?;
        if let Some(rule) = sc.model_a {
            control(
                mock_addr,
                Method::PUT,
                &format!("/_mock/models/{MODEL_A}"),
                Some(rule),
            )
            .await?;
        }
        let mut proxy: Option<(ChildGuard, ProxyAddrs)> = match sc.via {
            Via::Proxy => {
                let (guard, addrs) = spawn_proxy(
                    proxy_bin,
                    &policy,
                    plan.proxy_threads,
                    &plan.proxy_log,
                    &key,
                )?;
                wait_ready(addrs.metrics).await?;
                Some((guard, addrs))
            }
            Via::Direct => None,
        };
        let target = match &proxy {
            Some((_, addrs)) => Target::new("llmesh", addrs.llm, None)?,
            None => direct.clone(),
        };
        control(mock_addr, Method::DELETE, "/_mock/requests", None).await?;

        let done = AtomicBool::new(false);
        let t0 = Instant::now();
        let load = async {
            let r = drive(&target, sc.via, plan).await;
            done.store(true, Ordering::Relaxed);
            r
        };
        let sampler = async {
            match &proxy {
                Some((_, addrs)) => Some(sample_breakers(addrs.metrics, &done).await),
                None => None,
            }
        };
        let (mut outcome, samples) = tokio::join!(load, sampler);
        outcome.wall = t0.elapsed();
        outcome.upstream_calls = mock_requests(mock_addr).await?;
        if let Some((guard, addrs)) = proxy.as_mut() {
            let mut m = proxy_metrics(addrs.metrics).await?;
            if let Some((samples, counts)) = samples {
                m.samples = samples;
                m.breaker_samples = counts;
            }
            outcome.metrics = Some(m);
            guard.check_alive()?;
        }
        mock.check_alive()?;
        outcome.latencies.sort_unstable();
        eprintln!(
            "llmesh-bench: faults: {} via {}: {}/{} answered in {:.1} s",
            sc.name,
            sc.via.label(),
            outcome.ok,
            outcome.requests,
            outcome.wall.as_secs_f64()
        );
        // The proxy of this scenario is killed here.
        drop(proxy);
        outcomes.push(outcome);
    }

    println!("{}", markdown(plan, &outcomes, run_start.elapsed()));
    let failed_a = outcomes.first().map_or(0, Outcome::failed);
    Ok(failed_a)
}

fn policy_yaml(mock_port: u16) -> String {
    format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: primary}}
spec: {{schema: openai, baseUrl: http://127.0.0.1:{mock_port}/v1, credential: {{env: LLMESH_BENCH_KEY}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: secondary}}
spec: {{schema: openai, baseUrl: http://127.0.0.1:{mock_port}/v1, credential: {{env: LLMESH_BENCH_KEY}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: resilient}}
spec:
  models: [{ROUTE_MODEL}]
  backends:
    - {{provider: primary, model: {MODEL_A}}}
    - {{provider: secondary, model: {MODEL_B}}}
  retries: {{attempts: 2, backoffBase: 5ms, backoffMax: 50ms}}
  circuitBreaker: {{consecutiveFailures: 5, failurePercent: 50, minRequests: 20, window: 10s, openFor: 2s}}
"
    )
}

/// A call to the mock's control API that must succeed.
async fn control(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Bytes> {
    let (status, bytes) = one_shot(addr, method.clone(), path, body).await?;
    if status != StatusCode::OK {
        bail!(
            "{method} {path} on the mock: status {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(bytes)
}

/// API requests the mock received since the last reset.
async fn mock_requests(addr: SocketAddr) -> anyhow::Result<u64> {
    let body = control(addr, Method::GET, "/_mock/stats", None).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).context("mock stats")?;
    v["requests"]
        .as_u64()
        .ok_or_else(|| anyhow!("no requests count in the mock's stats: {v}"))
}

/// Waits until the proxy's `/readyz` answers 200.
async fn wait_ready(metrics: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok((StatusCode::OK, _)) = one_shot(metrics, Method::GET, "/readyz", None).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("llmesh-proxy not ready within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `plan.requests` requests from `plan.clients` clients, each on its own
/// keep-alive connection, back to back.
async fn drive(target: &Target, via: Via, plan: &FaultPlan) -> Outcome {
    let started = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + SCENARIO_TIME;
    let mut tasks = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        let target = target.clone();
        let started = started.clone();
        let max = plan.requests;
        tasks.push(tokio::spawn(async move {
            client(&target, via, &started, max, deadline).await
        }));
    }
    let mut out = Outcome::default();
    for t in tasks {
        match t.await {
            Ok(o) => out.absorb(o),
            Err(e) => out.fail("client task".into(), format!("client task failed: {e}")),
        }
    }
    out
}

fn chat_body(model: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"Why would an app want retries and a second provider?"}}],"max_tokens":64}}"#
    ))
}

async fn client(
    target: &Target,
    via: Via,
    started: &AtomicU64,
    max: u64,
    deadline: Instant,
) -> Outcome {
    let routed = chat_body(ROUTE_MODEL);
    let (a, b) = (chat_body(MODEL_A), chat_body(MODEL_B));
    let mut out = Outcome::default();
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut transport_errors = 0u32;
    while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max {
        out.requests += 1;
        let body = match via {
            Via::Proxy => routed.clone(),
            Via::Direct if rand::random::<bool>() => a.clone(),
            Via::Direct => b.clone(),
        };
        let t0 = Instant::now();
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(target.addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    out.fail("transport".into(), format!("{e:#}"));
                    transport_errors += 1;
                    if transport_errors >= MAX_CONSECUTIVE_TRANSPORT_ERRORS {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let req = match target.post_json("/v1/chat/completions", body) {
            Ok(r) => r,
            Err(e) => {
                out.fail("client".into(), format!("{e:#}"));
                continue;
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, c.exchange(req, &mut buf)).await {
            Ok(Ok(status)) => {
                transport_errors = 0;
                out.latencies.push(t0.elapsed());
                if status == StatusCode::OK && contains(&buf, EXPECT) {
                    out.ok += 1;
                } else {
                    let snippet: String = String::from_utf8_lossy(&buf).chars().take(160).collect();
                    let reason = if status == StatusCode::OK {
                        "incomplete 200".to_string()
                    } else {
                        format!("status {}", status.as_u16())
                    };
                    out.fail(reason, format!("{status}: {snippet}"));
                }
            }
            Ok(Err(e)) => {
                out.latencies.push(t0.elapsed());
                out.fail("transport".into(), e);
                transport_errors += 1;
                conn = None;
            }
            Err(_) => {
                out.latencies.push(t0.elapsed());
                out.fail(
                    "timeout".into(),
                    format!("no complete answer within {REQUEST_TIMEOUT:?}"),
                );
                transport_errors += 1;
                conn = None;
            }
        }
        if transport_errors >= MAX_CONSECUTIVE_TRANSPORT_ERRORS {
            break;
        }
    }
    out
}

/// One series of the Prometheus text format.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Parses the Prometheus text exposition format (comments skipped).
pub(crate) fn parse_metrics(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = match line.rsplit_once(' ') {
            Some(v) => v,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').unwrap_or(rest))),
            None => (name_labels, BTreeMap::new()),
        };
        out.push(Series {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// `a="x",b="y\"z"` → the pairs.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let key = key.trim_start_matches(',').trim();
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.to_string(), value);
        rest = &after[end..];
    }
    out
}

fn backend_label(s: &Series) -> String {
    let get = |k: &str| s.labels.get(k).map_or("?", String::as_str);
    format!("{}/{}", get("provider"), get("model"))
}

pub(crate) async fn fetch_metrics(metrics: SocketAddr) -> anyhow::Result<Vec<Series>> {
    let (status, body) = one_shot(metrics, Method::GET, "/metrics", None).await?;
    if status != StatusCode::OK {
        bail!("GET /metrics on the proxy: status {status}");
    }
    Ok(parse_metrics(&String::from_utf8_lossy(&body)))
}

async fn proxy_metrics(metrics: SocketAddr) -> anyhow::Result<MetricsSummary> {
    let mut m = MetricsSummary::default();
    for s in fetch_metrics(metrics).await? {
        match s.name.as_str() {
            "llmesh_retries_total" => {
                let reason = s.labels.get("reason").cloned().unwrap_or_default();
                *m.retries.entry(reason).or_insert(0.0) += s.value;
            }
            "llmesh_retry_budget_exhausted_total" => m.budget_exhausted += s.value,
            "llmesh_circuit_breaker_state" => {
                m.breaker_end.insert(backend_label(&s), s.value as i64);
            }
            "llmesh_attempts_total" => {
                let outcome = s.labels.get("outcome").cloned().unwrap_or_default();
                *m.attempts
                    .entry((backend_label(&s), outcome))
                    .or_insert(0.0) += s.value;
            }
            _ => {}
        }
    }
    Ok(m)
}

/// Samples `llmesh_circuit_breaker_state` until `done`; returns the number
/// of samples and, per backend, how many saw it closed, open, half-open.
async fn sample_breakers(
    metrics: SocketAddr,
    done: &AtomicBool,
) -> (u32, BTreeMap<String, [u32; 3]>) {
    let mut counts: BTreeMap<String, [u32; 3]> = BTreeMap::new();
    let mut samples = 0u32;
    // Bounded by the scenario's own bound (plus slack) even if `done`
    // were never set.
    let end = Instant::now() + SCENARIO_TIME + REQUEST_TIMEOUT;
    while !done.load(Ordering::Relaxed) && Instant::now() < end {
        tokio::time::sleep(SAMPLE_EVERY).await;
        if done.load(Ordering::Relaxed) {
            break;
        }
        let Ok(series) = fetch_metrics(metrics).await else {
            continue;
        };
        samples += 1;
        for s in series
            .iter()
            .filter(|s| s.name == "llmesh_circuit_breaker_state")
        {
            let state = (s.value as usize).min(2);
            counts.entry(backend_label(s)).or_insert([0; 3])[state] += 1;
        }
    }
    (samples, counts)
}

fn state_name(v: i64) -> &'static str {
    match v {
        0 => "closed",
        1 => "open",
        2 => "half-open",
        _ => "?",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn markdown(plan: &FaultPlan, outcomes: &[Outcome], wall: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Reliability under upstream failures (`llmesh-bench --faults`)\n"
    );
    let _ = writeln!(
        s,
        "Route `{ROUTE_MODEL}` → `primary/{MODEL_A}` and `secondary/{MODEL_B}` (weight 1 each), \
         `retries: {{attempts: 2, backoffBase: 5ms, backoffMax: 50ms}}`, \
         `circuitBreaker: {{consecutiveFailures: 5, failurePercent: 50, minRequests: 20, window: 10s, openFor: 2s}}`; \
         both providers are one llmesh-mock, every answer {UPSTREAM_LATENCY_MS} ms late. \
         {} requests per scenario, {} clients in flight; a fresh proxy for each proxied scenario.\n",
        plan.requests, plan.clients
    );
    let _ = writeln!(
        s,
        "| scenario | path | requests | success % | p50 ms | p99 ms | upstream calls per request |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for (sc, o) in SCENARIOS.iter().zip(outcomes) {
        let pct = if o.requests == 0 {
            0.0
        } else {
            o.ok as f64 * 100.0 / o.requests as f64
        };
        let per = if o.requests == 0 {
            0.0
        } else {
            o.upstream_calls as f64 / o.requests as f64
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.3} |",
            sc.name,
            sc.via.label(),
            o.requests,
            pct,
            ms(percentile(&o.latencies, 50.0)),
            ms(percentile(&o.latencies, 99.0)),
            per
        );
    }
    let _ = writeln!(
        s,
        "\nSuccess: HTTP 200 with a complete body. Latency: until the whole answer, failed answers \
         included. Upstream calls: the mock's request counter over the scenario.\n"
    );
    for (sc, o) in SCENARIOS.iter().zip(outcomes) {
        if o.failures.is_empty() {
            continue;
        }
        let reasons: Vec<String> = o
            .failures
            .iter()
            .map(|(k, n)| format!("{k} × {n}"))
            .collect();
        let _ = writeln!(
            s,
            "- failures, {} via {}: {}; e.g. `{}`",
            sc.name,
            sc.via.label(),
            reasons.join(", "),
            o.messages
                .first()
                .map(|m| m.replace('`', "'"))
                .unwrap_or_default()
        );
    }

    let _ = writeln!(
        s,
        "\n#### The proxy's resilience metrics, totals per scenario\n"
    );
    let _ = writeln!(
        s,
        "| scenario | llmesh_retries_total | llmesh_retry_budget_exhausted_total | llmesh_circuit_breaker_state at the end | breaker state, sampled every {} ms | llmesh_attempts_total |",
        SAMPLE_EVERY.as_millis()
    );
    let _ = writeln!(s, "|---|---:|---:|---|---|---|");
    for (sc, o) in SCENARIOS.iter().zip(outcomes) {
        let Some(m) = &o.metrics else { continue };
        let total: f64 = m.retries.values().sum();
        let retries = if m.retries.is_empty() {
            "0".to_string()
        } else {
            let by: Vec<String> = m.retries.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("{total} ({})", by.join(", "))
        };
        let end: Vec<String> = m
            .breaker_end
            .iter()
            .map(|(b, v)| format!("{b}: {} ({v})", state_name(*v)))
            .collect();
        let sampled: Vec<String> = m
            .breaker_samples
            .iter()
            .map(|(b, [c, op, h])| {
                let n = f64::from((c + op + h).max(1));
                format!(
                    "{b}: closed {:.0}%, open {:.0}%, half-open {:.0}%",
                    f64::from(*c) * 100.0 / n,
                    f64::from(*op) * 100.0 / n,
                    f64::from(*h) * 100.0 / n
                )
            })
            .collect();
        let attempts: Vec<String> = m
            .attempts
            .iter()
            .map(|((b, outcome), v)| format!("{b} {outcome} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            sc.name,
            retries,
            m.budget_exhausted,
            if end.is_empty() {
                "—".to_string()
            } else {
                end.join("; ")
            },
            if sampled.is_empty() {
                format!("— ({} samples)", m.samples)
            } else {
                format!("{} ({} samples)", sampled.join("; "), m.samples)
            },
            attempts.join("; ")
        );
    }
    let _ = writeln!(
        s,
        "\nBreaker state: 0 closed, 1 open, 2 half-open, read from the breakers at each scrape; \
         under steady traffic half-open lasts only until the next request probes.\n\nWhole run: {:.1} s.",
        wall.as_secs_f64()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let text = "# HELP llmesh_retries_total Retries.\n\
# TYPE llmesh_retries_total counter\n\
llmesh_retries_total{namespace=\"default\",reason=\"server-error\",route=\"r\"} 12\n\
llmesh_circuit_breaker_state{model=\"model-a\",provider=\"primary\",route=\"r\"} 1\n\
llmesh_build_info{version=\"0.1.0\",odd=\"a\\\"b,c=\\\"d\"} 1\n\
llmesh_requests_in_flight 0\n";
        let series = parse_metrics(text);
        assert_eq!(series.len(), 4);
        assert_eq!(series[0].name, "llmesh_retries_total");
        assert_eq!(series[0].labels["reason"], "server-error");
        assert!((series[0].value - 12.0).abs() < f64::EPSILON);
        assert_eq!(backend_label(&series[1]), "primary/model-a");
        assert_eq!(series[2].labels["odd"], "a\"b,c=\"d");
        assert_eq!(series[2].labels["version"], "0.1.0");
        assert!(series[3].labels.is_empty());
    }

    #[test]
    fn policy_names_both_providers() {
        let y = policy_yaml(1234);
        assert!(y.contains("baseUrl: http://127.0.0.1:1234/v1"));
        assert_eq!(y.matches("kind: LLMProvider").count(), 2);
        assert!(y.contains("{provider: secondary, model: model-b}"));
    }
}
