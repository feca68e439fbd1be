//! JSON text inside a JSON string: OpenAI's `tool_calls[].function.arguments`
//! (and Anthropic's streamed `partial_json`). Redaction works on the decoded
//! string values inside it, so a finding never spans JSON syntax and the
//! vault holds real values; restoring into such text escapes them again.

use std::borrow::Cow;
use std::ops::Range;

use memchr::{memchr, memchr2};

/// Byte ranges (quotes included) of the string *values* in JSON text, in
/// order; object keys are skipped. `None` when the text is not valid JSON.
pub(crate) fn string_values(text: &str) -> Option<Vec<Range<usize>>> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr(b'"', &b[i..]) {
        let start = i + off;
        let mut j = start + 1;
        let end = loop {
            let k = j + memchr2(b'"', b'\\', b.get(j..)?)?;
            if b[k] == b'\\' {
                j = k + 2;
            } else {
                break k + 1;
            }
        };
        let is_key = b[end..]
            .iter()
            .find(|c| !c.is_ascii_whitespace())
            .is_some_and(|&c| c == b':');
        if !is_key {
            out.push(start..end);
        }
        i = end;
    }
    Some(out)
}

/// The value of a JSON string literal (quotes included).
pub(crate) fn decode(literal: &str) -> Option<Cow<'_, str>> {
    let inner = literal.get(1..literal.len().checked_sub(1)?)?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(literal).ok().map(Cow::Owned)
}

/// Appends `s` escaped for the inside of a JSON string (no quotes).
pub(crate) fn escape_into(s: &str, out: &mut String) {
    let mut copied = 0;
    for (i, c) in s.bytes().enumerate() {
        let esc: &str = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[copied..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{c:04x}"));
        } else {
            out.push_str(esc);
        }
        copied = i + 1;
    }
    out.push_str(&s[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_not_keys() {
        let t = r#"{"to": "a@b.co", "n": 1, "list": ["x\"y", "z"], "o": {"k": "v"}}"#;
        let v: Vec<&str> = string_values(t)
            .unwrap()
            .into_iter()
            .map(|r| &t[r])
            .collect();
        assert_eq!(v, [r#""a@b.co""#, r#""x\"y""#, r#""z""#, r#""v""#]);
        assert!(string_values("{not json").is_none());
    }

    #[test]
    fn escape_round_trips() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\nand\ttab",
            "\u{1}ctl",
            "é😀",
        ] {
            let mut e = String::from("\"");
            escape_into(s, &mut e);
            e.push('"');
            assert_eq!(decode(&e).unwrap(), s);
            assert_eq!(serde_json::from_str::<String>(&e).unwrap(), s);
        }
    }
}
