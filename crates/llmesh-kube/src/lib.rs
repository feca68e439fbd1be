//! The sidecar's view of the cluster: the four llmesh kinds in its own
//! namespace and, merged under them, in the platform namespace.
//!
//! One kube-rs reflector per kind and namespace keeps a store current
//! (list, then watch from the list's resourceVersion; a relist on
//! `410 Gone`; reconnects with exponential backoff after errors). Once every
//! store has completed its first list, each change publishes a [`View`] on
//! a `tokio::sync::watch` channel, so a burst of changes collapses into the
//! latest state and a slow consumer never blocks the watches.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::stream::{self, BoxStream, StreamExt};
use futures_util::FutureExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use llmesh_api::{
    AnyResource, LLMDataPolicy, LLMProvider, LLMQuota, LLMRoute, ResourceKey, ResourceKind, GROUP,
    VERSION,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::watch;

/// The four kinds and their plural resource names, as text (metric labels).
pub const KINDS: [(&str, &str); 4] = [
    (
        ResourceKind::Provider.as_str(),
        ResourceKind::Provider.plural(),
    ),
    (ResourceKind::Route.as_str(), ResourceKind::Route.plural()),
    (ResourceKind::Quota.as_str(), ResourceKind::Quota.plural()),
    (
        ResourceKind::DataPolicy.as_str(),
        ResourceKind::DataPolicy.plural(),
    ),
];

/// Which namespaces to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The pod's own namespace.
    pub namespace: String,
    /// Cluster-wide defaults (`llmesh-system` by default); `None` or the
    /// same as `namespace` to watch one namespace only.
    pub platform_namespace: Option<String>,
}

/// One object as seen in the cluster.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its kind (from the watch: list items need not carry it).
    pub kind: ResourceKind,
    /// True when it comes from the platform namespace.
    pub platform: bool,
    /// The object.
    pub object: Arc<DynamicObject>,
}

impl Object {
    /// `Kind/name`, the key two namespaces' objects are merged by (the
    /// same as [`AnyResource::key`] of what it reads as).
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(
            self.kind,
            self.object.metadata.name.as_deref().unwrap_or(""),
        )
    }

    /// `Kind/namespace/name`, for messages.
    pub fn full_name(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind,
            self.object.metadata.namespace.as_deref().unwrap_or(""),
            self.object.metadata.name.as_deref().unwrap_or("")
        )
    }

    /// The object as an llmesh resource, or why it cannot be read.
    pub fn to_resource(&self) -> Result<AnyResource, ShapeError> {
        to_resource(self.kind, &self.object)
    }
}

/// The merged state of every watched store at one moment: objects of the
/// pod's namespace, plus those of the platform namespace whose kind and
/// name the pod's namespace does not also have.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Objects, own namespace first, each group sorted by kind and name.
    pub objects: Vec<Object>,
}

/// Why a watched object cannot be read as an llmesh resource: a field of
/// the wrong shape (an object the API server took past the schema, or
/// written before the schema was installed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ShapeError {
    /// Path of the offending field, e.g. `spec.models` (`.` for the object
    /// itself, as when `spec` is missing).
    pub path: String,
    /// What is wrong, e.g. ``invalid type: integer `7`, expected a sequence``.
    pub reason: String,
}

/// The part of a watched object's body llmesh reads. Status and anything
/// else next to `spec` is ignored.
#[derive(Deserialize)]
struct Body<S> {
    spec: S,
}

fn spec<S: DeserializeOwned>(obj: &DynamicObject) -> Result<S, ShapeError> {
    // serde_path_to_error names the failing field (`spec.models`), as the
    // file mode's reader does.
    serde_path_to_error::deserialize::<_, Body<S>>(&obj.data)
        .map(|b| b.spec)
        .map_err(|e| ShapeError {
            path: e.path().to_string(),
            reason: e.inner().to_string(),
        })
}

