//! `llmesh-controller`: tells people, on the resources themselves, what the
//! sidecars make of them.
//!
//! It watches the four llmesh kinds, compiles every namespace's objects
//! (merged with the platform namespace's) through the sidecar's own
//! compiler, and writes `status.conditions` (`Accepted`, `ResolvedRefs`,
//! `Enforced`) and `status.observedGeneration` on each object, plus a
//! Warning Event when an object is rejected. Several replicas may run: one
//! leader, elected through a Lease, writes; the others watch and wait.
//! With a shared quota store (Redis), the leader also writes each
//! `LLMQuota`'s spend against its limit and raises threshold Events
//! ([`spend`]).
//!
//! [`Controller::start`] runs it in-process (tests do); `main.rs` is a thin
//! wrapper reading flags.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![deny(missing_docs)]

pub mod canary;
pub mod judge;
pub mod lease;
pub mod metrics;
pub mod probe;
pub mod prom;
pub mod server;
pub mod spend;
pub mod status;
pub mod watch;
pub mod writer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use canary::CanaryConfig;
pub use lease::{Leadership, LeaseConfig};
pub use probe::ProbeConfig;
pub use spend::{QuotaStore, SpendConfig};

use crate::judge::Status;
use crate::metrics::Metrics;
use crate::server::Health;
use crate::spend::{Quotas, Spend};
use crate::watch::{Objects, Scope};
use crate::writer::Writer;

/// Everything the controller needs to start, besides a client.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The one namespace to watch, or `None` for every namespace.
    pub namespace: Option<String>,
    /// Namespace whose objects are merged under every namespace's own
    /// (`llmesh-system` by default); `None` for none.
    pub platform_namespace: Option<String>,
    /// The leader Lease.
    pub lease: LeaseConfig,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: SocketAddr,
    /// Changes arriving within this time of the first are evaluated
    /// together.
    pub debounce: Duration,
    /// Spend readings from the sidecars' quota store.
    pub spend: SpendConfig,
    /// Progressive canaries.
    pub canary: CanaryConfig,
    /// Golden prompts.
    pub probes: ProbeConfig,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A running controller. [`Controller::shutdown`] stops it cleanly and
/// gives up the Lease; dropping it stops every task at once without
/// giving the Lease up, as a crashed process would.
pub struct Controller {
    metrics_addr: SocketAddr,
    health: Arc<Health>,
    leadership: Leadership,
    stop_work: channel::Sender<bool>,
    stop_lease: channel::Sender<bool>,
    work: Option<JoinHandle<()>>,
    spend: Option<JoinHandle<()>>,
    canaries: Option<JoinHandle<()>>,
    probes: Option<JoinHandle<()>>,
    lease: Option<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
}

