//! Files and batches (OpenAI and Anthropic).

mod support;

use http::Method;
use llmesh_mock::{generated_text, Behavior, MockServer};
use serde_json::{json, Value};
use support::*;

fn url(m: &MockServer, path: &str) -> String {
    format!("{}{path}", m.url())
}

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

#[tokio::test]
async fn files_upload_list_retrieve_content_delete() {
    bounded(async {
        let m = start().await;
        // ~1 MiB, streamed to the server in 16 KiB frames.
        let data: Vec<u8> = (0..(1u32 << 20) + 7).map(|i| (i * 7 % 256) as u8).collect();
        let boundary = "files-boundary";
        let body = multipart(boundary, &[("purpose", "batch")], Some(("big.bin", &data)));
        let r = post_streamed(
            &url(&m, "/v1/files"),
            &[],
            &format!("multipart/form-data; boundary={boundary}"),
            body,
            16 << 10,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let f = r.json();
        let id = f["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("file-"), "{id}");
        assert_eq!(f["object"], "file");
        assert_eq!(f["bytes"], data.len());
        assert_eq!(f["filename"], "big.bin");
        assert_eq!(f["purpose"], "batch");
        assert_eq!(f["status"], "processed");
        assert!(f["created_at"].is_u64());

        let c = get(&url(&m, &format!("/v1/files/{id}/content")), &[]).await;
        assert_eq!(c.status, 200);
        assert_eq!(c.header("content-type"), Some("application/octet-stream"));
        assert_eq!(c.body.as_ref(), data.as_slice());
        assert_eq!(m.file_content(&id).unwrap(), data);
        assert_eq!(
            get(&url(&m, &format!("/v1/files/{id}")), &[]).await.json(),
            f
        );

        // Purpose last this time, and a .jsonl file.
        let r = post_form(
            &url(&m, "/v1/files"),
            &[],
            &[("purpose", "user_data")],
            Some(("notes.jsonl", b"{\"a\":1}\n")),
        )
        .await;
        let f2 = r.json();
        let id2 = f2["id"].as_str().unwrap();
        let c = get(&url(&m, &format!("/v1/files/{id2}/content")), &[]).await;
        assert_eq!(c.header("content-type"), Some("application/jsonl"));

        let list = get(&url(&m, "/v1/files"), &[]).await.json();
        assert_eq!(list["object"], "list");
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [id2, id.as_str()]);
        assert_eq!(list["has_more"], false);
        let only = get(&url(&m, "/v1/files?purpose=batch"), &[]).await.json();
        assert_eq!(only["data"].as_array().unwrap().len(), 1);
        let asc = get(&url(&m, "/v1/files?order=asc&limit=1"), &[])
            .await
            .json();
        assert_eq!(asc["data"][0]["id"], id);
        assert_eq!(asc["has_more"], true);

        let d = send(Method::DELETE, &url(&m, &format!("/v1/files/{id}")), "").await;
        assert_eq!(
            d.json(),
            json!({"id": id, "object": "file", "deleted": true})
        );
        for path in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content")] {
            let r = get(&url(&m, &path), &[]).await;
            assert_eq!(r.status, 404);
            assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        }
        assert_eq!(
            send(Method::DELETE, &url(&m, &format!("/v1/files/{id}")), "")
                .await
                .status,
            404
        );

        // Bad uploads.
        let r = post_form(
            &url(&m, "/v1/files"),
            &[],
            &[("purpose", "nope")],
            Some(("a", b"x")),
        )
        .await;
        assert_eq!(r.status, 400);
        let r = post_form(&url(&m, "/v1/files"), &[], &[("purpose", "batch")], None).await;
        assert_eq!(r.status, 400);
        let r = post_form(&url(&m, "/v1/files"), &[], &[], Some(("a", b"x"))).await;
        assert_eq!(r.status, 400);
        assert_eq!(
            send(Method::PUT, &url(&m, "/v1/files"), "").await.status,
            405
        );
    })
    .await;
}

