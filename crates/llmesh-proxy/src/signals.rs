//! Comparable facts of a whole answer, never its text: why it stopped,
//! whether it refused, the tool it called, and whether it matches the
//! JSON schema its request asked for. Shadow traffic compares them
//! between a primary and a candidate; accounting counts them per backend
//! and model version (drift signals). One body parse gives all of them.

use jsonschema::Validator;
use llmesh_wire::Dialect;
use serde_json::Value;

/// The signals of one whole answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// As the API named it, or `refusal` for a refusal: `stop`, `length`,
    /// `tool_calls`, `end_turn`, `content_filter`, `refusal`...
    pub finish: String,
    /// Normalized across APIs: `stop`, `length`, `tool_calls`,
    /// `content_filter` or `other`.
    pub reason: &'static str,
    /// A refusal: OpenAI `message.refusal`, Anthropic `stop_reason:
    /// refusal`, or a filtered answer.
    pub refusal: bool,
    /// The first tool called, if any.
    pub tool: Option<String>,
    /// Against the request's schema: `valid`, `invalid`, or `none` without
    /// one.
    pub json: &'static str,
}

/// What is known of an answer against the request's schema, for
/// [`signals`]' `json`.
#[derive(Clone, Copy)]
pub enum Schema<'a> {
    /// The request asks for none: `none`.
    None,
    /// Validate the answer against it.
    Validate(&'a Validator),
    /// Validated already (structured outputs did): `valid` or `invalid`.
    Checked {
        /// It matched.
        valid: bool,
    },
}

impl<'a> From<Option<&'a Validator>> for Schema<'a> {
    fn from(v: Option<&'a Validator>) -> Self {
        v.map_or(Schema::None, Schema::Validate)
    }
}

/// The signals of a whole answer in `client`'s API (OpenAI chat or
/// Anthropic messages; `None` for other APIs and bodies that are not an
/// answer).
pub fn signals(client: Dialect, body: &[u8], schema: Schema<'_>) -> Option<Signals> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let (finish, reason, tool, refusal) = match client {
        Dialect::OpenAi => {
            let c = v.pointer("/choices/0")?;
            let finish = c.get("finish_reason").and_then(Value::as_str).unwrap_or("");
            let tool = c
                .pointer("/message/tool_calls/0/function/name")
                .and_then(Value::as_str);
            let refusal = c.pointer("/message/refusal").is_some_and(Value::is_string);
            let reason = match finish {
                "stop" => "stop",
                "length" => "length",
                "tool_calls" | "function_call" => "tool_calls",
                "content_filter" => "content_filter",
                _ => "other",
            };
            (finish, reason, tool, refusal)
        }
        Dialect::Anthropic => {
            let finish = v.get("stop_reason").and_then(Value::as_str).unwrap_or("");
            let tool = v
                .get("content")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                })
                .and_then(|b| b.get("name"))
                .and_then(Value::as_str);
            let reason = match finish {
                "end_turn" | "stop_sequence" => "stop",
                "max_tokens" | "model_context_window_exceeded" => "length",
                "tool_use" => "tool_calls",
                "refusal" => "content_filter",
                _ => "other",
            };
            (finish, reason, tool, finish == "refusal")
        }
        _ => return None,
    };
    let json = match schema {
        Schema::None => "none",
        Schema::Checked { valid: true } => "valid",
        Schema::Checked { valid: false } => "invalid",
        Schema::Validate(s) if check_value(s, client, &v) == Check::Fine => "valid",
        Schema::Validate(_) => "invalid",
    };
    Some(Signals {
        finish: if refusal {
            "refusal".into()
        } else {
            finish.to_string()
        },
        reason,
        refusal: refusal || reason == "content_filter",
        tool: tool.map(str::to_string),
        json,
    })
}

/// The signals of a streamed answer, from what the stream translator read
/// on the way: its finish reason (OpenAI's vocabulary), the first tool
/// called and whether it refused. A stream is not validated against a
/// schema: `json` is `none`.
pub fn streamed(finish: &'static str, tool: Option<&str>, refused: bool) -> Signals {
    let reason = match finish {
        "stop" | "length" | "tool_calls" | "content_filter" => finish,
        _ => "other",
    };
    Signals {
        finish: if refused { "refusal" } else { finish }.to_string(),
        reason,
        refusal: refused || reason == "content_filter",
        tool: tool.map(str::to_string),
        json: "none",
    }
}

/// What an answer is, against the schema.
#[derive(Debug, PartialEq)]
pub(crate) enum Check {
    /// Valid, or nothing to check (a refusal, a tool call).
    Fine,
    /// The answer's text and why it does not do.
    Invalid { text: String, error: String },
}

