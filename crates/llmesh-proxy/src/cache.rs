//! The exact response cache (`LLMRoute.spec.cache.exact`): a request
//! identical to an earlier one of the same route is answered with the
//! earlier answer, without calling the provider, admitting against quotas
//! or paying.
//!
//! - **Key**: SHA-256 of the namespace, the route, a fingerprint of the
//!   route's backends (so a changed backend or model is never served the
//!   old one's answers), the client's API, whether it streams, and the body
//!   the provider would get (after the data policy) with its keys sorted
//!   and the fields that do not change the answer left out (`user`,
//!   `metadata`, `store`, `safety_identifier`, `prompt_cache_key`).
//! - **What is cached**: successful answers, in the client's format and
//!   before redacted values are put back (so the key and the stored answer
//!   hold placeholders; a hit gets the originals of its own request). A
//!   whole answer serves whole requests, a completed stream serves
//!   streamed ones, replayed event for event.
//! - **When**: deterministic requests (`temperature: 0`, embeddings), every
//!   request with `mode: always`, or one that asks with `x-llmesh-cache:
//!   on`; `x-llmesh-cache: off` bypasses the cache and `refresh` replaces
//!   the stored answer. A request the data policy found anything in is
//!   never cached, nor a Responses call continuing a conversation.
//! - **Stores**: a bounded LRU per route in each sidecar, or the Redis of
//!   the quota store, shared by the namespace's sidecars (a lookup that
//!   fails or times out is a miss: the provider answers).

pub mod semantic;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use llmesh_api::CacheStore;
use llmesh_policy::{CacheSettings, Route};
use llmesh_wire::{Dialect, Usage};
use lru::LruCache;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::upstream::Operation;

/// Top-level request fields that do not change the answer.
pub(crate) const IGNORED: &[&str] = &[
    "user",
    "metadata",
    "store",
    "safety_identifier",
    "prompt_cache_key",
];

/// A cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub(crate) [u8; 32]);

impl Key {
    pub(crate) fn hex(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    /// Header fields.
    pub meta: EntryMeta,
    /// The answer in the client's format (SSE text for a stream), with the
    /// request's placeholders.
    pub body: Bytes,
}

/// What is stored next to an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryMeta {
    /// A recorded stream (else a whole body).
    pub stream: bool,
    /// The provider that answered.
    pub provider: String,
    /// The model sent upstream.
    pub model: String,
    /// The model the upstream said answered.
    #[serde(default)]
    pub response_model: Option<String>,
    /// Input, output, cached-input and cache-write tokens the call was
    /// billed (see [`EntryMeta::usage`]).
    #[serde(default)]
    pub tokens: Option<[u64; 4]>,
    /// When it was stored (Unix ms).
    pub stored_ms: u64,
    /// When it stops being served (Unix ms).
    pub expires_ms: u64,
}

impl EntryMeta {
    /// The usage the call that answered was billed, if it reported any.
    pub fn usage(&self) -> Option<Usage> {
        self.tokens.map(|[input, output, cached, write]| Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            cache_write_input_tokens: write,
        })
    }
}

impl Entry {
    fn size(&self) -> u64 {
        self.body.len() as u64 + 256
    }

    /// The stored answer as Redis keeps it: the header as a JSON line,
    /// then the body.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = serde_json::to_vec(&self.meta)?;
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Entry> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let meta: EntryMeta = serde_json::from_slice(&bytes[..nl]).ok()?;
        Some(Entry {
            meta,
            body: Bytes::copy_from_slice(&bytes[nl + 1..]),
        })
    }

    /// Seconds since it was stored.
    pub fn age_secs(&self) -> u64 {
        unix_ms().saturating_sub(self.meta.stored_ms) / 1000
    }
}

