//! Count tokens, legacy completions, audio, moderations, images and the
//! realtime WebSocket.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use http_body_util::BodyExt;
use llmesh_mock::{generated_text, MockConfig, MockServer};
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn url(m: &MockServer, path: &str) -> String {
    format!("{}{path}", m.url())
}

#[tokio::test]
async fn count_tokens_matches_messages() {
    bounded(async {
        let m = start().await;
        let body = json!({
            "model": "claude-x",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "you are terse"}],
            "tools": [{"name": "t", "description": "not counted here", "input_schema": {}}],
            "messages": [
                {"role": "user", "content": "one two"},
                {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
                {"role": "user", "content": [{"type": "text", "text": "four five six"}]}
            ]
        });
        let h = [("anthropic-version", "2023-06-01")];
        let r = post(&url(&m, "/v1/messages/count_tokens"), &h, &body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), json!({"input_tokens": 9}));
        let mut plain = body.clone();
        plain.as_object_mut().unwrap().remove("tools");
        let v = post(&url(&m, "/v1/messages"), &h, &plain).await.json();
        assert_eq!(v["usage"]["input_tokens"], 9);
        // Errors in the Anthropic format.
        let r = post(
            &url(&m, "/v1/messages/count_tokens"),
            &h,
            &json!({"model": "c"}),
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["type"], "error");
        let r = post(
            &url(&m, "/v1/messages/count_tokens"),
            &[("x-mock-status", "529")],
            &body,
        )
        .await;
        assert_eq!(r.status, 529);
        assert_eq!(r.json()["error"]["type"], "overloaded_error");
        assert_eq!(
            get(&url(&m, "/v1/messages/count_tokens"), &[]).await.status,
            405
        );
    })
    .await;
}

#[tokio::test]
async fn legacy_completions_plain_and_streamed() {
    bounded(async {
        let m = start().await;
        let u = url(&m, "/v1/completions");
        let v = post(&u, &[], &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say  this is a test"}))
            .await
            .json();
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["model"], "gpt-3.5-turbo-instruct");
        assert!(v["created"].is_u64());
        assert_eq!(
            v["choices"],
            json!([{"text": generated_text(8), "index": 0, "logprobs": null, "finish_reason": "stop"}])
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13})
        );

        // Several prompts: one choice each.
        let v = post(
            &u,
            &[("x-mock-output-tokens", "2")],
            &json!({"model": "i", "prompt": ["a b", "c"]}),
        )
        .await
        .json();
        assert_eq!(v["choices"].as_array().unwrap().len(), 2);
        assert_eq!(v["choices"][1]["index"], 1);
        assert_eq!(v["choices"][1]["text"], generated_text(2));
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
        // Token arrays count one token per element.
        let v = post(&u, &[], &json!({"model": "i", "prompt": [1, 2, 3, 4]}))
            .await
            .json();
        assert_eq!(v["usage"]["prompt_tokens"], 4);

        let r = post(
            &u,
            &[("x-mock-output-tokens", "3")],
            &json!({"model": "i", "prompt": "x y", "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert!(r.text().ends_with("data: [DONE]\n\n"));
        let chunks = sse_json(r.text());
        // 3 words, the finish chunk, the usage chunk.
        assert_eq!(chunks.len(), 5);
        for c in &chunks {
            assert_eq!(c["object"], "text_completion");
            assert_eq!(c["id"], chunks[0]["id"]);
        }
        let text: String = chunks[..3]
            .iter()
            .map(|c| c["choices"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, generated_text(3));
        assert!(chunks[..4].iter().all(|c| c["usage"].is_null()));
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(
            chunks[4]["usage"],
            json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
        );
        // Without include_usage: no usage chunk.
        let r = post(&u, &[("x-mock-output-tokens", "1")], &json!({"model": "i", "prompt": "x", "stream": true})).await;
        let chunks = sse_json(r.text());
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));

        let r = post(&u, &[], &json!({"prompt": "x"})).await;
        assert_eq!(r.status, 400);
        let r = post(&u, &[("x-mock-status", "500")], &json!({"model": "i"})).await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json()["error"]["type"], "server_error");
    })
    .await;
}

