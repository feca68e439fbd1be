//! Progressive canaries (`LLMRoute.spec.canary`): every interval the
//! leader checks each running canary's gates and moves it, writing
//! `status.canary` (which every sidecar reads from the same watched
//! object) and an Event on each move.
//!
//! - A canary starts at its first step when the spec names a candidate the
//!   status does not, and restarts when the spec changes after a rollback
//!   or an abort.
//! - While the gates pass, a step advances once it has held for `hold`;
//!   after the last step the canary is promoted (the candidate gets every
//!   request).
//! - A failing gate pauses it (the weight holds); failing for a whole
//!   `hold` rolls it back (weight 0). Passing again resumes it.
//! - A gate that cannot be read yet (too little traffic, no probe result,
//!   Prometheus unreachable) holds the step without counting as a failure.
//! - `kubectl annotate llmroute chat llmesh.io/canary=promote|abort`
//!   overrides all of it.
//!
//! The metric gates query the Prometheus that scrapes the sidecars
//! (`--prometheus-url`): `llmesh_attempts_total` for error ratios,
//! `llmesh_attempt_first_byte_seconds` for latency and
//! `llmesh_shadow_agreement_total` for the mirror's signals, the candidate
//! against the route's own backends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use kube::Client;
use llmesh_api::{CanaryPhase, CanarySpec, CanaryStatus, LLMRouteSpec, CONDITION_PROBES_PASSING};
use llmesh_policy::canary;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::prom::Prometheus;
use crate::writer::{
    object_key as uid_key, object_name, patch_status_counted, raise_event, EventNote,
};

/// The annotation that overrides a canary: `promote` or `abort`.
pub const ANNOTATION: &str = "llmesh.io/canary";

/// Settings of the canary loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryConfig {
    /// Time between two checks of every canary.
    pub interval: Duration,
    /// Base URL of the Prometheus scraping the sidecars, for the metric
    /// gates; without it those gates hold the canary where it is.
    pub prometheus: Option<String>,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            interval: Duration::from_secs(30),
            prometheus: None,
        }
    }
}

/// Accepted `LLMRoute`s that have a `spec.canary` (or a `status.canary`
/// left from one), as last judged.
pub type Routes = Arc<Vec<Arc<DynamicObject>>>;

/// What a gate check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Every gate written passes.
    Pass,
    /// A gate cannot be read yet: the step holds, nothing counts as failed.
    Wait(String),
    /// A gate fails.
    Fail(String),
}

/// An Event to raise with a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `CanaryStarted`, `CanaryAdvanced`, ...
    pub reason: &'static str,
    /// For people.
    pub text: String,
}

/// What a check decided before the gates were read.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// Write this status (and raise the Event): a start, an override, a
    /// new generation noted.
    Write(CanaryStatus, Option<Note>),
    /// Nothing to do: a promoted, rolled back or aborted canary.
    Keep,
    /// A running canary: read its gates and [`advance`] it.
    Run(CanaryStatus),
}

fn seconds_since(t: Option<&Time>, now: &Time) -> i64 {
    t.map_or(i64::MAX, |t| now.0.as_second() - t.0.as_second())
}

fn step_message(key: &str, step: usize, steps: &[u32]) -> String {
    format!(
        "step {} of {}: {}% of requests to {key}",
        step + 1,
        steps.len(),
        steps.get(step).copied().unwrap_or(100)
    )
}

