//! `GET /v1/realtime`: a WebSocket (hyper upgrade, frames by
//! `tokio-tungstenite`) that first sends `session.created`, like the
//! Realtime API, then echoes every text and binary message.
//!
//! Behaviors: `ttft_ms` delays `session.created`, `chunk_delay_ms` each
//! echo, and `reset_after_chunks` drops the connection (no close frame)
//! once that many messages were sent. Latency, hang and an injected status
//! apply to the handshake like to any request.

use futures_util::{SinkExt, StreamExt};
use http::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::body::{ActiveGuard, MockBody};
use crate::server::{query_param, Ctx, Dialect};
use crate::store::lock;

/// The session's model when the URL names none.
pub(crate) const DEFAULT_MODEL: &str = "gpt-realtime";

/// Browsers cannot set headers on a WebSocket; the Realtime API takes the
/// key as this subprotocol instead.
const KEY_PROTOCOL_PREFIX: &str = "openai-insecure-api-key.";

/// The `model` query parameter, %-decoded.
pub(crate) fn query_model(query: Option<&str>) -> Option<String> {
    query_param(query, "model").map(crate::control::percent_decode)
}

fn protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The API key offered as an `openai-insecure-api-key.<key>` subprotocol.
pub(crate) fn subprotocol_key(headers: &HeaderMap) -> Option<&str> {
    protocols(headers).find_map(|p| p.strip_prefix(KEY_PROTOCOL_PREFIX))
}

fn has_token(headers: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn upgrade_required(message: &str) -> Response<MockBody> {
    let mut r = Dialect::OpenAi.error(426, None, message);
    *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
    r.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static("websocket"));
    r.headers_mut()
        .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    r
}

/// Answer the handshake (101) and run the session once hyper hands the
/// connection over; anything but a WebSocket handshake is a 426.
pub(crate) fn accept(
    ctx: &Ctx<'_>,
    model: &str,
    on_upgrade: Option<OnUpgrade>,
    active: ActiveGuard,
) -> Response<MockBody> {
    let h = &ctx.parts.headers;
    let key = h.get(SEC_WEBSOCKET_KEY);
    let (Some(key), Some(on_upgrade), true, true) = (
        key,
        on_upgrade,
        has_token(h, UPGRADE, "websocket"),
        has_token(h, CONNECTION, "upgrade"),
    ) else {
        return upgrade_required(
            "/v1/realtime is a WebSocket endpoint: connect with Upgrade: websocket (HTTP/1.1)",
        );
    };
    if h.get(SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return upgrade_required("unsupported Sec-WebSocket-Version (expected 13)");
    }
    let accept_key = derive_accept_key(key.as_bytes());
    // Pick `realtime` when offered, else the first protocol that is not the
    // key (a client that offers protocols wants one chosen).
    let chosen = protocols(h)
        .find(|p| *p == "realtime")
        .or_else(|| protocols(h).find(|p| !p.starts_with(KEY_PROTOCOL_PREFIX)))
        .and_then(|p| HeaderValue::from_str(p).ok());

    let mut r = Response::new(MockBody::Full(None));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hd = r.headers_mut();
    hd.insert(UPGRADE, HeaderValue::from_static("websocket"));
    hd.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        hd.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = chosen {
        hd.insert(SEC_WEBSOCKET_PROTOCOL, p);
    }

    let hello = json!({
        "type": "session.created",
        "event_id": ctx.sh.new_id("event_"),
        "session": {
            "id": ctx.sh.new_id("sess_"),
            "object": "realtime.session",
            "model": model,
        },
    })
    .to_string();
    let pacing = (
        ctx.layers.ttft(),
        ctx.layers.chunk_delay(),
        ctx.layers.reset_after_chunks(),
    );
    let mut tasks = lock(&ctx.sh.ws_tasks);
    // Reap finished sessions so the set does not grow.
    while tasks.try_join_next().is_some() {}
    tasks.spawn(session(on_upgrade, hello, pacing, active));
    r
}

async fn session(
    on_upgrade: OnUpgrade,
    hello: String,
    (first, between, reset_after): (std::time::Duration, std::time::Duration, Option<u32>),
    active: ActiveGuard,
) {
    // The session counts as an active request until it ends.
    let _active = active;
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let done = |sent: u32| reset_after.is_some_and(|n| sent >= n);
    if done(0) {
        return;
    }
    if !first.is_zero() {
        tokio::time::sleep(first).await;
    }
    if ws.send(Message::text(hello)).await.is_err() {
        return;
    }
    let mut sent = 1;
    // Returning drops the socket without a close frame: the client sees
    // the connection reset.
    if done(sent) {
        return;
    }
    while let Some(msg) = ws.next().await {
        let reply = match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => m,
            // Pings are answered and a close is confirmed by tungstenite
            // on the next read.
            Ok(_) => continue,
            Err(_) => return,
        };
        if !between.is_zero() {
            tokio::time::sleep(between).await;
        }
        if ws.send(reply).await.is_err() {
            return;
        }
        sent += 1;
        if done(sent) {
            return;
        }
    }
}
