//! OpenAI Chat Completions requests, validated into a typed form that the
//! Anthropic and Gemini request builders render from.

use serde_json::{Map, Value};

use crate::json::{
    as_object, invalid, opt_bool, opt_f64, opt_str, opt_u64, req_str, string_or_strings,
    unsupported, Object,
};
use crate::TranslateError;

/// With `stream: true`, make the upstream report usage in its last chunk.
pub(crate) fn force_include_usage(body: &mut Object) {
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let opts = body
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !opts.is_object() {
        *opts = Value::Object(Map::new());
    }
    if let Value::Object(o) = opts {
        o.insert("include_usage".into(), Value::Bool(true));
    }
}

#[derive(Debug, Default)]
pub(crate) struct ChatRequest {
    /// System and developer messages, in order, wherever they appeared.
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub n: Option<u64>,
    pub stream: bool,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: ResponseFormat,
    pub user: Option<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

#[derive(Debug)]
pub(crate) enum Message {
    User(Content),
    Assistant {
        text: Vec<String>,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        tool_call_id: String,
        text: Vec<String>,
        /// Position in `messages`, for error messages.
        index: usize,
    },
}

#[derive(Debug)]
pub(crate) struct Content {
    pub parts: Vec<Part>,
    /// The client sent a plain string; targets that distinguish keep it so.
    pub was_string: bool,
}

#[derive(Debug)]
pub(crate) enum Part {
    Text(String),
    Image(Image),
}

#[derive(Debug)]
pub(crate) enum Image {
    Base64 { media_type: String, data: String },
    Url(String),
}

#[derive(Debug)]
pub(crate) struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Object,
    /// Gemini's `thoughtSignature`, carried the way Google's own
    /// OpenAI-compatible endpoint does (`extra_content.google`).
    pub thought_signature: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

#[derive(Debug, Default)]
pub(crate) enum ResponseFormat {
    #[default]
    Text,
    JsonObject,
    JsonSchema {
        schema: Value,
    },
}

impl ChatRequest {
    pub(crate) fn parse(body: &Object) -> Result<Self, TranslateError> {
        let mut req = ChatRequest {
            max_tokens: match opt_u64(body, "max_completion_tokens")? {
                Some(n) => Some(n),
                None => opt_u64(body, "max_tokens")?,
            },
            temperature: opt_f64(body, "temperature")?,
            top_p: opt_f64(body, "top_p")?,
            stop: string_or_strings(body, "stop")?,
            n: opt_u64(body, "n")?,
            stream: opt_bool(body, "stream")?.unwrap_or(false),
            parallel_tool_calls: opt_bool(body, "parallel_tool_calls")?,
            user: opt_str(body, "user", &|| String::from("request"))?.map(str::to_owned),
            seed: match body.get("seed") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .ok_or_else(|| invalid("seed must be an integer"))?,
                ),
            },
            presence_penalty: opt_f64(body, "presence_penalty")?,
            frequency_penalty: opt_f64(body, "frequency_penalty")?,
            ..Default::default()
        };
        if body.contains_key("functions") || body.contains_key("function_call") {
            return Err(unsupported(
                "functions/function_call (legacy function calling) are not supported; use tools",
            ));
        }
        req.parse_messages(body)?;
        req.tools = parse_tools(body)?;
        req.tool_choice = parse_tool_choice(body)?;
        req.response_format = parse_response_format(body)?;
        Ok(req)
    }

    fn parse_messages(&mut self, body: &Object) -> Result<(), TranslateError> {
        let messages = match body.get("messages") {
            Some(Value::Array(m)) => m,
            Some(_) => return Err(invalid("messages must be an array")),
            None => return Err(invalid("messages is required")),
        };
        for (i, m) in messages.iter().enumerate() {
            let path = || format!("messages[{i}]");
            let obj = as_object(m, &path)?;
            let role = req_str(obj, "role", &path)?;
            let content = obj.get("content").unwrap_or(&Value::Null);
            match role {
                "system" | "developer" => {
                    let text = text_parts(content, i, false)?.join("\n");
                    self.system.push(text);
                }
                "user" => {
                    if content.is_null() {
                        return Err(invalid(format!("messages[{i}].content is required")));
                    }
                    self.messages.push(Message::User(parse_content(content, i)?));
                }
                "assistant" => {
                    let text = text_parts(content, i, true)?;
                    let tool_calls = parse_tool_calls(obj, i)?;
                    self.messages.push(Message::Assistant { text, tool_calls });
                }
                "tool" => {
                    let tool_call_id = req_str(obj, "tool_call_id", &path)?.to_owned();
                    let text = text_parts(content, i, false)?;
                    self.messages.push(Message::Tool { tool_call_id, text, index: i });
                }
                "function" => {
                    return Err(unsupported(format!(
                        "messages[{i}].role \"function\" (legacy function calling) is not supported; use tool messages"
                    )))
                }
                _ => return Err(invalid(format!("messages[{i}].role is not a valid role"))),
            }
        }
        Ok(())
    }
}

