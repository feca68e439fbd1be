//! Which class a failed upstream attempt belongs to. The class decides
//! whether it is retried, which fallback chain takes over, and the
//! `error_type` label.

use llmesh_api::ErrorClass;

/// The class of an upstream error answer, from its status and body.
/// Context-length and content-filter refusals arrive as 400s whose body says
/// which; they are told apart from other bad requests because each has its
/// own fallback (a larger model, another provider's filter).
pub fn classify_status(status: u16, body: &[u8]) -> ErrorClass {
    match status {
        429 => ErrorClass::RateLimited,
        401 | 403 => ErrorClass::Auth,
        408 => ErrorClass::Timeout,
        s if s >= 500 => ErrorClass::ServerError,
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
            if [
                "context_length_exceeded",
                "maximum context length",
                "prompt is too long",
                "exceeds the maximum number of tokens",
                "context window",
                // Bedrock's ValidationException for an oversized prompt.
                "input is too long",
                "too many input tokens",
            ]
            .iter()
            .any(|n| text.contains(n))
            {
                ErrorClass::ContextLength
            } else if ["content_filter", "content_policy_violation", "safety"]
                .iter()
                .any(|n| text.contains(n))
            {
                ErrorClass::ContentFilter
            } else {
                ErrorClass::InvalidRequest
            }
        }
    }
}

/// The class of a Bedrock error answer, whose type is in its
/// `x-amzn-ErrorType` header: throttling and a used-up service quota (a
/// 400) are rate limits, the rest goes by status and body.
pub fn classify_bedrock(status: u16, error_type: &str, body: &[u8]) -> ErrorClass {
    match llmesh_wire::bedrock_error_type(error_type) {
        "ThrottlingException" | "ServiceQuotaExceededException" => ErrorClass::RateLimited,
        "ServiceUnavailableException" | "ModelNotReadyException" => ErrorClass::ServerError,
        "ModelTimeoutException" => ErrorClass::Timeout,
        _ => classify_status(status, body),
    }
}

/// The `error_type` label of a class.
pub fn label(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Connect => "upstream_connect",
        ErrorClass::Timeout => "upstream_timeout",
        ErrorClass::ServerError => "upstream_5xx",
        ErrorClass::RateLimited => "rate_limited",
        ErrorClass::ContextLength => "context_length",
        ErrorClass::ContentFilter => "content_filter",
        ErrorClass::Auth => "upstream_auth",
        ErrorClass::InvalidRequest => "upstream_4xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_from_status_and_body() {
        assert_eq!(classify_status(429, b""), ErrorClass::RateLimited);
        assert_eq!(classify_status(503, b"x"), ErrorClass::ServerError);
        assert_eq!(classify_status(529, b""), ErrorClass::ServerError);
        assert_eq!(classify_status(401, b""), ErrorClass::Auth);
        let openai = br#"{"error":{"code":"context_length_exceeded","message":"This model's maximum context length is 8192 tokens"}}"#;
        assert_eq!(classify_status(400, openai), ErrorClass::ContextLength);
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(classify_status(400, anthropic), ErrorClass::ContextLength);
        let filter = br#"{"error":{"code":"content_filter","message":"filtered"}}"#;
        assert_eq!(classify_status(400, filter), ErrorClass::ContentFilter);
        assert_eq!(
            classify_status(400, br#"{"error":{"message":"bad"}}"#),
            ErrorClass::InvalidRequest
        );
        assert_eq!(
            classify_status(404, b"\xff\xfe"),
            ErrorClass::InvalidRequest
        );
    }
}