#[tokio::test]
async fn file_storage_is_bounded() {
    bounded(async {
        let m = start().await;
        let big = vec![b'x'; 63 << 20];
        m.add_file("big", "user_data", &big).unwrap();
        let r = post_form(
            &url(&m, "/v1/files"),
            &[],
            &[("purpose", "user_data")],
            Some(("more", &vec![0u8; 2 << 20])),
        )
        .await;
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("full"));
        // A small one still fits.
        let r = post_form(
            &url(&m, "/v1/files"),
            &[],
            &[("purpose", "user_data")],
            Some(("s", b"ok")),
        )
        .await;
        assert_eq!(r.status, 200);
    })
    .await;
}

fn chat_line(id: &str, model: &str, text: &str) -> String {
    json!({
        "custom_id": id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}]}
    })
    .to_string()
}

#[tokio::test]
async fn openai_batch_runs_and_writes_usage() {
    bounded(async {
        let m = start().await;
        m.set_model_behavior(
            "broken",
            Behavior {
                status: Some(500),
                ..Default::default()
            },
        );
        m.set_model_behavior(
            "short",
            Behavior {
                output_tokens: Some(2),
                cached_tokens: Some(1),
                ..Default::default()
            },
        );
        let input = [
            chat_line("r1", "gpt-4o-mini", "one two three"),
            String::new(),
            chat_line("r2", "short", "four five"),
            chat_line("r3", "broken", "x"),
        ]
        .join("\n");
        let up = post_form(
            &url(&m, "/v1/files"),
            &[],
            &[("purpose", "batch")],
            Some(("in.jsonl", input.as_bytes())),
        )
        .await
        .json();
        let b = post(
            &url(&m, "/v1/batches"),
            &[],
            &json!({
                "input_file_id": up["id"], "endpoint": "/v1/chat/completions",
                "completion_window": "24h", "metadata": {"job": "nightly"}
            }),
        )
        .await;
        assert_eq!(b.status, 200, "{}", b.text());
        let b = b.json();
        let bid = b["id"].as_str().unwrap().to_owned();
        assert!(bid.starts_with("batch_"));
        assert_eq!(b["object"], "batch");
        assert_eq!(b["status"], "completed");
        assert_eq!(b["endpoint"], "/v1/chat/completions");
        assert_eq!(b["input_file_id"], up["id"]);
        assert_eq!(b["metadata"], json!({"job": "nightly"}));
        assert_eq!(
            b["request_counts"],
            json!({"total": 3, "completed": 2, "failed": 1})
        );
        for k in [
            "created_at",
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "expires_at",
        ] {
            assert!(b[k].is_u64(), "{k}");
        }
        assert!(b["errors"].is_null());
        // 3 + 2 input, 8 + 2 output, 1 cached.
        assert_eq!(b["usage"]["input_tokens"], 5);
        assert_eq!(b["usage"]["output_tokens"], 10);
        assert_eq!(b["usage"]["total_tokens"], 15);
        assert_eq!(b["usage"]["input_tokens_details"]["cached_tokens"], 1);

        let out_id = b["output_file_id"].as_str().unwrap();
        let out = get(&url(&m, &format!("/v1/files/{out_id}/content")), &[]).await;
        assert_eq!(out.header("content-type"), Some("application/jsonl"));
        let lines = jsonl(out.text());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["custom_id"], "r1");
        assert!(lines[0]["id"].as_str().unwrap().starts_with("batch_req_"));
        assert!(lines[0]["error"].is_null());
        let resp = &lines[0]["response"];
        assert_eq!(resp["status_code"], 200);
        assert!(resp["request_id"].is_string());
        let body = &resp["body"];
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["choices"][0]["message"]["content"], generated_text(8));
        assert_eq!(
            (
                body["usage"]["prompt_tokens"].as_u64(),
                body["usage"]["completion_tokens"].as_u64()
            ),
            (Some(3), Some(8))
        );
        let body = &lines[1]["response"]["body"];
        assert_eq!(lines[1]["custom_id"], "r2");
        assert_eq!(body["model"], "short");
        assert_eq!(body["usage"]["prompt_tokens"], 2);
        assert_eq!(body["usage"]["completion_tokens"], 2);
        assert_eq!(body["usage"]["total_tokens"], 4);
        assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 1);

        let err_id = b["error_file_id"].as_str().unwrap();
        let errs = jsonl(&String::from_utf8(m.file_content(err_id).unwrap()).unwrap());
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0]["custom_id"], "r3");
        assert_eq!(errs[0]["response"]["status_code"], 500);
        assert_eq!(errs[0]["response"]["body"]["error"]["type"], "server_error");
        let out_file = get(&url(&m, &format!("/v1/files/{out_id}")), &[])
            .await
            .json();
        assert_eq!(out_file["purpose"], "batch_output");

        // Retrieve, list, cancel.
        assert_eq!(
            get(&url(&m, &format!("/v1/batches/{bid}")), &[])
                .await
                .json(),
            b
        );
        let list = get(&url(&m, "/v1/batches"), &[]).await.json();
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"][0]["id"], bid);
        assert_eq!(list["has_more"], false);
        let c = post(
            &url(&m, &format!("/v1/batches/{bid}/cancel")),
            &[],
            &Value::Null,
        )
        .await;
        assert_eq!(c.status, 200);
        let c = c.json();
        assert_eq!(c["status"], "cancelled");
        assert!(c["cancelled_at"].is_u64());
        assert_eq!(
            get(&url(&m, "/v1/batches/batch_nope"), &[]).await.status,
            404
        );
        assert_eq!(
            post(&url(&m, "/v1/batches/batch_nope/cancel"), &[], &Value::Null)
                .await
                .status,
            404
        );
    })
    .await;
}

