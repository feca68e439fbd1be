//! The OpenAI Responses API: create (plain, streamed, tool calls),
//! storage, follow-ups with previous_response_id, faults.

mod support;

use bytes::Bytes;
use http::Method;
use llmesh_mock::{generated_text, Behavior, MockConfig, MockServer};
use serde_json::{json, Value};
use support::*;

fn url(m: &MockServer, path: &str) -> String {
    format!("{}{path}", m.url())
}

fn text_of(resp: &Value) -> &str {
    resp["output"][0]["content"][0]["text"]
        .as_str()
        .expect("a text output")
}

#[tokio::test]
async fn create_retrieve_list_items_delete() {
    bounded(async {
        let m = start().await;
        let r = post(
            &url(&m, "/v1/responses"),
            &[("x-mock-cached-tokens", "2")],
            &json!({"model": "gpt-r", "instructions": "be brief", "input": "hello there  world"}),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("resp_") && id.len() > 10, "{id}");
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["model"], "gpt-r");
        assert_eq!(v["instructions"], "be brief");
        assert!(v["previous_response_id"].is_null());
        let item = &v["output"][0];
        assert_eq!(item["type"], "message");
        assert_eq!(item["role"], "assistant");
        assert!(item["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(item["content"][0]["type"], "output_text");
        assert_eq!(text_of(&v), generated_text(8));
        let u = &v["usage"];
        assert_eq!(u["input_tokens"], 5);
        assert_eq!(u["input_tokens_details"]["cached_tokens"], 2);
        assert_eq!(u["output_tokens"], 8);
        assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0);
        assert_eq!(u["total_tokens"], 13);

        let got = get(&url(&m, &format!("/v1/responses/{id}")), &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json(), v);
        assert_eq!(m.stored_response(&id), Some(v.clone()));

        let items = get(&url(&m, &format!("/v1/responses/{id}/input_items")), &[])
            .await
            .json();
        assert_eq!(items["object"], "list");
        assert_eq!(items["has_more"], false);
        let data = items["data"].as_array().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["type"], "message");
        assert_eq!(data[0]["role"], "user");
        assert_eq!(
            data[0]["content"],
            json!([{"type": "input_text", "text": "hello there  world"}])
        );
        assert_eq!(items["first_id"], data[0]["id"]);
        assert_eq!(items["last_id"], data[0]["id"]);

        let del = send(Method::DELETE, &url(&m, &format!("/v1/responses/{id}")), "").await;
        assert_eq!(del.status, 200);
        assert_eq!(
            del.json(),
            json!({"id": id, "object": "response.deleted", "deleted": true})
        );
        let gone = get(&url(&m, &format!("/v1/responses/{id}")), &[]).await;
        assert_eq!(gone.status, 404);
        assert_eq!(gone.json()["error"]["type"], "invalid_request_error");
        assert_eq!(
            send(Method::DELETE, &url(&m, &format!("/v1/responses/{id}")), "")
                .await
                .status,
            404
        );
        // Recorded like every API request.
        let log = m.requests();
        assert_eq!(log[0].path, "/v1/responses");
        assert_eq!(log[0].body["model"], "gpt-r");
        assert_eq!(log[1].method, "GET");
    })
    .await;
}

#[tokio::test]
async fn input_items_of_an_array_input_in_both_orders() {
    bounded(async {
        let m = start().await;
        let v = post(
            &url(&m, "/v1/responses"),
            &[],
            &json!({"model": "m", "input": [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "two"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "three four"}]}
            ]}),
        )
        .await
        .json();
        assert_eq!(v["usage"]["input_tokens"], 4);
        let id = v["id"].as_str().unwrap();
        let desc = get(&url(&m, &format!("/v1/responses/{id}/input_items")), &[])
            .await
            .json();
        let texts = |l: &Value| -> Vec<String> {
            l["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["content"][0]["text"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(texts(&desc), ["three four", "two", "one"]);
        assert_eq!(desc["data"][1]["content"][0]["type"], "output_text");
        let asc = get(
            &url(&m, &format!("/v1/responses/{id}/input_items?order=asc&limit=2")),
            &[],
        )
        .await
        .json();
        assert_eq!(texts(&asc), ["one", "two"]);
        assert_eq!(asc["has_more"], true);
    })
    .await;
}

