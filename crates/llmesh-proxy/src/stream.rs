//! The streamed response body: upstream SSE in, client SSE out, chunk by
//! chunk, with idle and total deadlines and accounting when it ends or the
//! client goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use llmesh_resilience::OwnedInFlight;
use llmesh_wire::StreamTranslator;
use tokio::time::Sleep;

use crate::account::{Call, Outcome, OutputEstimate};
use crate::attempt::Success;
use crate::body::BodyError;
use crate::continuation::{counts_against_backend, Continuation, Started};

/// A continuation under way, and the error to report if it fails.
struct Resuming {
    started: Started,
    error_type: &'static str,
    kind: &'static str,
    message: String,
}

/// Body of a streamed response. Polling it polls the upstream, so a slow
/// client slows the upstream read (backpressure) instead of buffering.
pub struct StreamingBody {
    upstream: Incoming,
    /// The first upstream bytes, read before the response was handed over.
    first: Option<Bytes>,
    /// Counts the stream as in flight on its backend until it ends.
    in_flight: OwnedInFlight,
    translator: StreamTranslator,
    call: Option<Call>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    ttfc: Option<Duration>,
    done: bool,
    /// Mid-stream continuation, on routes that enable it.
    cont: Option<Box<Continuation>>,
    resuming: Option<Resuming>,
    /// Puts redacted values back into the answer.
    restore: Option<Box<crate::dataguard::StreamRestore>>,
}

impl StreamingBody {
    /// Wraps an upstream body whose first bytes were already read.
    /// `deadline` is the route's total deadline.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: Incoming,
        first: Bytes,
        in_flight: OwnedInFlight,
        translator: StreamTranslator,
        call: Call,
        idle: Duration,
        deadline: tokio::time::Instant,
        cont: Option<Box<Continuation>>,
        restore: Option<Box<crate::dataguard::StreamRestore>>,
    ) -> Self {
        StreamingBody {
            upstream,
            first: Some(first),
            in_flight,
            translator,
            call: Some(call),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            ttfc: None,
            done: false,
            cont,
            resuming: None,
            restore,
        }
    }

    /// The upstream stream broke (`error_type` etc. describe how): continue
    /// it elsewhere if the route allows (`None`), else the error event that
    /// ends it.
    fn broken(
        &mut self,
        error_type: &'static str,
        kind: &'static str,
        message: &str,
    ) -> Option<Bytes> {
        let chunks = self.translator.content_chunks();
        if let Some(started) = self
            .cont
            .as_mut()
            .and_then(|c| c.start(self.in_flight.backend(), chunks))
        {
            tracing::warn!(
                error_type,
                "upstream stream broke; continuing on another backend"
            );
            self.resuming = Some(Resuming {
                started,
                error_type,
                kind,
                message: message.to_string(),
            });
            return None;
        }
        Some(self.fail(error_type, kind, message))
    }

    /// A continuation attempt ended: on success its stream replaces the
    /// broken one (`None`); on failure the original error ends the stream.
    fn resumed(
        &mut self,
        r: Result<Success, crate::attempt::Failure>,
        resuming: Resuming,
    ) -> Option<Bytes> {
        let Resuming {
            started,
            error_type,
            kind,
            message,
        } = resuming;
        let now = tokio::time::Instant::now().into_std();
        let Some(cont) = self.cont.as_ref() else {
            return Some(self.fail(error_type, kind, &message));
        };
        let Some(b) = cont.backend(started.backend) else {
            return Some(self.fail(error_type, kind, &message));
        };
        let m = &cont.shared().metrics;
        let route = cont.route_name();
        let model = b.backend.model.as_deref().unwrap_or("");
        let from = self
            .call
            .as_ref()
            .map_or("", |c| c.provider.name.as_str())
            .to_string();
        match r {
            Ok(Success::Stream {
                upstream,
                first,
                translator,
            }) => {
                b.state.breaker.on_success(now);
                m.attempts
                    .with_label_values(&[route, &b.backend.provider.name, model, "ok"])
                    .inc();
                m.continuations
                    .with_label_values(&[route, &from, "ok"])
                    .inc();
                // The broken stream counts against its backend, and what it
                // was billed is accounted on its own.
                self.in_flight.backend().breaker.on_failure(now);
                if let Some(old) = self.call.take() {
                    self.call = Some(cont.call_for(&old, b));
                    old.bill(
                        self.translator.usage(),
                        self.translator.content_chunks(),
                        "stream_continued",
                    );
                }
                self.upstream = upstream;
                self.first = Some(first);
                self.translator = translator;
                self.in_flight = started.in_flight;
                let next = tokio::time::Instant::now() + self.idle;
                self.idle_timer.as_mut().reset(next);
                None
            }
            Ok(Success::Whole { .. }) => {
                m.continuations
                    .with_label_values(&[route, &from, "failed"])
                    .inc();
                Some(self.fail(error_type, kind, &message))
            }
            Err(f) => {
                if counts_against_backend(&f) {
                    b.state.breaker.on_failure(now);
                } else {
                    b.state.breaker.on_success(now);
                }
                m.attempts
                    .with_label_values(&[route, &b.backend.provider.name, model, f.class.as_str()])
                    .inc();
                m.continuations
                    .with_label_values(&[route, &from, "failed"])
                    .inc();
                drop(started.in_flight);
                Some(self.fail(error_type, kind, &message))
            }
        }
    }

    fn end(&mut self, status: u16, error_type: &'static str) {
        self.done = true;
        // A stream the upstream broke or stalled counts against its breaker;
        // one the client abandoned does not.
        if status >= 500 {
            let now = tokio::time::Instant::now().into_std();
            self.in_flight.backend().breaker.on_failure(now);
        }
        if let Some(call) = self.call.take() {
            call.finish(Outcome {
                status,
                error_type,
                usage: self.translator.usage(),
                response_model: self.translator.response_model().map(str::to_string),
                ttfc: self.ttfc,
                output_estimate: OutputEstimate::Chunks(self.translator.content_chunks()),
            });
        }
    }

    /// Ends the stream with an error event the client's SDK understands
    /// (OpenAI SDKs raise on a `data:` object with `error`, Anthropic SDKs
    /// on `event: error`).
    fn fail(&mut self, error_type: &'static str, kind: &str, message: &str) -> Bytes {
        let mut out = Vec::new();
        self.translator
            .write_error(kind, error_type, message, &mut out);
        let status = if error_type == "upstream_timeout" {
            504
        } else {
            502
        };
        self.end(status, error_type);
        Bytes::from(out)
    }

    fn note_first_chunk(&mut self) {
        if self.ttfc.is_none() {
            if let Some(call) = &self.call {
                self.ttfc = Some(call.start.elapsed());
            }
        }
    }
}

