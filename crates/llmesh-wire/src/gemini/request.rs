//! OpenAI Chat Completions request → Gemini `generateContent` request.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::schema;
use crate::json::{invalid, unsupported};
use crate::openai::{ChatRequest, Content, Image, Message, Part, ResponseFormat, ToolChoice};
use crate::TranslateError;

/// Sentinel Google documents for replaying a function call whose thought
/// signature was lost (e.g. history produced by another model).
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Build the Gemini request body (no `model`, no `stream`: both go in the
/// URL).
///
/// Gemini 3 and later reject a replayed function call without its
/// `thoughtSignature`. Signatures llmesh handed out (as
/// `tool_calls[].extra_content.google.thought_signature`, like Google's own
/// OpenAI-compatible endpoint) are restored; otherwise the first call of each
/// model turn gets Google's skip sentinel, except on model names that start
/// with `gemini-1` or `gemini-2`, which predate the requirement.
pub(crate) fn request_from_openai(req: ChatRequest, model: &str) -> Result<Value, TranslateError> {
    let mut out = Map::new();
    let wants_signature = needs_signature(model);

    let contents = render_contents(req.messages, wants_signature)?;
    if contents.is_empty() {
        return Err(invalid(
            "messages must contain at least one non-system message",
        ));
    }
    out.insert("contents".into(), Value::Array(contents));
    if !req.system.is_empty() {
        let parts: Vec<Value> = req.system.into_iter().map(|t| json!({"text": t})).collect();
        out.insert("systemInstruction".into(), json!({"parts": parts}));
    }

    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .into_iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), Value::String(t.name));
                if let Some(desc) = t.description {
                    d.insert("description".into(), Value::String(desc));
                }
                if let Some(mut params) = t.parameters {
                    schema::clean(&mut params);
                    if !schema::is_empty_object(&params) {
                        d.insert("parameters".into(), params);
                    }
                }
                Value::Object(d)
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = req.tool_choice {
        let config = match choice {
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        out.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }

    let mut gen = Map::new();
    if let Some(n) = req.max_tokens {
        gen.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        gen.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        gen.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        gen.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(n) = req.n {
        gen.insert("candidateCount".into(), json!(n));
    }
    if let Some(s) = req.seed {
        gen.insert("seed".into(), json!(s));
    }
    if let Some(p) = req.presence_penalty {
        gen.insert("presencePenalty".into(), json!(p));
    }
    if let Some(p) = req.frequency_penalty {
        gen.insert("frequencyPenalty".into(), json!(p));
    }
    match req.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            gen.insert("responseMimeType".into(), json!("application/json"));
        }
        ResponseFormat::JsonSchema { mut schema } => {
            schema::clean(&mut schema);
            gen.insert("responseMimeType".into(), json!("application/json"));
            gen.insert("responseSchema".into(), schema);
        }
    }
    if !gen.is_empty() {
        out.insert("generationConfig".into(), Value::Object(gen));
    }
    Ok(Value::Object(out))
}

fn needs_signature(model: &str) -> bool {
    let name = model.strip_prefix("models/").unwrap_or(model);
    !(name.starts_with("gemini-1") || name.starts_with("gemini-2"))
}

fn render_contents(
    messages: Vec<Message>,
    wants_signature: bool,
) -> Result<Vec<Value>, TranslateError> {
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(messages.len());
    let mut names: HashMap<String, String> = HashMap::new();
    for m in messages {
        let (role, parts) = match m {
            Message::User(content) => ("user", user_parts(content)?),
            Message::Assistant { text, tool_calls } => {
                let mut parts: Vec<Value> = text
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| json!({"text": t}))
                    .collect();
                for (k, call) in tool_calls.into_iter().enumerate() {
                    let mut part =
                        json!({"functionCall": {"name": call.name, "args": call.arguments}});
                    match call.thought_signature {
                        Some(sig) => part["thoughtSignature"] = Value::String(sig),
                        None if k == 0 && wants_signature => {
                            part["thoughtSignature"] = json!(SKIP_SIGNATURE);
                        }
                        None => {}
                    }
                    names.insert(call.id, call.name);
                    parts.push(part);
                }
                ("model", parts)
            }
            Message::Tool {
                tool_call_id,
                text,
                index,
            } => {
                let name = names.get(&tool_call_id).ok_or_else(|| {
                    invalid(format!(
                        "messages[{index}].tool_call_id does not match a tool call of an earlier assistant message"
                    ))
                })?;
                let part =
                    json!({"functionResponse": {"name": name, "response": tool_response(text)}});
                ("user", vec![part])
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    Ok(contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect())
}

/// Gemini wants a JSON object as the function response: a tool that already
/// answered with one is passed as is, anything else is wrapped.
fn tool_response(text: Vec<String>) -> Value {
    let text = text.concat();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => json!({"content": text}),
    }
}

fn user_parts(content: Content) -> Result<Vec<Value>, TranslateError> {
    let mut parts = Vec::with_capacity(content.parts.len());
    for p in content.parts {
        parts.push(match p {
            Part::Text(t) => json!({"text": t}),
            Part::Image(Image::Base64 { media_type, data }) => {
                json!({"inlineData": {"mimeType": media_type, "data": data}})
            }
            Part::Image(Image::Url(_)) => {
                return Err(unsupported(
                    "image URLs are not supported for the gemini upstream; send images as base64 data URLs",
                ))
            }
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(v: Value, model: &str) -> Result<Value, TranslateError> {
        let req = ChatRequest::parse(v.as_object().unwrap())?;
        request_from_openai(req, model)
    }

    #[test]
    fn tool_results_resolve_latest_call_id() {
        let turn = |arg: &str| {
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_0",
                "type": "function", "function": {"name": arg, "arguments": "{}"}}]})
        };
        let out = translate(
            json!({"messages": [
                {"role": "user", "content": "hi"},
                turn("first"),
                {"role": "tool", "tool_call_id": "call_0", "content": "{\"ok\":true}"},
                turn("second"),
                {"role": "tool", "tool_call_id": "call_0", "content": "plain"}
            ]}),
            "gemini-2.5-flash",
        )
        .unwrap();
        let contents = out["contents"].as_array().unwrap();
        assert_eq!(
            contents[2]["parts"][0],
            json!({"functionResponse": {"name": "first", "response": {"ok": true}}})
        );
        assert_eq!(
            contents[4]["parts"][0],
            json!({"functionResponse": {"name": "second", "response": {"content": "plain"}}})
        );
        assert!(contents[1]["parts"][0].get("thoughtSignature").is_none());
    }

    #[test]
    fn unknown_tool_call_id_is_invalid() {
        let err = translate(
            json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            "gemini-2.0-flash",
        )
        .unwrap_err();
        assert_eq!(
            err,
            TranslateError::InvalidRequest(
                "messages[0].tool_call_id does not match a tool call of an earlier assistant message"
                    .into()
            )
        );
    }

    #[test]
    fn newer_models_get_signature_sentinel_on_first_call_only() {
        let out = translate(
            json!({"messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}]}),
            "gemini-3-pro-preview",
        )
        .unwrap();
        let parts = &out["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(parts[1].get("thoughtSignature").is_none());
    }

    #[test]
    fn remote_images_unsupported() {
        let err = translate(
            json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
            "gemini-2.0-flash",
        );
        assert!(matches!(err, Err(TranslateError::Unsupported(_))));
    }
}
