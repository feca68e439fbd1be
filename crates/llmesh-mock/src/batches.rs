//! Batches, run to the end while the create request is answered:
//! OpenAI `/v1/batches` (JSONL input and output files in the file store)
//! and Anthropic `/v1/messages/batches` (results kept with the batch).
//!
//! Each request of a batch goes through the same code as its endpoint
//! (never streamed), under the behaviors of its model and the create
//! request's `x-mock-*` headers: an injected status (e.g. from a model
//! rule or `fail_percent`) fails that request alone. Timing faults apply to
//! the create request only.

use std::collections::HashSet;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{push_json_str, ActiveGuard, MockBody};
use crate::files::StoredFile;
use crate::openai::error_body_with;
use crate::server::{
    full_answer, injected_error, json_response, make_plan, query_param, unix_now, ApiError, Ctx,
    Dialect, Shared,
};
use crate::store::{limit_param, lock, page, rfc3339};
use crate::{anthropic, completions, moderations, openai, responses};

/// Endpoints an OpenAI batch may run.
const ENDPOINTS: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
    "/v1/moderations",
];

/// How long a batch (and its results) would be kept by the real APIs.
const EXPIRY_SECS: u64 = 24 * 3600;

/// An Anthropic message batch and its JSONL results.
pub(crate) struct MsgBatch {
    pub object: Value,
    pub results: Bytes,
}

/// Token usage summed over a batch's successful requests.
#[derive(Default)]
struct Usage {
    input: u64,
    cached: u64,
    output: u64,
}

