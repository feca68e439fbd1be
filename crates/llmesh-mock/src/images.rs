//! OpenAI `POST /v1/images/generations`: `n` copies of a 1x1 PNG, as
//! base64 (or a `data:` URL with `response_format: "url"`).

use http::Response;
use serde_json::{json, Value};

use crate::body::{ActiveGuard, MockBody};
use crate::openai::push_base64;
use crate::server::{full_answer, unix_now, ApiError, Ctx};

/// A 1x1 PNG.
const PNG: [u8; 70] = [
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0xDA, 0x63, 0x64, 0xF8, 0xCF, 0x50,
    0x0F, 0x00, 0x03, 0x86, 0x01, 0x80, 0x5A, 0x34, 0x7D, 0x6B, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// Most images one request may ask for, as in the real API.
const MAX_IMAGES: u64 = 10;

/// `POST /v1/images/generations`. Usage: input tokens are the prompt's
/// words (min 1), output tokens the behavior's output tokens per image.
pub(crate) fn generate(ctx: &Ctx<'_>, body: &Value, active: ActiveGuard) -> Response<MockBody> {
    let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
        return ApiError::openai("Missing required parameter: 'prompt'.").response();
    };
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    if !(1..=MAX_IMAGES).contains(&n) {
        return ApiError::openai(&format!("'n' must be between 1 and {MAX_IMAGES}.")).response();
    }
    let url = body.get("response_format").and_then(Value::as_str) == Some("url");
    let mut b64 = String::new();
    push_base64(&mut b64, &PNG);
    let image = if url {
        json!({"url": format!("data:image/png;base64,{b64}"), "revised_prompt": prompt})
    } else {
        json!({"b64_json": b64, "revised_prompt": prompt})
    };
    let input = (prompt.split_whitespace().count() as u64).max(1);
    let output = u64::from(ctx.layers.output_tokens()) * n;
    let out = json!({
        "created": unix_now(),
        "data": vec![image; n as usize],
        "usage": {
            "input_tokens": input,
            "input_tokens_details": {"text_tokens": input, "image_tokens": 0},
            "output_tokens": output,
            "total_tokens": input + output,
        },
    });
    full_answer(out.to_string(), "application/json", ctx.layers, active)
}