pub(crate) fn unix_ms() -> u64 {
    crate::clock::wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Mem {
    lru: LruCache<Key, Arc<Entry>>,
    bytes: u64,
}

/// One route's cache. Kept across reloads while the route's cache settings
/// and backends stay the same; a changed route gets a new, empty one.
pub struct RouteCache {
    pub(crate) route: Arc<str>,
    /// The exact cache's settings, when the route has one.
    pub(crate) exact: Option<CacheSettings>,
    /// The semantic cache, when the route has one.
    pub(crate) semantic: Option<semantic::Index>,
    /// Namespace, route and backends: part of every key.
    pub(crate) scope: [u8; 32],
    /// Redis key prefix (`llmesh:cache:{ns}:route:`), when the store is
    /// Redis.
    prefix: String,
    mem: Mutex<Mem>,
    redis: Option<ConnectionManager>,
    redis_timeout: Duration,
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("route", &self.route)
            .field("exact", &self.exact)
            .field("semantic", &self.semantic.as_ref().map(|s| &s.settings))
            .finish_non_exhaustive()
    }
}

impl RouteCache {
    /// What every key of `route`'s cache starts from: its namespace, name
    /// and backends (provider, base URL, schema, model), so a changed
    /// backend never finds the old answers.
    fn scope(route: &Route) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [route.namespace.as_str(), route.name.as_str()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let chains =
            std::iter::once(&route.backends).chain(route.fallbacks.iter().map(|f| &f.backends));
        for (i, chain) in chains.enumerate() {
            h.update(format!("chain {i}\0"));
            for b in chain {
                let p = &b.provider;
                h.update(format!(
                    "{}\0{}\0{:?}\0{}\0",
                    p.name,
                    p.base_url.original,
                    p.schema,
                    b.model.as_deref().unwrap_or("*")
                ));
            }
        }
        h.finalize().into()
    }

    fn new(
        route: &Route,
        exact: Option<CacheSettings>,
        scope: [u8; 32],
        redis: Option<&RedisHandle>,
    ) -> RouteCache {
        let exact_redis = match exact.map(|e| e.store) {
            Some(CacheStore::Redis) => redis,
            _ => None,
        };
        let cap = NonZeroUsize::new(exact.map_or(1, |e| e.max_entries) as usize)
            .unwrap_or(NonZeroUsize::MIN);
        RouteCache {
            route: Arc::from(route.name.as_str()),
            exact,
            semantic: route
                .semantic_cache
                .clone()
                .map(|s| semantic::Index::new(route, s, redis)),
            scope,
            prefix: format!("llmesh:cache:{{{}}}:{}:", route.namespace, route.name),
            mem: Mutex::new(Mem {
                lru: LruCache::new(cap),
                bytes: 0,
            }),
            redis: exact_redis.map(|r| r.conn.clone()),
            redis_timeout: exact_redis.map_or(Duration::ZERO, |r| r.timeout),
        }
    }

    /// Whether this cache was made for `route` as it is now: same
    /// backends and the same cache settings.
    fn serves(&self, route: &Route, scope: &[u8; 32]) -> bool {
        let semantic_same = match (&self.semantic, &route.semantic_cache) {
            (None, None) => true,
            (Some(a), Some(b)) => a.settings.same_index(b),
            _ => false,
        };
        self.scope == *scope && self.exact == route.cache && semantic_same
    }

