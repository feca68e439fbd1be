//! Every request field the provider receives as text is scanned, in each
//! API; names, keys, types, `data:` URLs and signed thinking blocks are
//! left alone. Each test lists exactly the strings that must change: any
//! other string changing fails it.

use llmesh_dlp::{Action, Api, Builtin, ClassRule, Engine, Outcome};
use serde_json::{json, Value};

const E: &str = "jane.doe@example.com";

fn engine() -> Engine {
    Engine::new(vec![ClassRule::builtin(Builtin::Email, Action::Redact)]).expect("engine")
}

/// JSON pointers of the string leaves that differ between `a` and `b`
/// (which must have the same shape).
fn changed(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if x != y {
                out.push(at.to_string());
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                changed(x, y, &format!("{at}/{i}"), out);
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, x) in x {
                changed(x, &y[k], &format!("{at}/{k}"), out);
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// Processes `body` as `api` and checks that exactly the strings at
/// `scanned` changed, each to text holding a placeholder and no `@`, and
/// that restoring every string gives the original back.
fn check(api: Api, mut body: Value, scanned: &[&str]) -> (Value, Outcome) {
    let before = body.clone();
    let out = engine().process(&mut body, api);
    assert!(!out.blocked);
    let mut got = Vec::new();
    changed(&before, &body, "", &mut got);
    got.sort();
    let mut want: Vec<String> = scanned.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "changed strings of {body:#}");
    for p in scanned {
        let v = body.pointer(p).and_then(Value::as_str).expect(p);
        assert!(v.contains("[EMAIL_") && !v.contains(E), "{p}: {v}");
    }
    let mut restored = body.clone();
    out.vault.restore_value(&mut restored);
    assert_eq!(restored, before);
    (body, out)
}

fn m(s: &str) -> String {
    format!("mail {s} now")
}

/// A JSON schema nested every way, with an e-mail in each text position
/// and as a property name, a `type`, a `format` and a `pattern`.
fn schema() -> Value {
    json!({
        "type": "object",
        "title": m(E),
        "description": m(E),
        "properties": {
            E: {"type": "string", "description": m(E), "format": E, "pattern": E},
            "to": {
                "type": "array",
                "items": {"type": "string", "enum": [m(E), 3, E], "examples": [E]},
                "default": [E, {"k": E, "n": 1}]
            },
            "alt": {"anyOf": [{"type": "string", "const": E}, {"$ref": "#/$defs/addr"}]},
            "description": {"type": "string", "default": E, "example": E}
        },
        "required": [E],
        "$defs": {"addr": {"type": "object", "title": E, "additionalProperties": {"description": E}}}
    })
}

/// The pointers (under `at`) of the schema's text.
fn schema_texts(at: &str) -> Vec<String> {
    [
        "/title",
        "/description",
        "/properties/jane.doe@example.com/description",
        "/properties/to/items/enum/0",
        "/properties/to/items/enum/2",
        "/properties/to/items/examples/0",
        "/properties/to/default/0",
        "/properties/to/default/1/k",
        "/properties/alt/anyOf/0/const",
        "/properties/description/default",
        "/properties/description/example",
        "/$defs/addr/title",
        "/$defs/addr/additionalProperties/description",
    ]
    .iter()
    .map(|p| format!("{at}{p}"))
    .collect()
}

fn with(mut fixed: Vec<String>, more: &[&str]) -> Vec<String> {
    fixed.extend(more.iter().map(|s| s.to_string()));
    fixed
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn openai_chat_tools_user_images_formats() {
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "name": E, "content": [
                {"type": "text", "text": m(E)},
                {"type": "image_url", "image_url": {"url": format!("https://img.example/x.png?owner={E}"), "detail": "auto"}},
                {"type": "image_url", "image_url": {"url": format!("data:text/plain,{E}")}},
                {"type": "image_url", "image_url": format!("https://img.example/{E}.png")},
                {"type": "file", "file": {"filename": format!("{E}.pdf"), "file_data": format!("data:application/pdf;base64,{E}")}}
            ]},
            {"role": "assistant", "content": null, "refusal": m(E)},
            // A function message's name is the function's.
            {"role": "function", "name": E, "content": m(E)}
        ],
        "tools": [
            {"type": "function", "function": {"name": E, "description": m(E), "parameters": schema()}},
            {"type": "custom", "custom": {"name": "c", "description": m(E)}}
        ],
        "functions": [{"name": E, "description": m(E), "parameters": {"type": "object", "properties": {"a": {"description": E}}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": E, "description": m(E), "schema": schema(), "strict": true}},
        "prediction": {"type": "content", "content": [{"type": "text", "text": m(E)}]},
        "user": E,
        "safety_identifier": E,
        "metadata": {"k": E}
    });
    let mut want = with(
        schema_texts("/tools/0/function/parameters"),
        &[
            "/messages/0/content/0/text",
            "/messages/0/content/1/image_url/url",
            "/messages/0/content/3/image_url",
            "/messages/0/name",
            "/messages/0/content/4/file/filename",
            "/messages/1/refusal",
            "/messages/2/content",
            "/metadata/k",
            "/tools/0/function/description",
            "/tools/1/custom/description",
            "/functions/0/description",
            "/functions/0/parameters/properties/a/description",
            "/response_format/json_schema/description",
            "/prediction/content/0/text",
            "/user",
            "/safety_identifier",
        ],
    );
    want.extend(schema_texts("/response_format/json_schema/schema"));
    let (body, _) = check(Api::OpenAiChat, body, &refs(&want));
    assert_eq!(
        body["messages"][0]["content"][1]["image_url"]["url"],
        "https://img.example/x.png?owner=[EMAIL_1]"
    );
    assert_eq!(body["tools"][0]["function"]["name"], E);
}

#[test]
fn openai_chat_prediction_as_a_string() {
    let body = json!({"messages": [], "prediction": {"type": "content", "content": m(E)}});
    check(Api::OpenAiChat, body, &["/prediction/content"]);
}

#[test]
fn embeddings_and_completions_user() {
    let body = json!({"model": "e", "input": [m(E)], "user": E, "encoding_format": E});
    check(Api::OpenAiEmbeddings, body, &["/input/0", "/user"]);
    let body = json!({"model": "c", "prompt": m(E), "suffix": m(E), "user": E, "stop": E});
    check(
        Api::OpenAiCompletions,
        body,
        &["/prompt", "/suffix", "/user"],
    );
}

#[test]
fn responses_tools_images_identifiers() {
    let body = json!({
        "model": "gpt-5",
        "instructions": m(E),
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": m(E)},
                {"type": "input_image", "image_url": format!("https://img.example/?u={E}"), "detail": "low"},
                {"type": "input_image", "image_url": format!("data:image/png;base64,{E}")},
                {"type": "input_file", "file_url": format!("https://files.example/{E}.pdf"), "filename": "a.pdf"}
            ]},
            {"type": "function_call", "call_id": E, "name": "send", "arguments": json!({"to": E}).to_string()},
            {"type": "function_call_output", "call_id": "c", "output": m(E)}
        ],
        "tools": [
            {"type": "function", "name": E, "description": m(E), "parameters": schema(), "strict": true},
            {"type": "web_search"}
        ],
        "text": {"format": {"type": "json_schema", "name": E, "description": m(E), "schema": {"type": "object", "properties": {"x": {"enum": [E]}}}}},
        "prompt": {"id": E, "variables": {"who": E, "pic": {"type": "input_image", "image_url": format!("https://i.example/{E}")}}},
        "user": E,
        "safety_identifier": E,
        "metadata": {"ticket": m(E)},
        "previous_response_id": E
    });
    let want = with(
        schema_texts("/tools/0/parameters"),
        &[
            "/instructions",
            "/input/0/content/0/text",
            "/input/0/content/1/image_url",
            "/input/0/content/3/file_url",
            "/input/1/arguments",
            "/input/2/output",
            "/tools/0/description",
            "/text/format/description",
            "/text/format/schema/properties/x/enum/0",
            "/prompt/variables/who",
            "/prompt/variables/pic/image_url",
            "/user",
            "/safety_identifier",
            "/metadata/ticket",
        ],
    );
    let (_, out) = check(Api::OpenAiResponses, body, &refs(&want));

    // The answer echoes the request's settings: the client gets its own
    // values back, as in the model's output.
    let mut answer = json!({
        "object": "response",
        "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "wrote [EMAIL_1]"}]}],
        "instructions": "mail [EMAIL_1] now",
        "tools": [{"type": "function", "name": "send", "description": "mail [EMAIL_1] now", "parameters": {"properties": {"a": {"enum": ["[EMAIL_1]"]}}}}],
        "user": "[EMAIL_1]",
        "safety_identifier": "[EMAIL_1]",
        "metadata": {"k": "[EMAIL_1]"}
    });
    assert_eq!(out.vault.restore_json(&mut answer, Api::OpenAiResponses), 7);
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        format!("wrote {E}")
    );
    assert_eq!(answer["tools"][0]["description"], m(E));
    assert_eq!(
        answer["tools"][0]["parameters"]["properties"]["a"]["enum"][0],
        E
    );
    assert_eq!(answer["user"], E);
    assert_eq!(answer["safety_identifier"], E);
    assert_eq!(answer["metadata"]["k"], E);
}

