//! `make run`'s embedded policy (examples/local/policy.yaml) serves every
//! call the OpenAI and Anthropic SDKs make, against the real mock and
//! proxy binaries: what a new user tries first must work.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use llmesh_tests::{anthropic_msg, metric_sum, multipart, openai_chat, run_batch, Http};
use llmesh_tests::{proxy_command, spawn_mock, spawn_proxy, Proc, ProxyProc};
use serde_json::{json, Value};

const KEY: &str = "make-run-key";

struct Run {
    _mock: Proc,
    proxy: ProxyProc,
    _dir: tempfile::TempDir,
    http: Http,
}

impl Run {
    fn start() -> Run {
        let (mock, mock_url) = spawn_mock(KEY);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("examples/local/policy.yaml")).unwrap();
        assert!(text.contains("http://127.0.0.1:18080"));
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, text.replace("http://127.0.0.1:18080", &mock_url)).unwrap();
        let proxy = spawn_proxy(
            proxy_command(&policy)
                .env("LLMESH_MOCK_KEY", KEY)
                .env("POD_NAMESPACE", "local"),
        );
        Run {
            _mock: mock,
            proxy,
            _dir: dir,
            http: Http::new(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, String) {
        let (s, h, b) = self
            .http
            .send(method, &format!("{}{path}", self.proxy.llm), body, headers)
            .await;
        (s.as_u16(), h, String::from_utf8_lossy(&b).to_string())
    }

    async fn post(&self, path: &str, body: Value) -> (u16, http::HeaderMap, Value) {
        let (s, h, b) = self
            .send(Method::POST, path, Bytes::from(body.to_string()), &[])
            .await;
        let v = serde_json::from_str(&b).unwrap_or(Value::String(b));
        (s, h, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self.send(Method::GET, path, Bytes::new(), &[]).await;
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }
}

#[tokio::test]
async fn the_make_run_policy_serves_every_sdk_call() {
    let run = Run::start();

    // Chat in both APIs, embeddings, legacy completions.
    let (s, _, b) = run
        .post("/v1/chat/completions", openai_chat("gpt-4o-mini", "hello"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = run
        .post("/v1/messages", anthropic_msg("claude-sonnet-4-5", "hello"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = run
        .post(
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "hello"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = run
        .post(
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say hi", "max_tokens": 8}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["object"], "text_completion", "{b}");

    // The Responses API: native, translated to chat, translated to
    // Anthropic; a follow-up and a retrieve on each kind.
    for (model, provider) in [
        ("gpt-4o-mini", "mock-openai"),
        ("qwen2.5-7b-instruct", "mock-vllm"),
        ("claude-sonnet-4-5", "mock-anthropic"),
    ] {
        let (s, h, first) = run
            .post(
                "/v1/responses",
                json!({"model": model, "input": "what is two plus two", "max_output_tokens": 64}),
            )
            .await;
        assert_eq!(s, 200, "{model}: {first}");
        assert_eq!(h["x-llmesh-provider"], provider);
        assert_eq!(first["object"], "response", "{first}");
        let text = first["output"][0]["content"][0]["text"].as_str().unwrap();
        assert!(!text.is_empty(), "{first}");
        let id = first["id"].as_str().unwrap();
        let (s, _, next) = run
            .post(
                "/v1/responses",
                json!({"model": model, "input": "and three plus three", "previous_response_id": id}),
            )
            .await;
        assert_eq!(s, 200, "{model} follow-up: {next}");
        // The follow-up carried the whole conversation.
        assert!(
            next["usage"]["input_tokens"].as_u64() > first["usage"]["input_tokens"].as_u64(),
            "{model}: {first} then {next}"
        );
        let (s, got) = run.get(&format!("/v1/responses/{id}")).await;
        assert_eq!(s, 200, "{model} retrieve: {got}");
        assert_eq!(got["id"], id);
    }
    let (s, _, b) = run
        .send(
            Method::POST,
            "/v1/responses",
            Bytes::from(
                json!({"model": "qwen2.5-7b-instruct", "input": "stream it", "stream": true})
                    .to_string(),
            ),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("event: response.output_text.delta"), "{b}");
    assert!(b.contains("event: response.completed"), "{b}");

    // count_tokens: forwarded to Anthropic, estimated for the others.
    let count = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "count these four words"}]});
    let (s, h, b) = run
        .post("/v1/messages/count_tokens", count("claude-sonnet-4-5"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["input_tokens"].as_u64().unwrap() > 0);
    assert!(h.get("x-llmesh-token-count").is_none());
    let (s, h, b) = run
        .post("/v1/messages/count_tokens", count("gpt-4o-mini"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-token-count"], "estimate");

    // Models, one at a time.
    let (s, b) = run.get("/v1/models/gpt-4o-mini").await;
    assert_eq!((s, b["id"].as_str()), (200, Some("gpt-4o-mini")), "{b}");
    let (s, _) = run.get("/v1/models/no-such-model").await;
    assert_eq!(s, 404);

    // Pass-through by model: a moderation and a transcription upload.
    let (s, _, b) = run
        .post(
            "/v1/moderations",
            json!({"model": "omni-moderation-latest", "input": "hello"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let audio = vec![7u8; 100 * 1024];
    let (ct, body) = multipart(&[("model", "whisper-1")], ("a.wav", &audio));
    let (s, h, b) = run
        .send(
            Method::POST,
            "/v1/audio/transcriptions",
            body,
            &[("content-type", &ct)],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["x-llmesh-provider"], "mock-openai");
    assert!(b.contains(&audio.len().to_string()), "{b}");

    // Pass-through by path: a batch, its output downloaded and accounted.
    let line = json!({"custom_id": "one", "method": "POST", "url": "/v1/chat/completions",
        "body": openai_chat("gpt-4o-mini", "batched hello")});
    let (_, b) = run_batch(&run.http, &run.proxy.llm, &[line]).await;
    assert!(b.contains("\"custom_id\":\"one\""), "{b}");

    // Anthropic message batches, by path to the Anthropic provider.
    let (s, _, b) = run
        .send(
            Method::POST,
            "/v1/messages/batches",
            Bytes::from(
                json!({"requests": [{"custom_id": "x", "params": anthropic_msg("claude-sonnet-4-5", "hi")}]})
                    .to_string(),
            ),
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mb: Value = serde_json::from_str(&b).unwrap();
    let id = mb["id"].as_str().unwrap();
    let (s, _, b) = run
        .send(
            Method::GET,
            &format!("/v1/messages/batches/{id}/results"),
            Bytes::new(),
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // Realtime over WebSocket.
    let url = format!(
        "{}/v1/realtime?model=gpt-4o-mini",
        run.proxy.llm.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_string().contains("session.created"), "{hello}");
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().to_string(), "hi");
    ws.close(None).await.unwrap();

    // Anything else is a 404 that says how to allow it.
    let (s, b) = run.get("/v1/vector_stores").await;
    assert_eq!(s, 404, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.passthrough"),
        "{b}"
    );

    // The batch was accounted at the batch price, both batch downloads
    // counted, every pass-through call counted by endpoint.
    let (_, _, m) = run
        .http
        .send(
            Method::GET,
            &format!("{}/metrics", run.proxy.metrics),
            Bytes::new(),
            &[],
        )
        .await;
    let m = String::from_utf8_lossy(&m).to_string();
    assert!(
        metric_sum(
            &m,
            "llmesh_batch_results_total",
            &[("provider", "mock-openai")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "llmesh_batch_results_total",
            &[("provider", "mock-anthropic")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "llmesh_passthrough_requests_total",
            &[("endpoint", "/v1/files/{id}/content")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "llmesh_upgrades_total", &[("outcome", "open")]) >= 1.0,
        "{m}"
    );
}
