//! Every call an app's SDKs make, through the real `llmesh-proxy` in front
//! of the real `llmesh-mock` (issue 14): the official `openai` and
//! `anthropic` Python SDKs (tests/sdk/calls.py) for the Responses API on a
//! native and on translated backends, completions, count_tokens, the
//! governed pass-through (audio, files, batches, moderations, message
//! batches) and realtime; then, with requests as the SDKs send them, what
//! a user sees on bad input: unknown items, foreign response ids, paths
//! nobody allowed, uploads over the limit, refused upgrades, and the data
//! policy on pass-through bodies and on what the sidecar stores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use llmesh_mock::generated_text;
use llmesh_tests::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

/// Models of the policy: native Responses, chat-only, Anthropic.
const NATIVE: &str = "gpt-4o-mini";
const TRANSLATED: &str = "llama-chat";
const CLAUDE: &str = "claude-sonnet-4-5";
const EMAIL: &str = "jane.roe@example.com";
/// Anything the app sends as its own key; the provider must never see it.
const APP_KEY: &str = "sk-app-key-that-must-not-travel";

/// The policy of every test. `RULES` is the data policy's rules,
/// `OAI_CLEARANCE` the clearance of provider `oai`.
const POLICY: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: oai}
spec:
  schema: openai
  baseUrl: MOCK/v1
  credential: {file: key.txt}
  clearance: [OAI_CLEARANCE]
  models:
    - name: gpt-4o-mini
      pricing: {input: 1.0, output: 2.0, batch: 0.5}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: chatonly}
spec:
  schema: openai-compatible
  baseUrl: MOCK/v1
  credential: {file: key.txt}
  models:
    - name: llama-chat
      pricing: {input: 0.5, output: 1.0, batch: 0.5}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: ant}
spec:
  schema: anthropic
  baseUrl: MOCK/v1
  credential: {file: key.txt}
  models:
    - name: claude-sonnet-4-5
      pricing: {input: 3.0, output: 15.0, batch: 0.5}
---
# Its base URL is a path the mock does not serve: upgrades get a 404.
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: norealtime}
spec:
  schema: openai
  baseUrl: MOCK/nowhere
  credential: {file: key.txt}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: native}
spec:
  models: [gpt-4o-mini]
  backends: [{provider: oai}]
  timeouts: {firstByte: 10s, idle: 10s, total: 30s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: translated}
spec:
  models: [llama-chat]
  backends: [{provider: chatonly}]
  timeouts: {firstByte: 10s, idle: 10s, total: 30s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: claude}
spec:
  models: [claude-sonnet-4-5]
  backends: [{provider: ant}]
  timeouts: {firstByte: 10s, idle: 10s, total: 30s}
---
# OpenAI's other endpoints go to oai.
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: openai-passthrough}
spec:
  models: [openai-passthrough]
  backends: [{provider: oai}]
  passthrough:
    paths: ["/v1/files*", "/v1/batches*", "/v1/audio/*", "/v1/realtime", "/v1/moderations"]
    provider: oai
---
# Anthropic's message batches go to ant.
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: anthropic-passthrough}
spec:
  models: [anthropic-passthrough]
  backends: [{provider: ant}]
  passthrough:
    paths: ["/v1/messages/batches*"]
    provider: ant
---
# Chosen by the model a form or the realtime URL names.
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: broken-realtime}
spec:
  models: [gpt-realtime-broken]
  backends: [{provider: norealtime}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: uncleared-audio}
spec:
  models: [whisper-uncleared]
  backends: [{provider: chatonly}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMDataPolicy
metadata: {name: pii}
spec:
  rules:
RULES
"#;

const REDACT_EMAIL: &str = "    - {class: email, action: redact}";

/// The mock binary recording requests, on an ephemeral port, and its URL.
fn spawn_recording_mock() -> (Proc, String) {
    let mock = Proc::spawn(Command::new(bin_path("llmesh-mock")).args([
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        KEY,
        "--record",
    ]));
    let line = mock.wait_line("llmesh-mock listening on ");
    let url = line["llmesh-mock listening on ".len()..].trim().to_string();
    (mock, url)
}

/// A recording mock and a sidecar in front of it, both real processes.
struct Stack {
    _mock: Proc,
    mock: String,
    proxy: ProxyProc,
    dir: tempfile::TempDir,
    http: Http,
}

impl Stack {
    /// The policy with data rules `rules` (and `oai` cleared for
    /// `oai_clearance`); `args` go to the proxy.
    fn start_with(rules: &str, oai_clearance: &str, args: &[&str]) -> Stack {
        Stack::start_full(rules, oai_clearance, args, "")
    }

    /// As [`start_with`](Self::start_with), with more documents after the
    /// policy.
    fn start_full(rules: &str, oai_clearance: &str, args: &[&str], more: &str) -> Stack {
        let (mock_proc, mock) = spawn_recording_mock();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.txt"), KEY).unwrap();
        let policy = POLICY
            .replace("MOCK", &mock)
            .replace("RULES", rules)
            .replace("OAI_CLEARANCE", oai_clearance)
            + more;
        std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
        let proxy = sidecar(dir.path(), "team-a", args);
        Stack {
            _mock: mock_proc,
            mock,
            proxy,
            dir,
            http: Http::new(),
        }
    }

    fn start(args: &[&str]) -> Stack {
        Stack::start_with(REDACT_EMAIL, "", args)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.llm)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.http.send(method, &self.url(path), body, headers).await
    }

    async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let (s, _, b) = self
            .send(Method::POST, path, Bytes::from(body.to_string()), headers)
            .await;
        (s, json_of(&b))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.send(Method::GET, path, Bytes::new(), &[]).await;
        (s, json_of(&b))
    }

    async fn metrics(&self) -> String {
        let (s, _, b) = self
            .http
            .get(&format!("{}/metrics", self.proxy.metrics))
            .await;
        assert_eq!(s, StatusCode::OK);
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// Polls /metrics until `ok` holds (accounting may land just after a
    /// body ends), up to 10 s.
    async fn metrics_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let m = self.metrics().await;
            if ok(&m) {
                return m;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{what} never held:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the mock received, oldest first.
    async fn upstream(&self) -> Vec<Value> {
        let (s, _, b) = self
            .http
            .get(&format!("{}/_mock/requests", self.mock))
            .await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_slice(&b).unwrap()
    }

    async fn forget_upstream(&self) {
        let url = format!("{}/_mock/requests", self.mock);
        let (s, _, _) = self
            .http
            .send(Method::DELETE, &url, Bytes::new(), &[])
            .await;
        assert_eq!(s, StatusCode::OK);
    }

    /// The mock's own view of a path (with the provider key).
    async fn at_mock(&self, path: &str) -> Value {
        let auth = format!("Bearer {KEY}");
        let (s, _, b) = self
            .http
            .send(
                Method::GET,
                &format!("{}{path}", self.mock),
                Bytes::new(),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        json_of(&b)
    }
}

/// Another sidecar on the policy in `dir`, in namespace `namespace`.
fn sidecar(dir: &Path, namespace: &str, args: &[&str]) -> ProxyProc {
    spawn_proxy(
        proxy_command(&dir.join("policy.yaml"))
            .args(args)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", format!("{namespace}-app-0"))
            .env("LLMESH_WORKLOAD", "app")
            .env_remove("LLMESH_QUOTA_STORE"),
    )
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(b)))
}

