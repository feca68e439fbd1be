//! A fake LLM provider speaking the OpenAI, Anthropic and Gemini wire
//! formats, with deterministic token accounting and fault injection.
//!
//! Used in-process by llmesh's integration tests and load benches
//! ([`MockServer`]) and as the `llmesh-mock` binary for demos.
//!
//! Accounting rules (so tests can check the proxy's figures):
//! - input tokens = whitespace-separated words across all message / system /
//!   contents text of the request (min 1);
//! - output tokens = [`Behavior::output_tokens`] (default 8), the answer being
//!   that many words ([`generated_text`]), streamed one word per event;
//! - cached input tokens = [`Behavior::cached_tokens`] (default 0, at most the
//!   input tokens). Anthropic, like the real API, reports `input_tokens`
//!   exclusive of `cache_read_input_tokens`.
//!
//! Behavior sources, later overriding earlier: the instance default, the
//! per-model rule, `x-mock-<field>` headers (kebab-case), the
//! `x-mock-behavior` JSON header.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

mod anthropic;
mod behavior;
mod body;
mod common;
mod control;
mod gemini;
mod openai;
mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use behavior::{Behavior, BehaviorError, DEFAULT_OUTPUT_TOKENS, MAX_OUTPUT_TOKENS};
pub use common::generated_text;

use server::Shared;

/// How to start a [`MockServer`].
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Address to bind; port 0 picks a free port (see [`MockServer::addr`]).
    pub listen: SocketAddr,
    /// When set, API requests must carry this key in their dialect's header
    /// (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key` or `?key=`).
    pub api_key: Option<String>,
    /// Instance default behavior.
    pub default: Behavior,
    /// Keep a log of API requests (see [`MockServer::requests`]).
    pub record: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            api_key: None,
            default: Behavior::default(),
            record: true,
        }
    }
}

/// One API request as received (control requests under `/_mock/` are not
/// recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// Path plus query string, e.g. `/v1beta/models/m:streamGenerateContent?alt=sse`.
    pub path: String,
    /// Header names are lowercase; order as received.
    pub headers: Vec<(String, String)>,
    /// The JSON body, or `Null` when empty or not JSON.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running mock provider on the current tokio runtime.
///
/// Dropping it stops accepting and closes open connections (without waiting);
/// [`MockServer::shutdown`] does the same and waits until it is done.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Bind and start serving (HTTP/1.1 and h2c on the same port).
    pub async fn start(cfg: MockConfig) -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg.api_key, cfg.record, cfg.default));
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, shared.clone(), stop_rx));
        Ok(MockServer {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replace the instance default behavior.
    pub fn set_default(&self, b: Behavior) {
        self.shared.default.store(Arc::new(b));
    }

    /// The current instance default behavior.
    pub fn default_behavior(&self) -> Behavior {
        Behavior::clone(&self.shared.default.load())
    }

    /// Set the rule for requests naming `model` (body `model`, or the URL
    /// model for Gemini). Overrides the default, overridden by headers.
    pub fn set_model_behavior(&self, model: &str, b: Behavior) {
        self.shared.set_model(model, b);
    }

    /// Remove every per-model rule.
    pub fn clear_model_behaviors(&self) {
        self.shared.models.store(Arc::default());
    }

    /// The recorded API requests, oldest first (empty when `record` is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log().clone()
    }

    /// Number of API requests received since start or the last
    /// [`MockServer::clear_requests`] (counted even when `record` is off).
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Forget recorded requests and reset the count.
    pub fn clear_requests(&self) {
        self.shared.log().clear();
        self.shared.count.store(0, Ordering::Relaxed);
    }

    /// API requests currently being handled (including hanging ones and
    /// streams still being sent). Lets tests check that abandoned requests
    /// are dropped.
    pub fn active_requests(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Stop accepting, close every connection and wait for that to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Dropping the sender also stops the accept loop; send explicitly
        // for clarity.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
