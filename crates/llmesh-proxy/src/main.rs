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
    /// LLMDataPolicy), watched and hot-reloaded. Giving one selects the file
    /// source. [default: examples/local/policy.yaml]
    #[arg(long, env = "LLMESH_POLICY_FILE")]
    policy_file: Option<PathBuf>,
    /// Where policy comes from: `kubernetes` (the llmesh resources of the
    /// pod's namespace and the platform namespace, watched), `file`, or
    /// `auto`: the file when `--policy-file` is given, else Kubernetes when
    /// in a cluster or a kubeconfig is found, else the default file.
    #[arg(long, env = "LLMESH_SOURCE", value_enum, default_value_t = Source::Auto)]
    source: Source,
    /// Namespace whose llmesh resources apply to every namespace, under
    /// the pod's own (Kubernetes source). Empty: none.
    #[arg(
        long,
        env = "LLMESH_PLATFORM_NAMESPACE",
        default_value = "llmesh-system"
    )]
    platform_namespace: String,
    /// Folder where the injector mounts the Secrets named by
    /// `credential.secretKeyRef` (one folder per Secret, one file per key);
    /// watched, so a rotated key takes effect without a restart.
    #[arg(long, env = "LLMESH_SECRETS_DIR", default_value = llmesh_policy::DEFAULT_SECRETS_DIR)]
    secrets_dir: PathBuf,
    /// File holding a token clients must present as their API key
    /// (`Authorization: Bearer`, `x-api-key`); the injector gives the same
    /// token to the pod's app, so no other pod can use this sidecar.
    #[arg(long, env = "LLMESH_INBOUND_TOKEN_FILE")]
    inbound_token_file: Option<PathBuf>,
    /// Where LLMQuota counters live: `memory` (this sidecar only) or a
    /// `redis://host:port/db` URL shared by every sidecar (usage records
    /// then also go to the Redis stream `llmesh:usage`).
    #[arg(long, env = "LLMESH_QUOTA_STORE", default_value = "memory", value_parser = llmesh_proxy::quota::StoreSetting::parse)]
    quota_store: llmesh_proxy::quota::StoreSetting,
    /// While Redis is unreachable, each sidecar enforces every limit
    /// divided by this: the number of sidecars sharing a budget (e.g. the
    /// Deployment's replicas).
    #[arg(long, env = "LLMESH_QUOTA_LOCAL_SHARE", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    quota_local_share: u32,
    /// Longest wait for one Redis command, e.g. `50ms`; past it the request
    /// is decided on the sidecar's local share and Redis is probed again
    /// once a second.
    #[arg(long, env = "LLMESH_QUOTA_REDIS_TIMEOUT", default_value = "50ms", value_parser = llmesh_policy::parse_duration)]
    quota_redis_timeout: Duration,
    /// Completion tokens a quota reserves for a request that sets no
    /// `max_tokens` (settled with the real count after the call).
    #[arg(long, env = "LLMESH_QUOTA_DEFAULT_MAX_TOKENS", default_value_t = 1024)]
    quota_default_max_tokens: u64,
    /// File holding the key that caller header values (scope `caller`) are
    /// hashed with; every sidecar sharing a store must use the same key.
    #[arg(long, env = "LLMESH_CALLER_HASH_KEY_FILE")]
    caller_hash_key_file: Option<PathBuf>,
    /// Largest request head (request line plus headers), in bytes; larger
    /// requests get 431. At least 8192.
    #[arg(long, default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Deepest JSON nesting accepted in a request body.
    #[arg(long, default_value_t = 64)]
    max_json_depth: usize,
    /// Most `messages` accepted in one request.
    #[arg(long, default_value_t = 2048)]
    max_messages: usize,
    /// Largest pass-through upload (multipart, audio, files) in bytes;
    /// it is streamed, never held whole. Larger ones get 413.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    max_upload_bytes: usize,
    /// Seconds the Responses conversation store keeps a response id
    /// (and, for translated upstreams, the conversation).
    #[arg(long, default_value_t = 24 * 3600)]
    responses_ttl_secs: u64,
    /// Most response ids the in-memory Responses store keeps (oldest out).
    #[arg(long, default_value_t = 10_000)]
    responses_max_entries: usize,
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
    /// Log line format: `json` (one object per line, for log pipelines) or
    /// `text` (for humans).
    #[arg(long, env = "LLMESH_LOG_FORMAT", value_enum, default_value_t = llmesh_proxy::logging::LogFormat::Json)]
    log_format: llmesh_proxy::logging::LogFormat,
    /// Export traces (OTLP over HTTP/protobuf) to this collector, e.g.
    /// `http://otel-collector.observability:4318`; `/v1/traces` is appended
    /// unless the URL ends with it. Unset or empty: no tracing at all.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0. A request whose
    /// `traceparent` carries a sampling decision follows it instead.
    #[arg(long, env = "LLMESH_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    trace_sample_ratio: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Auto,
    File,
    Kubernetes,
}

