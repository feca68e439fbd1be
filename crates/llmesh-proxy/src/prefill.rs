//! How an upstream takes a partial answer to continue (mid-stream
//! continuation, see `continuation`): the answer so far becomes the start
//! of the assistant's turn in the upstream-format request.
//!
//! Only upstreams that can continue an assistant turn qualify: Anthropic
//! (a trailing assistant message is a prefill) and the OpenAI-compatible
//! APIs of DeepSeek and Mistral (a trailing assistant message with
//! `"prefix": true`). OpenAI's own API and Gemini would start a new turn.
//! An Anthropic request that asked for structured output through the
//! forced tool (see `llmesh_wire::STRUCTURED_OUTPUT_TOOL`) gets the schema
//! as a system instruction instead, so the JSON so far continues as text.

use llmesh_api::ApiSchema;
use llmesh_policy::Provider;
use serde_json::{json, Value};

use crate::error::ProxyError;

/// The answer so far, to continue from.
#[derive(Debug, Clone, Default)]
pub struct ContinueFrom {
    /// Text the client has received.
    pub text: String,
    /// Content chunks the client has received (about a token each); the
    /// continuation's `max_tokens` is lowered by this much.
    pub chunks: u64,
}

/// How an upstream takes a partial assistant turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Anthropic: a trailing assistant message is continued (no trailing
    /// whitespace allowed).
    Prefill,
    /// DeepSeek, Mistral: a trailing assistant message with `prefix: true`.
    PrefixFlag,
}

fn style(p: &Provider) -> Option<Style> {
    match p.schema {
        ApiSchema::Anthropic => Some(Style::Prefill),
        ApiSchema::OpenaiCompatible
            if matches!(p.provider_name.as_str(), "deepseek" | "mistral_ai") =>
        {
            Some(Style::PrefixFlag)
        }
        _ => None,
    }
}

/// Whether `p` can continue a partial answer.
pub fn can_continue(p: &Provider) -> bool {
    style(p).is_some()
}

/// Adds the partial answer to an upstream-format request body and lowers
/// its output cap by what was already produced.
pub fn prefill(p: &Provider, body: &mut Value, from: &ContinueFrom) -> Result<(), ProxyError> {
    let style = style(p).ok_or_else(|| {
        ProxyError::Unsupported(format!(
            "provider {} cannot continue a partial answer (needs an Anthropic, DeepSeek or Mistral API)",
            p.name
        ))
    })?;
    if style == Style::Prefill {
        // A structured answer forced through a tool continues as text.
        llmesh_wire::unforce_structured_output(body);
    }
    let messages = body
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| ProxyError::Unsupported("the request has no messages to continue".into()))?;
    match style {
        Style::Prefill => {
            let text = from.text.trim_end();
            if !text.is_empty() {
                messages.push(json!({"role": "assistant", "content": text}));
            }
        }
        Style::PrefixFlag => {
            messages.push(json!({"role": "assistant", "content": from.text, "prefix": true}));
        }
    }
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = body.get(key).and_then(Value::as_u64) {
            body[key] = json!(n.saturating_sub(from.chunks).max(1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn prefill_shapes_per_upstream_and_lowers_max_tokens() {
        let from = ContinueFrom {
            text: "Once upon ".into(),
            chunks: 3,
        };
        let mut p = test_provider(ApiSchema::Anthropic, "anthropic");
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10});
        prefill(&p, &mut body, &from).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": "Once upon"})
        );
        assert_eq!(body["max_tokens"], 7);

        // A forced structured-output tool gives way to the instruction.
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 10,
            "tools": [{"name": llmesh_wire::STRUCTURED_OUTPUT_TOOL, "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": llmesh_wire::STRUCTURED_OUTPUT_TOOL}});
        prefill(&p, &mut body, &from).unwrap();
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
        assert!(body["system"].as_str().unwrap().contains("JSON Schema"));
        assert_eq!(body["messages"][1]["content"], "Once upon");

        p = test_provider(ApiSchema::OpenaiCompatible, "deepseek");
        let mut body = json!({"messages": []});
        prefill(&p, &mut body, &from).unwrap();
        assert_eq!(body["messages"][0]["prefix"], true);
        assert_eq!(body["messages"][0]["content"], "Once upon ");

        p = test_provider(ApiSchema::Openai, "openai");
        assert!(prefill(&p, &mut json!({"messages": []}), &from).is_err());
    }

    fn test_provider(schema: ApiSchema, name: &str) -> Arc<Provider> {
        let yaml = format!(
            "apiVersion: llmesh.io/v1alpha1\nkind: LLMProvider\nmetadata: {{name: p}}\nspec: {{schema: {}, baseUrl: 'http://127.0.0.1:1/v1', providerName: {name}}}\n",
            match schema {
                ApiSchema::Anthropic => "anthropic",
                ApiSchema::OpenaiCompatible => "openai-compatible",
                ApiSchema::Gemini => "gemini",
                ApiSchema::Openai => "openai",
                other => panic!("no test provider for {other:?}"),
            }
        );
        let docs = llmesh_api::parse_documents(&yaml).unwrap();
        let (snap, errors) =
            llmesh_policy::compile(&docs, "t", &llmesh_policy::EnvFileSecrets::default());
        assert!(errors.is_empty(), "{errors:?}");
        snap.providers.values().next().unwrap().clone()
    }
}
