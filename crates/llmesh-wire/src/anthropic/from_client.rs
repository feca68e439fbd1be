//! Anthropic Messages request → OpenAI Chat Completions request.

use serde_json::{json, Map, Value};

use crate::json::{
    as_object, invalid, opt_bool, opt_str, opt_u64, req_str, string_or_strings, unsupported, Object,
};
use crate::openai::force_include_usage;
use crate::TranslateError;

/// Build the OpenAI request.
///
/// `tool_result` blocks become `role: tool` messages placed before the rest
/// of their user turn, since OpenAI wants tool results right after the
/// assistant message that called the tools. Thinking blocks are dropped and
/// `top_k` is ignored (OpenAI has no equivalent). `output_format: {type:
/// json_schema, schema}` becomes `response_format: json_schema` (named
/// `response`, not strict: OpenAI's strict mode restricts schemas).
pub(crate) fn request_to_openai(body: &Object, model: &str) -> Result<Object, TranslateError> {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));

    let mut messages = Vec::new();
    if let Some(system) = system_text(body)? {
        messages.push(json!({"role": "system", "content": system}));
    }
    let input = match body.get("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err(invalid("messages must be an array")),
        None => return Err(invalid("messages is required")),
    };
    for (i, m) in input.iter().enumerate() {
        let path = || format!("messages[{i}]");
        let msg = as_object(m, &path)?;
        let content = msg.get("content").unwrap_or(&Value::Null);
        match req_str(msg, "role", &path)? {
            "user" => user_messages(content, i, &mut messages)?,
            "assistant" => messages.push(assistant_message(content, i)?),
            _ => {
                return Err(invalid(format!(
                    "messages[{i}].role must be \"user\" or \"assistant\""
                )))
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(n) = opt_u64(body, "max_tokens")? {
        out.insert("max_tokens".into(), json!(n));
    }
    for key in ["temperature", "top_p"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                out.insert(key.into(), v.clone());
            }
            Some(_) => return Err(invalid(format!("{key} must be a number"))),
        }
    }
    let stop = string_or_strings(body, "stop_sequences")?;
    if !stop.is_empty() {
        out.insert("stop".into(), json!(stop));
    }
    if opt_bool(body, "stream")? == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        force_include_usage(&mut out);
    }
    let has_tools = tools(body, &mut out)?;
    if has_tools {
        tool_choice(body, &mut out)?;
    }
    if let Some(format) = output_format(body) {
        out.insert("response_format".into(), format);
    }
    if let Some(user) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), json!(user));
    }
    Ok(out)
}

fn system_text(body: &Object) -> Result<Option<String>, TranslateError> {
    match body.get("system") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(blocks)) => {
            let texts = blocks
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    let path = || format!("system[{j}]");
                    let block = as_object(b, &path)?;
                    match req_str(block, "type", &path)? {
                        "text" => Ok(req_str(block, "text", &path)?),
                        _ => Err(invalid(format!("system[{j}] must be a text block"))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(texts.join("\n\n")))
        }
        Some(_) => Err(invalid(
            "system must be a string or an array of text blocks",
        )),
    }
}

fn blocks_of(content: &Value, i: usize) -> Result<&[Value], TranslateError> {
    match content {
        Value::Array(b) => Ok(b),
        _ => Err(invalid(format!(
            "messages[{i}].content must be a string or an array of content blocks"
        ))),
    }
}

