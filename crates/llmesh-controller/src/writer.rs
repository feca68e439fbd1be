//! Writes verdicts: a merge patch on `/status` where the object says
//! something else, and a Warning Event when it becomes rejected.
//!
//! Nothing is written unless this replica is the leader at that very
//! moment. After a patch the reflector's copy of the object lags until the
//! watch delivers the change; the status the API server returned is kept
//! until then, so a second evaluation in between neither patches again nor
//! repeats the Event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use llmesh_api::{API_VERSION, GROUP, REASON_INVALID, VERSION};
use serde_json::Value;

use crate::judge::Verdict;
use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::status::{self, Plan};

/// `reportingController` of the Events.
pub const REPORTING_CONTROLLER: &str = "llmesh.io/controller";

/// What was last written to an object.
struct Written {
    /// The object's resourceVersion when it was judged.
    before: Option<String>,
    /// The status the API server returned.
    status: Option<Value>,
}

/// Outcome of one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Patches sent and accepted.
    pub patched: usize,
    /// Writes that failed (worth another pass later).
    pub failed: usize,
    /// The pass stopped because leadership ended.
    pub stopped: bool,
}

/// Sends the writes of successive evaluations.
pub struct Writer {
    client: Client,
    identity: String,
    metrics: Arc<Metrics>,
    written: HashMap<String, Written>,
}

fn uid_key(v: &Verdict) -> String {
    let m = &v.object.metadata;
    match &m.uid {
        Some(uid) => uid.clone(),
        None => v.full_name(),
    }
}

impl Writer {
    /// A writer reporting Events as `identity`.
    pub fn new(client: Client, identity: String, metrics: Arc<Metrics>) -> Writer {
        Writer {
            client,
            identity,
            metrics,
            written: HashMap::new(),
        }
    }

    /// Brings every object's status in line with its verdict, while
    /// `leader` says so.
    pub async fn write(&mut self, verdicts: &[Verdict], leader: &Leadership) -> Pass {
        let present: HashSet<String> = verdicts.iter().map(uid_key).collect();
        self.written.retain(|k, _| present.contains(k));
        let mut pass = Pass::default();
        let now = status::now();
        for v in verdicts {
            let key = uid_key(v);
            let rv = v.object.metadata.resource_version.clone();
            let watched = v.object.data.get("status");
            let current = match self.written.get(&key) {
                // The watch has not delivered our own patch yet.
                Some(w) if w.before == rv => w.status.as_ref(),
                _ => {
                    self.written.remove(&key);
                    watched
                }
            };
            let Some(plan) = status::plan(v, current, &now) else {
                continue;
            };
            if !leader.is_leader() {
                pass.stopped = true;
                return pass;
            }
            match self.patch(v, &plan).await {
                Ok(status) => {
                    pass.patched += 1;
                    self.written.insert(key, Written { before: rv, status });
                }
                Err(e) => {
                    pass.failed += 1;
                    tracing::warn!(resource = v.full_name(), error = %e, "status patch failed; will retry");
                    continue;
                }
            }
            if let Some(note) = &plan.event {
                if !leader.is_leader() {
                    pass.stopped = true;
                    return pass;
                }
                self.event(v, note).await;
            }
        }
        pass
    }

    async fn patch(&self, v: &Verdict, plan: &Plan) -> Result<Option<Value>, kube::Error> {
        let result = patch_status(&self.client, v.kind, &v.object, &plan.patch).await;
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .status_patches
            .with_label_values(&[v.kind, label])
            .inc();
        let updated = result?;
        let accepted = v.accepted().map_or("", |c| c.status.as_str());
        tracing::info!(
            resource = v.full_name(),
            generation = v.generation(),
            accepted,
            "status updated"
        );
        Ok(updated.data.get("status").cloned())
    }

    /// A Warning Event regarding the object. A failure is logged and
    /// counted, not retried: the status holds the same message.
    async fn event(&self, v: &Verdict, note: &str) {
        let result = create_event(
            &self.client,
            &self.identity,
            v.kind,
            &v.object,
            &EventNote {
                type_: "Warning",
                reason: REASON_INVALID,
                action: "Validate",
                note,
            },
        )
        .await;
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .events
            .with_label_values(&[v.kind, label])
            .inc();
        match result {
            Ok(_) => tracing::info!(resource = v.full_name(), "Warning event: rejected"),
            Err(e) => {
                tracing::warn!(resource = v.full_name(), error = %e, "could not create the event")
            }
        }
    }
}

