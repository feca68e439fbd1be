//! Token usage in a dialect-neutral form, and its encodings per dialect.

use serde_json::{json, Value};

use crate::json::u64_at;
use crate::Dialect;

/// Token counts of one request.
///
/// `input_tokens` counts every prompt token, cached ones included (OpenAI's
/// and Gemini's convention); `cached_input_tokens` is the part of it served
/// from a prompt cache. Anthropic reports cached tokens separately from
/// `input_tokens`, so for Anthropic bodies `input_tokens` here is the sum of
/// `input_tokens`, `cache_read_input_tokens` and `cache_creation_input_tokens`.
/// `cache_write_input_tokens` is the part written to the cache by this
/// request (Anthropic's `cache_creation_input_tokens`, billed at a premium);
/// OpenAI and Gemini cache automatically and report no such count, so it is
/// 0 for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Generated tokens (reasoning/thinking tokens included).
    pub output_tokens: u64,
    /// Prompt tokens read from a cache (a subset of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Prompt tokens written to a cache (a subset of `input_tokens`,
    /// disjoint from `cached_input_tokens`).
    pub cache_write_input_tokens: u64,
}

/// Usage of a non-streaming response body in its own dialect.
///
/// Also understands OpenAI embeddings responses (`usage.prompt_tokens` only).
/// Responses API bodies report `usage.input_tokens`, `usage.output_tokens`
/// and `usage.input_tokens_details.cached_tokens`.
/// `None` when the body carries no usage object.
pub fn usage_of(dialect: Dialect, body: &Value) -> Option<Usage> {
    match dialect {
        Dialect::OpenAi => body.get("usage").and_then(openai_usage),
        Dialect::Anthropic => body.get("usage").and_then(anthropic_usage),
        Dialect::Gemini => body.get("usageMetadata").and_then(gemini_usage),
        Dialect::Responses => body.get("usage").and_then(responses_usage),
        Dialect::Bedrock => body.get("usage").and_then(bedrock_usage),
    }
}

/// The model name a response body reports (`model`, or Gemini's
/// `modelVersion`). Bedrock Converse answers name no model: `None`.
pub fn response_model_of(dialect: Dialect, body: &Value) -> Option<&str> {
    let key = match dialect {
        Dialect::OpenAi | Dialect::Anthropic | Dialect::Responses => "model",
        Dialect::Gemini => "modelVersion",
        Dialect::Bedrock => return None,
    };
    body.get(key).and_then(Value::as_str)
}

/// Parse an OpenAI `usage` object (chat or embeddings).
pub(crate) fn openai_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    Some(Usage {
        input_tokens: u64_at(u, "prompt_tokens"),
        output_tokens: u64_at(u, "completion_tokens"),
        cached_input_tokens: u
            .get("prompt_tokens_details")
            .map(|d| u64_at(d, "cached_tokens"))
            .unwrap_or(0),
        cache_write_input_tokens: 0,
    })
}

/// Parse a Responses API `usage` object (its input count includes cached
/// tokens, like OpenAI's).
pub(crate) fn responses_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    Some(Usage {
        input_tokens: u64_at(u, "input_tokens"),
        output_tokens: u64_at(u, "output_tokens"),
        cached_input_tokens: u
            .get("input_tokens_details")
            .map(|d| u64_at(d, "cached_tokens"))
            .unwrap_or(0),
        cache_write_input_tokens: 0,
    })
}

/// Parse an Anthropic `usage` object (response, `message_start` or
/// `message_delta`).
pub(crate) fn anthropic_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let read = u64_at(u, "cache_read_input_tokens");
    let write = u64_at(u, "cache_creation_input_tokens");
    Some(Usage {
        input_tokens: u64_at(u, "input_tokens")
            .saturating_add(read)
            .saturating_add(write),
        output_tokens: u64_at(u, "output_tokens"),
        cached_input_tokens: read,
        cache_write_input_tokens: write,
    })
}

/// Parse a Gemini `usageMetadata` object.
pub(crate) fn gemini_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    Some(Usage {
        input_tokens: u64_at(u, "promptTokenCount") + u64_at(u, "toolUsePromptTokenCount"),
        // Thinking tokens are billed as output but reported apart from the
        // candidates' tokens.
        output_tokens: u64_at(u, "candidatesTokenCount") + u64_at(u, "thoughtsTokenCount"),
        cached_input_tokens: u64_at(u, "cachedContentTokenCount"),
        cache_write_input_tokens: 0,
    })
}

/// Parse a Bedrock Converse `usage` object (response or stream `metadata`).
/// Like Anthropic's, its `inputTokens` leaves out the tokens read from and
/// written to the prompt cache.
pub(crate) fn bedrock_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let read = u64_at(u, "cacheReadInputTokens");
    let write = u64_at(u, "cacheWriteInputTokens");
    Some(Usage {
        input_tokens: u64_at(u, "inputTokens")
            .saturating_add(read)
            .saturating_add(write),
        output_tokens: u64_at(u, "outputTokens"),
        cached_input_tokens: read,
        cache_write_input_tokens: write,
    })
}

pub(crate) fn openai_usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
    })
}

pub(crate) fn anthropic_usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.anthropic_input_tokens(),
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
        "cache_creation_input_tokens": u.cache_write_input_tokens,
    })
}

