//! Bad input and upstream faults: each gets a clear error in the API format
//! the client speaks, with the right status; nothing hangs.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use llmesh_tests::*;
use serde_json::{json, Value};

fn assert_openai_error(body: &Value, code: &str) -> String {
    let err = &body["error"];
    assert!(err.is_object(), "not an OpenAI error: {body}");
    assert_eq!(err["code"], code, "{body}");
    err["message"].as_str().unwrap().to_string()
}

fn assert_anthropic_error(body: &Value) -> String {
    assert_eq!(body["type"], "error", "not an Anthropic error: {body}");
    body["error"]["message"].as_str().unwrap().to_string()
}

async fn post_raw(env: &Env, path: &str, body: &str) -> (u16, Value) {
    let (s, _, b) = env
        .http
        .send(
            Method::POST,
            &env.url(path),
            Bytes::from(body.to_string()),
            &[],
        )
        .await;
    (s.as_u16(), serde_json::from_slice(&b).unwrap())
}

#[tokio::test]
async fn malformed_json_is_a_400_in_the_clients_format() {
    let env = Env::start().await;
    let (s, b) = post_raw(&env, "/v1/chat/completions", "{\"model\": ").await;
    assert_eq!(s, 400);
    let msg = assert_openai_error(&b, "invalid_json");
    assert!(msg.contains("not valid JSON"), "{msg}");
    assert_eq!(b["error"]["type"], "invalid_request_error");

    let (s, b) = post_raw(&env, "/v1/messages", "nope").await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["type"], "invalid_request_error");
    assert_anthropic_error(&b);
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn missing_or_bad_model_is_a_400() {
    let env = Env::start().await;
    let (s, b) = post_raw(&env, "/v1/chat/completions", r#"{"messages": []}"#).await;
    assert_eq!(s, 400);
    assert!(assert_openai_error(&b, "invalid_request").contains("model"));
    let (s, _) = post_raw(&env, "/v1/chat/completions", r#"{"model": 7}"#).await;
    assert_eq!(s, 400);
    let (s, _) = post_raw(&env, "/v1/chat/completions", "[1,2]").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn unknown_model_is_a_404_listing_known_models() {
    let env = Env::start().await;
    let (s, _, b) = env
        .post("/v1/chat/completions", &openai_chat("gpt-9-ultra", "hi"))
        .await;
    assert_eq!(s, 404);
    let msg = assert_openai_error(&b, "model_not_found");
    assert!(msg.contains("gpt-9-ultra"), "{msg}");
    assert!(
        msg.contains("gpt-4o-mini") && msg.contains("claude-sonnet-4-5"),
        "{msg}"
    );
    let (s, _, b) = env.post("/v1/messages", &anthropic_msg("nope", "hi")).await;
    assert_eq!(s, 404);
    assert_eq!(b["error"]["type"], "not_found_error");
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_requests_total",
            &[("code", "404"), ("error_type", "model_not_found")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn oversized_bodies_are_a_413_with_or_without_content_length() {
    let env = Env::start().await;
    let big = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4 * 1024 * 1024 + 10)
    );
    let (s, b) = post_raw(&env, "/v1/chat/completions", &big).await;
    assert_eq!(s, 413);
    assert!(assert_openai_error(&b, "body_too_large").contains("4194304"));

    // Chunked upload with no length announced: the limit still holds.
    let addr = env.proxy.llm_addr();
    let resp = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n").unwrap();
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..80 {
            if write!(s, "{:x}\r\n", chunk.len()).is_err() || s.write_all(&chunk).is_err() || s.write_all(b"\r\n").is_err() {
                break; // the proxy may answer and close early
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    })
    .await
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn unsupported_endpoints_are_a_404_naming_the_supported_ones() {
    let env = Env::start().await;
    let (s, _, b) = env
        .http
        .send(
            Method::POST,
            &env.url("/v1/assistants"),
            Bytes::from("{}"),
            &[],
        )
        .await;
    assert_eq!(s, 404);
    let v: Value = serde_json::from_slice(&b).unwrap();
    let msg = assert_openai_error(&v, "unsupported_endpoint");
    assert!(msg.contains("/v1/chat/completions"), "{msg}");
    let (s, _, _) = env.http.get(&env.url("/v1/chat/completions")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn unreachable_upstream_is_a_502() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::start_with(|_| default_policy(&format!("http://127.0.0.1:{port}"))).await;
    let (s, _, b) = env
        .post("/v1/chat/completions", &openai_chat("gpt-4o-mini", "hi"))
        .await;
    assert_eq!(s, 502, "{b}");
    let msg = assert_openai_error(&b, "upstream_connect");
    assert!(msg.contains("oai") && msg.contains("unreachable"), "{msg}");
    let (s, _, b) = env
        .post("/v1/messages", &anthropic_msg("claude-sonnet-4-5", "hi"))
        .await;
    assert_eq!(s, 502);
    assert_anthropic_error(&b);
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_upstream_errors_total",
            &[("route", "openai"), ("error_type", "upstream_connect")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn hanging_upstream_is_a_504_after_the_first_byte_timeout() {
    // One attempt: the timeout is the route's, not three of them.
    let env = Env::start_with(one_attempt_policy).await;
    let started = std::time::Instant::now();
    let (s, _, b) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", "hi"),
            &[("x-mock-hang", "true")],
        )
        .await;
    assert_eq!(s, 504, "{b}");
    assert!(assert_openai_error(&b, "upstream_timeout").contains("first byte"));
    assert!(b["error"]["type"].is_string());
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn upstream_errors_keep_their_status_and_rate_limit_hints() {
    let env = Env::start().await;
    let (s, h, b) = env
        .post_with(
            "/v1/chat/completions",
            &openai_chat("gpt-4o-mini", "hi"),
            &[("x-mock-status", "429"), ("x-mock-retry-after-s", "7")],
        )
        .await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(h["retry-after"], "7");
    assert!(b["error"].is_object());

    // Anthropic client, OpenAI upstream: the error arrives in Anthropic's format.
    let (s, _, b) = env
        .post_with(
            "/v1/messages",
            &anthropic_msg("claude-as-gpt", "hi"),
            &[("x-mock-status", "503")],
        )
        .await;
    assert_eq!(s, 503);
    assert_anthropic_error(&b);
    let m = env.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_upstream_errors_total",
            &[("route", "openai"), ("error_type", "rate_limited")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_event() {
    let env = Env::start().await;
    let mut req = openai_chat("gpt-4o-mini", "hi");
    req["stream"] = json!(true);
    let (s, _, text) = env
        .post_stream(
            "/v1/chat/completions",
            &req,
            &[("x-mock-chunk-delay-ms", "5000")],
        )
        .await;
    assert_eq!(s, 200);
    let last = sse_data(&text).last().cloned().unwrap();
    let v: Value = serde_json::from_str(&last).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("idle"),
        "{text}"
    );
    let m = env.wait_metric("error_type=\"upstream_timeout\"").await;
    assert!(m.contains("code=\"504\""), "{m}");
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_with_an_error_event() {
    let env = Env::start().await;
    let mut req = anthropic_msg("claude-sonnet-4-5", "hi");
    req["stream"] = json!(true);
    let (s, _, text) = env
        .post_stream("/v1/messages", &req, &[("x-mock-reset-after-chunks", "3")])
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        sse_events(&text).last().map(String::as_str),
        Some("error"),
        "{text}"
    );
}

#[tokio::test]
async fn invalid_requests_for_translation_are_a_400_and_never_sent() {
    let env = Env::start().await;
    let (s, _, b) = env
        .post(
            "/v1/messages",
            &json!({"model": "claude-as-gpt", "max_tokens": 5, "messages": "hello"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(assert_anthropic_error(&b).contains("messages"));
    let (s, _, b) = env
        .post(
            "/v1/embeddings",
            &json!({"model": "claude-sonnet-4-5", "input": "x"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("embeddings"));
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn deeply_nested_json_and_too_many_messages_are_refused_clearly() {
    let env = Env::start_configured(default_policy, |c| {
        c.max_json_depth = 16;
        c.max_messages = 3;
    })
    .await;
    let deep = format!(
        "{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}],\"metadata\":{}1{}}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    let (s, b) = post_raw(&env, "/v1/chat/completions", &deep).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deeper than 16"),
        "{b}"
    );
    // Brackets inside strings are text, not nesting.
    let texty = format!(
        "{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "[{".repeat(40)
    );
    let (s, b) = post_raw(&env, "/v1/chat/completions", &texty).await;
    assert_eq!(s, 200, "{b}");
    let many: Vec<Value> = (0..4)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let body = json!({"model": "gpt-4o-mini", "messages": many}).to_string();
    let (s, b) = post_raw(&env, "/v1/messages", &body).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["type"], "error", "Anthropic shape: {b}");
    assert!(b.to_string().contains("at most 3"), "{b}");
    assert!(
        env.mock.requests().len() == 1,
        "only the valid request went upstream"
    );
}

#[tokio::test]
async fn with_an_inbound_token_only_the_pods_app_is_served() {
    let env = Env::start_configured(default_policy, |c| {
        c.inbound_token = Some("pod-token-123".into());
    })
    .await;
    let body = Bytes::from(openai_chat("gpt-4o-mini", "hi").to_string());
    let url = env.url("/v1/chat/completions");
    let ct = ("content-type", "application/json");
    let (s, _, b) = env.http.send(Method::POST, &url, body.clone(), &[ct]).await;
    assert_eq!(s, 401);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], "invalid_inbound_token", "{v}");
    let (s, _, _) = env
        .http
        .send(
            Method::POST,
            &url,
            body.clone(),
            &[ct, ("authorization", "Bearer wrong-token-12")],
        )
        .await;
    assert_eq!(s, 401);
    let (s, _, _) = env
        .http
        .send(
            Method::POST,
            &url,
            body.clone(),
            &[ct, ("authorization", "Bearer pod-token-123")],
        )
        .await;
    assert_eq!(s, 200);
    // Anthropic SDKs send it as x-api-key; it is never forwarded.
    let msg = Bytes::from(anthropic_msg("claude-sonnet-4-5", "hi").to_string());
    let (s, _, _) = env
        .http
        .send(
            Method::POST,
            &env.url("/v1/messages"),
            msg,
            &[ct, ("x-api-key", "pod-token-123")],
        )
        .await;
    assert_eq!(s, 200);
    for r in env.mock.requests() {
        assert!(!format!("{:?}", r.headers).contains("pod-token-123"));
    }
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let env = Env::start_configured(default_policy, |c| c.max_header_bytes = 16 * 1024).await;
    let big = "x".repeat(40 * 1024);
    let body = Bytes::from(openai_chat("gpt-4o-mini", "hi").to_string());
    let (s, _, _) = env
        .http
        .send(
            Method::POST,
            &env.url("/v1/chat/completions"),
            body,
            &[
                ("content-type", "application/json"),
                ("x-padding", big.as_str()),
            ],
        )
        .await;
    assert_eq!(s.as_u16(), 431);
    assert!(env.mock.requests().is_empty());
}

/// An upstream on loopback that answers every request with a 500 whose
/// body stops after a few bytes: closed when `close`, else left hanging.
async fn cut_error_upstream(close: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"error\": {\"mess";
                let _ = sock.write_all(head.as_bytes()).await;
                if close {
                    let _ = sock.shutdown().await;
                } else {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_error_body_that_is_cut_keeps_the_status_class_and_says_so() {
    for close in [true, false] {
        let upstream = cut_error_upstream(close).await;
        let env = Env::start_with(|_| {
            one_attempt_policy(&upstream).replacen(
                "  timeouts: {firstByte: 2s, idle: 2s, total: 10s}\n",
                "  timeouts: {firstByte: 300ms, idle: 2s, total: 10s}\n",
                1,
            )
        })
        .await;
        let (s, _, b) = env
            .post("/v1/chat/completions", &openai_chat("gpt-4o-mini", "hi"))
            .await;
        assert_eq!(s, 500, "the upstream's status, not a timeout: {b}");
        // The upstream's body could not be read, so the client gets the
        // note in its place, with the status's class in the metrics.
        let msg = assert_openai_error(&b, "upstream_error");
        assert!(
            msg.contains("500") && msg.contains("error body was cut"),
            "{msg}"
        );
        let m = env.metrics().await;
        assert_eq!(
            metric_value(
                &m,
                "llmesh_upstream_errors_total",
                &[("route", "openai"), ("error_type", "upstream_5xx")]
            ),
            Some(1.0),
            "{m}"
        );
    }
}
