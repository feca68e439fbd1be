//! Usage records: one per request (never prompt or completion text),
//! appended to a Redis stream by a bounded buffered writer. A record that
//! cannot be delivered is retried while the buffer has room; one that
//! cannot be held, or is still undelivered when shutdown's deadline
//! passes, is counted and logged, never lost silently.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::caller::CallerId;
use crate::redis_store::{manager_config, RedisConfig};
use crate::window::unix_ms;

/// The default stream.
pub const USAGE_STREAM: &str = "llmesh:usage";

/// One request's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// When the call ended.
    pub ts: SystemTime,
    /// Sidecar's namespace.
    pub namespace: String,
    /// Sidecar's workload.
    pub workload: String,
    /// Sidecar's pod.
    pub pod: String,
    /// Route name.
    pub route: String,
    /// Provider name.
    pub provider: String,
    /// Model served.
    pub model: String,
    /// Prompt tokens (cached included).
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic's
    /// `cache_creation_input_tokens`).
    pub cache_write_input_tokens: u64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// HTTP status returned to the client.
    pub status: u16,
    /// Hashed caller, when a caller header was present.
    pub caller_hash: Option<CallerId>,
}

impl UsageRecord {
    /// The stream entry's fields, in a fixed order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("ts", unix_ms(self.ts).to_string()),
            ("namespace", self.namespace.clone()),
            ("workload", self.workload.clone()),
            ("pod", self.pod.clone()),
            ("route", self.route.clone()),
            ("provider", self.provider.clone()),
            ("model", self.model.clone()),
            ("input_tokens", self.input_tokens.to_string()),
            ("output_tokens", self.output_tokens.to_string()),
            ("cached_input_tokens", self.cached_input_tokens.to_string()),
            (
                "cache_write_input_tokens",
                self.cache_write_input_tokens.to_string(),
            ),
            // Shortest text that reads back as the same f64.
            ("cost_usd", self.cost_usd.to_string()),
            ("status", self.status.to_string()),
        ];
        if let Some(c) = &self.caller_hash {
            f.push(("caller_hash", c.to_string()));
        }
        f
    }

    /// Reads a stream entry's fields back; missing numbers count as 0.
    pub fn from_fields(f: &HashMap<String, String>) -> UsageRecord {
        let text = |k: &str| f.get(k).cloned().unwrap_or_default();
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        UsageRecord {
            ts: UNIX_EPOCH + Duration::from_millis(num("ts")),
            namespace: text("namespace"),
            workload: text("workload"),
            pod: text("pod"),
            route: text("route"),
            provider: text("provider"),
            model: text("model"),
            input_tokens: num("input_tokens"),
            output_tokens: num("output_tokens"),
            cached_input_tokens: num("cached_input_tokens"),
            // Absent from records written before the field existed: 0.
            cache_write_input_tokens: num("cache_write_input_tokens"),
            cost_usd: f
                .get("cost_usd")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0),
            status: num("status") as u16,
            caller_hash: f.get("caller_hash").and_then(|h| CallerId::from_hex(h)),
        }
    }
}

/// Settings of the usage writer.
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// Redis to write to (its `url`, `connect_timeout`; commands get
    /// `write_timeout`).
    pub redis: RedisConfig,
    /// Stream key (default `llmesh:usage`).
    pub stream: String,
    /// `XADD ... MAXLEN ~ n`: the stream keeps about this many records
    /// (default 1 000 000).
    pub max_len: u64,
    /// Records held while Redis is slow or down (default 10 000).
    pub buffer: usize,
    /// Records per pipelined write (default 256).
    pub batch: usize,
    /// Longest wait for one pipelined write (default 1 s).
    pub write_timeout: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            redis: RedisConfig::default(),
            stream: USAGE_STREAM.into(),
            max_len: 1_000_000,
            buffer: 10_000,
            batch: 256,
            write_timeout: Duration::from_secs(1),
        }
    }
}

/// What the writer did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageStats {
    /// Records held and not yet written (waiting, or in the batch being
    /// written).
    pub queued: u64,
    /// Records written.
    pub delivered: u64,
    /// Records given up (buffer full, or undelivered at shutdown), logged.
    pub dropped: u64,
    /// Writes that failed and were retried.
    pub failed_writes: u64,
}

/// Appends usage records to a Redis stream from a background task.
#[derive(Debug)]
pub struct UsageWriter {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    cfg: UsageConfig,
    queue: Mutex<VecDeque<UsageRecord>>,
    wake: Notify,
    closing: AtomicBool,
    failing: AtomicBool,
    delivered: AtomicU64,
    dropped: AtomicU64,
    failed_writes: AtomicU64,
    /// Records taken off the queue into the batch being written: still
    /// held, so they count as queued and against the buffer. Changed only
    /// under the queue's lock.
    writing: AtomicU64,
}

