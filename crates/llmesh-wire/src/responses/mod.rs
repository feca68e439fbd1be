//! The OpenAI Responses API (`POST /v1/responses`) as a client dialect.
//!
//! A Responses client is served in one of two ways:
//! - **Native upstream** ([`Dialect::Responses`](crate::Dialect::Responses) on both sides): the request
//!   only gets its `model` replaced, and responses and streams pass through
//!   untouched (usage and the model are read on the way).
//! - **Translated upstream** (OpenAI Chat Completions, Anthropic, Gemini):
//!   the request is turned into a Chat Completions body (the pivot; Anthropic
//!   and Gemini then use their existing Chat translations), and the answer is
//!   turned back into a Responses object or Responses stream events.
//!
//! # Request mapping (Responses → Chat Completions)
//!
//! - `instructions` → a leading system message; `input` as a string → one
//!   user message.
//! - `message` items (also items with a `role` and no `type`): roles `user`,
//!   `assistant`, `system`, `developer` (sent as `system`, which every
//!   OpenAI-compatible server accepts); content as a string or parts:
//!   `input_text`/`output_text` → text, `input_image` with `image_url` →
//!   an `image_url` part (with `detail`), `refusal` (assistant only). The
//!   `id`/`status` of replayed output messages are ignored.
//! - `function_call` items → an assistant message with `tool_calls`
//!   (consecutive calls, and calls right after an assistant message, share
//!   one assistant message); `function_call_output` items → `tool` messages.
//! - `reasoning` items are omitted: they carry no user content, and a Chat
//!   upstream has no way to take reasoning back (Anthropic thinking blocks
//!   would need their signatures, Gemini its thought signatures, which the
//!   Responses item does not carry).
//! - `tools` of type `function` → Chat function tools; `tool_choice`
//!   (`auto`/`none`/`required`/`{type: function, name}`); `text.format` →
//!   `response_format`; `text.verbosity` → `verbosity`; `max_output_tokens`
//!   → `max_completion_tokens`; `temperature`, `top_p`,
//!   `parallel_tool_calls`, `user` (or `safety_identifier` when there is no
//!   `user`); `reasoning.effort` → `reasoning_effort`; `stream` → `stream`
//!   plus `stream_options.include_usage: true`.
//! - Anthropic and Gemini have no equivalent of `reasoning_effort` or
//!   `verbosity`; their Chat translations ignore them, as they do for Chat
//!   clients.
//! - Handled by the sidecar and never sent upstream: `metadata`, `store`,
//!   `include` (except `message.output_text.logprobs`, refused),
//!   `previous_response_id` (resolved by the proxy before translation),
//!   `truncation` (`disabled` or `auto`; no truncation is performed),
//!   `service_tier`, `prompt_cache_key`, `prompt_cache_retention`,
//!   `stream_options`, `max_tool_calls` (it limits built-in tools, which are
//!   refused), `background: false`, `top_logprobs: 0`.
//!
//! Everything else is refused with [`TranslateError::InvalidRequest`]
//! naming the field: built-in tools (`web_search`, `file_search`, ...),
//! input item types other than the above (`file_search_call`,
//! `item_reference`, ...), `input_file`/`input_audio` parts, images by
//! `file_id`, non-function `tool_choice`s, `background: true`, `prompt`
//! templates, `conversation`, `top_logprobs`, and unknown top-level fields.
//!
//! # Responses
//!
//! The upstream answer goes through the Chat pivot and becomes a Responses
//! object: a `reasoning` item (Anthropic thinking, Gemini thoughts, OpenAI
//! `reasoning_content`/`reasoning`), a `message` item, one `function_call`
//! item per tool call, usage, and the request's settings echoed back.
//! Item ids are derived from the response id (`msg_<id>_<n>`, `fc_<id>_<n>`,
//! `rs_<id>_<n>`, n being the output index), so they are unique as long as
//! response ids are.

mod request;
mod response;

use serde_json::{Map, Value};

pub(crate) use request::to_chat;
pub use response::translate_response_for_responses;
pub(crate) use response::{
    function_call_item, message_item, output_text_part, reasoning_item, response_object, status_of,
    usage_json, Outcome,
};

use crate::json::{invalid, synth_id, Object};
use crate::TranslateError;

