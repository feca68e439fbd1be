//! OpenAI ⇄ AWS Bedrock `Converse` / `ConverseStream`, an upstream-only
//! dialect (like Gemini): the model id and the choice of streaming are in
//! the URL (`POST /model/{modelId}/converse` or `/converse-stream`), so the
//! body carries neither.
//!
//! What maps (OpenAI → Converse):
//! - user/assistant messages → `messages[{role, content: [...]}]` with
//!   `text`, `image` (`{format, source: {bytes}}`, from base64 data URLs
//!   only) and `toolUse` (`{toolUseId, name, input}`) blocks;
//! - tool messages → user-role `toolResult` blocks (`content: [{json}]`
//!   when the tool answered a JSON object, `[{text}]` otherwise; no
//!   `status`, OpenAI has no error flag). Consecutive turns of one role are
//!   merged: Converse requires alternation;
//! - system/developer messages → `system: [{text}]`;
//! - `max_tokens`/`max_completion_tokens`, `temperature` (clamped to 0..=1),
//!   `top_p`, `stop` → `inferenceConfig.maxTokens/temperature/topP/
//!   stopSequences`;
//! - `tools` → `toolConfig.tools[{toolSpec: {name, description,
//!   inputSchema: {json}}}]`; `tool_choice` auto/required/function →
//!   `toolChoice {auto:{}}|{any:{}}|{tool:{name}}`; `none` drops the tools,
//!   unless the conversation holds tool calls or results (Converse then
//!   requires a `toolConfig`: the tools stay, without a `toolChoice`).
//!   A conversation with tool calls but no `tools` at all is passed as is,
//!   and Bedrock refuses it;
//! - `response_format` json_object/json_schema → a system instruction asking
//!   for JSON only (as for Anthropic without a forced tool; not enforced).
//!
//! What is refused: `n > 1`, `logprobs`/`top_logprobs`, audio output
//! ([`TranslateError::Unsupported`](crate::TranslateError::Unsupported)),
//! and image URLs that are not data URLs or not png/jpeg/gif/webp
//! ([`TranslateError::InvalidRequest`](crate::TranslateError::InvalidRequest),
//! naming the field). Dropped silently, as for Anthropic: `seed`, penalties,
//! `parallel_tool_calls`, `user`.
//!
//! Answers (Converse → OpenAI): `text` and `toolUse` blocks become content
//! and `tool_calls` (reasoning only reaches Responses clients), `stopReason`
//! maps to `finish_reason`, and usage counts cache reads and writes as
//! prompt tokens. Answers carry no id (synthesized) and no model (empty).
//!
//! Streams arrive in AWS's binary event-stream framing, decoded by
//! [`eventstream`]; exception messages become the client's in-stream error.
//! Error bodies (`{"message"}`, the type in the `x-amzn-ErrorType` header)
//! are handled by [`translate_bedrock_error`](crate::translate_bedrock_error).
//!
//! Bedrock is not a client dialect: every translation from it fails with
//! [`TranslateError::Unsupported`](crate::TranslateError::Unsupported).

pub(crate) mod eventstream;
mod invoke;
mod request;
mod response;

use serde_json::Value;

use crate::error::UpstreamError;

pub use invoke::BedrockInvokeStream;
pub(crate) use request::request_from_openai;
pub(crate) use response::{finish_reason, reasoning_texts, response_to_openai};

/// The error type named by an `x-amzn-ErrorType` header value (or a body's
/// `__type`): the part before the first `:`, after any `#` namespace, e.g.
/// `ValidationException` for
/// `ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/`.
pub fn bedrock_error_type(header_value: &str) -> &str {
    let head = header_value.split(':').next().unwrap_or_default();
    head.rsplit('#').next().unwrap_or(head).trim()
}

/// The llmesh error kind (see [`error_body`](crate::error_body)) of a
/// Bedrock error or stream exception type, in either case
/// (`ThrottlingException`, `throttlingException`).
pub(crate) fn kind_for_type(ty: &str) -> Option<&'static str> {
    let ty = ty.to_ascii_lowercase();
    Some(match ty.strip_suffix("exception").unwrap_or(&ty) {
        "throttling" | "servicequotaexceeded" | "toomanyrequests" => "rate_limit_error",
        "validation" | "serialization" => "invalid_request_error",
        "resourcenotfound" => "not_found_error",
        "accessdenied" => "permission_error",
        "unrecognizedclient"
        | "expiredtoken"
        | "invalidsignature"
        | "incompletesignature"
        | "missingauthenticationtoken" => "authentication_error",
        "modeltimeout" => "timeout_error",
        "serviceunavailable" | "modelnotready" => "overloaded_error",
        "modelerror" | "modelstreamerror" | "internalserver" | "internalfailure" => "api_error",
        _ => return None,
    })
}

