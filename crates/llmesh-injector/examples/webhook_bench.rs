//! `make bench-injector`: how long the webhook takes to answer, as the API
//! server sees it (HTTPS with a generated CA, keep-alive connections, the
//! AdmissionReview of a typical Deployment pod), and the review alone.
//!
//! Flags: `--requests N` per phase (default 5000), `--connections N` for
//! the concurrent phase (default 8).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use llmesh_injector::{tls, Injector, Server, SidecarConfig};
use tokio::net::TcpStream;

const REVIEW: &str = include_str!("../../../tests/injector/fixtures/deployment-pod.review.json");
const HOST: &str = "llmesh-injector.llmesh-system.svc";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn row(label: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort();
    let q = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1e3
    };
    let rate = samples.len() as f64 / wall.as_secs_f64();
    println!(
        "| {label:<38} | {:>6} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>9.0} |",
        samples.len(),
        q(0.50),
        q(0.90),
        q(0.99),
        q(1.0),
        rate
    );
}

async fn client(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(rustls::pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn post(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> Duration {
    let req = http::Request::post("/inject")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REVIEW.as_bytes())))
        .unwrap();
    let started = Instant::now();
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let took = started.elapsed();
    assert!(
        body.windows(9).any(|w| w == b"JSONPatch"),
        "the pod was not injected"
    );
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests = arg("--requests", 5000);
    let connections = arg("--connections", 8).max(1);
    let injector = Injector {
        sidecar: SidecarConfig {
            credential_secrets: vec!["llmesh-credentials".into()],
            ..SidecarConfig::default()
        },
        native: true,
        own_namespace: "llmesh-system".into(),
    };

    // The review alone: parse, decide, build and encode the patch.
    let mut alone = Vec::with_capacity(requests);
    let t = Instant::now();
    for _ in 0..requests {
        let s = Instant::now();
        let (out, _) = injector.review(REVIEW.as_bytes(), false).unwrap();
        std::hint::black_box(serde_json::to_vec(&out).unwrap());
        alone.push(s.elapsed());
    }
    let alone_wall = t.elapsed();

    let generated = tls::generate(&tls::service_names("llmesh-injector", "llmesh-system")).unwrap();
    let store = tls::CertStore::new(
        tls::certified_key(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes()).unwrap(),
    );
    let server = Server::start("127.0.0.1:0".parse().unwrap(), injector, store)
        .await
        .unwrap();

    // One keep-alive connection, one review at a time.
    let mut sender = client(server.addr(), &generated.ca_pem).await;
    for _ in 0..200 {
        post(&mut sender).await;
    }
    let mut serial = Vec::with_capacity(requests);
    let t = Instant::now();
    for _ in 0..requests {
        serial.push(post(&mut sender).await);
    }
    let serial_wall = t.elapsed();

    // Several connections at once, as during a large rollout.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let ca = generated.ca_pem.clone();
        let addr = server.addr();
        let n = requests / connections;
        tasks.push(tokio::spawn(async move {
            let mut s = client(addr, &ca).await;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(post(&mut s).await);
            }
            v
        }));
    }
    let mut concurrent = Vec::new();
    for t in tasks {
        concurrent.extend(t.await.unwrap());
    }
    let concurrent_wall = t.elapsed();

    // A new connection per review (TLS handshake included).
    let mut fresh = Vec::new();
    let t = Instant::now();
    for _ in 0..(requests / 10).max(50) {
        let s = Instant::now();
        let mut c = client(server.addr(), &generated.ca_pem).await;
        post(&mut c).await;
        fresh.push(s.elapsed());
    }
    let fresh_wall = t.elapsed();

    println!(
        "llmesh-injector webhook latency (typical Deployment pod, {} byte AdmissionReview; ms)",
        REVIEW.len()
    );
    println!(
        "| {:<38} | {:>6} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9} |",
        "phase", "n", "p50", "p90", "p99", "max", "req/s"
    );
    println!(
        "|{:-<40}|{:->8}|{:->10}|{:->10}|{:->10}|{:->10}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    row("review only (in process)", alone, alone_wall);
    row("HTTPS, 1 keep-alive connection", serial, serial_wall);
    row(
        &format!("HTTPS, {connections} connections at once"),
        concurrent,
        concurrent_wall,
    );
    row("HTTPS, new connection + handshake each", fresh, fresh_wall);
}
