//! Logs on stdout: JSON lines by default (one per event, fields flattened
//! so a pipeline can index `request_id`, `cost_usd` and the rest), or text
//! for humans. The level can be changed at runtime through the admin port.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

type FilterHandle = reload::Handle<EnvFilter, Registry>;

static FILTER: OnceLock<(FilterHandle, std::sync::Mutex<String>)> = OnceLock::new();

/// Installs the subscriber with `filter` (tracing EnvFilter syntax).
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    init_with(filter, format, None)
}

/// As [`init`], with `traces` (the OpenTelemetry layer of
/// [`crate::trace::start`]) beside the log formatter. The log filter applies
/// to the formatter only: the trace layer has its own, so a log level
/// change neither starts nor stops spans.
pub fn init_with(
    filter: &str,
    format: LogFormat,
    traces: Option<crate::trace::BoxedLayer>,
) -> anyhow::Result<()> {
    let env = parse(filter)?;
    let (filter_layer, handle) = reload::Layer::new(env);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .with_writer(std::io::stdout)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_writer(std::io::stdout)
            .boxed(),
    };
    // The filter wraps the formatter, so a level change applies to it.
    let mut layers = vec![fmt.with_filter(filter_layer).boxed()];
    layers.extend(traces);
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the logger: {e}"))?;
    let _ = FILTER.set((handle, std::sync::Mutex::new(filter.to_string())));
    Ok(())
}

fn parse(filter: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("invalid log filter {filter:?}: {e}"))
}

/// The filter in force, when the logger was installed by [`init`].
pub fn current() -> Option<String> {
    FILTER
        .get()
        .and_then(|(_, cur)| cur.lock().ok().map(|g| g.clone()))
}

/// Why a level change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SetLevelError {
    /// Not a valid filter.
    #[error("{0}")]
    Invalid(String),
    /// The process did not install the logger (in-process tests).
    #[error("the logger is not installed in this process")]
    NotInstalled,
}

/// Replaces the filter, e.g. `debug` or `info,llmesh=debug`.
pub fn set(filter: &str) -> Result<(), SetLevelError> {
    let (handle, cur) = FILTER.get().ok_or(SetLevelError::NotInstalled)?;
    let env = parse(filter).map_err(|e| SetLevelError::Invalid(e.to_string()))?;
    handle
        .reload(env)
        .map_err(|e| SetLevelError::Invalid(e.to_string()))?;
    if let Ok(mut g) = cur.lock() {
        *g = filter.to_string();
    }
    tracing::info!(filter, "log filter changed");
    Ok(())
}