/// The header values of every request the mock received, as one text.
fn upstream_headers(reqs: &[Value]) -> String {
    reqs.iter()
        .flat_map(|r| r["headers"].as_array().cloned().unwrap_or_default())
        .map(|h| format!("{}: {}", h[0].as_str().unwrap(), h[1].as_str().unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn header_of<'a>(req: &'a Value, name: &str) -> Option<&'a str> {
    req["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

fn close_to(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + b.abs() * 1e-9
}

/// Runs tests/sdk/calls.py against the stack and returns its JSON line.
async fn run_sdk_script(stack: &Stack) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/calls.py");
    let mut cmd = sdk_command(&stack.proxy.llm);
    cmd.arg(&script);
    let mut py = Proc::spawn(&mut cmd);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = py.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "calls.py did not finish in 120 s:\n{}",
            py.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The reader threads may still be draining the pipes.
    let line = loop {
        let found = py
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.starts_with("{\"sdk\""))
            .cloned();
        if found.is_some() || !status.success() || t0.elapsed() > Duration::from_secs(125) {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let output = py.output();
    let hint = if output.contains("No module named") {
        " (the official SDKs are missing: run `make deps`)"
    } else {
        ""
    };
    assert!(
        status.success(),
        "calls.py failed ({status}){hint}:\n{output}\n--- sidecar ---\n{}",
        stack.proxy.proc.output()
    );
    serde_json::from_str(&line.unwrap_or_else(|| panic!("no result line:\n{}", py.output())))
        .unwrap()
}

// ---------------------------------------------------------------------------
// 1. The official SDKs.
// ---------------------------------------------------------------------------

/// One Responses API conversation as calls.py reports it: create,
/// retrieve, input items, a follow-up, both kinds of streams, a function
/// call round trip, `store: false` and delete.
fn assert_responses(kind: &str, r: &Value, provider: &str) {
    let text = generated_text(8);
    assert_eq!(r["provider"], provider, "{kind}: {r}");
    assert_eq!(r["status"], "completed", "{kind}");
    assert_eq!(r["text"], text, "{kind}");
    // "be brief" + "hello there friend".
    assert_eq!(r["usage"], json!([5, 8]), "{kind}");
    assert_eq!(
        r["retrieved"],
        json!({"id": r["id"], "text": text}),
        "{kind}"
    );
    assert_eq!(r["input_items"], json!(["hello there friend"]), "{kind}");

    // The follow-up is answered with the whole conversation in view: its
    // 3 words, plus the first turn's input (3) and answer (8).
    let f = &r["follow_up"];
    assert_eq!(f["previous"], r["id"], "{kind}");
    assert_eq!(f["text"], text, "{kind}");
    assert_eq!(f["usage"], json!([14, 8]), "{kind}: {f}");
    assert!(f["usage"][0].as_u64() > r["usage"][0].as_u64());

    for (name, want_usage) in [("stream", json!([5, 8])), ("create_stream", json!([3, 8]))] {
        let s = &r[name];
        let types: Vec<&str> = s["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(
            types.first(),
            Some(&"response.created"),
            "{kind} {name}: {types:?}"
        );
        assert_eq!(types.last(), Some(&"response.completed"), "{kind} {name}");
        for t in [
            "response.output_item.added",
            "response.output_text.done",
            "response.output_item.done",
        ] {
            assert!(types.contains(&t), "{kind} {name}: no {t} in {types:?}");
        }
        assert_eq!(
            types
                .iter()
                .filter(|t| **t == "response.output_text.delta")
                .count(),
            8,
            "{kind} {name}: one delta per word"
        );
        assert_eq!(s["text"], text, "{kind} {name}");
        let usage = if name == "stream" {
            &s["usage"]
        } else {
            &s["completed_usage"]
        };
        assert_eq!(usage, &want_usage, "{kind} {name}");
    }
    assert_eq!(r["stream"]["final_text"], text, "{kind}");
    assert_eq!(
        r["create_stream_retrieved"], true,
        "{kind}: a streamed response is stored"
    );

    assert_eq!(
        r["tool_call"],
        json!([{"name": "get_weather", "arguments": {"city": "Paris"}}]),
        "{kind}"
    );
    let a = &r["tool_answer"];
    assert_eq!(a["types"], json!(["message"]), "{kind}: {a}");
    assert_eq!(a["text"], text, "{kind}");
    // The question (6 words) and the tool's output (4) were both in view.
    assert_eq!(a["input_tokens"], 10, "{kind}");
}

#[tokio::test]
async fn the_official_sdks_work_through_the_sidecar() {
    let stack = Stack::start(&[]);
    let out = run_sdk_script(&stack).await;
    let text = generated_text(8);

    // Responses API, native and translated (chat-only and Anthropic).
    let native = &out["responses"]["native"];
    let translated = &out["responses"]["translated"];
    assert_responses("native", native, "oai");
    assert_responses("translated", translated, "chatonly");
    for (kind, r) in [("native", native), ("translated", translated)] {
        assert_eq!(
            r["unstored_status"], 404,
            "{kind}: store=false is not remembered"
        );
        assert_eq!(r["deleted"], true, "{kind}");
        assert_eq!(r["after_delete_status"], 404, "{kind}: deleted means gone");
    }
    let claude = &out["responses_claude"];
    assert_eq!(claude["provider"], "ant");
    assert_eq!(claude["text"], text);
    assert_eq!(claude["follow_up"]["usage"], json!([14, 8]));
    assert_eq!(claude["stream"]["text"], text);
    assert_eq!(claude["tool_call"][0]["name"], "get_weather");
    assert_eq!(claude["tool_answer"]["input_tokens"], 10);

    // What the providers got: native calls as the app made them (the
    // follow-up by id), translated ones as one whole conversation.
    let reqs = stack.upstream().await;
    let native_follow = reqs
        .iter()
        .find(|r| r["path"] == "/v1/responses" && r["body"]["input"] == "and once more")
        .expect("the native follow-up reached oai");
    assert_eq!(native_follow["body"]["previous_response_id"], native["id"]);
    let chat_follow = reqs
        .iter()
        .find(|r| {
            r["path"] == "/v1/chat/completions"
                && r["body"]["model"] == TRANSLATED
                && r["body"]["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .is_some_and(|m| m["content"] == "and once more")
        })
        .expect("the translated follow-up reached chatonly");
    let msgs = chat_follow["body"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{chat_follow}");
    assert_eq!(msgs[0]["content"], "hello there friend");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], text);
    assert!(
        !reqs.iter().any(|r| r["path"] == "/v1/chat/completions"
            && r["body"].get("previous_response_id").is_some()),
        "a translated follow-up never carries the sidecar's id upstream"
    );
    let claude_follow = reqs
        .iter()
        .filter(|r| r["path"] == "/v1/messages" && r["body"]["model"] == CLAUDE)
        .find(|r| {
            r["body"]["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| m["content"] == "and once more")
        })
        .expect("the follow-up translated to Anthropic");
    assert_eq!(
        claude_follow["body"]["messages"].as_array().unwrap().len(),
        3
    );
    // The app's placeholder key never travelled; the provider's did.
    let headers = upstream_headers(&reqs);
    assert!(!headers.contains("unused"), "{headers}");
    for r in &reqs {
        let auth = header_of(r, "authorization").or_else(|| header_of(r, "x-api-key"));
        assert!(
            auth == Some(&format!("Bearer {KEY}")) || auth == Some(KEY),
            "{} {} went with {auth:?}",
            r["method"],
            r["path"]
        );
    }

    // Completions, moderations, models, audio.
    let c = &out["completions"];
    assert_eq!(c["text"], text);
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["usage"], json!([2, 8]));
    assert_eq!(c["stream_text"], text);
    assert_eq!(c["stream_usage"], json!([2, 8]));
    assert_eq!(
        out["moderations"],
        json!({"results": 2, "flagged": [false, false]})
    );
    assert_eq!(out["model"], json!({"id": NATIVE, "owned_by": "oai"}));
    assert_eq!(out["unknown_model_status"], 404);
    assert_eq!(
        out["transcription"]["text"],
        format!("transcribed 3076 bytes with whisper-1: {text}")
    );

    // The batch: uploaded, run, its output downloaded through the sidecar.
    let b = &out["batch"];
    assert_eq!(b["status"], "completed");
    assert_eq!(b["counts"], json!([3, 0]));
    assert_eq!(b["custom_ids"], json!(["req-0", "req-1", "req-2"]));
    assert_eq!(b["tokens"], json!({"input": 12, "output": 24}));
    let uploaded = stack
        .at_mock(&format!("/v1/files/{}", b["file_id"].as_str().unwrap()))
        .await;
    assert_eq!(
        uploaded["bytes"], b["file_bytes"],
        "the upload arrived whole"
    );

    // Anthropic: count_tokens forwarded for Claude, estimated for others.
    let a = &out["anthropic"];
    assert_eq!(
        a["count_claude"],
        json!({"input_tokens": 3, "estimate": null})
    );
    assert_eq!(a["count_other"]["estimate"], "estimate");
    assert!(
        a["count_other"]["input_tokens"].as_u64().unwrap() > 0,
        "{a}"
    );
    let counted: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["path"] == "/v1/messages/count_tokens")
        .collect();
    assert_eq!(counted.len(), 1, "only Claude's count went upstream");
    assert_eq!(counted[0]["body"]["model"], CLAUDE);
    assert_eq!(a["message"]["text"], text);
    assert_eq!(a["message"]["stop_reason"], "end_turn");
    assert_eq!(a["message"]["usage"], json!([3, 8]));
    assert_eq!(a["stream_text"], text);
    let mb = &a["batch"];
    assert_eq!(mb["status"], "ended");
    assert!(
        mb["results_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/v1/messages/batches/", stack.proxy.llm)),
        "results_url points at the sidecar, so the SDK downloads through it: {mb}"
    );
    assert_eq!(
        mb["results"],
        json!([["msg-0", "succeeded"], ["msg-1", "succeeded"]])
    );
    assert_eq!(mb["tokens"], json!({"input": 6, "output": 16}));

    // Realtime, with the SDK's own client.
    assert_eq!(
        out["realtime"],
        json!({"first": "session.created", "model": "gpt-realtime", "echo": "session.update", "echo_instructions": "hi"})
    );

    // The sidecar's accounting agrees with what the SDKs were told.
    let m = stack
        .metrics_until("batch results counted", |m| {
            metric_sum(m, "llmesh_batch_results_total", &[]) >= 5.0
                && metric_value(m, "llmesh_upgrades_active", &[]) == Some(0.0)
        })
        .await;
    let usage = &out["usage"];
    let calls = &out["responses_calls"];
    for (model, route) in [
        (NATIVE, "native"),
        (TRANSLATED, "translated"),
        (CLAUDE, "claude"),
    ] {
        for kind in ["input", "output"] {
            assert_eq!(
                metric_value(
                    &m,
                    "llmesh_tokens_total",
                    &[("route", route), ("model", model), ("type", kind)]
                ),
                usage[model][kind].as_f64(),
                "{route} {kind} tokens"
            );
        }
    }
    assert_eq!(calls, &json!({NATIVE: 7, TRANSLATED: 7, CLAUDE: 7}));
    // Responses calls are chat operations in the GenAI conventions.
    let ops = |route: &str, op: &str| {
        metric_sum(
            &m,
            "gen_ai_client_operation_duration_seconds_count",
            &[("route", route), ("gen_ai_operation_name", op)],
        )
    };
    assert_eq!(ops("translated", "chat"), 7.0);
    assert_eq!(ops("native", "chat"), 7.0);
    assert_eq!(ops("native", "text_completion"), 2.0);
    // 7 Responses calls, messages.create and messages.stream.
    assert_eq!(ops("claude", "chat"), 9.0);
    let ok = |route: &str, provider: &str| {
        metric_sum(
            &m,
            "llmesh_requests_total",
            &[("route", route), ("provider", provider), ("code", "200")],
        )
    };
    assert_eq!(ok("translated", "chatonly"), 7.0);
    assert_eq!(ok("native", "oai"), 9.0);
    assert_eq!(
        metric_value(
            &m,
            "gen_ai_client_operation_duration_seconds_count",
            &[
                ("route", "translated"),
                ("gen_ai_provider_name", "openai_compatible")
            ]
        ),
        Some(7.0)
    );

    // Batch output, accounted as it was downloaded, at the batch price.
    let batch_label = [
        ("route", "openai-passthrough"),
        ("provider", "oai"),
        ("model", NATIVE),
    ];
    assert_eq!(
        metric_value(&m, "llmesh_batch_results_total", &batch_label),
        Some(3.0)
    );
    let tokens = |route: &str, kind: &str| {
        metric_value(
            &m,
            "llmesh_tokens_total",
            &[("route", route), ("type", kind)],
        )
    };
    assert_eq!(tokens("openai-passthrough", "input"), Some(12.0));
    assert_eq!(tokens("openai-passthrough", "output"), Some(24.0));
    let cost = metric_value(&m, "llmesh_cost_usd_total", &batch_label).unwrap();
    assert!(
        close_to(cost, (12.0 * 1.0 + 24.0 * 2.0) / 1e6 * 0.5),
        "{cost}"
    );
    let ant_label = [
        ("route", "anthropic-passthrough"),
        ("provider", "ant"),
        ("model", CLAUDE),
    ];
    assert_eq!(
        metric_value(&m, "llmesh_batch_results_total", &ant_label),
        Some(2.0)
    );
    assert_eq!(tokens("anthropic-passthrough", "input"), Some(6.0));
    assert_eq!(tokens("anthropic-passthrough", "output"), Some(16.0));
    let cost = metric_value(&m, "llmesh_cost_usd_total", &ant_label).unwrap();
    assert!(
        close_to(cost, (6.0 * 3.0 + 16.0 * 15.0) / 1e6 * 0.5),
        "{cost}"
    );

    // Pass-through calls by endpoint, ids never in the labels.
    for (endpoint, provider) in [
        ("/v1/audio/transcriptions", "oai"),
        ("/v1/files", "oai"),
        ("/v1/batches", "oai"),
        ("/v1/batches/{id}", "oai"),
        ("/v1/files/{id}/content", "oai"),
        ("/v1/moderations", "oai"),
        ("/v1/messages/batches", "ant"),
        ("/v1/messages/batches/{id}", "ant"),
        ("/v1/messages/batches/{id}/results", "ant"),
    ] {
        assert_eq!(
            metric_value(
                &m,
                "llmesh_passthrough_requests_total",
                &[
                    ("endpoint", endpoint),
                    ("provider", provider),
                    ("code", "200")
                ]
            ),
            Some(1.0),
            "{endpoint}"
        );
    }
    let leaked: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("llmesh_passthrough_requests_total{"))
        .filter(|l| l.contains("file-") || l.contains("batch_") || l.contains("msgbatch"))
        .collect();
    assert!(leaked.is_empty(), "ids in labels: {leaked:?}");
    assert_eq!(
        metric_value(
            &m,
            "llmesh_upgrades_total",
            &[
                ("endpoint", "/v1/realtime"),
                ("provider", "oai"),
                ("outcome", "open")
            ]
        ),
        Some(1.0)
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no message in 10 s")
        .expect("closed")
        .unwrap()
}

#[tokio::test]
async fn a_websocket_session_is_relayed_with_the_providers_key_and_counted() {
    let stack = Stack::start(&[]);
    let url = format!(
        "{}/v1/realtime?model=gpt-realtime",
        stack.proxy.llm.replacen("http://", "ws://", 1)
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {APP_KEY}").parse().unwrap(),
    );
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.headers()["x-llmesh-provider"], "oai");
    let hello: Value = serde_json::from_str(next(&mut ws).await.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "session.created");
    assert_eq!(hello["session"]["model"], "gpt-realtime");
    stack
        .metrics_until("one open connection", |m| {
            metric_value(m, "llmesh_upgrades_active", &[]) == Some(1.0)
        })
        .await;

    let event = json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}).to_string();
    ws.send(Message::text(event.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(event));
    ws.send(Message::binary(vec![1u8, 2, 3, 250]))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![1u8, 2, 3, 250]));
    ws.close(None).await.unwrap();
    // Until the close comes back, then the client lets go.
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if m.is_close() {
            break;
        }
    }
    drop(ws);
    let m = stack
        .metrics_until("the connection is closed", |m| {
            metric_value(m, "llmesh_upgrades_active", &[]) == Some(0.0)
        })
        .await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_upgrades_total",
            &[
                ("endpoint", "/v1/realtime"),
                ("provider", "oai"),
                ("outcome", "open")
            ]
        ),
        Some(1.0)
    );
    let reqs = stack.upstream().await;
    let handshake = reqs
        .iter()
        .find(|r| r["path"] == "/v1/realtime?model=gpt-realtime")
        .expect("the handshake reached the mock");
    assert_eq!(
        header_of(handshake, "authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    assert!(!upstream_headers(&reqs).contains(APP_KEY));
}

// ---------------------------------------------------------------------------
// 2. Bad input, as a user meets it.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_input_item_for_a_translated_backend_is_a_400_naming_the_field() {
    let stack = Stack::start(&[]);
    for model in [TRANSLATED, CLAUDE] {
        for stream in [false, true] {
            let body = json!({
                "model": model,
                "stream": stream,
                "input": [
                    {"role": "user", "content": "look at this"},
                    {"type": "hologram", "data": "x"}
                ]
            });
            let (s, e) = stack.post("/v1/responses", &body, &[]).await;
            assert_eq!(s, 400, "{model} stream={stream}: {e}");
            let msg = e["error"]["message"].as_str().unwrap();
            assert!(msg.contains("input[1].type"), "{msg}");
            assert!(msg.contains("hologram"), "{msg}");
            assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
            assert_eq!(e["error"]["code"], "invalid_request", "{e}");
        }
        // A content part the upstream cannot take, named by its path.
        let body = json!({"model": model, "input": [
            {"role": "user", "content": [{"type": "input_hologram", "data": "x"}]}
        ]});
        let (s, e) = stack.post("/v1/responses", &body, &[]).await;
        assert_eq!(s, 400, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("input[0].content[0].type"),
            "{e}"
        );
    }
    assert_eq!(
        stack.upstream().await,
        Vec::<Value>::new(),
        "nothing went upstream"
    );
}

