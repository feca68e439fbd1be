//! Responses request → Chat Completions request (the pivot). See the module
//! documentation of [`crate::responses`] for the mapping.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::{field, not_supported, quoted};
use crate::json::{as_object, invalid, opt_bool, opt_f64, opt_str, opt_u64, req_str, Object};
use crate::openai::{force_include_usage, parse_arguments};
use crate::{Dialect, TranslateError};

/// Fields that are translated.
const MAPPED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "text",
    "max_output_tokens",
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "reasoning",
    "stream",
];

/// Fields the sidecar handles (or that have no effect without built-in
/// tools); checked below where some values are refused, never sent.
const SIDECAR: &[&str] = &[
    "metadata",
    "store",
    "include",
    "previous_response_id",
    "truncation",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "stream_options",
    "max_tool_calls",
    "background",
    "top_logprobs",
    "conversation",
    "prompt",
];

/// Build the Chat Completions body for a Responses request.
///
/// `upstream` is the dialect the pivot is for: for Anthropic and Gemini,
/// replayed `function_call` arguments must be JSON objects (they become
/// structured inputs there); an OpenAI upstream takes them as they are.
pub(crate) fn to_chat(
    body: &Object,
    upstream: Dialect,
    model: &str,
) -> Result<Object, TranslateError> {
    check_fields(body)?;
    let mut out = Map::new();
    out.insert("model".into(), json!(model));

    let mut messages = Vec::new();
    if let Some(instructions) = opt_str(body, "instructions", &request_path)? {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let mut items = Items {
        messages,
        calls: HashSet::new(),
        assistant_open: false,
        strict_arguments: upstream != Dialect::OpenAi,
    };
    match field(body, "input") {
        None => return Err(invalid("input is required")),
        Some(Value::String(text)) => items.push_user_text(text),
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                items.item(item, i)?;
            }
        }
        Some(_) => return Err(invalid("input must be a string or an array of items")),
    }
    out.insert("messages".into(), Value::Array(items.messages));

    if let Some(tools) = tools(body)? {
        out.insert("tools".into(), tools);
    }
    if let Some(choice) = tool_choice(body)? {
        out.insert("tool_choice".into(), choice);
    }
    text(body, &mut out)?;
    if let Some(n) = opt_u64(body, "max_output_tokens")? {
        out.insert("max_completion_tokens".into(), json!(n));
    }
    for key in ["temperature", "top_p"] {
        if opt_f64(body, key)?.is_some() {
            if let Some(v) = body.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    if let Some(p) = opt_bool(body, "parallel_tool_calls")? {
        out.insert("parallel_tool_calls".into(), Value::Bool(p));
    }
    let user = match opt_str(body, "user", &request_path)? {
        Some(u) => Some(u),
        None => opt_str(body, "safety_identifier", &request_path)?,
    };
    if let Some(user) = user {
        out.insert("user".into(), json!(user));
    }
    if let Some(reasoning) = field(body, "reasoning") {
        let path = || "reasoning".to_owned();
        let reasoning = as_object(reasoning, &path)?;
        if let Some(effort) = opt_str(reasoning, "effort", &path)? {
            out.insert("reasoning_effort".into(), json!(effort));
        }
    }
    if opt_bool(body, "stream")? == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        force_include_usage(&mut out);
    }
    Ok(out)
}

fn request_path() -> String {
    "request".to_owned()
}

/// Refuse what cannot be expressed, and unknown fields; validate the
/// sidecar-only fields that take a closed set of values.
fn check_fields(body: &Object) -> Result<(), TranslateError> {
    for (key, value) in body {
        if value.is_null() || MAPPED.contains(&key.as_str()) || SIDECAR.contains(&key.as_str()) {
            continue;
        }
        if quoted(key).is_empty() {
            return Err(invalid(
                "the request has a field that is not supported for this upstream",
            ));
        }
        return Err(not_supported(key, None));
    }
    if opt_bool(body, "background")? == Some(true) {
        return Err(not_supported("background", None));
    }
    if field(body, "prompt").is_some() {
        return Err(invalid(
            "`prompt` (prompt templates) is not supported for this upstream",
        ));
    }
    if field(body, "conversation").is_some() {
        return Err(invalid(
            "`conversation` (stored conversations) is not supported for this upstream; \
             send the history in `input` or use `previous_response_id`",
        ));
    }
    if opt_u64(body, "top_logprobs")?.is_some_and(|n| n > 0) {
        return Err(not_supported("top_logprobs", None));
    }
    match field(body, "truncation") {
        None => {}
        Some(Value::String(s)) if s == "disabled" || s == "auto" => {}
        Some(_) => return Err(invalid("truncation must be \"disabled\" or \"auto\"")),
    }
    match field(body, "include") {
        None => {}
        Some(Value::Array(values)) => {
            for (i, v) in values.iter().enumerate() {
                let v = v
                    .as_str()
                    .ok_or_else(|| invalid("include must be an array of strings"))?;
                if v == "message.output_text.logprobs" {
                    return Err(not_supported(&format!("include[{i}]"), Some(v)));
                }
            }
        }
        Some(_) => return Err(invalid("include must be an array of strings")),
    }
    Ok(())
}