fn content_type_error(i: usize) -> TranslateError {
    invalid(format!(
        "messages[{i}].content must be a string or an array of content parts"
    ))
}

/// Content that may only hold text: a string, or an array of text parts
/// (assistant messages may also hold `refusal` parts).
fn text_parts(content: &Value, i: usize, allow_null: bool) -> Result<Vec<String>, TranslateError> {
    match content {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Null if allow_null => Ok(Vec::new()),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let path = || format!("messages[{i}].content[{j}]");
                let obj = as_object(p, &path)?;
                match req_str(obj, "type", &path)? {
                    "text" => Ok(req_str(obj, "text", &path)?.to_owned()),
                    "refusal" if allow_null => Ok(req_str(obj, "refusal", &path)?.to_owned()),
                    _ => Err(invalid(format!(
                        "messages[{i}].content[{j}] must be a text part in this message"
                    ))),
                }
            })
            .collect(),
        _ => Err(content_type_error(i)),
    }
}

fn parse_content(content: &Value, i: usize) -> Result<Content, TranslateError> {
    match content {
        Value::String(s) => Ok(Content {
            parts: vec![Part::Text(s.clone())],
            was_string: true,
        }),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for (j, p) in items.iter().enumerate() {
                let path = || format!("messages[{i}].content[{j}]");
                let obj = as_object(p, &path)?;
                let part = match req_str(obj, "type", &path)? {
                    "text" => Part::Text(req_str(obj, "text", &path)?.to_owned()),
                    "image_url" => Part::Image(parse_image(obj, &path)?),
                    ty @ ("input_audio" | "file") => {
                        return Err(unsupported(format!(
                            "{}: content parts of type {ty} are not supported for this upstream",
                            path()
                        )))
                    }
                    _ => {
                        return Err(invalid(format!(
                            "{}.type is not a supported content part type",
                            path()
                        )))
                    }
                };
                parts.push(part);
            }
            Ok(Content {
                parts,
                was_string: false,
            })
        }
        _ => Err(content_type_error(i)),
    }
}

fn parse_image(obj: &Object, path: &dyn Fn() -> String) -> Result<Image, TranslateError> {
    let url = match obj.get("image_url") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => req_str(o, "url", &|| format!("{}.image_url", path()))?,
        _ => {
            return Err(invalid(format!(
                "{}.image_url must be an object with a url",
                path()
            )))
        }
    };
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(Image::Url(url.to_owned()));
    };
    let bad = || {
        invalid(format!(
            "{}.image_url.url must be a base64 data URL",
            path()
        ))
    };
    let (header, data) = rest.split_once(',').ok_or_else(bad)?;
    let media = header.strip_suffix(";base64").ok_or_else(bad)?;
    let media_type = media.split(';').next().unwrap_or_default();
    if media_type.is_empty() {
        return Err(bad());
    }
    Ok(Image::Base64 {
        media_type: media_type.to_owned(),
        data: data.to_owned(),
    })
}

fn parse_tool_calls(msg: &Object, i: usize) -> Result<Vec<ToolCall>, TranslateError> {
    let calls = match msg.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(c)) => c,
        Some(_) => {
            return Err(invalid(format!(
                "messages[{i}].tool_calls must be an array"
            )))
        }
    };
    calls
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let path = || format!("messages[{i}].tool_calls[{j}]");
            let call = as_object(c, &path)?;
            let id = req_str(call, "id", &path)?.to_owned();
            let fpath = || format!("{}.function", path());
            let func = as_object(call.get("function").unwrap_or(&Value::Null), &fpath)?;
            let name = req_str(func, "name", &fpath)?.to_owned();
            let raw_args = opt_str(func, "arguments", &fpath)?.unwrap_or("");
            let arguments = parse_arguments(raw_args).ok_or_else(|| {
                invalid(format!(
                    "{}.arguments must be a JSON object encoded as a string",
                    fpath()
                ))
            })?;
            let thought_signature = call
                .get("extra_content")
                .and_then(|e| e.get("google"))
                .and_then(|g| g.get("thought_signature"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(ToolCall {
                id,
                name,
                arguments,
                thought_signature,
            })
        })
        .collect()
}

/// Tool arguments as a JSON object; an empty string means no arguments.
pub(crate) fn parse_arguments(raw: &str) -> Option<Object> {
    if raw.trim().is_empty() {
        return Some(Map::new());
    }
    match serde_json::from_str(raw) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    }
}

