//! Kubernetes Events the sidecar raises on its policy objects when it runs
//! from the cluster (`--source kubernetes`): a backend answering with
//! another model version (`ModelVersionChanged`), a provider's cloud
//! credential lost (`CredentialUnavailable`, a Warning) and obtained again
//! (`CredentialObtained`). Each sidecar reports what it saw, as
//! `reportingInstance` (its pod); the same event from one pod is raised at
//! most once a minute. Only on objects of the pod's own namespace (an
//! Event lives in the namespace of what it regards). Never a secret or
//! prompt text in a note. Creating one never delays a request: it runs on
//! its own task, and a refusal (no RBAC) is logged once at debug level.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// Who raises Events on the sidecar's behalf.
pub struct Events {
    client: kube::Client,
    namespace: String,
    pod: String,
    recent: Mutex<HashMap<String, Instant>>,
}

/// What an Event is about and says.
pub struct Note<'a> {
    /// `LLMProvider`, `LLMRoute`...
    pub kind: &'static str,
    /// The object's name.
    pub name: &'a str,
    /// The object's namespace.
    pub namespace: &'a str,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What the sidecar did or saw (`events.k8s.io` `action`).
    pub action: &'static str,
    /// The human-readable message.
    pub note: String,
}

/// The same event from one pod is not raised again within this.
const AGAIN_AFTER: Duration = Duration::from_secs(60);

impl Events {
    /// Events from pod `pod` of `namespace`.
    pub fn new(client: kube::Client, namespace: &str, pod: &str) -> Events {
        Events {
            client,
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Raises `n` in the background (see the module doc).
    pub fn raise(&self, n: Note<'_>) {
        if n.namespace != self.namespace {
            return;
        }
        let key = format!("{}/{}/{}/{}", n.kind, n.name, n.reason, n.note);
        if let Ok(mut recent) = self.recent.lock() {
            let now = crate::clock::now();
            recent.retain(|_, at| now.duration_since(*at) < AGAIN_AFTER);
            if recent.insert(key, now).is_some() {
                return;
            }
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut note = n.note;
        if note.len() > 1000 {
            note.truncate(note.floor_char_boundary(1000));
        }
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", n.name, now.as_nanosecond())),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(n.type_.into()),
            reason: Some(n.reason.into()),
            action: Some(n.action.into()),
            note: Some(note),
            regarding: Some(ObjectReference {
                api_version: Some(llmesh_api::API_VERSION.into()),
                kind: Some(n.kind.into()),
                name: Some(n.name.to_string()),
                namespace: Some(self.namespace.clone()),
                ..ObjectReference::default()
            }),
            reporting_controller: Some("llmesh.io/sidecar".into()),
            reporting_instance: Some(self.pod.chars().take(128).collect()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "could not raise an Event (may the sidecar's ServiceAccount create events.k8s.io events?)");
            }
        });
    }
}