impl Usage {
    /// Anthropic's `input_tokens`: the prompt tokens neither read from nor
    /// written to a cache.
    pub(crate) fn anthropic_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_input_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chat_and_embeddings() {
        let body = json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4}}});
        assert_eq!(
            usage_of(Dialect::OpenAi, &body),
            Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cached_input_tokens: 4,
                cache_write_input_tokens: 0
            })
        );
        let emb = json!({"usage": {"prompt_tokens": 7, "total_tokens": 7}});
        assert_eq!(
            usage_of(Dialect::OpenAi, &emb),
            Some(Usage {
                input_tokens: 7,
                output_tokens: 0,
                cached_input_tokens: 0,
                cache_write_input_tokens: 0
            })
        );
        assert_eq!(usage_of(Dialect::OpenAi, &json!({"usage": null})), None);
    }

    #[test]
    fn anthropic_counts_cache_as_input() {
        let body = json!({"usage": {"input_tokens": 3, "output_tokens": 9,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}});
        assert_eq!(
            usage_of(Dialect::Anthropic, &body),
            Some(Usage {
                input_tokens: 123,
                output_tokens: 9,
                cached_input_tokens: 100,
                cache_write_input_tokens: 20
            })
        );
        // Absent cache fields (older API versions, no cache_control) are 0.
        let plain = json!({"usage": {"input_tokens": 3, "output_tokens": 9}});
        assert_eq!(
            usage_of(Dialect::Anthropic, &plain)
                .map(|u| (u.input_tokens, u.cache_write_input_tokens)),
            Some((3, 0))
        );
    }

    #[test]
    fn absurd_anthropic_counts_saturate_instead_of_overflowing() {
        let body = json!({"usage": {"input_tokens": u64::MAX, "output_tokens": 1,
            "cache_read_input_tokens": 5, "cache_creation_input_tokens": 5}});
        assert_eq!(
            usage_of(Dialect::Anthropic, &body).map(|u| u.input_tokens),
            Some(u64::MAX)
        );
    }

    #[test]
    fn gemini_counts_thoughts_as_output() {
        let body = json!({"usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2,
            "thoughtsTokenCount": 5, "cachedContentTokenCount": 1, "totalTokenCount": 15},
            "modelVersion": "gemini-x"});
        assert_eq!(
            usage_of(Dialect::Gemini, &body),
            Some(Usage {
                input_tokens: 8,
                output_tokens: 7,
                cached_input_tokens: 1,
                cache_write_input_tokens: 0
            })
        );
        assert_eq!(response_model_of(Dialect::Gemini, &body), Some("gemini-x"));
    }

    #[test]
    fn responses_usage_and_model() {
        let body = json!({"model": "gpt-5", "usage": {"input_tokens": 30, "output_tokens": 7,
            "input_tokens_details": {"cached_tokens": 12},
            "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 37}});
        assert_eq!(
            usage_of(Dialect::Responses, &body),
            Some(Usage {
                input_tokens: 30,
                output_tokens: 7,
                cached_input_tokens: 12,
                cache_write_input_tokens: 0
            })
        );
        assert_eq!(response_model_of(Dialect::Responses, &body), Some("gpt-5"));
        assert_eq!(usage_of(Dialect::Responses, &json!({"usage": null})), None);
        assert_eq!(
            usage_of(Dialect::Responses, &json!({"usage": {"input_tokens": 2}})),
            Some(Usage {
                input_tokens: 2,
                output_tokens: 0,
                cached_input_tokens: 0,
                cache_write_input_tokens: 0
            })
        );
        assert_eq!(response_model_of(Dialect::Responses, &json!({})), None);
    }

    #[test]
    fn bedrock_counts_cache_reads_and_writes_as_input() {
        let body = json!({"usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 134,
            "cacheReadInputTokens": 100, "cacheWriteInputTokens": 20}});
        assert_eq!(
            usage_of(Dialect::Bedrock, &body),
            Some(Usage {
                input_tokens: 130,
                output_tokens: 4,
                cached_input_tokens: 100,
                cache_write_input_tokens: 20
            })
        );
        let plain = json!({"usage": {"inputTokens": 3, "outputTokens": 2}});
        assert_eq!(
            usage_of(Dialect::Bedrock, &plain).map(|u| (u.input_tokens, u.cached_input_tokens)),
            Some((3, 0))
        );
        assert_eq!(usage_of(Dialect::Bedrock, &json!({})), None);
        assert_eq!(
            response_model_of(Dialect::Bedrock, &json!({"model": "x"})),
            None
        );
    }

    #[test]
    fn round_trip_through_anthropic_json() {
        let u = Usage {
            input_tokens: 50,
            output_tokens: 3,
            cached_input_tokens: 20,
            cache_write_input_tokens: 0,
        };
        assert_eq!(anthropic_usage(&anthropic_usage_json(u)), Some(u));
        assert_eq!(openai_usage(&openai_usage_json(u)), Some(u));
    }

    #[test]
    fn cache_writes_reach_an_anthropic_client_and_stay_in_openai_prompt_tokens() {
        let u = Usage {
            input_tokens: 50,
            output_tokens: 3,
            cached_input_tokens: 20,
            cache_write_input_tokens: 25,
        };
        let a = anthropic_usage_json(u);
        assert_eq!(a["input_tokens"], 5);
        assert_eq!(a["cache_read_input_tokens"], 20);
        assert_eq!(a["cache_creation_input_tokens"], 25);
        assert_eq!(anthropic_usage(&a), Some(u));
        // OpenAI has no cache-write count: the tokens are still prompt
        // tokens, and the write count is lost on the way.
        let o = openai_usage_json(u);
        assert_eq!(o["prompt_tokens"], 50);
        assert_eq!(
            openai_usage(&o),
            Some(Usage {
                cache_write_input_tokens: 0,
                ..u
            })
        );
    }
}