/// A Bedrock error body (`{"message"}` or `{"Message"}`, maybe with a
/// `__type`) in neutral form; `error_type` is the `x-amzn-ErrorType` header
/// (or a stream exception's `:exception-type`) when known.
pub(crate) fn extract_error(v: &Value, error_type: Option<&str>) -> Option<UpstreamError> {
    let obj = v.as_object()?;
    let message = ["message", "Message"]
        .into_iter()
        .find_map(|k| obj.get(k).and_then(Value::as_str))?;
    let ty = error_type
        .map(bedrock_error_type)
        .or_else(|| {
            obj.get("__type")
                .and_then(Value::as_str)
                .map(bedrock_error_type)
        })
        .filter(|t| !t.is_empty());
    let kind = ty.and_then(kind_for_type).unwrap_or("api_error");
    let code = ty.map(|t| {
        if kind == "not_found_error" && message.to_ascii_lowercase().contains("model") {
            "model_not_found".to_owned()
        } else {
            t.to_owned()
        }
    });
    Some(UpstreamError {
        kind,
        message: crate::error::truncate_message(message),
        code,
    })
}

/// An Anthropic Messages body for Claude on Bedrock (`InvokeModel` /
/// `InvokeModelWithResponseStream`): `model` and `stream` removed (both are
/// in the URL), `anthropic_version: bedrock-2023-05-31` set. A body that is
/// not an object is returned unchanged. The streamed answer is unwrapped by
/// [`BedrockInvokeStream`].
pub fn bedrock_anthropic_body(messages_body: &Value) -> Value {
    provider_anthropic_body(messages_body, "bedrock-2023-05-31")
}

/// An Anthropic Messages body for Claude on Vertex AI (`rawPredict` /
/// `streamRawPredict`): `model` removed (it is in the URL),
/// `anthropic_version: vertex-2023-10-16` set; `stream` stays, Vertex reads
/// it from the body. A body that is not an object is returned unchanged.
pub fn vertex_anthropic_body(messages_body: &Value) -> Value {
    let mut out = provider_anthropic_body(messages_body, "vertex-2023-10-16");
    if let (Some(stream), Value::Object(o)) = (messages_body.get("stream"), &mut out) {
        o.insert("stream".into(), stream.clone());
    }
    out
}

fn provider_anthropic_body(body: &Value, version: &str) -> Value {
    let mut out = body.clone();
    if let Value::Object(o) = &mut out {
        o.remove("model");
        o.remove("stream");
        o.insert("anthropic_version".into(), Value::String(version.into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_types() {
        assert_eq!(
            bedrock_error_type(
                "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
            ),
            "ValidationException"
        );
        assert_eq!(
            bedrock_error_type("ResourceNotFoundException:"),
            "ResourceNotFoundException"
        );
        assert_eq!(
            bedrock_error_type("com.amazon.coral.service#ThrottlingException"),
            "ThrottlingException"
        );
        assert_eq!(bedrock_error_type(""), "");
        assert_eq!(
            kind_for_type("throttlingException"),
            Some("rate_limit_error")
        );
        assert_eq!(
            kind_for_type("ValidationException"),
            Some("invalid_request_error")
        );
        assert_eq!(
            kind_for_type("modelStreamErrorException"),
            Some("api_error")
        );
        assert_eq!(kind_for_type("Whatever"), None);
    }

    #[test]
    fn anthropic_bodies_for_the_clouds() {
        let body = json!({"model": "claude", "stream": true, "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}], "anthropic_version": "old"});
        assert_eq!(
            bedrock_anthropic_body(&body),
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                "anthropic_version": "bedrock-2023-05-31"})
        );
        assert_eq!(
            vertex_anthropic_body(&body),
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                "stream": true, "anthropic_version": "vertex-2023-10-16"})
        );
        let plain = json!({"model": "claude", "messages": []});
        assert_eq!(
            vertex_anthropic_body(&plain),
            json!({"messages": [], "anthropic_version": "vertex-2023-10-16"})
        );
        assert_eq!(bedrock_anthropic_body(&json!([1])), json!([1]));
    }
}
