//! Golden prompts (`LLMRoute.spec.probes`): the leader sends each route's
//! prompts to every backend of the route (its own, its fallbacks', the
//! mirror's and the canary's candidate) on the route's interval, checks the answers, and
//! writes one `ProbesPassing` condition per backend in `status.backends`,
//! with an Event when a backend's verdict changes.
//!
//! The prompts go through a sidecar started in this process for the one
//! backend (the route's settings, pinned to it, without its fallbacks,
//! cache, mirror or canary): the sidecar's own credential path (the
//! controller's `--probe-secrets-dir`, environment and files) and its own
//! translation to the backend's API. Their tokens and cost are counted
//! with `traffic="probe"`, in the route's namespace, and stop for the day
//! at the route's `maxCostPerDay`.
//!
//! Statuses, Events, metrics and logs name the probe and the failed check,
//! never a prompt's or an answer's text.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::DynamicObject;
use kube::Client;
use llmesh_api::{
    LLMRouteSpec, MirrorBackend, ResourceKind, RouteBackendStatus, API_VERSION,
    CONDITION_PROBES_PASSING, REASON_PROBES_FAILED, REASON_PROBES_PASSED, REASON_PROBE_ERROR,
};
use llmesh_policy::probes::{self, ProbeSet};
use llmesh_proxy::{Identity, Proxy, ProxyConfig};
use prometheus::core::Collector;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::status::{truncate, MAX_MESSAGE};
use crate::watch::Objects;
use crate::writer::{object_key, object_name, patch_status_counted, raise_event, EventNote};

/// Largest answer read from the prober's sidecar.
const MAX_ANSWER: usize = 8 << 20;

/// Settings of the prober.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Where the prober's sidecar reads `secretKeyRef` credentials
    /// (`<dir>/<secret>/<key>`), as the injected sidecar does.
    pub secrets_dir: PathBuf,
    /// Extra CA bundle for the backends' TLS (the sidecar's `--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// How often the loop looks for routes whose interval is up.
    pub tick: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            secrets_dir: PathBuf::from(llmesh_policy::DEFAULT_SECRETS_DIR),
            ca_file: None,
            tick: Duration::from_secs(1),
        }
    }
}

/// What the prober reads from each evaluation: the accepted routes with
/// `spec.probes`, and every watched object (their providers).
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Accepted `LLMRoute`s with `spec.probes`.
    pub routes: Vec<Arc<DynamicObject>>,
    /// Everything watched.
    pub objects: Objects,
}

/// The prober's feed.
pub type Feed = Arc<Input>;

/// What the loop needs besides its inputs.
pub struct Prober {
    /// Writes status and Events.
    pub client: Client,
    /// `reportingInstance` of the Events, and the pod of the prober's
    /// sidecar identity.
    pub identity: String,
    /// Settings.
    pub config: ProbeConfig,
    /// The platform namespace, whose providers serve every namespace.
    pub platform_namespace: Option<String>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The verdict of one run against one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// `ProbesPassed`, `ProbesFailed` or `ProbeError`.
    pub reason: &'static str,
    /// For people: the failed probes and checks.
    pub message: String,
}

/// What a run against one backend found and spent.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    verdict: Verdict,
    cost: f64,
    input_tokens: u64,
    output_tokens: u64,
}

/// What the prober keeps per route.
struct RouteState {
    generation: Option<i64>,
    /// The spec and its probe set at `generation` (built once, not on
    /// every tick); `None` when it cannot be built.
    set: Option<Arc<(LLMRouteSpec, ProbeSet)>>,
    next_due: Instant,
    /// Days since the epoch (UTC) of `spent`.
    day: i64,
    spent: f64,
    /// The day the budget Event was raised.
    budget_noted: Option<i64>,
    /// The entries last written, by backend key.
    written: Vec<RouteBackendStatus>,
    /// Label values of its `llmesh_probe_passing` series.
    gauged: Vec<[String; 4]>,
    /// Verdicts of a run whose status patch failed: written again at the
    /// next tick, without probing again (probes cost money).
    unwritten: Option<Unwritten>,
}

/// What a run has to write: the `status.backends` entries, and the
/// changed verdicts to raise Events for once they are written.
struct Unwritten {
    entries: Vec<RouteBackendStatus>,
    changes: Vec<(String, Verdict)>,
}