/// Where a canary stands before its gates are read: started, overridden
/// by the annotation, or running.
pub fn start(
    spec: &CanarySpec,
    generation: Option<i64>,
    annotation: Option<&str>,
    current: Option<&CanaryStatus>,
    now: &Time,
) -> Start {
    let key = canary::candidate_key(&spec.backend);
    let steps = canary::steps(spec);
    let fresh = |why: &str| {
        let status = CanaryStatus {
            phase: CanaryPhase::Progressing,
            candidate: key.clone(),
            step: 0,
            weight: steps[0],
            step_started_at: Some(now.clone()),
            failing_since: None,
            observed_generation: generation,
            message: Some(step_message(&key, 0, &steps)),
        };
        let text = format!("{why}: {}", step_message(&key, 0, &steps));
        Start::Write(
            status,
            Some(Note {
                type_: "Normal",
                reason: "CanaryStarted",
                text,
            }),
        )
    };
    let Some(cur) = current.filter(|c| c.candidate == key) else {
        return match annotation {
            Some("abort") => Start::Write(
                stopped(&key, CanaryPhase::Aborted, generation, ANNOTATION_ABORT),
                Some(aborted_note()),
            ),
            _ => fresh("canary started"),
        };
    };
    match annotation {
        Some("abort") if cur.phase != CanaryPhase::Aborted => {
            return Start::Write(
                stopped(&key, CanaryPhase::Aborted, generation, ANNOTATION_ABORT),
                Some(aborted_note()),
            );
        }
        Some("promote") if cur.phase != CanaryPhase::Promoted => {
            let mut s = stopped(
                &key,
                CanaryPhase::Promoted,
                generation,
                "promoted by the annotation llmesh.io/canary=promote",
            );
            s.weight = 100;
            s.step = u32::try_from(steps.len()).unwrap_or(u32::MAX);
            return Start::Write(
                s,
                Some(Note {
                    type_: "Normal",
                    reason: "CanaryPromoted",
                    text: format!(
                        "{key} promoted by the annotation llmesh.io/canary=promote: it gets every request"
                    ),
                }),
            );
        }
        _ => {}
    }
    let new_generation = cur.observed_generation != generation;
    match cur.phase {
        CanaryPhase::Promoted | CanaryPhase::Aborted if !new_generation => Start::Keep,
        CanaryPhase::RolledBack if !new_generation => Start::Keep,
        // Promoted stays promoted through spec edits: the next step is
        // the user's (the candidate into `backends`, the canary out).
        CanaryPhase::Promoted => {
            let mut s = cur.clone();
            s.observed_generation = generation;
            Start::Write(s, None)
        }
        // Aborted while the annotation says so.
        CanaryPhase::Aborted if annotation == Some("abort") => {
            let mut s = cur.clone();
            s.observed_generation = generation;
            Start::Write(s, None)
        }
        CanaryPhase::RolledBack | CanaryPhase::Aborted => {
            fresh("canary restarted: the spec changed")
        }
        CanaryPhase::Progressing | CanaryPhase::Paused => {
            let mut s = cur.clone();
            let last = steps.len() - 1;
            let step = usize::try_from(s.step).unwrap_or(usize::MAX).min(last);
            s.step = u32::try_from(step).unwrap_or(0);
            s.weight = steps[step];
            s.observed_generation = generation;
            Start::Run(s)
        }
    }
}

const ANNOTATION_ABORT: &str = "aborted by the annotation llmesh.io/canary=abort";

fn aborted_note() -> Note {
    Note {
        type_: "Warning",
        reason: "CanaryAborted",
        text: "canary aborted by the annotation llmesh.io/canary=abort: every request back on the route's own backends".into(),
    }
}

fn stopped(key: &str, phase: CanaryPhase, generation: Option<i64>, why: &str) -> CanaryStatus {
    CanaryStatus {
        phase,
        candidate: key.to_string(),
        step: 0,
        weight: 0,
        step_started_at: None,
        failing_since: None,
        observed_generation: generation,
        message: Some(why.to_string()),
    }
}

