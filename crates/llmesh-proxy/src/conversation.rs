//! Conversation state of the Responses API: which response ids the
//! namespace owns, and, for conversations the sidecar translated, the
//! items themselves.
//!
//! A response from an upstream that speaks the Responses API is held by
//! that upstream; the sidecar only remembers which provider it came from,
//! so `previous_response_id` and `GET /v1/responses/{id}` go back there.
//! A response the sidecar translated from another API exists only here:
//! the response object and the items of its conversation (the input items,
//! already redacted by the data policy, and the output), so a follow-up
//! can be sent as one whole input.
//!
//! Entries are scoped to the sidecar's namespace, expire after a TTL, and
//! live in a bounded in-memory map; with the Redis quota store configured
//! they are also written to Redis, so every sidecar of the namespace sees
//! them. An id the namespace does not know is a 404, never forwarded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock;
use crate::error::ProxyError;

/// What the namespace knows of one response id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stored {
    /// Held by the upstream provider of this name.
    Native {
        /// The `LLMProvider` that answered.
        provider: String,
    },
    /// Held here: the response and the items that led to it.
    Kept {
        /// The Responses object as the client got it (before restore).
        response: Value,
        /// Every input item of the conversation up to this response.
        context: Vec<Value>,
    },
}

impl Stored {
    fn weight(&self) -> usize {
        match self {
            Stored::Native { provider } => 64 + provider.len(),
            Stored::Kept { response, context } => {
                let size = |v: &Value| serde_json::to_vec(v).map_or(0, |b| b.len());
                64 + size(response) + context.iter().map(size).sum::<usize>()
            }
        }
    }
}

/// Limits of the store.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// How long an entry lives.
    pub ttl: Duration,
    /// At most this many entries in memory.
    pub max_entries: usize,
    /// At most about this many bytes of kept conversations in memory.
    pub max_bytes: usize,
}

struct Entry {
    stored: Arc<Stored>,
    expires: Instant,
    weight: usize,
    /// Insertion number: an `order` slot with another one is stale.
    seq: u64,
}

#[derive(Default)]
struct Mem {
    map: HashMap<String, Entry>,
    /// Ids oldest first, with the insertion they stand for; slots of
    /// removed or replaced entries are skipped, and dropped when they
    /// outnumber the live ones.
    order: VecDeque<(u64, String)>,
    bytes: usize,
    seq: u64,
}

/// The namespace's response ids (see the module doc).
pub struct Store {
    namespace: String,
    limits: StoreLimits,
    mem: Mutex<Mem>,
    redis: Option<ConnectionManager>,
}

impl Store {
    /// A store for `namespace`; `redis` is the Redis URL of the quota
    /// store, when one is configured.
    pub fn new(namespace: &str, limits: StoreLimits, redis: Option<&str>) -> Store {
        let redis =
            redis.and_then(|url| crate::quota::side_connection(url, Duration::from_millis(500)));
        Store {
            namespace: namespace.to_string(),
            limits,
            mem: Mutex::default(),
            redis,
        }
    }

    fn key(&self, id: &str) -> String {
        format!("llmesh:responses:{}:{id}", self.namespace)
    }

