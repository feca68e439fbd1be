//! The real binaries: `llmesh-mock` and `llmesh-proxy` started as processes,
//! driven over HTTP, their logs read, and stopped with SIGTERM.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use llmesh_tests::*;
use serde_json::{json, Value};

/// A folder with the provider key and the default policy for the mock at
/// `mock_url` (with `extra` documents appended), and the policy's path.
fn policy_dir(mock_url: &str, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), KEY).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, default_policy(mock_url) + extra).unwrap();
    (dir, policy)
}

#[tokio::test]
async fn mock_and_proxy_binaries_serve_log_and_stop_cleanly() {
    let (mut mock, mock_url) = spawn_mock(KEY);

    let (_dir, policy) = policy_dir(&mock_url, "");
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

#[tokio::test]
async fn the_proxy_binary_follows_a_cluster_from_a_kubeconfig() {
    use llmesh_tests::fake_kube::FakeKube;
    let kube = FakeKube::start().await;
    let mock = llmesh_mock::MockServer::start(llmesh_mock::MockConfig {
        api_key: Some(KEY.to_string()),
        ..llmesh_mock::MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, KEY).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig("team-a")).unwrap();
    kube.apply_yaml(&format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: mock, namespace: team-a}}, spec: {{schema: openai, baseUrl: '{}/v1', credential: {{file: '{}'}}}}}}",
        mock.url(),
        key.display()
    ));
    let route = |model: &str| {
        format!("{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: chat, namespace: team-a}}, spec: {{models: [chat], backends: [{{provider: mock, model: {model}}}]}}}}")
    };
    kube.apply_yaml(&route("first"));

    // No --policy-file and a kubeconfig in the environment: the cluster is
    // the source, and the kubeconfig's namespace is the pod's.
    let mut proxy = Proc::spawn(
        Command::new(bin_path("llmesh-proxy"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("POD_NAMESPACE")
            .env_remove("LLMESH_POLICY_FILE"),
    );
    let line = proxy.wait_line("llmesh-proxy listening");
    let llm = field(&line, "llm").to_string();
    let http = Http::new();
    let body = bytes::Bytes::from(serde_json::to_vec(&openai_chat("chat", "hi")).unwrap());
    let ask = || async {
        let (s, h, _) = http
            .send(
                http::Method::POST,
                &format!("{llm}/v1/chat/completions"),
                body.clone(),
                &[("content-type", "application/json")],
            )
            .await;
        let m = h
            .get("x-llmesh-model")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (s.as_u16(), m)
    };
    let wait_for = |want: &'static str| {
        let ask = &ask;
        async move {
            let t0 = Instant::now();
            loop {
                if ask().await == (200, want.to_string()) {
                    return;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "never routed to {want}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for("first").await;
    kube.apply_yaml(&route("second"));
    wait_for("second").await;
    assert!(
        proxy.output().contains("policy source: kubernetes"),
        "{}",
        proxy.output()
    );
    assert!(proxy.terminate().success());
}

/// Secrets and personal data sent through a real sidecar with a data
/// policy, streamed and not, blocked and redacted, must not appear anywhere
/// in its logs (debug level included).
#[tokio::test]
async fn no_secret_or_personal_data_reaches_the_logs() {
    let (mut mock, mock_url) = spawn_mock(KEY);
    let data_policy = "---\napiVersion: llmesh.io/v1alpha1\nkind: LLMDataPolicy\nmetadata: {name: pii}\nspec:\n  rules:\n    - {class: email, action: redact}\n    - {class: secret, action: block}\n    - {class: us-ssn, action: mask}\n";
    let (_dir, policy) = policy_dir(&mock_url, data_policy);
    let ProxyProc {
        proc: mut proxy,
        llm,
        ..
    } = spawn_proxy(proxy_command(&policy).args(["--log", "debug"]));
    let samples = [
        "jane.roe@example.com",
        concat!("AKIA", "IOSFODNN7EXAMPLE"),
        "078-05-1120",
        "PROMPT-MARKER-8841",
        "app-key-never-logged",
    ];
    let http = Http::new();
    let prompt = samples[..4].join(" and ");
    for (path, mut body) in [
        ("/v1/chat/completions", openai_chat("gpt-4o-mini", &prompt)),
        (
            "/v1/chat/completions",
            openai_chat(
                "gpt-4o-mini",
                "mail jane.roe@example.com about 078-05-1120 PROMPT-MARKER-8841",
            ),
        ),
        (
            "/v1/messages",
            anthropic_msg(
                "claude-sonnet-4-5",
                "mail jane.roe@example.com PROMPT-MARKER-8841",
            ),
        ),
    ] {
        for stream in [false, true] {
            body["stream"] = json!(stream);
            let (s, _, _) = http
                .send(
                    http::Method::POST,
                    &format!("{llm}{path}"),
                    bytes::Bytes::from(body.to_string()),
                    &[
                        ("authorization", "Bearer app-key-never-logged"),
                        ("content-type", "application/json"),
                    ],
                )
                .await;
            assert!(s == 200 || s == 400, "{path}: {s}");
        }
    }
    proxy.terminate();
    mock.terminate();
    let logs = proxy.output();
    assert!(
        logs.contains("data policy applied"),
        "no audit line: {logs}"
    );
    for s in samples.iter().chain([&KEY]) {
        assert!(!logs.contains(s), "{s} leaked into the logs:\n{logs}");
    }
}

#[tokio::test]
async fn text_logs_and_a_log_level_changed_at_runtime() {
    let (mut mock, mock_url) = spawn_mock(KEY);
    let (_dir, policy) = policy_dir(&mock_url, "");
    let ProxyProc {
        proc: mut proxy,
        llm,
        ..
    } = spawn_proxy(proxy_command(&policy).args(["--log-format", "text"]));
    let line = proxy.wait_line("llmesh-proxy listening ");
    let admin = field(&line, "admin").to_string();
    let http = Http::new();
    let chat = || {
        let http = http.clone();
        let url = format!("{llm}/v1/chat/completions");
        async move {
            let body = bytes::Bytes::from(openai_chat("gpt-4o-mini", "hi").to_string());
            http.send(
                http::Method::POST,
                &url,
                body,
                &[("content-type", "application/json")],
            )
            .await
            .0
        }
    };
    assert_eq!(chat().await, 200);
    let (s, _, b) = http.get(&format!("{admin}/logging")).await;
    assert_eq!(
        (s.as_u16(), String::from_utf8_lossy(&b).trim()),
        (200, "level=info")
    );
    // Quiet it down: the access line (info) is no longer written.
    let (s, _, _) = http
        .send(
            http::Method::PUT,
            &format!("{admin}/logging?level=warn"),
            bytes::Bytes::new(),
            &[],
        )
        .await;
    assert_eq!(s.as_u16(), 200);
    let (s, _, _) = http
        .send(
            http::Method::PUT,
            &format!("{admin}/logging?level=llmesh%3Dloud"),
            bytes::Bytes::new(),
            &[],
        )
        .await;
    assert_eq!(s.as_u16(), 400);
    // Log lines are written by a background thread: wait for the first
    // request's line before counting.
    for _ in 0..250 {
        if proxy.output().contains(" request ") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = proxy.output().matches(" request").count();
    assert_eq!(before, 1, "{}", proxy.output());
    assert_eq!(chat().await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let out = proxy.output();
    assert_eq!(out.matches(" request").count(), before, "{out}");
    // Text, not JSON.
    assert!(
        out.lines()
            .any(|l| l.contains("INFO") && !l.trim_start().starts_with('{')),
        "{out}"
    );
    proxy.terminate();
    mock.terminate();
}

/// Access lines leave the request path through a background writer: the
/// lines of requests served right before SIGTERM still reach stdout before
/// the process exits, and so does its last line.
#[tokio::test]
async fn access_lines_written_just_before_sigterm_reach_stdout() {
    let (mut mock, mock_url) = spawn_mock(KEY);
    let (_dir, policy) = policy_dir(&mock_url, "");
    let ProxyProc {
        proc: mut proxy,
        llm,
        ..
    } = spawn_proxy(&mut proxy_command(&policy));
    let http = Http::new();
    let body = bytes::Bytes::from(openai_chat("gpt-4o-mini", "hello").to_string());
    let url = format!("{llm}/v1/chat/completions");
    let sends = (0..40).map(|_| http.send(http::Method::POST, &url, body.clone(), &[]));
    let mut ids = Vec::new();
    for (status, headers, _) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 200);
        ids.push(headers["x-request-id"].to_str().unwrap().to_string());
    }
    // At once: the lines may still be queued for the writer thread.
    assert!(proxy.terminate().success(), "{}", proxy.output());
    mock.terminate();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = proxy
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        let logged = |id: &String| lines.iter().any(|v| v["request_id"] == json!(id));
        let missing = ids.iter().filter(|id| !logged(id)).count();
        let last = lines
            .iter()
            .any(|v| v["message"] == "shutdown signal received, draining");
        if missing == 0 && last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of 40 access lines and the shutdown line ({last}) missing:\n{}",
            proxy.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn every_refusal_line_names_its_route_and_model_once_known() {
    let (mut mock, mock_url) = spawn_mock(KEY);
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!(
        "---
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {{name: pii}}
spec:
  rules: [{{class: secret, action: block}}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {{name: tight}}
spec:
  models: [limited]
  limits: {{requestsPerMinute: 1}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: limited}}
spec:
  models: [limited]
  backends: [{{provider: oai, model: gpt-4o-mini}}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: gone}}
spec:
  schema: openai
  baseUrl: http://127.0.0.1:{gone}/v1
  credential: {{file: key.txt}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: down}}
spec:
  models: [down]
  backends: [{{provider: gone}}]
  retries: {{attempts: 0}}
  circuitBreaker: {{consecutiveFailures: 1, openFor: 60s}}
"
    );
    let (_dir, policy) = policy_dir(&mock_url, &extra);
    let ProxyProc {
        proc: mut proxy,
        llm,
        ..
    } = spawn_proxy(&mut proxy_command(&policy));
    inside_minute(5.0).await;
    let http = Http::new();
    let url = format!("{llm}/v1/chat/completions");
    let send = |body: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let (s, h, _) = http
                .send(http::Method::POST, &url, bytes::Bytes::from(body), &[])
                .await;
            (s.as_u16(), h["x-request-id"].to_str().unwrap().to_string())
        }
    };
    let chat = |model: &str, text: &str| openai_chat(model, text).to_string();
    let aws_key = concat!("AKIA", "IOSFODNN7EXAMPLE");
    let mut want = Vec::new();
    // (status, route, model_requested, error_type) of each refusal.
    let (s, id) = send(r#"{"model": 5, "messages": []}"#.to_string()).await;
    want.push((id, s, 400, "", "", "invalid_request"));
    let (s, id) = send(chat("no-such-model", "hi")).await;
    want.push((id, s, 404, "", "no-such-model", "model_not_found"));
    let (s, id) = send(chat("gpt-4o-mini", &format!("key {aws_key}"))).await;
    want.push((id, s, 400, "openai", "gpt-4o-mini", "data_policy_blocked"));
    assert_eq!(send(chat("limited", "one")).await.0, 200);
    let (s, id) = send(chat("limited", "two")).await;
    want.push((id, s, 429, "limited", "limited", "quota_exceeded"));
    assert_eq!(send(chat("down", "opens the breaker")).await.0, 502);
    let (s, id) = send(chat("down", "hi")).await;
    want.push((id, s, 503, "down", "down", "no_healthy_backend"));

    let deadline = Instant::now() + Duration::from_secs(5);
    for (id, status, want_status, route, model, error_type) in want {
        assert_eq!(status, want_status, "{error_type}");
        let line = loop {
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
            assert!(Instant::now() < deadline, "no line for {error_type}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let f = |k: &str| line[k].as_str().unwrap_or("?").to_string();
        assert_eq!(f("message"), "request rejected", "{line}");
        assert_eq!(
            (f("route"), f("model_requested"), f("error_type")),
            (route.to_string(), model.to_string(), error_type.to_string()),
            "{line}"
        );
        assert_eq!(line["status"], json!(want_status), "{line}");
    }
    assert!(proxy.terminate().success());
    mock.terminate();
}
