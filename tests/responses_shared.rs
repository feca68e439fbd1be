//! The Responses conversation store shared through Redis: two sidecars of
//! one namespace (two replicas of an app) continue each other's
//! conversations, native and translated; a sidecar of another namespace
//! on the same Redis sees none of them; without Redis a replica does not
//! know the other's ids.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::Method;
use llmesh_tests::redis_server::RedisServer;
use llmesh_tests::{proxy_command, spawn_mock, spawn_proxy, Http, ProxyProc};
use serde_json::{json, Value};

const KEY: &str = "shared-responses-key";

fn policy(mock: &str) -> String {
    format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: oai}}
spec:
  schema: openai
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: chatonly}}
spec:
  schema: openai-compatible
  baseUrl: {mock}/v1
  credential: {{file: key.txt}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: native}}
spec:
  models: [gpt-4o-mini]
  backends: [{{provider: oai}}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: translated}}
spec:
  models: [qwen]
  backends: [{{provider: chatonly}}]
"
    )
}

fn sidecar(policy: &std::path::Path, namespace: &str, redis: Option<&RedisServer>) -> ProxyProc {
    let mut cmd = proxy_command(policy);
    cmd.env("POD_NAMESPACE", namespace);
    if let Some(r) = redis {
        cmd.args(["--quota-store", &r.url()]);
    }
    spawn_proxy(&mut cmd)
}

async fn post(http: &Http, proxy: &ProxyProc, body: Value) -> (u16, Value) {
    let (s, _, b) = http
        .send(
            Method::POST,
            &format!("{}/v1/responses", proxy.llm),
            Bytes::from(body.to_string()),
            &[],
        )
        .await;
    (
        s.as_u16(),
        serde_json::from_slice(&b).unwrap_or(Value::Null),
    )
}

async fn get(http: &Http, proxy: &ProxyProc, id: &str) -> (u16, Value) {
    let (s, _, b) = http.get(&format!("{}/v1/responses/{id}", proxy.llm)).await;
    (
        s.as_u16(),
        serde_json::from_slice(&b).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn replicas_share_conversations_through_redis_and_namespaces_do_not() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (_mock, mock_url) = spawn_mock(KEY);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), KEY).unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy(&mock_url)).unwrap();
    let a = sidecar(&file, "shop", Some(&redis));
    let b = sidecar(&file, "shop", Some(&redis));
    let other = sidecar(&file, "billing", Some(&redis));
    let alone = sidecar(&file, "shop", None);
    let http = Http::new();

    for model in ["gpt-4o-mini", "qwen"] {
        let (s, first) = post(
            &http,
            &a,
            json!({"model": model, "input": "remember the number seven"}),
        )
        .await;
        assert_eq!(s, 200, "{model}: {first}");
        let id = first["id"].as_str().unwrap().to_string();
        // Redis is written by a task after the answer: wait for it.
        let mut seen = None;
        for _ in 0..100 {
            let (s, v) = get(&http, &b, &id).await;
            if s == 200 {
                seen = Some(v);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let seen = seen.unwrap_or_else(|| panic!("{model}: replica b never saw {id}"));
        assert_eq!(seen["id"], id.as_str());
        // The other replica continues the conversation.
        let (s, next) = post(
            &http,
            &b,
            json!({"model": model, "input": "which number?", "previous_response_id": id}),
        )
        .await;
        assert_eq!(s, 200, "{model} follow-up on b: {next}");
        assert!(
            next["usage"]["input_tokens"].as_u64() > first["usage"]["input_tokens"].as_u64(),
            "{model}: the follow-up carried the conversation: {first} then {next}"
        );
        // Another namespace on the same Redis: not found, nothing leaked.
        for (s, v) in [
            get(&http, &other, &id).await,
            post(
                &http,
                &other,
                json!({"model": model, "input": "x", "previous_response_id": id}),
            )
            .await,
        ] {
            assert_eq!(s, 404, "{model}: {v}");
            assert_eq!(v["error"]["code"], "not_found", "{v}");
            assert!(!v.to_string().contains("seven"), "{v}");
        }
        // A replica without the shared store does not know the id.
        let (s, v) = get(&http, &alone, &id).await;
        assert_eq!(s, 404, "{model}: {v}");
    }
}
