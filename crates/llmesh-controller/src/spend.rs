//! Spend against limit: every interval the leader reads each accepted
//! `LLMQuota`'s usage from the shared quota store (the Redis the sidecars
//! count in), writes the limit closest to being reached into `status`
//! (`limit`, `spent`, `remaining`, `windowResetsAt`, the columns of
//! `kubectl get llmquota`) and raises an Event when a limit crosses one of
//! the quota's `alertThresholds`.
//!
//! - Status is patched only when the text changes.
//! - Each threshold raises one Event per window (per hour for windows
//!   shorter than an hour and for concurrency). The claim lives in Redis
//!   (`SET NX`, expiring with the window), so a restart or a new leader
//!   does not repeat it.
//! - With Redis unreachable a pass stops at the first failed read: the
//!   status keeps its last figures, the failure is logged (once per
//!   outage) and counted, and the next interval tries again.
//!
//! With the `memory` store there is no shared count to read (each sidecar
//! counts alone), so nothing here runs.

mod report;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::api::DynamicObject;
use kube::Client;
use llmesh_api::LLMQuotaSpec;
use llmesh_policy::Quota;
use llmesh_quota::spend::{claim_alert, read_spend, unclaim_alert, QuotaSpend};
use llmesh_quota::{unix_ms, Rule};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

pub use self::report::{alert_note, status, SpendStatus};
use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::writer::{
    create_event, object_key as uid_key, object_name, patch_status_counted, EventNote,
};

/// `reason` of threshold Events.
pub const REASON_THRESHOLD: &str = "QuotaThresholdReached";

/// Longest wait for one quota's reading: past it the pass stops and the
/// next interval tries again.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the sidecars keep their quota counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum QuotaStore {
    /// Each sidecar counts in its own memory: no shared figure exists, so
    /// spend is not written.
    #[default]
    Memory,
    /// A Redis URL shared by the sidecars (`redis://host:port/db`).
    Redis(String),
}

impl FromStr for QuotaStore {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "memory" => Ok(QuotaStore::Memory),
            url if ["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|s| url.starts_with(s)) =>
            {
                Ok(QuotaStore::Redis(url.to_string()))
            }
            other => Err(format!(
                "{other:?}: expected `memory` or a redis:// URL (the sidecars' quota store)"
            )),
        }
    }
}

/// Settings of the spend readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendConfig {
    /// The sidecars' quota store.
    pub store: QuotaStore,
    /// Time between two readings of every quota.
    pub interval: Duration,
}

impl Default for SpendConfig {
    fn default() -> Self {
        SpendConfig {
            store: QuotaStore::Memory,
            interval: Duration::from_secs(15),
        }
    }
}

/// The objects to read: accepted `LLMQuota`s, as last judged.
pub type Quotas = Arc<Vec<Arc<DynamicObject>>>;

/// A lazy connection to `url`: a Redis down at start-up is only a failed
/// reading later.
pub fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, cfg)
}

