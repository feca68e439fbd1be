//! Data classification for llmesh: finds sensitive values (emails, phone
//! numbers, payment cards, IBANs, US SSNs, IP addresses, secrets, and
//! custom patterns or dictionaries) in the user text of LLM requests, and
//! redacts, masks, blocks or restricts them per class.
//!
//! Pure and synchronous (no tokio, no hyper): the proxy builds one
//! [`Engine`] per policy and shares it; each request calls
//! [`Engine::process`] on its parsed body, which returns an [`Outcome`]
//! (classes and counts for audit, block, restricted classes) and a
//! [`Vault`] mapping placeholders to originals. The answer is restored with
//! [`Vault::restore_json`], or chunk by chunk with a [`StreamRestorer`] per
//! output channel.
//!
//! # What is scanned
//! - OpenAI chat: `messages[].content` (a string, or parts of type `text`),
//!   `messages[].tool_calls[].function.arguments` and legacy
//!   `function_call.arguments` (the string values inside the JSON text).
//! - OpenAI embeddings: `input` and `prompt` (a string or strings).
//! - Anthropic: `system` (string or text blocks), `messages[].content`
//!   (string, `text` blocks, every string in `tool_use.input`,
//!   `tool_result.content` as string or text blocks).
//! - Gemini: `contents[].parts[].text`, every string in
//!   `functionCall.args` and `functionResponse.response`,
//!   `systemInstruction.parts[].text`.
//!
//! Numbers, object keys, tool definitions and everything else pass
//! untouched.
//!
//! # Placeholders
//! `redact` writes `[LABEL_n]`, where `LABEL` is the class name upper-cased
//! with `-` as `_` (`[EMAIL_1]`, `[PAYMENT_CARD_2]`, `[PROJECT_NAMES_1]`),
//! numbered per class from 1 in order of appearance; the same value gets
//! the same placeholder throughout the request. `mask` writes `[LABEL]`.
//! A number whose placeholder the request already holds literally is
//! skipped.
//!
//! Found values appear in no `Debug` or `Display` output of this crate.
//!
//! # Wiring it into a request path
//! ```
//! use std::sync::Arc;
//! use llmesh_dlp::{Action, Api, Builtin, ClassRule, Engine, StreamRestorer};
//!
//! // Once per policy (on reload), shared by all requests.
//! let engine = Arc::new(Engine::new(vec![
//!     ClassRule::builtin(Builtin::Email, Action::Redact),
//!     ClassRule::builtin(Builtin::Secret, Action::Block),
//! ])?);
//!
//! // Per request, on the parsed body, before routing.
//! let mut body = serde_json::json!({"messages": [
//!     {"role": "user", "content": "Mail bob@example.org the summary."}
//! ]});
//! let outcome = engine.process(&mut body, Api::OpenAiChat);
//! assert!(!outcome.blocked); // else: refuse, listing outcome.blocking()
//! assert_eq!(body["messages"][0]["content"], "Mail [EMAIL_1] the summary.");
//! let vault = Arc::new(outcome.vault);
//!
//! // Streamed answer: one restorer per output channel, fed its deltas in
//! // order; emit what push returns, and what finish returns before the
//! // channel's end event.
//! let mut text = StreamRestorer::new(vault.clone());
//! let mut out = text.push("I wrote to [EMA");
//! out += &text.push("IL_1].");
//! out += &text.finish();
//! assert_eq!(out, "I wrote to bob@example.org.");
//! # Ok::<(), llmesh_dlp::DlpError>(())
//! ```
//!
//! Channels: OpenAI `choices[i].delta.content` (one text restorer per
//! choice) and `choices[i].delta.tool_calls[j].function.arguments` (one
//! [`StreamRestorer::new_json_string`] per choice and tool call); Anthropic
//! one per content block index, `text_delta.text` (text) or
//! `input_json_delta.partial_json` (JSON string); Gemini
//! `candidates[i].content.parts[].text` (text), while `functionCall.args`
//! arrive whole and go through [`Vault::restore_value`]. Non-streamed
//! answers: [`Vault::restore_json`].

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![deny(missing_docs)]

mod builtin;
mod custom;
mod engine;
mod error;
mod json_text;
mod process;
mod regions;
mod rule;
mod stream;
mod validate;
mod vault;
mod walk;

pub use engine::{Engine, Finding, Findings};
pub use error::DlpError;
pub use process::{ClassCount, Outcome};
pub use rule::{Action, Builtin, ClassRule, ClassSource};
pub use stream::StreamRestorer;
pub use vault::Vault;
pub use walk::Api;