/// Whether a cluster configuration is at hand: in-cluster service account
/// or a kubeconfig.
fn cluster_config_present() -> bool {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return true;
    }
    if let Some(paths) = std::env::var_os("KUBECONFIG") {
        return std::env::split_paths(&paths).any(|p| p.is_file());
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube").join("config"))
        .is_some_and(|p| p.is_file())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let mut traces = llmesh_proxy::trace::start(
        args.otlp_endpoint.as_deref(),
        args.trace_sample_ratio,
        &Identity::from_env(),
        runtime.handle().clone(),
    )?;
    let layer = traces.as_mut().and_then(|t| t.take_layer());
    // Log lines are written by a background thread; the guard keeps it
    // running and, dropped last, writes out what is still queued, so the
    // lines of a normal exit (SIGTERM included) reach stdout.
    let log_guard = llmesh_proxy::logging::init_with(&args.log, args.log_format, layer)?;
    if traces.is_some() {
        tracing::info!(
            sample_ratio = args.trace_sample_ratio,
            "exporting traces over OTLP"
        );
    }
    let result = runtime.block_on(async move {
        let drops = tokio::spawn(llmesh_proxy::logging::warn_on_dropped_lines(
            Duration::from_secs(10),
        ));
        let result = run(args).await;
        if let Some(t) = traces {
            t.shutdown(Duration::from_secs(5)).await;
        }
        drops.abort();
        result
    });
    // Tasks still on the runtime may log as they are dropped: before the
    // log writer stops.
    drop(runtime);
    drop(log_guard);
    // The warning above only runs every few seconds: the last drops are
    // told on stderr, which is not the queue that overflowed.
    if let Some(n) = llmesh_proxy::logging::dropped_lines().filter(|&n| n > 0) {
        eprintln!("llmesh-proxy: {n} log lines were dropped because stdout could not keep up");
    }
    result
}

async fn run(args: Args) -> anyhow::Result<()> {
    let use_kube = match args.source {
        Source::Kubernetes => true,
        Source::File => false,
        Source::Auto => args.policy_file.is_none() && cluster_config_present(),
    };
    let kube = if use_kube {
        let client = kube::Client::try_default()
            .await
            .context("connecting to Kubernetes (no in-cluster config or usable kubeconfig); use --source file to run without a cluster")?;
        tracing::info!(
            platform_namespace = args.platform_namespace.as_str(),
            "policy source: kubernetes"
        );
        Some(llmesh_proxy::k8s::KubeSource {
            client,
            platform_namespace: Some(args.platform_namespace.clone()).filter(|p| !p.is_empty()),
        })
    } else {
        None
    };
    let policy_file = args
        .policy_file
        .unwrap_or_else(|| PathBuf::from("examples/local/policy.yaml"));
    let inbound_token = match &args.inbound_token_file {
        Some(path) => {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("reading the inbound token from {}", path.display()))?;
            let t = t.trim().to_string();
            anyhow::ensure!(
                !t.is_empty(),
                "the inbound token file {} is empty",
                path.display()
            );
            Some(t)
        }
        None => None,
    };
    let caller_hash_key = match &args.caller_hash_key_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading the caller hash key from {}", path.display()))?,
        None => Vec::new(),
    };
    let mut identity = Identity::from_env();
    if let Some(k) = &kube {
        // Outside a pod, the kubeconfig's namespace is the one to follow.
        if std::env::var_os("POD_NAMESPACE").is_none() {
            identity.namespace = k.client.default_namespace().to_string();
        }
    }
    let cfg = ProxyConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        admin_listen: args.admin_listen,
        policy_file,
        max_body_bytes: args.max_body_bytes,
        max_response_bytes: args.max_response_bytes,
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        ca_file: args.ca_file,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        identity,
        secrets_dir: args.secrets_dir,
        max_header_bytes: args.max_header_bytes,
        max_json_depth: args.max_json_depth,
        max_messages: args.max_messages,
        max_upload_bytes: args.max_upload_bytes,
        responses_ttl: Duration::from_secs(args.responses_ttl_secs.max(1)),
        responses_max_entries: args.responses_max_entries.max(1),
        inbound_token,
        kube,
        quota: llmesh_proxy::quota::QuotaSettings {
            store: args.quota_store,
            local_share: args.quota_local_share,
            default_max_tokens: args.quota_default_max_tokens,
            redis_timeout: args.quota_redis_timeout,
            caller_hash_key,
        },
    };
    let proxy = Proxy::start(cfg).await?;
    // One plain line for scripts and tests that start the binary on port 0.
    println!(
        "llmesh-proxy listening llm=http://{} metrics=http://{} admin=http://{}",
        proxy.llm_addr(),
        proxy.metrics_addr(),
        proxy.admin_addr()
    );
    llmesh_process::shutdown_signal().await;
    tracing::info!("shutdown signal received, draining");
    proxy.shutdown().await;
    Ok(())
}
