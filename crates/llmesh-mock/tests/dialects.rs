//! Wire formats of the three dialects, plain and streamed, with usage.

mod support;

use http::Method;
use llmesh_mock::generated_text;
use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn openai_chat_non_stream() {
    bounded(async {
        let m = start().await;
        let r = post(
            &format!("{}/v1/chat/completions", m.url()),
            &[],
            &openai_chat("gpt-x", "hello there  big world"),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], generated_text(8));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let u = &v["usage"];
        assert_eq!(u["prompt_tokens"], 6);
        assert_eq!(u["completion_tokens"], 8);
        assert_eq!(u["total_tokens"], 14);
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    })
    .await;
}

#[tokio::test]
async fn openai_chat_stream_with_usage() {
    bounded(async {
        let m = start().await;
        let mut body = openai_chat("gpt-s", "one two three");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        // Array content parts count too.
        body["messages"][1]["content"] = json!([{"type":"text","text":"one two three"}]);
        let r = post(
            &format!("{}/v1/chat/completions", m.url()),
            &[("x-mock-output-tokens", "5"), ("x-mock-cached-tokens", "2")],
            &body,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let events = sse(r.text());
        assert_eq!(events.last().unwrap().1, "[DONE]");
        let chunks = sse_json(r.text());
        // role, 5 words, finish, usage
        assert_eq!(chunks.len(), 8);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, generated_text(5));
        for c in &chunks[..7] {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "gpt-s");
            assert!(c["usage"].is_null());
        }
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
        let last = &chunks[7];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 5);
        assert_eq!(last["usage"]["completion_tokens"], 5);
        assert_eq!(last["usage"]["total_tokens"], 10);
        assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    })
    .await;
}

#[tokio::test]
async fn openai_stream_without_usage_and_over_h2c() {
    bounded(async {
        let m = start().await;
        let mut body = openai_chat("gpt-s", "hi");
        body["stream"] = json!(true);
        let c = h2c_client();
        let r = send_with(
            &c,
            Method::POST,
            &format!("{}/v1/chat/completions", m.url()),
            &[],
            body.to_string().into(),
        )
        .await;
        assert_eq!(r.status, 200);
        let chunks = sse_json(r.text());
        assert_eq!(chunks.len(), 10); // role + 8 words + finish
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        assert!(r.text().ends_with("data: [DONE]\n\n"));
    })
    .await;
}

