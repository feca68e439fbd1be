//! The one error type of the request path. Each variant knows its HTTP
//! status, its error type in the client's API format, and its metric label.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use llmesh_wire::Dialect;

use crate::body::{full, ProxyBody};

/// Why a request did not get an upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Request body over `--max-body-bytes`.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The client went away or sent a broken body.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// Not JSON.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON but not a valid request.
    #[error("{0}")]
    InvalidRequest(String),
    /// No route serves the model.
    #[error("{message}")]
    UnknownModel {
        /// The full message, listing known models.
        message: String,
    },
    /// Path or method the proxy does not serve.
    #[error("{method} {path} is not served by llmesh: it answers POST /v1/chat/completions, /v1/responses, /v1/completions, /v1/embeddings, /v1/messages, /v1/messages/count_tokens and GET /v1/models itself; any other path passes through when its JSON or form body names a `model` an LLMRoute serves, or when an LLMRoute allows it with `spec.passthrough: {{paths: [\"{path}\"], provider: <LLMProvider name>}}`")]
    UnsupportedEndpoint {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The provider's API cannot do what was asked (e.g. embeddings).
    #[error("{0}")]
    Unsupported(String),
    /// A stored object (a response id) the namespace does not have.
    #[error("{what} not found")]
    NotFound {
        /// e.g. `response with id 'resp_1'`.
        what: String,
        /// The request field that named it, if any.
        param: Option<&'static str>,
    },
    /// A body the data policy cannot scan, for a provider not cleared for
    /// a class whose rule says `unscannable: deny`.
    #[error("the namespace's data policy does not let bodies it cannot scan ({content_type}) go to provider {provider}, which is not cleared for {classes} (rules with `unscannable: deny`)")]
    Unscannable {
        /// The body's content type.
        content_type: String,
        /// Provider name.
        provider: String,
        /// The classes it is not cleared for.
        classes: String,
    },
    /// Every answer the route asked for failed the request's JSON schema.
    #[error("the model's answer does not match the requested JSON schema after {attempts} tries: {detail}")]
    StructuredOutput {
        /// Answers asked for.
        attempts: u32,
        /// The last validation error.
        detail: String,
    },
    /// A WebSocket upgrade the upstream did not accept.
    #[error("upstream {provider} refused the WebSocket upgrade with {status}")]
    UpgradeRefused {
        /// Provider name.
        provider: String,
        /// The upstream's status.
        status: u16,
    },
    /// Connecting to the upstream failed.
    #[error("upstream {provider} is unreachable: {detail}")]
    UpstreamConnect {
        /// Provider name.
        provider: String,
        /// The connection error.
        detail: String,
    },
    /// The upstream did not answer in time.
    #[error("upstream {provider} did not answer within the {phase} timeout of {after_ms} ms")]
    UpstreamTimeout {
        /// Provider name.
        provider: String,
        /// `first byte`, `total`, `idle`.
        phase: &'static str,
        /// The timeout.
        after_ms: u128,
    },
    /// The upstream sent something that is not a valid response.
    #[error("upstream {provider} sent an invalid response: {detail}")]
    UpstreamProtocol {
        /// Provider name.
        provider: String,
        /// What was wrong.
        detail: String,
    },
    /// The policy has no usable table (should not happen after start).
    #[error("no routing policy is loaded")]
    NoPolicy,
    /// The prompt cannot fit the model's context window (preflight).
    #[error("the prompt (about {prompt} tokens) plus max_tokens ({max_output}) exceeds the {window}-token context window of {model}")]
    ContextWindow {
        /// Upstream model.
        model: String,
        /// Prompt tokens counted.
        prompt: u64,
        /// Output tokens asked for.
        max_output: u64,
        /// The model's window.
        window: u64,
    },
    /// Every backend of the route is out (circuit breakers open) and no
    /// fallback could take the request.
    #[error("no healthy backend for route {route}: every backend's circuit breaker is open")]
    NoHealthyBackend {
        /// The route.
        route: String,
    },
    /// No backend of the route could be used and some were left out
    /// because their provider's credential cannot be had.
    #[error("no backend of route {route} can be reached: {reasons}")]
    NoCredential {
        /// The route.
        route: String,
        /// Why, per provider (never the secret).
        reasons: String,
    },
    /// The sidecar requires an inbound token and the client did not
    /// present the right one.
    #[error(
        "this sidecar only serves its own pod's app: send the pod's inbound token as the API key"
    )]
    InboundAuth,
    /// The data policy blocks a class found in the request.
    #[error("the request contains data the namespace's data policy blocks: {classes}")]
    DataBlocked {
        /// Classes and counts, e.g. `secret=1 (block)`; never the values.
        classes: String,
    },
    /// The request carries classes no backend of the route is cleared for.
    #[error("no backend of route {route} is cleared for data classes {classes} (set LLMProvider spec.clearance)")]
    NotCleared {
        /// The route.
        route: String,
        /// The classes, comma-separated.
        classes: String,
    },
    /// A quota refused the request: 429 at a limit, 503 while a
    /// fail-closed quota cannot be checked.
    #[error("{message}")]
    Quota {
        /// 429 or 503.
        status: u16,
        /// Which quota and limit, and when to retry.
        message: String,
        /// `retry-after`, `x-ratelimit-*`, `x-llmesh-quota`.
        headers: Vec<(&'static str, String)>,
    },
    /// The upstream answered with an error status: passed on to the client,
    /// translated into its API's error format.
    #[error("upstream answered {}", .0.status)]
    Upstream(Box<UpstreamError>),
    /// A stream the upstream broke, stalled or cut short after the client
    /// had its first event (and no continuation took over).
    #[error("{}", .fault.message())]
    Stream {
        /// What happened.
        fault: StreamFault,
    },
    /// A JSON document could not be encoded (never expected: an error
    /// rather than an empty body sent on).
    #[error("could not encode {0}")]
    Encode(String),
}

