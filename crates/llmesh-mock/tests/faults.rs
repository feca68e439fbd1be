//! Behavior controls: errors, timing, hang, resets, rules, overrides, auth.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use llmesh_mock::{generated_text, Behavior, MockConfig, MockServer};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn chat_url(m: &MockServer) -> String {
    format!("{}/v1/chat/completions", m.url())
}

#[tokio::test]
async fn injected_status_in_each_dialect() {
    bounded(async {
        let m = start().await;
        let r = post(
            &chat_url(&m),
            &[("x-mock-status", "429"), ("x-mock-retry-after-s", "7")],
            &openai_chat("a", "b"),
        )
        .await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("7"));
        let v = r.json();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"].is_string());

        let r = post(
            &chat_url(&m),
            &[(
                "x-mock-behavior",
                r#"{"status":400,"error_type":"context_length_exceeded","error_message":"too long"}"#,
            )],
            &openai_chat("a", "b"),
        )
        .await;
        assert_eq!(r.status, 400);
        let v = r.json();
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["message"], "too long");

        let r = post(
            &format!("{}/v1/messages", m.url()),
            &[("x-mock-status", "529")],
            &json!({"model": "c", "messages": []}),
        )
        .await;
        assert_eq!(r.status, 529);
        let v = r.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "overloaded_error");

        let r = post(
            &format!("{}/v1beta/models/g:streamGenerateContent?alt=sse", m.url()),
            &[("x-mock-status", "503")],
            &json!({"contents": []}),
        )
        .await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
        assert_eq!(r.json()["error"]["code"], 503);

        // Embeddings and models honour faults too.
        let r = post(
            &format!("{}/v1/embeddings", m.url()),
            &[("x-mock-status", "500")],
            &json!({"model": "e", "input": "x"}),
        )
        .await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json()["error"]["type"], "server_error");
    })
    .await;
}

#[tokio::test]
async fn latency_ttft_and_chunk_delay() {
    bounded(async {
        let m = start().await;
        let t = Instant::now();
        let r = post(
            &chat_url(&m),
            &[("x-mock-latency-ms", "200")],
            &openai_chat("a", "b"),
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(t.elapsed() >= Duration::from_millis(200));

        // Headers come at once; the first event after ttft; then paced.
        let mut body = openai_chat("a", "b");
        body["stream"] = json!(true);
        let c = client();
        let req = request(
            Method::POST,
            &chat_url(&m),
            &[
                ("x-mock-ttft-ms", "300"),
                ("x-mock-chunk-delay-ms", "30"),
                ("x-mock-output-tokens", "3"),
            ],
            Bytes::from(body.to_string()),
        );
        let t = Instant::now();
        let resp = c.request(req).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(140),
            "{:?}",
            t.elapsed()
        );
        let mut b = resp.into_body();
        use http_body_util::BodyExt;
        let first = b.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        assert!(t.elapsed() >= Duration::from_millis(300));
        let rest = b.collect().await.unwrap().to_bytes();
        // role, 3 words, finish, [DONE] = 6 events: 5 gaps of 30 ms.
        assert!(
            t.elapsed() >= Duration::from_millis(300 + 5 * 30),
            "{:?}",
            t.elapsed()
        );
        assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    })
    .await;
}

async fn wait_idle(m: &MockServer) {
    for _ in 0..200 {
        if m.active_requests() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} requests still active", m.active_requests());
}