/// Reads a watched object into an llmesh resource: its spec is decoded
/// into the kind's api type, its metadata carried over. The kind comes from
/// the watch (list items need not carry it); server-set metadata and
/// status are ignored, but for an `LLMRoute`'s `status.canary`.
pub fn to_resource(kind: ResourceKind, obj: &DynamicObject) -> Result<AnyResource, ShapeError> {
    let metadata = obj.metadata.clone();
    Ok(match kind {
        ResourceKind::Provider => LLMProvider {
            metadata,
            spec: spec(obj)?,
            status: None,
        }
        .into(),
        ResourceKind::Route => LLMRoute {
            metadata,
            spec: spec(obj)?,
            // The sidecars act on the canary's progress the controller
            // writes; a status of another shape is ignored.
            status: obj
                .data
                .get("status")
                .and_then(|s| s.get("canary"))
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .map(|canary| llmesh_api::LLMRouteStatus {
                    canary: Some(canary),
                    ..Default::default()
                }),
        }
        .into(),
        ResourceKind::Quota => LLMQuota {
            metadata,
            spec: spec(obj)?,
            status: None,
        }
        .into(),
        ResourceKind::DataPolicy => LLMDataPolicy {
            metadata,
            spec: spec(obj)?,
            status: None,
        }
        .into(),
    })
}

/// One reflector's store: the objects of one kind in one namespace (or in
/// every namespace).
pub struct Watched {
    /// The kind.
    pub kind: ResourceKind,
    /// True for the platform namespace's store.
    pub platform: bool,
    /// The reflector's store.
    pub store: Store<DynamicObject>,
}

/// Where a reflector set watches: a namespace (`None`: every namespace),
/// and whether it is the platform namespace.
pub type Target = (Option<String>, bool);