#[tokio::test]
async fn a_response_id_from_another_namespace_is_not_found_and_nothing_leaks() {
    let stack = Stack::start(&[]);
    let marker = "ORCHID-7731 is the code word";
    let mut ids = Vec::new();
    for model in [NATIVE, TRANSLATED] {
        let (s, r) = stack
            .post(
                "/v1/responses",
                &json!({"model": model, "input": marker}),
                &[],
            )
            .await;
        assert_eq!(s, 200, "{r}");
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    // The same policy and provider, another namespace: its store shares
    // nothing with team-a's.
    let other = sidecar(stack.dir.path(), "team-b", &[]);
    stack.forget_upstream().await;
    let http = &stack.http;
    for id in &ids {
        let body = json!({"model": NATIVE, "input": "what was the code word?", "previous_response_id": id});
        for model in [NATIVE, TRANSLATED] {
            let mut body = body.clone();
            body["model"] = json!(model);
            let (s, _, b) = http
                .send(
                    Method::POST,
                    &format!("{}/v1/responses", other.llm),
                    Bytes::from(body.to_string()),
                    &[],
                )
                .await;
            assert_eq!(s, 404, "{}", String::from_utf8_lossy(&b));
            let e = json_of(&b);
            assert_eq!(e["error"]["code"], "not_found", "{e}");
            assert_eq!(e["error"]["param"], "previous_response_id", "{e}");
            assert!(e["error"]["message"]
                .as_str()
                .unwrap()
                .contains(id.as_str()));
            let text = String::from_utf8_lossy(&b);
            assert!(
                !text.contains("ORCHID") && !text.contains("lorem"),
                "{text}"
            );
        }
        for (method, path) in [
            (Method::GET, format!("/v1/responses/{id}")),
            (Method::GET, format!("/v1/responses/{id}/input_items")),
            (Method::DELETE, format!("/v1/responses/{id}")),
        ] {
            let (s, _, b) = http
                .send(
                    method.clone(),
                    &format!("{}{path}", other.llm),
                    Bytes::new(),
                    &[],
                )
                .await;
            assert_eq!(s, 404, "{method} {path}: {}", String::from_utf8_lossy(&b));
            assert_eq!(json_of(&b)["error"]["code"], "not_found");
            assert!(!String::from_utf8_lossy(&b).contains("ORCHID"));
        }
    }
    assert_eq!(
        stack.upstream().await,
        Vec::<Value>::new(),
        "an unknown id is never forwarded"
    );
    // team-a still has both (team-b's DELETE reached nothing).
    for id in &ids {
        let (s, r) = stack.get(&format!("/v1/responses/{id}")).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["id"], json!(id));
    }
}

