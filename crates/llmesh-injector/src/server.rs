//! The HTTPS endpoint the API server calls.
//!
//! - `POST /inject`: pods of namespaces without the injection label (only
//!   `llmesh.io/inject: "true"` selects them).
//! - `POST /inject/namespace`: pods of namespaces labelled
//!   `llmesh.io/injection=enabled` (the webhook configuration routes them).
//! - `GET /healthz`, `GET /readyz`: probes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::review::Injector;
use crate::tls::CertStore;

/// Largest AdmissionReview accepted (a pod with big annotations or many
/// containers stays far below).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// A running webhook server. Dropping it stops accepting connections.
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `listen` and serves until dropped.
    pub async fn start(
        listen: SocketAddr,
        injector: Injector,
        certs: Arc<CertStore>,
    ) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(certs.server_config()?));
        let injector = Arc::new(injector);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let injector = injector.clone();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let svc = service_fn(move |req| handle(injector.clone(), req));
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10));
                    if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        });
        Ok(Server { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn handle(
    injector: Arc<Injector>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let namespace_enabled = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") | (&Method::GET, "/readyz") => {
            return Ok(text(StatusCode::OK, "ok\n"))
        }
        (&Method::POST, "/inject") => false,
        (&Method::POST, "/inject/namespace") => true,
        (_, "/inject") | (_, "/inject/namespace") => {
            return Ok(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST an AdmissionReview\n",
            ))
        }
        _ => return Ok(text(StatusCode::NOT_FOUND, "not found\n")),
    };
    let started = Instant::now();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("reading the AdmissionReview: {e}\n"),
            ))
        }
    };
    let (answer, outcome) = match injector.review(&body, namespace_enabled) {
        Ok(a) => a,
        Err(e) => return Ok(text(StatusCode::BAD_REQUEST, &format!("{e}\n"))),
    };
    let bytes = match serde_json::to_vec(&answer) {
        Ok(b) => b,
        Err(e) => return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"))),
    };
    let micros = started.elapsed().as_micros() as u64;
    match outcome {
        // Every pod creation outside the excluded namespaces comes here:
        // the unselected majority only at debug.
        crate::review::Outcome::Skipped(why) => {
            tracing::debug!(
                outcome = outcome.label(),
                reason = why,
                namespace_enabled,
                micros,
                "admission review"
            )
        }
        _ => tracing::info!(
            outcome = outcome.label(),
            namespace_enabled,
            micros,
            "admission review"
        ),
    }
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
