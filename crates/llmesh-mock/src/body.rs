//! Response bodies.
//!
//! Streaming answers are pre-rendered into one contiguous buffer and handed
//! out as zero-copy slices, one per event, paced by timers inside
//! `poll_frame`. This avoids a producer task and a channel per stream, and a
//! client disconnect simply drops the body (and its timer): nothing leaks.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// Events rendered into one buffer; `ends[i]` is the end offset of event `i`.
pub(crate) struct Events {
    pub buf: String,
    ends: Vec<usize>,
}

impl Events {
    pub fn with_capacity(bytes: usize, events: usize) -> Self {
        Events {
            buf: String::with_capacity(bytes),
            ends: Vec::with_capacity(events),
        }
    }

    /// Close the event whose bytes were appended since the previous one.
    pub fn end_event(&mut self) {
        self.ends.push(self.buf.len());
    }

    /// The events rendered so far, each as its text.
    pub fn each(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let ev = self.buf.get(start..end).unwrap_or_default();
            start = end;
            ev
        })
    }

    /// Append `data: <payload>\n\n` as one event.
    pub fn sse(&mut self, payload: impl FnOnce(&mut String)) {
        self.buf.push_str("data: ");
        payload(&mut self.buf);
        self.buf.push_str("\n\n");
        self.end_event();
    }

    /// Append `event: <name>\ndata: <payload>\n\n` as one event.
    pub fn sse_named(&mut self, name: &str, payload: impl FnOnce(&mut String)) {
        self.buf.push_str("event: ");
        self.buf.push_str(name);
        self.buf.push_str("\ndata: ");
        payload(&mut self.buf);
        self.buf.push_str("\n\n");
        self.end_event();
    }
}

/// Pause between the last event sent and the abort of a reset stream.
const RESET_GRACE: Duration = Duration::from_millis(10);

/// Counts live API requests (handler plus streamed body), so tests can check
/// that abandoned requests (hang, slow streams) are really dropped.
pub(crate) struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    pub fn new(c: &Arc<AtomicUsize>) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(c.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pacing and fault injection for a chunked body.
#[derive(Clone, Copy, Default)]
pub(crate) struct Pacing {
    /// Delay before the first event.
    pub first: Duration,
    /// Delay before each following event.
    pub between: Duration,
    /// Abort the body after this many events (if fewer than the total).
    pub reset_after: Option<usize>,
    /// Hand out one event per body frame even without inter-event delay
    /// (binary bodies that must arrive in several frames).
    pub per_event: bool,
}

/// The body of every response the mock sends.
pub(crate) enum MockBody {
    /// A complete body, sent with a Content-Length.
    Full(Option<Bytes>),
    /// A paced sequence of events (chunked / HTTP/2 data frames).
    Chunked(Box<Chunked>),
}

pub(crate) struct Chunked {
    buf: Bytes,
    ends: Vec<usize>,
    next: usize,
    pacing: Pacing,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The delay owed before event `next` has been served.
    waited: bool,
    /// Reset path: we yielded once so hyper could flush what was sent.
    flushed: bool,
    done: bool,
    _active: Option<ActiveGuard>,
}

impl MockBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(b.into()))
    }

    pub fn events(ev: Events, pacing: Pacing, active: Option<ActiveGuard>) -> Self {
        MockBody::frames(Bytes::from(ev.buf), ev.ends, pacing, active)
    }

    /// A paced body of arbitrary bytes; `ends[i]` is the end offset of
    /// event `i` (increasing, the last one `buf.len()`).
    pub fn frames(
        buf: Bytes,
        ends: Vec<usize>,
        pacing: Pacing,
        active: Option<ActiveGuard>,
    ) -> Self {
        MockBody::Chunked(Box::new(Chunked {
            buf,
            ends,
            next: 0,
            pacing,
            sleep: None,
            waited: false,
            flushed: false,
            done: false,
            _active: active,
        }))
    }
}

impl Chunked {
    /// Number of events that will be sent before the body ends or resets.
    fn stop(&self) -> usize {
        let total = self.ends.len();
        self.pacing.reset_after.map_or(total, |r| r.min(total))
    }

    fn resets(&self) -> bool {
        self.pacing.reset_after.is_some_and(|r| r < self.ends.len())
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Chunked(c) => c.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(b) => b.is_none(),
            MockBody::Chunked(c) => c.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Chunked(_) => SizeHint::default(),
        }
    }
}

impl Chunked {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(s) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
                self.waited = true;
            }
            let stop = self.stop();
            if self.next >= stop {
                if !self.resets() {
                    self.done = true;
                    return Poll::Ready(None);
                }
                if !self.flushed {
                    // Give the connection a moment to write out the events
                    // already handed over before we abort: an HTTP/2 reset
                    // discards data still queued for the stream, and the
                    // client must see a truncated stream, not an empty one.
                    self.flushed = true;
                    self.sleep = Some(Box::pin(tokio::time::sleep(RESET_GRACE)));
                    continue;
                }
                self.done = true;
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "llmesh-mock: reset_after_chunks reached",
                ))));
            }
            let delay = if self.next == 0 {
                self.pacing.first
            } else {
                self.pacing.between
            };
            if !delay.is_zero() && !self.waited {
                self.sleep = Some(Box::pin(tokio::time::sleep(delay)));
                continue;
            }
            self.waited = false;
            let start = match self.next {
                0 => 0,
                n => self.ends[n - 1],
            };
            // Without inter-event delay there is nothing to pace: hand out
            // everything up to the stop point in one frame (cheaper for the
            // bench; SSE consumers must cope with any split anyway).
            let last = if self.pacing.between.is_zero() && !self.pacing.per_event {
                stop
            } else {
                self.next + 1
            };
            let end = self.ends[last - 1];
            self.next = last;
            if !self.resets() && self.next >= self.ends.len() {
                self.done = true;
            }
            return Poll::Ready(Some(Ok(Frame::data(self.buf.slice(start..end)))));
        }
    }
}

/// Append `s` as a JSON string literal (quotes included).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// Append a number (`write!` into a String cannot fail).
pub(crate) fn push_num(out: &mut String, n: impl std::fmt::Display) {
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escape_roundtrips() {
        for s in ["plain", "quo\"te", "back\\slash", "nl\nx\ttab\u{1}", "ünï"] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }
}