fn user_messages(content: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    if let Value::String(s) = content {
        out.push(json!({"role": "user", "content": s}));
        return Ok(());
    }
    let mut parts = Vec::new();
    for (j, b) in blocks_of(content, i)?.iter().enumerate() {
        let path = || format!("messages[{i}].content[{j}]");
        let block = as_object(b, &path)?;
        match req_str(block, "type", &path)? {
            "text" => parts.push(json!({"type": "text", "text": req_str(block, "text", &path)?})),
            "image" => parts.push(image_part(block, &path)?),
            "tool_result" => {
                let id = req_str(block, "tool_use_id", &path)?;
                let text = tool_result_text(block, &path)?;
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            "document" => {
                return Err(unsupported(format!(
                    "{}: document blocks are not supported for this upstream",
                    path()
                )))
            }
            _ => {
                return Err(invalid(format!(
                    "{}.type is not a supported block type",
                    path()
                )))
            }
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let all_text = parts.iter().all(|p| p["type"] == "text");
    let content = if all_text && parts.len() == 1 {
        parts.swap_remove(0)["text"].take()
    } else {
        Value::Array(parts)
    };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

fn image_part(block: &Object, path: &dyn Fn() -> String) -> Result<Value, TranslateError> {
    let spath = || format!("{}.source", path());
    let source = as_object(block.get("source").unwrap_or(&Value::Null), &spath)?;
    let url = match req_str(source, "type", &spath)? {
        "base64" => format!(
            "data:{};base64,{}",
            req_str(source, "media_type", &spath)?,
            req_str(source, "data", &spath)?
        ),
        "url" => req_str(source, "url", &spath)?.to_owned(),
        _ => {
            return Err(unsupported(format!(
                "{}.type: only base64 and url image sources are supported",
                spath()
            )))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_result_text(block: &Object, path: &dyn Fn() -> String) -> Result<String, TranslateError> {
    match block.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for (k, item) in items.iter().enumerate() {
                let ipath = || format!("{}.content[{k}]", path());
                let obj = as_object(item, &ipath)?;
                match req_str(obj, "type", &ipath)? {
                    "text" => texts.push(req_str(obj, "text", &ipath)?),
                    _ => {
                        return Err(unsupported(format!(
                            "{}: only text is supported inside tool results for this upstream",
                            ipath()
                        )))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(invalid(format!(
            "{}.content must be a string or an array of blocks",
            path()
        ))),
    }
}

fn assistant_message(content: &Value, i: usize) -> Result<Value, TranslateError> {
    if let Value::String(s) = content {
        return Ok(json!({"role": "assistant", "content": s}));
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks_of(content, i)?.iter().enumerate() {
        let path = || format!("messages[{i}].content[{j}]");
        let block = as_object(b, &path)?;
        match req_str(block, "type", &path)? {
            "text" => text.push_str(req_str(block, "text", &path)?),
            "tool_use" => {
                let input = match block.get("input") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => return Err(invalid(format!("{}.input must be an object", path()))),
                };
                calls.push(json!({
                    "id": req_str(block, "id", &path)?,
                    "type": "function",
                    "function": {"name": req_str(block, "name", &path)?, "arguments": input},
                }));
            }
            // Thinking is tied to the Anthropic model that produced it.
            "thinking" | "redacted_thinking" => {}
            _ => {
                return Err(invalid(format!(
                    "{}.type is not a supported block type",
                    path()
                )))
            }
        }
    }
    let mut msg = json!({"role": "assistant"});
    msg["content"] = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    Ok(msg)
}

/// Returns whether any tools were sent.
/// Anthropic structured output as an OpenAI `response_format`.
fn output_format(body: &Object) -> Option<Value> {
    // The generally available `output_config.format`, or the beta field.
    let format = body
        .get("output_config")
        .and_then(|c| c.get("format"))
        .or_else(|| body.get("output_format"))?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    let schema = format.get("schema").filter(|s| s.is_object())?;
    Some(json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}))
}

fn tools(body: &Object, out: &mut Object) -> Result<bool, TranslateError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(invalid("tools must be an array")),
    };
    let mut rendered = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let path = || format!("tools[{i}]");
        let tool = as_object(t, &path)?;
        if let Some(ty) = opt_str(tool, "type", &path)? {
            if ty != "custom" {
                return Err(unsupported(format!(
                    "tools[{i}]: server tools are not supported for this upstream"
                )));
            }
        }
        let mut func = Map::new();
        func.insert("name".into(), json!(req_str(tool, "name", &path)?));
        if let Some(d) = opt_str(tool, "description", &path)? {
            func.insert("description".into(), json!(d));
        }
        if let Some(schema) = tool.get("input_schema").filter(|s| !s.is_null()) {
            func.insert("parameters".into(), schema.clone());
        }
        rendered.push(json!({"type": "function", "function": func}));
    }
    out.insert("tools".into(), Value::Array(rendered));
    Ok(!tools.is_empty())
}

fn tool_choice(body: &Object, out: &mut Object) -> Result<(), TranslateError> {
    let Some(choice) = body.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let path = || "tool_choice".to_owned();
    let choice = as_object(choice, &path)?;
    let mapped = match req_str(choice, "type", &path)? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            json!({"type": "function", "function": {"name": req_str(choice, "name", &path)?}})
        }
        _ => return Err(invalid("tool_choice.type must be auto, any, tool or none")),
    };
    out.insert("tool_choice".into(), mapped);
    if choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(v: Value) -> Result<Value, TranslateError> {
        request_to_openai(v.as_object().unwrap(), "gpt-test").map(Value::Object)
    }

    #[test]
    fn tool_results_precede_user_text() {
        let out = translate(json!({"max_tokens": 10, "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "after"},
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]}
            ]}]}))
        .unwrap();
        assert_eq!(
            out["messages"],
            json!([
                {"role": "tool", "tool_call_id": "t1", "content": "42"},
                {"role": "user", "content": "after"}
            ])
        );
    }

    #[test]
    fn bad_shapes_name_fields() {
        let err = translate(json!({"messages": [{"role": "user", "content": 3}]})).unwrap_err();
        assert_eq!(
            err,
            TranslateError::InvalidRequest(
                "messages[0].content must be a string or an array of content blocks".into()
            )
        );
        let err = translate(json!({"messages": [{"role": "assistant", "content": [
            {"type": "tool_use", "id": "x", "name": "f", "input": "secret"}]}]}))
        .unwrap_err();
        assert_eq!(
            err,
            TranslateError::InvalidRequest("messages[0].content[0].input must be an object".into())
        );
    }

    #[test]
    fn stream_forces_usage() {
        let out = translate(json!({"messages": [], "stream": true})).unwrap();
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn output_format_becomes_response_format() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        let out = translate(json!({"max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "output_format": {"type": "json_schema", "schema": schema}}))
        .unwrap();
        assert_eq!(
            out["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}})
        );
        let out = translate(json!({"max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "output_format": {"type": "other"}}))
        .unwrap();
        assert!(out.get("response_format").is_none());
        // The generally available field reads the same.
        let out = translate(json!({"max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}}}))
        .unwrap();
        assert_eq!(out["response_format"]["json_schema"]["schema"], schema);
    }
}
