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

static LOADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Loads the tokenizer's vocabulary on a blocking thread, once, and
/// returns at once: called when a policy that counts tokens is published,
/// so no request waits for the load (see [`ready`]).
pub fn preload() {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(load());
    }
}

/// Loads the tokenizer on a blocking thread, once: every caller returns
/// when it is loaded (a failed load is tried again by the next caller).
pub async fn load() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let loaded = ONCE
        .get_or_try_init(|| async {
            let started = crate::clock::now();
            tokio::task::spawn_blocking(|| {
                let _ = tiktoken_rs::o200k_base_singleton();
            })
            .await?;
            LOADED.store(true, std::sync::atomic::Ordering::Release);
            tracing::info!(
                load_ms = crate::clock::since(started).as_millis() as u64,
                "tokenizer loaded"
            );
            Ok::<(), tokio::task::JoinError>(())
        })
        .await;
    if let Err(e) = loaded {
        // Requests keep reserving from the byte estimate meanwhile.
        tracing::warn!(error = %e, "the tokenizer could not be loaded");
    }
}

/// Whether the tokenizer is loaded. Until it is, quota admission reserves
/// from [`byte_estimate`] instead of waiting for it.
pub fn ready() -> bool {
    LOADED.load(std::sync::atomic::Ordering::Acquire)
}

/// [`estimate_prompt`] on a blocking thread. A tokenizer that panics (or
/// a task that cannot run) falls back to a byte-length estimate, counted
/// in [`fallbacks`] and logged: never a count of 0, never a failed request.
pub async fn count_prompt(
    client: Dialect,
    raw: bytes::Bytes,
) -> Result<u64, crate::error::ProxyError> {
    Ok(count_or_estimate(raw, move |raw| estimate_prompt(client, raw)).await)
}

/// Prompts counted from their length because the tokenizer failed.
static FALLBACKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many prompts were counted from their length (the tokenizer failed).
pub fn fallbacks() -> u64 {
    FALLBACKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// About a token per 3 bytes, rounded up: more than the tokenizer counts
/// for most text, so a quota errs on the side of reserving too much.
pub fn byte_estimate(len: usize) -> u64 {
    (len as u64).div_ceil(3)
}

async fn count_or_estimate<F>(raw: bytes::Bytes, count: F) -> u64
where
    F: FnOnce(&[u8]) -> u64 + Send + 'static,
{
    let len = raw.len();
    match tokio::task::spawn_blocking(move || count(&raw)).await {
        Ok(n) => n,
        Err(e) => {
            FALLBACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n = byte_estimate(len);
            tracing::warn!(error = %e, estimate = n, "the tokenizer failed; the prompt is counted from its length");
            n
        }
    }
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
        Dialect::OpenAi | Dialect::Gemini | Dialect::Bedrock => {
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

    #[tokio::test]
    async fn a_panicking_tokenizer_falls_back_to_the_length_and_is_counted() {
        let before = fallbacks();
        let raw = bytes::Bytes::from(vec![b'a'; 300]);
        let n = count_or_estimate(raw, |_| panic!("tokenizer broke")).await;
        assert_eq!(n, 100);
        assert_eq!(fallbacks(), before + 1);
        let n = count_or_estimate(bytes::Bytes::from_static(b"hello"), |_| 7).await;
        assert_eq!(n, 7);
    }

    #[test]
    fn counts_message_text_not_structure() {
        let raw = br#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#;
        let n = estimate_prompt(Dialect::OpenAi, raw);
        assert!((2..=6).contains(&n), "{n}");
        assert_eq!(estimate_prompt(Dialect::OpenAi, b"not json"), 0);
    }
}
