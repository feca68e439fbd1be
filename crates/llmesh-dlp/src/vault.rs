//! The per-request map from placeholders to original values, and restoring
//! placeholders in answers.

use std::borrow::Cow;
use std::fmt;

use memchr::memchr;
use serde_json::Value;

use crate::json_text;
use crate::walk::{self, Api, Text, TextKind};

/// Placeholder <-> original values of one request, built by
/// [`Engine::process`](crate::Engine::process). Only placeholders in the
/// vault are ever restored: a `[EMAIL_9]` the model invents stays as is.
///
/// Its `Debug` shows the placeholders, never the originals.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Vault {
    /// Sorted by placeholder.
    entries: Vec<(String, String)>,
    /// Length of the longest placeholder.
    max_len: usize,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("placeholders", &self.placeholders().collect::<Vec<_>>())
            .finish()
    }
}

impl Vault {
    pub(crate) fn from_entries(mut entries: Vec<(String, String)>) -> Vault {
        entries.sort_unstable();
        let max_len = entries.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        Vault { entries, max_len }
    }

    /// True when nothing was redacted (restoring is then a no-op).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of placeholders.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The placeholders, sorted.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(p, _)| p.as_str())
    }

    /// The original value behind `placeholder` (brackets included).
    pub fn get(&self, placeholder: &str) -> Option<&str> {
        self.entries
            .binary_search_by(|(p, _)| p.as_str().cmp(placeholder))
            .ok()
            .map(|i| self.entries[i].1.as_str())
    }

    /// True when `s` is the beginning, but not the whole, of a placeholder:
    /// a streamed chunk ending in `s` must be held back.
    pub(crate) fn is_partial(&self, s: &str) -> bool {
        if s.len() >= self.max_len {
            return false;
        }
        let i = self.entries.partition_point(|(p, _)| p.as_str() < s);
        self.entries
            .get(i)
            .is_some_and(|(p, _)| p.len() > s.len() && p.starts_with(s))
    }

    /// `text` with every placeholder of this vault replaced by its original.
    /// Borrows when there is nothing to replace.
    pub fn restore_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.restore_cow(text, false)
    }

    /// Like [`restore_str`](Vault::restore_str) for JSON text held in a
    /// string (OpenAI tool-call `arguments`, Anthropic `partial_json`):
    /// originals are JSON-escaped, so a value holding `"` or `\` keeps the
    /// arguments valid JSON.
    pub fn restore_json_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.restore_cow(text, true)
    }

    fn restore_cow<'a>(&self, text: &'a str, json: bool) -> Cow<'a, str> {
        if self.entries.is_empty() || self.find_from(text, 0).is_none() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 32);
        self.restore_into(text, json, &mut out);
        Cow::Owned(out)
    }

    /// Appends `text` to `out` with every placeholder of the vault replaced
    /// (JSON-escaped when `json`).
    pub(crate) fn restore_into(&self, text: &str, json: bool, out: &mut String) {
        let mut copied = 0;
        while let Some((s, e, orig)) = self.find_from(text, copied) {
            out.push_str(&text[copied..s]);
            if json {
                json_text::escape_into(orig, out);
            } else {
                out.push_str(orig);
            }
            copied = e;
        }
        out.push_str(&text[copied..]);
    }

    /// The first placeholder of the vault in `text` at or after `i`: its
    /// range and original. A candidate is `[` up to the first `]`, cut short
    /// by another `[` or by the longest placeholder's length.
    fn find_from(&self, text: &str, mut i: usize) -> Option<(usize, usize, &str)> {
        if self.entries.is_empty() {
            return None;
        }
        let b = text.as_bytes();
        while let Some(off) = b.get(i..).and_then(|rest| memchr(b'[', rest)) {
            let s = i + off;
            let lim = b.len().min(s + self.max_len);
            let close = b
                .get(s + 1..lim)
                .and_then(|w| w.iter().position(|&c| c == b']' || c == b'['));
            if let Some(k) = close {
                let e = s + k + 2;
                if b[e - 1] == b']' {
                    if let Some(orig) = self.get(&text[s..e]) {
                        return Some((s, e, orig));
                    }
                }
            }
            i = s + 1;
        }
        None
    }

    /// Restores every string value in `value`, recursively (Anthropic
    /// `tool_use.input`, Gemini `functionCall.args`, in a streamed event too),
    /// except inside Anthropic `thinking` and `redacted_thinking` blocks
    /// (signed by the provider). Returns the number of strings changed.
    pub fn restore_value(&self, value: &mut Value) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut texts = Vec::new();
        walk::all_strings(value, &mut texts);
        self.restore_texts(texts)
    }

    /// Restores the model's output in a non-streamed answer body of `api`:
    /// OpenAI `choices[].message.content`, `choices[].text` and tool-call
    /// `arguments`; Responses `output` items and the request settings the
    /// answer echoes (`instructions`, `tools`, `text.format`,
    /// `prompt.variables`, `user`, `safety_identifier`); Anthropic
    /// `content[].text` and `tool_use.input` (never `thinking`: it is
    /// signed); Gemini `candidates[].content.parts[].text` and
    /// `functionCall.args`. Returns the number of strings changed.
    pub fn restore_json(&self, body: &mut Value, api: Api) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut texts = Vec::new();
        walk::response_texts(body, api, &mut texts);
        self.restore_texts(texts)
    }

    fn restore_texts(&self, texts: Vec<Text<'_>>) -> usize {
        let mut changed = 0;
        for t in texts {
            let json = t.kind == TextKind::JsonText;
            if let Cow::Owned(s) = self.restore_cow(t.text, json) {
                *t.text = s;
                changed += 1;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::from_entries(vec![
            ("[EMAIL_1]".into(), "a@b.co".into()),
            ("[EMAIL_2]".into(), "q\"x@b.co".into()),
            ("[PAYMENT_CARD_1]".into(), "4111 1111 1111 1111".into()),
        ])
    }

    #[test]
    fn restores_only_known_placeholders() {
        let v = vault();
        assert_eq!(
            v.restore_str("to [EMAIL_1], not [EMAIL_9] nor [EMAIL_1, card [PAYMENT_CARD_1]."),
            "to a@b.co, not [EMAIL_9] nor [EMAIL_1, card 4111 1111 1111 1111."
        );
        assert_eq!(v.restore_str("[[EMAIL_1]]"), "[a@b.co]");
        assert!(matches!(
            v.restore_str("no [brackets] here"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn json_mode_escapes() {
        let v = vault();
        let args = r#"{"to":"[EMAIL_2]"}"#;
        let restored = v.restore_json_text(args);
        let parsed: Value = serde_json::from_str(&restored).unwrap();
        assert_eq!(parsed["to"], "q\"x@b.co");
    }

    #[test]
    fn partial_prefixes() {
        let v = vault();
        for p in ["[", "[E", "[EMAIL_", "[EMAIL_1", "[PAY"] {
            assert!(v.is_partial(p), "{p}");
        }
        for p in ["[EMAIL_1]", "[X", "[EMAIL_3", "x"] {
            assert!(!v.is_partial(p), "{p}");
        }
    }

    #[test]
    fn debug_hides_originals() {
        let d = format!("{:?}", vault());
        assert!(d.contains("[EMAIL_1]"));
        assert!(!d.contains("a@b.co"));
    }
}
