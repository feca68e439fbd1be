//! Fault-injection controls.
//!
//! A [`Behavior`] is a sparse set of overrides: every field is optional so that
//! layers (instance default < per-model rule < `x-mock-*` headers <
//! `x-mock-behavior` JSON) can be stacked and the most specific layer that sets
//! a field wins. Resolution walks the layers per field instead of cloning them
//! into one struct, so the hot path allocates nothing when no header is sent.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Upper bound on generated words: keeps a typo like `output_tokens: 1e9`
/// from making the mock allocate gigabytes.
pub const MAX_OUTPUT_TOKENS: u32 = 1_000_000;

/// Default number of generated words (= output tokens).
pub const DEFAULT_OUTPUT_TOKENS: u32 = 8;

/// How the mock answers a request. All fields are optional; unset fields fall
/// through to the next lower layer and finally to the documented default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Delay before the response headers are sent (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Streaming: delay between the headers and the first event (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// Streaming: delay between consecutive events (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_delay_ms: Option<u64>,
    /// Number of generated words, which is also the reported output token
    /// count (default 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u32>,
    /// Reported cached input tokens (default 0, clamped to the input count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u32>,
    /// Reported input tokens written to the prompt cache, Anthropic's
    /// `cache_creation_input_tokens` (default 0; at most the input tokens
    /// left after the cached ones). The other dialects report no such count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u32>,
    /// Answer with this HTTP status and an error body in the endpoint's
    /// dialect. 200 (or unset) means a normal answer. With `fail_percent`
    /// set, only the failing share of requests gets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Each request independently fails with this probability in percent
    /// (0..=100), answering `status` (503 when unset or 200) in the
    /// endpoint's dialect; the others are answered normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_percent: Option<f64>,
    /// With an error `status`, sets the `Retry-After` header (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// Accept the request and never answer, until the client goes away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hang: Option<bool>,
    /// Abort the response after this many events (streaming) without the
    /// terminating event. For non-streaming answers a prefix of the JSON body
    /// is sent before the abort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_after_chunks: Option<u32>,
    /// Answer with a call to the first declared tool (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<bool>,
    /// Arguments of the generated tool call (default `{"city":"Paris"}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_args: Option<Value>,
    /// Error type/code placed in the error body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Error message placed in the error body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Finish with content_filter / refusal / SAFETY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_filter: Option<bool>,
    /// OpenAI answers without usage (`"usage": null`, no usage chunk), as
    /// some OpenAI-compatible servers do; the proxy must then estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omit_usage: Option<bool>,
    /// Answer with the text of the last user message instead of generated
    /// words, streamed in pieces of this many characters (so a data policy's
    /// placeholders come back split across chunks). OpenAI and Anthropic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_chunk_chars: Option<u32>,
    /// Answer with this JSON value (serialized) as the text, as a model
    /// asked for structured output would. OpenAI, Anthropic, Responses. An
    /// Anthropic request forcing a tool gets it as that tool's input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_reply: Option<Value>,
    /// With `json_reply`: answer prose (not JSON) until the conversation
    /// holds this many assistant turns, like a model that gets it right
    /// once told what was wrong (default 0: JSON at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_reply_after_turns: Option<u32>,
    /// Answer as this model (the `model` / `modelVersion` of the answer),
    /// like a provider that serves an alias with a dated version and
    /// updates it. Chat-like APIs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_model: Option<String>,
    /// The provider's content filter refuses the prompt before any
    /// generation: Azure OpenAI endpoints answer their 400 `content_filter`
    /// error (`innererror.code: ResponsibleAIPolicyViolation`). Other APIs
    /// ignore it (see `content_filter` for a filtered answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_filtered: Option<bool>,
    /// The model does not exist for the cloud endpoints: Azure answers 404
    /// `DeploymentNotFound`, Bedrock 404 `ResourceNotFoundException` (as it
    /// does for any model id starting with `missing.`). Other APIs ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_not_found: Option<bool>,
}