#[tokio::test]
async fn a_path_no_route_allows_is_a_404_that_says_how_to_allow_it() {
    let stack = Stack::start(&[]);
    // No model, no pass-through route for the path.
    let (s, e) = stack
        .post(
            "/v1/vector_stores",
            &json!({"name": "kb"}),
            &[("authorization", "Bearer x")],
        )
        .await;
    assert_eq!(s, 404, "{e}");
    assert_eq!(e["error"]["code"], "unsupported_endpoint");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("spec.passthrough"), "{msg}");
    assert!(msg.contains("/v1/vector_stores"), "{msg}");
    // A model no route serves does not open the path either.
    let (s, e) = stack
        .post(
            "/v1/images/generations",
            &json!({"model": "gpt-image-1", "prompt": "a cat"}),
            &[],
        )
        .await;
    assert_eq!(s, 404, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("spec.passthrough"));
    let (s, _, b) = stack
        .send(Method::GET, "/v1/fine_tuning/jobs", Bytes::new(), &[])
        .await;
    assert_eq!(s, 404);
    assert_eq!(json_of(&b)["error"]["code"], "unsupported_endpoint");
    // An Anthropic client gets Anthropic's error format.
    let (s, e) = stack
        .post(
            "/v1/skills",
            &json!({"display_title": "x"}),
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(s, 404, "{e}");
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["error"]["type"], "not_found_error", "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("spec.passthrough"));
    assert_eq!(stack.upstream().await, Vec::<Value>::new());
}