/// Input items → Chat messages.
struct Items {
    messages: Vec<Value>,
    /// `call_id`s of the function calls seen so far.
    calls: HashSet<String>,
    /// The last message is an assistant message that later function calls
    /// may join.
    assistant_open: bool,
    strict_arguments: bool,
}

impl Items {
    fn push(&mut self, message: Value, assistant: bool) {
        self.messages.push(message);
        self.assistant_open = assistant;
    }

    fn push_user_text(&mut self, text: &str) {
        self.push(json!({"role": "user", "content": text}), false);
    }

    fn item(&mut self, item: &Value, i: usize) -> Result<(), TranslateError> {
        let path = || format!("input[{i}]");
        let obj = as_object(item, &path)?;
        match opt_str(obj, "type", &path)? {
            Some("message") => self.message(obj, i),
            None if obj.contains_key("role") => self.message(obj, i),
            None => Err(invalid(format!("input[{i}].type is required"))),
            Some("function_call") => self.function_call(obj, i),
            Some("function_call_output") => self.function_call_output(obj, i),
            // No user content; see the module documentation.
            Some("reasoning") => Ok(()),
            Some(other) => Err(not_supported(&format!("input[{i}].type"), Some(other))),
        }
    }

    fn message(&mut self, obj: &Object, i: usize) -> Result<(), TranslateError> {
        let path = || format!("input[{i}]");
        let role = match req_str(obj, "role", &path)? {
            "user" => "user",
            "assistant" => "assistant",
            "system" | "developer" => "system",
            _ => {
                return Err(invalid(format!(
                    "input[{i}].role must be user, assistant, system or developer"
                )))
            }
        };
        let content = match obj.get("content") {
            None | Some(Value::Null) => {
                return Err(invalid(format!("input[{i}].content is required")))
            }
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Array(parts)) => content_parts(parts, role, i)?,
            Some(_) => {
                return Err(invalid(format!(
                    "input[{i}].content must be a string or an array of content parts"
                )))
            }
        };
        self.push(
            json!({"role": role, "content": content}),
            role == "assistant",
        );
        Ok(())
    }

    fn function_call(&mut self, obj: &Object, i: usize) -> Result<(), TranslateError> {
        let path = || format!("input[{i}]");
        let call_id = req_str(obj, "call_id", &path)?;
        let name = req_str(obj, "name", &path)?;
        let arguments = opt_str(obj, "arguments", &path)?.unwrap_or("");
        if self.strict_arguments && parse_arguments(arguments).is_none() {
            return Err(invalid(format!(
                "input[{i}].arguments must be a JSON object encoded as a string"
            )));
        }
        self.calls.insert(call_id.to_owned());
        let call = json!({
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        });
        if self.assistant_open {
            if let Some(Value::Object(last)) = self.messages.last_mut() {
                let empty = match last.get("content") {
                    Some(Value::String(s)) => s.is_empty(),
                    Some(Value::Array(a)) => a.is_empty(),
                    _ => true,
                };
                if empty {
                    last.insert("content".into(), Value::Null);
                }
                match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => {
                        last.insert("tool_calls".into(), Value::Array(vec![call]));
                    }
                }
                return Ok(());
            }
        }
        self.push(
            json!({"role": "assistant", "content": null, "tool_calls": [call]}),
            true,
        );
        Ok(())
    }

    fn function_call_output(&mut self, obj: &Object, i: usize) -> Result<(), TranslateError> {
        let path = || format!("input[{i}]");
        let call_id = req_str(obj, "call_id", &path)?;
        if !self.calls.contains(call_id) {
            return Err(invalid(format!(
                "input[{i}].call_id does not match an earlier function_call item"
            )));
        }
        let content = match obj.get("output") {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    let ppath = || format!("input[{i}].output[{j}]");
                    let part = as_object(p, &ppath)?;
                    match req_str(part, "type", &ppath)? {
                        "input_text" | "output_text" => {
                            texts.push(
                                json!({"type": "text", "text": req_str(part, "text", &ppath)?}),
                            );
                        }
                        other => {
                            return Err(not_supported(
                                &format!("input[{i}].output[{j}].type"),
                                Some(other),
                            ))
                        }
                    }
                }
                collapse(texts)
            }
            None | Some(Value::Null) => {
                return Err(invalid(format!("input[{i}].output is required")))
            }
            Some(_) => {
                return Err(invalid(format!(
                    "input[{i}].output must be a string or an array of content parts"
                )))
            }
        };
        self.push(
            json!({"role": "tool", "tool_call_id": call_id, "content": content}),
            false,
        );
        Ok(())
    }
}