/// The model's text in a whole answer in `client`'s API; `None` for a
/// refusal or a tool call.
fn answer_text(client: Dialect, body: &Value) -> Option<String> {
    match client {
        Dialect::OpenAi => {
            let m = body.pointer("/choices/0/message")?;
            let calls = m.get("tool_calls").and_then(Value::as_array);
            if calls.is_some_and(|c| !c.is_empty())
                || m.get("refusal").is_some_and(Value::is_string)
            {
                return None;
            }
            Some(m.get("content")?.as_str()?.to_string())
        }
        Dialect::Responses => {
            let mut text = String::new();
            for item in body.get("output")?.as_array()? {
                match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => return None,
                    Some("message") => {
                        for part in item
                            .get("content")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            match part.get("type").and_then(Value::as_str) {
                                Some("refusal") => return None,
                                Some("output_text") => text.push_str(
                                    part.get("text").and_then(Value::as_str).unwrap_or(""),
                                ),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            Some(text)
        }
        Dialect::Anthropic => {
            let mut text = String::new();
            for b in body.get("content")?.as_array()? {
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => return None,
                    Some("text") => {
                        text.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    _ => {}
                }
            }
            Some(text)
        }
        Dialect::Gemini | Dialect::Bedrock => None,
    }
}

pub(crate) fn check(v: &Validator, client: Dialect, body: &[u8]) -> Check {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Check::Fine;
    };
    check_value(v, client, &answer)
}

/// [`check`] of an answer already parsed.
fn check_value(v: &Validator, client: Dialect, answer: &Value) -> Check {
    let Some(text) = answer_text(client, answer) else {
        return Check::Fine;
    };
    let value: Value = match serde_json::from_str(text.trim()) {
        Ok(v) => v,
        Err(e) => {
            return Check::Invalid {
                text,
                error: format!("the answer is not JSON ({e})"),
            }
        }
    };
    let errors: Vec<String> = v
        .iter_errors(&value)
        .take(3)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!("at {at}: {e}")
        })
        .collect();
    if errors.is_empty() {
        Check::Fine
    } else {
        Check::Invalid {
            text,
            error: errors.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_of_both_apis() {
        let openai = br#"{"choices":[{"finish_reason":"tool_calls","message":{"tool_calls":[{"function":{"name":"lookup","arguments":"{}"}}]}}]}"#;
        let s = signals(Dialect::OpenAi, openai, Schema::None).unwrap();
        assert_eq!(
            (s.finish.as_str(), s.tool.as_deref(), s.json),
            ("tool_calls", Some("lookup"), "none")
        );
        let refusal = br#"{"choices":[{"finish_reason":"stop","message":{"refusal":"no"}}]}"#;
        assert_eq!(
            signals(Dialect::OpenAi, refusal, Schema::None)
                .unwrap()
                .finish,
            "refusal"
        );
        let anthropic =
            br#"{"stop_reason":"end_turn","content":[{"type":"text","text":"{\"n\":1}"}]}"#;
        let schema =
            jsonschema::validator_for(&serde_json::json!({"type": "object", "required": ["n"]}))
                .unwrap();
        let s = signals(Dialect::Anthropic, anthropic, Schema::Validate(&schema)).unwrap();
        assert_eq!((s.finish.as_str(), s.json), ("end_turn", "valid"));
        let prose = br#"{"stop_reason":"end_turn","content":[{"type":"text","text":"sure!"}]}"#;
        assert_eq!(
            signals(Dialect::Anthropic, prose, Schema::Validate(&schema))
                .unwrap()
                .json,
            "invalid"
        );
        assert!(signals(Dialect::OpenAi, b"not json", Schema::None).is_none());
    }

    #[test]
    fn reasons_are_normalized_across_apis() {
        let reason = |client, body: &str| {
            let s = signals(client, body.as_bytes(), Schema::None).unwrap();
            (s.reason, s.refusal, s.tool.is_some())
        };
        let openai = |finish: &str| {
            format!(r#"{{"choices":[{{"finish_reason":"{finish}","message":{{"content":"x"}}}}]}}"#)
        };
        assert_eq!(
            reason(Dialect::OpenAi, &openai("stop")),
            ("stop", false, false)
        );
        assert_eq!(
            reason(Dialect::OpenAi, &openai("length")),
            ("length", false, false)
        );
        assert_eq!(
            reason(Dialect::OpenAi, &openai("content_filter")),
            ("content_filter", true, false)
        );
        assert_eq!(
            reason(Dialect::OpenAi, &openai("weird")),
            ("other", false, false)
        );
        let refused = r#"{"choices":[{"finish_reason":"stop","message":{"refusal":"no"}}]}"#;
        assert_eq!(reason(Dialect::OpenAi, refused), ("stop", true, false));
        let anthropic = |stop: &str| format!(r#"{{"stop_reason":"{stop}","content":[]}}"#);
        assert_eq!(
            reason(Dialect::Anthropic, &anthropic("end_turn")),
            ("stop", false, false)
        );
        assert_eq!(
            reason(Dialect::Anthropic, &anthropic("max_tokens")),
            ("length", false, false)
        );
        assert_eq!(
            reason(Dialect::Anthropic, &anthropic("refusal")),
            ("content_filter", true, false)
        );
        let tool =
            r#"{"stop_reason":"tool_use","content":[{"type":"tool_use","name":"f","input":{}}]}"#;
        assert_eq!(
            reason(Dialect::Anthropic, tool),
            ("tool_calls", false, true)
        );
        assert!(signals(Dialect::Responses, b"{}", Schema::None).is_none());
    }
}