/// A POST written by hand with a chunked body (no Content-Length), and
/// the status the sidecar answers.
async fn post_chunked(base: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(16 * 1024) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The sidecar may answer and close before the whole body is sent.
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (status, text)
}

#[tokio::test]
async fn an_upload_over_the_limit_is_a_413_and_never_reaches_the_provider_whole() {
    let stack = Stack::start(&["--max-upload-bytes", "65536"]);
    let audio = vec![7u8; 200 * 1024];
    // As the SDKs send it: with a Content-Length, refused before anything
    // goes upstream.
    let (ct, body) = multipart(&[("model", "whisper-1")], ("big.wav", &audio));
    let (s, _, b) = stack
        .send(
            Method::POST,
            "/v1/audio/transcriptions",
            body,
            &[("content-type", &ct)],
        )
        .await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&b));
    let e = json_of(&b);
    assert_eq!(e["error"]["code"], "body_too_large", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("65536"),
        "{e}"
    );
    assert_eq!(
        stack.upstream().await,
        Vec::<Value>::new(),
        "nothing went upstream"
    );

    // Chunked, with no length up front: cut off at the limit while
    // streaming, and the provider never stores the file. (64 KiB is also
    // what the sidecar reads ahead of a form for its `model` field, so the
    // allowance is used up exactly as the relay starts.)
    let (ct, body) = multipart(&[("purpose", "batch")], ("big.jsonl", &audio));
    let (status, text) = post_chunked(&stack.proxy.llm, "/v1/files", &ct, &body).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    let files = stack.at_mock("/v1/files").await;
    assert_eq!(files["data"], json!([]), "no upload was stored: {files}");

    // Under the limit, the same upload goes through.
    let small = vec![7u8; 16 * 1024];
    let (ct, body) = multipart(&[("purpose", "batch")], ("small.jsonl", &small));
    let (s, _, b) = stack
        .send(Method::POST, "/v1/files", body, &[("content-type", &ct)])
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["bytes"], 16 * 1024);
    // And chunked, streamed through whole.
    let medium = vec![7u8; 40 * 1024];
    let (ct, body) = multipart(&[("purpose", "batch")], ("medium.jsonl", &medium));
    let (status, text) = post_chunked(&stack.proxy.llm, "/v1/files", &ct, &body).await;
    assert_eq!(status, 200, "{text}");
    let files = stack.at_mock("/v1/files").await;
    let sizes: Vec<&Value> = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["bytes"])
        .collect();
    assert_eq!(sizes.len(), 2, "{files}");
    assert!(sizes.contains(&&json!(40 * 1024)), "{files}");
}

