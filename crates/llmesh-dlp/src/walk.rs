//! Which strings of a request or answer body are user or model text, per
//! API format. Everything else (model names, tool schemas, ids, images) is
//! left alone.

use serde_json::{Map, Value};

/// The wire format of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI `/v1/chat/completions` (and OpenAI-compatible providers).
    OpenAiChat,
    /// OpenAI `/v1/embeddings` (`input`, and legacy `prompt`).
    OpenAiEmbeddings,
    /// Anthropic `/v1/messages`.
    Anthropic,
    /// Gemini `generateContent` / `streamGenerateContent`.
    Gemini,
    /// OpenAI `/v1/responses`: `instructions`, the `input` string or items
    /// (message text, function-call arguments and outputs).
    OpenAiResponses,
    /// OpenAI legacy `/v1/completions` (`prompt`, a string or strings).
    OpenAiCompletions,
    /// Any JSON body the sidecar passes through: every string value.
    AnyJson,
}

/// Responses API items (input or output): message text parts,
/// function-call arguments (JSON text) and function-call outputs.
fn responses_items<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    let Value::Array(items) = v else {
        if let Value::String(s) = v {
            plain(out, s);
        }
        return;
    };
    for item in items {
        let Value::Object(o) = item else { continue };
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
            .to_string();
        match kind.as_str() {
            "message" => {
                if let Some(c) = o.get_mut("content") {
                    match c {
                        Value::String(s) => plain(out, s),
                        Value::Array(parts) => {
                            for p in parts {
                                let Value::Object(p) = p else { continue };
                                for (k, v) in p.iter_mut() {
                                    if let ("text" | "refusal", Value::String(s)) = (k.as_str(), v)
                                    {
                                        plain(out, s);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            "function_call" => {
                if let Some(Value::String(a)) = o.get_mut("arguments") {
                    out.push(Text {
                        kind: TextKind::JsonText,
                        text: a,
                    });
                }
            }
            "function_call_output" => {
                if let Some(v) = o.get_mut("output") {
                    all_strings(v, out);
                }
            }
            "reasoning" => {
                if let Some(v) = o.get_mut("summary") {
                    responses_items(v, out);
                }
            }
            _ => {}
        }
    }
}

/// How a walked string holds text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextKind {
    /// Text as is.
    Plain,
    /// JSON text (tool-call arguments): only its string values are text.
    JsonText,
}

/// One walked string.
pub(crate) struct Text<'a> {
    pub(crate) kind: TextKind,
    pub(crate) text: &'a mut String,
}

fn plain<'a>(out: &mut Vec<Text<'a>>, text: &'a mut String) {
    out.push(Text {
        kind: TextKind::Plain,
        text,
    });
}

/// Every string in `v`, recursively (object keys excluded).
pub(crate) fn all_strings<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    match v {
        Value::String(s) => plain(out, s),
        Value::Array(a) => a.iter_mut().for_each(|x| all_strings(x, out)),
        Value::Object(o) => o.values_mut().for_each(|x| all_strings(x, out)),
        _ => {}
    }
}

fn type_is(o: &Map<String, Value>, t: &str) -> bool {
    o.get("type").and_then(Value::as_str) == Some(t)
}

/// A string, or an array of strings.
fn string_or_strings<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    match v {
        Value::String(s) => plain(out, s),
        Value::Array(a) => {
            for x in a {
                if let Value::String(s) = x {
                    plain(out, s);
                }
            }
        }
        _ => {}
    }
}

/// A string, or an array of blocks of which `{type: text, text}` count.
fn text_or_blocks<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>, more: bool) {
    match v {
        Value::String(s) => plain(out, s),
        Value::Array(blocks) => {
            for b in blocks {
                if let Value::Object(o) = b {
                    block(o, out, more);
                }
            }
        }
        _ => {}
    }
}

/// One content block: OpenAI part or Anthropic block. With `more`, also
/// Anthropic `tool_use.input` and `tool_result.content`.
fn block<'a>(o: &'a mut Map<String, Value>, out: &mut Vec<Text<'a>>, more: bool) {
    if type_is(o, "text") {
        if let Some(Value::String(s)) = o.get_mut("text") {
            plain(out, s);
        }
    } else if more && type_is(o, "tool_use") {
        if let Some(input) = o.get_mut("input") {
            all_strings(input, out);
        }
    } else if more && type_is(o, "tool_result") {
        if let Some(c) = o.get_mut("content") {
            text_or_blocks(c, out, false);
        }
    }
}

/// OpenAI `function.arguments` of a tool call (or legacy `function_call`).
fn arguments<'a>(f: &'a mut Value, out: &mut Vec<Text<'a>>) {
    if let Some(Value::String(s)) = f.get_mut("arguments") {
        out.push(Text {
            kind: TextKind::JsonText,
            text: s,
        });
    }
}

fn tool_calls<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    if let Value::Array(calls) = v {
        for c in calls {
            if let Some(f) = c.get_mut("function") {
                arguments(f, out);
            }
        }
    }
}

