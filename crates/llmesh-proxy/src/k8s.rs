//! Policy from the cluster (`--source kubernetes`).
//!
//! The reflectors of `llmesh-kube` publish the merged objects of the pod's
//! namespace and the platform namespace; every change is compiled through
//! the same path as the file mode and swapped in. Unlike a policy file,
//! which is taken whole or not at all, objects are independent: one that
//! fails to read or compile is left out (logged, counted in
//! `llmesh_config_rejected_resources`), and if an earlier version of it was
//! valid, that version keeps serving.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use llmesh_api::{AnyResource, ResourceKey, ResourceKind};
use llmesh_kube::{Scope, View};
use tokio::sync::watch;

use crate::shared::Shared;
use crate::table;

pub use crate::config::KubeSource;

/// Last valid version of each object, and what was reported last time.
#[derive(Default)]
struct Memory {
    good: HashMap<ResourceKey, AnyResource>,
    reported: BTreeSet<String>,
}

/// Follows the cluster until `shutdown` flips. The proxy is not ready
/// until the first full sync has been compiled and published.
pub fn spawn(shared: Arc<Shared>, source: KubeSource, mut shutdown: watch::Receiver<bool>) {
    let scope = Scope {
        namespace: shared.cfg.identity.namespace.clone(),
        platform_namespace: source.platform_namespace.clone(),
    };
    let mut views = llmesh_kube::spawn(source.client, scope, shutdown.clone());
    let (tx, mut secrets_changed) = tokio::sync::mpsc::channel::<()>(1);
    // The task keeps a sender, so the channel stays open (and quiet) when
    // there is no secrets folder to watch.
    let secrets_watch = crate::reload::watch_secrets(&shared.cfg.secrets_dir, tx.clone());
    tokio::spawn(async move {
        let _keep = (secrets_watch, tx);
        let mut memory = Memory::default();
        let mut last: Option<Arc<View>> = None;
        loop {
            tokio::select! {
                changed = views.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    last = views.borrow_and_update().clone();
                }
                got = secrets_changed.recv() => {
                    if got.is_none() {
                        break;
                    }
                    // A Secret rotation is several file events: let it settle.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    while secrets_changed.try_recv().is_ok() {}
                    tracing::info!("mounted secrets changed; recompiling");
                }
                _ = shutdown.changed() => break,
            }
            if let Some(view) = &last {
                apply(&shared, view, &mut memory);
            }
        }
    });
}

fn apply(shared: &Shared, view: &View, memory: &mut Memory) {
    let present: HashSet<ResourceKey> = view.objects.iter().map(|o| o.key()).collect();
    memory.good.retain(|k, _| present.contains(k));

    // (kind, message) of every object not served as it is now.
    let mut rejected: Vec<(ResourceKind, String)> = Vec::new();
    let mut docs = Vec::with_capacity(view.objects.len());
    // `Kind/name` -> `Kind/namespace/name` of the object, to name compile
    // errors: an object inherited from the platform namespace fails under
    // the pod's namespace but lives in the platform's.
    let mut names: HashMap<ResourceKey, String> = HashMap::new();
    for o in &view.objects {
        names.insert(o.key(), o.full_name());
        match o.to_resource() {
            Ok(r) => docs.push(r),
            Err(e) => {
                rejected.push((o.kind, format!("{}: {e}", o.full_name())));
                if let Some(prev) = memory.good.get(&o.key()) {
                    docs.push(prev.clone());
                }
            }
        }
    }

    let ns = &shared.cfg.identity.namespace;
    let secrets = llmesh_policy::EnvFileSecrets {
        base_dir: None,
        secrets_dir: shared.cfg.secrets_dir.clone(),
    };
    let build = |docs: &[AnyResource]| {
        table::build(docs, ns, None, &secrets, &shared.clients, &shared.registry)
    };
    let mut built = build(&docs);
    // Objects that no longer compile fall back to their last valid version.
    let failed: HashSet<ResourceKey> = built.errors.iter().map(|e| e.key()).collect();
    for e in &built.errors {
        let name = names
            .get(&e.key())
            .cloned()
            .unwrap_or_else(|| format!("{}/{}/{}", e.kind, e.namespace, e.name));
        rejected.push((e.kind, format!("{name}: {}: {}", e.field, e.reason)));
    }
    let mut substituted = false;
    for d in &mut docs {
        let key = d.key();
        if failed.contains(&key) {
            if let Some(prev) = memory.good.get(&key) {
                if prev != d {
                    *d = prev.clone();
                    substituted = true;
                }
            }
        }
    }
    if substituted {
        built = build(&docs);
    }
    let still_failed: HashSet<ResourceKey> = built.errors.iter().map(|e| e.key()).collect();
    for d in &docs {
        let key = d.key();
        if !still_failed.contains(&key) {
            memory.good.insert(key, d.clone());
        }
    }
    for w in &built.wiring_errors {
        rejected.push((ResourceKind::Provider, w.clone()));
    }

    let m = &shared.metrics;
    for kind in ResourceKind::ALL {
        let n = rejected.iter().filter(|(k, _)| *k == kind).count();
        m.rejected_resources
            .with_label_values(&[kind.as_str()])
            .set(n as i64);
    }
    let now: BTreeSet<String> = rejected.iter().map(|(_, msg)| msg.clone()).collect();
    for msg in now.difference(&memory.reported) {
        tracing::warn!(
            reason = msg.as_str(),
            "resource rejected; it is left out, or its last valid version keeps serving"
        );
    }
    memory.reported = now;

    built.builder.commit();
    shared.publish(built.compiled);
    if !rejected.is_empty() {
        let all: Vec<&str> = rejected.iter().map(|(_, m)| m.as_str()).collect();
        shared.set_last_error(Some(format!(
            "{} resource(s) rejected: {}",
            rejected.len(),
            all.join("; ")
        )));
    }
}
