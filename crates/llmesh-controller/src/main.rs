//! `llmesh-controller`: status conditions and Events for the llmesh
//! resources, one leader at a time.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use llmesh_controller::{
    CanaryConfig, Controller, ControllerConfig, LeaseConfig, ProbeConfig, SpendConfig,
};

/// Writes status conditions (Accepted, ResolvedRefs, Enforced) and Warning
/// Events on LLMProvider, LLMRoute, LLMQuota and LLMDataPolicy objects.
#[derive(Parser, Debug)]
#[command(name = "llmesh-controller", version)]
struct Args {
    /// The one namespace to watch. Empty: every namespace.
    #[arg(long, env = "LLMESH_NAMESPACE", default_value = "")]
    namespace: String,
    /// Namespace whose objects apply to every namespace, under the
    /// namespace's own (as the sidecars merge them). Empty: none.
    #[arg(
        long,
        env = "LLMESH_PLATFORM_NAMESPACE",
        default_value = "llmesh-system"
    )]
    platform_namespace: String,
    /// Namespace of the leader Lease. [default: $POD_NAMESPACE, else llmesh-system]
    #[arg(long, env = "LLMESH_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "LLMESH_LEASE_NAME", default_value = "llmesh-controller")]
    lease_name: String,
    /// This replica's name in the Lease. [default: $POD_NAME, else the host name]
    #[arg(long, env = "LLMESH_IDENTITY")]
    identity: Option<String>,
    /// How long a Lease not renewed stays held (whole seconds), e.g. `15s`.
    #[arg(long, env = "LLMESH_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    /// How often the leader renews the Lease and a standby tries it, e.g. `5s`.
    #[arg(long, env = "LLMESH_LEASE_RENEW", default_value = "5s", value_parser = duration)]
    lease_renew: Duration,
    /// Changes arriving within this time of the first are evaluated together.
    #[arg(long, env = "LLMESH_DEBOUNCE", default_value = "200ms", value_parser = duration)]
    debounce: Duration,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "LLMESH_METRICS_LISTEN", default_value = "0.0.0.0:15510")]
    metrics_listen: SocketAddr,
    /// The sidecars' quota store: `memory` (each sidecar counts alone, so
    /// there is no shared spend to show) or the Redis URL they share, e.g.
    /// `redis://redis.llmesh:6379/0`; then LLMQuota status shows spend
    /// against limit and thresholds raise Events.
    #[arg(long, env = "LLMESH_QUOTA_STORE", default_value = "memory")]
    quota_store: llmesh_controller::QuotaStore,
    /// How often the leader reads every LLMQuota's spend, e.g. `15s`.
    #[arg(long, env = "LLMESH_SPEND_INTERVAL", default_value = "15s", value_parser = duration)]
    spend_interval: Duration,
    /// How often the leader checks every LLMRoute canary's gates, e.g. `30s`.
    #[arg(long, env = "LLMESH_CANARY_INTERVAL", default_value = "30s", value_parser = duration)]
    canary_interval: Duration,
    /// Base URL of the Prometheus that scrapes the sidecars, e.g.
    /// `http://prometheus.monitoring:9090`, for the canary metric gates
    /// (error ratio, latency, shadow agreement); without it those gates
    /// hold a canary at its step.
    #[arg(long, env = "LLMESH_PROMETHEUS_URL", default_value = "")]
    prometheus_url: String,
    /// Where the prober reads the `secretKeyRef` credentials of the
    /// providers it probes (`<dir>/<secret>/<key>`, the chart's
    /// `controller.probes.secrets` mounted there), as the sidecar does.
    #[arg(long, env = "LLMESH_PROBE_SECRETS_DIR", default_value = llmesh_policy::DEFAULT_SECRETS_DIR)]
    probe_secrets_dir: std::path::PathBuf,
    /// Extra CA bundle (PEM) the prober trusts for the backends' TLS, as
    /// the sidecar's `--ca-file`.
    #[arg(long, env = "LLMESH_PROBE_CA_FILE")]
    probe_ca_file: Option<std::path::PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `llmesh_controller=debug`.
    #[arg(long, env = "LLMESH_LOG", default_value = "info")]
    log: String,
}

fn duration(text: &str) -> Result<Duration, llmesh_policy::DurationError> {
    llmesh_policy::parse_duration(text)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `POD_NAME`, else the host name, else a name unique to this process.
fn default_identity() -> String {
    env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("llmesh-controller-{}", std::process::id()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    llmesh_process::init_json_logs(&args.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (no in-cluster config or usable kubeconfig)")?;
    let cfg = ControllerConfig {
        namespace: Some(args.namespace).filter(|n| !n.is_empty()),
        platform_namespace: Some(args.platform_namespace).filter(|p| !p.is_empty()),
        lease: LeaseConfig {
            namespace: args
                .lease_namespace
                .filter(|n| !n.is_empty())
                .or_else(|| env("POD_NAMESPACE"))
                .unwrap_or_else(|| "llmesh-system".to_string()),
            name: args.lease_name,
            identity: args
                .identity
                .filter(|i| !i.is_empty())
                .unwrap_or_else(default_identity),
            duration: args.lease_duration,
            renew: args.lease_renew,
        },
        metrics_listen: args.metrics_listen,
        debounce: args.debounce,
        spend: SpendConfig {
            store: args.quota_store,
            interval: args.spend_interval,
        },
        canary: CanaryConfig {
            interval: args.canary_interval,
            prometheus: Some(args.prometheus_url).filter(|u| !u.is_empty()),
        },
        probes: ProbeConfig {
            secrets_dir: args.probe_secrets_dir,
            ca_file: args.probe_ca_file.filter(|p| !p.as_os_str().is_empty()),
            ..ProbeConfig::default()
        },
    };
    let controller = Controller::start(client, cfg).await?;
    // One plain line for scripts and tests that start the binary on port 0.
    println!(
        "llmesh-controller listening metrics=http://{}",
        controller.metrics_addr()
    );
    llmesh_process::shutdown_signal().await;
    tracing::info!("shutdown signal received; giving up the lease");
    controller.shutdown().await;
    Ok(())
}