/// A lone text part becomes a plain string.
fn collapse(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0]["type"] == "text" {
        if let Some(Value::String(t)) = parts[0].get_mut("text").map(Value::take) {
            return Value::String(t);
        }
    }
    Value::Array(parts)
}

fn content_parts(parts: &[Value], role: &str, i: usize) -> Result<Value, TranslateError> {
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let path = || format!("input[{i}].content[{j}]");
        let part = as_object(p, &path)?;
        match req_str(part, "type", &path)? {
            "input_text" | "output_text" => {
                out.push(json!({"type": "text", "text": req_str(part, "text", &path)?}));
            }
            "refusal" if role == "assistant" => {
                out.push(json!({"type": "refusal", "refusal": req_str(part, "refusal", &path)?}));
            }
            "input_image" if role == "user" => out.push(image_part(part, i, j)?),
            "input_image" => {
                return Err(invalid(format!(
                    "input[{i}].content[{j}]: images are only supported in user messages"
                )))
            }
            "refusal" => {
                return Err(invalid(format!(
                    "input[{i}].content[{j}]: refusal parts are only valid in assistant messages"
                )))
            }
            other => {
                return Err(not_supported(
                    &format!("input[{i}].content[{j}].type"),
                    Some(other),
                ))
            }
        }
    }
    Ok(collapse(out))
}

fn image_part(part: &Object, i: usize, j: usize) -> Result<Value, TranslateError> {
    let path = || format!("input[{i}].content[{j}]");
    let Some(url) = opt_str(part, "image_url", &path)? else {
        if field(part, "file_id").is_some() {
            return Err(invalid(format!(
                "`input[{i}].content[{j}].file_id` (uploaded files) is not supported for this \
                 upstream; send the image as a URL or data URL in `image_url`"
            )));
        }
        return Err(invalid(format!(
            "input[{i}].content[{j}].image_url is required"
        )));
    };
    let mut image = Map::new();
    image.insert("url".into(), json!(url));
    if let Some(detail) = opt_str(part, "detail", &path)? {
        image.insert("detail".into(), json!(detail));
    }
    Ok(json!({"type": "image_url", "image_url": image}))
}

fn tools(body: &Object) -> Result<Option<Value>, TranslateError> {
    let tools = match field(body, "tools") {
        None => return Ok(None),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(invalid("tools must be an array")),
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let path = || format!("tools[{i}]");
        let tool = as_object(t, &path)?;
        let ty = req_str(tool, "type", &path)?;
        if ty != "function" {
            return Err(not_supported(&format!("tools[{i}].type"), Some(ty)));
        }
        let mut func = Map::new();
        func.insert("name".into(), json!(req_str(tool, "name", &path)?));
        if let Some(d) = opt_str(tool, "description", &path)? {
            func.insert("description".into(), json!(d));
        }
        match field(tool, "parameters") {
            None => {}
            Some(p @ Value::Object(_)) => {
                func.insert("parameters".into(), p.clone());
            }
            Some(_) => return Err(invalid(format!("tools[{i}].parameters must be an object"))),
        }
        match field(tool, "strict") {
            None => {}
            Some(Value::Bool(b)) => {
                func.insert("strict".into(), Value::Bool(*b));
            }
            Some(_) => return Err(invalid(format!("tools[{i}].strict must be a boolean"))),
        }
        out.push(json!({"type": "function", "function": func}));
    }
    Ok(Some(Value::Array(out)))
}

