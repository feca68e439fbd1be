//! The semantic response cache (`LLMRoute.spec.cache.semantic`): a request
//! whose last user message means nearly the same as an earlier request's
//! gets the earlier answer.
//!
//! - **What is compared**: the text of the last user message (the prompt)
//!   is embedded by the route's embeddings model; everything else in the
//!   request (model, system prompt, earlier turns, tools, sampling
//!   parameters, response format, API, streaming) and the request's data
//!   class must be identical, and is hashed into a *partition* key with
//!   the route's scope. A stored prompt of the same partition whose cosine
//!   similarity reaches the threshold is a hit.
//! - **Stores**: in memory, a bounded LRU per route and sidecar, searched
//!   in full within the partition (fast, not shared); in Redis, one list of
//!   the newest prompts' vectors per partition (at most `maxEntries`) and
//!   the answers under their own keys with the TTL, so the namespace's
//!   sidecars share them at the price of reading the partition's vectors
//!   on each lookup.
//! - **The embeddings call** goes to the configured provider with its key,
//!   bounded by the route's `timeout`; a call that fails is a miss, and its
//!   tokens and cost are counted like any call of the route.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use llmesh_policy::{Route, SemanticSettings};
use llmesh_wire::Dialect;
use lru::LruCache;
use redis::aio::ConnectionManager;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{canonical_object, unix_ms, write_behind, Entry, Key, RedisHandle, IGNORED};
use crate::body::UpstreamBody;
use crate::upstream::{Operation, UpstreamClient};

/// Most bytes of answers and vectors one route keeps in memory.
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Largest answer stored.
pub const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// Where the prompt was blanked in the partition body.
const BLANK: &str = "\u{0}llmesh-prompt\u{0}";

/// The prompt of a request body and the body with it blanked: the text of
/// the last user message (OpenAI and Anthropic `messages`, Responses
/// `input`, Gemini `contents`, completions `prompt`). `None` when the
/// request has no text prompt (embeddings, an image-only turn).
pub fn prompt(client: Dialect, op: Operation, body: &Value) -> Option<(String, Value)> {
    if op == Operation::Embeddings {
        return None;
    }
    let mut blanked = body.clone();
    let text = match (client, op) {
        (_, Operation::Completions) => take_string(blanked.get_mut("prompt")?)?,
        (Dialect::OpenAi | Dialect::Anthropic, _) => {
            let turn = last_user(blanked.get_mut("messages")?, "role", &["user"])?;
            take_content(turn.get_mut("content")?, &["text", "input_text"])?
        }
        (Dialect::Responses, _) => match blanked.get_mut("input")? {
            v @ Value::String(_) => take_string(v)?,
            list => {
                let turn = last_user(list, "role", &["user"])?;
                take_content(turn.get_mut("content")?, &["input_text", "text"])?
            }
        },
        // Never a client.
        (Dialect::Bedrock, _) => return None,
        (Dialect::Gemini, _) => {
            let turn = last_user(blanked.get_mut("contents")?, "role", &["user", ""])?;
            let mut text = String::new();
            for part in turn.get_mut("parts")?.as_array_mut()? {
                if let Some(t) = part.get_mut("text") {
                    text.push_str(&take_string(t)?);
                    text.push('\n');
                }
            }
            text
        }
    };
    let text = text.trim().to_string();
    (!text.is_empty()).then_some((text, blanked))
}

/// The last element of `list` whose `field` is one of `roles` (a missing
/// field reads as `""`).
fn last_user<'a>(list: &'a mut Value, field: &str, roles: &[&str]) -> Option<&'a mut Value> {
    list.as_array_mut()?.iter_mut().rev().find(|m| {
        let role = m.get(field).and_then(Value::as_str).unwrap_or("");
        roles.contains(&role)
    })
}

/// The string at `v`, replaced by the blank marker.
fn take_string(v: &mut Value) -> Option<String> {
    match std::mem::replace(v, Value::String(BLANK.into())) {
        Value::String(s) => Some(s),
        other => {
            *v = other;
            None
        }
    }
}