/// What a synthesized Responses object needs besides the upstream answer.
#[derive(Debug, Clone, Default)]
pub struct ResponseEcho {
    /// The response id (`resp_…`) chosen by the proxy. When empty, one is
    /// synthesized.
    pub id: String,
    /// `created_at`, in Unix seconds. When 0, the current time is used.
    pub created_at: u64,
    /// The client's request body: the response echoes its settings
    /// (`instructions`, `tools`, `text`, `metadata`, ...).
    pub request: Map<String, Value>,
}

impl ResponseEcho {
    /// The response id to use: [`id`](Self::id), or a synthesized one.
    pub(crate) fn response_id(&self) -> String {
        if self.id.is_empty() {
            format!("resp_{}", synth_id())
        } else {
            self.id.clone()
        }
    }

    /// The creation time to use: [`created_at`](Self::created_at), or now.
    pub(crate) fn created(&self) -> u64 {
        if self.created_at == 0 {
            crate::json::now_unix()
        } else {
            self.created_at
        }
    }
}

/// An output item id: `prefix_<response id without resp_>_<index>`.
pub(crate) fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    let suffix = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{suffix}_{index}")
}

/// The request's `input` as a list of items, for keeping conversation state.
///
/// A string input becomes one
/// `{type: message, role: user, content: [{type: input_text, text}]}` item;
/// an array is returned item by item, unchanged (every item must be an
/// object). A missing or null `input` gives an empty list.
///
/// The proxy stores `history ++ input items ++ response.output` and sends
/// `history ++ new input` as the next request's `input`;
/// [`translate_request`](crate::translate_request) accepts output items
/// (`message` with `output_text` parts, `function_call`, `reasoning`) as
/// input items for that reason.
pub fn responses_input_items(request: &Value) -> Result<Vec<Value>, TranslateError> {
    let body = request
        .as_object()
        .ok_or_else(|| invalid("request body must be a JSON object"))?;
    match body.get("input") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![user_text_item(text)]),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_object() {
                    return Err(invalid(format!("input[{i}] must be an object")));
                }
            }
            Ok(items.clone())
        }
        Some(_) => Err(invalid("input must be a string or an array of items")),
    }
}

fn user_text_item(text: &str) -> Value {
    serde_json::json!({
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    })
}

/// ` "value"` when `value` looks like an identifier (safe to quote in an
/// error message: it is a type name, not prompt text), otherwise nothing.
pub(crate) fn quoted(value: &str) -> String {
    let identifier = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if identifier {
        format!(" \"{value}\"")
    } else {
        String::new()
    }
}

/// "`path` "value" is not supported for this upstream".
pub(crate) fn not_supported(path: &str, value: Option<&str>) -> TranslateError {
    let value = value.map(quoted).unwrap_or_default();
    invalid(format!(
        "`{path}`{value} is not supported for this upstream"
    ))
}

/// A request field, `None` when absent or null.
pub(crate) fn field<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_items_from_string_and_array() {
        let items = responses_input_items(&json!({"input": "hi"})).unwrap();
        assert_eq!(
            items,
            vec![json!({"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "hi"}]})]
        );
        let list = json!([{"role": "user", "content": "a"},
            {"type": "function_call_output", "call_id": "c", "output": "x"}]);
        let items = responses_input_items(&json!({"input": list.clone()})).unwrap();
        assert_eq!(Value::Array(items), list);
        assert!(responses_input_items(&json!({})).unwrap().is_empty());
        assert!(responses_input_items(&json!({"input": null}))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn input_items_reject_bad_shapes() {
        assert_eq!(
            responses_input_items(&json!({"input": 5})).unwrap_err(),
            TranslateError::InvalidRequest("input must be a string or an array of items".into())
        );
        assert_eq!(
            responses_input_items(&json!({"input": ["secret"]})).unwrap_err(),
            TranslateError::InvalidRequest("input[0] must be an object".into())
        );
        assert!(responses_input_items(&json!([])).is_err());
    }

    #[test]
    fn only_identifiers_are_quoted() {
        assert_eq!(quoted("web_search"), " \"web_search\"");
        assert_eq!(quoted("my secret prompt"), "");
        assert_eq!(quoted(""), "");
        assert_eq!(quoted(&"a".repeat(65)), "");
    }

    #[test]
    fn item_ids_derive_from_the_response_id() {
        assert_eq!(item_id("msg", "resp_abc", 0), "msg_abc_0");
        assert_eq!(item_id("fc", "xyz", 2), "fc_xyz_2");
    }
}
