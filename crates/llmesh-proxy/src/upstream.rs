//! Pooled upstream HTTP clients and the request sent to a provider.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use llmesh_api::ApiSchema;
use llmesh_policy::Provider;
use llmesh_wire::Dialect;

use crate::body::UpstreamBody;
use crate::error::ProxyError;

/// The HTTP client used for one class of upstreams.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Key of a cached client: extra CA file, connect timeout, HTTP/1 only.
type ClientKey = (Option<PathBuf>, Duration, bool);

/// Clients keyed by (extra CA file, connect timeout, HTTP/1 only), kept
/// across reloads so a policy change does not throw away warm connection
/// pools.
#[derive(Default)]
pub struct ClientCache {
    global_ca: Option<PathBuf>,
    clients: Mutex<HashMap<ClientKey, UpstreamClient>>,
}

impl ClientCache {
    /// A cache whose clients all trust `global_ca` besides the web roots.
    pub fn new(global_ca: Option<PathBuf>) -> Self {
        ClientCache {
            global_ca,
            clients: Mutex::default(),
        }
    }

    /// The client for a provider's CA file and a route's connect timeout.
    /// Only called while building a table, never per request.
    pub fn get(&self, ca: Option<&Path>, connect: Duration) -> Result<UpstreamClient, String> {
        self.get_with(ca, connect, false)
    }

    /// A client that speaks HTTP/1.1 only, for WebSocket upgrades (an
    /// HTTP/2 connection cannot be upgraded).
    pub fn get_http1(
        &self,
        ca: Option<&Path>,
        connect: Duration,
    ) -> Result<UpstreamClient, String> {
        self.get_with(ca, connect, true)
    }

    fn get_with(
        &self,
        ca: Option<&Path>,
        connect: Duration,
        http1_only: bool,
    ) -> Result<UpstreamClient, String> {
        let key = (ca.map(Path::to_path_buf), connect, http1_only);
        let mut map = self.clients.lock().map_err(|_| "client cache poisoned")?;
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let mut cas: Vec<&Path> = Vec::new();
        if let Some(g) = &self.global_ca {
            cas.push(g);
        }
        if let Some(c) = ca {
            cas.push(c);
        }
        let client = build_client(&cas, connect, http1_only)?;
        map.insert(key, client.clone());
        Ok(client)
    }
}

fn build_client(
    ca_files: &[&Path],
    connect: Duration,
    http1_only: bool,
) -> Result<UpstreamClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in ca_files {
        let file = File::open(path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
            let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // Small JSON requests and SSE chunks: Nagle would only add latency.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    let https = if http1_only {
        https.wrap_connector(http)
    } else {
        https.enable_http2().wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}

/// The wire dialect a provider speaks.
pub fn dialect_of(schema: ApiSchema) -> Dialect {
    match schema {
        ApiSchema::Openai | ApiSchema::OpenaiCompatible | ApiSchema::AzureOpenai => Dialect::OpenAi,
        ApiSchema::Anthropic => Dialect::Anthropic,
        ApiSchema::Gemini | ApiSchema::Vertex => Dialect::Gemini,
        ApiSchema::Bedrock => Dialect::Bedrock,
    }
}

/// Whether `model` on Vertex AI is one of Anthropic's (served with the
/// Messages body on `rawPredict`), not a Gemini model.
pub fn vertex_anthropic(model: &str) -> bool {
    model.starts_with("claude")
}

/// Whether `model` on Bedrock is one of Anthropic's (`anthropic.claude-*`,
/// or a cross-region profile such as `us.anthropic.claude-*`).
pub fn bedrock_anthropic(model: &str) -> bool {
    model.starts_with("anthropic.") || model.contains(".anthropic.")
}

/// Keeps a model or deployment name that goes into a URL path to the
/// characters model ids use (and `@` for Vertex versions, `:` for Bedrock
/// ones), so it cannot change the path.
fn path_safe(model: &str, extra: &[u8], what: &str) -> Result<(), ProxyError> {
    if model.is_empty()
        || model == "."
        || model == ".."
        || !model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b) || extra.contains(&b))
    {
        return Err(ProxyError::Unsupported(format!(
            "model name {model:?} cannot be sent to {what}"
        )));
    }
    Ok(())
}

/// `/model/{id}/{verb}` of Bedrock's runtime API. Model ids hold `:`
/// (`...-v1:0`), sent percent-encoded as AWS's SDKs do (and signed that way).
fn bedrock_path(model: &str, verb: &str) -> Result<String, ProxyError> {
    path_safe(model, b":", "a Bedrock model URL")?;
    Ok(format!("/model/{}/{verb}", model.replace(':', "%3A")))
}

