//! Hot reload of the policy file: a good edit is live within about a
//! second; a bad edit keeps the last good policy and says why; in-flight
//! requests finish on the snapshot they started with.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use llmesh_tests::*;
use serde_json::json;

async fn wait_for_generation(env: &Env, want: f64) -> String {
    let needle = "llmesh_config_generation{";
    for _ in 0..150 {
        let m = env.metrics().await;
        if m.contains(needle) && metric_value(&m, "llmesh_config_generation", &[]) == Some(want) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("generation {want} never reached:\n{}", env.metrics().await);
}

#[tokio::test]
async fn a_valid_edit_is_swapped_in_and_a_bad_one_is_refused() {
    let env = Env::start().await;
    wait_for_generation(&env, 1.0).await;
    let (s, _, _) = env
        .post("/v1/chat/completions", &openai_chat("brand-new", "hi"))
        .await;
    assert_eq!(s, 404);

    let policy = default_policy(&env.mock.url()).replace(
        "models: [gpt-4o-mini, text-embedding-3-small]",
        "models: [gpt-4o-mini, text-embedding-3-small, brand-new]",
    );
    std::fs::write(env.policy_path(), &policy).unwrap();
    let m = wait_for_generation(&env, 2.0).await;
    assert_eq!(
        metric_value(&m, "llmesh_config_reloads_total", &[("result", "success")]),
        Some(2.0)
    );
    let (s, _, b) = env
        .post("/v1/chat/completions", &openai_chat("brand-new", "hi"))
        .await;
    assert_eq!(s, 200, "{b}");

    // Broken YAML: refused, old policy kept, the failure counted and shown.
    std::fs::write(
        env.policy_path(),
        "apiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nspec: [",
    )
    .unwrap();
    let mut failed = false;
    for _ in 0..150 {
        let m = env.metrics().await;
        if metric_value(&m, "llmesh_config_reloads_total", &[("result", "failure")]) == Some(1.0) {
            assert_eq!(
                metric_value(&m, "llmesh_config_last_reload_successful", &[]),
                Some(0.0)
            );
            assert_eq!(metric_value(&m, "llmesh_config_generation", &[]), Some(2.0));
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed, "failed reload was not counted");
    let (s, _, _) = env
        .post("/v1/chat/completions", &openai_chat("brand-new", "hi"))
        .await;
    assert_eq!(s, 200, "last good policy must still serve");
    let url = format!("http://{}/config_dump", env.proxy.admin_addr());
    let (_, _, dump) = env.http.get(&url).await;
    let dump = String::from_utf8(dump.to_vec()).unwrap();
    assert!(dump.contains("lastReloadError"), "{dump}");
    assert!(dump.contains("invalid YAML"), "{dump}");

    // A semantically invalid file (unknown provider) is refused whole too.
    let bad = policy.replace(
        "backends: [{provider: oai}]",
        "backends: [{provider: nobody}]",
    );
    std::fs::write(env.policy_path(), bad).unwrap();
    for _ in 0..150 {
        let m = env.metrics().await;
        if metric_value(&m, "llmesh_config_reloads_total", &[("result", "failure")]) == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, _, dump) = env.http.get(&url).await;
    let dump = String::from_utf8(dump.to_vec()).unwrap();
    assert!(dump.contains("no valid LLMProvider named"), "{dump}");
    let (s, _, _) = env
        .post("/v1/chat/completions", &openai_chat("gpt-4o-mini", "hi"))
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn an_in_flight_stream_finishes_on_the_policy_it_started_with() {
    let env = Env::start().await;
    let mut req = openai_chat("gpt-4o-mini", "hi");
    req["stream"] = json!(true);
    let http = env.http.clone();
    let url = env.url("/v1/chat/completions");
    let stream = tokio::spawn(async move {
        http.send(
            http::Method::POST,
            &url,
            bytes::Bytes::from(req.to_string()),
            &[("x-mock-chunk-delay-ms", "100")],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Remove the route the stream is using.
    let policy = default_policy(&env.mock.url()).replace(
        "models: [gpt-4o-mini, text-embedding-3-small]",
        "models: [text-embedding-3-small]",
    );
    std::fs::write(env.policy_path(), policy).unwrap();
    wait_for_generation(&env, 2.0).await;
    let (s, _, _) = env
        .post("/v1/chat/completions", &openai_chat("gpt-4o-mini", "hi"))
        .await;
    assert_eq!(s, 404, "new requests see the new policy");
    let (status, _, body) = stream.await.unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(
        sse_data(&text).last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
}
