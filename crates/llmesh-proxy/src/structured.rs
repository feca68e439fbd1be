//! Structured-output enforcement: when a request asks for a JSON schema
//! (OpenAI `response_format: {type: json_schema}`, Responses
//! `text.format: {type: json_schema}`, Anthropic `output_format: {type:
//! json_schema}`) and its route validates (the default), the model's whole
//! answer is checked against that schema. An answer that is not JSON or
//! does not match is asked again, up to the route's `retries`, with the
//! invalid answer and the validation error added to the conversation (the
//! invalid call is billed and logged as a `"billed attempt"`); after the
//! bound the client gets a 502 `structured_output_invalid` naming the
//! error. Refusals and tool calls are answers, not checked. Streams are
//! not validated (the client has the answer as it is written).
//!
//! A route with its own schema (`structuredOutput.schema`) adds it to chat,
//! messages and Responses requests that ask for none ([`enforce_schema`]),
//! before anything is counted or sent, so such a request is validated
//! like one that asked for the schema itself.

use std::sync::Arc;

use bytes::Bytes;
use llmesh_policy::Route;
use llmesh_wire::Dialect;
use serde_json::{json, Value};

use crate::account::Call;
use crate::attempt::Success;
use crate::attempts::Ended;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::inbound::Endpoint;
use crate::plan::{backend_at, Plan};
use crate::signals::{check, Check};

/// The schema a request body asks its answer to match, in `client`'s API.
fn requested(client: Dialect, body: &Value) -> Option<&Value> {
    let (format, schema) = match client {
        Dialect::OpenAi => (body.get("response_format")?, "/json_schema/schema"),
        Dialect::Responses => (body.pointer("/text/format")?, "/schema"),
        // The generally available field, or the beta one.
        Dialect::Anthropic => (
            body.pointer("/output_config/format")
                .or_else(|| body.get("output_format"))?,
            "/schema",
        ),
        // Upstream-only dialects: no client speaks them.
        Dialect::Gemini | Dialect::Bedrock => return None,
    };
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    format.pointer(schema)
}

/// `raw` asking for the route's own schema, when the route has one and
/// the request (a chat, messages or Responses call) asks for none: OpenAI
/// `response_format`, Responses `text.format` (both `strict`), Anthropic
/// `output_config.format`, replacing a `text` or `json_object` format. A body that
/// is not a JSON object is left as it is, for later stages to refuse.
pub fn enforce_schema(route: &Route, endpoint: Endpoint, raw: Bytes) -> Bytes {
    let Some(enforced) = route.enforced_schema.as_deref() else {
        return raw;
    };
    let client = match endpoint {
        Endpoint::Chat => Dialect::OpenAi,
        Endpoint::Messages => Dialect::Anthropic,
        Endpoint::Responses => Dialect::Responses,
        _ => return raw,
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&raw) else {
        return raw;
    };
    if requested(client, &value).is_some() {
        return raw;
    }
    let Some(body) = value.as_object_mut() else {
        return raw;
    };
    let (name, schema) = (&enforced.name, &enforced.schema);
    match client {
        Dialect::OpenAi => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": true}}),
            );
        }
        Dialect::Responses => {
            let format =
                json!({"type": "json_schema", "name": name, "schema": schema, "strict": true});
            match body.get_mut("text") {
                Some(Value::Object(text)) => {
                    text.insert("format".into(), format);
                }
                None | Some(Value::Null) => {
                    body.insert("text".into(), json!({"format": format}));
                }
                // Not an object: the translation refuses it.
                Some(_) => return raw,
            }
        }
        // The generally available form (the beta `output_format` needs a
        // beta header the app did not ask for).
        Dialect::Anthropic => {
            let format = json!({"type": "json_schema", "schema": schema});
            match body.get_mut("output_config") {
                Some(Value::Object(config)) => {
                    config.insert("format".into(), format);
                }
                None | Some(Value::Null) => {
                    body.insert("output_config".into(), json!({"format": format}));
                }
                // Not an object: the provider refuses it.
                Some(_) => return raw,
            }
        }
        Dialect::Gemini | Dialect::Bedrock => return raw,
    }
    match serde_json::to_vec(&value) {
        Ok(v) => Bytes::from(v),
        Err(_) => raw,
    }
}

