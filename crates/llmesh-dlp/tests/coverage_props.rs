//! Property: whatever request an app sends, in any API, an e-mail placed in
//! any text the provider receives (message text, tool definitions and
//! their nested schemas, documents, metadata and user ids, image URLs) is
//! gone from every string of the processed body, except inside Anthropic
//! `thinking` / `redacted_thinking` blocks, which stay byte-identical; and
//! restoring every string gives the original body back (so nothing but the
//! found values changed: no key, name or type).

use std::sync::OnceLock;

use llmesh_dlp::{Action, Api, Builtin, ClassRule, Engine};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new(vec![ClassRule::builtin(Builtin::Email, Action::Redact)]).expect("engine")
    })
}

fn email() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9]{0,6}(\\.[a-z0-9]{1,5})?",
        "[a-z]{1,8}",
        prop::sample::select(vec!["com", "org", "io", "co.uk"]),
    )
        .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
}

fn filler() -> impl Strategy<Value = String> {
    "[a-z]{1,8}( [a-z]{1,8}){0,2}"
}

/// A text leaf: filler words, with the e-mail in the middle or not.
fn txt(e: &str) -> BoxedStrategy<String> {
    let e = e.to_string();
    (filler(), any::<bool>(), filler())
        .prop_map(move |(a, has, b)| {
            if has {
                format!("{a} {e} {b}")
            } else {
                format!("{a} {b}")
            }
        })
        .boxed()
}

/// A URL the provider fetches, the e-mail in its path or query, or a
/// `data:` URL (left alone: it holds no e-mail).
fn url(e: &str) -> BoxedStrategy<String> {
    let e = e.to_string();
    (0u8..4, "[a-z]{1,6}")
        .prop_map(move |(k, w)| match k {
            0 => format!("https://img.example/{w}.png?owner={e}&n=1"),
            1 => format!("https://img.example/{e}/{w}.png"),
            2 => format!("https://img.example/{w}.png"),
            _ => "data:image/png;base64,iVBORw0KGgo=".to_string(),
        })
        .boxed()
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_]{1,8}"
}

/// Optional fields into an object.
fn obj(fields: Vec<(&str, Option<Value>)>) -> Value {
    let mut o = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            o.insert(k.to_string(), v);
        }
    }
    Value::Object(o)
}

fn s(v: Option<String>) -> Option<Value> {
    v.map(Value::String)
}

/// A JSON schema with text in every position, nested through properties
/// (whose names may be the e-mail: keys are never text), items, anyOf,
/// $defs.
fn schema(e: &str) -> BoxedStrategy<Value> {
    let (t, e2) = (txt(e), e.to_string());
    let leaf = (
        prop::sample::select(vec!["string", "integer", "boolean"]),
        option::of(t.clone()),
        option::of(vec(t.clone(), 1..3)),
        option::of(t.clone()),
        option::of(t.clone()),
        option::of(vec(t.clone(), 1..3)),
    )
        .prop_map(|(ty, d, en, def, title, ex)| {
            obj(vec![
                ("type", Some(json!(ty))),
                ("description", s(d)),
                ("enum", en.map(|v| json!(v))),
                ("default", s(def)),
                ("title", s(title)),
                ("examples", ex.map(|v| json!(v))),
            ])
        });
    leaf.prop_recursive(3, 12, 3, move |inner| {
        let t = txt(&e2);
        let key = prop_oneof![name(), Just(e2.clone())];
        prop_oneof![
            (vec((key, inner.clone()), 1..3), option::of(t.clone())).prop_map(|(props, d)| {
                let required: Vec<&String> = props
                    .iter()
                    .map(|(k, _)| k)
                    .filter(|k| !k.contains('@'))
                    .collect();
                let required = json!(required);
                let props: Map<String, Value> = props.into_iter().collect();
                obj(vec![
                    ("type", Some(json!("object"))),
                    ("description", s(d)),
                    ("properties", Some(Value::Object(props))),
                    ("required", Some(required)),
                ])
            }),
            (inner.clone(), option::of(vec(t.clone(), 1..3)), t.clone()).prop_map(
                |(items, def, obj_default)| obj(vec![
                    ("type", Some(json!("array"))),
                    ("items", Some(items)),
                    ("default", def.map(|d| json!([d, {"note": obj_default}]))),
                ])
            ),
            vec(inner.clone(), 1..3).prop_map(|alts| json!({"anyOf": alts})),
            (inner.clone(), inner, option::of(t)).prop_map(|(d, b, title)| obj(vec![
                ("$defs", Some(json!({"d": d}))),
                ("allOf", Some(json!([b, {"$ref": "#/$defs/d"}]))),
                ("title", s(title)),
            ])),
        ]
    })
    .boxed()
}

