//! Watches the policy file and swaps in a new table when it changes.
//!
//! The folder is watched rather than the file: editors and Kubernetes
//! ConfigMap mounts replace files by rename, which a watch on the old
//! inode would miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::shared::Shared;

/// Starts the watcher; it stops when `shutdown` flips.
pub fn spawn(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), notify::Error> {
    let file = shared.cfg.policy_file.clone();
    let dir = file
        .parent()
        .map(PathBuf::from)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let name = file.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let secrets = watch_secrets(&shared.cfg.secrets_dir, tx.clone());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if ev.kind.is_access() {
            return;
        }
        // Any event naming our file, or a ConfigMap's `..data` swap.
        let relevant = ev.paths.iter().any(|p| {
            p.file_name().map(|n| n.to_os_string()) == name
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        });
        if relevant {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    tokio::spawn(async move {
        let _keep = (watcher, secrets);
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() { break; }
                    // Let a burst of writes settle: one reload per save.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while rx.try_recv().is_ok() {}
                    reload(&shared);
                }
                _ = shutdown.changed() => break,
            }
        }
    });
    Ok(())
}

/// Watches the mounted-Secrets folder (recursively: one folder per Secret,
/// updated by the kubelet with an atomic `..data` swap) and signals `tx` on
/// any change. `None` when the folder does not exist: no Secrets mounted.
pub fn watch_secrets(dir: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    if !dir.is_dir() {
        return None;
    }
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the secrets folder; rotated keys need a restart"))
    .ok()?;
    match watcher.watch(dir, RecursiveMode::Recursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the secrets folder; rotated keys need a restart");
            None
        }
    }
}

/// Loads the file and publishes it, or keeps the last good table.
pub fn reload(shared: &Shared) {
    let ns = &shared.cfg.identity.namespace;
    match crate::table::load_file(
        &shared.cfg.policy_file,
        &shared.cfg.secrets_dir,
        ns,
        &shared.clients,
        &shared.registry,
    ) {
        Ok((table, state)) => {
            state.commit();
            shared.publish(table);
        }
        Err(e) => {
            let m = &shared.metrics;
            m.reloads.with_label_values(&["failure"]).inc();
            m.last_reload_ok.set(0);
            tracing::error!(
                error = %e,
                generation = shared.table.load().snap.generation,
                "policy reload failed; keeping the last good policy"
            );
            shared.set_last_error(Some(e.to_string()));
        }
    }
}