#[tokio::test]
async fn an_upgrade_the_provider_refuses_is_a_502_and_counted() {
    let stack = Stack::start(&[]);
    let url = format!(
        "{}/v1/realtime?model=gpt-realtime-broken",
        stack.proxy.llm.replacen("http://", "ws://", 1)
    );
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap()
    .expect_err("the upgrade must fail");
    let tungstenite::Error::Http(resp) = err else {
        panic!("not an HTTP refusal: {err:?}");
    };
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().contains_key("x-request-id"));
    let body = json_of(resp.body().as_deref().unwrap_or_default());
    assert_eq!(body["error"]["code"], "upgrade_refused", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("norealtime") && msg.contains("404"), "{msg}");
    let m = stack.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_upgrades_total",
            &[
                ("endpoint", "/v1/realtime"),
                ("provider", "norealtime"),
                ("outcome", "refused")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(metric_value(&m, "llmesh_upgrades_active", &[]), Some(0.0));
    // The provider was asked, with its key.
    let reqs = stack.upstream().await;
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        reqs[0]["path"],
        "/nowhere/realtime?model=gpt-realtime-broken"
    );
    assert_eq!(
        header_of(&reqs[0], "authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
}

#[tokio::test]
async fn pass_through_drops_the_apps_credentials_for_the_providers_key() {
    let stack = Stack::start(&[]);
    let app = format!("Bearer {APP_KEY}");
    let creds = [
        ("authorization", app.as_str()),
        ("x-api-key", APP_KEY),
        ("api-key", APP_KEY),
    ];
    // JSON, multipart, a download, and Anthropic's batches.
    let (s, e) = stack
        .post("/v1/moderations", &json!({"input": "hello"}), &creds)
        .await;
    assert_eq!(s, 200, "{e}");
    let (ct, body) = multipart(&[("purpose", "batch")], ("in.jsonl", b"{}\n"));
    let mut with_type = creds.to_vec();
    with_type.push(("content-type", &ct));
    let (s, _, b) = stack
        .send(Method::POST, "/v1/files", body, &with_type)
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let id = json_of(&b)["id"].as_str().unwrap().to_string();
    let (s, _, b) = stack
        .send(
            Method::GET,
            &format!("/v1/files/{id}/content"),
            Bytes::new(),
            &creds,
        )
        .await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"{}\n"[..]));
    let mut anthropic = creds.to_vec();
    anthropic.push(("anthropic-version", "2023-06-01"));
    let batch = json!({"requests": [{"custom_id": "one", "params": anthropic_msg(CLAUDE, "hi")}]});
    let (s, e) = stack.post("/v1/messages/batches", &batch, &anthropic).await;
    assert_eq!(s, 200, "{e}");

    let reqs = stack.upstream().await;
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    let all = upstream_headers(&reqs);
    assert!(
        !all.contains(APP_KEY),
        "the app's key reached the provider:\n{all}"
    );
    for r in &reqs[..3] {
        assert_eq!(
            header_of(r, "authorization"),
            Some(&*format!("Bearer {KEY}")),
            "{r}"
        );
    }
    assert_eq!(header_of(&reqs[3], "x-api-key"), Some(KEY));
    assert_eq!(header_of(&reqs[3], "anthropic-version"), Some("2023-06-01"));
}