    /// Where the answer to the request under `key` is to be stored.
    pub fn pending(self: &Arc<Self>, key: Key) -> Pending {
        Pending {
            cache: self.clone(),
            key: Some(key),
            semantic: None,
        }
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries and bytes in this sidecar's memory, exact and semantic.
    pub fn usage(&self) -> (usize, u64) {
        let (n, b) = self.semantic.as_ref().map_or((0, 0), |s| s.usage());
        let m = self.mem();
        (m.lru.len() + n, m.bytes + b)
    }

    /// The key of a request body `body` (parsed) in `client`'s API, of
    /// data class `data_class` (a class declared by header leaves the body
    /// as it is, so it is keyed apart).
    pub fn key(
        &self,
        client: Dialect,
        op: Operation,
        stream: bool,
        data_class: &str,
        body: &Value,
    ) -> Key {
        let mut h = Sha256::new();
        h.update(b"llmesh-cache-v1\0");
        h.update(self.scope);
        h.update(format!(
            "{}\0{:?}\0{stream}\0{data_class}\0",
            client.as_str(),
            op
        ));
        match body {
            Value::Object(o) => canonical_object(o, IGNORED, &mut h),
            other => canonical(other, &mut h),
        }
        Key(h.finalize().into())
    }

    fn redis_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.hex())
    }

    /// The answer stored under `key`, if one is still fresh. `Err` when the
    /// shared store could not be read (the request goes to the provider).
    pub async fn get(&self, key: &Key) -> Result<Option<Arc<Entry>>, String> {
        let now = unix_ms();
        if let Some(conn) = &self.redis {
            let mut conn = conn.clone();
            let mut get = redis::cmd("GET");
            get.arg(self.redis_key(key));
            let cmd = get.query_async::<Option<Vec<u8>>>(&mut conn);
            let got = tokio::time::timeout(self.redis_timeout, cmd)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            return Ok(got
                .and_then(|b| Entry::decode(&b))
                .filter(|e| e.meta.expires_ms > now)
                .map(Arc::new));
        }
        let mut m = self.mem();
        match m.lru.get(key) {
            Some(e) if e.meta.expires_ms > now => Ok(Some(e.clone())),
            Some(_) => {
                if let Some(old) = m.lru.pop(key) {
                    m.bytes = m.bytes.saturating_sub(old.size());
                }
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Stores `entry` under `key` (Redis: from a task, off the request
    /// path). Too large an answer is not stored.
    pub fn put(self: &Arc<Self>, key: Key, entry: Entry) {
        let Some(settings) = self.exact else {
            return;
        };
        if entry.size() > settings.max_bytes / 16 {
            return;
        }
        if let Some(conn) = &self.redis {
            let conn = conn.clone();
            let k = self.redis_key(&key);
            let ttl = settings.ttl.as_millis() as u64;
            let value = match entry.encode() {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "response cache: the answer could not be encoded; not stored");
                    return;
                }
            };
            let timeout = self.redis_timeout;
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(k)
                .arg(value)
                .arg("PX")
                .arg(ttl.max(1))
                .ignore();
            write_behind(conn, pipe, timeout, "response cache");
            return;
        }
        let size = entry.size();
        let mut m = self.mem();
        if let Some((_, old)) = m.lru.push(key, Arc::new(entry)) {
            m.bytes = m.bytes.saturating_sub(old.size());
        }
        m.bytes += size;
        while m.bytes > settings.max_bytes {
            match m.lru.pop_lru() {
                Some((_, old)) => m.bytes = m.bytes.saturating_sub(old.size()),
                None => break,
            }
        }
    }

    /// Removes every answer of the route: this sidecar's memory, and the
    /// namespace's Redis keys of the route. Returns how many were removed.
    pub async fn purge(&self) -> Result<u64, String> {
        let mut n = {
            let mut m = self.mem();
            let n = m.lru.len() as u64;
            m.lru.clear();
            m.bytes = 0;
            n
        };
        n += self.semantic.as_ref().map_or(0, |s| s.clear());
        let shared = self.redis.is_some() || self.semantic.as_ref().is_some_and(|s| s.shared());
        let conn = self
            .redis
            .as_ref()
            .or_else(|| self.semantic.as_ref().and_then(|s| s.connection()));
        let (true, Some(conn)) = (shared, conn) else {
            return Ok(n);
        };
        let mut conn = conn.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !keys.is_empty() {
                let removed: u64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                n += removed;
            }
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }
}

/// Runs `pipe` on `conn` from a task, off the request path: a write that
/// fails or outlasts four lookup timeouts is logged (as `what`) and lost,
/// which costs a later miss, never an answer.
pub(crate) fn write_behind(
    mut conn: ConnectionManager,
    pipe: redis::Pipeline,
    timeout: Duration,
    what: &'static str,
) {
    tokio::spawn(async move {
        match tokio::time::timeout(timeout * 4, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "{what}: redis write failed"),
            Err(_) => tracing::warn!("{what}: redis write timed out"),
        }
    });
}

