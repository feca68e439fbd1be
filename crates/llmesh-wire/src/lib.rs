//! Pure translation between the LLM wire dialects llmesh speaks: OpenAI Chat
//! Completions, the OpenAI Responses API, Anthropic Messages, Gemini
//! `generateContent` and AWS Bedrock `Converse`, plus an SSE parser and a
//! streaming translator.
//!
//! Nothing here does I/O: the proxy hands in parsed request bodies, raw
//! response bytes and SSE chunks, and gets back JSON values and bytes to send.
//!
//! OpenAI Chat Completions is the pivot: an Anthropic client talking to a
//! Gemini upstream is translated Anthropic → OpenAI → Gemini (and back), so
//! every dialect only needs a mapping to and from OpenAI.
//!
//! Gemini is an upstream-only dialect: no translation from a Gemini client to
//! another upstream exists, and such calls fail with
//! [`TranslateError::Unsupported`].
//!
//! Bedrock `Converse`/`ConverseStream` is upstream-only too (see
//! `src/bedrock/mod.rs` for what maps and what is refused). Its streams are
//! AWS binary event-stream messages, which [`StreamTranslator`] accepts as
//! raw bytes like the SSE of the other dialects; its errors carry their type
//! in a header, hence [`translate_bedrock_error`]. Claude through Bedrock's
//! `InvokeModel` or Vertex AI's `rawPredict` speaks Anthropic Messages with
//! a provider `anthropic_version`: see [`bedrock_anthropic_body`] and
//! [`vertex_anthropic_body`]; [`BedrockInvokeStream`] unwraps Bedrock's
//! event-stream around the Anthropic SSE of a streamed `InvokeModel`.
//!
//! The Responses API (`POST /v1/responses`) is a client dialect: a Responses
//! client is translated Responses → Chat Completions → Anthropic/Gemini (and
//! back), or passed through to an upstream that speaks the Responses API
//! natively. As an upstream, Responses only serves Responses clients. Its
//! answers need more than the upstream body (a response id, the request's
//! settings), hence [`translate_response_for_responses`] and
//! [`StreamTranslator::for_responses`] with a [`ResponseEcho`]; see the
//! `src/responses/mod.rs` for what maps and what is refused.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![deny(missing_docs)]

mod anthropic;
mod bedrock;
mod error;
mod gemini;
mod json;
mod openai;
mod reasons;
mod responses;
pub mod sse;
mod stream;
mod usage;

use serde_json::Value;

pub use anthropic::{unforce_structured_output, STRUCTURED_OUTPUT_TOOL};
pub use bedrock::eventstream::{bedrock_event_frame, bedrock_exception_frame};
pub use bedrock::{
    bedrock_anthropic_body, bedrock_error_type, vertex_anthropic_body, BedrockInvokeStream,
};
pub use error::{error_body, translate_bedrock_error, translate_error, TranslateError};
pub use responses::{responses_input_items, translate_response_for_responses, ResponseEcho};
pub use stream::{StreamOptions, StreamTranslator};
pub use usage::{response_model_of, usage_of, Usage};

/// One of the wire dialects llmesh understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenAI Chat Completions (`POST {base}/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`POST {base}/messages`).
    Anthropic,
    /// Gemini `generateContent` / `streamGenerateContent?alt=sse`.
    Gemini,
    /// OpenAI Responses API (`POST {base}/responses`). A client dialect; as
    /// an upstream it only serves Responses clients (pass-through).
    Responses,
    /// AWS Bedrock `Converse` / `ConverseStream` (`POST
    /// /model/{modelId}/converse` or `/converse-stream`). Upstream only.
    Bedrock,
}

