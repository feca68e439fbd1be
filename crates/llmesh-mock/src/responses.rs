//! OpenAI Responses API: `POST /v1/responses` (plain and streamed),
//! `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`
//! and `POST /v1/responses/input_tokens`.
//!
//! Responses are built as `serde_json::Value`s (they are stored and served
//! again); stored ones are kept in memory, at most [`MAX_STORED`].

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::behavior::Layers;
use crate::body::{ActiveGuard, Events, MockBody};
use crate::common::{count_words, ChatReq, Plan};
use crate::openai::error_body_with;
use crate::server::{full_answer, json_response, make_plan, stream_answer, ApiError, Ctx, Shared};
use crate::store::{limit_param, lock, page};

/// Responses kept for `previous_response_id` and retrieval; the oldest go
/// first.
pub(crate) const MAX_STORED: usize = 1000;

pub(crate) struct StoredResponse {
    /// The response object as returned by create.
    pub response: Value,
    /// The request's input items, with ids.
    pub input_items: Vec<Value>,
    /// Words of the conversation so far (the previous responses' inputs
    /// and outputs, this input and this output; instructions are not
    /// carried over, as in the real API).
    pub conversation_words: u64,
}

/// What a create request asks for.
struct Req<'a> {
    model: &'a str,
    stream: bool,
    store: bool,
    /// Input items, normalized (`type` set, message content as parts), no
    /// ids yet.
    items: Vec<Value>,
    /// Words of the input (not the instructions).
    input_words: u64,
    instructions_words: u64,
    previous: Option<(&'a str, u64)>,
    last_user_text: Option<String>,
    /// The function tool to call, unless the behavior says otherwise.
    tool: Option<&'a str>,
}

impl Req<'_> {
    fn input_tokens(&self) -> u64 {
        (self.instructions_words + self.input_words + self.previous.map_or(0, |p| p.1)).max(1)
    }
}