/// Path under the provider's base URL for a call, with the addressing of
/// cloud providers (Azure deployments and api-version, Vertex projects and
/// publishers, Bedrock model ids).
pub fn provider_path(
    provider: &Provider,
    dialect: Dialect,
    op: Operation,
    model: &str,
    stream: bool,
) -> Result<String, ProxyError> {
    let cloud = &provider.cloud;
    match provider.schema {
        ApiSchema::AzureOpenai => {
            let Some(version) = &cloud.api_version else {
                // The v1 surface: OpenAI's paths, the model in the body.
                return Ok(format!(
                    "/openai/v1{}",
                    upstream_path(dialect, op, model, stream)?
                ));
            };
            let deployment = provider
                .model(model)
                .and_then(|m| m.deployment.as_deref())
                .unwrap_or(model);
            path_safe(deployment, b"", "an Azure OpenAI deployment URL")?;
            let tail = match (dialect, op) {
                (Dialect::Responses, _) => {
                    return Ok(format!("/openai/responses?api-version={version}"))
                }
                (_, Operation::Chat) => "chat/completions",
                (_, Operation::Embeddings) => "embeddings",
                (_, Operation::Completions) => "completions",
            };
            Ok(format!(
                "/openai/deployments/{deployment}/{tail}?api-version={version}"
            ))
        }
        ApiSchema::Vertex => {
            path_safe(model, b"@", "a Vertex AI model URL")?;
            if op != Operation::Chat {
                return Err(ProxyError::Unsupported(format!(
                    "only chat calls are supported on Vertex AI providers (LLMProvider {})",
                    provider.name
                )));
            }
            let project = cloud.project.as_deref().unwrap_or("");
            let region = cloud.region.as_deref().unwrap_or("");
            let (publisher, verb) = match (dialect, stream) {
                (Dialect::Anthropic, false) => ("anthropic", "rawPredict"),
                (Dialect::Anthropic, true) => ("anthropic", "streamRawPredict"),
                (_, false) => ("google", "generateContent"),
                (_, true) => ("google", "streamGenerateContent?alt=sse"),
            };
            Ok(format!(
                "/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}:{verb}"
            ))
        }
        ApiSchema::Bedrock if dialect == Dialect::Anthropic => bedrock_path(
            model,
            if stream {
                "invoke-with-response-stream"
            } else {
                "invoke"
            },
        ),
        _ => upstream_path(dialect, op, model, stream),
    }
}

/// Rewrites a translated request body for the cloud that serves it:
/// Anthropic models on Vertex AI (`rawPredict`) and Bedrock (`InvokeModel`)
/// take the model from the URL and the API version in the body.
pub fn cloud_body(provider: &Provider, upstream: Dialect, body: &mut serde_json::Value) {
    if needs_cloud_body(provider, upstream) {
        *body = match provider.schema {
            ApiSchema::Bedrock => llmesh_wire::bedrock_anthropic_body(body),
            _ => llmesh_wire::vertex_anthropic_body(body),
        };
    }
}

/// Whether a call to `provider` in `upstream` needs its body rewritten
/// even when the client spoke the same API (see [`cloud_body`]).
pub fn needs_cloud_body(provider: &Provider, upstream: Dialect) -> bool {
    matches!(provider.schema, ApiSchema::Vertex | ApiSchema::Bedrock)
        && upstream == Dialect::Anthropic
}

/// The API a call from a `client` of `model` on `provider` is sent in:
/// the Responses API passes through to providers that serve it for the
/// model, every other call goes in the provider's own API.
pub fn upstream_dialect(client: Dialect, provider: &Provider, model: &str) -> Dialect {
    if client == Dialect::Responses && provider.native_responses(model) {
        Dialect::Responses
    } else if provider.schema == ApiSchema::Vertex && vertex_anthropic(model) {
        Dialect::Anthropic
    } else if provider.schema == ApiSchema::Bedrock
        && client == Dialect::Anthropic
        && bedrock_anthropic(model)
    {
        // An Anthropic client keeps its Messages body (cache_control,
        // thinking, every content block) through InvokeModel.
        Dialect::Anthropic
    } else {
        dialect_of(provider.schema)
    }
}

/// What kind of call is being made upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Chat completion / message.
    Chat,
    /// Embeddings.
    Embeddings,
    /// Legacy text completions.
    Completions,
}

/// Path under the provider's base URL for a call.
pub fn upstream_path(
    dialect: Dialect,
    op: Operation,
    model: &str,
    stream: bool,
) -> Result<String, ProxyError> {
    Ok(match (dialect, op) {
        (Dialect::OpenAi, Operation::Chat) => "/chat/completions".into(),
        (Dialect::OpenAi, Operation::Embeddings) => "/embeddings".into(),
        (Dialect::OpenAi, Operation::Completions) => "/completions".into(),
        (Dialect::Responses, _) => "/responses".into(),
        (Dialect::Anthropic, Operation::Chat) => "/messages".into(),
        (Dialect::Bedrock, Operation::Chat) => bedrock_path(
            model,
            if stream {
                "converse-stream"
            } else {
                "converse"
            },
        )?,
        (Dialect::Gemini, Operation::Chat) => {
            // The model is part of the path for Gemini.
            path_safe(model, b"", "a Gemini upstream")?;
            if stream {
                format!("/models/{model}:streamGenerateContent?alt=sse")
            } else {
                format!("/models/{model}:generateContent")
            }
        }
        (d, Operation::Embeddings) => {
            return Err(ProxyError::Unsupported(format!(
                "embeddings are only supported on OpenAI-compatible providers, not {}",
                d.as_str()
            )))
        }
        (d, Operation::Completions) => {
            return Err(ProxyError::Unsupported(format!(
                "legacy completions are only supported on OpenAI-compatible providers, not {}",
                d.as_str()
            )))
        }
    })
}

