//! Why generation stopped, mapped between dialects. OpenAI's
//! `finish_reason` is the pivot vocabulary.

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub(crate) fn openai_to_anthropic(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        // Anthropic has `refusal`, but clients written against older API
        // versions do not know it; a filtered answer just ends the turn.
        _ => "end_turn",
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub(crate) fn anthropic_to_openai(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`, before accounting for
/// function calls (which always win: see callers).
pub(crate) fn gemini_to_openai(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings() {
        assert_eq!(openai_to_anthropic("stop"), "end_turn");
        assert_eq!(openai_to_anthropic("length"), "max_tokens");
        assert_eq!(openai_to_anthropic("tool_calls"), "tool_use");
        assert_eq!(openai_to_anthropic("content_filter"), "end_turn");
        assert_eq!(anthropic_to_openai("end_turn"), "stop");
        assert_eq!(anthropic_to_openai("stop_sequence"), "stop");
        assert_eq!(anthropic_to_openai("max_tokens"), "length");
        assert_eq!(anthropic_to_openai("tool_use"), "tool_calls");
        assert_eq!(gemini_to_openai("STOP"), "stop");
        assert_eq!(gemini_to_openai("MAX_TOKENS"), "length");
        assert_eq!(gemini_to_openai("RECITATION"), "content_filter");
        assert_eq!(gemini_to_openai("OTHER"), "stop");
    }
}