#[tokio::test]
async fn transcription_of_a_streamed_mebibyte_upload() {
    bounded(async {
        let m = MockServer::start(MockConfig {
            api_key: Some("k".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let audio: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let boundary = "XyZ-boundary";
        let body = multipart(
            boundary,
            &[("model", "whisper-1"), ("prompt", "names: Ann Bob")],
            Some(("speech.mp3", &audio)),
        );
        let ct = format!("multipart/form-data; boundary={boundary}");
        let u = url(&m, "/v1/audio/transcriptions");
        let auth = ("authorization", "Bearer k");
        let r = post_streamed(
            &u,
            &[auth, ("x-mock-output-tokens", "2")],
            &ct,
            body.clone(),
            64 << 10,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let text = format!(
            "transcribed 1048576 bytes with whisper-1: {}",
            generated_text(2)
        );
        assert_eq!(v["text"], text);
        // 3 prompt words + 1024 audio tokens (one per KiB); 7 words out.
        assert_eq!(
            v["usage"],
            json!({
                "type": "tokens", "input_tokens": 1027,
                "input_token_details": {"text_tokens": 3, "audio_tokens": 1024},
                "output_tokens": 7, "total_tokens": 1034
            })
        );
        let rec = m.requests();
        assert_eq!(rec[0].path, "/v1/audio/transcriptions");
        assert!(rec[0].body.is_null());

        // The key is checked; a fault is injected after the upload.
        let r = post_streamed(&u, &[], &ct, body.clone(), 64 << 10).await;
        assert_eq!(r.status, 401);
        let r = post_streamed(&u, &[auth, ("x-mock-status", "503")], &ct, body, 1 << 20).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"]["type"], "server_error");

        // Other formats, translations, bad forms.
        let r = post_form(
            &u,
            &[auth],
            &[("model", "gpt-4o-transcribe"), ("response_format", "text")],
            Some(("a.wav", b"12345")),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(
            r.text(),
            format!(
                "transcribed 5 bytes with gpt-4o-transcribe: {}\n",
                generated_text(8)
            )
        );
        let r = post_form(
            &u,
            &[auth],
            &[("model", "whisper-1"), ("response_format", "verbose_json")],
            Some(("a.wav", &[0u8; 32_000])),
        )
        .await;
        let v = r.json();
        assert_eq!(v["task"], "transcribe");
        assert_eq!(v["duration"], 2.0);
        assert!(v["segments"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("transcribed 32000 bytes"));
        let r = post_form(
            &url(&m, "/v1/audio/translations"),
            &[auth],
            &[("model", "whisper-1")],
            Some(("a.mp3", b"abc")),
        )
        .await;
        assert_eq!(
            r.json(),
            json!({"text": format!("translated 3 bytes with whisper-1: {}", generated_text(8))})
        );
        let r = post_form(&u, &[auth], &[("model", "whisper-1")], None).await;
        assert_eq!(r.status, 400);
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("file"));
        let r = post_form(&u, &[auth], &[], Some(("a.mp3", b"abc"))).await;
        assert_eq!(r.status, 400);
        let r = post(&u, &[auth], &json!({"model": "whisper-1"})).await;
        assert_eq!(r.status, 400);
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multipart"));

        // Streamed transcription: one delta per word, then done with usage.
        let r = post_form(
            &u,
            &[auth, ("x-mock-output-tokens", "1")],
            &[("model", "gpt-4o-transcribe"), ("stream", "true")],
            Some(("a.mp3", b"abcd")),
        )
        .await;
        let events = sse_json(r.text());
        assert_eq!(events.len(), 7);
        let text: String = events[..6]
            .iter()
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(
            text,
            format!(
                "transcribed 4 bytes with gpt-4o-transcribe: {}",
                generated_text(1)
            )
        );
        assert_eq!(events[6]["type"], "transcript.text.done");
        assert_eq!(events[6]["text"], text);
        assert_eq!(events[6]["usage"]["output_tokens"], 6);
    })
    .await;
}

#[tokio::test]
async fn speech_is_streamed_mp3_frames() {
    bounded(async {
        let m = start().await;
        let body = json!({"model": "tts-1", "input": "hello there big world", "voice": "alloy"});
        let req = request(
            Method::POST,
            &url(&m, "/v1/audio/speech"),
            &[],
            Bytes::from(body.to_string()),
        );
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "audio/mpeg");
        let mut b = resp.into_body();
        let mut frames = 0;
        let mut audio = Vec::new();
        while let Some(f) = b.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                frames += 1;
                audio.extend_from_slice(&d);
            }
        }
        assert_eq!(audio.len(), 4 * 417);
        assert!(frames >= 2, "{frames} frames");
        for frame in audio.chunks(417) {
            assert_eq!(&frame[..2], &[0xFF, 0xFB]);
        }
        // Deterministic.
        let again = send(
            Method::POST,
            &url(&m, "/v1/audio/speech"),
            &body.to_string(),
        )
        .await;
        assert_eq!(again.body.as_ref(), audio.as_slice());
        // A reset cuts the audio short.
        let req = request(
            Method::POST,
            &url(&m, "/v1/audio/speech"),
            &[("x-mock-reset-after-chunks", "2")],
            Bytes::from(body.to_string()),
        );
        let resp = client().request(req).await.unwrap();
        let mut b = resp.into_body();
        let mut got = 0;
        let mut failed = false;
        while let Some(f) = b.frame().await {
            match f {
                Ok(f) => got += f.into_data().map_or(0, |d| d.len()),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed);
        assert_eq!(got, 2 * 417);
        let r = post(
            &url(&m, "/v1/audio/speech"),
            &[],
            &json!({"model": "tts-1", "input": "x"}),
        )
        .await;
        assert_eq!(r.status, 400);
        let r = post(
            &url(&m, "/v1/audio/speech"),
            &[],
            &json!({"model": "tts-1", "input": "x", "voice": "a", "response_format": "wav"}),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("audio/wav"));
    })
    .await;
}

#[tokio::test]
async fn moderations_and_images() {
    bounded(async {
        let m = start().await;
        let u = url(&m, "/v1/moderations");
        let v = post(&u, &[], &json!({"input": ["a", "b"]})).await.json();
        assert!(v["id"].as_str().unwrap().starts_with("modr-"));
        assert_eq!(v["model"], "omni-moderation-latest");
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0]["flagged"], false);
        assert_eq!(results[0]["categories"]["violence"], false);
        assert!(results[0]["category_scores"]["hate"].as_f64().unwrap() < 0.01);
        let v = post(
            &u,
            &[("x-mock-content-filter", "true")],
            &json!({"model": "omni-moderation-2024-09-26", "input": "x"}),
        )
        .await
        .json();
        assert_eq!(v["model"], "omni-moderation-2024-09-26");
        assert_eq!(v["results"][0]["flagged"], true);
        assert_eq!(v["results"][0]["categories"]["violence"], true);
        assert_eq!(post(&u, &[], &json!({})).await.status, 400);

        let u = url(&m, "/v1/images/generations");
        let v = post(
            &u,
            &[],
            &json!({"model": "gpt-image-1", "prompt": "a red fox", "n": 2}),
        )
        .await
        .json();
        assert!(v["created"].is_u64());
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        let b64 = data[0]["b64_json"].as_str().unwrap();
        assert!(b64.starts_with("iVBORw0KGgo"), "{b64}");
        assert!(b64.len() < 200);
        assert_eq!(v["usage"]["input_tokens"], 3);
        assert_eq!(v["usage"]["output_tokens"], 16);
        let v = post(&u, &[], &json!({"prompt": "x", "response_format": "url"}))
            .await
            .json();
        assert!(v["data"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,"));
        assert_eq!(post(&u, &[], &json!({"n": 1})).await.status, 400);
        assert_eq!(
            post(&u, &[("x-mock-status", "429")], &json!({"prompt": "x"}))
                .await
                .status,
            429
        );
    })
    .await;
}

async fn next_text(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message in time")
        .expect("the socket is open")
        .expect("a valid message")
}

#[tokio::test]
async fn realtime_websocket_echo() {
    bounded(async {
        let m = MockServer::start(MockConfig {
            api_key: Some("k".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let ws_url = format!("ws://{}/v1/realtime?model=gpt-realtime-mini", m.addr());
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", "Bearer k".parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let hello = next_text(&mut ws).await;
        let v: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
        assert_eq!(v["type"], "session.created");
        assert_eq!(v["session"]["model"], "gpt-realtime-mini");
        assert_eq!(m.active_requests(), 1);

        ws.send(Message::text(r#"{"type":"session.update"}"#))
            .await
            .unwrap();
        assert_eq!(
            next_text(&mut ws).await,
            Message::text(r#"{"type":"session.update"}"#)
        );
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            next_text(&mut ws).await,
            Message::binary(vec![0u8, 1, 2, 255])
        );
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        for _ in 0..200 {
            if m.active_requests() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(m.active_requests(), 0);
        let rec = m.requests();
        assert_eq!(rec[0].path, "/v1/realtime?model=gpt-realtime-mini");

        // The key as a subprotocol (browsers); the chosen protocol comes back.
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "realtime, openai-insecure-api-key.k".parse().unwrap(),
        );
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "realtime");
        assert!(next_text(&mut ws).await.is_text());

        // No key: the handshake is refused.
        assert!(tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .is_err());
        // A plain GET is told to upgrade.
        let r = get(&url(&m, "/v1/realtime"), &[("authorization", "Bearer k")]).await;
        assert_eq!(r.status, 426);
        assert_eq!(r.header("upgrade"), Some("websocket"));
        assert!(r.json()["error"]["message"].is_string());

        // reset_after_chunks drops the connection after that many messages.
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", "Bearer k".parse().unwrap());
        req.headers_mut()
            .insert("x-mock-reset-after-chunks", "2".parse().unwrap());
        let (mut cut, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert!(next_text(&mut cut).await.is_text());
        cut.send(Message::text("one")).await.unwrap();
        assert_eq!(next_text(&mut cut).await, Message::text("one"));
        let end = tokio::time::timeout(Duration::from_secs(5), cut.next())
            .await
            .unwrap();
        assert!(
            !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
            "{end:?}"
        );

        // Shutdown closes open sessions too.
        m.shutdown().await;
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap();
        assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    })
    .await;
}