/// JSON text of tool-call arguments.
fn args(e: &str) -> BoxedStrategy<String> {
    (txt(e), vec(txt(e), 0..2))
        .prop_map(|(q, l)| json!({"q": q, "n": 3, "list": l}).to_string())
        .boxed()
}

/// Text, or a list of text parts.
fn text_or_parts(e: &str, part: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![
        txt(e).prop_map(Value::String),
        vec(part, 1..4).prop_map(Value::Array)
    ]
    .boxed()
}

fn openai_chat(e: &str) -> BoxedStrategy<Value> {
    let part = prop_oneof![
        txt(e).prop_map(|t| json!({"type": "text", "text": t})),
        url(e)
            .prop_map(|u| json!({"type": "image_url", "image_url": {"url": u, "detail": "auto"}})),
    ]
    .boxed();
    let msg = prop_oneof![
        (prop::sample::select(vec!["system", "user", "tool"]), text_or_parts(e, part))
            .prop_map(|(role, c)| json!({"role": role, "content": c})),
        // A named participant.
        (txt(e), txt(e)).prop_map(|(n, c)| json!({"role": "user", "name": n, "content": c})),
        txt(e).prop_map(|r| json!({"role": "assistant", "content": null, "refusal": r})),
        vec((name(), args(e)), 1..3).prop_map(|calls| {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|(n, a)| json!({"id": "c", "type": "function", "function": {"name": n, "arguments": a}}))
                .collect();
            json!({"role": "assistant", "content": null, "tool_calls": calls})
        }),
    ];
    let tool = (name(), option::of(txt(e)), schema(e)).prop_map(|(n, d, p)| {
        json!({"type": "function", "function": obj(vec![
            ("name", Some(json!(n))), ("description", s(d)), ("parameters", Some(p)),
        ])})
    });
    (
        vec(msg, 1..4),
        vec(tool, 0..3),
        option::of(txt(e)),
        option::of(txt(e)),
        option::of(txt(e)),
    )
        .prop_map(|(msgs, tools, user, sid, meta)| {
            obj(vec![
                ("model", Some(json!("gpt-4o"))),
                ("messages", Some(json!(msgs))),
                ("tools", (!tools.is_empty()).then(|| json!(tools))),
                ("user", s(user)),
                ("safety_identifier", s(sid)),
                ("store", meta.is_some().then_some(Value::Bool(true))),
                ("metadata", meta.map(|m| json!({"customer": m}))),
            ])
        })
        .boxed()
}

fn anthropic_block(e: &str, nested: bool) -> BoxedStrategy<Value> {
    let t = txt(e);
    let u = url(e);
    let leaf = prop_oneof![
        t.clone().prop_map(|t| json!({"type": "text", "text": t})),
        // An earlier answer's text with the passages it cited.
        (t.clone(), t.clone(), t.clone(), u.clone()).prop_map(|(t, cited, title, u)| json!({
            "type": "text", "text": t, "citations": [
                {"type": "char_location", "cited_text": cited, "document_index": 0, "document_title": title, "start_char_index": 0, "end_char_index": 5},
                {"type": "web_search_result_location", "cited_text": "x", "url": u, "title": "t", "encrypted_index": "Eo8B"},
            ]})),
        u.clone().prop_map(|u| json!({"type": "image", "source": {"type": "url", "url": u}})),
        Just(json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})),
        (t.clone(), option::of(t.clone()), option::of(t.clone())).prop_map(|(d, title, ctx)| obj(vec![
            ("type", Some(json!("document"))),
            ("source", Some(json!({"type": "text", "media_type": "text/plain", "data": d}))),
            ("title", s(title)),
            ("context", s(ctx)),
        ])),
        (vec(t.clone(), 1..3), u.clone()).prop_map(|(texts, u)| {
            let mut inner: Vec<Value> =
                texts.into_iter().map(|t| json!({"type": "text", "text": t})).collect();
            inner.push(json!({"type": "image", "source": {"type": "url", "url": u}}));
            json!({"type": "document", "source": {"type": "content", "content": inner}})
        }),
        u.prop_map(|u| json!({"type": "document", "source": {"type": "url", "url": u}})),
    ]
    .boxed();
    if !nested {
        return leaf;
    }
    prop_oneof![
        3 => leaf.clone(),
        1 => (t.clone(), vec(t.clone(), 0..2)).prop_map(|(q, l)| json!({"type": "tool_use", "id": "toolu_1", "name": "f",
            "input": {"q": q, "deep": {"list": l, "n": 1}}})),
        1 => prop_oneof![t.clone().prop_map(Value::String), vec(leaf, 1..3).prop_map(Value::Array)]
            .prop_map(|c| json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": c})),
        1 => t.clone().prop_map(|th| json!({"type": "thinking", "thinking": th, "signature": "EqQBCgIYAhIMsig+/="})),
        1 => t.prop_map(|d| json!({"type": "redacted_thinking", "data": d})),
    ]
    .boxed()
}

