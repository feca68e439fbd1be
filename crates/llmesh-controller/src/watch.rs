//! The four kinds, cluster-wide or in one namespace (plus the platform
//! namespace), kept current by kube-rs reflectors.
//!
//! The same machinery as the sidecar's (`llmesh-kube`): `DynamicObject`
//! with an `ApiResource`, so an object of the wrong shape is still listed
//! (and judged) instead of breaking the list; list then watch with
//! bookmarks, relist on `410 Gone`, backoff on errors. Once every store has
//! listed, each batch of events publishes the whole set on a
//! `tokio::sync::watch` channel: a burst collapses into its latest state.

use std::sync::Arc;

use kube::Client;
use llmesh_kube::{spawn_with, Object, Target, Watched};
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

/// Starts the reflectors (`llmesh_kube::spawn_with`). The channel holds
/// `None` until every store has completed its first list. The watches stop
/// when `shutdown` flips or every receiver is gone.
pub fn spawn(
    client: Client,
    scope: &Scope,
    shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Option<Objects>> {
    let platform = scope.platform_namespace.clone().filter(|p| !p.is_empty());
    // `None` = every namespace.
    let mut targets: Vec<Target> = vec![(scope.namespace.clone(), false)];
    if let (Some(ns), Some(p)) = (&scope.namespace, &platform) {
        if ns != p {
            targets.push((Some(p.clone()), true));
        }
    }
    spawn_with(client, &targets, shutdown, move |w| {
        collect(w, platform.as_deref())
    })
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
            a.kind.as_str(),
            &a.object.metadata.name,
        )
            .cmp(&(
                b.object.metadata.namespace.as_deref(),
                b.kind.as_str(),
                &b.object.metadata.name,
            ))
    });
    out
}
