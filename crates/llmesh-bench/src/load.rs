//! The in-process load generator: one HTTP/1.1 keep-alive connection per
//! concurrent client, each client sending its requests back to back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest time one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Error messages kept per block (the count is always exact).
const KEEP_ERRORS: usize = 5;
/// A client gives up after this many errors in a row (a dead target).
const MAX_CONSECUTIVE_ERRORS: u32 = 20;

/// Where requests go: the mock directly or the proxy.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    host: HeaderValue,
    auth: Option<HeaderValue>,
}

impl Target {
    pub fn new(name: &'static str, addr: SocketAddr, bearer: Option<&str>) -> anyhow::Result<Self> {
        let host = HeaderValue::from_str(&addr.to_string()).context("host header")?;
        let auth = bearer
            .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
            .transpose()
            .context("authorization header")?;
        Ok(Target {
            name,
            addr,
            host,
            auth,
        })
    }

    /// A JSON POST to `path` on this target, with its credentials.
    pub fn post_json(&self, path: &str, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = &self.auth {
            b = b.header(AUTHORIZATION, auth.clone());
        }
        b.body(Full::new(body)).context("building a request")
    }
}

/// What each request of a block looks like and how its answer is checked.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The response body must contain this.
    expect: &'static [u8],
}

const PROMPT: &str = "Summarise in one short sentence why a sidecar proxy helps with LLM traffic.";

impl RequestSpec {
    /// A non-streamed chat completion of `tokens` words.
    pub fn chat(tokens: u32) -> Self {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{PROMPT}"}}],"max_tokens":64}}"#
        );
        RequestSpec {
            body: Bytes::from(body),
            headers: mock_headers(tokens, None, None),
            expect: b"\"finish_reason\":\"stop\"",
        }
    }

    /// A streamed chat completion of `tokens` words, `chunk_delay_ms` apart.
    /// It asks for the usage chunk: the proxy always asks the upstream for
    /// it, so without it the mock would send the proxy one event (and one
    /// delay) more than it sends a direct client.
    pub fn stream(tokens: u32, chunk_delay_ms: u64) -> Self {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{PROMPT}"}}],"max_tokens":64}}"#
        );
        RequestSpec {
            body: Bytes::from(body),
            headers: mock_headers(tokens, Some(0), Some(chunk_delay_ms)),
            expect: b"data: [DONE]",
        }
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    fn request(&self, target: &Target) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/v1/chat/completions")
            .header(HOST, target.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = &target.auth {
            b = b.header(AUTHORIZATION, auth.clone());
        }
        for (k, v) in &self.headers {
            b = b.header(k.clone(), v.clone());
        }
        b.body(Full::new(self.body.clone()))
            .context("building a request")
    }
}

fn mock_headers(
    tokens: u32,
    ttft_ms: Option<u64>,
    chunk_delay_ms: Option<u64>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = vec![(
        HeaderName::from_static("x-mock-output-tokens"),
        HeaderValue::from(tokens),
    )];
    if let Some(ms) = ttft_ms {
        h.push((
            HeaderName::from_static("x-mock-ttft-ms"),
            HeaderValue::from(ms),
        ));
    }
    if let Some(ms) = chunk_delay_ms {
        h.push((
            HeaderName::from_static("x-mock-chunk-delay-ms"),
            HeaderValue::from(ms),
        ));
    }
    h
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                anyhow::anyhow!("connecting to {addr}: no answer within {CONNECT_TIMEOUT:?}")
            })?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, task })
    }
}

impl Conn {
    /// Sends `req` and reads the whole answer into `buf` (cleared first).
    /// Returns the status, whatever it is, or why no complete answer came
    /// (the connection is then unusable).
    pub async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
        buf: &mut Vec<u8>,
    ) -> Result<StatusCode, String> {
        buf.clear();
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
        }
        Ok(status)
    }
}

/// One request on a fresh connection (control and metrics calls), bounded
/// by `REQUEST_TIMEOUT`; returns the status and the body.
pub async fn one_shot(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let call = async {
        let mut conn = Conn::open(addr).await?;
        let mut b = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, HeaderValue::from_str(&addr.to_string())?);
        if body.is_some() {
            b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let req = b.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))?;
        let mut buf = Vec::new();
        let status = conn
            .exchange(req, &mut buf)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok::<_, anyhow::Error>((status, Bytes::from(buf)))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("{method} http://{addr}{path}"))
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Timing of one successful request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Send to the first body byte.
    pub ttfb: Duration,
    /// Send to the end of the body.
    pub total: Duration,
}

