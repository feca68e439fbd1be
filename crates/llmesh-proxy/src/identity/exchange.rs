//! The HTTP side of token exchanges: a form POST or a GET to a token
//! endpoint, the answer read whole (bounded), and OAuth-style JSON answers.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::body::UpstreamBody;
use crate::upstream::UpstreamClient;

/// Token answers are small.
const LIMIT: usize = 256 * 1024;

/// A projected token file's content (the kubelet rotates it, so it is read
/// at each exchange).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(t.to_string())
}

/// Sends one request and reads the answer: status and body.
pub async fn call(
    client: &UpstreamClient,
    method: Method,
    url: &str,
    headers: &[(&'static str, &str)],
    form: Option<String>,
) -> Result<(http::StatusCode, Bytes), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("the token endpoint {url:?} is not a URL: {e}"))?;
    let shown = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str()),
        uri.path()
    );
    let body = form.map(Bytes::from).unwrap_or_default();
    let mut req = Request::new(UpstreamBody::new(body, None));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if req.method() == Method::POST {
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    for (name, value) in headers {
        let mut v = HeaderValue::try_from(*value)
            .map_err(|_| format!("a {name} header for {shown} is not a header value"))?;
        v.set_sensitive(true);
        req.headers_mut().insert(*name, v);
    }
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("{shown}: {}", crate::error::error_chain(&e)))?;
    let status = resp.status();
    let bytes = http_body_util::Limited::new(resp.into_body(), LIMIT)
        .collect()
        .await
        .map_err(|e| format!("{shown}: reading the answer: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// An OAuth 2.0 token answer: `access_token` and `expires_in` (seconds).
pub fn oauth_answer(
    shown: &str,
    status: http::StatusCode,
    body: &[u8],
) -> Result<(String, SystemTime), String> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if !status.is_success() {
        // The error code and description name the problem; they carry no
        // token.
        let code = v
            .get("error")
            .and_then(|e| {
                e.as_str()
                    .or_else(|| e.get("status").and_then(Value::as_str))
            })
            .unwrap_or("");
        let desc = v
            .get("error_description")
            .or_else(|| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut desc = desc.to_string();
        desc.truncate(300);
        return Err(format!("{shown} answered {status} {code} {desc}")
            .trim_end()
            .to_string());
    }
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{shown} answered no access_token"))?;
    let secs = v
        .get("expires_in")
        .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
        .unwrap_or(3600);
    Ok((
        token.to_string(),
        crate::clock::wall() + Duration::from_secs(secs),
    ))
}

/// POSTs a form to an OAuth token endpoint.
pub async fn oauth_token(
    client: &UpstreamClient,
    url: &str,
    form: String,
) -> Result<(String, SystemTime), String> {
    let (status, body) = call(client, Method::POST, url, &[], Some(form)).await?;
    oauth_answer(url_shown(url), status, &body)
}

/// The URL without its query, for messages.
pub fn url_shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