/// Feeds an object to the hasher, keys sorted, those in `skip` left out.
pub(crate) fn canonical_object(o: &serde_json::Map<String, Value>, skip: &[&str], h: &mut Sha256) {
    let mut keys: Vec<&String> = o.keys().filter(|k| !skip.contains(&k.as_str())).collect();
    keys.sort();
    h.update(b"{");
    for k in keys {
        h.update(Value::String(k.clone()).to_string().as_bytes());
        h.update(b":");
        canonical(&o[k], h);
        h.update(b",");
    }
    h.update(b"}");
}

/// Feeds a canonical form of `v` (object keys sorted) to the hasher.
fn canonical(v: &Value, h: &mut Sha256) {
    match v {
        Value::Object(o) => canonical_object(o, &[], h),
        Value::Array(a) => {
            h.update(b"[");
            for x in a {
                canonical(x, h);
                h.update(b",");
            }
            h.update(b"]");
        }
        // `0` and `0.0` are the same setting.
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9e15 => {
                h.update(format!("{}", f as i64).as_bytes())
            }
            _ => h.update(n.to_string().as_bytes()),
        },
        other => h.update(other.to_string().as_bytes()),
    }
}

/// The shared store's connection, for routes with `store: redis`.
#[derive(Clone)]
pub struct RedisHandle {
    pub(crate) conn: ConnectionManager,
    pub(crate) timeout: Duration,
}

/// Every route's cache, carried from table to table.
#[derive(Default)]
pub struct Caches {
    live: Mutex<HashMap<String, Arc<RouteCache>>>,
    redis: OnceLock<RedisHandle>,
}

impl Caches {
    /// Uses the Redis at `url` for routes with `store: redis`.
    pub fn set_redis(&self, url: &str, timeout: Duration) {
        let response_timeout = timeout.max(Duration::from_millis(200));
        if let Some(conn) = crate::quota::side_connection(url, response_timeout) {
            let _ = self.redis.set(RedisHandle { conn, timeout });
        }
    }

    /// The caches in use, by route.
    pub fn all(&self) -> Vec<Arc<RouteCache>> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The cache of `route`, if it has one.
    pub fn get(&self, route: &str) -> Option<Arc<RouteCache>> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
            .cloned()
    }
}

/// The caches a new table uses; the old ones of routes whose cache
/// changed are dropped when the table is committed.
#[derive(Default)]
pub struct CacheBuilder {
    taken: HashMap<String, Arc<RouteCache>>,
}

impl CacheBuilder {
    /// `route`'s cache: the live one while its settings and backends are
    /// unchanged, else a new one.
    pub fn cache(&mut self, caches: &Caches, route: &Route) -> Option<Arc<RouteCache>> {
        if route.cache.is_none() && route.semantic_cache.is_none() {
            return None;
        }
        let scope = RouteCache::scope(route);
        let live = caches
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&route.name)
            .cloned();
        let cache = match live {
            Some(c) if c.serves(route, &scope) => c,
            _ => Arc::new(RouteCache::new(
                route,
                route.cache,
                scope,
                caches.redis.get(),
            )),
        };
        self.taken.insert(route.name.clone(), cache.clone());
        Some(cache)
    }

    /// Makes this table's caches the live ones.
    pub fn commit(self, caches: &Caches) {
        *caches.live.lock().unwrap_or_else(PoisonError::into_inner) = self.taken;
    }
}

/// Who answered a request, and what it was billed.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The provider.
    pub provider: String,
    /// The model sent upstream.
    pub model: String,
    /// The usage the upstream reported.
    pub usage: Option<Usage>,
    /// The model the upstream said answered.
    pub response_model: Option<String>,
}

/// Where a request's answer goes once it has one.
#[derive(Clone)]
pub struct Pending {
    pub(crate) cache: Arc<RouteCache>,
    /// Its exact key, when the exact cache stores it.
    pub(crate) key: Option<Key>,
    /// Its prompt, when the semantic cache stores it.
    pub(crate) semantic: Option<SemanticPending>,
}

/// A prompt to store in the semantic index with its answer.
#[derive(Clone)]
pub struct SemanticPending {
    /// The partition of the request.
    pub partition: Key,
    /// The prompt's id.
    pub id: Key,
    /// Its vector.
    pub vector: semantic::Vector,
}

