//! Dialect-independent pieces: the deterministic accounting rules and the
//! generated answer ("plan") that each dialect renders in its own format.

use serde_json::Value;

/// Fixed vocabulary for generated text. Plain ASCII words without JSON
/// special characters, so they can be written into templates unescaped.
pub(crate) const LOREM: [&str; 32] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
];

/// Arguments of a generated tool call when the behavior sets none.
pub(crate) const DEFAULT_TOOL_ARGS: &str = r#"{"city":"Paris"}"#;

/// Word `i` of the generated text, with the separating space that goes in
/// front of every word but the first (so streamed pieces concatenate to the
/// full text).
pub(crate) fn word_piece(i: usize) -> (&'static str, &'static str) {
    (if i == 0 { "" } else { " " }, LOREM[i % LOREM.len()])
}

/// Append the generated text of `n` words (no quotes, no escaping needed).
pub(crate) fn push_text(out: &mut String, n: u32) {
    push_text_from(out, 0, n);
}

/// Append `n` generated words starting at word `first` (a continuation of
/// a prefilled answer of `first` words).
pub(crate) fn push_text_from(out: &mut String, first: usize, n: u32) {
    for i in first..first + n as usize {
        let (sep, w) = word_piece(i);
        out.push_str(sep);
        out.push_str(w);
    }
}

/// Generated text of `n` words, for callers (and tests) that want it whole.
pub fn generated_text(n: u32) -> String {
    let mut s = String::new();
    push_text(&mut s, n);
    s
}

/// Whitespace-separated words in a message `content` of any dialect: a
/// string, or an array of parts/blocks whose `text` counts, recursing into
/// nested `content` (Anthropic tool_result blocks) and `parts` (Gemini).
pub(crate) fn count_words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(items) => items.iter().map(count_words).sum(),
        Value::Object(o) => {
            let mut n = 0;
            if let Some(Value::String(t)) = o.get("text") {
                n += t.split_whitespace().count() as u64;
            }
            if let Some(c) = o.get("content") {
                n += count_words(c);
            }
            if let Some(p) = o.get("parts") {
                n += count_words(p);
            }
            n
        }
        _ => 0,
    }
}

/// Words of a partial answer the request asks to continue: a trailing
/// assistant message (Anthropic prefill), or one marked `"prefix": true`
/// (the DeepSeek / Mistral convention) when `flagged` is required. The
/// answer then continues the generated text from that word.
pub(crate) fn prefill_words(messages: &[Value], flagged: bool) -> usize {
    let Some(last) = messages.last() else {
        return 0;
    };
    let is_assistant = last.get("role").and_then(Value::as_str) == Some("assistant");
    let marked = !flagged || last.get("prefix").and_then(Value::as_bool) == Some(true);
    if is_assistant && marked {
        last.get("content").map_or(0, count_words) as usize
    } else {
        0
    }
}

/// Text of the last message with role `user`: a string content, or its
/// text parts/blocks joined.
pub(crate) fn last_user_text(messages: &[Value]) -> Option<String> {
    let m = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match m.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

/// How many messages (or Responses input items) have role `assistant`.
pub(crate) fn assistant_turns(messages: &[Value]) -> usize {
    messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .count()
}

/// `text` in pieces of `n` characters.
pub(crate) fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

/// What the request asked for, in dialect-independent terms.
pub(crate) struct ChatReq<'a> {
    pub model: &'a str,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Gemini streaming framing: SSE (`alt=sse`) or a streamed JSON array.
    pub sse: bool,
    /// Input tokens by the word-count rule (min 1).
    pub input_tokens: u64,
    /// Words of a prefilled partial answer to continue from.
    pub first_word: usize,
    /// Text of the last user message (for the echo behavior).
    pub last_user_text: Option<String>,
    /// Assistant turns in the conversation (for `json_reply_after_turns`).
    pub assistant_turns: usize,
    /// First declared tool, unless the conversation already ends with a
    /// tool result (then a text answer ends the tool loop).
    pub tool: Option<&'a str>,
    /// The request forces the call of `tool` (Anthropic `tool_choice:
    /// {type: tool}`): with `json_reply`, its input is the JSON answer.
    pub forced_tool: bool,
}

/// The answer to render.
pub(crate) struct Plan<'a> {
    /// Per-server sequence number, used in ids.
    pub id: u64,
    pub created: u64,
    pub model: &'a str,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    /// Input tokens written to the prompt cache (Anthropic only).
    pub cache_write_tokens: u64,
    pub output_tokens: u32,
    /// Generated text starts at this word (prefill continuation).
    pub first_word: usize,
    /// Echo: the answer's text pieces, replacing the generated words.
    pub echo: Option<Vec<String>>,
    pub tool: Option<ToolCall<'a>>,
    pub content_filter: bool,
    pub include_usage: bool,
    /// OpenAI only: report no usage at all.
    pub omit_usage: bool,
    pub sse: bool,
}

