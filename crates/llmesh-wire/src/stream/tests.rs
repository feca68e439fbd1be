use super::*;
use crate::sse::SseParser;
use crate::STRUCTURED_OUTPUT_TOOL;

fn translator(client: Dialect, upstream: Dialect, include_usage: bool) -> StreamTranslator {
    StreamTranslator::new(client, upstream, StreamOptions { include_usage }).with_created(1)
}

fn run(t: &mut StreamTranslator, input: &[u8]) -> String {
    let mut out = Vec::new();
    let _ = t.push(input, &mut out);
    t.finish(&mut out);
    String::from_utf8(out).unwrap()
}

const ANTHROPIC: &str = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_start\r\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n\
event: content_block_delta\r\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"héllo\"}}\r\n\r\n\
event: message_delta\r\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\r\n\r\n\
event: message_stop\r\n\
data: {\"type\":\"message_stop\"}\r\n\r\n";

#[test]
fn byte_at_a_time_matches_whole_for_every_pairing() {
    let inputs = [
        (Dialect::Anthropic, ANTHROPIC.to_owned()),
        (
            Dialect::OpenAi,
            "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hé\"}}]}\n\n\
             data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
             data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n\
             data: [DONE]\n\n"
                .to_owned(),
        ),
        (
            Dialect::Gemini,
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"h\u{e9}\"}]},\"finishReason\":\"STOP\"}],\
             \"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":1},\"modelVersion\":\"g\",\"responseId\":\"r\"}\r\n\r\n"
                .to_owned(),
        ),
    ];
    for (upstream, input) in &inputs {
        for client in [Dialect::OpenAi, Dialect::Anthropic] {
            for include_usage in [false, true] {
                let whole = run(
                    &mut translator(client, *upstream, include_usage),
                    input.as_bytes(),
                );
                let mut t = translator(client, *upstream, include_usage);
                let mut out = Vec::new();
                for b in input.as_bytes() {
                    t.push(std::slice::from_ref(b), &mut out).unwrap();
                }
                t.finish(&mut out);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    whole,
                    "{upstream:?} -> {client:?}"
                );
                assert!(t.completed(), "{upstream:?} -> {client:?}");
                assert!(t.usage().is_some());
                assert_eq!(t.content_chunks(), 1, "{upstream:?} -> {client:?}");
                assert!(whole.contains("hé"));
            }
        }
    }
}

#[test]
fn anthropic_passthrough_records_usage_and_model() {
    let mut t = translator(Dialect::Anthropic, Dialect::Anthropic, false);
    let out = run(&mut t, ANTHROPIC.as_bytes());
    assert_eq!(out, ANTHROPIC);
    assert_eq!(
        t.usage(),
        Some(Usage {
            input_tokens: 3,
            output_tokens: 2,
            cached_input_tokens: 0,
            cache_write_input_tokens: 0
        })
    );
    assert_eq!(t.response_model(), Some("claude"));
    assert!(t.completed());
}

/// [`ANTHROPIC`] with a prompt cache: 40 tokens written and 10 read in
/// `message_start`, the write count updated in `message_delta`.
fn anthropic_cached() -> String {
    ANTHROPIC
        .replace(
            "\"usage\":{\"input_tokens\":3,\"output_tokens\":1}",
            "\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":40,\"cache_read_input_tokens\":10,\"output_tokens\":1}",
        )
        .replace(
            "\"usage\":{\"output_tokens\":2}",
            "\"usage\":{\"cache_creation_input_tokens\":41,\"output_tokens\":2}",
        )
}

#[test]
fn anthropic_streams_report_cache_writes_passed_through_or_translated() {
    let input = anthropic_cached();
    assert!(input.contains("\"cache_creation_input_tokens\":41"));
    let want = Usage {
        input_tokens: 54,
        output_tokens: 2,
        cached_input_tokens: 10,
        cache_write_input_tokens: 41,
    };
    let mut t = translator(Dialect::Anthropic, Dialect::Anthropic, false);
    assert_eq!(run(&mut t, input.as_bytes()), input);
    assert_eq!(t.usage(), Some(want));
    let mut t = translator(Dialect::OpenAi, Dialect::Anthropic, true);
    let out = run(&mut t, input.as_bytes());
    assert_eq!(t.usage(), Some(want));
    assert!(out.contains("\"prompt_tokens\":54"), "{out}");
    assert!(out.contains("\"cached_tokens\":10"), "{out}");
}