/// An upstream's error answer, as the client will get it.
#[derive(Debug)]
pub struct UpstreamError {
    /// The upstream's status.
    pub status: StatusCode,
    /// Its class (the metric label).
    pub class: llmesh_api::ErrorClass,
    /// Headers worth passing on (Retry-After, rate limits).
    pub keep: http::HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// Its API, to translate the body.
    pub dialect: Dialect,
}

/// How a stream ended early, after its first event reached the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFault {
    /// The upstream connection broke.
    Broken,
    /// The upstream closed the stream before its end marker.
    Incomplete,
    /// Nothing arrived for the route's idle timeout.
    Idle {
        /// The idle timeout.
        after_ms: u128,
    },
    /// The route's total timeout passed.
    Deadline,
    /// The upstream's events could not be translated.
    Translate(String),
}

impl StreamFault {
    fn message(&self) -> String {
        match self {
            StreamFault::Broken => "upstream connection broke in the middle of the stream".into(),
            StreamFault::Incomplete => "upstream ended the stream before it was complete".into(),
            StreamFault::Idle { after_ms } => {
                format!("upstream sent nothing for {after_ms} ms (idle timeout)")
            }
            StreamFault::Deadline => "upstream stream exceeded the route's total timeout".into(),
            StreamFault::Translate(e) => format!("upstream stream could not be translated: {e}"),
        }
    }
}

impl ProxyError {
    /// HTTP status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Upstream(u) => u.status,
            ProxyError::Stream { fault } => match fault {
                StreamFault::Idle { .. } | StreamFault::Deadline => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            ProxyError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyRead(_)
            | ProxyError::ContextWindow { .. }
            | ProxyError::InvalidJson(_)
            | ProxyError::InvalidRequest(_)
            | ProxyError::Unsupported(_)
            | ProxyError::DataBlocked { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NotCleared { .. } | ProxyError::Unscannable { .. } => StatusCode::FORBIDDEN,
            ProxyError::InboundAuth => StatusCode::UNAUTHORIZED,
            ProxyError::UnknownModel { .. }
            | ProxyError::UnsupportedEndpoint { .. }
            | ProxyError::NotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::UpgradeRefused { .. } | ProxyError::StructuredOutput { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamProtocol { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoPolicy
            | ProxyError::NoHealthyBackend { .. }
            | ProxyError::NoCredential { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Quota { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::TOO_MANY_REQUESTS)
            }
        }
    }

    /// Error type in the API format (mapped per dialect by llmesh-wire).
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Stream { fault } => match fault {
                StreamFault::Idle { .. } | StreamFault::Deadline => "timeout_error",
                _ => "api_error",
            },
            ProxyError::Upstream(_) | ProxyError::Encode(_) => "api_error",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::UnknownModel { .. }
            | ProxyError::UnsupportedEndpoint { .. }
            | ProxyError::NotFound { .. } => "not_found_error",
            ProxyError::UpgradeRefused { .. } | ProxyError::StructuredOutput { .. } => "api_error",
            ProxyError::UpstreamTimeout { .. } => "timeout_error",
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamProtocol { .. }
            | ProxyError::NoPolicy => "api_error",
            ProxyError::NoHealthyBackend { .. } | ProxyError::NoCredential { .. } => {
                "overloaded_error"
            }
            ProxyError::NotCleared { .. } | ProxyError::Unscannable { .. } => "permission_error",
            ProxyError::InboundAuth => "authentication_error",
            ProxyError::Quota { status: 429, .. } => "rate_limit_error",
            ProxyError::Quota { .. } => "overloaded_error",
            _ => "invalid_request_error",
        }
    }