fn tools_body(stream: bool) -> Value {
    json!({
        "model": "gpt-t",
        "stream": stream,
        "messages": [{"role": "user", "content": "weather in paris?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
            {"type": "function", "function": {"name": "other", "parameters": {}}}
        ]
    })
}

#[tokio::test]
async fn openai_tool_calls() {
    bounded(async {
        let m = start().await;
        let url = format!("{}/v1/chat/completions", m.url());
        let v = post(&url, &[], &tools_body(false)).await.json();
        let msg = &v["choices"][0]["message"];
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert!(msg["content"].is_null());
        assert_eq!(msg["tool_calls"][0]["type"], "function");
        assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(
            msg["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args, json!({"city": "Paris"}));

        // Streamed: arguments arrive in at least two pieces.
        let r = post(
            &url,
            &[("x-mock-tool-args", r#"{"q":"x y"}"#)],
            &tools_body(true),
        )
        .await;
        let chunks = sse_json(r.text());
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        let pieces: Vec<&str> = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .filter(|a| !a.is_empty())
            .collect();
        assert!(pieces.len() >= 2, "{pieces:?}");
        assert_eq!(pieces.concat(), r#"{"q":"x y"}"#);
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );

        // A tool result as last message ends the loop with text.
        let mut body = tools_body(false);
        body["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}));
        let v = post(&url, &[], &body).await.json();
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["choices"][0]["message"]["content"], generated_text(8));

        // Disabled by behavior.
        let v = post(&url, &[("x-mock-tool-call", "false")], &tools_body(false))
            .await
            .json();
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    })
    .await;
}

#[tokio::test]
async fn openai_embeddings_and_models() {
    bounded(async {
        let m = start().await;
        let url = format!("{}/v1/embeddings", m.url());
        let v = post(&url, &[], &json!({"model": "emb", "input": "a b c"}))
            .await
            .json();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "emb");
        assert_eq!(v["data"][0]["object"], "embedding");
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        let v2 = post(&url, &[], &json!({"model": "emb", "input": ["a b c", "d"]}))
            .await
            .json();
        assert_eq!(v2["data"].as_array().unwrap().len(), 2);
        assert_eq!(v2["data"][1]["index"], 1);
        assert_eq!(v2["data"][0]["embedding"], v["data"][0]["embedding"]);
        assert_ne!(v2["data"][1]["embedding"], v["data"][0]["embedding"]);
        assert_eq!(v2["usage"]["prompt_tokens"], 4);
        let b64 = post(
            &url,
            &[],
            &json!({"model": "emb", "input": "a b c", "encoding_format": "base64"}),
        )
        .await
        .json();
        assert_eq!(b64["data"][0]["embedding"].as_str().unwrap().len(), 44);
        let bad = post(&url, &[], &json!({"model": "emb", "input": 3})).await;
        assert_eq!(bad.status, 400);

        let v = get(&format!("{}/v1/models", m.url()), &[]).await.json();
        assert_eq!(v["object"], "list");
        assert!(v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == "gpt-4o"));
        let v = get(
            &format!("{}/v1/models", m.url()),
            &[("anthropic-version", "2023-06-01")],
        )
        .await
        .json();
        assert_eq!(v["data"][0]["type"], "model");
        assert_eq!(v["has_more"], false);
        let v = get(&format!("{}/v1beta/models", m.url()), &[]).await.json();
        assert!(v["models"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("models/"));
    })
    .await;
}

fn anthropic_body(stream: bool) -> Value {
    json!({
        "model": "claude-x",
        "max_tokens": 100,
        "stream": stream,
        "system": [{"type": "text", "text": "you are terse"}],
        "messages": [{"role": "user", "content": "say four words please"}]
    })
}

#[tokio::test]
async fn anthropic_messages_non_stream() {
    bounded(async {
        let m = start().await;
        let r = post(
            &format!("{}/v1/messages", m.url()),
            &[
                ("x-mock-cached-tokens", "2"),
                ("anthropic-version", "2023-06-01"),
            ],
            &anthropic_body(false),
        )
        .await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["model"], "claude-x");
        assert_eq!(v["content"][0]["type"], "text");
        assert_eq!(v["content"][0]["text"], generated_text(8));
        assert_eq!(v["stop_reason"], "end_turn");
        // 7 words in total, 2 of them reported as cache reads.
        assert_eq!(v["usage"]["input_tokens"], 5);
        assert_eq!(v["usage"]["cache_read_input_tokens"], 2);
        assert_eq!(v["usage"]["cache_creation_input_tokens"], 0);
        assert_eq!(v["usage"]["output_tokens"], 8);
    })
    .await;
}

#[tokio::test]
async fn anthropic_reports_cache_writes_apart_from_input_tokens() {
    bounded(async {
        let m = start().await;
        for stream in [false, true] {
            let r = post(
                &format!("{}/v1/messages", m.url()),
                &[
                    ("x-mock-cached-tokens", "2"),
                    ("x-mock-cache-write-tokens", "3"),
                ],
                &anthropic_body(stream),
            )
            .await;
            assert_eq!(r.status, 200);
            let usage = if stream {
                let (_, start) = sse(r.text()).into_iter().next().unwrap();
                let start: Value = serde_json::from_str(&start).unwrap();
                start["message"]["usage"].clone()
            } else {
                r.json()["usage"].clone()
            };
            // 7 words: 2 read from the cache, 3 written to it, 2 plain.
            assert_eq!(usage["input_tokens"], 2, "{usage}");
            assert_eq!(usage["cache_read_input_tokens"], 2, "{usage}");
            assert_eq!(usage["cache_creation_input_tokens"], 3, "{usage}");
        }
        // Writes never exceed what is left of the prompt after the reads.
        let r = post(
            &format!("{}/v1/messages", m.url()),
            &[
                ("x-mock-cached-tokens", "5"),
                ("x-mock-cache-write-tokens", "100"),
            ],
            &anthropic_body(false),
        )
        .await;
        let usage = r.json()["usage"].clone();
        assert_eq!(usage["input_tokens"], 0, "{usage}");
        assert_eq!(usage["cache_creation_input_tokens"], 2, "{usage}");
    })
    .await;
}

#[tokio::test]
async fn anthropic_messages_stream() {
    bounded(async {
        let m = start().await;
        let r = post(
            &format!("{}/v1/messages", m.url()),
            &[("x-mock-output-tokens", "3")],
            &anthropic_body(true),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let events = sse(r.text());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let data: Vec<Value> = events
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        for ((name, _), d) in events.iter().zip(&data) {
            assert_eq!(d["type"], name.as_deref().unwrap());
        }
        assert_eq!(data[0]["message"]["usage"]["input_tokens"], 7);
        assert_eq!(data[0]["message"]["model"], "claude-x");
        let text: String = data
            .iter()
            .filter_map(|d| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, generated_text(3));
        assert_eq!(data[7]["delta"]["stop_reason"], "end_turn");
        assert_eq!(data[7]["usage"]["output_tokens"], 3);
    })
    .await;
}

#[tokio::test]
async fn anthropic_tool_use() {
    bounded(async {
        let m = start().await;
        let url = format!("{}/v1/messages", m.url());
        let mut body = anthropic_body(false);
        body["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
        let v = post(&url, &[], &body).await.json();
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["content"][0]["type"], "tool_use");
        assert_eq!(v["content"][0]["name"], "lookup");
        assert_eq!(v["content"][0]["input"], json!({"city": "Paris"}));

        body["stream"] = json!(true);
        let r = post(&url, &[], &body).await;
        let data = sse_json(r.text());
        assert_eq!(data[1]["content_block"]["type"], "tool_use");
        assert_eq!(data[1]["content_block"]["name"], "lookup");
        let pieces: Vec<&str> = data
            .iter()
            .filter(|d| d["delta"]["type"] == "input_json_delta")
            .map(|d| d["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert!(pieces.len() >= 2);
        let args: Value = serde_json::from_str(&pieces.concat()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        assert_eq!(
            data.iter().find(|d| d["type"] == "message_delta").unwrap()["delta"]["stop_reason"],
            "tool_use"
        );

        body["stream"] = json!(false);
        body["messages"].as_array_mut().unwrap().extend([
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]}),
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "rainy day"}]}),
        ]);
        let v = post(&url, &[], &body).await.json();
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["content"][0]["type"], "text");
        // 4 + 3 (system) + 2 (tool result) words.
        assert_eq!(v["usage"]["input_tokens"], 9);
    })
    .await;
}