/// The text of a message's content (a string, or the parts whose `type`
/// is one of `kinds`), each piece replaced by the blank marker.
fn take_content(content: &mut Value, kinds: &[&str]) -> Option<String> {
    if content.is_string() {
        return take_string(content);
    }
    let mut text = String::new();
    for part in content.as_array_mut()? {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        if kinds.contains(&kind) {
            if let Some(t) = part.get_mut("text") {
                text.push_str(&take_string(t)?);
                text.push('\n');
            }
        }
    }
    Some(text)
}

/// A prompt's vector, scaled to length 1.
#[derive(Debug, Clone)]
pub struct Vector(Arc<[f32]>);

impl Vector {
    /// `v` scaled to length 1; `None` when it is empty, zero or not finite.
    pub fn unit(v: Vec<f32>) -> Option<Vector> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if v.is_empty() || !norm.is_finite() || norm == 0.0 {
            return None;
        }
        Some(Vector(v.into_iter().map(|x| x / norm).collect()))
    }

    /// Cosine similarity (vectors of other lengths are not comparable: 0).
    pub fn similarity(&self, other: &[f32]) -> f32 {
        if self.0.len() != other.len() {
            return 0.0;
        }
        // Eight running sums the compiler can keep in one vector register
        // (a single sum would wait on each addition in turn).
        let mut lanes = [0f32; 8];
        let a = self.0.chunks_exact(8);
        let b = other.chunks_exact(8);
        let tail: f32 = a
            .remainder()
            .iter()
            .zip(b.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in a.zip(b) {
            for i in 0..8 {
                lanes[i] += x[i] * y[i];
            }
        }
        lanes.iter().sum::<f32>() + tail
    }

    fn bytes(&self) -> u64 {
        (self.0.len() * 4) as u64
    }
}

/// What one embeddings call returned.
pub struct Embedded {
    /// The prompt's vector.
    pub vector: Vector,
    /// Tokens the provider billed, if it said.
    pub tokens: Option<u64>,
}

/// Asks the route's embeddings model for the vector of `text`.
pub async fn embed(
    settings: &SemanticSettings,
    client: &UpstreamClient,
    text: &str,
    request_id: &HeaderValue,
) -> Result<Embedded, String> {
    let mut body = serde_json::json!({
        "model": settings.model,
        "input": text,
        "encoding_format": "float",
    });
    if let Some(d) = settings.dimensions {
        body["dimensions"] = d.into();
    }
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let req = crate::upstream::build_request(
        &settings.provider,
        "/embeddings",
        UpstreamBody::new(Bytes::from(body), None),
        &HeaderMap::new(),
        Dialect::OpenAi,
        Dialect::OpenAi,
        request_id,
    )
    .map_err(|e| e.to_string())?;
    let (_, answer) = crate::upstream::call_whole(
        client,
        req,
        &settings.provider.name,
        Dialect::OpenAi,
        settings.timeout,
        16 << 20,
    )
    .await
    .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&answer).map_err(|e| format!("not JSON: {e}"))?;
    let floats = v
        .pointer("/data/0/embedding")
        .and_then(Value::as_array)
        .ok_or("no data[0].embedding array in the answer")?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect::<Option<Vec<f32>>>()
        .ok_or("data[0].embedding holds something other than numbers")?;
    let vector = Vector::unit(floats).ok_or("the embedding is empty or zero")?;
    let tokens = v.pointer("/usage/prompt_tokens").and_then(Value::as_u64);
    Ok(Embedded { vector, tokens })
}

struct Item {
    partition: Key,
    vector: Vector,
    entry: Arc<Entry>,
}

impl Item {
    fn size(&self) -> u64 {
        self.vector.bytes() + self.entry.body.len() as u64 + 256
    }
}

/// A stored prompt as a search reads it: the scan walks a partition's
/// slots in order, without a map lookup per prompt.
struct Slot {
    id: Key,
    expires_ms: u64,
    vector: Vector,
}

struct Mem {
    /// Answers by prompt id, least recently used first out.
    items: LruCache<Key, Item>,
    /// Each partition's prompts.
    parts: HashMap<Key, Vec<Slot>>,
    bytes: u64,
}

