//! `llmesh-proxy`: the sidecar binary.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use llmesh_proxy::{Identity, Proxy, ProxyConfig};

/// A localhost LLM API proxy: routes OpenAI- and Anthropic-style calls to
/// upstream providers with accounting, metrics and hot-reloaded policy.
#[derive(Parser, Debug)]
#[command(name = "llmesh-proxy", version)]
struct Args {
    /// Policy file (multi-document YAML of LLMProvider, LLMRoute, LLMQuota,
    /// LLMDataPolicy), watched and hot-reloaded.
    #[arg(
        long,
        env = "LLMESH_POLICY_FILE",
        default_value = "examples/local/policy.yaml"
    )]
    policy_file: PathBuf,
    /// Address of the app-facing LLM API.
    #[arg(long, env = "LLMESH_LISTEN", default_value = "127.0.0.1:15500")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "LLMESH_METRICS_LISTEN", default_value = "0.0.0.0:15501")]
    metrics_listen: SocketAddr,
    /// Address of the admin port (/config_dump); keep it on loopback.
    #[arg(long, env = "LLMESH_ADMIN_LISTEN", default_value = "127.0.0.1:15502")]
    admin_listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "LLMESH_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Largest upstream (non-streamed) response body, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    max_response_bytes: usize,
    /// Seconds a client has to send its request headers.
    #[arg(long, default_value_t = 10)]
    header_read_timeout_secs: u64,
    /// Extra PEM CA bundle trusted for every upstream, on top of the web roots.
    #[arg(long, env = "LLMESH_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Worker threads. 1 (the default) runs everything on one thread, the
    /// cheapest choice for a sidecar; more use a multi-threaded runtime.
    #[arg(long, env = "LLMESH_THREADS", default_value_t = 1)]
    threads: usize,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `llmesh=debug`.
    #[arg(long, env = "LLMESH_LOG", default_value = "info")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    llmesh_proxy::logging::init(&args.log)?;
    // One thread avoids cross-thread wake-ups, which cost more than the
    // proxy's own work per request on a small pod.
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = ProxyConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        admin_listen: args.admin_listen,
        policy_file: args.policy_file,
        max_body_bytes: args.max_body_bytes,
        max_response_bytes: args.max_response_bytes,
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        ca_file: args.ca_file,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        identity: Identity::from_env(),
    };
    let proxy = Proxy::start(cfg).await?;
    // One plain line for scripts and tests that start the binary on port 0.
    println!(
        "llmesh-proxy listening llm=http://{} metrics=http://{} admin=http://{}",
        proxy.llm_addr(),
        proxy.metrics_addr(),
        proxy.admin_addr()
    );
    shutdown_signal().await;
    tracing::info!("shutdown signal received, draining");
    proxy.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