#[tokio::test]
async fn anthropic_forced_tool_carries_the_json_reply() {
    bounded(async {
        let m = start().await;
        let url = format!("{}/v1/messages", m.url());
        let mut body = anthropic_body(false);
        body["tools"] = json!([
            {"name": "lookup", "input_schema": {"type": "object"}},
            {"name": "answer", "input_schema": {"type": "object"}}]);
        body["tool_choice"] = json!({"type": "tool", "name": "answer"});
        let reply = ("x-mock-behavior", r#"{"json_reply":{"n":3}}"#);
        let v = post(&url, &[reply], &body).await.json();
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["content"][0]["name"], "answer");
        assert_eq!(v["content"][0]["input"], json!({"n": 3}));

        body["stream"] = json!(true);
        let r = post(&url, &[reply], &body).await;
        let data = sse_json(r.text());
        assert_eq!(data[1]["content_block"]["name"], "answer");
        let pieces: Vec<&str> = data
            .iter()
            .filter(|d| d["delta"]["type"] == "input_json_delta")
            .map(|d| d["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert_eq!(pieces.len(), 2);
        let args: Value = serde_json::from_str(&pieces.concat()).unwrap();
        assert_eq!(args, json!({"n": 3}));

        // Before its turn, an empty object; without json_reply, the usual
        // arguments.
        body["stream"] = json!(false);
        let later = (
            "x-mock-behavior",
            r#"{"json_reply":{"n":3},"json_reply_after_turns":1}"#,
        );
        let v = post(&url, &[later], &body).await.json();
        assert_eq!(v["content"][0]["input"], json!({}));
        let v = post(&url, &[], &body).await.json();
        assert_eq!(v["content"][0]["name"], "answer");
        assert_eq!(v["content"][0]["input"], json!({"city": "Paris"}));
    })
    .await;
}

fn gemini_body() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "be kind"}]},
        "contents": [{"role": "user", "parts": [{"text": "one two three"}]}]
    })
}