#[test]
fn an_anthropic_client_of_an_openai_stream_is_told_no_cache_writes() {
    // OpenAI reports no cache writes: the Anthropic client is told 0 writes,
    // and input_tokens without the cached reads.
    let openai = "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n\
         data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
         data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":20}}}\n\n\
         data: [DONE]\n\n";
    let mut t = translator(Dialect::Anthropic, Dialect::OpenAi, false);
    let out = run(&mut t, openai.as_bytes());
    assert!(
        out.contains(
            "\"input_tokens\":10,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":20"
        ),
        "{out}"
    );
}

#[test]
fn invalid_json_is_an_error_but_the_stream_goes_on() {
    let mut t = translator(Dialect::OpenAi, Dialect::Anthropic, false);
    let mut out = Vec::new();
    let input = format!(
        "event: message_start\ndata: {{not json\n\n{}",
        ANTHROPIC.replace("\r\n", "\n")
    );
    let err = t.push(input.as_bytes(), &mut out).unwrap_err();
    assert!(matches!(err, TranslateError::InvalidUpstream(_)));
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("héllo"));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn gemini_error_event_becomes_anthropic_error() {
    let mut t = translator(Dialect::Anthropic, Dialect::Gemini, false);
    let out = run(
        &mut t,
        b"data: {\"error\":{\"code\":503,\"message\":\"busy\",\"status\":\"UNAVAILABLE\"}}\n\n",
    );
    assert_eq!(
        out,
        "event: error\ndata: {\"error\":{\"message\":\"busy\",\"type\":\"overloaded_error\"},\"type\":\"error\"}\n\n"
    );
    assert!(!t.completed());
}

#[test]
fn finish_closes_a_stream_that_never_started() {
    let mut t = translator(Dialect::OpenAi, Dialect::Gemini, true);
    let out = run(&mut t, b"");
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert!(out.contains("\"finish_reason\":\"stop\""));
    assert!(!t.completed());
}

#[test]
fn unterminated_last_event_is_still_used() {
    let mut t = translator(Dialect::OpenAi, Dialect::Anthropic, false);
    let trimmed = ANTHROPIC.trim_end();
    run(&mut t, trimmed.as_bytes());
    assert!(t.completed());
    let mut p = translator(Dialect::OpenAi, Dialect::OpenAi, false);
    let out = run(&mut p, b"data: [DONE]");
    assert_eq!(out, "data: [DONE]");
    assert!(p.completed());
}

#[test]
fn gemini_client_is_unsupported() {
    let mut t = translator(Dialect::Gemini, Dialect::OpenAi, false);
    let mut out = Vec::new();
    assert!(matches!(
        t.push(b"data: {}\n\n", &mut out),
        Err(TranslateError::Unsupported(_))
    ));
    t.finish(&mut out);
    assert!(out.is_empty());
}

#[test]
fn write_error_uses_client_dialect() {
    let mut out = Vec::new();
    translator(Dialect::OpenAi, Dialect::Anthropic, false).write_error(
        "api_error",
        "upstream_reset",
        "reset",
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "data: {\"error\":{\"code\":\"upstream_reset\",\"message\":\"reset\",\"param\":null,\"type\":\"server_error\"}}\n\n"
    );
}

#[test]
fn openai_passthrough_ignores_null_usage_and_keeps_comments() {
    let input = ": ping\n\ndata: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],\"usage\": null}\n\n";
    let mut t = translator(Dialect::OpenAi, Dialect::OpenAi, false);
    assert_eq!(run(&mut t, input.as_bytes()), input);
    assert_eq!(t.usage(), None);
    assert_eq!(t.response_model(), Some("m"));
    assert_eq!(t.content_chunks(), 1);
}

#[test]
fn stream_options_from_request() {
    let body = serde_json::json!({"stream": true, "stream_options": {"include_usage": true}});
    assert!(StreamOptions::from_request(Dialect::OpenAi, &body).include_usage);
    assert!(!StreamOptions::from_request(Dialect::Anthropic, &body).include_usage);
    assert!(!StreamOptions::from_request(Dialect::OpenAi, &serde_json::json!({})).include_usage);
}

