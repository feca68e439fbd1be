//! What every llmesh binary does at its edges: JSON log lines on stdout
//! and waiting for SIGTERM or Ctrl-C. (The sidecar's logging, which can
//! also print text and change level at runtime, is its own.)
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

use tracing_subscriber::EnvFilter;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The `--log` filter does not parse.
    #[error("invalid --log filter {filter:?}: {reason}")]
    Filter {
        /// The filter given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("installing the logger: {0}")]
    Install(String),
}

/// Installs JSON logs on stdout, one line per event, with the event's
/// fields flattened into the line (so a pipeline can index them) and its
/// target, filtered by `filter` (tracing `EnvFilter` syntax).
pub fn init_json_logs(filter: &str) -> Result<(), LogError> {
    let env = EnvFilter::try_new(filter).map_err(|e| LogError::Filter {
        filter: filter.to_string(),
        reason: e.to_string(),
    })?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(env)
        .with_writer(std::io::stdout)
        .try_init()
        .map_err(|e| LogError::Install(e.to_string()))
}

/// Resolves at the first SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn shutdown_signal() {
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