#[test]
fn anthropic_documents_images_tools_metadata() {
    let body = json!({
        "model": "claude",
        "max_tokens": 10,
        "system": [{"type": "text", "text": m(E)}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": format!("contact {E}")},
             "title": m(E), "context": m(E), "citations": {"enabled": true}},
            {"type": "document", "source": {"type": "content", "content": [
                {"type": "text", "text": m(E)},
                {"type": "image", "source": {"type": "url", "url": format!("https://i.example/{E}.png")}}
            ]}},
            {"type": "document", "source": {"type": "content", "content": m(E)}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": E}},
            {"type": "document", "source": {"type": "url", "url": format!("https://d.example/a.pdf?to={E}")}},
            {"type": "document", "source": {"type": "file", "file_id": E}},
            {"type": "image", "source": {"type": "url", "url": format!("https://i.example/?who={E}")}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": E}},
            {"type": "search_result", "source": format!("https://s.example/{E}"), "title": m(E),
             "content": [{"type": "text", "text": m(E)}]},
            {"type": "tool_result", "tool_use_id": E, "content": [
                {"type": "text", "text": m(E)},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": m(E)}, "title": m(E)},
                {"type": "image", "source": {"type": "url", "url": format!("https://i.example/{E}")}}
            ]}
        ]}],
        "tools": [
            {"name": E, "description": m(E), "input_schema": schema()},
            {"type": "web_search_20250305", "name": "web_search", "allowed_domains": [E]}
        ],
        "output_format": {"type": "json_schema", "schema": {"type": "object", "properties": {"p": {"description": m(E)}}}},
        "metadata": {"user_id": E}
    });
    let want = with(
        schema_texts("/tools/0/input_schema"),
        &[
            "/system/0/text",
            "/messages/0/content/0/source/data",
            "/messages/0/content/0/title",
            "/messages/0/content/0/context",
            "/messages/0/content/1/source/content/0/text",
            "/messages/0/content/1/source/content/1/source/url",
            "/messages/0/content/2/source/content",
            "/messages/0/content/4/source/url",
            "/messages/0/content/6/source/url",
            "/messages/0/content/8/source",
            "/messages/0/content/8/title",
            "/messages/0/content/8/content/0/text",
            "/messages/0/content/9/content/0/text",
            "/messages/0/content/9/content/1/source/data",
            "/messages/0/content/9/content/1/title",
            "/messages/0/content/9/content/2/source/url",
            "/tools/0/description",
            "/output_format/schema/properties/p/description",
            "/metadata/user_id",
        ],
    );
    let (body, _) = check(Api::Anthropic, body, &refs(&want));
    assert_eq!(
        body["messages"][0]["content"][0]["source"]["data"],
        "contact [EMAIL_1]"
    );
}

