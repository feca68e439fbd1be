//! The inbound stage: which endpoint (it decides the error format of
//! everything after), whether the client may use the sidecar (its inbound
//! token), the body read under the size limit, and the fields routing
//! needs parsed once, without building a JSON tree.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use llmesh_wire::Dialect;
use serde_json::Value;

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::upstream::Operation;

/// A request read and checked, with the fields routing needs.
pub struct Inbound {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The client's headers.
    pub headers: HeaderMap,
    /// The client's body.
    pub raw: Bytes,
    /// The model asked for.
    pub model: String,
    /// Streaming asked for.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_completion_tokens`, `max_tokens` or `max_output_tokens`, 0 if none.
    pub max_output: u64,
    /// Responses API: the conversation this request continues.
    pub previous_response_id: Option<String>,
    /// Responses API: `store` (true unless the client sent `false`).
    pub store: bool,
}

/// Refuses a client without the sidecar's inbound token, when one is set.
pub fn authorize(cfg: &ProxyConfig, headers: &HeaderMap) -> Result<(), ProxyError> {
    match &cfg.inbound_token {
        Some(token) => presented_token(headers)
            .is_some_and(|t| same_secret(t, token.as_bytes()))
            .then_some(())
            .ok_or(ProxyError::InboundAuth),
        None => Ok(()),
    }
}

/// Reads the body of a request to `endpoint` under the limits and parses
/// the fields routing needs; the rest of the document is only validated.
pub async fn read(
    cfg: &ProxyConfig,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Inbound, ProxyError> {
    let (parts, body) = req.into_parts();
    let raw = read_body(body, &parts.headers, cfg.max_body_bytes).await?;
    if nests_deeper_than(&raw, cfg.max_json_depth) {
        return Err(ProxyError::InvalidRequest(format!(
            "request JSON nests deeper than {} levels",
            cfg.max_json_depth
        )));
    }
    let peek: RequestPeek = serde_json::from_slice(&raw).map_err(|e| {
        if e.is_data() {
            ProxyError::InvalidRequest(format!("request body must be a JSON object: {e}"))
        } else {
            ProxyError::InvalidJson(e.to_string())
        }
    })?;
    let model = match peek.model {
        Some(Value::String(m)) if !m.is_empty() => m,
        Some(_) => {
            return Err(ProxyError::InvalidRequest(
                "`model` must be a non-empty string".into(),
            ))
        }
        None => return Err(ProxyError::InvalidRequest("`model` is required".into())),
    };
    if let Some(SeqLen(n)) = peek.messages {
        if n > cfg.max_messages {
            return Err(ProxyError::InvalidRequest(format!(
                "`messages` has {n} entries; at most {} are accepted",
                cfg.max_messages
            )));
        }
    }
    let stream = matches!(peek.stream, Some(Value::Bool(true)));
    if stream && endpoint == Endpoint::Embeddings {
        return Err(ProxyError::InvalidRequest(
            "embeddings cannot be streamed".into(),
        ));
    }
    let include_usage = peek
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let (Endpoint::Responses, Some(SeqLen(n))) = (endpoint, &peek.input) {
        if *n > cfg.max_messages {
            return Err(ProxyError::InvalidRequest(format!(
                "`input` has {n} items; at most {} are accepted",
                cfg.max_messages
            )));
        }
    }
    let previous_response_id = match peek.previous_response_id {
        Some(Value::String(id)) if !id.is_empty() => Some(id),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(ProxyError::InvalidRequest(
                "`previous_response_id` must be a non-empty string".into(),
            ))
        }
    };
    let store = !matches!(peek.store, Some(Value::Bool(false)));
    let max_output = [
        &peek.max_completion_tokens,
        &peek.max_tokens,
        &peek.max_output_tokens,
    ]
    .into_iter()
    .find_map(|v| v.as_ref().and_then(Value::as_u64))
    .unwrap_or(0);
    Ok(Inbound {
        endpoint,
        headers: parts.headers,
        raw,
        model,
        stream,
        include_usage,
        max_output,
        previous_response_id,
        store,
    })
}

/// The request fields routing needs; everything else is skipped unparsed
/// (but still validated as JSON).
#[derive(serde::Deserialize)]
struct RequestPeek {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<Value>,
    #[serde(default)]
    messages: Option<SeqLen>,
    #[serde(default)]
    input: Option<SeqLen>,
    #[serde(default)]
    previous_response_id: Option<Value>,
    #[serde(default)]
    store: Option<Value>,
}