#[tokio::test]
async fn hang_until_client_gives_up_without_leaking() {
    bounded(async {
        let m = start().await;
        for c in [client(), h2c_client()] {
            let req = request(
                Method::POST,
                &chat_url(&m),
                &[("x-mock-hang", "true")],
                Bytes::from(openai_chat("a", "b").to_string()),
            );
            let res = tokio::time::timeout(Duration::from_millis(300), c.request(req)).await;
            assert!(res.is_err(), "hang must not answer");
            assert_eq!(m.active_requests(), 1);
            drop(c);
            wait_idle(&m).await;
        }
        // Shutdown with a hanging request in flight completes.
        let mut s = tokio::net::TcpStream::connect(m.addr()).await.unwrap();
        let body = openai_chat("a", "b").to_string();
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-mock-hang: 1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(raw.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(m.active_requests(), 1);
        let addr = m.addr();
        m.shutdown().await;
        let mut buf = Vec::new();
        let n = s.read_to_end(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn reset_after_chunks_truncates_streams() {
    bounded(async {
        let m = start().await;
        let mut body = openai_chat("a", "b");
        body["stream"] = json!(true);
        let cases = [
            (client(), "5"),
            (h2c_client(), "5"),
            (client(), "0"),
            (h2c_client(), "0"),
        ];
        for (c, delay) in cases {
            let req = request(
                Method::POST,
                &chat_url(&m),
                &[("x-mock-reset-after-chunks", "3"), ("x-mock-chunk-delay-ms", delay)],
                Bytes::from(body.to_string()),
            );
            let (status, got, failed) = read_until_error(&c, req).await;
            assert_eq!(status, 200);
            assert!(failed, "client must see an error, got {got:?}");
            assert_eq!(sse(&got).len(), 3);
            assert!(!got.contains("[DONE]"));
        }
        // Without pacing the prefix goes out as one write; still truncated.
        let mut b = json!({"model": "c", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let req = request(
            Method::POST,
            &format!("{}/v1/messages", m.url()),
            &[("x-mock-reset-after-chunks", "2")],
            Bytes::from(b.to_string()),
        );
        let (_, got, failed) = read_until_error(&client(), req).await;
        assert!(failed);
        assert_eq!(sse(&got).len(), 2);
        assert!(!got.contains("message_stop"));

        // Raw HTTP/1.1: the chunked body never gets its terminating chunk.
        b["stream"] = json!(false);
        let mut s = tokio::net::TcpStream::connect(m.addr()).await.unwrap();
        let body = b.to_string();
        let raw = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-mock-reset-after-chunks: 0\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(!text.ends_with("0\r\n\r\n"), "{text}");

        // Non-streaming with reset: a truncated JSON body.
        let req = request(
            Method::POST,
            &chat_url(&m),
            &[("x-mock-reset-after-chunks", "1")],
            Bytes::from(openai_chat("a", "b").to_string()),
        );
        let (_, got, failed) = read_until_error(&client(), req).await;
        assert!(failed);
        assert!(!got.is_empty() && serde_json::from_str::<serde_json::Value>(&got).is_err());
        wait_idle(&m).await;
    })
    .await;
}

#[tokio::test]
async fn layering_default_model_rule_headers_json() {
    bounded(async {
        let m = MockServer::start(MockConfig {
            default: Behavior {
                output_tokens: Some(3),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let words = |v: serde_json::Value| {
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .count()
        };
        let url = chat_url(&m);
        assert_eq!(
            words(post(&url, &[], &openai_chat("a", "b")).await.json()),
            3
        );
        m.set_default(Behavior {
            output_tokens: Some(4),
            ..Default::default()
        });
        assert_eq!(
            words(post(&url, &[], &openai_chat("a", "b")).await.json()),
            4
        );

        m.set_model_behavior(
            "broken",
            Behavior {
                status: Some(500),
                ..Default::default()
            },
        );
        m.set_model_behavior(
            "g-broken",
            Behavior {
                status: Some(502),
                ..Default::default()
            },
        );
        assert_eq!(
            post(&url, &[], &openai_chat("broken", "b")).await.status,
            500
        );
        assert_eq!(post(&url, &[], &openai_chat("fine", "b")).await.status, 200);
        let g = post(
            &format!("{}/v1beta/models/g-broken:generateContent", m.url()),
            &[],
            &json!({"contents": []}),
        )
        .await;
        assert_eq!(g.status, 502);
        // Headers beat the model rule.
        let r = post(
            &url,
            &[("x-mock-status", "200")],
            &openai_chat("broken", "b"),
        )
        .await;
        assert_eq!(r.status, 200);
        // The JSON header beats individual headers.
        let r = post(
            &url,
            &[
                ("x-mock-output-tokens", "5"),
                ("x-mock-behavior", r#"{"output_tokens":6}"#),
            ],
            &openai_chat("a", "b"),
        )
        .await;
        assert_eq!(words(r.json()), 6);
        m.clear_model_behaviors();
        assert_eq!(
            post(&url, &[], &openai_chat("broken", "b")).await.status,
            200
        );
        assert_eq!(
            post(&url, &[], &openai_chat("x", "y")).await.json()["choices"][0]["message"]
                ["content"],
            generated_text(4)
        );
    })
    .await;
}

#[tokio::test]
async fn bad_requests_and_control_values() {
    bounded(async {
        let m = start().await;
        let url = chat_url(&m);
        for (h, v, needle) in [
            ("x-mock-latency-ms", "soon", "x-mock-latency-ms"),
            ("x-mock-status", "42", "status"),
            ("x-mock-hang", "perhaps", "x-mock-hang"),
            ("x-mock-behavior", "{oops", "x-mock-behavior"),
            ("x-mock-behavior", r#"{"latncy_ms":1}"#, "latncy_ms"),
            ("x-mock-wat", "1", "x-mock-wat"),
        ] {
            let r = post(&url, &[(h, v)], &openai_chat("a", "b")).await;
            assert_eq!(r.status, 400, "{h}: {v}");
            let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(msg.contains(needle), "{msg}");
        }
        let r = send(Method::POST, &url, "{not json").await;
        assert_eq!(r.status, 400);
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON"));
        let r = post(&url, &[], &json!({"model": "a"})).await;
        assert_eq!(r.status, 400);
        let r = post(
            &format!("{}/v1/messages", m.url()),
            &[],
            &json!({"messages": []}),
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["type"], "error");
        let r = get(&format!("{}/v2/nothing", m.url()), &[]).await;
        assert_eq!(r.status, 404);
        assert!(r.json()["error"]["message"].is_string());
        let r = get(&url, &[]).await;
        assert_eq!(r.status, 405);
        // Nothing above crashed the server.
        assert_eq!(post(&url, &[], &openai_chat("a", "b")).await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn api_key_per_dialect() {
    bounded(async {
        let m = MockServer::start(MockConfig {
            api_key: Some("sekret".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let url = chat_url(&m);
        let r = post(&url, &[], &openai_chat("a", "b")).await;
        assert_eq!(r.status, 401);
        assert!(r.json()["error"]["message"].is_string());
        let r = post(
            &url,
            &[("authorization", "Bearer wrong")],
            &openai_chat("a", "b"),
        )
        .await;
        assert_eq!(r.status, 401);
        let r = post(
            &url,
            &[("authorization", "Bearer sekret")],
            &openai_chat("a", "b"),
        )
        .await;
        assert_eq!(r.status, 200);

        let a = format!("{}/v1/messages", m.url());
        let body = json!({"model": "c", "messages": [{"role": "user", "content": "x"}]});
        let r = post(&a, &[("authorization", "Bearer sekret")], &body).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"]["type"], "authentication_error");
        assert_eq!(
            post(&a, &[("x-api-key", "sekret")], &body).await.status,
            200
        );

        let g = format!("{}/v1beta/models/g:generateContent", m.url());
        let body = json!({"contents": [{"parts": [{"text": "x"}]}]});
        let r = post(&g, &[], &body).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(
            post(&g, &[("x-goog-api-key", "sekret")], &body)
                .await
                .status,
            200
        );
        assert_eq!(
            post(&format!("{g}?key=sekret"), &[], &body).await.status,
            200
        );
        // The control API stays open.
        assert_eq!(
            get(&format!("{}/_mock/health", m.url()), &[]).await.status,
            200
        );
    })
    .await;
}

#[tokio::test]
async fn recording_and_counting() {
    bounded(async {
        let m = start().await;
        post(
            &format!("{}/v1beta/models/g:generateContent?alt=x", m.url()),
            &[("X-Custom", "Val")],
            &json!({"contents": []}),
        )
        .await;
        send(Method::POST, &chat_url(&m), "not json").await;
        get(&format!("{}/_mock/health", m.url()), &[]).await;
        let reqs = m.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(m.request_count(), 2);
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].path, "/v1beta/models/g:generateContent?alt=x");
        assert_eq!(reqs[0].header("x-custom"), Some("Val"));
        assert!(reqs[0].headers.iter().any(|(k, _)| k == "x-custom"));
        assert_eq!(reqs[0].body, json!({"contents": []}));
        assert!(reqs[1].body.is_null());
        m.clear_requests();
        assert!(m.requests().is_empty());
        assert_eq!(m.request_count(), 0);

        let quiet = MockServer::start(MockConfig {
            record: false,
            ..Default::default()
        })
        .await
        .unwrap();
        post(&chat_url(&quiet), &[], &openai_chat("a", "b")).await;
        assert!(quiet.requests().is_empty());
        assert_eq!(quiet.request_count(), 1);
    })
    .await;
}

/// Sends `n` chat requests on one keep-alive client, `in_flight` at a
/// time; returns how many got each status.
async fn fail_counts(
    m: &MockServer,
    model: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let c = client();
    let body = Bytes::from(openai_chat(model, "hello there").to_string());
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = send_with(&c, Method::POST, &chat_url(m), headers, body.clone()).await;
        if r.status == 200 {
            assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
        } else {
            // An error in the dialect's format, not a bare status.
            assert!(r.json()["error"]["message"].is_string(), "{}", r.text());
        }
        *counts.entry(r.status).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn fail_percent_zero_never_fails_and_hundred_always_does() {
    bounded(async {
        let m = start().await;
        // 0 never fails, even with an error status beside it.
        let got = fail_counts(
            &m,
            "a",
            &[("x-mock-fail-percent", "0"), ("x-mock-status", "500")],
            100,
        )
        .await;
        assert_eq!(got.get(&200), Some(&100), "{got:?}");

        // 100 always fails, with 503 when no status is given...
        let got = fail_counts(&m, "a", &[("x-mock-fail-percent", "100")], 100).await;
        assert_eq!(got.get(&503), Some(&100), "{got:?}");

        // ...and with the given status otherwise (here from a model rule,
        // the percentage from the JSON header), Retry-After included.
        m.set_model_behavior(
            "b",
            Behavior {
                status: Some(429),
                retry_after_s: Some(2),
                ..Behavior::default()
            },
        );
        let r = post(
            &chat_url(&m),
            &[("x-mock-behavior", r#"{"fail_percent":100}"#)],
            &openai_chat("b", "x"),
        )
        .await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("2"));
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");

        // Other dialects answer in their own error format.
        let r = post(
            &format!("{}/v1/messages", m.url()),
            &[("x-mock-fail-percent", "100")],
            &json!({"model": "c", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["type"], "error");
        let r = post(
            &format!("{}/v1beta/models/g:generateContent", m.url()),
            &[("x-mock-fail-percent", "100")],
            &json!({"contents": [{"parts": [{"text": "x"}]}]}),
        )
        .await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
    })
    .await;
}

#[tokio::test]
async fn fail_percent_fifty_fails_about_half() {
    bounded(async {
        let m = start().await;
        // Set per model over the control API, as the bench does.
        let r = send(
            Method::PUT,
            &format!("{}/_mock/models/flaky", m.url()),
            r#"{"fail_percent":50,"status":503}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["fail_percent"], 50.0);

        let n = 400;
        let got = fail_counts(&m, "flaky", &[], n).await;
        let failed = got.get(&503).copied().unwrap_or(0);
        let ok = got.get(&200).copied().unwrap_or(0);
        assert_eq!(failed + ok, n, "{got:?}");
        // Binomial(400, 0.5): sd 10, so 35%..65% is 7.5 sd either way.
        assert!(
            (n * 35 / 100..=n * 65 / 100).contains(&failed),
            "{failed} of {n} failed: {got:?}"
        );

        // Other models are untouched by the rule.
        let got = fail_counts(&m, "steady", &[], 50).await;
        assert_eq!(got.get(&200), Some(&50), "{got:?}");
    })
    .await;
}

#[tokio::test]
async fn fail_percent_bad_values_are_refused() {
    bounded(async {
        let m = start().await;
        let url = chat_url(&m);
        for v in ["101", "-1", "half", "NaN", "inf", ""] {
            let r = post(&url, &[("x-mock-fail-percent", v)], &openai_chat("a", "b")).await;
            assert_eq!(r.status, 400, "x-mock-fail-percent: {v:?}");
            let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(msg.contains("fail"), "{msg}");
        }
        for body in [
            r#"{"fail_percent":100.5}"#,
            r#"{"fail_percent":-0.1}"#,
            r#"{"fail_percent":"50"}"#,
        ] {
            let r = post(&url, &[("x-mock-behavior", body)], &openai_chat("a", "b")).await;
            assert_eq!(r.status, 400, "x-mock-behavior: {body}");
            for path in ["behavior", "models/a"] {
                let r = send(Method::PUT, &format!("{}/_mock/{path}", m.url()), body).await;
                assert_eq!(r.status, 400, "PUT /_mock/{path} {body}");
            }
        }
        // Nothing above stuck: requests still succeed.
        assert_eq!(post(&url, &[], &openai_chat("a", "b")).await.status, 200);
    })
    .await;
}
