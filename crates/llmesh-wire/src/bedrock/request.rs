//! OpenAI Chat Completions request → Bedrock `Converse` request.

use serde_json::{json, Map, Value};

use crate::json::{invalid, unsupported, Object};
use crate::openai::{ChatRequest, Content, Image, Message, Part, ToolChoice};
use crate::TranslateError;

/// Build the Converse body (no `modelId`, no `stream`: both are in the
/// URL). `raw` is the Chat Completions body `req` was parsed from, checked
/// for fields the parsed form does not keep but Converse cannot honour.
pub(crate) fn request_from_openai(req: ChatRequest, raw: &Object) -> Result<Value, TranslateError> {
    refuse_unexpressible(&req, raw)?;
    let mut out = Map::new();

    let messages = render_messages(req.messages)?;
    if messages.is_empty() {
        return Err(invalid(
            "messages must contain at least one non-system message",
        ));
    }
    out.insert("messages".into(), Value::Array(messages));

    let mut system = req.system;
    if let Some(instruction) = crate::anthropic::json_instruction(&req.response_format) {
        system.push(instruction);
    }
    let system: Vec<Value> = system
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| json!({"text": t}))
        .collect();
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }

    let mut config = Map::new();
    if let Some(n) = req.max_tokens {
        config.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        // Converse takes 0..=1; OpenAI allows up to 2.
        config.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        config.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        config.insert("stopSequences".into(), json!(req.stop));
    }
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }

    // Converse refuses toolUse/toolResult blocks without a toolConfig, so
    // with "none" the tools stay when the conversation has such blocks
    // (without a toolChoice: Converse has no "none").
    let has_tool_blocks = out
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some());
    let choice = match req.tool_choice {
        Some(ToolChoice::None) if has_tool_blocks => Some(None),
        Some(ToolChoice::None) => None,
        Some(ToolChoice::Auto) => Some(Some(json!({"auto": {}}))),
        Some(ToolChoice::Required) => Some(Some(json!({"any": {}}))),
        Some(ToolChoice::Function(name)) => Some(Some(json!({"tool": {"name": name}}))),
        None => Some(None),
    };
    if let (Some(choice), false) = (choice, req.tools.is_empty()) {
        let tools: Vec<Value> = req
            .tools
            .into_iter()
            .map(|t| {
                let mut spec = Map::new();
                spec.insert("name".into(), Value::String(t.name));
                if let Some(d) = t.description.filter(|d| !d.is_empty()) {
                    spec.insert("description".into(), Value::String(d));
                }
                let schema = t
                    .parameters
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                spec.insert("inputSchema".into(), json!({"json": schema}));
                json!({"toolSpec": spec})
            })
            .collect();
        let mut tool_config = json!({"tools": tools});
        if let Some(choice) = choice {
            tool_config["toolChoice"] = choice;
        }
        out.insert("toolConfig".into(), tool_config);
    }
    Ok(Value::Object(out))
}

fn refuse_unexpressible(req: &ChatRequest, raw: &Object) -> Result<(), TranslateError> {
    if req.n.unwrap_or(1) > 1 {
        return Err(unsupported(
            "n greater than 1 is not supported by the bedrock upstream",
        ));
    }
    let truthy = |k: &str| match raw.get(k) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_u64() != Some(0),
        Some(_) => true,
    };
    if truthy("logprobs") || truthy("top_logprobs") {
        return Err(unsupported(
            "logprobs/top_logprobs are not supported by the bedrock upstream",
        ));
    }
    let audio_out = raw
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|v| v.as_str() == Some("audio")));
    if audio_out || raw.get("audio").is_some_and(|a| !a.is_null()) {
        return Err(unsupported(
            "audio output (modalities/audio) is not supported by the bedrock upstream",
        ));
    }
    Ok(())
}

