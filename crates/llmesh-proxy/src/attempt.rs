//! One upstream attempt: translate, send under the route's deadlines, and
//! sort the outcome into a success the client can be given or a classified
//! failure the attempt loop can retry or fail over. Nothing reaches the
//! client from here, which is what makes transparent failover possible:
//! a stream is only handed over once its first event has arrived.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use llmesh_api::ErrorClass;
use llmesh_wire::{Dialect, StreamOptions, StreamTranslator, Usage};
use serde_json::Value;
use tracing::Instrument;

use crate::account::OutputEstimate;
use crate::classify::classify_status;
use crate::context::RequestCtx;
use crate::error::{ProxyError, UpstreamError};
use crate::prefill::ContinueFrom;
use crate::runtime::BackendRuntime;
use crate::upstream::{build_request, provider_path, upstream_dialect, Operation};

/// An attempt that produced an answer.
pub enum Success {
    /// A whole JSON answer, already in the client's format.
    Whole {
        /// Client-format body.
        body: Bytes,
        /// Reported usage.
        usage: Option<Usage>,
        /// Model named by the upstream.
        response_model: Option<String>,
        /// Fallback for missing usage.
        output_estimate: OutputEstimate,
    },
    /// A stream whose first event has arrived.
    Stream {
        /// The rest of the upstream body.
        upstream: Incoming,
        /// The first upstream bytes.
        first: Bytes,
        /// Translator for the pair of APIs.
        translator: StreamTranslator,
    },
}

/// How one attempt (or a hedged pair) went: the answer with its in-flight
/// guard and start time, or the failure with the guard if a call was made.
pub type AttemptResult = Result<
    (
        Success,
        llmesh_resilience::OwnedInFlight,
        std::time::Instant,
    ),
    (Failure, Option<llmesh_resilience::OwnedInFlight>),
>;

/// An attempt that failed: its class decides retry and failover, its
/// error is what the client sees if it is the last word.
#[derive(Debug)]
pub struct Failure {
    /// Decides retry and fallback.
    pub class: ErrorClass,
    /// The client's answer if this is the last failure (for an upstream
    /// error status, [`ProxyError::Upstream`] with its body).
    pub error: ProxyError,
    /// The upstream's Retry-After, if any.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// The backend chosen for an attempt is gone from the policy.
    pub fn gone() -> Failure {
        Failure::proxy(
            ErrorClass::Connect,
            ProxyError::UpstreamConnect {
                provider: String::new(),
                detail: "the backend is no longer in the policy".into(),
            },
        )
    }

    fn proxy(class: ErrorClass, error: ProxyError) -> Failure {
        Failure {
            class,
            error,
            retry_after: None,
        }
    }
}

/// The `x-llmesh-*` / upstream model of an attempt on `b`.
pub fn upstream_model<'a>(req: &'a RequestCtx, b: &'a BackendRuntime) -> &'a str {
    b.backend.upstream_model(req.requested())
}

/// Context-window preflight: `Some` failure (class context-length) when
/// `b`'s model has a context window in the policy that cannot hold the
/// prompt plus `max_tokens`. The prompt is counted with the tokenizer only
/// when the body is too big to fit for sure (a token is at least one byte),
/// once per request (kept in the context), on a blocking thread.
pub async fn preflight(
    req: &RequestCtx,
    b: &BackendRuntime,
) -> Result<Option<Failure>, ProxyError> {
    if req.op != Operation::Chat {
        return Ok(None);
    }
    let model = upstream_model(req, b);
    let Some(window) = b
        .backend
        .provider
        .model(model)
        .and_then(|m| m.context_window)
    else {
        return Ok(None);
    };
    if req.raw.len() as u64 + req.max_output <= window {
        return Ok(None);
    }
    let prompt = req.prompt_tokens().await?;
    if prompt + req.max_output <= window {
        return Ok(None);
    }
    Ok(Some(Failure::proxy(
        ErrorClass::ContextLength,
        ProxyError::ContextWindow {
            model: model.to_string(),
            prompt,
            max_output: req.max_output,
            window,
        },
    )))
}

/// Runs one attempt on `b`. `sent`, when given, is set once the request
/// body is handed to a connection (the upstream has the request).
/// `continue_from` makes it a continuation of a broken stream.
pub async fn attempt(
    req: &RequestCtx,
    b: &BackendRuntime,
    sent: Option<Arc<AtomicBool>>,
    continue_from: Option<&ContinueFrom>,
) -> Result<Success, Failure> {
    let span = crate::trace::attempt_span(req.op, &b.backend.provider, upstream_model(req, b));
    let result = send(req, b, sent, continue_from, &span)
        .instrument(span.span.clone())
        .await;
    span.done(result.as_ref().err().map(|f| {
        let status = match &f.error {
            ProxyError::Upstream(u) => Some(u.status.as_u16()),
            _ => None,
        };
        (f.class.as_str(), status)
    }));
    result
}

