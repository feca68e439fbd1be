//! Logs on stdout: JSON lines by default (one per event, fields flattened
//! so a pipeline can index `request_id`, `cost_usd` and the rest), or text
//! for humans. The level can be changed at runtime through the admin port.
//!
//! Lines leave the thread that logs them through a queue of
//! [`BUFFERED_LINES`] lines; a background thread writes them to stdout, so
//! no request waits on a synchronous write to a slow log pipe. When stdout
//! falls so far behind that the queue is full, new lines are dropped rather
//! than stalling requests, and counted ([`dropped_lines`]). The
//! [`LogGuard`] that [`init`] returns must live until the process exits:
//! dropping it writes out what is still queued.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

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

/// Lines the queue to the writer thread holds before new ones are dropped:
/// seconds of access lines at a busy sidecar's rate, enough to ride out a
/// stalled log pipe. The queue's slots are allocated up front (32 bytes
/// each), so this is also resident memory: 0.5 MiB at 16k lines, where
/// 128k lines cost the idle sidecar 4 MiB (`make bench`).
pub const BUFFERED_LINES: usize = 16 * 1024;

/// How many lines were dropped because the queue was full, once
/// [`init`] ran.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the log writer thread running; dropping it writes out the lines
/// still queued (waiting up to about a second) and stops the thread. Hold
/// it in `main` until everything that logs has finished.
#[must_use = "dropping the guard stops the log writer: hold it until the process exits"]
#[derive(Debug)]
pub struct LogGuard {
    _worker: WorkerGuard,
}

/// Log lines dropped so far because stdout could not keep up and the
/// queue was full; `None` when the logger is not installed.
pub fn dropped_lines() -> Option<u64> {
    DROPPED
        .get()
        .map(|c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}

/// Every `every`, a warning when lines were dropped since the last look
/// (with the count since then and in all), so a log pipeline that misses
/// lines is told so in the log itself once it catches up. Runs until the
/// task is dropped; returns at once when the logger is not installed.
pub async fn warn_on_dropped_lines(every: std::time::Duration) {
    let Some(counter) = DROPPED.get() else {
        return;
    };
    let mut reported = 0usize;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let total = counter.dropped_lines();
        if total > reported {
            tracing::warn!(
                dropped_lines = total - reported,
                dropped_lines_total = total,
                "log lines dropped: stdout is slower than the log rate"
            );
            reported = total;
        }
    }
}

/// Installs the subscriber with `filter` (tracing EnvFilter syntax).
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<LogGuard> {
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
) -> anyhow::Result<LogGuard> {
    let env = parse(filter)?;
    let (filter_layer, handle) = reload::Layer::new(env);
    // Lossy (the default): a full queue drops the line instead of blocking
    // the request that logs it; the drops are counted.
    let (writer, worker) = NonBlockingBuilder::default()
        .buffered_lines_limit(BUFFERED_LINES)
        .lossy(true)
        .thread_name("llmesh-log")
        .finish(std::io::stdout());
    let dropped = writer.error_counter();
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_writer(writer)
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
    let _ = DROPPED.set(dropped);
    Ok(LogGuard { _worker: worker })
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
