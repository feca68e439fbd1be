//! A fake LLM provider speaking the OpenAI, Anthropic and Gemini wire
//! formats (also under the URLs of Azure OpenAI, AWS Bedrock and Vertex AI,
//! Bedrock's Converse included), with deterministic token accounting and
//! fault injection.
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
//!   input tokens); cache-write input tokens = [`Behavior::cache_write_tokens`]
//!   (default 0, at most the input tokens left), reported by Anthropic only
//!   as `cache_creation_input_tokens` (and by Bedrock Converse as
//!   `cacheWriteInputTokens`; its `inputTokens` likewise leaves out cache
//!   reads and writes). Anthropic, like the real API, reports
//!   `input_tokens` exclusive of `cache_read_input_tokens` and
//!   `cache_creation_input_tokens`.
//!
//! - structured outputs: [`Behavior::json_reply`] makes the answer text that
//!   JSON value, but only once the conversation holds
//!   [`Behavior::json_reply_after_turns`] assistant turns (prose before), like
//!   a model that corrects itself when told what was wrong. An Anthropic
//!   request that forces a tool (`tool_choice: {type: tool, name}`, as the
//!   proxy sends for structured output) gets a call of that tool whose
//!   input is the JSON value (`{}` before its turn), streamed as two
//!   `input_json_delta`s.
//!
//! Behavior sources, later overriding earlier: the instance default, the
//! per-model rule, `x-mock-<field>` headers (kebab-case), the
//! `x-mock-behavior` JSON header.
//!
//! # Endpoints
//!
//! Every endpoint checks the API key of its dialect, honours latency, hang
//! and injected status/`fail_percent` (the error body in the endpoint's
//! dialect), and is recorded in the request log (multipart bodies as
//! `Null`). Streamed answers honour `ttft_ms`, `chunk_delay_ms` and
//! `reset_after_chunks` (counting events); complete answers are cut in half
//! by `reset_after_chunks`. Paths are exactly as listed (all under `/v1`,
//! Gemini under `/v1beta`).
//!
//! Chat and friends:
//! - `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`
//!   (OpenAI); `POST /v1/messages`, `GET /v1/models` with
//!   `anthropic-version` (Anthropic); Gemini `generateContent`,
//!   `streamGenerateContent` and `GET /v1beta/models`.
//! - `POST /v1/messages/count_tokens` → `{"input_tokens": N}`, the same
//!   count `/v1/messages` reports (messages and system text; tools are not
//!   counted).
//! - `POST /v1/completions` (legacy): `prompt` a string, strings (one
//!   choice each, the same generated text in each), or token arrays (one
//!   token per element). `completion_tokens` = output tokens × choices.
//!   Streamed one word per chunk, a `finish_reason` chunk per choice, the
//!   usage chunk with `stream_options.include_usage`, then `[DONE]`.
//!
//! OpenAI Responses API:
//! - `POST /v1/responses`, plain or `stream: true` (`response.created`,
//!   `response.in_progress`, `response.output_item.added`,
//!   `response.content_part.added`, one `response.output_text.delta` per
//!   word, `.output_text.done`, `.content_part.done`, `.output_item.done`,
//!   `response.completed`; each with `type` and `sequence_number`). Input
//!   tokens: words of `instructions` plus all text of `input` (a string, or
//!   items' string content / text parts and `function_call_output.output`)
//!   plus, with `previous_response_id`, the previous conversation's words
//!   (its inputs and outputs, not its instructions); min 1. With a function
//!   tool declared (and behavior `tool_call`, default true, unless
//!   `tool_choice` is `"none"` or the input ends with a
//!   `function_call_output`) the output is one `function_call` item
//!   (arguments `tool_args`, streamed as two
//!   `response.function_call_arguments.delta`s then `.done`).
//!   `content_filter` makes the response `incomplete`.
//! - Responses are stored (unless `store: false`; the newest 1000):
//!   `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
//!   `GET /v1/responses/{id}/input_items` (`order` desc by default, as the
//!   real API; `limit`, `after`). An unknown `previous_response_id` is a
//!   404 `previous_response_not_found`.
//! - `POST /v1/responses/input_tokens` → the input tokens a create with the
//!   same body would report.
//!
//! Audio, images, moderations:
//! - `POST /v1/audio/transcriptions` and `/v1/audio/translations`
//!   (multipart `file`, `model`, optional `prompt`, `response_format` json,
//!   text, srt, vtt or verbose_json, `stream`): the text is
//!   `"transcribed <bytes> bytes with <model>: "` (`translated` for
//!   translations) followed by the generated words. Transcription usage:
//!   input = prompt words + audio tokens (one per started KiB of the file),
//!   output = words of the text.
//! - `POST /v1/audio/speech` (`model`, `input`, `voice`): `audio/mpeg` (or
//!   the `response_format`'s type), one silent 417-byte MP3 frame per word
//!   of `input` (min 1), one body frame each.
//! - `POST /v1/moderations`: one result per input, nothing flagged unless
//!   `content_filter` (then `violence`).
//! - `POST /v1/images/generations`: `n` 1x1 PNGs as `b64_json` (or a
//!   `data:` URL with `response_format: "url"`).
//!
//! Files and batches (in memory):
//! - `POST /v1/files` (multipart `file`, `purpose`), `GET /v1/files`,
//!   `GET`/`DELETE /v1/files/{id}`, `GET /v1/files/{id}/content`. At most
//!   64 MiB in all; past that an upload is a 413.
//! - `POST /v1/batches` runs every request of the input file at once and
//!   answers the batch `completed`, with an output file of
//!   `{id, custom_id, response: {status_code, request_id, body}, error}`
//!   lines (and an error file for requests that failed). Endpoints: chat
//!   completions, embeddings, completions, responses, moderations. An
//!   invalid line fails the whole batch (`status: "failed"`, `errors`).
//!   `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`.
//! - `POST /v1/messages/batches` (Anthropic) likewise, `processing_status:
//!   "ended"`; `GET /v1/messages/batches[/{id}]`,
//!   `GET /v1/messages/batches/{id}/results` (JSONL),
//!   `POST .../{id}/cancel`, `DELETE .../{id}`.
//! - Batch requests run under the behaviors of their model plus the create
//!   request's headers: an injected status fails that request alone (a
//!   `status_code` line in the error file, an `errored` result).
//!
//! Cloud providers' URL shapes (reusing the answers above):
//! - Azure OpenAI: `POST /openai/deployments/{deployment}/chat/completions`
//!   and `/embeddings`, both needing `?api-version=` (else a 400
//!   `MissingApiVersionParameter` in Azure's `{"error": {"code",
//!   "message"}}`); the answer's model is the deployment's name (unless
//!   `response_model`). The v1 surface `/openai/v1/chat/completions`,
//!   `/embeddings` and `/responses` takes the model from the body. Key:
//!   `api-key`, or any non-empty `Authorization: Bearer` (Entra ID tokens
//!   are checked by a front). Behaviors `prompt_filtered` (400
//!   `content_filter`, `innererror.code: ResponsibleAIPolicyViolation`) and
//!   `model_not_found` (404 `DeploymentNotFound`).
//! - Bedrock runtime: `POST /model/{modelId}/converse` and
//!   `/converse-stream` (Converse JSON; the stream in AWS event-stream
//!   framing, `application/vnd.amazon.eventstream`, one message per word,
//!   usage in `metadata`), `/invoke` and `/invoke-with-response-stream` for
//!   Anthropic models (a Messages body with `anthropic_version:
//!   bedrock-2023-05-31` and neither `model` nor `stream`; the stream's
//!   Anthropic events base64-encoded in `chunk` messages). `modelId` is
//!   percent-decoded (`...-v1%3A0`). Ids starting with `missing.`, or
//!   behavior `model_not_found`, are a 404 `ResourceNotFoundException`;
//!   errors are `{"message"}` with the type in `x-amzn-ErrorType` (status
//!   429 → `ThrottlingException`, "Too many requests, please wait before
//!   trying again."). SigV4 is not checked.
//! - Vertex AI: `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`
//!   and `:streamGenerateContent` (the Gemini answers), and
//!   `.../publishers/anthropic/models/{model}:rawPredict` and
//!   `:streamRawPredict` (a Messages body with `anthropic_version:
//!   vertex-2023-10-16`; the answer's model is the path's). Key: any
//!   non-empty `Authorization: Bearer`.
//!
//! Realtime:
//! - `GET /v1/realtime?model=...` with `Upgrade: websocket`: sends
//!   `{"type":"session.created","session":{"model":...}}`, then echoes every
//!   text and binary message; without the upgrade a 426. The key may also
//!   come as subprotocol `openai-insecure-api-key.<key>`.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