fn parse_tools(body: &Object) -> Result<Vec<Tool>, TranslateError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(invalid("tools must be an array")),
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let path = || format!("tools[{i}]");
            let tool = as_object(t, &path)?;
            if let Some(ty) = opt_str(tool, "type", &path)? {
                if ty != "function" {
                    return Err(unsupported(format!(
                        "tools[{i}].type must be \"function\"; other tool types are not supported"
                    )));
                }
            }
            let fpath = || format!("tools[{i}].function");
            let func = as_object(tool.get("function").unwrap_or(&Value::Null), &fpath)?;
            Ok(Tool {
                name: req_str(func, "name", &fpath)?.to_owned(),
                description: opt_str(func, "description", &fpath)?.map(str::to_owned),
                parameters: func.get("parameters").filter(|p| !p.is_null()).cloned(),
            })
        })
        .collect()
}

fn parse_tool_choice(body: &Object) -> Result<Option<ToolChoice>, TranslateError> {
    let bad =
        || invalid("tool_choice must be \"none\", \"auto\", \"required\" or a function choice");
    match body.get("tool_choice") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(Some(ToolChoice::None)),
            "auto" => Ok(Some(ToolChoice::Auto)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(bad()),
        },
        Some(Value::Object(o)) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(unsupported(
                    "tool_choice types other than \"function\" are not supported",
                ));
            }
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.function.name is required"))?;
            Ok(Some(ToolChoice::Function(name.to_owned())))
        }
        Some(_) => Err(bad()),
    }
}

fn parse_response_format(body: &Object) -> Result<ResponseFormat, TranslateError> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    let obj = as_object(rf, &|| "response_format".into())?;
    match req_str(obj, "type", &|| "response_format".into())? {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let schema = obj
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .filter(|s| s.is_object())
                .cloned()
                .ok_or_else(|| invalid("response_format.json_schema.schema must be an object"))?;
            Ok(ResponseFormat::JsonSchema { schema })
        }
        _ => Err(invalid(
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

/// An OpenAI assistant message from translated text and tool calls. OpenAI
/// sends `content: null` when the turn is only tool calls.
pub(crate) fn assistant_message(text: String, calls: Vec<Value>) -> Value {
    let mut message = serde_json::json!({"role": "assistant"});
    message["content"] = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatRequest, TranslateError> {
        ChatRequest::parse(v.as_object().unwrap())
    }

    fn err_msg(v: Value) -> String {
        match parse(v) {
            Err(TranslateError::InvalidRequest(m)) => m,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn validation_messages_name_fields_not_content() {
        assert_eq!(
            err_msg(json!({"messages": "hello secret"})),
            "messages must be an array"
        );
        assert_eq!(err_msg(json!({})), "messages is required");
        assert_eq!(
            err_msg(json!({"messages": [{"content": "secret"}]})),
            "messages[0].role is required"
        );
        assert_eq!(
            err_msg(json!({"messages": [{"role": "secret role", "content": "x"}]})),
            "messages[0].role is not a valid role"
        );
        assert_eq!(
            err_msg(json!({"messages": [{"role": "user", "content": 5}]})),
            "messages[0].content must be a string or an array of content parts"
        );
        let m = err_msg(json!({"messages": [{"role": "assistant", "content": null,
            "tool_calls": [{"id": "a", "type": "function",
                "function": {"name": "f", "arguments": "[\"secret\"]"}}]}]}));
        assert_eq!(
            m,
            "messages[0].tool_calls[0].function.arguments must be a JSON object encoded as a string"
        );
        assert!(!m.contains("secret"));
    }

    #[test]
    fn max_completion_tokens_wins() {
        let r =
            parse(json!({"messages": [], "max_tokens": 5, "max_completion_tokens": 9})).unwrap();
        assert_eq!(r.max_tokens, Some(9));
    }

    #[test]
    fn data_urls() {
        let r = parse(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": "https://x/y.png"}]}]}))
        .unwrap();
        let Message::User(c) = &r.messages[0] else {
            panic!()
        };
        assert!(
            matches!(&c.parts[0], Part::Image(Image::Base64 { media_type, data })
            if media_type == "image/png" && data == "AAAA")
        );
        assert!(matches!(&c.parts[1], Part::Image(Image::Url(u)) if u == "https://x/y.png"));
        assert!(parse(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,AAAA"}}]}]}))
        .is_err());
    }

    #[test]
    fn include_usage_forced_only_when_streaming() {
        let mut body = json!({"stream": true, "stream_options": null});
        force_include_usage(body.as_object_mut().unwrap());
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        let mut body = json!({"stream": false});
        force_include_usage(body.as_object_mut().unwrap());
        assert!(body.get("stream_options").is_none());
    }
}