/// Removes the `llmesh_probe_passing` series of `labels`.
fn unset(m: &Metrics, labels: &[[String; 4]]) {
    for l in labels {
        let l: Vec<&str> = l.iter().map(String::as_str).collect();
        let _ = m.probe_passing.remove_label_values(&l);
    }
}

/// Routes probed at the same time; the others wait for a slot.
const CONCURRENT_ROUTES: usize = 4;

/// Runs each route's probes when its interval is up, while this replica
/// leads, until `shutdown` flips. Each route runs on its own schedule, up
/// to [`CONCURRENT_ROUTES`] at once, so a slow backend delays only its own
/// route.
pub async fn run(
    p: Prober,
    feed: watch::Receiver<Feed>,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    let p = Arc::new(p);
    let http = HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new());
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ROUTES));
    let mut tick = tokio::time::interval(p.config.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut states: HashMap<String, RouteState> = HashMap::new();
    let mut running: tokio::task::JoinSet<(String, RouteState)> = tokio::task::JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(done) = running.join_next() => {
                if let Ok((key, st)) = done {
                    in_flight.remove(&key);
                    if leadership.is_leader() {
                        states.insert(key, st);
                    } else {
                        unset(&p.metrics, &st.gauged);
                    }
                }
                continue;
            }
            _ = shutdown.changed() => break,
        }
        let leader = leadership.is_leader();
        if !leader {
            if was_leader {
                // The new leader's verdicts are the current ones: a
                // standby exports none, or a stale one would page.
                for st in states.values() {
                    unset(&p.metrics, &st.gauged);
                }
                states.clear();
            }
            was_leader = false;
            continue;
        }
        if !was_leader {
            // A new leader runs every route at once: the last results
            // may be a lease duration old, or from a leader that failed.
            states.clear();
            was_leader = true;
        }
        let input = feed.borrow().clone();
        let present: HashSet<String> = input.routes.iter().map(|r| object_key(r)).collect();
        states.retain(|k, st| {
            let keep = present.contains(k);
            if !keep {
                unset(&p.metrics, &st.gauged);
            }
            keep
        });
        let now = Instant::now();
        for route in &input.routes {
            let key = object_key(route);
            if in_flight.contains(&key) {
                continue;
            }
            let generation = route.metadata.generation;
            let st = states.entry(key.clone()).or_insert_with(|| RouteState {
                generation,
                set: probe_set(route).map(Arc::new),
                next_due: now,
                day: 0,
                spent: 0.0,
                budget_noted: None,
                written: watched_entries(route),
                gauged: Vec::new(),
                unwritten: None,
            });
            if st.generation != generation {
                // An edited spec is probed at once.
                st.generation = generation;
                st.set = probe_set(route).map(Arc::new);
                st.next_due = now;
            }
            if st.unwritten.is_none() && (now < st.next_due || st.set.is_none()) {
                continue;
            }
            let Some(mut st) = states.remove(&key) else {
                continue;
            };
            in_flight.insert(key.clone());
            let (p, http, input, route) = (p.clone(), http.clone(), input.clone(), route.clone());
            let (slots, leadership) = (slots.clone(), leadership.clone());
            running.spawn(async move {
                // Never closed: acquire fails only on a closed semaphore.
                let _slot = slots.acquire_owned().await;
                check(&p, &http, &input, &route, &mut st, &leadership).await;
                (key, st)
            });
        }
    }
    // Runs in flight stop with the loop (dropping the set aborts them).
    running.shutdown().await;
}

type Http = HttpClient<HttpConnector, Full<Bytes>>;

/// The spec and its probe set, when the route has a valid one.
fn probe_set(route: &DynamicObject) -> Option<(LLMRouteSpec, ProbeSet)> {
    let spec: LLMRouteSpec = serde_json::from_value(route.data.get("spec")?.clone()).ok()?;
    let set = probes::build(&spec, spec.probes.as_ref()?).ok()?;
    Some((spec, set))
}

fn days_since_epoch(t: &Time) -> i64 {
    t.0.as_second().div_euclid(86_400)
}

/// `provider` or `provider/model`.
fn key_of(b: &MirrorBackend) -> String {
    llmesh_policy::canary::candidate_key(b)
}

fn entry_key(e: &RouteBackendStatus) -> String {
    key_of(&MirrorBackend {
        provider: e.provider.clone(),
        model: e.model.clone(),
    })
}