fn anthropic(e: &str) -> BoxedStrategy<Value> {
    let msg = (
        prop::sample::select(vec!["user", "assistant"]),
        prop_oneof![
            txt(e).prop_map(Value::String),
            vec(anthropic_block(e, true), 1..5).prop_map(Value::Array)
        ],
    )
        .prop_map(|(role, c)| json!({"role": role, "content": c}));
    let system = prop_oneof![
        txt(e).prop_map(Value::String),
        vec(
            txt(e).prop_map(|t| json!({"type": "text", "text": t})),
            1..3
        )
        .prop_map(Value::Array),
    ];
    let tool = (name(), option::of(txt(e)), schema(e)).prop_map(|(n, d, p)| {
        obj(vec![
            ("name", Some(json!(n))),
            ("description", s(d)),
            ("input_schema", Some(p)),
        ])
    });
    (
        option::of(system),
        vec(msg, 1..4),
        vec(tool, 0..3),
        option::of(txt(e)),
    )
        .prop_map(|(system, msgs, tools, uid)| {
            obj(vec![
                ("model", Some(json!("claude-sonnet-4-5"))),
                ("max_tokens", Some(json!(100))),
                ("system", system),
                ("messages", Some(json!(msgs))),
                ("tools", (!tools.is_empty()).then(|| json!(tools))),
                ("metadata", uid.map(|u| json!({"user_id": u}))),
            ])
        })
        .boxed()
}

fn gemini(e: &str) -> BoxedStrategy<Value> {
    let part = prop_oneof![
        txt(e).prop_map(|t| json!({"text": t})),
        txt(e).prop_map(|t| json!({"functionCall": {"name": "f", "args": {"q": t, "l": [1]}}})),
        txt(e)
            .prop_map(|t| json!({"functionResponse": {"name": "f", "response": {"r": {"t": t}}}})),
        url(e).prop_map(|u| json!({"fileData": {"mimeType": "image/png", "fileUri": u}})),
    ];
    let content = (prop::sample::select(vec!["user", "model"]), vec(part, 1..4))
        .prop_map(|(role, parts)| json!({"role": role, "parts": parts}));
    let decl = (name(), option::of(txt(e)), schema(e)).prop_map(|(n, d, p)| {
        obj(vec![
            ("name", Some(json!(n))),
            ("description", s(d)),
            ("parameters", Some(p)),
        ])
    });
    (
        vec(content, 1..4),
        option::of(txt(e)),
        vec(decl, 0..3),
        any::<bool>(),
    )
        .prop_map(|(contents, sys, decls, snake)| {
            let key = if snake {
                "function_declarations"
            } else {
                "functionDeclarations"
            };
            obj(vec![
                ("contents", Some(json!(contents))),
                (
                    "systemInstruction",
                    sys.map(|t| json!({"parts": [{"text": t}]})),
                ),
                ("tools", (!decls.is_empty()).then(|| json!([{key: decls}]))),
            ])
        })
        .boxed()
}