/// The validator of the schema `raw` asks for, when `route` validates.
/// A schema that does not compile is left to the provider to refuse.
pub fn validator(route: &Route, client: Dialect, raw: &[u8]) -> Option<Arc<jsonschema::Validator>> {
    route.schema_retries?;
    // Most requests ask for no schema: skip the parse.
    if !raw.windows(11).any(|w| w == b"json_schema") {
        return None;
    }
    let body: Value = serde_json::from_slice(raw).ok()?;
    let schema = requested(client, &body)?;
    // The route's own schema is compiled already.
    if let Some(e) = route
        .enforced_schema
        .as_deref()
        .filter(|e| &e.schema == schema)
    {
        return Some(e.validator.clone());
    }
    match jsonschema::validator_for(schema) {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            tracing::debug!(error = %e, "the requested JSON schema does not compile; not validating");
            None
        }
    }
}

/// `raw` with the invalid answer and the validation error appended to the
/// conversation.
fn with_feedback(
    client: Dialect,
    raw: &[u8],
    text: &str,
    error: &str,
) -> Result<Bytes, ProxyError> {
    let mut body: Value =
        serde_json::from_slice(raw).map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
    let feedback = format!(
        "Your previous answer does not match the required JSON schema: {error}. Answer again with only a JSON value that matches the schema."
    );
    let turns = [
        json!({"role": "assistant", "content": text}),
        json!({"role": "user", "content": feedback}),
    ];
    let list = match client {
        Dialect::Responses => {
            let input = body.get_mut("input").ok_or_else(|| {
                ProxyError::InvalidRequest("a Responses request without input".into())
            })?;
            if let Value::String(s) = input {
                *input = json!([{"role": "user", "content": s.clone()}]);
            }
            input.as_array_mut()
        }
        _ => body.get_mut("messages").and_then(Value::as_array_mut),
    };
    let list =
        list.ok_or_else(|| ProxyError::InvalidRequest("no conversation to continue".into()))?;
    list.extend(turns);
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| ProxyError::Encode(format!("the structured-output retry: {e}")))
}

/// What [`enforce`] hands back: the context and plan of the last round,
/// how it ended, the retries made, and whether the answer it ended with
/// was checked against the schema and matches it (so the drift signals
/// need not validate it again).
pub type Enforced = (Arc<RequestCtx>, Plan, Ended, u32, bool);

