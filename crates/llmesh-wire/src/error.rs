//! Translation failures, and error bodies in each dialect.

use serde_json::{json, Value};

use crate::Dialect;

/// Why a body could not be translated.
///
/// Messages name fields and never quote their values, so they are safe to
/// show to the client and to log (values may be prompt text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client request is malformed (wrong types, missing fields).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request is well-formed but uses something the target dialect
    /// cannot express (e.g. `n > 1` for Anthropic).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The upstream sent something that is not a valid body of its dialect.
    #[error("invalid upstream response: {0}")]
    InvalidUpstream(String),
}

impl TranslateError {
    /// The error kind to pass to [`error_body`] for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            TranslateError::InvalidRequest(_) | TranslateError::Unsupported(_) => {
                "invalid_request_error"
            }
            TranslateError::InvalidUpstream(_) => "api_error",
        }
    }

    /// The HTTP status the proxy should answer with for this error.
    pub fn status(&self) -> u16 {
        match self {
            TranslateError::InvalidRequest(_) | TranslateError::Unsupported(_) => 400,
            TranslateError::InvalidUpstream(_) => 502,
        }
    }

    /// The bare message, without the variant prefix `Display` adds.
    pub fn message(&self) -> &str {
        match self {
            TranslateError::InvalidRequest(m)
            | TranslateError::Unsupported(m)
            | TranslateError::InvalidUpstream(m) => m,
        }
    }
}

/// An error body in the client's dialect, for errors llmesh itself generates.
///
/// `kind` is one of `invalid_request_error`, `not_found_error`,
/// `authentication_error`, `permission_error`, `rate_limit_error`,
/// `api_error`, `overloaded_error`, `timeout_error`, `request_too_large`
/// (Anthropic's vocabulary; other dialects get their closest type). `code`
/// is an llmesh error code; only OpenAI bodies have a place for it.
pub fn error_body(client: Dialect, kind: &str, code: &str, message: &str) -> Value {
    match client {
        Dialect::OpenAi | Dialect::Responses => json!({
            "error": {
                "message": message,
                "type": openai_type(kind),
                "param": null,
                "code": code,
            }
        }),
        Dialect::Anthropic => json!({
            "type": "error",
            "error": {"type": kind, "message": message},
        }),
        Dialect::Gemini => {
            let (status, name) = gemini_status(kind);
            json!({"error": {"code": status, "message": message, "status": name}})
        }
        // Not a client dialect; its own error shape, for completeness.
        Dialect::Bedrock => json!({"message": message}),
    }
}

/// Convert an upstream error response into the client's dialect.
///
/// Same dialect: the body is returned as parsed JSON when it is JSON (OpenAI
/// Chat Completions and the Responses API share one error shape, so they
/// count as the same dialect here). In every other case the upstream message is extracted (or the raw text, truncated,
/// when the body is not JSON) and re-wrapped; the error kind follows the HTTP
/// status. Never panics, whatever the bytes.
///
/// Bedrock error bodies are `{"message": "..."}`; their type arrives in the
/// `x-amzn-ErrorType` header, which this function does not see: it then
/// goes by the status alone. Use [`translate_bedrock_error`] to pass it.
pub fn translate_error(client: Dialect, upstream: Dialect, status: u16, body: &[u8]) -> Value {
    translate_error_typed(client, upstream, status, body, None)
}

/// [`translate_error`] for a Bedrock upstream, with the value of the
/// answer's `x-amzn-ErrorType` header when it had one (e.g.
/// `ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/`).
/// The type picks the error kind (it is more precise than the status:
/// Bedrock answers a `ServiceQuotaExceededException` with 400) and becomes
/// the OpenAI `code` (`model_not_found` for an unknown model id).
pub fn translate_bedrock_error(
    client: Dialect,
    status: u16,
    error_type: Option<&str>,
    body: &[u8],
) -> Value {
    translate_error_typed(client, Dialect::Bedrock, status, body, error_type)
}