/// Why a control value was rejected (answered with 400).
#[derive(Debug, thiserror::Error)]
pub enum BehaviorError {
    /// An `x-mock-*` header whose value does not parse.
    #[error("invalid value {value:?} for header {header}: {reason}")]
    BadHeader {
        /// The header's name.
        header: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `x-mock-*` header the mock does not know.
    #[error("unknown mock control header {0} (known: x-mock-behavior, x-mock-latency-ms, x-mock-ttft-ms, x-mock-chunk-delay-ms, x-mock-output-tokens, x-mock-cached-tokens, x-mock-cache-write-tokens, x-mock-status, x-mock-fail-percent, x-mock-retry-after-s, x-mock-hang, x-mock-reset-after-chunks, x-mock-tool-call, x-mock-tool-args, x-mock-error-type, x-mock-error-message, x-mock-content-filter, x-mock-omit-usage, x-mock-prompt-filtered, x-mock-model-not-found)")]
    UnknownHeader(String),
    /// Behavior JSON (a control API body, or the binary's default) that
    /// does not parse.
    #[error("invalid behavior JSON: {0}")]
    BadJson(#[from] serde_json::Error),
    /// A behavior with a value out of range (status, fail percent, output
    /// tokens).
    #[error("invalid behavior: {0}")]
    Invalid(String),
}

impl Behavior {
    /// Overlay `over` on `self`: every field set in `over` replaces ours.
    pub fn merge(&mut self, over: &Behavior) {
        fn set<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        set(&mut self.latency_ms, &over.latency_ms);
        set(&mut self.ttft_ms, &over.ttft_ms);
        set(&mut self.chunk_delay_ms, &over.chunk_delay_ms);
        set(&mut self.output_tokens, &over.output_tokens);
        set(&mut self.cached_tokens, &over.cached_tokens);
        set(&mut self.cache_write_tokens, &over.cache_write_tokens);
        set(&mut self.status, &over.status);
        set(&mut self.fail_percent, &over.fail_percent);
        set(&mut self.retry_after_s, &over.retry_after_s);
        set(&mut self.hang, &over.hang);
        set(&mut self.reset_after_chunks, &over.reset_after_chunks);
        set(&mut self.tool_call, &over.tool_call);
        set(&mut self.tool_args, &over.tool_args);
        set(&mut self.error_type, &over.error_type);
        set(&mut self.error_message, &over.error_message);
        set(&mut self.content_filter, &over.content_filter);
        set(&mut self.omit_usage, &over.omit_usage);
        set(&mut self.echo_chunk_chars, &over.echo_chunk_chars);
        set(&mut self.json_reply, &over.json_reply);
        set(
            &mut self.json_reply_after_turns,
            &over.json_reply_after_turns,
        );
        set(&mut self.response_model, &over.response_model);
        set(&mut self.prompt_filtered, &over.prompt_filtered);
        set(&mut self.model_not_found, &over.model_not_found);
    }

    /// Reject values that cannot be honoured, so a bad control is a clear
    /// 400 rather than a surprising answer later.
    pub fn validate(&self) -> Result<(), BehaviorError> {
        if let Some(s) = self.status {
            if !(200..=599).contains(&s) {
                return Err(BehaviorError::Invalid(format!(
                    "status {s} is outside 200..=599"
                )));
            }
        }
        if let Some(p) = self.fail_percent {
            if !(0.0..=100.0).contains(&p) {
                return Err(BehaviorError::Invalid(format!(
                    "fail_percent {p} is outside 0..=100"
                )));
            }
        }
        if let Some(n) = self.output_tokens {
            if n > MAX_OUTPUT_TOKENS {
                return Err(BehaviorError::Invalid(format!(
                    "output_tokens {n} exceeds {MAX_OUTPUT_TOKENS}"
                )));
            }
        }
        Ok(())
    }

    /// Parse a JSON behavior (request body of the control API or the
    /// `x-mock-behavior` header) and validate it.
    pub fn from_json(bytes: &[u8]) -> Result<Behavior, BehaviorError> {
        let b: Behavior = serde_json::from_slice(bytes)?;
        b.validate()?;
        Ok(b)
    }

    /// Collect the `x-mock-*` request headers into one layer. Returns
    /// `Ok(None)` when there is none, which is the common (bench) case.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Behavior>, BehaviorError> {
        let mut fields: Option<Behavior> = None;
        let mut json: Option<Behavior> = None;
        for (name, value) in headers {
            // http lowercases header names, so a plain prefix test suffices.
            let Some(field) = name.as_str().strip_prefix("x-mock-") else {
                continue;
            };
            let bad = |reason: &str| BehaviorError::BadHeader {
                header: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                reason: reason.to_owned(),
            };
            let v = value.to_str().map_err(|_| bad("not visible ASCII"))?.trim();
            if field == "behavior" {
                let b: Behavior = serde_json::from_str(v).map_err(|e| bad(&e.to_string()))?;
                match json.as_mut() {
                    Some(j) => j.merge(&b),
                    None => json = Some(b),
                }
                continue;
            }
            let b = fields.get_or_insert_with(Behavior::default);
            let num = |v: &str| v.parse::<u64>().map_err(|e| bad(&e.to_string()));
            let small = |v: &str| v.parse::<u32>().map_err(|e| bad(&e.to_string()));
            match field {
                "latency-ms" => b.latency_ms = Some(num(v)?),
                "ttft-ms" => b.ttft_ms = Some(num(v)?),
                "chunk-delay-ms" => b.chunk_delay_ms = Some(num(v)?),
                "output-tokens" => b.output_tokens = Some(small(v)?),
                "cached-tokens" => b.cached_tokens = Some(small(v)?),
                "cache-write-tokens" => b.cache_write_tokens = Some(small(v)?),
                "status" => b.status = Some(v.parse::<u16>().map_err(|e| bad(&e.to_string()))?),
                "fail-percent" => {
                    b.fail_percent = Some(v.parse::<f64>().map_err(|e| bad(&e.to_string()))?)
                }
                "retry-after-s" => b.retry_after_s = Some(num(v)?),
                "hang" => b.hang = Some(parse_bool(v).ok_or_else(|| bad("expected a boolean"))?),
                "reset-after-chunks" => b.reset_after_chunks = Some(small(v)?),
                "tool-call" => {
                    b.tool_call = Some(parse_bool(v).ok_or_else(|| bad("expected a boolean"))?)
                }
                "tool-args" => {
                    b.tool_args = Some(serde_json::from_str(v).map_err(|e| bad(&e.to_string()))?)
                }
                "error-type" => b.error_type = Some(v.to_owned()),
                "error-message" => b.error_message = Some(v.to_owned()),
                "content-filter" => {
                    b.content_filter = Some(parse_bool(v).ok_or_else(|| bad("expected a boolean"))?)
                }
                "omit-usage" => {
                    b.omit_usage = Some(parse_bool(v).ok_or_else(|| bad("expected a boolean"))?)
                }
                "prompt-filtered" => {
                    b.prompt_filtered =
                        Some(parse_bool(v).ok_or_else(|| bad("expected a boolean"))?)
                }
                "model-not-found" => {
                    b.model_not_found =
                        Some(parse_bool(v).ok_or_else(|| bad("expected a boolean"))?)
                }
                _ => return Err(BehaviorError::UnknownHeader(name.as_str().to_owned())),
            }
        }
        let out = match (fields, json) {
            (None, None) => return Ok(None),
            (Some(f), None) => f,
            (None, Some(j)) => j,
            (Some(mut f), Some(j)) => {
                // The JSON header is the most specific source.
                f.merge(&j);
                f
            }
        };
        out.validate()?;
        Ok(Some(out))
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The behavior layers that apply to one request, most specific last.
pub(crate) struct Layers {
    pub default: Arc<Behavior>,
    pub model: Option<Arc<Behavior>>,
    pub headers: Option<Behavior>,
}

impl Layers {
    /// First value set, looking from the most specific layer down.
    fn pick<'a, T>(&'a self, f: impl Fn(&'a Behavior) -> Option<T>) -> Option<T> {
        if let Some(v) = self.headers.as_ref().and_then(&f) {
            return Some(v);
        }
        if let Some(v) = self.model.as_deref().and_then(&f) {
            return Some(v);
        }
        f(&self.default)
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.pick(|b| b.latency_ms).unwrap_or(0))
    }
    pub fn ttft(&self) -> Duration {
        Duration::from_millis(self.pick(|b| b.ttft_ms).unwrap_or(0))
    }
    pub fn chunk_delay(&self) -> Duration {
        Duration::from_millis(self.pick(|b| b.chunk_delay_ms).unwrap_or(0))
    }
    pub fn output_tokens(&self) -> u32 {
        self.pick(|b| b.output_tokens)
            .unwrap_or(DEFAULT_OUTPUT_TOKENS)
            .min(MAX_OUTPUT_TOKENS)
    }
    pub fn cached_tokens(&self) -> u32 {
        self.pick(|b| b.cached_tokens).unwrap_or(0)
    }
    pub fn cache_write_tokens(&self) -> u32 {
        self.pick(|b| b.cache_write_tokens).unwrap_or(0)
    }
    pub fn status(&self) -> Option<u16> {
        self.pick(|b| b.status).filter(|s| *s != 200)
    }
    /// The failure probability in percent, when set (validated 0..=100).
    pub fn fail_percent(&self) -> Option<f64> {
        self.pick(|b| b.fail_percent)
    }
    /// The error status this request is to be answered with, if any:
    /// without `fail_percent`, `status`; with it, `status` or 503 for the
    /// failing share of requests (one independent draw per call) and none
    /// for the rest.
    pub fn injected_status(&self) -> Option<u16> {
        match self.fail_percent() {
            None => self.status(),
            Some(p) if p > 0.0 && (p >= 100.0 || rand::random::<f64>() * 100.0 < p) => {
                Some(self.status().unwrap_or(503))
            }
            Some(_) => None,
        }
    }
    pub fn retry_after_s(&self) -> Option<u64> {
        self.pick(|b| b.retry_after_s)
    }
    pub fn hang(&self) -> bool {
        self.pick(|b| b.hang).unwrap_or(false)
    }
    pub fn reset_after_chunks(&self) -> Option<u32> {
        self.pick(|b| b.reset_after_chunks)
    }
    pub fn tool_call(&self) -> bool {
        self.pick(|b| b.tool_call).unwrap_or(true)
    }
    pub fn tool_args(&self) -> Option<&Value> {
        self.pick(|b| b.tool_args.as_ref())
    }
    pub fn error_type(&self) -> Option<&str> {
        self.pick(|b| b.error_type.as_deref())
    }
    pub fn error_message(&self) -> Option<&str> {
        self.pick(|b| b.error_message.as_deref())
    }
    pub fn content_filter(&self) -> bool {
        self.pick(|b| b.content_filter).unwrap_or(false)
    }

    pub fn json_reply(&self) -> Option<&Value> {
        self.pick(|b| b.json_reply.as_ref())
    }
    pub fn json_reply_after_turns(&self) -> u32 {
        self.pick(|b| b.json_reply_after_turns).unwrap_or(0)
    }

    pub fn echo_chunk_chars(&self) -> Option<u32> {
        self.pick(|b| b.echo_chunk_chars).filter(|n| *n > 0)
    }
    pub fn omit_usage(&self) -> bool {
        self.pick(|b| b.omit_usage).unwrap_or(false)
    }
    pub fn prompt_filtered(&self) -> bool {
        self.pick(|b| b.prompt_filtered).unwrap_or(false)
    }
    pub fn model_not_found(&self) -> bool {
        self.pick(|b| b.model_not_found).unwrap_or(false)
    }
    pub fn response_model(&self) -> Option<&str> {
        self.pick(|b| b.response_model.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn headers_parse_and_json_wins() {
        let mut h = HeaderMap::new();
        h.insert("x-mock-latency-ms", HeaderValue::from_static("200"));
        h.insert("x-mock-status", HeaderValue::from_static("503"));
        h.insert("x-mock-hang", HeaderValue::from_static("TRUE"));
        h.insert(
            "x-mock-behavior",
            HeaderValue::from_static(r#"{"status":429,"retry_after_s":3}"#),
        );
        let b = Behavior::from_headers(&h).unwrap().unwrap();
        assert_eq!(b.latency_ms, Some(200));
        assert_eq!(b.status, Some(429));
        assert_eq!(b.retry_after_s, Some(3));
        assert_eq!(b.hang, Some(true));
    }

    #[test]
    fn bad_values_are_errors() {
        for (k, v) in [
            ("x-mock-latency-ms", "soon"),
            ("x-mock-status", "99"),
            ("x-mock-hang", "maybe"),
            ("x-mock-fail-percent", "100.1"),
            ("x-mock-fail-percent", "NaN"),
            ("x-mock-frobnicate", "1"),
            ("x-mock-behavior", "{not json"),
            ("x-mock-behavior", r#"{"latency":1}"#),
        ] {
            let mut h = HeaderMap::new();
            h.insert(k, HeaderValue::from_static(v));
            assert!(Behavior::from_headers(&h).is_err(), "{k}: {v}");
        }
        assert!(Behavior::from_headers(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn layers_most_specific_wins() {
        let l = Layers {
            default: Arc::new(Behavior {
                latency_ms: Some(5),
                output_tokens: Some(3),
                ..Default::default()
            }),
            model: Some(Arc::new(Behavior {
                output_tokens: Some(4),
                ..Default::default()
            })),
            headers: Some(Behavior {
                status: Some(200),
                ..Default::default()
            }),
        };
        assert_eq!(l.latency(), Duration::from_millis(5));
        assert_eq!(l.output_tokens(), 4);
        assert_eq!(l.status(), None);
        assert!(l.tool_call());
    }
}