/// What the spend loop needs besides its inputs.
pub struct Spend {
    /// Writes status and Events.
    pub client: Client,
    /// `reportingInstance` of the Events.
    pub identity: String,
    /// The shared store.
    pub conn: ConnectionManager,
    /// Time between passes.
    pub interval: Duration,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// What was last written to a quota's status.
struct Written {
    /// The object's resourceVersion when it was read.
    before: Option<String>,
    /// The fields written.
    status: Value,
}

/// Runs a pass every interval while this replica leads, until `shutdown`
/// flips.
pub async fn run(
    mut s: Spend,
    quotas: watch::Receiver<Quotas>,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut written: HashMap<String, Written> = HashMap::new();
    let mut reachable = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if !leadership.is_leader() {
            continue;
        }
        let list = quotas.borrow().clone();
        let present: HashSet<String> = list.iter().map(|o| uid_key(o)).collect();
        written.retain(|k, _| present.contains(k));
        tokio::select! {
            _ = pass(&mut s, &list, &leadership, &mut written, &mut reachable) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// The compiled rule of an accepted quota (the sidecars' own compile).
fn rule_of(o: &DynamicObject) -> Option<Rule> {
    let spec: LLMQuotaSpec = serde_json::from_value(o.data.get("spec")?.clone()).ok()?;
    Some(Rule::from_quota(&Quota {
        name: o.metadata.name.clone()?,
        namespace: o.metadata.namespace.clone()?,
        spec,
    }))
}

/// One reading of every quota; stops at the first failed read.
async fn pass(
    s: &mut Spend,
    list: &[Arc<DynamicObject>],
    leader: &Leadership,
    written: &mut HashMap<String, Written>,
    reachable: &mut bool,
) {
    for o in list {
        let Some(rule) = rule_of(o) else { continue };
        let now_ms = unix_ms(SystemTime::now());
        let read = tokio::time::timeout(READ_TIMEOUT, read_spend(&mut s.conn, &rule, now_ms)).await;
        let spend = match read {
            Ok(Ok(spend)) => spend,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {READ_TIMEOUT:?}"),
                };
                s.metrics.spend_reads.with_label_values(&["failure"]).inc();
                if std::mem::replace(reachable, false) {
                    tracing::warn!(
                        resource = object_name("LLMQuota", o),
                        error,
                        "quota store unreachable: LLMQuota spend keeps its last figures; trying again every interval"
                    );
                } else {
                    tracing::debug!(
                        resource = object_name("LLMQuota", o),
                        error,
                        "quota store still unreachable"
                    );
                }
                return;
            }
        };
        s.metrics.spend_reads.with_label_values(&["success"]).inc();
        if !std::mem::replace(reachable, true) {
            tracing::info!("quota store reachable again: LLMQuota spend is current again");
        }
        if !leader.is_leader() {
            return;
        }
        write_status(s, o, &rule, &spend, written).await;
        alerts(s, o, &rule, &spend, now_ms, leader).await;
    }
}

/// Patches the spend fields when they say something new.
async fn write_status(
    s: &Spend,
    o: &DynamicObject,
    rule: &Rule,
    spend: &QuotaSpend,
    written: &mut HashMap<String, Written>,
) {
    let Some(want) = report::status(rule, spend) else {
        return;
    };
    let key = uid_key(o);
    let rv = o.metadata.resource_version.clone();
    let current = match written.get(&key) {
        // The watch has not delivered our own patch yet.
        Some(w) if w.before == rv => Some(&w.status),
        _ => o.data.get("status"),
    };
    if want.matches(current) {
        return;
    }
    let fields = want.to_json();
    let patched = patch_status_counted(
        &s.client,
        &s.metrics,
        "LLMQuota",
        o,
        &json!({ "status": fields }),
        "the spend status patch",
    )
    .await;
    if patched {
        tracing::debug!(
            resource = object_name("LLMQuota", o),
            limit = want.limit,
            spent = want.spent,
            "spend updated"
        );
        written.insert(
            key,
            Written {
                before: rv,
                status: fields,
            },
        );
    }
}

/// One Event per limit whose highest reached threshold is not yet claimed
/// in this period; the lower thresholds reached are claimed with it, so a
/// jump from 0 to 100% says "100%" once rather than "80%" then "100%".
async fn alerts(
    s: &mut Spend,
    o: &DynamicObject,
    rule: &Rule,
    spend: &QuotaSpend,
    now_ms: u64,
    leader: &Leadership,
) {
    for l in &spend.limits {
        let reached: Vec<u32> = rule
            .thresholds
            .iter()
            .copied()
            .filter(|t| l.reached(*t))
            .collect();
        let Some(&top) = reached.last() else { continue };
        match claim_alert(&mut s.conn, rule, l.name, top, now_ms).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!(resource = object_name("LLMQuota", o), error = %e, "could not claim a quota alert; next interval");
                return;
            }
        }
        if !leader.is_leader() {
            let _ = unclaim_alert(&mut s.conn, rule, l.name, top, now_ms).await;
            return;
        }
        let type_ = if top >= 100 { "Warning" } else { "Normal" };
        let note = report::alert_note(rule, l, top);
        let result = create_event(
            &s.client,
            &s.identity,
            "LLMQuota",
            o,
            &EventNote {
                type_,
                reason: REASON_THRESHOLD,
                action: "MeasureSpend",
                note: &note,
            },
        )
        .await;
        let label = if result.is_ok() { "success" } else { "failure" };
        s.metrics
            .quota_alerts
            .with_label_values(&[type_, label])
            .inc();
        match result {
            Ok(()) => {
                tracing::info!(
                    resource = object_name("LLMQuota", o),
                    limit = l.name.as_str(),
                    threshold = top,
                    "{note}"
                );
                for &t in &reached[..reached.len() - 1] {
                    let _ = claim_alert(&mut s.conn, rule, l.name, t, now_ms).await;
                }
            }
            Err(e) => {
                tracing::warn!(resource = object_name("LLMQuota", o), error = %e, "could not create the threshold event; will retry");
                let _ = unclaim_alert(&mut s.conn, rule, l.name, top, now_ms).await;
            }
        }
    }
}
