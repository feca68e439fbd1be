//! Data classification for llmesh: finds sensitive values (emails, phone
//! numbers, payment cards, IBANs, US SSNs, IP addresses, secrets, and
//! custom patterns or dictionaries) in every text an LLM request gives the
//! provider, and redacts, masks, blocks or restricts them per class.
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
//! Every text the provider receives that an app may fill with personal
//! data, with the same detectors:
//!
//! - OpenAI chat: `messages[].content` (a string, or parts: `text`, and
//!   `image_url.url`), `messages[].tool_calls[].function.arguments` and
//!   legacy `function_call.arguments` (the string values inside the JSON
//!   text); `tools[].function.description` and the schema
//!   `tools[].function.parameters` (legacy `functions[]` the same way,
//!   `tools[].custom.description`); `response_format.json_schema`
//!   `description` and `schema`; `prediction.content`; `user`,
//!   `safety_identifier`; `metadata` values; `messages[].name` (not a
//!   tool or function message's) and `refusal`; `file.filename`.
//! - OpenAI embeddings: `input` and `prompt` (a string or strings), `user`.
//! - OpenAI completions: `prompt` (a string or strings), `suffix`, `user`.
//! - OpenAI Responses: `instructions`; `input` (a string, or items:
//!   `message` content as a string or parts `text`, `refusal`,
//!   `input_image.image_url`, `input_file.file_url`; `function_call`
//!   `arguments` as JSON text; every string of `function_call_output`
//!   `output`); `tools[].description` and the schema `tools[].parameters`;
//!   `text.format` `description` and `schema`; `prompt.variables`; `user`,
//!   `safety_identifier`; `metadata` values.
//! - Anthropic: `system` (string or text blocks); `messages[].content`
//!   (string, or blocks: `text` with its `citations`; `image` with a `url` source; `document`
//!   `title`, `context` and a `text` source's `data`, a `content` source's
//!   blocks or a `url` source's `url`; `search_result` `source`, `title`
//!   and text blocks; every string in `tool_use.input`; `tool_result`
//!   `content` as a string or the same blocks); `tools[].description` and
//!   the schema `tools[].input_schema`; `output_format.schema` (and `output_config.format.schema`);
//!   `metadata.user_id`.
//! - Gemini: `contents[].parts[]` `text`, `fileData.fileUri`, every string
//!   in `functionCall.args` and `functionResponse.response`;
//!   `systemInstruction.parts[].text`; `tools[].functionDeclarations[]`
//!   `description` and the schemas `parameters`, `parametersJsonSchema`,
//!   `response`, `responseJsonSchema`; `generationConfig.responseSchema`
//!   and `responseJsonSchema` (snake_case spellings too).
//! - [`Api::AnyJson`] (pass-through bodies): every string value.
//!
//! In a schema (nested at any depth through `properties`, `items`,
//! `anyOf`/`oneOf`/`allOf`, `$defs`/`definitions`, `additionalProperties`,
//! `not`, `if`/`then`/`else`, ...) the text is `description`, `title`, and
//! every string in `default`, `const`, `enum`, `examples`, `example`.
//!
//! Never scanned: object keys (a schema's property names), `type`,
//! `format`, `pattern`, `required`, tool and function `name`s, ids, model
//! names, numbers, and `data:` URLs (inline bytes, not text). A value
//! found in a URL is replaced in place like anywhere else.
//!
//! Anthropic `thinking` blocks (signed) and `redacted_thinking` blocks are
//! never modified, in requests, by [`Api::AnyJson`], or when restoring: the
//! provider refuses a block whose signature no longer matches.
//!
//! Restoring is about the answer only (the request keeps its
//! placeholders): [`Vault::restore_json`] restores the model's output, and
//! in a Responses answer the request settings it echoes (`instructions`,
//! `tools`, `text.format`, `prompt.variables`, `user`,
//! `safety_identifier`, `metadata`). A placeholder from any scanned field is restored
//! wherever the model writes it (an e-mail from a tool schema's `enum`
//! coming back in tool-call arguments, say).

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