impl UsageWriter {
    /// Starts the writer (connects lazily). Must be called inside a tokio
    /// runtime.
    pub fn new(cfg: UsageConfig) -> Result<UsageWriter, redis::RedisError> {
        let client = redis::Client::open(cfg.redis.url.as_str())?;
        let mut mc = manager_config(&cfg.redis);
        mc = mc.set_response_timeout(Some(cfg.write_timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, mc)?;
        let inner = Arc::new(Inner {
            cfg,
            queue: Mutex::default(),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed_writes: AtomicU64::new(0),
            writing: AtomicU64::new(0),
        });
        let task = tokio::spawn(inner.clone().run(conn));
        Ok(UsageWriter {
            inner,
            task: Mutex::new(Some(task)),
        })
    }

    /// Queues a record; never waits. When the buffer is full the record is
    /// dropped, counted and logged.
    pub fn record(&self, r: UsageRecord) {
        let i = &self.inner;
        {
            let mut q = i.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let held = q.len() as u64 + i.writing.load(Ordering::Relaxed);
            if held >= i.cfg.buffer as u64 || i.closing.load(Ordering::Acquire) {
                drop(q);
                i.dropped_n(1, "usage buffer full (or writer shut down)");
                return;
            }
            q.push_back(r);
        }
        i.wake.notify_one();
    }

    /// Counters.
    pub fn stats(&self) -> UsageStats {
        self.inner.stats()
    }

    /// Writes what is held, waiting at most `deadline`; whatever is still
    /// undelivered then is counted as dropped and logged. Records queued
    /// after this are dropped (and counted).
    pub async fn shutdown(&self, deadline: Duration) -> UsageStats {
        let i = &self.inner;
        i.closing.store(true, Ordering::Release);
        i.wake.notify_one();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        let left = {
            let mut q = i.queue.lock().unwrap_or_else(PoisonError::into_inner);
            // A batch cut off mid-write by the deadline is lost too.
            let n = q.len() as u64 + i.writing.swap(0, Ordering::Relaxed);
            q.clear();
            n
        };
        if left > 0 {
            i.dropped_n(left, "usage records undelivered at shutdown");
        }
        i.stats()
    }
}

impl Inner {
    fn stats(&self) -> UsageStats {
        let queued = {
            let q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.len() as u64 + self.writing.load(Ordering::Relaxed)
        };
        UsageStats {
            queued,
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed_writes: self.failed_writes.load(Ordering::Relaxed),
        }
    }

    fn dropped_n(&self, n: u64, why: &str) {
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        // Logged on the first loss and then each time the total passes a
        // power of two, so a long outage cannot flood the log.
        if before == 0 || after.ilog2() != before.ilog2() {
            tracing::error!(dropped_total = after, dropped_now = n, "{why}");
        }
    }

    async fn run(self: Arc<Self>, mut conn: ConnectionManager) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let batch: Vec<UsageRecord> = {
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                let n = q.len().min(self.cfg.batch);
                self.writing.store(n as u64, Ordering::Relaxed);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                if self.closing.load(Ordering::Acquire) {
                    return;
                }
                self.wake.notified().await;
                continue;
            }
            match self.write(&mut conn, &batch).await {
                Ok(()) => {
                    {
                        let _q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                        self.delivered
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        self.writing.store(0, Ordering::Relaxed);
                    }
                    backoff = Duration::from_millis(50);
                    if self.failing.swap(false, Ordering::AcqRel) {
                        tracing::info!(stream = %self.cfg.stream, "usage records delivered again");
                    }
                }
                Err(e) => {
                    self.failed_writes.fetch_add(1, Ordering::Relaxed);
                    if !self.failing.swap(true, Ordering::AcqRel) {
                        tracing::warn!(stream = %self.cfg.stream, error = %e, "usage records not delivered; holding and retrying");
                    }
                    // Back in front, in order. Records queued meanwhile
                    // may now exceed the bound: the newest beyond it are
                    // counted and logged.
                    let over = {
                        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                        for r in batch.into_iter().rev() {
                            q.push_front(r);
                        }
                        self.writing.store(0, Ordering::Relaxed);
                        let over = q.len().saturating_sub(self.cfg.buffer);
                        q.truncate(self.cfg.buffer);
                        over as u64
                    };
                    if over > 0 {
                        self.dropped_n(over, "usage buffer full while Redis is unreachable");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn write(
        &self,
        conn: &mut ConnectionManager,
        batch: &[UsageRecord],
    ) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for r in batch {
            let fields = r.fields();
            pipe.cmd("XADD")
                .arg(&self.cfg.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.cfg.max_len)
                .arg("*")
                .arg(&fields[..])
                .ignore();
        }
        tokio::time::timeout(self.cfg.write_timeout, pipe.query_async::<()>(conn))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
    }
}