#[tokio::test]
async fn openai_batch_of_embeddings_and_responses_and_invalid_files() {
    bounded(async {
        let m = start().await;
        let lines = [
            json!({"custom_id": "e1", "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "text-embedding-3-small", "input": "a b c"}}),
            json!({"custom_id": "e2", "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "text-embedding-3-small", "input": ["d", "e f"]}}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let fid = m.add_file("emb.jsonl", "batch", text.as_bytes()).unwrap();
        let b = post(
            &url(&m, "/v1/batches"),
            &[],
            &json!({"input_file_id": fid, "endpoint": "/v1/embeddings", "completion_window": "24h"}),
        )
        .await
        .json();
        assert_eq!(b["request_counts"]["completed"], 2);
        assert_eq!(b["usage"]["input_tokens"], 6);
        assert!(b["error_file_id"].is_null());
        let out = jsonl(
            &String::from_utf8(m.file_content(b["output_file_id"].as_str().unwrap()).unwrap())
                .unwrap(),
        );
        assert_eq!(out[1]["response"]["body"]["data"].as_array().unwrap().len(), 2);
        assert_eq!(out[1]["response"]["body"]["usage"]["prompt_tokens"], 3);

        let line = json!({"custom_id": "r", "method": "POST", "url": "/v1/responses",
                          "body": {"model": "m", "input": "one two"}});
        let fid = m.add_file("r.jsonl", "batch", line.to_string().as_bytes()).unwrap();
        let b = post(
            &url(&m, "/v1/batches"),
            &[],
            &json!({"input_file_id": fid, "endpoint": "/v1/responses", "completion_window": "24h"}),
        )
        .await
        .json();
        assert_eq!(b["usage"]["input_tokens"], 2);
        assert_eq!(b["usage"]["output_tokens"], 8);

        // A bad line fails the batch as a whole.
        let text = format!(
            "{}\nnot json\n{}\n",
            chat_line("a", "m", "x"),
            json!({"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {}})
        );
        let fid = m.add_file("bad.jsonl", "batch", text.as_bytes()).unwrap();
        let b = post(
            &url(&m, "/v1/batches"),
            &[],
            &json!({"input_file_id": fid, "endpoint": "/v1/chat/completions"}),
        )
        .await
        .json();
        assert_eq!(b["status"], "failed");
        assert!(b["failed_at"].is_u64());
        assert!(b["output_file_id"].is_null());
        let errors = b["errors"]["data"].as_array().unwrap();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0]["code"], "invalid_json_line");
        assert_eq!(errors[0]["line"], 2);
        assert_eq!(errors[1]["code"], "mismatched_endpoint");
        assert_eq!(errors[1]["line"], 3);

        // Bad creates.
        let r = post(&url(&m, "/v1/batches"), &[], &json!({"endpoint": "/v1/embeddings"})).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["param"], "input_file_id");
        let r = post(
            &url(&m, "/v1/batches"),
            &[],
            &json!({"input_file_id": "file-nope", "endpoint": "/v1/embeddings"}),
        )
        .await;
        assert_eq!(r.status, 404);
        let r = post(
            &url(&m, "/v1/batches"),
            &[],
            &json!({"input_file_id": fid, "endpoint": "/v1/images/generations"}),
        )
        .await;
        assert_eq!(r.status, 400);
        let r = post(
            &url(&m, "/v1/batches"),
            &[("x-mock-status", "503")],
            &json!({"input_file_id": fid, "endpoint": "/v1/chat/completions"}),
        )
        .await;
        assert_eq!(r.status, 503);
    })
    .await;
}

#[tokio::test]
async fn anthropic_message_batches() {
    bounded(async {
        let m = start().await;
        m.set_model_behavior(
            "claude-broken",
            Behavior {
                status: Some(529),
                ..Default::default()
            },
        );
        let h = [("anthropic-version", "2023-06-01")];
        let params = |model: &str, text: &str| {
            json!({"model": model, "max_tokens": 100, "system": "be kind",
                   "messages": [{"role": "user", "content": text}]})
        };
        let r = post(
            &url(&m, "/v1/messages/batches"),
            &h,
            &json!({"requests": [
                {"custom_id": "first", "params": params("claude-sonnet-4-5", "hello big world")},
                {"custom_id": "second", "params": params("claude-broken", "x")},
                {"custom_id": "third", "params": {"model": "claude-sonnet-4-5"}}
            ]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let b = r.json();
        let bid = b["id"].as_str().unwrap().to_owned();
        assert!(bid.starts_with("msgbatch_"));
        assert_eq!(b["type"], "message_batch");
        assert_eq!(b["processing_status"], "ended");
        assert_eq!(
            b["request_counts"],
            json!({"processing": 0, "succeeded": 1, "errored": 2, "canceled": 0, "expired": 0})
        );
        assert!(b["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(b["ended_at"].is_string());
        let results_url = b["results_url"].as_str().unwrap();
        assert_eq!(
            results_url,
            format!("{}/v1/messages/batches/{bid}/results", m.url())
        );

        let res = get(results_url, &h).await;
        assert_eq!(res.status, 200);
        let lines = jsonl(res.text());
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["custom_id"], "first");
        assert_eq!(lines[0]["result"]["type"], "succeeded");
        let msg = &lines[0]["result"]["message"];
        assert_eq!(msg["type"], "message");
        assert_eq!(msg["model"], "claude-sonnet-4-5");
        assert_eq!(msg["content"][0]["text"], generated_text(8));
        assert_eq!(msg["usage"]["input_tokens"], 5);
        assert_eq!(msg["usage"]["output_tokens"], 8);
        assert_eq!(lines[1]["result"]["type"], "errored");
        assert_eq!(lines[1]["result"]["error"]["type"], "error");
        assert_eq!(
            lines[1]["result"]["error"]["error"]["type"],
            "overloaded_error"
        );
        assert_eq!(
            lines[2]["result"]["error"]["error"]["type"],
            "invalid_request_error"
        );

        assert_eq!(
            get(&url(&m, &format!("/v1/messages/batches/{bid}")), &h)
                .await
                .json(),
            b
        );
        let list = get(&url(&m, "/v1/messages/batches"), &h).await.json();
        assert_eq!(list["data"][0]["id"], bid);
        assert_eq!(list["has_more"], false);
        let c = post(
            &url(&m, &format!("/v1/messages/batches/{bid}/cancel")),
            &h,
            &Value::Null,
        )
        .await
        .json();
        assert!(c["cancel_initiated_at"].is_string());
        let d = send(
            Method::DELETE,
            &url(&m, &format!("/v1/messages/batches/{bid}")),
            "",
        )
        .await;
        assert_eq!(d.json(), json!({"id": bid, "type": "message_batch_deleted"}));
        let r = get(&url(&m, &format!("/v1/messages/batches/{bid}")), &h).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"]["type"], "not_found_error");
        assert_eq!(get(results_url, &h).await.status, 404);

        // Bad creates, Anthropic-style.
        for body in [
            json!({}),
            json!({"requests": []}),
            json!({"requests": [{"custom_id": "has space", "params": {}}]}),
            json!({"requests": [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]}),
        ] {
            let r = post(&url(&m, "/v1/messages/batches"), &h, &body).await;
            assert_eq!(r.status, 400, "{body}");
            assert_eq!(r.json()["type"], "error");
        }
    })
    .await;
}