impl Pending {
    /// Stores a whole answer.
    pub fn store(&self, stream: bool, body: Bytes, answered: Answered) {
        let Answered {
            provider,
            model,
            usage,
            response_model,
        } = answered;
        let now = unix_ms();
        let meta = |ttl: Duration| EntryMeta {
            stream,
            provider: provider.clone(),
            model: model.clone(),
            response_model: response_model.clone(),
            tokens: usage.map(|u| {
                [
                    u.input_tokens,
                    u.output_tokens,
                    u.cached_input_tokens,
                    u.cache_write_input_tokens,
                ]
            }),
            stored_ms: now,
            expires_ms: now + ttl.as_millis() as u64,
        };
        if let (Some(key), Some(exact)) = (self.key, self.cache.exact) {
            let entry = Entry {
                meta: meta(exact.ttl),
                body: body.clone(),
            };
            self.cache.put(key, entry);
        }
        if let (Some(p), Some(index)) = (&self.semantic, &self.cache.semantic) {
            let entry = Entry {
                meta: meta(index.settings.ttl),
                body,
            };
            index.put(p.partition, p.id, p.vector.clone(), entry);
        }
    }

    /// Records a stream's client bytes, to store once it completes.
    pub fn recorder(&self) -> Recorder {
        let exact = self
            .key
            .and(self.cache.exact)
            .map_or(0, |e| e.max_bytes / 16);
        let semantic = self.semantic.as_ref().map_or(0, |_| semantic::MAX_ANSWER);
        Recorder {
            pending: self.clone(),
            buf: Vec::new(),
            limit: exact.max(semantic) as usize,
            over: false,
        }
    }
}

/// A streamed answer being recorded (before redacted values are restored).
pub struct Recorder {
    pending: Pending,
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Recorder {
    /// Adds what the client is sent next.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.over {
            return;
        }
        if self.buf.len() + bytes.len() > self.limit {
            self.over = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The stream completed: store it (unless it outgrew the limit).
    pub fn finish(self, answered: Answered) {
        if !self.over && !self.buf.is_empty() {
            self.pending.store(true, Bytes::from(self.buf), answered);
        }
    }
}

/// Whether a request's answer does not vary: temperature 0 (Gemini's in
/// `generationConfig`), or an embedding.
pub fn deterministic(op: Operation, body: &Value) -> bool {
    if op == Operation::Embeddings {
        return true;
    }
    let zero = |v: Option<&Value>| v.and_then(Value::as_f64) == Some(0.0);
    zero(body.get("temperature"))
        || zero(body.pointer("/generationConfig/temperature"))
        || zero(body.pointer("/generation_config/temperature"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deterministic_requests() {
        assert!(deterministic(Operation::Chat, &json!({"temperature": 0})));
        assert!(deterministic(Operation::Chat, &json!({"temperature": 0.0})));
        assert!(!deterministic(
            Operation::Chat,
            &json!({"temperature": 0.2})
        ));
        assert!(!deterministic(Operation::Chat, &json!({})));
        assert!(deterministic(
            Operation::Chat,
            &json!({"generationConfig": {"temperature": 0}})
        ));
        assert!(deterministic(Operation::Embeddings, &json!({})));
    }

    #[test]
    fn entries_round_trip_through_their_redis_form() {
        let e = Entry {
            meta: EntryMeta {
                stream: true,
                provider: "p".into(),
                model: "m".into(),
                response_model: Some("m-1".into()),
                tokens: Some([3, 4, 1, 0]),
                stored_ms: 10,
                expires_ms: 20,
            },
            body: Bytes::from_static(b"data: {\"a\":1}\n\ndata: [DONE]\n\n"),
        };
        let d = Entry::decode(&e.encode().unwrap()).unwrap();
        assert_eq!(d.body, e.body);
        assert_eq!(d.meta.usage().map(|u| u.cached_input_tokens), Some(1));
        assert!(d.meta.stream);
        assert!(Entry::decode(b"no newline").is_none());
    }
}