async fn send(
    req: &RequestCtx,
    b: &BackendRuntime,
    sent: Option<Arc<AtomicBool>>,
    continue_from: Option<&ContinueFrom>,
    span: &crate::trace::AttemptSpan,
) -> Result<Success, Failure> {
    let provider = &b.backend.provider;
    let model = upstream_model(req, b);
    let upstream = upstream_dialect(req.client, provider, model);
    let timeouts = req.route.timeouts;
    let invalid = |e: ProxyError| Failure::proxy(ErrorClass::InvalidRequest, e);

    let path = provider_path(provider, upstream, req.op, model, req.stream).map_err(invalid)?;
    // Same API, same model, nothing to add: the client's bytes go upstream
    // as they are. OpenAI streams need `stream_options.include_usage` added
    // unless the client set it.
    let needs_usage_option = req.stream && upstream == Dialect::OpenAi && !req.include_usage;
    let body = if req.client == upstream
        && model == req.body_model
        && !needs_usage_option
        && continue_from.is_none()
        && !crate::upstream::needs_cloud_body(provider, upstream)
    {
        req.raw.clone()
    } else {
        let parsed = serde_json::from_slice::<Value>(&req.raw)
            .map_err(|e| invalid(ProxyError::InvalidJson(e.to_string())))?;
        let mut v = llmesh_wire::translate_request(req.client, upstream, parsed, model)
            .map_err(|e| invalid(ProxyError::InvalidRequest(e.to_string())))?;
        if let Some(from) = continue_from {
            crate::prefill::prefill(provider, &mut v, from).map_err(invalid)?;
        }
        crate::upstream::cloud_body(provider, upstream, &mut v);
        let bytes = serde_json::to_vec(&v)
            .map_err(|e| invalid(ProxyError::Encode(format!("the upstream request: {e}"))))?;
        Bytes::from(bytes)
    };
    let mut up_req = build_request(
        provider,
        &path,
        crate::body::UpstreamBody::new(body.clone(), sent),
        &req.headers,
        req.client,
        upstream,
        &req.request_id,
    )
    .map_err(invalid)?;
    if let Some(c) = &b.credential {
        c.authorize(&mut up_req, &body, req.deadline)
            .await
            .map_err(|reason| {
                // Nothing was sent: move on as from a refused connection.
                Failure::proxy(
                    ErrorClass::Connect,
                    ProxyError::NoCredential {
                        route: req.route.name.clone(),
                        reasons: reason,
                    },
                )
            })?;
    }
    span.inject(up_req.headers_mut());

    let first_byte = (tokio::time::Instant::now() + timeouts.first_byte).min(req.deadline);
    let timeout_err = |phase: &'static str, after: Duration| {
        Failure::proxy(
            ErrorClass::Timeout,
            ProxyError::UpstreamTimeout {
                provider: provider.name.clone(),
                phase,
                after_ms: after.as_millis(),
            },
        )
    };
    let protocol_err = |detail: String| {
        Failure::proxy(
            ErrorClass::ServerError,
            ProxyError::UpstreamProtocol {
                provider: provider.name.clone(),
                detail,
            },
        )
    };
    let resp = match tokio::time::timeout_at(first_byte, b.client.request(up_req)).await {
        Err(_) => {
            return Err(timeout_err(
                "first byte",
                timeouts.first_byte.min(timeouts.total),
            ))
        }
        Ok(Err(e)) if e.is_connect() => {
            return Err(Failure::proxy(
                ErrorClass::Connect,
                ProxyError::UpstreamConnect {
                    provider: provider.name.clone(),
                    detail: crate::error::error_chain(&e),
                },
            ))
        }
        Ok(Err(e)) => return Err(protocol_err(crate::error::error_chain(&e))),
        Ok(Ok(r)) => r,
    };

    let status = resp.status();
    if !status.is_success() {
        let mut keep = HeaderMap::new();
        for (name, value) in resp.headers() {
            let n = name.as_str();
            // Bedrock types its errors in a header; it is read (and
            // dropped) when the error is translated.
            if n == "retry-after" || n.starts_with("x-ratelimit-") || n == "x-amzn-errortype" {
                keep.append(name.clone(), value.clone());
            }
        }
        let retry_after = keep
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| llmesh_resilience::parse_retry_after(v, crate::clock::wall()));
        // The error body says what went wrong. One that does not arrive in
        // time (the first-byte timeout, within the total) or breaks is
        // replaced by a note saying so; the class still follows the status.
        let body_deadline = (tokio::time::Instant::now() + timeouts.first_byte).min(req.deadline);
        let cut = |why: String| {
            Bytes::from(format!(
                "upstream {} answered {status} but its error body was cut: {why}",
                provider.name
            ))
        };
        let body = match tokio::time::timeout_at(
            body_deadline,
            Limited::new(resp.into_body(), 1024 * 1024).collect(),
        )
        .await
        {
            Err(_) => cut("it did not arrive in time".into()),
            Ok(Err(e)) => cut(e.to_string()),
            Ok(Ok(c)) => c.to_bytes(),
        };
        let class = match keep.get("x-amzn-errortype").and_then(|v| v.to_str().ok()) {
            Some(t) => crate::classify::classify_bedrock(status.as_u16(), t, &body),
            None => classify_status(status.as_u16(), &body),
        };
        return Err(Failure {
            class,
            error: ProxyError::Upstream(Box::new(UpstreamError {
                status,
                class,
                keep,
                body,
                dialect: upstream,
            })),
            retry_after,
        });
    }

    if req.stream {
        let translator = match (&req.turn, req.client) {
            (Some(turn), Dialect::Responses) => {
                StreamTranslator::for_responses(upstream, turn.echo())
            }
            _ => StreamTranslator::new(
                req.client,
                upstream,
                StreamOptions {
                    include_usage: req.include_usage,
                },
            ),
        }
        // Bedrock streams name no model: report the one called.
        .with_model(model);
        let translator = if provider.schema == llmesh_api::ApiSchema::Bedrock
            && upstream == Dialect::Anthropic
        {
            translator.with_bedrock_invoke()
        } else {
            translator
        };
        let mut upstream_body = resp.into_body();
        // Wait for the first event before answering the client, so a
        // stream that dies before it can still be retried elsewhere.
        loop {
            match tokio::time::timeout_at(first_byte, upstream_body.frame()).await {
                Err(_) => return Err(timeout_err("first byte", timeouts.first_byte)),
                Ok(None) => return Err(protocol_err("stream ended before its first event".into())),
                Ok(Some(Err(e))) => {
                    return Err(protocol_err(format!(
                        "stream broke before its first event: {e}"
                    )))
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(first) = frame.into_data() {
                        if first.is_empty() {
                            continue;
                        }
                        return Ok(Success::Stream {
                            upstream: upstream_body,
                            first,
                            translator,
                        });
                    }
                }
            }
        }
    }

    let max = req.shared.cfg.max_response_bytes;
    let bytes =
        match tokio::time::timeout_at(req.deadline, Limited::new(resp.into_body(), max).collect())
            .await
        {
            Err(_) => return Err(timeout_err("total", timeouts.total)),
            Ok(Err(e)) => return Err(protocol_err(format!("reading the response body: {e}"))),
            Ok(Ok(c)) => c.to_bytes(),
        };
    let echo = req.turn.as_ref().map(|t| t.echo());
    // Bedrock's answers name no model: the client sees the one called.
    let called = (upstream == Dialect::Bedrock).then_some(model);
    whole(req.client, upstream, bytes, echo.as_ref(), called).map_err(protocol_err)
}