fn bad(message: &str, param: Option<&str>, code: Option<&str>) -> ApiError {
    ApiError {
        status: 400,
        body: error_body_with(message, "invalid_request_error", param, code),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError {
        status: 404,
        body: error_body_with(
            &format!("Response with id '{id}' not found."),
            "invalid_request_error",
            None,
            None,
        ),
    }
}

/// An input item as `input_items` lists it.
fn normalize(item: &Value) -> Value {
    let mut item = item.clone();
    if let Some(o) = item.as_object_mut() {
        if !o.contains_key("type") && o.contains_key("role") {
            o.insert("type".into(), json!("message"));
        }
        if o.get("type").and_then(Value::as_str) == Some("message") {
            let part_type = if o.get("role").and_then(Value::as_str) == Some("assistant") {
                "output_text"
            } else {
                "input_text"
            };
            if let Some(Value::String(text)) = o.get("content") {
                let parts = json!([{"type": part_type, "text": text}]);
                o.insert("content".into(), parts);
            }
            o.entry("status").or_insert_with(|| json!("completed"));
        }
    }
    item
}

/// The first function tool declared (`{"type":"function","name":..}`, or
/// the chat-style nested `function.name`).
fn first_function_tool(body: &Value) -> Option<&str> {
    body.get("tools")?.as_array()?.iter().find_map(|t| {
        let ty = t.get("type").and_then(Value::as_str);
        if ty.is_some_and(|ty| ty != "function") {
            return None;
        }
        t.get("name")
            .or_else(|| t.pointer("/function/name"))
            .and_then(Value::as_str)
    })
}

fn parse<'a>(sh: &Shared, body: &'a Value) -> Result<Req<'a>, ApiError> {
    if !body.is_object() {
        return Err(bad("the request body must be a JSON object", None, None));
    }
    let model = body.get("model").and_then(Value::as_str).ok_or_else(|| {
        bad(
            "Missing required parameter: 'model'.",
            Some("model"),
            Some("missing_required_parameter"),
        )
    })?;
    let (items, input_words, last_user_text, last_is_output) = match body.get("input") {
        None | Some(Value::Null) => (Vec::new(), 0, None, false),
        Some(Value::String(s)) => (
            vec![normalize(&json!({"role": "user", "content": s}))],
            s.split_whitespace().count() as u64,
            Some(s.clone()),
            false,
        ),
        Some(Value::Array(items)) => {
            if items.iter().any(|i| !i.is_object()) {
                return Err(bad(
                    "Invalid 'input': every item must be an object.",
                    Some("input"),
                    Some("invalid_type"),
                ));
            }
            let words = items
                .iter()
                .map(|i| {
                    let out =
                        if i.get("type").and_then(Value::as_str) == Some("function_call_output") {
                            i.get("output").map_or(0, count_words)
                        } else {
                            0
                        };
                    count_words(i) + out
                })
                .sum();
            let last_is_output = items
                .last()
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str)
                == Some("function_call_output");
            (
                items.iter().map(normalize).collect(),
                words,
                crate::common::last_user_text(items),
                last_is_output,
            )
        }
        Some(_) => {
            return Err(bad(
                "Invalid type for 'input': expected a string or an array of input items.",
                Some("input"),
                Some("invalid_type"),
            ))
        }
    };
    let previous = match body.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            let words = lock(&sh.responses).get(id).map(|r| r.conversation_words);
            match words {
                Some(w) => Some((id.as_str(), w)),
                None => {
                    return Err(ApiError {
                        status: 404,
                        body: error_body_with(
                            &format!("Previous response with id '{id}' not found."),
                            "invalid_request_error",
                            Some("previous_response_id"),
                            Some("previous_response_not_found"),
                        ),
                    })
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "Invalid type for 'previous_response_id': expected a string.",
                Some("previous_response_id"),
                Some("invalid_type"),
            ))
        }
    };
    let tool_choice_none = body.get("tool_choice").and_then(Value::as_str) == Some("none");
    let tool = if last_is_output || tool_choice_none {
        None
    } else {
        first_function_tool(body)
    };
    Ok(Req {
        model,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        store: body.get("store").and_then(Value::as_bool).unwrap_or(true),
        items,
        input_words,
        instructions_words: body.get("instructions").map_or(0, count_words),
        previous,
        last_user_text,
        tool,
    })
}

fn or(body: &Value, key: &str, default: Value) -> Value {
    match body.get(key) {
        None | Some(Value::Null) => default,
        Some(v) => v.clone(),
    }
}

fn usage(p: &Plan) -> Value {
    if p.omit_usage {
        return Value::Null;
    }
    let out = u64::from(p.output_tokens);
    json!({
        "input_tokens": p.input_tokens,
        "input_tokens_details": {"cached_tokens": p.cached_tokens},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": p.input_tokens + out,
    })
}

