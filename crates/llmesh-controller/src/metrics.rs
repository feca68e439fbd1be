//! The controller's Prometheus metrics.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

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
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