/// The length of a JSON array, counted without keeping its items.
struct SeqLen(usize);

impl<'de> serde::Deserialize<'de> for SeqLen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SeqLen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SeqLen, A::Error> {
                let mut n = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(SeqLen(n))
            }
            // Anything else is not ours to judge here: the upstream says
            // what is wrong with it.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SeqLen, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(SeqLen(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_bool<E>(self, _: bool) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
            fn visit_unit<E>(self) -> Result<SeqLen, E> {
                Ok(SeqLen(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether JSON text nests arrays/objects deeper than `max` (strings are
/// skipped, escapes honoured). One pass over the bytes, no allocation.
fn nests_deeper_than(raw: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in raw {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The inbound token a client presented: `Authorization: Bearer T`,
/// `x-api-key: T` or `api-key: T` (what OpenAI, Anthropic and Azure SDKs
/// send as their API key).
fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.as_bytes();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(&v[7..]);
        }
    }
    headers
        .get("x-api-key")
        .or_else(|| headers.get("api-key"))
        .map(|v| v.as_bytes())
}

/// The API endpoints the sidecar serves itself; every other path is
/// [`Endpoint::Other`], for governed pass-through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `GET /v1/models`.
    Models,
    /// `GET /v1/models/{id}`.
    Model,
    /// `POST /v1/responses`.
    Responses,
    /// `GET` / `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
    ResponseState,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
    /// `POST /v1/completions` (legacy).
    Completions,
    /// Anything else: passed through when the policy allows it.
    Other,
}

impl Endpoint {
    /// The endpoint of a request line.
    pub fn classify(method: &Method, path: &str) -> Endpoint {
        // SDKs differ on whether the base URL carries /v1; accept both.
        let path = path.strip_prefix("/v1").unwrap_or(path);
        match (method, path) {
            (&Method::POST, "/chat/completions") => Endpoint::Chat,
            (&Method::POST, "/messages") => Endpoint::Messages,
            (&Method::POST, "/messages/count_tokens") => Endpoint::CountTokens,
            (&Method::POST, "/embeddings") => Endpoint::Embeddings,
            (&Method::POST, "/completions") => Endpoint::Completions,
            (&Method::POST, "/responses") => Endpoint::Responses,
            (&Method::GET, "/models") => Endpoint::Models,
            (&Method::GET, p) if model_id(p).is_some() => Endpoint::Model,
            (&Method::GET | &Method::DELETE, p) if response_id(p).is_some() => {
                Endpoint::ResponseState
            }
            _ => Endpoint::Other,
        }
    }

    /// The API the client speaks (and gets its errors in).
    pub fn dialect(self) -> Dialect {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => Dialect::Anthropic,
            Endpoint::Responses | Endpoint::ResponseState => Dialect::Responses,
            _ => Dialect::OpenAi,
        }
    }

    /// The kind of call made upstream.
    pub fn operation(self) -> Operation {
        match self {
            Endpoint::Embeddings => Operation::Embeddings,
            Endpoint::Completions => Operation::Completions,
            _ => Operation::Chat,
        }
    }
}

/// The error format of a request to a path the sidecar does not serve
/// itself: Anthropic's for Anthropic paths and clients, else OpenAI's.
pub fn dialect_of_path(path: &str, headers: &HeaderMap) -> Dialect {
    if path.contains("/messages") || headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// `{id}` of `/models/{id}` (ids may hold `/`, as `org/model` does).
pub fn model_id(path: &str) -> Option<&str> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    path.strip_prefix("/models/").filter(|id| !id.is_empty())
}

/// `{id}` and whether `/input_items` follows, of `/responses/{id}...`.
pub fn response_id(path: &str) -> Option<(&str, bool)> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let rest = path.strip_prefix("/responses/")?;
    let (id, items) = match rest.strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some((id, items))
}

/// A whole body under `limit` (413 from Content-Length before reading).
pub async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::BodyRead(e.to_string())),
    }
}

/// The client's `x-request-id` when it is a sane token, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get("x-request-id") {
        let ok =
            v.len() <= 128 && !v.is_empty() && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// At most 200 characters of a client-given name, for messages.
pub fn truncate_path(p: &str) -> String {
    p.chars().take(200).collect()
}