/// Build the response (and store it unless `store: false`).
fn build<'a>(
    sh: &Shared,
    req: &Req<'a>,
    body: &Value,
    layers: &'a Layers,
    id: u64,
) -> (Value, Plan<'a>) {
    let chat = ChatReq {
        model: req.model,
        stream: req.stream,
        include_usage: false,
        sse: true,
        input_tokens: req.input_tokens(),
        first_word: 0,
        last_user_text: req.last_user_text.clone(),
        assistant_turns: body
            .get("input")
            .and_then(Value::as_array)
            .map_or(0, |items| crate::common::assistant_turns(items)),
        tool: req.tool,
        forced_tool: false,
    };
    let plan = make_plan(&chat, layers, id);
    let (item, output_words) = match &plan.tool {
        Some(t) => (
            json!({
                "id": sh.new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "call_id": sh.new_id("call_"),
                "name": t.name,
                "arguments": t.args,
            }),
            0,
        ),
        None => {
            let text = plan.text();
            let words = text.split_whitespace().count() as u64;
            (
                json!({
                    "id": sh.new_id("msg_"),
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
                }),
                words,
            )
        }
    };
    let (status, incomplete) = if plan.content_filter {
        ("incomplete", json!({"reason": "content_filter"}))
    } else {
        ("completed", Value::Null)
    };
    let response = json!({
        "id": sh.new_id("resp_"),
        "object": "response",
        "created_at": plan.created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": or(body, "instructions", Value::Null),
        "max_output_tokens": or(body, "max_output_tokens", Value::Null),
        "model": req.model,
        "output": [item],
        "parallel_tool_calls": or(body, "parallel_tool_calls", json!(true)),
        "previous_response_id": req.previous.map(|p| p.0),
        "reasoning": {"effort": null, "summary": null},
        "store": req.store,
        "temperature": or(body, "temperature", json!(1.0)),
        "text": or(body, "text", json!({"format": {"type": "text"}})),
        "tool_choice": or(body, "tool_choice", json!("auto")),
        "tools": or(body, "tools", json!([])),
        "top_p": or(body, "top_p", json!(1.0)),
        "truncation": or(body, "truncation", json!("disabled")),
        "usage": usage(&plan),
        "user": or(body, "user", Value::Null),
        "metadata": or(body, "metadata", json!({})),
    });
    if req.store {
        let input_items = req
            .items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                if let Some(o) = item.as_object_mut() {
                    if !o.contains_key("id") {
                        let prefix = match o.get("type").and_then(Value::as_str) {
                            Some("message") => "msg_",
                            Some("function_call") => "fc_",
                            Some("function_call_output") => "fco_",
                            _ => "item_",
                        };
                        o.insert("id".into(), json!(sh.new_id(prefix)));
                    }
                }
                item
            })
            .collect();
        let stored = StoredResponse {
            response: response.clone(),
            input_items,
            conversation_words: req.previous.map_or(0, |p| p.1) + req.input_words + output_words,
        };
        let rid = response["id"].as_str().unwrap_or_default().to_owned();
        lock(&sh.responses).insert(rid, stored);
    }
    (response, plan)
}

/// Append one named event; every event carries its `type` and a
/// `sequence_number` counting from 0.
fn emit(ev: &mut Events, seq: &mut u64, ty: &str, mut v: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), json!(ty));
        o.insert("sequence_number".into(), json!(*seq));
    }
    *seq += 1;
    ev.sse_named(ty, |o| o.push_str(&v.to_string()));
}

fn render_stream(response: &Value, plan: &Plan) -> Events {
    let n = plan.output_tokens as usize;
    let mut ev = Events::with_capacity(4096 + n * 200, n + 10);
    let mut seq = 0;
    let mut pending = response.clone();
    pending["status"] = json!("in_progress");
    pending["output"] = json!([]);
    pending["usage"] = Value::Null;
    pending["incomplete_details"] = Value::Null;
    emit(
        &mut ev,
        &mut seq,
        "response.created",
        json!({"response": pending}),
    );
    emit(
        &mut ev,
        &mut seq,
        "response.in_progress",
        json!({"response": pending}),
    );
    let item = &response["output"][0];
    let item_id = item["id"].clone();
    match &plan.tool {
        Some(t) => {
            let mut started = item.clone();
            started["status"] = json!("in_progress");
            started["arguments"] = json!("");
            emit(
                &mut ev,
                &mut seq,
                "response.output_item.added",
                json!({"output_index": 0, "item": started}),
            );
            for piece in t.arg_pieces() {
                emit(
                    &mut ev,
                    &mut seq,
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": 0, "delta": piece}),
                );
            }
            emit(
                &mut ev,
                &mut seq,
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "name": t.name, "arguments": t.args}),
            );
        }
        None => {
            let mut started = item.clone();
            started["status"] = json!("in_progress");
            started["content"] = json!([]);
            emit(
                &mut ev,
                &mut seq,
                "response.output_item.added",
                json!({"output_index": 0, "item": started}),
            );
            let empty =
                json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
            emit(
                &mut ev,
                &mut seq,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": empty}),
            );
            for k in 0..n {
                emit(
                    &mut ev,
                    &mut seq,
                    "response.output_text.delta",
                    json!({
                        "item_id": item_id, "output_index": 0, "content_index": 0,
                        "delta": plan.piece(k), "logprobs": [],
                    }),
                );
            }
            let part = &item["content"][0];
            emit(
                &mut ev,
                &mut seq,
                "response.output_text.done",
                json!({
                    "item_id": item_id, "output_index": 0, "content_index": 0,
                    "text": part["text"], "logprobs": [],
                }),
            );
            emit(
                &mut ev,
                &mut seq,
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
            );
        }
    }
    emit(
        &mut ev,
        &mut seq,
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    let last = if plan.content_filter {
        "response.incomplete"
    } else {
        "response.completed"
    };
    emit(&mut ev, &mut seq, last, json!({"response": response}));
    ev
}

