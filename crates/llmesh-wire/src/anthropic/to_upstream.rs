//! OpenAI Chat Completions request → Anthropic Messages request.

use serde_json::{json, Map, Value};

use super::{DEFAULT_MAX_TOKENS, STRUCTURED_OUTPUT_TOOL};
use crate::json::{invalid, unsupported};
use crate::openai::{ChatRequest, Content, Image, Message, Part, ResponseFormat, ToolChoice};
use crate::TranslateError;

/// Build the Anthropic request.
///
/// Beyond field renames:
/// - system/developer messages, wherever they appear, are hoisted into
///   `system` (Anthropic has no mid-conversation system turns);
/// - consecutive turns of the same role are merged, which is what puts
///   parallel tool results into the single user turn Anthropic expects;
/// - `temperature` is clamped to Anthropic's 0..=1 range (OpenAI allows 2);
/// - `response_format: json_schema` becomes a forced call of
///   [`STRUCTURED_OUTPUT_TOOL`], whose input schema is the requested
///   schema, when the request has no tools of its own and the schema's
///   root is an object; otherwise (and for `json_object`) a system
///   instruction asking for JSON only, quoting the schema (compliance is
///   then up to the model);
/// - sampling knobs Anthropic lacks (`seed`, penalties, `logit_bias`...) are
///   dropped.
pub(crate) fn request_from_openai(req: ChatRequest, model: &str) -> Result<Value, TranslateError> {
    if req.n.unwrap_or(1) > 1 {
        return Err(unsupported(
            "n greater than 1 is not supported by the anthropic upstream",
        ));
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );

    let forced = structured_tool(&req);
    let mut system = req.system;
    if forced.is_none() {
        if let Some(instruction) = json_instruction(&req.response_format) {
            system.push(instruction);
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }

    let messages = render_messages(req.messages);
    if messages.is_empty() {
        return Err(invalid(
            "messages must contain at least one non-system message",
        ));
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if !req.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(req.stop));
    }
    if req.stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .into_iter()
            .map(|t| {
                let mut tool = Map::new();
                tool.insert("name".into(), Value::String(t.name));
                if let Some(d) = t.description {
                    tool.insert("description".into(), Value::String(d));
                }
                tool.insert(
                    "input_schema".into(),
                    t.parameters
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                Value::Object(tool)
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        let explicit = req.tool_choice.is_some();
        let mut choice = match req.tool_choice {
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
            Some(ToolChoice::Auto) | None => json!({"type": "auto"}),
        };
        if req.parallel_tool_calls == Some(false) {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        if explicit || req.parallel_tool_calls == Some(false) {
            out.insert("tool_choice".into(), choice);
        }
    }
    if let Some(tool) = forced {
        out.insert("tools".into(), json!([tool]));
        out.insert(
            "tool_choice".into(),
            json!({"type": "tool", "name": STRUCTURED_OUTPUT_TOOL}),
        );
    }
    if let Some(user) = req.user {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(out))
}

/// The forced tool that carries a `json_schema` answer, when it can: the
/// client's own tools must stay callable (a forced tool would rule them
/// out), and a tool input is an object.
fn structured_tool(req: &ChatRequest) -> Option<Value> {
    let ResponseFormat::JsonSchema { schema } = &req.response_format else {
        return None;
    };
    // Anthropic requires `input_schema.type: object`.
    let object_root = schema.get("type").and_then(Value::as_str) == Some("object");
    if !req.tools.is_empty() || !object_root {
        return None;
    }
    Some(json!({
        "name": STRUCTURED_OUTPUT_TOOL,
        "description": "Give the whole answer by calling this tool: its input is the JSON answer.",
        "input_schema": schema,
    }))
}

/// Turns the forced [`STRUCTURED_OUTPUT_TOOL`] of a translated Anthropic
/// request back into the system instruction (see [`json_instruction`]),
/// for a request that continues a partial answer as text (a prefilled
/// assistant turn). Returns whether the request had the tool.
pub fn unforce_structured_output(body: &mut Value) -> bool {
    let forced = body
        .pointer("/tool_choice/name")
        .and_then(Value::as_str)
        .is_some_and(|n| n == STRUCTURED_OUTPUT_TOOL);
    let Some(obj) = body.as_object_mut().filter(|_| forced) else {
        return false;
    };
    obj.remove("tool_choice");
    let schema = match obj.remove("tools") {
        Some(Value::Array(tools)) => tools
            .into_iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(STRUCTURED_OUTPUT_TOOL))
            .and_then(|mut t| t.get_mut("input_schema").map(Value::take)),
        _ => None,
    };
    let format = match schema {
        Some(schema) => ResponseFormat::JsonSchema { schema },
        None => ResponseFormat::JsonObject,
    };
    if let Some(instruction) = json_instruction(&format) {
        let system = match obj.remove("system") {
            Some(Value::String(s)) if !s.is_empty() => format!("{s}\n\n{instruction}"),
            Some(Value::Array(mut blocks)) => {
                blocks.push(text_block(instruction));
                obj.insert("system".into(), Value::Array(blocks));
                return true;
            }
            _ => instruction,
        };
        obj.insert("system".into(), Value::String(system));
    }
    true
}

pub(crate) fn json_instruction(format: &ResponseFormat) -> Option<String> {
    const BASE: &str = "Respond only with a single valid JSON object. \
        Do not add any other text, explanation or Markdown code fences.";
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(BASE.to_owned()),
        ResponseFormat::JsonSchema { schema } => Some(format!(
            "{BASE} The JSON object must conform to this JSON Schema: {schema}"
        )),
    }
}

/// Turn content while merging: a plain string until a second piece arrives.
enum Body {
    Text(String),
    Blocks(Vec<Value>),
}

impl Body {
    fn into_blocks(self) -> Vec<Value> {
        match self {
            Body::Text(t) => vec![text_block(t)],
            Body::Blocks(b) => b,
        }
    }
}

struct Turn {
    role: &'static str,
    body: Body,
}

fn render_messages(messages: Vec<Message>) -> Vec<Value> {
    let mut turns: Vec<Turn> = Vec::with_capacity(messages.len());
    for m in messages {
        let (role, body) = match m {
            Message::User(content) => ("user", user_body(content)),
            Message::Assistant { text, tool_calls } => {
                let mut text: Vec<String> = text.into_iter().filter(|t| !t.is_empty()).collect();
                if tool_calls.is_empty() && text.len() == 1 {
                    ("assistant", Body::Text(text.remove(0)))
                } else {
                    let mut blocks: Vec<Value> = text.into_iter().map(text_block).collect();
                    blocks.extend(tool_calls.into_iter().map(|c| {
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})
                    }));
                    if blocks.is_empty() {
                        // Anthropic rejects empty assistant turns.
                        continue;
                    }
                    ("assistant", Body::Blocks(blocks))
                }
            }
            Message::Tool {
                tool_call_id, text, ..
            } => {
                let content = if text.len() == 1 {
                    Value::String(text.concat())
                } else {
                    Value::Array(text.into_iter().map(text_block).collect())
                };
                let block =
                    json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content});
                ("user", Body::Blocks(vec![block]))
            }
        };
        push_turn(&mut turns, role, body);
    }
    turns
        .into_iter()
        .map(|t| {
            let content = match t.body {
                Body::Text(s) => Value::String(s),
                Body::Blocks(b) => Value::Array(b),
            };
            json!({"role": t.role, "content": content})
        })
        .collect()
}