#[test]
fn translator_can_move_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<StreamTranslator>();
}

fn responses_translator(upstream: Dialect) -> StreamTranslator {
    let echo = ResponseEcho {
        id: "resp_t".into(),
        created_at: 1,
        request: serde_json::Map::new(),
    };
    StreamTranslator::for_responses(upstream, echo)
}

/// The `type`s of the events in a Responses stream, checking that every
/// `data` is JSON whose type matches the `event:` line and whose sequence
/// numbers count from 0.
fn responses_types(out: &str) -> Vec<String> {
    let mut parser = SseParser::new();
    let mut types = Vec::new();
    for (n, ev) in parser.push(out.as_bytes()).into_iter().enumerate() {
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        let ty = v["type"].as_str().unwrap().to_owned();
        assert_eq!(ev.event.as_deref(), Some(ty.as_str()));
        assert_eq!(v["sequence_number"], n as u64, "{out}");
        types.push(ty);
    }
    types
}

#[test]
fn responses_client_byte_at_a_time_matches_whole() {
    let gemini = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"h\u{e9}\"}]},\"finishReason\":\"STOP\"}],\
        \"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":1},\"modelVersion\":\"g\"}\r\n\r\n";
    let openai = "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\u{e9}\"}}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n\
        data: [DONE]\n\n";
    for (upstream, input) in [
        (Dialect::Anthropic, ANTHROPIC),
        (Dialect::Gemini, gemini),
        (Dialect::OpenAi, openai),
    ] {
        let whole = run(&mut responses_translator(upstream), input.as_bytes());
        let mut t = responses_translator(upstream);
        let mut out = Vec::new();
        for b in input.as_bytes() {
            t.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        t.finish(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), whole, "{upstream:?}");
        assert!(t.completed());
        assert_eq!(t.content_chunks(), 1);
        let types = responses_types(&whole);
        assert_eq!(types.first().map(String::as_str), Some("response.created"));
        assert_eq!(types.last().map(String::as_str), Some("response.completed"));
        let fin = t.final_response().unwrap();
        assert_eq!(fin["status"], "completed");
        let text = fin["output"][0]["content"][0]["text"].as_str().unwrap();
        assert!(text == "hé" || text == "héllo", "{text}");
        assert_eq!(fin["id"], "resp_t");
        assert!(fin["usage"]["input_tokens"].as_u64().unwrap() > 0);
    }
}

#[test]
fn responses_truncation_leaves_the_terminal_event_to_write_error() {
    let mut t = responses_translator(Dialect::OpenAi);
    let mut out = Vec::new();
    t.push(
        b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n",
        &mut out,
    )
    .unwrap();
    t.finish(&mut out);
    assert!(!t.completed());
    assert!(t.final_response().is_none());
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(!text.contains("response.completed") && !text.contains("response.failed"));
    t.write_error("api_error", "upstream_incomplete", "cut short", &mut out);
    let text = String::from_utf8(out.clone()).unwrap();
    let types = responses_types(&text);
    assert_eq!(
        types[types.len() - 2..],
        ["error".to_owned(), "response.failed".to_owned()]
    );
    assert!(text.contains("\"code\":\"upstream_incomplete\""));
    assert!(text.contains("\"error\":{\"code\":\"server_error\",\"message\":\"cut short\"}"));
    // Nothing follows a terminal event.
    let before = out.len();
    t.write_error("api_error", "again", "again", &mut out);
    t.finish(&mut out);
    assert_eq!(out.len(), before);
}