/// The next status of a running canary after its gates were read.
pub fn advance(
    spec: &CanarySpec,
    cur: CanaryStatus,
    gate: &Gate,
    now: &Time,
) -> (CanaryStatus, Option<Note>) {
    let key = cur.candidate.clone();
    let steps = canary::steps(spec);
    let hold = i64::try_from(canary::hold(spec).as_secs()).unwrap_or(i64::MAX);
    let step = usize::try_from(cur.step).unwrap_or(0);
    let mut next = cur.clone();
    match gate {
        Gate::Pass => {
            next.failing_since = None;
            if cur.phase == CanaryPhase::Paused {
                next.phase = CanaryPhase::Progressing;
                next.step_started_at = Some(now.clone());
                next.message = Some(step_message(&key, step, &steps));
                let text = format!("gates pass again: {}", step_message(&key, step, &steps));
                return (
                    next,
                    Some(Note {
                        type_: "Normal",
                        reason: "CanaryResumed",
                        text,
                    }),
                );
            }
            if seconds_since(cur.step_started_at.as_ref(), now) < hold {
                next.message = Some(step_message(&key, step, &steps));
                return (next, None);
            }
            if step + 1 >= steps.len() {
                next.phase = CanaryPhase::Promoted;
                next.weight = 100;
                next.step = u32::try_from(steps.len()).unwrap_or(u32::MAX);
                next.step_started_at = Some(now.clone());
                next.message = Some(format!("every step held: {key} gets every request"));
                let text = format!("canary promoted: every step held, {key} gets every request");
                return (
                    next,
                    Some(Note {
                        type_: "Normal",
                        reason: "CanaryPromoted",
                        text,
                    }),
                );
            }
            next.step = u32::try_from(step + 1).unwrap_or(u32::MAX);
            next.weight = steps[step + 1];
            next.step_started_at = Some(now.clone());
            next.message = Some(step_message(&key, step + 1, &steps));
            let text = format!("canary advanced: {}", step_message(&key, step + 1, &steps));
            (
                next,
                Some(Note {
                    type_: "Normal",
                    reason: "CanaryAdvanced",
                    text,
                }),
            )
        }
        Gate::Wait(why) => {
            next.failing_since = None;
            next.phase = CanaryPhase::Progressing;
            next.message = Some(format!(
                "{}; holding: {why}",
                step_message(&key, step, &steps)
            ));
            (next, None)
        }
        Gate::Fail(why) => {
            if cur.failing_since.is_none() {
                next.phase = CanaryPhase::Paused;
                next.failing_since = Some(now.clone());
                next.message = Some(format!("paused at {}%: {why}", cur.weight));
                let text = format!("canary paused at {}%: {why}", cur.weight);
                return (
                    next,
                    Some(Note {
                        type_: "Warning",
                        reason: "CanaryPaused",
                        text,
                    }),
                );
            }
            if seconds_since(cur.failing_since.as_ref(), now) >= hold {
                next.phase = CanaryPhase::RolledBack;
                next.weight = 0;
                next.failing_since = None;
                next.message = Some(format!("rolled back: {why}"));
                let text = format!(
                    "canary rolled back: every request back on the route's own backends; {why}"
                );
                return (
                    next,
                    Some(Note {
                        type_: "Warning",
                        reason: "CanaryRolledBack",
                        text,
                    }),
                );
            }
            next.phase = CanaryPhase::Paused;
            next.message = Some(format!("paused at {}%: {why}", cur.weight));
            (next, None)
        }
    }
}

/// A PromQL string literal.
fn lit(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The label matchers of a route's series: its name and, for a route of
/// an app namespace, that namespace (a platform route serves pods of
/// every namespace).
fn route_selector(route: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("route={},namespace={}", lit(route), lit(ns)),
        None => format!("route={}", lit(route)),
    }
}

/// The PromQL the metric gates read, for a route's series (`route`
/// matchers from [`route_selector`]) and its candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    /// The candidate's attempts in the window.
    pub candidate_attempts: String,
    /// The candidate's failed attempts.
    pub candidate_failures: String,
    /// The route's own backends' attempts.
    pub own_attempts: String,
    /// Their failed attempts.
    pub own_failures: String,
    /// The candidate's p95 time to first byte.
    pub candidate_p95: String,
    /// The route's own backends' p95 time to first byte.
    pub own_p95: String,
}