impl Dialect {
    /// Stable lower-case name, for metrics labels and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::Gemini => "gemini",
            Dialect::Responses => "responses",
            Dialect::Bedrock => "bedrock",
        }
    }

    /// The dialect named by [`as_str`](Self::as_str)'s output.
    pub fn from_name(name: &str) -> Option<Dialect> {
        match name {
            "openai" => Some(Dialect::OpenAi),
            "anthropic" => Some(Dialect::Anthropic),
            "gemini" => Some(Dialect::Gemini),
            "responses" => Some(Dialect::Responses),
            "bedrock" => Some(Dialect::Bedrock),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Translate a client request body (already parsed JSON) into the upstream
/// dialect.
///
/// `upstream_model` replaces the model. Per upstream:
/// - OpenAI: with `stream: true`, `stream_options.include_usage` is always set
///   to `true` so usage can be metered; [`StreamTranslator`] drops the extra
///   chunk again when the client did not ask for it.
/// - Anthropic: `max_tokens` is mandatory upstream, so it defaults to 4096
///   when an OpenAI client did not send one.
/// - Gemini: the model belongs in the URL, so the body carries none; `stream`
///   is removed as well (streaming is chosen by the URL too).
/// - Bedrock: likewise (`upstream_model` is unused; it goes in the URL).
///
/// Same dialect on both sides changes only `model` (and, for OpenAI,
/// `stream_options`); every other field, known or not, passes through.
///
/// A Responses client with another upstream is translated to Chat
/// Completions first (then to Anthropic or Gemini); fields that cannot be
/// expressed are refused with [`TranslateError::InvalidRequest`] naming the
/// field (see `src/responses/mod.rs`). Other clients cannot
/// use a Responses upstream ([`TranslateError::Unsupported`]).
///
/// OpenAI `response_format` (and a Responses client's `text.format`) for
/// an Anthropic upstream:
/// - `json_schema` with an object schema, in a request without `tools` of
///   its own, becomes one forced tool: [`STRUCTURED_OUTPUT_TOOL`] with the
///   schema as its `input_schema` and `tool_choice: {type: tool}`, so the
///   model's answer is JSON shaped by the schema. [`translate_response`]
///   and [`StreamTranslator`] turn that tool call back into the assistant's
///   text (its input serialized; streamed `input_json_delta` pieces as
///   content deltas) with `finish_reason: stop`.
/// - `json_schema` in a request that has `tools` (forcing one tool would
///   keep the model from calling the client's), or with a schema whose root
///   is not an object (a tool input must be one), and `json_object`, become
///   an extra system instruction asking for JSON only (quoting the schema).
///   The model usually complies, but nothing enforces it; a route that
///   validates structured output (the default) checks the answer anyway.
pub fn translate_request(
    client: Dialect,
    upstream: Dialect,
    body: Value,
    upstream_model: &str,
) -> Result<Value, TranslateError> {
    let mut body = json::into_object(body)?;
    match (client, upstream) {
        (Dialect::OpenAi, Dialect::OpenAi) => {
            body.insert("model".into(), Value::String(upstream_model.into()));
            openai::force_include_usage(&mut body);
            Ok(Value::Object(body))
        }
        (Dialect::Anthropic, Dialect::Anthropic) => {
            body.insert("model".into(), Value::String(upstream_model.into()));
            Ok(Value::Object(body))
        }
        (Dialect::Gemini, Dialect::Gemini) => {
            body.remove("model");
            Ok(Value::Object(body))
        }
        (Dialect::Responses, Dialect::Responses) => {
            body.insert("model".into(), Value::String(upstream_model.into()));
            Ok(Value::Object(body))
        }
        (Dialect::Responses, upstream) => {
            let pivot = responses::to_chat(&body, upstream, upstream_model)?;
            match upstream {
                Dialect::Anthropic => {
                    let req = openai::ChatRequest::parse(&pivot)?;
                    anthropic::request_from_openai(req, upstream_model)
                }
                Dialect::Gemini => {
                    let req = openai::ChatRequest::parse(&pivot)?;
                    gemini::request_from_openai(req, upstream_model)
                }
                Dialect::Bedrock => {
                    let req = openai::ChatRequest::parse(&pivot)?;
                    bedrock::request_from_openai(req, &pivot)
                }
                Dialect::OpenAi | Dialect::Responses => Ok(Value::Object(pivot)),
            }
        }
        (Dialect::OpenAi, Dialect::Anthropic) => {
            let req = openai::ChatRequest::parse(&body)?;
            anthropic::request_from_openai(req, upstream_model)
        }
        (Dialect::OpenAi, Dialect::Gemini) => {
            let req = openai::ChatRequest::parse(&body)?;
            gemini::request_from_openai(req, upstream_model)
        }
        (Dialect::Anthropic, Dialect::OpenAi) => {
            anthropic::request_to_openai(&body, upstream_model).map(Value::Object)
        }
        (Dialect::Anthropic, Dialect::Gemini) => {
            let pivot = anthropic::request_to_openai(&body, upstream_model)?;
            let req = openai::ChatRequest::parse(&pivot)?;
            gemini::request_from_openai(req, upstream_model)
        }
        (Dialect::OpenAi, Dialect::Bedrock) => {
            let req = openai::ChatRequest::parse(&body)?;
            bedrock::request_from_openai(req, &body)
        }
        (Dialect::Anthropic, Dialect::Bedrock) => {
            let pivot = anthropic::request_to_openai(&body, upstream_model)?;
            let req = openai::ChatRequest::parse(&pivot)?;
            bedrock::request_from_openai(req, &pivot)
        }
        (Dialect::Bedrock, _) => Err(bedrock_client_unsupported()),
        (Dialect::Gemini, _) => Err(gemini_client_unsupported()),
        (_, Dialect::Responses) => Err(responses_upstream_unsupported()),
    }
}

/// Translate a non-streaming upstream response into the client dialect and
/// extract its usage (read from the upstream body, so it is exact even when
/// the client dialect cannot express every detail).
///
/// For a Responses client with another upstream this is
/// [`translate_response_for_responses`] with an empty [`ResponseEcho`] (a
/// synthesized id, the current time, no request settings); the proxy should
/// call that function directly.
pub fn translate_response(
    client: Dialect,
    upstream: Dialect,
    body: Value,
) -> Result<(Value, Option<Usage>), TranslateError> {
    if client == Dialect::Responses {
        return translate_response_for_responses(upstream, body, &ResponseEcho::default());
    }
    if client == Dialect::Bedrock {
        return Err(bedrock_client_unsupported());
    }
    let usage = usage_of(upstream, &body);
    let translated = match (upstream, client) {
        (u, c) if u == c => body,
        (Dialect::Responses, _) => return Err(responses_upstream_unsupported()),
        (Dialect::Anthropic, Dialect::OpenAi) => anthropic::response_to_openai(&body)?,
        (Dialect::OpenAi, Dialect::Anthropic) => anthropic::response_from_openai(&body)?,
        (Dialect::Gemini, Dialect::OpenAi) => gemini::response_to_openai(&body)?,
        (Dialect::Gemini, Dialect::Anthropic) => {
            anthropic::response_from_openai(&gemini::response_to_openai(&body)?)?
        }
        (Dialect::Bedrock, Dialect::OpenAi) => bedrock::response_to_openai(&body)?,
        (Dialect::Bedrock, Dialect::Anthropic) => {
            let mut out = anthropic::response_from_openai(&bedrock::response_to_openai(&body)?)?;
            // Through the OpenAI pivot the cache-write count is lost; the
            // Anthropic client has a place for it.
            if let Some(u) = usage {
                out["usage"] = usage::anthropic_usage_json(u);
            }
            out
        }
        (_, Dialect::Gemini) => return Err(gemini_client_unsupported()),
        // Every pairing is listed above; this arm only satisfies the compiler.
        _ => return Err(gemini_client_unsupported()),
    };
    Ok((translated, usage))
}

/// Read whether a client request asks for streaming, in the client's dialect.
///
/// Gemini clients select streaming through the URL, so this returns `false`
/// for them (and for Bedrock, which is no client dialect).
pub fn is_stream_request(client: Dialect, body: &Value) -> bool {
    match client {
        Dialect::OpenAi | Dialect::Anthropic | Dialect::Responses => {
            body.get("stream").and_then(Value::as_bool).unwrap_or(false)
        }
        Dialect::Gemini | Dialect::Bedrock => false,
    }
}

fn gemini_client_unsupported() -> TranslateError {
    TranslateError::Unsupported(GEMINI_CLIENT_UNSUPPORTED.into())
}

pub(crate) const GEMINI_CLIENT_UNSUPPORTED: &str =
    "the gemini dialect is only supported for upstreams, not for clients";

fn responses_upstream_unsupported() -> TranslateError {
    TranslateError::Unsupported(RESPONSES_UPSTREAM_UNSUPPORTED.into())
}

fn bedrock_client_unsupported() -> TranslateError {
    TranslateError::Unsupported(BEDROCK_CLIENT_UNSUPPORTED.into())
}

pub(crate) const BEDROCK_CLIENT_UNSUPPORTED: &str =
    "the bedrock dialect is only supported for upstreams, not for clients";

pub(crate) const RESPONSES_UPSTREAM_UNSUPPORTED: &str =
    "a responses upstream only serves responses clients";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dialect_names() {
        assert_eq!(Dialect::OpenAi.as_str(), "openai");
        assert_eq!(Dialect::Anthropic.as_str(), "anthropic");
        assert_eq!(Dialect::Gemini.as_str(), "gemini");
        for d in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini] {
            assert_eq!(Dialect::from_name(d.as_str()), Some(d));
        }
        assert_eq!(Dialect::from_name("OpenAI"), None);
    }

    #[test]
    fn responses_dialect_name() {
        assert_eq!(Dialect::Responses.as_str(), "responses");
        assert_eq!(Dialect::from_name("responses"), Some(Dialect::Responses));
        assert_eq!(Dialect::Responses.to_string(), "responses");
    }

    #[test]
    fn responses_pairings() {
        let body = json!({"model": "m", "input": "hi", "background": true, "x": 1});
        let out =
            translate_request(Dialect::Responses, Dialect::Responses, body.clone(), "up").unwrap();
        assert_eq!(
            out,
            json!({"model": "up", "input": "hi", "background": true, "x": 1})
        );
        for client in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini] {
            let err = translate_request(client, Dialect::Responses, body.clone(), "up");
            assert!(
                matches!(err, Err(TranslateError::Unsupported(_))),
                "{client}"
            );
            let err = translate_response(client, Dialect::Responses, json!({}));
            assert!(
                matches!(err, Err(TranslateError::Unsupported(_))),
                "{client}"
            );
        }
        let native = json!({"id": "resp_1", "model": "gpt-5",
            "usage": {"input_tokens": 4, "output_tokens": 2}});
        let (out, usage) =
            translate_response(Dialect::Responses, Dialect::Responses, native.clone()).unwrap();
        assert_eq!(out, native);
        assert_eq!(usage.map(|u| u.input_tokens), Some(4));
        let chat = json!({"model": "gpt", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]});
        let (out, _) = translate_response(Dialect::Responses, Dialect::OpenAi, chat).unwrap();
        assert_eq!(out["object"], "response");
        assert!(out["id"].as_str().unwrap().starts_with("resp_"));
        assert!(is_stream_request(
            Dialect::Responses,
            &json!({"stream": true})
        ));
        assert!(!is_stream_request(Dialect::Responses, &json!({})));
    }

    #[test]
    fn responses_request_through_the_pivot() {
        let body = json!({"model": "m", "instructions": "sys", "input": "hi",
            "max_output_tokens": 10, "stream": true});
        let out = translate_request(
            Dialect::Responses,
            Dialect::Anthropic,
            body.clone(),
            "claude",
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"model": "claude", "max_tokens": 10, "system": "sys", "stream": true,
                "messages": [{"role": "user", "content": "hi"}]})
        );
        let out = translate_request(
            Dialect::Responses,
            Dialect::Gemini,
            body,
            "gemini-2.5-flash",
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "systemInstruction": {"parts": [{"text": "sys"}]},
                "generationConfig": {"maxOutputTokens": 10}})
        );
        let err = translate_request(
            Dialect::Responses,
            Dialect::Gemini,
            json!({"input": [{"type": "item_reference", "id": "x"}]}),
            "g",
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "`input[0].type` \"item_reference\" is not supported for this upstream"
        );
    }

    #[test]
    fn responses_output_replays_as_the_next_input() {
        let answer = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude", "stop_reason": "tool_use", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Rome"}}],
            "usage": {"input_tokens": 5, "output_tokens": 3}});
        let echo = ResponseEcho {
            id: "resp_1".into(),
            created_at: 1,
            request: serde_json::Map::new(),
        };
        let (resp, usage) =
            translate_response_for_responses(Dialect::Anthropic, answer, &echo).unwrap();
        assert_eq!(usage.map(|u| u.output_tokens), Some(3));
        let mut input = responses_input_items(&json!({"input": "weather?"})).unwrap();
        input.extend(resp["output"].as_array().unwrap().iter().cloned());
        input
            .push(json!({"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"}));
        let next = json!({"model": "m", "input": input});
        let out =
            translate_request(Dialect::Responses, Dialect::Anthropic, next.clone(), "c").unwrap();
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Rome"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}])
        );
        for upstream in [Dialect::OpenAi, Dialect::Gemini] {
            assert!(translate_request(Dialect::Responses, upstream, next.clone(), "m").is_ok());
        }
    }

    #[test]
    fn same_dialect_openai_only_touches_model_and_stream_options() {
        let body = json!({
            "model": "client-model",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_usage": false, "other": 1},
            "x_unknown": {"kept": true}
        });
        let out = translate_request(Dialect::OpenAi, Dialect::OpenAi, body, "up").unwrap();
        assert_eq!(
            out,
            json!({
                "model": "up",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": true,
                "stream_options": {"include_usage": true, "other": 1},
                "x_unknown": {"kept": true}
            })
        );
    }

    #[test]
    fn same_dialect_openai_non_stream_leaves_stream_options_alone() {
        let body = json!({"model": "m", "messages": []});
        let out = translate_request(Dialect::OpenAi, Dialect::OpenAi, body, "up").unwrap();
        assert_eq!(out, json!({"model": "up", "messages": []}));
    }

    #[test]
    fn same_dialect_gemini_drops_model() {
        let body = json!({"model": "m", "contents": []});
        let out = translate_request(Dialect::Gemini, Dialect::Gemini, body, "up").unwrap();
        assert_eq!(out, json!({"contents": []}));
    }

    #[test]
    fn gemini_client_is_unsupported() {
        let err = translate_request(Dialect::Gemini, Dialect::OpenAi, json!({}), "m").unwrap_err();
        assert!(matches!(err, TranslateError::Unsupported(_)));
        let err = translate_response(Dialect::Gemini, Dialect::OpenAi, json!({})).unwrap_err();
        assert!(matches!(err, TranslateError::Unsupported(_)));
    }

    #[test]
    fn bedrock_is_upstream_only() {
        assert_eq!(Dialect::Bedrock.as_str(), "bedrock");
        assert_eq!(Dialect::from_name("bedrock"), Some(Dialect::Bedrock));
        let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for upstream in [Dialect::OpenAi, Dialect::Bedrock] {
            let err = translate_request(Dialect::Bedrock, upstream, chat.clone(), "m");
            assert!(matches!(err, Err(TranslateError::Unsupported(_))));
            let err = translate_response(Dialect::Bedrock, upstream, json!({}));
            assert!(matches!(err, Err(TranslateError::Unsupported(_))));
        }
        let err = translate_request(Dialect::Gemini, Dialect::Bedrock, json!({}), "m");
        assert!(matches!(err, Err(TranslateError::Unsupported(_))));
        assert!(!is_stream_request(
            Dialect::Bedrock,
            &json!({"stream": true})
        ));
        // The model and stream flag go in the URL.
        let out = translate_request(
            Dialect::OpenAi,
            Dialect::Bedrock,
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            "anthropic.claude-v2",
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
        );
    }

    #[test]
    fn non_object_body_is_invalid() {
        let err = translate_request(Dialect::OpenAi, Dialect::OpenAi, json!([1]), "m").unwrap_err();
        assert!(matches!(err, TranslateError::InvalidRequest(_)));
    }

    #[test]
    fn stream_flag() {
        assert!(is_stream_request(Dialect::OpenAi, &json!({"stream": true})));
        assert!(!is_stream_request(
            Dialect::Anthropic,
            &json!({"stream": "yes"})
        ));
        assert!(!is_stream_request(
            Dialect::Gemini,
            &json!({"stream": true})
        ));
    }
}
