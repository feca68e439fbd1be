//! The controller's Prometheus metrics.

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Metric families, registered once.
pub struct Metrics {
    registry: Registry,
    /// `llmesh_controller_leader`: 1 while this replica holds the Lease.
    pub leader: IntGauge,
    /// `llmesh_controller_status_patches_total{kind,result}`.
    pub status_patches: IntCounterVec,
    /// `llmesh_controller_events_total{kind,result}`.
    pub events: IntCounterVec,
    /// `llmesh_controller_rejected_resources{kind}`: objects whose
    /// `Accepted` is `False` at the last evaluation.
    pub rejected: IntGaugeVec,
    /// `llmesh_controller_evaluations_total`: full evaluations of the
    /// watched objects.
    pub evaluations: prometheus::IntCounter,
    /// `llmesh_controller_quota_spend_reads_total{result}`: readings of an
    /// LLMQuota's usage from the shared quota store.
    pub spend_reads: IntCounterVec,
    /// `llmesh_controller_quota_alerts_total{type,result}`: threshold
    /// Events on LLMQuota objects.
    pub quota_alerts: IntCounterVec,
    /// `llmesh_controller_canary_weight{namespace,route}`: percent of
    /// requests the canary's candidate gets.
    pub canary_weight: IntGaugeVec,
    /// `llmesh_controller_canary_moves_total{phase}`: canary moves, by the
    /// phase moved to.
    pub canary_moves: IntCounterVec,
    /// `llmesh_probe_runs_total{namespace,route,provider,model,result}`:
    /// runs of a route's golden prompts against one backend.
    pub probe_runs: IntCounterVec,
    /// `llmesh_probe_results_total{namespace,route,provider,model,probe,result}`:
    /// each golden prompt's verdict.
    pub probe_results: IntCounterVec,
    /// `llmesh_probe_passing{namespace,route,provider,model}`: 1 while
    /// every probe passed at the backend's last run, 0 while one failed.
    pub probe_passing: IntGaugeVec,
    /// `llmesh_probe_duration_seconds{namespace,route,provider,model}`.
    pub probe_duration: HistogramVec,
    /// `llmesh_probe_tokens_total{namespace,route,provider,model,type,traffic="probe"}`.
    pub probe_tokens: IntCounterVec,
    /// `llmesh_probe_cost_usd_total{namespace,route,provider,model,traffic="probe"}`.
    pub probe_cost: CounterVec,
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let leader = IntGauge::new(
            "llmesh_controller_leader",
            "1 while this replica holds the leader Lease and may write status and events.",
        )?;
        let status_patches = IntCounterVec::new(
            Opts::new(
                "llmesh_controller_status_patches_total",
                "Status subresource patches sent, by kind and result (success, failure).",
            ),
            &["kind", "result"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "llmesh_controller_events_total",
                "Warning Events created for rejected objects, by kind and result.",
            ),
            &["kind", "result"],
        )?;
        let rejected = IntGaugeVec::new(
            Opts::new(
                "llmesh_controller_rejected_resources",
                "Objects whose Accepted condition is False, by kind.",
            ),
            &["kind"],
        )?;
        let evaluations = prometheus::IntCounter::new(
            "llmesh_controller_evaluations_total",
            "Evaluations of every watched object (one per batch of changes).",
        )?;
        let spend_reads = IntCounterVec::new(
            Opts::new(
                "llmesh_controller_quota_spend_reads_total",
                "Readings of an LLMQuota's current usage from the shared quota store, by result (success, failure).",
            ),
            &["result"],
        )?;
        let quota_alerts = IntCounterVec::new(
            Opts::new(
                "llmesh_controller_quota_alerts_total",
                "Events raised on LLMQuota objects for a crossed alert threshold, by type (Normal below 100%, Warning from 100%) and result.",
            ),
            &["type", "result"],
        )?;
        let canary_weight = IntGaugeVec::new(
            Opts::new(
                "llmesh_controller_canary_weight",
                "Percent of a route's requests its canary's candidate gets (status.canary.weight).",
            ),
            &["namespace", "route"],
        )?;
        let canary_moves = IntCounterVec::new(
            Opts::new(
                "llmesh_controller_canary_moves_total",
                "Canary moves (started, advanced, paused, resumed, promoted, rolled back, aborted), by the phase moved to.",
            ),
            &["phase"],
        )?;
        let backend = ["namespace", "route", "provider", "model"];
        let probe_runs = IntCounterVec::new(
            Opts::new(
                "llmesh_probe_runs_total",
                "Runs of a route's golden prompts (spec.probes) against one backend, by result (pass, fail, error: the probes could not be sent, skipped_budget: the route's maxCostPerDay is spent).",
            ),
            &["namespace", "route", "provider", "model", "result"],
        )?;
        let probe_results = IntCounterVec::new(
            Opts::new(
                "llmesh_probe_results_total",
                "Verdicts of each golden prompt on a backend, by probe and result (pass, fail).",
            ),
            &["namespace", "route", "provider", "model", "probe", "result"],
        )?;
        let probe_passing = IntGaugeVec::new(
            Opts::new(
                "llmesh_probe_passing",
                "1 while every golden prompt passed on the backend at its last run, 0 while one failed (the ProbesPassing condition).",
            ),
            &backend,
        )?;
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "llmesh_probe_duration_seconds",
                "Time to the whole answer of one golden prompt, through the prober's sidecar.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            &backend,
        )?;
        let probe_tokens = IntCounterVec::new(
            Opts::new(
                "llmesh_probe_tokens_total",
                "Tokens of golden-prompt calls (traffic=\"probe\"), accounted to the route's namespace, by type (input, output).",
            )
            .const_label("traffic", "probe"),
            &["namespace", "route", "provider", "model", "type"],
        )?;
        let probe_cost = CounterVec::new(
            Opts::new(
                "llmesh_probe_cost_usd_total",
                "Cost in USD of golden-prompt calls (traffic=\"probe\"), accounted to the route's namespace, from the LLMProvider's prices.",
            )
            .const_label("traffic", "probe"),
            &backend,
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "llmesh_build_info",
                "Build of the running controller; always 1.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(status_patches.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(evaluations.clone()))?;
        registry.register(Box::new(spend_reads.clone()))?;
        registry.register(Box::new(quota_alerts.clone()))?;
        registry.register(Box::new(canary_weight.clone()))?;
        registry.register(Box::new(canary_moves.clone()))?;
        registry.register(Box::new(probe_runs.clone()))?;
        registry.register(Box::new(probe_results.clone()))?;
        registry.register(Box::new(probe_passing.clone()))?;
        registry.register(Box::new(probe_duration.clone()))?;
        registry.register(Box::new(probe_tokens.clone()))?;
        registry.register(Box::new(probe_cost.clone()))?;
        registry.register(Box::new(build_info))?;
        // Every series exists from the start, so rate() and alerts see 0.
        for (kind, _) in llmesh_kube::KINDS {
            for result in ["success", "failure"] {
                status_patches.with_label_values(&[kind, result]);
                events.with_label_values(&[kind, result]);
            }
            rejected.with_label_values(&[kind]);
        }
        for phase in ["Progressing", "Paused", "Promoted", "RolledBack", "Aborted"] {
            canary_moves.with_label_values(&[phase]);
        }
        for result in ["success", "failure"] {
            spend_reads.with_label_values(&[result]);
            for type_ in ["Normal", "Warning"] {
                quota_alerts.with_label_values(&[type_, result]);
            }
        }
        Ok(Metrics {
            registry,
            leader,
            status_patches,
            events,
            rejected,
            evaluations,
            spend_reads,
            quota_alerts,
            canary_weight,
            canary_moves,
            probe_runs,
            probe_results,
            probe_passing,
            probe_duration,
            probe_tokens,
            probe_cost,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
