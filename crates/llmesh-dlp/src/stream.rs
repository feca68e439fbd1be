//! Restoring placeholders in a streamed answer, where a placeholder can be
//! split across chunks at any byte.

use std::sync::Arc;

use memchr::memrchr;

use crate::vault::Vault;

/// Restores placeholders in one output channel of a streamed answer: the
/// text stream, or one tool call's argument stream. Feed it the channel's
/// deltas in order with [`push`](StreamRestorer::push) and emit what it
/// returns; call [`finish`](StreamRestorer::finish) when the channel ends
/// and emit that too.
///
/// It holds back only a suffix that could still become a placeholder of
/// the vault (`[`, `[EMA`, `[EMAIL_1`), at most one placeholder long;
/// everything else is returned at once. The concatenated output equals
/// [`Vault::restore_str`] of the concatenated input, however it is chunked.
#[derive(Debug, Clone)]
pub struct StreamRestorer {
    vault: Arc<Vault>,
    json: bool,
    pending: String,
}

impl StreamRestorer {
    /// A restorer for plain text (OpenAI `delta.content`, Anthropic
    /// `text_delta.text`, Gemini `parts[].text`).
    pub fn new(vault: Arc<Vault>) -> StreamRestorer {
        StreamRestorer {
            vault,
            json: false,
            pending: String::new(),
        }
    }

    /// A restorer for JSON text streamed inside a string (OpenAI
    /// `delta.tool_calls[].function.arguments`, Anthropic
    /// `input_json_delta.partial_json`): originals are JSON-escaped.
    pub fn new_json_string(vault: Arc<Vault>) -> StreamRestorer {
        StreamRestorer {
            json: true,
            ..StreamRestorer::new(vault)
        }
    }

    /// Takes the next chunk; returns the text that can be emitted now.
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::with_capacity(chunk.len() + self.pending.len());
        self.push_into(chunk, &mut out);
        out
    }

    /// [`push`](StreamRestorer::push), appending to `out`.
    pub fn push_into(&mut self, chunk: &str, out: &mut String) {
        if self.vault.is_empty() {
            out.push_str(chunk);
            return;
        }
        let joined;
        let buf: &str = if self.pending.is_empty() {
            chunk
        } else {
            self.pending.push_str(chunk);
            joined = std::mem::take(&mut self.pending);
            &joined
        };
        // A placeholder has one `[`, so only the last `[` can start one that
        // is still incomplete; no candidate before it reaches past it.
        let hold = match memrchr(b'[', buf.as_bytes()) {
            Some(k) if self.vault.is_partial(&buf[k..]) => k,
            _ => buf.len(),
        };
        self.vault.restore_into(&buf[..hold], self.json, out);
        self.pending.clear();
        self.pending.push_str(&buf[hold..]);
    }

    /// Ends the channel: returns what was held back (an incomplete
    /// placeholder is passed through as written).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Bytes currently held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}
