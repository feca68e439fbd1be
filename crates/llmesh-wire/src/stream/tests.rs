use super::*;

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
            cached_input_tokens: 0
        })
    );
    assert_eq!(t.response_model(), Some("claude"));
    assert!(t.completed());
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
