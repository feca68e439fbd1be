//! The four kinds, cluster-wide or in one namespace (plus the platform
//! namespace), kept current by kube-rs reflectors.
//!
//! The same machinery as the sidecar's (`llmesh-kube`): `DynamicObject`
//! with an `ApiResource`, so an object of the wrong shape is still listed
//! (and judged) instead of breaking the list; list then watch with
//! bookmarks, relist on `410 Gone`, backoff on errors. Once every store has
//! listed, each batch of events publishes the whole set on a
//! `tokio::sync::watch` channel: a burst collapses into its latest state.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::stream::{self, BoxStream, StreamExt};
use futures_util::FutureExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use llmesh_api::{GROUP, VERSION};
use llmesh_kube::{Object, KINDS};
use tokio::sync::watch;

/// Every watched object at one moment.
pub type Objects = Arc<Vec<Object>>;

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// One namespace, or `None` for all of them.
    pub namespace: Option<String>,
    /// Namespace of the cluster-wide defaults.
    pub platform_namespace: Option<String>,
}

struct Watched {
    kind: &'static str,
    store: Store<DynamicObject>,
}

/// Starts the reflectors. The channel holds `None` until every store has
/// completed its first list. The watches stop when `shutdown` flips or
/// every receiver is gone.
pub fn spawn(
    client: Client,
    scope: &Scope,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Option<Objects>> {
    let (tx, rx) = watch::channel(None);
    let platform = scope.platform_namespace.clone().filter(|p| !p.is_empty());
    // `None` = every namespace.
    let mut namespaces: Vec<Option<String>> = vec![scope.namespace.clone()];
    if let (Some(ns), Some(p)) = (&scope.namespace, &platform) {
        if ns != p {
            namespaces.push(Some(p.clone()));
        }
    }
    let mut watched = Vec::new();
    let mut streams: Vec<BoxStream<'static, (usize, Result<bool, watcher::Error>)>> = Vec::new();
    for ns in &namespaces {
        for (kind, plural) in KINDS {
            let gvk = GroupVersionKind::gvk(GROUP, VERSION, kind);
            let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
            let api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let writer = reflector::store::Writer::new(ar);
            let index = watched.len();
            watched.push(Watched {
                kind,
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
                match ev {
                    Ok(done) => {
                        synced[index] |= done;
                        if failing.remove(&index) {
                            tracing::info!(kind = watched[index].kind, "watch recovered");
                        }
                    }
                    Err(e) => {
                        if failing.insert(index) {
                            tracing::warn!(
                                kind = watched[index].kind,
                                error = %e,
                                "watch failed; retrying with backoff"
                            );
                        }
                    }
                }
            }
            if synced.iter().all(|s| *s) {
                let objects = collect(&watched, platform.as_deref());
                if tx.send(Some(Arc::new(objects))).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

fn collect(watched: &[Watched], platform: Option<&str>) -> Vec<Object> {
    let mut out: Vec<Object> = watched
        .iter()
        .flat_map(|w| {
            w.store.state().into_iter().map(|object| Object {
                kind: w.kind,
                platform: platform.is_some() && object.metadata.namespace.as_deref() == platform,
                object,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (
            a.object.metadata.namespace.as_deref(),
            a.kind,
            &a.object.metadata.name,
        )
            .cmp(&(
                b.object.metadata.namespace.as_deref(),
                b.kind,
                &b.object.metadata.name,
            ))
    });
    out
}