impl Plan<'_> {
    /// The whole answer text as a JSON string literal: the echoed pieces,
    /// or the generated words.
    pub(crate) fn push_text_json(&self, out: &mut String) {
        match &self.echo {
            Some(pieces) => crate::body::push_json_str(out, &pieces.concat()),
            None => {
                out.push('"');
                push_text_from(out, self.first_word, self.output_tokens);
                out.push('"');
            }
        }
    }

    /// The whole answer text (echoed pieces or generated words).
    pub(crate) fn text(&self) -> String {
        match &self.echo {
            Some(pieces) => pieces.concat(),
            None => {
                let mut s = String::new();
                push_text_from(&mut s, self.first_word, self.output_tokens);
                s
            }
        }
    }

    /// Streamed piece `k` (of `output_tokens`) as plain text.
    pub(crate) fn piece(&self, k: usize) -> String {
        match &self.echo {
            Some(pieces) => pieces.get(k).cloned().unwrap_or_default(),
            None => {
                let (sep, w) = word_piece(self.first_word + k);
                format!("{sep}{w}")
            }
        }
    }

    /// Streamed piece `k` (of `output_tokens`) as a JSON string literal.
    pub(crate) fn push_piece_json(&self, k: usize, out: &mut String) {
        match &self.echo {
            Some(pieces) => {
                crate::body::push_json_str(out, pieces.get(k).map_or("", String::as_str))
            }
            None => {
                // Generated words need no escaping.
                let (sep, w) = word_piece(self.first_word + k);
                out.push('"');
                out.push_str(sep);
                out.push_str(w);
                out.push('"');
            }
        }
    }
}

pub(crate) struct ToolCall<'a> {
    pub name: &'a str,
    /// Arguments as compact JSON text.
    pub args: String,
}

impl ToolCall<'_> {
    /// The argument JSON split in two non-empty pieces (when possible), to
    /// exercise clients that must reassemble streamed arguments.
    pub fn arg_pieces(&self) -> [&str; 2] {
        let s = self.args.as_str();
        let mut mid = s.len() / 2;
        while mid > 0 && !s.is_char_boundary(mid) {
            mid -= 1;
        }
        if mid == 0 && s.len() > 1 {
            mid = s.char_indices().nth(1).map_or(s.len(), |(i, _)| i);
        }
        [&s[..mid], &s[mid..]]
    }
}

/// Dimensions of the mock's embeddings unless the request asks for
/// others (`dimensions`).
pub(crate) const EMBEDDING_DIMS: usize = 8;

/// Most dimensions a request may ask for.
pub(crate) const MAX_EMBEDDING_DIMS: usize = 4096;

/// Deterministic unit vector of `text` with `dims` dimensions: a bag of
/// words, each lower-cased word adding +1 or -1 to one dimension picked by
/// its hash, so texts that share most words are close (cosine similarity
/// about shared words / word count) and the same words in another case
/// or order are the same vector. A text without words gets a vector
/// seeded by its bytes.
pub(crate) fn embedding(text: &[u8], dims: usize) -> Vec<f32> {
    let fnv = |bytes: &mut dyn Iterator<Item = u8>| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let dims = dims.max(1);
    let mut out = vec![0f32; dims];
    let words = text
        .split(|b| !b.is_ascii_alphanumeric() && *b < 0x80)
        .filter(|w| !w.is_empty());
    let mut any = false;
    for w in words {
        any = true;
        let h = fnv(&mut w.iter().map(u8::to_ascii_lowercase));
        let dim = (h % dims as u64) as usize;
        out[dim] += if h >> 63 == 0 { 1.0 } else { -1.0 };
    }
    if !any {
        // No words: a pseudo-random vector seeded by the bytes.
        let mut h = fnv(&mut text.iter().copied());
        for o in &mut out {
            h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = h;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // Top 24 bits -> [-1, 1).
            *o = ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0;
        }
    }
    let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for o in &mut out {
            *o /= norm;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_words_in_all_shapes() {
        assert_eq!(count_words(&json!("a b  c")), 3);
        assert_eq!(
            count_words(&json!([{"type":"text","text":"one two"},{"type":"image_url"}])),
            2
        );
        assert_eq!(
            count_words(
                &json!([{"type":"tool_result","content":[{"type":"text","text":"x y z"}]}])
            ),
            3
        );
        assert_eq!(count_words(&json!({"parts":[{"text":"hi there"}]})), 2);
    }

    #[test]
    fn arg_pieces_split() {
        let t = ToolCall {
            name: "f",
            args: DEFAULT_TOOL_ARGS.into(),
        };
        let [a, b] = t.arg_pieces();
        assert!(!a.is_empty() && !b.is_empty());
        assert_eq!(format!("{a}{b}"), DEFAULT_TOOL_ARGS);
        let t = ToolCall {
            name: "f",
            args: "{}".into(),
        };
        assert_eq!(t.arg_pieces(), ["{", "}"]);
    }

    #[test]
    fn embedding_is_deterministic_unit() {
        let a = embedding(b"hello", 8);
        assert_eq!(a, embedding(b"hello", 8));
        assert_ne!(a, embedding(b"world", 8));
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let e = |t: &str| embedding(t.as_bytes(), 256);
        let q = e("What is the capital of France?");
        assert_eq!(q.len(), 256);
        assert!((cos(&q, &e("what is the capital of france")) - 1.0).abs() < 1e-5);
        let near = cos(&q, &e("What is the capital city of France?"));
        let far = cos(&q, &e("How do I bake bread at home?"));
        assert!(near > 0.9 && far < 0.5, "near {near}, far {far}");
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }

    #[test]
    fn text_has_n_words() {
        assert_eq!(generated_text(0), "");
        assert_eq!(generated_text(40).split_whitespace().count(), 40);
    }
}