#[test]
fn responses_write_error_before_anything_opens_the_stream_first() {
    let mut t = responses_translator(Dialect::Anthropic);
    let mut out = Vec::new();
    t.write_error("rate_limit_error", "quota", "slow down", &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        responses_types(&text),
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    assert!(text.contains("\"code\":\"rate_limit_exceeded\""));
}

#[test]
fn responses_length_finish_is_incomplete() {
    let mut t = responses_translator(Dialect::Anthropic);
    let input = ANTHROPIC.replace("\"end_turn\"", "\"max_tokens\"");
    let text = run(&mut t, input.as_bytes());
    assert_eq!(
        responses_types(&text).last().map(String::as_str),
        Some("response.incomplete")
    );
    assert!(t.completed());
    let fin = t.final_response().unwrap();
    assert_eq!(fin["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(fin["output"][0]["status"], "incomplete");
}

#[test]
fn responses_arguments_before_the_call_and_interleaved_calls() {
    let mut t = responses_translator(Dialect::OpenAi);
    let input = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\"\"}}]}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
        data: [DONE]\n\n";
    let text = run(&mut t, input.as_bytes());
    responses_types(&text);
    let fin = t.final_response().unwrap();
    assert_eq!(fin["output"][0]["arguments"], "{\"x\":1}");
    assert_eq!(fin["output"][0]["call_id"], "a");
    assert_eq!(fin["output"][1]["arguments"], "{}");
    assert_eq!(fin["output"].as_array().unwrap().len(), 2);
}

#[test]
fn responses_passthrough_without_event_lines_and_error_sequence() {
    let input = "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"model\":\"gpt-5\",\"output\":[]}}\n\n\
        data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"\\\"type\\\":\\\"response.completed\\\"\"}\n\n\
        data: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":2,\"delta\":\"{}\"}\n\n";
    let mut t = responses_translator(Dialect::Responses);
    let out = run(&mut t, input.as_bytes());
    assert_eq!(out, input);
    assert_eq!(t.response_model(), Some("gpt-5"));
    assert_eq!(t.content_chunks(), 2);
    assert!(!t.completed());
    assert!(t.final_response().is_none());
    let mut err = Vec::new();
    t.write_error("api_error", "upstream_reset", "reset", &mut err);
    assert_eq!(
        String::from_utf8(err).unwrap(),
        "event: error\ndata: {\"type\":\"error\",\"sequence_number\":3,\"code\":\"upstream_reset\",\"message\":\"reset\",\"param\":null}\n\n"
    );
}

#[test]
fn responses_passthrough_incomplete_and_failed() {
    let incomplete = "event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"sequence_number\":4,\"response\":{\"model\":\"m\",\"status\":\"incomplete\",\"usage\":{\"input_tokens\":3,\"output_tokens\":9}}}\n\n";
    let mut t = responses_translator(Dialect::Responses);
    run(&mut t, incomplete.as_bytes());
    assert!(t.completed());
    assert_eq!(t.usage().map(|u| u.output_tokens), Some(9));
    assert_eq!(t.final_response().unwrap()["status"], "incomplete");
    let failed = incomplete.replace("incomplete", "failed");
    let mut t = responses_translator(Dialect::Responses);
    run(&mut t, failed.as_bytes());
    assert!(!t.completed());
    assert_eq!(t.usage().map(|u| u.input_tokens), Some(3));
    assert!(t.final_response().is_none());
}

#[test]
fn responses_new_and_unsupported_pairings() {
    let mut t = StreamTranslator::new(
        Dialect::Responses,
        Dialect::OpenAi,
        StreamOptions::default(),
    );
    let out = run(&mut t, b"data: [DONE]\n\n");
    assert!(out.starts_with("event: response.created\n"));
    assert!(t.final_response().unwrap()["id"]
        .as_str()
        .unwrap()
        .starts_with("resp_"));
    for client in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini] {
        let mut t = translator(client, Dialect::Responses, false);
        let mut out = Vec::new();
        assert!(matches!(
            t.push(b"data: {}\n\n", &mut out),
            Err(TranslateError::Unsupported(_))
        ));
        assert!(t.final_response().is_none());
    }
    let mut t = translator(Dialect::OpenAi, Dialect::Anthropic, false);
    run(&mut t, ANTHROPIC.as_bytes());
    assert!(t.final_response().is_none());
}

#[test]
fn thinking_stays_out_of_chat_and_anthropic_clients() {
    let thinking = ANTHROPIC.replace(
        "event: content_block_start\r\n",
        "event: content_block_delta\r\n\
         data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"SECRET\"}}\r\n\r\n\
         event: content_block_start\r\n",
    );
    let plain = run(
        &mut translator(Dialect::OpenAi, Dialect::Anthropic, false),
        ANTHROPIC.as_bytes(),
    );
    let out = run(
        &mut translator(Dialect::OpenAi, Dialect::Anthropic, false),
        thinking.as_bytes(),
    );
    assert_eq!(out, plain);
    let out = run(
        &mut responses_translator(Dialect::Anthropic),
        thinking.as_bytes(),
    );
    assert!(out.contains("\"delta\":\"SECRET\""));
}

#[test]
fn a_structured_output_tool_streams_as_text_unless_a_real_call_joins_it() {
    let ev = |data: &str| format!("data: {data}\n\n");
    let start = ev(r#"{"type":"message_start","message":{"id":"msg_1","model":"claude"}}"#);
    let structured = ev(&format!(
        r#"{{"type":"content_block_start","index":0,"content_block":{{"type":"tool_use","id":"t","name":"{STRUCTURED_OUTPUT_TOOL}","input":{{"n":1}}}}}}"#
    ));
    let more = ev(
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":" "}}"#,
    );
    let real = ev(
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"u","name":"f","input":{}}}"#,
    );
    let end = ev(r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"}}"#)
        + &ev(r#"{"type":"message_stop"}"#);

    let mut t = translator(Dialect::OpenAi, Dialect::Anthropic, false);
    let out = run(&mut t, format!("{start}{structured}{more}{end}").as_bytes());
    assert!(out.contains(r#""delta":{"content":"{\"n\":1}"}"#), "{out}");
    assert!(out.contains(r#""delta":{"content":" "}"#), "{out}");
    assert!(out.contains(r#""finish_reason":"stop""#), "{out}");
    assert!(!out.contains("tool_calls"), "{out}");

    let mut t = translator(Dialect::OpenAi, Dialect::Anthropic, false);
    let out = run(&mut t, format!("{start}{structured}{real}{end}").as_bytes());
    assert!(out.contains(r#""finish_reason":"tool_calls""#), "{out}");
    assert!(out.contains(r#""name":"f""#), "{out}");
}

fn bedrock_text_stream() -> Vec<u8> {
    let mut b = crate::bedrock_event_frame("messageStart", br#"{"role":"assistant"}"#);
    b.extend(crate::bedrock_event_frame(
        "contentBlockDelta",
        r#"{"delta":{"text":"hé"},"contentBlockIndex":0}"#.as_bytes(),
    ));
    b.extend(crate::bedrock_event_frame(
        "contentBlockStop",
        br#"{"contentBlockIndex":0}"#,
    ));
    b.extend(crate::bedrock_event_frame(
        "messageStop",
        br#"{"stopReason":"end_turn"}"#,
    ));
    b.extend(crate::bedrock_event_frame(
        "metadata",
        br#"{"usage":{"inputTokens":3,"outputTokens":1,"totalTokens":4},"metrics":{"latencyMs":5}}"#,
    ));
    b
}

#[test]
fn bedrock_frames_split_at_every_byte_translate_the_same() {
    let input = bedrock_text_stream();
    // (Responses clients: see the golden cases, which fix the echo.)
    for client in [Dialect::OpenAi, Dialect::Anthropic] {
        let new = || translator(client, Dialect::Bedrock, true).with_response_id("b");
        let whole = run(&mut new(), &input);
        assert!(whole.contains("hé"), "{client}");
        let mut t = new();
        let mut out = Vec::new();
        for b in &input {
            t.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        t.finish(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), whole, "{client}");
        assert!(t.completed());
        assert_eq!(t.usage().map(|u| u.input_tokens), Some(3));
        assert_eq!(t.response_model(), None);
    }
}

#[test]
fn bedrock_stream_without_metadata_is_not_completed() {
    let input = bedrock_text_stream();
    let cut = input.len() - 20;
    let mut t = translator(Dialect::OpenAi, Dialect::Bedrock, false);
    let out = run(&mut t, &input[..cut]);
    assert!(!t.completed());
    // finish still closes the client's stream.
    assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
}

#[test]
fn bedrock_corrupt_frame_fails_the_push_and_every_later_one() {
    let mut input = bedrock_text_stream();
    let first = crate::bedrock_event_frame("messageStart", br#"{"role":"assistant"}"#).len();
    input[first + 14] ^= 0x20;
    let mut t = translator(Dialect::Anthropic, Dialect::Bedrock, false);
    let mut out = Vec::new();
    let err = t.push(&input, &mut out).unwrap_err();
    assert!(matches!(err, TranslateError::InvalidUpstream(_)));
    assert!(err.message().contains("CRC"), "{}", err.message());
    assert!(t.push(&bedrock_text_stream(), &mut out).is_err());
    t.write_error("api_error", "upstream_error", "broken stream", &mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("event: error"), "{out}");
    assert!(!out.contains("hé"));
}

#[test]
fn bedrock_invalid_json_payload_is_an_error_but_the_stream_goes_on() {
    let mut input = crate::bedrock_event_frame("contentBlockDelta", b"{not json");
    input.extend(bedrock_text_stream());
    let mut t = translator(Dialect::OpenAi, Dialect::Bedrock, false);
    let mut out = Vec::new();
    assert!(t.push(&input, &mut out).is_err());
    t.finish(&mut out);
    assert!(t.completed());
    assert!(String::from_utf8(out).unwrap().contains("hé"));
}

#[test]
fn bedrock_exception_frame_becomes_the_clients_error() {
    let mut input = crate::bedrock_event_frame("messageStart", br#"{"role":"assistant"}"#);
    input.extend(crate::bedrock_exception_frame(
        "validationException",
        br#"{"message":"bad input"}"#,
    ));
    let mut t = translator(Dialect::Anthropic, Dialect::Bedrock, false);
    let out = run(&mut t, &input);
    assert!(out.ends_with(
        "event: error\ndata: {\"error\":{\"message\":\"bad input\",\"type\":\"invalid_request_error\"},\"type\":\"error\"}\n\n"
    ), "{out}");
    assert!(!t.completed());
}

#[test]
fn bedrock_is_no_client_dialect() {
    let mut t = translator(Dialect::Bedrock, Dialect::Bedrock, false);
    let mut out = Vec::new();
    assert!(matches!(
        t.push(&bedrock_text_stream(), &mut out),
        Err(TranslateError::Unsupported(_))
    ));
    assert!(out.is_empty());
}

#[test]
fn the_finish_reason_tool_and_refusal_are_read_passed_through_or_translated() {
    let openai_tool = "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"refusal\":null}}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
        data: [DONE]\n\n";
    let anthropic_tool = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_start\r\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"lookup\",\"input\":{}}}\r\n\r\n\
event: content_block_delta\r\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\r\n\r\n\
event: message_delta\r\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":2}}\r\n\r\n\
event: message_stop\r\n\
data: {\"type\":\"message_stop\"}\r\n\r\n";
    for (upstream, input) in [
        (Dialect::OpenAi, openai_tool),
        (Dialect::Anthropic, anthropic_tool),
    ] {
        for client in [Dialect::OpenAi, Dialect::Anthropic] {
            let mut t = translator(client, upstream, false);
            run(&mut t, input.as_bytes());
            assert_eq!(
                t.finish_reason(),
                Some("tool_calls"),
                "{upstream:?} -> {client:?}"
            );
            assert_eq!(
                t.tool_called(),
                Some("lookup"),
                "{upstream:?} -> {client:?}"
            );
            assert!(!t.refused(), "{upstream:?} -> {client:?}");
        }
    }
    // A plain answer: stopped, no tool.
    for client in [Dialect::OpenAi, Dialect::Anthropic] {
        let mut t = translator(client, Dialect::Anthropic, false);
        run(&mut t, ANTHROPIC.as_bytes());
        assert_eq!(t.finish_reason(), Some("stop"), "{client:?}");
        assert_eq!(t.tool_called(), None, "{client:?}");
    }
    // Refusals.
    let openai_refusal = "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"I can't\"},\"finish_reason\":null}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
        data: [DONE]\n\n";
    let mut t = translator(Dialect::OpenAi, Dialect::OpenAi, false);
    run(&mut t, openai_refusal.as_bytes());
    assert!(t.refused());
    assert_eq!(t.finish_reason(), Some("stop"));
    let anthropic_refusal = ANTHROPIC.replace("\"end_turn\"", "\"refusal\"");
    let mut t = translator(Dialect::Anthropic, Dialect::Anthropic, false);
    run(&mut t, anthropic_refusal.as_bytes());
    assert!(t.refused());
    assert_eq!(t.finish_reason(), Some("content_filter"));
    let mut t = translator(Dialect::OpenAi, Dialect::Anthropic, false);
    run(&mut t, anthropic_refusal.as_bytes());
    assert_eq!(t.finish_reason(), Some("content_filter"));
}