/// Prompt-cache breakpoints (`cache_control`, with or without a `ttl`) on
/// system, tool, document, tool result and text blocks come through a
/// redaction as they were: only the texts change, so the provider still
/// sees the breakpoints the app set (though a redacted prefix is a
/// different cache key than the raw one).
#[test]
fn anthropic_cache_control_survives_redaction() {
    let cc = json!({"type": "ephemeral"});
    let hour = json!({"type": "ephemeral", "ttl": "1h"});
    let body = json!({
        "model": "claude",
        "max_tokens": 10,
        "system": [{"type": "text", "text": m(E), "cache_control": hour}],
        "tools": [{"name": "f", "description": m(E), "input_schema": {"type": "object"}, "cache_control": cc}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": m(E)},
             "cache_control": cc},
            {"type": "tool_result", "tool_use_id": "t", "content": m(E), "cache_control": cc},
            {"type": "text", "text": m(E), "cache_control": cc}
        ]}]
    });
    let (body, _) = check(
        Api::Anthropic,
        body,
        &[
            "/system/0/text",
            "/tools/0/description",
            "/messages/0/content/0/source/data",
            "/messages/0/content/1/content",
            "/messages/0/content/2/text",
        ],
    );
    assert_eq!(body["system"][0]["cache_control"], hour);
    assert_eq!(body["tools"][0]["cache_control"], cc);
    for b in body["messages"][0]["content"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(b["cache_control"], cc, "{b}");
    }
}