fn tool_choice(body: &Object) -> Result<Option<Value>, TranslateError> {
    let bad =
        || invalid("tool_choice must be \"none\", \"auto\", \"required\" or a function choice");
    match field(body, "tool_choice") {
        None => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "none" | "auto" | "required" => Ok(Some(json!(s))),
            _ => Err(bad()),
        },
        Some(Value::Object(choice)) => {
            let path = || "tool_choice".to_owned();
            match req_str(choice, "type", &path)? {
                "function" => {
                    let name = req_str(choice, "name", &path)?;
                    Ok(Some(
                        json!({"type": "function", "function": {"name": name}}),
                    ))
                }
                other => Err(not_supported("tool_choice.type", Some(other))),
            }
        }
        Some(_) => Err(bad()),
    }
}

/// `text.format` → `response_format`, `text.verbosity` → `verbosity`.
fn text(body: &Object, out: &mut Object) -> Result<(), TranslateError> {
    let Some(text) = field(body, "text") else {
        return Ok(());
    };
    let path = || "text".to_owned();
    let text = as_object(text, &path)?;
    if let Some(verbosity) = opt_str(text, "verbosity", &path)? {
        out.insert("verbosity".into(), json!(verbosity));
    }
    let Some(format) = field(text, "format") else {
        return Ok(());
    };
    let fpath = || "text.format".to_owned();
    let format = as_object(format, &fpath)?;
    let rendered = match req_str(format, "type", &fpath)? {
        "text" => return Ok(()),
        "json_object" => json!({"type": "json_object"}),
        "json_schema" => {
            let schema = field(format, "schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| invalid("text.format.schema must be an object"))?;
            let mut spec = Map::new();
            spec.insert("name".into(), json!(req_str(format, "name", &fpath)?));
            spec.insert("schema".into(), schema.clone());
            if let Some(d) = opt_str(format, "description", &fpath)? {
                spec.insert("description".into(), json!(d));
            }
            match field(format, "strict") {
                None => {}
                Some(Value::Bool(b)) => {
                    spec.insert("strict".into(), Value::Bool(*b));
                }
                Some(_) => return Err(invalid("text.format.strict must be a boolean")),
            }
            json!({"type": "json_schema", "json_schema": spec})
        }
        _ => {
            return Err(invalid(
                "text.format.type must be text, json_object or json_schema",
            ))
        }
    };
    out.insert("response_format".into(), rendered);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value) -> Result<Value, TranslateError> {
        to_chat(v.as_object().unwrap(), Dialect::OpenAi, "up").map(Value::Object)
    }

    fn err(v: Value) -> String {
        match chat(v) {
            Err(TranslateError::InvalidRequest(m)) => m,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn string_input_and_instructions() {
        let out = chat(
            json!({"model": "m", "instructions": "be brief", "input": "hi",
            "metadata": {"k": "v"}, "store": false, "previous_response_id": "resp_1",
            "truncation": "auto", "service_tier": "auto", "prompt_cache_key": "k",
            "include": ["reasoning.encrypted_content"], "background": false}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"model": "up", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn safety_identifier_is_the_user_only_without_user() {
        let out = chat(json!({"input": "x", "safety_identifier": "s"})).unwrap();
        assert_eq!(out["user"], "s");
        let out = chat(json!({"input": "x", "safety_identifier": "s", "user": "u"})).unwrap();
        assert_eq!(out["user"], "u");
    }

    #[test]
    fn function_calls_join_the_assistant_message() {
        let out = chat(json!({"input": [
            {"role": "user", "content": "weather?"},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "", "annotations": []}]},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{\"x\":1}"},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {"type": "function_call_output", "call_id": "b",
             "output": [{"type": "input_text", "text": "2"}]}]}))
        .unwrap();
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "a", "content": "1"},
                {"role": "tool", "tool_call_id": "b", "content": "2"}])
        );
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(
            err(
                json!({"input": "x", "tools": [{"type": "function", "name": "f"},
                {"type": "web_search"}]})
            ),
            "`tools[1].type` \"web_search\" is not supported for this upstream"
        );
        assert_eq!(
            err(
                json!({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"type": "file_search_call", "id": "x"}]})
            ),
            "`input[2].type` \"file_search_call\" is not supported for this upstream"
        );
        assert_eq!(
            err(json!({"input": "x", "background": true})),
            "`background` is not supported for this upstream"
        );
        assert!(err(json!({"input": "x", "prompt": {"id": "p"}})).starts_with("`prompt`"));
        assert!(err(json!({"input": "x", "conversation": "c"})).starts_with("`conversation`"));
        assert_eq!(
            err(json!({"input": [{"role": "user", "content": [
                {"type": "input_file", "file_id": "f"}]}]})),
            "`input[0].content[0].type` \"input_file\" is not supported for this upstream"
        );
        assert_eq!(
            err(json!({"input": [{"role": "user", "content": [
                {"type": "input_audio"}]}]})),
            "`input[0].content[0].type` \"input_audio\" is not supported for this upstream"
        );
        assert!(err(json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "file_id": "f"}]}]}))
        .starts_with("`input[0].content[0].file_id` (uploaded files)"));
        assert_eq!(
            err(json!({"input": [{"type": "my secret"}]})),
            "`input[0].type` is not supported for this upstream"
        );
        assert_eq!(
            err(json!({"input": "x", "tool_choice": {"type": "allowed_tools"}})),
            "`tool_choice.type` \"allowed_tools\" is not supported for this upstream"
        );
        assert_eq!(
            err(json!({"input": "x", "top_logprobs": 2})),
            "`top_logprobs` is not supported for this upstream"
        );
        assert_eq!(
            err(json!({"input": "x", "include": ["message.output_text.logprobs"]})),
            "`include[0]` \"message.output_text.logprobs\" is not supported for this upstream"
        );
        assert_eq!(
            err(json!({"input": "x", "frobnicate": 1})),
            "`frobnicate` is not supported for this upstream"
        );
        assert_eq!(
            err(json!({"input": "x", "truncation": "middle"})),
            "truncation must be \"disabled\" or \"auto\""
        );
        assert_eq!(err(json!({"model": "m"})), "input is required");
        assert_eq!(
            err(
                json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]})
            ),
            "input[0].call_id does not match an earlier function_call item"
        );
        assert_eq!(
            err(json!({"input": [{"role": "system", "content": [
                {"type": "input_image", "image_url": "https://x"}]}]})),
            "input[0].content[0]: images are only supported in user messages"
        );
    }

    #[test]
    fn strict_arguments_only_for_structured_upstreams() {
        let body = json!({"input": [{"type": "function_call", "call_id": "a", "name": "f",
            "arguments": "{broken"}]});
        assert!(to_chat(body.as_object().unwrap(), Dialect::OpenAi, "m").is_ok());
        let err = to_chat(body.as_object().unwrap(), Dialect::Anthropic, "m").unwrap_err();
        assert_eq!(
            err,
            TranslateError::InvalidRequest(
                "input[0].arguments must be a JSON object encoded as a string".into()
            )
        );
    }

    #[test]
    fn text_format_and_knobs() {
        let out = chat(
            json!({"input": "x", "stream": true, "max_output_tokens": 50,
            "temperature": 1, "top_p": 0.5, "parallel_tool_calls": false,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "n",
                "schema": {"type": "object"}, "strict": true}},
            "tool_choice": {"type": "function", "name": "f"},
            "tools": [{"type": "function", "name": "f", "parameters": null, "strict": true}]}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"model": "up", "messages": [{"role": "user", "content": "x"}],
                "stream": true, "stream_options": {"include_usage": true},
                "max_completion_tokens": 50, "temperature": 1, "top_p": 0.5,
                "parallel_tool_calls": false, "reasoning_effort": "low", "verbosity": "low",
                "response_format": {"type": "json_schema", "json_schema": {"name": "n",
                    "schema": {"type": "object"}, "strict": true}},
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "tools": [{"type": "function", "function": {"name": "f", "strict": true}}]})
        );
        let out = chat(json!({"input": "x", "text": {"format": {"type": "text"}}})).unwrap();
        assert!(out.get("response_format").is_none());
        let out = chat(json!({"input": "x", "text": {"format": {"type": "json_object"}}})).unwrap();
        assert_eq!(out["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn images_and_refusals() {
        let out = chat(json!({"input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "d"}]},
            {"role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "high"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]}))
        .unwrap();
        assert_eq!(
            out["messages"],
            json!([
                {"role": "system", "content": "d"},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}}]},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}])
        );
    }
}