/// Gemini `parts`: `text`, `functionCall.args`, `functionResponse.response`.
fn gemini_parts<'a>(content: &'a mut Value, out: &mut Vec<Text<'a>>, with_calls: bool) {
    let Some(Value::Array(parts)) = content.get_mut("parts") else {
        return;
    };
    for p in parts {
        let Value::Object(p) = p else { continue };
        for (k, v) in p.iter_mut() {
            match k.as_str() {
                "text" => {
                    if let Value::String(s) = v {
                        plain(out, s);
                    }
                }
                "functionCall" | "function_call" if with_calls => {
                    if let Some(args) = v.get_mut("args") {
                        all_strings(args, out);
                    }
                }
                "functionResponse" | "function_response" if with_calls => {
                    if let Some(r) = v.get_mut("response") {
                        all_strings(r, out);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The user-provided text of a request body.
pub(crate) fn request_texts<'a>(body: &'a mut Value, api: Api, out: &mut Vec<Text<'a>>) {
    let Value::Object(body) = body else { return };
    match api {
        Api::OpenAiChat => {
            let Some(Value::Array(msgs)) = body.get_mut("messages") else {
                return;
            };
            for m in msgs {
                let Value::Object(m) = m else { continue };
                for (k, v) in m.iter_mut() {
                    match k.as_str() {
                        "content" => text_or_blocks(v, out, false),
                        "tool_calls" => tool_calls(v, out),
                        "function_call" => arguments(v, out),
                        _ => {}
                    }
                }
            }
        }
        Api::OpenAiEmbeddings => {
            for (k, v) in body.iter_mut() {
                if k == "input" || k == "prompt" {
                    string_or_strings(v, out);
                }
            }
        }
        Api::Anthropic => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "system" => text_or_blocks(v, out, false),
                    "messages" => {
                        if let Value::Array(msgs) = v {
                            for m in msgs {
                                if let Some(c) = m.get_mut("content") {
                                    text_or_blocks(c, out, true);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Api::OpenAiResponses => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "instructions" => string_or_strings(v, out),
                    "input" => responses_items(v, out),
                    _ => {}
                }
            }
        }
        Api::OpenAiCompletions => {
            if let Some(v) = body.get_mut("prompt") {
                string_or_strings(v, out);
            }
        }
        Api::AnyJson => {
            body.values_mut().for_each(|v| all_strings(v, out));
        }
        Api::Gemini => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "contents" => {
                        if let Value::Array(contents) = v {
                            for c in contents {
                                gemini_parts(c, out, true);
                            }
                        }
                    }
                    "systemInstruction" | "system_instruction" => gemini_parts(v, out, false),
                    _ => {}
                }
            }
        }
    }
}

/// The model-written text of a non-streamed answer body.
pub(crate) fn response_texts<'a>(body: &'a mut Value, api: Api, out: &mut Vec<Text<'a>>) {
    let Value::Object(body) = body else { return };
    match api {
        Api::OpenAiChat => {
            let Some(Value::Array(choices)) = body.get_mut("choices") else {
                return;
            };
            for c in choices {
                let Value::Object(c) = c else { continue };
                for (k, v) in c.iter_mut() {
                    match k.as_str() {
                        // Legacy completions.
                        "text" => {
                            if let Value::String(s) = v {
                                plain(out, s);
                            }
                        }
                        "message" => {
                            let Value::Object(m) = v else { continue };
                            for (k, v) in m.iter_mut() {
                                match k.as_str() {
                                    "content" => text_or_blocks(v, out, false),
                                    "tool_calls" => tool_calls(v, out),
                                    "function_call" => arguments(v, out),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Api::OpenAiEmbeddings | Api::AnyJson => {}
        Api::OpenAiResponses => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "output" => responses_items(v, out),
                    // A translated answer echoes the request's instructions.
                    "instructions" => string_or_strings(v, out),
                    _ => {}
                }
            }
        }
        Api::OpenAiCompletions => {
            if let Some(Value::Array(choices)) = body.get_mut("choices") {
                for c in choices {
                    if let Some(Value::String(s)) = c.get_mut("text") {
                        plain(out, s);
                    }
                }
            }
        }
        Api::Anthropic => {
            if let Some(Value::Array(blocks)) = body.get_mut("content") {
                for b in blocks {
                    let Value::Object(o) = b else { continue };
                    if type_is(o, "text") {
                        if let Some(Value::String(s)) = o.get_mut("text") {
                            plain(out, s);
                        }
                    } else if type_is(o, "tool_use") {
                        if let Some(input) = o.get_mut("input") {
                            all_strings(input, out);
                        }
                    }
                }
            }
        }
        Api::Gemini => {
            if let Some(Value::Array(cands)) = body.get_mut("candidates") {
                for c in cands {
                    if let Some(content) = c.get_mut("content") {
                        gemini_parts(content, out, true);
                    }
                }
            }
        }
    }
}