#[test]
fn anthropic_thinking_blocks_are_never_modified() {
    let thinking =
        json!({"type": "thinking", "thinking": m(E), "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"});
    let redacted = json!({"type": "redacted_thinking", "data": m(E)});
    let body = json!({"messages": [
        {"role": "user", "content": m(E)},
        {"role": "assistant", "content": [
            thinking.clone(), redacted.clone(),
            {"type": "tool_use", "id": "t", "name": "f", "input": {"q": E, "nested": thinking.clone()}}
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": m(E)}]}
    ]});
    let (body, out) = check(
        Api::Anthropic,
        body,
        &[
            "/messages/0/content",
            "/messages/1/content/2/input/q",
            "/messages/2/content/0/content",
        ],
    );
    assert_eq!(body["messages"][1]["content"][0], thinking);
    assert_eq!(body["messages"][1]["content"][1], redacted);

    // Passed through as any JSON (a batch, say): still untouched.
    let mut any = json!({"requests": [{"params": {"messages": [{"role": "assistant", "content": [
        thinking.clone(), redacted.clone(), {"type": "text", "text": m(E)}
    ]}]}}]});
    engine().process(&mut any, Api::AnyJson);
    let blocks = &any["requests"][0]["params"]["messages"][0]["content"];
    assert_eq!(blocks[0], thinking);
    assert_eq!(blocks[1], redacted);
    assert_eq!(blocks[2]["text"], "mail [EMAIL_1] now");

    // An answer's thinking is not restored: the client sends it back as
    // the provider signed it.
    let mut answer = json!({"content": [
        {"type": "thinking", "thinking": "[EMAIL_1]", "signature": "s"},
        {"type": "text", "text": "[EMAIL_1]"}
    ]});
    assert_eq!(out.vault.restore_json(&mut answer, Api::Anthropic), 1);
    assert_eq!(answer["content"][0]["thinking"], "[EMAIL_1]");
    assert_eq!(answer["content"][1]["text"], E);
    let mut block = answer["content"][0].clone();
    assert_eq!(out.vault.restore_value(&mut block), 0);
}

#[test]
fn gemini_function_declarations_files_response_schema() {
    let body = json!({
        "contents": [{"role": "user", "parts": [
            {"text": m(E)},
            {"fileData": {"mimeType": "application/pdf", "fileUri": format!("https://f.example/{E}")}},
            {"inlineData": {"mimeType": "image/png", "data": E}}
        ]}],
        "systemInstruction": {"parts": [{"text": m(E)}]},
        "tools": [
            {"functionDeclarations": [{"name": E, "description": m(E), "parameters": schema(),
                                       "response": {"type": "OBJECT", "description": m(E)}}]},
            {"function_declarations": [{"name": "g", "description": m(E),
                                        "parameters_json_schema": {"properties": {"a": {"title": E}}}}]},
            {"googleSearch": {}}
        ],
        "generationConfig": {"responseMimeType": "application/json",
                             "responseSchema": {"type": "OBJECT", "properties": {"who": {"enum": [E]}}}}
    });
    let want = with(
        schema_texts("/tools/0/functionDeclarations/0/parameters"),
        &[
            "/contents/0/parts/0/text",
            "/contents/0/parts/1/fileData/fileUri",
            "/systemInstruction/parts/0/text",
            "/tools/0/functionDeclarations/0/description",
            "/tools/0/functionDeclarations/0/response/description",
            "/tools/1/function_declarations/0/description",
            "/tools/1/function_declarations/0/parameters_json_schema/properties/a/title",
            "/generationConfig/responseSchema/properties/who/enum/0",
        ],
    );
    check(Api::Gemini, body, &refs(&want));
    let body = json!({"generation_config": {"response_json_schema": {"description": E}}});
    check(
        Api::Gemini,
        body,
        &["/generation_config/response_json_schema/description"],
    );
}

#[test]
fn a_schema_enum_comes_back_in_tool_arguments() {
    let body = json!({"messages": [{"role": "user", "content": "mail the owner"}],
        "tools": [{"type": "function", "function": {"name": "send", "parameters":
            {"type": "object", "properties": {"to": {"type": "string", "enum": [E]}}}}}]});
    let (_, out) = check(
        Api::OpenAiChat,
        body,
        &["/tools/0/function/parameters/properties/to/enum/0"],
    );
    let mut answer = json!({"choices": [{"message": {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "send", "arguments": "{\"to\":\"[EMAIL_1]\"}"}}
    ]}}]});
    out.vault.restore_json(&mut answer, Api::OpenAiChat);
    let args = answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .map(serde_json::from_str::<Value>)
        .and_then(Result::ok);
    assert_eq!(args, Some(json!({"to": E})));
}