impl Usage {
    /// Add the usage of one response body (chat, completions, embeddings,
    /// responses; moderations have none).
    fn add(&mut self, body: &str) {
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            return;
        };
        let u = &v["usage"];
        let num = |a: &str, b: &str| u[a].as_u64().or_else(|| u[b].as_u64()).unwrap_or(0);
        self.input += num("prompt_tokens", "input_tokens");
        self.output += num("completion_tokens", "output_tokens");
        self.cached += u
            .pointer("/prompt_tokens_details/cached_tokens")
            .or_else(|| u.pointer("/input_tokens_details/cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
    }

    fn json(&self) -> Value {
        json!({
            "input_tokens": self.input,
            "input_tokens_details": {"cached_tokens": self.cached},
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input + self.output,
        })
    }
}

/// One OpenAI batch request, as `url` would answer it (without streaming).
fn run_openai(
    sh: &Shared,
    headers: &HeaderMap,
    url: &str,
    body: &Value,
    id: u64,
) -> Result<String, ApiError> {
    let model = body.get("model").and_then(Value::as_str);
    let layers = sh
        .layers(model, headers)
        .map_err(|e| ApiError::openai(&e))?;
    if let Some(e) = injected_error(Dialect::OpenAi, &layers) {
        return Err(e);
    }
    match url {
        "/v1/chat/completions" => {
            let mut chat = openai::parse_chat(body).map_err(|e| ApiError::openai(&e))?;
            chat.stream = false;
            Ok(openai::render(&make_plan(&chat, &layers, id)))
        }
        "/v1/embeddings" => openai::render_embeddings(body, id).map_err(|e| ApiError::openai(&e)),
        "/v1/completions" => completions::run(body, &layers, id),
        "/v1/responses" => responses::run(sh, body, &layers, id),
        "/v1/moderations" => moderations::render(body, &layers, id),
        other => Err(ApiError::openai(&format!(
            "unsupported batch endpoint {other}"
        ))),
    }
}

fn line_error(code: &str, line: usize, message: &str, param: Option<&str>) -> Value {
    json!({"code": code, "line": line, "message": message, "param": param})
}

fn batch_not_found(id: &str) -> Response<MockBody> {
    ApiError {
        status: 404,
        body: error_body_with(
            &format!("No batch found with id '{id}'."),
            "invalid_request_error",
            Some("batch_id"),
            None,
        ),
    }
    .response()
}

fn missing(param: &str) -> Response<MockBody> {
    ApiError {
        status: 400,
        body: error_body_with(
            &format!("Missing required parameter: '{param}'."),
            "invalid_request_error",
            Some(param),
            Some("missing_required_parameter"),
        ),
    }
    .response()
}

/// `POST /v1/batches`: validate the input file, run every request, write
/// the output (and error) file, answer the finished batch.
pub(crate) fn create(ctx: &Ctx<'_>, body: &Value) -> Response<MockBody> {
    let sh = ctx.sh;
    let Some(input_file_id) = body.get("input_file_id").and_then(Value::as_str) else {
        return missing("input_file_id");
    };
    let Some(endpoint) = body.get("endpoint").and_then(Value::as_str) else {
        return missing("endpoint");
    };
    if !ENDPOINTS.contains(&endpoint) {
        return ApiError::openai(&format!(
            "Invalid value for 'endpoint': '{endpoint}'; llmesh-mock runs batches of {}.",
            ENDPOINTS.join(", ")
        ))
        .response();
    }
    let window = body
        .get("completion_window")
        .and_then(Value::as_str)
        .unwrap_or("24h");
    if window != "24h" {
        return ApiError::openai(&format!(
            "Invalid value for 'completion_window': '{window}'; supported: 24h."
        ))
        .response();
    }
    let data = lock(&sh.files)
        .get(input_file_id)
        .map(|f: &StoredFile| f.data.clone());
    let Some(data) = data else {
        return ApiError {
            status: 404,
            body: error_body_with(
                &format!("No such File object: {input_file_id}"),
                "invalid_request_error",
                Some("input_file_id"),
                None,
            ),
        }
        .response();
    };

    // Validate every line first: a bad line fails the whole batch, as in
    // the real API.
    let mut errors = Vec::new();
    let mut requests = Vec::new();
    let mut seen = HashSet::new();
    match std::str::from_utf8(&data) {
        Err(_) => errors.push(line_error(
            "invalid_json_line",
            1,
            "The input file is not UTF-8 text.",
            None,
        )),
        Ok(text) => {
            for (i, line) in text.lines().enumerate() {
                let n = i + 1;
                if line.trim().is_empty() {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    errors.push(line_error(
                        "invalid_json_line",
                        n,
                        "This line is not parseable as valid JSON.",
                        None,
                    ));
                    continue;
                };
                let Some(custom_id) = v.get("custom_id").and_then(Value::as_str) else {
                    errors.push(line_error(
                        "missing_required_parameter",
                        n,
                        "Missing required parameter: 'custom_id'.",
                        Some("custom_id"),
                    ));
                    continue;
                };
                if !seen.insert(custom_id.to_owned()) {
                    errors.push(line_error(
                        "duplicate_custom_id",
                        n,
                        &format!("The custom_id '{custom_id}' is not unique in this file."),
                        Some("custom_id"),
                    ));
                    continue;
                }
                if v.get("method").and_then(Value::as_str) != Some("POST") {
                    errors.push(line_error(
                        "invalid_method",
                        n,
                        "The method must be 'POST'.",
                        Some("method"),
                    ));
                    continue;
                }
                let url = v.get("url").and_then(Value::as_str).unwrap_or("");
                if url != endpoint {
                    errors.push(line_error(
                        "mismatched_endpoint",
                        n,
                        &format!(
                            "The provided url '{url}' does not match the batch endpoint '{endpoint}'."
                        ),
                        Some("url"),
                    ));
                    continue;
                }
                let Some(req_body) = v.get("body").filter(|b| b.is_object()) else {
                    errors.push(line_error(
                        "missing_required_parameter",
                        n,
                        "Missing required parameter: 'body'.",
                        Some("body"),
                    ));
                    continue;
                };
                requests.push((custom_id.to_owned(), req_body.clone()));
            }
        }
    }
    if errors.is_empty() && requests.is_empty() {
        errors.push(line_error(
            "empty_file",
            1,
            "The input file contains no requests.",
            None,
        ));
    }

    let now = unix_now();
    let batch_id = sh.new_id("batch_");
    let mut batch = json!({
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "errors": null,
        "input_file_id": input_file_id,
        "completion_window": window,
        "status": "completed",
        "output_file_id": null,
        "error_file_id": null,
        "created_at": now,
        "in_progress_at": now,
        "expires_at": now + EXPIRY_SECS,
        "finalizing_at": now,
        "completed_at": now,
        "failed_at": null,
        "expired_at": null,
        "cancelling_at": null,
        "cancelled_at": null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": Usage::default().json(),
        "metadata": body.get("metadata").cloned().unwrap_or(Value::Null),
    });
    if !errors.is_empty() {
        batch["status"] = json!("failed");
        batch["errors"] = json!({"object": "list", "data": errors});
        for k in ["in_progress_at", "finalizing_at", "completed_at"] {
            batch[k] = Value::Null;
        }
        batch["failed_at"] = json!(now);
    } else {
        let mut out = String::new();
        let mut err = String::new();
        let (mut completed, mut failed) = (0u64, 0u64);
        let mut usage = Usage::default();
        for (custom_id, req_body) in &requests {
            let id = sh.next_seq();
            let (dst, status, resp) =
                match run_openai(sh, &ctx.parts.headers, endpoint, req_body, id) {
                    Ok(b) => {
                        usage.add(&b);
                        completed += 1;
                        (&mut out, 200, b)
                    }
                    Err(e) => {
                        failed += 1;
                        (&mut err, e.status, e.body)
                    }
                };
            dst.push_str("{\"id\":");
            push_json_str(dst, &sh.new_id("batch_req_"));
            dst.push_str(",\"custom_id\":");
            push_json_str(dst, custom_id);
            dst.push_str(",\"response\":{\"status_code\":");
            dst.push_str(&status.to_string());
            dst.push_str(",\"request_id\":");
            push_json_str(dst, &sh.new_id("req_"));
            dst.push_str(",\"body\":");
            dst.push_str(&resp);
            dst.push_str("},\"error\":null}\n");
        }
        for (text, kind, key) in [
            (out, "output", "output_file_id"),
            (err, "error", "error_file_id"),
        ] {
            if text.is_empty() {
                continue;
            }
            let name = format!("{batch_id}_{kind}.jsonl");
            match crate::files::add(sh, &name, "batch_output", Bytes::from(text)) {
                Ok(f) => batch[key] = f["id"].clone(),
                Err(e) => return e.response(),
            }
        }
        batch["request_counts"] =
            json!({"total": completed + failed, "completed": completed, "failed": failed});
        batch["usage"] = usage.json();
    }
    lock(&sh.batches).insert(batch_id, batch.clone());
    json_response(StatusCode::OK, batch.to_string())
}

/// `GET /v1/batches/{id}`.
pub(crate) fn get(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    let b = lock(&ctx.sh.batches).get(id).cloned();
    match b {
        Some(b) => json_response(StatusCode::OK, b.to_string()),
        None => batch_not_found(id),
    }
}

/// `GET /v1/batches` (newest first; `limit` default 20, `after`).
pub(crate) fn list(ctx: &Ctx<'_>) -> Response<MockBody> {
    let q = ctx.query();
    let limit = limit_param(q, 20, 100);
    let store = lock(&ctx.sh.batches);
    let (data, has_more) = page(store.newest_first(), query_param(q, "after"), limit);
    let body = json!({
        "object": "list",
        "data": data.iter().map(|(_, b)| *b).collect::<Vec<_>>(),
        "first_id": data.first().map(|(k, _)| *k),
        "last_id": data.last().map(|(k, _)| *k),
        "has_more": has_more,
    });
    drop(store);
    json_response(StatusCode::OK, body.to_string())
}

/// `POST /v1/batches/{id}/cancel`: the batch becomes `cancelled` (its
/// results stay available).
pub(crate) fn cancel(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    let mut store = lock(&ctx.sh.batches);
    let Some(b) = store.get_mut(id) else {
        drop(store);
        return batch_not_found(id);
    };
    if b["status"] != "cancelled" {
        let now = unix_now();
        b["status"] = json!("cancelled");
        b["cancelling_at"] = json!(now);
        b["cancelled_at"] = json!(now);
    }
    let out = b.to_string();
    drop(store);
    json_response(StatusCode::OK, out)
}

fn anthropic_error(status: u16, message: &str) -> Response<MockBody> {
    Dialect::Anthropic.error(status, None, message)
}

fn msg_not_found(id: &str) -> Response<MockBody> {
    anthropic_error(404, &format!("message batch {id} not found"))
}

/// Scheme and authority clients reached us by (for `results_url`).
fn base_url(ctx: &Ctx<'_>) -> String {
    let host = ctx
        .parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| ctx.parts.uri.authority().map(ToString::to_string))
        .unwrap_or_else(|| ctx.sh.addr.to_string());
    format!("http://{host}")
}

