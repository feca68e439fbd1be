//! Upstream TLS is always verified: a provider's `caFile` adds trust for a
//! private CA, and without it the same upstream is refused with a 502. ALPN
//! lets the upstream pick HTTP/2.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use llmesh_proxy::{Proxy, ProxyConfig};
use llmesh_tests::*;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Default)]
struct Seen {
    alpn: Vec<String>,
    auth: Vec<String>,
    versions: Vec<String>,
}

/// An HTTPS upstream with a self-signed certificate for 127.0.0.1 that
/// answers every request with a fixed OpenAI completion.
async fn tls_upstream() -> (SocketAddr, String, Arc<Mutex<Seen>>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca_pem = ck.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                // Handshakes the proxy refuses end here with an error: fine.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).to_string());
                seen.lock().unwrap().alpn.push(alpn.unwrap_or_default());
                let seen = seen.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap_or("").to_string());
                        let mut s = seen.lock().unwrap();
                        s.auth.push(auth.unwrap_or_default());
                        s.versions.push(format!("{:?}", req.version()));
                        let body = r#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"secure"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        resp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca_pem, seen)
}

fn policy(addr: SocketAddr, ca: bool) -> String {
    let ca_line = if ca { "  caFile: ca.pem\n" } else { "" };
    format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: secure}}
spec:
  schema: openai
  baseUrl: https://{addr}/v1
  credential: {{file: key.txt}}
{ca_line}---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: r}}
spec:
  models: [gpt-4o-mini]
  backends: [{{provider: secure}}]
  timeouts: {{connect: 2s, firstByte: 5s}}
"
    )
}

async fn start(policy_text: String, ca_pem: &str) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), KEY).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy_text).unwrap();
    (
        Proxy::start(ProxyConfig::for_test(file)).await.unwrap(),
        dir,
    )
}

#[tokio::test]
async fn a_provider_ca_file_is_trusted_and_http2_is_negotiated() {
    let (addr, ca, seen) = tls_upstream().await;
    let (proxy, _dir) = start(policy(addr, true), &ca).await;
    let http = Http::new();
    let url = format!("http://{}/v1/chat/completions", proxy.llm_addr());
    let body = openai_chat("gpt-4o-mini", "hi").to_string();
    for _ in 0..2 {
        let (s, _, b) = http
            .send(http::Method::POST, &url, Bytes::from(body.clone()), &[])
            .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.alpn,
        vec!["h2"],
        "one pooled HTTP/2 connection for both calls"
    );
    assert_eq!(seen.versions, vec!["HTTP/2.0", "HTTP/2.0"]);
    assert!(seen.auth.iter().all(|a| a == &format!("Bearer {KEY}")));
}

#[tokio::test]
async fn an_unknown_ca_is_refused_with_a_502() {
    let (addr, ca, seen) = tls_upstream().await;
    let (proxy, _dir) = start(policy(addr, false), &ca).await;
    let http = Http::new();
    let url = format!("http://{}/v1/chat/completions", proxy.llm_addr());
    let body = openai_chat("gpt-4o-mini", "hi").to_string();
    let (s, _, b) = http
        .send(http::Method::POST, &url, Bytes::from(body), &[])
        .await;
    assert_eq!(s, 502);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("certificate"), "{msg}");
    assert!(
        seen.lock().unwrap().auth.is_empty(),
        "no request may reach an unverified upstream"
    );
}
