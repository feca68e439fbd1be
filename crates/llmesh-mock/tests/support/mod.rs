//! Small HTTP client helpers over real loopback sockets.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmesh_mock::{MockConfig, MockServer};
use serde_json::Value;

/// Every test runs under this bound.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test exceeded its time bound")
}

pub async fn start() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn connector() -> HttpConnector {
    // Without TCP_NODELAY an h2 client stalls ~40 ms per request on
    // Nagle + delayed ACK.
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c
}

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(connector())
}

pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector())
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(body)).unwrap()
}

pub async fn send_with(
    c: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Resp {
    let resp = c
        .request(request(method, url, headers, body))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    send_with(
        &client(),
        Method::POST,
        url,
        headers,
        Bytes::from(body.to_string()),
    )
    .await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send_with(&client(), Method::GET, url, headers, Bytes::new()).await
}

pub async fn send(method: Method, url: &str, body: &str) -> Resp {
    send_with(&client(), method, url, &[], Bytes::from(body.to_owned())).await
}

/// Read a body frame by frame until it ends or fails; returns what arrived
/// and whether it failed (a truncated stream).
pub async fn read_until_error(c: &HttpClient, req: Request<Full<Bytes>>) -> (u16, String, bool) {
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    loop {
        match body.frame().await {
            None => return (status, String::from_utf8(got).unwrap(), false),
            Some(Err(_)) => return (status, String::from_utf8(got).unwrap(), true),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(&d);
                }
            }
        }
    }
}

/// SSE events as (event name, data).
pub fn sse(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data)
        })
        .collect()
}

/// SSE `data:` payloads parsed as JSON (skipping `[DONE]`).
pub fn sse_json(text: &str) -> Vec<Value> {
    sse(text)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(&d).unwrap_or_else(|e| panic!("bad event {d}: {e}")))
        .collect()
}

pub fn openai_chat(model: &str, text: &str) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": text}
        ]
    })
}

/// A `multipart/form-data` body: text fields, then the `file` part.
pub fn multipart(boundary: &str, fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, data)) = file {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\ncontent-type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// POST `body` as a chunked stream of `chunk`-byte frames, each sent by a
/// producer task only once the previous one was taken (so the server
/// really receives it piece by piece).
pub async fn post_streamed(
    url: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: Vec<u8>,
    chunk: usize,
) -> Resp {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    type Chunk = Result<Frame<Bytes>, std::convert::Infallible>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let body = Bytes::from(body);
        let mut at = 0;
        while at < body.len() {
            let end = at.saturating_add(chunk).min(body.len());
            if tx.send(body.slice(at..end)).await.is_err() {
                return;
            }
            at = end;
            tokio::task::yield_now().await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|c| (Ok::<_, std::convert::Infallible>(Frame::data(c)), rx))
    });
    let body: StreamBody<_> = StreamBody::new(
        Box::pin(stream) as std::pin::Pin<Box<dyn futures_util::Stream<Item = Chunk> + Send>>
    );
    let c: Client<HttpConnector, StreamBody<_>> =
        Client::builder(TokioExecutor::new()).build(connector());
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", content_type);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c.request(b.body(body).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// POST a multipart form (not streamed).
pub async fn post_form(
    url: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
    file: Option<(&str, &[u8])>,
) -> Resp {
    let boundary = "llmesh-test-boundary-7d3f";
    let body = multipart(boundary, fields, file);
    post_streamed(
        url,
        headers,
        &format!("multipart/form-data; boundary={boundary}"),
        body,
        usize::MAX,
    )
    .await
}