impl Mem {
    fn forget(&mut self, id: &Key, item: &Item) {
        self.bytes = self.bytes.saturating_sub(item.size());
        if let Some(slots) = self.parts.get_mut(&item.partition) {
            slots.retain(|s| s.id != *id);
            if slots.is_empty() {
                self.parts.remove(&item.partition);
            }
        }
    }
}

/// What a lookup found.
pub struct Found {
    /// The best stored answer at or above the threshold.
    pub entry: Option<Arc<Entry>>,
    /// The best similarity seen in the partition (`None` when it held
    /// nothing to compare with).
    pub best: Option<f32>,
}

/// One route's semantic index and answers.
pub struct Index {
    pub(crate) settings: SemanticSettings,
    mem: Mutex<Mem>,
    redis: Option<ConnectionManager>,
    redis_timeout: Duration,
    /// Redis key prefix (`llmesh:cache:{ns}:route:s:`), under the exact
    /// cache's so a purge removes both.
    prefix: String,
}

impl Index {
    /// An empty index of `route` with `settings`.
    pub fn new(route: &Route, settings: SemanticSettings, redis: Option<&RedisHandle>) -> Index {
        let redis = match settings.store {
            llmesh_api::CacheStore::Redis => redis,
            llmesh_api::CacheStore::Memory => None,
        };
        let cap = NonZeroUsize::new(settings.max_entries as usize).unwrap_or(NonZeroUsize::MIN);
        Index {
            settings,
            mem: Mutex::new(Mem {
                items: LruCache::new(cap),
                parts: HashMap::new(),
                bytes: 0,
            }),
            redis: redis.map(|r| r.conn.clone()),
            redis_timeout: redis.map_or(Duration::ZERO, |r| r.timeout),
            prefix: format!("llmesh:cache:{{{}}}:{}:s:", route.namespace, route.name),
        }
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Prompts and bytes in this sidecar's memory.
    pub fn usage(&self) -> (usize, u64) {
        let m = self.mem();
        (m.items.len(), m.bytes)
    }

    /// Whether the index is kept in Redis.
    pub fn shared(&self) -> bool {
        self.redis.is_some()
    }

    /// The Redis connection, when the index is kept there.
    pub fn connection(&self) -> Option<&ConnectionManager> {
        self.redis.as_ref()
    }

    /// Empties this sidecar's memory; returns how many were removed.
    pub fn clear(&self) -> u64 {
        let mut m = self.mem();
        let n = m.items.len() as u64;
        m.items.clear();
        m.parts.clear();
        m.bytes = 0;
        n
    }

    /// The partition key of a blanked request body (see the module doc).
    pub fn partition(
        &self,
        scope: &[u8; 32],
        client: Dialect,
        op: Operation,
        stream: bool,
        data_class: &str,
        blanked: &Value,
    ) -> Key {
        let mut h = Sha256::new();
        h.update(b"llmesh-semantic-v1\0");
        h.update(scope);
        let p = &self.settings.provider;
        h.update(format!(
            "{}\0{}\0{}\0{:?}\0{}\0{:?}\0{stream}\0{data_class}\0",
            p.name,
            p.base_url.original,
            self.settings.model,
            self.settings.dimensions,
            client.as_str(),
            op
        ));
        match blanked {
            Value::Object(o) => canonical_object(o, IGNORED, &mut h),
            other => h.update(other.to_string().as_bytes()),
        }
        Key(h.finalize().into())
    }

    /// The stored answer whose prompt is most like `vector` in
    /// `partition`, if it reaches the threshold.
    pub async fn find(&self, partition: &Key, vector: &Vector) -> Result<Found, String> {
        let now = unix_ms();
        let threshold = self.settings.threshold;
        if let Some(conn) = &self.redis {
            return self.find_redis(conn, partition, vector, now).await;
        }
        let mut m = self.mem();
        let Some(slots) = m.parts.get(partition) else {
            return Ok(Found {
                entry: None,
                best: None,
            });
        };
        let mut best: Option<(Key, f32)> = None;
        let mut expired = Vec::new();
        for slot in slots {
            if slot.expires_ms <= now {
                expired.push(slot.id);
                continue;
            }
            let s = vector.similarity(&slot.vector.0);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((slot.id, s));
            }
        }
        for id in expired {
            if let Some(item) = m.items.pop(&id) {
                m.forget(&id, &item);
            }
        }
        let Some((id, s)) = best else {
            return Ok(Found {
                entry: None,
                best: None,
            });
        };
        let entry = (s >= threshold)
            .then(|| m.items.get(&id).map(|i| i.entry.clone()))
            .flatten();
        Ok(Found {
            entry,
            best: Some(s),
        })
    }