fn translate_error_typed(
    client: Dialect,
    upstream: Dialect,
    status: u16,
    body: &[u8],
    error_type: Option<&str>,
) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if client == upstream || (openai_shaped(client) && openai_shaped(upstream)) {
        if let Some(v) = parsed {
            return v;
        }
    }
    let extracted = parsed.as_ref().and_then(|v| match upstream {
        Dialect::Bedrock => crate::bedrock::extract_error(v, error_type),
        _ => extract(upstream, v),
    });
    let typed_kind = match (upstream, &extracted) {
        (Dialect::Bedrock, Some(e)) if e.code.is_some() => Some(e.kind),
        _ => None,
    };
    let kind = typed_kind
        .or_else(|| kind_for_status(status))
        .or_else(|| extracted.as_ref().map(|e| e.kind))
        .unwrap_or("api_error");
    let (message, code) = match extracted {
        Some(e) => (e.message, e.code.unwrap_or_else(|| "upstream_error".into())),
        None => {
            let text = String::from_utf8_lossy(body);
            let text = truncate(text.trim(), MAX_MESSAGE);
            let message = if text.is_empty() {
                format!("upstream returned HTTP {status}")
            } else {
                text.to_owned()
            };
            (message, "upstream_error".into())
        }
    };
    error_body(client, kind, &code, &message)
}

const MAX_MESSAGE: usize = 2000;

fn openai_shaped(d: Dialect) -> bool {
    matches!(d, Dialect::OpenAi | Dialect::Responses)
}

/// An error reported by an upstream, in neutral form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamError {
    pub kind: &'static str,
    pub message: String,
    /// The upstream's own type/status/code string, as OpenAI `code`.
    pub code: Option<String>,
}

/// Pull the error out of an upstream error body or stream error event.
pub(crate) fn extract(upstream: Dialect, v: &Value) -> Option<UpstreamError> {
    if upstream == Dialect::Bedrock {
        return crate::bedrock::extract_error(v, None);
    }
    // Gemini sometimes wraps the error object in a one-element array.
    let v = match v {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let err = v.get("error")?;
    if let Some(text) = err.as_str() {
        return Some(UpstreamError {
            kind: "api_error",
            message: truncate(text, MAX_MESSAGE).to_owned(),
            code: None,
        });
    }
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(|m| truncate(m, MAX_MESSAGE).to_owned())
        .unwrap_or_else(|| "upstream error".into());
    let str_at = |k: &str| err.get(k).and_then(Value::as_str).map(str::to_owned);
    let (kind, code) = match upstream {
        Dialect::OpenAi | Dialect::Responses => {
            let ty = str_at("type");
            let code = str_at("code").or_else(|| ty.clone());
            (kind_for_openai_type(ty.as_deref().unwrap_or("")), code)
        }
        Dialect::Anthropic => {
            let ty = str_at("type");
            (kind_for_anthropic_type(ty.as_deref().unwrap_or("")), ty)
        }
        // Returned above: Bedrock bodies have no `error` object.
        Dialect::Bedrock => ("api_error", None),
        Dialect::Gemini => {
            let st = str_at("status");
            let kind = match st.as_deref() {
                Some(s) => kind_for_gemini_status(s),
                None => err
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| u16::try_from(c).ok())
                    .and_then(kind_for_status)
                    .unwrap_or("api_error"),
            };
            (kind, st)
        }
    };
    Some(UpstreamError {
        kind,
        message,
        code,
    })
}

/// An upstream message cut to the length error bodies keep.
pub(crate) fn truncate_message(s: &str) -> String {
    truncate(s, MAX_MESSAGE).to_owned()
}

fn truncate(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

fn kind_for_status(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        500..=599 => "api_error",
        402..=499 => "invalid_request_error",
        _ => return None,
    })
}

fn kind_for_openai_type(ty: &str) -> &'static str {
    match ty {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" | "requests" | "tokens" | "insufficient_quota" => "rate_limit_error",
        _ => "api_error",
    }
}