#[tokio::test]
async fn gemini_generate_content() {
    bounded(async {
        let m = start().await;
        let v = post(
            &format!("{}/v1beta/models/gemini-y:generateContent", m.url()),
            &[],
            &gemini_body(),
        )
        .await
        .json();
        assert_eq!(v["modelVersion"], "gemini-y");
        let c = &v["candidates"][0];
        assert_eq!(c["content"]["role"], "model");
        assert_eq!(c["content"]["parts"][0]["text"], generated_text(8));
        assert_eq!(c["finishReason"], "STOP");
        let u = &v["usageMetadata"];
        assert_eq!(u["promptTokenCount"], 5);
        assert_eq!(u["candidatesTokenCount"], 8);
        assert_eq!(u["totalTokenCount"], 13);
    })
    .await;
}

#[tokio::test]
async fn gemini_stream_sse_and_json_array() {
    bounded(async {
        let m = start().await;
        let r = post(
            &format!(
                "{}/v1beta/models/gemini-y:streamGenerateContent?alt=sse",
                m.url()
            ),
            &[("x-mock-output-tokens", "4")],
            &gemini_body(),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let chunks = sse_json(r.text());
        assert_eq!(chunks.len(), 4);
        let text: String = chunks
            .iter()
            .map(|c| {
                c["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(text, generated_text(4));
        assert!(chunks[..3].iter().all(|c| c.get("usageMetadata").is_none()));
        let last = &chunks[3];
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["promptTokenCount"], 5);
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 4);
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 9);
        assert_eq!(last["modelVersion"], "gemini-y");

        // Without alt=sse the real API streams one JSON array.
        let r = post(
            &format!("{}/v1beta/models/gemini-y:streamGenerateContent", m.url()),
            &[("x-mock-output-tokens", "3")],
            &gemini_body(),
        )
        .await;
        let arr = r.json();
        assert_eq!(arr.as_array().unwrap().len(), 3);
        assert_eq!(arr[2]["usageMetadata"]["candidatesTokenCount"], 3);
    })
    .await;
}

#[tokio::test]
async fn gemini_function_call() {
    bounded(async {
        let m = start().await;
        let mut body = gemini_body();
        body["tools"] = json!([{"functionDeclarations": [{"name": "find", "parameters": {}}]}]);
        let url = format!("{}/v1beta/models/g:generateContent", m.url());
        let v = post(&url, &[], &body).await.json();
        let part = &v["candidates"][0]["content"]["parts"][0];
        assert_eq!(part["functionCall"]["name"], "find");
        assert_eq!(part["functionCall"]["args"], json!({"city": "Paris"}));

        let r = post(
            &format!("{}/v1beta/models/g:streamGenerateContent?alt=sse", m.url()),
            &[],
            &body,
        )
        .await;
        let chunks = sse_json(r.text());
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
            "find"
        );
        assert!(chunks.last().unwrap()["usageMetadata"].is_object());

        body["contents"].as_array_mut().unwrap().extend([
            json!({"role": "model", "parts": [{"functionCall": {"name": "find", "args": {}}}]}),
            json!({"role": "user", "parts": [{"functionResponse": {"name": "find", "response": {}}}]}),
        ]);
        let v = post(&url, &[], &body).await.json();
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], generated_text(8));
    })
    .await;
}

#[tokio::test]
async fn content_filter_in_each_dialect() {
    bounded(async {
        let m = start().await;
        let h = [("x-mock-content-filter", "true")];
        let v = post(
            &format!("{}/v1/chat/completions", m.url()),
            &h,
            &openai_chat("a", "b"),
        )
        .await
        .json();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        let v = post(
            &format!("{}/v1/messages", m.url()),
            &h,
            &anthropic_body(false),
        )
        .await
        .json();
        assert_eq!(v["stop_reason"], "refusal");
        let v = post(
            &format!("{}/v1beta/models/g:generateContent", m.url()),
            &h,
            &gemini_body(),
        )
        .await
        .json();
        assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_on_h1_and_h2() {
    bounded(async {
        let m = start().await;
        let url = format!("{}/v1/chat/completions", m.url());
        for c in [client(), h2c_client()] {
            let mut tasks = Vec::new();
            for i in 0..100 {
                let c = c.clone();
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let mut body = openai_chat("m", "x");
                    body["stream"] = json!(i % 2 == 0);
                    send_with(&c, Method::POST, &url, &[], body.to_string().into())
                        .await
                        .status
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap(), 200);
            }
        }
        assert_eq!(m.request_count(), 200);
        assert_eq!(m.active_requests(), 0);
    })
    .await;
}