impl Queries {
    /// The queries over `window` for `route` (matchers) and the
    /// candidate `provider` with `model` (empty when it sends the
    /// requested name, as `llmesh_attempts_total` labels it).
    pub fn new(route: &str, provider: &str, model: &str, window: Duration) -> Queries {
        let w = format!("{}s", window.as_secs().max(1));
        let cand = format!("{route},provider={},model={}", lit(provider), lit(model));
        let failed = "outcome!=\"ok\",outcome!=\"hedge_cancelled\"";
        let counted = "outcome!=\"hedge_cancelled\"";
        let own = |metric: &str, extra: &str| {
            format!(
                "sum(increase({metric}{{{route},{extra}}}[{w}]) unless on(provider, model) increase({metric}{{{cand},{extra}}}[{w}]))"
            )
        };
        let p95 = |inner: String| format!("histogram_quantile(0.95, sum by (le) ({inner}))");
        let b = "llmesh_attempt_first_byte_seconds_bucket";
        Queries {
            candidate_attempts: format!(
                "sum(increase(llmesh_attempts_total{{{cand},{counted}}}[{w}]))"
            ),
            candidate_failures: format!(
                "sum(increase(llmesh_attempts_total{{{cand},{failed}}}[{w}]))"
            ),
            own_attempts: own("llmesh_attempts_total", counted),
            own_failures: own("llmesh_attempts_total", failed),
            candidate_p95: p95(format!("rate({b}{{{cand}}}[{w}])")),
            own_p95: p95(format!(
                "rate({b}{{{route}}}[{w}]) unless on(provider, model) rate({b}{{{cand}}}[{w}])"
            )),
        }
    }

    /// Share of the mirror's shadow pairs agreeing on `signal` over
    /// `window`.
    pub fn shadow_agreement(route: &str, signal: &str, window: Duration) -> String {
        let w = format!("{}s", window.as_secs().max(1));
        format!(
            "sum(increase(llmesh_shadow_agreement_total{{{route},signal={s},result=\"same\"}}[{w}])) / sum(increase(llmesh_shadow_agreement_total{{{route},signal={s}}}[{w}]))",
            s = lit(signal)
        )
    }
}

/// Signals of the mirror's comparison the shadow gate reads.
pub const SHADOW_SIGNALS: [&str; 3] = ["finish_reason", "tool", "json"];

/// The candidate's `ProbesPassing` in the route's status: `Some(true)` /
/// `Some(false)`, or `None` when it has not been probed.
fn probes_passing(route: &DynamicObject, spec: &CanarySpec) -> Option<(bool, String)> {
    let backends = crate::probe::watched_entries(route);
    let b = backends.iter().find(|b| {
        b.provider == spec.backend.provider && b.model.as_deref() == spec.backend.model.as_deref()
    })?;
    let c = b
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_PROBES_PASSING)?;
    match c.status.as_str() {
        "True" => Some((true, c.message.clone())),
        "False" => Some((false, c.message.clone())),
        _ => None,
    }
}