impl Controller {
    /// Binds the metrics port and starts watching, electing and writing.
    pub async fn start(client: Client, cfg: ControllerConfig) -> Result<Controller, StartError> {
        cfg.lease.validate().map_err(StartError::Config)?;
        if cfg.spend.interval.is_zero() {
            return Err(StartError::Config(
                "the spend interval must be above zero".into(),
            ));
        }
        if cfg.canary.interval.is_zero() {
            return Err(StartError::Config(
                "the canary interval must be above zero".into(),
            ));
        }
        if cfg.probes.tick.is_zero() {
            return Err(StartError::Config(
                "the probe tick must be above zero".into(),
            ));
        }
        if let Some(url) = &cfg.canary.prometheus {
            prom::Prometheus::new(url)
                .map_err(|e| StartError::Config(format!("the Prometheus URL: {e}")))?;
        }
        let store = match &cfg.spend.store {
            QuotaStore::Memory => None,
            QuotaStore::Redis(url) => Some(
                spend::connect(url)
                    .map_err(|e| StartError::Config(format!("the quota store URL: {e}")))?,
            ),
        };
        let listener = TcpListener::bind(cfg.metrics_listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.metrics_listen,
                source,
            })?;
        let metrics_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.metrics_listen,
            source,
        })?;
        let metrics = Arc::new(Metrics::new()?);
        let health = Arc::new(Health {
            metrics: metrics.clone(),
            ready: false.into(),
        });
        let (stop_work, work_rx) = channel::channel(false);
        let (stop_lease, lease_rx) = channel::channel(false);

        let server = tokio::spawn(server::serve(listener, health.clone(), lease_rx.clone()));
        let (leadership, lease) =
            lease::spawn(client.clone(), cfg.lease.clone(), metrics.clone(), lease_rx);
        let scope = Scope {
            namespace: cfg.namespace.clone(),
            platform_namespace: cfg.platform_namespace.clone(),
        };
        let objects = watch::spawn(client.clone(), &scope, work_rx.clone());
        let writer = Writer::new(client.clone(), cfg.lease.identity.clone(), metrics.clone());
        let (quotas_tx, quotas_rx) = channel::channel(Quotas::default());
        let spend = store.map(|conn| {
            tokio::spawn(spend::run(
                Spend {
                    client: client.clone(),
                    identity: cfg.lease.identity.clone(),
                    conn,
                    interval: cfg.spend.interval,
                    metrics: metrics.clone(),
                },
                quotas_rx,
                leadership.clone(),
                work_rx.clone(),
            ))
        });
        let (routes_tx, routes_rx) = channel::channel(canary::Routes::default());
        let canaries = tokio::spawn(canary::run(
            canary::Canaries {
                client: client.clone(),
                identity: cfg.lease.identity.clone(),
                config: cfg.canary.clone(),
                platform_namespace: cfg.platform_namespace.clone(),
                metrics: metrics.clone(),
            },
            routes_rx,
            leadership.clone(),
            work_rx.clone(),
        ));
        let (probes_tx, probes_rx) = channel::channel(probe::Feed::default());
        let probes = tokio::spawn(probe::run(
            probe::Prober {
                client: client.clone(),
                identity: cfg.lease.identity.clone(),
                config: cfg.probes.clone(),
                platform_namespace: cfg.platform_namespace.clone(),
                metrics: metrics.clone(),
            },
            probes_rx,
            leadership.clone(),
            work_rx.clone(),
        ));
        let work = tokio::spawn(run(
            cfg,
            objects,
            writer,
            Feeds {
                quotas: quotas_tx,
                routes: routes_tx,
                probes: probes_tx,
            },
            leadership.clone(),
            health.clone(),
            work_rx,
        ));
        tracing::info!(
            namespace = scope.namespace.as_deref().unwrap_or("(all)"),
            platform_namespace = scope.platform_namespace.as_deref().unwrap_or(""),
            metrics = %metrics_addr,
            "llmesh-controller started"
        );
        Ok(Controller {
            metrics_addr,
            health,
            leadership,
            stop_work,
            stop_lease,
            work: Some(work),
            spend,
            canaries: Some(canaries),
            probes: Some(probes),
            lease: Some(lease),
            server: Some(server),
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// True while this replica may write.
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// True once every kind has been listed and evaluated.
    pub fn is_ready(&self) -> bool {
        self.health.ready.load(Ordering::Acquire)
    }

    /// Stops writing, then gives the Lease up (so a standby takes over at
    /// its next attempt), then closes the metrics port.
    pub async fn shutdown(mut self) {
        let _ = self.stop_work.send(true);
        if let Some(work) = self.work.take() {
            let _ = work.await;
        }
        if let Some(spend) = self.spend.take() {
            let _ = spend.await;
        }
        if let Some(canaries) = self.canaries.take() {
            let _ = canaries.await;
        }
        if let Some(probes) = self.probes.take() {
            let _ = probes.await;
        }
        tracing::debug!("writes stopped");
        let _ = self.stop_lease.send(true);
        if let Some(lease) = self.lease.take() {
            let _ = lease.await;
        }
        tracing::debug!("lease loop ended");
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        tracing::debug!("metrics port closed");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        for task in [
            self.work.take(),
            self.spend.take(),
            self.canaries.take(),
            self.probes.take(),
            self.lease.take(),
            self.server.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        let _ = self.stop_work.send(true);
    }
}

/// What each evaluation hands the loops that act on accepted objects.
struct Feeds {
    /// Accepted LLMQuotas, for the spend loop.
    quotas: channel::Sender<Quotas>,
    /// Accepted LLMRoutes with a canary (or a stale `status.canary`), for
    /// the canary loop.
    routes: channel::Sender<canary::Routes>,
    /// Accepted LLMRoutes with golden prompts, for the prober.
    probes: channel::Sender<probe::Feed>,
}

/// Evaluates on every batch of changes and on becoming leader; writes
/// while leading; retries failed writes with backoff.
async fn run(
    cfg: ControllerConfig,
    mut objects: channel::Receiver<Option<Objects>>,
    mut writer: Writer,
    feeds: Feeds,
    leadership: Leadership,
    health: Arc<Health>,
    mut shutdown: channel::Receiver<bool>,
) {
    const RETRY_FIRST: Duration = Duration::from_secs(1);
    const RETRY_MAX: Duration = Duration::from_secs(30);
    let platform = cfg.platform_namespace.as_deref().filter(|p| !p.is_empty());
    let mut leader_changes = leadership.changes();
    let mut retry_at: Option<Instant> = None;
    let mut retry_delay = RETRY_FIRST;
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let deadline = retry_at;
        let retry = async move {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = objects.changed() => {
                if changed.is_err() {
                    break;
                }
                // Let the rest of a burst (an `kubectl apply -f dir/`) in.
                tokio::select! {
                    _ = tokio::time::sleep(cfg.debounce) => {}
                    _ = shutdown.changed() => break,
                }
            }
            changed = leader_changes.changed() => {
                // A new leader evaluates at once: a change may have come
                // in while nobody was writing.
                if changed.is_err() {
                    break;
                }
            }
            _ = retry => retry_at = None,
            _ = shutdown.changed() => break,
        }
        let Some(current) = objects.borrow_and_update().clone() else {
            continue;
        };
        let verdicts = judge::judge(&current, platform);
        let m = &health.metrics;
        m.evaluations.inc();
        for (kind, _) in llmesh_kube::KINDS {
            let n = verdicts
                .iter()
                .filter(|v| v.kind == kind)
                .filter(|v| v.accepted().is_some_and(|a| a.status != Status::True))
                .count();
            m.rejected
                .with_label_values(&[kind])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        log_rejections(&verdicts, &mut reported);
        // The spend loop reads the quotas the sidecars enforce: accepted ones.
        feeds
            .quotas
            .send_replace(Arc::new(accepted(&verdicts, "LLMQuota", |_| true)));
        // The canary loop reads accepted routes with a canary to walk, or
        // the progress of one removed from the spec, to clear.
        feeds
            .routes
            .send_replace(Arc::new(accepted(&verdicts, "LLMRoute", |o| {
                has(o, "spec", "canary") || has(o, "status", "canary")
            })));
        // The prober reads accepted routes with probes, and the providers.
        feeds.probes.send_replace(Arc::new(probe::Input {
            routes: accepted(&verdicts, "LLMRoute", |o| has(o, "spec", "probes")),
            objects: current.clone(),
        }));
        health.ready.store(true, Ordering::Release);
        if !leadership.is_leader() {
            continue;
        }
        let pass = tokio::select! {
            pass = writer.write(&verdicts, &leadership) => pass,
            _ = shutdown.changed() => break,
        };
        if pass.failed > 0 {
            retry_at = Some(Instant::now() + retry_delay);
            retry_delay = (retry_delay * 2).min(RETRY_MAX);
        } else {
            retry_delay = RETRY_FIRST;
        }
    }
}

/// The accepted objects of `kind` for which `keep` holds.
fn accepted(
    verdicts: &[judge::Verdict],
    kind: &str,
    keep: impl Fn(&kube::api::DynamicObject) -> bool,
) -> Vec<Arc<kube::api::DynamicObject>> {
    verdicts
        .iter()
        .filter(|v| v.kind == kind)
        .filter(|v| v.accepted().is_some_and(|a| a.status == Status::True))
        .filter(|v| keep(&v.object))
        .map(|v| v.object.clone())
        .collect()
}

/// `o.<part>.<field>` is set and not null.
fn has(o: &kube::api::DynamicObject, part: &str, field: &str) -> bool {
    o.data
        .get(part)
        .and_then(|p| p.get(field))
        .is_some_and(|v| !v.is_null())
}

/// Logs each rejection once per message, on every replica.
fn log_rejections(verdicts: &[judge::Verdict], reported: &mut BTreeMap<String, String>) {
    let mut now = BTreeMap::new();
    for v in verdicts {
        if let Some(a) = v.accepted().filter(|a| a.status != Status::True) {
            let name = v.full_name();
            if reported.get(&name) != Some(&a.message) {
                tracing::warn!(
                    resource = name.as_str(),
                    reason = a.message.as_str(),
                    "resource rejected"
                );
            }
            now.insert(name, a.message.clone());
        }
    }
    *reported = now;
}
