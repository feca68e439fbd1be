//! Requests across the proxy's lifecycle: a client that hangs up mid-stream
//! is accounted and frees the upstream; shutdown drains in-flight streams.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use llmesh_tests::*;
use serde_json::json;

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_is_accounted_and_frees_the_upstream() {
    let env = Env::start().await;
    let mut req = openai_chat("gpt-4o-mini", "hi");
    req["stream"] = json!(true);
    let resp = env
        .http
        .open(
            http::Method::POST,
            &env.url("/v1/chat/completions"),
            Bytes::from(req.to_string()),
            &[
                ("x-mock-chunk-delay-ms", "200"),
                ("x-mock-output-tokens", "50"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap();
    assert!(first.is_some());
    drop(body); // the app goes away

    let m = env.wait_metric("code=\"499\"").await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_requests_total",
            &[("code", "499"), ("error_type", "client_cancelled")]
        ),
        Some(1.0),
        "{m}"
    );
    // The proxy dropped its upstream call too: the mock stops streaming.
    for _ in 0..250 {
        if env.mock.active_requests() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream stream kept running after the client left");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish() {
    let env = Env::start().await;
    let Env {
        mock: _mock,
        proxy,
        dir: _dir,
        http,
    } = env;
    let url = format!("http://{}/v1/chat/completions", proxy.llm_addr());
    let mut req = openai_chat("gpt-4o-mini", "hi");
    req["stream"] = json!(true);
    let inflight = {
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move {
            http.send(
                http::Method::POST,
                &url,
                Bytes::from(req.to_string()),
                &[("x-mock-chunk-delay-ms", "100")],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .unwrap();
    let (status, _, body) = inflight.await.unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(
        sse_data(&text).last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
    // And the port is closed to new work.
    assert!(std::net::TcpStream::connect(
        url.trim_start_matches("http://").split('/').next().unwrap()
    )
    .is_err());
}