#[tokio::test]
async fn streamed_events_in_order_with_sequence_numbers() {
    bounded(async {
        let m = start().await;
        let r = post(
            &url(&m, "/v1/responses"),
            &[("x-mock-output-tokens", "3")],
            &json!({"model": "gpt-s", "input": "a b", "stream": true}),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let events = sse(r.text());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let data = sse_json(r.text());
        for (i, (d, name)) in data.iter().zip(&names).enumerate() {
            assert_eq!(d["type"], *name);
            assert_eq!(d["sequence_number"], i);
        }
        assert_eq!(data[0]["response"]["status"], "in_progress");
        assert_eq!(data[0]["response"]["output"], json!([]));
        let deltas: String = data.iter().filter_map(|d| d["delta"].as_str()).collect();
        assert_eq!(deltas, generated_text(3));
        assert_eq!(data[7]["text"], generated_text(3));
        let item_id = &data[2]["item"]["id"];
        assert!(data[4..8].iter().all(|d| d["item_id"] == *item_id));
        let done = &data[10]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(text_of(done), generated_text(3));
        assert_eq!(done["usage"]["input_tokens"], 2);
        assert_eq!(done["usage"]["output_tokens"], 3);
        assert_eq!(done["usage"]["total_tokens"], 5);
        // The streamed response is stored as well.
        let id = done["id"].as_str().unwrap();
        assert_eq!(
            get(&url(&m, &format!("/v1/responses/{id}")), &[])
                .await
                .json(),
            *done
        );
    })
    .await;
}

#[tokio::test]
async fn previous_response_id_counts_the_conversation() {
    bounded(async {
        let m = start().await;
        let create = |body: Value| {
            let u = url(&m, "/v1/responses");
            async move { post(&u, &[], &body).await }
        };
        // 2 instruction words + 3 input words; 8 output words.
        let first =
            create(json!({"model": "m", "instructions": "sys word", "input": "one two three"}))
                .await
                .json();
        assert_eq!(first["usage"]["input_tokens"], 5);
        let id1 = first["id"].as_str().unwrap();
        // The previous input (3) and output (8), not its instructions, + 2.
        let second =
            create(json!({"model": "m", "input": "four five", "previous_response_id": id1}))
                .await
                .json();
        assert_eq!(second["previous_response_id"], id1);
        assert_eq!(second["usage"]["input_tokens"], 13);
        let id2 = second["id"].as_str().unwrap();
        // The whole chain: 13 + 8 + 1, plus new instructions (1).
        let third = create(json!({
            "model": "m", "instructions": "again", "input": [{"role": "user", "content": "six"}],
            "previous_response_id": id2
        }))
        .await
        .json();
        assert_eq!(third["usage"]["input_tokens"], 23);

        // input_tokens says the same as create would.
        let count = post(
            &url(&m, "/v1/responses/input_tokens"),
            &[],
            &json!({"model": "m", "input": "four five", "previous_response_id": id1}),
        )
        .await
        .json();
        assert_eq!(
            count,
            json!({"object": "response.input_tokens", "input_tokens": 13})
        );

        let r =
            create(json!({"model": "m", "input": "x", "previous_response_id": "resp_nope"})).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            r.json(),
            json!({"error": {
                "message": "Previous response with id 'resp_nope' not found.",
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "previous_response_not_found"
            }})
        );

        // store: false is not kept.
        let unstored = create(json!({"model": "m", "input": "x", "store": false}))
            .await
            .json();
        let uid = unstored["id"].as_str().unwrap();
        assert_eq!(unstored["store"], false);
        assert_eq!(
            get(&url(&m, &format!("/v1/responses/{uid}")), &[])
                .await
                .status,
            404
        );
        let r = create(json!({"model": "m", "input": "x", "previous_response_id": uid})).await;
        assert_eq!(r.status, 404);
    })
    .await;
}