/// Starts the reflectors and returns the channel of views. It holds `None`
/// until every store has completed its first list, then the latest view.
/// The watches stop when `shutdown` flips or every receiver is dropped.
pub fn spawn(
    client: Client,
    scope: Scope,
    shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Option<Arc<View>>> {
    let mut targets: Vec<Target> = vec![(Some(scope.namespace.clone()), false)];
    if let Some(p) = scope
        .platform_namespace
        .filter(|p| !p.is_empty() && *p != scope.namespace)
    {
        targets.push((Some(p), true));
    }
    spawn_with(client, &targets, shutdown, merge)
}

/// One reflector per kind and target. Once every store has listed, each
/// batch of events (whatever is already waiting is taken together)
/// publishes `view(stores)` on the returned channel, so a burst collapses
/// into its latest state and a slow consumer never blocks the watches.
/// A watch error is logged once per failing store, and its recovery once.
pub fn spawn_with<T, F>(
    client: Client,
    targets: &[Target],
    mut shutdown: watch::Receiver<bool>,
    view: F,
) -> watch::Receiver<Option<Arc<T>>>
where
    T: Send + Sync + 'static,
    F: Fn(&[Watched]) -> T + Send + 'static,
{
    let (tx, rx) = watch::channel(None);
    let mut watched = Vec::new();
    let mut streams: Vec<BoxStream<'static, (usize, Result<bool, watcher::Error>)>> = Vec::new();
    for (ns, platform) in targets {
        for kind in ResourceKind::ALL {
            let gvk = GroupVersionKind::gvk(GROUP, VERSION, kind.as_str());
            let ar = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
            let api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let writer = reflector::store::Writer::new(ar);
            let index = watched.len();
            watched.push(Watched {
                kind,
                platform: *platform,
                store: writer.as_reader(),
            });
            let events = reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff()
                .map(move |ev| (index, ev.map(|e| matches!(e, watcher::Event::InitDone))));
            streams.push(events.boxed());
        }
    }
    tokio::spawn(async move {
        let mut all = stream::select_all(streams);
        let mut synced = vec![false; watched.len()];
        let mut failing: HashSet<usize> = HashSet::new();
        loop {
            let first = tokio::select! {
                ev = all.next() => ev,
                _ = shutdown.changed() => break,
                _ = tx.closed() => break,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while let Some(Some(ev)) = all.next().now_or_never() {
                batch.push(ev);
            }
            for (index, ev) in batch {
                let w = &watched[index];
                match ev {
                    Ok(done) => {
                        synced[index] |= done;
                        if failing.remove(&index) {
                            tracing::info!(
                                kind = w.kind.as_str(),
                                platform = w.platform,
                                "watch recovered"
                            );
                        }
                    }
                    Err(e) => {
                        if failing.insert(index) {
                            tracing::warn!(
                                kind = w.kind.as_str(),
                                platform = w.platform,
                                error = %e,
                                "watch failed; retrying with backoff, the last policy keeps serving"
                            );
                        }
                    }
                }
            }
            if synced.iter().all(|s| *s) && tx.send(Some(Arc::new(view(&watched)))).is_err() {
                break;
            }
        }
    });
    rx
}

fn merge(watched: &[Watched]) -> View {
    let mut own = Vec::new();
    let mut platform = Vec::new();
    for w in watched {
        let mut objs: Vec<Object> = w
            .store
            .state()
            .into_iter()
            .map(|object| Object {
                kind: w.kind,
                platform: w.platform,
                object,
            })
            .collect();
        objs.sort_by(|a, b| a.object.metadata.name.cmp(&b.object.metadata.name));
        if w.platform {
            platform.extend(objs);
        } else {
            own.extend(objs);
        }
    }
    let shadowed: HashSet<ResourceKey> = own.iter().map(Object::key).collect();
    own.extend(
        platform
            .into_iter()
            .filter(|o| !shadowed.contains(&o.key())),
    );
    View { objects: own }
}

/// A client for `url` (an API server without authentication, as in tests)
/// with `namespace` as its default.
pub fn plain_client(url: &str, namespace: &str) -> Result<Client, kube::Error> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| kube::Error::Service(Box::new(e)))?;
    let mut config = kube::Config::new(uri);
    config.default_namespace = namespace.to_string();
    Client::try_from(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(kind: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "llmesh.io/v1alpha1", "kind": kind,
            "metadata": {"name": "chat", "namespace": "team", "generation": 2,
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": spec,
            // Whatever a writer left in status does not keep the spec from
            // being read.
            "status": {"conditions": 7},
        }))
        .unwrap()
    }

    #[test]
    fn reads_the_spec_into_the_api_type_as_the_file_mode_does() {
        let obj = dynamic(
            "LLMRoute",
            json!({"models": ["m"], "backends": [{"provider": "p"}]}),
        );
        let got = to_resource(ResourceKind::Route, &obj).unwrap();
        let file = llmesh_api::parse_documents(
            "apiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: chat, namespace: team, generation: 2}\nspec: {models: [m], backends: [{provider: p}]}\n",
        )
        .unwrap()
        .remove(0);
        assert_eq!(got, file);
        assert_eq!(got.key(), ResourceKey::new(ResourceKind::Route, "chat"));
    }

    #[test]
    fn a_field_of_the_wrong_shape_is_named_by_its_path() {
        let obj = dynamic("LLMRoute", json!({"models": 7, "backends": []}));
        let e = to_resource(ResourceKind::Route, &obj).unwrap_err();
        assert_eq!(e.path, "spec.models");
        assert_eq!(
            e.to_string(),
            "spec.models: invalid type: integer `7`, expected a sequence"
        );
        let obj = dynamic(
            "LLMProvider",
            json!({"schema": "openai", "models": [{"name": "m", "contextWindow": "big"}]}),
        );
        let e = to_resource(ResourceKind::Provider, &obj).unwrap_err();
        assert_eq!(e.path, "spec.models[0].contextWindow", "{e}");
        let obj = dynamic("LLMQuota", json!({"limits": {}, "surprise": 1}));
        let e = to_resource(ResourceKind::Quota, &obj).unwrap_err();
        assert!(e.reason.contains("unknown field `surprise`"), "{e}");
    }

    #[test]
    fn an_object_without_a_spec_is_refused() {
        let mut obj = dynamic("LLMDataPolicy", json!({}));
        obj.data = json!({});
        let e = to_resource(ResourceKind::DataPolicy, &obj).unwrap_err();
        assert_eq!(e.to_string(), ".: missing field `spec`");
    }
}
