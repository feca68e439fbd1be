//! The real binaries: `llmesh-mock` and `llmesh-proxy` started as processes,
//! driven over HTTP, their logs read, and stopped with SIGTERM.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use llmesh_tests::*;
use serde_json::{json, Value};

#[tokio::test]
async fn mock_and_proxy_binaries_serve_log_and_stop_cleanly() {
    let (mut mock, mock_url) = spawn_mock(KEY);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), KEY).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, default_policy(&mock_url)).unwrap();
    let ProxyProc {
        proc: mut proxy,
        llm,
        metrics,
    } = spawn_proxy(
        proxy_command(&policy)
            .env("POD_NAMESPACE", "shop")
            .env("POD_NAME", "checkout-7d9f-abcde")
            .env("LLMESH_WORKLOAD", "checkout"),
    );

    // A prompt and an app key that must never appear in the logs.
    let marker = "SECRET-PROMPT-MARKER-5521";
    let http = Http::new();
    let body = openai_chat("gpt-4o-mini", &format!("tell me about {marker}"));
    let (status, headers, resp) = http
        .send(
            http::Method::POST,
            &format!("{llm}/v1/chat/completions"),
            bytes::Bytes::from(body.to_string()),
            &[("authorization", "Bearer app-key-that-must-not-leak")],
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let id = headers["x-request-id"].to_str().unwrap().to_string();
    let resp: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(resp["usage"]["completion_tokens"], 8);

    let (_, _, m) = http.get(&format!("{metrics}/metrics")).await;
    let m = String::from_utf8(m.to_vec()).unwrap();
    assert!(
        m.contains("namespace=\"shop\"") && m.contains("workload=\"checkout\""),
        "{m}"
    );
    assert!(m.contains("pod=\"checkout-7d9f-abcde\""));

    // One JSON access line with the accounting, none with the text.
    let deadline = Instant::now() + Duration::from_secs(5);
    let access: Value = loop {
        let found = proxy
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == json!(id));
        if let Some(v) = found {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no access log line for {id}: {}",
            proxy.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(access["namespace"], "shop");
    assert_eq!(access["pod"], "checkout-7d9f-abcde");
    assert_eq!(access["route"], "openai");
    assert_eq!(access["provider"], "oai");
    assert_eq!(access["model_requested"], "gpt-4o-mini");
    assert_eq!(access["status"], 200);
    assert_eq!(access["output_tokens"], 8);
    assert_eq!(access["tokens_estimated"], false);
    assert!(access["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(access["latency_ms"].as_f64().is_some());

    let status = proxy.terminate();
    assert!(
        status.success(),
        "proxy exit: {status:?}\n{}",
        proxy.output()
    );
    mock.terminate();
    let all = proxy.output();
    for secret in [marker, KEY, "app-key-that-must-not-leak"] {
        assert!(
            !all.contains(secret),
            "{secret} leaked into the proxy's output:\n{all}"
        );
    }
}

#[test]
fn an_invalid_policy_at_start_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: r}\nspec:\n  models: [m]\n  backends: [{provider: ghost}]\n",
    )
    .unwrap();
    let out = proxy_command(&policy).output().unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("spec.backends[0].provider"), "{text}");
    assert!(text.contains("ghost"), "{text}");
}