fn valid_custom_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `POST /v1/messages/batches`.
pub(crate) fn msg_create(ctx: &Ctx<'_>, body: &Value) -> Response<MockBody> {
    let sh = ctx.sh;
    let Some(reqs) = body.get("requests").and_then(Value::as_array) else {
        return anthropic_error(400, "requests: Field required");
    };
    if reqs.is_empty() {
        return anthropic_error(400, "requests: List should have at least 1 item");
    }
    let mut seen = HashSet::new();
    let mut valid = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let Some(custom_id) = r.get("custom_id").and_then(Value::as_str) else {
            return anthropic_error(400, &format!("requests.{i}.custom_id: Field required"));
        };
        if !valid_custom_id(custom_id) {
            return anthropic_error(
                400,
                &format!("requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"),
            );
        }
        if !seen.insert(custom_id) {
            return anthropic_error(
                400,
                &format!("requests.{i}.custom_id: duplicate custom_id '{custom_id}'"),
            );
        }
        let Some(params) = r.get("params").filter(|p| p.is_object()) else {
            return anthropic_error(400, &format!("requests.{i}.params: Field required"));
        };
        valid.push((custom_id, params));
    }
    let mut results = String::new();
    let (mut succeeded, mut errored) = (0u64, 0u64);
    for (custom_id, params) in valid {
        let id = sh.next_seq();
        let model = params.get("model").and_then(Value::as_str);
        let outcome = sh
            .layers(model, &ctx.parts.headers)
            .map_err(|e| ApiError::new(Dialect::Anthropic, 400, &e))
            .and_then(|layers| match injected_error(Dialect::Anthropic, &layers) {
                Some(e) => Err(e),
                None => {
                    let mut chat = anthropic::parse_chat(params)
                        .map_err(|e| ApiError::new(Dialect::Anthropic, 400, &e))?;
                    chat.stream = false;
                    Ok(anthropic::render(&make_plan(&chat, &layers, id)))
                }
            });
        results.push_str("{\"custom_id\":");
        push_json_str(&mut results, custom_id);
        match outcome {
            Ok(msg) => {
                succeeded += 1;
                results.push_str(",\"result\":{\"type\":\"succeeded\",\"message\":");
                results.push_str(&msg);
            }
            Err(e) => {
                errored += 1;
                results.push_str(",\"result\":{\"type\":\"errored\",\"error\":");
                results.push_str(&e.body);
            }
        }
        results.push_str("}}\n");
    }
    let now = unix_now();
    let batch_id = sh.new_id("msgbatch_");
    let object = json!({
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {
            "processing": 0,
            "succeeded": succeeded,
            "errored": errored,
            "canceled": 0,
            "expired": 0,
        },
        "ended_at": rfc3339(now),
        "created_at": rfc3339(now),
        "expires_at": rfc3339(now + EXPIRY_SECS),
        "archived_at": null,
        "cancel_initiated_at": null,
        "results_url": format!("{}/v1/messages/batches/{batch_id}/results", base_url(ctx)),
    });
    let out = object.to_string();
    lock(&sh.msg_batches).insert(
        batch_id,
        MsgBatch {
            object,
            results: Bytes::from(results),
        },
    );
    json_response(StatusCode::OK, out)
}

