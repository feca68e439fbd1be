//! OpenAI audio: `POST /v1/audio/transcriptions` and `/translations`
//! (multipart uploads, answered with a text naming the upload's size and
//! the model) and `POST /v1/audio/speech` (deterministic MP3 frames,
//! streamed).

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use serde_json::{json, Value};

use crate::body::{ActiveGuard, Events, MockBody, Pacing};
use crate::common::generated_text;
use crate::multipart::Form;
use crate::server::{full_answer, stream_answer, ApiError, Ctx};

/// Bytes of one generated MPEG-1 Layer III frame (128 kbit/s, 44.1 kHz).
pub(crate) const MP3_FRAME_BYTES: usize = 417;

/// The speech endpoint's input limit, as in the real API.
const MAX_SPEECH_INPUT: usize = 4096;

/// The uploaded audio is taken to be 128 kbit/s for its duration.
const AUDIO_BYTES_PER_SECOND: f64 = 16_000.0;

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

fn timestamp(secs: f64, sep: char) -> String {
    let ms = (secs * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `POST /v1/audio/transcriptions` (`translate` false) and
/// `/v1/audio/translations`.
pub(crate) fn transcribe(
    ctx: &Ctx<'_>,
    form: &Form,
    translate: bool,
    active: ActiveGuard,
) -> Response<MockBody> {
    let Some(file) = form.file.as_ref() else {
        return ApiError::openai("Missing required parameter: 'file'.").response();
    };
    let Some(model) = form.field("model") else {
        return ApiError::openai("Missing required parameter: 'model'.").response();
    };
    let format = form.field("response_format").unwrap_or("json");
    if !["json", "text", "srt", "verbose_json", "vtt"].contains(&format) {
        return ApiError::openai(&format!(
            "Invalid value for 'response_format': '{format}'; expected one of json, text, srt, verbose_json, vtt."
        ))
        .response();
    }
    let verb = if translate {
        "translated"
    } else {
        "transcribed"
    };
    let n = ctx.layers.output_tokens();
    let mut text = format!("{verb} {} bytes with {model}", file.len);
    if n > 0 {
        text.push_str(": ");
        text.push_str(&generated_text(n));
    }
    let prompt_words = form.field("prompt").map_or(0, words);
    let audio_tokens = file.len.div_ceil(1024).max(1);
    let input_tokens = prompt_words + audio_tokens;
    let output_tokens = words(&text);
    let usage = json!({
        "type": "tokens",
        "input_tokens": input_tokens,
        "input_token_details": {"text_tokens": prompt_words, "audio_tokens": audio_tokens},
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    });
    let duration = (file.len as f64 / AUDIO_BYTES_PER_SECOND * 100.0).round() / 100.0;
    let stream = form
        .field("stream")
        .is_some_and(|s| s.eq_ignore_ascii_case("true"));
    if stream && !translate {
        let mut ev = Events::with_capacity(256 + text.len() * 4, text.len() + 2);
        for (i, w) in text.split_whitespace().enumerate() {
            let delta = if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            };
            let v = json!({"type": "transcript.text.delta", "delta": delta, "logprobs": []});
            ev.sse(|o| o.push_str(&v.to_string()));
        }
        let v =
            json!({"type": "transcript.text.done", "text": text, "logprobs": [], "usage": usage});
        ev.sse(|o| o.push_str(&v.to_string()));
        return stream_answer(ev, "text/event-stream", ctx.layers, active);
    }
    let end = timestamp(duration.max(0.001), ',');
    let (body, ct) = match format {
        "text" => (format!("{text}\n"), "text/plain; charset=utf-8"),
        "srt" => (
            format!("1\n00:00:00,000 --> {end}\n{text}\n\n"),
            "text/plain; charset=utf-8",
        ),
        "vtt" => (
            format!(
                "WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n",
                timestamp(duration.max(0.001), '.')
            ),
            "text/plain; charset=utf-8",
        ),
        "verbose_json" => (
            json!({
                "task": if translate { "translate" } else { "transcribe" },
                "language": "english",
                "duration": duration,
                "text": text,
                "segments": [{
                    "id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text,
                    "tokens": [], "temperature": 0.0, "avg_logprob": 0.0,
                    "compression_ratio": 1.0, "no_speech_prob": 0.0,
                }],
                "usage": {"type": "duration", "seconds": duration.ceil() as u64},
            })
            .to_string(),
            "application/json",
        ),
        _ if translate => (json!({ "text": text }).to_string(), "application/json"),
        _ => (
            json!({"text": text, "usage": usage}).to_string(),
            "application/json",
        ),
    };
    full_answer(body, ct, ctx.layers, active)
}

/// The generated speech for `input`: one silent MP3 frame per input word
/// (at least one).
pub(crate) fn speech_bytes(input: &str) -> Vec<u8> {
    let frames = (words(input) as usize).max(1);
    let mut out = vec![0u8; frames * MP3_FRAME_BYTES];
    for f in out.chunks_exact_mut(MP3_FRAME_BYTES) {
        // Sync word, MPEG-1 Layer III without CRC; 128 kbit/s, 44.1 kHz,
        // no padding; joint stereo.
        f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    }
    out
}

/// `POST /v1/audio/speech`: binary audio, one body frame per MP3 frame,
/// paced by the streaming behaviors.
pub(crate) fn speech(ctx: &Ctx<'_>, body: &Value, active: ActiveGuard) -> Response<MockBody> {
    for field in ["model", "input", "voice"] {
        if !body.get(field).is_some_and(Value::is_string) {
            return ApiError::openai(&format!("Missing required parameter: '{field}'.")).response();
        }
    }
    let input = body
        .get("input")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if input.chars().count() > MAX_SPEECH_INPUT {
        return ApiError::openai(&format!(
            "'input' is longer than the maximum of {MAX_SPEECH_INPUT} characters."
        ))
        .response();
    }
    let ct = match body
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("mp3")
    {
        "mp3" => "audio/mpeg",
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        other => {
            return ApiError::openai(&format!("Invalid value for 'response_format': '{other}'."))
                .response()
        }
    };
    let audio = speech_bytes(input);
    let ends = (1..=audio.len() / MP3_FRAME_BYTES)
        .map(|i| i * MP3_FRAME_BYTES)
        .collect();
    let pacing = Pacing {
        first: ctx.layers.ttft(),
        between: ctx.layers.chunk_delay(),
        reset_after: ctx.layers.reset_after_chunks().map(|n| n as usize),
        per_event: true,
    };
    let mut r = Response::new(MockBody::frames(
        Bytes::from(audio),
        ends,
        pacing,
        Some(active),
    ));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_is_whole_frames() {
        assert_eq!(speech_bytes("").len(), MP3_FRAME_BYTES);
        let b = speech_bytes("one two three");
        assert_eq!(b.len(), 3 * MP3_FRAME_BYTES);
        assert_eq!(&b[MP3_FRAME_BYTES..MP3_FRAME_BYTES + 2], &[0xFF, 0xFB]);
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(3723.5, ','), "01:02:03,500");
        assert_eq!(timestamp(0.25, '.'), "00:00:00.250");
    }
}
