//! The webhook over TLS: a rustls client handshakes with the injector
//! using the CA it generated (and put into the webhook configuration's
//! caBundle through the fake API server), and a certificate replaced on
//! disk is served to the next connection without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use llmesh_injector::{cluster, tls, Injector, Server, SidecarConfig};
use llmesh_tests::fake_kube::FakeKube;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::root;

const NS: &str = "llmesh-system";
const HOST: &str = "llmesh-injector.llmesh-system.svc";

fn injector() -> Injector {
    Injector {
        sidecar: SidecarConfig::default(),
        native: true,
        own_namespace: NS.into(),
    }
}

fn webhook_configuration() -> Value {
    let hook = |name: &str, path: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": {"name": "llmesh-injector", "namespace": NS, "path": path, "port": 443}}})
    };
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": "llmesh-injector"},
           "webhooks": [hook("namespace.inject.llmesh.io", "/inject/namespace"), hook("pod.inject.llmesh.io", "/inject")]})
}

/// A TLS client trusting only `ca_pem`, speaking HTTP/1.1 to `addr`.
pub(crate) async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    connector.connect(name, tcp).await
}

/// Posts the fixture review over an established TLS stream.
pub(crate) async fn post_review(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Value {
    let body =
        std::fs::read(root().join("tests/injector/fixtures/deployment-pod.review.json")).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/inject")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_generated_ca_goes_into_the_ca_bundle_and_a_client_trusting_it_gets_answers() {
    let kube = FakeKube::start().await;
    kube.put_webhook_configuration(webhook_configuration());
    let client = llmesh_kube::plain_client(&kube.url(), NS).unwrap();

    let first =
        cluster::shared_certificate(client.clone(), NS, "llmesh-injector-tls", "llmesh-injector")
            .await
            .unwrap();
    let secret = kube
        .secret(NS, "llmesh-injector-tls")
        .expect("the Secret is written");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    // A second replica starting later serves the same certificate.
    let second =
        cluster::shared_certificate(client.clone(), NS, "llmesh-injector-tls", "llmesh-injector")
            .await
            .unwrap();
    assert_eq!(first, second);

    assert_eq!(
        cluster::patch_ca_bundle(client.clone(), "llmesh-injector", &first.ca_pem)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        cluster::patch_ca_bundle(client.clone(), "llmesh-injector", &first.ca_pem)
            .await
            .unwrap(),
        0,
        "an up-to-date caBundle is not patched again"
    );
    assert_eq!(kube.json_patch_count(), 1);
    let mwc = kube.webhook_configuration("llmesh-injector").unwrap();
    for hook in mwc["webhooks"].as_array().unwrap() {
        let b64 = hook["clientConfig"]["caBundle"].as_str().unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(String::from_utf8(pem).unwrap(), first.ca_pem);
        assert!(
            hook["clientConfig"]["service"].is_object(),
            "the rest is kept"
        );
    }

    let store = tls::CertStore::new(
        tls::certified_key(first.cert_pem.as_bytes(), first.key_pem.as_bytes()).unwrap(),
    );
    let server = Server::start("127.0.0.1:0".parse().unwrap(), injector(), store)
        .await
        .unwrap();
    let ca_from_bundle = {
        let b64 = mwc["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let stream = connect(server.addr(), &ca_from_bundle)
        .await
        .expect("handshake with the caBundle CA");
    let answer = post_review(stream).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");

    // A client trusting some other CA refuses the injector.
    let other = tls::generate(&[HOST.to_string()]).unwrap();
    assert!(connect(server.addr(), &other.ca_pem).await.is_err());
}

#[tokio::test]
async fn an_expiring_stored_certificate_is_replaced() {
    let kube = FakeKube::start().await;
    let client = llmesh_kube::plain_client(&kube.url(), NS).unwrap();
    let first = cluster::shared_certificate(client.clone(), NS, "tls", "llmesh-injector")
        .await
        .unwrap();
    // Pretend it ends in a week.
    let mut secret = kube.secret(NS, "tls").unwrap();
    let soon = (first.not_after - 358 * 24 * 3600).to_string();
    secret["metadata"]["annotations"]["llmesh.io/not-after"] = json!(soon);
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), NS);
    let typed: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).unwrap();
    api.replace("tls", &Default::default(), &typed)
        .await
        .unwrap();
    let renewed = cluster::shared_certificate(client, NS, "tls", "llmesh-injector")
        .await
        .unwrap();
    assert_ne!(renewed.cert_pem, first.cert_pem);
    assert!(renewed.not_after > first.not_after - 24 * 3600);
}

/// Writes a file the way a Secret volume update lands: a new file renamed
/// over the old one.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let names = tls::service_names("llmesh-injector", NS);
    let a = tls::generate(&names).unwrap();
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &a.key_pem).unwrap();

    let store = tls::CertStore::new(tls::load_files(&cert, &key).unwrap());
    let _watcher = tls::watch_files(store.clone(), cert.clone(), key.clone()).unwrap();
    let server = Server::start("127.0.0.1:0".parse().unwrap(), injector(), store.clone())
        .await
        .unwrap();
    let before = connect(server.addr(), &a.ca_pem)
        .await
        .expect("the first certificate");

    // cert-manager renews: a new key and a certificate from another CA.
    let b = tls::generate(&names).unwrap();
    replace(&key, &b.key_pem);
    replace(&cert, &b.cert_pem);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect(server.addr(), &b.ca_pem).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.swaps() >= 1);
    assert!(
        connect(server.addr(), &a.ca_pem).await.is_err(),
        "the old certificate is gone"
    );
    // A connection opened before the swap still works.
    assert_eq!(post_review(before).await["response"]["allowed"], true);

    // A broken file (half written, wrong content) keeps the good one.
    let swaps = store.swaps();
    replace(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.swaps(), swaps);
    let still = connect(server.addr(), &b.ca_pem)
        .await
        .expect("still the good certificate");
    assert_eq!(
        post_review(still).await["response"]["patchType"],
        "JSONPatch"
    );
}