impl Body for StreamingBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(resuming) = this.resuming.as_mut() {
                match resuming.started.future.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => {
                        let Some(resuming) = this.resuming.take() else {
                            continue;
                        };
                        match this.resumed(r, resuming) {
                            Some(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                            None => continue,
                        }
                    }
                }
            }
            let polled = match this.first.take() {
                Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
                None => Pin::new(&mut this.upstream).poll_frame(cx),
            };
            match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers carry nothing the client needs
                    };
                    let mut out = Vec::with_capacity(data.len() + 64);
                    if let Err(e) = this.translator.push(&data, &mut out) {
                        let msg = format!("upstream stream could not be translated: {e}");
                        out.extend_from_slice(&this.fail("upstream_protocol", "api_error", &msg));
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    let next = tokio::time::Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(next);
                    if let Some(c) = this.cont.as_mut() {
                        out = c.on_output(out);
                    }
                    if let Some(r) = this.restore.as_mut() {
                        out = r.filter(&out);
                    }
                    if !out.is_empty() {
                        this.note_first_chunk();
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "upstream stream broke");
                    let msg = "upstream connection broke in the middle of the stream";
                    match this.broken("upstream_stream_broken", "api_error", msg) {
                        Some(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                        None => continue,
                    }
                }
                Poll::Ready(None) => {
                    let mut out = Vec::new();
                    this.translator.finish(&mut out);
                    if this.translator.completed() {
                        if let Some(c) = this.cont.as_mut() {
                            out = c.on_output(out);
                        }
                        if let Some(r) = this.restore.as_mut() {
                            out = r.filter(&out);
                        }
                        this.end(200, "");
                    } else {
                        // The upstream closed cleanly but without its end
                        // marker: the answer is truncated; continue it or
                        // say so. (A continuation starts from what the
                        // client has, so the closing events are dropped.)
                        let msg = "upstream ended the stream before it was complete";
                        match this.broken("upstream_stream_incomplete", "api_error", msg) {
                            Some(bytes) => out.extend_from_slice(&bytes),
                            None => continue,
                        }
                    }
                    this.done = true;
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        let msg = format!(
                            "upstream sent nothing for {} ms (idle timeout)",
                            this.idle.as_millis()
                        );
                        match this.broken("upstream_timeout", "timeout_error", &msg) {
                            Some(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                            None => continue,
                        }
                    }
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        let msg = "upstream stream exceeded the route's total timeout";
                        let bytes = this.fail("upstream_timeout", "timeout_error", msg);
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for StreamingBody {
    fn drop(&mut self) {
        // The client went away before the end: account what was used so far.
        if self.call.is_some() {
            self.end(499, "client_cancelled");
        }
    }
}

/// `Instant` of a deadline `d` from `start`.
pub fn deadline_from(start: Instant, d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(start + d)
}