/// Sends `req` to `provider` and reads its whole answer (at most `limit`
/// bytes), both within `timeout`: the status and body of a success, or the
/// error the client gets (an error status is [`ProxyError::Upstream`],
/// translated from `dialect` for the client). For the sidecar's one-shot
/// calls outside the attempt loop (count_tokens, stored responses).
pub async fn call_whole(
    client: &UpstreamClient,
    req: Request<UpstreamBody>,
    provider: &str,
    dialect: Dialect,
    timeout: Duration,
    limit: usize,
) -> Result<(http::StatusCode, bytes::Bytes), ProxyError> {
    use http_body_util::BodyExt;
    let timed_out = || ProxyError::UpstreamTimeout {
        provider: provider.to_string(),
        phase: "total",
        after_ms: timeout.as_millis(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let resp = match tokio::time::timeout_at(deadline, client.request(req)).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) => {
            return Err(ProxyError::UpstreamConnect {
                provider: provider.to_string(),
                detail: crate::error::error_chain(&e),
            })
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), limit).collect();
    let bytes = match tokio::time::timeout_at(deadline, body).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            return Err(ProxyError::UpstreamProtocol {
                provider: provider.to_string(),
                detail: format!("reading the answer: {e}"),
            })
        }
        Err(_) => return Err(timed_out()),
    };
    if !status.is_success() {
        let class = crate::classify::classify_status(status.as_u16(), &bytes);
        return Err(ProxyError::Upstream(Box::new(
            crate::error::UpstreamError {
                status,
                class,
                keep: HeaderMap::new(),
                body: bytes,
                dialect,
            },
        )));
    }
    Ok((status, bytes))
}

/// Whether an app header may be forwarded to the provider. Credentials,
/// llmesh's own headers and hop-by-hop headers never are; neither are the
/// other dialect's version headers when the call is translated.
fn forwardable(name: &HeaderName, client: Dialect, upstream: Dialect) -> bool {
    let n = name.as_str();
    if matches!(n, "content-type" | "accept") {
        return false;
    }
    relayable(name, client, upstream)
}

/// Whether an app header may go to the provider on a pass-through call,
/// whose body and answer are the app's own: as [`forwardable`], except
/// that `content-type` and `accept` are kept.
pub fn relayable(name: &HeaderName, client: Dialect, upstream: Dialect) -> bool {
    let n = name.as_str();
    if matches!(
        n,
        "host"
            | "content-length"
            | "accept-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "cookie"
            | "x-request-id"
    ) || n.starts_with("x-llmesh-")
    {
        return false;
    }
    if client != upstream && (n.starts_with("anthropic-") || n.starts_with("openai-")) {
        return false;
    }
    true
}

/// Builds the upstream request: the app's safe headers, then the provider's
/// static headers and its key (which override anything the app sent).
pub fn build_request(
    provider: &Provider,
    path: &str,
    body: UpstreamBody,
    app_headers: &HeaderMap,
    client: Dialect,
    upstream: Dialect,
    request_id: &HeaderValue,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let uri = provider
        .base_url
        .join(path)
        .map_err(|e| ProxyError::Unsupported(format!("building upstream URL: {e}")))?;
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for (name, value) in app_headers {
        if forwardable(name, client, upstream) {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The proxy parses every response, so ask for it uncompressed.
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    provider_headers(h, provider, request_id);
    Ok(req)
}

/// The request id, then the provider's static headers and its key, which
/// override anything the app sent.
pub fn provider_headers(h: &mut HeaderMap, provider: &Provider, request_id: &HeaderValue) {
    h.insert("x-request-id", request_id.clone());
    for (name, value) in &provider.headers {
        h.insert(name.clone(), value.clone());
    }
    if let Some((name, value)) = &provider.auth {
        h.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_forwards_credentials_or_internal_headers() {
        for h in [
            "authorization",
            "x-api-key",
            "x-llmesh-user",
            "cookie",
            "host",
        ] {
            let n = HeaderName::from_static(h);
            assert!(!forwardable(&n, Dialect::OpenAi, Dialect::OpenAi), "{h}");
        }
        let beta = HeaderName::from_static("anthropic-beta");
        assert!(forwardable(&beta, Dialect::Anthropic, Dialect::Anthropic));
        assert!(!forwardable(&beta, Dialect::Anthropic, Dialect::OpenAi));
        assert!(forwardable(
            &HeaderName::from_static("user-agent"),
            Dialect::OpenAi,
            Dialect::Gemini
        ));
    }

    #[test]
    fn gemini_paths_reject_path_tricks() {
        assert_eq!(
            upstream_path(Dialect::Gemini, Operation::Chat, "gemini-2.0-flash", true).unwrap(),
            "/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
        assert!(upstream_path(Dialect::Gemini, Operation::Chat, "../x", false).is_err());
        assert!(upstream_path(Dialect::Anthropic, Operation::Embeddings, "m", false).is_err());
    }
}