/// Checks the answer the attempts ended with and asks again while it does
/// not match the schema (see the module doc).
pub async fn enforce(mut ctx: Arc<RequestCtx>, mut plan: Plan, mut ended: Ended) -> Enforced {
    let Some(validator) = ctx.schema.clone() else {
        return (ctx, plan, ended, 0, false);
    };
    if ctx.stream {
        return (ctx, plan, ended, 0, false);
    }
    let bound = ctx.route.schema_retries.unwrap_or(0);
    let route = ctx.route.name.clone();
    let count = |ctx: &RequestCtx, result: &str| {
        ctx.shared
            .metrics
            .structured_outputs
            .with_label_values(&[&route, result])
            .inc();
    };
    let mut retries = 0;
    loop {
        let Ended::Answered {
            slot,
            success:
                Success::Whole {
                    body,
                    usage,
                    response_model,
                    ..
                },
            ..
        } = &ended
        else {
            return (ctx, plan, ended, retries, false);
        };
        let (text, error) = match check(&validator, ctx.client, body) {
            Check::Fine => {
                count(&ctx, "valid");
                return (ctx, plan, ended, retries, true);
            }
            Check::Invalid { text, error } => (text, error),
        };
        // The invalid answer was paid for: billed on its own, and counted
        // in the drift signals of the model version that gave it.
        if let Some(b) = backend_at(&ctx.table, ctx.route_index, *slot) {
            let call = Call::new(&ctx, b);
            // Found invalid just above: not validated again.
            let checked = crate::signals::Schema::Checked { valid: false };
            let signals = crate::signals::signals(ctx.client, body, checked);
            call.rejected_answer(response_model.as_deref(), *usage, signals.as_ref());
            call.bill(*usage, 0, "invalid_structured_output");
        }
        if retries >= bound {
            count(&ctx, "invalid");
            let err = ProxyError::StructuredOutput {
                attempts: retries + 1,
                detail: error,
            };
            return (ctx, plan, Ended::Refused(err), retries, false);
        }
        count(&ctx, "retried");
        let raw = match with_feedback(ctx.client, &ctx.raw, &text, &error) {
            Ok(raw) => raw,
            Err(e) => return (ctx, plan, Ended::Refused(e), retries, false),
        };
        retries += 1;
        ctx = Arc::new(ctx.with_raw(raw));
        plan = ctx.plan();
        ended = crate::attempts::run(&ctx, &mut plan).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(schema: Value) -> jsonschema::Validator {
        jsonschema::validator_for(&schema).unwrap()
    }

    fn chat(content: &str) -> Vec<u8> {
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn answers_are_checked_against_the_schema() {
        let schema = v(
            json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}),
        );
        assert_eq!(
            check(&schema, Dialect::OpenAi, &chat(r#"{"n": 3}"#)),
            Check::Fine
        );
        let Check::Invalid { error, .. } = check(&schema, Dialect::OpenAi, &chat(r#"{"n": "x"}"#))
        else {
            panic!("accepted");
        };
        assert!(error.starts_with("at /n: "), "{error}");
        let Check::Invalid { error, .. } = check(&schema, Dialect::OpenAi, &chat("Sure!")) else {
            panic!("accepted");
        };
        assert!(error.contains("not JSON"), "{error}");
        // A refusal is an answer.
        let refusal = json!({"choices": [{"message": {"role": "assistant", "content": null, "refusal": "no"}}]});
        assert_eq!(
            check(&schema, Dialect::OpenAi, refusal.to_string().as_bytes()),
            Check::Fine
        );
        // Anthropic and Responses text.
        let ant = json!({"content": [{"type": "text", "text": "{\"n\": 1}"}]});
        assert_eq!(
            check(&schema, Dialect::Anthropic, ant.to_string().as_bytes()),
            Check::Fine
        );
        let resp = json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "{\"n\": true}"}]}]});
        assert!(matches!(
            check(&schema, Dialect::Responses, resp.to_string().as_bytes()),
            Check::Invalid { .. }
        ));
    }

    #[test]
    fn feedback_continues_the_conversation_in_each_api() {
        let raw = json!({"model": "m", "input": "give me n"}).to_string();
        let b: Value = serde_json::from_slice(
            &with_feedback(Dialect::Responses, raw.as_bytes(), "oops", "bad").unwrap(),
        )
        .unwrap();
        assert_eq!(
            b["input"][0],
            json!({"role": "user", "content": "give me n"})
        );
        assert_eq!(
            b["input"][1],
            json!({"role": "assistant", "content": "oops"})
        );
        assert!(b["input"][2]["content"].as_str().unwrap().contains("bad"));
        let raw =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let b: Value = serde_json::from_slice(
            &with_feedback(Dialect::Anthropic, raw.as_bytes(), "oops", "bad").unwrap(),
        )
        .unwrap();
        assert_eq!(b["messages"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn the_requested_schema_is_found_in_each_api() {
        let s = json!({"type": "object"});
        let openai = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}});
        assert_eq!(requested(Dialect::OpenAi, &openai), Some(&s));
        let resp = json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": s}}});
        assert_eq!(requested(Dialect::Responses, &resp), Some(&s));
        let ant = json!({"output_format": {"type": "json_schema", "schema": s}});
        assert_eq!(requested(Dialect::Anthropic, &ant), Some(&s));
        let ga = json!({"output_config": {"format": {"type": "json_schema", "schema": s}}});
        assert_eq!(requested(Dialect::Anthropic, &ga), Some(&s));
        let plain = json!({"response_format": {"type": "json_object"}});
        assert_eq!(requested(Dialect::OpenAi, &plain), None);
    }

    fn route_with_schema(structured: &str) -> Arc<Route> {
        let yaml = format!(
            "apiVersion: llmesh.io/v1alpha1\nkind: LLMProvider\nmetadata: {{name: p}}\nspec: {{schema: openai, baseUrl: 'http://127.0.0.1:1/v1'}}\n---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: r}}\nspec: {{models: [m], backends: [{{provider: p}}], structuredOutput: {structured}}}\n"
        );
        let docs = llmesh_api::parse_documents(&yaml).unwrap();
        let (snap, errors) =
            llmesh_policy::compile(&docs, "t", &llmesh_policy::EnvFileSecrets::default());
        assert!(errors.is_empty(), "{errors:?}");
        snap.route_for("m", &http::HeaderMap::new())
            .unwrap()
            .route
            .clone()
    }

    fn enforced(route: &Route, endpoint: Endpoint, body: Value) -> Value {
        let raw = Bytes::from(body.to_string());
        serde_json::from_slice(&enforce_schema(route, endpoint, raw)).unwrap()
    }

    #[test]
    fn a_route_schema_joins_requests_that_ask_for_none() {
        let route = route_with_schema("{schema: {type: object, required: [n]}}");
        let s = json!({"type": "object", "required": ["n"]});
        let chat =
            json!({"model": "m", "messages": [], "response_format": {"type": "json_object"}});
        let out = enforced(&route, Endpoint::Chat, chat);
        assert_eq!(
            out["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": s, "strict": true}})
        );
        // The validator is the route's, compiled once.
        let v = validator(&route, Dialect::OpenAi, out.to_string().as_bytes()).unwrap();
        let e = route.enforced_schema.as_ref().unwrap();
        assert!(Arc::ptr_eq(&v, &e.validator));

        let resp = json!({"model": "m", "input": "hi", "text": {"verbosity": "low"}});
        let out = enforced(&route, Endpoint::Responses, resp);
        assert_eq!(out["text"]["verbosity"], "low");
        assert_eq!(
            out["text"]["format"],
            json!({"type": "json_schema", "name": "response", "schema": s, "strict": true})
        );
        let out = enforced(
            &route,
            Endpoint::Responses,
            json!({"model": "m", "input": "hi"}),
        );
        assert_eq!(out["text"]["format"]["schema"], s);

        let msg = json!({"model": "m", "max_tokens": 5, "messages": []});
        let out = enforced(&route, Endpoint::Messages, msg);
        assert_eq!(
            out["output_config"]["format"],
            json!({"type": "json_schema", "schema": s})
        );
    }

    #[test]
    fn a_request_with_its_own_schema_or_no_chat_keeps_its_body() {
        let route = route_with_schema("{schema: {type: object}, name: mine}");
        let own = json!({"model": "m", "response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "array"}}}});
        assert_eq!(enforced(&route, Endpoint::Chat, own.clone()), own);
        let emb = json!({"model": "m", "input": "hi"});
        assert_eq!(enforced(&route, Endpoint::Embeddings, emb.clone()), emb);
        let raw = Bytes::from_static(b"not json");
        assert_eq!(enforce_schema(&route, Endpoint::Chat, raw.clone()), raw);
        // Without a route schema, nothing changes either.
        let plain = route_with_schema("{retries: 2}");
        let chat = json!({"model": "m", "messages": []});
        assert_eq!(enforced(&plain, Endpoint::Chat, chat.clone()), chat);
    }
}