/// The key a loop remembers an object under: its uid, else
/// `namespace/name`.
pub fn object_key(o: &DynamicObject) -> String {
    let m = &o.metadata;
    m.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap_or("")
        )
    })
}

/// `Kind/namespace/name` of an object of `kind`, for logs.
pub fn object_name(kind: &str, o: &DynamicObject) -> String {
    format!(
        "{kind}/{}/{}",
        o.metadata.namespace.as_deref().unwrap_or(""),
        o.metadata.name.as_deref().unwrap_or("")
    )
}

/// Sends a JSON merge patch to the `/status` of `object` (of `kind`) and
/// returns the object as the API server stored it.
pub async fn patch_status(
    client: &Client,
    kind: &str,
    object: &DynamicObject,
    patch: &Value,
) -> Result<DynamicObject, kube::Error> {
    let gvk = GroupVersionKind::gvk(GROUP, VERSION, kind);
    let plural = llmesh_kube::KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("", |(_, p)| *p);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let m = &object.metadata;
    let ns = m.namespace.as_deref().unwrap_or("");
    let name = m.name.as_deref().unwrap_or("");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

/// What an Event says.
pub struct EventNote<'a> {
    /// `Normal` or `Warning`.
    pub type_: &'a str,
    /// One CamelCase word.
    pub reason: &'a str,
    /// What the controller was doing.
    pub action: &'a str,
    /// For people (cut to [`status::MAX_NOTE`]).
    pub note: &'a str,
}

/// Creates an `events.k8s.io/v1` Event regarding `object` (of `kind`),
/// reported by `identity`.
pub async fn create_event(
    client: &Client,
    identity: &str,
    kind: &str,
    object: &DynamicObject,
    e: &EventNote<'_>,
) -> Result<(), kube::Error> {
    let m = &object.metadata;
    let ns = m.namespace.clone().unwrap_or_default();
    let name = m.name.clone().unwrap_or_default();
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            // The convention of client-go and kube-rs: the object's name
            // and a unique suffix.
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(e.type_.into()),
        reason: Some(e.reason.into()),
        action: Some(e.action.into()),
        note: Some(status::truncate(e.note, status::MAX_NOTE)),
        regarding: Some(ObjectReference {
            api_version: Some(API_VERSION.into()),
            kind: Some(kind.into()),
            name: Some(name),
            namespace: Some(ns.clone()),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            ..ObjectReference::default()
        }),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(status::truncate(identity, 128)),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &event).await.map(|_| ())
}

/// [`patch_status`], counted in `llmesh_controller_status_patches_total`;
/// a failure is logged (`what` says which write) and left to the caller's
/// next pass. True when the API server took it.
pub async fn patch_status_counted(
    client: &Client,
    metrics: &Metrics,
    kind: &str,
    object: &DynamicObject,
    patch: &Value,
    what: &str,
) -> bool {
    let result = patch_status(client, kind, object, patch).await;
    let label = if result.is_ok() { "success" } else { "failure" };
    metrics
        .status_patches
        .with_label_values(&[kind, label])
        .inc();
    if let Err(e) = &result {
        tracing::warn!(resource = object_name(kind, object), error = %e, "{what} failed; the next pass retries");
    }
    result.is_ok()
}

/// [`create_event`], counted in `llmesh_controller_events_total`; a
/// failure is logged (an Event is not retried).
pub async fn raise_event(
    client: &Client,
    identity: &str,
    metrics: &Metrics,
    kind: &str,
    object: &DynamicObject,
    e: &EventNote<'_>,
) {
    let result = create_event(client, identity, kind, object, e).await;
    let label = if result.is_ok() { "success" } else { "failure" };
    metrics.events.with_label_values(&[kind, label]).inc();
    if let Err(err) = result {
        tracing::warn!(resource = object_name(kind, object), reason = e.reason, error = %err, "could not create the event");
    }
}