    /// Low-cardinality label for metrics and the `code` field of errors.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProxyError::Upstream(u) => crate::classify::label(u.class),
            ProxyError::Stream { fault } => match fault {
                StreamFault::Broken => "upstream_stream_broken",
                StreamFault::Incomplete => "upstream_stream_incomplete",
                StreamFault::Idle { .. } | StreamFault::Deadline => "upstream_timeout",
                StreamFault::Translate(_) => "upstream_protocol",
            },
            ProxyError::Encode(_) => "encode",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BodyRead(_) => "body_read",
            ProxyError::InvalidJson(_) => "invalid_json",
            ProxyError::InvalidRequest(_) => "invalid_request",
            ProxyError::UnknownModel { .. } => "model_not_found",
            ProxyError::UnsupportedEndpoint { .. } => "unsupported_endpoint",
            ProxyError::Unsupported(_) => "unsupported",
            ProxyError::NotFound { .. } => "not_found",
            ProxyError::UpgradeRefused { .. } => "upgrade_refused",
            ProxyError::StructuredOutput { .. } => "structured_output_invalid",
            ProxyError::UpstreamConnect { .. } => "upstream_connect",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::UpstreamProtocol { .. } => "upstream_protocol",
            ProxyError::NoPolicy => "no_policy",
            ProxyError::NoHealthyBackend { .. } => "no_healthy_backend",
            ProxyError::NoCredential { .. } => "credential_unavailable",
            ProxyError::ContextWindow { .. } => "context_length_exceeded",
            ProxyError::DataBlocked { .. } => "data_policy_blocked",
            ProxyError::NotCleared { .. } => "data_policy_restricted",
            ProxyError::Unscannable { .. } => "data_policy_unscannable",
            ProxyError::InboundAuth => "invalid_inbound_token",
            ProxyError::Quota { status: 429, .. } => "quota_exceeded",
            ProxyError::Quota { .. } => "quota_unavailable",
        }
    }

    /// The error as a response in the client's API format.
    pub fn into_response(&self, dialect: Dialect, request_id: &HeaderValue) -> Response<ProxyBody> {
        if let ProxyError::Upstream(u) = self {
            let mut keep = u.keep.clone();
            let translated = if u.dialect == Dialect::Bedrock {
                let typed = keep.remove("x-amzn-errortype");
                let typed = typed.as_ref().and_then(|v| v.to_str().ok());
                llmesh_wire::translate_bedrock_error(dialect, u.status.as_u16(), typed, &u.body)
            } else {
                llmesh_wire::translate_error(dialect, u.dialect, u.status.as_u16(), &u.body)
            };
            let mut out = json_response(u.status, &translated, request_id);
            out.headers_mut().extend(keep);
            return out;
        }
        let mut body =
            llmesh_wire::error_body(dialect, self.kind(), self.metric_label(), &self.to_string());
        // OpenAI's format names the request field at fault (SDKs show it
        // as `param`).
        if let ProxyError::NotFound { param: Some(p), .. } = self {
            if let Some(slot) = body.pointer_mut("/error/param") {
                *slot = serde_json::Value::from(*p);
            }
        }
        let mut resp = json_response(self.status(), &body, request_id);
        if let ProxyError::Quota { headers, .. } = self {
            for (name, value) in headers {
                if let Ok(v) = HeaderValue::from_str(value) {
                    resp.headers_mut().insert(*name, v);
                }
            }
        }
        resp
    }
}

/// A JSON response with the request id header.
pub fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    json_bytes_response(
        status,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
        request_id,
    )
}

/// A response whose body is already-serialized JSON.
pub fn json_bytes_response(
    status: StatusCode,
    bytes: Bytes,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-request-id", request_id.clone());
    resp
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
