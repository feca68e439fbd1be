//! Token estimates for upstreams that report no usage.
//!
//! The tokenizer's vocabulary costs tens of MiB of memory, so it is loaded
//! on first use only: providers that report usage never pay for it.

use llmesh_wire::Dialect;
use serde_json::Value;

/// Tokens in `text` with the o200k encoding (GPT-4o family); a close
/// enough estimate for other vendors' models when they report nothing.
pub fn count(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// [`estimate_prompt`] on a blocking thread. A tokenizer that panics is an
/// error of the request, never a count of 0.
pub async fn count_prompt(
    client: Dialect,
    raw: bytes::Bytes,
) -> Result<u64, crate::error::ProxyError> {
    tokio::task::spawn_blocking(move || estimate_prompt(client, &raw))
        .await
        .map_err(|e| crate::error::ProxyError::Tokenizer(e.to_string()))
}

/// Estimated prompt tokens of a client request body.
pub fn estimate_prompt(dialect: Dialect, raw: &[u8]) -> u64 {
    let Ok(body) = serde_json::from_slice::<Value>(raw) else {
        return 0;
    };
    let mut text = String::new();
    match dialect {
        Dialect::Anthropic => {
            collect_text(body.get("system"), &mut text);
            collect_text(body.get("messages"), &mut text);
            collect_text(body.get("tools"), &mut text);
        }
        Dialect::Responses => {
            collect_text(body.get("instructions"), &mut text);
            collect_text(body.get("input"), &mut text);
            collect_text(body.get("tools"), &mut text);
        }
        Dialect::OpenAi | Dialect::Gemini => {
            collect_text(body.get("messages"), &mut text);
            collect_text(body.get("prompt"), &mut text);
            collect_text(body.get("input"), &mut text);
            collect_text(body.get("tools"), &mut text);
            collect_text(body.get("contents"), &mut text);
        }
    }
    count(&text)
}

/// Appends every string inside `v` (message texts, tool arguments and
/// schemas), separated by newlines. Image data is skipped: it is not text
/// tokens and would inflate the estimate wildly.
pub fn collect_text(v: Option<&Value>, out: &mut String) {
    match v {
        Some(Value::String(s)) if !s.starts_with("data:") => {
            out.push_str(s);
            out.push('\n');
        }
        Some(Value::Array(items)) => items.iter().for_each(|i| collect_text(Some(i), out)),
        Some(Value::Object(map)) => {
            for (k, val) in map {
                if k == "image_url" || k == "source" || k == "inlineData" {
                    continue;
                }
                collect_text(Some(val), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_message_text_not_structure() {
        let raw = br#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#;
        let n = estimate_prompt(Dialect::OpenAi, raw);
        assert!((2..=6).contains(&n), "{n}");
        assert_eq!(estimate_prompt(Dialect::OpenAi, b"not json"), 0);
    }
}
