//! Incremental Server-Sent Events parsing.
//!
//! Bytes may arrive split anywhere: inside a UTF-8 sequence, between the CR
//! and LF of a line break, mid-field. [`SseParser`] buffers until an event is
//! complete (terminated by a blank line) and only then decodes it.
//!
//! Two views of the same stream are offered: [`SseParser::push`] returns
//! decoded [`SseEvent`]s, and [`SseParser::push_raw`] hands out each event's
//! original bytes, so a pass-through proxy can forward them untouched and
//! decode only the few events it cares about (with [`SseEvent::parse`]).

use memchr::{memchr, memchr2};

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if present and non-empty.
    pub event: Option<String>,
    /// All `data:` lines, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// Decode one event from raw bytes as handed out by
    /// [`SseParser::push_raw`] (any line endings; comments and unknown fields
    /// are skipped). `None` when the event has no `data` field, which SSE
    /// says must not be dispatched (e.g. comment-only keep-alives).
    pub fn parse(raw: &[u8]) -> Option<SseEvent> {
        let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        let mut event = None;
        let mut data: Option<String> = None;
        // Blank lines can only be the terminator or the tail of a CRLF split
        // across events, so skipping them is safe.
        for line in raw.split(|b| *b == b'\n' || *b == b'\r') {
            if line.is_empty() || line[0] == b':' {
                continue;
            }
            let (name, value) = match memchr(b':', line) {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            match name {
                b"event" => event = Some(String::from_utf8_lossy(value).into_owned()),
                b"data" => {
                    let value = String::from_utf8_lossy(value);
                    match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(&value);
                        }
                        None => data = Some(value.into_owned()),
                    }
                }
                _ => {}
            }
        }
        Some(SseEvent {
            event: event.filter(|e| !e.is_empty()),
            data: data?,
        })
    }
}

