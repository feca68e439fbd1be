//! OpenAI ⇄ Anthropic Messages, for requests and non-streaming responses.

mod from_client;
mod response;
mod to_upstream;

pub(crate) use from_client::request_to_openai;
pub(crate) use response::{response_from_openai, response_to_openai};
pub use to_upstream::unforce_structured_output;
pub(crate) use to_upstream::{json_instruction, request_from_openai};

/// Upstream `max_tokens` when an OpenAI client sent none: Anthropic requires
/// the field, and OpenAI's default is "as much as fits".
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Name of the tool an Anthropic upstream is forced to call when an OpenAI
/// (or Responses) client asks for `response_format: json_schema`: its
/// `input_schema` is the requested schema, and its input is the answer.
/// Answers recognise it by name alone, so translating them needs no state.
pub const STRUCTURED_OUTPUT_TOOL: &str = "llmesh_structured_output";

/// An OpenAI completion id for an Anthropic message id.
pub(crate) fn openai_id(anthropic_id: &str) -> String {
    format!(
        "chatcmpl-{}",
        anthropic_id.strip_prefix("msg_").unwrap_or(anthropic_id)
    )
}

/// An Anthropic message id for an OpenAI completion id.
pub(crate) fn anthropic_id(openai_id: &str) -> String {
    format!(
        "msg_{}",
        openai_id.strip_prefix("chatcmpl-").unwrap_or(openai_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(openai_id("msg_abc"), "chatcmpl-abc");
        assert_eq!(anthropic_id("chatcmpl-abc"), "msg_abc");
        assert_eq!(anthropic_id("xyz"), "msg_xyz");
    }
}