/// The two fields the proxy reads from a same-API response.
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
}

/// A whole upstream answer in the client's format, with its usage.
fn whole(
    client: Dialect,
    upstream: Dialect,
    bytes: Bytes,
    echo: Option<&llmesh_wire::ResponseEcho>,
    called: Option<&str>,
) -> Result<Success, String> {
    let (body, usage, response_model, translated) = if client == upstream {
        // Same API on both sides: the client gets the upstream's bytes as
        // they are; only the usage and model fields are read.
        let p: Peek = serde_json::from_slice(&bytes)
            .map_err(|e| format!("response is not a JSON object: {e}"))?;
        let usage = p
            .usage
            .and_then(|u| llmesh_wire::usage_of(upstream, &serde_json::json!({ "usage": u })));
        (bytes, usage, p.model, None)
    } else {
        let parsed: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("response is not JSON: {e}"))?;
        let response_model = llmesh_wire::response_model_of(upstream, &parsed).map(str::to_string);
        let (mut body, usage) = match (client, echo) {
            (Dialect::Responses, Some(echo)) => {
                llmesh_wire::translate_response_for_responses(upstream, parsed, echo)
            }
            _ => llmesh_wire::translate_response(client, upstream, parsed),
        }
        .map_err(|e| e.to_string())?;
        if let (Some(model), Some(o)) = (called, body.as_object_mut()) {
            if o.get("model")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                o.insert("model".into(), Value::String(model.to_string()));
            }
        }
        let out = Bytes::from(
            serde_json::to_vec(&body)
                .map_err(|e| format!("encoding the translated answer: {e}"))?,
        );
        (out, usage, response_model, Some(body))
    };
    let output_estimate = if usage.is_none() {
        // Rare: only upstreams that report no usage pay for this parse.
        let parsed = translated.or_else(|| serde_json::from_slice(&body).ok());
        let mut text = String::new();
        if let Some(b) = &parsed {
            crate::tokens::collect_text(b.get("choices"), &mut text);
            crate::tokens::collect_text(b.get("content"), &mut text);
            crate::tokens::collect_text(b.get("output"), &mut text);
        }
        OutputEstimate::Text(text)
    } else {
        OutputEstimate::None
    };
    Ok(Success::Whole {
        body,
        usage,
        response_model,
        output_estimate,
    })
}