/// Write one event with the given name (if any) and single-line data.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Incremental SSE parser; feed it bytes as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the event being assembled (plus any stray line breaks that
    /// preceded it).
    buf: Vec<u8>,
    /// How much of `buf` has already been scanned for line breaks.
    scanned: usize,
    /// The current line has at least one byte.
    line_has_content: bool,
    /// The current event has at least one non-empty line.
    event_has_lines: bool,
    /// The last byte scanned was a CR, so an LF right after it is the second
    /// half of a CRLF, not a new (blank) line.
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes and return the events they complete (possibly none).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.push_raw(bytes, |raw| events.extend(SseEvent::parse(raw)));
        events
    }

    /// Feed bytes; `on_event` receives the raw bytes of each event they
    /// complete, exactly as received: its lines, its terminating blank line,
    /// and any stray line break left before it (the LF of a CRLF that ended
    /// the previous event in another chunk). Every byte fed is handed out
    /// exactly once, in order, either here or through
    /// [`pending`](Self::pending)/[`take_pending`](Self::take_pending).
    /// Comment-only events are handed out too (they keep connections alive);
    /// [`SseEvent::parse`] returns `None` for them.
    pub fn push_raw(&mut self, bytes: &[u8], mut on_event: impl FnMut(&[u8])) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let mut pos = self.scanned;
        while pos < self.buf.len() {
            let Some(off) = memchr2(b'\r', b'\n', &self.buf[pos..]) else {
                self.line_has_content = true;
                self.after_cr = false;
                pos = self.buf.len();
                break;
            };
            if off > 0 {
                self.line_has_content = true;
                self.after_cr = false;
            }
            let p = pos + off;
            let byte = self.buf[p];
            pos = p + 1;
            if byte == b'\n' && self.after_cr {
                self.after_cr = false;
                continue;
            }
            self.after_cr = byte == b'\r';
            if self.line_has_content {
                self.line_has_content = false;
                self.event_has_lines = true;
            } else if self.event_has_lines {
                on_event(&self.buf[start..pos]);
                start = pos;
                self.event_has_lines = false;
            }
        }
        self.buf.drain(..start);
        self.scanned = pos - start;
    }

    /// Raw bytes received but not yet handed out as a complete event.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Take the pending bytes (for a pass-through that must flush what the
    /// upstream sent even if it ended mid-event) and reset the parser.
    pub fn take_pending(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.buf);
        *self = Self::default();
        rest
    }

    /// The stream ended: decode a final event that lacked its terminating
    /// blank line, if any, and reset the parser. Strict SSE would drop such
    /// an event; upstreams that close right after their last line mean it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let rest = self.take_pending();
        SseEvent::parse(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "event: message_start\ndata: {\"a\":1}\n\n\
        : keep-alive comment\n\n\
        data: line one\ndata: line two\n\n\
        data:no-space\r\n\r\n\
        event: x\rdata: cr only\r\r\
        data: ünïcødé ✓ 😀\n\n\
        id: 7\nretry: 10\ndata\n\n\
        data: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        let ev = |e: Option<&str>, d: &str| SseEvent {
            event: e.map(str::to_owned),
            data: d.to_owned(),
        };
        vec![
            ev(Some("message_start"), "{\"a\":1}"),
            ev(None, "line one\nline two"),
            ev(None, "no-space"),
            ev(Some("x"), "cr only"),
            ev(None, "ünïcødé ✓ 😀"),
            ev(None, ""),
            ev(None, "[DONE]"),
        ]
    }

    #[test]
    fn whole_input() {
        let mut p = SseParser::new();
        assert_eq!(p.push(SAMPLE.as_bytes()), expected());
        assert!(p.pending().is_empty());
    }

    #[test]
    fn byte_by_byte() {
        let mut p = SseParser::new();
        let mut got = Vec::new();
        for b in SAMPLE.as_bytes() {
            got.extend(p.push(std::slice::from_ref(b)));
        }
        assert_eq!(got, expected());
    }

    #[test]
    fn every_two_way_split() {
        let bytes = SAMPLE.as_bytes();
        for cut in 0..=bytes.len() {
            let mut p = SseParser::new();
            let mut got = p.push(&bytes[..cut]);
            got.extend(p.push(&bytes[cut..]));
            assert_eq!(got, expected(), "split at {cut}");
        }
    }

    #[test]
    fn pseudo_random_splits_keep_raw_bytes_identical() {
        let bytes = SAMPLE.as_bytes();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            let mut p = SseParser::new();
            let mut events = Vec::new();
            let mut raw = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = 1 + (seed % 9) as usize;
                let end = (i + n).min(bytes.len());
                p.push_raw(&bytes[i..end], |r| {
                    raw.extend_from_slice(r);
                    events.extend(SseEvent::parse(r));
                });
                i = end;
            }
            raw.extend_from_slice(&p.take_pending());
            assert_eq!(raw, bytes);
            assert_eq!(events, expected());
        }
    }

    #[test]
    fn crlf_split_between_cr_and_lf_is_one_line_break() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: a\r").is_empty());
        assert!(p.push(b"\n").is_empty());
        assert_eq!(p.push(b"\r").len(), 1);
        // The LF completing that CRLF must not start a phantom event.
        assert!(p.push(b"\ndata: b\r\n\r\n").len() == 1);
    }

    #[test]
    fn comment_only_events_are_raw_but_not_decoded() {
        let mut p = SseParser::new();
        let mut raws = Vec::new();
        p.push_raw(b": ping\n\ndata: x\n\n", |r| raws.push(r.to_vec()));
        assert_eq!(raws, vec![b": ping\n\n".to_vec(), b"data: x\n\n".to_vec()]);
        assert_eq!(SseEvent::parse(&raws[0]), None);
    }

    #[test]
    fn bom_and_unterminated_tail() {
        let mut p = SseParser::new();
        assert!(p.push(b"\xEF\xBB\xBFdata: first").is_empty());
        assert_eq!(
            p.finish(),
            Some(SseEvent {
                event: None,
                data: "first".into()
            })
        );
        assert!(p.pending().is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut p = SseParser::new();
        let got = p.push(b"data: \xff\xfe\n\n");
        assert_eq!(got[0].data, "\u{fffd}\u{fffd}");
    }

    #[test]
    fn write_event_format() {
        let mut out = Vec::new();
        write_event(&mut out, Some("ping"), b"{}");
        write_event(&mut out, None, b"[DONE]");
        assert_eq!(out, b"event: ping\ndata: {}\n\ndata: [DONE]\n\n");
    }
}