    async fn find_redis(
        &self,
        conn: &ConnectionManager,
        partition: &Key,
        vector: &Vector,
        now: u64,
    ) -> Result<Found, String> {
        let mut conn = conn.clone();
        let list = format!("{}{}", self.prefix, partition.hex());
        let mut lrange = redis::cmd("LRANGE");
        lrange
            .arg(&list)
            .arg(0)
            .arg(i64::from(self.settings.max_entries) - 1);
        let read = lrange.query_async::<Vec<Vec<u8>>>(&mut conn);
        let items = tokio::time::timeout(self.redis_timeout, read)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut best: Option<(Key, f32)> = None;
        for raw in &items {
            let Some((expires, id, v)) = decode_item(raw) else {
                continue;
            };
            if expires <= now {
                continue;
            }
            let s = vector.similarity(&v);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((id, s));
            }
        }
        let Some((id, s)) = best else {
            return Ok(Found {
                entry: None,
                best: None,
            });
        };
        if s < self.settings.threshold {
            return Ok(Found {
                entry: None,
                best: Some(s),
            });
        }
        let mut get = redis::cmd("GET");
        get.arg(format!("{}e:{}", self.prefix, id.hex()));
        let get = get.query_async::<Option<Vec<u8>>>(&mut conn);
        let got = tokio::time::timeout(self.redis_timeout, get)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let entry = got
            .and_then(|b| Entry::decode(&b))
            .filter(|e| e.meta.expires_ms > now)
            .map(Arc::new);
        Ok(Found {
            entry,
            best: Some(s),
        })
    }

    /// Stores `entry` as the answer to the prompt `vector` of `partition`
    /// (Redis: from a task, off the request path).
    pub fn put(&self, partition: Key, prompt_id: Key, vector: Vector, entry: Entry) {
        if entry.body.len() as u64 > MAX_ANSWER {
            return;
        }
        if let Some(conn) = &self.redis {
            let value = match entry.encode() {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "semantic cache: the answer could not be encoded; not stored");
                    return;
                }
            };
            let list = format!("{}{}", self.prefix, partition.hex());
            let answer = format!("{}e:{}", self.prefix, prompt_id.hex());
            let ttl = self.settings.ttl.as_millis().max(1) as u64;
            let item = encode_item(entry.meta.expires_ms, &prompt_id, &vector);
            let keep = i64::from(self.settings.max_entries) - 1;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(&answer)
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .ignore()
                .cmd("LPUSH")
                .arg(&list)
                .arg(item)
                .ignore()
                .cmd("LTRIM")
                .arg(&list)
                .arg(0)
                .arg(keep)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&list)
                .arg(ttl)
                .ignore();
            write_behind(conn.clone(), pipe, self.redis_timeout, "semantic cache");
            return;
        }
        let slot = Slot {
            id: prompt_id,
            expires_ms: entry.meta.expires_ms,
            vector: vector.clone(),
        };
        let item = Item {
            partition,
            vector,
            entry: Arc::new(entry),
        };
        let size = item.size();
        let mut m = self.mem();
        if let Some(old) = m.items.pop(&prompt_id) {
            m.forget(&prompt_id, &old);
        }
        if let Some((id, old)) = m.items.push(prompt_id, item) {
            m.forget(&id, &old);
        }
        m.parts.entry(partition).or_default().push(slot);
        m.bytes += size;
        while m.bytes > MAX_BYTES {
            match m.items.pop_lru() {
                Some((id, old)) => m.forget(&id, &old),
                None => break,
            }
        }
    }
}

