//! Settings of the Redis store and its connection.

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (default `redis://127.0.0.1:6379/0`).
    pub url: String,
    /// Longest wait for one command; past it the call counts as a failure
    /// and the request is decided locally (default 50 ms).
    pub command_timeout: Duration,
    /// Longest wait for a connection attempt (default 100 ms).
    pub connect_timeout: Duration,
    /// While Redis is unreachable, each sidecar enforces every limit
    /// divided by this: the number of sidecars expected to share a budget
    /// (default 1: each keeps the whole limit, so N sidecars may together
    /// admit up to N times it during an outage).
    pub local_share_divisor: u32,
    /// Lifetime of a concurrency slot: a slot whose sidecar died unsettled
    /// frees itself after this (default 10 minutes; a call still running
    /// past it stops being counted as in flight).
    pub lease: Duration,
    /// How long a window's counter outlives the window, so late
    /// settlements still land (default 60 s).
    pub key_slack: Duration,
    /// While degraded, one request per interval tries Redis again
    /// (default 1 s); the others go straight to the local fallback.
    pub probe_interval: Duration,
    /// Settlements that could not reach Redis, held for replay when it is
    /// back (default 10 000; beyond it they are counted and logged).
    pub max_pending_settlements: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            command_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(100),
            local_share_divisor: 1,
            lease: Duration::from_secs(600),
            key_slack: Duration::from_secs(60),
            probe_interval: Duration::from_secs(1),
            max_pending_settlements: 10_000,
        }
    }
}

/// Connection settings: short timeouts and one quick retry, so a dead
/// Redis costs a request at most about one command timeout, and only the
/// probing request pays it while degraded.
pub(crate) fn manager_config(cfg: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(cfg.command_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(200))
}
