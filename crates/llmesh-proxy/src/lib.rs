//! The llmesh sidecar: a localhost LLM API proxy.
//!
//! [`Proxy::start`] binds the three ports, loads the policy file, and
//! serves until [`Proxy::shutdown`]. The binary in `main.rs` is a thin
//! wrapper; tests start the same thing in-process on ephemeral ports.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod account;
pub mod admin;
pub mod admission;
pub mod answer;
pub mod attempt;
pub mod attempts;
pub mod body;
pub mod cache;
pub mod cached;
pub mod classify;
pub mod clock;
pub mod config;
pub mod context;
pub mod continuation;
pub mod conversation;
pub mod count_tokens;
pub mod dataguard;
pub mod error;
pub mod events;
pub(crate) mod hedge;
pub mod identity;
pub mod inbound;
pub mod k8s;
pub mod logging;
pub mod metrics;
pub mod outlier;
pub mod passthrough;
pub mod pipeline;
pub mod plan;
pub mod prefill;
pub mod quota;
pub mod reload;
pub mod responses;
pub mod route;
pub mod runtime;
pub mod server;
pub mod shadow;
pub mod shared;
pub mod signals;
pub mod stream;
pub mod structured;
pub mod table;
pub mod tokens;
pub mod trace;
pub mod upgrade;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Identity, ProxyConfig};
pub use shared::Shared;

use crate::metrics::Metrics;
use crate::table::Table;
use crate::upstream::ClientCache;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The initial policy is invalid: refuse to start rather than serve
    /// with no routes.
    #[error(transparent)]
    Policy(#[from] table::LoadError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The file watcher could not start.
    #[error("watching the policy file: {0}")]
    Watch(#[from] notify::Error),
    /// The quota store is not usable.
    #[error(transparent)]
    Quota(#[from] quota::QuotaStartError),
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    llm_addr: SocketAddr,
    metrics_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Proxy {
    /// Loads the policy, binds the ports and starts serving.
    pub async fn start(cfg: ProxyConfig) -> Result<Proxy, StartError> {
        let metrics = Metrics::new(&cfg.identity)?;
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(Table::empty()),
            metrics,
            quota: quota::QuotaState::start(&cfg.quota)?,
            clients: ClientCache::new(cfg.ca_file.clone()),
            conversations: Arc::new(conversation::Store::new(
                &cfg.identity.namespace,
                conversation::StoreLimits {
                    ttl: cfg.responses_ttl,
                    max_entries: cfg.responses_max_entries,
                    max_bytes: 256 * 1024 * 1024,
                },
                match &cfg.quota.store {
                    config::StoreSetting::Redis(url) => Some(url.as_str()),
                    config::StoreSetting::Memory => None,
                },
            )),
            cfg,
            registry: runtime::Registry::default(),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        // Routes with `cache.exact.store: redis` share the quota store's
        // Redis (set before the first table is built).
        let _ = shared
            .registry
            .credential_metrics
            .set(shared.metrics.credentials.clone());
        if let Some(k) = &shared.cfg.kube {
            let _ = shared.registry.events.set(Arc::new(events::Events::new(
                k.client.clone(),
                &shared.cfg.identity.namespace,
                &shared.cfg.identity.pod,
            )));
        }
        if let config::StoreSetting::Redis(url) = &shared.cfg.quota.store {
            shared
                .registry
                .caches
                .set_redis(url, shared.cfg.quota.redis_timeout);
        }
        if shared.cfg.kube.is_none() {
            let (first, state) = table::load_file(
                &shared.cfg.policy_file,
                &shared.cfg.secrets_dir,
                &shared.cfg.identity.namespace,
                &shared.clients,
                &shared.registry,
            )?;
            state.commit();
            shared.publish(first);
            // A first policy with quotas: the tokenizer is loaded before
            // the sidecar listens, so its first requests count exactly.
            if shared.table.load().quota.is_some() {
                tokens::load().await;
            }
        }

        let llm = bind(shared.cfg.listen).await?;
        let met = bind(shared.cfg.metrics_listen).await?;
        let adm = bind(shared.cfg.admin_listen).await?;
        let local = |l: &TcpListener, a: SocketAddr| l.local_addr().unwrap_or(a);
        let llm_addr = local(&llm, shared.cfg.listen);
        let metrics_addr = local(&met, shared.cfg.metrics_listen);
        let admin_addr = local(&adm, shared.cfg.admin_listen);

        let (tx, rx) = watch::channel(false);
        match shared.cfg.kube.clone() {
            // Not ready until the first full sync is published.
            Some(source) => k8s::spawn(shared.clone(), source, rx.clone()),
            None => reload::spawn(shared.clone(), rx.clone())?,
        }
        tokio::spawn(outlier::run(shared.clone(), rx.clone()));
        let hdr = shared.cfg.header_read_timeout;
        let max_hdr = shared.cfg.max_header_bytes;
        let drain = shared.cfg.drain_timeout;
        let mut tasks = Vec::new();
        let s = shared.clone();
        tasks.push(tokio::spawn(server::serve(
            llm,
            move |req| pipeline::handle(s.clone(), req),
            rx.clone(),
            hdr,
            max_hdr,
            drain,
        )));
        let s = shared.clone();
        tasks.push(tokio::spawn(server::serve(
            met,
            move |req| admin::metrics_port(s.clone(), req),
            rx.clone(),
            hdr,
            max_hdr,
            drain,
        )));
        let s = shared.clone();
        tasks.push(tokio::spawn(server::serve(
            adm,
            move |req| admin::admin_port(s.clone(), req),
            rx,
            hdr,
            max_hdr,
            drain,
        )));
        tracing::info!(%llm_addr, %metrics_addr, %admin_addr, "llmesh-proxy started");
        Ok(Proxy {
            shared,
            llm_addr,
            metrics_addr,
            admin_addr,
            shutdown: tx,
            tasks,
        })
    }

    /// Address of the LLM API port.
    pub fn llm_addr(&self) -> SocketAddr {
        self.llm_addr
    }
    /// Address of the metrics port.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }
    /// Address of the admin port.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    /// The shared state (tests read generation and metrics from it).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // Settlements of the last requests run as tasks: let them land.
        tokio::task::yield_now().await;
        quota::flush(&self.shared.quota, std::time::Duration::from_secs(5)).await;
    }
}
