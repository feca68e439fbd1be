//! OpenAI ⇄ Gemini `generateContent`, for requests and non-streaming
//! responses.
//!
//! Gemini function calls carry no ids. Responses get synthesized ids
//! `call_<n>` (n counts the calls of one response), and requests map a tool
//! message back to its function name through the `tool_call_id` → name pairs
//! of the assistant messages before it (the latest one wins, so reused
//! `call_0` ids across turns resolve correctly).

mod request;
mod response;
mod schema;

pub(crate) use request::request_from_openai;
pub(crate) use response::{response_to_openai, tool_call_of};

/// The id given to the `n`-th function call of a Gemini response.
pub(crate) fn call_id(n: usize) -> String {
    format!("call_{n}")
}

/// A completion id for a Gemini response (`responseId` when present).
pub(crate) fn completion_id(response_id: Option<&str>) -> String {
    match response_id {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-{}", crate::json::synth_id()),
    }
}