#[test]
fn anthropic_citations_of_an_earlier_answer() {
    let body = json!({"messages": [
        {"role": "user", "content": m(E)},
        {"role": "assistant", "content": [{"type": "text", "text": "as the file says", "citations": [
            {"type": "char_location", "cited_text": m(E), "document_index": 0, "document_title": m(E),
             "start_char_index": 0, "end_char_index": 9},
            {"type": "web_search_result_location", "cited_text": "x", "url": format!("https://w.example/?q={E}"),
             "title": m(E), "encrypted_index": E}
        ]}]}
    ]});
    let (_, out) = check(
        Api::Anthropic,
        body,
        &[
            "/messages/0/content",
            "/messages/1/content/0/citations/0/cited_text",
            "/messages/1/content/0/citations/0/document_title",
            "/messages/1/content/0/citations/1/url",
            "/messages/1/content/0/citations/1/title",
        ],
    );
    // An answer citing the placeholder text gets the original back.
    let mut answer = json!({"content": [{"type": "text", "text": "see", "citations": [
        {"type": "char_location", "cited_text": "mail [EMAIL_1] now", "document_index": 0}
    ]}]});
    assert_eq!(out.vault.restore_json(&mut answer, Api::Anthropic), 1);
    assert_eq!(answer["content"][0]["citations"][0]["cited_text"], m(E));
}