/// `POST /v1/responses`.
pub(crate) fn create(ctx: &Ctx<'_>, body: &Value, active: ActiveGuard) -> Response<MockBody> {
    let req = match parse(ctx.sh, body) {
        Ok(r) => r,
        Err(e) => return e.response(),
    };
    let (response, plan) = build(ctx.sh, &req, body, ctx.layers, ctx.id);
    if req.stream {
        let events = render_stream(&response, &plan);
        return stream_answer(events, "text/event-stream", ctx.layers, active);
    }
    full_answer(response.to_string(), "application/json", ctx.layers, active)
}

/// A create without streaming, for batches: the response body.
pub(crate) fn run(sh: &Shared, body: &Value, layers: &Layers, id: u64) -> Result<String, ApiError> {
    let mut req = parse(sh, body)?;
    req.stream = false;
    Ok(build(sh, &req, body, layers, id).0.to_string())
}

/// `POST /v1/responses/input_tokens`: the input tokens a create with this
/// body would report.
pub(crate) fn input_tokens(ctx: &Ctx<'_>, body: &Value) -> Response<MockBody> {
    match parse(ctx.sh, body) {
        Ok(req) => json_response(
            StatusCode::OK,
            json!({"object": "response.input_tokens", "input_tokens": req.input_tokens()})
                .to_string(),
        ),
        Err(e) => e.response(),
    }
}

/// `GET /v1/responses/{id}`.
pub(crate) fn get(ctx: &Ctx<'_>, id: &str, active: ActiveGuard) -> Response<MockBody> {
    let found = lock(&ctx.sh.responses)
        .get(id)
        .map(|r| r.response.to_string());
    match found {
        Some(b) => full_answer(b, "application/json", ctx.layers, active),
        None => not_found(id).response(),
    }
}

/// `DELETE /v1/responses/{id}`.
pub(crate) fn delete(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    match lock(&ctx.sh.responses).remove(id) {
        Some(_) => json_response(
            StatusCode::OK,
            json!({"id": id, "object": "response.deleted", "deleted": true}).to_string(),
        ),
        None => not_found(id).response(),
    }
}

fn item_id(item: &Value) -> &str {
    item.get("id").and_then(Value::as_str).unwrap_or("")
}

/// `GET /v1/responses/{id}/input_items` (`order` asc|desc, default desc as
/// in the real API; `limit` 1..=100, default 20; `after` an item id).
pub(crate) fn input_items(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    let q = ctx.query();
    let asc = crate::server::query_param(q, "order") == Some("asc");
    let limit = limit_param(q, 20, 100);
    let after = crate::server::query_param(q, "after");
    let store = lock(&ctx.sh.responses);
    let Some(r) = store.get(id) else {
        return not_found(id).response();
    };
    let items: Vec<(&str, &Value)> = if asc {
        r.input_items.iter().map(|i| (item_id(i), i)).collect()
    } else {
        r.input_items
            .iter()
            .rev()
            .map(|i| (item_id(i), i))
            .collect()
    };
    let (data, has_more) = page(items.into_iter(), after, limit);
    let body = json!({
        "object": "list",
        "data": data.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        "first_id": data.first().map(|(k, _)| *k),
        "last_id": data.last().map(|(k, _)| *k),
        "has_more": has_more,
    });
    drop(store);
    json_response(StatusCode::OK, body.to_string())
}