/// `GET /v1/messages/batches/{id}`.
pub(crate) fn msg_get(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    let b = lock(&ctx.sh.msg_batches)
        .get(id)
        .map(|b| b.object.to_string());
    match b {
        Some(b) => json_response(StatusCode::OK, b),
        None => msg_not_found(id),
    }
}

/// `GET /v1/messages/batches` (newest first; `limit` default 20,
/// `after_id`).
pub(crate) fn msg_list(ctx: &Ctx<'_>) -> Response<MockBody> {
    let q = ctx.query();
    let limit = limit_param(q, 20, 1000);
    let store = lock(&ctx.sh.msg_batches);
    let (data, has_more) = page(store.newest_first(), query_param(q, "after_id"), limit);
    let body = json!({
        "data": data.iter().map(|(_, b)| &b.object).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": data.first().map(|(k, _)| *k),
        "last_id": data.last().map(|(k, _)| *k),
    });
    drop(store);
    json_response(StatusCode::OK, body.to_string())
}

/// `DELETE /v1/messages/batches/{id}`.
pub(crate) fn msg_delete(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    match lock(&ctx.sh.msg_batches).remove(id) {
        Some(_) => json_response(
            StatusCode::OK,
            json!({"id": id, "type": "message_batch_deleted"}).to_string(),
        ),
        None => msg_not_found(id),
    }
}

/// `GET /v1/messages/batches/{id}/results`: JSONL, one line per request in
/// the order given.
pub(crate) fn msg_results(ctx: &Ctx<'_>, id: &str, active: ActiveGuard) -> Response<MockBody> {
    let r = lock(&ctx.sh.msg_batches).get(id).map(|b| b.results.clone());
    match r {
        Some(r) => full_answer(r, "application/x-jsonl", ctx.layers, active),
        None => msg_not_found(id),
    }
}

/// `POST /v1/messages/batches/{id}/cancel`: records the cancel time (the
/// batch has ended already, so nothing else changes).
pub(crate) fn msg_cancel(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    let mut store = lock(&ctx.sh.msg_batches);
    let Some(b) = store.get_mut(id) else {
        drop(store);
        return msg_not_found(id);
    };
    if b.object["cancel_initiated_at"].is_null() {
        b.object["cancel_initiated_at"] = json!(rfc3339(unix_now()));
    }
    let out = b.object.to_string();
    drop(store);
    json_response(StatusCode::OK, out)
}
