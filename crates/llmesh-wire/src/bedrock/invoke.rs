//! Claude through Bedrock's `InvokeModelWithResponseStream`: the answer is
//! the Anthropic Messages stream, each event's JSON base64-encoded in the
//! `bytes` of a `chunk` event-stream message.

use base64::Engine as _;
use serde_json::{json, Value};

use super::eventstream::{Frame, FrameReader};
use super::kind_for_type;
use crate::json::bad_upstream;
use crate::TranslateError;

/// Unwraps an `InvokeModelWithResponseStream` body of an Anthropic model
/// into the Anthropic SSE it carries (`event: <type>` + `data: <json>`),
/// to pass to an Anthropic client or to a
/// [`StreamTranslator`](crate::StreamTranslator) with an Anthropic upstream.
///
/// Exception messages become an Anthropic `error` event (`type` mapped from
/// the exception, e.g. `throttlingException` → `rate_limit_error`). The
/// `amazon-bedrock-invocationMetrics` Bedrock adds to `message_stop` is
/// kept (clients ignore unknown fields).
#[derive(Debug, Default)]
pub struct BedrockInvokeStream {
    frames: FrameReader,
}

impl BedrockInvokeStream {
    /// A decoder for one response body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed raw body bytes (split anywhere); the SSE of every complete
    /// message is appended to `out`. Fails like
    /// [`StreamTranslator::push`](crate::StreamTranslator::push): a corrupt
    /// message ends decoding for good, a bad payload is skipped.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        let mut frames = Vec::new();
        let framing = self.frames.push(input, |f| frames.push(f));
        let mut first_err = None;
        for f in &frames {
            if let Err(e) = write_frame(f, out) {
                first_err.get_or_insert(e);
            }
        }
        framing.and(first_err.map_or(Ok(()), Err))
    }
}

fn write_frame(f: &Frame, out: &mut Vec<u8>) -> Result<(), TranslateError> {
    if f.header(":message-type") == Some("exception") {
        let ty = f.header(":exception-type").unwrap_or("exception");
        let message = serde_json::from_slice::<Value>(&f.payload)
            .ok()
            .and_then(|v| {
                ["message", "Message"]
                    .into_iter()
                    .find_map(|k| v.get(k).and_then(Value::as_str).map(str::to_owned))
            })
            .unwrap_or_else(|| format!("bedrock stream failed with {ty}"));
        let body = json!({"type": "error", "error": {
            "type": kind_for_type(ty).unwrap_or("api_error"),
            "message": crate::error::truncate_message(&message),
        }});
        crate::sse::write_event(out, Some("error"), body.to_string().as_bytes());
        return Ok(());
    }
    if f.header(":event-type") != Some("chunk") {
        return Ok(());
    }
    let bad = || bad_upstream("bedrock invoke stream chunk is not base64-encoded JSON");
    let chunk: Value = serde_json::from_slice(&f.payload).map_err(|_| bad())?;
    let bytes = chunk.get("bytes").and_then(Value::as_str).ok_or_else(bad)?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(bytes)
        .map_err(|_| bad())?;
    // Parsed and written again: one line of JSON whatever the spacing.
    let event: Value = serde_json::from_slice(&json).map_err(|_| bad())?;
    let name = event.get("type").and_then(Value::as_str);
    crate::sse::write_event(out, name, event.to_string().as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bedrock_event_frame, bedrock_exception_frame, Dialect, StreamOptions};

    fn chunk(event: &Value) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        bedrock_event_frame("chunk", json!({"bytes": b64}).to_string().as_bytes())
    }

    #[test]
    fn unwraps_anthropic_events_split_anywhere() {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude",
                "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "hé"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 2}}),
            json!({"type": "message_stop",
                "amazon-bedrock-invocationMetrics": {"inputTokenCount": 3}}),
        ];
        let input: Vec<u8> = events.iter().flat_map(chunk).collect();
        let mut whole = Vec::new();
        BedrockInvokeStream::new().push(&input, &mut whole).unwrap();
        let mut split = Vec::new();
        let mut d = BedrockInvokeStream::new();
        for b in &input {
            d.push(std::slice::from_ref(b), &mut split).unwrap();
        }
        assert_eq!(whole, split);
        let text = String::from_utf8(whole.clone()).unwrap();
        assert!(text.starts_with("event: message_start\ndata: {"), "{text}");
        // The SSE translates like any Anthropic stream.
        let mut t = crate::StreamTranslator::new(
            Dialect::OpenAi,
            Dialect::Anthropic,
            StreamOptions::default(),
        );
        let mut out = Vec::new();
        t.push(&whole, &mut out).unwrap();
        t.finish(&mut out);
        assert!(t.completed());
        assert_eq!(
            t.usage().map(|u| (u.input_tokens, u.output_tokens)),
            Some((3, 2))
        );
        assert!(String::from_utf8(out).unwrap().contains("hé"));
    }

    #[test]
    fn exceptions_and_bad_chunks() {
        let mut input =
            bedrock_exception_frame("throttlingException", br#"{"message":"Too many requests"}"#);
        input.extend(bedrock_event_frame("chunk", br#"{"bytes":"%%%"}"#));
        let mut out = Vec::new();
        let err = BedrockInvokeStream::new()
            .push(&input, &mut out)
            .unwrap_err();
        assert!(matches!(err, TranslateError::InvalidUpstream(_)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: error\ndata: {\"error\":{\"message\":\"Too many requests\",\"type\":\"rate_limit_error\"},\"type\":\"error\"}\n\n"
        );
    }
}