/// Sends one request on `conn` and reads the whole answer into `buf`.
async fn one(
    conn: &mut Conn,
    target: &Target,
    spec: &RequestSpec,
    buf: &mut Vec<u8>,
) -> Result<Sample, String> {
    // Wait for the connection to be idle before the clock starts.
    conn.sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let req = spec.request(target).map_err(|e| format!("{e:#}"))?;
    buf.clear();
    let t0 = Instant::now();
    let resp = conn
        .sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut ttfb = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if ttfb.is_none() && !data.is_empty() {
                ttfb = Some(t0.elapsed());
            }
            buf.extend_from_slice(&data);
        }
    }
    let total = t0.elapsed();
    if status != StatusCode::OK {
        let snippet: String = String::from_utf8_lossy(buf).chars().take(200).collect();
        return Err(format!("status {status}: {snippet}"));
    }
    if !contains(buf, spec.expect) {
        let snippet: String = String::from_utf8_lossy(buf).chars().take(200).collect();
        return Err(format!(
            "answer lacks {:?}: {snippet}",
            String::from_utf8_lossy(spec.expect)
        ));
    }
    Ok(Sample {
        ttfb: ttfb.unwrap_or(total),
        total,
    })
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// What a block of load produced.
#[derive(Debug, Default)]
pub struct BlockResult {
    pub samples: Vec<Sample>,
    pub errors: u64,
    pub error_messages: Vec<String>,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Connections opened again after an error.
    pub reconnects: u64,
}

impl BlockResult {
    pub fn absorb(&mut self, other: BlockResult) {
        self.samples.extend(other.samples);
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        self.elapsed += other.elapsed;
        for m in other.error_messages {
            if self.error_messages.len() < KEEP_ERRORS {
                self.error_messages.push(m);
            }
        }
    }
}

/// Opens `n` connections to the target.
pub async fn open_conns(target: &Target, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::open(target.addr).await?);
    }
    Ok(conns)
}

/// Runs load on every connection at once: each one sends requests back to
/// back until `max_requests` were started in total or `max_time` passed.
/// Returns the connections (replaced where an error forced a reconnect).
pub async fn run_block(
    target: &Target,
    spec: &RequestSpec,
    conns: Vec<Conn>,
    max_requests: u64,
    max_time: Duration,
) -> (Vec<Conn>, BlockResult) {
    let started = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + max_time;
    let mut handles = Vec::with_capacity(conns.len());
    for conn in conns {
        let target = target.clone();
        let spec = spec.clone();
        let started = started.clone();
        handles.push(tokio::spawn(async move {
            client_loop(conn, &target, &spec, &started, max_requests, deadline).await
        }));
    }
    let mut out = BlockResult::default();
    let mut conns = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok((conn, r)) => {
                if let Some(c) = conn {
                    conns.push(c);
                }
                out.absorb(r);
            }
            Err(e) => {
                out.errors += 1;
                if out.error_messages.len() < KEEP_ERRORS {
                    out.error_messages.push(format!("client task failed: {e}"));
                }
            }
        }
    }
    out.elapsed = t0.elapsed();
    (conns, out)
}

async fn client_loop(
    conn: Conn,
    target: &Target,
    spec: &RequestSpec,
    started: &AtomicU64,
    max_requests: u64,
    deadline: Instant,
) -> (Option<Conn>, BlockResult) {
    let mut r = BlockResult::default();
    let mut conn = Some(conn);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut consecutive = 0u32;
    while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max_requests {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(target.addr).await {
                Ok(c) => {
                    r.reconnects += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    record_error(&mut r, target, format!("{e:#}"));
                    consecutive += 1;
                    if consecutive >= MAX_CONSECUTIVE_ERRORS {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, one(c, target, spec, &mut buf)).await {
            Ok(Ok(s)) => {
                r.samples.push(s);
                consecutive = 0;
            }
            Ok(Err(msg)) => {
                record_error(&mut r, target, msg);
                consecutive += 1;
                // The connection may be in any state: start afresh.
                conn = None;
            }
            Err(_) => {
                record_error(
                    &mut r,
                    target,
                    format!("no complete answer within {REQUEST_TIMEOUT:?}"),
                );
                consecutive += 1;
                conn = None;
            }
        }
        if consecutive >= MAX_CONSECUTIVE_ERRORS {
            break;
        }
    }
    (conn, r)
}

fn record_error(r: &mut BlockResult, target: &Target, msg: String) {
    r.errors += 1;
    if r.error_messages.len() < KEEP_ERRORS {
        r.error_messages.push(format!("{}: {msg}", target.name));
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
