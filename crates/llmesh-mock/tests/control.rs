//! The `/_mock/` HTTP control API and the binary.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::Method;
use llmesh_mock::generated_text;
use serde_json::json;
use support::*;

#[tokio::test]
async fn control_endpoints() {
    bounded(async {
        let m = start().await;
        let base = m.url();
        let ctl = |p: &str| format!("{base}/_mock/{p}");
        let chat = format!("{base}/v1/chat/completions");

        let r = get(&ctl("health"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["status"], "ok");

        let r = send(Method::PUT, &ctl("behavior"), r#"{"output_tokens":2}"#).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            get(&ctl("behavior"), &[]).await.json(),
            json!({"output_tokens": 2})
        );
        assert_eq!(m.default_behavior().output_tokens, Some(2));
        let v = post(&chat, &[], &openai_chat("a", "b")).await.json();
        assert_eq!(v["choices"][0]["message"]["content"], generated_text(2));

        let r = send(Method::PUT, &ctl("models/org%2Fbad"), r#"{"status":503}"#).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            get(&ctl("models"), &[]).await.json(),
            json!({"org/bad": {"status": 503}})
        );
        assert_eq!(
            post(&chat, &[], &openai_chat("org/bad", "b")).await.status,
            503
        );
        assert_eq!(send(Method::DELETE, &ctl("models"), "").await.status, 200);
        assert_eq!(
            post(&chat, &[], &openai_chat("org/bad", "b")).await.status,
            200
        );

        let r = get(&ctl("requests"), &[]).await;
        let reqs = r.json();
        assert_eq!(reqs.as_array().unwrap().len(), 3);
        assert_eq!(reqs[0]["method"], "POST");
        assert_eq!(reqs[0]["path"], "/v1/chat/completions");
        assert_eq!(reqs[0]["body"]["model"], "a");
        let stats = get(&ctl("stats"), &[]).await.json();
        assert_eq!(stats["requests"], 3);
        assert_eq!(send(Method::DELETE, &ctl("requests"), "").await.status, 200);
        assert_eq!(get(&ctl("requests"), &[]).await.json(), json!([]));

        // Bad input to the control API is a 400, unknown paths a 404.
        let r = send(Method::PUT, &ctl("behavior"), r#"{"status":"x"}"#).await;
        assert_eq!(r.status, 400);
        assert!(r.json()["error"]["message"].is_string());
        assert_eq!(
            send(Method::PUT, &ctl("behavior"), r#"{"status":7}"#)
                .await
                .status,
            400
        );
        assert_eq!(get(&ctl("nope"), &[]).await.status, 404);
        // An empty PUT resets to defaults.
        assert_eq!(send(Method::PUT, &ctl("behavior"), "").await.status, 200);
        let v = post(&chat, &[], &openai_chat("a", "b")).await.json();
        assert_eq!(v["usage"]["completion_tokens"], 8);
    })
    .await;
}

#[tokio::test]
async fn binary_prints_listening_line_and_stops_on_sigterm() {
    bounded(async {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llmesh-mock"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--output-tokens",
                "3",
                "--record",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            line
        });
        let line = match tokio::time::timeout(Duration::from_secs(10), line).await {
            Ok(l) => l.unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("no listening line");
            }
        };
        let url = line
            .trim()
            .strip_prefix("llmesh-mock listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:"));
        assert!(!url.ends_with(":0"));

        let v = post(
            &format!("{url}/v1/chat/completions"),
            &[],
            &openai_chat("m", "x"),
        )
        .await
        .json();
        assert_eq!(v["choices"][0]["message"]["content"], generated_text(3));
        let reqs = get(&format!("{url}/_mock/requests"), &[]).await.json();
        assert_eq!(reqs.as_array().unwrap().len(), 1);

        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(s) = child.try_wait().unwrap() {
                    return Some(s);
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        let status = status.expect("mock did not exit on SIGTERM");
        assert!(status.success(), "{status:?}");
    })
    .await;
}

#[test]
fn binary_rejects_bad_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_llmesh-mock"))
        .args(["--listen", "127.0.0.1:0", "--behavior", "{\"status\":1}"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("status"));
}

#[test]
fn binary_rejects_out_of_range_fail_percent() {
    let out = Command::new(env!("CARGO_BIN_EXE_llmesh-mock"))
        .args(["--listen", "127.0.0.1:0", "--fail-percent", "150"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fail_percent"));
}