/// The route's `status.backends` as watched (none when unreadable).
pub(crate) fn watched_entries(route: &DynamicObject) -> Vec<RouteBackendStatus> {
    route
        .data
        .get("status")
        .and_then(|s| s.get("backends"))
        .and_then(|b| serde_json::from_value(b.clone()).ok())
        .unwrap_or_default()
}

/// One run of a route: a patch left from the last run first, then (when
/// its interval is up) every backend.
async fn check(
    p: &Prober,
    http: &Http,
    input: &Input,
    route: &Arc<DynamicObject>,
    state: &mut RouteState,
    leadership: &Leadership,
) {
    if let Some(u) = state.unwritten.take() {
        publish(p, route, state, u).await;
    }
    let now = Instant::now();
    if now < state.next_due {
        return;
    }
    let Some(set) = state.set.clone() else {
        return;
    };
    let (spec, set) = (&set.0, &set.1);
    let generation = route.metadata.generation;
    state.next_due = now + set.interval;
    let wall = crate::status::now();
    let today = days_since_epoch(&wall);
    if state.day != today {
        state.day = today;
        state.spent = 0.0;
    }
    let ns = route.metadata.namespace.as_deref().unwrap_or("");
    let name = route.metadata.name.as_deref().unwrap_or("");
    let before = state.written.clone();
    let mut entries = Vec::new();
    let mut changes = Vec::new();
    let mut budget_spent = false;
    let targets = probes::targets(spec);
    let gauged: Vec<[String; 4]> = targets
        .iter()
        .map(|t| {
            [
                ns.to_string(),
                name.to_string(),
                t.provider.clone(),
                t.model.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let gone: Vec<[String; 4]> = state
        .gauged
        .iter()
        .filter(|g| !gauged.contains(g))
        .cloned()
        .collect();
    unset(&p.metrics, &gone);
    state.gauged = gauged;
    for target in targets {
        let bkey = key_of(&target);
        let model = target.model.as_deref().unwrap_or("");
        let labels = [ns, name, target.provider.as_str(), model];
        let previous = before.iter().find(|e| entry_key(e) == bkey).cloned();
        if set.max_cost_per_day.is_some_and(|max| state.spent >= max) {
            budget_spent = true;
            p.metrics
                .probe_runs
                .with_label_values(&[ns, name, &target.provider, model, "skipped_budget"])
                .inc();
            entries.extend(previous);
            continue;
        }
        let run = run_backend(p, http, input, route, spec, set, &target).await;
        state.spent += run.cost;
        let m = &p.metrics;
        m.probe_cost.with_label_values(&labels).inc_by(run.cost);
        for (type_, n) in [("input", run.input_tokens), ("output", run.output_tokens)] {
            m.probe_tokens
                .with_label_values(&[ns, name, &target.provider, model, type_])
                .inc_by(n);
        }
        let result = match run.verdict.status {
            "True" => "pass",
            "False" => "fail",
            _ => "error",
        };
        m.probe_runs
            .with_label_values(&[ns, name, &target.provider, model, result])
            .inc();
        match run.verdict.status {
            "True" => m.probe_passing.with_label_values(&labels).set(1),
            "False" => m.probe_passing.with_label_values(&labels).set(0),
            // Not known: no figure, rather than the last one.
            _ => {
                let _ = m.probe_passing.remove_label_values(&labels);
            }
        }
        let old = previous.as_ref().and_then(|e| {
            e.conditions
                .iter()
                .find(|c| c.type_ == CONDITION_PROBES_PASSING)
                .cloned()
        });
        let changed = old.as_ref().is_none_or(|c| c.status != run.verdict.status);
        if changed {
            changes.push((bkey.clone(), run.verdict.clone()));
        }
        let transition = match &old {
            Some(c) if !changed => c.last_transition_time.clone(),
            _ => wall.clone(),
        };
        entries.push(RouteBackendStatus {
            provider: target.provider.clone(),
            model: target.model.clone(),
            conditions: vec![Condition {
                type_: CONDITION_PROBES_PASSING.to_string(),
                status: run.verdict.status.to_string(),
                reason: run.verdict.reason.to_string(),
                message: truncate(&run.verdict.message, MAX_MESSAGE),
                last_transition_time: transition,
                observed_generation: generation,
            }],
            last_probe_time: Some(wall.clone()),
        });
    }
    if !leadership.is_leader() {
        // Lost the Lease during the run: the new leader probes again.
        return;
    }
    publish(p, route, state, Unwritten { entries, changes }).await;
    if budget_spent && state.budget_noted != Some(today) {
        state.budget_noted = Some(today);
        let text = format!(
            "the probes spent their maxCostPerDay (${:.4} of ${:.4}); they run again on the next UTC day",
            state.spent,
            set.max_cost_per_day.unwrap_or(0.0)
        );
        tracing::info!(resource = object_name("LLMRoute", route), "{text}");
        note(p, route, "Warning", "ProbeBudgetSpent", &text).await;
    }
}

/// An Event of the prober on `route`.
async fn note(p: &Prober, route: &DynamicObject, type_: &str, reason: &str, text: &str) {
    let e = EventNote {
        type_,
        reason,
        action: "Probe",
        note: text,
    };
    raise_event(&p.client, &p.identity, &p.metrics, "LLMRoute", route, &e).await;
}

/// Writes a run's entries (when they differ from the last written) and,
/// once they are, raises the Events of the changed verdicts. A failed
/// patch keeps both for the next tick.
async fn publish(p: &Prober, route: &DynamicObject, state: &mut RouteState, u: Unwritten) {
    if u.entries != state.written {
        let patch = json!({"status": {"backends": u.entries}});
        let ok = patch_status_counted(
            &p.client,
            &p.metrics,
            "LLMRoute",
            route,
            &patch,
            "the probe status patch",
        )
        .await;
        if !ok {
            state.unwritten = Some(u);
            return;
        }
        state.written = u.entries;
    }
    for (bkey, v) in u.changes {
        let (type_, reason, text) = match v.status {
            "True" => (
                "Normal",
                "ProbesPassing",
                format!("probes pass on {bkey}: {}", v.message),
            ),
            "False" => (
                "Warning",
                "ProbesFailing",
                format!("probes fail on {bkey}: {}", v.message),
            ),
            _ => (
                "Warning",
                "ProbeError",
                format!("probes cannot run on {bkey}: {}", v.message),
            ),
        };
        tracing::info!(
            resource = object_name("LLMRoute", route),
            backend = bkey.as_str(),
            reason,
            "probe verdict changed"
        );
        note(p, route, type_, reason, &text).await;
    }
}

fn error(message: String) -> Run {
    Run {
        verdict: Verdict {
            status: "Unknown",
            reason: REASON_PROBE_ERROR,
            message,
        },
        cost: 0.0,
        input_tokens: 0,
        output_tokens: 0,
    }
}

/// The `LLMProvider` a backend of `route` names: the route's namespace's
/// own, else the platform namespace's.
fn provider_of<'a>(
    objects: &'a Objects,
    ns: &str,
    platform: Option<&str>,
    name: &str,
) -> Option<&'a DynamicObject> {
    let find = |in_ns: &str| {
        objects.iter().find(|o| {
            o.kind == ResourceKind::Provider
                && o.object.metadata.namespace.as_deref() == Some(in_ns)
                && o.object.metadata.name.as_deref() == Some(name)
        })
    };
    find(ns)
        .or_else(|| platform.and_then(find))
        .map(|o| o.object.as_ref())
}

/// The policy of the prober's sidecar: the one provider, and the route
/// pinned to the one backend, without what would answer for it or send
/// elsewhere (fallbacks, hedging, the cache, the mirror, the canary) or
/// retouch its answers (structured-output retries).
pub fn policy(
    route_name: &str,
    spec: &LLMRouteSpec,
    model: &str,
    target: &MirrorBackend,
    provider: &Value,
) -> Result<String, serde_json::Error> {
    let mut pinned = serde_json::to_value(spec)?;
    if let Some(o) = pinned.as_object_mut() {
        for field in [
            "fallbacks",
            "hedge",
            "cache",
            "mirror",
            "canary",
            "probes",
            "passthrough",
            "streamContinuation",
            "headers",
        ] {
            o.remove(field);
        }
        o.insert("models".into(), json!([model]));
        let mut backend = json!({"provider": target.provider});
        if let Some(m) = &target.model {
            backend["model"] = json!(m);
        }
        o.insert("backends".into(), json!([backend]));
        o.insert("structuredOutput".into(), json!({"mode": "ignore"}));
    }
    let docs = [
        json!({"apiVersion": API_VERSION, "kind": "LLMProvider",
            "metadata": {"name": target.provider}, "spec": provider}),
        json!({"apiVersion": API_VERSION, "kind": "LLMRoute",
            "metadata": {"name": route_name}, "spec": pinned}),
    ];
    // JSON is YAML: no scalar of the spec is re-read as YAML 1.1.
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string(&d)?);
        out.push('\n');
    }
    Ok(out)
}