fn responses(e: &str) -> BoxedStrategy<Value> {
    let part = prop_oneof![
        txt(e).prop_map(|t| json!({"type": "input_text", "text": t})),
        url(e).prop_map(|u| json!({"type": "input_image", "image_url": u, "detail": "auto"})),
    ]
    .boxed();
    let item = prop_oneof![
        (
            prop::sample::select(vec!["user", "developer"]),
            text_or_parts(e, part)
        )
            .prop_map(|(role, c)| json!({"role": role, "content": c})),
        args(e).prop_map(
            |a| json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": a})
        ),
        txt(e).prop_map(|o| json!({"type": "function_call_output", "call_id": "c", "output": o})),
    ];
    let input = prop_oneof![
        txt(e).prop_map(Value::String),
        vec(item, 1..4).prop_map(Value::Array)
    ];
    let tool = (name(), option::of(txt(e)), schema(e)).prop_map(|(n, d, p)| {
        obj(vec![
            ("type", Some(json!("function"))),
            ("name", Some(json!(n))),
            ("description", s(d)),
            ("parameters", Some(p)),
            ("strict", Some(json!(false))),
        ])
    });
    (
        input,
        option::of(txt(e)),
        vec(tool, 0..3),
        option::of(txt(e)),
        option::of(txt(e)),
        option::of(txt(e)),
    )
        .prop_map(|(input, instr, tools, user, sid, meta)| {
            obj(vec![
                ("model", Some(json!("gpt-5"))),
                ("input", Some(input)),
                ("instructions", s(instr)),
                ("tools", (!tools.is_empty()).then(|| json!(tools))),
                ("user", s(user)),
                ("safety_identifier", s(sid)),
                ("metadata", meta.map(|m| json!({"ticket": m}))),
            ])
        })
        .boxed()
}

/// Completions `prompt` or embeddings `input`: a string or strings.
fn prompt_and_user(e: &str, field: &'static str) -> BoxedStrategy<Value> {
    let p = prop_oneof![
        txt(e).prop_map(Value::String),
        vec(txt(e), 1..4).prop_map(|v| json!(v))
    ];
    (p, option::of(txt(e)))
        .prop_map(move |(p, user)| {
            obj(vec![
                ("model", Some(json!("m"))),
                (field, Some(p)),
                ("user", s(user)),
            ])
        })
        .boxed()
}

fn request() -> impl Strategy<Value = (Api, Value, String)> {
    email()
        .prop_flat_map(|e| {
            let body = prop_oneof![
                openai_chat(&e).prop_map(|b| (Api::OpenAiChat, b)),
                anthropic(&e).prop_map(|b| (Api::Anthropic, b)),
                gemini(&e).prop_map(|b| (Api::Gemini, b)),
                responses(&e).prop_map(|b| (Api::OpenAiResponses, b)),
                prompt_and_user(&e, "prompt").prop_map(|b| (Api::OpenAiCompletions, b)),
                prompt_and_user(&e, "input").prop_map(|b| (Api::OpenAiEmbeddings, b)),
            ];
            (body, Just(e))
        })
        .prop_map(|((api, body), e)| (api, body, e))
}

fn is_signed(o: &Map<String, Value>) -> bool {
    matches!(
        o.get("type").and_then(Value::as_str),
        Some("thinking" | "redacted_thinking")
    )
}

/// String leaves outside signed blocks, and the signed blocks, in order.
fn leaves<'a>(v: &'a Value, strings: &mut Vec<&'a str>, signed: &mut Vec<&'a Value>) {
    match v {
        Value::String(s) => strings.push(s),
        Value::Array(a) => a.iter().for_each(|x| leaves(x, strings, signed)),
        Value::Object(o) if is_signed(o) => signed.push(v),
        Value::Object(o) => o.values().for_each(|x| leaves(x, strings, signed)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_scanned_field_keeps_the_value((api, body, e) in request()) {
        let before = body.clone();
        let mut body = body;
        let out = engine().process(&mut body, api);
        prop_assert!(!out.blocked);

        let (mut strings, mut signed) = (Vec::new(), Vec::new());
        leaves(&body, &mut strings, &mut signed);
        for s in &strings {
            prop_assert!(!s.contains(e.as_str()), "{api:?}: {e} left in {s:?} of {body}");
        }
        let (mut was_strings, mut was_signed) = (Vec::new(), Vec::new());
        leaves(&before, &mut was_strings, &mut was_signed);
        prop_assert_eq!(signed, was_signed);

        let mut restored = body.clone();
        out.vault.restore_value(&mut restored);
        prop_assert_eq!(restored, before);
    }
}
