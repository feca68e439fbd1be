//! JSON logs on stdout, one line per event, as the sidecar writes them.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber. Fields of the event are flattened into the
/// line so a log pipeline can index `resource`, `generation` and the rest.
pub fn init(filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid --log filter {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