/// Converse needs strictly alternating roles: consecutive turns of one role
/// (a tool message after a user message, parallel tool results) merge.
fn render_messages(messages: Vec<Message>) -> Result<Vec<Value>, TranslateError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let (role, blocks) = match m {
            Message::User(content) => ("user", user_blocks(content, i)?),
            Message::Assistant { text, tool_calls } => {
                let mut blocks: Vec<Value> = text
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| json!({"text": t}))
                    .collect();
                for call in tool_calls {
                    blocks.push(json!({"toolUse": {
                        "toolUseId": call.id,
                        "name": call.name,
                        "input": call.arguments,
                    }}));
                }
                ("assistant", blocks)
            }
            Message::Tool {
                tool_call_id, text, ..
            } => {
                let text = text.concat();
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => json!({"json": v}),
                    _ => json!({"text": text}),
                };
                let block = json!({"toolResult": {
                    "toolUseId": tool_call_id,
                    "content": [content],
                }});
                ("user", vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect())
}

fn user_blocks(content: Content, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::with_capacity(content.parts.len());
    for (j, p) in content.parts.into_iter().enumerate() {
        blocks.push(match p {
            // Converse rejects empty text blocks.
            Part::Text(t) if t.is_empty() => continue,
            Part::Text(t) => json!({"text": t}),
            Part::Image(Image::Base64 { media_type, data }) => {
                let format = image_format(&media_type).ok_or_else(|| {
                    invalid(format!(
                        "messages[{i}].content[{j}].image_url.url: the bedrock upstream takes png, jpeg, gif or webp images"
                    ))
                })?;
                json!({"image": {"format": format, "source": {"bytes": data}}})
            }
            Part::Image(Image::Url(_)) => {
                return Err(invalid(format!(
                    "messages[{i}].content[{j}].image_url.url must be a base64 data URL for the bedrock upstream (Converse takes image bytes, not URLs)"
                )))
            }
        });
    }
    Ok(blocks)
}

fn image_format(media_type: &str) -> Option<&'static str> {
    Some(match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(v: Value) -> Result<Value, TranslateError> {
        let obj = v.as_object().unwrap();
        let req = ChatRequest::parse(obj)?;
        request_from_openai(req, obj)
    }

    #[test]
    fn refusals_name_the_field() {
        let user = json!([{"role": "user", "content": "hi"}]);
        for (k, v) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("modalities", json!(["text", "audio"])),
            ("audio", json!({"voice": "alloy"})),
        ] {
            let mut body = json!({"messages": user});
            body[k] = v;
            let err = translate(body).unwrap_err();
            assert!(matches!(err, TranslateError::Unsupported(_)), "{k}");
            assert!(err.message().contains(k), "{k}: {}", err.message());
        }
        let ok = json!({"messages": user, "logprobs": false, "n": 1, "top_logprobs": 0});
        assert!(translate(ok).is_ok());
    }

    #[test]
    fn remote_image_is_invalid_and_named() {
        let err = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is it"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}))
        .unwrap_err();
        assert!(matches!(err, TranslateError::InvalidRequest(_)));
        assert!(err
            .message()
            .starts_with("messages[0].content[1].image_url.url must be a base64 data URL"));
        let err = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]}))
        .unwrap_err();
        assert!(err.message().contains("png, jpeg, gif or webp"));
    }

    #[test]
    fn tool_choice_none_drops_tools() {
        let out = translate(json!({"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "none"}))
        .unwrap();
        assert!(out.get("toolConfig").is_none());
        let out = translate(json!({"messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "done"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "none"}))
        .unwrap();
        assert!(out["toolConfig"]["tools"].is_array());
        assert!(out["toolConfig"].get("toolChoice").is_none());
        let out = translate(json!({"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}))
        .unwrap();
        assert_eq!(
            out["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "f",
                "inputSchema": {"json": {"type": "object", "properties": {}}}}}]})
        );
    }

    #[test]
    fn json_mode_becomes_a_system_instruction_and_temperature_is_clamped() {
        let out = translate(json!({"messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"}, "temperature": 1.7}))
        .unwrap();
        assert!(out["system"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Respond only with a single valid JSON object"));
        assert_eq!(out["inferenceConfig"], json!({"temperature": 1.0}));
    }
}
