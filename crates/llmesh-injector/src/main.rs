//! `llmesh-injector`: serves the sidecar injection webhook.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use llmesh_injector::config::NativeSidecar;
use llmesh_injector::{cluster, tls, Injector, Server, SidecarConfig};

/// Mutating admission webhook adding the llmesh sidecar to pods annotated
/// `llmesh.io/inject: "true"` or in namespaces labelled
/// `llmesh.io/injection=enabled`.
#[derive(Parser, Debug)]
#[command(name = "llmesh-injector", version)]
struct Args {
    /// HTTPS address the API server calls.
    #[arg(long, env = "LLMESH_INJECTOR_LISTEN", default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// Sidecar settings (YAML: image, ports, resources, credentialSecrets,
    /// quota, nativeSidecar...). Without it, the built-in defaults.
    #[arg(long, env = "LLMESH_INJECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Serving certificate (PEM), watched and reloaded when it changes.
    /// Without it (and --key-file), the injector makes its own CA and
    /// certificate, keeps them in --tls-secret and sets the caBundle of
    /// --webhook-config.
    #[arg(long, env = "LLMESH_INJECTOR_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// Private key of --cert-file (PEM).
    #[arg(long, env = "LLMESH_INJECTOR_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// The injector's namespace: never injected, holds --tls-secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "llmesh-system")]
    namespace: String,
    /// Service in front of the injector (names in the generated certificate).
    #[arg(
        long,
        env = "LLMESH_INJECTOR_SERVICE",
        default_value = "llmesh-injector"
    )]
    service: String,
    /// MutatingWebhookConfiguration whose caBundle the injector sets.
    #[arg(
        long,
        env = "LLMESH_INJECTOR_WEBHOOK_CONFIG",
        default_value = "llmesh-injector"
    )]
    webhook_config: String,
    /// Secret holding the self-generated CA and certificate, shared by replicas.
    #[arg(
        long,
        env = "LLMESH_INJECTOR_TLS_SECRET",
        default_value = "llmesh-injector-tls"
    )]
    tls_secret: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "LLMESH_LOG", default_value = "info")]
    log: String,
    /// Seconds to keep answering after SIGTERM, while the Service stops
    /// sending to this replica: a review cut off mid-way would, with
    /// failurePolicy Ignore, let a pod through without its sidecar.
    #[arg(long, env = "LLMESH_INJECTOR_DRAIN_SECS", default_value_t = 5)]
    drain_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    llmesh_process::init_json_logs(&args.log)?;
    let sidecar = match &args.config {
        Some(path) => SidecarConfig::from_file(path)?,
        None => SidecarConfig::default(),
    };
    // The cluster is needed for a self-generated certificate and to learn
    // whether native sidecars are available; with files and a fixed
    // nativeSidecar setting the injector runs without API access.
    let needs_cluster = args.cert_file.is_none() || sidecar.native_sidecar == NativeSidecar::Auto;
    let client = if needs_cluster {
        Some(kube::Client::try_default().await.context(
            "connecting to Kubernetes (needed without --cert-file, or with nativeSidecar: auto)",
        )?)
    } else {
        None
    };
    let native = match (sidecar.native_sidecar, &client) {
        (NativeSidecar::Always, _) => true,
        (NativeSidecar::Never, _) => false,
        (NativeSidecar::Auto, Some(c)) => cluster::supports_native_sidecars(c)
            .await
            .context("reading the API server version (nativeSidecar: auto)")?,
        (NativeSidecar::Auto, None) => false,
    };
    tracing::info!(
        native,
        image = sidecar.image.as_str(),
        "sidecar settings loaded"
    );

    let (store, _watcher) = match (&args.cert_file, &args.key_file, &client) {
        (Some(cert), Some(key), _) => {
            let ck = tls::load_files(cert, key)?;
            let store = tls::CertStore::new(ck);
            let watcher = tls::watch_files(store.clone(), cert.clone(), key.clone())
                .context("watching the certificate files")?;
            (store, Some(watcher))
        }
        (_, _, Some(c)) => {
            let g = cluster::shared_certificate(
                c.clone(),
                &args.namespace,
                &args.tls_secret,
                &args.service,
            )
            .await?;
            let ck = tls::certified_key(g.cert_pem.as_bytes(), g.key_pem.as_bytes())?;
            cluster::patch_ca_bundle(c.clone(), &args.webhook_config, &g.ca_pem).await?;
            // Put the caBundle back should an upgrade or a hand edit drop it.
            let (c, name, ca) = (c.clone(), args.webhook_config.clone(), g.ca_pem.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    if let Err(e) = cluster::patch_ca_bundle(c.clone(), &name, &ca).await {
                        tracing::warn!(error = %e, "checking the caBundle");
                    }
                }
            });
            (tls::CertStore::new(ck), None)
        }
        _ => anyhow::bail!("no certificate: give --cert-file and --key-file, or run in a cluster"),
    };

    let injector = Injector {
        sidecar,
        native,
        own_namespace: args.namespace.clone(),
    };
    let server = Server::start(args.listen, injector, store).await?;
    println!("llmesh-injector listening https://{}", server.addr());
    tracing::info!(addr = %server.addr(), "serving");
    llmesh_process::shutdown_signal().await;
    tracing::info!(
        drain_secs = args.drain_secs,
        "shutdown signal received; still answering while endpoints update"
    );
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.drain_secs)) => {},
        _ = llmesh_process::shutdown_signal() => {},
    }
    drop(server);
    Ok(())
}