#[tokio::test]
async fn the_data_policy_redacts_json_pass_through_bodies() {
    let stack = Stack::start(&[]);
    let (s, h, b) = stack
        .send(
            Method::POST,
            "/v1/moderations",
            Bytes::from(json!({"input": [format!("mail {EMAIL} now"), "fine"]}).to_string()),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-llmesh-provider"], "oai");
    assert_eq!(json_of(&b)["results"].as_array().unwrap().len(), 2);
    let batch = json!({"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"owner": EMAIL}});
    let (s, _) = stack.post("/v1/batches", &batch, &[]).await;
    assert!(s.is_client_error(), "the mock has no file-x: {s}");
    let reqs = stack.upstream().await;
    assert_eq!(reqs.len(), 2);
    let sent: String = reqs.iter().map(|r| r["body"].to_string()).collect();
    assert!(!sent.contains(EMAIL), "{sent}");
    let input = reqs[0]["body"]["input"][0].as_str().unwrap();
    assert!(
        input.starts_with("mail [EMAIL") && input.ends_with("] now"),
        "a placeholder in its place: {input}"
    );
    assert_eq!(reqs[0]["body"]["input"][1], "fine");
    assert!(reqs[1]["body"]["metadata"]["owner"]
        .as_str()
        .unwrap()
        .starts_with("[EMAIL"));
}

#[tokio::test]
async fn an_unscannable_upload_is_refused_for_a_provider_not_cleared() {
    // Emails are redacted where the sidecar can read them; bodies it
    // cannot read only go to providers cleared for emails (oai).
    let stack = Stack::start_with(
        "    - {class: email, action: redact, unscannable: deny}",
        "email",
        &[],
    );
    let (ct, body) = multipart(&[("model", "whisper-uncleared")], ("a.wav", &[0u8; 2048]));
    let (s, _, b) = stack
        .send(
            Method::POST,
            "/v1/audio/transcriptions",
            body,
            &[("content-type", &ct)],
        )
        .await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&b));
    let e = json_of(&b);
    assert_eq!(e["error"]["code"], "data_policy_unscannable", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("chatonly") && msg.contains("email"), "{msg}");
    assert_eq!(
        stack.upstream().await,
        Vec::<Value>::new(),
        "nothing was sent"
    );

    // The cleared provider takes the same form.
    let (ct, body) = multipart(&[("model", "whisper-1")], ("a.wav", &[0u8; 2048]));
    let (s, h, b) = stack
        .send(
            Method::POST,
            "/v1/audio/transcriptions",
            body,
            &[("content-type", &ct)],
        )
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-llmesh-provider"], "oai");
    // JSON the sidecar can scan still goes to the uncleared provider.
    let (s, r) = stack
        .post(
            "/v1/responses",
            &json!({"model": TRANSLATED, "input": "hi"}),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let m = stack.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_passthrough_requests_total",
            &[
                ("endpoint", "/v1/audio/transcriptions"),
                ("provider", "chatonly"),
                ("code", "403")
            ]
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------
// 3. What the sidecar keeps of a translated conversation.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_redacted_value_stays_redacted_in_a_kept_conversation() {
    let stack = Stack::start(&[]);
    // The mock echoes the prompt: the placeholder comes back, and the
    // sidecar restores the address in the app's answer only.
    let echo = [("x-mock-behavior", r#"{"echo_chunk_chars": 3}"#)];
    let prompt = format!("please write to {EMAIL} today");
    let (s, r) = stack
        .post(
            "/v1/responses",
            &json!({"model": TRANSLATED, "input": prompt, "instructions": format!("sign as {EMAIL}")}),
            &echo,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["output"][0]["content"][0]["text"], prompt,
        "restored for the app"
    );
    let id = r["id"].as_str().unwrap().to_string();

    // Streamed, the same.
    let (s, _, sse) = stack
        .send(
            Method::POST,
            "/v1/responses",
            Bytes::from(json!({"model": TRANSLATED, "input": prompt, "stream": true}).to_string()),
            &echo,
        )
        .await;
    assert_eq!(s, 200);
    let sse = String::from_utf8(sse.to_vec()).unwrap();
    let done: Value = sse_data(&sse)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["type"] == "response.completed")
        .unwrap_or_else(|| panic!("no response.completed: {sse}"));
    let streamed = done["response"]["id"].as_str().unwrap().to_string();

    for id in [&id, &streamed] {
        let t0 = Instant::now();
        let (items, stored) = loop {
            let (s, items) = stack.get(&format!("/v1/responses/{id}/input_items")).await;
            if s == 200 || t0.elapsed() > Duration::from_secs(5) {
                let (s2, stored) = stack.get(&format!("/v1/responses/{id}")).await;
                assert_eq!(
                    (s, s2),
                    (StatusCode::OK, StatusCode::OK),
                    "{items} {stored}"
                );
                break (items, stored);
            }
            // A streamed answer is stored once its last event is out.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for (what, v) in [("input_items", &items), ("response", &stored)] {
            let text = v.to_string();
            assert!(
                !text.contains(EMAIL),
                "{what} of {id} holds the address: {text}"
            );
            assert!(
                text.contains("[EMAIL"),
                "{what} of {id} holds the placeholder: {text}"
            );
        }
        assert_eq!(items["data"][0]["type"], "message", "{items}");
    }

    // A follow-up sends the kept conversation: still redacted.
    stack.forget_upstream().await;
    let (s, r) = stack
        .post(
            "/v1/responses",
            &json!({"model": TRANSLATED, "input": "thanks", "previous_response_id": id}),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let reqs = stack.upstream().await;
    assert_eq!(reqs.len(), 1);
    let sent = reqs[0]["body"].to_string();
    assert!(!sent.contains(EMAIL), "{sent}");
    assert!(sent.contains("[EMAIL"), "{sent}");
    // The first prompt, its answer, this input (instructions are not
    // carried over, as with the real API).
    assert_eq!(
        reqs[0]["body"]["messages"].as_array().unwrap().len(),
        3,
        "{sent}"
    );
}

#[tokio::test]
async fn pass_through_calls_count_against_quotas_and_batch_results_against_cost() {
    let quotas = "---
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: calls}
spec:
  limits: {requestsPerMinute: 4}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: spend}
spec:
  limits: {costPerDay: '100'}
  action: warn
";
    let stack = Stack::start_full(REDACT_EMAIL, "", &[], quotas);
    llmesh_tests::inside_minute(10.0).await;
    // A batch: upload (1), create (2), download its results (3).
    let line = json!({"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": NATIVE, "messages": [{"role": "user", "content": "batched hello there"}]}});
    run_batch(&stack.http, &stack.proxy.llm, &[line]).await;
    // The batch's cost reached the cost quota when its download ended.
    stack
        .metrics_until("the batch cost in the spend quota", |m| {
            metric_value(m, "llmesh_quota_used", &[("limit", "costPerDay")]).unwrap_or(0.0) > 0.0
        })
        .await;
    // A fourth call is still in the budget, the fifth is refused in the
    // client's format, and never reaches the provider.
    let moderation = json!({"input": "hello"});
    let (s, v) = stack.post("/v1/moderations", &moderation, &[]).await;
    assert_eq!(s, 200, "{v}");
    stack.forget_upstream().await;
    let (s, v) = stack.post("/v1/moderations", &moderation, &[]).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
    assert!(stack.upstream().await.is_empty());
}
