//! Property tests: garbage in never panics, and chunk boundaries never
//! change results.

// Test helpers outside #[test] fns are not covered by clippy's
// allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use llmesh_wire::sse::{SseEvent, SseParser};
use llmesh_wire::{
    bedrock_event_frame, bedrock_exception_frame, response_model_of, responses_input_items,
    translate_error, translate_request, translate_response, translate_response_for_responses,
    usage_of, Dialect, ResponseEcho, StreamOptions, StreamTranslator,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const DIALECTS: [Dialect; 4] = [
    Dialect::OpenAi,
    Dialect::Anthropic,
    Dialect::Gemini,
    Dialect::Bedrock,
];

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
    json_value_of(KEYS, STRINGS)
}

/// Random JSON whose keys and strings come mostly from the given lists.
fn json_value_of(
    keys: &'static [&'static str],
    strings: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(strings).prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((proptest::sample::select(keys), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

const ALL_DIALECTS: [Dialect; 5] = [
    Dialect::OpenAi,
    Dialect::Anthropic,
    Dialect::Gemini,
    Dialect::Responses,
    Dialect::Bedrock,
];

/// The `:event-type`s of ConverseStream, and names no decoder knows.
const BEDROCK_EVENTS: &[&str] = &[
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
    "chunk",
];

/// Bedrock event-stream bytes: frames with random JSON payloads (the keys
/// of the real events among them), exception frames, and raw garbage.
fn bedrock_input() -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        4 => (proptest::sample::select(BEDROCK_EVENTS), json_value())
            .prop_map(|(e, v)| bedrock_event_frame(e, v.to_string().as_bytes())),
        1 => json_value().prop_map(|v| bedrock_exception_frame("throttlingException", v.to_string().as_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(frame, 0..8).prop_map(|parts| parts.concat())
}

/// Field names and values of the Responses API, on top of the others.
const RESPONSES_KEYS: &[&str] = &[
    "input",
    "instructions",
    "type",
    "role",
    "content",
    "text",
    "call_id",
    "name",
    "arguments",
    "output",
    "id",
    "status",
    "summary",
    "image_url",
    "file_id",
    "detail",
    "refusal",
    "tools",
    "tool_choice",
    "parameters",
    "strict",
    "format",
    "schema",
    "verbosity",
    "reasoning",
    "effort",
    "max_output_tokens",
    "temperature",
    "include",
    "truncation",
    "background",
    "stream",
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "response",
    "sequence_number",
    "item_id",
    "output_index",
    "delta",
    "usage",
    "input_tokens",
    "output_tokens",
    "input_tokens_details",
    "cached_tokens",
    "model",
    "choices",
    "message",
    "tool_calls",
    "function",
    "finish_reason",
    "reasoning_content",
    "candidates",
    "parts",
    "thought",
    "thinking",
    "error",
];
const RESPONSES_STRINGS: &[&str] = &[
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "input_text",
    "output_text",
    "input_image",
    "input_file",
    "refusal",
    "user",
    "assistant",
    "system",
    "developer",
    "function",
    "web_search",
    "json_schema",
    "json_object",
    "text",
    "auto",
    "required",
    "none",
    "disabled",
    "response.created",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "message_start",
    "content_block_delta",
    "thinking_delta",
    "message_stop",
    "length",
    "tool_calls",
    "{}",
    "{\"a\":1}",
    "data:image/png;base64,AA",
    "https://x/y.png",
    "",
];

fn responses_json() -> impl Strategy<Value = Value> {
    json_value_of(RESPONSES_KEYS, RESPONSES_STRINGS)
}

/// Like [`sse_input`], with Responses event names and documents.
fn responses_sse_input() -> impl Strategy<Value = Vec<u8>> {
    let event = prop_oneof![
        responses_json().prop_map(|v| format!("data: {v}\n\n").into_bytes()),
        (
            proptest::sample::select(RESPONSES_STRINGS),
            responses_json()
        )
            .prop_map(|(e, v)| format!("event: {e}\r\ndata: {v}\r\n\r\n").into_bytes()),
        Just(b"data: [DONE]\n\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(event, 0..8).prop_map(|parts| parts.concat())
}

fn echo() -> ResponseEcho {
    ResponseEcho {
        id: "resp_p".into(),
        created_at: 1,
        request: Map::new(),
    }
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
    fn bedrock_streams_never_panic_and_ignore_chunking(input in bedrock_input(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        for client in [Dialect::OpenAi, Dialect::Anthropic] {
            let opts = StreamOptions { include_usage: true };
            let mut a = StreamTranslator::new(client, Dialect::Bedrock, opts).with_created(1);
            let mut b = StreamTranslator::new(client, Dialect::Bedrock, opts).with_created(1);
            let whole = feed(&mut a, &input, &[]);
            let split = feed(&mut b, &input, &cuts);
            prop_assert_eq!(mask_ids(&whole), mask_ids(&split));
            prop_assert_eq!(a.usage(), b.usage());
            prop_assert_eq!(a.completed(), b.completed());
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
    fn responses_streams_never_panic_and_ignore_chunking(input in responses_sse_input(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        for upstream in ALL_DIALECTS {
            let mut a = StreamTranslator::for_responses(upstream, echo());
            let mut b = StreamTranslator::for_responses(upstream, echo());
            let whole = feed(&mut a, &input, &[]);
            let split = feed(&mut b, &input, &cuts);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(a.usage(), b.usage());
            prop_assert_eq!(a.completed(), b.completed());
            prop_assert_eq!(a.content_chunks(), b.content_chunks());
            prop_assert_eq!(a.final_response(), b.final_response());
            let mut tail = Vec::new();
            a.write_error("api_error", "c", "m", &mut tail);
            if upstream == Dialect::Responses {
                prop_assert_eq!(&whole, &input);
                continue;
            }
            // Translated: well-formed events, numbered from 0, one terminal
            // event at most (finish + write_error included).
            let mut all = whole.clone();
            all.extend_from_slice(&tail);
            let events = SseParser::new().push(&all);
            let mut terminal = 0;
            for (n, ev) in events.iter().enumerate() {
                let v: Value = serde_json::from_str(&ev.data).unwrap();
                prop_assert_eq!(v["sequence_number"].as_u64(), Some(n as u64));
                prop_assert_eq!(ev.event.as_deref(), v["type"].as_str());
                let ty = v["type"].as_str().unwrap_or("");
                if matches!(ty, "response.completed" | "response.incomplete" | "response.failed") {
                    terminal += 1;
                }
            }
            prop_assert_eq!(terminal, 1);
            // (An end marker after an error still counts as completed.)
            prop_assert!(a.final_response().is_none() || a.completed());
        }
    }

    #[test]
    fn responses_translations_never_panic(body in responses_json()) {
        for upstream in ALL_DIALECTS {
            let translated = translate_request(Dialect::Responses, upstream, body.clone(), "m");
            if let (Dialect::OpenAi, Ok(chat)) = (upstream, &translated) {
                prop_assert!(chat["messages"].is_array());
            }
            let echo = ResponseEcho {
                request: body.as_object().cloned().unwrap_or_default(),
                ..echo()
            };
            if let Ok((out, _)) = translate_response_for_responses(upstream, body.clone(), &echo) {
                prop_assert!(upstream == Dialect::Responses || out["object"] == "response");
            }
            let _ = translate_response(Dialect::Responses, upstream, body.clone());
            let _ = translate_request(upstream, Dialect::Responses, body.clone(), "m");
            let bytes = body.to_string();
            let out = translate_error(Dialect::Responses, upstream, 500, bytes.as_bytes());
            prop_assert!(upstream == Dialect::Responses || upstream == Dialect::OpenAi || out.is_object());
        }
        let _ = responses_input_items(&body);
        let _ = usage_of(Dialect::Responses, &body);
        let _ = response_model_of(Dialect::Responses, &body);
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