fn tool_body(stream: bool) -> Value {
    json!({
        "model": "gpt-t",
        "stream": stream,
        "input": "weather in paris?",
        "tools": [
            {"type": "web_search"},
            {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
        ]
    })
}

#[tokio::test]
async fn function_calls_plain_streamed_and_the_loop_end() {
    bounded(async {
        let m = start().await;
        let u = url(&m, "/v1/responses");
        let v = post(&u, &[], &tool_body(false)).await.json();
        let item = &v["output"][0];
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["name"], "get_weather");
        assert_eq!(item["status"], "completed");
        assert!(item["call_id"].as_str().unwrap().starts_with("call_"));
        assert!(item["id"].as_str().unwrap().starts_with("fc_"));
        let args: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        assert_eq!(v["usage"]["input_tokens"], 3);

        // Streamed, with the behavior's arguments.
        let r = post(
            &u,
            &[("x-mock-tool-args", r#"{"q":"x y"}"#)],
            &tool_body(true),
        )
        .await;
        let events = sse_json(r.text());
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[2]["item"]["type"], "function_call");
        assert_eq!(events[2]["item"]["arguments"], "");
        let args: String = events[3..5]
            .iter()
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(args, r#"{"q":"x y"}"#);
        assert_eq!(events[5]["arguments"], r#"{"q":"x y"}"#);
        assert_eq!(events[7]["response"]["output"][0]["arguments"], r#"{"q":"x y"}"#);

        // Tool calls can be turned off.
        let v = post(&u, &[("x-mock-tool-call", "false")], &tool_body(false))
            .await
            .json();
        assert_eq!(v["output"][0]["type"], "message");

        // A function_call_output ends the loop; its output counts.
        let call_id = item["call_id"].as_str().unwrap();
        let v = post(
            &u,
            &[],
            &json!({
                "model": "gpt-t",
                "previous_response_id": v["id"],
                "tools": [{"type": "function", "name": "get_weather"}],
                "input": [{"type": "function_call_output", "call_id": call_id, "output": "sunny and warm"}]
            }),
        )
        .await
        .json();
        assert_eq!(v["output"][0]["type"], "message");
        // previous: 3 input + 8 output words; now 3.
        assert_eq!(v["usage"]["input_tokens"], 14);
    })
    .await;
}

#[tokio::test]
async fn faults_errors_and_auth() {
    bounded(async {
        let m = MockServer::start(MockConfig {
            api_key: Some("k".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let u = url(&m, "/v1/responses");
        let auth = ("authorization", "Bearer k");
        let body = json!({"model": "m", "input": "hi"});
        let r = post(&u, &[], &body).await;
        assert_eq!(r.status, 401);
        assert!(r.json()["error"]["message"].is_string());
        let r = post(&u, &[auth, ("x-mock-status", "429"), ("x-mock-retry-after-s", "3")], &body).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("3"));
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
        m.set_model_behavior(
            "broken",
            Behavior {
                status: Some(503),
                ..Default::default()
            },
        );
        let r = post(&u, &[auth], &json!({"model": "broken", "input": "hi"})).await;
        assert_eq!(r.status, 503);
        // Bad requests.
        let r = post(&u, &[auth], &json!({"input": "hi"})).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["param"], "model");
        let r = post(&u, &[auth], &json!({"model": "m", "input": 5})).await;
        assert_eq!(r.status, 400);
        assert_eq!(get(&u, &[auth]).await.status, 405);

        // A broken stream: three events, then the connection fails.
        let mut b = body.clone();
        b["stream"] = json!(true);
        let req = request(
            Method::POST,
            &u,
            &[auth, ("x-mock-reset-after-chunks", "3")],
            Bytes::from(b.to_string()),
        );
        let (status, got, failed) = read_until_error(&client(), req).await;
        assert_eq!(status, 200);
        assert!(failed);
        assert_eq!(sse(&got).len(), 3);
        assert!(!got.contains("response.completed"));

        // content_filter: an incomplete response.
        let v = post(&u, &[auth, ("x-mock-content-filter", "true")], &body)
            .await
            .json();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "content_filter");
        b["stream"] = json!(true);
        let r = post(&u, &[auth, ("x-mock-content-filter", "true")], &b).await;
        let events = sse_json(r.text());
        assert_eq!(events.last().unwrap()["type"], "response.incomplete");

        // Echo and omitted usage.
        let v = post(
            &u,
            &[auth, ("x-mock-behavior", r#"{"echo_chunk_chars":2,"omit_usage":true}"#)],
            &json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "echo me"}]}]}),
        )
        .await
        .json();
        assert_eq!(text_of(&v), "echo me");
        assert!(v["usage"].is_null());
    })
    .await;
}