    /// What the namespace knows of `id`, if anything.
    pub async fn get(&self, id: &str) -> Option<Arc<Stored>> {
        if let Some(s) = self.get_local(id) {
            return Some(s);
        }
        let mut conn = self.redis.clone()?;
        let text: Option<String> = match redis::cmd("GET")
            .arg(self.key(id))
            .query_async(&mut conn)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "responses store: redis read failed");
                None
            }
        };
        let stored: Stored = serde_json::from_str(&text?).ok()?;
        let stored = Arc::new(stored);
        self.put_local(id, stored.clone());
        Some(stored)
    }

    fn get_local(&self, id: &str) -> Option<Arc<Stored>> {
        let mut mem = self.mem.lock().ok()?;
        let now = clock::now();
        match mem.map.get(id) {
            Some(e) if e.expires > now => Some(e.stored.clone()),
            Some(_) => {
                if let Some(e) = mem.map.remove(id) {
                    mem.bytes -= e.weight;
                }
                None
            }
            None => None,
        }
    }

    fn put_local(&self, id: &str, stored: Arc<Stored>) {
        let Ok(mut mem) = self.mem.lock() else { return };
        let weight = stored.weight();
        mem.seq += 1;
        let seq = mem.seq;
        let entry = Entry {
            stored,
            expires: clock::now() + self.limits.ttl,
            weight,
            seq,
        };
        if let Some(old) = mem.map.insert(id.to_string(), entry) {
            mem.bytes -= old.weight;
        }
        mem.bytes += weight;
        mem.order.push_back((seq, id.to_string()));
        // Oldest first out, until both bounds hold again.
        while mem.map.len() > self.limits.max_entries || mem.bytes > self.limits.max_bytes {
            let Some((seq, oldest)) = mem.order.pop_front() else {
                break;
            };
            if mem.map.get(&oldest).is_some_and(|e| e.seq == seq) {
                if let Some(e) = mem.map.remove(&oldest) {
                    mem.bytes -= e.weight;
                }
            }
        }
        if mem.order.len() > 2 * mem.map.len() + 64 {
            let Mem { map, order, .. } = &mut *mem;
            order.retain(|(seq, id)| map.get(id).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Remembers `id`.
    pub async fn put(&self, id: &str, stored: Stored) {
        let text = self
            .redis
            .as_ref()
            .and_then(|_| serde_json::to_string(&stored).ok());
        self.put_local(id, Arc::new(stored));
        if let (Some(mut conn), Some(text)) = (self.redis.clone(), text) {
            let secs = self.limits.ttl.as_secs().max(1);
            let r: Result<(), _> = redis::cmd("SET")
                .arg(self.key(id))
                .arg(text)
                .arg("EX")
                .arg(secs)
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "responses store: redis write failed; kept in this sidecar only");
            }
        }
    }

    /// Forgets `id`; true if it was known.
    pub async fn remove(&self, id: &str) -> bool {
        let mut known = false;
        if let Ok(mut mem) = self.mem.lock() {
            if let Some(e) = mem.map.remove(id) {
                mem.bytes -= e.weight;
                known = true;
            }
        }
        if let Some(mut conn) = self.redis.clone() {
            let r: Result<u64, _> = redis::cmd("DEL")
                .arg(self.key(id))
                .query_async(&mut conn)
                .await;
            match r {
                Ok(n) => known |= n > 0,
                Err(e) => tracing::warn!(error = %e, "responses store: redis delete failed"),
            }
        }
        known
    }

    /// Entries in memory (for `/config_dump` and tests).
    pub fn len(&self) -> usize {
        self.mem.lock().map_or(0, |m| m.map.len())
    }

    /// No entry in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One Responses request's place in its conversation.
#[derive(Debug)]
pub struct Turn {
    /// The id the sidecar gives a response it translates.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The client's request (after the data policy), echoed in the answer.
    pub request: Map<String, Value>,
    /// Input items of the conversation before this request.
    pub history: Vec<Value>,
    /// This request's input items.
    pub input: Vec<Value>,
    /// The conversation is kept by the sidecar (it continues a translated
    /// one): the answer is kept too, whichever backend gives it.
    pub kept: bool,
    /// Only this provider may answer (it holds the conversation).
    pub pin: Option<Arc<str>>,
    /// The client allows storing the response.
    pub store: bool,
}

impl Turn {
    /// The fields a translated answer echoes.
    pub fn echo(&self) -> llmesh_wire::ResponseEcho {
        llmesh_wire::ResponseEcho {
            id: self.id.clone(),
            created_at: self.created_at,
            request: self.request.clone(),
        }
    }

    /// [`save`](Self::save) in a task, for the answer of `provider`'s
    /// `model`.
    pub fn save_later(
        self: Arc<Self>,
        store: Arc<Store>,
        provider: &llmesh_policy::Provider,
        model: &str,
        response: Value,
    ) {
        if !self.store {
            return;
        }
        let native = provider.native_responses(model);
        let name = provider.name.clone();
        tokio::spawn(async move {
            self.save(&store, &name, native, &response).await;
        });
    }

    /// Remembers the answer: the provider of a native one, or the whole
    /// conversation of a translated (or kept) one.
    pub async fn save(&self, store: &Store, provider: &str, native: bool, response: &Value) {
        if !self.store {
            return;
        }
        let Some(id) = response.get("id").and_then(Value::as_str) else {
            return;
        };
        let stored = if native && !self.kept {
            Stored::Native {
                provider: provider.to_string(),
            }
        } else {
            let mut context = self.history.clone();
            context.extend(self.input.iter().cloned());
            Stored::Kept {
                response: response.clone(),
                context,
            }
        };
        store.put(id, stored).await;
    }
}

/// The conversation stage of a Responses request: a follow-up of a kept
/// conversation becomes one whole input (its items, then this request's),
/// a follow-up of a native one is pinned to its provider, and an unknown
/// `previous_response_id` is a 404. Returns the turn and the body to send.
pub async fn prepare(
    store: &Store,
    raw: &bytes::Bytes,
    previous: Option<&str>,
    store_allowed: bool,
) -> Result<(Turn, bytes::Bytes), ProxyError> {
    let body: Value =
        serde_json::from_slice(raw).map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
    let input = llmesh_wire::responses_input_items(&body)
        .map_err(|e| ProxyError::InvalidRequest(e.to_string()))?;
    let Value::Object(mut request) = body else {
        return Err(ProxyError::InvalidRequest(
            "request body must be a JSON object".into(),
        ));
    };
    let mut turn = Turn {
        id: format!("resp_{:032x}", rand::random::<u128>()),
        created_at: clock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        request: Map::new(),
        history: Vec::new(),
        input,
        kept: false,
        pin: None,
        store: store_allowed,
    };
    let mut out = raw.clone();
    if let Some(prev) = previous {
        let not_found = || ProxyError::NotFound {
            what: format!("previous response with id '{prev}'"),
            param: Some("previous_response_id"),
        };
        match store.get(prev).await.as_deref() {
            None => return Err(not_found()),
            Some(Stored::Native { provider }) => turn.pin = Some(Arc::from(provider.as_str())),
            Some(Stored::Kept { response, context }) => {
                let mut history = context.clone();
                if let Some(Value::Array(output)) = response.get("output") {
                    history.extend(output.iter().cloned());
                }
                // Item ids are the sidecar's own; an upstream would look
                // them up and not find them.
                for item in &mut history {
                    if let Value::Object(o) = item {
                        o.remove("id");
                    }
                }
                let mut whole = history.clone();
                whole.extend(turn.input.iter().cloned());
                let mut expanded = request.clone();
                expanded.remove("previous_response_id");
                expanded.insert("input".into(), Value::Array(whole));
                out = serde_json::to_vec(&expanded)
                    .map(bytes::Bytes::from)
                    .map_err(|e| ProxyError::Encode(format!("the conversation: {e}")))?;
                turn.history = history;
                turn.kept = true;
            }
        }
    }
    request.remove("input");
    turn.request = request;
    Ok((turn, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_entries: usize) -> Store {
        Store::new(
            "team-a",
            StoreLimits {
                ttl: Duration::from_secs(60),
                max_entries,
                max_bytes: 1 << 20,
            },
            None,
        )
    }

    #[tokio::test]
    async fn entries_are_bounded_oldest_out() {
        let s = store(2);
        for id in ["a", "b", "c"] {
            s.put(
                id,
                Stored::Native {
                    provider: "p".into(),
                },
            )
            .await;
        }
        assert_eq!(s.len(), 2);
        assert!(s.get("a").await.is_none());
        assert!(s.get("c").await.is_some());
        assert!(s.remove("c").await);
        assert!(!s.remove("c").await);
        // Entries removed or written again leave no slots behind.
        for i in 0..500 {
            let id = format!("r{}", i % 3);
            s.put(
                &id,
                Stored::Native {
                    provider: "p".into(),
                },
            )
            .await;
            s.remove(&id).await;
        }
        let order = s.mem.lock().unwrap().order.len();
        assert!(
            order <= 2 * s.len() + 65,
            "{order} slots for {} entries",
            s.len()
        );
    }

    #[tokio::test]
    async fn unknown_previous_response_is_not_found() {
        let s = store(8);
        let raw = bytes::Bytes::from(r#"{"model":"m","input":"hi"}"#);
        let err = prepare(&s, &raw, Some("resp_other"), true)
            .await
            .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::NOT_FOUND);
        assert!(err.to_string().contains("resp_other"), "{err}");
    }

    #[tokio::test]
    async fn a_kept_conversation_becomes_one_input() {
        let s = store(8);
        s.put(
            "resp_1",
            Stored::Kept {
                response: serde_json::json!({"id": "resp_1", "output": [
                    {"id": "msg_1", "type": "message", "role": "assistant",
                     "content": [{"type": "output_text", "text": "four"}]}
                ]}),
                context: vec![serde_json::json!({"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "2+2?"}]})],
            },
        )
        .await;
        let raw = bytes::Bytes::from(
            r#"{"model":"m","input":"and 3+3?","previous_response_id":"resp_1"}"#,
        );
        let (turn, body) = prepare(&s, &raw, Some("resp_1"), true).await.unwrap();
        assert!(turn.kept);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v.get("previous_response_id").is_none());
        let input = v["input"].as_array().unwrap();
        assert_eq!(input.len(), 3);
        assert!(input[1].get("id").is_none(), "{v}");
        assert_eq!(input[1]["content"][0]["text"], "four");
    }
}