mod anthropic;
mod audio;
mod azure;
mod batches;
mod bedrock;
mod behavior;
mod body;
mod common;
mod completions;
mod control;
mod files;
mod gemini;
mod images;
mod moderations;
mod multipart;
mod openai;
mod realtime;
mod responses;
mod server;
mod store;

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
        let shared = Arc::new(Shared::new(cfg.api_key, cfg.record, cfg.default, addr));
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

    /// Set the rule for requests naming `model` (body `model`, the URL
    /// model for Gemini, Vertex and Bedrock (decoded), the deployment for
    /// Azure). Overrides the default, overridden by headers.
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

    /// Store a file as `POST /v1/files` would (e.g. a batch input file);
    /// returns its id. Fails when the mock's file storage is full.
    pub fn add_file(&self, filename: &str, purpose: &str, data: &[u8]) -> Result<String, String> {
        files::add(
            &self.shared,
            filename,
            purpose,
            bytes::Bytes::copy_from_slice(data),
        )
        .map(|f| f["id"].as_str().unwrap_or_default().to_owned())
        .map_err(|e| e.body)
    }

    /// The bytes of a stored file (uploaded, or a batch's output), if any.
    pub fn file_content(&self, id: &str) -> Option<Vec<u8>> {
        store::lock(&self.shared.files)
            .get(id)
            .map(|f| f.data.to_vec())
    }

    /// A stored Responses API object, as `GET /v1/responses/{id}` returns it.
    pub fn stored_response(&self, id: &str) -> Option<serde_json::Value> {
        store::lock(&self.shared.responses)
            .get(id)
            .map(|r| r.response.clone())
    }

    /// Stop accepting, close every connection (and realtime session) and
    /// wait for that to finish.
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