/// The id of a stored prompt: its partition and text.
pub fn prompt_id(partition: &Key, text: &str) -> Key {
    let mut h = Sha256::new();
    h.update(partition.0);
    h.update(text.as_bytes());
    Key(h.finalize().into())
}

/// A Redis list item: expiry (Unix ms, little-endian), the prompt id, the
/// vector as little-endian f32s.
fn encode_item(expires_ms: u64, id: &Key, v: &Vector) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 32 + v.0.len() * 4);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(&id.0);
    for x in v.0.iter() {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn decode_item(raw: &[u8]) -> Option<(u64, Key, Vec<f32>)> {
    if raw.len() < 40 || !(raw.len() - 40).is_multiple_of(4) {
        return None;
    }
    let expires = u64::from_le_bytes(raw[..8].try_into().ok()?);
    let id = Key(raw[8..40].try_into().ok()?);
    let v = raw[40..]
        .chunks_exact(4)
        .map(|c| c.try_into().map(f32::from_le_bytes))
        .collect::<Result<Vec<f32>, _>>()
        .ok()?;
    Some((expires, id, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_prompt_is_the_last_user_message_in_each_api() {
        let chat = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "What is up?"}, {"type": "image_url", "image_url": {"url": "x"}}]}
        ]});
        let (text, blanked) = prompt(Dialect::OpenAi, Operation::Chat, &chat).unwrap();
        assert_eq!(text, "What is up?");
        assert_eq!(blanked["messages"][1]["content"], "first");
        assert_eq!(blanked["messages"][3]["content"][0]["text"], BLANK);
        // Two requests that differ only in the prompt share the blanked body.
        let other = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "what's up"}, {"type": "image_url", "image_url": {"url": "x"}}]}
        ]});
        assert_eq!(
            prompt(Dialect::OpenAi, Operation::Chat, &other).unwrap().1,
            blanked
        );

        let resp = json!({"model": "m", "input": "hello there"});
        assert_eq!(
            prompt(Dialect::Responses, Operation::Chat, &resp)
                .unwrap()
                .0,
            "hello there"
        );
        let resp = json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]});
        assert_eq!(
            prompt(Dialect::Responses, Operation::Chat, &resp)
                .unwrap()
                .0,
            "hi"
        );
        let gem = json!({"contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]});
        assert_eq!(
            prompt(Dialect::Gemini, Operation::Chat, &gem).unwrap().0,
            "a\nb"
        );
        let comp = json!({"model": "m", "prompt": "Say this"});
        assert_eq!(
            prompt(Dialect::OpenAi, Operation::Completions, &comp)
                .unwrap()
                .0,
            "Say this"
        );
        // No text prompt: nothing to compare.
        let image_only = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert!(prompt(Dialect::OpenAi, Operation::Chat, &image_only).is_none());
        assert!(prompt(
            Dialect::OpenAi,
            Operation::Embeddings,
            &json!({"input": "x"})
        )
        .is_none());
        assert!(prompt(Dialect::OpenAi, Operation::Chat, &json!({"messages": []})).is_none());
    }

    #[test]
    fn vectors_compare_by_cosine() {
        let a = Vector::unit(vec![3.0, 4.0]).unwrap();
        assert!((a.similarity(&[0.6, 0.8]) - 1.0).abs() < 1e-6);
        assert!(a.similarity(&[0.8, -0.6]).abs() < 1e-6);
        assert_eq!(a.similarity(&[1.0, 0.0, 0.0]), 0.0);
        assert!(Vector::unit(vec![0.0, 0.0]).is_none());
        assert!(Vector::unit(vec![]).is_none());
        assert!(Vector::unit(vec![f32::NAN]).is_none());
    }

    #[test]
    fn redis_items_round_trip() {
        let v = Vector::unit(vec![1.0, 2.0, 2.0]).unwrap();
        let id = Key([7; 32]);
        let raw = encode_item(42, &id, &v);
        let (e, i, back) = decode_item(&raw).unwrap();
        assert_eq!((e, i), (42, id));
        assert!((v.similarity(&back) - 1.0).abs() < 1e-6);
        assert!(decode_item(&raw[..39]).is_none());
        assert!(decode_item(&raw[..raw.len() - 1]).is_none());
    }
}