fn push_turn(turns: &mut Vec<Turn>, role: &'static str, body: Body) {
    match turns.last_mut() {
        Some(last) if last.role == role => {
            let prev = std::mem::replace(&mut last.body, Body::Blocks(Vec::new()));
            let mut blocks = prev.into_blocks();
            blocks.extend(body.into_blocks());
            last.body = Body::Blocks(blocks);
        }
        _ => turns.push(Turn { role, body }),
    }
}

fn user_body(content: Content) -> Body {
    let Content {
        mut parts,
        was_string,
    } = content;
    if was_string && parts.len() == 1 {
        if let Some(Part::Text(t)) = parts.pop() {
            return Body::Text(t);
        }
        return Body::Blocks(Vec::new());
    }
    Body::Blocks(
        parts
            .into_iter()
            .map(|p| match p {
                Part::Text(t) => text_block(t),
                Part::Image(Image::Base64 { media_type, data }) => json!({
                    "type": "image",
                    "source": {"type": "base64", "media_type": media_type, "data": data},
                }),
                Part::Image(Image::Url(url)) => json!({
                    "type": "image",
                    "source": {"type": "url", "url": url},
                }),
            })
            .collect(),
    )
}

fn text_block(t: String) -> Value {
    json!({"type": "text", "text": t})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(v: Value) -> Result<Value, TranslateError> {
        let req = ChatRequest::parse(v.as_object().unwrap())?;
        request_from_openai(req, "claude-test")
    }

    #[test]
    fn defaults_max_tokens_and_clamps_temperature() {
        let out = translate(json!({"messages": [{"role": "user", "content": "hi"}],
            "temperature": 1.7}))
        .unwrap();
        assert_eq!(out["max_tokens"], 4096);
        assert_eq!(out["temperature"], 1.0);
        assert_eq!(out["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn n_above_one_unsupported() {
        let err = translate(json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}));
        assert!(matches!(err, Err(TranslateError::Unsupported(_))));
    }

    #[test]
    fn only_system_messages_is_invalid() {
        let err = translate(json!({"messages": [{"role": "system", "content": "s"}]}));
        assert!(matches!(err, Err(TranslateError::InvalidRequest(_))));
    }

    #[test]
    fn merges_consecutive_user_turns() {
        let out = translate(json!({"messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"}]}))
        .unwrap();
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": [
                {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
        );
    }

    #[test]
    fn parallel_tool_calls_false_disables_parallel_use() {
        let out = translate(json!({"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "parallel_tool_calls": false}))
        .unwrap();
        assert_eq!(
            out["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            out["tools"],
            json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}])
        );
    }

    fn with_format(format: Value) -> Value {
        json!({"messages": [{"role": "user", "content": "hi"}], "response_format": format})
    }

    fn schema_format(schema: Value) -> Value {
        json!({"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    }

    #[test]
    fn json_schema_becomes_a_forced_tool() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        let out = translate(with_format(schema_format(schema.clone()))).unwrap();
        assert_eq!(out["tools"][0]["name"], STRUCTURED_OUTPUT_TOOL);
        assert_eq!(out["tools"][0]["input_schema"], schema);
        assert_eq!(
            out["tool_choice"],
            json!({"type": "tool", "name": STRUCTURED_OUTPUT_TOOL})
        );
        assert!(out.get("system").is_none(), "{out}");
    }

    #[test]
    fn the_instruction_stays_where_a_forced_tool_cannot_go() {
        let object = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        let instructed = |out: &Value| {
            assert!(out["tools"]
                .as_array()
                .is_none_or(|t| t.iter().all(|t| t["name"] != STRUCTURED_OUTPUT_TOOL)));
            let system = out["system"].as_str().unwrap();
            assert!(system.contains("Respond only with a single valid JSON object"));
        };
        // The client's own tools must stay callable.
        let mut body = with_format(schema_format(object.clone()));
        body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        let out = translate(body).unwrap();
        instructed(&out);
        assert_eq!(out["tools"][0]["name"], "f");
        assert!(out["system"].as_str().unwrap().contains("\"integer\""));
        // A tool input is an object.
        instructed(&translate(with_format(schema_format(json!({"type": "array"})))).unwrap());
        instructed(&translate(with_format(schema_format(json!({"anyOf": []})))).unwrap());
        // No schema to force.
        instructed(&translate(with_format(json!({"type": "json_object"}))).unwrap());
    }

    #[test]
    fn a_forced_structured_tool_can_become_the_instruction_again() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        let mut body = json!({"messages": [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"}], "response_format": schema_format(schema)});
        let mut forced = translate(body.clone()).unwrap();
        assert!(unforce_structured_output(&mut forced));
        body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        let mut instructed = translate(body).unwrap();
        instructed.as_object_mut().unwrap().remove("tools");
        assert_eq!(forced, instructed);
        // Anything else is left alone.
        let mut plain = translate(with_format(json!({"type": "json_object"}))).unwrap();
        let before = plain.clone();
        assert!(!unforce_structured_output(&mut plain));
        assert_eq!(plain, before);
    }
}