fn kind_for_anthropic_type(ty: &str) -> &'static str {
    match ty {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "request_too_large" => "request_too_large",
        "rate_limit_error" => "rate_limit_error",
        "overloaded_error" => "overloaded_error",
        "timeout_error" => "timeout_error",
        _ => "api_error",
    }
}

fn kind_for_gemini_status(status: &str) -> &'static str {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "invalid_request_error",
        "UNAUTHENTICATED" => "authentication_error",
        "PERMISSION_DENIED" => "permission_error",
        "NOT_FOUND" => "not_found_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        "UNAVAILABLE" => "overloaded_error",
        "DEADLINE_EXCEEDED" => "timeout_error",
        _ => "api_error",
    }
}

/// OpenAI has fewer error types; several kinds share one.
fn openai_type(kind: &str) -> &str {
    match kind {
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        "api_error" | "overloaded_error" | "timeout_error" => "server_error",
        other => other,
    }
}

fn gemini_status(kind: &str) -> (u16, &'static str) {
    match kind {
        "authentication_error" => (401, "UNAUTHENTICATED"),
        "permission_error" => (403, "PERMISSION_DENIED"),
        "not_found_error" => (404, "NOT_FOUND"),
        "rate_limit_error" => (429, "RESOURCE_EXHAUSTED"),
        "overloaded_error" => (503, "UNAVAILABLE"),
        "timeout_error" => (504, "DEADLINE_EXCEEDED"),
        "api_error" => (500, "INTERNAL"),
        _ => (400, "INVALID_ARGUMENT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_per_dialect() {
        assert_eq!(
            error_body(
                Dialect::OpenAi,
                "rate_limit_error",
                "quota_exceeded",
                "slow down"
            ),
            json!({"error": {"message": "slow down", "type": "rate_limit_error",
                "param": null, "code": "quota_exceeded"}})
        );
        assert_eq!(
            error_body(Dialect::OpenAi, "overloaded_error", "c", "m")["error"]["type"],
            "server_error"
        );
        assert_eq!(
            error_body(Dialect::Anthropic, "not_found_error", "no_route", "nope"),
            json!({"type": "error", "error": {"type": "not_found_error", "message": "nope"}})
        );
        assert_eq!(
            error_body(Dialect::Gemini, "rate_limit_error", "c", "m"),
            json!({"error": {"code": 429, "message": "m", "status": "RESOURCE_EXHAUSTED"}})
        );
    }

    #[test]
    fn responses_errors_have_the_openai_shape() {
        assert_eq!(
            error_body(Dialect::Responses, "rate_limit_error", "c", "m"),
            error_body(Dialect::OpenAi, "rate_limit_error", "c", "m")
        );
        let body = br#"{"error":{"message":"bad","type":"invalid_request_error","code":"x"}}"#;
        for (c, u) in [
            (Dialect::Responses, Dialect::OpenAi),
            (Dialect::Responses, Dialect::Responses),
        ] {
            let out = translate_error(c, u, 400, body);
            assert_eq!(out["error"]["code"], "x");
            assert_eq!(out["error"]["message"], "bad");
        }
        let out = translate_error(
            Dialect::Responses,
            Dialect::Anthropic,
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            out,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null,
                "code": "overloaded_error"}})
        );
        let out = translate_error(Dialect::Anthropic, Dialect::Responses, 429, body);
        assert_eq!(out["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn same_dialect_json_passes_through() {
        let body = br#"{"error":{"message":"bad","type":"invalid_request_error","code":"x"}}"#;
        let out = translate_error(Dialect::OpenAi, Dialect::OpenAi, 400, body);
        assert_eq!(out["error"]["code"], "x");
    }

    #[test]
    fn same_dialect_garbage_is_wrapped() {
        let out = translate_error(
            Dialect::Anthropic,
            Dialect::Anthropic,
            502,
            b"<html>bad gateway",
        );
        assert_eq!(
            out,
            json!({"type": "error", "error": {"type": "api_error", "message": "<html>bad gateway"}})
        );
        let out = translate_error(Dialect::OpenAi, Dialect::Anthropic, 503, b"");
        assert_eq!(out["error"]["message"], "upstream returned HTTP 503");
        assert_eq!(out["error"]["type"], "server_error");
    }

    #[test]
    fn anthropic_to_openai() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let out = translate_error(Dialect::OpenAi, Dialect::Anthropic, 529, body);
        assert_eq!(
            out,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null,
                "code": "overloaded_error"}})
        );
    }

    #[test]
    fn gemini_to_anthropic_including_array_wrapper() {
        let body = br#"[{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}]"#;
        let out = translate_error(Dialect::Anthropic, Dialect::Gemini, 429, body);
        assert_eq!(
            out,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Quota"}})
        );
    }

    #[test]
    fn garbage_never_panics() {
        let samples: [&[u8]; 6] = [
            b"",
            b"\xff\xfe",
            b"[]",
            b"{\"error\":5}",
            b"null",
            b"{\"error\":{}}",
        ];
        for s in samples {
            for c in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini] {
                for u in [
                    Dialect::OpenAi,
                    Dialect::Anthropic,
                    Dialect::Gemini,
                    Dialect::Bedrock,
                ] {
                    let out = translate_error(c, u, 500, s);
                    assert!(out.is_object() || c == u, "{out}");
                }
            }
        }
    }

    #[test]
    fn bedrock_errors_by_header_type_or_status() {
        let throttled = br#"{"message":"Too many requests, please wait before trying again."}"#;
        let out = translate_bedrock_error(
            Dialect::OpenAi,
            429,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            throttled,
        );
        assert_eq!(
            out,
            json!({"error": {"message": "Too many requests, please wait before trying again.",
                "type": "rate_limit_error", "param": null, "code": "ThrottlingException"}})
        );
        let missing =
            br#"{"message":"Could not resolve the foundation model from the provided model identifier."}"#;
        let out = translate_bedrock_error(
            Dialect::Anthropic,
            404,
            Some("ResourceNotFoundException:"),
            missing,
        );
        assert_eq!(out["error"]["type"], "not_found_error");
        let out = translate_bedrock_error(
            Dialect::OpenAi,
            404,
            Some("ResourceNotFoundException:"),
            missing,
        );
        assert_eq!(out["error"]["code"], "model_not_found");
        assert_eq!(out["error"]["type"], "invalid_request_error");
        // `Message` capitalised, no header: the status decides.
        let out = translate_error(
            Dialect::Anthropic,
            Dialect::Bedrock,
            403,
            br#"{"Message":"User is not authorized"}"#,
        );
        assert_eq!(
            out,
            json!({"type": "error", "error": {"type": "permission_error",
                "message": "User is not authorized"}})
        );
        let out = translate_error(
            Dialect::OpenAi,
            Dialect::Bedrock,
            400,
            br#"{"message":"Malformed input request"}"#,
        );
        assert_eq!(out["error"]["type"], "invalid_request_error");
        assert_eq!(out["error"]["code"], "upstream_error");
        // The type beats the status: quota errors come with 400.
        let out = translate_bedrock_error(
            Dialect::Anthropic,
            400,
            Some("ServiceQuotaExceededException"),
            br#"{"message":"quota"}"#,
        );
        assert_eq!(out["error"]["type"], "rate_limit_error");
        // A `__type` in the body works without the header.
        let out = translate_error(
            Dialect::OpenAi,
            Dialect::Bedrock,
            400,
            br#"{"__type":"com.amazon.coral.validate#ValidationException","message":"bad"}"#,
        );
        assert_eq!(out["error"]["code"], "ValidationException");
        let out = translate_bedrock_error(Dialect::OpenAi, 500, None, b"<html>oops");
        assert_eq!(out["error"]["message"], "<html>oops");
        assert_eq!(out["error"]["type"], "server_error");
    }

    #[test]
    fn long_messages_are_truncated_on_char_boundary() {
        let body = "é".repeat(5000);
        let out = translate_error(Dialect::OpenAi, Dialect::Gemini, 500, body.as_bytes());
        let msg = out["error"]["message"].as_str().unwrap();
        assert!(msg.len() <= MAX_MESSAGE);
    }
}