/// Every probe of `set` against one backend, through a sidecar of its own.
async fn run_backend(
    p: &Prober,
    http: &Http,
    input: &Input,
    route: &DynamicObject,
    spec: &LLMRouteSpec,
    set: &ProbeSet,
    target: &MirrorBackend,
) -> Run {
    let ns = route.metadata.namespace.as_deref().unwrap_or("");
    let name = route.metadata.name.as_deref().unwrap_or("");
    let platform = p.platform_namespace.as_deref();
    let Some(provider) = provider_of(&input.objects, ns, platform, &target.provider) else {
        return error(format!("no LLMProvider {:?}", target.provider));
    };
    let provider_spec = provider.data.get("spec").cloned().unwrap_or(Value::Null);
    let text = match policy(name, spec, &set.model, target, &provider_spec) {
        Ok(t) => t,
        Err(e) => return error(format!("the probe policy cannot be written: {e}")),
    };
    let dir = match tempfile::Builder::new().prefix("llmesh-probe-").tempdir() {
        Ok(d) => d,
        Err(e) => return error(format!("no temporary directory for the probe policy: {e}")),
    };
    let file = dir.path().join("policy.yaml");
    if let Err(e) = std::fs::write(&file, text) {
        return error(format!("the probe policy cannot be written: {e}"));
    }
    let mut cfg = ProxyConfig::loopback(
        file,
        Identity {
            namespace: ns.to_string(),
            workload: "llmesh-controller".into(),
            pod: p.identity.clone(),
        },
    );
    cfg.secrets_dir = p.config.secrets_dir.clone();
    cfg.ca_file = p.config.ca_file.clone();
    let proxy = match Proxy::start(cfg).await {
        Ok(proxy) => proxy,
        Err(e) => return error(format!("the prober's sidecar refuses the backend: {e}")),
    };
    let model = target.model.as_deref().unwrap_or("");
    let histogram =
        p.metrics
            .probe_duration
            .with_label_values(&[ns, name, &target.provider, model]);
    let url = format!("http://{}/v1/chat/completions", proxy.llm_addr());
    let mut failed = Vec::new();
    for probe in &set.prompts {
        let started = Instant::now();
        let answer = tokio::time::timeout(set.timeout, post(http, &url, &probe.body)).await;
        histogram.observe(started.elapsed().as_secs_f64());
        let problems = match answer {
            Err(_) => vec![format!("no answer within {}s", set.timeout.as_secs_f64())],
            Ok(Err(e)) => vec![format!("the call failed: {e}")],
            Ok(Ok((status, body))) => probe.check(status, &body),
        };
        let result = if problems.is_empty() { "pass" } else { "fail" };
        p.metrics
            .probe_results
            .with_label_values(&[ns, name, &target.provider, model, &probe.name, result])
            .inc();
        if !problems.is_empty() {
            failed.push(format!("{}: {}", probe.name, problems.join(", ")));
        }
    }
    let sidecar = &proxy.shared().metrics;
    let cost = sum(&sidecar.cost, None);
    let input_tokens = sum(&sidecar.tokens, Some("input")) as u64;
    let output_tokens = sum(&sidecar.tokens, Some("output")) as u64;
    proxy.shutdown().await;
    let total = set.prompts.len();
    let verdict = if failed.is_empty() {
        Verdict {
            status: "True",
            reason: REASON_PROBES_PASSED,
            message: format!("{total} of {total} probes pass"),
        }
    } else {
        Verdict {
            status: "False",
            reason: REASON_PROBES_FAILED,
            message: format!(
                "{} of {total} probes fail: {}",
                failed.len(),
                failed.join("; ")
            ),
        }
    };
    Run {
        verdict,
        cost,
        input_tokens,
        output_tokens,
    }
}

/// The sum of a counter family's samples, those with `type=<only>` when
/// given.
fn sum(c: &dyn Collector, only: Option<&str>) -> f64 {
    c.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            only.is_none_or(|t| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "type" && l.value() == t)
            })
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// POSTs `body` as JSON; the status and the answer read as JSON (`null`
/// when it is not).
async fn post(http: &Http, url: &str, body: &Value) -> Result<(u16, Value), String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests;
