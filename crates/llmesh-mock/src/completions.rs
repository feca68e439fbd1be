//! OpenAI legacy completions: `POST /v1/completions`, plain and streamed.
//!
//! `prompt` is a string, an array of strings (one choice each), a token
//! array or an array of token arrays (one token per element). Every choice
//! gets the same generated text.

use http::Response;
use serde_json::{json, Value};

use crate::behavior::Layers;
use crate::body::{ActiveGuard, Events, MockBody};
use crate::common::{ChatReq, Plan};
use crate::server::{full_answer, make_plan, stream_answer, ApiError, Ctx};

/// Most prompts one request may carry.
const MAX_PROMPTS: usize = 128;

struct Req<'a> {
    model: &'a str,
    stream: bool,
    include_usage: bool,
    /// Number of prompts = choices.
    choices: usize,
    words: u64,
    /// The last prompt's text (for the echo behavior).
    last: Option<String>,
}

fn parse(body: &Value) -> Result<Req<'_>, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("'model' is required and must be a string")?;
    let is_tokens = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_u64));
    let (choices, words, last) = match body.get("prompt") {
        // The real API generates as from the start of a document.
        None | Some(Value::Null) => (1, 0, None),
        Some(Value::String(s)) => (1, s.split_whitespace().count() as u64, Some(s.clone())),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err("'prompt' must not be an empty array".into())
        }
        Some(v @ Value::Array(a)) if is_tokens(v) => (1, a.len() as u64, None),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => (
            a.len(),
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| s.split_whitespace().count() as u64)
                .sum(),
            a.last().and_then(Value::as_str).map(str::to_owned),
        ),
        Some(Value::Array(a)) if a.iter().all(is_tokens) => (
            a.len(),
            a.iter()
                .filter_map(Value::as_array)
                .map(|t| t.len() as u64)
                .sum(),
            None,
        ),
        Some(_) => {
            return Err("'prompt' must be a string, an array of strings, or token arrays".into())
        }
    };
    if choices > MAX_PROMPTS {
        return Err(format!("at most {MAX_PROMPTS} prompts per request"));
    }
    Ok(Req {
        model,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        choices,
        words,
        last,
    })
}

fn plan<'a>(req: &Req<'a>, layers: &'a Layers, id: u64) -> Plan<'a> {
    let chat = ChatReq {
        model: req.model,
        stream: req.stream,
        include_usage: req.include_usage,
        sse: true,
        input_tokens: req.words.max(1),
        first_word: 0,
        last_user_text: req.last.clone(),
        assistant_turns: 0,
        tool: None,
        forced_tool: false,
    };
    make_plan(&chat, layers, id)
}

fn usage(p: &Plan, choices: usize) -> Value {
    let out = u64::from(p.output_tokens) * choices as u64;
    json!({
        "prompt_tokens": p.input_tokens,
        "completion_tokens": out,
        "total_tokens": p.input_tokens + out,
    })
}

fn finish_reason(p: &Plan) -> &'static str {
    if p.content_filter {
        "content_filter"
    } else {
        "stop"
    }
}

fn head(p: &Plan) -> Value {
    json!({
        "id": format!("cmpl-mock-{}", p.id),
        "object": "text_completion",
        "created": p.created,
        "model": p.model,
        "system_fingerprint": "fp_llmesh_mock",
    })
}

fn render(p: &Plan, choices: usize) -> String {
    let text = p.text();
    let mut v = head(p);
    v["choices"] = (0..choices)
        .map(|i| json!({"text": text, "index": i, "logprobs": null, "finish_reason": finish_reason(p)}))
        .collect();
    v["usage"] = if p.omit_usage {
        Value::Null
    } else {
        usage(p, choices)
    };
    v.to_string()
}

fn render_stream(p: &Plan, choices: usize) -> Events {
    let n = p.output_tokens as usize;
    let head = head(p);
    let mut ev = Events::with_capacity((n + 2) * choices * 220, (n + 1) * choices + 2);
    let chunk = |ev: &mut Events, choice: Value| {
        let mut c = head.clone();
        c["choices"] = json!([choice]);
        if p.include_usage {
            c["usage"] = Value::Null;
        }
        ev.sse(|o| o.push_str(&c.to_string()));
    };
    for i in 0..choices {
        for k in 0..n {
            chunk(
                &mut ev,
                json!({"text": p.piece(k), "index": i, "logprobs": null, "finish_reason": null}),
            );
        }
        chunk(
            &mut ev,
            json!({"text": "", "index": i, "logprobs": null, "finish_reason": finish_reason(p)}),
        );
    }
    if p.include_usage && !p.omit_usage {
        let mut c = head.clone();
        c["choices"] = json!([]);
        c["usage"] = usage(p, choices);
        ev.sse(|o| o.push_str(&c.to_string()));
    }
    ev.sse(|o| o.push_str("[DONE]"));
    ev
}

/// `POST /v1/completions`.
pub(crate) fn handle(ctx: &Ctx<'_>, body: &Value, active: ActiveGuard) -> Response<MockBody> {
    let req = match parse(body) {
        Ok(r) => r,
        Err(e) => return ApiError::openai(&e).response(),
    };
    let p = plan(&req, ctx.layers, ctx.id);
    if req.stream {
        let events = render_stream(&p, req.choices);
        return stream_answer(events, "text/event-stream", ctx.layers, active);
    }
    full_answer(
        render(&p, req.choices),
        "application/json",
        ctx.layers,
        active,
    )
}

/// A completion without streaming, for batches: the response body.
pub(crate) fn run(body: &Value, layers: &Layers, id: u64) -> Result<String, ApiError> {
    let mut req = parse(body).map_err(|e| ApiError::openai(&e))?;
    req.stream = false;
    let p = plan(&req, layers, id);
    Ok(render(&p, req.choices))
}