/// What the loop needs besides its inputs.
pub struct Canaries {
    /// Writes status and Events.
    pub client: Client,
    /// `reportingInstance` of the Events.
    pub identity: String,
    /// Settings.
    pub config: CanaryConfig,
    /// The platform namespace, whose routes serve every namespace.
    pub platform_namespace: Option<String>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// What was last written to a route's canary.
struct Written {
    before: Option<String>,
    canary: CanaryStatus,
}

/// Checks every canary each interval while this replica leads, until
/// `shutdown` flips.
pub async fn run(
    c: Canaries,
    routes: watch::Receiver<Routes>,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    let prometheus = match c.config.prometheus.as_deref().map(Prometheus::new) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            // Checked at start; kept here so a bad value never panics.
            tracing::warn!(error = %e, "the Prometheus URL is unusable; metric gates hold canaries");
            None
        }
    };
    let mut tick = tokio::time::interval(c.config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut written: HashMap<String, Written> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if !leadership.is_leader() {
            continue;
        }
        let list = routes.borrow().clone();
        let present: HashSet<String> = list.iter().map(|o| uid_key(o)).collect();
        written.retain(|k, _| present.contains(k));
        for route in list.iter() {
            if !leadership.is_leader() {
                break;
            }
            tokio::select! {
                _ = check(&c, prometheus.as_ref(), route, &mut written) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One check of one route's canary.
async fn check(
    c: &Canaries,
    prometheus: Option<&Prometheus>,
    route: &DynamicObject,
    written: &mut HashMap<String, Written>,
) {
    let Some(spec) = route
        .data
        .get("spec")
        .and_then(|s| serde_json::from_value::<LLMRouteSpec>(s.clone()).ok())
    else {
        return;
    };
    let Some(canary_spec) = &spec.canary else {
        // The canary left the spec: its progress leaves the status (and
        // `kubectl get` stops showing a phase that no longer applies).
        let stale = route
            .data
            .get("status")
            .and_then(|s| s.get("canary"))
            .is_some_and(|c| !c.is_null());
        if stale {
            let cleared = json!({"status": {"canary": null}});
            patch_status_counted(
                &c.client,
                &c.metrics,
                "LLMRoute",
                route,
                &cleared,
                "clearing the canary status",
            )
            .await;
        }
        return;
    };
    let key = uid_key(route);
    let rv = route.metadata.resource_version.clone();
    let watched: Option<CanaryStatus> = route
        .data
        .get("status")
        .and_then(|s| s.get("canary"))
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let current = match written.get(&key) {
        // The watch has not delivered our own patch yet.
        Some(w) if w.before == rv => Some(w.canary.clone()),
        _ => {
            written.remove(&key);
            watched.clone()
        }
    };
    let now = crate::status::now();
    let annotation = route
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .map(String::as_str);
    let (next, note) = match start(
        canary_spec,
        route.metadata.generation,
        annotation,
        current.as_ref(),
        &now,
    ) {
        Start::Keep => return,
        Start::Write(s, n) => (s, n),
        Start::Run(s) => {
            let gate = gates(c, prometheus, route, &spec, canary_spec).await;
            advance(canary_spec, s, &gate, &now)
        }
    };
    let ns = route.metadata.namespace.as_deref().unwrap_or("");
    let name = route.metadata.name.as_deref().unwrap_or("");
    c.metrics
        .canary_weight
        .with_label_values(&[ns, name])
        .set(i64::from(next.weight));
    if current.as_ref() == Some(&next) {
        return;
    }
    let patched = patch_status_counted(
        &c.client,
        &c.metrics,
        "LLMRoute",
        route,
        &patch(&next),
        "the canary status patch",
    )
    .await;
    if !patched {
        return;
    }
    written.insert(
        key,
        Written {
            before: rv,
            canary: next.clone(),
        },
    );
    let Some(note) = note else { return };
    tracing::info!(
        resource = object_name("LLMRoute", route),
        reason = note.reason,
        phase = next.phase.as_str(),
        weight = next.weight,
        "canary moved"
    );
    c.metrics
        .canary_moves
        .with_label_values(&[next.phase.as_str()])
        .inc();
    raise_event(
        &c.client,
        &c.identity,
        &c.metrics,
        "LLMRoute",
        route,
        &EventNote {
            type_: note.type_,
            reason: note.reason,
            action: "Canary",
            note: &note.text,
        },
    )
    .await;
}

/// `status.canary` as a merge patch: every field written, unset ones as
/// `null` so a cleared time is removed.
fn patch(s: &CanaryStatus) -> Value {
    json!({"status": {"canary": {
        "phase": s.phase.as_str(),
        "candidate": s.candidate,
        "step": s.step,
        "weight": s.weight,
        "stepStartedAt": s.step_started_at,
        "failingSince": s.failing_since,
        "observedGeneration": s.observed_generation,
        "message": s.message.as_deref().map(|m| crate::status::truncate(m, crate::status::MAX_MESSAGE)),
    }}})
}

/// Reads the gates the spec writes, the first failing one deciding.
async fn gates(
    c: &Canaries,
    prometheus: Option<&Prometheus>,
    route: &DynamicObject,
    spec: &LLMRouteSpec,
    canary_spec: &CanarySpec,
) -> Gate {
    let g = &canary_spec.gates;
    let key = canary::candidate_key(&canary_spec.backend);
    if g.probes {
        match probes_passing(route, canary_spec) {
            None => return Gate::Wait(format!("no probe results for {key} yet")),
            Some((false, why)) => return Gate::Fail(format!("probes fail on {key}: {why}")),
            Some((true, _)) => {}
        }
    }
    let metric_gates = g.max_error_ratio_increase.is_some()
        || g.max_latency_ratio.is_some()
        || g.min_shadow_agreement.is_some();
    if !metric_gates {
        return Gate::Pass;
    }
    let Some(prom) = prometheus else {
        return Gate::Wait("the metric gates need the controller's --prometheus-url".to_string());
    };
    let ns = route.metadata.namespace.as_deref();
    let ns = ns.filter(|n| c.platform_namespace.as_deref() != Some(*n));
    let sel = route_selector(route.metadata.name.as_deref().unwrap_or(""), ns);
    let window = canary::window(canary_spec);
    let q = Queries::new(
        &sel,
        &canary_spec.backend.provider,
        canary_spec.backend.model.as_deref().unwrap_or(""),
        window,
    );
    match metric_gates_of(prom, g, &q, &sel, spec, canary_spec, window).await {
        Ok(gate) => gate,
        Err(e) => Gate::Wait(e.to_string()),
    }
}

async fn metric_gates_of(
    prom: &Prometheus,
    g: &llmesh_api::CanaryGates,
    q: &Queries,
    sel: &str,
    spec: &LLMRouteSpec,
    canary_spec: &CanarySpec,
    window: Duration,
) -> Result<Gate, crate::prom::QueryError> {
    let w = llmesh_api_duration(window);
    let min = g.min_requests.unwrap_or(canary::DEFAULT_MIN_REQUESTS);
    let attempts = prom.value(&q.candidate_attempts).await?.unwrap_or(0.0);
    if attempts < f64::from(min) {
        return Ok(Gate::Wait(format!(
            "{attempts:.0} of the {min} candidate requests the gates need in the last {w}"
        )));
    }
    if let Some(max) = g.max_error_ratio_increase {
        let failures = prom.value(&q.candidate_failures).await?.unwrap_or(0.0);
        let own_attempts = prom.value(&q.own_attempts).await?.unwrap_or(0.0);
        let own_failures = prom.value(&q.own_failures).await?.unwrap_or(0.0);
        // increase() extrapolates each series on its own: a ratio of two
        // can pass 1 by a hair.
        let cand = (failures / attempts).clamp(0.0, 1.0);
        let own = if own_attempts > 0.0 {
            (own_failures / own_attempts).clamp(0.0, 1.0)
        } else {
            0.0
        };
        if cand - own > max {
            return Ok(Gate::Fail(format!(
                "error ratio {:.1}% on the candidate against {:.1}% on the route's own backends (at most {:+.1} points) over {w}",
                cand * 100.0,
                own * 100.0,
                max * 100.0
            )));
        }
    }
    if let Some(max) = g.max_latency_ratio {
        let cand = prom.value(&q.candidate_p95).await?;
        let own = prom.value(&q.own_p95).await?;
        if let (Some(cand), Some(own)) = (cand, own) {
            if own > 0.0 && cand / own > max {
                return Ok(Gate::Fail(format!(
                    "p95 time to first byte {:.0} ms on the candidate against {:.0} ms on the route's own backends (at most {max}x) over {w}",
                    cand * 1000.0,
                    own * 1000.0
                )));
            }
        }
    }
    if let Some(min_agree) = g.min_shadow_agreement {
        let mirrored = spec
            .mirror
            .as_ref()
            .is_some_and(|m| m.backend == canary_spec.backend);
        if mirrored {
            for signal in SHADOW_SIGNALS {
                let agree = prom
                    .value(&Queries::shadow_agreement(sel, signal, window))
                    .await?;
                if let Some(a) = agree.filter(|a| *a < min_agree) {
                    return Ok(Gate::Fail(format!(
                        "shadow pairs agree on {signal} {:.0}% of the time (at least {:.0}%) over {w}",
                        a * 100.0,
                        min_agree * 100.0
                    )));
                }
            }
        }
    }
    Ok(Gate::Pass)
}

/// `300s` → `5m`, for messages.
fn llmesh_api_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests;
