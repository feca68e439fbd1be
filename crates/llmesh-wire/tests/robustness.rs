//! Property tests: garbage in never panics, and chunk boundaries never
//! change results.

// Test helpers outside #[test] fns are not covered by clippy's
// allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use llmesh_wire::sse::{SseEvent, SseParser};
use llmesh_wire::{
    translate_error, translate_request, translate_response, usage_of, Dialect, StreamOptions,
    StreamTranslator,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const DIALECTS: [Dialect; 3] = [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini];

/// Field names and values the translators look at, so random documents
/// reach deep into the code instead of failing the first shape check.
const KEYS: &[&str] = &[
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "function",
    "arguments",
    "name",
    "id",
    "index",
    "choices",
    "delta",
    "message",
    "finish_reason",
    "usage",
    "candidates",
    "parts",
    "functionCall",
    "args",
    "finishReason",
    "usageMetadata",
    "error",
    "tools",
    "tool_choice",
    "system",
    "image_url",
    "url",
    "source",
    "input",
    "tool_use_id",
    "tool_call_id",
    "content_block",
    "partial_json",
    "stop_reason",
    "response_format",
    "json_schema",
    "schema",
    "stream",
    "max_tokens",
    "stop",
    "n",
    "prompt_tokens",
    "input_tokens",
    "promptTokenCount",
];
const STRINGS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "tool",
    "developer",
    "text",
    "image_url",
    "image",
    "tool_use",
    "tool_result",
    "function",
    "json_schema",
    "json_object",
    "message_start",
    "message_delta",
    "content_block_start",
    "content_block_delta",
    "text_delta",
    "input_json_delta",
    "message_stop",
    "error",
    "STOP",
    "MAX_TOKENS",
    "stop",
    "tool_calls",
    "{}",
    "{\"a\":1}",
    "[1]",
    "data:x;base64,",
    "data:image/png;base64,AA",
    "auto",
    "required",
    "none",
    "any",
    "base64",
    "url",
    "",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(STRINGS).prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// SSE-ish input: random JSON events mixed with random bytes.
fn sse_input() -> impl Strategy<Value = Vec<u8>> {
    let event = prop_oneof![
        json_value().prop_map(|v| format!("data: {v}\n\n").into_bytes()),
        (proptest::sample::select(STRINGS), json_value())
            .prop_map(|(e, v)| format!("event: {e}\r\ndata: {v}\r\n\r\n").into_bytes()),
        Just(b"data: [DONE]\n\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(event, 0..8).prop_map(|parts| parts.concat())
}

/// Ids synthesized for upstreams that sent none are unique per translator;
/// blank every `"id"` value before comparing two runs.
fn mask_ids(out: &[u8]) -> Vec<u8> {
    let needle = b"\"id\":\"";
    let mut masked = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        if out[i..].starts_with(needle) {
            masked.extend_from_slice(needle);
            i += needle.len();
            while i < out.len() && out[i] != b'"' {
                i += 1;
            }
        } else {
            masked.push(out[i]);
            i += 1;
        }
    }
    masked
}

fn feed(t: &mut StreamTranslator, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    for p in points {
        let _ = t.push(&input[start..p.max(start)], &mut out);
        start = p.max(start);
    }
    let _ = t.push(&input[start..], &mut out);
    t.finish(&mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn streams_never_panic_and_ignore_chunking(input in sse_input(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        for upstream in DIALECTS {
            for client in DIALECTS {
                for include_usage in [false, true] {
                    let opts = StreamOptions { include_usage };
                    let mut a = StreamTranslator::new(client, upstream, opts).with_created(1);
                    let mut b = StreamTranslator::new(client, upstream, opts).with_created(1);
                    let whole = feed(&mut a, &input, &[]);
                    let split = feed(&mut b, &input, &cuts);
                    prop_assert_eq!(mask_ids(&whole), mask_ids(&split));
                    prop_assert_eq!(a.usage(), b.usage());
                    prop_assert_eq!(a.completed(), b.completed());
                    prop_assert_eq!(a.content_chunks(), b.content_chunks());
                    if client == upstream && client == Dialect::Anthropic {
                        prop_assert_eq!(&whole, &input);
                    }
                }
            }
        }
    }

    #[test]
    fn sse_parser_ignores_chunking(input in sse_input(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let mut whole = SseParser::new();
        let expected = whole.push(&input);
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut raw = Vec::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        let mut start = 0;
        for p in points.into_iter().chain([input.len()]) {
            parser.push_raw(&input[start..p], |r| {
                raw.extend_from_slice(r);
                events.extend(SseEvent::parse(r));
            });
            start = p;
        }
        prop_assert_eq!(events, expected);
        raw.extend_from_slice(&parser.take_pending());
        prop_assert_eq!(raw, input);
    }

    #[test]
    fn translations_never_panic(body in json_value()) {
        for client in DIALECTS {
            for upstream in DIALECTS {
                let _ = translate_request(client, upstream, body.clone(), "m");
                let _ = translate_response(client, upstream, body.clone());
            }
            let _ = usage_of(client, &body);
            let bytes = body.to_string();
            for upstream in DIALECTS {
                let out = translate_error(client, upstream, 500, bytes.as_bytes());
                prop_assert!(client == upstream || out.is_object());
            }
        }
    }

    #[test]
    fn errors_from_raw_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..64), status in any::<u16>()) {
        for client in DIALECTS {
            for upstream in DIALECTS {
                let _ = translate_error(client, upstream, status, &body);
            }
        }
    }
}
